"""The compression schedule: named phases, a state after each, resume, callbacks (see :mod:`.compressor`)."""

from yolo_ldac.schedule.callbacks import EVENTS, Callbacks
from yolo_ldac.schedule.compressor import Compressor, plan_phases
from yolo_ldac.schedule.state import RunState

__all__ = ["EVENTS", "Callbacks", "Compressor", "RunState", "plan_phases"]
