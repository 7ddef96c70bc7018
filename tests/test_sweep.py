"""``yolo-ldac sweep``: one retention point per ratio, the three files, the trained curve, bad input in one line.
A tiny model (tests/fixtures/models/yolo11-tiny.yaml) on 4+2 shapes images at 64 px: seconds on one CPU core."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import ultralytics  # noqa: F401  (at collection: its log handler binds sys.stdout first)

from yolo_ldac.cli import main
from yolo_ldac.errors import LDACError
from yolo_ldac.sweep import markdown_table, pareto, parse_ratios

TINY = Path(__file__).parent / "fixtures" / "models" / "yolo11-tiny.yaml"
FAST = dict(imgsz=64, batch=2, calib_batches=1, plots=False)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    from yolo_ldac.data import make_shapes_dataset

    return make_shapes_dataset(tmp_path_factory.mktemp("sweep-shapes"), n_train=4, n_val=2, imgsz=64, seed=0)


# ----------------------------------------------------------------------------------------------- pure parts
def test_parse_ratios():
    assert parse_ratios("0.3, 0.1,0.2") == [0.1, 0.2, 0.3]
    assert parse_ratios([0.5, 0.25]) == [0.25, 0.5]
    assert parse_ratios(0.4) == [0.4]
    for bad, fragment in (("0.1,abc", "'abc' is not a number"), ("0.1,0.99", "(0, 0.95]"), ("", "ratios must be"),
                          ("0.2,0.2", "twice"), (True, "ratios must be")):
        with pytest.raises(LDACError, match=fragment.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                           .replace("]", r"\]")):
            parse_ratios(bad)


def test_pareto_front():
    pts = [{"ratio": r, "reached_ratio": r, "map50_95": m} for r, m in ((.1, .50), (.2, .52), (.3, .40), (.4, .41))]
    assert pareto(pts) == [0.2, 0.4]


def test_bad_ratios_key_is_one_line(capsys):
    assert main(["sweep", "model=yolo11n.yaml", "data=x.yaml", "ratios=0.1,2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("yolo-ldac: error: ratios must be"), err


def test_sweep_needs_data(capsys, tmp_path):
    assert main(["sweep", f"model={TINY}", f"project={tmp_path}"]) == 2
    assert "sweep needs data=" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing half-written


# ----------------------------------------------------------------------------------------------- real sweeps
@pytest.mark.slow
def test_sweep_writes_table_json_plot(tiny_data, tmp_path):
    from yolo_ldac import YOLOLDAC

    ratios = (0.1, 0.3, 0.5)
    res = YOLOLDAC(str(TINY)).sweep(data=str(tiny_data), ratios=",".join(map(str, ratios)), method="l2",
                                    project=str(tmp_path), **FAST)
    assert res.out_dir == (tmp_path / "sweep").resolve()
    for name in ("sweep.json", "sweep.md", "sweep.png"):
        assert (res.out_dir / name).is_file(), name
    rec = json.loads((res.out_dir / "sweep.json").read_text())
    assert [p["ratio"] for p in rec["points"]] == list(ratios)  # one entry per ratio
    assert rec["trained"] == [] and rec["base"]["flops_g"] > rec["points"][0]["flops_g"]
    flops = [p["flops_g"] for p in rec["points"]]
    assert all(a > b for a, b in zip(flops, flops[1:])), flops
    for p in rec["points"]:
        assert abs(p["reached_ratio"] - p["ratio"]) <= 0.02 and "model" not in p
    md = (res.out_dir / "sweep.md").read_text()
    assert md == markdown_table(rec) and md.count("\n| 0.") == len(ratios)


@pytest.mark.slow
def test_sweep_cli_with_trained_curve(tiny_data, tmp_path, capsys):
    argv = ["sweep", f"model={TINY}", f"data={tiny_data}", "ratios=0.2,0.4", "method=l2", "epochs=1", "rounds=1",
            "epochs_per_round=0", "imgsz=64", "batch=2", "calib_batches=1", "plots=False", f"project={tmp_path}",
            "name=s"]
    assert main(argv) == 0
    rec = json.loads((tmp_path / "s" / "sweep.json").read_text())
    assert [p["ratio"] for p in rec["trained"]] == [0.2, 0.4]
    for p in rec["trained"]:
        assert Path(p["best"]).is_file() and p["optimizer_steps"] > 0  # compressed with the usual schedule
    assert "## Trained" in (tmp_path / "s" / "sweep.md").read_text()


@pytest.mark.slow
def test_sweep_agrees_with_retention_script(tiny_data, tmp_path):
    """Both measure their points with yolo_ldac.sweep.retention_point: on the same base and settings (the
    script counting FLOPs as compress does, --counter ultralytics) the points are the same."""
    import copy

    import torch
    from helpers import load_script

    from yolo_ldac.nn.adapter import load_detection_model

    torch.manual_seed(0)
    base = load_detection_model(str(TINY))
    pt = tmp_path / "base.pt"
    from yolo_ldac.checkpoint import save_ultralytics_checkpoint

    save_ultralytics_checkpoint(copy.deepcopy(base), pt, {"imgsz": 64})
    retention = load_script("benchmarks/retention.py")
    _, recs = retention.retention_curves(pt, tiny_data, ["l2"], ratios=(0.3,), variants=("mean",),
                                         out=tmp_path / "ret", verbose=False, imgsz=64, calib_batches=1, calib_batch=2,
                                         val_batch=2, counter="ultralytics")
    from yolo_ldac import YOLOLDAC

    res = YOLOLDAC(str(pt)).sweep(data=str(tiny_data), ratios="0.3", method="l2", project=str(tmp_path), **FAST)
    a, b = recs[0], res.points[0]
    assert a["status"] == "finished"
    assert (a["map50_95"], a["reached_ratio"], a["flops_g"], a["widths"]) == \
        (b["map50_95"], b["reached_ratio"], b["flops_g"], b["widths"])
