"""Tests of the engine's allocation options (ChannelPruner ``layer_cap`` and ``per_flop``) on a real YOLO11n."""

from __future__ import annotations

import math

import pytest
import torch

from yolo_ldac.errors import LDACError
from yolo_ldac.nn.adapter import protected_layers, rewrite_split_blocks
from yolo_ldac.pruning.complexity import Complexity, layer_channels, measure
from yolo_ldac.pruning.criteria import build_criterion
from yolo_ldac.pruning.engine import ChannelPruner

IMGSZ = 128


def _model():
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel("yolo11n.yaml", nc=3, verbose=False).float()
    rewrite_split_blocks(model)
    return model.eval()


def _pruner(model, **kw):
    prot = protected_layers(model)
    return ChannelPruner(model, build_criterion("l2"), measure(model, IMGSZ, protected=prot), layer_channels(model),
                         prot, imgsz=IMGSZ, compensate=False, **kw)


@pytest.mark.slow
@pytest.mark.parametrize("cap", [0.25, 0.5])
def test_layer_cap_bounds_what_each_layer_loses_in_a_step(cap):
    model = _model()
    before = layer_channels(model)
    res = _pruner(model, layer_cap=cap).step(0.2)
    assert abs(res.reached_ratio - 0.2) <= 0.01
    after = layer_channels(model)
    lost = {n: before[n] - after[n] for n in before}
    assert any(v > 0 for v in lost.values())
    for name, n in before.items():
        assert lost[name] <= math.floor(cap * n), f"{name}: {n} -> {after[name]} exceeds cap {cap}"


@pytest.mark.slow
def test_layer_cap_changes_the_plan_when_it_binds():
    a, b = _model(), _model()
    _pruner(a).step(0.3)
    _pruner(b, layer_cap=0.25).step(0.3)
    assert layer_channels(a) != layer_channels(b)


@pytest.mark.slow
def test_per_flop_reaches_the_target_and_ranks_differently():
    a, b = _model(), _model()
    ra = _pruner(a).step(0.3)
    rb = _pruner(b, per_flop=True).step(0.3)
    assert abs(rb.reached_ratio - 0.3) <= 0.01 and abs(ra.reached_ratio - 0.3) <= 0.01
    assert layer_channels(a) != layer_channels(b)
    with torch.no_grad():
        assert torch.isfinite(b(torch.rand(1, 3, 64, 64))[0]).all()


def test_bad_layer_cap_rejected():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1))
    for cap in (0.0, 1.5):
        with pytest.raises(LDACError, match="layer_cap"):
            ChannelPruner(net, build_criterion("l2"), Complexity(1.0, 1, 1), {}, [], imgsz=8, layer_cap=cap)
