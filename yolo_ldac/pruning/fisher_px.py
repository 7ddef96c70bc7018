"""Group Fisher and PX (pruning by explaining): two gradient-based, data-driven pruning criteria.

``group_fisher`` / ``group_fisher_flops``
    Liu, Zhang, Wang, Lin, Lu, Xiong, Su, "Group Fisher Pruning for Practical Network Compression", ICML 2021.
    A virtual mask ``m = 1`` multiplies every channel of every convolution's output (the Ultralytics ``Conv``
    block's output, after BN and SiLU, so ``m_c = 0`` is exactly the removal of channel ``c``; a bare
    ``nn.Conv2d`` outside such a block is masked at its own output). ``g_nc = dL/dm_c`` for image ``n`` of the
    detection loss ``L``; a channel's Fisher score is ``0.5 * sum_n g_nc ** 2``. Channels coupled by the
    dependency graph (residual adds, concats) share one mask in the paper, so the gradients of the coupled
    masks are summed *per image, before squaring*.

``px``
    Yeom, Seegerer, Lapuschkin, Binder, Wiedemann, Müller, Samek, "Pruning by Explaining: A Novel Criterion for
    Deep Neural Network Pruning", Pattern Recognition 115, 2021. The relevance of a channel is its share of the
    explained output under layer-wise relevance propagation (LRP), summed over the channel's positions.

Both stream over the calibration batches given to ``prepare`` (one forward and one backward per batch; only
per-channel vectors are kept), and both are registered with ``needs_data = True``.

Example:
    >>> from yolo_ldac.pruning.criteria import build_criterion
    >>> type(build_criterion("group_fisher")).__name__, build_criterion("group_fisher_flops").normalize
    ('GroupFisherCriterion', 'flops')
    >>> type(build_criterion("px")).__name__
    'PXCriterion'
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Sequence

import torch
import torch.nn as nn
import torch_pruning as tp

from yolo_ldac.errors import LDACError
from yolo_ldac.pruning.complexity import layer_flops
from yolo_ldac.pruning.criteria import OUT_FNS, Criterion, register_criterion

IN_FNS = (tp.prune_conv_in_channels, tp.prune_linear_in_channels)


def channel_modules(model: nn.Module) -> dict[nn.Conv2d, nn.Module]:
    """Every ``nn.Conv2d`` of ``model`` -> the module whose output is that convolution's channels.

    That is the Ultralytics ``Conv`` block (conv + BN + activation) when the convolution sits in one (or a torchvision
    conv-BN block, :mod:`yolo_ldac.pruning.blocks`), else the convolution itself (e.g. the head's final box / class
    convolutions); an ``nn.Linear`` is its own channel module.
    """
    from yolo_ldac.pruning.blocks import conv_bn_blocks

    out: dict[nn.Module, nn.Module] = {conv: block for conv, (block, _) in conv_bn_blocks(model).items()}
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m not in out:  # a Linear (a RoI box head's fc) masks itself
            out[m] = m
    return out


def module_owners(targets: dict[nn.Conv2d, nn.Module]) -> dict[nn.Module, nn.Conv2d]:
    """The inverse of :func:`channel_modules`: module -> the (first) convolution whose channels it outputs."""
    owner: dict[nn.Module, nn.Conv2d] = {}
    for conv, mod in targets.items():
        owner.setdefault(mod, conv)
    return owner


def _width(layer: nn.Module) -> int:
    return layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features


def per_image_rows(model: nn.Module, g: torch.Tensor, n: int) -> torch.Tensor:
    """Per-image mask gradients ``(n, C)`` from ``g``: as they are when ``g`` has a row per image, else (the rows of
    a torchvision RoI box head's fully connected layer, one per RoI) summed over each image's RoIs, whose counts the
    model recorded in ``roi_counts``.

    Example:
        >>> per_image_rows(nn.Module(), torch.ones(2, 3), 2).shape
        torch.Size([2, 3])
    """
    if g.shape[0] == n:
        return g
    counts = [int(c) for c in (getattr(model, "roi_counts", None) or [])]
    if len(counts) != n or sum(counts) != g.shape[0]:
        raise LDACError(f"mask gradients have {g.shape[0]} rows for {n} images and no RoI counts to group them")
    return torch.stack([part.sum(0) for part in g.split(counts)])


def _idx(values) -> torch.Tensor:
    return torch.as_tensor([int(i) for i in values], dtype=torch.long)


def _out_items(group) -> list[tuple[nn.Module, torch.Tensor, torch.Tensor]]:
    """(conv, channel indices, root indices) of each distinct out-channel convolution of a dependency group."""
    seen, items = set(), []
    for item in group:
        mod = item.dep.target.module
        if item.dep.handler in OUT_FNS and isinstance(mod, (nn.Conv2d, nn.Linear)) and id(mod) not in seen:
            seen.add(id(mod))
            items.append((mod, _idx(item.idxs), _idx(item.root_idxs)))
    return items


def fisher_from_samples(per_conv: Sequence[torch.Tensor]) -> torch.Tensor:
    """Group Fisher score of ``n`` channels from per-sample mask gradients of the coupled convolutions.

    ``per_conv``: one ``(n_samples, n)`` tensor per coupled convolution, already aligned to the group's root
    channels. The coupled masks are one shared mask, so their gradients add per sample *before* squaring:
    ``0.5 * sum_s (sum_k g_k[s, c]) ** 2``.

    Example:
        >>> fisher_from_samples([torch.tensor([[1.0, -1.0]]), torch.tensor([[-1.0, 1.0]])]).tolist()
        [0.0, 0.0]
        >>> fisher_from_samples([torch.tensor([[1.0], [2.0]])]).tolist()
        [2.5]
    """
    if not per_conv:
        raise ValueError("no per-sample gradients")
    total = torch.zeros_like(per_conv[0], dtype=torch.float64)
    for g in per_conv:
        total += g.double()
    return 0.5 * total.pow(2).sum(0)  # float64: Fisher scores span many decades


def _frozen_params_unfrozen(model: nn.Module):
    """Context: every frozen parameter requires grad inside (as Taylor does); restored on exit."""

    @contextlib.contextmanager
    def ctx():
        frozen = [p for p in model.parameters() if not p.requires_grad]
        for p in frozen:
            p.requires_grad_(True)
        try:
            yield
        finally:
            for p in frozen:
                p.requires_grad_(False)

    return ctx()


@register_criterion("group_fisher")
class GroupFisherCriterion(Criterion):
    """Group Fisher pruning (Liu et al., ICML 2021) on the Ultralytics detection loss.

    Per image ``n`` and channel ``c``: ``g_nc = dL/dm_nc`` where a virtual mask ``m`` of shape ``(B, C, 1, 1)``,
    all ones, multiplies the channel's output (one mask entry per image, so one backward per batch yields the
    per-image gradients exactly). ``L`` = ``detection_loss(model, batch)`` with the model in eval mode (BN running
    statistics untouched). The per-image gradient vectors are stored per convolution as ``(n_images, C)`` (bounded
    by the calibration set); ``__call__`` sums the coupled convolutions' vectors per image, then squares:
    ``score_c = 0.5 * sum_n (sum_k g^k_nc) ** 2``.

    ``normalize="flops"`` (registered as ``group_fisher_flops``): the score is divided by the FLOPs one channel
    of the group costs (its out-channel convolutions plus the in-channels of its consumers, from
    :func:`~yolo_ldac.pruning.complexity.conv_flops` at the output sizes seen on the calibration images), the
    paper's FLOPs-aware variant.

    Deviations from the paper: (1) the paper sorts and removes one channel at a time, re-estimating between
    removals over many fine-tuning iterations; here the scores are computed once per prune step on the
    calibration batches and the engine removes blocks of ``round_to`` channels. (2) The per-image gradient is
    that of the *batch* loss (Ultralytics normalises the loss by the batch's target count and size), which is the
    same up to a per-batch constant as the image's own loss gradient (the paper's mmdet code does the same). (3)
    The paper places masks on convolution inputs; here they sit on the producing block's output, which for
    coupled consumers is the same shared mask. (4) Scores are not normalised per layer: the Fisher score is an
    estimate of the loss increase, comparable across layers, which is the point of the method. (5) Parameters
    frozen by Ultralytics' loader are temporarily unfrozen as for Taylor, although only the masks are
    differentiated (``autograd.grad``), so no parameter ``.grad`` is written. (6) All scores are multiplied by
    one global constant (1 / the largest single-convolution channel score) so the float32 scores do not
    underflow (on a randomly initialised YOLO the mask gradients span ~20 decades); the ranking is unchanged.
    """

    needs_data = True

    def __init__(self, seed: int = 0, normalize: str | None = None, **kw: object):
        super().__init__(seed=seed)
        if normalize not in (None, "none", "flops"):
            raise LDACError(f"group_fisher: normalize must be None or 'flops', got {normalize!r}")
        self.normalize = None if normalize == "none" else normalize
        self.grads: dict[nn.Conv2d, torch.Tensor] = {}
        self.out_hw: dict[nn.Conv2d, int] = {}
        self.scale = 1.0

    def _loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        from yolo_ldac.pruning.calibration import detection_loss

        return detection_loss(model, batch)

    def _mask_centres(self, model: nn.Module, owner: dict, batches: list[dict]) -> dict[nn.Conv2d, torch.Tensor]:
        """Per-channel values the mask interpolates towards (``a' = mu + m (a - mu)``); none: ``a' = m a``."""
        return {}

    def prepare(self, model: nn.Module, batches: Iterable[dict]) -> None:
        batches = list(batches)
        targets = channel_modules(model)
        owner = module_owners(targets)
        masks: dict[nn.Conv2d, torch.Tensor] = {}
        out_hw: dict[nn.Conv2d, int] = {}
        was_training = model.training
        model.eval()
        centres = self._mask_centres(model, owner, batches)

        def mask_hook(module, _inp, out):
            if not isinstance(out, torch.Tensor) or out.dim() < 2:
                return None
            conv = owner[module]
            m = masks.get(conv)
            if m is None or m.shape[:2] != out.shape[:2]:
                m = torch.ones(out.shape[0], out.shape[1], *([1] * (out.dim() - 2)), device=out.device,
                               dtype=out.dtype, requires_grad=True)
                masks[conv] = m
            if out.dim() == 4:  # per image (a RoI head's convolution: times the RoIs of an image)
                out_hw[conv] = max(1, int(out.shape[0]) // max(images[0], 1)) * int(out.shape[2] * out.shape[3])
            elif out.dim() == 2:  # a Linear over RoIs: its rows per image
                out_hw[conv] = max(1, int(out.shape[0]) // max(images[0], 1))
            mu = centres.get(conv)
            if mu is None or out.dim() != 4:
                return out * m
            mu = mu.to(out.device, out.dtype).view(1, -1, 1, 1)
            return mu + m * (out - mu)

        images = [1]  # images of the batch being run (a Linear's rows are counted per image)
        handles = [mod.register_forward_hook(mask_hook) for mod in owner]
        chunks: dict[nn.Conv2d, list[torch.Tensor]] = {conv: [] for conv in targets}
        try:
            with _frozen_params_unfrozen(model), torch.enable_grad():
                for batch in batches:
                    masks.clear()
                    images[0] = int(batch["img"].shape[0])
                    loss = self._loss(model, batch)
                    convs = list(masks)
                    grads = torch.autograd.grad(loss, [masks[c] for c in convs], allow_unused=True)
                    n = int(batch["img"].shape[0])
                    for conv in targets:
                        chunks[conv].append(torch.zeros(n, _width(conv), dtype=torch.float64))
                    for conv, g in zip(convs, grads):
                        if g is not None:
                            chunks[conv][-1] = per_image_rows(model, g.detach().flatten(1).double().cpu(), n)
                    del loss, grads
        finally:
            for h in handles:
                h.remove()
            masks.clear()
            model.train(was_training)
        self.grads = {conv: torch.cat(c) for conv, c in chunks.items() if c}
        self.out_hw = out_hw
        # One global scale (ranking-invariant across groups) so that the float32 scores the engine keeps do not
        # underflow: the largest single-conv channel score becomes 1.
        peak = max((float(0.5 * g.pow(2).sum(0).max()) for g in self.grads.values() if g.numel()), default=0.0)
        self.scale = 1.0 / peak if peak > 0 else 1.0

    def channel_flops(self, group) -> float:
        """FLOPs one channel of ``group`` costs: out-channel convs plus consumers' input channels (1 image)."""
        n = len(group[0].idxs)
        total, seen = 0.0, set()
        for item in group:
            mod, fn = item.dep.target.module, item.dep.handler
            if not isinstance(mod, (nn.Conv2d, nn.Linear)) or (id(mod), fn) in seen:
                continue
            seen.add((id(mod), fn))
            hw = self.out_hw.get(mod, 0)
            mult = max(1, len(item.idxs) // max(n, 1))
            depthwise = isinstance(mod, nn.Conv2d) and mod.groups > 1 and mod.groups == mod.in_channels
            if fn in OUT_FNS:
                total += mult * layer_flops(mod, hw, out_ch=1)
            elif fn in IN_FNS and not depthwise:
                total += mult * layer_flops(mod, hw, in_ch=1)
        return total

    def __call__(self, group) -> torch.Tensor:
        n = len(group[0].idxs)
        aligned = []
        for conv, idxs, ridx in _out_items(group):
            g = self.grads.get(conv)
            if g is None:
                continue
            ok = (idxs < g.shape[1]) & (ridx < n)
            a = torch.zeros(g.shape[0], n, dtype=g.dtype)
            a.index_add_(1, ridx[ok], g[:, idxs[ok]])
            aligned.append(a)
        if not aligned:
            return torch.zeros(n)
        score = fisher_from_samples(aligned) * self.scale
        if self.normalize == "flops":
            score = score / max(self.channel_flops(group) / 1e6, 1e-12)  # per MFLOP of one channel
        return score


@register_criterion("group_fisher_flops")
class GroupFisherFlopsCriterion(GroupFisherCriterion):
    """Group Fisher divided by the FLOPs of one channel of the group (``group_fisher`` with normalize="flops")."""

    def __init__(self, seed: int = 0, normalize: str | None = "flops", **kw: object):
        super().__init__(seed=seed, normalize=normalize, **kw)


# --- PX --------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def lrp_gated_silu(model: nn.Module):
    """Inside: every ``nn.SiLU`` of ``model`` computes ``z * sigmoid(z).detach()`` (same values; the gate is a
    constant for autograd). The backward of ``x -> x * gate`` passes relevance through the activation unchanged
    (LRP's rule for element-wise activations), so gradient x input stays conservative through SiLU, as it is
    through ReLU."""

    def gate(_module, inp, _out):
        z = inp[0]
        return z * torch.sigmoid(z).detach()

    handles = [m.register_forward_hook(gate) for m in {id(m): m for m in model.modules()
                                                       if isinstance(m, nn.SiLU)}.values()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def gradient_x_input(score: torch.Tensor, acts: Sequence[torch.Tensor],
                     retain_graph: bool = False) -> list[torch.Tensor | None]:
    """Per-image, per-channel LRP-0 relevance ``R_nc = sum_hw a_nchw * dS_n/da_nchw`` of ``acts`` for the
    per-image scores ``score`` (shape ``(N,)``); ``None`` for an activation ``score`` does not depend on.

    Images must not interact (eval-mode BN), so the gradient of ``score.sum()`` gives each image's own.
    Exact LRP-0 on bias-free piecewise-linear nets (conv, ReLU, max-pool, nearest upsampling, concat, add):
    then the relevance of every layer sums to ``S_n``.
    """
    grads = torch.autograd.grad(score.sum(), list(acts), allow_unused=True, retain_graph=retain_graph)
    out = []
    for a, g in zip(acts, grads):
        out.append(None if g is None else (a.detach() * g).flatten(2).sum(2) if a.dim() > 2 else a.detach() * g)
    return out


def detection_evidence(preds, topk: int | None = 100) -> torch.Tensor:
    """Per-image explained output ``S_n``: the sum, over the ``topk`` anchors with the highest class score, of
    their max-class logit (all anchors when ``topk`` is None)."""
    if isinstance(preds, dict) and "scores" in preds:
        logits = preds["scores"]  # (N, nc, A), pre-sigmoid
    elif isinstance(preds, torch.Tensor) and preds.dim() == 3:  # (N, 4 + nc, A) with sigmoid scores
        logits = torch.logit(preds[:, 4:].clamp(1e-6, 1 - 1e-6))
    else:
        raise LDACError("px: the model's output has no class scores to explain")
    best = logits.max(1).values  # (N, A)
    if topk is not None and topk < best.shape[1]:
        best = best.topk(topk, dim=1).values
    return best.sum(1)


@register_criterion("px")
class PXCriterion(Criterion):
    """Pruning by explaining (Yeom et al., Pattern Recognition 2021): LRP relevance of each channel.

    The explained output ``S_n`` of image ``n`` is the sum of the max-class logit of its ``topk`` most confident
    anchors (the paper explains the true class's logit of a classifier; a detector's analogue is the evidence of
    its top detections; logits, not sigmoid confidences, as LRP explains pre-activation outputs and the sigmoid
    saturates). The relevance of channel ``c`` of a convolution's output activation ``a`` (the Conv block's
    output) is ``R_nc = sum_hw a_nc * dS_n/da_nc``.

    This uses the identity LRP-0 == gradient x input, exact for bias-free piecewise-linear networks (conv,
    ReLU, max-pool = winner-take-all, nearest upsampling = relevance summed back, concat = relevance split, add =
    relevance shared in proportion to the contributions). SiLU is handled by the pass-through rule (the gate
    ``sigmoid(z)`` is held constant in the backward, see :func:`lrp_gated_silu`), so the SiLU layers are treated
    like ReLU. It is approximate where biases (conv biases and the folded BN shift) absorb relevance, and it is
    LRP-0 rather than the paper's preferred alpha-beta / z+ composite: relevance can be negative, so a channel's
    score is the *positive part* ``max(R_nc, 0)`` averaged over the calibration images. Scores are divided by
    their layer's mean and averaged over the coupled convolutions of a dependency group.

    Convolutions ``S`` does not depend on at all (the head's box branch: the class logits never see it) have no
    relevance; groups made only of them are scored by the group L2 norm (DepGraph), as LDAC does for its head.
    """

    needs_data = True

    def __init__(self, seed: int = 0, topk: int | None = 100, **kw: object):
        super().__init__(seed=seed)
        self.topk = topk
        self.scores: dict[nn.Conv2d, torch.Tensor] = {}

    def prepare(self, model: nn.Module, batches: Iterable[dict]) -> None:
        targets = channel_modules(model)
        owner = module_owners(targets)
        acts: dict[nn.Conv2d, torch.Tensor] = {}

        def keep(module, _inp, out):
            if isinstance(out, torch.Tensor):
                acts[owner[module]] = out

        sums = {conv: torch.zeros(_width(conv), dtype=torch.float64) for conv in targets}
        connected: set[nn.Conv2d] = set()
        count = 0
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        handles = [mod.register_forward_hook(keep) for mod in owner]
        try:
            with lrp_gated_silu(model), torch.enable_grad():
                for batch in batches:
                    acts.clear()
                    img = batch["img"].to(device).float().requires_grad_(True)  # a graph even with frozen weights
                    out = model(img)
                    preds = out[1] if isinstance(out, (tuple, list)) and len(out) > 1 else out
                    if isinstance(out, (tuple, list)) and not (isinstance(preds, dict) and "scores" in preds):
                        preds = out[0]
                    s = detection_evidence(preds, self.topk)
                    convs = list(acts)
                    rel = gradient_x_input(s, [acts[c] for c in convs])
                    for conv, r in zip(convs, rel):
                        if r is not None:
                            sums[conv] += r.clamp(min=0).sum(0).double().cpu()
                            connected.add(conv)
                    count += int(img.shape[0])
                    acts.clear()
        finally:
            for h in handles:
                h.remove()
            model.train(was_training)
        self.scores = {}
        for conv in connected:
            s = sums[conv] / max(count, 1)
            self.scores[conv] = (s / s.mean()).float() if s.mean() > 0 else s.float()

    _fallback = tp.importance.GroupMagnitudeImportance(p=2, group_reduction="mean", normalizer="mean")

    def __call__(self, group) -> torch.Tensor:
        n = len(group[0].idxs)
        total, count = torch.zeros(n), torch.zeros(n)
        for conv, idxs, ridx in _out_items(group):
            s = self.scores.get(conv)
            if s is None:
                continue
            ok = (idxs < len(s)) & (ridx < n)
            total.index_add_(0, ridx[ok], s[idxs[ok]])
            count.index_add_(0, ridx[ok], torch.ones(int(ok.sum())))
        if not bool((count > 0).any()):
            return self._fallback(group)
        return total / count.clamp(min=1)
