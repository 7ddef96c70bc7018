"""Interrupted runs: SIGKILL inside each phase, resume, and the same result as an uninterrupted run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from yolo_ldac.errors import LDACError

DRIVER = Path(__file__).with_name("resume_driver.py")
pytestmark = pytest.mark.slow


def _drive(spec: dict, expect_kill: bool) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, str(DRIVER), json.dumps(spec)], env=env, capture_output=True, text=True,
                          timeout=600)
    if expect_kill:
        assert proc.returncode == -9, f"expected SIGKILL, got {proc.returncode}\n{proc.stderr[-3000:]}"
    else:
        assert proc.returncode == 0, proc.stderr[-3000:]


def _state(run: Path) -> dict:
    return json.loads((run / "state.json").read_text())


def _report(run: Path) -> dict:
    return json.loads((run / "report.json").read_text())


def _kwargs(shapes_data, project, name, **extra) -> dict:
    kw = dict(model="yolo11n.yaml", data=str(shapes_data), ratio=0.4, rounds=2, epochs_per_round=2,
              finetune_epochs=2, imgsz=64, batch=8, project=str(project), name=name, plots=False, workers=0,
              method="ldac", criterion="random", push="ldac", calib_batches=1)
    kw.update(extra)
    return kw


@pytest.fixture(scope="module")
def reference(shapes_data, tmp_path_factory):
    """The uninterrupted run (in a subprocess, like the interrupted ones)."""
    project = tmp_path_factory.mktemp("ref")
    _drive({"kwargs": _kwargs(shapes_data, project, "ref")}, expect_kill=False)
    return project / "ref"


def test_killed_in_every_phase_resumes_to_the_same_run(reference, shapes_data, tmp_path):
    run = tmp_path / "killed"
    kills = ["prepare", "validate_base", "round1.push@0", "round1.step", "round2.push", "round2.step",
             "finetune@0", "validate_final", "save"]
    _drive({"kwargs": _kwargs(shapes_data, tmp_path, "killed"), "kill": kills[0]}, expect_kill=True)
    for kill in kills[1:]:
        state = _state(run)
        assert state["status"] == "running" and not (run / "weights" / "best.pt").exists()
        _drive({"kwargs": {}, "resume": str(run), "kill": kill}, expect_kill=True)
    _drive({"kwargs": {}, "resume": str(run)}, expect_kill=False)

    ref_state, state = _state(reference), _state(run)
    assert state["status"] == ref_state["status"] == "finished"
    assert state["phases"] == ref_state["phases"]
    assert [d["name"] for d in state["done"]] == [d["name"] for d in ref_state["done"]] == state["phases"]
    assert [r["at_phase"] for r in state["resumed"]] == [k.split("@")[0] for k in kills]
    ref_rep, rep = _report(reference), _report(run)
    assert rep["layers"] == ref_rep["layers"]  # identical channels per layer
    assert [r["ratio_reached"] for r in rep["rounds"]] == [r["ratio_reached"] for r in ref_rep["rounds"]]
    assert rep["resumed"] and not ref_rep["resumed"]
    assert "interrupted and resumed 9 time(s)" in (run / "report.md").read_text()
    # Mid-epoch kills resumed the training phase from its last epoch instead of starting it again.
    for phase in ("round1", "finetune"):
        rows = (run / phase / "results.csv").read_text().strip().splitlines()
        assert len(rows) == 1 + 2, rows
    assert "resum" in (run / "log.txt").read_text().lower()
    for r in (run, reference):
        assert sorted(p.relative_to(r).as_posix() for p in r.rglob("*.pt")) == ["weights/best.pt"]
        assert not list(r.rglob("last.pt")) and not (r / "phases").exists()


def test_prune_mode_resume_is_exact(shapes_data, tmp_path):
    """Without training every phase is deterministic: same scores, same channels (l2 scores the weights)."""
    kw = dict(model="yolo11n.yaml", data=str(shapes_data), ratio=0.4, rounds=3, imgsz=64, batch=8, plots=False,
              workers=0, method="l2", project=str(tmp_path))
    _drive({"kwargs": dict(kw, name="ref"), "mode": "prune"}, expect_kill=False)
    _drive({"kwargs": dict(kw, name="cut"), "mode": "prune", "kill": "round2.step"}, expect_kill=True)
    _drive({"kwargs": {}, "mode": "prune", "resume": str(tmp_path / "cut"), "kill": "round3.step"}, expect_kill=True)
    _drive({"kwargs": {}, "mode": "prune", "resume": str(tmp_path / "cut")}, expect_kill=False)
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "ref" / "weights" / "best.safetensors"))
    b = load_file(str(tmp_path / "cut" / "weights" / "best.safetensors"))
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape and bool((a[k] == b[k]).all()) for k in a)


def test_resume_true_touches_no_unrelated_run(shapes_data, tmp_path):
    from yolo_ldac import YOLOLDAC

    other = tmp_path / "elsewhere" / "exp"
    (other / "weights").mkdir(parents=True)
    (other / "weights" / "last.pt").write_bytes(b"not mine")
    (other / "state.json").write_text(json.dumps({"status": "running", "version": 1}))
    before = {p: p.stat().st_mtime_ns for p in other.rglob("*")}
    with pytest.raises(LDACError, match="no unfinished yolo-ldac run under"):
        YOLOLDAC("yolo11n.yaml").compress(data=str(shapes_data), resume=True, project=str(tmp_path / "mine"))
    assert {p: p.stat().st_mtime_ns for p in other.rglob("*")} == before
    assert not (tmp_path / "mine").exists()


def test_resume_refuses_changed_settings_and_finished_runs(shapes_data, tmp_path):
    from yolo_ldac import YOLOLDAC

    kw = dict(data=str(shapes_data), ratio=0.3, rounds=1, imgsz=64, batch=8, plots=False, method="l1",
              project=str(tmp_path), name="r", val_steps=False, portable=False)
    _drive({"kwargs": dict(kw, model="yolo11n.yaml"), "mode": "prune", "kill": "round1.step"}, expect_kill=True)
    with pytest.raises(LDACError, match=r"ratio=0.5 \(the run's: 0.3\) differ"):
        YOLOLDAC("yolo11n.yaml").prune(resume=str(tmp_path / "r"), ratio=0.5)
    with pytest.raises(LDACError, match="is a prune run: resume it with `yolo-ldac prune"):
        YOLOLDAC("yolo11n.yaml").compress(resume=str(tmp_path / "r"))
    result = YOLOLDAC("yolo11n.yaml").prune(resume=True, project=str(tmp_path))
    assert result.resumed and result.best.is_file()
    with pytest.raises(LDACError, match="is finished: nothing to resume"):
        YOLOLDAC("yolo11n.yaml").prune(resume=str(tmp_path / "r"))
