"""End-to-end tests of the Python API (``YOLOLDAC``): compress, prune, info, reload, pickle-free reload, export.

One module-scoped ``compress`` run (yolo11n.yaml, l2, 50 % of the FLOPs, 2 rounds) is shared by most tests; each
run is a few seconds on 2 CPU cores at imgsz 128 on the synthetic shapes dataset.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import ultralytics  # noqa: F401  (at collection: its log handler binds sys.stdout at import, which must
#                    not be a capsys/capfd stream that a test closes)
import torch
import torch.nn as nn

from yolo_ldac import YOLOLDAC
from yolo_ldac.api import CompressResult

pytestmark = pytest.mark.slow

IMGSZ = 128
FAST = dict(imgsz=IMGSZ, batch=8, plots=False)


def conv_channels(model: nn.Module) -> dict[str, int]:
    return {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


# ----------------------------------------------------------------------------------------------- the shared run
@pytest.fixture(scope="module")
def compressed(shapes_data, tmp_path_factory):
    """(runner, result) of one compress run: yolo11n.yaml, method l2, 50 % FLOPs over 2 rounds."""
    project = tmp_path_factory.mktemp("api-compress")
    runner = YOLOLDAC("yolo11n.yaml")
    result = runner.compress(data=str(shapes_data), ratio=0.5, method="l2", rounds=2, epochs_per_round=1,
                             finetune_epochs=1, project=str(project), name="c11", **FAST)
    return runner, result


@pytest.fixture(scope="module")
def report(compressed) -> dict:
    return json.loads((compressed[1].run_dir / "report.json").read_text(encoding="utf-8"))


def test_compress_removes_target_flops(compressed):
    _, result = compressed
    assert isinstance(result, CompressResult)
    assert 49 <= result.removed["flops_pct"] <= 51, result.removed
    assert result.after["flops_g"] < result.before["flops_g"]
    assert result.after["params_m"] < result.before["params_m"]


def test_compress_writes_report_files(compressed):
    run_dir = compressed[1].run_dir
    for name in ("report.json", "report.md", "channels.png"):
        assert (run_dir / name).is_file(), name
        assert (run_dir / name).stat().st_size > 0, name
    assert "|" in (run_dir / "report.md").read_text(encoding="utf-8")  # a markdown table
    assert (run_dir / "channels.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_json_content(report, compressed):
    _, result = compressed
    for side in ("before", "after"):
        for key in ("map50_95", "flops_g", "params_m"):
            assert key in report[side], (side, key)
        assert isinstance(report[side]["map50_95"], float)
        assert 0.0 <= report[side]["map50_95"] <= 1.0
        assert report[side]["flops_g"] > 0 and report[side]["params_m"] > 0
    assert report["after"]["flops_g"] < report["before"]["flops_g"]
    assert report["removed"] == result.removed
    assert report["model"] == report["settings"]["model"] == "yolo11n.yaml"  # what was passed, not the default
    assert isinstance(report["layers"], list) and report["layers"]
    assert all({"name", "before", "after"} <= set(layer) for layer in report["layers"])
    assert any(layer["after"] < layer["before"] for layer in report["layers"])
    assert all(layer["after"] <= layer["before"] for layer in report["layers"])
    assert len(report["rounds"]) == 2
    for i, rnd in enumerate(report["rounds"], 1):
        assert "ratio_reached" in rnd
        assert rnd["round"] == i
    # round 1 aims at half the ratio, round 2 at all of it
    assert report["rounds"][0]["ratio_reached"] == pytest.approx(0.25, abs=0.011)
    assert report["rounds"][1]["ratio_reached"] == pytest.approx(0.5, abs=0.011)
    assert isinstance(report["timings"], dict) and report["timings"]["total"] > 0
    assert report["timings"]["train"] > 0 and report["timings"]["prune"] > 0
    # push=none: the rounds' training is called what it is, and nothing is listed as a push
    assert "push" not in report["timings"] and report["timings"]["train_between_steps"] > 0
    assert set(report["timings_within"]) == {"train", "validate", "calibration_data"} & set(report["timings"])


def test_report_wall_time_shares_add_up(compressed):
    """The phases of report.md's wall-time table are disjoint: their shares add up to the total's 100 %; training
    and validation, which happen inside them, are listed apart."""
    md = (compressed[1].run_dir / "report.md").read_text(encoding="utf-8")
    section = md.split("## Wall time")[1].split("## Settings")[0]
    phases, inside = section.split("Inside those phases")
    shares = [float(line.split("|")[4]) for line in phases.splitlines()
              if line.startswith("| ") and "**total**" not in line and "share %" not in line and "---" not in line]
    assert sum(shares) == pytest.approx(100.0, abs=0.5), shares
    assert "| push |" not in section and "| train_between_steps |" in phases
    assert "training (" in inside and "validation (" in inside


def test_finetune_results_csv(compressed):
    run_dir = compressed[1].run_dir
    csv_path = run_dir / "finetune" / "results.csv"
    assert csv_path.is_file()
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) >= 1
    assert (run_dir / "round2" / "results.csv").is_file()  # epochs_per_round=1: trained before round 2


def test_best_pt_is_the_pruned_model(compressed, report):
    """The weights in best.pt have the report's pruned channel counts: the pruned module was trained, not a dense
    model rebuilt from its yaml."""
    from ultralytics.nn.tasks import load_checkpoint

    result = compressed[1]
    assert result.best.is_file()
    model, ckpt = load_checkpoint(result.best)
    got = conv_channels(model)
    want = {layer["name"]: layer["after"] for layer in report["layers"]}
    assert got == want
    dense = {layer["name"]: layer["before"] for layer in report["layers"]}
    assert got != dense
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params / 1e6 == pytest.approx(report["after"]["params_m"], abs=1e-3)


def test_portable_files_exist(compressed):
    result = compressed[1]
    assert result.portable is not None
    assert result.portable.is_file() and result.portable.suffix == ".safetensors"
    assert result.portable.with_suffix(".json").is_file()


def test_best_pt_reloads_with_plain_ultralytics(compressed, shapes_data, bus_image, tmp_path):
    """A fresh interpreter with only ``from ultralytics import YOLO`` (yolo_ldac installed, not imported) loads,
    validates and predicts with best.pt: the pickled split blocks resolve through ``yolo_ldac.nn.modules``."""
    script = tmp_path / "reload.py"
    script.write_text(textwrap.dedent("""
        import sys
        assert "yolo_ldac" not in sys.modules
        from ultralytics import YOLO
        m = YOLO(sys.argv[1])
        metrics = m.val(data=sys.argv[2], imgsz=128, batch=8, plots=False)
        results = m.predict(sys.argv[3], imgsz=128, verbose=False)
        print("RELOAD-OK", type(results[0]).__name__, len(results), round(float(metrics.box.map), 6),
              "yolo_ldac.nn.modules" in sys.modules)
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "False"}
    env["YOLO_CONFIG_DIR"] = os.environ["YOLO_CONFIG_DIR"]
    proc = subprocess.run([sys.executable, str(script), str(compressed[1].best), str(shapes_data), str(bus_image)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RELOAD-OK")]
    assert line, proc.stdout[-3000:]
    _, kind, n, _map, imported = line[0].split()
    assert kind == "Results" and n == "1" and imported == "True"


def test_portable_reload_is_identical(compressed):
    """load_portable (no unpickling) rebuilds the saved model: same weights, bit-identical outputs."""
    from ultralytics.nn.tasks import load_checkpoint

    from yolo_ldac.checkpoint import load_portable

    runner, result = compressed
    saved = copy.deepcopy(runner.model).float().eval()  # the model save_portable was given (and runner kept)
    loaded = load_portable(result.portable)
    assert not loaded.training
    assert conv_channels(loaded) == conv_channels(saved)
    sd_saved, sd_loaded = saved.state_dict(), loaded.state_dict()
    assert set(sd_saved) == set(sd_loaded)
    for k, v in sd_saved.items():
        assert torch.equal(v.float(), sd_loaded[k].float()), k
    x = torch.rand(2, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = saved(x), loaded(x)
    a, b = (a[0] if isinstance(a, (tuple, list)) else a), (b[0] if isinstance(b, (tuple, list)) else b)
    assert a.dtype == b.dtype == torch.float32
    assert torch.equal(a, b)

    # best.pt holds the same model in half precision
    pt_model, _ = load_checkpoint(result.best)
    for k, v in pt_model.state_dict().items():
        if v.is_floating_point():
            assert torch.equal(v, sd_loaded[k].half().float()), k


def test_export_onnx_with_parity(compressed, monkeypatch):
    import yolo_ldac.export as export_mod

    calls = []
    real = export_mod.check_raw_parity

    def spy(*args, **kwargs):
        res = real(*args, **kwargs)
        calls.append(res)
        return res

    monkeypatch.setattr(export_mod, "check_raw_parity", spy)
    out = YOLOLDAC(str(compressed[1].best)).export(format="onnx", imgsz=IMGSZ)
    assert isinstance(out, Path) and out.suffix == ".onnx" and out.is_file()
    assert len(calls) == 1 and calls[0]["ok"], calls
    assert out.parent == compressed[1].best.parent


def test_export_onnx_default_batch_is_one(compressed):
    import onnxruntime as ort

    out = YOLOLDAC(str(compressed[1].best)).export(format="onnx", imgsz=IMGSZ, parity=False)
    shape = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).get_inputs()[0].shape
    assert shape[0] == 1, shape


# ------------------------------------------------------------------------------------------------ other runs
def test_compress_c2f_random(shapes_data, tmp_path):
    """yolov8n (C2f blocks) with the random criterion, one round without training before it."""
    result = YOLOLDAC("yolov8n.yaml").compress(data=str(shapes_data), ratio=0.3, method="random", rounds=1,
                                               epochs_per_round=0, finetune_epochs=1, project=str(tmp_path),
                                               name="v8", **FAST)
    assert 29 <= result.removed["flops_pct"] <= 31, result.removed
    assert (result.run_dir / "finetune" / "results.csv").is_file()
    assert not (result.run_dir / "round1").exists()  # epochs_per_round=0: no training between rounds
    assert len(result.rounds) == 1


def test_prune_mode_does_not_train(shapes_data, tmp_path, capsys):
    result = YOLOLDAC("yolo11n.yaml").prune(data=str(shapes_data), ratio=0.4, method="l1", rounds=2, val_steps=False,
                                            project=str(tmp_path), name="p", **FAST)
    # it ends on a before/after summary with the model's path, not on a progress bar
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-5] == "yolo-ldac prune: before -> after", out[-5:]
    params, flops, mean_ap = (line.split() for line in out[-4:-1])
    assert params[:2] == ["params", "(M)"] and float(params[2]) == pytest.approx(result.before["params_m"], abs=1e-3)
    assert flops[:3] == ["GFLOPs", f"({IMGSZ}", "px)"]  # at the run's input size, not the report's 640 px
    assert float(flops[3]) == pytest.approx(result.before["flops_g"] * (IMGSZ / 640) ** 2, abs=1e-3)
    assert float(flops[5]) == pytest.approx(result.after["flops_g"] * (IMGSZ / 640) ** 2, abs=1e-3)
    assert mean_ap[0] == "mAP50-95" and float(mean_ap[3]) == pytest.approx(result.after["map50_95"], abs=1e-4)
    assert out[-1].startswith(f"Results saved to {result.run_dir} (model: {result.best},")
    assert out[-1] in (result.run_dir / "log.txt").read_text(encoding="utf-8")
    assert abs(result.removed["flops_pct"] - 40) <= 1, result.removed
    assert not list(result.run_dir.rglob("results.csv"))
    assert result.best.is_file() and (result.run_dir / "report.json").is_file()
    assert result.timings["train"] == 0
    assert len(result.rounds) == 2


def test_info():
    info = YOLOLDAC("yolov8n.yaml").info(imgsz=640)
    assert info["params_m"] == pytest.approx(3.15, abs=0.05)  # yolov8n: 3.2 M parameters, 8.7 GFLOPs (80 classes)
    assert info["flops_g"] == pytest.approx(8.7, abs=0.3)
    assert info["imgsz"] == 640
    assert isinstance(info["table"], str)
    assert "model.0.conv" in info["table"] and "GFLOPs" in info["table"]
    assert len(info["table"].splitlines()) == len(info["layers"]) + 2


def test_info_docstring_example():
    assert YOLOLDAC("yolov8n.yaml").info(imgsz=640)["params_m"] > 0


@pytest.mark.parametrize("weights", ["yolo11n-coco.pt", "yolov8s-fall.pt"])
def test_prune_pretrained_then_predict(weights, shared_weights, shapes_data, bus_image, tmp_path):
    from ultralytics import YOLO
    from ultralytics.engine.results import Results

    src = shared_weights(weights)
    result = YOLOLDAC(src).prune(data=str(shapes_data), ratio=0.3, method="l1", rounds=2, project=str(tmp_path),
                                 name="pre", **FAST)
    assert abs(result.removed["flops_pct"] - 30) <= 1, result.removed
    preds = YOLO(str(result.best)).predict(str(bus_image), imgsz=IMGSZ, verbose=False)
    assert len(preds) == 1 and isinstance(preds[0], Results)
    assert preds[0].boxes is not None
