"""The compression job as named phases, with a saved state after each, so that a run resumes where it stopped.

``compress``: prepare -> validate_base -> rounds of ([round{i}.push] -> round{i}.step) -> finetune ->
validate_final -> save. ``prune``: the same without push and fine-tuning. ``finetune``: prepare -> validate_base ->
finetune -> validate_final -> save. A round's push phase trains before its prune step (with ``push=none`` that is
plain training, and round 1 prunes the model as found); its step phase scores (the criterion), compensates (the
compensation) and removes channels, then validates.

After every phase ``state.json`` records it (with that phase's model checkpoint under ``phases/``), written
atomically; :meth:`Compressor.resume` continues from the last finished phase, and inside a training phase from that
phase's own ``epoch_last.pt``. Every phase starts from a seed derived from ``seed`` and its position, so a resumed
run makes the same choices as an uninterrupted one. A finished run holds one model, ``weights/best.pt`` (and the
portable pair ``best.safetensors`` + ``best.json``): phase checkpoints and per-epoch trainer weights are removed.

Example:
    >>> from yolo_ldac.cfg import get_cfg
    >>> comp = Compressor(get_cfg({"data": "coco8.yaml", "method": "l2"}, mode="prune"), "yolo11n.pt")  # doctest: +SKIP
    >>> result = comp.run()  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import random
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from yolo_ldac.cfg import split_args
from yolo_ldac.errors import Interrupted, LDACError
from yolo_ldac.latency.run import RunLatency
from yolo_ldac.schedule.callbacks import EVENTS, Callbacks
from yolo_ldac.schedule.state import STATE_FILE, RunState, find_resumable

PHASE_DIR = "phases"
STEP_BACK = "step_back"  # the training folder of a step back (check_budget)
STEP_FORWARD = "step_forward"  # the training folder of a step forward (check_budget)
LOG_FILE = "log.txt"


def plan_phases(mode: str, cfg: dict, push_trains_first: bool) -> list[str]:
    """The phase names of a run.

    With a budget (``max_drop=`` / ``max_drop_rel=``) a ``search`` phase chooses the ratio after ``validate_base``
    and a ``check_budget`` phase after ``validate_final`` steps back to an earlier phase checkpoint when the
    finished model misses the budget.

    Example:
        >>> plan_phases("compress", {"rounds": 2, "epochs_per_round": 1, "finetune_epochs": 3}, False)
        ['prepare', 'validate_base', 'round1.step', 'round2.push', 'round2.step', 'finetune', 'validate_final', 'save']
        >>> plan_phases("prune", {"rounds": 1, "max_drop": 0.01}, False)
        ['prepare', 'validate_base', 'search', 'round1.step', 'validate_final', 'check_budget', 'save']
    """
    budget = mode != "finetune" and (cfg.get("max_drop") is not None or cfg.get("max_drop_rel") is not None)
    names = ["prepare", "validate_base"] + (["search"] if budget else [])
    if mode == "finetune":
        names.append("finetune")
    else:
        training = mode == "compress"
        for i in range(1, int(cfg["rounds"]) + 1):
            if training and cfg["epochs_per_round"] > 0 and (i > 1 or push_trains_first):
                names.append(f"round{i}.push")
            names.append(f"round{i}.step")
        if training and cfg["finetune_epochs"] > 0:
            names.append("finetune")
    return names + ["validate_final"] + (["check_budget"] if budget else []) + ["save"]


def _clip_grid(grid: list[float], most: float | None) -> list[float]:
    """The ratios of ``grid`` up to ``most``, and ``most`` itself when the grid went beyond it (None: all).

    Example:
        >>> _clip_grid([0.2, 0.4, 0.6], 0.5), _clip_grid([0.2, 0.4], 0.5), _clip_grid([0.2], None)
        ([0.2, 0.4, 0.5], [0.2, 0.4], [0.2])
    """
    if most is None:
        return list(grid)
    return [r for r in grid if r <= most] + ([round(most, 4)] if grid and grid[-1] > most else [])


def select_device(device: Any) -> torch.device:
    """The torch device of Ultralytics' ``device`` setting (``None``/empty: a GPU when there is one, else CPU)."""
    from ultralytics.utils.torch_utils import select_device as ultra_select

    try:
        return ultra_select("" if device is None else device, verbose=False)
    except Exception as e:  # Ultralytics raises ValueError/RuntimeError for devices it cannot use
        raise LDACError(f"device={device!r} is not usable here: {str(e).strip().splitlines()[0]}") from None


def batches_to(batches: list[dict], device: torch.device) -> list[dict]:
    """Calibration batches with their tensors on ``device``."""
    return [{k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in b.items()} for b in batches]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class _PlainFormatter(logging.Formatter):
    """Log lines without terminal colour codes."""

    _ansi = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

    def format(self, record: logging.LogRecord) -> str:
        return self._ansi.sub("", super().format(record))


@contextlib.contextmanager
def log_to_file(path: Path):
    """Copy what the run logs (yolo-ldac's and Ultralytics' messages: one logger) into ``path``."""
    from ultralytics.utils import LOGGER

    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(_PlainFormatter("%(message)s"))
    LOGGER.addHandler(handler)
    try:
        yield
    finally:
        LOGGER.removeHandler(handler)
        handler.close()


class Compressor:
    """Runs one compression job (``cfg["mode"]``: compress, prune or finetune) phase by phase.

    Args:
        cfg: the checked configuration (:func:`yolo_ldac.cfg.get_cfg`).
        source: the input model (path, name, yaml or module); recorded in the state and the report.
        model: the loaded detector (loaded from ``source`` when omitted).
        callbacks: a :class:`Callbacks` table (see :mod:`yolo_ldac.schedule.callbacks`).
    """

    def __init__(self, cfg: dict, source: Any, model: nn.Module | None = None, callbacks: Callbacks | None = None):
        self.cfg = dict(cfg)
        self.mode = cfg["mode"]
        if self.mode not in ("compress", "prune", "finetune"):
            raise LDACError(f"mode {self.mode!r} is not a compression mode")
        self.source = source
        self.model = model
        self.callbacks = callbacks or Callbacks()
        self.state: RunState | None = None
        self.phase: str | None = None
        self.stop = False
        self.last_step = None
        self.run_dir: Path | None = None
        self.model_for_phase: nn.Module | None = None  # the model as the last phase left it
        self._resumed = False
        self.latency: RunLatency | None = None  # round_to=auto, target=latency, speedup=, latency_ms=
        self._latency_record: dict = {}  # what it measured before the run's state existed
        self._lock = None  # the run folder's RunLock while this process writes it
        self._task_hint: str | None = None  # a resumed run's task (its input model is not loaded again)

    def task(self) -> str:
        """The run's Ultralytics task (``detect``, ``segment``, ``pose``, ``obb``): the loaded model's (a checkpoint
        source is loaded for it), a resumed run's recorded one, or what a model yaml's head says."""
        from yolo_ldac.tasks import task_of

        if self.model is not None:
            return task_of(self.model) or "detect"
        if self._task_hint:
            return self._task_hint
        if isinstance(self.source, (str, Path)) and Path(self.source).suffix in {".yaml", ".yml"}:
            from ultralytics.nn.tasks import guess_model_task

            from yolo_ldac.safe_load import load_model_yaml

            try:
                return guess_model_task(load_model_yaml(self.source, trusted=bool(self.cfg.get("trusted", False))))
            except Exception:  # a yaml that cannot be read fails with its own line when the model is built
                return "detect"
        if self.source is not None:  # a checkpoint (a finished run's best.pt handed on): load it now, once
            from yolo_ldac.nn.adapter import load_detection_model

            self.model = load_detection_model(self.source)
            return task_of(self.model) or "detect"
        return "detect"

    # --- the parts and the data ------------------------------------------------------------------------------
    def _setup(self) -> None:
        """Everything a phase needs that is not in the state: parts, data, device, calibration batches."""
        from yolo_ldac.parts import build_parts, resolve_parts

        cfg = self.cfg
        self.ldac_cfg, self.ultra = split_args(cfg)
        self.ultra.pop("resume", None)
        ratio_free = self.mode == "finetune"
        self.parts = {"criterion": None, "push": "none", "compensate": "none"} if ratio_free else resolve_parts(cfg)
        if ratio_free:
            from yolo_ldac.push import build_push

            self.criterion, self.push, self.compensation = None, build_push("none"), None
        else:
            built = build_parts(cfg, self.parts)
            self.criterion, self.push, self.compensation = built["criterion"], built["push"], built["compensate"]
        training = self.mode != "prune"
        needs_data = training or cfg["val_steps"] or (not ratio_free and (
            self.criterion.needs_data or self.push.needs_data or self.compensation.needs_data))
        from yolo_ldac.data.check import check_data

        self.data = (check_data(cfg["data"], trusted=bool(cfg.get("trusted", False)))
                     if (cfg.get("data") or needs_data) else None)
        if self.data is not None:
            from yolo_ldac.data.check import audit_dataset

            # Before the run directory exists: a broken label file stops the run here (strict_labels=True).
            self.labels = audit_dataset(self.data, str(cfg["data"]), strict=bool(cfg.get("strict_labels", True)),
                                        single_cls=bool(cfg.get("single_cls", False)),
                                        task=self.task())
            phases = plan_phases(self.mode, cfg, bool(self.push.trains_before_first_step))
            if any(p == "finetune" or p.endswith(".push") for p in phases):
                from yolo_ldac.data.check import require_train_labels

                require_train_labels(self.data, str(cfg["data"]), self.labels)
        else:
            self.labels = None
        if not ratio_free and self.data is None:
            for kind, part in (("criterion", self.criterion), ("push", self.push)):
                if part.needs_data:
                    raise LDACError(f"{kind} '{part.name}' needs data=... for calibration")
            if self.compensation.needs_data:
                from ultralytics.utils import LOGGER

                LOGGER.warning(f"compensate={self.compensation.name} needs data=... for calibration: pruning "
                               "without compensation")
        self.device = select_device(cfg.get("device"))
        self.calib: list[dict] | None = None

    def calibration(self, needed: bool = False) -> list[dict]:
        """The calibration batches (built once, seeded, on the run's device); ``needed``: also when none of the
        run's parts uses them (the budget search's ``lsq`` retention points do)."""
        if self.calib is None or (needed and not self.calib):
            self.calib = []
            uses = self.criterion is not None and (needed or self.criterion.needs_data or self.push.needs_data
                                                   or self.compensation.needs_data)
            if self.data is not None and uses:
                from yolo_ldac.pruning.calibration import build_calibration_batches

                t = time.perf_counter()
                batches = build_calibration_batches(self.data, imgsz=int(self.cfg["imgsz"]),
                                                    batch=min(int(self.cfg["batch"]), 8),
                                                    n_batches=max(1, int(self.cfg["calib_batches"])),
                                                    seed=int(self.cfg["seed"]),
                                                    task=self.task())
                self.calib = batches_to(batches, self.device)
                self._time("calibration_data", time.perf_counter() - t)
        return self.calib

    def pruner(self, model: nn.Module, compensate: str | None = None):
        """The run's :class:`ChannelPruner` on ``model`` (``compensate``: another compensation than the run's, e.g.
        ``lsq`` for the budget search's retention points)."""
        from yolo_ldac.nn.adapter import protected_layers
        from yolo_ldac.pruning.complexity import Complexity
        from yolo_ldac.pruning.engine import ChannelPruner

        rec = self.state.record
        dense = Complexity(**rec["dense_complexity"])
        compensation = (compensate or self.compensation) if self.calibration(needed=compensate is not None) else "none"
        target, latency = self.cfg["target"], None
        if self.latency is not None:
            self.latency.dense_file(model, self.cfg.get("data"))  # exported before the first step changes it
        if self.latency is not None and (target == "latency" or self.latency.measured_target(self.cfg)):
            target, latency = "latency", self.latency.latency_model(model, self.cfg.get("data"))
            dense = dataclasses.replace(dense, latency_ms=latency.dense_ms)
        return ChannelPruner(model, self.criterion, dense, rec["dense_channels"], protected_layers(model), imgsz=640,
                             target=target, round_to=int(rec.get("round_to", self.cfg["round_to"])),
                             floor=self.cfg["floor"], compensate=compensation, tolerance=self.cfg["tolerance"],
                             flops_fn=_flops_fn(dense), latency=latency)

    @property
    def budget(self):
        """The run's :class:`yolo_ldac.budget.Budget` (``max_drop=`` / ``max_drop_rel=``; inactive when unset)."""
        from yolo_ldac.budget import Budget

        if self.mode == "finetune":
            return Budget()
        return Budget(self.cfg.get("max_drop"), self.cfg.get("max_drop_rel"))

    def run_ratio(self) -> float:
        """The ratio the run prunes to: ``ratio=``, or the one the budget search chose."""
        chosen = ((self.state.record.get("budget") or {}).get("ratio") if self.state is not None else None)
        return float(chosen) if chosen is not None else float(self.cfg["ratio"])

    def _ratio_at(self, rnd: int) -> float:
        """The ratio round ``rnd`` prunes to (of the target; a measured target plans on predicted latency)."""
        if self.latency is None or not self.latency.measured_target(self.cfg):
            return self.run_ratio() * rnd / int(self.cfg["rounds"])
        rec = self.state.record
        ratio = self.latency.planned_ratio()
        last, before = rec.get("latency_last") or {}, self.rounds[-1] if self.rounds else {}
        if rnd > 1 and last.get("model_ms") and before.get("ratio_reached") is not None:
            ratio = self.latency.aimed_ratio(before["ratio_reached"], last)  # the table corrected by measurement
        if "latency_max_ratio" not in rec:  # a measured target plans at most what the floors allow
            from ultralytics.utils import LOGGER

            rec["latency_max_ratio"] = float(self.pruner(self.model_for_phase).max_ratio()) - self.cfg["tolerance"]
            if ratio > rec["latency_max_ratio"]:
                LOGGER.warning(f"the measured target asks for {ratio:.3f} of the predicted latency; at most "
                               f"{rec['latency_max_ratio']:.3f} can be removed under floor={self.cfg['floor']}: "
                               "pruning to that, then measuring")
        ratio = min(ratio, rec["latency_max_ratio"]) * rnd / int(self.cfg["rounds"])
        return max(ratio, float(before.get("ratio_reached") or 0.0))  # never aims below what is already removed

    # --- retention points (sweep, the budget search) -------------------------------------------------------------
    def prepare_points(self) -> None:
        """Check every input and prepare the dense model, as a run does before its folder exists (``sweep``)."""
        self._setup()
        self._check_inputs()

    def open_points(self, out_dir: Path) -> None:
        """Give :meth:`retention_point` the record a run's state would hold (in memory; nothing is resumable)."""
        source = str(self.source) if isinstance(self.source, (str, Path)) else type(self.source).__name__
        self.run_dir = Path(out_dir)
        self.state = RunState.new(out_dir, self.mode, self.ldac_cfg, source, [])
        self.state.record.update(dense_complexity=self.dense_comp.as_dict(), dense_channels=self.dense_channels,
                                 timings={}, **self._latency_record)
        if self.latency is not None:
            self.latency = RunLatency(self.cfg, self.state.record, self.run_dir)

    def dense_latency_ms(self) -> float | None:
        """The dense model's measured latency with ``target=latency`` (the latency model's), else None."""
        if self.latency is None or self.cfg["target"] != "latency":
            return None
        return round(float(self.latency.latency_model(self.prepared, self.cfg.get("data")).dense_ms), 3)

    def retention_point(self, ratio: float, compensate: str | None = None, model: nn.Module | None = None) -> dict:
        """One-shot point (:func:`yolo_ldac.sweep.retention_point`) of the dense ``model`` (default: the prepared
        one) with the run's criterion and settings (``compensate``: another compensation than the run's)."""
        from yolo_ldac.sweep import retention_point

        seed_everything(int(self.cfg["seed"]))
        base = model if model is not None else self.prepared
        return retention_point(base, ratio, lambda m: self.pruner(m, compensate=compensate),
                               self.calibration(needed=compensate is not None), self.validate)

    def trained_point(self, ratio: float, out_dir: Path, epochs: int) -> dict:
        """Compress the input model to ``ratio`` with the usual schedule (``finetune_epochs=epochs``) in
        ``out_dir/r<ratio>``; the sweep's trained point."""
        cfg = dict(self.cfg, mode="compress", ratio=float(ratio), finetune_epochs=int(epochs), epochs=None,
                   project=str(out_dir), name=f"r{ratio:g}", exist_ok=False)
        for key in ("max_drop", "max_drop_rel"):
            cfg[key] = None
        res = Compressor(cfg, self.source, model=self.model, callbacks=self.callbacks).run()
        rep = res.report
        lat = rep.get("latency") or {}
        return {"ratio": float(ratio), "reached_ratio": round(rep["removed"]["flops_pct"] / 100, 4)
                if self.cfg["target"] == "flops" else (rep.get("rounds") or [{}])[-1].get("ratio_reached"),
                "map50_95": rep["after"]["map50_95"], "map50": rep["after"]["map50"],
                "flops_g": rep["after"]["flops_g"], "params_m": rep["after"]["params_m"],
                "latency_ms": lat.get("predicted_ms"), "optimizer_steps": rep["optimizer_steps"]["total"],
                "run_dir": str(res.run_dir), "best": str(res.best)}

    # --- records ---------------------------------------------------------------------------------------------
    @property
    def rounds(self) -> list[dict]:
        return self.state.record.setdefault("rounds", [])

    def _time(self, key: str, seconds: float) -> None:
        timings = self.state.record.setdefault("timings", {}) if self.state else {}
        timings[key] = round(timings.get(key, 0.0) + seconds, 3)

    def _timing_key(self, kind: str) -> str:
        """The ``timings`` key of a phase kind: ``step`` -> ``prune``; a round's training before its step is ``push``
        only when a push runs there (``push=none``: plain training, ``train_between_steps``)."""
        if kind == "step":
            return "prune"
        if kind == "push":
            return "push" if self.parts.get("push", "none") != "none" else "train_between_steps"
        return kind

    def validate(self, model: nn.Module) -> dict:
        from yolo_ldac.engine.validator import validate_model

        t = time.perf_counter()
        out = validate_model(model, self.cfg["data"], self.ultra, device=self.device)
        self._time("validate", time.perf_counter() - t)
        return out

    def _resolve_lr_scale(self, source) -> float:
        """``lr_scale`` as a number: ``auto`` resolved from whether ``source`` carries trained weights."""
        from yolo_ldac.cfg import is_trained_source, resolve_lr_scale

        return resolve_lr_scale(self.cfg.get("lr_scale", "auto"), is_trained_source(source))

    # --- running ---------------------------------------------------------------------------------------------
    def _check_inputs(self) -> None:
        """Everything that can be checked before the run directory exists."""
        from yolo_ldac.nn.adapter import adapt_head_to_names, protected_layers, rewrite_split_blocks, ultralytics_gflops
        from yolo_ldac.pruning.complexity import layer_channels, measure
        from yolo_ldac.pruning.engine import ChannelPruner

        # Seeded: a model built from a yaml and class rows re-initialised for new names are the same every run.
        seed_everything(int(self.cfg["seed"]))
        if self.model is None:
            from yolo_ldac.nn.adapter import load_detection_model

            self.model = load_detection_model(self.source)
        model = self.model
        self._round_imgsz(model)
        from ultralytics.utils import LOGGER

        self.lr_scale = self._resolve_lr_scale(self.source)
        if self.cfg.get("lr_scale", "auto") == "auto" and self.mode != "prune":
            LOGGER.info(f"lr_scale=auto: {self.lr_scale:g} x Ultralytics' lr ("
                        + ("trained weights: their minimum is worth keeping)" if self.lr_scale != 1.0
                           else "a model built from a yaml: random weights)"))
        if self.data is not None:
            model = adapt_head_to_names(model, self.data["names"], seed=int(self.cfg["seed"]),
                                        kpt_shape=self.data.get("kpt_shape"))
        model = copy.deepcopy(model).float().cpu()
        rewrite_split_blocks(model)
        self.dense_comp = measure(model, 640, protected=protected_layers(model), flops_fn=ultralytics_gflops)
        self.dense_channels = layer_channels(model)
        round_to = self.cfg["round_to"]
        if self.mode != "finetune" and RunLatency.wanted(self.cfg):
            record = self.state.record if self.state is not None else self._latency_record  # resumed: its own
            self.latency = RunLatency(self.cfg, record, self.run_dir)
            self.latency.check_available()
            round_to = self.latency.round_to()
        by_latency = self.cfg["target"] == "latency" or RunLatency.measured_target(self.cfg)
        if self.mode != "finetune" and not by_latency and not self.budget.active:
            # a latency ratio is checked by the step, on the table; a budget's ratio is searched below the reachable
            probe = ChannelPruner(model, self.criterion, self.dense_comp, self.dense_channels, protected_layers(model),
                                  imgsz=640, target=self.cfg["target"], round_to=int(round_to),
                                  floor=self.cfg["floor"], tolerance=self.cfg["tolerance"],
                                  flops_fn=_flops_fn(self.dense_comp))
            reachable = probe.max_ratio()
            if reachable < self.cfg["ratio"] - self.cfg["tolerance"]:
                raise LDACError(f"ratio {self.cfg['ratio']} of {self.cfg['target']} is unreachable: with floor="
                                f"{self.cfg['floor']} and round_to={round_to} at most {reachable:.3f} can "
                                "be removed")
        self.prepared = model.to(self.device)

    def _round_imgsz(self, model: nn.Module) -> None:
        """Round ``imgsz`` up to a multiple of the model's max stride (its feature maps need it), with a notice."""
        from yolo_ldac.cfg import round_imgsz

        rounded = round_imgsz(int(self.cfg["imgsz"]), model)
        for d in (self.cfg, self.ldac_cfg, self.ultra):
            d["imgsz"] = rounded

    def _make_run_dir(self) -> Path:
        """Create and lock ``project/name`` (incremented unless exist_ok; a finished run is never reused); an
        unwritable ``project`` or a folder another process writes is one line (:mod:`yolo_ldac.utils.rundir`)."""
        from yolo_ldac.utils.rundir import open_run_dir

        project, name = self.cfg["project"], self.cfg["name"]
        if self.cfg["exist_ok"] and isinstance(self.source, (str, Path)) and Path(self.source).exists():
            run_dir, src = (Path(project) / name).resolve(), Path(self.source).resolve()
            if src.is_relative_to(run_dir):
                raise LDACError(f"the run directory {run_dir} holds the input model {src}: choose another name= or "
                                "exist_ok=False, an input model is never overwritten")
        run_dir, self._lock = open_run_dir(project, name, exist_ok=bool(self.cfg["exist_ok"]))
        return run_dir

    def run(self):
        """Run every phase of a new run; returns a :class:`yolo_ldac.schedule.result.CompressResult` (``None`` if stopped)."""
        from yolo_ldac.safe_load import policy

        with policy(bool(self.cfg.get("trusted", False))):  # every checkpoint opened during the run: safely
            return self._run()

    def _run(self):
        self._setup()
        self._check_inputs()
        # Inputs are valid: from here on the run directory exists, locked by this process until the run ends.
        run_dir = self._make_run_dir()
        try:
            return self._start(run_dir)
        finally:
            self._lock.release()

    def _start(self, run_dir: Path):
        source = str(self.source) if isinstance(self.source, (str, Path)) else type(self.source).__name__
        # The model the user passed (YOLOLDAC(model) hands it over apart from cfg, whose `model` is the default):
        # the state's and the report's settings record it, not the default.
        self.ldac_cfg["model"] = source
        phases = plan_phases(self.mode, self.cfg, bool(self.push.trains_before_first_step))
        self.state = RunState.new(run_dir, self.mode, self.ldac_cfg, source, phases)
        self.state.record.update(parts=self.parts, device=str(self.device), timings={"prune": 0.0, "train": 0.0},
                                 dense_complexity=self.dense_comp.as_dict(), dense_channels=self.dense_channels,
                                 labels=self.labels, lr_scale=self.lr_scale, task=self.task(),
                                 **self._latency_record)
        self.state.save()
        self.run_dir = run_dir
        if self.latency is not None:
            self.latency = RunLatency(self.cfg, self.state.record, run_dir)
        return self._loop()

    @classmethod
    def resume(cls, run_dir: str | Path | bool, overrides: dict | None = None, project: str | Path | None = None,
               callbacks: Callbacks | None = None, mode: str | None = None):
        """Continue the run in ``run_dir`` (``True``: the newest unfinished run under ``project``) from its last
        finished phase, with the settings it was started with; conflicting ``overrides`` raise."""
        if run_dir is True:
            run_dir = find_resumable(project or "runs/ldac")
        if not (Path(run_dir) / STATE_FILE).is_file():
            RunState.load(run_dir)  # raises: not a run directory
        from yolo_ldac.utils.rundir import lock_run_dir

        # One writer per run: a run that is still running (in another process) is not resumed a second time.
        lock = lock_run_dir(run_dir, hint="it is still running; resume it once it has stopped")
        try:
            return cls._resume_locked(run_dir, overrides, callbacks, mode)
        finally:
            lock.release()

    @classmethod
    def _resume_locked(cls, run_dir: str | Path, overrides: dict | None, callbacks: Callbacks | None,
                       mode: str | None):
        state = RunState.load(run_dir)
        if state.status == "finished":
            raise LDACError(f"the run in {state.run_dir} is finished: nothing to resume")
        if mode is not None and mode != state.mode:
            raise LDACError(f"{state.run_dir} is a {state.mode} run: resume it with `yolo-ldac {state.mode} "
                            f"resume={state.run_dir}`")
        overrides = dict(overrides or {})
        state.check_resume_settings(overrides)
        from yolo_ldac.cfg import get_cfg

        settings = dict(state.settings)
        for key in ("device", "workers", "verbose"):
            if overrides.get(key) is not None:
                settings[key] = overrides[key]
        settings.pop("mode", None)
        # Trust is the caller's to give, never the run directory's: its phase checkpoints load safely by default.
        settings["trusted"] = bool(overrides.get("trusted") or False)
        ultra_extra = state.record.get("ultralytics_overrides", {})
        cfg = get_cfg({**ultra_extra, **settings, "resume": False}, mode=state.mode)
        comp = cls(cfg, state.source, callbacks=callbacks)
        comp._task_hint = state.record.get("task")
        from yolo_ldac.safe_load import policy

        with policy(cfg["trusted"]):
            return comp._continue(state)

    def _continue(self, state: RunState):
        """Continue ``state`` (loaded by :meth:`resume`) from its next phase."""
        comp = self
        comp._setup()
        comp.state = state
        comp.run_dir = Path(state.run_dir)
        comp._resumed = True
        # The factor the run started with (lr_scale=auto resolved from the source it was started from).
        comp.lr_scale = float(state.record.get("lr_scale") or comp._resolve_lr_scale(state.source))
        if comp.mode != "finetune" and RunLatency.wanted(comp.cfg):
            comp.latency = RunLatency(comp.cfg, state.record, comp.run_dir)
        at = state.next_phase()
        state.resumed.append({"at_phase": at, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        state.status = "running"
        state.save()
        return comp._loop()

    def _loop(self):
        from ultralytics.utils import LOGGER, TQDM

        state = self.state
        # Ultralytics keys the run was started with (lr0, mosaic, ...), so a resumed run trains with them too.
        state.record.setdefault("ultralytics_overrides", {k: v for k, v in self.cfg.items()
                                                          if k not in self.ldac_cfg and k in self.ultra})
        with log_to_file(self.run_dir / LOG_FILE):
            LOGGER.info(f"yolo-ldac {self.mode}: {'resuming' if self._resumed else 'results to'} {self.run_dir}")
            self.callbacks.run("on_run_start", self)
            todo = [p for p in state.phases if p not in set(state.done_names)]
            bar = TQDM(todo, desc=f"{self.mode} phases", total=len(todo))
            try:
                for name in bar:
                    bar.set_description(f"{self.mode}: {name}")
                    self._run_phase(name)
                    if self.stop and state.next_phase() is not None:
                        state.status = "stopped"
                        state.save()
                        LOGGER.info(f"yolo-ldac: stopped after phase {name}; continue with `yolo-ldac {self.mode} "
                                    f"resume={self.run_dir}`")
                        break
            except BaseException as e:
                if state.status != "finished":
                    self._fail(e)
                if isinstance(e, KeyboardInterrupt):  # Ctrl-C: one line that says how to continue
                    raise Interrupted(f"interrupted in phase {state.current or '?'}; {state.path} records where; "
                                      f"continue with `yolo-ldac {self.mode} resume={self.run_dir}`") from e
                if isinstance(e, OSError):  # the disk, not the inputs: one line, and how to continue
                    raise LDACError(f"the run stopped in phase {state.current or '?'}: {_os_error(e)}; "
                                    f"{state.path} records where; {_os_remedy(e)} and continue with `yolo-ldac "
                                    f"{self.mode} resume={self.run_dir}`") from e
                raise
            finally:
                bar.close()
            self.callbacks.run("on_run_end", self)
        if state.status == "finished":
            self._print_summary()
        return self.result if state.status == "finished" else None

    def _print_summary(self) -> None:
        """End on what the run did: params, GFLOPs at the run's imgsz and mAP50-95 before -> after, and where
        ``best.pt`` is (on the terminal and at the end of ``log.txt``)."""
        from yolo_ldac.report import format_summary

        rep = getattr(self, "report", None) or self.result.report
        text = format_summary(rep, imgsz=int(self.cfg["imgsz"]))
        print(text, flush=True)
        try:
            with open(self.run_dir / LOG_FILE, "a", encoding="utf-8") as f:
                f.write(text + "\n")
        except OSError:  # the summary is on the terminal; a log that cannot take it is no reason to fail the run
            pass

    def _fail(self, e: BaseException) -> None:
        """A run that did not finish: state.json says where it stopped, and nothing is named like a finished model."""
        from ultralytics.utils import LOGGER

        state = self.state
        state.status = "failed"
        state.record["error"] = f"{type(e).__name__}: {e}"
        for path in finished_outputs(self.run_dir):
            path.unlink(missing_ok=True)
        try:
            state.save()
        except OSError as err:  # a full disk: the state saved at the phase's start still names it
            LOGGER.warning(f"could not record the failure in {state.path}: {_os_error(err)}")

    def _run_phase(self, name: str) -> None:
        state = self.state
        self.phase = name
        state.current = name
        state.save()
        seed_everything(state.phase_seed(name))
        if self.model_for_phase is None:
            self.model_for_phase = self._load_phase_model()
        self.callbacks.run("on_phase_start", self)
        t = time.perf_counter()
        kind = name.split(".")[-1] if "." in name else name
        rnd = int(name[5:name.index(".")]) if name.startswith("round") else None
        model, changed = getattr(self, f"_phase_{kind}")(self.model_for_phase, rnd)
        self.model_for_phase = model
        ckpt = self._save_phase_checkpoint(name, model) if changed else None
        self._time(self._timing_key(kind), time.perf_counter() - t)
        state.mark_done(name, ckpt, time.perf_counter() - t)
        self.callbacks.run("on_phase_end", self)
        if kind == "step" and (rnd == int(self.cfg["rounds"])
                               or f"round{rnd + 1}.push" in state.phases or f"round{rnd + 1}.step" in state.phases):
            self.callbacks.run("on_round_end", self)

    def _load_phase_model(self) -> nn.Module:
        if self.state.done and self.state.last_checkpoint() is not None:
            from yolo_ldac.safe_load import load_checkpoint

            ckpt = load_checkpoint(self.state.last_checkpoint())
            return ckpt["ema"].float().to(self.device)
        return getattr(self, "prepared", None)

    def _save_phase_checkpoint(self, name: str, model: nn.Module) -> Path:
        from yolo_ldac.checkpoint import save_ultralytics_checkpoint

        index = self.state.phase_index(name)
        path = self.run_dir / PHASE_DIR / f"{index:02d}-{name}.pt"
        return save_ultralytics_checkpoint(model, path, self.cfg, half=False,
                                           phase={"run": str(self.run_dir), "phase": name, "finished": False})

    # --- the phases: each returns (model, whether the model changed) -----------------------------------------
    def _phase_prepare(self, model, _rnd):
        if model is None:  # resumed before the prepare phase finished
            self._check_inputs()
            model = self.prepared
        return model, True

    def _phase_validate_base(self, model, _rnd):
        training = self.mode != "prune"
        want = self.data is not None and (self.cfg["val_steps"] or training)
        self.state.record["before_metrics"] = self.validate(model) if want else {}
        return model, False

    def _phase_push(self, model, rnd):
        ratio = self._ratio_at(rnd)
        self.criterion.start_step(rnd)
        self.push.prepare(model, self.pruner(model), ratio, self.calibration())
        plan = self.push.planned()
        # Recorded, so that a run resumed between this push and its step removes what the push prepared.
        self.state.record.setdefault("push_plans", {})[str(rnd)] = plan
        self.state.record.setdefault("push_info", {})[str(rnd)] = self.push.round_info()
        model = self._train(model, int(self.cfg["epochs_per_round"]), f"round{rnd}", final=False)
        return model, True

    def _phase_step(self, model, rnd):
        cfg, rec = self.cfg, self.state.record
        validating = bool(cfg["val_steps"]) and self.data is not None
        pushed = f"round{rnd}.push" in self.state.phases
        if rnd == 1 and not pushed:
            map_before = rec.get("before_metrics") or {}  # still the dense model validated before
        else:
            map_before = self.validate(model) if validating else {}
        self.criterion.start_step(rnd)
        plan = (rec.get("push_plans") or {}).get(str(rnd)) if pushed else None
        pruner = self.pruner(model)
        step = pruner.step(self._ratio_at(rnd), self.calibration(), planned=plan)
        measured = None
        if self.latency is not None:
            model, step, measured = self._measure_step(model, pruner, step, last=rnd == int(cfg["rounds"]))
        map_after = self.validate(model) if validating else {}
        self.last_step = step
        if rnd > 1 and self.rounds and pushed:
            self.rounds[-1]["map50_95_after_train"] = map_before.get("map50_95")
        self.rounds.append({
            "round": rnd, "target_ratio": round(step.target_ratio, 4), "ratio_reached": round(step.reached_ratio, 4),
            "map50_95_before_step": map_before.get("map50_95"), "map50_95_after_step": map_after.get("map50_95"),
            "flops_g": round(step.after.flops_g, 4), "params_m": round(step.after.params / 1e6, 4),
            "groups_pruned": step.groups_pruned, "scoring_s": round(step.seconds_scoring, 2),
            "planned_by_push": plan is not None,
            **({"latency_ms": measured["model_ms"], "speedup_measured": measured["speedup"],
                "latency_predicted_ms": round(step.after.latency_ms, 3) if step.after.latency_ms else None}
               if measured else {}),
            **self.criterion.round_info(), **((rec.get("push_info") or {}).get(str(rnd)) or {}),
        })
        self.callbacks.run("on_step_end", self)
        return model, True

    def _measure_step(self, model: nn.Module, pruner, step, last: bool):
        """Time the model after a step against the dense export; after the last step of a run with a measured
        target, prune on until it is met (:meth:`RunLatency.reach`). Returns the model, the step (its ``after``
        recounted when more steps were taken) and the measurement."""
        rec, data = self.state.record, self.cfg.get("data")
        dense_file = Path(rec["latency_dense_file"])
        if last and self.latency.measured_target(self.cfg):
            model, rec["latency_check"] = self.latency.reach(model, pruner, self.calibration(), dense_file, data)
            check = rec["latency_check"]
            measured = {"dense_ms": check["dense_ms"], "model_ms": check["final_ms"], "speedup": check["speedup"]}
            final = self.pruner(model)  # the model as reach() left it (extra steps, or one undone)
            after = final.measure()
            step = dataclasses.replace(step, after=after, reached_ratio=after.removed_vs(final.dense, final.target))
        else:
            measured = self.latency.time_against_dense(model, dense_file, data)
        rec["latency_last"] = measured
        return model, step, measured

    def _phase_finetune(self, model, _rnd):
        epochs = int(self.cfg["epochs"] if self.mode == "finetune" and self.cfg.get("epochs") is not None
                     else self.cfg["finetune_epochs"])
        return self._train(model, epochs, "finetune", final=True), True

    def _phase_validate_final(self, model, _rnd):
        self.state.record["after_metrics"] = self.validate(model) if self.data is not None else {}
        if self.rounds and "finetune" in self.state.phases:
            self.rounds[-1]["map50_95_after_train"] = self.state.record["after_metrics"].get("map50_95")
        return model, False

    # --- the budget (max_drop=, max_drop_rel=) ---------------------------------------------------------------
    def _base_map(self, model) -> float:
        rec = self.state.record
        if (rec.get("before_metrics") or {}).get("map50_95") is None:
            rec["before_metrics"] = self.validate(model)
        return float(rec["before_metrics"]["map50_95"])

    def _phase_search(self, model, _rnd):
        """Choose the ratio: the largest whose one-step retention point (compensate=lsq, no training) is within the
        budget (:func:`yolo_ldac.budget.search_ratio` over ``ratios=``, bisected to ``search_tol``)."""
        from ultralytics.utils import LOGGER

        from yolo_ldac.budget import nothing_meets_message, search_ratio
        from yolo_ldac.sweep import parse_ratios

        cfg, budget = self.cfg, self.budget
        base = self._base_map(model)
        floor = budget.floor(base)
        grid = parse_ratios(cfg["ratios"])
        reachable = self._reachable(model)
        if reachable is not None and grid[0] > reachable:
            raise LDACError(f"ratios={cfg['ratios']}: the smallest ratio {grid[0]:g} of {cfg['target']} is "
                            f"unreachable: with floor={cfg['floor']} at most {reachable:.3f} can be removed")
        grid = _clip_grid(grid, reachable)
        LOGGER.info(f"{budget.describe()}: searching the ratio of {cfg['target']} in [{grid[0]:g}, {grid[-1]:g}] "
                    f"with one-step retention points (lsq, no training): {budget.floor_text(base)}")
        t = time.perf_counter()
        res = search_ratio(lambda r: self._budget_point(model, r, base), floor, grid, tol=float(cfg["search_tol"]))
        record = {"max_drop": cfg.get("max_drop"), "max_drop_rel": cfg.get("max_drop_rel"), "base_map50_95": base,
                  "floor_map50_95": round(floor, 6), "grid": grid, "reachable": reachable,
                  "search_tol": cfg["search_tol"], "compensate": "lsq", "target": cfg["target"],
                  "search": res.as_dict(), "search_s": round(time.perf_counter() - t, 2), "ratio": res.chosen}
        self.state.record["budget"] = record
        if res.chosen is None:
            record["message"] = nothing_meets_message(budget, base, res.best, cfg["target"])
            self.state.save()
            raise LDACError(record["message"])
        LOGGER.info(f"{budget.describe()}: ratio {res.chosen:g} chosen: {res.reason}")
        return model, False

    def _reachable(self, model: nn.Module) -> float | None:
        """The largest ratio of the target the floors leave ``model`` (None with ``target=latency``: the latency
        table's ratio is checked by the step itself)."""
        if self.cfg["target"] == "latency":
            return None
        return float(self.pruner(copy.deepcopy(model)).max_ratio()) - float(self.cfg["tolerance"])

    def _budget_point(self, model: nn.Module, ratio: float, base: float | None = None) -> dict:
        """One point of a budget search: ``model`` pruned to ``ratio`` in one step (lsq, no training), without the
        pruned model and its widths; logged against ``base`` when given."""
        from ultralytics.utils import LOGGER

        rec = self.retention_point(ratio, compensate="lsq", model=model)
        rec.pop("model", None)
        rec.pop("widths", None)
        if base is not None:
            LOGGER.info(f"  search ratio {ratio:g}: reached {rec['reached_ratio']:.3f}, mAP50-95 {rec['map50_95']:.4f}"
                        f" ({100 * (rec['map50_95'] - base):+.2f} points)")
        return rec

    def _fixed_run_steps(self) -> int:
        rec = self.state.record
        return int(sum(v for k, v in (rec.get("optimizer_steps") or {}).items() if k not in (STEP_BACK, STEP_FORWARD)))

    def _step_back_candidates(self) -> list[dict]:
        """The phase checkpoints a step back may start from, largest ratio (then latest) first: each round's step
        (mAP after the step) and the next round's push (the same widths trained; mAP before the next step)."""
        done = {d["name"]: d.get("checkpoint") for d in self.state.done}
        out = []
        for i, r in enumerate(self.rounds):
            k = int(r["round"])
            if done.get(f"round{k}.step"):
                out.append({"phase": f"round{k}.step", "round": k, "ratio": r["ratio_reached"],
                            "map50_95": r.get("map50_95_after_step"), "checkpoint": done[f"round{k}.step"]})
            nxt = self.rounds[i + 1] if i + 1 < len(self.rounds) else None
            if nxt is not None and done.get(f"round{k + 1}.push"):
                out.append({"phase": f"round{k + 1}.push", "round": k, "ratio": r["ratio_reached"],
                            "map50_95": nxt.get("map50_95_before_step"), "checkpoint": done[f"round{k + 1}.push"]})
        order = {c["phase"]: self.state.phase_index(c["phase"]) for c in out}
        return sorted(out, key=lambda c: (c["ratio"], order[c["phase"]]), reverse=True)

    def _phase_check_budget(self, model, _rnd):
        """The finished model within the budget: kept. Missed: step back to the last phase checkpoint within it
        (the largest ratio), fine-tune that for at most half the run's training epochs (so a run with a step back
        trains at most 1.5 x a fixed-ratio run) and keep whichever of the two is within the budget; never a
        restart from the base."""
        from ultralytics.utils import LOGGER

        from yolo_ldac.budget import nothing_meets_message
        from yolo_ldac.safe_load import load_checkpoint

        rec, cfg, budget = self.state.record, self.cfg, self.budget
        b = rec["budget"]
        base = float(b["base_map50_95"])
        after = rec.get("after_metrics") or {}
        b["finished_map50_95"] = after.get("map50_95")
        if budget.met(base, after.get("map50_95")):
            b["step_back"] = None
            b["met"] = True
            return self._step_forward(model, base)
        LOGGER.warning(f"{budget.describe()}: the finished model misses the budget (mAP50-95 "
                       f"{after.get('map50_95', float('nan')):.4f} < {budget.floor(base):.4f}): stepping back to the "
                       "last phase checkpoint within it")
        chosen, tried = None, []
        for cand in self._step_back_candidates():
            if cand["map50_95"] is None:  # not validated during the run (val_steps=False): validate it now
                ckpt = load_checkpoint(Path(self.state.run_dir) / cand["checkpoint"])
                cand["map50_95"] = self.validate(ckpt["ema"].float().to(self.device))["map50_95"]
            tried.append({k: cand[k] for k in ("phase", "ratio", "map50_95")})
            if budget.met(base, cand["map50_95"]):
                chosen = cand
                break
        step = {"from": chosen and {k: chosen[k] for k in ("phase", "ratio", "map50_95", "checkpoint")},
                "tried": tried, "missed_map50_95": after.get("map50_95")}
        b["step_back"] = step
        if chosen is None:
            best = max([{"ratio": t["ratio"], "reached_ratio": t["ratio"], "map50_95": t["map50_95"]} for t in tried]
                       + [{"ratio": self.run_ratio(), "reached_ratio": self.rounds[-1]["ratio_reached"]
                           if self.rounds else self.run_ratio(), "map50_95": after.get("map50_95") or 0.0}],
                       key=lambda p: p["map50_95"])
            b["met"] = False
            b["message"] = nothing_meets_message(budget, base, best, cfg["target"],
                                                 what="the run's phase checkpoints and the finished model",
                                                 lead="the finished model misses the budget, and so does every "
                                                      "phase checkpoint of the run")
            self.state.save()
            raise LDACError(b["message"])
        self.state.save()  # a resumed run steps back from the same checkpoint
        ckpt = load_checkpoint(Path(self.state.run_dir) / chosen["checkpoint"])
        back = ckpt["ema"].float().to(self.device)
        # The last step's own checkpoint is what the fine-tuning that missed started from: kept as it is.
        epochs = 0 if chosen["phase"] == f"round{int(cfg['rounds'])}.step" else self._step_back_epochs()
        step["epochs"] = epochs
        kept, metrics = back, None
        if epochs > 0:
            trained = self._train(copy.deepcopy(back), epochs, STEP_BACK, final=True)
            metrics = self.validate(trained)
            step["trained_map50_95"] = metrics["map50_95"]
            if budget.met(base, metrics["map50_95"]):
                kept = trained
            else:
                metrics = None
        if metrics is None:  # the checkpoint as it was (its mAP was within the budget)
            metrics = self.validate(back)
        step["kept"] = "trained" if kept is not back else "checkpoint"
        rec["after_metrics"] = metrics
        b["met"] = budget.met(base, metrics["map50_95"])
        b["final_ratio"] = chosen["ratio"]
        LOGGER.info(f"{budget.describe()}: stepped back to {chosen['phase']} (ratio {chosen['ratio']:.3f}), "
                    f"{step['kept']}: mAP50-95 {metrics['map50_95']:.4f}")
        return kept, True

    def _step_forward(self, model: nn.Module, base: float):
        """The finished model within the budget: one more search from it (one-step lsq points at the ratios above
        its own, bisected), a prune step to the largest within the budget and fine-tuning for the epochs a step
        back would have had (at most half the run's); kept when it is within the budget too, else the finished
        model is. The search from the base cannot see what training recovers; a search from the trained model
        can (``step_forward=False`` skips it)."""
        from ultralytics.utils import LOGGER

        from yolo_ldac.budget import search_ratio
        from yolo_ldac.sweep import parse_ratios

        cfg, budget, b = self.cfg, self.budget, self.state.record["budget"]
        epochs = self._step_back_epochs()
        reached = float(self.rounds[-1]["ratio_reached"]) if self.rounds else self.run_ratio()
        tol = float(cfg["search_tol"])
        grid = [r for r in parse_ratios(cfg["ratios"]) if r > reached + tol]
        if cfg.get("step_forward", True) and epochs > 0 and grid:  # the floors checked only when there is a search
            grid = [r for r in _clip_grid(grid, self._reachable(model)) if r > reached + tol]
        if not cfg.get("step_forward", True) or epochs <= 0 or not grid:
            b["step_forward"] = None
            return model, False
        floor = budget.floor(base)
        LOGGER.info(f"{budget.describe()}: the finished model (ratio {reached:.3f}) is within the budget; searching "
                    f"from it for a larger ratio in [{grid[0]:g}, {grid[-1]:g}]")
        t = time.perf_counter()
        res = search_ratio(lambda r: self._budget_point(model, r), floor, grid, tol=tol)
        fwd = {"from_ratio": round(reached, 4), "from_map50_95": (self.state.record.get("after_metrics") or {}).get(
            "map50_95"), "search": res.as_dict(), "search_s": round(time.perf_counter() - t, 2), "ratio": res.chosen,
               "epochs": epochs}
        b["step_forward"] = fwd
        if res.chosen is None:
            fwd["kept"] = "finished"
            LOGGER.info(f"{budget.describe()}: no larger ratio keeps the budget in one step: the finished model kept")
            return model, False
        self.state.save()
        grown = copy.deepcopy(model)
        pruner = self.pruner(grown)
        step = pruner.step(res.chosen, self.calibration())
        trained = self._train(grown, epochs, STEP_FORWARD, final=True)
        metrics = self.validate(trained)
        fwd.update(reached_ratio=round(step.reached_ratio, 4), trained_map50_95=metrics["map50_95"],
                   flops_g=round(step.after.flops_g, 4))
        if not budget.met(base, metrics["map50_95"]):
            fwd["kept"] = "finished"
            LOGGER.info(f"{budget.describe()}: the step forward to {step.reached_ratio:.3f} trained to mAP50-95 "
                        f"{metrics['map50_95']:.4f}, outside the budget: the finished model kept")
            return model, False
        fwd["kept"] = "step_forward"
        self.state.record["after_metrics"] = metrics
        b["final_ratio"] = round(step.reached_ratio, 4)
        self.rounds.append({"round": len(self.rounds) + 1, "step_forward": True,
                            "target_ratio": round(step.target_ratio, 4), "ratio_reached": round(step.reached_ratio, 4),
                            "map50_95_after_train": metrics["map50_95"], "flops_g": round(step.after.flops_g, 4),
                            "params_m": round(step.after.params / 1e6, 4), "groups_pruned": step.groups_pruned})
        LOGGER.info(f"{budget.describe()}: stepped forward to ratio {step.reached_ratio:.3f}: mAP50-95 "
                    f"{metrics['map50_95']:.4f} after {epochs} epochs")
        return trained, True

    def _step_back_epochs(self) -> int:
        """Fine-tuning epochs of a step back: ``finetune_epochs``, at most half of the run's training epochs."""
        if self.mode != "compress":
            return 0
        run_epochs = int(self.cfg["finetune_epochs"]) + int(self.cfg["epochs_per_round"]) * sum(
            1 for p in self.state.phases if p.endswith(".push"))
        return min(int(self.cfg["finetune_epochs"]), run_epochs // 2)

    def _budget_report(self) -> dict | None:
        """The report's ``budget`` entry: what was searched, each point, why the ratio was chosen, the step back."""
        b = (self.state.record.get("budget") or None) if self.state is not None else None
        if not b:
            return None
        steps = self.state.record.get("optimizer_steps") or {}
        fixed = self._fixed_run_steps()
        out = dict(b)
        extra = int(steps.get(STEP_BACK, 0)) + int(steps.get(STEP_FORWARD, 0))
        out["optimizer_steps"] = {"run": fixed, "step_back": int(steps.get(STEP_BACK, 0)),
                                  "step_forward": int(steps.get(STEP_FORWARD, 0)),
                                  "x_fixed_run": round((fixed + extra) / fixed, 3)
                                  if fixed else None}
        return out

    def _phase_save(self, model, _rnd):
        from yolo_ldac.checkpoint import save_portable, save_ultralytics_checkpoint

        weights = self.run_dir / "weights"
        self._write_report(model)
        best = save_ultralytics_checkpoint(model, weights / "best.pt", self.cfg,
                                           phase={"run": str(self.run_dir), "phase": "save", "finished": True})
        if self.cfg["portable"]:
            save_portable(model, weights / "best")
        self._cleanup()
        self.state.status = "finished"
        self.state.record["best"] = str(best)
        return model, False

    # --- training --------------------------------------------------------------------------------------------
    def _train(self, model: nn.Module, epochs: int, name: str, final: bool) -> nn.Module:
        """Train ``model`` for ``epochs`` in ``run_dir/name`` with the push's trainer; resumes that phase's last
        epoch when a previous attempt left one."""
        from yolo_ldac.engine.trainer import EPOCH_LAST, SCHEDULE_FILE, trainer_class
        from yolo_ldac.tasks import task_of

        if epochs <= 0:  # nothing to train (finetune epochs=0: the model as prepared, e.g. remapped to new classes)
            return model
        phase_dir = self.run_dir / name
        last = phase_dir / "weights" / EPOCH_LAST
        resume_from = None
        if last.is_file():
            from yolo_ldac.safe_load import check_checkpoint, load_checkpoint

            # Ultralytics reopens the phase's other checkpoints fully unpickled (final_eval's strip_optimizer on
            # epoch_best.pt): every .pt there passes the safe check first, not only the one resumed from.
            for pt in sorted(last.parent.glob("*.pt")):
                check_checkpoint(pt)
            ckpt = load_checkpoint(last)
            if int(ckpt.get("epoch", -1)) + 1 >= epochs or ckpt.get("optimizer") is None:
                # The training itself had finished; only the phase's bookkeeping was lost.
                return self._trained_model(phase_dir, model)
            resume_from = last
        elif phase_dir.exists():
            shutil.rmtree(phase_dir)  # an attempt that finished no epoch: start the phase afresh
        n_params = sum(p.numel() for p in model.parameters())
        overrides = {k: v for k, v in self.ultra.items() if k not in {"project", "name", "exist_ok", "epochs"}}
        overrides.update(data=self.cfg["data"], epochs=epochs, project=str(self.run_dir), name=name, exist_ok=True,
                         device=self.cfg.get("device"))
        model.train()
        for p in model.parameters():
            p.requires_grad_(True)
        trainer = trainer_class(task_of(model) or "detect")(model=model, overrides=overrides, push=self.push,
                                                            final=final, resume_from=resume_from,
                                                            lr_scale=self.lr_scale)
        self.callbacks.attach_to_trainer(trainer)
        self.trainer = trainer
        t = time.perf_counter()
        # Optimizer steps (the EMA's update count, which a resumed phase restores) and the schedule of each phase.
        steps = self.state.record.setdefault("optimizer_steps", {})
        trainer.train()
        # After training: optimizer=auto has replaced lr0 and the optimizer name by what it chose (lr_scale applied).
        args, updates = trainer.args, int(getattr(getattr(trainer, "ema", None), "updates", 0) or 0)
        if getattr(trainer, "ddp", False) and (phase_dir / SCHEDULE_FILE).is_file():
            # Multi-GPU: Ultralytics trained in worker processes; rank 0 wrote what they did in the phase folder.
            from types import SimpleNamespace

            done = json.loads((phase_dir / SCHEDULE_FILE).read_text())
            args = SimpleNamespace(**{**vars(trainer.args), "lr0": done["lr0"], "optimizer": done["optimizer"]})
            updates = int(done["updates"])
        self.state.record.setdefault("train_schedule", {})[name] = {
            "epochs": epochs, "batch": int(trainer.batch_size), "nbs": int(args.nbs),
            "accumulate": int(max(round(args.nbs / max(trainer.batch_size, 1)), 1)),
            "lr0": float(args.lr0), "lrf": float(args.lrf), "optimizer": str(args.optimizer),
            "lr_scale": self.lr_scale,
            "warmup_epochs": float(args.warmup_epochs), "cos_lr": bool(args.cos_lr)}
        steps[name] = updates
        self._time("train", time.perf_counter() - t)
        trained = self._trained_model(phase_dir, model)
        n_trained = sum(p.numel() for p in trained.parameters())
        if n_trained != n_params:
            raise RuntimeError(f"the trainer trained a model with {n_trained} parameters, not the pruned one "
                               f"({n_params})")
        return trained

    def _trained_model(self, phase_dir: Path, model: nn.Module) -> nn.Module:
        from yolo_ldac.engine.trainer import EPOCH_BEST, EPOCH_LAST
        from yolo_ldac.safe_load import load_model

        weights = phase_dir / "weights" / EPOCH_BEST
        if not weights.is_file():
            weights = phase_dir / "weights" / EPOCH_LAST
        trained = load_model(weights)
        return trained.float().to(self.device)

    # --- the end ---------------------------------------------------------------------------------------------
    def _cleanup(self) -> None:
        """Leave one model in a finished run: remove phase checkpoints and every training phase's weights."""
        shutil.rmtree(self.run_dir / PHASE_DIR, ignore_errors=True)
        for d in self.state.done:
            d["checkpoint"] = None
        for name in self.state.phases:
            if name.endswith(".push") or name == "finetune":
                shutil.rmtree(self.run_dir / name.split(".")[0] / "weights", ignore_errors=True)
            if name == "check_budget":
                for folder in (STEP_BACK, STEP_FORWARD):
                    shutil.rmtree(self.run_dir / folder / "weights", ignore_errors=True)

    def _write_report(self, model: nn.Module) -> None:
        from datetime import datetime

        from yolo_ldac.nn.adapter import protected_layers
        from yolo_ldac.pruning.complexity import Complexity, layer_channels, measure
        from yolo_ldac.report import write_report

        rec, cfg = self.state.record, self.cfg
        dense = Complexity(**rec["dense_complexity"])
        after_comp = measure(model, 640, protected=protected_layers(model), flops_fn=_flops_fn(dense))
        after_channels = layer_channels(model)
        before = {**_metric_view(rec.get("before_metrics") or {}), **complexity_view(dense)}
        after = {**_metric_view(rec.get("after_metrics") or {}), **complexity_view(after_comp)}
        removed = {
            "flops_pct": round(100 * after_comp.removed_vs(dense, "flops"), 2),
            "params_pct": round(100 * after_comp.removed_vs(dense, "params"), 2),
            "channels_pct": round(100 * after_comp.removed_vs(dense, "channels"), 2),
        }
        layers = [{"name": n, "before": c, "after": after_channels.get(n, c)} for n, c in rec["dense_channels"].items()]
        ratio_free = self.mode == "finetune"
        timings = dict(rec.get("timings", {}))
        timings["total"] = round(sum(d["seconds"] for d in self.state.done), 2)
        report = {
            "model": self.state.source, "data": cfg.get("data"), "mode": self.mode,
            "method": None if ratio_free else cfg["method"], "parts": rec.get("parts"),
            "target": cfg["target"], "ratio": None if ratio_free else self.run_ratio(),
            "before": before, "after": after, "removed": removed, "layers": layers, "rounds": self.rounds,
            "timings": {k: round(v, 2) for k, v in timings.items()},
            "timings_within": [k for k in ("train", "validate", "calibration_data") if k in timings],
            "optimizer_steps": {**rec.get("optimizer_steps", {}),
                                "total": int(sum(rec.get("optimizer_steps", {}).values()))},
            "train_schedule": rec.get("train_schedule", {}),
            "phases": [dict(d) for d in self.state.done] + [{"name": "save"}],
            "resumed": list(self.state.resumed), "device": rec.get("device"),
            "paths": {"run_dir": str(self.run_dir), "best": str(self.run_dir / "weights" / "best.pt"),
                      "portable": str(self.run_dir / "weights" / "best.safetensors") if cfg["portable"] else None,
                      "state": str(self.state.path), "log": str(self.run_dir / LOG_FILE)},
            "settings": {k: v for k, v in self.ldac_cfg.items() if k not in {"mode"}},
            "labels": rec.get("labels"),
            "latency": self._latency_report(after_comp, dense),
            "budget": self._budget_report(),
            "flops_imgsz": 640, "task": rec.get("task", "detect"),
            "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        }
        write_report(self.run_dir, report)
        if cfg["plots"] and self.criterion is not None:
            names = self.data["names"] if self.data else None
            plots = [*self.criterion.write_plots(self.run_dir, self.rounds, names),
                     *self.push.write_plots(self.run_dir, self.rounds, names)]
            report["plots"] = [str(p) for p in plots]
        self.report = report

    def _latency_report(self, after_comp, dense) -> dict | None:
        """The report's ``latency`` entry from the last step's measurement (fine-tuning does not change widths)."""
        rec = self.state.record
        last = rec.get("latency_last")
        if not last or self.latency is None:
            return None
        check = rec.get("latency_check") or {}
        # the last step's prediction: fine-tuning does not change widths
        predicted = self.rounds[-1].get("latency_predicted_ms") if self.rounds else None
        return {"runtime": self.latency.runtime, "precision": self.latency.precision,
                "threads": self.latency.threads, "imgsz": self.latency.imgsz, "dense_ms": last["dense_ms"],
                "compressed_ms": last["model_ms"], "speedup": last["speedup"],
                "flops_speedup": round(dense.flops_g / max(after_comp.flops_g, 1e-12), 3),
                "predicted_ms": predicted, "target_ms": check.get("target_ms"), "met": check.get("met"),
                "extra_steps": check.get("steps"), "round_to": rec.get("round_to", self.cfg["round_to"]),
                "table": rec.get("latency_table"),
                "plot": str(self.run_dir / "latency.png")
                if self.cfg["plots"] and any(r.get("latency_ms") is not None and (
                    r.get("map50_95_after_step") is not None or r.get("map50_95_after_train") is not None)
                    for r in self.rounds) else None}

    @property
    def result(self):
        from yolo_ldac.schedule.result import CompressResult

        rep = getattr(self, "report", None)
        if rep is None:  # the save phase ran in an earlier process: read its report back
            import json

            rep = json.loads((self.run_dir / "report.json").read_text(encoding="utf-8"))
        best = self.run_dir / "weights" / "best.pt"
        portable = self.run_dir / "weights" / "best.safetensors"
        return CompressResult(self.run_dir, best, portable if portable.exists() else None, rep["before"],
                              rep["after"], rep["removed"], rep["layers"], rep.get("rounds", []),
                              rep.get("timings", {}), rep, resumed=bool(rep.get("resumed")))


def finished_outputs(run_dir: Path) -> list[Path]:
    """The files of a run directory that only a finished run may hold (the model and its report).

    Example:
        >>> [p.name for p in finished_outputs(Path("run"))][:2]
        ['best.pt', 'best.safetensors']
    """
    weights = Path(run_dir) / "weights"
    return [weights / "best.pt", weights / "best.safetensors", weights / "best.json",
            *(Path(run_dir) / f"report.{ext}" for ext in ("json", "md"))]


def _os_error(e: OSError) -> str:
    where = f": {e.filename}" if e.filename else ""
    return f"{e.strerror or e}{where}"


def _os_remedy(e: OSError) -> str:
    """What to do about ``e`` before resuming, by its errno (the message already names the error itself).

    Example:
        >>> import errno
        >>> _os_remedy(OSError(errno.ENOSPC, "No space left on device"))
        'free space'
    """
    import errno

    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free space"
    if e.errno in (errno.EACCES, errno.EPERM):
        return "make the run directory writable"
    if e.errno == errno.EROFS:
        return "make the file system writable (it is read-only)"
    return "fix that"


def _metric_view(m: dict) -> dict:
    """The task's mAP50-95 and mAP50, and the box mAP a segment or pose model also has."""
    view = {"map50_95": m.get("map50_95"), "map50": m.get("map50")}
    view.update({k: m[k] for k in ("box_map50_95", "box_map50") if k in m})
    return view


def complexity_view(c) -> dict:
    """``{"flops_g", "params_m", "channels"}`` of a :class:`Complexity` (FLOPs in G, params in M)."""
    return {"flops_g": round(c.flops_g, 4), "params_m": round(c.params / 1e6, 4), "channels": c.channels}


__all__ = ["EVENTS", "Callbacks", "Compressor", "plan_phases", "select_device"]


def _flops_fn(dense):
    """Ultralytics' FLOPs counter when the run's dense count was made with it (runs started before it was
    used keep the analytic count their ratios were planned with, so a resumed run compares like with like)."""
    from yolo_ldac.nn.adapter import ultralytics_gflops

    return ultralytics_gflops if getattr(dense, "counter", "analytic") == "ultralytics" else None
