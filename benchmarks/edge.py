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

``--ncnn-rows`` runs the same protocol (``run_benchmark``: export, raw and mAP parity, interleaved timing) without
compare.py's runs, for NCNN beside ONNX Runtime and LiteRT: the COCO YOLO11n (``../shared/weights``) and its one-step
``l2`` prune to 50 % FLOPs (no training), with mAP on a set of real photos labelled by the COCO model itself
(bus.jpg, zidane.jpg, their mirror images); section ``edge-ncnn`` of BENCHMARKS.md.

Usage:
    python benchmarks/compare.py --models yolo11n-coco --ratios 0.5 --methods dense ldac group_fisher --seeds 0
    python benchmarks/edge.py                       # ~15 min on 2 CPU cores
    taskset -c 1 python benchmarks/edge.py --ncnn-rows  # NCNN vs ONNX Runtime vs LiteRT, one core (~10 min)
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
             f"openvino {m.get('openvino')}, ncnn {m.get('ncnn')}. These are x86 server-CPU numbers, not Raspberry Pi / Jetson / phone "
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
    ap.add_argument("--formats", default="onnx,litert,openvino,ncnn")
    ap.add_argument("--precisions", default="fp32,fp16,int8")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--report", type=Path, default=ROOT / "BENCHMARKS.md")
    ap.add_argument("--report-only", action="store_true", help="rewrite the section from the saved JSON results")
    ap.add_argument("--ncnn-rows", action="store_true",
                    help="NCNN beside ONNX Runtime and LiteRT on the COCO YOLO11n and its 50 %% l2 prune (module doc)")
    args = ap.parse_args()
    if args.ncnn_rows:
        return ncnn_rows(args)
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


NCNN_START = "edge-ncnn"


def ncnn_rows(args) -> None:
    """The ``--ncnn-rows`` benchmark (module docstring): one JSON per input size under results/edge-ncnn-<imgsz>/."""
    import tempfile

    os.environ.setdefault("YOLO_OFFLINE", "1")
    from yolo_ldac.utils.env import setup_offline_env, shared_weights_dir

    setup_offline_env()
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import teacher_dataset  # real photos labelled by the model itself (tests use the same set)

    from yolo_ldac import YOLOLDAC
    from yolo_ldac.deploy.benchmark import parse_list, run_benchmark

    coco = shared_weights_dir() / "yolo11n-coco.pt"
    if not coco.is_file():
        sys.exit(f"edge.py: {coco} is missing")
    formats = parse_list(args.formats if args.formats != "onnx,litert,openvino,ncnn" else "onnx,litert,ncnn",
                         "formats")
    precisions = parse_list(args.precisions if args.precisions != "fp32,fp16,int8" else "fp32", "precisions")
    command = "python benchmarks/edge.py " + " ".join(sys.argv[1:])
    results = []
    with tempfile.TemporaryDirectory(prefix="yolo-ldac-edge-ncnn-") as tmp:
        tmp = Path(tmp)
        shutil.copy2(coco, tmp / "dense.pt")
        data = teacher_dataset(tmp / "dense.pt", tmp / "teacher", imgsz=160, conf=0.25)
        res = YOLOLDAC(str(tmp / "dense.pt")).prune(data=str(data), ratio=0.5, method="l2", rounds=1, imgsz=160,
                                                   batch=4, workers=0, project=str(tmp / "runs"), name="l2",
                                                   plots=False, verbose=False)
        models = {"dense": tmp / "dense.pt", "l2-50": res.best}
        for imgsz in args.imgsz:
            t = time.time()
            out = args.out / f"edge-ncnn-{imgsz}"
            bench = run_benchmark(models, formats=formats, precisions=precisions, imgsz=imgsz, data=data,
                                  runs=args.runs, warmup=args.warmup, out_dir=out, accuracy=imgsz == 160)
            print(bench.table, f"\n{imgsz} px done in {time.time() - t:.0f} s", flush=True)
            record = json.loads(bench.files["json"].read_text(encoding="utf-8"))
            record["settings"]["command"] = command.strip()
            bench.files["json"].write_text(json.dumps(record, indent=1), encoding="utf-8")
            results.append((imgsz, record, bench.table))
            for label in models:
                shutil.rmtree(bench.out_dir / label, ignore_errors=True)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from sections import write_section as write_named

    write_named(NCNN_START, ncnn_section(results, command.strip()), report=args.report, after="edge")
    print(f"wrote {args.report}")


def ncnn_section(results: list[tuple[int, dict, str]], command: str) -> str:
    first = results[0][1]
    m = first["machine"]
    lines = ["## Edge runtimes with NCNN: yolo11n-coco dense vs one-step l2 prune to 50 % FLOPs", "",
             f"Written by `benchmarks/edge.py --ncnn-rows` on {first['date']}; do not edit by hand. Command: "
             f"`{command}`.", "",
             f"Machine: {m['cpu']} ({m['cores_usable']} usable core(s)), no GPU; torch {m['torch']}, onnxruntime "
             f"{m.get('onnxruntime')}, ai-edge-litert {m.get('ai_edge_litert')}, ncnn {m.get('ncnn')}. x86 server "
             "CPU numbers, not Raspberry Pi ones (docs/deployment.md says how to measure on a Pi).", "",
             "Same protocol as the table above (`run_benchmark`: each export passes the raw-output parity check "
             "against PyTorch on bus.jpg and zidane.jpg, and at 160 px the mAP check, or says `failed`; timed runs "
             "interleaved in 5 blocks), on other models, because the table above needs compare.py's trained "
             "checkpoints: `dense` is the COCO YOLO11n as shipped (80 classes), `l2-50` the same model pruned "
             "to 50 % of its FLOPs in one `l2` step with mean compensation and no training (its mAP is low; it "
             "is here for latency). mAP50-95 is on 4 real photos (bus.jpg, zidane.jpg and their mirror images) "
             "labelled by the COCO model itself at conf 0.25, so the dense model scores high by construction.", ""]
    for imgsz, record, table in results:
        s = record["settings"]
        lines += [f"### {imgsz} px", "", f"{s['runs']} timed runs after {s['warmup']} warm-up runs, threads "
                  f"{s['threads']}.", "", table, ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
