"""A latency table: measured milliseconds of every convolution shape of a model at a grid of its input and output
widths, for one runtime, precision, input size and thread count; interpolated in between. Pure numpy (no torch,
no Ultralytics): what the planner and the tests read.

A layer is keyed by its *shape class* (kernel, stride, padding, dilation, depthwise or not, input height and width,
and the dense widths it can shrink from); every convolution of that class shares the grid. A depthwise convolution's
widths move together, so its grid is one-dimensional.

Example:
    >>> t = LayerGrid(cin=[8, 16], cout=[8, 16], ms=[[1.0, 2.0], [2.0, 4.0]])
    >>> t(12, 16)
    3.0
"""

from __future__ import annotations

import bisect
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from yolo_ldac.errors import LDACError

TABLE_VERSION = 2  # 2: a sacrificial first probe branch, the narrower-never-slower envelope
RUNTIMES = {"onnxruntime": ("fp32",), "openvino": ("fp32", "int8")}
RUNTIME_ALIASES = {"onnx": "onnxruntime", "ort": "onnxruntime", "ov": "openvino"}


def normalise_runtime(runtime: str, precision: str) -> tuple[str, str]:
    """``(runtime, precision)`` checked against what a table can be measured for, with one-line errors."""
    rt = RUNTIME_ALIASES.get(str(runtime).strip().lower(), str(runtime).strip().lower())
    prec = str(precision).strip().lower()
    if rt not in RUNTIMES:
        raise LDACError(f"runtime={runtime!r}: latency tables are measured for {', '.join(RUNTIMES)} "
                        "(litert, ncnn and tensorrt are not measured yet)")
    if prec not in RUNTIMES[rt]:
        raise LDACError(f"runtime={rt} precision={precision!r}: measured precisions are {', '.join(RUNTIMES[rt])}")
    return rt, prec


@dataclass(frozen=True)
class ConvShape:
    """What a convolution's latency depends on besides its widths."""

    k: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    depthwise: bool
    hw: tuple[int, int]  # input height, width
    cin: int  # dense widths: the grid spans [multiple, dense]
    cout: int

    def key(self) -> str:
        """A stable text key (JSON object keys must be strings)."""
        return "k{}x{}_s{}x{}_p{}x{}_d{}x{}_{}_in{}x{}_c{}-{}".format(
            *self.k, *self.stride, *self.padding, *self.dilation, "dw" if self.depthwise else "full", *self.hw,
            self.cin, self.cout)


def grid_widths(dense: int, multiple: int, points: int) -> list[int]:
    """At most ``points`` widths from ``multiple`` to ``dense`` on multiples of ``multiple`` (``dense`` always in),
    evenly spaced; a width below ``multiple`` (a 1- or 3-channel layer) stays as it is.

    Example:
        >>> grid_widths(256, 16, 5)
        [16, 80, 144, 192, 256]
        >>> grid_widths(3, 16, 5)
        [3]
    """
    if dense <= multiple:
        return [dense]
    steps = list(range(multiple, dense + 1, multiple))
    if steps[-1] != dense:
        steps.append(dense)
    if len(steps) <= points:
        return steps
    idx = np.linspace(0, len(steps) - 1, points).round().astype(int)
    return sorted({steps[i] for i in idx})


def _bracket(values: list[int], x: float) -> tuple[int, int, float]:
    """Indices of the grid values around ``x`` and the weight of the upper one (clamped at the ends)."""
    if x <= values[0] or len(values) == 1:
        return 0, 0, 0.0
    if x >= values[-1]:
        n = len(values) - 1
        return n, n, 0.0
    j = bisect.bisect_left(values, x)
    lo, hi = values[j - 1], values[j]
    return j - 1, j, (x - lo) / (hi - lo)


@dataclass
class LayerGrid:
    """Measured ms of one shape class at ``cin`` x ``cout`` widths (``cout`` alone for a depthwise one)."""

    cin: list[int]
    cout: list[int]
    ms: list[list[float]]  # [len(cin)][len(cout)]; a depthwise grid has one row, read at cout

    def __call__(self, cin: float, cout: float) -> float:
        """Bilinear interpolation of the grid (clamped at its edges; linear in each width between grid points,
        where the runtimes' cost is close to linear once widths are multiples of their block)."""
        ms = np.asarray(self.ms, dtype=float)
        if len(self.cin) == 1:
            i0 = i1 = 0
            wi = 0.0
        else:
            i0, i1, wi = _bracket(self.cin, cin)
        j0, j1, wj = _bracket(self.cout, cout)
        top = ms[i0, j0] * (1 - wj) + ms[i0, j1] * wj
        bottom = ms[i1, j0] * (1 - wj) + ms[i1, j1] * wj
        return float(top * (1 - wi) + bottom * wi)


def narrower_never_slower(ms: list[list[float]]) -> list[list[float]]:
    """The grid with every point lowered to the fastest point at equal or larger widths (a suffix minimum over both
    axes, widths ascending): a runtime can always run a narrower convolution as the wider one with zero channels,
    so a narrower point measured slower (a noisy timing, a node that absorbed a reorder) is noise, and left in it
    would tell the allocator that pruning there costs time.

    Example:
        >>> narrower_never_slower([[5.0, 2.0, 3.0], [1.0, 2.5, 4.0]])
        [[1.0, 2.0, 3.0], [1.0, 2.5, 4.0]]
    """
    out = [list(map(float, row)) for row in ms]
    for i in range(len(out) - 1, -1, -1):
        for j in range(len(out[i]) - 1, -1, -1):
            if j + 1 < len(out[i]):
                out[i][j] = min(out[i][j], out[i][j + 1])
            if i + 1 < len(out):
                out[i][j] = min(out[i][j], out[i + 1][j])
    return out


@dataclass
class LatencyTable:
    """Per shape class grids for one runtime setting, with the whole model's measured latency when built."""

    runtime: str
    precision: str
    imgsz: int
    threads: int
    multiple: int
    fingerprint: dict[str, Any]
    grids: dict[str, LayerGrid] = field(default_factory=dict)
    model_ms: float | None = None  # the dense model as exported, measured whole
    seconds: float = 0.0  # what building it took

    def layer_ms(self, shape: ConvShape, cin: int, cout: int) -> float:
        grid = self.grids.get(shape.key())
        if grid is None:
            raise KeyError(f"no latency grid for {shape.key()}")
        return grid(cin, cout)

    # --- cache ------------------------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {"version": TABLE_VERSION, "runtime": self.runtime, "precision": self.precision, "imgsz": self.imgsz,
                "threads": self.threads, "multiple": self.multiple, "fingerprint": self.fingerprint,
                "model_ms": self.model_ms, "seconds": round(self.seconds, 2),
                "grids": {k: {"cin": g.cin, "cout": g.cout, "ms": g.ms} for k, g in self.grids.items()}}

    @classmethod
    def from_json(cls, d: dict) -> "LatencyTable":
        if d.get("version") != TABLE_VERSION:
            raise ValueError(f"latency table version {d.get('version')} is not {TABLE_VERSION}")
        grids = {k: LayerGrid(list(g["cin"]), list(g["cout"]), [list(r) for r in g["ms"]]) for k, g in d["grids"].items()}
        return cls(d["runtime"], d["precision"], int(d["imgsz"]), int(d["threads"]), int(d["multiple"]),
                   dict(d["fingerprint"]), grids, d.get("model_ms"), float(d.get("seconds", 0.0)))

    def save(self, path: str | Path) -> Path:
        from yolo_ldac.utils.io import atomic_write_text

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(self.to_json(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "LatencyTable":
        return cls.from_json(json.loads(Path(path).read_text()))


def cache_key(fingerprint: dict[str, Any], shapes: list[ConvShape], setting: dict[str, Any]) -> str:
    """sha256 (16 hex digits) of the machine and versions, the runtime setting and the model's shape classes:
    a table is reused only where all three are the same."""
    blob = json.dumps({"fp": fingerprint, "setting": setting, "shapes": sorted(s.key() for s in shapes),
                       "version": TABLE_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def staircase_multiple(widths: list[int], ms: list[float], candidates: tuple[int, ...] = (8, 16, 32, 64),
                       share: float = 0.25) -> int:
    """The width multiple a runtime wants, read off one layer's latency at consecutive widths.

    For a candidate ``m`` and each measured width ``w`` strictly between two measured multiples of ``m`` (``down`` <
    ``w`` < ``up``), the share of the step's saving that stopping at ``w`` buys is
    ``(t(up) - t(w)) / (t(up) - t(down))``: about 0.5 where latency is linear in the width, about 0 where the
    runtime pads ``w`` up to ``up`` (a staircase). The answer is the largest candidate whose median share is below
    ``share`` (rounding to it loses nothing), or the smallest candidate when every larger one loses. The median
    keeps one odd width (the smallest, often run by another kernel) or one noisy timing from deciding.

    Example:
        >>> w = [8, 16, 24, 32, 40, 48, 56, 64, 72, 80]
        >>> staircase_multiple(w, [1, 1, 2, 2, 3, 3, 4, 4, 5, 5])  # 24 costs what 32 does: blocks of 16
        16
        >>> staircase_multiple(w, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])  # linear: every 8 channels buy time
        8
    """
    at = dict(zip(widths, ms))
    for m in sorted(candidates, reverse=True):
        shares = []
        for w, t in at.items():
            up = -(-w // m) * m
            down = up - m
            if up == w or down < m or up not in at or down not in at or at[up] <= at[down]:
                continue
            shares.append((at[up] - t) / (at[up] - at[down]))
        if shares and float(np.median(shares)) < share:
            return m
    return min(candidates)
