"""LDAC's costs: push-loss overhead per training epoch, and one trace against one validation pass.

1. Push overhead, two ways: (a) one training step (forward + loss + backward, batch 16), median of 9, with
   Ultralytics' detection loss and with the LDAC loss; (b) whole epochs: the same model trained with
   PrunedDetectionTrainer and PushTrainer(push=ldac) (validation off), median epoch duration after the first (from
   results.csv's cumulative ``time`` column; epoch 1 carries the set-up). (b) includes data loading and is
   noisy at this size (4 steps per epoch); (a) isolates the loss.
   The push step of (a) is the LDAC loss (J from pooled statistics) plus the handoff's per-step work (cutting the
   gradients of the released columns and setting them on the schedule, :mod:`yolo_ldac.push.handoff`), measured
   on a real handoff of 12.5 % of the FLOPs.
2. Times the trace of ``criterion=ldac`` (the Fisher of the assigner-located detection loss) over the calibration
   batches against one Ultralytics validation pass of the same model on the val split, in total and per image;
   the first-version discriminant trace (``ldac_j``) is timed too.

Writes benchmarks/results/ldac_overhead.json with the machine. Default: COCO YOLO11n from ../shared/weights
on a generated shapes set (64 train / 16 val, 160 px), CPU.

Usage: python benchmarks/ldac_overhead.py [--model PATH] [--imgsz 160] [--epochs 3]
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yolo_ldac  # noqa: E402,F401
from yolo_ldac.data.shapes import make_shapes_dataset  # noqa: E402
from yolo_ldac.utils.env import machine_info, shared_weights_dir  # noqa: E402


def epoch_seconds(results_csv: Path) -> list[float]:
    rows = list(csv.DictReader(open(results_csv)))
    t = [float(r["time"].strip() if "time" in r else r[" time"]) for r in rows]
    return [b - a for a, b in zip([0.0] + t[:-1], t)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(shared_weights_dir() / "yolo11n-coco.pt"))
    ap.add_argument("--imgsz", type=int, default=160)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ldac_overhead.json"))
    args = ap.parse_args()

    from ultralytics.data.utils import check_det_dataset

    from yolo_ldac.api import validate
    from yolo_ldac.engine.trainer import PrunedDetectionTrainer, PushTrainer
    from yolo_ldac.push import build_push
    from yolo_ldac.ldac.criterion import DiscriminantTraceCriterion
    from yolo_ldac.parts import build_parts
    from yolo_ldac.nn.adapter import adapt_head_to_names, load_detection_model, rewrite_split_blocks
    from yolo_ldac.pruning.calibration import build_calibration_batches

    data = make_shapes_dataset(ROOT / "datasets" / "shapes-bench", n_train=64, n_val=16, imgsz=args.imgsz)
    info = check_det_dataset(str(data))
    base = adapt_head_to_names(load_detection_model(args.model), info["names"], verbose=False)
    rewrite_split_blocks(base)
    common = dict(data=str(data), epochs=args.epochs, imgsz=args.imgsz, batch=16, workers=0, plots=False, val=False,
                  seed=0, deterministic=True, verbose=False)
    epochs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label in ("detection loss", "LDAC push loss"):
            model = copy.deepcopy(base)
            ov = dict(common, project=tmp, name=label.replace(" ", "_"), exist_ok=True)
            trainer = (PrunedDetectionTrainer(model=model, overrides=ov) if label == "detection loss" else
                       PushTrainer(model=model, overrides=ov, push=build_push("ldac", alpha=0.05, beta=0.01, gamma=1e-3)))
            trainer.train()
            epochs[label] = epoch_seconds(Path(trainer.save_dir) / "results.csv")
    steady = {k: sorted(v[1:])[len(v[1:]) // 2] for k, v in epochs.items()}
    overhead = steady["LDAC push loss"] / steady["detection loss"] - 1

    from ultralytics.cfg import get_cfg
    from ultralytics.utils import DEFAULT_CFG
    from ultralytics.utils.loss import v8DetectionLoss

    from yolo_ldac.ldac.loss import LDACDetectionLoss

    model = copy.deepcopy(base)
    model.args = get_cfg(DEFAULT_CFG)
    model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    step_batch = build_calibration_batches(info, imgsz=args.imgsz, batch=16, n_batches=1)[0]

    def step_seconds(loss_fn, n: int = 9) -> float:
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            loss, _ = loss_fn(model(step_batch["img"]), step_batch)
            loss.sum().backward()
            times.append(time.perf_counter() - t0)
        return sorted(times)[n // 2]

    step_det = step_seconds(v8DetectionLoss(model))
    step_ldac = step_seconds(LDACDetectionLoss(model, pooled=True))

    calib = build_calibration_batches(info, imgsz=args.imgsz, batch=8, n_batches=4)
    n_calib = sum(len(b["img"]) for b in calib)

    from yolo_ldac.nn.adapter import protected_layers
    from yolo_ldac.pruning.complexity import layer_channels, measure
    from yolo_ldac.pruning.engine import ChannelPruner
    from yolo_ldac.push.handoff import HandoffSchedule, doomed_inputs

    pruner = ChannelPruner(model, build_parts({"method": "l2"})["criterion"],
                           measure(model, 640, protected=protected_layers(model)), layer_channels(model),
                           protected_layers(model))
    handoff = HandoffSchedule(model, doomed_inputs(model, pruner.choose(0.125)), [b["img"] for b in calib])
    loss, _ = v8DetectionLoss(model)(model(step_batch["img"]), step_batch)
    loss.sum().backward()
    times = []
    for i in range(9):
        t0 = time.perf_counter()
        handoff.cut_gradients(model)
        handoff.apply(model, (i + 1) / 10, 0.1)
        times.append(time.perf_counter() - t0)
    handoff_s = sorted(times)[4]

    def time_trace(crit) -> float:
        m = copy.deepcopy(base)
        crit.prepare(m, calib)  # warm-up
        t = time.perf_counter()
        crit.prepare(m, calib)
        return time.perf_counter() - t

    trace_s = time_trace(build_parts({"method": "ldac"})["criterion"])
    trace_j_s = time_trace(DiscriminantTraceCriterion())
    model = copy.deepcopy(base)
    cfg = {"data": str(data)}
    validate(model, cfg, {"imgsz": args.imgsz, "batch": 16})  # warm-up
    t = time.perf_counter()
    validate(model, cfg, {"imgsz": args.imgsz, "batch": 16})
    val_s = time.perf_counter() - t
    n_val = 16
    result = {
        "model": Path(args.model).name, "imgsz": args.imgsz, "train_images": 64, "epochs": args.epochs,
        "step_seconds": {"detection loss": round(step_det, 4), "LDAC push loss": round(step_ldac, 4),
                         "handoff per step": round(handoff_s, 5)},
        "push_overhead_step_pct": round(100 * ((step_ldac + handoff_s) / step_det - 1), 1),
        "epoch_seconds": epochs, "median_epoch_seconds": steady, "push_overhead_epoch_pct": round(100 * overhead, 1),
        "trace_seconds": round(trace_s, 3), "trace_ldac_j_seconds": round(trace_j_s, 3), "trace_images": n_calib, "val_seconds": round(val_s, 3),
        "val_images": n_val, "trace_vs_val": round(trace_s / val_s, 2),
        "trace_vs_val_per_image": round((trace_s / n_calib) / (val_s / n_val), 2), "machine": machine_info(),
    }
    Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1))


if __name__ == "__main__":
    main()
