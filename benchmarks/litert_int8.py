"""What LiteRT int8 keeps in float, measured: every model exported with ``int8_float=none`` (every operator int8, as
Ultralytics exports) and ``int8_float=auto`` (the attention's matmuls and softmax and the first convolution in float,
:mod:`yolo_ldac.deploy.litert_int8`), all files timed in one interleaved run (one thread), next to the fp32 file.

Writes ``benchmarks/results/profile/<name>.md`` and ``.json``; docs/deployment.md (section 7) quotes them.

Usage:
    python benchmarks/litert_int8.py --name yolo11n-640-int8-float \\
        --models dense=runs/speed/yolo11n-coco-dense/weights/dense_fused.pt \\
                 auto=runs/speed/yolo11n-coco-flops-auto/weights/best.pt
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("YOLO_CONFIG_DIR", str(ROOT / ".cache" / "ultralytics"))
from yolo_ldac.utils.env import setup_offline_env  # noqa: E402

setup_offline_env(offline=True)

SETTINGS = (("fp32", None), ("int8", "none"), ("int8", "auto"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", required=True)
    ap.add_argument("--models", nargs="+", required=True, help="label=path.pt; the first is the reference")
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--calib-images", type=int, default=64)
    ap.add_argument("--data", type=Path, default=ROOT / "datasets" / "composite-400x160" / "data.yaml")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "profile")
    args = ap.parse_args()

    from yolo_ldac.deploy.benchmark import time_interleaved
    from yolo_ldac.deploy.parity import default_images, preprocess_image
    from yolo_ldac.export import export_checked
    from yolo_ldac.utils.env import machine_info

    models = dict(spec.split("=", 1) for spec in args.models)
    x = preprocess_image(default_images()[0], (args.imgsz, args.imgsz))
    rows = {}
    with tempfile.TemporaryDirectory(prefix="litert-int8-") as tmp:
        files = {}
        for label, pt in models.items():
            for prec, kept in SETTINGS:
                local = Path(tmp) / f"{label}-{kept or prec}" / f"{label}.pt"
                local.parent.mkdir(parents=True)
                shutil.copy2(pt, local)
                e = export_checked(local, format="litert", imgsz=args.imgsz, int8=prec == "int8", data=args.data,
                                   parity=False, calib_images=args.calib_images, int8_float=kept or "auto")
                files[(label, prec, kept)] = e.path
                print(label, prec, kept, e.path.name, flush=True)
        stats = time_interleaved(files, x, threads=[1], runs=args.runs, warmup=args.warmup)
        for key, by_threads in stats.items():
            rows[key] = by_threads["1"]["median_ms"]
    labels = list(models)
    head = "| model | fp32 (ms) | int8, `int8_float=none` (ms) | int8, `int8_float=auto` (ms) | auto against none |"
    md = [f"Written by `benchmarks/litert_int8.py` on {time.strftime('%Y-%m-%d')} (`{' '.join(sys.argv[1:])}`); "
          f"machine: {machine_info()['cpu']}; LiteRT (XNNPACK), one thread, {args.imgsz} px, median of {args.runs} "
          f"runs, all files timed in one interleaved run; int8 calibrated on {args.calib_images} train images.", "",
          head, "| --- | ---: | ---: | ---: | ---: |"]
    for label in labels:
        f32, none, auto = (rows[(label, p, k)] for p, k in SETTINGS)
        md.append(f"| {label} | {f32:.2f} | {none:.2f} | {auto:.2f} | {none / auto:.2f}x |")
    ref = labels[0]
    md += ["", f"Speed-up against `{ref}` in the same setting: " + "; ".join(
        f"`{label}` " + ", ".join(f"{'fp32' if k is None else k} {rows[(ref, p, k)] / rows[(label, p, k)]:.2f}x"
                                  for p, k in SETTINGS) for label in labels[1:]) + "."]
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"settings": {k: str(v) for k, v in vars(args).items()}, "machine": machine_info(),
              "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "median_ms": {f"{label}/{p}/{k or '-'}": ms for (label, p, k), ms in rows.items()}}
    (args.out / f"{args.name}.json").write_text(json.dumps(record, indent=1))
    (args.out / f"{args.name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
