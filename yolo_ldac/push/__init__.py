"""Pushes: what the training before each prune step does to prepare the model for it.

A push never scores channels (that is the criterion's job) and never removes them (the engine's). Before each
training phase between prune steps the schedule calls :meth:`Push.prepare` with a pruner that holds the run's
criterion, so a push can ask which channels the coming step removes (``pruner.choose(next_ratio, batches)``);
the trainer of that phase then trains with :meth:`Push.make_loss` as the model's loss. ``push=none`` is plain
Ultralytics training. Pushes register with :data:`PUSHES`; the modules that define them are listed in
:data:`yolo_ldac.parts.PLUGIN_MODULES`.

Example:
    >>> from yolo_ldac.push import build_push
    >>> build_push("none").trains_before_first_step
    False
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from yolo_ldac.registry import Registry

PUSHES = Registry("push")


class Push:
    """Base class of every push (also the ``none`` push's behaviour).

    Attributes:
        trains_before_first_step: the schedule trains (pushes) before the first prune step too; a plain
            schedule prunes the model as found first and trains between the later steps.
        needs_data: :meth:`prepare` needs the calibration batches.
    """

    name = "base"
    trains_before_first_step = False
    needs_data = False

    def __init__(self, seed: int = 0, **_: Any):
        self.seed = seed

    def prepare(self, model: nn.Module, pruner, next_ratio: float, batches: list[dict]) -> None:
        """Called before each push phase with a pruner of the run's criterion and the ratio the next step reaches."""

    def make_loss(self, model: nn.Module, final: bool = False):
        """The loss a training phase sets as ``model.criterion`` (``final``: the fine-tuning after the last step);
        ``None`` keeps Ultralytics' detection loss."""
        return None

    def on_epoch_start(self, trainer, final: bool = False) -> None:
        """Called at the start of every epoch of every training phase (e.g. to decay the push's weights)."""

    def before_optimizer_step(self, trainer, final: bool = False) -> None:
        """Called before every optimizer step of every training phase (gradients are in place)."""

    def on_batch_end(self, trainer, final: bool = False) -> None:
        """Called after every training batch of every training phase (the optimizer and EMA have stepped)."""

    def planned(self) -> dict[str, list[int]] | None:
        """The channels (root layer name -> indices) the coming step must remove as they are, because the push
        prepared the model for exactly those; ``None``: the step scores with the criterion."""
        return None

    def round_info(self) -> dict:
        """Extra per-round figures for the report."""
        return {}

    def write_plots(self, run_dir, rounds: list[dict], names: dict | None = None) -> list:
        return []


@PUSHES.register("none")
class NoPush(Push):
    """Plain training with the detection loss between prune steps (the first step prunes the model as found)."""


def build_push(name: str, **kwargs: Any) -> Push:
    """Instantiate the registered push ``name`` (unknown names raise with the closest match suggested)."""
    return PUSHES.build(name, **kwargs)


__all__ = ["PUSHES", "NoPush", "Push", "build_push"]
