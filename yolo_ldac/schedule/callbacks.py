"""Callbacks of a compression run, in Ultralytics' style: ``runner.add_callback("on_step_end", fn)``.

Compressor events (``fn(compressor)``; ``compressor.phase`` is the phase running, ``compressor.last_step`` the
last prune step's :class:`yolo_ldac.pruning.engine.StepResult`, ``compressor.rounds`` the per-round records):

=================  ================================================================================
event              when
=================  ================================================================================
on_run_start       the run directory exists and the phases are planned (also when a run resumes)
on_phase_start     before each phase (``prepare``, ``validate_base``, ``round2.push``, ``round2.step``, ...)
on_phase_end       after each phase, once its state and checkpoint are saved
on_step_end        after each prune step and its validation
on_round_end       after each round (its push, if any, and its step)
on_run_end         after the last phase (the run is finished, or was stopped)
=================  ================================================================================

Setting ``compressor.stop = True`` in a callback ends the run after the current phase; it stays resumable.
Any Ultralytics trainer event (``on_train_epoch_end``, ``on_fit_epoch_end``, ``on_train_batch_end``, ...) is
forwarded to the trainer of every training phase, and is called with that trainer, as in Ultralytics.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable

from yolo_ldac.errors import LDACError

EVENTS = ("on_run_start", "on_phase_start", "on_phase_end", "on_step_end", "on_round_end", "on_run_end")


def trainer_events() -> tuple[str, ...]:
    """Ultralytics' trainer callback events (forwarded to every training phase)."""
    from ultralytics.utils.callbacks.base import default_callbacks

    return tuple(k for k in default_callbacks if not k.startswith(("on_val", "on_predict", "on_export")))


class Callbacks:
    """Event name -> list of functions."""

    def __init__(self):
        self.table: dict[str, list[Callable]] = defaultdict(list)

    def add(self, event: str, fn: Callable) -> None:
        if event not in EVENTS and event not in trainer_events():
            from yolo_ldac.cfg import closest

            hint = closest(event, (*EVENTS, *trainer_events()))
            raise LDACError(f"unknown callback event '{event}'" + (f"; did you mean '{hint}'?" if hint else "")
                            + f" (yolo-ldac events: {', '.join(EVENTS)}; or any Ultralytics trainer event)")
        if not callable(fn):
            raise LDACError(f"callback for '{event}' must be callable, got {type(fn).__name__}")
        self.table[event].append(fn)

    def run(self, event: str, obj) -> None:
        for fn in self.table.get(event, []):
            fn(obj)

    def attach_to_trainer(self, trainer) -> None:
        """Add every Ultralytics-event callback to ``trainer``."""
        for event, fns in self.table.items():
            if event not in EVENTS:
                for fn in fns:
                    trainer.add_callback(event, fn)
