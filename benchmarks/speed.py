"""Speed that arrives: dense against compressed models of today's default method in every runtime and precision, at
640 px, 1 thread and all threads, one interleaved timing run (issue 22's protocol).

For each base (``--bases``: the COCO YOLO11n and the YOLOv8s in ``../shared/weights``) the script makes, with the CLI
and the user's data (``--data``, for the class rows, calibration and int8 calibration):

- ``dense``: the base on the data's classes (``finetune epochs=0``: class rows remapped by name, nothing trained),
  in its original graph's shape (:func:`dense_form`);
- one ``prune`` run per variant (``--variants``, each ``label:key=value,...`` on top of ``ratio=0.5`` and the default
  method, LDAC with its lsq refit): ``flops-r8`` (``target=flops round_to=8``, the former default), ``flops-auto``
  (``round_to=auto``: the measured multiple of ONNX Runtime on this machine), ``latency-ort``/``latency-ov8``
  (``target=latency`` on the latency table of ONNX Runtime fp32 / OpenVINO int8), ``speedup2-ort``/``speedup2-ov8``
  (``speedup=2.0``: the measured target).

Latency does not depend on the weights, only on the widths, so no variant is trained (mAP after training comes from
the grid, ``benchmarks/grid.py``). Then ``run_benchmark`` exports every model (the export graph on, as users get it)
to every format and precision, checks raw-output parity, and times all files interleaved. Results:
``benchmarks/results/speed/<base>/benchmark.{json,md,csv,png}`` and the ``speed`` section of BENCHMARKS.md.

Usage:
    python benchmarks/speed.py                                 # both bases, onnx+openvino fp32/int8 (~25 min)
    python benchmarks/speed.py --bases yolo11n-coco --formats onnx,openvino,litert,ncnn
    python benchmarks/speed.py --report-only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
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

BASES = {"yolo11n-coco": "yolo11n-coco.pt", "yolov8s-fall": "yolov8s-fall.pt"}
VARIANTS = [
    "flops-r8:target=flops,round_to=8",
    "flops-auto:target=flops,round_to=auto",
    "latency-ort:target=latency,runtime=onnxruntime,precision=fp32,round_to=auto",
    "latency-ov8:target=latency,runtime=openvino,precision=int8,round_to=auto",
    "speedup2-ort:speedup=2.0,runtime=onnxruntime,precision=fp32,round_to=auto",
    "speedup2-ov8:speedup=2.0,runtime=openvino,precision=int8,round_to=auto",
]
SECTION = "speed"


def cli(args: list[str], log: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    cmd = [sys.executable, "-m", "yolo_ldac.cli", *args]
    with open(log, "w") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    if rc:
        raise SystemExit(f"speed.py: {' '.join(args)} failed (exit {rc}); see {log}")


def make_models(base: str, weights: Path, data: Path, project: Path, variants: list[str], imgsz: int) -> dict:
    """label -> best.pt (made once; an existing run is reused)."""
    out = {}
    common = [f"data={data}", f"project={project}", "exist_ok=True", "val_steps=False", "plots=False",
              f"imgsz={imgsz}", "threads=1"]
    dense = project / f"{base}-dense" / "weights" / "best.pt"
    if not dense.is_file():
        cli(["finetune", f"model={weights}", "epochs=0", f"name={base}-dense", *common], project / f"{base}-dense.log")
    out["dense"] = dense_form(dense)
    for spec in variants:
        label, _, kv = spec.partition(":")
        best = project / f"{base}-{label}" / "weights" / "best.pt"
        if not best.is_file():
            t = time.time()
            cli(["prune", f"model={weights}", "ratio=0.5", f"name={base}-{label}", *common,
                 *[p for p in kv.split(",") if p]], project / f"{base}-{label}.log")
            print(f"{base} {label}: pruned in {time.time() - t:.0f} s", flush=True)
        out[label] = best
    return out


def dense_form(pt: Path) -> Path:
    """The dense model in its original graph's shape (each split block one convolution and a split, as Ultralytics
    builds it): a run saves the two-convolution form, which OpenVINO ran 7-8 % slower for the dense model
    (results/profile/yolo11n-640-splits.md), so a baseline in that form would flatter the speed-ups."""
    from yolo_ldac.export import write_deploy_checkpoint
    from yolo_ldac.safe_load import policy

    out = pt.with_name("dense_fused.pt")
    if not out.is_file():
        with policy(False):
            write_deploy_checkpoint(pt, out, fuse_splits=True, fast_dfl=False)
    return out


def summary(base: str, record: dict) -> str:
    """Speed-up of every model against the dense one, per runtime, precision and thread count, with its FLOPs."""
    rows = record["rows"]
    threads = [str(t) for t in record["settings"]["threads"]]
    dense = {(r["format"], r["precision"]): r for r in rows if r["model"] == "dense"}
    lines = [f"| {base} | GFLOPs (640) | " + " | ".join(
        f"{r['format']} {r['precision']} {t} thr" for r in dense.values() if r["format"] != "pytorch"
        for t in threads) + " |"]
    lines.append("| --- | ---: |" + " ---: |" * (len(lines[0].split("|")) - 4))
    for label in dict.fromkeys(r["model"] for r in rows):
        mine = {(r["format"], r["precision"]): r for r in rows if r["model"] == label}
        cells = []
        for key, d in dense.items():
            if key[0] == "pytorch":
                continue
            m = mine.get(key)
            for t in threads:
                try:
                    dm, mm = d["latency"][t]["median_ms"], m["latency"][t]["median_ms"]
                    cells.append(f"{mm:.1f} ms ({dm / mm:.2f}x)" + (" *" if m["status"].startswith("failed") else ""))
                except (KeyError, TypeError):
                    cells.append("–")
        flops = next(iter(mine.values()))["flops_g"]
        lines.append(f"| {label} | {flops:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(results: dict[str, dict], command: str) -> None:
    from sections import write_section

    first = next(iter(results.values()))
    m = first["machine"]
    body = [f"## Speed that arrives: dense vs compressed (LDAC, 50 %) in every runtime, 640 px", "",
            f"Written by `benchmarks/speed.py` on {first['date'][:10]}; do not edit by hand. Commands: "
            + "; ".join(f"`{r['settings'].get('command', command)}`" for r in results.values()) + ". "
            f"Machine: {m['cpu']} ({m['cores']} cores, {m['cores_usable']} usable), onnxruntime {m['onnxruntime']}, "
            f"openvino {m['openvino']}, torch {m['torch']}. Every model of a base is exported with the export graph "
            "(DFL without Softmax; the dense model in its original graph's shape, the pruned ones in their split form, "
            "which the runtimes ran faster than the fused form: docs/deployment.md) and timed in one interleaved run (batch 1, median of "
            f"{first['settings']['runs']} runs after {first['settings']['warmup']} warm-up runs, blocks alternating "
            "between all files). Cells: median latency (speed-up against `dense` in the same runtime, precision "
            "and thread count); `*` marks an export whose raw-output parity check failed (timed all the same: these "
            "are untrained models pruned far past what they were trained for, with class scores of a few hundredths, "
            "and the same file exported without the export graph fails by the same amount). "
            "The models are not trained (latency depends on widths only): `flops-*` prune to 50 % of the FLOPs, "
            "`latency-*` to 50 % of the latency the table of that runtime predicts, `speedup2-*` to a measured 2x.", ""]
    for base, rec in results.items():
        mm = rec["machine"]
        if mm.get("cpu") != m.get("cpu"):  # a later pass on another machine: its rows compare only with each other
            body += [f"`{base}`: on another machine, {mm['cpu']} ({mm['cores']} cores), onnxruntime "
                     f"{mm['onnxruntime']}, openvino {mm['openvino']}; its speed-ups are against its own dense row, "
                     "timed in the same run.", ""]
        if any(r["format"] == "litert" and r["precision"] == "int8" for r in rec["rows"]):
            kept = rec["settings"].get("int8_float")  # passes before the option existed quantised everything
            body += [f"`{base}` LiteRT int8: " + (
                "the attention's matmuls and softmax and the first convolution in float (`int8_float=auto`)"
                if kept == "auto" else "every operator int8 (`int8_float=none`, as Ultralytics exports)") + ".", ""]
        body += [summary(base, rec), ""]
    write_section(SECTION, "\n".join(body))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bases", nargs="+", default=list(BASES))
    ap.add_argument("--data", type=Path, default=ROOT / "datasets" / "composite-400x160" / "data.yaml")
    ap.add_argument("--variants", nargs="+", default=VARIANTS)
    ap.add_argument("--formats", default="onnx,openvino")
    ap.add_argument("--precisions", default="fp32,int8")
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", default="1,all")
    ap.add_argument("--calib-images", type=int, default=None, help="int8 calibration images (default 300)")
    ap.add_argument("--int8-float", default="auto", help="what LiteRT int8 exports keep in float (auto or none)")
    ap.add_argument("--keep", nargs="+", default=None, help="only these model labels (after making them all)")
    ap.add_argument("--project", type=Path, default=ROOT / "runs" / "speed")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "speed")
    ap.add_argument("--tag", default="", help="results go to <out>/<base><tag> (a second pass keeps the first)")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    command = "python benchmarks/speed.py " + " ".join(sys.argv[1:])
    results = {}
    if not args.report_only:
        from yolo_ldac.deploy.benchmark import parse_list, parse_threads, run_benchmark
        from yolo_ldac.utils.env import shared_weights_dir

        if not args.data.is_file():
            raise SystemExit(f"speed.py: {args.data} not found (benchmarks/README.md: the composite set)")
        args.project.mkdir(parents=True, exist_ok=True)
        for base in args.bases:
            models = make_models(base, shared_weights_dir() / BASES[base], args.data.resolve(), args.project,
                                 args.variants, args.imgsz)
            if args.keep:
                models = {k: v for k, v in models.items() if k in args.keep}
            t = time.time()
            res = run_benchmark(models, formats=parse_list(args.formats, "formats"),
                                precisions=parse_list(args.precisions, "precisions"), imgsz=args.imgsz,
                                data=args.data, runs=args.runs, warmup=args.warmup,
                                threads=parse_threads(args.threads), out_dir=args.out / f"{base}{args.tag}",
                                accuracy=False, calib_images=args.calib_images, int8_float=args.int8_float)
            print(res.table, f"\n{base}: benchmark in {time.time() - t:.0f} s", flush=True)
            rec = json.loads(res.files["json"].read_text())
            rec["settings"]["command"] = command
            rec["settings"]["int8_float"] = args.int8_float
            res.files["json"].write_text(json.dumps(rec, indent=1))
            import shutil

            for label in models:
                shutil.rmtree(res.out_dir / label, ignore_errors=True)
    for d in sorted(args.out.iterdir()) if args.out.is_dir() else []:
        if (d / "benchmark.json").is_file():
            results[d.name] = json.loads((d / "benchmark.json").read_text())
    if results:
        write_report(results, command)
        print("wrote BENCHMARKS.md section", SECTION)


if __name__ == "__main__":
    main()
