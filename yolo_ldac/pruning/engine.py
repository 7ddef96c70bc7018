"""One prune step: score every dependency group, pick the lowest-ranked channel blocks globally until the target
ratio is met, compensate, and remove them with torch-pruning's dependency graph.

Channels go in blocks of ``round_to`` (the lowest-scoring ones of a group first), so every layer keeps a
multiple of ``round_to``; no layer keeps fewer than ``floor`` of its original channels. Blocks are chosen
globally by score, a block at a time, and the complexity of the resulting model is counted exactly from layer
shapes after each choice, so the target is met within ``tolerance`` instead of jumping in coarse uniform steps
(with ``round_to=8`` a uniform per-layer ratio of 0.25 removed 45 % of YOLO11n's MACs and 0.26 removed 58.5 %).
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from dataclasses import dataclass, field
from typing import Iterable

import torch
import torch.nn as nn
import torch_pruning as tp

from yolo_ldac.errors import LDACError
from yolo_ldac.pruning.compensate import Compensation, build_compensation
from yolo_ldac.pruning.complexity import Complexity, layer_flops, layer_params, measure, record_output_sizes
from yolo_ldac.pruning.criteria import Criterion

TARGETS = ("flops", "params", "channels", "latency")


@dataclass
class StepResult:
    """What one prune step did."""

    target_ratio: float
    reached_ratio: float
    before: Complexity
    after: Complexity
    removed_channels: dict[str, int] = field(default_factory=dict)  # root layer name -> channels removed
    groups_pruned: int = 0
    seconds_scoring: float = 0.0


LAYERS = (nn.Conv2d, nn.Linear)  # the layers whose widths the engine counts (a Linear only with root_types)


def _widths(m: nn.Module) -> list[int]:
    """``[in, out]`` channels of a Conv2d or features of a Linear."""
    return [m.in_channels, m.out_channels] if isinstance(m, nn.Conv2d) else [m.in_features, m.out_features]


def _out_fn(m: nn.Module):
    return tp.prune_linear_out_channels if isinstance(m, nn.Linear) else tp.prune_conv_out_channels


@dataclass
class _Group:
    root: nn.Module  # an nn.Conv2d (or an nn.Linear with root_types)
    name: str
    scores: torch.Tensor
    blocks: list[list[int]]
    convs: list[tuple[nn.Module, str, int]]  # (conv or linear, "in" | "out", channels lost per root channel)
    bns: list[nn.Module]
    n_protected_out: int = 0


def build_graph(model: nn.Module, imgsz: int = 64) -> tp.DependencyGraph:
    device = next(model.parameters()).device
    example = torch.zeros(1, 3, imgsz, imgsz, device=device)
    was_training = model.training
    # torch-pruning traces autograd: a frozen parameter (Ultralytics' loaders freeze every one) leaves its layer
    # out of the graph and so out of every group.
    frozen = [p for p in model.parameters() if not p.requires_grad]
    for p in frozen:
        p.requires_grad_(True)
    model.eval()
    try:
        with torch.enable_grad():
            return tp.DependencyGraph().build_dependency(model, example_inputs=example)
    finally:
        model.train(was_training)
        for p in frozen:
            p.requires_grad_(False)


def refresh_concat_offsets(graph: tp.DependencyGraph) -> int:
    """Recompute every concat's input widths and index mappings from the layers' current shapes; returns the number
    of concats refreshed.

    torch-pruning 1.6.1 keeps, per concat, the widths of its inputs (``concat_sizes``), from which
    ``get_pruning_group`` rebuilds the index mappings that shift channel indices into the right input. Its
    ConcatPruner decrements those widths once per dependency of a pruned group that reaches the concat, which is
    right only while each reaches it once (the reason the engine used to re-trace per group). Reset, they are
    inferred from the current layer shapes, as a fresh trace infers them. In every case tried (YOLO11n, YOLOv8n/s
    from yaml and the COCO YOLO11n; l2, bn, random; 30-75 %) the decrements happened to be right, so a graph without
    this refresh removed the same channels too; the refresh costs milliseconds and does not rely on that.
    ``tests/test_pruning.py`` checks that a step on one refreshed graph removes exactly what one fresh trace per
    group removes.
    """
    from torch_pruning import ops
    from torch_pruning.dependency.index_mapping import update_concat_index_mapping

    n = 0
    for node in graph.module2node.values():
        if node.type == ops.OPTYPE.CONCAT:
            node.module.concat_sizes = None  # re-inferred from the current layer shapes, as a fresh trace does
            update_concat_index_mapping(graph, node)
            n += 1
    return n


def keep_minimum(n_original: int, n_now: int, floor: float, round_to: int) -> int:
    """Fewest channels a layer may keep: ``floor`` of its original width, rounded up to ``round_to``.

    Example:
        >>> keep_minimum(64, 64, 0.125, 8)
        8
        >>> keep_minimum(16, 16, 0.125, 8)
        8
    """
    k = max(round_to, math.ceil(floor * n_original / round_to) * round_to)
    return min(n_now, k)


class ChannelPruner:
    """Prunes a detector towards a complexity target relative to its dense original.

    Args:
        model: the (split-block rewritten) detector; pruned in place.
        criterion: a registered :class:`Criterion`.
        dense: complexity of the original dense model (ratios are relative to it across steps).
        dense_channels: output channels per conv name in the dense model (floors are relative to it).
        protected: layers whose output channels are never pruned.
        imgsz: input size FLOPs are counted at.
        compensate: what replaces a removed channel in its consumers: ``True`` / ``"mean"`` (default) its
            calibration mean (:class:`~yolo_ldac.pruning.compensate.InputMeans`), ``"lsq"`` its ridge least-squares
            prediction from the kept channels with the consumer refit (:class:`~yolo_ldac.pruning.lsq.InputGram`,
            ridge ``lsq_ridge`` relative to the kept channels' mean variance), ``False`` / ``"none"`` nothing.
        layer_cap: at most this fraction of a layer's (group's) channels at the start of a step goes in that step
            (rounded down to whole blocks); ``None`` (default): no cap beyond the floor.
        per_flop: rank blocks by score per unit of the target quantity they remove (the exact drop that
            :meth:`_delta` counts), instead of by score alone (default ``False``).
        retrace: trace a fresh dependency graph before every group is removed (the former behaviour, ~0.16 CPU s a
            group for YOLO11x on one core) instead of removing all of a step's groups on one graph whose concat
            bookkeeping is refreshed after each (:func:`refresh_concat_offsets`; the same channels go).
        flops_fn: ``flops_fn(model, imgsz) -> GFLOPs`` counting the model's FLOPs as the user's tools do
            (``yolo_ldac.nn.adapter.ultralytics_gflops``); ``dense`` must be counted by it too. The plan keeps the
            fast analytic per-block deltas, the step then recounts with ``flops_fn`` and plans again (at most
            ``refine`` times) while the count it reports is short of the target, so the ratio met is the one
            ``YOLO().info()`` shows. None: the analytic count (:func:`~yolo_ldac.pruning.complexity.measure`).
        root_types: the layer types whose output channels root a group (default: ``nn.Conv2d``; the torchvision
            path adds ``nn.Linear`` for the RoI box head's fully connected layers).
        latency: with ``target="latency"``, the run's :class:`~yolo_ldac.latency.model.LatencyModel`: ratios are of
            its predicted latency, and blocks are ranked by importance per millisecond they save (HALP's ranking;
            a criterion that divides its scores by FLOPs has that division undone first), for every criterion.

    Example:
        >>> pruner = ChannelPruner(model, build_criterion("l2"), dense, dense_channels, protected)  # doctest: +SKIP
        >>> result = pruner.step(0.3)  # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, criterion: Criterion, dense: Complexity, dense_channels: dict[str, int],
                 protected: list[nn.Module], imgsz: int = 640, target: str = "flops", round_to: int = 8,
                 floor: float = 0.125, compensate: "bool | str | Compensation" = True, tolerance: float = 0.01,
                 layer_cap: float | None = None, per_flop: bool = False, lsq_ridge: float = 1e-3,
                 retrace: bool = False, flops_fn=None, refine: int = 3, root_types: tuple[type, ...] = (nn.Conv2d,),
                 latency=None):
        if target not in TARGETS:
            raise LDACError(f"target must be one of {', '.join(TARGETS)}, got '{target}'")
        if target == "latency" and latency is None:
            raise LDACError("target=latency needs a latency model (runtime=... measures one)")
        self.latency = latency
        owned = {id(m) for m in model.modules()}
        if any(id(m) not in owned for m in protected):
            raise LDACError("protected layers must belong to the model being pruned (compute them after any copy)")
        self.model, self.criterion, self.dense = model, criterion, dense
        self.dense_channels, self.protected = dense_channels, protected
        self.imgsz, self.target, self.round_to, self.floor = imgsz, target, round_to, floor
        if layer_cap is not None and not 0.0 < float(layer_cap) <= 1.0:
            raise LDACError(f"layer_cap must be in (0, 1], got {layer_cap!r}")
        self.compensation = build_compensation(compensate, ridge=lsq_ridge)
        self.compensate = self.compensation.name != "none"
        self.tolerance = tolerance
        self.layer_cap, self.per_flop, self.lsq_ridge = layer_cap, bool(per_flop), float(lsq_ridge)
        self.retrace = bool(retrace)
        self.root_types = tuple(root_types)
        self.sizes = record_output_sizes(model, imgsz)
        self.names = {m: n for n, m in model.named_modules()}
        self.flops_fn, self.refine = (flops_fn if target in ("flops", "latency") else None), int(refine)

    # --- bookkeeping -------------------------------------------------------------------------------------
    def measure(self) -> Complexity:
        c = measure(self.model, self.imgsz, sizes=self.sizes, protected=self.protected, flops_fn=self.flops_fn)
        if self.latency is not None:
            c = dataclasses.replace(c, latency_ms=float(self.latency(self.model)))
        return c

    def _value(self, c: Complexity) -> float:
        if self.target == "latency":
            return float(c.latency_ms)
        return {"flops": c.flops_g * 1e9, "params": float(c.params), "channels": float(c.channels)}[self.target]

    def _collect_groups(self, graph: tp.DependencyGraph, score: bool) -> list[_Group]:
        groups = []
        protected_ids = {id(m) for m in self.protected}
        for group in graph.get_all_groups(ignored_layers=list(self.protected), root_module_types=list(self.root_types)):
            root = group[0].dep.target.module
            n = len(group[0].idxs)
            name = self.names.get(root, str(id(root)))
            k_min = keep_minimum(self.dense_channels.get(name, n), n, self.floor, self.round_to)
            if n <= k_min:
                continue
            scores = self.criterion(group) if score else torch.zeros(n)
            if scores is None:
                continue
            scores = torch.nan_to_num(scores.detach().float().cpu(), nan=0.0, posinf=1e30, neginf=0.0)
            order = torch.argsort(scores, stable=True).tolist()
            first = (n % self.round_to) or self.round_to
            blocks, start = [], 0
            cap = n if self.layer_cap is None else int(math.floor(self.layer_cap * n + 1e-9))
            while n - (start + (first if not blocks else self.round_to)) >= k_min and \
                    start + (first if not blocks else self.round_to) <= cap:
                size = first if not blocks else self.round_to
                blocks.append(order[start:start + size])
                start += size
            if not blocks:
                continue
            convs, bns = [], []
            for item in group:
                mod, fn = item.dep.target.module, item.dep.handler
                mult = max(1, len(item.idxs) // n)  # e.g. a residual branch concatenated twice (C2f) counts twice
                if isinstance(mod, LAYERS):
                    if graph.is_out_channel_pruning_fn(fn):
                        convs.append((mod, "out", mult))
                    elif graph.is_in_channel_pruning_fn(fn):
                        convs.append((mod, "in", mult))
                elif isinstance(mod, nn.BatchNorm2d):
                    bns.append(mod)
            n_prot = sum(1 for m, kind, _ in convs if kind == "out" and id(m) in protected_ids)
            groups.append(_Group(root, name, scores, blocks, convs, bns, n_prot))
        return groups

    def _delta(self, g: _Group, m: int, cur: dict[nn.Module, list[int]], what: str | None = None) -> float:
        """Drop in the target quantity (or in ``what``) if ``m`` more channels of group ``g`` go, given current conv
        widths."""
        target = what or self.target
        if target == "channels":
            return float(m * sum(k for conv, kind, k in g.convs if kind == "out" and conv not in self.protected))
        touched: dict[nn.Module, list[int]] = {}
        for conv, kind, k in g.convs:
            i, o = touched.get(conv, cur[conv])
            touched[conv] = [i - k * m, o] if kind == "in" else [i, o - k * m]
        delta = 0.0
        for conv, (i, o) in touched.items():
            ci, co = cur[conv]
            if target == "latency":
                name = self.names.get(conv, "")
                delta += self.latency.conv_ms(name, ci, co) - self.latency.conv_ms(name, i, o)
            elif target == "flops":
                hw = self.sizes.get(conv, 0)
                delta += layer_flops(conv, hw, ci, co) - layer_flops(conv, hw, i, o)
            else:
                delta += layer_params(conv, ci, co) - layer_params(conv, i, o)
        if target == "params":
            delta += 2 * m * len(g.bns)
        return delta

    def plan(self, target_ratio: float, groups: list[_Group]) -> tuple[dict[int, list[int]], float]:
        """Choose blocks (lowest score first, across all groups) until ``target_ratio`` is reached.

        Returns the chosen original channel indices per group index and the predicted ratio.
        """
        dense_v = self._value(self.dense)
        value = self._value(self.measure())
        cur = {m: _widths(m) for m in self.model.modules() if isinstance(m, LAYERS)}
        per_flop_scores = getattr(self.criterion, "normalize", None) == "flops"

        def priority(g: _Group, k: int) -> float:
            s = float(g.scores[g.blocks[k]].mean())
            if self.target == "latency":
                m = len(g.blocks[k])
                if per_flop_scores:  # back to importance per channel: the criterion divided by one channel's MFLOPs
                    s *= self._delta(g, m, cur, "flops") / m / 1e6
                return s * m / max(self._delta(g, m, cur), 1e-9)  # importance per millisecond saved
            if not self.per_flop:
                return s
            # score per unit removed: the block's total score over the exact drop of the target quantity it buys
            d = self._delta(g, len(g.blocks[k]), cur)
            return s * len(g.blocks[k]) / max(d, 1e-12)

        heap = [(priority(g, 0), gi, 0) for gi, g in enumerate(groups)]
        heapq.heapify(heap)
        chosen: dict[int, list[int]] = {}
        ratio = 1.0 - value / dense_v
        while heap and ratio < target_ratio:
            _, gi, k = heapq.heappop(heap)
            g = groups[gi]
            block = g.blocks[k]
            d = self._delta(g, len(block), cur)
            if 1.0 - (value - d) / dense_v > target_ratio + self.tolerance / 2:
                continue  # this group's next block overshoots; smaller blocks elsewhere may still fit
            value -= d
            ratio = 1.0 - value / dense_v
            for conv, kind, mult in g.convs:
                cur[conv][0 if kind == "in" else 1] -= mult * len(block)
            chosen.setdefault(gi, []).extend(block)
            if k + 1 < len(g.blocks):
                b = g.blocks[k + 1]
                heapq.heappush(heap, (priority(g, k + 1), gi, k + 1))
        return chosen, ratio

    def _predicted_ratio(self, groups: list[_Group], chosen: dict[int, list[int]]) -> float:
        """The ratio removed once ``chosen`` (group index -> channels) is pruned, counted as :meth:`plan` does."""
        dense_v = self._value(self.dense)
        value = self._value(self.measure())
        cur = {m: _widths(m) for m in self.model.modules() if isinstance(m, LAYERS)}
        for gi, idxs in chosen.items():
            g = groups[gi]
            value -= self._delta(g, len(idxs), cur)
            for conv, kind, mult in g.convs:
                cur[conv][0 if kind == "in" else 1] -= mult * len(idxs)
        return 1.0 - value / dense_v

    def max_ratio(self) -> float:
        """The largest ratio reachable under the floors and rounding (nothing is pruned)."""
        graph = build_graph(self.model)
        _, ratio = self.plan(1.0 + self.tolerance, self._collect_groups(graph, score=False))
        return ratio

    def choose(self, target_ratio: float, batches: Iterable[dict] | None = None) -> dict[str, list[int]]:
        """The output channels (per root layer name) the step to ``target_ratio`` would remove; nothing is pruned.

        A push uses it to learn, before it trains, which channels the coming step removes.
        """
        batches = list(batches or [])
        if self.criterion.needs_data:
            if not batches:
                raise LDACError(f"criterion '{self.criterion.name}' needs calibration data (pass data=...)")
            self.criterion.prepare(self.model, batches)
        groups = self._collect_groups(build_graph(self.model), score=True)
        chosen, _ = self.plan(target_ratio, groups)
        return {groups[gi].name: sorted(idxs) for gi, idxs in chosen.items()}

    # --- the step ----------------------------------------------------------------------------------------
    def step(self, target_ratio: float, batches: Iterable[dict] | None = None,
             planned: dict[str, list[int]] | None = None, _pass: int = 0) -> StepResult:
        """Prune until ``target_ratio`` of the dense model's ``target`` quantity is removed.

        ``planned`` (root layer name -> output channels, as :meth:`choose` returned it before a push prepared the
        model for exactly those channels) is removed as it is, without scoring again. With a ``flops_fn`` a step
        whose recount falls short of the target plans and removes the rest (``refine`` passes at most).
        """
        import time

        batches = list(batches or [])
        before = self.measure()
        if 1.0 - self._value(before) / self._value(self.dense) >= target_ratio - self.tolerance / 2:
            return StepResult(target_ratio, before.removed_vs(self.dense, self.target), before, before)
        t0 = time.perf_counter()
        if planned is not None:
            graph = build_graph(self.model)
            groups = self._collect_groups(graph, score=False)
            index = {g.name: gi for gi, g in enumerate(groups)}
            missing = [n for n in planned if n not in index]
            if missing:
                raise LDACError(f"the planned channels name layers that are not prunable groups now: {missing[:3]}")
            chosen = {index[n]: list(idxs) for n, idxs in planned.items()}
            seconds_scoring = time.perf_counter() - t0
            predicted = self._predicted_ratio(groups, chosen)
        else:
            if self.criterion.needs_data and not batches:
                raise LDACError(f"criterion '{self.criterion.name}' needs calibration data (pass data=...)")
            if self.criterion.needs_data:
                self.criterion.prepare(self.model, batches)
            graph = build_graph(self.model)
            groups = self._collect_groups(graph, score=True)
            seconds_scoring = time.perf_counter() - t0
            chosen, predicted = self.plan(target_ratio, groups)
        if predicted < target_ratio - self.tolerance:
            raise LDACError(
                f"ratio {target_ratio:.3f} of {self.target} is unreachable: with floor={self.floor} and "
                f"round_to={self.round_to} at most {predicted:.3f} can be removed")
        means = self.compensation.start(self.model, (b["img"] for b in batches)) if batches else None
        removed = {}
        for k, (gi, idxs) in enumerate(chosen.items()):
            g = groups[gi]
            if self.retrace and k:
                graph = build_graph(self.model)
            elif k:
                refresh_concat_offsets(graph)  # the concat widths as a fresh trace would infer them
            group = graph.get_pruning_group(g.root, _out_fn(g.root), idxs=sorted(idxs))
            in_items = [(it.dep.target.module, list(it.idxs)) for it in group
                        if isinstance(it.dep.target.module, LAYERS) and graph.is_in_channel_pruning_fn(it.dep.handler)]
            if self.compensate:
                # one fold per consumer with all of its removed inputs at once (a conv reached twice in a group
                # would otherwise be refit onto, or folded twice for, channels that go in the same step)
                merged: dict[nn.Conv2d, list[int]] = {}
                for conv, idx in in_items:
                    merged.setdefault(conv, [])
                    merged[conv] = sorted(set(merged[conv]) | {int(i) for i in idx})
                in_items = list(merged.items())
            if means is not None:
                for conv, idx in in_items:
                    means.fold(conv, idx)
            group.prune()
            if means is not None:
                for conv, idx in in_items:
                    means.drop(conv, idx)
            removed[g.name] = len(idxs)
        self.model.zero_grad(set_to_none=True)
        after = self.measure()
        result = StepResult(target_ratio, after.removed_vs(self.dense, self.target), before, after, removed,
                            len(chosen), seconds_scoring)
        short = result.reached_ratio < target_ratio - self.tolerance / 2
        if short and planned is None and self.target == "flops" and self.flops_fn is not None and \
                _pass < self.refine and chosen:
            # the analytic deltas undershot the counter's figure (attention, BN): plan the rest on the pruned model
            more = self.step(target_ratio, batches, None, _pass + 1)
            for name, n in more.removed_channels.items():
                removed[name] = removed.get(name, 0) + n
            result = StepResult(target_ratio, more.reached_ratio, before, more.after, removed,
                                len(removed), seconds_scoring + more.seconds_scoring)
        return result
