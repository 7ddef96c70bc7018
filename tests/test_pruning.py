"""Tests of the pruning engine: every registered criterion reaches its target on YOLOv8n and YOLO11n, the pruned
model runs and trains, widths respect rounding and floors, and bad requests fail before the model is touched."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn as nn
import torch_pruning as tp

from yolo_ldac.errors import LDACError
from yolo_ldac.nn.adapter import protected_layers, rewrite_split_blocks
from yolo_ldac.pruning.calibration import detection_loss
from yolo_ldac.pruning.complexity import layer_channels, measure
from yolo_ldac.pruning.criteria import CRITERIA, build_criterion
from yolo_ldac.pruning.engine import ChannelPruner

NC = 3
IMGSZ = 128
ROUND_TO = 8
FLOOR = 0.125
TOL = 0.01  # the engine's tolerance on its own (conv-only) count
TOL_INDEPENDENT = 0.015  # torch-pruning's count also includes BN, activations, upsampling, ...
MODELS = ["yolov8n.yaml", "yolo11n.yaml"]
FORWARD_SIZES = ((64, 64), (96, 128))

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def batches(shapes_data):
    """Two calibration batches of 4 shapes images at 128 px (with labels, for the detection loss)."""
    from ultralytics.data.utils import check_det_dataset

    from yolo_ldac.pruning.calibration import build_calibration_batches

    data = check_det_dataset(str(shapes_data))
    out = build_calibration_batches(data, imgsz=IMGSZ, batch=4, n_batches=2)
    assert len(out) == 2 and out[0]["img"].shape == (4, 3, IMGSZ, IMGSZ)
    return out


class Setup:
    """A fresh split-rewritten detector and everything a ChannelPruner needs, measured before pruning."""

    def __init__(self, cfg: str, seed: int = 0):
        from ultralytics.nn.tasks import DetectionModel

        torch.manual_seed(seed)
        self.model = DetectionModel(cfg, nc=NC, verbose=False).float()
        rewrite_split_blocks(self.model)
        self.model.eval()
        self.protected = protected_layers(self.model)
        self.protected_names = {n for n, m in self.model.named_modules() if any(m is p for p in self.protected)}
        self.dense = measure(self.model, IMGSZ, protected=self.protected)
        self.dense_channels = layer_channels(self.model)
        self.dense_macs, self.dense_params = tp.utils.count_ops_and_params(self.model, self._example())

    @staticmethod
    def _example():
        return torch.zeros(1, 3, IMGSZ, IMGSZ)

    def pruner(self, criterion: str = "l2", **kw) -> ChannelPruner:
        crit_kw = kw.pop("criterion_kw", {})
        return ChannelPruner(self.model, build_criterion(criterion, **crit_kw), self.dense, self.dense_channels,
                             self.protected, imgsz=IMGSZ, **kw)

    def independent_ratio(self, target: str) -> float:
        macs, params = tp.utils.count_ops_and_params(self.model, self._example())
        if target == "flops":
            return 1.0 - macs / self.dense_macs
        if target == "params":
            return 1.0 - params / self.dense_params
        channels = sum(m.out_channels for n, m in self.model.named_modules()
                       if isinstance(m, nn.Conv2d) and n not in self.protected_names)
        return 1.0 - channels / self.dense.channels


def min_channels(n_dense: int) -> int:
    """The floor, computed independently: 1/8 of the dense width rounded up to a multiple of 8 (at least 8)."""
    return min(n_dense, max(ROUND_TO, math.ceil(FLOOR * n_dense / ROUND_TO) * ROUND_TO))


def check_widths(s: Setup) -> None:
    now = layer_channels(s.model)
    assert set(now) == set(s.dense_channels)  # no conv added or removed, names stable
    for name, n in now.items():
        dense_n = s.dense_channels[name]
        if name in s.protected_names:
            assert n == dense_n, f"protected {name}: {dense_n} -> {n}"
            continue
        assert n == dense_n or n % ROUND_TO == 0, f"{name}: {dense_n} -> {n} is not a multiple of {ROUND_TO}"
        assert min_channels(dense_n) <= n <= dense_n, f"{name}: {dense_n} -> {n} below the floor"


def check_forward(model: nn.Module) -> None:
    model.eval()
    with torch.no_grad():
        for h, w in FORWARD_SIZES:
            y = model(torch.rand(1, 3, h, w))[0]
            n_anchors = sum((h // s) * (w // s) for s in (8, 16, 32))
            assert y.shape == (1, 4 + NC, n_anchors)
            assert torch.isfinite(y).all()


def check_gradients(model: nn.Module, batch: dict) -> None:
    """Every trainable parameter gets a finite gradient from the detection loss in train mode (on a copy, so the
    pruned model's BN statistics are not touched by the train-mode forward)."""
    model = copy.deepcopy(model).train()
    model.zero_grad(set_to_none=True)
    loss = detection_loss(model, batch)
    assert torch.isfinite(loss)
    loss.backward()
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    # Ultralytics builds the DFL conv with requires_grad_(False) (a fixed 0..reg_max-1 projection); it is the only
    # frozen parameter and pruning must not unfreeze it (torch-pruning re-creates the Parameters it touches).
    assert frozen == [f"model.{len(model.model) - 1}.dfl.conv.weight"]
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient for {missing[:5]} ({len(missing)} in all)"
    bad = [n for n, p in model.named_parameters() if p.requires_grad and not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradient for {bad[:5]}"


@pytest.mark.parametrize("cfg", MODELS)
@pytest.mark.parametrize("criterion", sorted(CRITERIA))
def test_every_criterion_prunes_flops_in_two_steps(criterion, cfg, batches):
    s = Setup(cfg)
    pruner = s.pruner(criterion)
    previous = s.dense
    for ratio in (0.3, 0.5):
        result = pruner.step(ratio, batches)

        assert abs(result.reached_ratio - ratio) <= TOL, result.reached_ratio
        recount = measure(s.model, IMGSZ, protected=s.protected)
        assert result.after == recount and result.before == previous
        assert recount.removed_vs(s.dense, "flops") == pytest.approx(result.reached_ratio, abs=1e-9)
        independent = s.independent_ratio("flops")
        assert abs(independent - ratio) <= TOL_INDEPENDENT, independent
        assert result.groups_pruned == len(result.removed_channels) > 0
        assert all(n > 0 for n in result.removed_channels.values())

        check_widths(s)
        check_forward(s.model)
        check_gradients(s.model, batches[0])
        previous = recount

    # A ratio already reached prunes nothing.
    before = layer_channels(s.model)
    result = pruner.step(0.3, batches)
    assert layer_channels(s.model) == before and result.after == result.before == previous


@pytest.mark.parametrize("target,criterion,cfg", [("params", "l1", "yolo11n.yaml"), ("channels", "l2", "yolov8n.yaml")])
def test_params_and_channels_targets(target, criterion, cfg, batches):
    s = Setup(cfg)
    result = s.pruner(criterion, target=target).step(0.3, batches)
    assert abs(result.reached_ratio - 0.3) <= TOL, result.reached_ratio
    assert abs(s.independent_ratio(target) - 0.3) <= TOL, s.independent_ratio(target)
    check_widths(s)
    check_forward(s.model)


def test_unknown_target_rejected():
    s = Setup("yolov8n.yaml")
    with pytest.raises(LDACError, match="target must be one of"):
        s.pruner("l2", target="energy")
    with pytest.raises(LDACError, match="target=latency needs a latency model"):
        s.pruner("l2", target="latency")


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_unchanged(model: nn.Module, snapshot: dict[str, torch.Tensor]) -> None:
    now = model.state_dict()
    assert now.keys() == snapshot.keys()
    for k, v in snapshot.items():
        assert now[k].shape == v.shape and torch.equal(now[k], v), k


def test_unreachable_ratio_raises_before_touching_the_model(batches):
    s = Setup("yolo11n.yaml")
    pruner = s.pruner("l2", floor=0.5)
    snap = _snapshot(s.model)
    with pytest.raises(LDACError, match="unreachable") as info:
        pruner.step(0.95, batches)
    _assert_unchanged(s.model, snap)
    assert layer_channels(s.model) == s.dense_channels
    # The error states the reachable maximum, which max_ratio() reports too (without pruning anything).
    reachable = pruner.max_ratio()
    assert 0.3 < reachable < 0.95
    assert f"at most {reachable:.3f} can be removed" in str(info.value)
    _assert_unchanged(s.model, snap)


def test_taylor_without_batches_raises():
    s = Setup("yolov8n.yaml")
    snap = _snapshot(s.model)
    for batches in (None, []):
        with pytest.raises(LDACError, match="calibration data"):
            s.pruner("taylor").step(0.3, batches)
    _assert_unchanged(s.model, snap)


def test_random_criterion_is_deterministic():
    results = []
    for seed in (0, 0, 1):
        s = Setup("yolov8n.yaml", seed=0)  # same weights every time; only the criterion's seed varies
        s.pruner("random", criterion_kw={"seed": seed}).step(0.1)
        results.append((layer_channels(s.model), _snapshot(s.model)))
    (ch_a, sd_a), (ch_b, sd_b), (ch_c, _) = results
    assert ch_a == ch_b
    assert sd_a.keys() == sd_b.keys() and all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)  # same channels kept
    assert ch_a != ch_c  # the seed is actually used


def test_l2_removes_low_norm_channels():
    """Scale down every weight of 8 output channels of one conv (filters, BN, consumers' input weights): l2 must
    remove exactly those channels of that conv when asked for a small ratio."""
    s = Setup("yolov8n.yaml")
    conv = s.model.model[1].conv  # Conv(16, 32, 3, 2): its consumers are the next C2f's cv0 and cv1
    n = conv.out_channels
    low = [1, 4, 6, 11, 17, 20, 26, 31]
    graph = tp.DependencyGraph().build_dependency(s.model, example_inputs=torch.zeros(1, 3, 64, 64))
    group = graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=low)
    scaled_layers = 0
    with torch.no_grad():
        for item in group:
            mod, idxs = item.dep.target.module, list(item.idxs)
            if isinstance(mod, nn.Conv2d) and graph.is_out_channel_pruning_fn(item.dep.handler):
                mod.weight[idxs] *= 1e-3
            elif isinstance(mod, nn.Conv2d) and graph.is_in_channel_pruning_fn(item.dep.handler):
                mod.weight[:, idxs] *= 1e-3
            elif isinstance(mod, nn.BatchNorm2d):
                mod.weight[idxs] *= 1e-3
                mod.bias[idxs] *= 1e-3
            else:
                continue
            scaled_layers += 1
    assert scaled_layers >= 4  # the conv, its BN, and both consumers
    low_filters = conv.weight.detach()[low].clone()
    kept_filters = conv.weight.detach()[[i for i in range(n) if i not in low]].clone()

    result = s.pruner("l2").step(0.02)
    assert abs(result.reached_ratio - 0.02) <= TOL
    assert conv.out_channels == n - 8
    w = conv.weight.detach()
    survivors_match_low = [bool(torch.isclose(w, f).flatten(1).all(1).any()) for f in low_filters]
    assert not any(survivors_match_low), "a scaled-down filter survived l2 pruning"
    assert torch.equal(w, kept_filters)  # the others survive, in order


@pytest.mark.parametrize("method", sorted(CRITERIA))
def test_every_criterion_prunes_a_frozen_model(method, batches):
    """Ultralytics' checkpoint loader returns models with every parameter frozen (requires_grad False): the
    state a model is in after each training phase of the schedule. Every criterion must still score it."""
    torch.manual_seed(0)
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel("yolov8n.yaml", nc=3, verbose=False)
    rewrite_split_blocks(model)
    for p in model.parameters():
        p.requires_grad_(False)
    prot = protected_layers(model)
    dense = measure(model, 128, protected=prot)
    pruner = ChannelPruner(model, build_criterion(method), dense, layer_channels(model), prot, imgsz=128)
    result = pruner.step(0.2, batches)
    assert abs(result.reached_ratio - 0.2) <= 0.01
    model.eval()
    model(torch.rand(1, 3, 64, 64))


def _pruned_state(model, criterion: str, ratio: float, retrace: bool, batches=None, compensate="none", steps=1):
    pruner = ChannelPruner(model, build_criterion(criterion), measure(model, 640, protected=protected_layers(model)),
                           layer_channels(model), protected_layers(model), compensate=compensate, retrace=retrace)
    results = [pruner.step(ratio * (k + 1) / steps, batches) for k in range(steps)]
    return model.state_dict(), results


@pytest.mark.parametrize("cfg,criterion,compensate,steps", [("yolov8s.yaml", "l2", "none", 1),
                                                           ("yolo11n.yaml", "taylor", "mean", 1)])
def test_one_graph_step_removes_what_a_trace_per_group_removes(cfg, criterion, compensate, steps, batches):
    """The engine removes all of a step's groups on one dependency graph (its concat bookkeeping refreshed after
    each removal); the former engine traced a fresh graph per group. Both must give the same model, bit for bit."""
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    base = DetectionModel(cfg, nc=NC, verbose=False)
    rewrite_split_blocks(base)
    data = batches if compensate != "none" or criterion == "taylor" else None
    fast, r_fast = _pruned_state(copy.deepcopy(base), criterion, 0.5, retrace=False, batches=data,
                                 compensate=compensate, steps=steps)
    slow, r_slow = _pruned_state(copy.deepcopy(base), criterion, 0.5, retrace=True, batches=data,
                                 compensate=compensate, steps=steps)
    assert [r.groups_pruned for r in r_fast] == [r.groups_pruned for r in r_slow] and r_fast[-1].groups_pruned > 20
    assert fast.keys() == slow.keys()
    changed = [k for k in fast if fast[k].shape != slow[k].shape or not torch.equal(fast[k], slow[k])]
    assert not changed, changed[:5]
    assert r_fast[-1].reached_ratio == pytest.approx(0.5, abs=TOL)


def test_refresh_concat_offsets_matches_a_fresh_trace():
    """After a group feeding a concat is removed, the refreshed graph's concat widths and index-mapping offsets are
    those a fresh trace infers (torch-pruning's own bookkeeping decrements the widths per dependency instead)."""
    from torch_pruning import ops
    from ultralytics.nn.tasks import DetectionModel

    from yolo_ldac.pruning.engine import build_graph, refresh_concat_offsets

    torch.manual_seed(0)
    model = DetectionModel("yolo11n.yaml", nc=NC, verbose=False)
    rewrite_split_blocks(model)
    graph = build_graph(model)
    cats = [n for n in graph.module2node.values() if n.type == ops.OPTYPE.CONCAT]
    assert cats
    # the first prunable group that reaches a concat
    for grp in graph.get_all_groups(ignored_layers=protected_layers(model), root_module_types=[nn.Conv2d]):
        if any(it.dep.target.type == ops.OPTYPE.CONCAT for it in grp):
            break
    root = grp[0].dep.target.module
    group = graph.get_pruning_group(root, tp.prune_conv_out_channels, idxs=list(range(8)))
    group.prune()
    fresh = build_graph(model)

    def offsets(node):
        return sorted(tuple(m.offset) for d in node.dependencies for m in d.index_mapping
                      if type(m).__name__ == "_ConcatIndexMapping")

    fresh_cats = [n for n in fresh.module2node.values() if n.type == ops.OPTYPE.CONCAT]  # same trace order
    assert len(fresh_cats) == len(cats)

    def twin(node):
        return fresh_cats[cats.index(node)]

    assert any(offsets(node) != offsets(twin(node)) for node in cats)  # stale before the refresh
    assert refresh_concat_offsets(graph) == len(cats)
    for node in cats:
        assert node.module.concat_sizes == twin(node).module.concat_sizes
        assert offsets(node) == offsets(twin(node))
