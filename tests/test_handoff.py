"""The handoff push: consumers move from the doomed channels to their least-squares prediction, so the step is exact."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from helpers import channel_pruner, output_rel_diff

from yolo_ldac.push.handoff import HandoffSchedule, doomed_inputs


@pytest.fixture(scope="module")
def calibrated():
    from helpers import tiny_pruned_model

    return tiny_pruned_model("yolo11n.yaml", nc=3, seed=1, n_groups=0)


def _mean_dev(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean absolute difference of the class scores, against their mean size."""
    return float((a[:, 4:] - b[:, 4:]).abs().mean() / b[:, 4:].abs().mean())


def test_handoff_at_one_equals_the_lsq_step_and_the_step_is_then_exact(calibrated, calib_batches):
    """t = 1 in steps (0.25 + 0.5 + 0.25) is the lsq-compensated pruned model; removing the channels then changes
    nothing, and t = 0 is the model itself."""
    model = copy.deepcopy(calibrated).eval()
    chosen = channel_pruner(model, compensate="lsq").choose(0.3)
    doomed = doomed_inputs(model, chosen)
    assert sum(map(len, doomed.values())) > 0
    images = [b["img"] for b in calib_batches]
    sched = HandoffSchedule(model, doomed, images, ridge=1e-3)
    x = images[0][:2]
    with torch.no_grad():
        dense = model(x)[0]
        sched.apply(model, 0.0, 0.0)
        assert output_rel_diff(model(x)[0], dense) < 1e-6
        sched.apply(model, 0.25, 0.25)
        sched.apply(model, 0.75, 0.5)
        sched.apply(model, 1.0, 0.25)
        handed = model(x)[0]
    # every removed column is exactly zero: nothing reads a doomed channel any more
    mods = dict(model.named_modules())
    assert all(float(mods[c.name].weight.detach()[:, c.removed].abs().max()) == 0.0 for c in sched.consumers)
    # the same as pruning the original with compensate=lsq on the same calibration images
    ref = copy.deepcopy(calibrated).eval()
    channel_pruner(ref, compensate="lsq").step(0.3, calib_batches, planned=chosen)
    step = channel_pruner(model, compensate="none").step(0.3, calib_batches, planned=chosen)
    assert abs(step.reached_ratio - 0.3) <= 0.01
    plain = copy.deepcopy(calibrated).eval()
    channel_pruner(plain, compensate="none").step(0.3, calib_batches, planned=chosen)
    with torch.no_grad():
        after, lsq, none = model.eval()(x)[0], ref(x)[0], plain(x)[0]
    assert output_rel_diff(after, handed) < 1e-3  # the step itself is exact
    assert output_rel_diff(after, dense) > 1e-2  # the handoff did change the model: the checks above can fail
    # It lands near the one-shot lsq step (not exactly: lsq fits one group after another, each with its own
    # relative ridge; the handoff fits all of a consumer's removed inputs at once), far from no compensation.
    # Measured: mean score deviation 0.026 (handoff) vs 0.56 (no compensation).
    assert _mean_dev(after, lsq) < 0.1 < 0.3 < _mean_dev(none, lsq)


def test_push_phase_hands_off_and_step_is_lossless(shapes_data, tmp_path):
    """In a real run (push=handoff) the removed columns of every consumer are 0 after the push, and the step changes
    no output."""
    from yolo_ldac import YOLOLDAC

    seen = {}

    def check(comp):
        if comp.phase == "round1.push":
            model = comp.model_for_phase
            plan = comp.state.record["push_plans"]["1"]
            mods = dict(model.named_modules())
            seen["max_read"] = max(float(mods[n].weight.detach()[:, i].abs().max())
                                   for n, i in doomed_inputs(model, plan).items())
            x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                seen["before"] = model.eval()(x)[0].clone()
            seen["x"] = x
        if comp.phase == "round1.step":
            with torch.no_grad():
                seen["after"] = comp.model_for_phase.eval()(seen["x"])[0]

    runner = YOLOLDAC("yolo11n.yaml")
    runner.add_callback("on_phase_end", check)
    res = runner.compress(data=str(shapes_data), ratio=0.3, rounds=1, epochs_per_round=2, finetune_epochs=0,
                          method="l2", push="handoff", imgsz=64, batch=8, plots=False, workers=0,
                          project=str(tmp_path))
    assert seen["max_read"] == 0.0
    assert output_rel_diff(seen["after"], seen["before"]) < 1e-3
    rep = json.loads((res.run_dir / "report.json").read_text())
    assert rep["rounds"][0]["planned_by_push"] and rep["rounds"][0]["handed_off_inputs"] > 0
    assert rep["parts"] == {"criterion": "l2", "push": "handoff", "compensate": "mean"}
