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
for _p in (ROOT, ROOT / "benchmarks"):  # the package, and the scripts' shared module (common.py)
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))
os.environ.setdefault("YOLO_CONFIG_DIR", str(ROOT / ".cache" / "ultralytics"))
from yolo_ldac.utils.env import setup_offline_env  # noqa: E402

setup_offline_env(offline=True)
from common import data_key  # noqa: E402  (benchmarks/common.py)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--max-drop", type=float, default=0.01)
    ap.add_argument("--method", default="ldac")
    ap.add_argument("--mode", choices=["compress", "prune"], default="compress")
    ap.add_argument("--grid", default=",".join(f"{r / 100:g}" for r in range(5, 85, 5)))
    ap.add_argument("--ratios", default=None, help="the budget search's grid (ratios=; default: yolo-ldac's)")
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
    ap.add_argument("--trained-grid", default=None,
                    help="a benchmarks/grid.py results folder of the same base (e.g. results/grid-latency/<data>): the "
                         "largest ratio whose trained runs (mean over seeds) are within the budget, for comparison")
    ap.add_argument("--method-id", default="ldac", help="the grid's method id of those runs")
    ap.add_argument("--report-only", action="store_true", help="rewrite budget.md (and the section) from budget.json")
    ap.add_argument("--benchmarks-md", action="store_true", help="write the budget-<data> section of BENCHMARKS.md")
    args = ap.parse_args(argv)
    if args.report_only:
        base, data = Path(args.base).resolve(), Path(args.data).resolve()
        out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / "budget" / data_key(data) / base.stem
        rec = json.loads((out / "budget.json").read_text(encoding="utf-8"))
        if args.trained_grid:
            rec["trained_grid"] = trained_grid(Path(args.trained_grid), args.method_id, args.max_drop)
        if args.retention:
            rec["vs_retention"] = vs_retention(rec["sweep"]["points"], Path(args.retention),
                                               rec.get("criterion", rec["method"]), args.variant)
        (out / "budget.json").write_text(json.dumps(rec, indent=1), encoding="utf-8")
        return write_outputs(rec, out, args)

    import torch

    torch.set_num_threads(1)
    from yolo_ldac import YOLOLDAC

    base, data = Path(args.base).resolve(), Path(args.data).resolve()
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / "budget" / data_key(data) / base.stem
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
    res = getattr(YOLOLDAC(str(base)), args.mode)(max_drop=args.max_drop, name="max_drop",
                                                 **({"ratios": args.ratios} if args.ratios else {}),
                                                 **common, **(schedule if args.mode == "compress" else
                                                              {"rounds": args.rounds}))
    b = res.report["budget"]
    rec["max_drop_run"] = {"wall_s": round(time.perf_counter() - t, 1), "chosen_ratio": b["ratio"],
                           "search_points": len(b["search"]["points"]), "search_s": b["search_s"],
                           "map50_95": res.after["map50_95"], "drop_points": round(100 * (res.before["map50_95"]
                                                                                          - res.after["map50_95"]), 3),
                           "flops_removed": res.removed["flops_pct"] / 100, "step_back": b.get("step_back"),
                           "step_forward": b.get("step_forward"), "final_ratio": b.get("final_ratio"),
                           "optimizer_steps": b["optimizer_steps"], "met": b["met"]}
    if args.fixed and args.mode == "compress":
        t = time.perf_counter()
        fixed = YOLOLDAC(str(base)).compress(ratio=b["ratio"], name="fixed", **common, **schedule)
        steps = fixed.report["optimizer_steps"]["total"]
        rec["fixed_run"] = {"wall_s": round(time.perf_counter() - t, 1), "ratio": b["ratio"],
                            "map50_95": fixed.after["map50_95"], "optimizer_steps": steps,
                            "max_drop_steps_x_fixed": round(res.report["optimizer_steps"]["total"] / max(steps, 1), 3)}
    rec["criterion"] = res.report["parts"]["criterion"]
    if args.retention:
        rec["vs_retention"] = vs_retention(rec["sweep"]["points"], Path(args.retention), rec["criterion"],
                                           args.variant)
    if args.trained_grid:
        rec["trained_grid"] = trained_grid(Path(args.trained_grid), args.method_id, args.max_drop)
    rec["command"] = "python benchmarks/budget.py " + " ".join(sys.argv[1:] if argv is None else argv)
    from yolo_ldac.utils.env import machine_info

    rec["machine"] = machine_info()
    (out / "budget.json").write_text(json.dumps(rec, indent=1), encoding="utf-8")
    return write_outputs(rec, out, args)


def vs_retention(points: list[dict], folder: Path, criterion: str, variant: str) -> dict:
    """The sweep's points against ``benchmarks/retention.py``'s at the same ratios (its ``--counter ultralytics``
    points: ``<criterion>__<variant>__r<ratio>.json`` in ``folder``), in mAP50-95 points."""
    diffs = []
    for p in points:
        path = folder / f"{criterion}__{variant}__r{p['ratio']:g}.json"
        if path.is_file():
            r = json.loads(path.read_text())
            if r.get("status") == "finished":
                diffs.append({"ratio": p["ratio"], "sweep": p["map50_95"], "retention": r["map50_95"],
                              "diff_points": round(100 * (p["map50_95"] - r["map50_95"]), 3)})
    return {"folder": str(folder), "points": diffs,
            "max_abs_diff_points": max((abs(d["diff_points"]) for d in diffs), default=None)}


def trained_grid(folder: Path, method: str, max_drop: float) -> dict:
    """Per ratio: the mean final mAP50-95 of the grid's trained runs ``<method>__r<ratio>__s<seed>.json`` (the same
    base: their ``before``), and the largest ratio whose mean is within ``max_drop`` of the base."""
    import statistics

    by: dict[float, list[dict]] = {}
    for p in sorted(folder.glob(f"{method}__r*__s*.json")):
        r = json.loads(p.read_text(encoding="utf-8"))
        by.setdefault(float(r["ratio"]), []).append(r)
    rows = []
    for ratio, rs in sorted(by.items()):
        base = rs[0]["before"]["map50_95"]
        mean = statistics.mean(r["after"]["map50_95"] for r in rs)
        rows.append({"ratio": ratio, "seeds": len(rs), "map50_95": round(mean, 4), "base_map50_95": round(base, 4),
                     "flops_removed": round(statistics.mean(r["removed"]["flops_pct"] for r in rs) / 100, 4),
                     "optimizer_steps": rs[0]["optimizer_steps"]["total"],
                     "within": mean >= base - max_drop - 1e-9})
    within = [r for r in rows if r["within"]]
    return {"folder": str(folder.relative_to(ROOT) if folder.is_relative_to(ROOT) else folder), "method": method,
            "rows": rows, "largest_within": max((r["flops_removed"] for r in within), default=None)}


def write_outputs(rec: dict, out: Path, args) -> int:
    sw, run = rec["sweep"], rec["max_drop_run"]
    key = data_key(Path(rec["data"]))
    md = [f"### max_drop={rec['max_drop']:g} on {key} ({Path(rec['base']).name}, {rec['method']}, {rec['mode']})", "",
          f"Written by `benchmarks/budget.py` (`{rec.get('command', '')}`); machine: "
          f"{(rec.get('machine') or {}).get('cpu', '?')}. Schedule: {rec['schedule']}, one optimizer step per batch.",
          "",
          f"- one-step retention curve (`yolo-ldac sweep`, lsq, no training): base {sw['base_map50_95']:.4f}; the "
          f"largest reduction within the budget: {sw['largest_within']} ({sw['wall_s']:.0f} s)",
          f"- `max_drop` run: searched ratio {rec['max_drop_run']['chosen_ratio']} ({run['search_points']} points, "
          f"{run['search_s']:.0f} s), FLOPs removed **{run['flops_removed']:.3f}**, mAP50-95 {run['map50_95']:.4f} "
          f"({-run['drop_points']:+.2f} points), budget met: {run['met']}, step back: "
          f"{'yes' if run['step_back'] else 'no'}, step forward: " + (
              f"to {run['step_forward']['reached_ratio']} ({run['step_forward']['kept']} kept)"
              if (run.get("step_forward") or {}).get("ratio") is not None else "none")
          + f"; optimizer steps {run['optimizer_steps']}; wall {run['wall_s']:.0f} s"]
    tg = rec.get("trained_grid")
    if tg:
        cells = ", ".join(f"{r['ratio']:g}: {r['map50_95']:.4f} ({r['seeds']} seeds{', within' if r['within'] else ''})"
                          for r in tg["rows"])
        md.append(f"- the trained grid of the same base (`{tg['folder']}`, {tg['rows'][0]['optimizer_steps']} "
                  f"optimizer steps per run; mean mAP50-95 per ratio: {cells}): the largest FLOPs reduction within "
                  f"the budget is **{tg['largest_within']}**")
    if "fixed_run" in rec:
        md.append(f"- fixed-ratio run: {rec['fixed_run']['optimizer_steps']} optimizer steps; max_drop / fixed = "
                  f"{rec['fixed_run']['max_drop_steps_x_fixed']}")
    if "vs_retention" in rec:
        vr = rec["vs_retention"]
        md.append(f"- sweep against `benchmarks/retention.py --counter ultralytics` ({len(vr['points'])} common "
                  f"ratios): largest |difference| {vr['max_abs_diff_points']} points")
    (out / "budget.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    print("\n".join(md))
    if getattr(args, "benchmarks_md", False):
        from sections import write_section

        write_section(f"budget-{key}", "\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
