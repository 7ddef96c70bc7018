"""The same weights validated both ways: ``rect=False`` (yolo-ldac's validator before 2026-12-04) and ``rect=True``
(Ultralytics' ``yolo val``, today's), at imgsz 160 and batch 16 on the CPU: how much of a change between two
benchmark passes is the validator's. Writes one JSON row per checkpoint (``--out``, appended).

Usage:
    python benchmarks/validator_compare.py --data datasets/composite-400x160/data.yaml \\
        --weights runs/base/yolo11n-composite400-e50.pt runs/grid-yoloval/.../weights/best.pt \\
        --out benchmarks/results/grid-yoloval/validator_rect_compare.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("YOLO_CONFIG_DIR", str(ROOT / ".cache" / "ultralytics"))
from yolo_ldac.utils.env import setup_offline_env  # noqa: E402

setup_offline_env(offline=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--weights", nargs="+", required=True)
    ap.add_argument("--imgsz", type=int, default=160)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    import torch

    from yolo_ldac.engine.validator import validate_model
    from yolo_ldac.safe_load import load_model

    torch.set_num_threads(1)
    rows = json.loads(args.out.read_text()) if args.out.is_file() else []
    for w in args.weights:
        model = load_model(w)
        row = {"weights": w, "data": args.data, "imgsz": args.imgsz, "batch": args.batch}
        for rect in (False, True):
            row[f"rect_{rect}"] = validate_model(model, args.data, {"imgsz": args.imgsz, "batch": args.batch,
                                                                    "rect": rect, "device": "cpu", "workers": 0})
        row["delta_map50_95_pts"] = round(100 * (row["rect_True"]["map50_95"] - row["rect_False"]["map50_95"]), 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
    args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
