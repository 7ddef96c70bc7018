"""One way to run Ultralytics' validator of a model's task on a model in memory and read its mAP.

Every mAP yolo-ldac prints for a PyTorch model (the report, ``val``, the budget search, the sweep, the benchmark's
PyTorch row) comes from :func:`validate_model`, with the settings ``yolo val`` uses: ``YOLO(path).val(data=...,
imgsz=..., batch=...)`` validates with rectangular batches (``rect=True``, Ultralytics' ``Model.val`` default), and
so does this. Rect batching changes the input even for square images: the validator pads each batch's shape by half
a stride before rounding up (``ceil(imgsz / stride + 0.5) * stride``: 160 px images are letterboxed to 192 x 192),
and for mixed aspect ratios the batch size decides each batch's shape; so the mAP depends on ``batch`` too.

Exported files have a fixed input shape, and Ultralytics validates them with ``rect=False`` at batch 1: the export
parity checks (:mod:`yolo_ldac.deploy.parity`) do the same for both sides of the comparison.
"""

from __future__ import annotations

import tempfile
from typing import Any

import torch.nn as nn


def detection_map(model: nn.Module, task: str | None = None, **args: Any) -> dict[str, float]:
    """mAP50-95 and mAP50 of ``model`` with the Ultralytics validator of its task (``DetectionValidator``,
    ``SegmentationValidator``, ``PoseValidator``, ``OBBValidator``) and ``args`` (``data``, ``imgsz``, ``batch``, ...),
    without plots, JSON or per-class printing; the save directory it insists on is temporary.

    ``map50_95`` / ``map50`` are the task's own mAP (mask mAP for segment, keypoint mAP for pose); segment and pose
    models also get the box mAP as ``box_map50_95`` / ``box_map50`` (:func:`yolo_ldac.tasks.metrics_from`).
    ``task``: for a model whose head does not say it (an exported runtime wrapped as a module); default: its head's.

    The validator fuses Conv+BN in place and copies its model: pass a copy when the caller keeps using ``model``.

    Example:
        >>> detection_map(model, data="coco8.yaml", imgsz=640, batch=16, rect=True)  # doctest: +SKIP
        {'map50_95': 0.61, 'map50': 0.8}
    """
    from yolo_ldac.tasks import metrics_from, task_of, validator_class

    task = task or task_of(model) or "detect"
    args = {**args, "plots": False, "save_json": False, "verbose": False, "mode": "val", "task": task}
    with tempfile.TemporaryDirectory(prefix="yolo-ldac-val-") as tmp:
        args.update(project=tmp, name="val", exist_ok=True)
        stats = validator_class(task)(args=args)(model=model)
    return metrics_from(stats, task)


VAL_KEYS = ("imgsz", "batch", "device", "workers", "half", "conf", "iou", "max_det", "split", "single_cls", "rect")


def validate_model(model: nn.Module, data: str, ultra: dict, device=None) -> dict[str, float]:
    """mAP50-95 and mAP50 of ``model`` on the val split of ``data`` with the validation keys of ``ultra``
    (Ultralytics' settings of the run); validates a copy (the validator fuses Conv+BN in place).

    ``rect`` defaults to True, as in ``YOLO(path).val()``: with the same ``imgsz`` and ``batch`` the result is the
    mAP50-95 ``yolo val`` prints for the same weights (tested to 1e-3 in ``tests/test_val_agreement.py``).

    Example:
        >>> validate_model(model, "coco8.yaml", {"imgsz": 160, "batch": 8})  # doctest: +SKIP
        {'map50_95': 0.41, 'map50': 0.6}
    """
    import copy

    args = {k: v for k, v in ultra.items() if k in VAL_KEYS}
    args.setdefault("rect", True)  # Ultralytics' Model.val default: the mAP `yolo val` prints
    if device is not None:
        args["device"] = str(device)
    return detection_map(copy.deepcopy(model).float(), **args, data=data)
