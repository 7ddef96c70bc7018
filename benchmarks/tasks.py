"""Segment, pose and obb models of YOLOv8 and YOLO11 through yolo-ldac: pruned to 30 % and 50 % of the FLOPs, trained,
reloaded with plain ``YOLO()``, validated with the task's metric, and exported to ONNX and OpenVINO with parity.

Per model (its yaml, random weights; the shapes data set of its task, 3 classes, 64 px; ``method=ldac``, the
default) and ratio:

1. ``YOLOLDAC(yaml).compress(ratio=r, epochs=1)``: the task's loss in the trace and in training, the task's head
   outputs protected.
2. FLOPs removed as Ultralytics counts them (thop, ``YOLO().info()``, 640 px) against the dense model adapted to the
   data (3 classes; 3 keypoints for pose).
3. ``YOLO(best.pt)``: its task, its model class, and ``val()`` (the task's mAP; on random weights trained one epoch
   it is near 0: this checks the path, not accuracy).
4. Export to ONNX and to OpenVINO fp32 with the raw-output parity of every output (a segmentation model's mask
   prototypes included) and the task's mAP in each runtime against PyTorch's.

Results: ``benchmarks/results/tasks/tasks.json``; the table goes into README.md between ``<!-- section:tasks -->``
markers (rerunning replaces it).

Usage:
    taskset -c 1 python benchmarks/tasks.py              # 6 models x 2 ratios (~8 min on one core)
    python benchmarks/tasks.py --report-only             # rewrite the README table from the JSON
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MODELS = {"segment": ("yolov8n-seg", "yolo11n-seg"), "pose": ("yolov8n-pose", "yolo11n-pose"),
          "obb": ("yolov8n-obb", "yolo11n-obb")}
RATIOS = (0.3, 0.5)
OUT = ROOT / "benchmarks" / "results" / "tasks"


def run_one(task: str, name: str, ratio: float, data: Path, workdir: Path, imgsz: int) -> dict:
    """One model at one ratio through compress -> FLOPs -> reload -> val -> ONNX and OpenVINO parity."""
    from ultralytics import YOLO
    from ultralytics.data.utils import check_det_dataset

    from yolo_ldac import YOLOLDAC
    from yolo_ldac.deploy.parity import check_map_parity, check_raw_parity
    from yolo_ldac.nn.adapter import adapt_head_to_names, load_detection_model, ultralytics_gflops
    from yolo_ldac.tasks import TASKS

    rec: dict = {"task": task, "model": name, "ratio": ratio, "imgsz": imgsz}
    stage = "compress"
    try:
        t = time.perf_counter()
        res = YOLOLDAC(f"{name}.yaml").compress(data=str(data), ratio=ratio, epochs=1, imgsz=imgsz, batch=8,
                                                 plots=False, workers=0, project=str(workdir),
                                                 name=f"{name}-{ratio}")
        rec["compress_s"] = round(time.perf_counter() - t, 1)
        best = Path(res.best)
        stage = "flops"
        info = check_det_dataset(str(data))
        dense = adapt_head_to_names(load_detection_model(f"{name}.yaml"), info["names"], verbose=False,
                                    kpt_shape=info.get("kpt_shape"))
        rec["dense_gflops"] = ultralytics_gflops(dense)
        stage = "reload"
        y = YOLO(str(best))
        rec["reload"] = {"task": y.task, "class": type(y.model).__name__}
        if y.task != task or type(y.model).__name__ != TASKS[task].model_class:
            raise RuntimeError(f"YOLO() reloaded a {y.task} {type(y.model).__name__}")
        rec["gflops"] = ultralytics_gflops(y.model)
        rec["removed"] = 1 - rec["gflops"] / rec["dense_gflops"]
        stage = "val"
        metrics = y.val(data=str(data), imgsz=imgsz, batch=8, plots=False, verbose=False).results_dict
        rec["val"] = {k: float(v) for k, v in metrics.items() if "mAP50-95" in k}
        for fmt in ("onnx", "openvino"):
            stage = fmt
            exported = YOLOLDAC(str(best)).export(format=fmt, imgsz=imgsz)
            raw = check_raw_parity(str(best), exported, imgsz=imgsz)
            acc = check_map_parity(str(best), exported, data, imgsz)
            rec[fmt] = {"max_rel_diff": raw["max_rel_diff"], "outputs": len(raw["shapes"]), "shapes": raw["shapes"],
                        "map50_95": acc["map50_95"], "map50_95_pytorch": acc["map50_95_pytorch"], "ok": True}
        rec["passed"] = abs(rec["removed"] - ratio) <= 0.01
        rec["failed_stage"] = None if rec["passed"] else "flops"
    except Exception as e:  # recorded, the table shows the stage that failed
        rec.update(passed=False, failed_stage=stage, error=f"{type(e).__name__}: {str(e).splitlines()[0][:300]}",
                   traceback=traceback.format_exc()[-2000:])
    return rec


def table(records: list[dict]) -> str:
    head = ("| task | model | ratio | GFLOPs dense -> pruned (640 px) | FLOPs removed (Ultralytics) | reload | "
            "ONNX: outputs, max rel diff, mAP vs PyTorch | OpenVINO: max rel diff, mAP vs PyTorch | result |")
    rows = [head, "| --- | --- | ---: | ---: | ---: | --- | --- | --- | --- |"]
    for r in records:
        onnx, ov = r.get("onnx") or {}, r.get("openvino") or {}

        def cell(x: dict, outputs: bool) -> str:
            if not x:
                return "-"
            n = f"{x['outputs']}, " if outputs else ""
            return f"{n}{x['max_rel_diff']:.1e}, {x['map50_95']:.4f} vs {x['map50_95_pytorch']:.4f}"

        gf = (f"{r['dense_gflops']:.2f} -> {r['gflops']:.2f}" if r.get("gflops") else "-")
        removed = f"{100 * r['removed']:.1f} %" if r.get("removed") is not None else "-"
        reload = f"{r['reload']['task']} {r['reload']['class']}" if r.get("reload") else "-"
        result = "pass" if r.get("passed") else f"FAIL at {r.get('failed_stage')}: {r.get('error', '')}"
        rows.append(f"| {r['task']} | {r['model']} | {r['ratio']} | {gf} | {removed} | {reload} | {cell(onnx, True)} "
                    f"| {cell(ov, False)} | {result} |")
    return "\n".join(rows)


def section(summary: dict) -> str:
    m = summary["machine"]
    return "\n".join([
        f"Written by `benchmarks/tasks.py` on {summary['date']} (`{summary['command'].strip()}`); do not edit by "
        f"hand. Machine: {m['cpu']} ({m['cores']} cores, run on {m['cores_usable']}), torch {m['torch']}, "
        f"ultralytics {m['ultralytics']}, torch-pruning {m['torch_pruning']}.", "",
        "Each model's yaml with random weights on the shapes data set of its task (3 classes, 64 px), "
        "`compress ratio=r epochs=1` with the default method; FLOPs as Ultralytics counts them at 640 px against the "
        "dense model adapted to the data; `YOLO(best.pt)` reload; export with the parity of every raw output "
        "(2 outputs: a segmentation model's prediction and mask prototypes) and the task's mAP50-95 (mask, pose or "
        "oriented-box) in each runtime against PyTorch's. One epoch from random weights: the mAPs are near 0 and "
        "check the path only; the accuracy of a pruned segmentation model is in BENCHMARKS.md.", "",
        table(summary["records"])])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--imgsz", type=int, default=64)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md")
    ap.add_argument("--report-only", action="store_true", help="rewrite the README table from the saved JSON")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from yolo_ldac.utils.env import setup_offline_env

    setup_offline_env(offline=True)
    import torch

    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    summary_path = args.out / "tasks.json"
    if args.report_only:
        summary = json.loads(summary_path.read_text())
    else:
        from datetime import datetime, timezone

        from yolo_ldac.data import make_shapes_dataset
        from yolo_ldac.utils.env import machine_info

        records = []
        with tempfile.TemporaryDirectory(prefix="yolo-ldac-tasks-") as tmp:
            for task, names in MODELS.items():
                data = make_shapes_dataset(Path(tmp) / f"shapes-{task}", n_train=16, n_val=8, imgsz=128, seed=0,
                                           task=task)
                for name in names:
                    for ratio in RATIOS:
                        t = time.perf_counter()
                        rec = run_one(task, name, ratio, data, Path(tmp) / "runs", args.imgsz)
                        rec["seconds"] = round(time.perf_counter() - t, 1)
                        records.append(rec)
                        print(f"{name} {ratio}: {'pass' if rec['passed'] else 'FAIL ' + str(rec.get('error'))} "
                              f"in {rec['seconds']} s", flush=True)
        summary = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "machine": machine_info(),
                   "command": "taskset -c 1 python benchmarks/tasks.py " + " ".join(sys.argv[1:]),
                   "records": records}
        summary_path.write_text(json.dumps(summary, indent=2))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from sections import write_section

    write_section("tasks", section(summary), report=args.readme)
    print(table(summary["records"]))


if __name__ == "__main__":
    main()
