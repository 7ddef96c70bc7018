"""The latency model of a run: the measured table of the user's runtime (built on this machine, or read from its
cache), the width multiple ``round_to=auto`` picks, and the predicted latency of a model at its current widths.

Predicted latency = the dense model's measured latency + the change, convolution by convolution, that the table
gives between its dense and current widths. Everything else (concats, upsampling, the head's decoding) is held at
its dense cost, so the prediction errs on the slow side; the run's measured check (``speedup=`` / ``latency_ms=``)
decides.

Example:
    >>> lm = LatencyModel.build(model, runtime="openvino", precision="int8", imgsz=640, threads=1)  # doctest: +SKIP
    >>> lm(model)  # doctest: +SKIP
    29.8
"""

from __future__ import annotations

import hashlib
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.nn as nn

from yolo_ldac.latency.table import ConvShape, LatencyTable, cache_key
from yolo_ldac.utils.log import LOGGER


def cache_dir() -> Path:
    """``$YOLO_LDAC_HOME/latency``, or ``~/.cache/yolo-ldac/latency``: tables and width measurements, per machine."""
    home = os.environ.get("YOLO_LDAC_HOME") or Path.home() / ".cache" / "yolo-ldac"
    return Path(home).expanduser() / "latency"


def _cpu_flags_hash() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("flags", "features")):
                    return hashlib.sha256(" ".join(sorted(line.split(":", 1)[1].split())).encode()).hexdigest()[:12]
    except OSError:
        pass
    return platform.machine()


def fingerprint(runtime: str) -> dict[str, Any]:
    """The machine and the versions a measurement holds for: CPU model and instruction-set flags, the runtime's
    version and torch's (which writes the probe graphs). A table measured under another fingerprint is not reused."""
    from yolo_ldac.utils.env import _cpu_model, _version

    dist = {"onnxruntime": "onnxruntime", "openvino": "openvino"}[runtime]
    return {"cpu": _cpu_model(), "cpu_flags": _cpu_flags_hash(), "machine": platform.machine(),
            "runtime": runtime, "runtime_version": _version(dist), "torch": _version("torch"),
            "nncf": _version("nncf") if runtime == "openvino" else None}


def measure_multiple(runtime: str, precision: str, threads: int = 1, cache: Path | None = None,
                     refresh: bool = False) -> tuple[int, dict]:
    """``round_to=auto``: the width multiple this runtime and precision want on this machine, measured
    (:func:`yolo_ldac.latency.probe.width_staircase`), cached under the fingerprint; returns it and the record."""
    from yolo_ldac.latency.probe import measured_multiple, width_staircase
    from yolo_ldac.utils.io import atomic_write_json, read_json

    fp = fingerprint(runtime)
    key = cache_key(fp, [], {"what": "multiple", "runtime": runtime, "precision": precision, "threads": threads})
    path = (cache or cache_dir()) / f"multiple-{runtime}-{precision}-t{threads}-{key}.json"
    if path.is_file() and not refresh:
        rec = read_json(path)
        return int(rec["multiple"]), rec
    t = time.perf_counter()
    stairs = width_staircase(runtime, precision, threads)
    rec = {"multiple": measured_multiple(stairs), "runtime": runtime, "precision": precision, "threads": threads,
           "fingerprint": fp, "staircases": stairs, "seconds": round(time.perf_counter() - t, 2), "path": str(path)}
    atomic_write_json(path, rec)
    LOGGER.info(f"round_to=auto: {runtime} {precision} ({threads} thread{'s' if threads > 1 else ''}) wants "
                f"multiples of {rec['multiple']} on this machine ({rec['seconds']:.0f} s; cached in {path})")
    return rec["multiple"], rec


def build_table(model: nn.Module, runtime: str, precision: str, imgsz: int = 640, threads: int = 1,
                multiple: int = 16, points: int = 6, runs: int = 10, cache: Path | None = None,
                refresh: bool = False, progress: bool = True) -> tuple[LatencyTable, dict[str, str], bool]:
    """The latency table of ``model``'s shape classes (measured here, or read from the cache when the fingerprint,
    the setting and the classes match), the map conv name -> shape key, and whether it came from the cache."""
    from yolo_ldac.latency.probe import conv_shapes, normalise_runtime, time_shape

    runtime, precision = normalise_runtime(runtime, precision)
    shapes = conv_shapes(model, imgsz)
    classes = {s.key(): s for s in shapes.values()}
    fp = fingerprint(runtime)
    setting = {"runtime": runtime, "precision": precision, "imgsz": imgsz, "threads": threads, "multiple": multiple,
               "points": points, "runs": runs}
    key = cache_key(fp, list(classes.values()), setting)
    path = (cache or cache_dir()) / f"table-{runtime}-{precision}-{imgsz}-t{threads}-{key}.json"
    layer_keys = {name: s.key() for name, s in shapes.items()}
    if path.is_file() and not refresh:
        try:
            return LatencyTable.load(path), layer_keys, True
        except (ValueError, KeyError, OSError) as e:
            LOGGER.warning(f"latency table {path} could not be read ({e}); measuring it again")
    t = time.perf_counter()
    table = LatencyTable(runtime, precision, imgsz, threads, multiple, fp)
    items = list(classes.items())
    if progress:
        from tqdm import tqdm

        items = tqdm(items, desc=f"latency table ({runtime} {precision}, {threads} thread{'s' * (threads > 1)})",
                     unit="shape")
    for k, shape in items:
        table.grids[k] = time_shape(shape, runtime, precision, threads, multiple, points, runs)
    table.seconds = time.perf_counter() - t
    table.save(path)
    return table, layer_keys, False


@dataclass
class LatencyModel:
    """Predicted latency (ms) of a model from its convolutions' widths (module docstring)."""

    table: LatencyTable
    layer_keys: dict[str, str]  # conv name -> shape class key, from the dense model
    dense_ms: float  # measured latency of the dense model in the runtime
    dense_layers_ms: float  # the table's sum over the dense model's convolutions

    @classmethod
    def of(cls, table: LatencyTable, layer_keys: dict[str, str], dense_ms: float, dense: nn.Module) -> "LatencyModel":
        """The model of ``dense`` (measured at ``dense_ms`` as a whole) on ``table``."""
        lm = cls(table, layer_keys, float(dense_ms), 0.0)
        lm.dense_layers_ms = lm.layers_ms(dense)
        return lm

    def conv_ms(self, name: str, cin: int, cout: int) -> float:
        """The table's latency of convolution ``name`` at ``cin`` x ``cout`` (0 for one the table does not hold)."""
        key = self.layer_keys.get(name)
        grid = self.table.grids.get(key) if key else None
        return grid(cin, cout) if grid is not None else 0.0

    def layers_ms(self, model: nn.Module) -> float:
        return sum(self.conv_ms(n, m.in_channels, m.out_channels) for n, m in model.named_modules()
                   if isinstance(m, nn.Conv2d))

    def __call__(self, model: nn.Module) -> float:
        return self.dense_ms - self.dense_layers_ms + self.layers_ms(model)

    def to_json(self) -> dict:
        return {"dense_ms": self.dense_ms, "dense_layers_ms": self.dense_layers_ms, "layer_keys": self.layer_keys,
                "table": self.table.to_json()}

    @classmethod
    def from_json(cls, d: dict) -> "LatencyModel":
        return cls(LatencyTable.from_json(d["table"]), dict(d["layer_keys"]), float(d["dense_ms"]),
                   float(d["dense_layers_ms"]))
