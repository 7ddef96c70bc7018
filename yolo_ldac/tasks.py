"""The Ultralytics tasks yolo-ldac prunes: one row per task of what differs between them.

Every task's model is an Ultralytics ``DetectionModel`` (``SegmentationModel``, ``PoseModel`` and ``OBBModel``
subclass it) whose head is a ``Detect`` with one more branch (``cv4``: mask coefficients, keypoints or angles; a
segmentation head also has its mask prototypes, ``proto``). So the schedule, the trace and the pushes are the same
for every task: the trace is the Fisher of the task's own loss (``model.loss``) at the locations its assigner picks,
and the pushes add their terms to that loss. What differs is listed here: which heads belong to the task, which
Ultralytics trainer and validator run it, which metric is its mAP, and which of the head's convolutions have
outputs that are the task's answer (never pruned).

Example:
    >>> spec = TASKS["segment"]
    >>> spec.metric, spec.metric_label
    ('metrics/mAP50-95(M)', 'mask mAP50-95')
    >>> sorted(TASKS)
    ['detect', 'obb', 'pose', 'segment']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from yolo_ldac.errors import LDACError

if TYPE_CHECKING:  # torch only where a model is looked at: the table itself is read by the report writer too
    import torch.nn as nn


@dataclass(frozen=True)
class TaskSpec:
    """What one Ultralytics task needs from yolo-ldac.

    Attributes:
        name: Ultralytics' task name (``model.task``, ``train_args["task"]``).
        heads: the head classes (names in ``ultralytics.nn.modules.head``) of the task's models.
        model_class: the ``ultralytics.nn.tasks`` model class the task's yaml builds.
        package: ``ultralytics.models.yolo.<package>`` holds its trainer and validator.
        trainer, validator: their class names there.
        metric, metric50: the validator's keys of the task's mAP50-95 and mAP50 (the figure yolo-ldac reports and
            budgets against); box mAP is reported beside it for every task.
        metric_label: how reports name ``metric``.
        branches: head attributes whose every branch ends in a convolution whose outputs are the task's answer.
    """

    name: str
    heads: tuple[str, ...]
    model_class: str
    package: str
    trainer: str
    validator: str
    metric: str
    metric50: str
    metric_label: str
    branches: tuple[str, ...]


_BOX = ("cv2", "cv3", "one2one_cv2", "one2one_cv3")
TASKS: dict[str, TaskSpec] = {
    "detect": TaskSpec("detect", ("Detect", "v10Detect"), "DetectionModel", "detect", "DetectionTrainer",
                       "DetectionValidator", "metrics/mAP50-95(B)", "metrics/mAP50(B)", "mAP50-95", _BOX),
    "segment": TaskSpec("segment", ("Segment",), "SegmentationModel", "segment", "SegmentationTrainer",
                        "SegmentationValidator", "metrics/mAP50-95(M)", "metrics/mAP50(M)", "mask mAP50-95",
                        _BOX + ("cv4", "one2one_cv4")),
    "pose": TaskSpec("pose", ("Pose",), "PoseModel", "pose", "PoseTrainer", "PoseValidator",
                     "metrics/mAP50-95(P)", "metrics/mAP50(P)", "pose mAP50-95", _BOX + ("cv4", "one2one_cv4")),
    "obb": TaskSpec("obb", ("OBB",), "OBBModel", "obb", "OBBTrainer", "OBBValidator",
                    "metrics/mAP50-95(B)", "metrics/mAP50(B)", "mAP50-95", _BOX + ("cv4", "one2one_cv4")),
}
BOX_METRIC, BOX_METRIC50 = "metrics/mAP50-95(B)", "metrics/mAP50(B)"
# YOLO26's task heads put their answers elsewhere (Pose26: cv4_kpts / cv4_sigma; Segment26: a training-only semantic
# branch in Proto26 that a graph traced in eval mode does not see): refused until they are handled.
UNSUPPORTED_HEADS = {"Segment26": "segment", "Pose26": "pose", "OBB26": "obb"}


def head_of(model: nn.Module) -> nn.Module | None:
    """The last layer of an Ultralytics model (its head), or ``None``."""
    import torch.nn as nn

    seq = getattr(model, "model", None)
    return seq[-1] if isinstance(seq, nn.Sequential) and len(seq) else None


def task_of(model: nn.Module) -> str | None:
    """The task of an Ultralytics model, from its head's exact class (``None`` for a head yolo-ldac does not prune).

    Example:
        >>> from ultralytics.nn.tasks import SegmentationModel
        >>> task_of(SegmentationModel("yolo11n-seg.yaml", verbose=False))
        'segment'
    """
    head = head_of(model)
    if head is None or type(head).__module__ != "ultralytics.nn.modules.head":
        return None
    for spec in TASKS.values():
        if type(head).__name__ in spec.heads:
            return spec.name
    return None


def task_spec(model_or_task: nn.Module | str) -> TaskSpec:
    """The :class:`TaskSpec` of a model (by its head) or of a task name; raises :class:`LDACError` for others."""
    if isinstance(model_or_task, str):
        if model_or_task not in TASKS:
            raise LDACError(f"task must be one of {', '.join(TASKS)}, got {model_or_task!r}")
        return TASKS[model_or_task]
    task = task_of(model_or_task)
    if task is None:
        head = head_of(model_or_task)
        if type(head).__name__ in UNSUPPORTED_HEADS:
            raise LDACError(f"YOLO26 {UNSUPPORTED_HEADS[type(head).__name__]} models ({type(head).__name__} head) "
                            "are not supported yet; YOLOv8 and YOLO11 ones are, and YOLO26 detection")
        kind = type(head).__name__ if head is not None else type(model_or_task).__name__
        raise LDACError(f"yolo-ldac prunes Ultralytics detect, segment, pose and obb models; this one's head is {kind}")
    return TASKS[task]


def model_class(task: str) -> type:
    """The Ultralytics model class of ``task`` (``SegmentationModel`` for ``segment``)."""
    from ultralytics.nn import tasks as ultra_tasks

    return getattr(ultra_tasks, task_spec(task).model_class)


def validator_class(task: str) -> type:
    """Ultralytics' validator class of ``task``."""
    import importlib

    spec = task_spec(task)
    return getattr(importlib.import_module(f"ultralytics.models.yolo.{spec.package}"), spec.validator)


def extra_channels(model: nn.Module) -> int:
    """Channels of the prediction after the class scores: mask coefficients (segment), keypoint values (pose),
    angles (obb); 0 for a detector.

    Example:
        >>> from ultralytics.nn.tasks import PoseModel
        >>> extra_channels(PoseModel("yolo11n-pose.yaml", verbose=False))  # 17 keypoints x (x, y, visible)
        51
    """
    head = head_of(model)
    task = task_of(model)
    if task == "segment":
        return int(head.nm)
    if task == "pose":
        return int(head.nk)
    if task == "obb":
        return int(head.ne)
    return 0


def answer_convs(model: nn.Module) -> list[nn.Module]:
    """The head convolutions whose output channels are the task's answer: each branch's last layer of the box,
    class and task branches (mask coefficients, keypoints, angles), and a segmentation head's prototype output.

    Example:
        >>> from ultralytics.nn.tasks import SegmentationModel
        >>> len(answer_convs(SegmentationModel("yolo11n-seg.yaml", verbose=False)))  # 3 levels x 3 branches + proto
        10
    """
    import torch.nn as nn

    head = head_of(model)
    spec = TASKS.get(task_of(model) or "detect", TASKS["detect"])
    keep: list[nn.Module] = []
    for attr in spec.branches:
        for branch in getattr(head, attr, None) or ():
            keep.append(branch[-1])
    proto = getattr(head, "proto", None)
    if isinstance(proto, nn.Module):
        last = getattr(proto, "cv3", None)  # Proto: cv1, upsample, cv2, cv3 (its nm outputs)
        if isinstance(last, nn.Module):
            keep.append(last)
    return keep


def metric_label(task: str | None) -> str:
    """How reports name ``task``'s mAP50-95 (``mask mAP50-95`` for segment; ``mAP50-95`` for an unknown task).

    Example:
        >>> metric_label("pose"), metric_label(None)
        ('pose mAP50-95', 'mAP50-95')
    """
    return TASKS[task].metric_label if task in TASKS else "mAP50-95"


def metrics_from(stats: dict, task: str) -> dict[str, float]:
    """The task's mAP50-95 and mAP50 (``map50_95``, ``map50``) from an Ultralytics validator's result dict, and for
    segment and pose also the box mAP (``box_map50_95``, ``box_map50``).

    Example:
        >>> metrics_from({"metrics/mAP50-95(B)": 0.5, "metrics/mAP50(B)": 0.7,
        ...               "metrics/mAP50-95(M)": 0.4, "metrics/mAP50(M)": 0.6}, "segment")
        {'map50_95': 0.4, 'map50': 0.6, 'box_map50_95': 0.5, 'box_map50': 0.7}
    """
    spec = task_spec(task)
    out = {"map50_95": float(stats.get(spec.metric, 0.0)), "map50": float(stats.get(spec.metric50, 0.0))}
    if spec.metric != BOX_METRIC:
        out.update(box_map50_95=float(stats.get(BOX_METRIC, 0.0)), box_map50=float(stats.get(BOX_METRIC50, 0.0)))
    return out


__all__ = ["TASKS", "TaskSpec", "UNSUPPORTED_HEADS", "answer_convs", "extra_channels", "head_of", "metric_label", "metrics_from", "model_class", "task_of", "task_spec",
           "validator_class"]
