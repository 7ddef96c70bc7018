"""benchmarks/grid.py: every method trains the same epochs (and so the same optimizer steps) from the same base."""

from __future__ import annotations

import argparse

from helpers import load_script


def load_grid():
    return load_script("benchmarks/grid.py")


def test_equal_epochs_and_settings_keys():
    grid = load_grid()
    args = argparse.Namespace(imgsz=160, batch=16, warmup_epochs=1.0, device="cpu", calib=4, epochs=24, rounds=4,
                              epochs_per_round=2)
    plain = grid.run_settings(args, "group_fisher", 0.5, 0)
    pushed = grid.run_settings(args, "ldac:push=fade", 0.5, 0)
    dense = grid.run_settings(args, "dense", 0.5, 0)
    assert plain["nbs"] == plain["batch"] == 16  # one optimizer step per batch
    assert plain["finetune_epochs"] + 3 * 2 == pushed["finetune_epochs"] + 4 * 2 == dense["epochs"] == 24
    assert pushed["resolved"]["parts"] == {"criterion": "ldac", "push": "fade", "compensate": "lsq"}
    assert grid.parse_method("ldac:push=fade:fade_end=0.25") == ("ldac", {"push": "fade", "fade_end": 0.25})
    assert grid.run_key(plain, "b.pt", "d.yaml") != grid.run_key(pushed, "b.pt", "d.yaml")
