"""Every mAP50-95 yolo-ldac prints for a checkpoint is the one Ultralytics' own validation prints for it.

The data: real photos of mixed aspect ratio (bus.jpg 810x1080, zidane.jpg 1280x720 and their mirror images), labelled
by the COCO YOLO11n itself, so the model scores a high mAP and any change of the validator's input shows. Rect
batching (Ultralytics' ``Model.val`` default) letterboxes each batch to its own shape, so a validator that turns it
off (as yolo-ldac's did) moves the mAP by points here; the first test checks that the data can tell the two apart.
"""

from __future__ import annotations

import pytest

from helpers import teacher_dataset

IMGSZ = 160
BATCH = 3  # mixes a portrait and a landscape photo in one rect batch: the batch size changes the shapes


@pytest.fixture(scope="module")
def coco_model(shared_weights):
    return shared_weights("yolo11n-coco.pt")


@pytest.fixture(scope="module")
def photos(coco_model, tmp_path_factory):
    return teacher_dataset(coco_model, tmp_path_factory.mktemp("photos"), imgsz=IMGSZ, conf=0.25)


def ultralytics_map(path, data, imgsz: int = IMGSZ, batch: int = BATCH) -> float:
    """What ``yolo val model=path data=data imgsz=imgsz batch=batch`` prints as mAP50-95."""
    from ultralytics import YOLO

    return float(YOLO(str(path)).val(data=str(data), imgsz=imgsz, batch=batch, plots=False, verbose=False).box.map)


@pytest.fixture(scope="module")
def reference(coco_model, photos) -> float:
    return ultralytics_map(coco_model, photos)


def test_validator_gives_ultralytics_map(coco_model, photos, reference):
    from yolo_ldac.engine.validator import validate_model
    from yolo_ldac.safe_load import load_model

    model = load_model(coco_model)
    ours = validate_model(model, str(photos), {"imgsz": IMGSZ, "batch": BATCH})["map50_95"]
    assert ours == pytest.approx(reference, abs=1e-3)
    # The data tells the settings apart: without rect batches (the old default) the mAP is another number.
    square = validate_model(model, str(photos), {"imgsz": IMGSZ, "batch": BATCH, "rect": False})["map50_95"]
    assert abs(square - reference) > 5e-3, (square, reference)


def test_val_mode_api_and_cli_give_ultralytics_map(coco_model, photos, reference):
    from yolo_ldac import YOLOLDAC
    from yolo_ldac.cli import _dispatch

    api = YOLOLDAC(str(coco_model)).val(data=str(photos), imgsz=IMGSZ, batch=BATCH)["map50_95"]
    cli = _dispatch("val", {"model": str(coco_model), "data": str(photos), "imgsz": IMGSZ,
                            "batch": BATCH})["map50_95"]
    assert api == pytest.approx(reference, abs=1e-3)
    assert cli == pytest.approx(reference, abs=1e-3)


def test_val_mode_defaults_are_ultralytics_defaults(coco_model, photos, tmp_path):
    """No imgsz and no batch: both take the checkpoint's training size and batch 16."""
    from yolo_ldac import YOLOLDAC
    from yolo_ldac.checkpoint import save_ultralytics_checkpoint
    from yolo_ldac.safe_load import load_model

    small = save_ultralytics_checkpoint(load_model(coco_model), tmp_path / "small.pt", {"imgsz": 128}, half=False)
    from ultralytics import YOLO

    expected = float(YOLO(str(small)).val(data=str(photos), plots=False, verbose=False).box.map)
    assert YOLOLDAC(str(small)).val(data=str(photos))["map50_95"] == pytest.approx(expected, abs=1e-3)
    assert expected != pytest.approx(ultralytics_map(small, photos, imgsz=640, batch=16), abs=1e-3)


@pytest.mark.slow
def test_prune_report_gives_ultralytics_map(coco_model, photos, tmp_path):
    """The report's before (the input model) and after (``weights/best.pt``) are what ``yolo val`` prints for
    those two files."""
    from yolo_ldac import YOLOLDAC

    res = YOLOLDAC(str(coco_model)).prune(data=str(photos), ratio=0.1, rounds=1, method="l2", imgsz=IMGSZ,
                                          batch=BATCH, project=str(tmp_path), name="prune", plots=False)
    assert res.before["map50_95"] == pytest.approx(ultralytics_map(coco_model, photos), abs=1e-3)
    assert res.after["map50_95"] == pytest.approx(ultralytics_map(res.best, photos), abs=1e-3)
    assert res.rounds[-1]["map50_95_after_step"] == pytest.approx(res.after["map50_95"], abs=1e-3)


@pytest.mark.slow
def test_benchmark_rows_give_ultralytics_map(coco_model, photos, tmp_path):
    """The benchmark's PyTorch row is ``yolo val`` of the .pt; its ONNX row is ``yolo val`` of the .onnx (fixed
    input shape: Ultralytics validates it at batch 1 without rect batches)."""
    from yolo_ldac import YOLOLDAC

    res = YOLOLDAC(str(coco_model)).benchmark(formats="onnx", precisions="fp32", data=str(photos), imgsz=IMGSZ,
                                              batch=BATCH, runs=1, warmup=0, threads="1", plots=False,
                                              project=str(tmp_path), name="bench")
    rows = {r.format: r for r in res.rows}
    assert rows["pytorch"].map50_95 == pytest.approx(ultralytics_map(rows["pytorch"].file, photos), abs=1e-3)
    onnx = rows["onnx"]
    assert onnx.map50_95 == pytest.approx(ultralytics_map(onnx.file, photos, batch=1), abs=1e-3)
