"""torchvision Faster R-CNN, the user's flow: a base trained from scratch on the data, then ``dense`` (the base trained
further) against methods that compress the base (``ldac``, ``group_fisher``, ...) with the same further training.

Every run trains the same epochs after the base (a method: one prune step to ``--ratio`` of the FLOPs, then
``--epochs`` of fine-tuning; ``dense``: ``--epochs`` of training), so the optimizer steps are equal. FLOPs are counted
at ``--imgsz`` with ``--rois`` RoIs per image (the box head's test-time load). Each run's JSON (in ``--out``) holds
mAP50-95 / mAP50 of the base and after, FLOPs, params, the share removed, the optimizer steps, wall time and the
machine. Finished runs are read back, never redone; the base is cached (``--project``/base.pt).

The box head's sampling is reduced for CPU (``--box-batch`` RoIs sampled per image in training, ``--rpn-train``
proposals kept after the RPN's NMS in training); both are recorded and saved with the checkpoints.

Usage:
    python benchmarks/frcnn.py --data datasets/composite-400x160/data.yaml --base-epochs 30 --epochs 10
    python benchmarks/frcnn.py --data datasets/shapes-bench/data.yaml --base-epochs 1 --epochs 1 --dry-run
    python benchmarks/frcnn.py --report-only     # rewrite the BENCHMARKS.md section from the JSON files
"""

from __future__ import annotations

import argparse
import json
import os
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

SCRIPT = "benchmarks/frcnn.py"


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT / "datasets" / "composite-400x160" / "data.yaml")
    ap.add_argument("--builder", default="fasterrcnn_mobilenet_v3_large_fpn")
    ap.add_argument("--methods", nargs="+", default=["dense", "ldac", "group_fisher"])
    ap.add_argument("--ratio", type=float, default=0.3)
    ap.add_argument("--imgsz", type=int, default=160)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--base-epochs", type=int, default=30)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--lr0", type=float, default=0.02)
    ap.add_argument("--lr-scale", type=float, default=0.5, help="the training after the base runs at lr0 x this")
    ap.add_argument("--rois", type=int, default=100)
    ap.add_argument("--box-batch", type=int, default=128)
    ap.add_argument("--rpn-train", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "frcnn")
    ap.add_argument("--project", type=Path, default=ROOT / "runs" / "frcnn")
    ap.add_argument("--report", type=Path, default=ROOT / "BENCHMARKS.md")
    ap.add_argument("--no-report", action="store_true", help="do not write the BENCHMARKS.md section")
    ap.add_argument("--dry-run", action="store_true", help="print the runs and exit")
    ap.add_argument("--report-only", action="store_true")
    return ap.parse_args(argv)


def tag(a: argparse.Namespace) -> str:
    return f"{a.builder}__{a.data.parent.name}__b{a.base_epochs}e{a.epochs}__r{a.ratio}__s{a.seed}"


def build_kwargs(a: argparse.Namespace) -> dict:
    return dict(box_batch_size_per_image=a.box_batch, rpn_post_nms_top_n_train=a.rpn_train,
                rpn_pre_nms_top_n_train=max(a.rpn_train, 1000))


def base_checkpoint(a: argparse.Namespace) -> tuple[Path, dict]:
    """The base: the builder from scratch for the data's classes, trained ``--base-epochs`` (cached)."""
    from yolo_ldac import YOLOLDAC
    from yolo_ldac.data.check import check_data
    from yolo_ldac.tv.adapter import build_adapter

    path = a.project / f"base-{a.builder}-{a.data.parent.name}-e{a.base_epochs}-s{a.seed}" / "weights" / "best.pt"
    record = path.parent.parent / "base.json"
    if path.is_file() and record.is_file():
        return path, json.loads(record.read_text())
    names = check_data(str(a.data))["names"]
    adapter = build_adapter(a.builder, names, a.imgsz, rois=a.rois, seed=a.seed, **build_kwargs(a))
    t = time.perf_counter()
    res = YOLOLDAC(adapter).finetune(data=str(a.data), epochs=a.base_epochs, imgsz=a.imgsz, batch=a.batch,
                                     lr0=a.lr0, seed=a.seed, device=a.device, project=str(path.parent.parent.parent),
                                     name=path.parent.parent.name, exist_ok=True, plots=False)
    rec = {"map50_95": res.after.get("map50_95"), "map50": res.after.get("map50"), "flops_g": res.after["flops_g"],
           "params_m": res.after["params_m"], "seconds": round(time.perf_counter() - t, 1),
           "optimizer_steps": res.report.get("optimizer_steps", {}).get("total")}
    record.write_text(json.dumps(rec, indent=1))
    return res.best, rec


def run_one(a: argparse.Namespace, method: str, base: Path, base_rec: dict) -> dict:
    from yolo_ldac import YOLOLDAC
    from yolo_ldac.utils.env import machine_info

    out = a.out / f"{tag(a)}__{method}.json"
    if out.is_file():
        return json.loads(out.read_text())
    common = dict(data=str(a.data), imgsz=a.imgsz, batch=a.batch, lr0=a.lr0, lr_scale=a.lr_scale, seed=a.seed,
                  device=a.device, project=str(a.project), name=f"{tag(a)}__{method}", exist_ok=True, plots=False)
    t = time.perf_counter()
    if method == "dense":
        res = YOLOLDAC(str(base)).finetune(epochs=a.epochs, **common)
    else:
        res = YOLOLDAC(str(base)).compress(ratio=a.ratio, method=method, rounds=1, epochs_per_round=0,
                                           finetune_epochs=a.epochs, val_steps=True, **common)
    rec = {"script": SCRIPT, "method": method, "builder": a.builder, "data": str(a.data), "ratio": a.ratio,
           "base": {"path": str(base), **base_rec}, "after": res.after, "removed": res.removed,
           "rounds": res.rounds, "optimizer_steps": res.report.get("optimizer_steps"),
           "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
           "build_kwargs": build_kwargs(a), "seconds": round(time.perf_counter() - t, 1), "machine": machine_info()}
    a.out.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rec, indent=1, default=str))
    return rec


def table(records: list[dict]) -> str:
    def pct(v):
        return "-" if v is None else f"{100 * v:.1f}"

    lines = ["| method | mAP50-95 | mAP50 | mAP50-95 right after the prune step | GFLOPs | FLOPs removed | params (M) | "
             "optimizer steps after the base | wall (min) |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in records:
        step = (r.get("rounds") or [{}])[0].get("map50_95_after_step")
        lines.append(f"| {r['method']} | {pct(r['after'].get('map50_95'))} | {pct(r['after'].get('map50'))} | "
                     f"{pct(step) if r['method'] != 'dense' else '-'} | {r['after']['flops_g']:.3f} | "
                     f"{r['removed'].get('flops_pct', 0):.1f} % | {r['after']['params_m']:.2f} | "
                     f"{(r.get('optimizer_steps') or {}).get('total', '-')} | {r['seconds'] / 60:.1f} |")
    return "\n".join(lines)


def report(a: argparse.Namespace, records: list[dict]) -> str:
    if not records:
        return ""
    r0 = records[0]
    m = r0["machine"]
    b = r0["base"]
    head = (f"## torchvision {a.builder} on {a.data.parent.name}: base from scratch -> compressed at "
            f"{int(100 * a.ratio)} % FLOPs\n\n"
            f"Written by `{SCRIPT}` (`python {SCRIPT} --data datasets/{a.data.parent.name}/data.yaml --base-epochs "
            f"{a.base_epochs} --epochs {a.epochs} --box-batch {a.box_batch} --imgsz {a.imgsz} --batch {a.batch}`; "
            f"results in `benchmarks/results/frcnn/`). Base: trained from scratch for {a.base_epochs} epochs at {a.imgsz} px, batch {a.batch}, "
            f"lr0 {a.lr0}, {a.box_batch} RoIs sampled per image (mAP50-95 {100 * (b.get('map50_95') or 0):.1f}, mAP50 {100 * (b.get('map50') or 0):.1f}); "
            f"then every run trains {a.epochs} epochs at lr0 x {a.lr_scale}. FLOPs at {a.imgsz} px with {a.rois} "
            f"RoIs per image. COCO mAP (pycocotools) on the val split. Seed {a.seed}. Machine: "
            f"{m.get('cpu')} ({m.get('cores_usable')} core usable by the run, {m.get('cores')} in all, shared with other "
            f"jobs: the wall times are no speed measure), torch {m.get('torch')}. One seed, 100 val images: "
            f"differences of a point or two are within noise.\n\n")
    note = ""
    if (b.get("map50_95") or 0) < 0.2:
        note = (f"\n\nThe base ({100 * (b.get('map50_95') or 0):.1f} mAP50-95) is far from converged: a Faster R-CNN from "
                "scratch needs far more training than this CPU budget. The row shows the path end to end at equal "
                "optimizer steps, not which method is better; for that, run it with more epochs (or on a GPU, "
                "`--device 0`).")
    return head + table(records) + note


def main(argv=None) -> int:
    a = parse(argv)
    a.data = a.data.resolve()
    runs = [f"{tag(a)}__{m}" for m in a.methods]
    if a.dry_run:
        print("\n".join(["base: " + f"{a.builder} from scratch, {a.base_epochs} epochs", *runs]))
        return 0
    records = []
    if a.report_only:
        records = [json.loads(p.read_text()) for p in (a.out / f"{r}.json" for r in runs) if p.is_file()]
    else:
        base, base_rec = base_checkpoint(a)
        for m in a.methods:
            rec = run_one(a, m, base, base_rec)
            print(f"{m}: mAP50-95 {rec['after'].get('map50_95')} FLOPs removed {rec['removed'].get('flops_pct')} %",
                  flush=True)
            records.append(rec)
    text = report(a, records)
    print(text)
    if text and not a.no_report:
        from sections import write_section

        write_section(f"frcnn-{a.data.parent.name}", text, report=a.report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
