"""Edge-runtime benchmark: the COCO YOLO11n dense and compressed at 50 % FLOPs, in every runtime and precision.

Takes the checkpoints that ``benchmarks/compare.py`` trained (dense fine-tuned, and LDAC / Group Fisher pruned to
50 % of the FLOPs, all on the composite set at 160 px, seed 0) and runs ``yolo-ldac benchmark`` on them twice:

1. at 160 px, the size they were trained and validated at: latency, file size and mAP50-95 of every export on the
   composite val split (each export also passes the raw-output and mAP parity checks, or is marked failed);
2. at 640 px, the usual deployment size (where the FLOPs are counted): latency and size only (the models were not
   trained at 640, so their mAP there means nothing; the val images still calibrate int8).

Each result folder (benchmark.json/.csv/.md/.png) goes to ``benchmarks/results/edge-<imgsz>/`` and the tables into
BENCHMARKS.md between ``<!-- section:edge -->`` markers (benchmarks/compare.py keeps that section when it rewrites
the file). Run it on an otherwise idle machine: latency is wall-clock.

Usage:
    python benchmarks/compare.py --models yolo11n-coco --ratios 0.5 --methods dense ldac group_fisher --seeds 0
    python benchmarks/edge.py                       # ~15 min on 2 CPU cores
    python benchmarks/edge.py --imgsz 160 --runs 20  # quicker
    python benchmarks/edge.py --report-only         # rewrite the section and the plots from the saved JSON
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN = "yolo11n-coco__composite-64x160__{method}__r{ratio}__s0"
MODELS = {"dense": ("dense", "0"), "ldac": ("ldac", "0.5"), "group_fisher": ("group_fisher", "0.5")}
START, END = "<!-- section:edge -->", "<!-- /section:edge -->"


def checkpoints(project: Path) -> dict[str, Path]:
    found = {}
    for label, (method, ratio) in MODELS.items():
        path = project / RUN.format(method=method, ratio=ratio) / "weights" / "best.pt"
        if not path.is_file():
            sys.exit(f"edge.py: {path} is missing; train it first:\n  python benchmarks/compare.py --models "
                     f"yolo11n-coco --ratios 0.5 --methods dense ldac group_fisher --seeds 0")
        found[label] = path
    return found


def section(results: list[tuple[int, dict, str]], command: str) -> str:
    """The BENCHMARKS.md section: one table per input size, the machine, and the speed-up against FLOPs."""
    first = results[0][1]
    m = first["machine"]
    lines = [START, "", "## Edge runtimes: yolo11n-coco dense vs compressed at 50 % FLOPs", "",
             f"Written by `benchmarks/edge.py` on {first['date']}; do not edit by hand. Command: `{command}`.", "",
             f"Machine: {m['cpu']} ({m['cores_usable']} usable cores), no GPU; python {m['python']}, "
             f"torch {m['torch']}, onnxruntime {m.get('onnxruntime')}, ai-edge-litert {m.get('ai_edge_litert')}, "
             f"openvino {m.get('openvino')}. These are x86 server-CPU numbers, not Raspberry Pi / Jetson / phone "
             f"numbers: they show the relative effect of pruning and precision on one CPU.", "",
             "Models: `benchmarks/compare.py` runs, seed 0, all trained 14 epochs on the composite set (64 images, "
             "160 px): `dense` (fine-tuned, unpruned), `ldac` and `group_fisher` (50 % of the FLOPs removed). "
             "Latency: batch 1, median / p90 of the timed runs after warm-up, per thread count. Every exported row "
             "passed the raw-output parity check (fp32 max rel diff <= 1e-3, fp16 <= 0.05, int8 mean rel diff "
             "<= 0.05) and, where mAP is shown, the mAP check (<= 0.5 points lost for fp32/fp16, 2 for int8), "
             "or says `failed` and why. Speed-up: the dense row's median latency over this row's, same runtime, "
             "precision and thread count. The timed runs of all exports are interleaved in 5 blocks, so a slow "
             "spell of this shared 2-vCPU VM hits every row alike; absolute latencies still differ by up to ~2x "
             "between runs of the script (compare rows within a table, not across runs).", ""]
    for imgsz, record, table in results:
        s = record["settings"]
        what = "latency, size and mAP50-95 on the composite val split (32 images)" if s.get("accuracy") else \
            "latency and size (no mAP: the models were trained at 160 px; int8 calibrated on the composite images)"
        lines += [f"### {imgsz} px: {what}", "", f"{s['runs']} timed runs after {s['warmup']} warm-up runs.", "",
                  table, "", f"![latency at {imgsz} px](benchmarks/results/edge-{imgsz}/benchmark.png)", ""]
    lines += ["### Speed-up against FLOPs reduction", "", speedup_summary(results), "", END]
    return "\n".join(lines)


def speedup_summary(results: list[tuple[int, dict, str]]) -> str:
    """Per input size and runtime: FLOPs ratio and measured speed-up of each compressed model (all threads)."""
    out = ["| imgsz | model | FLOPs kept | runtime | precision | speed-up (all thr) | speed-up (1 thr) |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    for imgsz, record, _ in results:
        threads = record["settings"]["threads"]
        rows = record["rows"]
        dense = {(r["format"], r["precision"]): r for r in rows if r["model"] == "dense"}
        for r in rows:
            d = dense.get((r["format"], r["precision"]))
            if r["model"] == "dense" or d is None or not r["latency"] or not d["latency"]:
                continue
            sp = [d["latency"][str(n)]["median_ms"] / r["latency"][str(n)]["median_ms"] for n in (threads[-1], 1)]
            out.append(f"| {imgsz} | {r['model']} | {r['flops_g'] / d['flops_g']:.0%} | {r['format']} | "
                       f"{r['precision']} | {sp[0]:.2f}x | {sp[1]:.2f}x |")
    return "\n".join(out)


def write_section(report: Path, text: str) -> None:
    old = report.read_text(encoding="utf-8") if report.is_file() else ""
    if START in old and END in old:
        new = old[: old.index(START)] + text + old[old.index(END) + len(END):]
    else:
        new = old.rstrip() + "\n\n" + text + "\n"
    report.write_text(new, encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, default=ROOT / "runs" / "bench", help="compare.py's run folders")
    ap.add_argument("--data", type=Path, default=ROOT / "datasets" / "composite-64x160" / "data.yaml")
    ap.add_argument("--imgsz", type=int, nargs="+", default=[160, 640])
    ap.add_argument("--formats", default="onnx,litert,openvino")
    ap.add_argument("--precisions", default="fp32,fp16,int8")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--report", type=Path, default=ROOT / "BENCHMARKS.md")
    ap.add_argument("--report-only", action="store_true", help="rewrite the section from the saved JSON results")
    args = ap.parse_args()
    if args.report_only:
        results = []
        for imgsz in args.imgsz:
            record = json.loads((args.out / f"edge-{imgsz}" / "benchmark.json").read_text(encoding="utf-8"))
            from yolo_ldac.deploy.benchmark import BenchRow, plot_benchmark

            plot_benchmark([BenchRow(**r) for r in record["rows"]], record["settings"]["threads"],
                           args.out / f"edge-{imgsz}" / "benchmark.png")
            results.append((imgsz, record, (args.out / f"edge-{imgsz}" / "benchmark.md").read_text().strip()))
        write_section(args.report, section(results, record["settings"].get("command", "python benchmarks/edge.py")))
        print(f"wrote {args.report}")
        return

    os.environ.setdefault("YOLO_OFFLINE", "1")
    from yolo_ldac.utils.env import setup_offline_env

    setup_offline_env()
    from yolo_ldac.deploy.benchmark import parse_list, run_benchmark

    if not args.data.is_file():
        sys.exit(f"edge.py: {args.data} is missing: python -m yolo_ldac.data.composite (see benchmarks/README.md)")
    models = checkpoints(args.project)
    command = "python benchmarks/edge.py " + " ".join(sys.argv[1:])
    results = []
    for imgsz in args.imgsz:
        t = time.time()
        res = run_benchmark(models, formats=parse_list(args.formats, "formats"),
                            precisions=parse_list(args.precisions, "precisions"), imgsz=imgsz, data=args.data,
                            runs=args.runs, warmup=args.warmup, out_dir=args.out / f"edge-{imgsz}",
                            accuracy=imgsz == 160)
        print(res.table, f"\n{imgsz} px done in {time.time() - t:.0f} s", flush=True)
        record = json.loads(res.files["json"].read_text(encoding="utf-8"))
        results.append((imgsz, record, res.table))
        for label in models:  # the exports are reproducible from the checkpoints; keep only the results
            shutil.rmtree(res.out_dir / label)
    write_section(args.report, section(results, command.strip()))
    print(f"wrote {args.report}")


if __name__ == "__main__":
    main()
