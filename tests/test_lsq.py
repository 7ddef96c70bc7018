"""Tests of least-squares compensation (yolo_ldac.pruning.lsq): exact hand-set reconstructions, the limit that is the
mean fold, skipped grouped convolutions, and the engine option ``compensate="lsq"``.

Float64 convolutions throughout the hand-set checks, so "reproduced" means to ~1e-9, far inside the 1e-6 asked.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch_pruning as tp

from yolo_ldac.pruning.compensate import InputMeans
from yolo_ldac.pruning.lsq import InputGram, channel_regression, refit_weight


def _random(*shape, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64)


class ConvBN(nn.Module):
    """conv (no bias) -> BN: the layout of Ultralytics' Conv block, without the activation."""

    def __init__(self, c1: int, c2: int, k: int):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, padding=k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c2)

    def forward(self, x):
        return self.bn(self.conv(x))


def test_channel_regression_recovers_hand_set_coefficients():
    # x2 = 0.5 x0 - 2 x1 + 3 exactly; x0, x1 independent
    x01 = _random(2, 500)
    x2 = 0.5 * x01[0] - 2.0 * x01[1] + 3.0
    x = torch.cat([x01, x2[None]])
    a, m = channel_regression(x @ x.T, x.sum(1), x.shape[1], keep=[0, 1], remove=[2], ridge=0.0)
    assert torch.allclose(a, torch.tensor([[0.5, -2.0]], dtype=torch.float64), atol=1e-9)
    assert torch.allclose(m, torch.tensor([3.0], dtype=torch.float64), atol=1e-9)


def test_refit_weight_hand_set():
    w = torch.zeros(1, 3, 1, 1, dtype=torch.float64)
    w[0, :, 0, 0] = torch.tensor([1.0, 2.0, 4.0])
    a = torch.tensor([[0.5, -2.0]], dtype=torch.float64)
    m = torch.tensor([3.0], dtype=torch.float64)
    new, shift = refit_weight(w, a, m, torch.tensor([0, 1]), torch.tensor([2]))
    assert new.flatten().tolist() == [1.0 + 4.0 * 0.5, 2.0 - 4.0 * 2.0]
    assert shift.tolist() == [12.0]


@torch.no_grad()
def test_1x1_removed_channel_that_is_an_affine_combination_is_reconstructed_exactly():
    conv = nn.Conv2d(3, 4, 1, bias=True).double()
    x = _random(3, 3, 6, 6, seed=1)
    x[:, 2] = 0.5 * x[:, 0] - 2.0 * x[:, 1] + 3.0
    y = conv(x)
    stats = InputGram.measure(nn.Sequential(conv), [x[:2], x[2:]], ridge=0.0)  # statistics over two batches
    assert stats.fold(conv, [2]) is True
    tp.prune_conv_in_channels(conv, [2])
    stats.drop(conv, [2])
    assert conv.in_channels == 2 and stats.stats[conv][2].shape == (2, 2)
    assert (conv(x[:, :2]) - y).abs().max() < 1e-6


@torch.no_grad()
def test_3x3_consumer_with_bn_is_reconstructed_exactly_for_a_pixelwise_linear_channel():
    # Zero padding: a channel that is a *linear* (no constant) combination of kept ones stays exact at the borders.
    block = ConvBN(4, 3, 3).double().eval()
    block.bn.running_mean.copy_(_random(3, seed=2))
    block.bn.running_var.copy_(_random(3, seed=3).abs() + 0.5)
    x = _random(2, 4, 7, 7, seed=4)
    x[:, 1] = 1.5 * x[:, 0] - 0.25 * x[:, 3]
    y = block(x)
    stats = InputGram.measure(block, [x], ridge=0.0)
    assert stats.bn_after[block.conv] is block.bn
    assert stats.fold(block.conv, [1]) is True
    assert block.conv.bias is None  # the (here ~0) constant goes into the BN running mean
    tp.prune_conv_in_channels(block.conv, [1])
    assert (block(x[:, [0, 2, 3]]) - y).abs().max() < 1e-6


@torch.no_grad()
def test_lsq_beats_the_mean_fold_on_correlated_inputs_and_becomes_it_under_a_huge_ridge():
    base = nn.Conv2d(4, 5, 1, bias=True).double()
    x = _random(4, 4, 5, 5, seed=5)
    x[:, 3] = 0.8 * x[:, 0] + 0.3 * _random(4, 5, 5, seed=6) + 1.0  # correlated, not exactly
    y = base(x)
    errs = {}
    for mode in ("mean", "lsq", "huge_ridge"):
        conv = copy.deepcopy(base)
        if mode == "mean":
            stats = InputMeans.measure(nn.Sequential(conv), [x])
        else:
            stats = InputGram.measure(nn.Sequential(conv), [x], ridge=1e12 if mode == "huge_ridge" else 1e-3)
        stats.fold(conv, [3])
        tp.prune_conv_in_channels(conv, [3])
        errs[mode] = float((conv(x[:, :3]) - y).pow(2).mean())
    assert errs["lsq"] < 0.5 * errs["mean"]
    assert errs["huge_ridge"] == pytest.approx(errs["mean"], rel=1e-6)


@torch.no_grad()
def test_grouped_and_depthwise_consumers_are_skipped():
    dw = nn.Conv2d(4, 4, 3, padding=1, groups=4)
    net = nn.Sequential(dw)
    stats = InputGram.measure(net, [torch.randn(1, 4, 5, 5)])
    assert dw not in stats.stats
    assert stats.fold(dw, [0]) is False


@torch.no_grad()
def test_stale_statistics_do_nothing():
    conv = nn.Conv2d(3, 2, 1)
    stats = InputGram.measure(nn.Sequential(conv), [torch.randn(1, 3, 4, 4)])
    w = conv.weight.clone()
    tp.prune_conv_in_channels(conv, [0])  # pruned behind the statistics' back
    assert stats.fold(conv, [1]) is False
    assert torch.equal(conv.weight, w[:, 1:])


@pytest.mark.slow
def test_engine_compensate_lsq_on_yolo11n(calib_batches):
    """compensate='lsq' prunes a real YOLO11n (random weights, BN calibrated on a real photo) to its target and
    keeps its outputs closer to the dense ones, on the calibration images, than the mean fold or nothing does."""
    from ultralytics.nn.tasks import DetectionModel

    from helpers import _calibrate_batchnorm
    from yolo_ldac.nn.adapter import protected_layers, rewrite_split_blocks
    from yolo_ldac.pruning.complexity import layer_channels, measure
    from yolo_ldac.pruning.criteria import build_criterion
    from yolo_ldac.pruning.engine import ChannelPruner

    torch.manual_seed(0)
    dense = DetectionModel("yolo11n.yaml", nc=3, verbose=False).float()
    _calibrate_batchnorm(dense, torch.Generator().manual_seed(0))
    rewrite_split_blocks(dense)
    dense.eval()
    img = torch.cat([b["img"] for b in calib_batches])
    with torch.no_grad():
        ref = dense(img)[0]
    errs = {}
    for mode in ("lsq", "mean", False):
        model = copy.deepcopy(dense)
        prot = protected_layers(model)
        pruner = ChannelPruner(model, build_criterion("l2"), measure(model, 128, protected=prot),
                               layer_channels(model), prot, imgsz=128, compensate=mode)
        res = pruner.step(0.2, calib_batches)
        assert abs(res.reached_ratio - 0.2) <= 0.01
        with torch.no_grad():
            errs[mode] = float((model(img)[0] - ref).pow(2).mean())
    print(errs)
    assert errs["lsq"] < errs["mean"] and errs["lsq"] < errs[False]


def test_engine_rejects_unknown_compensation():
    from yolo_ldac.errors import LDACError
    from yolo_ldac.pruning.complexity import Complexity
    from yolo_ldac.pruning.criteria import build_criterion
    from yolo_ldac.pruning.engine import ChannelPruner

    net = nn.Sequential(nn.Conv2d(3, 8, 1))
    with pytest.raises(LDACError, match="compensate"):
        ChannelPruner(net, build_criterion("l2"), Complexity(1.0, 1, 1), {}, [], imgsz=8, compensate="median")


def test_centered_group_fisher_ignores_a_constant_channel():
    """A channel that is constant over the calibration images scores 0 under the centred mask (the fold gives it
    back exactly), while plain Group Fisher scores it > 0."""
    from yolo_ldac.pruning.fisher_variants import CenteredGroupFisherCriterion
    from yolo_ldac.pruning.fisher_px import GroupFisherCriterion

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(1, 2, 1)
            self.b = nn.Conv2d(2, 1, 1)

        def forward(self, x):
            return self.b(self.a(x))

    class Crit:
        def _loss(self, model, batch):
            return model(batch["img"]).pow(2).sum()

    net = Net().double()
    with torch.no_grad():
        net.a.weight[1].zero_()  # channel 1 of a: constant = its bias
        net.a.bias.fill_(1.0)
    batches = [{"img": _random(3, 1, 4, 4, seed=9)}]
    scores = {}
    for cls in (CenteredGroupFisherCriterion, GroupFisherCriterion):
        crit = type("C", (Crit, cls), {})()
        crit.prepare(net, batches)
        scores[cls.__name__] = crit.grads[net.a]
    assert scores["CenteredGroupFisherCriterion"][:, 1].abs().max() < 1e-12
    assert scores["GroupFisherCriterion"][:, 1].abs().max() > 1e-3
    assert scores["CenteredGroupFisherCriterion"][:, 0].abs().max() > 1e-3
