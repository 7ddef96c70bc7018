"""The fade push: doomed channels reach zero output during the push, and the step that removes them is exact."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from helpers import channel_pruner, output_rel_diff

from yolo_ldac.push.fade import FadeSchedule, doomed_outputs


@pytest.fixture(scope="module")
def calibrated():
    from helpers import tiny_pruned_model

    return tiny_pruned_model("yolo11n.yaml", nc=3, seed=1, n_groups=0)


def test_faded_channels_are_removed_exactly(calibrated, calib_batches):
    """Faded to 0 (scale and shift), the planned channels output exactly 0: removing them (with their coupled twins)
    leaves the model's outputs unchanged."""
    model = copy.deepcopy(calibrated).eval()
    pruner = channel_pruner(model)
    chosen = pruner.choose(0.3)
    doomed = doomed_outputs(model, chosen)
    assert sum(map(len, doomed.values())) >= sum(map(len, chosen.values())) > 0
    schedule = FadeSchedule(model, doomed)
    x = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        dense = model(x)[0]
        schedule.apply(model, 0.5)
        half = model(x)[0]
        schedule.apply(model, 0.0)
        faded = model(x)[0]
    assert (half - dense).abs().max() > 1e-3  # the fade does change the model while it runs
    step = channel_pruner(model).step(0.3, calib_batches, planned=chosen)
    assert abs(step.reached_ratio - 0.3) <= 0.01
    with torch.no_grad():
        after = model.eval()(x)[0]
    assert after.shape == faded.shape
    # float32 reordering across ~100 layers, amplified by DFL decoding, is ~1e-4 of the boxes' scale
    assert output_rel_diff(after, faded) < 1e-3
    # The same removal without the fade changes the outputs by far more: the check can fail.
    plain = copy.deepcopy(calibrated).eval()
    channel_pruner(plain).step(0.3, calib_batches, planned=chosen)
    with torch.no_grad():
        assert output_rel_diff(plain(x)[0], dense) > 1e-2


def test_push_phase_fades_to_zero_and_step_is_lossless(shapes_data, tmp_path):
    """In a real run (push=fade): after the push phase the doomed BN scales and shifts are exactly 0 in the trained
    model, and the step removes exactly the planned channels, changing no output."""
    from yolo_ldac import YOLOLDAC

    seen = {}

    def check(comp):
        if comp.phase == "round1.push":
            plan = comp.state.record["push_plans"]["1"]
            model = comp.model_for_phase
            doomed = doomed_outputs(model, plan)
            sched = FadeSchedule(model, {})
            from yolo_ldac.ldac.criterion import conv_wrappers

            mods, wr = dict(model.named_modules()), conv_wrappers(model)
            vals = torch.cat([torch.cat([wr[mods[n]].bn.weight[i].abs(), wr[mods[n]].bn.bias[i].abs()])
                              for n, i in doomed.items() if mods[n] in wr])
            seen["max_doomed"] = float(vals.max())
            x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                seen["before"] = model.eval()(x)[0].clone()
            seen["x"] = x
            del sched
        if comp.phase == "round1.step":
            with torch.no_grad():
                seen["after"] = comp.model_for_phase.eval()(seen["x"])[0]

    runner = YOLOLDAC("yolo11n.yaml")
    runner.add_callback("on_phase_end", check)
    res = runner.compress(data=str(shapes_data), ratio=0.3, rounds=1, epochs_per_round=2, finetune_epochs=0,
                          method="l2", push="fade", imgsz=64, batch=8, plots=False, workers=0, project=str(tmp_path))
    assert seen["max_doomed"] == 0.0
    assert output_rel_diff(seen["after"], seen["before"]) < 1e-3
    rep = json.loads((res.run_dir / "report.json").read_text())
    assert rep["rounds"][0]["planned_by_push"] and rep["rounds"][0]["faded_channels"] > 0
    assert rep["parts"] == {"criterion": "l2", "push": "fade", "compensate": "mean"}
