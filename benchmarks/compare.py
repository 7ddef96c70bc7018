"""Compare pruning criteria at equal FLOPs and equal training: model x dataset x ratio x method x seed.

Every registered criterion (``yolo_ldac.pruning.criteria.CRITERIA``) prunes each model to each FLOPs ratio with the
same gradual schedule (``rounds`` prune steps, ``epochs_per_round`` of training between them, ``finetune_epochs``
after the last), and the dense model, adapted to the data's classes, is fine-tuned for the same total number of
epochs (method ``dense``). Per run the script records mAP50-95 and mAP50 (before, after every prune step and at the
end), FLOPs and parameters, ONNX Runtime CPU latency (batch 1, median after warm-up, 1 thread and all threads),
wall time, the machine and the library versions in ``<out>/<model>__<data>__<method>__r<ratio>__s<seed>.json``; then
it writes the report (``BENCHMARKS.md``: mean ± std over seeds) and ``<out>/map_vs_flops.png``.

Equal epochs. LDAC's push trains before the first prune step (``Push.trains_before_first_step``), the other criteria do not, so
with the same ``rounds`` x ``epochs_per_round`` they would train ``epochs_per_round`` fewer epochs. By default
(``--equalize-epochs``) those criteria get the missing epochs added to their fine-tuning, so every method, dense
included, trains exactly ``rounds * epochs_per_round + finetune_epochs`` epochs. The epochs a run really trained
are counted from its ``results.csv`` files and printed beside every number (epochs x train images x imgsz).

Resumable: a run whose JSON holds its latency is finished and never redone; a run that stopped half way is started
again from scratch. Training runs first (``--jobs`` processes at once), latency is measured afterwards, one run at a
time in this process, so that timing never shares the CPU with training.

Usage:
    python benchmarks/compare.py                      # the CPU preset: the full default grid, ~3 h on 2 cores
    python benchmarks/compare.py --preset gpu         # device=0, 416 px, more epochs and images
    python benchmarks/compare.py --models yolo11n-coco --methods ldac l1 dense --seeds 0 --ratios 0.5
    python benchmarks/compare.py --report-only        # rewrite BENCHMARKS.md and the plot from the JSON files
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shlex
import shutil
import statistics
import sys
import time
import traceback
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "benchmarks"):  # the package, and the scripts' shared module (common.py)
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

# Offline Ultralytics with a private config dir, before anything imports ultralytics.
os.environ.setdefault("YOLO_CONFIG_DIR", str(ROOT / ".cache" / "ultralytics"))
from yolo_ldac.utils.env import setup_offline_env, shared_weights_dir  # noqa: E402

setup_offline_env(offline=True)
from yolo_ldac.utils.io import atomic_write_json, read_json  # noqa: E402
from common import count_images, data_key, onnx_latency  # noqa: E402  (benchmarks/common.py)

SCRIPT = "benchmarks/compare.py"
WEIGHTS = shared_weights_dir()
MODELS = {"yolo11n-coco": WEIGHTS / "yolo11n-coco.pt", "yolov8s-fall": WEIGHTS / "yolov8s-fall.pt"}
SEG_WEIGHTS = WEIGHTS / "yolo11n-seg-coco.pt"

# Presets: schedule, sizes and the generated default dataset. The CPU preset is sized so the full default grid
# (2 models x 2 ratios x 6 criteria + dense, 3 seeds = 78 runs) takes about 3 hours on 2 cores (benchmarks/README.md).
PRESETS = {
    "cpu": dict(rounds=4, epochs_per_round=2, finetune_epochs=6, imgsz=160, batch=16, device="cpu", jobs=2,
                threads=1, workers=0, n_train=64, n_val=32,
                out=ROOT / "benchmarks" / "results", report=ROOT / "BENCHMARKS.md", project=ROOT / "runs" / "bench"),
    "gpu": dict(rounds=8, epochs_per_round=3, finetune_epochs=30, imgsz=416, batch=32, device="0", jobs=1,
                threads=8, workers=4, n_train=1024, n_val=256,
                out=ROOT / "benchmarks" / "results" / "gpu", report=ROOT / "BENCHMARKS_GPU.md",
                project=ROOT / "runs" / "bench-gpu"),
}


# --------------------------------------------------------------------------------------------------- the grid
def criteria_names() -> list[str]:
    import yolo_ldac  # noqa: F401  (registers every criterion, LDAC's included)
    from yolo_ldac.pruning.criteria import CRITERIA

    return list(CRITERIA)


def model_key(model: str) -> tuple[str, Path]:
    """(name used in run ids, checkpoint path or model spec) of a --models entry."""
    if model in MODELS:
        return model, MODELS[model]
    return Path(model).stem, Path(model)


def fmt_ratio(r: float) -> str:
    return f"{float(r):g}"


def run_id(model: str, data: str, method: str, ratio: float, seed: int) -> str:
    return f"{model}__{data}__{method}__r{fmt_ratio(ratio)}__s{seed}"


def train_epochs(method: str, rounds: int, epochs_per_round: int, finetune_epochs: int,
                 equalize: bool) -> tuple[int, int]:
    """(fine-tuning epochs to pass, total epochs the run will train) of ``method`` under the schedule."""
    total = rounds * epochs_per_round + finetune_epochs
    if method == "dense":
        return total, total
    from yolo_ldac.parts import resolve_parts
    from yolo_ldac.push import PUSHES

    push = resolve_parts({"method": method})["push"]
    pushes_first = bool(PUSHES[push].trains_before_first_step)
    if pushes_first or epochs_per_round == 0:
        return finetune_epochs, total
    if equalize:
        return finetune_epochs + epochs_per_round, total
    return finetune_epochs, total - epochs_per_round


def default_data(preset: dict) -> list[Path]:
    """The real-image composite set when its builder and the seg weights exist, else the generated shapes set."""
    root = ROOT / "datasets"
    try:
        from yolo_ldac.data.composite import build_composite
    except ImportError:
        build_composite = None
    if build_composite is not None and SEG_WEIGHTS.is_file():
        import inspect

        wanted = dict(out_dir=root / f"composite-{preset['n_train']}x{preset['imgsz']}", seg_weights=SEG_WEIGHTS,
                      n_train=preset["n_train"], n_val=preset["n_val"], imgsz=preset["imgsz"], seed=0)
        try:
            params = inspect.signature(build_composite).parameters
            kwargs = {k: v for k, v in wanted.items() if k in params}
            return [Path(build_composite(**kwargs))]
        except Exception as e:  # fall back to shapes rather than losing the run
            print(f"notice: build_composite failed ({type(e).__name__}: {e}); using the generated shapes dataset")
    else:
        why = "yolo_ldac.data.composite is not available" if build_composite is None else f"{SEG_WEIGHTS} not found"
        print(f"notice: {why}; using the generated shapes dataset (synthetic: mAP compares methods, nothing else)")
    from yolo_ldac.data.shapes import make_shapes_dataset

    name = f"shapes-{preset['n_train']}x{preset['imgsz']}"
    return [make_shapes_dataset(root / name, n_train=preset["n_train"], n_val=preset["n_val"],
                                imgsz=preset["imgsz"], seed=0)]


# --------------------------------------------------------------------------------------------------- one run
def _epochs_trained(run_dir: Path) -> int:
    """Epochs really trained in a run: the rows of every training phase's results.csv."""
    n = 0
    for f in sorted(run_dir.glob("*/results.csv")):
        with open(f, newline="", encoding="utf-8") as fh:
            n += max(0, sum(1 for row in csv.reader(fh) if row) - 1)
    return n


def _prune_run_dir(run_dir: Path) -> None:
    """Drop what the benchmark does not need (per-phase and per-round checkpoints); keep best.pt and reports."""
    for p in list(run_dir.glob("*/weights")) + list(run_dir.glob("weights/round*.pt")):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def execute_run(spec: dict) -> dict:
    """Train one grid cell (compress, or dense fine-tuning) and write its JSON without latency; returns it."""
    import torch

    torch.set_num_threads(int(spec["threads"]))
    from yolo_ldac import YOLOLDAC
    from yolo_ldac.utils.env import machine_info

    out = Path(spec["json"])
    run_dir = Path(spec["project"]) / spec["id"]
    if run_dir.exists():  # a run that stopped half way: start it again from scratch
        shutil.rmtree(run_dir)
    common = dict(imgsz=spec["imgsz"], batch=spec["batch"], device=spec["device"], workers=spec["workers"],
                  seed=spec["seed"], project=str(spec["project"]), name=spec["id"], exist_ok=True, plots=False,
                  portable=False, verbose=False)
    t0 = time.perf_counter()
    runner = YOLOLDAC(spec["model_path"])
    if spec["method"] == "dense":
        res = runner.finetune(data=spec["data"], epochs=spec["finetune_epochs"], **common)
    else:
        res = runner.compress(data=spec["data"], ratio=spec["ratio"], method=spec["method"], rounds=spec["rounds"],
                              epochs_per_round=spec["epochs_per_round"], finetune_epochs=spec["finetune_epochs"],
                              **common)
    wall = time.perf_counter() - t0
    rep = res.report
    rounds = rep.get("rounds", [])
    epochs = _epochs_trained(res.run_dir)
    record = {
        "id": spec["id"], "script": SCRIPT, "status": "trained",
        "model": spec["model"], "model_path": str(spec["model_path"]), "data": str(spec["data"]),
        "data_key": spec["data_key"], "method": spec["method"], "ratio": spec["ratio"], "seed": spec["seed"],
        "settings": spec["settings"],
        "schedule": {"epochs": epochs, "epochs_planned": spec["epochs_total"], "train_images": spec["train_images"],
                     "imgsz": spec["imgsz"],
                     "label": f"{epochs} ep x {spec['train_images']} img x {spec['imgsz']} px"},
        "map50_95": rep["after"].get("map50_95"), "map50": rep["after"].get("map50"),
        "flops_g": rep["after"].get("flops_g"), "params_m": rep["after"].get("params_m"),
        "flops_imgsz": rep.get("flops_imgsz", 640), "removed": rep.get("removed"), "before": rep.get("before"),
        "after": rep.get("after"), "rounds": rounds,
        "map50_95_after_first_step": rounds[0].get("map50_95_after_step") if rounds else None,
        "map50_95_after_last_step": rounds[-1].get("map50_95_after_step") if rounds else None,
        "map50_95_per_step": [r.get("map50_95_after_step") for r in rounds],
        "timings": rep.get("timings"), "wall_s": {"train": round(wall, 2)},
        "best": str(res.best), "run_dir": str(res.run_dir), "latency": None,
        "machine": machine_info(), "command": spec["command"],
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    if epochs != spec["epochs_total"]:
        print(f"warning: {spec['id']} trained {epochs} epochs, {spec['epochs_total']} planned")
    atomic_write_json(out, record, indent=1)
    return record


def _worker(spec: dict) -> tuple[str, str | None]:
    """Process-pool entry: one run in a fresh process; returns (id, error text or None)."""
    try:
        execute_run(spec)
        return spec["id"], None
    except Exception:
        return spec["id"], traceback.format_exc()


def add_latency(path: Path, runs: int) -> dict:
    """Export the run's best.pt to ONNX (parity checked) and add its CPU latency to the run's JSON."""
    rec = read_json(path)
    lat = onnx_latency(rec["best"], imgsz=int(rec["settings"]["imgsz"]), runs=runs)
    rec["latency"] = lat
    rec["wall_s"]["export_latency"] = lat["wall_s"]
    rec["wall_s"]["export"] = lat["export_s"]
    rec["wall_s"]["total"] = round(rec["wall_s"]["train"] + rec["wall_s"]["export_latency"], 2)
    rec["status"] = "finished"
    atomic_write_json(path, rec, indent=1)
    return rec


def finished(rec: dict | None) -> bool:
    return bool(rec) and rec.get("status") == "finished" and rec.get("latency") is not None


# --------------------------------------------------------------------------------------------------- the report
def _mean_std(values: list[float], digits: int = 3) -> str:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return "–"
    m = statistics.fmean(vals)
    if len(vals) == 1:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ± {statistics.stdev(vals):.{digits}f}"


def _mean(values: list, digits: int = 2) -> str:
    vals = [v for v in values if v is not None]
    return f"{statistics.fmean(vals):.{digits}f}" if vals else "–"


def _set(values: list) -> str:
    vals = sorted({v for v in values if v is not None})
    return "/".join(str(v) for v in vals) if vals else "–"


def aggregate(records: list[dict], ratios: list[float], methods: list[str]) -> dict:
    """{(model, data, ratio): {method: [records]}}; dense records (ratio-free) appear under every ratio."""
    groups: dict = {}
    for rec in records:
        rs = ratios if rec["method"] == "dense" else [rec["ratio"]]
        for r in rs:
            cell = groups.setdefault((rec["model"], rec["data_key"], float(r)), {})
            cell.setdefault(rec["method"], []).append(rec)
    order = {m: i for i, m in enumerate(methods)}
    return {k: dict(sorted(v.items(), key=lambda kv: order.get(kv[0], 99))) for k, v in sorted(groups.items())}


SECTION_START, SECTION_END = "<!-- section:", "<!-- /section:"


def kept_sections(report_path: Path) -> str:
    """Sections other scripts wrote into the report between ``<!-- section:NAME -->`` and ``<!-- /section:NAME -->``
    (e.g. benchmarks/edge.py's latency tables): kept when this script rewrites the report."""
    if not report_path.is_file():
        return ""
    text = report_path.read_text(encoding="utf-8")
    i = text.find(SECTION_START)
    return text[i:].strip() + "\n" if i >= 0 else ""


def write_report(records: list[dict], report_path: Path, plot_path: Path, ratios: list[float], methods: list[str],
                 command: str, planned: int) -> None:
    groups = aggregate(records, ratios, methods)
    machines = {json.dumps({k: r["machine"].get(k) for k in ("cpu", "cores", "gpu", "torch", "ultralytics",
                                                              "torch_pruning", "onnxruntime", "python")},
                           sort_keys=True) for r in records}
    lines = [
        "# Benchmarks: pruning criteria at equal FLOPs and equal training",
        "",
        f"Written by `{SCRIPT}` on {datetime.now().astimezone().isoformat(timespec='seconds')}; do not edit by "
        "hand (rerun the script: finished runs are read back, not redone).",
        "",
        f"Command: `{command}`",
        "",
        f"Runs: {len(records)} finished of {planned} planned. Per-run JSON (every number, the settings, the mAP "
        f"after every prune step, the machine and versions): `{_rel(plot_path.parent, report_path.parent)}/`.",
        "",
    ]
    for m in sorted(machines):
        d = json.loads(m)
        lines.append(f"Machine: {d['cpu']} ({d['cores']} logical cores), GPU {d['gpu'] or 'none'}; python "
                     f"{d['python']}, torch {d['torch']}, ultralytics {d['ultralytics']}, torch-pruning "
                     f"{d['torch_pruning']}, onnxruntime {d['onnxruntime']}.")
    lines += [
        "",
        "Columns: **epochs** is the schedule every number of the row comes from: epochs trained x training images x "
        "imgsz (counted from the runs' results.csv). mAP50-95 and mAP50: mean ± std over the seeds, on the val "
        "split at the run's imgsz. FLOPs (G, at 640 px) and params (M) of the final model. Latency: ONNX Runtime "
        "CPU, batch 1, median of the runs after 10 warm-up runs, 1 thread / all threads. *after 1st / last step*: "
        "mAP50-95 right after the first and the last prune step, before any training that follows it. "
        "`dense`: the unpruned model adapted to the data's classes and fine-tuned for the same total epochs.",
        "",
    ]
    if not groups:
        lines.append("No finished runs yet.")
    for (model, data, ratio), cell in groups.items():
        lines += [f"## {model} on {data}, {ratio:.0%} of the FLOPs removed", ""]
        all_epochs = {r["schedule"]["epochs"] for recs in cell.values() for r in recs}
        s = next(iter(cell.values()))[0]["settings"]
        lines.append(f"Schedule: {s['rounds']} prune steps, {s['epochs_per_round']} epoch(s) between steps, "
                     f"{s['finetune_epochs']} fine-tuning epochs (+{s['epochs_per_round']} for methods that do not "
                     "train before the first step)" if s.get("equalize_epochs") else
                     f"Schedule: {s['rounds']} prune steps, {s['epochs_per_round']} epoch(s) between steps, "
                     f"{s['finetune_epochs']} fine-tuning epochs")
        if len(all_epochs) > 1:
            lines.append(f"**Note: methods differ in epochs trained ({', '.join(map(str, sorted(all_epochs)))}); "
                         "compare rows with this in mind.**")
        lines += ["",
                  "| method | epochs | mAP50-95 | mAP50 | FLOPs G | params M | latency ms 1 thr / all thr | "
                  "mAP50-95 after 1st / last step | n seeds |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for method, recs in cell.items():
            sched = _set([r["schedule"]["label"] for r in recs])
            lat1 = _mean([r["latency"]["ms_1_thread"] for r in recs])
            latn = _mean([r["latency"]["ms_all_threads"] for r in recs])
            steps = (f"{_mean_std([r['map50_95_after_first_step'] for r in recs])} / "
                     f"{_mean_std([r['map50_95_after_last_step'] for r in recs])}") if method != "dense" else "–"
            lines.append(f"| {method} | {sched} | {_mean_std([r['map50_95'] for r in recs])} | "
                         f"{_mean_std([r['map50'] for r in recs])} | {_mean([r['flops_g'] for r in recs], 3)} | "
                         f"{_mean([r['params_m'] for r in recs], 3)} | {lat1} / {latn} | {steps} | "
                         f"{len(recs)} ({_set([r['seed'] for r in recs])}) |")
        lines.append("")
    lines += [f"![mAP50-95 against FLOPs]({_rel(plot_path, report_path.parent)})", ""]
    report_path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines)
    kept = kept_sections(report_path)
    report_path.write_text(text + ("\n\n" + kept if kept else ""), encoding="utf-8")
    write_plot(records, plot_path, methods)


def _rel(p: Path, base: Path = ROOT) -> str:
    try:
        return os.path.relpath(p, base)
    except ValueError:
        return str(p)


def write_plot(records: list[dict], path: Path, methods: list[str]) -> None:
    """mAP50-95 (mean ± std over seeds) against FLOPs, one panel per model x data, one series per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["model"], r["data_key"]) for r in records}) or [("no runs", "")]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    colors = plt.get_cmap("tab10")
    for ax, (model, data) in zip(axes[0], panels):
        for i, method in enumerate(methods):
            recs = [r for r in records if (r["model"], r["data_key"], r["method"]) == (model, data, method)]
            pts = {}
            for r in recs:
                pts.setdefault(r["ratio"], []).append((r["flops_g"], r["map50_95"]))
            xs, ys, es = [], [], []
            for _, v in sorted(pts.items(), key=lambda kv: -(kv[0] or 0)):
                f = [a for a, _ in v if a is not None]
                m = [b for _, b in v if b is not None]
                if not f or not m:
                    continue
                xs.append(statistics.fmean(f))
                ys.append(statistics.fmean(m))
                es.append(statistics.stdev(m) if len(m) > 1 else 0.0)
            if xs:
                style = dict(marker="*", markersize=12, linestyle="none") if method == "dense" else dict(marker="o")
                ax.errorbar(xs, ys, yerr=es, label=method, color=colors(i % 10), capsize=3, **style)
        ax.set_title(f"{model} / {data}")
        ax.set_xlabel("GFLOPs (640 px)")
        ax.set_ylabel("mAP50-95")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu",
                    help="cpu (default): small sizes, the full grid in ~3 h on 2 cores; gpu: device=0, 416 px, "
                         "more epochs and images. Any option below overrides the preset.")
    ap.add_argument("--models", nargs="+", default=["yolo11n-coco", "yolov8s-fall"],
                    help=f"names ({', '.join(MODELS)}: checkpoints in {WEIGHTS}) or checkpoint/yaml paths")
    ap.add_argument("--data", nargs="+", type=Path, default=None,
                    help="dataset yaml(s); default: the composite real-image set when available, else generated "
                         "shapes")
    ap.add_argument("--ratios", nargs="+", type=float, default=[0.3, 0.5], help="FLOPs fractions to remove")
    ap.add_argument("--methods", nargs="+", default=None, help="criteria and/or 'dense' (default: all of them)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--rounds", type=int, help="prune steps")
    ap.add_argument("--epochs-per-round", type=int, help="training epochs between prune steps")
    ap.add_argument("--finetune-epochs", type=int, help="training epochs after the last step")
    ap.add_argument("--equalize-epochs", action=argparse.BooleanOptionalAction, default=True,
                    help="give methods that do not train before the first step the missing epochs in fine-tuning, "
                         "so every method trains the same total (default: on)")
    ap.add_argument("--imgsz", type=int)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--device", help="cpu, 0, 0,1 ...")
    ap.add_argument("--workers", type=int, help="dataloader workers")
    ap.add_argument("--jobs", type=int, help="training runs at once, each in its own process (latency is always "
                                             "measured afterwards, one run at a time)")
    ap.add_argument("--threads", type=int, help="torch threads per training run")
    ap.add_argument("--latency-runs", type=int, default=50, help="timed ONNX Runtime runs per setting (>= 1)")
    ap.add_argument("--n-train", type=int, help="train images of the generated default dataset")
    ap.add_argument("--n-val", type=int, help="val images of the generated default dataset")
    ap.add_argument("--out", type=Path, help="folder of the per-run JSON files and the plot")
    ap.add_argument("--report", type=Path, help="the markdown report (BENCHMARKS.md)")
    ap.add_argument("--project", type=Path, help="folder of the run directories (weights, ONNX, reports)")
    ap.add_argument("--keep-weights", action="store_true",
                    help="keep every round's and training phase's checkpoints (default: only best.pt and best.onnx)")
    ap.add_argument("--report-only", action="store_true", help="only rewrite the report and plot from the JSONs")
    ap.add_argument("--dry-run", action="store_true", help="print the grid and exit")
    args = ap.parse_args(argv)
    preset = dict(PRESETS[args.preset])
    for key in ("rounds", "epochs_per_round", "finetune_epochs", "imgsz", "batch", "device", "workers", "jobs",
                "threads", "n_train", "n_val", "out", "report", "project"):
        if getattr(args, key) is None:
            setattr(args, key, preset[key])
        preset[key] = getattr(args, key)
    args.preset_values = preset
    if args.latency_runs < 1:
        ap.error("--latency-runs must be >= 1")
    if args.jobs < 1 or args.threads < 1:
        ap.error("--jobs and --threads must be >= 1")
    known = criteria_names()
    args.methods = args.methods or known + ["dense"]
    bad = [m for m in args.methods if m not in known and m != "dense"]
    if bad:
        ap.error(f"unknown method(s) {bad}; available: {', '.join(known)}, dense")
    return args


def build_grid(args: argparse.Namespace, datasets: list[Path], command: str) -> list[dict]:
    specs = []
    for model in args.models:
        mkey, mpath = model_key(model)
        if model in MODELS and not mpath.is_file():
            raise SystemExit(f"compare.py: error: checkpoint {mpath} for '{model}' not found "
                             "(set YOLO_LDAC_SHARED_WEIGHTS or pass a path)")
        for data in datasets:
            dkey, n_img = data_key(data), count_images(data)
            for method in args.methods:
                ft, total = train_epochs(method, args.rounds, args.epochs_per_round, args.finetune_epochs,
                                         args.equalize_epochs)
                for ratio in ([0.0] if method == "dense" else args.ratios):
                    for seed in args.seeds:
                        rid = run_id(mkey, dkey, method, ratio, seed)
                        specs.append({
                            "id": rid, "json": str(args.out / f"{rid}.json"), "model": mkey, "model_path": str(mpath),
                            "data": str(data), "data_key": dkey, "method": method, "ratio": ratio, "seed": seed,
                            "rounds": args.rounds, "epochs_per_round": args.epochs_per_round, "finetune_epochs": ft,
                            "epochs_total": total, "imgsz": args.imgsz, "batch": args.batch, "device": args.device,
                            "workers": args.workers, "threads": args.threads, "project": str(args.project),
                            "train_images": n_img, "command": command,
                            "settings": {"preset": args.preset, "rounds": args.rounds,
                                         "epochs_per_round": args.epochs_per_round,
                                         "finetune_epochs": args.finetune_epochs, "finetune_epochs_run": ft,
                                         "equalize_epochs": args.equalize_epochs, "imgsz": args.imgsz,
                                         "batch": args.batch, "device": str(args.device), "workers": args.workers,
                                         "threads": args.threads, "latency_runs": args.latency_runs},
                        })
    return specs


def _same_settings(rec: dict, spec: dict) -> bool:
    keys = ("rounds", "epochs_per_round", "finetune_epochs_run", "imgsz", "batch", "equalize_epochs")
    return all(rec.get("settings", {}).get(k) == spec["settings"][k] for k in keys)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python " + " ".join(shlex.quote(a) for a in [SCRIPT, *(sys.argv[1:] if argv is None else argv)])
    datasets = [Path(d).resolve() for d in args.data] if args.data else default_data(args.preset_values)
    specs = build_grid(args, datasets, command)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"compare: {len(specs)} runs ({len(args.models)} models x {len(datasets)} datasets x "
          f"{len(args.ratios)} ratios x {len(args.methods)} methods x {len(args.seeds)} seeds, dense once per "
          f"model/data/seed); schedule {args.rounds} x {args.epochs_per_round} + {args.finetune_epochs} epochs at "
          f"{args.imgsz} px; results in {args.out}")
    if args.dry_run:
        for s in specs:
            print(f"  {s['id']}: {s['epochs_total']} epochs ({s['finetune_epochs']} fine-tuning)")
        return 0

    todo_train, todo_latency, n_skipped = [], [], 0
    for s in specs:
        rec = read_json(Path(s["json"]))
        if finished(rec):
            n_skipped += 1
            note = "" if _same_settings(rec, s) else " (WARNING: recorded with other settings; delete it to redo)"
            print(f"skipped {s['id']}: finished{note}")
        elif rec and rec.get("status") == "trained" and Path(rec.get("best", "")).is_file():
            todo_latency.append(s)
        else:
            todo_train.append(s)
    print(f"compare: {n_skipped} finished (skipped), {len(todo_train)} to train, "
          f"{len(todo_train) + len(todo_latency)} to time")

    failures = []
    if not args.report_only:
        t_start = time.perf_counter()
        done = 0

        def progress(rid: str, err: str | None) -> None:
            nonlocal done
            done += 1
            el = time.perf_counter() - t_start
            eta = el / done * (len(todo_train) - done)
            state = "FAILED" if err else "trained"
            print(f"[{done}/{len(todo_train)}] {state} {rid}; {el / 60:.1f} min so far, ~{eta / 60:.1f} min to go")
            if err:
                failures.append(rid)
                print(err)

        if args.jobs > 1 and len(todo_train) > 1:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor, as_completed

            with ProcessPoolExecutor(max_workers=args.jobs, mp_context=mp.get_context("spawn"),
                                     max_tasks_per_child=1) as pool:
                futs = [pool.submit(_worker, s) for s in todo_train]
                for f in as_completed(futs):
                    progress(*f.result())
        else:
            for s in todo_train:
                progress(*_worker(s))
        for s in specs:
            if s in todo_latency or (s in todo_train and s["id"] not in failures):
                try:
                    rec = add_latency(Path(s["json"]), args.latency_runs)
                    lat = rec["latency"]
                    print(f"timed {s['id']}: {lat['ms_1_thread']:.2f} ms (1 thread) / {lat['ms_all_threads']:.2f} ms "
                          f"({lat['all_threads']} threads); run {rec['wall_s']['total']:.0f} s")
                    if not args.keep_weights:
                        _prune_run_dir(Path(rec["run_dir"]))
                except Exception:
                    failures.append(s["id"])
                    print(f"latency FAILED for {s['id']}:\n{traceback.format_exc()}")

    records = [r for r in (read_json(Path(s["json"])) for s in specs) if finished(r)]
    write_report(records, args.report, args.out / "map_vs_flops.png", args.ratios, args.methods, command, len(specs))
    print(f"compare: {len(records)}/{len(specs)} runs finished; wrote {args.report} and {args.out / 'map_vs_flops.png'}")
    if failures:
        print(f"compare: {len(failures)} failed: {', '.join(failures)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
