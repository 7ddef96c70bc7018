"""The compressor's phases, state, callbacks, device plumbing and the one-model-per-run rule."""

from __future__ import annotations

import json

import pytest
import torch

from yolo_ldac.errors import LDACError
from yolo_ldac.schedule import Callbacks, RunState, plan_phases
from yolo_ldac.schedule.compressor import batches_to

FAST = dict(imgsz=64, batch=8, plots=False, workers=0)


def test_plan_phases_per_mode():
    cfg = {"rounds": 2, "epochs_per_round": 1, "finetune_epochs": 3}
    assert plan_phases("compress", cfg, True) == [
        "prepare", "validate_base", "round1.push", "round1.step", "round2.push", "round2.step", "finetune",
        "validate_final", "save"]
    assert plan_phases("compress", cfg, False)[2:4] == ["round1.step", "round2.push"]
    assert plan_phases("prune", cfg, True) == ["prepare", "validate_base", "round1.step", "round2.step",
                                               "validate_final", "save"]
    assert plan_phases("finetune", cfg, True) == ["prepare", "validate_base", "finetune", "validate_final", "save"]
    assert "finetune" not in plan_phases("compress", {**cfg, "finetune_epochs": 0}, True)


def test_state_roundtrip_and_conflicts(tmp_path):
    st = RunState.new(tmp_path, "prune", {"seed": 2, "ratio": 0.5}, "m.pt", ["prepare", "round1.step", "save"])
    st.save()
    ckpt = tmp_path / "phases" / "00-prepare.pt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"x")
    st.mark_done("prepare", ckpt, 1.0)
    back = RunState.load(tmp_path)
    assert back.next_phase() == "round1.step" and back.last_checkpoint() == ckpt.resolve()
    assert back.phase_seed("round1.step") == 2001 == st.phase_seed("round1.step")
    back.check_resume_settings({"ratio": 0.5, "device": "cpu", "model": "m.pt"})
    with pytest.raises(LDACError, match=r"ratio=0.3 \(the run's: 0.5\)"):
        back.check_resume_settings({"ratio": 0.3})
    with pytest.raises(LDACError, match="not a yolo-ldac run directory"):
        RunState.load(tmp_path / "nothing")
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary file


def test_unknown_callback_event():
    cb = Callbacks()
    cb.add("on_fit_epoch_end", print)  # an Ultralytics trainer event is forwarded
    with pytest.raises(LDACError, match="unknown callback event 'on_stp_end'; did you mean 'on_step_end'"):
        cb.add("on_stp_end", print)


def test_batches_to_device():
    b = batches_to([{"img": torch.zeros(1, 3, 4, 4), "im_file": ["a"]}], torch.device("cpu"))
    assert b[0]["img"].device.type == "cpu" and b[0]["im_file"] == ["a"]


def test_callbacks_order_stop_and_resume(shapes_data, tmp_path):
    """Events fire in phase order; stop=True ends the run after a phase (no best.pt, state 'stopped'); resuming
    finishes it. Every phase keeps the model and the calibration batches on the run's device."""
    from yolo_ldac import YOLOLDAC

    events, devices = [], []

    def log(name):
        def fn(comp):
            events.append((name, comp.phase))
            if name == "on_phase_end":
                devices.append(next(comp.model_for_phase.parameters()).device)
                devices.extend(b["img"].device for b in (comp.calib or []))
            if name == "on_step_end" and comp.phase == "round1.step":
                comp.stop = True
        return fn

    runner = YOLOLDAC("yolo11n.yaml")
    for ev in ("on_run_start", "on_phase_start", "on_phase_end", "on_step_end", "on_round_end", "on_run_end"):
        runner.add_callback(ev, log(ev))
    kw = dict(data=str(shapes_data), ratio=0.3, rounds=2, method="taylor", project=str(tmp_path), name="cb",
              device="cpu", **FAST)
    assert runner.prune(**kw) is None
    run = tmp_path / "cb"
    state = json.loads((run / "state.json").read_text())
    assert state["status"] == "stopped" and not (run / "weights" / "best.pt").exists()
    assert [e for e in events if e[0] != "on_phase_start"][:8] == [
        ("on_run_start", None), ("on_phase_end", "prepare"), ("on_phase_end", "validate_base"),
        ("on_step_end", "round1.step"), ("on_phase_end", "round1.step"), ("on_round_end", "round1.step"),
        ("on_run_end", "round1.step")][:8]
    result = YOLOLDAC("yolo11n.yaml").prune(resume=str(run))
    assert result is not None and result.best.is_file() and result.resumed
    assert {d.type for d in devices} == {"cpu"} and devices


def test_one_model_per_run_and_info_on_phase_files(shapes_data, tmp_path):
    """A finished compress run holds exactly weights/best.pt; a phase file says it is not a finished model."""
    from yolo_ldac import YOLOLDAC

    kw = dict(data=str(shapes_data), ratio=0.3, rounds=2, epochs_per_round=1, finetune_epochs=1, method="l1",
              project=str(tmp_path), name="one", nbs=8, **FAST)
    seen = {}

    def grab(comp):
        if comp.phase == "round2.step":
            seen["phase_file"] = comp.state.last_checkpoint()
            import shutil

            shutil.copy(seen["phase_file"], tmp_path / "copied-phase.pt")
        if comp.phase == "finetune":
            seen["epoch_files"] = sorted(p.name for p in (comp.run_dir / "finetune" / "weights").glob("*.pt"))

    runner = YOLOLDAC("yolo11n.yaml")
    runner.add_callback("on_phase_end", grab)
    result = runner.compress(**kw)
    run = result.run_dir
    assert sorted(p.relative_to(run).as_posix() for p in run.rglob("*.pt")) == ["weights/best.pt"]
    assert seen["epoch_files"] == ["epoch_best.pt", "epoch_last.pt"]  # never best.pt/last.pt inside a phase
    assert (run / "round2" / "results.csv").is_file() and (run / "log.txt").stat().st_size > 0
    info = YOLOLDAC(str(result.best)).info(imgsz=64)
    assert info["finished"] and info["notice"] is None
    phase_info = YOLOLDAC(str(tmp_path / "copied-phase.pt")).info(imgsz=64)
    assert not phase_info["finished"] and "not a finished model" in phase_info["table"]
    rep = json.loads((run / "report.json").read_text())
    assert rep["parts"] == {"criterion": "l1", "push": "none", "compensate": "mean"}
    assert [p["name"] for p in rep["phases"]][-1] == "save" and rep["resumed"] == []
    # 16 images at batch 8 with nbs=8: one optimizer step per batch, 2 per epoch, counted from the trainer
    assert rep["optimizer_steps"] == {"round2": 2, "finetune": 2, "total": 4}
    assert rep["train_schedule"]["finetune"]["accumulate"] == 1 and rep["train_schedule"]["finetune"]["nbs"] == 8
    # lr_scale=auto: a model built from a yaml (random weights) trains at Ultralytics' own lr
    assert rep["train_schedule"]["finetune"]["lr_scale"] == 1.0
    # ... and the checkpoint it produced (trained weights) fine-tunes at a quarter of it
    again = YOLOLDAC(str(result.best)).finetune(data=str(shapes_data), epochs=1, project=str(tmp_path), name="ft",
                                                nbs=8, **FAST)
    sched = json.loads((again.run_dir / "report.json").read_text())["train_schedule"]["finetune"]
    assert sched["lr_scale"] == 0.25
    assert sched["lr0"] == pytest.approx(rep["train_schedule"]["finetune"]["lr0"] * 0.25)
