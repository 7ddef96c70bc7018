"""The handoff: during the push, the coming step's channels hand what they carried to the channels that stay.

Before the push the run's criterion chooses the step's channels (``pruner.choose``). Every convolution that
reads them (a *consumer*) gets, from calibration activations, the ridge least-squares prediction of each doomed
input channel from its kept ones, ``x_R ~= A x_K + m`` (:func:`yolo_ldac.pruning.lsq.channel_regression`, the
same fit as ``compensate=lsq``). During the push the consumer moves, on a schedule over the phase's batches,
from reading the doomed channels to reading that prediction::

    W_R(t) = (1 - t) W_R(0)          W_K(t) = W_K + t W_R(0) A          shift(t) = t W_R(0) m

(``t`` goes linearly from 0 to 1 by ``fade_end`` of the phase; the constant goes into the consumer's bias or the
running mean of the BN after it). ``W_R`` is set directly after every batch, in the model and in its EMA, and its
task gradient is cut, as are the gradients of the doomed outputs; the increments of ``W_K`` and the shift are added
to whatever training made of them. At ``t = 1`` no convolution reads a doomed channel: the step removes exactly the
planned channels and changes nothing. What the step would have cost with ``compensate=lsq`` at once is spread over
the phase, with the rest of the network training against it; the fade (:mod:`yolo_ldac.push.fade`) instead drives
the doomed channels to zero and leaves the consumers to relearn what they lose.

Example:
    >>> from yolo_ldac.push import build_push
    >>> p = build_push("handoff")
    >>> p.trains_before_first_step, p.needs_data
    (True, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from yolo_ldac.push import PUSHES
from yolo_ldac.push.fade import FadingPush, FadeSchedule, doomed_outputs, removed_channels


def doomed_inputs(model: nn.Module, chosen: dict[str, list[int]]) -> dict[str, list[int]]:
    """Every convolution input a prune of ``chosen`` removes: ``conv name -> input channels`` (ungrouped consumers
    only: a removed input of a depthwise convolution takes that convolution's output with it)."""
    return removed_channels(model, chosen, "in")


@dataclass
class _Consumer:
    name: str
    removed: torch.Tensor  # (R,) input channels that go
    kept: torch.Tensor  # (K,)
    w_removed: torch.Tensor  # (O, R, kh, kw): the removed columns at the start of the phase
    w_delta: torch.Tensor  # (O, K, kh, kw): W_R(0) A, added to the kept columns as t goes 0 -> 1
    shift: torch.Tensor  # (O,): W_R(0) m, added to the pre-activation as t goes 0 -> 1


class HandoffSchedule:
    """The consumers of one push phase's doomed channels and their least-squares handoff (module docstring)."""

    def __init__(self, model: nn.Module, doomed_in: dict[str, list[int]], images, ridge: float = 1e-3):
        from yolo_ldac.pruning.lsq import InputGram, channel_regression, refit_weight

        modules = dict(model.named_modules())
        convs = [modules[n] for n in doomed_in if n in modules]
        stats = InputGram.measure(model, images, ridge=ridge, convs=convs)
        self.consumers: list[_Consumer] = []
        for name, removed in doomed_in.items():
            conv = modules.get(name)
            if conv not in stats.stats or not removed:
                continue
            count, total, gram = stats.stats[conv]
            c = conv.weight.shape[1]
            rem = torch.as_tensor(sorted(set(removed)), dtype=torch.long)
            mask = torch.ones(c, dtype=torch.bool)
            mask[rem] = False
            keep = torch.nonzero(mask).flatten()
            a, m = channel_regression(gram, total, count, keep, rem, ridge)
            w0 = conv.weight.detach()
            new_k, shift = refit_weight(w0, a, m, keep, rem)
            self.consumers.append(_Consumer(name, rem, keep, w0[:, rem].clone().cpu(),
                                            (new_k - w0[:, keep]).cpu(), shift.cpu()))

    @property
    def inputs(self) -> int:
        return int(sum(len(c.removed) for c in self.consumers))

    @torch.no_grad()
    def apply(self, model: nn.Module, t: float, dt: float) -> None:
        """Set the removed columns of ``model``'s consumers to ``(1 - t)`` of their start and add ``dt`` of the
        kept-column and constant increments (``dt`` = the part of ``t`` not applied yet)."""
        from yolo_ldac.pruning.compensate import add_output_shift, bn_after_convs

        modules = dict(model.named_modules())
        bn_after = bn_after_convs(model) if dt else {}
        for c in self.consumers:
            conv = modules.get(c.name)
            if conv is None:
                continue
            w = conv.weight
            dev, dt_ = w.device, w.dtype
            w[:, c.removed.to(dev)] = (c.w_removed * (1.0 - t)).to(dev, dt_)
            if dt:
                w[:, c.kept.to(dev)] += (c.w_delta * dt).to(dev, dt_)
                add_output_shift(conv, (c.shift * dt).to(dev, dt_), bn_after)

    @torch.no_grad()
    def cut_gradients(self, model: nn.Module) -> None:
        """Zero the task gradient of the removed columns (they follow the schedule, not the optimizer)."""
        modules = dict(model.named_modules())
        for c in self.consumers:
            conv = modules.get(c.name)
            if conv is not None and conv.weight.grad is not None:
                conv.weight.grad[:, c.removed.to(conv.weight.device)] = 0


@PUSHES.register("handoff")
class HandoffPush(FadingPush):
    """Detection loss; the coming step's channels hand their part to the kept ones (least squares) over the phase,
    so that the step removes channels nobody reads any more."""

    trains_before_first_step = True
    needs_data = True

    def __init__(self, seed: int = 0, fade_end: float = 0.5, lsq_ridge: float = 1e-3, **kw: Any):
        super().__init__(seed=seed, fade=True, fade_end=fade_end)
        self.ridge = float(lsq_ridge)
        self.handoff: HandoffSchedule | None = None
        self._applied = 0.0

    def prepare(self, model: nn.Module, pruner, next_ratio: float, batches: list[dict]) -> None:
        chosen = pruner.choose(next_ratio, batches)
        self._planned = chosen
        # The doomed outputs keep their values (no BN fade) but get no task gradient: nothing reads them at the end.
        self.schedule = FadeSchedule(model, doomed_outputs(model, chosen))
        self.handoff = HandoffSchedule(model, doomed_inputs(model, chosen), [b["img"] for b in batches], self.ridge)
        self._applied = 0.0

    def _t(self, progress: float) -> float:
        return min(1.0, progress / max(self.fade_end, 1e-9))

    def on_epoch_start(self, trainer, final: bool = False) -> None:
        super().on_epoch_start(trainer, final)
        if not final and self.handoff is not None:
            # The weights hold every increment up to the end of the previous epoch (also when resumed from it).
            self._applied = self._t(self._progress(trainer))

    def before_optimizer_step(self, trainer, final: bool = False) -> None:
        if self.handoff is None or final:
            return
        from ultralytics.utils.torch_utils import unwrap_model

        model = unwrap_model(trainer.model)
        self.schedule.cut_gradients(model)
        self.handoff.cut_gradients(model)

    def on_batch_end(self, trainer, final: bool = False) -> None:
        if self.handoff is None or final:
            return
        from ultralytics.utils.torch_utils import unwrap_model

        self._batch += 1
        t = self._t(self._progress(trainer))
        dt, self._applied = t - self._applied, t
        self.handoff.apply(unwrap_model(trainer.model), t, dt)
        if getattr(trainer, "ema", None) is not None:
            self.handoff.apply(trainer.ema.ema, t, dt)

    def round_info(self) -> dict:
        return {"handed_off_inputs": self.handoff.inputs} if self.handoff is not None else {}
