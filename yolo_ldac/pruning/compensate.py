"""Mean-activation compensation: a removed channel's constant part is folded into its consumers.

A pruned channel does not feed its consumers zero: through BN shift and activation it fed them roughly its mean
activation. Removing it without compensation shifts every consumer's pre-activation by
``sum_kh,kw W[o, c, kh, kw] * mean_c``; folding that shift into the consumer's bias (or, for a convolution
followed by BN without bias, into the BN running mean) keeps the consumer's output on average unchanged.
Measured on the COCO YOLO11n (one low-norm channel per layer removed): mAP50-95 0.306 -> 0.0015 without the
fold, 0.099 with it.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn as nn

from yolo_ldac.registry import Registry

COMPENSATIONS = Registry("compensation", key="compensate")


class Compensation:
    """What is done for the channels a prune step removes, so their consumers keep their output.

    :meth:`start` measures what it needs on the calibration images before a step and returns a per-step state with
    ``fold(conv, removed_inputs)`` (called before torch-pruning removes those inputs of ``conv``) and
    ``drop(conv, removed_inputs)`` (after), or ``None`` for nothing to do.
    """

    name = "base"
    needs_data = True

    def __init__(self, **_: object):
        pass

    def start(self, model: nn.Module, images: Iterable[torch.Tensor]):  # pragma: no cover - abstract
        raise NotImplementedError


@COMPENSATIONS.register("none")
class NoCompensation(Compensation):
    """Remove channels as they are (their constant contribution to the consumers is lost)."""

    needs_data = False

    def start(self, model: nn.Module, images: Iterable[torch.Tensor]) -> None:
        return None


@COMPENSATIONS.register("mean")
class MeanCompensation(Compensation):
    """Fold each removed channel's mean activation (calibration images) into its consumers' bias or BN mean."""

    def start(self, model: nn.Module, images: Iterable[torch.Tensor]) -> "InputMeans":
        return InputMeans.measure(model, images)


@COMPENSATIONS.register("lsq")
class LSQCompensation(Compensation):
    """Replace each removed channel by its ridge least-squares prediction from the kept ones and refit consumers."""

    def __init__(self, ridge: float = 1e-3, **_: object):
        self.ridge = float(ridge)

    def start(self, model: nn.Module, images: Iterable[torch.Tensor]):
        from yolo_ldac.pruning.lsq import InputGram

        return InputGram.measure(model, images, ridge=self.ridge)


def build_compensation(name: "str | bool | None | Compensation", **kwargs) -> Compensation:
    """A :class:`Compensation` from its registered name (``True`` means ``mean``, ``False``/``None`` ``none``).

    Example:
        >>> type(build_compensation(True)).__name__, type(build_compensation("none")).__name__
        ('MeanCompensation', 'NoCompensation')
    """
    if isinstance(name, Compensation):
        return name
    if name is True:
        name = "mean"
    elif name is False or name is None:
        name = "none"
    return COMPENSATIONS.build(name, **kwargs)


@torch.no_grad()
def run_with_input_hooks(model: nn.Module, convs: Iterable[nn.Module], pre_hook, images: Iterable[torch.Tensor]) -> None:
    """Run ``images`` through ``model`` in eval mode with ``pre_hook`` on the inputs of ``convs`` (removed after)."""
    handles = [m.register_forward_pre_hook(pre_hook) for m in convs]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        for img in images:
            model(img.to(device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)


def bn_after_convs(model: nn.Module) -> dict[nn.Module, nn.BatchNorm2d]:
    """The BatchNorm that follows each convolution (an Ultralytics ``Conv`` block, a torchvision conv-BN sequence or
    ResNet block: :func:`yolo_ldac.pruning.blocks.conv_bn_blocks`)."""
    from yolo_ldac.pruning.blocks import conv_bn_blocks

    return {conv: bn for conv, (_, bn) in conv_bn_blocks(model).items()}


@torch.no_grad()
def add_output_shift(conv: nn.Conv2d, shift: torch.Tensor, bn_after: dict[nn.Module, nn.BatchNorm2d]) -> None:
    """Add ``shift`` (one value per output channel) to ``conv``'s pre-activation output: into its bias, else into the
    running mean of the BN that follows it (subtracted), else as a new bias."""
    if conv.bias is not None:
        conv.bias.add_(shift.to(conv.bias.dtype))
    elif conv in bn_after:
        bn_after[conv].running_mean.sub_(shift)
    else:
        conv.bias = nn.Parameter(shift.clone())


class InputMeans:
    """Per-channel mean of every ``nn.Conv2d`` input, measured over calibration images, kept in step with pruning.

    Example:
        >>> conv = nn.Conv2d(2, 1, 1, bias=True)
        >>> means = InputMeans.measure(nn.Sequential(conv), [torch.ones(1, 2, 4, 4)])
        >>> means.means[conv].tolist()
        [1.0, 1.0]
    """

    def __init__(self, means: dict[nn.Module, torch.Tensor], bn_after: dict[nn.Module, nn.BatchNorm2d]):
        self.means = means
        self.bn_after = bn_after

    @classmethod
    @torch.no_grad()
    def measure(cls, model: nn.Module, images: Iterable[torch.Tensor]) -> "InputMeans":
        sums: dict[nn.Module, torch.Tensor] = {}
        counts: dict[nn.Module, int] = {}

        def pre_hook(module, inputs):
            x = inputs[0].detach().double()
            if isinstance(module, nn.Linear):  # (rows, features): a feature is a channel
                x = x.reshape(-1, x.shape[-1])
                sums[module] = sums.get(module, 0) + x.sum(dim=0)
                counts[module] = counts.get(module, 0) + x.shape[0]
                return
            sums[module] = sums.get(module, 0) + x.sum(dim=(0, 2, 3))
            counts[module] = counts.get(module, 0) + x.shape[0] * x.shape[2] * x.shape[3]

        layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        run_with_input_hooks(model, layers, pre_hook, images)
        means = {m: (sums[m] / counts[m]).float() for m in sums}
        return cls(means, bn_after_convs(model))

    @torch.no_grad()
    def fold(self, conv: nn.Conv2d, removed: list[int]) -> bool:
        """Fold the mean of input channels ``removed`` of ``conv`` into its bias or following BN; True if folded."""
        if conv not in self.means or not removed:
            return False
        if getattr(conv, "groups", 1) > 1:  # depthwise/grouped: the input channel's whole output goes with it
            return False
        idx = torch.as_tensor(removed, dtype=torch.long, device=conv.weight.device)
        mean = self.means[conv].to(conv.weight.device)[idx]
        w = conv.weight[:, idx]
        shift = ((w.sum(dim=(2, 3)) if w.dim() == 4 else w) * mean).sum(dim=1)  # (out,)
        add_output_shift(conv, shift, self.bn_after)
        return True

    def drop(self, conv: nn.Module, removed: list[int]) -> None:
        """Forget input channels ``removed`` of ``conv`` so later indices stay aligned after pruning."""
        if conv in self.means:
            keep = torch.ones(len(self.means[conv]), dtype=torch.bool)
            keep[torch.as_tensor(removed, dtype=torch.long)] = False
            self.means[conv] = self.means[conv][keep]
