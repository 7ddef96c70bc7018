"""Retention points and sweeps: how much mAP a method keeps at each ratio, the curve a user chooses a ratio from.

A *retention point* prunes a fresh copy of a (dense, prepared) detector to one ratio in ONE
:meth:`~yolo_ldac.pruning.engine.ChannelPruner.step` (the method's criterion and compensation, or ``lsq`` for the
budget search), trains nothing, and validates it: seconds per point. ``yolo-ldac sweep`` measures one point per
ratio of ``ratios=`` and, with ``epochs=``, also compresses the model to each ratio with the usual ``compress``
schedule (``finetune_epochs=epochs``): the trained curve. It writes ``sweep.json``, ``sweep.md`` and ``sweep.png``
(mAP50-95 against FLOPs removed, and against the predicted latency with ``target=latency``) to ``project/name``.
``benchmarks/retention.py`` measures its points with :func:`retention_point` too.

Example:
    >>> from yolo_ldac import YOLOLDAC
    >>> res = YOLOLDAC("yolo11n.pt").sweep(data="coco8.yaml", ratios="0.1,0.2,0.3", imgsz=320)  # doctest: +SKIP
    >>> print(res.table)  # doctest: +SKIP

Command line::

    yolo-ldac sweep model=yolo11n.pt data=coco8.yaml ratios=0.1,0.2,0.3,0.4 method=ldac
    yolo-ldac sweep model=yolo11n.pt data=coco8.yaml ratios=0.2,0.4 epochs=10   # and the trained curve
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from yolo_ldac.errors import LDACError

SWEEP_FILES = ("sweep.json", "sweep.md", "sweep.png")


def parse_ratios(value: Any, key: str = "ratios") -> list[float]:
    """``ratios=`` as a sorted list of distinct floats in (0, 0.95]: a comma-separated string, a list or one number.

    Example:
        >>> parse_ratios("0.3,0.1,0.2")
        [0.1, 0.2, 0.3]
        >>> parse_ratios(0.4)
        [0.4]
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        items: list[Any] = [value]
    elif isinstance(value, str):
        items = [t.strip() for t in value.split(",") if t.strip()]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        items = []
    out = []
    for item in items:
        try:
            r = float(item)
        except (TypeError, ValueError):
            raise LDACError(f"{key} must be comma-separated ratios in (0, 0.95], i.e. {key}=0.1,0.2,0.3; "
                            f"{item!r} is not a number") from None
        if isinstance(item, bool) or not (math.isfinite(r) and 0 < r <= 0.95):
            raise LDACError(f"{key} must be comma-separated ratios in (0, 0.95], got {item!r} in {value!r}")
        out.append(r)
    if not out:
        raise LDACError(f"{key} must be comma-separated ratios in (0, 0.95], i.e. {key}=0.1,0.2,0.3; got {value!r}")
    if len(set(out)) != len(out):
        raise LDACError(f"{key} lists a ratio twice: {value!r}")
    return sorted(out)


def retention_point(model, ratio: float, make_pruner: Callable, batches: list, validate: Callable,
                    steps: int = 1, start_step: bool = True) -> dict:
    """Prune a deep copy of ``model`` to ``ratio`` one-shot, without training, and validate it.

    Args:
        model: the dense detector, prepared (split blocks rewritten, head adapted); never changed.
        ratio: fraction of the pruner's target (FLOPs, params, channels or predicted latency) to remove.
        make_pruner: ``make_pruner(copy) -> ChannelPruner`` on the copy (the run's criterion, compensation, floors).
        batches: calibration batches (scoring and compensation).
        validate: ``validate(model) -> {"map50_95", "map50"}``.
        steps: back-to-back steps to the ratio (rescoring in between); 1 = one step.
        start_step: call the criterion's ``start_step(i)`` before step ``i`` (its per-step reseed, as a run's steps
            do); ``benchmarks/retention.py`` keeps its points' criteria as first built (False).

    Returns:
        ``{"ratio", "reached_ratio", "map50_95", "map50", "flops_g", "params_m", "latency_ms", "steps", "widths",
        "wall_s"}``; ``latency_ms`` is the latency model's prediction (None without one). The pruned copy is in
        ``"model"`` (pop it before writing the record).
    """
    from yolo_ldac.pruning.complexity import layer_channels

    t0 = time.perf_counter()
    pruned = copy.deepcopy(model)
    dense_channels = layer_channels(pruned)
    done, res = [], None
    t = time.perf_counter()
    for i in range(1, int(steps) + 1):
        pruner = make_pruner(pruned)
        start = getattr(pruner.criterion, "start_step", None)
        if start_step and callable(start):
            start(i)  # the criterion's per-step seed: every point scores as a run's first step does
        res = pruner.step(float(ratio) * i / int(steps), batches)
        done.append({"target": round(res.target_ratio, 4), "reached": round(res.reached_ratio, 4),
                     "groups_pruned": res.groups_pruned, "scoring_s": round(res.seconds_scoring, 2)})
    prune_s = time.perf_counter() - t
    t = time.perf_counter()
    m = validate(pruned)
    val_s = time.perf_counter() - t
    after = layer_channels(pruned)
    return {"ratio": float(ratio), "reached_ratio": done[-1]["reached"], "map50_95": float(m["map50_95"]),
            "map50": float(m["map50"]), "flops_g": round(res.after.flops_g, 4),
            "params_m": round(res.after.params / 1e6, 4),
            "latency_ms": round(float(res.after.latency_ms), 3) if res.after.latency_ms else None,
            "steps": done,
            "widths": {n: [c, after.get(n, c)] for n, c in dense_channels.items() if after.get(n, c) != c},
            "wall_s": {"prune": round(prune_s, 2), "validate": round(val_s, 2),
                       "total": round(time.perf_counter() - t0, 2)},
            "model": pruned}


# ----------------------------------------------------------------------------------------------------- the sweep
@dataclass
class SweepResult:
    """What ``sweep`` measured: the base, one retention point per ratio (and trained points with ``epochs=``)."""

    out_dir: Path
    base: dict
    points: list[dict]
    trained: list[dict] = field(default_factory=list)
    files: dict = field(default_factory=dict)
    record: dict = field(default_factory=dict)

    @property
    def table(self) -> str:
        return markdown_table(self.record)


def pareto(points: list[dict], x: str = "reached_ratio", y: str = "map50_95") -> list[float]:
    """The ratios of the points no other point beats on both more removed (``x``) and higher mAP (``y``).

    Example:
        >>> pareto([{"ratio": .1, "reached_ratio": .1, "map50_95": .5}, {"ratio": .2, "reached_ratio": .2,
        ...         "map50_95": .52}, {"ratio": .3, "reached_ratio": .3, "map50_95": .4}])
        [0.2, 0.3]
    """
    ok = [p for p in points if p.get(y) is not None and p.get(x) is not None]
    front = []
    for p in ok:
        dominated = any(q is not p and q[x] >= p[x] and q[y] >= p[y] and (q[x] > p[x] or q[y] > p[y]) for q in ok)
        if not dominated:
            front.append(p["ratio"])
    return sorted(front)


def _row(p: dict, base_map: float | None, latency: bool, front: set) -> list[str]:
    drop = (100 * (base_map - p["map50_95"])) if base_map is not None and p.get("map50_95") is not None else None
    cells = [f"{p['ratio']:g}", f"{100 * p['reached_ratio']:.1f}", f"{p['flops_g']:.3f}", f"{p['params_m']:.3f}",
             f"{p['map50_95']:.4f}", f"{p['map50']:.4f}", "-" if drop is None else f"{drop:+.2f}"]
    if latency:
        cells.append("-" if p.get("latency_ms") is None else f"{p['latency_ms']:.2f}")
    cells.append("yes" if p["ratio"] in front else "")
    return cells


def markdown_table(record: dict) -> str:
    """``sweep.md``: the base, then one row per point (retention, and trained when measured), Pareto marks."""
    base, s = record["base"], record["settings"]
    latency = any(p.get("latency_ms") is not None for p in record["points"] + record.get("trained", []))
    lines = [f"# yolo-ldac sweep: {s.get('model')}", "",
             f"Method `{s.get('method')}` (criterion `{record['parts'].get('criterion')}`, compensate "
             f"`{record['parts'].get('compensate')}`) on `{s.get('data')}`, target `{s.get('target')}`; base val "
             f"mAP50-95 **{base['map50_95']:.4f}** (mAP50 {base['map50']:.4f}), {base['flops_g']:.3f} GFLOPs at 640 px"
             + (f", predicted {base['latency_ms']:.2f} ms" if base.get("latency_ms") else "") + ".", ""]
    header = ["ratio", f"{s.get('target')} removed %", "FLOPs (G)", "params (M)", "mAP50-95", "mAP50", "drop (points)"]
    if latency:
        header.append("latency (ms, predicted)")
    header.append("Pareto")
    sections = [("Retention (one step, no training)", record["points"])]
    if record.get("trained"):
        sections.append((f"Trained (compress, {record['schedule']})", record["trained"]))
    for title, pts in sections:
        front = set(pareto(pts))
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
        lines += ["| " + " | ".join(_row(p, base["map50_95"], latency, front)) + " |" for p in pts]
        lines.append("")
    lines += [f"{s.get('target')} removed %: reached by the step; drop: base minus point, in mAP50-95 points; "
              "Pareto: no other point of the section removes more with a higher mAP.", ""]
    return "\n".join(lines)


def write_plot(record: dict, path: Path) -> Path:
    """``sweep.png``: mAP50-95 against FLOPs removed (and against predicted latency when there is one)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = record["base"]
    curves = [("retention (one step, no training)", record["points"], "o-")]
    if record.get("trained"):
        curves.append(("trained (compress)", record["trained"], "s-"))
    latency = any(p.get("latency_ms") is not None for _, pts, _ in curves for p in pts)
    fig, axes = plt.subplots(1, 2 if latency else 1, figsize=(11 if latency else 6, 4.2), squeeze=False)
    ax = axes[0, 0]
    for label, pts, style in curves:  # FLOPs removed whatever the target (counted at 640 px)
        ax.plot([100 * (1 - p["flops_g"] / base["flops_g"]) for p in pts], [p["map50_95"] for p in pts], style, ms=4,
                label=label)
    ax.axhline(base["map50_95"], color="k", ls="--", lw=1, label=f"base {base['map50_95']:.3f}")
    ax.set_xlabel("FLOPs removed (%)")
    ax.set_ylabel("val mAP50-95")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if latency:
        ax = axes[0, 1]
        for label, pts, style in curves:
            ok = [p for p in pts if p.get("latency_ms") is not None]
            ax.plot([p["latency_ms"] for p in ok], [p["map50_95"] for p in ok], style, ms=4, label=label)
        if base.get("latency_ms"):
            ax.plot([base["latency_ms"]], [base["map50_95"]], "k*", ms=8, label="base")
        ax.set_xlabel("latency (ms, predicted by the runtime's latency table)")
        ax.set_ylabel("val mAP50-95")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"sweep: {Path(str(record['settings'].get('model'))).name}, method {record['settings'].get('method')}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_outputs(out_dir: Path, record: dict) -> dict:
    """Write ``sweep.json`` (atomically), ``sweep.md`` and ``sweep.png``; returns their paths."""
    from yolo_ldac.utils.io import atomic_write_json, atomic_write_text

    out_dir = Path(out_dir)
    paths = {"json": out_dir / "sweep.json", "md": out_dir / "sweep.md", "png": out_dir / "sweep.png"}
    write_plot(record, paths["png"])
    atomic_write_text(paths["md"], markdown_table(record))
    atomic_write_json(paths["json"], record, indent=1)
    return paths


def _progress(items: Iterable, desc: str):
    from ultralytics.utils import TQDM

    return TQDM(list(items), desc=desc)


def run_sweep(cfg: dict, source: Any, model=None) -> SweepResult:
    """``yolo-ldac sweep``: every input is checked before ``project/name`` exists, then one retention point per
    ratio (and, with ``epochs=``, one compress run per ratio under ``<out>/r<ratio>``), then the three files."""
    from ultralytics.utils import LOGGER

    from yolo_ldac.schedule.compressor import LOG_FILE, Compressor, log_to_file
    from yolo_ldac.utils.rundir import open_run_dir

    ratios = parse_ratios(cfg["ratios"])
    if not cfg.get("data"):
        raise LDACError("sweep needs data=... (a dataset yaml: each point is validated on its val split)")
    if _measured_target(cfg):
        raise LDACError("sweep measures a curve: speedup= and latency_ms= set one target; leave them out (target="
                        "latency with runtime= gives the latency column)")
    trained = cfg.get("epochs") is not None
    comp = Compressor(dict(cfg, mode="compress" if trained else "prune", ratio=max(ratios)), source, model=model)
    comp.prepare_points()  # parts, data, model, reachability of the largest ratio: before the folder exists
    out_dir, lock = open_run_dir(cfg["project"], cfg["name"], exist_ok=bool(cfg["exist_ok"]), keep_finished=False,
                                 what="sweep folder")
    with lock, log_to_file(out_dir / LOG_FILE):
        comp.open_points(out_dir)
        LOGGER.info(f"yolo-ldac sweep: {len(ratios)} ratio(s) of {comp.cfg['target']}, results to {out_dir}")
        t0 = time.perf_counter()
        base = {**comp.validate(comp.prepared), "flops_g": round(comp.dense_comp.flops_g, 4),
                "params_m": round(comp.dense_comp.params / 1e6, 4), "latency_ms": comp.dense_latency_ms()}
        points = []
        bar = _progress(ratios, "sweep: retention")
        for r in bar:
            rec = comp.retention_point(r)
            rec.pop("model", None)
            points.append(rec)
            bar.set_description(f"sweep: r={r:g} mAP50-95 {rec['map50_95']:.4f}")
        bar.close()
        trained_pts, schedule = [], None
        if trained:
            schedule = (f"rounds={cfg['rounds']} epochs_per_round={cfg['epochs_per_round']} "
                        f"finetune_epochs={cfg['epochs']}")
            for r in _progress(ratios, "sweep: trained"):
                trained_pts.append(comp.trained_point(r, out_dir, int(cfg["epochs"])))
        settings = {k: v for k, v in comp.ldac_cfg.items() if k not in ("mode",)}
        settings["model"] = str(source) if isinstance(source, (str, Path)) else type(source).__name__
        from datetime import datetime

        from yolo_ldac.utils.env import machine_info

        record = {"what": "sweep", "settings": settings, "parts": comp.parts, "ratios": ratios, "base": base,
                  "points": points, "trained": trained_pts, "schedule": schedule,
                  "pareto": {"retention": pareto(points), "trained": pareto(trained_pts)},
                  "flops_imgsz": 640, "wall_s": round(time.perf_counter() - t0, 2), "machine": machine_info(),
                  "date": datetime.now().astimezone().isoformat(timespec="seconds")}
        files = write_outputs(out_dir, record)
    LOGGER.info(markdown_table(record))
    LOGGER.info(f"Results saved to {out_dir}")
    return SweepResult(out_dir, base, points, trained_pts, files, record)


def _measured_target(cfg: dict) -> bool:
    return cfg.get("speedup") is not None or cfg.get("latency_ms") is not None


__all__ = ["SWEEP_FILES", "SweepResult", "markdown_table", "pareto", "parse_ratios", "retention_point", "run_sweep",
           "write_outputs"]
