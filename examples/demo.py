"""The embedded default of `make demo`: compress a detector end to end on a small generated dataset.

It builds a small composite set of real objects on real backgrounds (``yolo_ldac.data.composite``; 64 train /
32 val images; with Debian's opencv-doc installed, ``make bench-data``, it has 10 classes) or, where the
segmentation weights or photos are missing, a tiny set of generated shapes; takes the COCO YOLO11n (``yolo11n.pt``,
resolved like Ultralytics does: a local file, else ``../shared/weights/yolo11n-coco.pt`` in this workplace, else
Ultralytics' download; with no network and no file it falls back to an untrained ``yolo11n.yaml``), removes 30 %
of its FLOPs with LDAC over 2 rounds with training between them, fine-tunes, and prints the
before/after report. On 2 CPU cores it takes a few minutes.

Either set is a smoke test, not a benchmark: 64 images and a few epochs say that the pipeline works, not how
well a criterion preserves accuracy. Comparisons at equal FLOPs and epochs live in ``benchmarks/compare.py``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import yolo_ldac  # noqa: F401  (sets up Ultralytics' private config dir before it is imported)
from yolo_ldac import YOLOLDAC
from yolo_ldac.data.shapes import make_shapes_dataset

ROOT = Path(__file__).resolve().parents[1]


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


def demo_data(imgsz: int) -> Path:
    """The composite real-image set when it can be built with at least 5 classes, else generated shapes."""
    try:
        from yolo_ldac.data.composite import build_composite

        data = build_composite(ROOT / "datasets" / f"composite-demo-{imgsz}", n_train=64, n_val=32, imgsz=imgsz)
        import yaml

        n_classes = len(yaml.safe_load(Path(data).read_text())["names"])
        if n_classes >= 5:
            return Path(data)
        print(f"composite set has only {n_classes} classes (install opencv-doc: make bench-data): using shapes")
    except Exception as e:  # missing seg weights or photos: the demo still runs, on shapes
        print(f"composite set unavailable ({str(e).splitlines()[0] if str(e) else type(e).__name__}): using shapes")
    return make_shapes_dataset(ROOT / "datasets" / "shapes-demo", n_train=64, n_val=16, imgsz=imgsz)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--method", default="ldac")
    parser.add_argument("--imgsz", type=int, default=160)
    parser.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs after the last prune step")
    args = parser.parse_args()

    data = demo_data(args.imgsz)
    model = args.model or resolve_model()
    result = YOLOLDAC(model).compress(
        data=str(data), ratio=args.ratio, method=args.method, rounds=2, epochs_per_round=1,
        finetune_epochs=args.epochs, imgsz=args.imgsz, batch=16, project=str(ROOT / "runs" / "demo"), name="exp",
        plots=False,
    )
    b, a = result.before.get("map50_95"), result.after.get("map50_95")
    epochs = sum(len(f.read_text().strip().splitlines()) - 1 for f in result.run_dir.rglob("results.csv"))
    if b is not None and a is not None:
        verdict = "kept" if a >= b - 0.005 else "lost"
        print(f"\nmAP50-95 {b:.3f} -> {a:.3f}: {verdict} {abs(a - b) * 100:.1f} points with "
              f"{result.removed['flops_pct']:.1f} % fewer FLOPs after {epochs} epochs of training "
              f"on 64 images at {args.imgsz} px (a smoke test, not a benchmark).")
    print(f"Report: {result.run_dir / 'report.md'}\nWeights: {result.best}")


if __name__ == "__main__":
    main()
