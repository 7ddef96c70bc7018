"""Feature-map rank criteria: HRank and CHIP, scored from the output of every Ultralytics ``Conv`` block.

Both criteria hook the block outputs (after BN and the activation, the same place LDAC measures, see
:func:`yolo_ldac.ldac.criterion.conv_wrappers`) while the model runs the calibration batches in eval mode under
``torch.no_grad``. The per-channel statistic of each image is computed inside the hook and only its running sum
is kept, so memory is bounded by one layer's activations of one batch, whatever the number of batches. Scores
are averaged over the images, divided by the layer's mean (so the global ranking across layers compares like
with like: a map's rank is bounded by its size, and nuclear norms scale with the layer's activations) and
averaged over the coupled out-channel convolutions of a dependency group
(:func:`group_mean_of_channel_scores`). A group with no hooked convolution (none in the YOLO models: every
prunable convolution sits in a ``Conv`` block) falls back to the group L2 norm (DepGraph).

Example:
    >>> from yolo_ldac.pruning.criteria import build_criterion
    >>> type(build_criterion("hrank")).__name__, type(build_criterion("chip")).__name__
    ('HRankCriterion', 'CHIPCriterion')
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn as nn
import torch_pruning as tp

from yolo_ldac.pruning.criteria import (  # noqa: F401  (re-exported for callers of this module)
    OUT_FNS,
    Criterion,
    group_mean_of_channel_scores,
    register_criterion,
)

def feature_map_rank(x: torch.Tensor) -> torch.Tensor:
    """Rank of every (H, W) map of ``x`` (B, C, H, W) -> (B, C) float, with torch's default tolerance
    (``max(H, W) * eps * sigma_max`` per map), computed in one batched SVD call."""
    b, c = x.shape[:2]
    return torch.linalg.matrix_rank(x.detach().float().flatten(0, 1)).view(b, c).float()


def channel_independence(a: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """CHIP score of every row of ``a`` (C, N): ``||A||_* - ||A with row c zeroed||_*``, exact, in float64.

    With ``A = U S V^T`` (thin SVD, r = min(C, N)), zeroing row c gives ``(I - e_c e_c^T) U S V^T``, whose singular
    values are the square roots of the eigenvalues of the r x r matrix ``S^2 - z z^T`` with ``z = S * U[c]``.
    So one SVD plus a batched ``eigvalsh`` of (C, r, r) matrices (in chunks of ``chunk`` rows, to bound memory)
    replaces C SVDs of C x N matrices. An all-zero row scores exactly 0 (removing it changes nothing); the
    interlacing theorem makes every score >= 0, and round-off below 0 is clamped.
    """
    a = a.detach().double()
    c = a.shape[0]
    u, s, _ = torch.linalg.svd(a, full_matrices=False)  # u (C, r), s (r,)
    nuc = s.sum()
    d = torch.diag_embed(s * s)
    out = torch.empty(c, dtype=torch.float64)
    for start in range(0, c, chunk):
        z = u[start:start + chunk] * s  # (k, r)
        m = d - z.unsqueeze(2) * z.unsqueeze(1)
        out[start:start + chunk] = nuc - torch.linalg.eigvalsh(m).clamp(min=0).sqrt().sum(-1)
    out = out.clamp(min=0)
    out[(a == 0).all(1)] = 0.0
    return out


class _HookedCriterion(Criterion):
    """Shared plumbing: hook every Conv block, accumulate per-channel sums per image, normalise per layer."""

    needs_data = True

    def __init__(self, seed: int = 0, **kw: object):
        super().__init__(seed=seed)
        self.scores: dict[nn.Conv2d, torch.Tensor] = {}

    def _channel_stat(self, out: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
        """Per-image, per-channel statistic (B, C) of a block output (B, C, H, W)."""
        raise NotImplementedError

    @torch.no_grad()
    def prepare(self, model: nn.Module, batches: Iterable[dict]) -> None:
        from yolo_ldac.ldac.criterion import conv_wrappers

        wrappers = conv_wrappers(model)
        sums = {conv: torch.zeros(conv.out_channels, dtype=torch.float64) for conv in wrappers}
        n_images = 0

        def hook_for(conv):
            def hook(_module, _inp, out):
                sums[conv] += self._channel_stat(out, conv).double().sum(0).cpu()
            return hook

        handles = [w.register_forward_hook(hook_for(conv)) for conv, w in wrappers.items()]
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        try:
            for batch in batches:
                img = batch["img"].to(device).float()
                model(img)
                n_images += img.shape[0]
        finally:
            for h in handles:
                h.remove()
            model.train(was_training)
        self.scores = {}
        for conv, s in sums.items():
            s = s / max(n_images, 1)
            mean = s.mean()
            self.scores[conv] = (s / mean).float() if mean > 0 else s.float()

    _fallback = tp.importance.GroupMagnitudeImportance(p=2, group_reduction="mean", normalizer="mean")

    def __call__(self, group) -> torch.Tensor:
        out = group_mean_of_channel_scores(group, self.scores)
        return self._fallback(group) if out is None else out


@register_criterion("hrank")
class HRankCriterion(_HookedCriterion):
    """Average rank of each channel's output feature map over the calibration images.

    Lin et al., "HRank: Filter Pruning using High-Rank Feature Map", CVPR 2020: low-rank maps carry less
    information, so their filters go first. Implemented as in the paper (``matrix_rank`` of every H x W map, per
    image, averaged over images), with these deviations: the map is the Conv block's output after BN and SiLU
    (the paper hooks the post-ReLU map); the paper prunes layer by layer with hand-set per-layer rates, here the
    ranks are divided by the layer mean and ranked globally by the shared engine, with the group score the
    mean over coupled out-channel convolutions. Ranks are integers bounded by min(H, W), so ties are frequent
    (most SiLU maps are full rank); the engine breaks ties by channel index (stable sort), as HRank's argsort does.
    """

    def _channel_stat(self, out: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
        return feature_map_rank(out)


@register_criterion("chip")
class CHIPCriterion(_HookedCriterion):
    """Channel independence: how much the nuclear norm of a layer's feature maps drops when a channel is zeroed.

    Sui et al., "CHIP: CHannel Independence-based Pruning for Compact Neural Networks", NeurIPS 2021. For each
    image the block output is A (C x HW); channel c scores ``||A||_* - ||A_c||_*`` with row c of A zeroed,
    averaged over images. The C masked nuclear norms are computed exactly from one SVD of A and a batched
    eigen-decomposition (:func:`channel_independence`), not C separate SVDs.

    Deviations: maps after BN and SiLU (the paper uses post-ReLU maps); per-layer mean normalisation and global
    ranking by the engine instead of the paper's hand-set per-layer rates; group score = mean over coupled
    out-channel convolutions. When both C and HW exceed ``max_rank`` (default 128; never in yolo11n at 320 px,
    e.g. yolov8s's 512-channel layers at 640 px), the HW positions are subsampled to ``max_rank`` columns
    (seeded, a fresh draw per image), which bounds the cost at O(C * max_rank^3) per layer and image; the
    scores are then those of the subsampled map. ``max_images`` (default all) caps the images used per batch.
    """

    def __init__(self, seed: int = 0, max_rank: int = 128, max_images: int | None = None, **kw: object):
        super().__init__(seed=seed)
        self.max_rank = int(max_rank)
        self.max_images = max_images
        self.generator = torch.Generator().manual_seed(seed)

    def _channel_stat(self, out: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
        x = out.detach().flatten(2).cpu()  # (B, C, HW)
        if self.max_images is not None:
            x = x[: self.max_images]
        c, hw = x.shape[1:]
        rows = []
        for a in x:
            if min(c, hw) > self.max_rank:
                a = a[:, torch.randperm(hw, generator=self.generator)[: self.max_rank]]
            rows.append(channel_independence(a))
        # Images beyond max_images contribute their batch's mean, so the average over images stays unbiased.
        stat = torch.stack(rows)
        if stat.shape[0] < out.shape[0]:
            stat = torch.cat([stat, stat.mean(0, keepdim=True).expand(out.shape[0] - stat.shape[0], -1)])
        return stat
