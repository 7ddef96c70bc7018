"""The embedded default of `make demo`: compress a detector end to end on a small generated dataset.

It builds a tiny dataset of coloured shapes (offline, deterministic), takes the COCO YOLO11n (``yolo11n.pt``,
resolved like Ultralytics does: a local file, else ``../shared/weights/yolo11n-coco.pt`` in this workplace, else
Ultralytics' download; with no network and no file it falls back to an untrained ``yolo11n.yaml``), removes 30 %
of its FLOPs with LDAC over 2 rounds with training between them, fine-tunes, and prints the
before/after report. On 2 CPU cores it takes a few minutes.

The shapes dataset is a smoke test, not a benchmark: its mAP says that the pipeline works, not how well a
criterion preserves accuracy on real images. Real comparisons live in ``benchmarks/``.
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
    for candidate in (Path(name), ROOT / name, ROOT.parent / "shared" / "weights" / "yolo11n-coco.pt"):
        if candidate.is_file():
            return str(candidate)
    if os.environ.get("YOLO_OFFLINE", "").lower() in {"1", "true"}:
        print(f"{name} is not available offline: using an untrained yolo11n.yaml instead")
        return "yolo11n.yaml"
    return name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--method", default="ldac")
    parser.add_argument("--imgsz", type=int, default=160)
    parser.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs after the last prune step")
    args = parser.parse_args()

    data = make_shapes_dataset(ROOT / "datasets" / "shapes-demo", n_train=64, n_val=16, imgsz=args.imgsz)
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
              f"on {64} images at {args.imgsz} px (a smoke test, not a benchmark).")
    print(f"Report: {result.run_dir / 'report.md'}\nWeights: {result.best}")


if __name__ == "__main__":
    main()
