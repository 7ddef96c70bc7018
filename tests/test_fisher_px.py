"""Group Fisher and PX criteria: the Fisher arithmetic (coupled masks add before squaring), zero scores for
channels that cannot change the loss, per-image mask gradients, LRP-0 relevance conservation, and finite
non-negative scores on a real YOLOv8n graph."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch_pruning as tp
from ultralytics.nn.modules import Conv

from yolo_ldac.pruning.criteria import CRITERIA, build_criterion
from yolo_ldac.pruning.fisher_px import (GroupFisherCriterion, PXCriterion, fisher_from_samples, gradient_x_input,
                                        lrp_gated_silu)


def test_registered_and_data_driven():
    for name in ("group_fisher", "group_fisher_flops", "px"):
        assert name in CRITERIA and build_criterion(name).needs_data
    assert build_criterion("group_fisher").normalize is None
    assert build_criterion("group_fisher_flops").normalize == "flops"


def test_coupled_masks_sum_before_squaring():
    g1, g2 = torch.tensor([[1.0, -1.0]]), torch.tensor([[-1.0, 1.0]])
    assert torch.equal(fisher_from_samples([g1, g2]), torch.zeros(2, dtype=torch.float64))
    # squaring each conv's gradient first would not cancel
    assert float(fisher_from_samples([g1]).sum() + fisher_from_samples([g2]).sum()) == 2.0
    # 0.5 * sum over samples of g^2
    assert fisher_from_samples([torch.tensor([[1.0], [2.0]])]).tolist() == [2.5]


class Residual(nn.Module):
    """Two Conv blocks added together (their out-channels are one dependency group), then a consumer."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = Conv(3, 2, 3), Conv(3, 2, 3), Conv(2, 4, 1)

    def forward(self, x):
        return self.c(self.a(x) + self.b(x))


def test_coupled_gradients_cancel_through_the_dependency_group():
    net = Residual().eval()
    graph = tp.DependencyGraph().build_dependency(net, example_inputs=torch.zeros(1, 3, 8, 8))
    group = graph.get_pruning_group(net.a.conv, tp.prune_conv_out_channels, idxs=[0, 1])
    crit = GroupFisherCriterion()
    crit.grads = {net.a.conv: torch.tensor([[1.0, -1.0], [2.0, 0.5]], dtype=torch.float64)}
    crit.grads[net.b.conv] = -crit.grads[net.a.conv]
    assert torch.equal(crit(group), torch.zeros(2, dtype=torch.float64))
    crit.grads[net.b.conv] = crit.grads[net.a.conv].clone()  # same sign: (2g)^2 / 2 summed over samples
    assert torch.allclose(crit(group), torch.tensor([2 * (1 + 4), 2 * (1 + 0.25)], dtype=torch.float64))
    # FLOPs variant: divided by a positive per-channel cost
    crit.normalize, crit.out_hw = "flops", {net.a.conv: 64, net.b.conv: 64, net.c.conv: 64}
    flops = crit.channel_flops(group)
    assert flops == 2 * (2 * 64 * 9 * 3) + 2 * 64 * 1 * 4  # two producers' filters + the consumer's inputs
    assert torch.allclose(crit(group), torch.tensor([10.0, 2.5], dtype=torch.float64) / (flops / 1e6))


class TwoBranch(nn.Module):
    """Branch ``a`` feeds the toy loss, branch ``b`` does not."""

    def __init__(self):
        super().__init__()
        self.a, self.b = Conv(3, 4, 3, 2), Conv(3, 4, 3, 2)
        self.w = torch.tensor([1.0, -2.0, 0.5, 3.0])

    def forward(self, x):
        return self.a(x), self.b(x)


def test_channel_that_cannot_change_the_loss_scores_zero_and_gradients_are_per_image():
    torch.manual_seed(0)
    net = TwoBranch().eval()  # expected values below use BN running statistics, as prepare does
    for p in net.parameters():
        p.requires_grad_(False)  # as Ultralytics' loader leaves it
    crit = GroupFisherCriterion()
    # L = sum_n sum_c w_c * mean_hw(a_nc): dL/dm_nc = w_c * mean_hw(a_nc), per image
    crit._loss = lambda model, batch: (model(batch["img"])[0].mean((2, 3)) * net.w).sum()
    batches = [{"img": torch.rand(3, 3, 16, 16)}, {"img": torch.rand(2, 3, 16, 16)}]
    crit.prepare(net, batches)
    ga, gb = crit.grads[net.a.conv], crit.grads[net.b.conv]
    assert ga.shape == gb.shape == (5, 4)
    assert torch.equal(gb, torch.zeros_like(gb))
    assert torch.equal(fisher_from_samples([gb]), torch.zeros(4, dtype=torch.float64))
    with torch.no_grad():
        expected = torch.cat([net.a(b["img"]).mean((2, 3)) * net.w for b in batches]).double()
    assert torch.allclose(ga, expected, rtol=1e-5, atol=1e-7)
    assert all(not p.requires_grad and p.grad is None for p in net.parameters())  # state restored, no .grad


class PiecewiseLinear(nn.Module):
    """Bias-free net with every layer type YOLO uses: conv, activation, max-pool, upsample, concat, add."""

    def __init__(self, act: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.c3, self.out = nn.Conv2d(8, 4, 3, padding=1, bias=False), nn.Conv2d(4, 1, 1, bias=False)
        self.act = act()

    def forward(self, x):
        t = {"x": x}
        t["a1"] = self.act(self.c1(x))
        t["p"] = F.max_pool2d(t["a1"], 2)
        t["a2"] = self.act(self.c2(t["p"]))
        t["u"] = F.interpolate(t["a2"], scale_factor=2, mode="nearest")
        t["cat"] = torch.cat([t["a1"], t["u"]], 1)
        t["a3"] = self.act(self.c3(t["cat"]))
        t["a4"] = t["a3"] + t["a1"]
        return self.out(t["a4"]).sum((1, 2, 3)), t


@pytest.mark.parametrize("act", [nn.ReLU, nn.SiLU])
def test_lrp0_relevance_is_conserved_layer_to_layer(act):
    torch.manual_seed(0)
    net = PiecewiseLinear(act).double()
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    with lrp_gated_silu(net):  # SiLU: pass-through rule (gate held constant); no-op for ReLU
        s, t = net(x)
    names = list(t)
    rel = dict(zip(names, gradient_x_input(s, [t[k] for k in names])))
    total = {k: r.sum(1) for k, r in rel.items()}  # per image
    for cut in ("x", "a1", "a4"):  # every path to the output passes through these
        assert torch.allclose(total[cut], s.detach(), rtol=1e-9), cut
    assert torch.allclose(total["p"], total["a2"], rtol=1e-9)  # max-pool -> conv -> act: winner-take-all
    assert torch.allclose(total["a2"], total["u"], rtol=1e-9)  # upsample: relevance summed back
    assert torch.allclose(total["cat"], total["a3"], rtol=1e-9)  # conv over the concat
    assert torch.allclose(rel["cat"][:, 4:], rel["u"], rtol=1e-9)  # concat: relevance split by channel
    assert torch.allclose(total["a4"], total["a3"] + (total["a1"] - total["cat"]), rtol=1e-9)  # add


def _groups(model):
    from yolo_ldac.nn.adapter import protected_layers
    from yolo_ldac.pruning.engine import build_graph

    graph = build_graph(model)
    return list(graph.get_all_groups(ignored_layers=protected_layers(model), root_module_types=[nn.Conv2d]))


@pytest.fixture(scope="module")
def yolov8n():
    from ultralytics.nn.tasks import DetectionModel

    from yolo_ldac.nn.adapter import rewrite_split_blocks

    torch.manual_seed(0)
    model = DetectionModel("yolov8n.yaml", nc=3, verbose=False)
    rewrite_split_blocks(model)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


@pytest.mark.parametrize("name", ["group_fisher", "group_fisher_flops", "px"])
def test_finite_non_negative_scores_on_yolov8n(name, yolov8n, calib_batches):
    crit = build_criterion(name)
    crit.prepare(yolov8n, calib_batches)
    groups = _groups(yolov8n)
    assert len(groups) > 30
    nonzero = 0
    for group in groups:
        s = crit(group)
        assert s.shape == (len(group[0].idxs),)
        assert torch.isfinite(s).all() and (s >= 0).all()
        nonzero += int(bool((s > 0).any()))
    assert nonzero >= len(groups) - 2
    assert all(not p.requires_grad and p.grad is None for p in yolov8n.parameters())
    if isinstance(crit, GroupFisherCriterion):
        n_images = sum(len(b["img"]) for b in calib_batches)
        assert all(g.shape[0] == n_images for g in crit.grads.values())
    else:
        assert isinstance(crit, PXCriterion)
        head = yolov8n.model[-1]
        # the class logits never see the box branch: no relevance there (its groups fall back to L2)
        assert not any(m in crit.scores for m in head.cv2.modules())
        assert all(m.conv in crit.scores for branch in head.cv3 for m in branch[:-1])
