"""Tests of the model adapter: split-block rewrite, protected layers, loading with one-line errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from helpers import _calibrate_batchnorm

from yolo_ldac.errors import LDACError
from yolo_ldac.nn.adapter import REWRITE_ATOL, load_detection_model, protected_layers, rewrite_split_blocks
from yolo_ldac.nn.modules import C2fSplit, C3k2Split

# (model yaml, Ultralytics block class name, split class, number of blocks in the nano model)
SPLIT_CASES = [
    ("yolov8n.yaml", "C2f", C2fSplit, 8),
    ("yolo11n.yaml", "C3k2", C3k2Split, 8),
]
SIZES = ((64, 64), (96, 128))


def _detector(cfg: str, nc: int = 3, seed: int = 0):
    """A detector with non-trivial BatchNorm statistics (else its outputs barely depend on its weights)."""
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(seed)
    model = DetectionModel(cfg, nc=nc, verbose=False).float()
    _calibrate_batchnorm(model, torch.Generator().manual_seed(seed))
    return model.eval()


@torch.no_grad()
def _outputs(model, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return [model(torch.rand(1, 3, h, w, generator=g))[0] for h, w in SIZES]


@pytest.mark.parametrize("cfg,block_name,split_cls,n_blocks", SPLIT_CASES, ids=["C2f-yolov8n", "C3k2-yolo11n"])
def test_rewrite_preserves_outputs(cfg, block_name, split_cls, n_blocks):
    model = _detector(cfg)
    before = _outputs(model)
    originals = {i: (m.i, m.f) for i, m in enumerate(model.model) if type(m).__name__ == block_name}
    assert len(originals) == n_blocks

    assert rewrite_split_blocks(model) == n_blocks
    assert not model.training  # eval mode kept

    rewritten = [(i, m) for i, m in enumerate(model.model) if isinstance(m, C2fSplit)]
    assert [i for i, _ in rewritten] == sorted(originals)
    for i, m in rewritten:
        assert type(m) is split_cls
        assert f"{type(m).__module__}.{type(m).__qualname__}" == f"yolo_ldac.nn.modules.{split_cls.__name__}"
        assert (m.i, m.f) == originals[i]  # Ultralytics' forward routes tensors by these
        assert m.cv0.conv.out_channels == m.cv1.conv.out_channels
    assert not any(type(m).__name__ == block_name for m in model.modules())

    after = _outputs(model)
    for (h, w), a, b in zip(SIZES, before, after):
        assert a.shape == b.shape
        diff = float((a - b).abs().max())
        assert diff <= REWRITE_ATOL, f"{cfg} at {h}x{w}: max abs diff {diff:.2e}"
    # The comparison is meaningful: the outputs depend on the input.
    assert float((before[0] - _outputs(model, seed=2)[0]).abs().max()) > 1e-2


def test_rewrite_keeps_training_mode_and_is_idempotent():
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel("yolov8n.yaml", nc=3, verbose=False).train()
    assert rewrite_split_blocks(model) == 8
    assert model.training
    assert rewrite_split_blocks(model) == 0


@pytest.mark.parametrize("cfg", ["yolov8n.yaml", "yolo11n.yaml"])
def test_protected_layers_cover_head_outputs_and_dfl(cfg):
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel(cfg, nc=3, verbose=False)
    rewrite_split_blocks(model)
    prot = {id(m) for m in protected_layers(model)}
    assert all(isinstance(m, nn.Conv2d) for m in protected_layers(model))
    head = model.model[-1]
    for branches in (head.cv2, head.cv3):
        for branch in branches:
            final = branch[-1]
            assert isinstance(final, nn.Conv2d)
            assert id(final) in prot
            # the intermediate convs of the head branches stay prunable
            inner = [c for c in branch[:-1].modules() if isinstance(c, nn.Conv2d)]
            assert inner and not any(id(c) in prot for c in inner)
    assert id(head.dfl.conv) in prot
    # nothing in the backbone's plain convs is protected
    assert id(model.model[0].conv) not in prot


# --- loading ------------------------------------------------------------------------------------------------


def test_load_yaml_and_live_model():
    from ultralytics.nn.tasks import DetectionModel

    model = load_detection_model("yolov8n.yaml")
    assert type(model) is DetectionModel
    assert next(model.parameters()).dtype == torch.float32
    assert load_detection_model(model) is model


def test_load_missing_pt_file(tmp_path):
    with pytest.raises(LDACError, match="not found"):
        load_detection_model(tmp_path / "no_such_model.pt")


def test_load_missing_yaml_file(tmp_path):
    with pytest.raises(LDACError):
        load_detection_model(tmp_path / "no_such_model.yaml")


@pytest.mark.parametrize("name", ["model.onnx", "weights.txt", "model"])
def test_load_non_model_suffix(tmp_path, name):
    path = tmp_path / name
    path.write_text("not a model")
    with pytest.raises(LDACError, match="must be a .pt checkpoint or a .yaml"):
        load_detection_model(path)


def test_load_text_file_renamed_pt(tmp_path):
    path = tmp_path / "fake.pt"
    path.write_text("this is a text file, not a checkpoint\n")
    with pytest.raises(LDACError, match="is not a loadable checkpoint: a text file, not a torch.save") as info:
        load_detection_model(path)
    assert "\n" not in str(info.value)


def test_load_wrong_type():
    with pytest.raises(LDACError, match="got int"):
        load_detection_model(42)


def test_load_segmentation_model_accepted(shared_weights):
    """A segmentation checkpoint loads as the task model it is (issue 24), from a file and live."""
    path = shared_weights("yolo11n-seg-coco.pt")
    model = load_detection_model(path)
    assert type(model).__name__ == "SegmentationModel" and type(model.model[-1]).__name__ == "Segment"
    from ultralytics import YOLO

    assert type(load_detection_model(YOLO(str(path)).model).model[-1]).__name__ == "Segment"


def test_load_pretrained_detector(shared_weights):
    from ultralytics.nn.tasks import DetectionModel

    model = load_detection_model(shared_weights("yolo11n-coco.pt"))
    assert type(model) is DetectionModel
    assert len(model.names) == 80
    assert next(model.parameters()).dtype == torch.float32


def test_adapt_head_to_names_remaps_class_rows_by_name(shared_weights):
    from yolo_ldac.nn.adapter import adapt_head_to_names

    model = load_detection_model(shared_weights("yolo11n-coco.pt")).eval()
    assert (model.names[0], model.names[5]) == ("person", "bus")
    assert adapt_head_to_names(model, dict(model.names), verbose=False) is model  # same classes: unchanged

    new = adapt_head_to_names(model, {0: "bus", 1: "person", 2: "unicorn"}, verbose=False).eval()
    assert new.names == {0: "bus", 1: "person", 2: "unicorn"} and new.model[-1].nc == 3
    x = torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        old_y, new_y = model(x)[0], new(x)[0]
    assert new_y.shape == (1, 4 + 3, old_y.shape[2])
    assert torch.allclose(new_y[:, :4], old_y[:, :4], atol=1e-5)  # boxes: the same network
    assert torch.allclose(new_y[:, 4], old_y[:, 4 + 5], atol=1e-5)  # "bus" row taken from COCO class 5
    assert torch.allclose(new_y[:, 5], old_y[:, 4 + 0], atol=1e-5)  # "person" row from COCO class 0

    rewrite_split_blocks(model)
    with pytest.raises(LDACError, match="already pruned"):
        adapt_head_to_names(model, {0: "bus"}, verbose=False)
