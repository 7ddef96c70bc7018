"""The fade: the channels the coming step removes are driven to output zero during the push, so that removing
them at the step changes nothing (METHOD.md, "Fade what goes").

Before the push, the run's criterion chooses the step's channels (``pruner.choose``); with their coupled twins
(the other layers of each dependency group: residual adds, concats) they are the *doomed* outputs. During the
push the BN scale and shift of every doomed output are set, after every batch, to ``max(0, 1 - progress /
fade_end)`` times their value at the start of the phase (``progress`` = batches done / batches in the phase;
``fade_end`` 0.5: zero half way, and the second half of the phase trains the rest without them), in the trained
model and in its EMA, and their task gradient (BN scale, shift and the filters that produce them) is zeroed before every
optimizer step. At the end of the phase they are exactly 0: the channel outputs SiLU(0) = 0, and the step removes
exactly the planned channels (:meth:`Push.planned`), which is lossless. Set directly, not through a penalty: an L1
on the doomed BN scales moved them by 1e-5..2e-4 in a phase, because AdamW bounds every step near the lr.

Example:
    >>> from yolo_ldac.push import build_push
    >>> build_push("fade").trains_before_first_step
    True
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from yolo_ldac.push import PUSHES, Push


def removed_channels(model: nn.Module, chosen: dict[str, list[int]], side: str = "out") -> dict[str, list[int]]:
    """The convolution channels a prune of ``chosen`` (root layer name -> output channels) removes, on one ``side``:
    ``"out"``: the outputs of the root and of each coupled convolution of its dependency group; ``"in"``: the inputs
    of every ungrouped convolution that reads them (a removed input of a depthwise convolution takes that
    convolution's output with it). ``conv name -> channels``."""
    import torch_pruning as tp

    from yolo_ldac.pruning.engine import build_graph

    modules = dict(model.named_modules())
    names = {m: n for n, m in modules.items()}
    out: dict[str, set[int]] = {}
    graph = build_graph(model)  # nothing is pruned here, so one graph serves every group
    for root_name, idxs in chosen.items():
        group = graph.get_pruning_group(modules[root_name], tp.prune_conv_out_channels, idxs=sorted(idxs))
        for item in group:
            mod, fn = item.dep.target.module, item.dep.handler
            if not isinstance(mod, nn.Conv2d):
                continue
            if (graph.is_out_channel_pruning_fn(fn) if side == "out"
                    else mod.groups == 1 and graph.is_in_channel_pruning_fn(fn)):
                out.setdefault(names[mod], set()).update(int(i) for i in item.idxs)
    return {k: sorted(v) for k, v in out.items()}


def doomed_outputs(model: nn.Module, chosen: dict[str, list[int]]) -> dict[str, list[int]]:
    """Every output a prune of ``chosen`` (root layer name -> channels) removes: ``conv name -> channels`` for the
    root and each coupled convolution of its dependency group."""
    return removed_channels(model, chosen, "out")


class FadeSchedule:
    """The doomed BN channels of one push phase and their values at its start; applies the linear fade."""

    def __init__(self, model: nn.Module, doomed: dict[str, list[int]]):
        from yolo_ldac.ldac.criterion import conv_wrappers

        modules = dict(model.named_modules())
        wrappers = conv_wrappers(model)
        names = {m: n for n, m in modules.items()}
        self.entries: list[tuple[str, str, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        for conv_name, idxs in doomed.items():
            conv = modules.get(conv_name)
            if conv not in wrappers or not idxs:
                continue  # a bare convolution (no BN) cannot be faded; it is not in any prunable group here
            bn = wrappers[conv].bn
            idx = torch.as_tensor(idxs, dtype=torch.long)
            self.entries.append((names[bn], conv_name, idx, bn.weight.detach()[idx].clone().cpu(),
                                 bn.bias.detach()[idx].clone().cpu()))

    @property
    def channels(self) -> int:
        return int(sum(len(e[2]) for e in self.entries))

    @torch.no_grad()
    def apply(self, model: nn.Module, scale: float) -> None:
        """Set the doomed BN scale and shift of ``model`` to ``scale`` times their start values."""
        modules = dict(model.named_modules())
        for bn_name, _conv, idx, w0, b0 in self.entries:
            bn = modules.get(bn_name)
            if bn is None:
                continue
            dev = bn.weight.device
            bn.weight[idx.to(dev)] = (w0 * scale).to(dev, bn.weight.dtype)
            bn.bias[idx.to(dev)] = (b0 * scale).to(dev, bn.bias.dtype)

    @torch.no_grad()
    def cut_gradients(self, model: nn.Module) -> None:
        """Zero the task gradient of the doomed outputs (BN scale and shift, and their filters)."""
        modules = dict(model.named_modules())
        for bn_name, conv_name, idx, _w0, _b0 in self.entries:
            for name in (bn_name, conv_name):
                m = modules.get(name)
                for p in (getattr(m, "weight", None), getattr(m, "bias", None)):
                    if p is not None and p.grad is not None:
                        p.grad[idx.to(p.grad.device)] = 0


class FadingPush(Push):
    """A push that fades the coming step's channels (see the module docstring); subclasses add a loss."""

    trains_before_first_step = True

    def __init__(self, seed: int = 0, fade: bool = True, fade_end: float = 0.5, **kw: Any):
        super().__init__(seed=seed, **kw)
        self.fade = fade
        self.fade_end = float(fade_end)  # fraction of the phase at which the fade reaches 0; the rest recovers
        self.schedule: FadeSchedule | None = None
        self._planned: dict[str, list[int]] | None = None
        self._batch = 0

    def prepare(self, model: nn.Module, pruner, next_ratio: float, batches: list[dict]) -> None:
        chosen = pruner.choose(next_ratio, batches)
        self._planned = chosen if self.fade else None
        self.schedule = FadeSchedule(model, doomed_outputs(model, chosen)) if self.fade else None
        self.after_choice(model, chosen)

    def after_choice(self, model: nn.Module, chosen: dict[str, list[int]]) -> None:
        """Hook for subclasses (e.g. LDAC's L1 masks) once the step's channels are known."""

    def planned(self) -> dict[str, list[int]] | None:
        return self._planned

    def on_epoch_start(self, trainer, final: bool = False) -> None:
        self._batch = 0

    def _progress(self, trainer) -> float:
        nb = max(1, len(trainer.train_loader))
        return min(1.0, (trainer.epoch * nb + self._batch) / (max(1, trainer.epochs) * nb))

    def before_optimizer_step(self, trainer, final: bool = False) -> None:
        if self.schedule is not None and not final:
            from ultralytics.utils.torch_utils import unwrap_model

            self.schedule.cut_gradients(unwrap_model(trainer.model))

    def on_batch_end(self, trainer, final: bool = False) -> None:
        if self.schedule is None or final:
            return
        from ultralytics.utils.torch_utils import unwrap_model

        self._batch += 1
        scale = max(0.0, 1.0 - self._progress(trainer) / max(self.fade_end, 1e-9))
        self.schedule.apply(unwrap_model(trainer.model), scale)
        if getattr(trainer, "ema", None) is not None:
            self.schedule.apply(trainer.ema.ema, scale)

    def round_info(self) -> dict:
        return {"faded_channels": self.schedule.channels} if self.schedule is not None else {}


@PUSHES.register("fade")
class FadePush(FadingPush):
    """Detection loss; the coming step's channels fade to zero output over the phase, so the step is lossless."""
