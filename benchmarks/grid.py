"""The user's flow, measured: a base model trained on the data, then every method compresses that base with the same
further training; ``dense`` is the base trained as long without pruning.

Every run gets the same optimizer steps: ``nbs`` equals the batch (one optimizer step per batch), warm-up is at most
one epoch, and each method trains ``--epochs`` epochs in all (``rounds x epochs_per_round + finetune``; a method
whose push does not train before the first step gets those epochs added to its fine-tuning). Each run's JSON holds
the optimizer steps per phase (counted from the trainer), the learning-rate schedule, mAP right before and after
every prune step and after every training phase, FLOPs/params, ONNX Runtime CPU latency, the settings, the machine
and the wall time.

Methods are presets (``group_fisher``, ``ldac``), ``dense``, or a preset with parts overridden:
``ldac:criterion=group_fisher``, ``group_fisher:push=fade``, ``ldac:fade=False``.

Presets (``--preset cpu|gpu``) set the schedule, sizes, device, default base/data and the output folders; any
explicit option overrides them. ``cpu`` is 160 px, batch 16, 24 epochs (600 steps on 400 train images); ``gpu`` is
device 0, 416 px, batch 32, 19 epochs (608 steps on 1024 train images), into ``results/grid-gpu`` and
``runs/grid-gpu`` so the two grids never mix.

Resumable run by run: a finished run's JSON is read back and never redone; a run killed half way is resumed from its
last phase (``resume=RUN_DIR``); a run whose recorded settings differ from the asked ones is refused before anything
trains. After every training run of an invocation, the runs that lack latency are timed one at a time in this
process (``--no-latency`` skips it): ``weights/best.pt`` exported to ONNX (parity checked), ONNX Runtime CPU at batch
1, 1 thread and all threads (``benchmarks/common.py``). Latency is not a setting: it never changes a run's key.

Usage:
    python benchmarks/grid.py --base runs/base/yolo11n-composite400-e50-last.pt \\
        --data datasets/composite-400x160/data.yaml --ratios 0.5 --methods dense group_fisher ldac --seeds 0 1
    python benchmarks/grid.py --preset gpu --ratios 0.3 0.5 --methods dense random l2 group_fisher ldac --dry-run
    python benchmarks/grid.py ... --report-only
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import statistics
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "benchmarks"):  # the package, and the scripts' shared module (common.py)
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))
os.environ.setdefault("YOLO_CONFIG_DIR", str(ROOT / ".cache" / "ultralytics"))
from yolo_ldac.utils.env import setup_offline_env  # noqa: E402

setup_offline_env(offline=True)

SCRIPT = "benchmarks/grid.py"
RUN_MARKER = "grid_run.json"  # in a run folder: the grid key and settings it was started with

# Presets. Every value is a default that an explicit option overrides; benchmarks/README.md explains the sizing.
PRESETS: dict[str, dict] = {
    "cpu": dict(epochs=24, rounds=4, epochs_per_round=2, imgsz=160, batch=16, warmup_epochs=1.0, calib=4,
                device="cpu", workers=0, jobs=1, n_train=400, n_val=100,
                data=ROOT / "datasets" / "composite-400x160" / "data.yaml",
                base=ROOT / "runs" / "base" / "yolo11n-composite400-e50-last.pt",
                out=ROOT / "benchmarks" / "results" / "grid", project=ROOT / "runs" / "grid"),
    "gpu": dict(epochs=19, rounds=4, epochs_per_round=2, imgsz=416, batch=32, warmup_epochs=1.0, calib=4,
                device="0", workers=4, jobs=3, n_train=1024, n_val=256,
                data=ROOT / "datasets" / "composite-1024x416" / "data.yaml",
                base=ROOT / "runs" / "base" / "yolo11n-composite-1024x416.pt",
                out=ROOT / "benchmarks" / "results" / "grid-gpu", project=ROOT / "runs" / "grid-gpu"),
}


# ------------------------------------------------------------------------------------------------ settings and keys
def parse_method(spec: str) -> tuple[str, dict]:
    """``"ldac:criterion=group_fisher"`` -> ``("ldac", {"criterion": "group_fisher"})``."""
    from yolo_ldac.cfg import parse_value

    name, *pairs = spec.split(":")
    return name, {k: parse_value(v) for k, v in (p.split("=", 1) for p in pairs)}


def _default_lr_scale(base: str) -> float:
    """yolo-ldac's default lr_scale for a run from ``base`` (``auto`` resolved as a run resolves it)."""
    from yolo_ldac.cfg import is_trained_source, load_defaults, resolve_lr_scale

    return resolve_lr_scale(load_defaults().get("lr_scale", 1.0), is_trained_source(base))


def run_settings(args: argparse.Namespace, method: str, ratio: float, seed: int) -> dict:
    """Everything that defines a run (its JSON records it; a different one is never mixed in)."""
    name, extra = parse_method(method)
    common = dict(imgsz=args.imgsz, batch=args.batch, nbs=args.batch, warmup_epochs=args.warmup_epochs,
                  workers=getattr(args, "workers", 0), seed=seed, plots=False, device=args.device, val_steps=True,
                  calib_batches=args.calib)
    from yolo_ldac.cfg import load_defaults

    lr_scale = getattr(args, "lr_scale", None)
    if lr_scale is None:  # yolo-ldac's default, resolved as a run of it resolves it
        lr_scale = _default_lr_scale(str(args.base))
    if lr_scale != 1.0:  # recorded only when not 1 (runs made before the key existed have none)
        common["lr_scale"] = lr_scale
    if name == "dense":
        return dict(common, mode="finetune", epochs=args.epochs)
    from yolo_ldac.parts import resolve_parts
    from yolo_ldac.push import PUSHES

    parts = resolve_parts({"method": name, **extra})
    defaults = load_defaults()  # recorded, so a run made under other defaults is never mixed in
    keys = ["fade", "fade_end", "ld_alpha", "cov_beta", "align_gamma"]
    if parts["push"] == "ldac":  # keys only push=ldac reads (added to the record after the first runs)
        keys += ["release", "ld_pooled", "ld_check"]
    common["resolved"] = {"parts": parts, **{k: extra.get(k, defaults[k]) for k in keys}}
    first = bool(PUSHES[parts["push"]].trains_before_first_step)
    push_epochs = args.rounds * args.epochs_per_round if first else (args.rounds - 1) * args.epochs_per_round
    return dict(common, mode="compress", method=name, **extra, ratio=ratio, rounds=args.rounds,
                epochs_per_round=args.epochs_per_round, finetune_epochs=args.epochs - push_epochs)


_SHA_CACHE: dict[str, str] = {}


def _file_sha256(path: str) -> str | None:
    p = Path(path)
    if not p.is_file():
        return None
    key = f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def run_key(settings: dict, base: str, data: str) -> str:
    """What a run is: its settings, the base checkpoint's content (not its path, so a clone elsewhere reads the same
    runs back) and the data set's folder name (the builders are deterministic and name it by size)."""
    ident = {"base_sha256": _file_sha256(base) or str(base), "data": Path(data).parent.name}
    blob = json.dumps({"settings": settings, **ident}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def run_id(method: str, ratio: float, seed: int) -> str:
    """``ldac:push=fade`` at 0.5, seed 1 -> ``ldac+push-fade__r0.5__s1``; dense -> ``dense__s1``."""
    if parse_method(method)[0] == "dense":
        return f"dense__s{seed}"
    return f"{method.replace(':', '+').replace('=', '-')}__r{ratio:g}__s{seed}"


@dataclass
class RunPlan:
    """One grid cell: its id, key and settings, and where its JSON and run folder are."""

    id: str
    key: str
    method: str
    ratio: float
    seed: int
    settings: dict
    base: Path
    data: Path
    out: Path  # the run's JSON
    project: Path  # run folders of this data set
    run_dir: Path

    @property
    def mode(self) -> str:
        return self.settings["mode"]

    def train_kwargs(self) -> dict:
        """The keyword arguments of ``YOLOLDAC(base).compress`` / ``.finetune`` for this run."""
        kw = {k: v for k, v in self.settings.items() if k not in ("mode", "resolved")}
        if kw.pop("distill", None) == "base":  # Ultralytics' knowledge distillation with the base as the teacher
            kw["distill_model"] = str(self.base)
        return dict(kw, data=str(self.data), project=str(self.project), name=self.id, exist_ok=True)

    def weights(self) -> Path | None:
        """The run's ``weights/best.pt`` (in its run folder, or beside the report its JSON names), if it exists."""
        candidates = [self.run_dir / "weights" / "best.pt"]
        rec = read_record(self.out)
        if rec and rec.get("report"):
            candidates.append(Path(rec["report"]).parent / "weights" / "best.pt")
        return next((p for p in candidates if p.is_file()), None)


def plan_run(args: argparse.Namespace, method: str, ratio: float, seed: int) -> RunPlan:
    settings = run_settings(args, method, ratio, seed)
    rid = run_id(method, ratio, seed)
    project = (args.project / args.data.parent.name).resolve()  # run folders per data set: ids do not name the data
    return RunPlan(id=rid, key=run_key(settings, str(args.base), str(args.data)), method=method,
                   ratio=ratio if settings["mode"] != "finetune" else 0.0, seed=seed, settings=settings,
                   base=args.base, data=args.data, out=args.out / f"{rid}.json", project=project,
                   run_dir=project / rid)


def plan_grid(args: argparse.Namespace) -> list[RunPlan]:
    """Every run of the invocation: ratios x methods x seeds, ``dense`` once per seed."""
    plans = []
    for ratio in args.ratios:
        for method in args.methods:
            if parse_method(method)[0] == "dense" and ratio != args.ratios[0]:
                continue
            plans += [plan_run(args, method, ratio, seed) for seed in args.seeds]
    return plans


def read_record(path: Path) -> dict | None:
    from yolo_ldac.utils.io import read_json

    return read_json(path)


def run_status(plan: RunPlan) -> str:
    """``finished``, ``finished, no latency``, ``other settings: ...``, ``stopped at PHASE`` or ``to run``."""
    rec = read_record(plan.out)
    if rec is not None:
        if rec.get("key") != plan.key:
            return f"other settings: {plan.out} has key {rec.get('key')}, these settings make {plan.key}"
        return "finished" if rec.get("latency") else "finished, no latency"
    marker = read_record(plan.run_dir / RUN_MARKER)
    if marker is not None and marker.get("key") != plan.key:
        return f"other settings: {plan.run_dir} was started with key {marker.get('key')}, these settings make {plan.key}"
    state = read_record(plan.run_dir / "state.json")
    if state is not None and state.get("status") != "finished":
        done = {d["name"] for d in state.get("done", [])}
        nxt = next((p for p in state.get("phases", []) if p not in done), None)
        return f"stopped at {nxt} (resumable)"
    if (plan.run_dir / "report.json").is_file():
        return "trained, no JSON"
    return "to run"


# ------------------------------------------------------------------------------------------------ dry run
def phase_epochs(settings: dict) -> dict[str, int]:
    """Training epochs per phase of a run (``{"round2.push": 2, ..., "finetune": 18}``)."""
    if settings["mode"] == "finetune":
        return {"finetune": int(settings["epochs"])}
    from yolo_ldac.push import PUSHES
    from yolo_ldac.schedule.compressor import plan_phases

    first = bool(PUSHES[settings["resolved"]["parts"]["push"]].trains_before_first_step)
    out = {}
    for name in plan_phases("compress", settings, first):
        if name.endswith(".push"):
            out[name] = int(settings["epochs_per_round"])
        elif name == "finetune":
            out[name] = int(settings["finetune_epochs"])
    return out


def expected_steps(settings: dict, n_train: int | None) -> int | None:
    """Optimizer steps a run will make: ceil(n_train / batch) per epoch (nbs = batch) x its epochs."""
    if not n_train:
        return None
    return math.ceil(n_train / int(settings["batch"])) * sum(phase_epochs(settings).values())


def dry_run(args: argparse.Namespace, plans: list[RunPlan]) -> None:
    """Print every run (id, mode, epochs per phase, expected optimizer steps, status) without training."""
    from common import count_images

    n_train, note = count_images(args.data), ""
    if n_train is None and args.data == args.preset_values["data"]:
        n_train, note = args.preset_values["n_train"], " (the preset's set is not built yet: its planned size)"
    per_epoch = math.ceil(n_train / args.batch) if n_train else None
    print(f"grid (dry run, preset {args.preset}): {len(plans)} runs; data {args.data}: "
          f"{n_train if n_train else 'unknown'} train images{note}; batch {args.batch} (nbs = batch): "
          f"{per_epoch or '?'} optimizer steps per epoch; base {args.base}; results in {args.out}")
    for p in plans:
        epochs = phase_epochs(p.settings)
        phases = ", ".join(f"{k} {v}" for k, v in epochs.items())
        steps = expected_steps(p.settings, n_train)
        status = run_status(p)
        rec = read_record(p.out) if status.startswith("finished") else None
        if rec and (rec.get("optimizer_steps") or {}).get("total") is not None:
            status += f" (recorded {rec['optimizer_steps']['total']} steps)"
        print(f"  {p.id}: {p.mode}, epochs {sum(epochs.values())} ({phases}), optimizer steps "
              f"{steps if steps is not None else '?'}: {status}")


# ------------------------------------------------------------------------------------------------ running
def execute(plan: RunPlan) -> dict:
    """Train (or resume) one run and write its JSON without latency; a finished run's JSON is read back."""
    from yolo_ldac import YOLOLDAC
    from yolo_ldac.utils.env import machine_info
    from yolo_ldac.utils.io import atomic_write_json

    status = run_status(plan)
    if status.startswith("other settings"):
        raise SystemExit(f"{status}: move it away or use another --out / --project")
    if status.startswith("finished"):
        return read_record(plan.out)
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(plan.run_dir / RUN_MARKER, {"key": plan.key, "settings": plan.settings,
                                                  "base": str(plan.base), "data": str(plan.data)})
    t0 = time.perf_counter()
    runner = YOLOLDAC(str(plan.base))
    if status.startswith("stopped"):
        result = getattr(runner, plan.mode)(resume=str(plan.run_dir))
    elif status == "trained, no JSON":
        result = None
    else:
        result = getattr(runner, plan.mode)(**plan.train_kwargs())
    del result
    rep = json.loads((plan.run_dir / "report.json").read_text())
    rec = {"id": plan.id, "key": plan.key, "method": plan.method, "ratio": plan.ratio, "seed": plan.seed,
           "base": str(plan.base), "data": str(plan.data), "settings": plan.settings,
           "report": str(plan.run_dir / "report.json"), "before": rep["before"], "after": rep["after"],
           "removed": rep["removed"], "rounds": rep.get("rounds", []), "optimizer_steps": rep.get("optimizer_steps"),
           "train_schedule": rep.get("train_schedule"), "parts": rep.get("parts"),
           "wall_s": round(time.perf_counter() - t0, 1), "machine": machine_info(), "resumed": rep.get("resumed"),
           "script": SCRIPT, "latency": None, "task": rep.get("task", "detect")}
    atomic_write_json(plan.out, rec)
    return rec


def _train_worker(plan: RunPlan) -> tuple[str, str | None]:
    """Process-pool entry (``--jobs`` > 1): one run in a fresh process; returns (id, error text or None)."""
    try:
        execute(plan)
        return plan.id, None
    except BaseException:  # noqa: BLE001  (reported by the parent, which goes on with the other runs)
        return plan.id, traceback.format_exc()


def train_all(plans: list[RunPlan], jobs: int) -> list[str]:
    """Train every run that is not finished, ``jobs`` at a time; returns the ids that failed."""
    todo = [p for p in plans if not run_status(p).startswith("finished")]
    for p in plans:
        if p not in todo:
            print(f"skipped {p.id}: {run_status(p)}", flush=True)
    failures = []

    def done(rid: str, err: str | None) -> None:
        rec = read_record(next(p.out for p in todo if p.id == rid))
        if err or rec is None:
            failures.append(rid)
            print(f"FAILED {rid}:\n{err}", flush=True)
            return
        print(f"trained {rid}: mAP50-95 {rec['after']['map50_95']:.4f} (steps "
              f"{(rec.get('optimizer_steps') or {}).get('total')}, {rec['wall_s']} s"
              f"{', resumed' if rec.get('resumed') else ''})", flush=True)

    if jobs > 1 and len(todo) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"), max_tasks_per_child=1) as pool:
            for f in as_completed([pool.submit(_train_worker, p) for p in todo]):
                done(*f.result())
    else:
        for p in todo:
            execute(p)  # in this process: an error stops the grid with its own traceback
            done(p.id, None)
    return failures


def add_latency(plan: RunPlan, runs: int) -> dict | None:
    """Time the run's best.pt in ONNX Runtime (CPU) and store it in its JSON (atomically); ``None`` without weights."""
    from common import onnx_latency

    from yolo_ldac.utils.io import atomic_write_json

    rec = read_record(plan.out)
    weights = plan.weights()
    if weights is None:
        print(f"no weights for {plan.id} ({plan.run_dir / 'weights' / 'best.pt'}): latency not measured")
        return None
    rec["latency"] = onnx_latency(weights, imgsz=int(rec["settings"]["imgsz"]), runs=runs)
    atomic_write_json(plan.out, rec)
    return rec


def time_all(plans: list[RunPlan], runs: int) -> list[str]:
    """Latency of every trained run that lacks it, one at a time (nothing else runs); returns the failed ids."""
    failures = []
    for p in plans:
        rec = read_record(p.out)
        if rec is None or rec.get("latency") or rec.get("key") != p.key:
            continue
        try:
            rec = add_latency(p, runs)
        except Exception:
            failures.append(p.id)
            print(f"latency FAILED for {p.id}:\n{traceback.format_exc()}")
            continue
        if rec is not None:
            lat = rec["latency"]
            print(f"timed {p.id}: {lat['ms_1_thread']:.2f} ms (1 thread) / {lat['ms_all_threads']:.2f} ms "
                  f"({lat['all_threads']} threads)", flush=True)
    return failures


# ------------------------------------------------------------------------------------------------ the report
def _ms(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def _latency_cell(records: list[dict]) -> str:
    """``1-thread / all-threads`` median ms, averaged over the seeds that have latency; ``-`` when none has."""
    lats = [r["latency"] for r in records if r.get("latency")]
    if not lats:
        return "-"
    one = statistics.mean(x["ms_1_thread"] for x in lats)
    every = statistics.mean(x["ms_all_threads"] for x in lats)
    return f"{one:.2f} / {every:.2f}"


def _size_cell(records: list[dict], value: str, removed: str, digits: int) -> str:
    """``3.185 (50.1 %)``: the final model's FLOPs (G, 640 px) or params (M) and the percent removed, seed mean."""
    v = statistics.mean(r["after"][value] for r in records)
    pct = statistics.mean(float(r["removed"][removed]) for r in records)
    return f"{v:.{digits}f} ({pct:.1f} %)"


def record_task(rec: dict) -> str:
    """The task of a run's model (``detect`` for runs recorded before tasks were: read from its report if there)."""
    if rec.get("task"):
        return rec["task"]
    try:
        return json.loads(Path(rec["report"]).read_text()).get("task", "detect")
    except (OSError, ValueError, KeyError, TypeError):
        return "detect"


def report(records: list[dict], base_map: float | None) -> str:
    """The markdown table: one row per (ratio, method), mean ± std over seeds. The mAP is the task's own (mask mAP
    for a segmentation model), with the box mAP beside it when the runs have one."""
    from yolo_ldac.tasks import metric_label

    label = metric_label(record_task(records[0])) if records else "mAP50-95"
    boxes = any("box_map50_95" in r["after"] for r in records)
    rows: dict[tuple, list[dict]] = {}
    for r in records:
        rows.setdefault((r["ratio"], r["method"]), []).append(r)
    lines = [f"| method (parts) | {label} | {label.removesuffix('-95')} | Δ base (pts) | "
             + ("box mAP50-95 | " if boxes else "")
             + "FLOPs G (removed) | params M (removed) | "
             "latency 1 / all threads (ms) | optimizer steps | step 1: before -> after | wall s / run | seeds |",
             "| --- | --- | --- | --- | " + ("--- | " if boxes else "") + "--- | --- | --- | --- | --- | --- | --- |"]
    for (_, method), rs in sorted(rows.items()):
        m = [r["after"]["map50_95"] for r in rs]
        m50 = [r["after"]["map50"] for r in rs]
        steps = sorted({(r.get("optimizer_steps") or {}).get("total") for r in rs}, key=str)
        delta = f"{100 * (statistics.mean(m) - base_map):+.1f}" if base_map is not None else "-"
        first = [(x["rounds"][0]["map50_95_before_step"], x["rounds"][0]["map50_95_after_step"])
                 for x in rs if x.get("rounds")]
        step1 = "; ".join(f"{a:.3f} -> {b:.3f}" for a, b in first) if first else "-"
        p = rs[0].get("parts") or {}
        name = method if not p.get("criterion") else \
            f"{method} ({p.get('criterion')}, push {p.get('push')}, {p.get('compensate')})"
        wall = statistics.mean(r["wall_s"] for r in rs)
        box = f"{_ms([r['after'].get('box_map50_95', float('nan')) for r in rs])} | " if boxes else ""
        lines.append(f"| {name} | {_ms(m)} | {_ms(m50)} | {delta} | {box}{_size_cell(rs, 'flops_g', 'flops_pct', 3)} | "
                     f"{_size_cell(rs, 'params_m', 'params_pct', 3)} | {_latency_cell(rs)} | "
                     f"{', '.join(map(str, steps))} | {step1} | {wall:.0f} | "
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


def base_record(base: str | Path, extra_dirs: tuple[Path, ...] = ()) -> tuple[Path, dict] | None:
    """The ``retention_base.py`` record of the checkpoint ``base``, if any: among the records under
    ``results/retention/<data>/`` and in ``extra_dirs`` (a grid's own results folder: ``base-*.json``) whose weights
    have ``base``'s file name: one in ``extra_dirs`` first (the grid's own base), then one whose weights are ``base``'s
    full path, then the newest (by ``date``). Several bases of one data set share a file name and even a path
    (``runs/base/yolo11n-composite400-e50.pt`` retrained over the years), so the first name match may be another."""
    base = Path(base)
    paths = sorted((ROOT / "benchmarks" / "results" / "retention").glob("*/*.json"))
    extra = [p.resolve() for d in extra_dirs for p in sorted(Path(d).glob("base*.json"))]
    found = []
    for path in [*extra, *paths]:
        rec = read_record(path)
        if not (isinstance(rec, dict) and "val_curve" in rec):
            continue
        weights = [str(rec.get(k, "")) for k in ("weights", "weights_used_for_retention")]
        if base.name in {Path(w).name for w in weights}:
            found.append((path in extra, str(base) in weights, str(rec.get("date", "")), path, rec))
    if not found:
        return None
    *_, path, rec = max(found, key=lambda f: f[:3])
    return path, rec


def plateau_line(base: str | Path, extra_dirs: tuple[Path, ...] = ()) -> str:
    """One sentence of the base's plateau evidence for the grid section (the rule of issue 11 and its noise-robust
    reading), or a notice that the base has no record (:func:`base_record` finds it)."""
    found = base_record(base, extra_dirs)
    if found is None:
        return f"No training record of `{Path(base).name}` under benchmarks/results/retention/: its plateau is unknown."
    path, rec = found
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from retention_base import plateau_evidence

    ev = plateau_evidence(rec["val_curve"])
    rel = path.relative_to(ROOT)
    label = {"metrics/mAP50-95(M)": "mask mAP50-95", "metrics/mAP50-95(P)": "pose mAP50-95"}.get(ev.get("metric"),
                                                                                                  "mAP50-95")
    return (f"Its training curve (`{rel}`): {ev['epochs']} epochs, best {label} {ev['best_map50_95']:.3f} at epoch "
            f"{ev['best_epoch']}, mean of the last 5 {ev['mean_last_5']:.3f} (previous 5: {ev['mean_previous_5']:.3f}); "
            f"plateau rule (last-5 mean within 1 point of the best epoch) **{'met' if ev['rule_met'] else 'not met'}**; "
            f"against the best 5-epoch mean ({ev['best_moving_average_5']:.3f}, to epoch "
            f"{ev['best_moving_average_5_ends_epoch']}) {'met' if ev['rule_met_moving_average'] else 'not met'}, "
            f"{'still rising' if ev['rising'] else 'not rising'}.")


DEFAULT_BASE_DESC = "the COCO YOLO11n fine-tuned on this set"


def _rel(path: Path) -> Path:
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def write_readme_section(args: argparse.Namespace, records: list[dict], text: str, base_map: float) -> None:
    """The table, with one line saying where it comes from, in README.md (``--readme``)."""
    from sections import write_section

    from yolo_ldac.tasks import metric_label

    r0 = records[0]
    m = r0["machine"]
    seeds = sorted({r["seed"] for r in records})
    body = "\n".join([
        f"Written by `{SCRIPT} --report-only --readme` from `{_rel(args.out)}/`; do not edit by hand. The user's "
        f"flow on {args.data.parent.name}: the base (`{Path(r0['base']).name}`, {metric_label(record_task(r0))} "
        f"{base_map:.4f}) compressed by each method with {args.epochs} epochs of training "
        f"({(r0.get('optimizer_steps') or {}).get('total', '?')} optimizer steps), `dense` the base trained as long; "
        f"mean ± std over seeds {', '.join(map(str, seeds))}; machine {m.get('cpu')}. Details: BENCHMARKS.md, section "
        f"{args.out.parent.name}-{args.data.parent.name}.", "", text])
    write_section(f"grid-{args.data.parent.name}", body, report=ROOT / "README.md", after="tasks")


def write_benchmarks_section(args: argparse.Namespace, records: list[dict], text: str, base_map: float) -> None:
    """The ``grid-<data>`` section of BENCHMARKS.md (``--benchmarks-md``)."""
    from sections import write_section

    from yolo_ldac.tasks import metric_label

    r0 = records[0]
    s = r0["settings"]
    rel = _rel(args.out)
    lr = {r["settings"].get("lr_scale", 1.0) for r in records}
    lrs = ", ".join(f"{v:g}" for v in sorted(lr))
    main = args.out.parent.name == "grid"
    variant = "" if main else f" (lr_scale {lrs})"
    desc = getattr(args, "base_desc", None) or DEFAULT_BASE_DESC
    m = r0["machine"]
    body = "\n".join([
        f"## The user's flow on {args.data.parent.name}: base -> compressed, equal optimizer steps{variant}", "",
        f"Written by `{SCRIPT} --report-only --benchmarks-md` from the run JSON in `{rel}/`; do not edit by hand.",
        "",
        f"Base: `{Path(r0['base']).name}` ({desc}), validated here at "
        f"{metric_label(record_task(r0))} {base_map:.4f}. Every run trains {args.epochs} epochs at batch {s['batch']} with nbs = batch "
        f"(one optimizer step per batch), warm-up {s['warmup_epochs']} epoch per phase, {s['imgsz']} px; "
        f"pruned runs: {s.get('rounds', args.rounds)} prune steps with {s.get('epochs_per_round', args.epochs_per_round)} "
        "epochs between them (a method whose push does not train before step 1 gets those epochs in its "
        "fine-tuning). `dense`: the base trained as long, unpruned. Optimizer steps are counted from the trainer "
        "(the EMA's updates). FLOPs (G, at 640 px) and params (M) of the final model, with the percent removed. "
        "Latency: best.pt exported to ONNX (parity checked), ONNX Runtime CPU, batch 1 at the run's imgsz, median "
        "of the timed runs after 10 warm-up runs, 1 thread / all threads (`-`: not measured). Mean ± std over "
        "seeds; a lead counts only beyond both spreads."
        + f" Every run here, dense included, trains at lr_scale {lrs}: yolo-ldac's key that scales every learning "
        "rate Ultralytics picks (optimizer=auto) for the push and fine-tuning phases; its default `auto` is 0.25 for "
        "a model with trained weights, as these bases are, and 1 for one built from a yaml.", "",
        plateau_line(r0["base"], (args.out.parent,)), "",
        text, "", f"![schedule]({rel}/schedule.png)", "",
        f"Machine: {m.get('cpu')} ({m.get('cores')} cores), GPU {m.get('gpu') or 'none'}; torch "
        f"{m.get('torch')}, ultralytics {m.get('ultralytics')}, torch-pruning {m.get('torch_pruning')}."])
    main_id = f"grid-{args.data.parent.name}"
    if main:
        write_section(main_id, body)
    else:  # another results folder (e.g. grid-lr1): its own section, after the main grid's of this data set
        write_section(f"{args.out.parent.name}-{args.data.parent.name}", body, after=main_id)


# ------------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu",
                    help="cpu (default) or gpu: schedule, sizes, device, default base/data and output folders; any "
                         "option below overrides the preset's value")
    ap.add_argument("--base", type=Path, help="the base model, trained on --data (default: the preset's)")
    ap.add_argument("--data", type=Path, help="dataset yaml (default: the preset's composite set)")
    ap.add_argument("--base-desc", default=DEFAULT_BASE_DESC,
                    help="what the base is, in the BENCHMARKS.md section's words")
    ap.add_argument("--methods", nargs="+", default=["dense", "group_fisher", "ldac"])
    ap.add_argument("--ratios", nargs="+", type=float, default=[0.5])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--epochs", type=int, help="training epochs per run (every method)")
    ap.add_argument("--rounds", type=int, help="prune steps")
    ap.add_argument("--epochs-per-round", type=int, help="training epochs between prune steps")
    ap.add_argument("--imgsz", type=int)
    ap.add_argument("--batch", type=int, help="batch size; nbs = batch: one optimizer step per batch")
    ap.add_argument("--warmup-epochs", type=float)
    ap.add_argument("--calib", type=int, help="calibration batches")
    ap.add_argument("--lr-scale", type=float, default=None,
                    help="yolo-ldac's lr_scale for every run (dense included); default: yolo-ldac's default")
    ap.add_argument("--device", help="cpu, 0, ...")
    ap.add_argument("--workers", type=int, help="dataloader workers (a setting: recorded in the run's key)")
    ap.add_argument("--jobs", type=int, help="training runs at once, each in its own process (latency is measured "
                                             "afterwards, one run at a time)")
    ap.add_argument("--latency-runs", type=int, default=50, help="timed ONNX Runtime runs per thread setting")
    ap.add_argument("--no-latency", action="store_true", help="do not export and time the runs")
    ap.add_argument("--out", type=Path, help="folder of the run JSONs (a subfolder per data set)")
    ap.add_argument("--project", type=Path, help="folder of the run folders (a subfolder per data set)")
    ap.add_argument("--dry-run", action="store_true", help="list the runs, their epochs, steps and status; train nothing")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--benchmarks-md", action="store_true", help="also write the table into BENCHMARKS.md")
    ap.add_argument("--readme", action="store_true",
                    help="also write the table into README.md (section grid-<data>, after the tasks section)")
    args = ap.parse_args(argv)
    preset = PRESETS[args.preset]
    for key, value in preset.items():
        if key in ("n_train", "n_val"):
            continue
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.preset_values = preset
    if args.latency_runs < 1 or args.jobs < 1:
        ap.error("--latency-runs and --jobs must be >= 1")
    # Absolute, so that a run's key does not depend on the folder the grid was started from.
    args.base, args.data = Path(args.base).resolve(), Path(args.data).resolve()
    args.out = args.out / args.data.parent.name
    return args


def check_inputs(args: argparse.Namespace) -> None:
    """Refuse to start without the base or the data, saying how the preset's are made."""
    p = args.preset_values
    if not args.data.is_file():
        raise SystemExit(
            f"grid.py: data {args.data} not found. The {args.preset} preset's set is built with:\n  python -c \"from "
            f"yolo_ldac.data.composite import build_composite; build_composite('{p['data'].parent}', n_train="
            f"{p['n_train']}, n_val={p['n_val']}, imgsz={p['imgsz']})\"")
    if not args.base.is_file():
        raise SystemExit(
            f"grid.py: base {args.base} not found. The grid never trains its base; train it once with:\n  python "
            f"benchmarks/retention_base.py --data {args.data} --imgsz {args.imgsz} --batch {args.batch} --device "
            f"{args.device} --workers {args.workers} --name {args.base.stem}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plans = plan_grid(args)
    if args.dry_run:
        dry_run(args, plans)
        return 0
    failures = []
    if not args.report_only:
        check_inputs(args)
        conflicts = [s for s in map(run_status, plans) if s.startswith("other settings")]
        if conflicts:  # before anything trains
            raise SystemExit(f"{conflicts[0]}: move it away or use another --out / --project")
        failures += train_all(plans, args.jobs)
        if not args.no_latency:
            failures += time_all(plans, args.latency_runs)
    records = [json.loads(p.read_text()) for p in sorted(args.out.glob("*.json"))]
    base_maps = [r["before"]["map50_95"] for r in records if r["before"].get("map50_95") is not None]
    base_map = base_maps[0] if base_maps else None
    text = report(records, base_map)
    # Runs of an earlier default (e.g. method=ldac before its preset pushed): kept, labelled by their parts, never
    # mixed into the rows above (their settings differ) and never rerun.
    earlier = [json.loads(p.read_text()) for p in sorted((args.out / "ablation").glob("*.json"))]
    if earlier:
        text += ("\n\nRuns of an earlier `method=ldac` preset (its parts in brackets: LDAC's push, `push=ldac`), "
                 f"same protocol and base, from `{_rel(args.out)}/ablation/`:\n\n"
                 + report(earlier, base_map))
    from yolo_ldac.utils.io import atomic_write_text

    atomic_write_text(args.out / "grid.md", f"Base mAP50-95 {base_map}\n\n" + text + "\n")
    plot_schedule(records, args.out / "schedule.png")
    print(text)
    if args.benchmarks_md and records:
        write_benchmarks_section(args, records, text, base_map)
    if args.readme and records:
        write_readme_section(args, records, text, base_map)
    if failures:
        print(f"grid: {len(failures)} failed: {', '.join(failures)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
