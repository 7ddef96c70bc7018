"""Seeded everything: class rows re-initialised for new names, calibration and data order follow ``seed``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import save_checkpoint
from yolo_ldac.cli import main

TINY_YAML = Path(__file__).parent / "fixtures" / "models" / "yolo11-tiny.yaml"


def _class_rows(model) -> torch.Tensor:
    return torch.cat([branch[-1].weight.flatten() for branch in model.model[-1].cv3])


def test_new_class_rows_follow_seed_and_leave_global_rng_alone():
    from ultralytics.nn.tasks import DetectionModel

    from yolo_ldac.nn.adapter import adapt_head_to_names

    torch.manual_seed(5)
    model = DetectionModel(str(TINY_YAML), nc=2, verbose=False)
    model.names = {0: "apple", 1: "pear"}
    names = {0: "square", 1: "circle", 2: "triangle"}
    state = torch.get_rng_state()
    a = adapt_head_to_names(model, names, verbose=False, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    torch.rand(10)  # whatever ran before must not matter
    b = adapt_head_to_names(model, names, verbose=False, seed=3)
    c = adapt_head_to_names(model, names, verbose=False, seed=4)
    assert torch.equal(_class_rows(a), _class_rows(b))
    assert not torch.equal(_class_rows(a), _class_rows(c))


@pytest.mark.slow
def test_two_seeded_runs_with_new_class_names_give_identical_weights(shapes_data, tmp_path):
    """Same inputs and seed: byte-identical best.safetensors, the second run in a fresh process with another hash
    seed; another seed: different weights (so the comparison can fail)."""
    torch.manual_seed(123)
    base = _base_checkpoint(tmp_path)

    def argv(name: str, seed: int) -> list[str]:
        return ["compress", f"model={base}", f"data={shapes_data}", "ratio=0.2", "rounds=1", "epochs_per_round=0",
                "finetune_epochs=1", "method=l2", "imgsz=64", "batch=4", "calib_batches=1", f"seed={seed}",
                f"project={tmp_path}", f"name={name}", "plots=False", "val_steps=False", "exist_ok=True"]

    assert main(argv("a", 0)) == 0
    env = dict(os.environ, PYTHONHASHSEED="12345", PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "yolo_ldac.cli", *argv("b", 0)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert main(argv("c", 1)) == 0
    weights = {n: (tmp_path / n / "weights" / "best.safetensors").read_bytes() for n in "abc"}
    assert weights["a"] == weights["b"]
    assert weights["a"] != weights["c"]


def _base_checkpoint(tmp_path: Path) -> Path:
    """A tiny 2-class checkpoint whose class names (apple, pear) are all new to the shapes data."""
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel(str(TINY_YAML), nc=2, verbose=False)
    model.names = {0: "apple", 1: "pear"}
    return save_checkpoint(model, tmp_path / "base.pt")


def test_portable_weights_are_byte_identical_for_the_same_model(tmp_path):
    """safetensors writes its metadata map in per-instance hash order; save_portable must not."""
    from ultralytics.nn.tasks import DetectionModel

    from yolo_ldac.checkpoint import load_portable, save_portable

    torch.manual_seed(0)
    model = DetectionModel(str(TINY_YAML), nc=2, verbose=False)
    blobs = {save_portable(model, tmp_path / f"m{i}").read_bytes() for i in range(6)}
    assert len(blobs) == 1
    load_portable(tmp_path / "m0.json")  # the rewritten header still loads (and matches the JSON's hash)
