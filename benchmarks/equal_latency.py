"""mAP at equal measured latency: the runs of a measured speed-up target (``speedup=2.0``) against the ``target=flops``
curve of the same method, every model timed in one interleaved run per runtime (issue 22).

Reads the grid runs that ``benchmarks/latency_grid.sh`` trains (``benchmarks/grid.py`` JSONs: final mAP50-95 on
val after the same optimizer steps), exports every run's ``best.pt`` and the base (in its original graph's shape, as
``benchmarks/speed.py`` does) with the export graph, and times them interleaved at the runs' imgsz, batch 1, 1
thread, in each runtime and precision a speed-up target asked for (``--runtimes``: ONNX Runtime fp32, OpenVINO
int8, calibrated on the data's train split). Then, per runtime: the FLOPs curve's points (mean over seeds of the
measured ms and the mAP at each ratio), and for each speed-up method its mean measured ms, its speed-up against the
base, its mAP and the FLOPs curve's mAP interpolated (linearly in ms) at that latency. A speed-up run whose latency
lies outside the curve's range is said to be so, not extrapolated.

Results: ``<results>/<data>/equal_latency.{json,md,png}`` and the ``equal-latency-<data>`` section of BENCHMARKS.md
(``--benchmarks-md``). Timing exports are kept under ``<results>/<data>/equal_latency/`` only while timing.

Usage:
    python benchmarks/equal_latency.py --base runs/base/yolo11n-composite400-e50-last.pt \\
        --data datasets/composite-400x160/data.yaml --results benchmarks/results/grid-latency \\
        --project runs/grid-latency --benchmarks-md
    python benchmarks/equal_latency.py ... --report-only      # the table and plot from the saved timing
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "benchmarks"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))
os.environ.setdefault("YOLO_CONFIG_DIR", str(ROOT / ".cache" / "ultralytics"))
from yolo_ldac.utils.env import setup_offline_env  # noqa: E402

setup_offline_env(offline=True)

SPEEDUP_METHODS = ["ldac:speedup=2.0:runtime=onnxruntime", "ldac:speedup=2.0:runtime=openvino:precision=int8"]
RUNTIMES = {"onnxruntime fp32": ("onnx", "fp32"), "openvino int8": ("openvino", "int8")}


def interpolate(curve: list[tuple[float, float]], x: float) -> float | None:
    """Linear interpolation of ``curve`` (``(x, y)`` points in any order) at ``x``; None outside its range.

    Example:
        >>> interpolate([(2.0, 0.3), (1.0, 0.1)], 1.5)
        0.2
        >>> interpolate([(2.0, 0.3), (1.0, 0.1)], 0.5) is None
        True
    """
    pts = sorted(curve)
    if not pts or x < pts[0][0] - 1e-9 or x > pts[-1][0] + 1e-9:
        return None
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 - 1e-9 <= x <= x1 + 1e-9:
            return y0 if x1 == x0 else round(y0 + (y1 - y0) * (x - x0) / (x1 - x0), 12)
    return pts[0][1]


def load_runs(folder: Path, flops_method: str, ratios: list[float], targets: list[str], seeds: list[int]) -> dict:
    """label -> run record (with ``weights``) for every FLOPs-curve and speed-up run that has finished."""
    from grid import read_record, run_id

    wanted = {f"flops r{r:g} s{s}": run_id(flops_method, r, s) for r in ratios for s in seeds}
    wanted.update({f"{m} s{s}": run_id(m, 0.5, s) for m in targets for s in seeds})
    runs = {}
    for label, rid in wanted.items():
        rec = read_record(folder / f"{rid}.json")
        if not rec:
            print(f"equal_latency: {rid} not finished: left out")
            continue
        weights = Path(rec["report"]).parent / "weights" / "best.pt"
        if not weights.is_file():
            print(f"equal_latency: {weights} missing: {rid} left out")
            continue
        rep = json.loads(Path(rec["report"]).read_text())
        runs[label] = {"id": rid, "method": rec["method"], "ratio": rec["ratio"], "seed": rec["seed"],
                       "map50_95": rec["after"]["map50_95"], "map50": rec["after"]["map50"],
                       "flops_g": rec["after"]["flops_g"], "removed_flops_pct": rec["removed"]["flops_pct"],
                       "in_run_latency": rep.get("latency"), "weights": str(weights),
                       "imgsz": int(rec["settings"]["imgsz"])}
    return runs


def time_runs(base: Path, data: Path, runs: dict, imgsz: int, out: Path, n: int, calib: int) -> dict:
    """``{runtime: {label: median ms}}``: every model and the base, one interleaved timing run per runtime."""
    from speed import dense_form

    from yolo_ldac.deploy.benchmark import run_benchmark

    work = out / "equal_latency"
    work.mkdir(parents=True, exist_ok=True)
    dense_pt = work / "base.pt"
    shutil.copy2(base, dense_pt)
    models = {"dense": dense_form(dense_pt), **{k: v["weights"] for k, v in runs.items()}}
    models = {k.replace(" ", "_").replace(":", "+").replace("=", "-"): v for k, v in models.items()}
    back = {k.replace(" ", "_").replace(":", "+").replace("=", "-"): k for k in ["dense", *runs]}
    timing = {}
    for name, (fmt, prec) in RUNTIMES.items():
        t = time.time()
        res = run_benchmark(models, formats=[fmt], precisions=[prec], imgsz=imgsz, data=data, runs=n, warmup=5,
                            threads=[1], out_dir=work / fmt / prec, plots=False, accuracy=False, calib_images=calib)
        timing[name] = {back[r.model]: r.latency["1"]["median_ms"]
                        for r in res.rows if r.format == fmt and r.latency and not r.status.startswith("skipped")}
        print(f"{name}: timed {len(timing[name])} models in {time.time() - t:.0f} s", flush=True)
    return timing


def compare(runs: dict, timing: dict, targets: list[str], ratios: list[float]) -> dict:
    """Per runtime: the FLOPs curve (mean ms and mAP per ratio) and each speed-up method at its measured latency."""
    out = {}
    for rt, ms in timing.items():
        dense = ms.get("dense")
        curve = []
        for r in ratios:
            pts = [(ms[k], v["map50_95"]) for k, v in runs.items() if k.startswith(f"flops r{r:g} ") and k in ms]
            if pts:
                flops = [v["flops_g"] for k, v in runs.items() if k.startswith(f"flops r{r:g} ") and k in ms]
                curve.append({"ratio": r, "ms": statistics.mean(p[0] for p in pts), "flops_g": statistics.mean(flops),
                              "map50_95": statistics.mean(p[1] for p in pts), "seeds": len(pts),
                              "map_sd": statistics.stdev(p[1] for p in pts) if len(pts) > 1 else 0.0})
        rows = []
        for m in targets:
            pts = [(ms[k], v) for k, v in runs.items() if k.startswith(f"{m} s") and k in ms]
            if not pts:
                continue
            lat = statistics.mean(p[0] for p in pts)
            mp = statistics.mean(p[1]["map50_95"] for p in pts)
            ref = interpolate([(c["ms"], c["map50_95"]) for c in curve], lat)
            in_run = [p[1]["in_run_latency"] or {} for p in pts]
            rows.append({"method": m, "ms": lat, "speedup": dense / lat if dense else None, "map50_95": mp,
                         "map_sd": statistics.stdev(p[1]["map50_95"] for p in pts) if len(pts) > 1 else 0.0,
                         "flops_g": statistics.mean(p[1]["flops_g"] for p in pts), "seeds": len(pts),
                         "flops_curve_map50_95": ref, "delta_points": None if ref is None else 100 * (mp - ref),
                         "in_run": [{k: r.get(k) for k in ("runtime", "precision", "speedup", "met")} for r in in_run]})
        out[rt] = {"dense_ms": dense, "curve": curve, "targets": rows}
    return out


def markdown(result: dict, data_key: str, command: str, machine: dict) -> str:
    lines = [f"### mAP at equal measured latency: `speedup=2.0` against `target=flops` ({data_key})", "",
             f"Written by `benchmarks/equal_latency.py` on {result['date'][:10]}; do not edit by hand. Command: "
             f"`{command}`. Runs: `benchmarks/latency_grid.sh` (the grid's user flow, 160 px, the same optimizer "
             f"steps for every run, seeds {result['seeds']}; bases retrained for it). Every model and the base "
             "timed in one interleaved run per runtime (export graph, batch 1, 1 thread, at the runs' imgsz); "
             "mAP50-95 on val after training. `flops curve at that ms`: the `target=flops` runs' mean mAP "
             "interpolated linearly in measured ms at the speed-up runs' mean ms (blank: outside the curve). "
             f"Machine: {machine.get('cpu')}.", ""]
    for rt, r in result["compare"].items():
        lines += [f"**{rt}** (base {r['dense_ms']:.2f} ms)", "",
                  "| model | FLOPs G (640) | measured ms | speed-up | mAP50-95 | flops curve at that ms | Δ (points) | "
                  "in-run speed-up (met) |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for c in r["curve"]:
            flops = c.get("flops_g", float("nan"))
            lines.append(f"| target=flops ratio={c['ratio']:g} | {flops:.2f} | {c['ms']:.2f} | "
                         f"{r['dense_ms'] / c['ms']:.2f}x | {c['map50_95']:.3f} ± {c['map_sd']:.3f} | | | |")
        for t in r["targets"]:
            ref = "" if t["flops_curve_map50_95"] is None else f"{t['flops_curve_map50_95']:.3f}"
            d = "" if t["delta_points"] is None else f"{t['delta_points']:+.1f}"
            inrun = ", ".join(f"{i['speedup']:.2f}x ({'met' if i['met'] else 'not met'})" for i in t["in_run"]
                              if i.get("speedup") is not None)
            lines.append(f"| {t['method']} | {t['flops_g']:.2f} | {t['ms']:.2f} | {t['speedup']:.2f}x | "
                         f"{t['map50_95']:.3f} ± {t['map_sd']:.3f} | {ref} | {d} | {inrun} |")
        lines.append("")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cmp = result["compare"]
    fig, axes = plt.subplots(1, len(cmp), figsize=(5.5 * len(cmp), 4), squeeze=False)
    for ax, (rt, r) in zip(axes[0], cmp.items()):
        c = sorted(r["curve"], key=lambda c: c["ms"])
        ax.plot([p["ms"] for p in c], [p["map50_95"] for p in c], "o-", label="target=flops (0.5 / 0.6 / 0.7)")
        for t in r["targets"]:
            ax.plot([t["ms"]], [t["map50_95"]], "s", ms=8, label=t["method"].replace("ldac:", ""))
        ax.set_title(f"{rt} (base {r['dense_ms']:.2f} ms)")
        ax.set_xlabel("measured latency (ms, 1 thread)")
        ax.set_ylabel("mAP50-95 (val)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path, required=True, help="the grid's base (timed as the dense model)")
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--epochs", type=int, help="ignored (latency_grid.sh passes the grid's options through)")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "grid-latency")
    ap.add_argument("--project", type=Path, default=ROOT / "runs" / "grid-latency", help="unused: runs are found "
                                                                                       "from their JSONs")
    ap.add_argument("--flops-method", default="ldac")
    ap.add_argument("--ratios", nargs="+", type=float, default=[0.5, 0.6, 0.7])
    ap.add_argument("--targets", nargs="+", default=SPEEDUP_METHODS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--runs", type=int, default=60, help="timed runs per model")
    ap.add_argument("--calib-images", type=int, default=100, help="int8 calibration images")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--benchmarks-md", action="store_true")
    args = ap.parse_args(argv)
    key = args.data.resolve().parent.name  # as grid.py names a data set's folders
    folder = args.results / key
    out_json = folder / "equal_latency.json"
    command = "python benchmarks/equal_latency.py " + " ".join(
        str(a).replace(str(ROOT) + "/", "") for a in (argv if argv is not None else sys.argv[1:]))
    runs = load_runs(folder, args.flops_method, args.ratios, args.targets, args.seeds)
    if args.report_only:
        result = json.loads(out_json.read_text())
    else:
        if not runs:
            raise SystemExit(f"equal_latency.py: no finished runs in {folder}")
        imgsz = next(iter(runs.values()))["imgsz"]
        from yolo_ldac.utils.env import machine_info

        timing = time_runs(args.base.resolve(), args.data.resolve(), runs, imgsz, folder, args.runs,
                           args.calib_images)
        shutil.rmtree(folder / "equal_latency", ignore_errors=True)
        from datetime import datetime, timezone

        result = {"date": datetime.now(timezone.utc).isoformat(), "data": key, "imgsz": imgsz, "seeds": args.seeds,
                  "command": command, "machine": machine_info(), "runs": runs, "timing": timing}
    result["compare"] = compare(result["runs"], result["timing"], args.targets, args.ratios)
    from yolo_ldac.utils.io import atomic_write_json, atomic_write_text

    atomic_write_json(out_json, result)
    md = markdown(result, key, result["command"], result["machine"])
    atomic_write_text(folder / "equal_latency.md", md)
    plot(result, folder / "equal_latency.png")
    print(md)
    if args.benchmarks_md:
        from sections import write_section

        rel = os.path.relpath(folder, ROOT)
        write_section(f"equal-latency-{key}", md + f"\n![equal latency]({rel}/equal_latency.png)", after="speed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
