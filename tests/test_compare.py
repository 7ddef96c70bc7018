"""The benchmark harness (benchmarks/compare.py) end to end on a 2-image shapes set: per-run JSON files, the
markdown report, the plot, and a second invocation that redoes nothing (resume)."""

from __future__ import annotations

import json

import pytest
import ultralytics  # noqa: F401  (imported before capsys replaces stdout: Ultralytics binds its log handler then)
from helpers import load_script

pytestmark = pytest.mark.slow

def load_compare():
    return load_script("benchmarks/compare.py")


def test_train_epochs_are_equal_across_methods():
    compare = load_compare()
    for method in ("random", "l1", "ldac", "dense"):
        ft, total = compare.train_epochs(method, rounds=4, epochs_per_round=2, finetune_epochs=6, equalize=True)
        assert total == 4 * 2 + 6, method
    assert compare.train_epochs("l1", 4, 2, 6, equalize=True)[0] == 8  # the epochs a push would train before step 1
    assert compare.train_epochs("ldac", 4, 2, 6, equalize=True)[0] == 8  # LDAC's preset does not push (docs/method.md)
    assert compare.train_epochs("l1", 4, 2, 6, equalize=False) == (6, 12)
    assert compare.run_id("yolo11n-coco", "shapes", "l1", 0.3, 2) == "yolo11n-coco__shapes__l1__r0.3__s2"


def test_compare_end_to_end_and_resume(tmp_path, capsys):
    from yolo_ldac.data import make_shapes_dataset

    compare = load_compare()
    data = make_shapes_dataset(tmp_path / "shapes", n_train=2, n_val=2, imgsz=64, seed=0)
    out, report = tmp_path / "results", tmp_path / "BENCHMARKS.md"
    argv = ["--models", "yolo11n.yaml", "--data", str(data), "--methods", "random", "l1", "dense", "--seeds", "0",
            "--ratios", "0.3", "--rounds", "1", "--epochs-per-round", "1", "--finetune-epochs", "0", "--imgsz", "64",
            "--batch", "2", "--latency-runs", "3", "--jobs", "1", "--device", "cpu", "--out", str(out),
            "--report", str(report), "--project", str(tmp_path / "runs")]
    assert compare.main(argv) == 0

    files = sorted(out.glob("*.json"))
    assert [f.name for f in files] == ["yolo11n__shapes__dense__r0__s0.json", "yolo11n__shapes__l1__r0.3__s0.json",
                                       "yolo11n__shapes__random__r0.3__s0.json"]
    for f in files:
        rec = json.loads(f.read_text())
        assert rec["status"] == "finished"
        assert 0 <= rec["map50_95"] <= 1 and 0 <= rec["map50"] <= 1
        assert rec["flops_g"] > 0 and rec["params_m"] > 0
        assert rec["latency"]["ms_1_thread"] > 0 and rec["latency"]["ms_all_threads"] > 0
        assert rec["latency"]["threads_1"]["runs"] == 3 and rec["latency"]["batch"] == 1
        assert rec["schedule"]["epochs"] == 1 and rec["schedule"]["label"] == "1 ep x 2 img x 64 px"
        assert rec["wall_s"]["total"] > 0 and rec["machine"]["ultralytics"]
        if rec["method"] != "dense":
            assert 25 <= rec["removed"]["flops_pct"] <= 35
            assert len(rec["map50_95_per_step"]) == 1 and rec["map50_95_after_last_step"] is not None
    dense = json.loads(files[0].read_text())
    assert dense["flops_g"] > json.loads(files[1].read_text())["flops_g"]

    text = report.read_text()
    assert "benchmarks/compare.py" in text and "Command:" in text and "Machine:" in text
    for method in ("random", "l1", "dense"):
        assert f"| {method} | 1 ep x 2 img x 64 px |" in text
    assert "30% of the FLOPs removed" in text
    png = out / "map_vs_flops.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    mtimes = {f: f.stat().st_mtime_ns for f in files}
    capsys.readouterr()
    assert compare.main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count("skipped ") == 3 and "0 to train" in printed
    assert {f: f.stat().st_mtime_ns for f in files} == mtimes
    assert "| dense | 1 ep x 2 img x 64 px |" in report.read_text()
