"""The embedded default of `make demo`: the user's flow on a small dataset, end to end.

1. Data: a small composite set of real objects on real backgrounds (``yolo_ldac.data.composite``; 64 train / 32 val
   images, 10 classes) cut out of the photos of Debian's opencv-doc (``make bench-data``, as root). Without those
   photos (or the COCO YOLO11n-seg weights that cut them out) the demo stops with one line saying how to get them;
   ``--shapes`` (or ``YOLO_LDAC_DEMO_SHAPES=1``; ``make demo DEMO_ARGS=--shapes``) runs it on generated shapes
   instead, and says so.
2. Base: the COCO YOLO11n (``yolo11n.pt``: a local file, else ``../shared/weights/yolo11n-coco.pt`` in this
   workplace, else Ultralytics' download; offline with neither, an untrained ``yolo11n.yaml``) trained on that data
   with ``YOLOLDAC(model).finetune`` (``--base-epochs``, one optimizer step per batch). The base is cached as
   ``runs/demo/base-<hash of its settings>.pt`` and reused by the next run with the same settings.
3. Compress the base: 30 % of its FLOPs removed with LDAC in 2 prune steps, training between them and after, the
   widths rounded to the multiple ONNX Runtime is measured to want on this machine (``round_to=auto``).
4. Compare base and compressed: mAP50-95 and mAP50 on the val split (the compress report's *before* is the base),
   FLOPs and params removed, and ONNX Runtime CPU latency of both at 640 px (``YOLOLDAC(best).benchmark(
   baseline=base)``: each export parity-checked, ``--latency-runs`` timed runs, 1 thread and all threads,
   interleaved).

Measured after ``make install`` (about 4 min the first time), pinned to one core of a 2-core machine
(``taskset -c 0``): 121 s with every cache empty (the data to build, its photos to segment, the widths to measure, the
base to train), 49 s with all of them cached; the speed-up line read 1.34x, 1.34x and 1.33x in three runs (slower
when the core is shared). A smoke test of the
flow, not a benchmark: 64 images and a few epochs say that the pipeline works, not how well a criterion preserves
accuracy; comparisons at equal FLOPs and optimizer steps live in ``benchmarks/grid.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import yolo_ldac  # noqa: F401  (sets up Ultralytics' private config dir before it is imported)
from yolo_ldac import YOLOLDAC
from yolo_ldac.data.shapes import make_shapes_dataset

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ROOT / "runs" / "demo"


def resolve_model(name: str = "yolo11n.pt") -> str:
    """A local checkpoint if there is one, else the workplace's shared copy, else the Ultralytics name."""
    from yolo_ldac.utils.env import shared_weights_dir

    for candidate in (Path(name), ROOT / name, shared_weights_dir() / "yolo11n-coco.pt"):
        if candidate.is_file():
            return str(candidate)
    if os.environ.get("YOLO_OFFLINE", "").lower() in {"1", "true"}:
        print(f"{name} is not available offline: using an untrained yolo11n.yaml instead")
        return "yolo11n.yaml"
    return name


SHAPES_HINT = "or run on generated shapes instead: make demo DEMO_ARGS=--shapes (python examples/demo.py --shapes)"
SEG_WEIGHTS = "yolo11n-seg-coco.pt"


def real_images_missing() -> str | None:
    """Why the real-image set cannot be built here (one line, with how to fix it), or None when it can."""
    from yolo_ldac.data.composite import _opencv_doc_images
    from yolo_ldac.utils.env import shared_weights_dir

    if not _opencv_doc_images():
        return ("the demo's real images are the photos of Debian's opencv-doc package, which is not installed: "
                f"run `make bench-data` (as root; it runs apt-get install opencv-doc), {SHAPES_HINT}")
    seg = shared_weights_dir() / SEG_WEIGHTS
    if not seg.is_file():
        return (f"the demo cuts objects out of its photos with the COCO YOLO11n-seg weights, not found at {seg}: "
                f"put Ultralytics' yolo11n-seg.pt there (or set YOLO_LDAC_SHARED_WEIGHTS to its folder), {SHAPES_HINT}")
    return None


def demo_data(imgsz: int, shapes: bool = False) -> Path:
    """The composite real-image set (at least 5 classes); generated shapes only when ``shapes`` asks for them.
    Without the photos or weights it needs, :class:`SystemExit` with one line, before anything is written."""
    if shapes:
        print("Data: generated shapes (--shapes): a smoke test of the flow, not real images")
        return make_shapes_dataset(ROOT / "datasets" / "shapes-demo", n_train=64, n_val=16, imgsz=imgsz)
    problem = real_images_missing()
    if problem:
        raise SystemExit(f"demo: {problem}")
    import yaml

    from yolo_ldac.data.composite import build_composite
    from yolo_ldac.errors import LDACError
    from yolo_ldac.utils.env import shared_weights_dir

    out = ROOT / "datasets" / f"composite-demo-{imgsz}"
    try:
        data = Path(build_composite(out, n_train=64, n_val=32, imgsz=imgsz,
                                    seg_weights=shared_weights_dir() / SEG_WEIGHTS))
    except LDACError as e:
        shutil.rmtree(out, ignore_errors=True)
        raise SystemExit(f"demo: the real-image set could not be built ({str(e).splitlines()[0]}); {SHAPES_HINT}")
    n_classes = len(yaml.safe_load(data.read_text(encoding="utf-8"))["names"])
    if n_classes < 5:
        shutil.rmtree(out, ignore_errors=True)
        raise SystemExit(f"demo: the real-image set has only {n_classes} classes (the opencv-doc photos are "
                         f"incomplete: run `make bench-data`); {SHAPES_HINT}")
    return data


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else str(path)


def base_settings(model: str, data: Path, args: argparse.Namespace) -> dict:
    """Everything the base depends on: the input model's bytes, the data's yaml and images, the training."""
    images = sorted(p for p in data.parent.rglob("*") if p.suffix.lower() in {".jpg", ".png"})
    images_digest = hashlib.sha256(b"".join(_file_digest(p).encode() for p in images)).hexdigest()
    return {"model": model, "model_sha256": _file_digest(Path(model)), "data": str(data),
            "data_yaml": data.read_text(encoding="utf-8"), "images_sha256": images_digest,
            "epochs": args.base_epochs, "imgsz": args.imgsz, "batch": args.batch, "nbs": args.batch,
            "warmup_epochs": 1, "seed": 0}


def train_base(model: str, data: Path, args: argparse.Namespace) -> Path:
    """The base: ``model`` trained on ``data``, cached as ``runs/demo/base-<hash>.pt`` (reused when it exists)."""
    settings = base_settings(model, data, args)
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    base = PROJECT / f"base-{digest}.pt"
    if base.is_file():
        print(f"Base: reusing {base} (same model, data and training settings)")
        return base
    print(f"Base: training {Path(model).name} on {data.parent.name} for {args.base_epochs} epochs ...")
    result = YOLOLDAC(model).finetune(data=str(data), epochs=args.base_epochs, imgsz=args.imgsz, batch=args.batch,
                                      nbs=args.batch, warmup_epochs=1, seed=0, workers=0, plots=False,
                                      lr_scale=1.0,  # the user's own Ultralytics training, not yolo-ldac's auto
                                      portable=False, project=str(PROJECT), name=f"base-{digest}", exist_ok=True)
    shutil.copy2(result.best, base)
    base.with_suffix(".json").write_text(json.dumps({k: v for k, v in settings.items() if k != "data_yaml"},
                                                    indent=1), encoding="utf-8")
    return base


def onnx_latency(best: Path, base: Path, args: argparse.Namespace) -> dict[str, dict]:
    """Median ONNX Runtime CPU ms per model and thread count: ``{"dense": {"1": ms, "2": ms}, "compressed": ...}``."""
    res = YOLOLDAC(str(best)).benchmark(baseline=str(base), formats="onnx", precisions="fp32",
                                        imgsz=args.latency_imgsz, runs=args.latency_runs, warmup=5, threads="1,all",
                                        plots=False,
                                        project=str(PROJECT), name="benchmark", exist_ok=True)
    return {r.model: {n: v["median_ms"] for n, v in r.latency.items()} for r in res.rows if r.format == "onnx"}


def summary(result, latency: dict[str, dict], epochs: int, args: argparse.Namespace) -> str:
    """The base-vs-compressed table."""
    b, a = result.before, result.after
    at = f"{args.imgsz} px"
    flops_px = int(result.report.get("flops_imgsz") or 640)
    rows = [(f"mAP50-95 ({at})", f"{b['map50_95']:.3f}", f"{a['map50_95']:.3f}",
             f"{100 * (a['map50_95'] - b['map50_95']):+.1f} pts"),
            (f"mAP50 ({at})", f"{b['map50']:.3f}", f"{a['map50']:.3f}", f"{100 * (a['map50'] - b['map50']):+.1f} pts"),
            (f"GFLOPs ({flops_px} px)", f"{b['flops_g']:.3f}", f"{a['flops_g']:.3f}",
             f"{result.removed['flops_pct']:.1f} % removed"),
            ("params (M)", f"{b['params_m']:.3f}", f"{a['params_m']:.3f}",
             f"{result.removed['params_pct']:.1f} % removed")]
    dense, comp = latency.get("dense", {}), latency.get("compressed", {})
    for n in sorted(set(dense) & set(comp), key=int):
        ratio = dense[n] / comp[n]
        rows.append((f"ONNX ms, {n} thr ({args.latency_imgsz} px)", f"{dense[n]:.2f}", f"{comp[n]:.2f}",
                     f"{ratio:.2f}x " + ("faster" if ratio >= 1 else "(slower)")))
    lines = [f"{'':<26}{'base':>10}{'compressed':>12}{'change':>18}"]
    lines += [f"{label:<26}{x:>10}{y:>12}{c:>18}" for label, x, y, c in rows]
    lines.append(f"\nbase: the COCO YOLO11n trained {args.base_epochs} epochs on this set; compressed: {args.method} "
                 f"removed {args.ratio:.0%} of its FLOPs in 2 steps (round_to=auto: the widths ONNX Runtime wants "
                 f"here) with {epochs} epochs of training. mAP (as `yolo val` prints it) on the val split at "
                 f"{args.imgsz} px; GFLOPs (Ultralytics' count) at {flops_px} px; latency at {args.latency_imgsz} px "
                 f"(the usual deployment size; at {args.imgsz} px fixed per-layer costs hide what pruning saves): "
                 f"ONNX Runtime CPU, batch 1, export graph, base and compressed timed interleaved, "
                 f"median of {args.latency_runs} runs. A smoke test of the flow on 64 images, not a benchmark.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="the pretrained model the base starts from")
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--method", default="ldac")
    parser.add_argument("--imgsz", type=int, default=160)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--base-epochs", type=int, default=20, help="epochs the base is trained on the data")
    parser.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs after the last prune step")
    parser.add_argument("--latency-runs", type=int, default=40)
    parser.add_argument("--latency-imgsz", type=int, default=640, help="input size the latency is measured at")
    parser.add_argument("--shapes", action="store_true",
                        default=os.environ.get("YOLO_LDAC_DEMO_SHAPES", "").lower() in {"1", "true", "yes"},
                        help="run on generated shapes instead of real images (also YOLO_LDAC_DEMO_SHAPES=1)")
    args = parser.parse_args()

    t0 = time.perf_counter()
    data = demo_data(args.imgsz, shapes=args.shapes)
    base = train_base(args.model or resolve_model(), data, args)
    result = YOLOLDAC(str(base)).compress(
        data=str(data), ratio=args.ratio, method=args.method, rounds=2, epochs_per_round=1,
        finetune_epochs=args.epochs, imgsz=args.imgsz, batch=args.batch, nbs=args.batch, warmup_epochs=1, seed=0,
        workers=0, project=str(PROJECT), name="exp", plots=False, round_to="auto")
    epochs = sum(len(f.read_text().strip().splitlines()) - 1 for f in result.run_dir.rglob("results.csv"))
    latency = onnx_latency(result.best, base, args)
    print("\n" + summary(result, latency, epochs, args))
    print(f"Base: {base}\nCompressed: {result.best}\nReport: {result.run_dir / 'report.md'}\n"
          f"Demo wall time: {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
