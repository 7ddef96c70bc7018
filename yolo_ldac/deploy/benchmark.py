"""Benchmark detectors per runtime: latency (1 thread and all threads), file size and mAP, dense against compressed.

For every model (the compressed one and, optionally, its dense ``baseline``) and every format x precision, the model
is exported with :func:`yolo_ldac.export.export_checked` (raw-output and, with ``data``, mAP parity checks), loaded in
its own runtime and timed on a real letterboxed image: ``warmup`` untimed runs, then ``runs`` timed runs at batch 1,
once per thread setting; median and p90 in milliseconds. PyTorch (CPU, fused) is the reference row. The timed
runs of all files are interleaved in blocks (:func:`time_interleaved`), so machine noise does not favour one row.

Results go to ``out_dir``: ``benchmark.json`` (everything, with the machine), ``benchmark.csv``, ``benchmark.md``
(the table) and ``benchmark.png`` (latency bars per runtime, dense against compressed, and mAP).

Example:
    >>> from yolo_ldac.deploy.benchmark import run_benchmark
    >>> res = run_benchmark({"compressed": "best.pt", "dense": "yolo11n.pt"}, formats=["onnx", "litert"],
    ...                     precisions=["fp32", "int8"], imgsz=640, data="kitti.yaml", out_dir="runs/bench")
    >>> print(res.table)
"""

from __future__ import annotations

import csv
import json
import shutil
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from yolo_ldac.deploy.runtimes import check_runtime, load_runtime
from yolo_ldac.utils.env import usable_cores
from yolo_ldac.errors import LDACError

from yolo_ldac.utils.log import LOGGER  # noqa: E402

DEFAULT_FORMATS = ("onnx", "litert", "openvino")
BENCH_FORMATS = (*DEFAULT_FORMATS, "ncnn")  # ncnn on request (formats=...,ncnn): a pnnx export takes ~10-30 s
MODEL_SUFFIXES = (".pt", ".json", ".safetensors")  # a checkpoint, or either file of a portable pair


@dataclass
class BenchRow:
    """One model in one runtime at one precision."""

    model: str  # label, e.g. "dense" or "compressed"
    format: str
    precision: str
    status: str = "ok"  # "ok", "failed: ...", "skipped: ..."
    file: str | None = None
    size_mb: float | None = None
    latency: dict[str, dict[str, float]] = field(default_factory=dict)  # threads -> {median_ms, p90_ms, ...}
    map50_95: float | None = None
    map50: float | None = None
    parity: dict | None = None
    flops_g: float | None = None
    params_m: float | None = None
    export_s: float | None = None


@dataclass
class BenchmarkResult:
    rows: list[BenchRow]
    table: str
    out_dir: Path
    files: dict[str, Path]

    @property
    def failed(self) -> list[BenchRow]:
        return [r for r in self.rows if r.status.startswith("failed")]



def time_runtime(runtime: Any, x: np.ndarray, runs: int = 50, warmup: int = 10) -> dict[str, float]:
    """Median, p90, mean and min latency (ms) of ``runtime(x)`` over ``runs`` timed calls after ``warmup``.

    Example:
        >>> time_runtime(lambda x: x * 2, np.zeros(3), runs=5, warmup=1)["runs"]
        5
    """
    return _time_blocks({0: runtime}, x, runs, warmup, rounds=1)[0]


def parse_list(value: Any, name: str) -> list[str]:
    """``"onnx,litert"`` or ``["onnx", "litert"]`` -> ``["onnx", "litert"]`` (lower-case, no blanks)."""
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    out = [str(v).strip().lower() for v in items if str(v).strip()]
    if not out:
        raise LDACError(f"{name} is empty")
    return out


def parse_threads(value: Any, notice: bool = False) -> list[int]:
    """``"1,all"``, ``[1, 4]`` or ``2`` -> thread counts (``all``, or ``0`` as in ONNX Runtime: every usable core),
    without duplicates. With ``notice``, ``0`` and ``all`` are logged with the count they stand for.

    Example:
        >>> parse_threads("1,2,2")
        [1, 2]
    """
    out: list[int] = []
    for v in parse_list(value, "threads"):
        n = usable_cores() if v in ("all", "0") else None
        if n is not None and notice:
            LOGGER.info(f"threads={v}: timing with all {n} usable core{'s' if n != 1 else ''} of this process")
        if n is None:
            try:
                n = int(v)
            except ValueError:
                raise LDACError(f"threads must be integers >= 1 or 'all', got {v!r}") from None
            if n < 1:
                raise LDACError(f"threads must be integers >= 1 or 'all', got {v!r}")
        if n not in out:
            out.append(n)
    return out


def _complexity(pt: Path, imgsz: int) -> dict[str, float]:
    from yolo_ldac.nn.adapter import model_complexity
    from yolo_ldac.safe_load import load_model

    model = load_model(pt, device="cpu")
    c = model_complexity(model.float(), imgsz)
    return {"flops_g": c["flops_g"], "params_m": c["params_m"]}


def latency_stats(times_ms: Sequence[float], warmup: int) -> dict[str, float]:
    """Median, p90, mean and min of timed runs (ms)."""
    return {"median_ms": statistics.median(times_ms), "p90_ms": float(np.percentile(times_ms, 90)),
            "mean_ms": statistics.fmean(times_ms), "min_ms": min(times_ms), "runs": len(times_ms), "warmup": warmup}


def _time_blocks(sessions: dict[Any, Any], x: np.ndarray, runs: int, warmup: int, rounds: int) -> dict[Any, dict]:
    """``warmup`` untimed calls of each session, then ``runs`` timed calls of each, taken in ``rounds`` blocks
    that alternate between the sessions; key -> :func:`latency_stats`."""
    if runs < 1:
        raise LDACError(f"runs must be >= 1, got {runs}")
    for runtime in sessions.values():
        for _ in range(max(0, warmup)):
            runtime(x)
    rounds = max(1, min(rounds, runs))
    blocks = [runs // rounds + (1 if r < runs % rounds else 0) for r in range(rounds)]
    times: dict[Any, list[float]] = {k: [] for k in sessions}
    for block in blocks:
        for k, runtime in sessions.items():
            for _ in range(block):
                t = time.perf_counter()
                runtime(x)
                times[k].append((time.perf_counter() - t) * 1e3)
    return {k: latency_stats(ts, warmup) for k, ts in times.items()}


def time_interleaved(paths: dict[Any, Path], x: np.ndarray, threads: Sequence[int], runs: int, warmup: int,
                     rounds: int = 5) -> dict[Any, dict[str, dict]]:
    """Time every model file at every thread count, interleaved: the ``runs`` timed runs of each are split into
    ``rounds`` blocks, and the blocks of all files alternate, so a slow spell of a shared machine is spread over
    every configuration instead of landing on whichever happened to run then. Returns key -> threads -> stats."""
    sessions = {(key, n): load_runtime(path, threads=n) for key, path in paths.items() for n in threads}
    out: dict[Any, dict[str, dict]] = {key: {} for key in paths}
    for (key, n), stats in _time_blocks(sessions, x, runs, warmup, rounds).items():
        out[key][str(n)] = stats
    return out


def run_benchmark(
    models: dict[str, str | Path],
    formats: Sequence[str] = DEFAULT_FORMATS,
    precisions: Sequence[str] = ("fp32",),
    imgsz: int = 640,
    data: str | Path | None = None,
    runs: int = 50,
    warmup: int = 10,
    threads: Sequence[int] | None = None,
    out_dir: str | Path = "runs/ldac/benchmark",
    image: str | Path | None = None,
    plots: bool = True,
    accuracy: bool = True,
    rounds: int = 5,
    deploy_graph: bool = True,
    calib_images: int | None = None,
    batch: int = 16,
    int8_float: str = "auto",
) -> BenchmarkResult:
    """Export, check and time every model in every format x precision (module docstring).

    Args:
        models: label -> ``.pt`` checkpoint, e.g. ``{"dense": "yolo11n.pt", "compressed": "best.pt"}``.
        formats: runtimes to export to (``onnx``, ``litert``/``tflite``, ``openvino``, ``ncnn``); PyTorch is always
            timed.
        precisions: ``fp32``, ``fp16``, ``int8`` (int8 needs ``data``; without it the int8 rows are skipped).
        imgsz: square input size of every export and of the timing image.
        data: dataset yaml: mAP per format on its val split, and int8 calibration images.
        runs, warmup: timed and untimed runs per model file and thread setting.
        rounds: the timed runs are taken in this many blocks, alternating between all model files
            (:func:`time_interleaved`).
        threads: thread counts to time (default: 1 and every usable core).
        out_dir: folder of the exports and result files (created; reused if it exists).
        image: the timing image (default Ultralytics' bus.jpg).
        plots: write ``benchmark.png``.
        accuracy: measure mAP with ``data`` (False: ``data`` only calibrates int8, e.g. when timing at an input
            size the model was not trained for).
        deploy_graph: export every model in the graph the runtimes are fast on (:mod:`yolo_ldac.nn.deploy`), the
            dense baseline too, so both are timed as the user would ship them.
        calib_images: int8 calibration images (default: the exporter's, 300).
        batch: validation batch of the PyTorch rows' mAP (:data:`MAP_NOTE`).
        int8_float: what LiteRT int8 exports keep in float (:mod:`yolo_ldac.deploy.litert_int8`).

    Returns:
        :class:`BenchmarkResult` with one :class:`BenchRow` per model x runtime x precision.
    """
    from yolo_ldac.deploy.parity import default_images, preprocess_image, validate_map
    from yolo_ldac.export import export_checked

    formats = check_inputs(models, formats, precisions)
    threads = list(threads) if threads else sorted({1, usable_cores()})
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    x = preprocess_image(Path(image) if image else default_images()[0], (imgsz, imgsz))

    from tqdm import tqdm

    rows: list[BenchRow] = []
    jobs = [(label, fmt, prec) for label in models for fmt, prec in [("pytorch", "fp32")]
            + [(f, p) for f in formats for p in precisions]]
    bar = tqdm(jobs, desc="benchmark", unit="export")
    local: dict[str, Path] = {}
    refs: dict[str, dict] = {}
    comp: dict[str, dict] = {}
    for label, fmt, prec in bar:
        bar.set_postfix_str(f"{label} {fmt} {prec}")
        if label not in local:  # each model's exports go to the benchmark folder, not next to the user's weights
            (out_dir / label).mkdir(exist_ok=True)
            local[label] = out_dir / label / f"{label}.pt"
            if Path(models[label]).suffix == ".pt":
                shutil.copy2(models[label], local[label])
            else:  # a portable pair: rebuilt without unpickling, written as the .pt the runtimes read
                from yolo_ldac.export import _to_pt

                _to_pt(Path(models[label]), out_dir / label).replace(local[label])
            comp[label] = _complexity(local[label], imgsz)
        row = BenchRow(model=label, format=fmt, precision=prec, **comp[label])
        rows.append(row)
        try:
            if fmt == "pytorch":
                row.file, row.size_mb = str(local[label]), local[label].stat().st_size / 1e6
                if data is not None and accuracy:
                    # the parity reference: the .pt at the exports' fixed input shape (batch 1, no rect batches)
                    refs[label] = validate_map(local[label], data, imgsz)
                    mine = pytorch_map(local[label], data, imgsz, batch)  # what `yolo val` prints for the .pt
                    row.map50_95, row.map50 = mine["map50_95"], mine["map50"]
                continue
            if prec == "int8" and data is None:
                row.status = "skipped: int8 needs data= for calibration"
                continue
            if prec == "int8" and fmt == "ncnn":
                row.status = "skipped: Ultralytics' NCNN exporter writes fp32 and fp16 only"
                continue
            try:
                check_runtime(fmt)
            except LDACError as e:
                row.status = f"skipped: {e}"
                continue
            res = export_checked(local[label], format=fmt, imgsz=imgsz, half=prec == "fp16", int8=prec == "int8",
                                 data=data, reference_map=refs.get(label), map_check=accuracy, strict=False,
                                 deploy_graph=deploy_graph, int8_float=int8_float,
                                 **({"calib_images": calib_images} if calib_images else {}))
            if not res.path.exists():
                raise LDACError(f"export '{res.path}' vanished")
            row.file, row.size_mb, row.export_s, row.parity = str(res.path), res.size_mb, res.seconds, res.parity
            if res.accuracy:
                row.map50_95, row.map50 = res.accuracy["map50_95"], res.accuracy["map50"]
            if res.failure:  # timed all the same, and marked: a user should see both numbers
                row.status = f"failed: {res.failure}"
        except LDACError as e:
            row.status = f"failed: {e}"
            LOGGER.warning(f"benchmark {label} {fmt} {prec}: {e}")

    timed = {i: Path(r.file) for i, r in enumerate(rows) if r.file and not r.status.startswith("skipped")}
    print(f"timing {len(timed)} models x {len(threads)} thread settings, interleaved ({runs} runs each)...")
    try:
        for i, lat in time_interleaved(timed, x, threads, runs, warmup, rounds=rounds).items():
            rows[i].latency = lat
    except LDACError as e:  # a file that passed its checks but cannot be timed: say so, keep the rest
        LOGGER.warning(f"timing failed ({e}); timing one model at a time")
        for i, path in timed.items():
            try:
                rows[i].latency = time_interleaved({i: path}, x, threads, runs, warmup, rounds=rounds)[i]
            except LDACError as e2:
                rows[i].status = f"failed: {e2}"
    table = format_table(rows, threads)
    files = write_results(rows, table, threads, out_dir, imgsz=imgsz, data=data, batch=batch, runs=runs, warmup=warmup,
                          rounds=rounds, accuracy=accuracy, models={k: str(v) for k, v in models.items()}, plots=plots)
    return BenchmarkResult(rows=rows, table=table, out_dir=out_dir, files=files)


MAP_NOTE = ("mAP: what `yolo val` prints for each file: the .pt with rect batches at batch {batch}, each export at "
            "its fixed input shape (batch 1, no rect batches); each export's parity check compares it with the .pt "
            "at that same fixed shape.")


def pytorch_map(path: str | Path, data: str | Path, imgsz: int, batch: int = 16) -> dict[str, float]:
    """mAP50-95 and mAP50 of the ``.pt`` at ``path`` as ``yolo val model=path data=data imgsz=imgsz batch=batch``
    prints them (CPU, rect batches).

    Example:
        >>> pytorch_map("best.pt", "coco8.yaml", 640)  # doctest: +SKIP
        {'map50_95': 0.61, 'map50': 0.8}
    """
    from yolo_ldac.engine.validator import validate_model
    from yolo_ldac.safe_load import load_model

    return validate_model(load_model(path, device="cpu"), str(data), {"imgsz": imgsz, "batch": int(batch),
                                                                     "device": "cpu"})


def check_inputs(models: dict[str, str | Path], formats: Sequence[str], precisions: Sequence[str]) -> list[str]:
    """Raise :class:`LDACError` for a missing model file, an unknown format or precision (before any folder is made);
    return the formats normalised (``tflite`` -> ``litert``).

    Example:
        >>> check_inputs({}, ["onnx"], ["fp32"])
        Traceback (most recent call last):
        yolo_ldac.errors.LDACError: no model to benchmark
    """
    from yolo_ldac.export import PRECISIONS, normalise_format

    if not models:
        raise LDACError("no model to benchmark")
    for label, path in models.items():
        if not Path(path).is_file() or Path(path).suffix not in MODEL_SUFFIXES:
            raise LDACError(f"{label} model '{path}' must be an existing .pt checkpoint or portable best.json")
    formats = [normalise_format(f) for f in formats]
    for f in formats:
        if f not in BENCH_FORMATS:
            raise LDACError(f"benchmark formats are {', '.join(BENCH_FORMATS)} (tflite = litert), got {f!r}")
    for p in precisions:
        if p not in PRECISIONS:
            raise LDACError(f"precisions are {', '.join(PRECISIONS)}, got {p!r}")
    return formats


def _fmt(v: float | None, spec: str = ".1f") -> str:
    return "–" if v is None else format(v, spec)


def format_table(rows: list[BenchRow], threads: Sequence[int]) -> str:
    """Markdown table: model, runtime, precision, size, FLOPs, params, mAP, latency per thread count, speed-up of
    each compressed row against the first model's row of the same runtime and precision."""
    base_label = rows[0].model if rows else None
    base = {(r.format, r.precision): r for r in rows if r.model == base_label}
    lat_cols = [f"{n} thr median / p90 ms" for n in threads]
    head = ["model", "runtime", "precision", "size MB", "GFLOPs", "params M", "mAP50-95", "mAP50", *lat_cols,
            f"speed-up vs {base_label} ({threads[-1]} thr)", "status"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        lat = [f"{r.latency[str(n)]['median_ms']:.2f} / {r.latency[str(n)]['p90_ms']:.2f}" if str(n) in r.latency
               else "–" for n in threads]
        b = base.get((r.format, r.precision))
        key = str(threads[-1])
        speed = "–"
        if r.model != base_label and b is not None and key in r.latency and key in b.latency:
            speed = f"{b.latency[key]['median_ms'] / r.latency[key]['median_ms']:.2f}x"
        cells = [r.model, r.format, r.precision, _fmt(r.size_mb, ".2f"), _fmt(r.flops_g, ".2f"),
                 _fmt(r.params_m, ".2f"), _fmt(r.map50_95, ".3f"), _fmt(r.map50, ".3f"), *lat, speed,
                 r.status.split(";")[0][:120]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(rows: list[BenchRow], table: str, threads: Sequence[int], out_dir: Path, plots: bool = True,
                  **settings: Any) -> dict[str, Path]:
    """Write benchmark.json / .csv / .md (and .png) to ``out_dir``; return their paths."""
    from yolo_ldac.utils.env import machine_info

    files = {"json": out_dir / "benchmark.json", "csv": out_dir / "benchmark.csv", "md": out_dir / "benchmark.md"}
    record = {"settings": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in settings.items()},
                           "threads": list(threads)},
              "machine": machine_info(), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "rows": [asdict(r) for r in rows]}
    from yolo_ldac.utils.io import atomic_path, atomic_write_text

    atomic_write_text(files["json"], json.dumps(record, indent=1, default=str))
    with atomic_path(files["csv"]) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["model", "format", "precision", "status", "size_mb", "flops_g", "params_m", "map50_95", "map50",
                    *[f"median_ms_{n}thr" for n in threads], *[f"p90_ms_{n}thr" for n in threads], "file"])
        for r in rows:
            w.writerow([r.model, r.format, r.precision, r.status, r.size_mb, r.flops_g, r.params_m, r.map50_95,
                        r.map50, *[r.latency.get(str(n), {}).get("median_ms") for n in threads],
                        *[r.latency.get(str(n), {}).get("p90_ms") for n in threads], r.file])
    note = ("\n\n" + MAP_NOTE.format(batch=settings.get("batch", 16))) if any(r.map50_95 is not None for r in rows) \
        else ""
    atomic_write_text(files["md"], table + note + "\n")
    if plots:
        files["png"] = plot_benchmark(rows, threads, out_dir / "benchmark.png")
    return files


def plot_benchmark(rows: list[BenchRow], threads: Sequence[int], path: Path) -> Path:
    """Horizontal bars: median latency per runtime x precision for each model, one panel per thread count, and
    mAP50-95 when it was measured; rows that failed a check are hatched."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(r.model for r in rows))
    configs = list(dict.fromkeys((r.format, r.precision) for r in rows))
    has_map = any(r.map50_95 is not None for r in rows)
    panels = len(threads) + int(has_map)
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 0.45 * len(configs) * len(labels) + 1.6),
                             squeeze=False)
    height = 0.8 / max(1, len(labels))
    by = {(r.model, r.format, r.precision): r for r in rows}
    y = np.arange(len(configs))
    titles = [f"median latency, {n} thread{'s' if n > 1 else ''} (ms)" for n in threads]
    if has_map:
        titles.append("mAP50-95")
    for p, ax in enumerate(axes[0]):
        for i, label in enumerate(labels):
            vals, failed = [], []
            for fmt, prec in configs:
                r = by.get((label, fmt, prec))
                failed.append(r is not None and r.status.startswith("failed"))
                if r is None:
                    vals.append(np.nan)
                elif p < len(threads):
                    vals.append(r.latency.get(str(threads[p]), {}).get("median_ms", np.nan))
                else:
                    vals.append(np.nan if r.map50_95 is None else r.map50_95)
            bars = ax.barh(y + (i - (len(labels) - 1) / 2) * height, vals, height, label=label)
            for bar, bad in zip(bars, failed):
                if bad:  # timed, but the export failed a parity or mAP check
                    bar.set_hatch("///")
        ax.set_yticks(y, [f"{f} {q}" for f, q in configs])
        ax.invert_yaxis()
        ax.set_title(titles[p], fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].legend(fontsize=8, title="hatched: failed a check" if any(
        r.status.startswith("failed") for r in rows) else None, title_fontsize=7)
    fig.tight_layout()
    from yolo_ldac.utils.io import atomic_save

    atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    return path
