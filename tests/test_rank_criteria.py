"""HRank and CHIP: the per-map statistics on hand-made tensors, the criteria on a tiny network whose feature maps
are known, the group mapping, and every prunable conv of YOLO11n scored."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch_pruning as tp
from ultralytics.nn.modules import Conv

from yolo_ldac.pruning.criteria import CRITERIA, build_criterion
from yolo_ldac.pruning.rank_criteria import (CHIPCriterion, HRankCriterion, channel_independence, feature_map_rank,
                                             group_mean_of_channel_scores)


def _brute_chip(a: torch.Tensor) -> torch.Tensor:
    a = a.double()
    nuc = torch.linalg.matrix_norm(a, "nuc")
    out = []
    for i in range(a.shape[0]):
        b = a.clone()
        b[i] = 0
        out.append(nuc - torch.linalg.matrix_norm(b, "nuc"))
    return torch.stack(out)


class PassThrough(nn.Module):
    """Conv block ``a`` copies its 4 input channels (1x1 identity conv, identity BN, no activation) into a consumer
    Conv ``b``: the feature maps of ``a`` are whatever the input is."""

    def __init__(self):
        super().__init__()
        self.a, self.b = Conv(4, 4, 1, act=False), Conv(4, 2, 1)
        with torch.no_grad():
            self.a.conv.weight.copy_(torch.eye(4).view(4, 4, 1, 1))
        self.a.eval()

    def forward(self, x):
        return self.b(self.a(x))


def _controlled_input(n: int = 2, hw: int = 8) -> torch.Tensor:
    """Channel 0: rank-1 outer product; 1: random (full rank); 2: zeros; 3: a copy of channel 1."""
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(n, 4, hw, hw)
    for i in range(n):
        u, v = torch.randn(hw, generator=g), torch.randn(hw, generator=g)
        x[i, 0] = torch.outer(u, v)
        x[i, 1] = torch.randn(hw, hw, generator=g)
        x[i, 3] = x[i, 1]
    return x


def test_registered_and_need_data():
    for name, cls in (("hrank", HRankCriterion), ("chip", CHIPCriterion)):
        assert CRITERIA[name] is cls
        assert build_criterion(name).needs_data


def test_feature_map_rank_on_hand_made_maps():
    x = _controlled_input(n=3, hw=8)
    r = feature_map_rank(x)
    assert r.shape == (3, 4)
    assert (r[:, 0] == 1).all() and (r[:, 1] == 8).all() and (r[:, 2] == 0).all() and (r[:, 3] == 8).all()


@pytest.mark.parametrize("shape", [(5, 9), (9, 5), (6, 6), (40, 30)])
def test_channel_independence_matches_brute_force(shape):
    a = torch.randn(*shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    fast, ref = channel_independence(a, chunk=4), _brute_chip(a)
    assert torch.allclose(fast, ref, atol=1e-6), (fast - ref).abs().max()
    assert (fast >= 0).all()


def test_channel_independence_zero_row_and_duplicate():
    g = torch.Generator().manual_seed(2)
    r0 = torch.randn(10, generator=g, dtype=torch.float64)
    r2 = torch.randn(10, generator=g, dtype=torch.float64)
    r2 = r2 - (r2 @ r0) / (r0 @ r0) * r0  # orthogonal to r0 ...
    r2 = r2 / r2.norm() * r0.norm()  # ... with the same norm
    a = torch.stack([r0, r0, r2, torch.zeros(10, dtype=torch.float64)])
    s = channel_independence(a)
    assert s[3] == 0.0  # removing an all-zero row leaves the nuclear norm unchanged: exactly 0
    # singular values sqrt(2)|r0| and |r0|: dropping a duplicate costs (sqrt(2) - 1)|r0|, the independent row |r0|
    assert s[0] == pytest.approx(s[1]) and s[0] < s[2]
    assert s[0] == pytest.approx((2 ** 0.5 - 1) * float(r0.norm()), rel=1e-6)
    assert s[2] == pytest.approx(float(r0.norm()), rel=1e-6)


def _group(model: PassThrough):
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=torch.zeros(1, 4, 8, 8))
    return graph.get_pruning_group(model.a.conv, tp.prune_conv_out_channels, idxs=list(range(4)))


def test_hrank_criterion_ranks_rank_one_map_below_full_rank():
    model = PassThrough()
    crit = build_criterion("hrank")
    crit.prepare(model, [{"img": _controlled_input(2)}, {"img": _controlled_input(3)}])
    assert model.training  # prepare restores the mode it found
    s = crit.scores[model.a.conv]
    assert torch.allclose(s, torch.tensor([1.0, 8.0, 0.0, 8.0]) / 4.25)  # mean rank 17/4 = 4.25
    group_scores = crit(_group(model))
    assert group_scores.shape == (4,)
    assert torch.allclose(group_scores, s)  # the only out-channel conv of the group is a.conv
    assert group_scores[2] < group_scores[0] < group_scores[1]


def test_chip_criterion_zero_and_duplicate_channels():
    model = PassThrough()
    crit = build_criterion("chip")
    crit.prepare(model, [{"img": _controlled_input(2)}])
    s = crit.scores[model.a.conv]
    assert s[2] == 0.0
    assert s[1] == pytest.approx(float(s[3]), rel=1e-6)  # the two copies are interchangeable
    assert torch.isfinite(s).all() and s.mean() == pytest.approx(1.0)
    # A duplicated channel is less independent than the same channel alone.
    x = _controlled_input(2)
    x[:, 3] = 0
    crit.prepare(model, [{"img": x}])
    alone = crit.scores[model.a.conv]
    raw_dup = channel_independence(_controlled_input(2)[0].flatten(1))
    raw_alone = channel_independence(x[0].flatten(1))
    assert raw_dup[1] < raw_alone[1]
    assert alone[3] == 0.0
    assert torch.allclose(crit(_group(model)), alone)


def test_chip_subsamples_positions_only_when_both_sides_are_large():
    crit = CHIPCriterion(max_rank=8)
    out = torch.randn(2, 16, 6, 6)  # C=16 > 8 and HW=36 > 8: 8 sampled positions
    stat = crit._channel_stat(out, None)
    assert stat.shape == (2, 16) and torch.isfinite(stat).all()
    small = torch.randn(1, 6, 5, 5)  # C <= max_rank: exact
    assert torch.allclose(crit._channel_stat(small, None)[0], channel_independence(small[0].flatten(1)))


def test_group_mean_returns_none_without_scores():
    model = PassThrough()
    assert group_mean_of_channel_scores(_group(model), {}) is None


@pytest.mark.slow
@pytest.mark.parametrize("method", ["hrank", "chip"])
def test_every_prunable_conv_of_yolo11n_is_scored(method, calib_batches):
    from helpers import assert_every_prunable_conv_scored

    assert_every_prunable_conv_scored(build_criterion(method), calib_batches)
