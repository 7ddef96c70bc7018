"""Foundation check: the issue-2 command on the real checkpoints, timed, with ONNX parity.

Runs, for each model, exactly
    yolo-ldac compress model=M data=D ratio=0.5 method=l2 rounds=2 epochs_per_round=1 finetune_epochs=1 imgsz=160
as a subprocess (the console script), then exports the resulting best.pt to ONNX (parity checked against
PyTorch on bus.jpg) and loads best.pt with plain `YOLO()` in a fresh process. Writes
benchmarks/results/foundation.json with wall times, FLOPs/params before and after, parity figures and the
machine. D is the generated shapes set (64 train / 16 val at 160 px): the mAP figures measure nothing but
that the pipeline runs; accuracy comparisons belong to benchmarks/compare.py.

Usage: python benchmarks/foundation.py [--weights ../shared/weights]
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
sys.path.insert(0, str(ROOT))

import yolo_ldac  # noqa: E402,F401
from yolo_ldac.data.shapes import make_shapes_dataset  # noqa: E402
from yolo_ldac.utils.env import machine_info, shared_weights_dir  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default=str(shared_weights_dir()))
    ap.add_argument("--out", default=None)
    ap.add_argument("--preset", choices=("foundation", "ldac-default"), default="foundation",
                    help="foundation: the issue-2 command (l2, 2 rounds, 1+1 epochs, 160 px); ldac-default: "
                         "`compress model=M data=D ratio=0.5 imgsz=160` with every other setting at its default "
                         "(method ldac, 4 rounds, 1 epoch per round, 10 fine-tuning epochs)")
    args = ap.parse_args()
    out = args.out or str(ROOT / "benchmarks" / "results" / f"{args.preset}.json")
    data = make_shapes_dataset(ROOT / "datasets" / "shapes-bench", n_train=64, n_val=16, imgsz=160)
    cli = Path(sys.executable).parent / "yolo-ldac"
    project = ROOT / "runs" / args.preset
    rows = []
    for name in ("yolo11n-coco.pt", "yolov8s-fall.pt"):
        model = Path(args.weights) / name
        if not model.is_file():
            print(f"skip {name}: not found in {args.weights}")
            continue
        cmd = [str(cli), "compress", f"model={model}", f"data={data}", "ratio=0.5", f"project={project}",
               f"name={model.stem}"]
        if args.preset == "foundation":
            cmd += ["method=l2", "rounds=2", "epochs_per_round=1", "finetune_epochs=1", "imgsz=160", "plots=False"]
        else:  # 640 px costs ~40 s per batch of 16 on one CPU thread: 160 px keeps the run within minutes
            cmd += ["imgsz=160"]
        t = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=ROOT)
        wall = time.perf_counter() - t
        run_dir = sorted(project.glob(f"{model.stem}*"), key=lambda p: p.stat().st_mtime)[-1]
        report = json.loads((run_dir / "report.json").read_text())
        best = run_dir / "weights" / "best.pt"
        from ultralytics import YOLO

        from yolo_ldac.export import check_onnx_parity, export_model

        imgsz = report["settings"].get("imgsz", 160) if isinstance(report.get("settings"), dict) else 160
        onnx_path = export_model(best, format="onnx", imgsz=imgsz, parity=False)
        parity = check_onnx_parity(YOLO(str(best)).model.float(), onnx_path, imgsz=imgsz)
        script = ("from ultralytics import YOLO; from ultralytics.utils import ASSETS; "
                  f"m = YOLO({str(best)!r}); r = m.predict(ASSETS / 'bus.jpg', imgsz={imgsz}, verbose=False); "
                  "print(type(m.model).__name__, len(r[0].boxes))")
        reload = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd="/",
                                env=dict(os.environ))
        rows.append({"model": name, "command": " ".join(cmd[1:]), "wall_s": round(wall, 1), "rounds": report["rounds"],
                     "before": report["before"], "after": report["after"], "removed": report["removed"],
                     "timings": report["timings"], "onnx_parity": {k: parity[k] for k in ("max_abs_diff",
                                                                                          "max_rel_diff", "ok")},
                     "fresh_process_yolo_load": reload.returncode == 0 and "DetectionModel" in reload.stdout})
        print(json.dumps(rows[-1], indent=1))
    Path(out).write_text(json.dumps({"machine": machine_info(), "preset": args.preset, "data": str(data),
                                     "runs": rows}, indent=1, default=str))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
