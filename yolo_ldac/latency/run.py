"""The latency side of a compress or prune run: ``round_to=auto``, ``target=latency``, the measured targets
``speedup=`` / ``latency_ms=``, and the measured latency in the report.

Everything measured here runs on this machine in ``runtime=`` at ``precision=`` and the first of ``threads=``, at
the run's ``imgsz``: the dense model (as prepared, split blocks rewritten) is exported once and kept in
``<run>/latency/``; a model is timed interleaved with it (:func:`yolo_ldac.deploy.benchmark.time_interleaved`), so a
slow spell of a shared machine lands on both.

Example:
    >>> RunLatency.wanted({"target": "latency", "speedup": None, "latency_ms": None, "round_to": 8})
    True
"""

from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path
from typing import Any

import torch.nn as nn

from yolo_ldac.errors import LDACError
from yolo_ldac.utils.log import LOGGER

EXPORT_FORMAT = {"onnxruntime": "onnx", "openvino": "openvino"}
TIMING_RUNS, TIMING_WARMUP, TIMING_ROUNDS = 30, 5, 5
CALIB_IMAGES = 32  # int8 calibration images for the timing exports (latency does not depend on the scales)
EXTRA_STEPS = 4  # prune steps after the last round while the measured target is not met


def _first_thread(threads: Any) -> int:
    from yolo_ldac.deploy.benchmark import parse_threads

    return parse_threads(threads)[0]


class RunLatency:
    """What a run measures about latency (module docstring); its state lives in the run's record."""

    def __init__(self, cfg: dict, record: dict, run_dir: Path | None):
        self.cfg, self.record, self.run_dir = cfg, record, run_dir
        self.runtime, self.precision = cfg["runtime"], cfg["precision"]
        self.threads = _first_thread(cfg["threads"])
        self.imgsz = int(cfg["imgsz"])
        self._model = None  # the LatencyModel once built or read back (latency_model())

    @staticmethod
    def wanted(cfg: dict) -> bool:
        """Whether the run measures latency at all."""
        return cfg["target"] == "latency" or cfg.get("speedup") is not None or cfg.get("latency_ms") is not None \
            or cfg["round_to"] == "auto"

    @staticmethod
    def measured_target(cfg: dict) -> bool:
        return cfg.get("speedup") is not None or cfg.get("latency_ms") is not None

    def check_available(self) -> None:
        from yolo_ldac.deploy.runtimes import check_runtime
        from yolo_ldac.export import check_export_requirements

        fmt = EXPORT_FORMAT[self.runtime]
        check_runtime(fmt)
        check_export_requirements(fmt, self.precision)

    # --- round_to=auto --------------------------------------------------------------------------------------
    def round_to(self) -> int:
        """``round_to`` as a number (``auto`` measured once per machine and runtime setting, then cached)."""
        if self.cfg["round_to"] != "auto":
            return int(self.cfg["round_to"])
        if "round_to" in self.record:
            return int(self.record["round_to"])
        from yolo_ldac.latency.model import measure_multiple

        m, rec = measure_multiple(self.runtime, self.precision, self.threads)
        self.record["round_to"] = int(m)
        self.record["round_to_auto"] = {"runtime": self.runtime, "precision": self.precision,
                                        "threads": self.threads, "multiple": int(m), "cache": rec.get("path")}
        return int(m)

    # --- exports and timings --------------------------------------------------------------------------------
    def export(self, model: nn.Module, folder: Path, stem: str, data: str | None) -> Path:
        """``model`` exported to the runtime at the precision (unchecked: only its speed is wanted here)."""
        from yolo_ldac.checkpoint import save_ultralytics_checkpoint
        from yolo_ldac.export import export_checked

        folder.mkdir(parents=True, exist_ok=True)
        pt = save_ultralytics_checkpoint(copy.deepcopy(model).cpu(), folder / f"{stem}.pt",
                                         {"imgsz": self.imgsz, "data": data}, half=False)
        res = export_checked(pt, format=EXPORT_FORMAT[self.runtime], imgsz=self.imgsz,
                             int8=self.precision == "int8", data=data, parity=False, calib_images=CALIB_IMAGES)
        pt.unlink(missing_ok=True)
        return res.path

    def dense_file(self, dense: nn.Module, data: str | None) -> Path:
        """The dense model's export (made once per run, in ``<run>/latency/``)."""
        path = self.record.get("latency_dense_file")
        if path and Path(path).exists():
            return Path(path)
        if self.run_dir is None:
            raise LDACError("latency measurement needs the run directory")
        out = self.export(dense, self.run_dir / "latency", "dense", data)
        self.record["latency_dense_file"] = str(out)
        return out

    def time_against_dense(self, model: nn.Module | None, dense_path: Path, data: str | None) -> dict:
        """Measured ms of the dense export and of ``model``'s (interleaved), and the speed-up."""
        import numpy as np

        from yolo_ldac.deploy.benchmark import time_interleaved
        from yolo_ldac.deploy.parity import default_images, preprocess_image

        x = preprocess_image(default_images()[0], (self.imgsz, self.imgsz)).astype(np.float32)
        with tempfile.TemporaryDirectory(prefix="yolo-ldac-latency-", dir=dense_path.parent) as tmp:
            paths = {"dense": dense_path}
            if model is not None:
                paths["model"] = self.export(model, Path(tmp), "model", data)
            stats = time_interleaved(paths, x, [self.threads], TIMING_RUNS, TIMING_WARMUP, rounds=TIMING_ROUNDS)
        t = str(self.threads)
        out = {"dense_ms": round(stats["dense"][t]["median_ms"], 3)}
        if model is not None:
            out["model_ms"] = round(stats["model"][t]["median_ms"], 3)
            out["speedup"] = round(out["dense_ms"] / out["model_ms"], 3)
        return out

    # --- the latency model ----------------------------------------------------------------------------------
    def latency_model(self, dense: nn.Module, data: str | None):
        """The run's :class:`~yolo_ldac.latency.model.LatencyModel` (built once: table from the cache or measured,
        the dense model's measured latency), kept in the record so that a resumed run uses the same one."""
        from yolo_ldac.latency.model import LatencyModel, build_table

        if self._model is not None:
            return self._model
        if "latency_model" in self.record:
            self._model = LatencyModel.from_json(self.record["latency_model"])
            return self._model
        t = time.perf_counter()
        table, keys, cached = build_table(dense, self.runtime, self.precision, self.imgsz, self.threads,
                                          multiple=self.round_to())
        dense_ms = self.time_against_dense(None, self.dense_file(dense, data), data)["dense_ms"]
        lm = LatencyModel.of(table, keys, dense_ms, dense)
        self.record["latency_model"] = lm.to_json()
        self._model = lm
        self.record["latency_table"] = {"cached": cached, "seconds": round(table.seconds, 2),
                                        "setup_seconds": round(time.perf_counter() - t, 2),
                                        "classes": len(table.grids)}
        LOGGER.info(f"latency model: {self.runtime} {self.precision}, {self.threads} thread(s), {self.imgsz} px: "
                    f"dense {dense_ms:.2f} ms measured; table of {len(table.grids)} layer shapes "
                    + ("from the cache" if cached else f"measured in {table.seconds:.0f} s"))
        return lm

    def target_ms(self) -> float | None:
        """The measured latency the run must reach (``speedup=`` or ``latency_ms=``), once the dense is measured."""
        lm = self.record.get("latency_model")
        if self.cfg.get("latency_ms") is not None:
            return float(self.cfg["latency_ms"])
        if self.cfg.get("speedup") is not None and lm is not None:
            return float(lm["dense_ms"]) / float(self.cfg["speedup"])
        return None

    def planned_ratio(self) -> float:
        """The predicted-latency ratio the rounds plan to (the measured loop corrects it after the last step)."""
        lm = self.record["latency_model"]
        target = self.target_ms()
        if target is None:
            return float(self.cfg["ratio"])
        ratio = 1.0 - target / float(lm["dense_ms"])
        if not 0.0 < ratio <= 0.95:
            raise LDACError(f"the measured target ({target:.2f} ms against the dense {lm['dense_ms']:.2f} ms in "
                            f"{self.runtime} {self.precision}) asks for a latency ratio of {ratio:.3f}: it must be in "
                            "(0, 0.95]")
        return ratio

    def aimed_ratio(self, reached: float, meas: dict) -> float:
        """The predicted-latency ratio the run should end at, re-aimed by a step's measurement: after a step the
        table predicted ``1 - reached`` of the dense latency left and the runtime measured ``model_ms / dense_ms``;
        what the target leaves is scaled by their quotient, so a table that is off by a constant factor (another
        load on the machine, a runtime that fuses what the probes time apart) is corrected before the last step,
        not after it, where a model pruned past the target cannot be given its channels back.

        Example:
            >>> lat = RunLatency({"speedup": 2.0, "runtime": "onnxruntime", "precision": "fp32", "imgsz": 64,
            ...                   "threads": 1}, {}, None)
            >>> lat.aimed_ratio(0.25, {"dense_ms": 10.0, "model_ms": 6.0})  # 0.75 predicted, 0.6 measured left
            0.375
        """
        left_predicted = max(1e-6, 1.0 - float(reached))
        left_measured = max(1e-6, meas["model_ms"] / meas["dense_ms"])
        return round(1.0 - self._wanted_ms(meas) / meas["dense_ms"] * left_predicted / left_measured, 6)

    def _met(self, meas: dict) -> bool:
        """``speedup=``: the interleaved speed-up against the dense export; ``latency_ms=``: the model's ms."""
        if self.cfg.get("speedup") is not None:
            return meas["speedup"] >= float(self.cfg["speedup"])
        return meas["model_ms"] <= float(self.cfg["latency_ms"])

    def _wanted_ms(self, meas: dict) -> float:
        """The model ms that meets the target, given this measurement's dense ms."""
        if self.cfg.get("speedup") is not None:
            return meas["dense_ms"] / float(self.cfg["speedup"])
        return float(self.cfg["latency_ms"])

    def reach(self, model: nn.Module, pruner, batches: list, dense_path: Path, data: str | None) -> tuple[nn.Module, dict]:
        """After the last step: time the model against the dense export; while the measured target is not met,
        prune on (at most :data:`EXTRA_STEPS` steps, each aimed by the last measurement: the predicted ratio scaled
        by how far the measured latency is from the target); a step that makes the model slower is not taken.
        Returns the model and the record of what was measured."""
        meas = self.time_against_dense(model, dense_path, data)
        log = [{"ratio": round(pruner.measure().removed_vs(pruner.dense, "latency"), 4), **meas}]
        k = 0
        most = None  # the largest predicted ratio the floors allow, found when first needed
        while not self._met(meas) and k < EXTRA_STEPS:
            reached = log[-1]["ratio"]
            aim = 1.0 - (1.0 - reached) * self._wanted_ms(meas) / meas["model_ms"]
            if most is None:
                most = float(pruner.max_ratio()) - float(getattr(pruner, "tolerance", 0.0))
            aim = min(0.95, most, max(aim, reached + 0.01))
            if aim <= reached + 1e-3:
                LOGGER.warning(f"measured target not met and nothing is left to prune under the floors (predicted "
                               f"latency ratio {reached:.3f} of at most {most:.3f})")
                break
            backup = copy.deepcopy(model)
            try:
                step = pruner.step(aim, batches)
            except LDACError as e:  # nothing left to prune under the floors
                LOGGER.warning(f"measured target not met and no further step possible ({e})")
                break
            new = self.time_against_dense(model, dense_path, data)
            entry = {"ratio": round(step.reached_ratio, 4), **new}
            if new["model_ms"] / new["dense_ms"] >= meas["model_ms"] / meas["dense_ms"]:
                entry["taken"] = False
                log.append(entry)
                model = backup
                LOGGER.info(f"the step to a latency ratio of {aim:.3f} measured {new['speedup']:.2f}x, not faster "
                            f"than {meas['speedup']:.2f}x: not taken")
                break
            log.append(entry)
            meas = new
            k += 1
        met = self._met(meas)
        target = self._wanted_ms(meas)
        record = {"target_ms": round(target, 3), "met": bool(met), "steps": log,
                  "final_ms": meas["model_ms"], "dense_ms": meas["dense_ms"], "speedup": meas["speedup"]}
        (LOGGER.info if met else LOGGER.warning)(
            f"measured {meas['model_ms']:.2f} ms against the dense {meas['dense_ms']:.2f} ms ({meas['speedup']:.2f}x) "
            f"in {self.runtime} {self.precision}: target "
            + (f"{self.cfg['speedup']:g}x" if self.cfg.get("speedup") is not None else f"{target:.2f} ms")
            + (" met" if met else " NOT met"))
        return model, record
