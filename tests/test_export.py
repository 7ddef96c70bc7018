"""Tests of the export wrapper and the ONNX-vs-PyTorch parity check."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from helpers import save_checkpoint as save_ultralytics_checkpoint
from helpers import tiny_pruned_model

import yolo_ldac.export as export_mod
from yolo_ldac.checkpoint import save_portable
from yolo_ldac.errors import LDACError
from yolo_ldac.export import check_onnx_parity, export_model, parity_metrics

IMGSZ = 96


@pytest.fixture(scope="module")
def pruned():
    return tiny_pruned_model("yolo11n.yaml", nc=3, seed=0)


@pytest.fixture(scope="module")
def exported(pruned, tmp_path_factory):
    """(pt path, onnx path) of the tiny pruned model exported at IMGSZ with the default parity check."""
    pt = save_ultralytics_checkpoint(pruned, tmp_path_factory.mktemp("export") / "pruned.pt")
    return pt, export_model(pt, format="onnx", imgsz=IMGSZ)


@pytest.mark.slow
def test_export_onnx_with_parity(pruned, exported, bus_image):
    from ultralytics import YOLO

    pt, onnx_path = exported
    reloaded = YOLO(str(pt)).model
    assert [m.weight.shape for m in reloaded.modules() if isinstance(m, torch.nn.Conv2d)] == [
        m.weight.shape for m in pruned.modules() if isinstance(m, torch.nn.Conv2d)
    ]
    assert onnx_path == pt.with_suffix(".onnx") and onnx_path.is_file()
    result = check_onnx_parity(YOLO(str(pt)), onnx_path, image=bus_image, imgsz=IMGSZ)  # a YOLO wrapper works too
    assert result["ok"] and result["max_rel_diff"] <= 1e-3 and result["rtol"] == 1e-3
    assert result["shape"] == [1, 4 + 3, (IMGSZ // 8) ** 2 + (IMGSZ // 16) ** 2 + (IMGSZ // 32) ** 2]
    # the exporter fuses Conv+BN; a fused reference agrees just as well
    fused = YOLO(str(pt)).model.fuse(verbose=False)
    assert check_onnx_parity(fused, onnx_path, imgsz=IMGSZ)["max_rel_diff"] <= 1e-3


@pytest.mark.slow
def test_broken_onnx_fails_parity(exported, tmp_path):
    import onnx
    from onnx import numpy_helper
    from ultralytics import YOLO

    pt, onnx_path = exported
    graph = onnx.load(str(onnx_path))
    conv_weights = {n.input[1] for n in graph.graph.node if n.op_type == "Conv"}
    inits = [i for i in graph.graph.initializer if i.name in conv_weights]
    largest = max(inits, key=lambda i: int(np.prod(i.dims)))
    largest.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(largest) * 1.5, largest.name))
    broken = tmp_path / "broken.onnx"
    onnx.save(graph, str(broken))
    with pytest.raises(LDACError, match="parity check failed") as e:
        check_onnx_parity(YOLO(str(pt)).model, broken, imgsz=IMGSZ)
    assert "\n" not in str(e.value)


@pytest.mark.slow
def test_export_portable_checkpoint(pruned, tmp_path):
    st = save_portable(pruned, tmp_path / "best")
    out = export_model(st, format="onnx", imgsz=64)
    assert out == tmp_path / "best.onnx" and out.is_file()
    assert not (tmp_path / "best.pt").exists()  # the temporary .pt stays out of the run directory


def test_simplify_failure_falls_back(exported, monkeypatch):
    pt, onnx_path = exported
    calls = []

    def fake(path, **args):
        calls.append(args["simplify"])
        if args["simplify"]:
            raise RuntimeError("onnxslim exploded")
        return onnx_path

    monkeypatch.setattr(export_mod, "_ultralytics_export", fake)
    assert export_model(pt, imgsz=IMGSZ, parity=False) == onnx_path
    assert calls == [True, False]


def test_bad_inputs_fail(exported, tmp_path, pruned):
    pt, onnx_path = exported
    with pytest.raises(LDACError, match="not found"):
        export_model(tmp_path / "missing.pt")
    with pytest.raises(LDACError, match="not found"):
        check_onnx_parity(pruned, tmp_path / "missing.onnx", imgsz=IMGSZ)
    with pytest.raises(LDACError, match="image .* not found"):
        check_onnx_parity(pruned, onnx_path, image=tmp_path / "nope.jpg", imgsz=IMGSZ)
    with pytest.raises(LDACError, match="takes 96x96 images"):
        check_onnx_parity(pruned, onnx_path, imgsz=640)


def test_parity_metrics_measure_scores_apart_from_boxes():
    a = np.zeros((1, 5, 10), dtype=np.float32)
    a[:, :4] = 600.0  # box coordinates in pixels
    a[:, 4] = 0.5  # class scores
    b = a.copy()
    b[0, 4, 3] = 0.9  # one wrong score: tiny next to the boxes' scale, large against the scores' own scale
    whole = parity_metrics(a, b)
    split = parity_metrics(a, b, [slice(0, 4), slice(4, None)])
    assert whole["max_rel_diff"] < 1e-3 < split["max_rel_diff"]
    assert split["max_abs_diff"] == pytest.approx(0.4)
    assert split["max_elem_rel_diff"] == pytest.approx(0.4 / (0.5 + 1e-3 * 0.5))


@pytest.fixture(scope="module")
def trained_at_64(pruned, tmp_path_factory):
    """A run's best.pt of a model trained at 64 px (its train_args say so, as Ultralytics' trainer writes them)."""
    from yolo_ldac.checkpoint import save_ultralytics_checkpoint as save_run_checkpoint

    return save_run_checkpoint(pruned, tmp_path_factory.mktemp("small") / "best.pt", {"imgsz": 64}, half=False)


def test_export_defaults_to_the_checkpoints_imgsz(trained_at_64, monkeypatch):
    """As `yolo export` does: no imgsz given -> the size the checkpoint was trained at; a given one wins."""
    import yolo_ldac.export

    from yolo_ldac import YOLOLDAC
    from yolo_ldac.api import trained_imgsz

    seen = []

    def fake(path, **kw):
        seen.append(kw["imgsz"])
        return export_mod.ExportResult(path=path, format="onnx", precision="fp32", imgsz=kw["imgsz"], size_mb=0.0,
                                       seconds=0.0, parity=None, accuracy=None, notes=[], failure=None)

    monkeypatch.setattr(yolo_ldac.export, "export_checked", fake)
    runner = YOLOLDAC(str(trained_at_64))
    assert trained_imgsz(runner.model) == 64
    runner.export(format="onnx", verbose=False)
    runner.export(format="onnx", imgsz=96, verbose=False)
    assert seen == [64, 96]


@pytest.mark.slow
def test_export_at_checkpoint_imgsz_passes_fp16_parity(trained_at_64):
    """The 64-px model exported without imgsz= is a 64x64 graph, and fp16 passes its parity check."""
    import onnx

    from yolo_ldac import YOLOLDAC

    runner = YOLOLDAC(str(trained_at_64))
    out = runner.export(format="onnx", half=True, verbose=False)
    dims = [d.dim_value for d in onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim]
    assert dims[-2:] == [64, 64] and runner.last_export.parity["ok"]
