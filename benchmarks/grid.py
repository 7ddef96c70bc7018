"""The user's flow, measured: a base model trained on the data, then every method compresses that base with the same
further training; ``dense`` is the base trained as long without pruning.

Every run gets the same optimizer steps: ``nbs`` equals the batch (one optimizer step per batch), warm-up is at most
one epoch, and each method trains ``--epochs`` epochs in all (``rounds x epochs_per_round + finetune``; a method
whose push does not train before the first step gets those epochs added to its fine-tuning). Each run's JSON holds
the optimizer steps per phase (counted from the trainer), the learning-rate schedule, mAP right before and after
every prune step and after every training phase, FLOPs/params, the settings, the machine and the wall time.

Methods are presets (``group_fisher``, ``ldac``), ``dense``, or a preset with parts overridden:
``ldac:criterion=group_fisher``, ``group_fisher:push=fade``, ``ldac:fade=False``.

Resumable run by run: a finished run's JSON is read back and never redone; a run killed half way is resumed from its
last phase (``resume=RUN_DIR``); a run whose recorded settings differ from the asked ones is refused.

Usage:
    python benchmarks/grid.py --base runs/base/yolo11n-composite400-e50-last.pt \\
        --data datasets/composite-400x160/data.yaml --ratios 0.5 --methods dense group_fisher ldac --seeds 0 1
    python benchmarks/grid.py ... --report-only
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("YOLO_CONFIG_DIR", str(ROOT / ".cache" / "ultralytics"))
from yolo_ldac.utils.env import setup_offline_env  # noqa: E402

setup_offline_env(offline=True)

SCRIPT = "benchmarks/grid.py"


def parse_method(spec: str) -> tuple[str, dict]:
    """``"ldac:criterion=group_fisher"`` -> ``("ldac", {"criterion": "group_fisher"})``."""
    from yolo_ldac.cfg import parse_value

    name, *pairs = spec.split(":")
    return name, {k: parse_value(v) for k, v in (p.split("=", 1) for p in pairs)}


def run_settings(args: argparse.Namespace, method: str, ratio: float, seed: int) -> dict:
    """Everything that defines a run (its JSON records it; a different one is never mixed in)."""
    name, extra = parse_method(method)
    common = dict(imgsz=args.imgsz, batch=args.batch, nbs=args.batch, warmup_epochs=args.warmup_epochs,
                  workers=0, seed=seed, plots=False, device=args.device, val_steps=True, calib_batches=args.calib)
    if getattr(args, "lr_scale", None) is not None:  # absent from runs made before the key existed
        common["lr_scale"] = args.lr_scale
    if name == "dense":
        return dict(common, mode="finetune", epochs=args.epochs)
    from yolo_ldac.parts import resolve_parts
    from yolo_ldac.push import PUSHES

    parts = resolve_parts({"method": name, **extra})
    from yolo_ldac.cfg import load_defaults

    defaults = load_defaults()  # recorded, so a run made under other defaults is never mixed in
    keys = ["fade", "fade_end", "ld_alpha", "cov_beta", "align_gamma"]
    if parts["push"] == "ldac":  # keys only push=ldac reads (added to the record after the first runs)
        keys += ["release", "ld_pooled", "ld_check"]
    if defaults.get("lr_scale", 1.0) != 1.0 and "lr_scale" not in common:
        keys.append("lr_scale")
    common["resolved"] = {"parts": parts, **{k: extra.get(k, defaults[k]) for k in keys}}
    first = bool(PUSHES[parts["push"]].trains_before_first_step)
    push_epochs = args.rounds * args.epochs_per_round if first else (args.rounds - 1) * args.epochs_per_round
    return dict(common, mode="compress", method=name, **extra, ratio=ratio, rounds=args.rounds,
                epochs_per_round=args.epochs_per_round, finetune_epochs=args.epochs - push_epochs)


def run_key(settings: dict, base: str, data: str) -> str:
    blob = json.dumps({"settings": settings, "base": base, "data": data}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def execute(args, base: Path, data: Path, method: str, ratio: float, seed: int) -> dict:
    from yolo_ldac import YOLOLDAC
    from yolo_ldac.utils.env import machine_info
    from yolo_ldac.utils.io import atomic_write_json

    settings = run_settings(args, method, ratio, seed)
    key = run_key(settings, str(base), str(data))
    rid = f"{method.replace(':', '+').replace('=', '-')}__r{ratio:g}__s{seed}" if settings["mode"] != "finetune" \
        else f"dense__s{seed}"
    out = args.out / f"{rid}.json"
    if out.is_file():
        rec = json.loads(out.read_text())
        if rec.get("key") != key:
            raise SystemExit(f"{out} was made with other settings (key {rec.get('key')} != {key}): move it away or "
                             "use another --out")
        return rec
    project = (args.project / data.parent.name).resolve()  # run folders per data set: ids do not name the data
    run_dir = project / rid
    kw = {k: v for k, v in settings.items() if k not in ("mode", "resolved")}
    t0 = time.perf_counter()
    runner = YOLOLDAC(str(base))
    mode = settings["mode"]
    if (run_dir / "state.json").is_file() and json.loads((run_dir / "state.json").read_text())["status"] != "finished":
        result = getattr(runner, mode)(resume=str(run_dir))
    elif (run_dir / "report.json").is_file():
        result = None
    else:
        result = getattr(runner, mode)(data=str(data), project=str(project), name=rid, exist_ok=True, **kw)
    rep = json.loads((run_dir / "report.json").read_text())
    rec = {"id": rid, "key": key, "method": method, "ratio": ratio if mode != "finetune" else 0.0, "seed": seed,
           "base": str(base), "data": str(data), "settings": settings, "report": str(run_dir / "report.json"),
           "before": rep["before"], "after": rep["after"], "removed": rep["removed"], "rounds": rep.get("rounds", []),
           "optimizer_steps": rep.get("optimizer_steps"), "train_schedule": rep.get("train_schedule"),
           "parts": rep.get("parts"), "wall_s": round(time.perf_counter() - t0, 1), "machine": machine_info(),
           "resumed": rep.get("resumed"), "script": SCRIPT}
    del result
    atomic_write_json(out, rec)
    return rec


def _ms(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def report(records: list[dict], base_map: float | None) -> str:
    rows = {}
    for r in records:
        rows.setdefault((r["ratio"], r["method"]), []).append(r)
    lines = ["| FLOPs removed | method (parts) | mAP50-95 | mAP50 | Δ base (pts) | optimizer steps | step 1: before -> "
             "after | wall s / run | seeds |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for (ratio, method), rs in sorted(rows.items()):
        m = [r["after"]["map50_95"] for r in rs]
        m50 = [r["after"]["map50"] for r in rs]
        steps = sorted({(r.get("optimizer_steps") or {}).get("total") for r in rs})
        delta = f"{100 * (statistics.mean(m) - base_map):+.1f}" if base_map is not None else "-"
        first = [(x["rounds"][0]["map50_95_before_step"], x["rounds"][0]["map50_95_after_step"])
                 for x in rs if x.get("rounds")]
        step1 = "; ".join(f"{a:.3f} -> {b:.3f}" for a, b in first) if first else "-"
        p = rs[0].get("parts") or {}
        label = method if not p else f"{method} ({p.get('criterion')}, push {p.get('push')}, {p.get('compensate')})"
        wall = statistics.mean(r["wall_s"] for r in rs)
        lines.append(f"| {float(rs[0]['removed']['flops_pct']):.1f} % | {label} | {_ms(m)} | {_ms(m50)} | "
                     f"{delta} | {', '.join(map(str, steps))} | {step1} | {wall:.0f} | "
                     f"{len(rs)} ({'/'.join(str(r['seed']) for r in rs)}) |")
    return "\n".join(lines)


def plot_schedule(records: list[dict], path: Path) -> None:
    """mAP50-95 right before / after every prune step and after every training phase, per method (seed 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from yolo_ldac.utils.io import atomic_save

    recs = [r for r in records if r["rounds"] and r["seed"] == min(x["seed"] for x in records)]
    if not recs:
        return
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for r in recs:
        xs, ys = [0], [r["before"]["map50_95"]]
        for rd in r["rounds"]:
            xs += [rd["round"] - 0.5, rd["round"] - 0.5]
            ys += [rd["map50_95_before_step"], rd["map50_95_after_step"]]
            if rd.get("map50_95_after_train") is not None:
                xs.append(rd["round"])
                ys.append(rd["map50_95_after_train"])
        ax.plot(xs, ys, marker="o", ms=3, label=f"{r['method']} r{r['ratio']:g}")
    ax.set_xlabel("round (vertical drops: prune steps; rises: training)")
    ax.set_ylabel("mAP50-95 (val)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=Path, required=True, help="the base model: trained on --data")
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--methods", nargs="+", default=["dense", "group_fisher", "ldac"])
    ap.add_argument("--ratios", nargs="+", type=float, default=[0.5])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--epochs", type=int, default=24, help="training epochs per run (every method)")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--epochs-per-round", type=int, default=2)
    ap.add_argument("--imgsz", type=int, default=160)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--warmup-epochs", type=float, default=1.0)
    ap.add_argument("--calib", type=int, default=4, help="calibration batches")
    ap.add_argument("--lr-scale", type=float, default=None,
                    help="yolo-ldac's lr_scale for every run (dense included); default: yolo-ldac's default")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "grid")
    ap.add_argument("--project", type=Path, default=ROOT / "runs" / "grid")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--benchmarks-md", action="store_true", help="also write the table into BENCHMARKS.md")
    args = ap.parse_args(argv)
    args.out = args.out / args.data.parent.name
    records = []
    for ratio in args.ratios:
        for method in args.methods:
            for seed in args.seeds:
                if method == "dense" and ratio != args.ratios[0]:
                    continue
                if args.report_only:
                    continue
                rec = execute(args, args.base, args.data, method, ratio, seed)
                print(f"{rec['id']}: mAP50-95 {rec['after']['map50_95']:.4f} (steps "
                      f"{(rec.get('optimizer_steps') or {}).get('total')}, {rec['wall_s']} s)", flush=True)
    records = [json.loads(p.read_text()) for p in sorted(args.out.glob("*.json"))]
    base_maps = [r["before"]["map50_95"] for r in records if r["before"].get("map50_95") is not None]
    base_map = base_maps[0] if base_maps else None
    text = report(records, base_map)
    from yolo_ldac.utils.io import atomic_write_text

    atomic_write_text(args.out / "grid.md", f"Base mAP50-95 {base_map}\n\n" + text + "\n")
    plot_schedule(records, args.out / "schedule.png")
    print(text)
    if args.benchmarks_md and records:
        from sections import write_section

        r0 = records[0]
        s = r0["settings"]
        rel = args.out.relative_to(ROOT)
        m = r0["machine"]
        body = "\n".join([
            f"## The user's flow on {args.data.parent.name}: base -> compressed, equal optimizer steps", "",
            f"Written by `{SCRIPT} --report-only --benchmarks-md` from the run JSON in `{rel}/`; do not edit by hand.",
            "",
            f"Base: `{Path(r0['base']).name}` (the COCO YOLO11n fine-tuned on this set; its curve and plateau: "
            "`benchmarks/results/retention/<data>/base.json`), validated here at "
            f"mAP50-95 {base_map:.4f}. Every run trains {args.epochs} epochs at batch {s['batch']} with nbs = batch "
            f"(one optimizer step per batch), warm-up {s['warmup_epochs']} epoch per phase, {s['imgsz']} px; "
            f"pruned runs: {s.get('rounds', args.rounds)} prune steps with {s.get('epochs_per_round', args.epochs_per_round)} "
            "epochs between them (a method whose push does not train before step 1 gets those epochs in its "
            "fine-tuning). `dense`: the base trained as long, unpruned. Optimizer steps are counted from the trainer "
            "(the EMA's updates). Mean ± std over seeds; a lead counts only beyond both spreads.", "",
            text, "", f"![schedule]({rel}/schedule.png)", "",
            f"Machine: {m.get('cpu')} ({m.get('cores')} cores, 1 used per run, 1 torch thread), no GPU; torch "
            f"{m.get('torch')}, ultralytics {m.get('ultralytics')}, torch-pruning {m.get('torch_pruning')}."])
        write_section(f"grid-{args.data.parent.name}", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
