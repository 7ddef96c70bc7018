"""The base model of the retention curves: the COCO YOLO11n fine-tuned on the composite set until val mAP plateaus.

Uses the library's training path (``YOLOLDAC(weights).finetune(...)``: a ``PrunedDetectionTrainer`` on the model
adapted to the data's class names), with ``nbs == batch`` (one optimizer step per batch; Ultralytics accumulates gradients to
``nbs=64`` otherwise) and ``warmup_epochs <= 1``. Ultralytics' ``time`` limit (hours) bounds the wall time; its
``patience`` stops on a plateau. Writes the checkpoint under ``runs/base/<name>/`` (git-ignored) and a JSON describing
it (settings, the val curve from results.csv, the plateau evidence, wall time, machine) to
``benchmarks/results/retention/<data>/base.json``.

Usage:
    python benchmarks/retention_base.py --data datasets/composite-400x160/data.yaml --epochs 80
    python benchmarks/retention_base.py --data datasets/composite-1024x416/data.yaml --imgsz 416 --batch 32 \
        --device 0 --workers 4 --epochs 60        # the GPU grid's base (benchmarks/grid.py --preset gpu)
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "benchmarks"):  # the package, and the scripts' shared module (common.py)
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))
os.environ.setdefault("YOLO_CONFIG_DIR", str(ROOT / ".cache" / "ultralytics"))
from yolo_ldac.utils.env import setup_offline_env, shared_weights_dir  # noqa: E402

setup_offline_env(offline=True)
from common import data_key  # noqa: E402  (benchmarks/common.py)


def read_results_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = [{k.strip(): v.strip() for k, v in row.items()} for row in csv.DictReader(fh)]
    keep = ("epoch", "metrics/mAP50-95(B)", "metrics/mAP50(B)", "metrics/mAP50-95(M)", "metrics/mAP50(M)",
            "metrics/mAP50-95(P)", "metrics/mAP50(P)", "train/box_loss", "train/cls_loss", "train/seg_loss",
            "train/pose_loss", "val/box_loss", "val/cls_loss", "lr/pg0", "time")
    return [{k: float(r[k]) for k in keep if r.get(k) not in (None, "")} for r in rows]


def task_metric(curve: list[dict]) -> str:
    """The results.csv column of the model's own mAP50-95: mask (M) for segment, keypoints (P) for pose, else box."""
    for key in ("metrics/mAP50-95(M)", "metrics/mAP50-95(P)"):
        if curve and key in curve[0]:
            return key
    return "metrics/mAP50-95(B)"


def plateau_evidence(curve: list[dict], window: int = 5, margin: float = 0.01, metric: str | None = None) -> dict:
    """The plateau rule of the benchmark (issue 11): the mean mAP50-95 of the last ``window`` epochs within
    ``margin`` of the best epoch (``rule_met``). Also the best ``window``-epoch moving average (a single lucky epoch
    of a noisy curve sets ``best`` but not this) and the rule against it (``rule_met_moving_average``), and whether the
    curve is still rising (``rising``: the last window's mean more than ``margin`` above the window before it; a
    rising curve passes the moving-average test trivially, so ``plateau_robust`` needs both). ``metric``: the column
    (default: :func:`task_metric`, the model's own mAP50-95).

    Example:
        >>> ev = plateau_evidence([{"epoch": e, "metrics/mAP50-95(B)": m} for e, m in enumerate([.1, .2, .3, .3, .3], 1)], 2)
        >>> ev["mean_last_2"], ev["rule_met"]
        (0.3, True)
    """
    metric = metric or task_metric(curve)
    maps = [r[metric] for r in curve]
    if not maps:
        return {}
    best = max(range(len(maps)), key=maps.__getitem__)
    last = maps[-window:]
    prev = maps[-2 * window:-window] or maps[:1]
    mean_last = sum(last) / len(last)
    mean_prev = sum(prev) / len(prev)
    moving = [sum(maps[i:i + window]) / window for i in range(len(maps) - window + 1)] or [mean_last]
    best_ma = max(range(len(moving)), key=moving.__getitem__)
    return {"metric": metric, "best_epoch": int(curve[best]["epoch"]), "best_map50_95": maps[best], "epochs": len(maps),
            f"max_last_{window}": max(last), f"max_previous_{window}": max(prev),
            f"gain_last_{window}_vs_previous": round(max(last) - max(prev), 4),
            f"mean_last_{window}": round(mean_last, 5), "margin": margin,
            "rule_met": bool(mean_last >= maps[best] - margin - 1e-12),
            f"best_moving_average_{window}": round(moving[best_ma], 5),
            f"best_moving_average_{window}_ends_epoch": int(curve[best_ma + window - 1]["epoch"]) if len(maps) >= window
            else int(curve[-1]["epoch"]),
            "rule_met_moving_average": bool(mean_last >= moving[best_ma] - margin - 1e-12),
            f"mean_previous_{window}": round(mean_prev, 5), "rising": bool(mean_last - mean_prev > margin),
            "plateau_robust": bool(mean_last >= moving[best_ma] - margin - 1e-12 and mean_last - mean_prev <= margin)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--weights", default=str(shared_weights_dir() / "yolo11n-coco.pt"))
    ap.add_argument("--name", default=None, help="run name under runs/base (default: yolo11n-<data>)")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--hours", type=float, default=0.0, help="Ultralytics' time limit in hours (0: none; it re-plans the epochs and so the LR schedule)")
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--imgsz", type=int, default=160)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu, 0, ... (the GPU grid's base: 0)")
    ap.add_argument("--workers", type=int, default=0, help="dataloader workers")
    ap.add_argument("--lr-scale", type=float, default=1.0,
                    help="multiply the learning rates Ultralytics picks (yolo-ldac's lr_scale key; 1: its defaults)")
    ap.add_argument("--close-mosaic", type=int, default=10,
                    help="Ultralytics' close_mosaic: the last epochs train without mosaic (0: mosaic throughout)")
    ap.add_argument("--record", default="base.json",
                    help="file name of the JSON record under benchmarks/results/retention/<data>/")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from ultralytics.data.utils import check_det_dataset

    from yolo_ldac import YOLOLDAC
    from yolo_ldac.utils.env import machine_info

    data = Path(args.data).resolve()
    key = data_key(data)
    name = args.name or f"yolo11n-{key}"
    project = ROOT / "runs" / "base"
    run_dir = project / name
    if run_dir.exists():
        shutil.rmtree(run_dir)
    info = check_det_dataset(str(data))
    ultra = dict(imgsz=args.imgsz, batch=args.batch, nbs=args.batch, warmup_epochs=1, workers=args.workers,
                 device=args.device,
                 seed=0, deterministic=True, plots=False, patience=args.patience, verbose=False,
                 val=True, amp=False, close_mosaic=args.close_mosaic)
    ultra["lr_scale"] = args.lr_scale  # the user's own Ultralytics training: never yolo-ldac's lr_scale=auto
    if args.hours > 0:
        ultra["time"] = args.hours
    t0 = time.perf_counter()
    result = YOLOLDAC(str(args.weights)).finetune(data=str(data), epochs=args.epochs, project=str(project), name=name,
                                                  exist_ok=True, **ultra)
    wall = time.perf_counter() - t0
    stable = project / f"{name}.pt"
    shutil.copy2(result.best, stable)
    last = Path(result.best).with_name("last.pt")
    if last.is_file():  # the final epoch too: with a plateau, best and last differ by noise
        shutil.copy2(last, project / f"{name}-last.pt")
    curve = read_results_csv(run_dir / "finetune" / "results.csv")
    from yolo_ldac.engine.trainer import trainer_class
    from yolo_ldac.tasks import task_of

    task = task_of(YOLOLDAC(str(stable)).model) or "detect"
    rec = {
        "what": "base model of the retention curves", "weights": str(stable), "source_weights": str(args.weights),
        "data": str(data), "data_key": key, "names": info["names"],
        "settings": {**ultra, "epochs": args.epochs,
                     "training_path": f"YOLOLDAC.finetune ({trainer_class(task, push=False).__name__})"},
        "task": task, "params": result.after.get("params_m"),
        "after": {k: v for k, v in result.after.items() if "map" in k},
        "val_curve": curve, "plateau": plateau_evidence(curve), "wall_s": round(wall, 1),
        "machine": machine_info(), "date": datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    out = ROOT / "benchmarks" / "results" / "retention" / key / args.record
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rec, indent=1, default=str), encoding="utf-8")
    print(json.dumps(rec["plateau"]), f"wall {wall:.0f}s ->", stable)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
