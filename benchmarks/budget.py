"""The budget's acceptance numbers: ``max_drop=`` against the retention curve and a fixed-ratio run, and
``yolo-ldac sweep`` against ``benchmarks/retention.py``'s points. Speeds and wall times live here, not in tests.

1. ``sweep`` on the base over a fine grid (``--grid``, default 0.05 .. 0.6): the one-step retention curve
   (method's criterion, ``compensate=lsq``, as the search measures it) and the largest grid ratio within the budget.
2. ``compress`` (or ``--mode prune``) with ``max_drop=``: the ratio it chose, its finished mAP and FLOPs removed,
   whether it stepped back, its optimizer steps.
3. ``--fixed``: the same schedule at the chosen ratio with ``ratio=`` given (a fixed-ratio run): its optimizer
   steps, the denominator of "at most 1.5 x".
4. ``--retention DIR``: the points of ``benchmarks/retention.py`` (``<criterion>__<variant>__r<ratio>.json`` in
   DIR) next to the sweep's at the same ratios, and the largest difference in points.

Writes ``budget.json`` and ``budget.md`` to ``--out`` (default ``benchmarks/results/budget/<data>/<base stem>``).

Usage:
    python benchmarks/budget.py --base /work/shared/weights/yolo11n-coco.pt --data datasets/kitti/data.yaml \\
        --max-drop 0.01 --method ldac --imgsz 320 --fixed \\
        --retention benchmarks/results/retention/kitti/yolo11n-coco
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("YOLO_CONFIG_DIR", str(ROOT / ".cache" / "ultralytics"))
from yolo_ldac.utils.env import setup_offline_env  # noqa: E402

setup_offline_env(offline=True)


def _data_key(data: Path) -> str:
    return data.parent.name if data.stem.lower() in {"data", "dataset"} else data.stem


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--max-drop", type=float, default=0.01)
    ap.add_argument("--method", default="ldac")
    ap.add_argument("--mode", choices=["compress", "prune"], default="compress")
    ap.add_argument("--grid", default=",".join(f"{r / 100:g}" for r in range(5, 85, 5)))
    ap.add_argument("--ratios", default="0.1,0.2,0.3,0.4,0.5,0.6", help="the budget search's grid (ratios=)")
    ap.add_argument("--imgsz", type=int, default=160)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--epochs-per-round", type=int, default=1)
    ap.add_argument("--finetune-epochs", type=int, default=10)
    ap.add_argument("--nbs", type=int, default=None, help="nominal batch (default: --batch: one optimizer step per "
                                                           "batch, as benchmarks/grid.py)")
    ap.add_argument("--warmup-epochs", type=float, default=1.0)
    ap.add_argument("--calib-batches", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fixed", action="store_true", help="also a fixed-ratio run at the chosen ratio")
    ap.add_argument("--retention", default=None, help="a benchmarks/retention.py output folder to compare with")
    ap.add_argument("--variant", default="lsq", help="the retention.py variant to compare with")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from yolo_ldac import YOLOLDAC

    base, data = Path(args.base).resolve(), Path(args.data).resolve()
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / "budget" / _data_key(data) / base.stem
    out.mkdir(parents=True, exist_ok=True)
    common = dict(data=str(data), method=args.method, imgsz=args.imgsz, batch=args.batch, project=str(out),
                  exist_ok=True, plots=False, nbs=args.nbs or args.batch, warmup_epochs=args.warmup_epochs,
                  calib_batches=args.calib_batches, seed=args.seed, workers=0)
    schedule = dict(rounds=args.rounds, epochs_per_round=args.epochs_per_round, finetune_epochs=args.finetune_epochs)
    rec: dict = {"base": str(base), "data": str(data), "max_drop": args.max_drop, "method": args.method,
                 "mode": args.mode, "imgsz": args.imgsz, "schedule": schedule}

    t = time.perf_counter()
    sw = YOLOLDAC(str(base)).sweep(ratios=args.grid, compensate="lsq", name="sweep", **common)
    rec["sweep"] = {"wall_s": round(time.perf_counter() - t, 1), "base_map50_95": sw.base["map50_95"],
                    "points": [{k: p[k] for k in ("ratio", "reached_ratio", "map50_95", "flops_g")} for p in sw.points]}
    floor = sw.base["map50_95"] - args.max_drop
    within = [p for p in sw.points if p["map50_95"] >= floor]
    rec["sweep"]["largest_within"] = max((p["reached_ratio"] for p in within), default=None)

    t = time.perf_counter()
    res = getattr(YOLOLDAC(str(base)), args.mode)(max_drop=args.max_drop, ratios=args.ratios, name="max_drop",
                                                 **common, **(schedule if args.mode == "compress" else
                                                              {"rounds": args.rounds}))
    b = res.report["budget"]
    rec["max_drop_run"] = {"wall_s": round(time.perf_counter() - t, 1), "chosen_ratio": b["ratio"],
                           "search_points": len(b["search"]["points"]), "search_s": b["search_s"],
                           "map50_95": res.after["map50_95"], "drop_points": round(100 * (res.before["map50_95"]
                                                                                          - res.after["map50_95"]), 3),
                           "flops_removed": res.removed["flops_pct"] / 100, "step_back": b.get("step_back"),
                           "optimizer_steps": b["optimizer_steps"], "met": b["met"]}
    if args.fixed and args.mode == "compress":
        t = time.perf_counter()
        fixed = YOLOLDAC(str(base)).compress(ratio=b["ratio"], name="fixed", **common, **schedule)
        steps = fixed.report["optimizer_steps"]["total"]
        rec["fixed_run"] = {"wall_s": round(time.perf_counter() - t, 1), "ratio": b["ratio"],
                            "map50_95": fixed.after["map50_95"], "optimizer_steps": steps,
                            "max_drop_steps_x_fixed": round(res.report["optimizer_steps"]["total"] / max(steps, 1), 3)}
    if args.retention:
        folder = Path(args.retention)
        crit = res.report["parts"]["criterion"]
        diffs = []
        for p in sw.points:
            path = folder / f"{crit}__{args.variant}__r{p['ratio']:g}.json"
            if path.is_file():
                r = json.loads(path.read_text())
                if r.get("status") == "finished":
                    diffs.append({"ratio": p["ratio"], "sweep": p["map50_95"], "retention": r["map50_95"],
                                  "diff_points": round(100 * (p["map50_95"] - r["map50_95"]), 3)})
        rec["vs_retention"] = {"folder": str(folder), "points": diffs,
                               "max_abs_diff_points": max((abs(d["diff_points"]) for d in diffs), default=None)}
    (out / "budget.json").write_text(json.dumps(rec, indent=1), encoding="utf-8")
    md = [f"# max_drop={args.max_drop} on {base.name} / {_data_key(data)} ({args.method}, {args.mode})", "",
          f"- retention curve: base {sw.base['map50_95']:.4f}, largest reduction within the budget (grid "
          f"{args.grid}): {rec['sweep']['largest_within']}",
          f"- max_drop run: ratio {b['ratio']}, FLOPs removed {rec['max_drop_run']['flops_removed']:.3f}, drop "
          f"{rec['max_drop_run']['drop_points']:+.2f} points, met {b['met']}, step back "
          f"{'yes' if b.get('step_back') else 'no'}, optimizer steps {b['optimizer_steps']}"]
    if "fixed_run" in rec:
        md.append(f"- fixed-ratio run: {rec['fixed_run']['optimizer_steps']} optimizer steps; max_drop / fixed = "
                  f"{rec['fixed_run']['max_drop_steps_x_fixed']}")
    if "vs_retention" in rec:
        md.append(f"- sweep vs benchmarks/retention.py: max |diff| {rec['vs_retention']['max_abs_diff_points']} points")
    (out / "budget.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
