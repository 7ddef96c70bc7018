"""Segment, pose and obb models (issue 24): the same parts as detection, with each task's loss, trainer, validator,
protected head outputs, portable pair, reload and export parity of every raw output."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from yolo_ldac.errors import LDACError
from yolo_ldac.tasks import TASKS, answer_convs, metrics_from, task_of, task_spec

TASK_MODELS = {"segment": ("yolov8n-seg.yaml", "yolo11n-seg.yaml"), "pose": ("yolov8n-pose.yaml", "yolo11n-pose.yaml"),
               "obb": ("yolov8n-obb.yaml", "yolo11n-obb.yaml")}
ALL_MODELS = [(task, m) for task, models in TASK_MODELS.items() for m in models]
FAST = dict(imgsz=64, batch=8, plots=False, workers=0)


@pytest.fixture(scope="session")
def task_data(tmp_path_factory):
    """A shapes data set per task (same images for segment and pose; squares drawn rotated for obb)."""
    from yolo_ldac.data.shapes import make_shapes_dataset

    root = tmp_path_factory.mktemp("task-shapes")
    return {t: make_shapes_dataset(root / t, n_train=16, n_val=8, imgsz=64, seed=0, task=t) for t in TASK_MODELS}


# ------------------------------------------------------------------------------------------------- the table
@pytest.mark.parametrize("task,yaml", ALL_MODELS)
def test_task_of_every_family_and_its_answer_convs(task, yaml):
    from yolo_ldac.nn.adapter import load_detection_model, protected_layers

    model = load_detection_model(yaml)
    assert task_of(model) == task and task_spec(model).name == task
    head = model.model[-1]
    answers = answer_convs(model)
    # box, class and task branch of every level, and for segment the prototypes' output convolution
    assert len(answers) == 3 * head.nl + (task == "segment")
    prot = {id(m) for m in protected_layers(model)}
    for branch in head.cv4:
        assert id(branch[-1]) in prot  # the mask coefficients / keypoints / angles themselves
        assert all(id(c) not in prot for c in branch[0].modules() if isinstance(c, nn.Conv2d))  # inner: prunable
    if task == "segment":
        assert id(head.proto.cv3.conv) in prot and id(head.proto.cv1.conv) not in prot


def test_task_table_and_metrics():
    assert sorted(TASKS) == ["detect", "obb", "pose", "segment"]
    stats = {"metrics/mAP50-95(B)": 0.5, "metrics/mAP50(B)": 0.7, "metrics/mAP50-95(P)": 0.3, "metrics/mAP50(P)": 0.4}
    assert metrics_from(stats, "pose") == {"map50_95": 0.3, "map50": 0.4, "box_map50_95": 0.5, "box_map50": 0.7}
    assert metrics_from(stats, "detect") == {"map50_95": 0.5, "map50": 0.7}
    assert metrics_from(stats, "obb") == {"map50_95": 0.5, "map50": 0.7}
    with pytest.raises(LDACError, match="task must be one of"):
        task_spec("classify")
    from ultralytics.nn.tasks import ClassificationModel

    with pytest.raises(LDACError, match="Classify"):
        task_spec(ClassificationModel("yolo11n-cls.yaml", verbose=False))


# ------------------------------------------------------------------------------------------------- the data
def test_shapes_labels_of_every_task(task_data):
    """Each task's labels load in Ultralytics' own dataset with what the task learns from."""
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset
    from ultralytics.utils import DEFAULT_CFG

    seg_imgs = sorted((task_data["segment"].parent / "images" / "train").glob("*.png"))
    pose_imgs = sorted((task_data["pose"].parent / "images" / "train").glob("*.png"))
    assert [p.read_bytes() for p in seg_imgs] == [p.read_bytes() for p in pose_imgs]  # same images, other labels
    for task, yaml_path in task_data.items():
        data = check_det_dataset(str(yaml_path))
        cfg = get_cfg(DEFAULT_CFG, {"imgsz": 64, "task": task, "rect": False})
        ds = build_yolo_dataset(cfg, data["train"], 4, data, mode="val", stride=32)
        labels = ds.labels
        assert len(labels) == 16 and all(len(lb["cls"]) for lb in labels)
        if task == "segment":
            assert all(len(lb["segments"]) == len(lb["cls"]) for lb in labels)
            assert all(len(s) >= 3 for lb in labels for s in lb["segments"])
        if task == "pose":
            assert all(lb["keypoints"].shape == (len(lb["cls"]), 3, 3) for lb in labels)
            assert all((lb["keypoints"][..., 2] == 2).all() for lb in labels)
        if task == "obb":
            assert all(len(s) == 4 for lb in labels for s in lb["segments"])
    # the pose keypoints lie on the shape: its centre and the middle of its top and bottom rows
    line = (task_data["pose"].parent / "labels" / "train" / "train_0000.txt").read_text().splitlines()[0].split()
    xc, yc, w, h = map(float, line[1:5])
    k = np.array(line[5:], dtype=float).reshape(3, 3)
    assert k[0, :2] == pytest.approx([xc, yc]) and k[1, 1] == pytest.approx(yc - h / 2, abs=1 / 64)
    assert k[2, 1] == pytest.approx(yc + h / 2, abs=1 / 64)


def test_task_data_mismatch_is_one_line(task_data, shapes_data, tmp_path, capfd):
    """A task model on data without its labels stops before the run folder exists, with one line."""
    from yolo_ldac.cli import main

    project = tmp_path / "runs"
    cases = [("yolo11n-seg.yaml", shapes_data, "has boxes but no polygon labels"),
             ("yolo11n-pose.yaml", shapes_data, "has no kpt_shape"),
             ("yolo11n-obb.yaml", shapes_data, "an oriented box is cls x1 y1"),
             ("yolo11n-pose.yaml", task_data["segment"], "has no kpt_shape")]
    for model, data, message in cases:
        capfd.readouterr()
        rc = main(["compress", f"model={model}", f"data={data}", f"project={project}",
                   *[f"{k}={v}" for k, v in FAST.items()]])
        assert rc == 2
        err = [ln for ln in capfd.readouterr().err.splitlines() if ln.strip()]
        assert len(err) == 1 and message in err[0], err
        assert not project.exists()


# ------------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
@pytest.mark.parametrize("task,yaml", ALL_MODELS)
def test_task_compress_reload_export(task, yaml, task_data, tmp_path):
    """Compress to 50 % of the FLOPs (Ultralytics' counter), train with the task's loss, reload with plain YOLO(),
    validate with the task's metric, and export to ONNX and OpenVINO with parity of every raw output."""
    from ultralytics import YOLO

    from yolo_ldac import YOLOLDAC
    from yolo_ldac.checkpoint import load_portable
    from yolo_ldac.nn.adapter import load_detection_model, ultralytics_gflops

    data = task_data[task]
    result = YOLOLDAC(yaml).compress(data=str(data), ratio=0.5, epochs=1, project=str(tmp_path), name="run", **FAST)
    best = Path(result.best)
    from ultralytics.data.utils import check_det_dataset

    from yolo_ldac.nn.adapter import adapt_head_to_names

    info = check_det_dataset(str(data))  # the dense model is the one adapted to the data's classes (and keypoints)
    dense = ultralytics_gflops(adapt_head_to_names(load_detection_model(yaml), info["names"], verbose=False,
                                                   kpt_shape=info.get("kpt_shape")))
    y = YOLO(str(best))  # plain Ultralytics
    assert y.task == task and type(y.model).__name__ == TASKS[task].model_class
    after = ultralytics_gflops(y.model)
    assert abs((1 - after / dense) - 0.5) <= 0.01, (dense, after)
    # the task's loss trained the task's head: its loss columns are in every phase's results.csv
    task_loss = {"segment": "seg_loss", "pose": "pose_loss", "obb": "angle_loss"}[task]
    csv = (best.parent.parent / "finetune" / "results.csv").read_text().splitlines()[0]
    assert f"train/{task_loss}" in csv
    report = json.loads((best.parent.parent / "report.json").read_text())
    assert report["task"] == task and report["after"]["map50_95"] >= 0.0
    if task in ("segment", "pose"):
        assert "box_map50_95" in report["after"] and "box mAP50-95" in (best.parent.parent / "report.md").read_text()
    # the portable pair rebuilds the same task model
    portable = load_portable(best.with_suffix(".json"))
    assert task_of(portable) == task
    x = torch.rand(1, 3, 64, 64)
    y.model.float().eval()
    a, b = y.model(x), portable.float().eval()(x)
    a0, b0 = (a[0][0], b[0][0]) if task == "segment" else (a[0], b[0])
    assert torch.allclose(a0, b0, atol=1e-4)
    # export with parity of every output (prototypes included) and the task's mAP in each runtime
    runner = YOLOLDAC(str(best))
    for fmt in ("onnx", "openvino"):
        out = runner.export(format=fmt, data=str(data), imgsz=64)
        assert Path(out).exists()
    from yolo_ldac.deploy.parity import check_raw_parity

    res = check_raw_parity(str(best), best.with_suffix(".onnx"), imgsz=64)
    assert len(res["shapes"]) == (2 if task == "segment" else 1) and res["ok"]
    if task == "segment":
        assert res["shapes"][1][1] == 32  # the prototypes, NCHW


def test_pruning_keeps_every_answer_channel(task_data):
    """30 % pruned: the box, class, mask-coefficient, keypoint, angle and prototype outputs keep their widths."""
    from yolo_ldac import YOLOLDAC
    from yolo_ldac.safe_load import load_model

    def width(m: nn.Module) -> int:
        return m.out_channels if isinstance(m, nn.Conv2d) else m.conv.out_channels

    task_width = {"segment": 32, "pose": 3 * 3, "obb": 1}  # nm prototypes; 3 keypoints x (x, y, v); one angle
    for task, yaml in (("segment", "yolo11n-seg.yaml"), ("pose", "yolov8n-pose.yaml"), ("obb", "yolo11n-obb.yaml")):
        with tempfile.TemporaryDirectory() as tmp:
            res = YOLOLDAC(yaml).prune(data=str(task_data[task]), ratio=0.3, method="l1", rounds=1, val_steps=False,
                                       project=tmp, name="p", **FAST)
            pruned = load_model(res.best, device="cpu")
        assert task_of(pruned) == task
        head = pruned.model[-1]
        assert [width(b[-1]) for b in head.cv2] == [4 * head.reg_max] * head.nl
        assert [width(b[-1]) for b in head.cv3] == [3] * head.nl
        assert [width(b[-1]) for b in head.cv4] == [task_width[task]] * head.nl
        if task == "segment":
            assert width(head.proto.cv3) == 32
        assert sum(width(m) for m in pruned.modules() if isinstance(m, nn.Conv2d)) < sum(
            width(m) for m in YOLOLDAC(yaml).model.modules() if isinstance(m, nn.Conv2d))


def test_a_finished_task_run_handed_on_keeps_its_task(task_data, tmp_path):
    """After a run the runner holds its best.pt, not a loaded model: the next run still audits pose labels as pose."""
    from yolo_ldac import YOLOLDAC

    runner = YOLOLDAC("yolov8n-pose.yaml")
    kw = dict(data=str(task_data["pose"]), method="l1", rounds=1, val_steps=False, project=str(tmp_path), **FAST)
    runner.prune(ratio=0.2, name="a", **kw)
    res = runner.prune(ratio=0.3, name="b", **kw)  # source: a's best.pt
    assert json.loads((Path(res.best).parent.parent / "report.json").read_text())["task"] == "pose"


@pytest.mark.parametrize("yaml,head", [("yolo26n-seg.yaml", "Segment26"), ("yolo26n-pose.yaml", "Pose26"),
                                       ("yolo26n-obb.yaml", "OBB26")])
def test_yolo26_task_heads_are_refused_with_one_line(yaml, head):
    from yolo_ldac.nn.adapter import load_detection_model

    with pytest.raises(LDACError, match=f"YOLO26 .* models \\({head} head\\) are not supported yet") as e:
        load_detection_model(yaml)
    assert "\n" not in str(e.value)
