"""benchmarks/grid.py end to end on a tiny set: a base trained once, dense + random + l2 compressing it with equal
optimizer steps, a run killed half way and resumed, latency added afterwards, a rerun that redoes nothing, and a
changed setting refused. About 40-60 s on one CPU core (yolo11-tiny at 64 px, 4 train images)."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest
import ultralytics  # noqa: F401  (imported before capsys replaces stdout: Ultralytics binds its log handler then)
from helpers import load_script

pytestmark = pytest.mark.slow  # trains: part of `make test` (the whole suite), not of `-m "not slow"`

TINY = Path(__file__).parent / "fixtures" / "models" / "yolo11-tiny.yaml"
N_TRAIN, BATCH, EPOCHS = 4, 2, 2


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def grid():
    return load_script("benchmarks/grid.py")


@pytest.fixture(scope="module")
def base_and_data(tmp_path_factory):
    """(folder, base.pt, data.yaml): yolo11-tiny trained one epoch on 4 shapes images at 64 px."""
    from yolo_ldac import YOLOLDAC
    from yolo_ldac.data import make_shapes_dataset

    root = tmp_path_factory.mktemp("grid-e2e")
    data = make_shapes_dataset(root / "shapes", n_train=N_TRAIN, n_val=2, imgsz=64, seed=0)
    res = YOLOLDAC(str(TINY)).finetune(data=str(data), epochs=1, imgsz=64, batch=BATCH, nbs=BATCH, workers=0,
                                       project=str(root / "base"), name="tiny", plots=False, portable=False)
    base = root / "base.pt"
    shutil.copy2(res.best, base)
    return root, base, data


def interrupt_in_finetune(trainer) -> None:
    """A kill half way: the fine-tuning phase stops after its first epoch (its epoch_last.pt is saved)."""
    if trainer.epoch == 0:
        raise KeyboardInterrupt


def test_grid_end_to_end(grid, base_and_data, capsys):
    from yolo_ldac import YOLOLDAC

    root, base, data = base_and_data
    base_sha, base_mtime = sha256(base), base.stat().st_mtime_ns
    results, project = root / "results", root / "runs"
    argv = ["--base", str(base), "--data", str(data), "--methods", "dense", "random", "l2", "--ratios", "0.3",
            "--seeds", "0", "--epochs", str(EPOCHS), "--rounds", "1", "--epochs-per-round", "1", "--imgsz", "64",
            "--batch", str(BATCH), "--latency-runs", "2", "--out", str(results), "--project", str(project)]
    plans = {p.id: p for p in grid.plan_grid(grid.parse_args(argv))}
    assert set(plans) == {"dense__s0", "random__r0.3__s0", "l2__r0.3__s0"}
    want_steps = math.ceil(N_TRAIN / BATCH) * EPOCHS
    assert {grid.expected_steps(p.settings, N_TRAIN) for p in plans.values()} == {want_steps}

    # l2 was killed half way through its fine-tuning: the grid must resume it, not start it again
    killed = plans["l2__r0.3__s0"]
    runner = YOLOLDAC(str(base)).add_callback("on_fit_epoch_end", interrupt_in_finetune)
    with pytest.raises(KeyboardInterrupt):
        runner.compress(**killed.train_kwargs())
    assert grid.run_status(killed) == "stopped at finetune (resumable)"

    # 1. train everything (no latency yet)
    assert grid.main([*argv, "--no-latency"]) == 0
    recs = {rid: json.loads(p.out.read_text()) for rid, p in plans.items()}
    assert {r["optimizer_steps"]["total"] for r in recs.values()} == {want_steps}  # equal, and as planned
    resumed = recs["l2__r0.3__s0"]["resumed"]
    assert resumed and resumed[0]["at_phase"] == "finetune", resumed
    assert not recs["random__r0.3__s0"]["resumed"] and not recs["dense__s0"]["resumed"]
    for r in recs.values():
        assert r["latency"] is None and r["after"]["flops_g"] > 0
        rep = json.loads(Path(r["report"]).read_text())
        assert rep["model"] == rep["settings"]["model"] == str(base)  # every run compressed the base as given
    assert 25 <= recs["l2__r0.3__s0"]["removed"]["flops_pct"] <= 35
    table = (results / "shapes" / "grid.md").read_text()
    assert "| latency 1 / all threads (ms) |" in table and "| FLOPs G (removed) |" in table
    l2_row = next(line for line in table.splitlines() if line.startswith("| l2 "))
    assert f"| - | {want_steps} |" in l2_row  # no latency yet

    # the base was neither trained nor touched: the only run folders are the grid's own
    assert sha256(base) == base_sha and base.stat().st_mtime_ns == base_mtime
    assert sorted(p.name for p in (project / "shapes").iterdir()) == sorted(plans)

    # 2. latency only: nothing is trained again
    reports = {rid: Path(r["report"]).stat().st_mtime_ns for rid, r in recs.items()}
    capsys.readouterr()
    assert grid.main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count("skipped ") == 3 and printed.count("timed ") == 3 and "trained " not in printed
    assert {rid: Path(r["report"]).stat().st_mtime_ns for rid, r in recs.items()} == reports
    for rid, p in plans.items():
        rec = json.loads(p.out.read_text())
        assert rec["key"] == recs[rid]["key"] and rec["optimizer_steps"] == recs[rid]["optimizer_steps"]
        lat = rec["latency"]
        assert lat["ms_1_thread"] > 0 and lat["ms_all_threads"] > 0 and lat["imgsz"] == 64 and lat["batch"] == 1
        assert lat["threads_1"]["runs"] == 2 and lat["threads_all"]["runs"] == 2 and Path(lat["onnx"]).is_file()
    l2_row = next(line for line in (results / "shapes" / "grid.md").read_text().splitlines()
                  if line.startswith("| l2 "))
    assert f"| - | {want_steps} |" not in l2_row and " / " in l2_row

    # 3. a rerun redoes nothing; the dry run lists every run as finished
    jsons = {p.out: p.out.stat().st_mtime_ns for p in plans.values()}
    capsys.readouterr()
    assert grid.main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count("skipped ") == 3 and "timed " not in printed and "trained " not in printed
    assert {f: f.stat().st_mtime_ns for f in jsons} == jsons
    assert grid.main([*argv, "--dry-run"]) == 0
    assert capsys.readouterr().out.count(f"optimizer steps {want_steps}: finished (recorded {want_steps} steps)") == 3

    # 4. other settings into the same folders are refused before anything trains
    changed = [*argv[:argv.index("--epochs") + 1], str(EPOCHS + 1), *argv[argv.index("--epochs") + 2:]]
    with pytest.raises(SystemExit, match="other settings"):
        grid.main(changed)
    assert {f: f.stat().st_mtime_ns for f in jsons} == jsons
    assert sorted(p.name for p in (project / "shapes").iterdir()) == sorted(plans)
