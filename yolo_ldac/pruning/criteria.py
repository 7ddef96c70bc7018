"""Pruning criteria: one registry of torch-pruning ``Importance`` classes.

A criterion scores every channel of a dependency group (``__call__(group) -> 1-D tensor``, higher = keep).
Data-driven criteria implement :meth:`Criterion.prepare`, which the engine calls once per prune step with the
calibration batches before any group is scored. A criterion only scores: what training does before a step is a
push (:mod:`yolo_ldac.push`), what is done for a removed channel a compensation
(:mod:`yolo_ldac.pruning.compensate`). New criteria register themselves with :func:`register_criterion`; the
package lists the modules that define them in :data:`yolo_ldac.parts.PLUGIN_MODULES`.

Example:
    >>> crit = build_criterion("l2")
    >>> type(crit).__name__
    'L2Criterion'
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.nn as nn
import torch_pruning as tp

from yolo_ldac.registry import Registry

CRITERIA = Registry("criterion")


def register_criterion(name: str) -> Callable[[type], type]:
    """Class decorator adding a criterion to :data:`CRITERIA` under ``name``."""
    return CRITERIA.register(name)


def build_criterion(name: str, **kwargs) -> "Criterion":
    """Instantiate the registered criterion ``name``; unknown names raise with the closest match suggested."""
    return CRITERIA.build(name, **kwargs)


class Criterion(tp.importance.Importance):
    """Base class of every criterion.

    Attributes:
        needs_data: ``prepare`` must see calibration batches before scoring.
    """

    name = "base"
    needs_data = False

    def __init__(self, seed: int = 0, **_: object):
        self.seed = seed

    def prepare(self, model: nn.Module, batches: Iterable[dict]) -> None:
        """Collect whatever the criterion needs from ``model`` on calibration ``batches`` (default: nothing)."""

    def start_step(self, step: int) -> None:
        """Called by the schedule before prune step ``step`` (1-based) is scored: a seeded criterion reseeds here,
        so a resumed run scores each step exactly as an uninterrupted one."""

    def __call__(self, group) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    # Reporting hooks (no training: that is a push's business).
    def round_info(self) -> dict:
        """Extra per-round figures for the report (e.g. LDAC's J per pyramid level)."""
        return {}

    def write_plots(self, run_dir, rounds: list[dict], names: dict | None = None) -> list:
        """Criterion-specific plots written into the run directory; returns their paths."""
        return []


@register_criterion("random")
class RandomCriterion(Criterion):
    """Uniform random scores (seeded): the floor every other criterion must beat."""

    def __init__(self, seed: int = 0, **kw: object):
        super().__init__(seed=seed)
        self.generator = torch.Generator().manual_seed(seed)

    def start_step(self, step: int) -> None:
        self.generator = torch.Generator().manual_seed(self.seed * 1000 + step)

    @torch.no_grad()
    def __call__(self, group) -> torch.Tensor:
        return torch.rand(len(group[0].idxs), generator=self.generator)


class _Delegating(Criterion):
    """Criterion that forwards scoring to a torch-pruning importance."""

    impl: tp.importance.Importance

    def __call__(self, group) -> torch.Tensor:
        return self.impl(group)


@register_criterion("l1")
class L1Criterion(_Delegating):
    """L1 norm of each filter of the group's root convolution (Li et al., "Pruning Filters for Efficient ConvNets")."""

    def __init__(self, **kw: object):
        super().__init__(**kw)
        self.impl = tp.importance.GroupMagnitudeImportance(p=1, group_reduction="first", normalizer="mean")


@register_criterion("l2")
class L2Criterion(_Delegating):
    """Group L2 norm over every coupled layer of the group (DepGraph, Fang et al., CVPR 2023)."""

    def __init__(self, **kw: object):
        super().__init__(**kw)
        self.impl = tp.importance.GroupMagnitudeImportance(p=2, group_reduction="mean", normalizer="mean")


@register_criterion("bn")
class BNScaleCriterion(_Delegating):
    """|BN scale| of each channel (network slimming, Liu et al., ICCV 2017).

    A group with no BN (none in the YOLO models; a torchvision Faster R-CNN's FPN and box-head layers) is scored by
    the group L2 norm (DepGraph), as HRank, CHIP and PX score the groups they cannot measure.
    """

    def __init__(self, **kw: object):
        super().__init__(**kw)
        self.impl = tp.importance.BNScaleImportance(group_reduction="mean", normalizer="mean")
        self.fallback = tp.importance.GroupMagnitudeImportance(p=2, group_reduction="mean", normalizer="mean")

    def __call__(self, group) -> torch.Tensor:
        out = self.impl(group)
        return self.fallback(group) if out is None else out


@register_criterion("taylor")
class TaylorCriterion(_Delegating):
    """First-order Taylor estimate |w * dL/dw| summed per channel, L = the detection loss accumulated over the
    calibration batches (Molchanov et al., CVPR 2019), grouped over coupled layers."""

    needs_data = True

    def __init__(self, **kw: object):
        super().__init__(**kw)
        self.impl = tp.importance.GroupTaylorImportance(group_reduction="mean", normalizer="mean")

    def prepare(self, model: nn.Module, batches: Iterable[dict]) -> None:
        from yolo_ldac.pruning.calibration import detection_loss

        model.zero_grad(set_to_none=True)
        was_training = model.training
        # Ultralytics' checkpoint loader freezes every parameter: Taylor needs their gradients.
        frozen = [p for p in model.parameters() if not p.requires_grad]
        for p in frozen:
            p.requires_grad_(True)
        model.eval()  # gradients without touching BN running statistics
        try:
            with torch.enable_grad():
                for batch in batches:
                    detection_loss(model, batch).backward()
        finally:
            model.train(was_training)
            for p in frozen:
                p.requires_grad_(False)


# out-channel pruning handlers (the Linear one for the fully connected layers of a torchvision RoI box head)
OUT_FNS = (tp.prune_conv_out_channels, tp.prune_depthwise_conv_out_channels, tp.prune_linear_out_channels)


def group_mean_of_channel_scores(group, scores: dict[nn.Module, torch.Tensor]) -> torch.Tensor | None:
    """Mean, over the out-channel items of ``group`` whose module has per-channel ``scores``, of those scores.

    Each item's ``idxs`` index the module's channels and its ``root_idxs`` the group's (root) channels; a conv
    coupled twice (e.g. through a concat) counts twice. Returns ``None`` when no item of the group is scored.
    """
    n = len(group[0].idxs)
    total = torch.zeros(n)
    count = torch.zeros(n)
    for item in group:
        mod = item.dep.target.module
        if item.dep.handler in OUT_FNS and mod in scores:
            s = scores[mod]
            idxs = torch.as_tensor([int(i) for i in item.idxs], dtype=torch.long)
            ridx = torch.as_tensor([int(i) for i in item.root_idxs], dtype=torch.long)
            ok = (idxs < len(s)) & (ridx < n)
            total.index_add_(0, ridx[ok], s[idxs[ok]].float())
            count.index_add_(0, ridx[ok], torch.ones(int(ok.sum())))
    if not bool((count > 0).any()):
        return None
    return total / count.clamp(min=1)
