"""Mean-aware variants of Group Fisher (listed in :data:`yolo_ldac.parts.PLUGIN_MODULES`).

``group_fisher_centered``
    Group Fisher measures ``dL/dm`` of a mask that scales a channel to zero: the loss change of *zeroing* it. The
    engine does not zero a removed channel, though: its compensation (the mean fold, on by default) replaces it by
    its calibration mean. The matching mask interpolates between the channel and its mean,
    ``a' = mu + m (a - mu)``, so ``dL/dm`` at ``m = 1`` is ``sum_hw (a - mu) dL/da`` instead of ``sum_hw a dL/da``:
    a channel whose activation is mostly its constant part scores low, because the fold gives that part back.
    ``mu`` is the per-channel mean over the calibration images (one extra forward pass per batch), the same
    statistic the fold uses. Everything else (per-image gradients summed over coupled convolutions, then squared;
    one global scale) is :class:`~yolo_ldac.pruning.fisher_px.GroupFisherCriterion`'s.

Example:
    >>> import yolo_ldac.pruning.fisher_variants  # doctest: +SKIP
    >>> build_criterion("group_fisher_centered")  # doctest: +SKIP
"""

from __future__ import annotations


import torch
import torch.nn as nn

from yolo_ldac.pruning.criteria import register_criterion
from yolo_ldac.pruning.fisher_px import GroupFisherCriterion


@torch.no_grad()
def block_output_means(model: nn.Module, owner: dict[nn.Module, nn.Conv2d], batches: list[dict]) -> dict:
    """Per-channel mean of every channel module's output over the images of ``batches`` (float64 sums)."""
    sums: dict[nn.Conv2d, torch.Tensor] = {}
    counts: dict[nn.Conv2d, int] = {}

    def hook(module, _inp, out):
        if isinstance(out, torch.Tensor) and out.dim() == 4:
            conv = owner[module]
            sums[conv] = sums.get(conv, 0) + out.detach().double().sum(dim=(0, 2, 3))
            counts[conv] = counts.get(conv, 0) + out.shape[0] * out.shape[2] * out.shape[3]

    handles = [m.register_forward_hook(hook) for m in owner]
    device = next(model.parameters()).device
    try:
        for b in batches:
            model(b["img"].to(device))
    finally:
        for h in handles:
            h.remove()
    return {c: (sums[c] / counts[c]) for c in sums}


@register_criterion("group_fisher_centered")
class CenteredGroupFisherCriterion(GroupFisherCriterion):
    """Group Fisher of the mask ``a' = mu + m (a - mu)`` (removal = replacement by the calibration mean)."""

    def _mask_centres(self, model: nn.Module, owner: dict, batches: list[dict]) -> dict[nn.Conv2d, torch.Tensor]:
        return block_output_means(model, owner, batches)


@register_criterion("group_fisher_centered_flops")
class CenteredGroupFisherFlopsCriterion(CenteredGroupFisherCriterion):
    """``group_fisher_centered`` divided by the FLOPs of one channel of the group (as ``group_fisher_flops``)."""

    def __init__(self, seed: int = 0, normalize: str | None = "flops", **kw: object):
        super().__init__(seed=seed, normalize=normalize, **kw)
