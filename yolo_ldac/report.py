"""Compression reports: ``report.json``, ``report.md`` and ``channels.png`` in a run directory, and the compact
before/after table printed on the terminal.

The report is a plain dict; every key is optional except where noted, and missing or ``None`` values print "-":

=============  ==========================================================================================
key            meaning
=============  ==========================================================================================
``model``      the source model (path or name)
``data``       the dataset yaml
``method``     the pruning criterion, e.g. ``"ldac"``
``target``     what the ratio refers to, e.g. ``"flops"``
``ratio``      the requested reduction ratio (fraction, e.g. 0.5)
``before``     ``{map50_95, map50, flops_g, params_m}`` of the unpruned model (mAP as fractions 0..1;
               mAP is ``None`` when not validated)
``after``      the same for the pruned (and fine-tuned) model
``removed``    ``{flops_pct, params_pct}``: percent removed; computed from before/after when absent
``layers``     list of ``{name, before, after}``: output channels per prunable layer
``rounds``     list of ``{round, ratio_reached, map50_95_before_step, map50_95_after_step,
               map50_95_after_train, flops_g, params_m}`` (iterative pruning only)
``timings``    ``{phase: wall seconds}``; an entry ``total`` is the run's wall time (else the sum). The
               phases (``prepare``, ``validate_base``, ``prune``: the steps, ``push`` or
               ``train_between_steps``: the rounds' training, ``finetune``, ``validate_final``, ...) are
               disjoint; the entries named in ``timings_within`` (the compressor's ``train``, ``validate``,
               ``calibration_data``) are time spent inside them, listed apart
``timings_within``  the ``timings`` keys that are time inside the phases, not phases (not added to the total)
``latency``    measured latency (only when the run measured it: ``target=latency``, ``speedup=``,
               ``latency_ms=``, ``round_to=auto``): ``{runtime, precision, threads, imgsz, dense_ms,
               compressed_ms, speedup, flops_speedup, predicted_ms, target_ms, met, round_to}``
``budget``     with ``max_drop=`` / ``max_drop_rel=``: ``{max_drop, max_drop_rel, base_map50_95, floor_map50_95,
               grid, search: {points, chosen, bracket, reason}, ratio, finished_map50_95, step_back, met,
               optimizer_steps: {run, step_back, step_forward, x_fixed_run}}``
``paths``      ``{best, portable, run_dir}``
``settings``   dict of the settings used
=============  ==========================================================================================

In the change column mAP differences are in percentage points (``after - before``, times 100) and FLOPs/params
changes are the percent removed.

Example:
    >>> from yolo_ldac.report import write_report, format_table
    >>> paths = write_report("runs/prune/exp", report)  # {"json": ..., "md": ..., "png": ...}
    >>> print(format_table(report))
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from yolo_ldac.tasks import metric_label

METRIC_ROWS = (  # (key, label, kind)
    ("map50_95", "mAP50-95", "map"),
    ("map50", "mAP50", "map"),
    ("flops_g", "FLOPs (G)", "size"),
    ("params_m", "params (M)", "size"),
)
REMOVED_KEYS = {"flops_g": "flops_pct", "params_m": "params_pct"}
# labels of the timings entries a run may name in ``timings_within``: time inside the phases, not phases
ACROSS_PHASES = {"train": "training (push, train between steps, fine-tune)",
                 "validate": "validation (base, after each step, final)",
                 "calibration_data": "calibration images (loaded once)"}
DASH = "-"


# ------------------------------------------------------------------------------------------------------- formatting
def _num(v: Any) -> float | None:
    """``v`` as a finite float, or None (None, NaN, non-numbers)."""
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _fmt(v: Any, digits: int = 4) -> str:
    f = _num(v)
    return DASH if f is None else f"{f:.{digits}f}"


def _digits(kind: str) -> int:
    return 4 if kind == "map" else 3


def _removed_pct(report: dict, key: str) -> float | None:
    """Percent of ``key`` (flops_g / params_m) removed: ``report['removed']`` if given, else from before/after."""
    given = _num((report.get("removed") or {}).get(REMOVED_KEYS[key]))
    if given is not None:
        return given
    b, a = _num((report.get("before") or {}).get(key)), _num((report.get("after") or {}).get(key))
    if b is None or a is None or b == 0:
        return None
    return 100.0 * (1.0 - a / b)


def _change(report: dict, key: str, kind: str) -> str:
    if kind == "map":
        b, a = _num((report.get("before") or {}).get(key)), _num((report.get("after") or {}).get(key))
        return DASH if b is None or a is None else f"{100.0 * (a - b):+.2f} pts"
    pct = _removed_pct(report, key)
    return DASH if pct is None else f"{pct:.1f}% removed"


def _rows(report: dict) -> list[tuple[str, str, str, str]]:
    before, after = report.get("before") or {}, report.get("after") or {}
    rows = list(METRIC_ROWS)
    task_label = metric_label(report.get("task"))
    if task_label != "mAP50-95":  # the task's own mAP first (mask, pose), then the box mAP it also reports
        prefix = task_label.removesuffix("mAP50-95")
        rows[:2] = [("map50_95", task_label, "map"), ("map50", prefix + "mAP50", "map")]
        if before.get("box_map50_95") is not None or after.get("box_map50_95") is not None:
            rows[2:2] = [("box_map50_95", "box mAP50-95", "map"), ("box_map50", "box mAP50", "map")]
    return [
        (_flops_label(report) if key == "flops_g" else label, _fmt(before.get(key), _digits(kind)),
         _fmt(after.get(key), _digits(kind)), _change(report, key, kind))
        for key, label, kind in rows
    ]


def format_table(report: dict) -> str:
    """The compact before/after table printed on the terminal (fixed width, like Ultralytics' val printout)::

        metric             before       after           change
        mAP50-95           0.4520      0.4410        -1.10 pts
        FLOPs (G)           6.500       3.250    50.0% removed
    """
    lines = [f"{'metric':<14}{'before':>12}{'after':>12}{'change':>17}"]
    lines += [f"{label:<14}{b:>12}{a:>12}{c:>17}" for label, b, a, c in _rows(report)]
    return "\n".join(lines)


def _flops_label(report: dict) -> str:
    """The FLOPs row's label, with the input size the count is at when the report records it."""
    size = _num(report.get("flops_imgsz"))
    return "FLOPs (G)" if size is None else f"GFLOPs ({int(size)} px)"


def format_summary(report: dict, imgsz: int | None = None) -> str:
    """The lines a finished compress / prune / finetune run ends with on the terminal: parameters, GFLOPs at the
    run's input size (``imgsz``; Ultralytics' count scales with the input area, as ``yolo val`` prints it), mAP50-95
    before -> after, and where the model is (``Results saved to ...``, Ultralytics' wording).

    Example:
        >>> print(format_summary({"mode": "prune", "before": {"map50_95": 0.45, "flops_g": 6.5, "params_m": 2.6},
        ...     "after": {"map50_95": 0.44, "flops_g": 3.25, "params_m": 1.4}, "flops_imgsz": 640,
        ...     "paths": {"run_dir": "runs/ldac/exp", "best": "runs/ldac/exp/weights/best.pt"}}, imgsz=320))
        yolo-ldac prune: before -> after
          params (M)         2.600 ->     1.400  (46.2% removed)
          GFLOPs (320 px)    1.625 ->     0.812  (50.0% removed)
          mAP50-95          0.4500 ->    0.4400  (-1.00 pts)
        Results saved to runs/ldac/exp (model: runs/ldac/exp/weights/best.pt, report: runs/ldac/exp/report.md)
    """
    before, after = report.get("before") or {}, report.get("after") or {}
    counted = _num(report.get("flops_imgsz"))
    size = int(imgsz) if imgsz else (int(counted) if counted else None)
    scale = (size / counted) ** 2 if size and counted else 1.0

    def flops(v: Any) -> float | None:
        f = _num(v)
        return None if f is None else f * scale

    flops_label = f"GFLOPs ({size} px)" if size else "FLOPs (G)"
    rows = [("params (M)", _fmt(before.get("params_m"), 3), _fmt(after.get("params_m"), 3),
             _change(report, "params_m", "size")),
            (flops_label, _fmt(flops(before.get("flops_g")), 3), _fmt(flops(after.get("flops_g")), 3),
             _change(report, "flops_g", "size")),
            (metric_label(report.get("task")), _fmt(before.get("map50_95")), _fmt(after.get("map50_95")),
             _change(report, "map50_95", "map"))]
    if before.get("box_map50_95") is not None or after.get("box_map50_95") is not None:  # segment, pose
        rows.append(("box mAP50-95", _fmt(before.get("box_map50_95")), _fmt(after.get("box_map50_95")),
                     _change(report, "box_map50_95", "map")))
    lines = [f"yolo-ldac {report.get('mode') or 'run'}: before -> after"]
    lines += [f"  {label:<16}{b:>8} -> {a:>9}  ({c})" for label, b, a, c in rows]
    paths = report.get("paths") or {}
    run_dir = paths.get("run_dir")
    if run_dir:
        lines.append(f"Results saved to {run_dir} (model: {paths.get('best')}, report: {Path(run_dir) / 'report.md'})")
    return "\n".join(lines)


def _md_escape(v: Any) -> str:
    text = DASH if v is None else str(v)
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: list[list[Any]], align: str | None = None) -> list[str]:
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    out += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows]
    return out


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _kept_pct(before: Any, after: Any) -> str:
    b, a = _num(before), _num(after)
    return DASH if b is None or a is None or b == 0 else f"{100.0 * a / b:.1f}"


def _int_or_dash(v: Any) -> str:
    f = _num(v)
    return DASH if f is None else (str(int(f)) if f == int(f) else f"{f:g}")


def _headline(report: dict) -> str:
    before, after = report.get("before") or {}, report.get("after") or {}
    parts = []
    pct = _removed_pct(report, "flops_g")
    if pct is not None:
        parts.append(f"FLOPs {_fmt(before.get('flops_g'), 3)} G → {_fmt(after.get('flops_g'), 3)} G ({pct:.1f}% removed)")
    if _num(before.get("map50_95")) is not None or _num(after.get("map50_95")) is not None:
        parts.append(
            f"{metric_label(report.get('task'))} {_fmt(before.get('map50_95'))} → {_fmt(after.get('map50_95'))} "
            f"({_change(report, 'map50_95', 'map')})"
        )
    budget = report.get("budget") or {}
    if budget.get("ratio") is not None:
        given = " ".join(f"{k}={budget[k]:g}" for k in ("max_drop", "max_drop_rel") if budget.get(k) is not None)
        parts.append(f"{given}: ratio {budget['ratio']:g} searched"
                     + (", stepped back" if budget.get("step_back") else "")
                     + (f", stepped forward to {budget['final_ratio']:.3f}" if (budget.get("step_forward") or {}).get(
                         "kept") == "step_forward" else "")
                     + ("" if budget.get("met", True) else ", budget NOT met"))
    return "; ".join(parts)


def _before_after_legend(report: dict) -> str:
    """What the two columns are: *before* is the model the user passed, *after* the run's result."""
    data = f" on `{_md_escape(report.get('data'))}`" if report.get("data") else ""
    return (f"*before*: the input model `{_md_escape(report.get('model'))}` as passed{data}, before any pruning or "
            "training; *after*: this run's model (`weights/best.pt`).")


def budget_markdown(b: dict | None) -> list[str]:
    """The ``## Budget`` section (``max_drop=`` / ``max_drop_rel=``): what was searched, each point, why the ratio
    was chosen, the step back and the optimizer steps; nothing without a budget."""
    if not b:
        return []
    base = _num(b.get("base_map50_95")) or 0.0
    given = " ".join(f"{k}={b[k]:g}" for k in ("max_drop", "max_drop_rel") if b.get(k) is not None)
    search = b.get("search") or {}
    pts = search.get("points") or []
    grid = b.get("grid") or []
    md = ["## Budget", "",
          f"{given}: the finished model needs mAP50-95 >= {_fmt(b.get('floor_map50_95'))} (base {_fmt(base)}). "
          f"Searched the ratio of {b.get('target')} in [{grid[0] if grid else '-'}, {grid[-1] if grid else '-'}] "
          f"(ratios=; reachable {_fmt(b.get('reachable'), 3)}) with {len(pts)} one-step retention points "
          f"(compensate={b.get('compensate')}, no training; {_fmt(b.get('search_s'), 1)} s), the grid up to the "
          f"first miss, then bisected to search_tol={b.get('search_tol')}.", ""]
    rows = [[i + 1, p.get("stage"), _fmt(p.get("ratio"), 4), _fmt(p.get("reached_ratio"), 3),
             _fmt(p.get("map50_95")), f"{100 * ((_num(p.get('map50_95')) or 0.0) - base):+.2f}",
             "yes" if p.get("within") else "no"] for i, p in enumerate(pts)]
    md += _md_table(["#", "stage", "ratio", "reached", "mAP50-95", "change (points)", "within"], rows) + [""]
    if b.get("ratio") is not None:
        md += [f"Chosen: ratio **{b['ratio']:g}**: {search.get('reason')}.", ""]
    elif search.get("reason"):
        md += [f"Nothing chosen: {search.get('reason')}.", ""]
    step = b.get("step_back")
    if b.get("finished_map50_95") is not None:
        state = "within the budget" if step is None else "MISSED the budget"
        md += [f"Finished model at the chosen ratio: mAP50-95 {_fmt(b.get('finished_map50_95'))}, {state}.", ""]
    if step:
        frm = step.get("from") or {}
        if frm:
            tried = ", ".join(f"{t.get('phase')} {_fmt(t.get('map50_95'))}" for t in step.get("tried", []))
            md += [f"Step back to `{frm.get('phase')}` (ratio {_fmt(frm.get('ratio'), 3)}, mAP50-95 "
                   f"{_fmt(frm.get('map50_95'))}, the largest ratio of the run's phase checkpoints within the budget; "
                   f"tried: {tried}), "
                   f"fine-tuned {step.get('epochs', 0)} epoch(s)"
                   + (f" to mAP50-95 {_fmt(step.get('trained_map50_95'))}" if step.get("trained_map50_95") is not None
                      else "")
                   + f"; kept: the {step.get('kept')} model.", ""]
    fwd = b.get("step_forward")
    if fwd:
        fpts = (fwd.get("search") or {}).get("points") or []
        tried = ", ".join(f"{_fmt(p.get('ratio'), 3)}: {_fmt(p.get('map50_95'))}" for p in fpts)
        if fwd.get("ratio") is None:
            md += [f"Step forward: searched from the finished model (ratio {_fmt(fwd.get('from_ratio'), 3)}; "
                   f"points {tried}); no larger ratio is within the budget in one step: the finished model is kept.",
                   ""]
        else:
            md += [f"Step forward: searched from the finished model (ratio {_fmt(fwd.get('from_ratio'), 3)}, "
                   f"mAP50-95 {_fmt(fwd.get('from_map50_95'))}; one-step points {tried}), pruned to "
                   f"{_fmt(fwd.get('reached_ratio'), 3)} and fine-tuned {fwd.get('epochs')} epoch(s) to mAP50-95 "
                   f"{_fmt(fwd.get('trained_map50_95'))}; kept: the "
                   + ("step-forward model" if fwd.get("kept") == "step_forward" else "finished model (the step "
                                                                                     "forward missed the budget)")
                   + ".", ""]
    if b.get("message"):
        md += [f"**{b['message']}**", ""]
    steps = b.get("optimizer_steps") or {}
    if steps.get("run"):  # a run that trained (prune trains nothing)
        md += [f"Optimizer steps: {steps.get('run')} in the run, {steps.get('step_back')} in the step back, "
               f"{steps.get('step_forward', 0)} in the step forward: "
               f"{_fmt(steps.get('x_fixed_run'), 2)} x a fixed-ratio run.", ""]
    return md


def format_markdown(report: dict) -> str:
    """The ``report.md`` text: summary, before/after, rounds, per-layer channels, timings, settings and paths."""
    md = [f"# yolo-ldac report: {_md_escape(report.get('model'))}", ""]
    head = _headline(report)
    if head:
        md += [head, ""]
    parts = report.get("parts")
    if parts:
        md += [f"Parts: criterion `{parts.get('criterion')}`, push `{parts.get('push')}`, compensate "
               f"`{parts.get('compensate')}`.", ""]
    resumed = report.get("resumed") or []
    if resumed:
        where = ", ".join(str(r.get("at_phase")) for r in resumed)
        md += [f"This run was interrupted and resumed {len(resumed)} time(s), at phase(s): {where}.", ""]
    md += ["## Before / after", ""]
    md += [_before_after_legend(report), ""]
    md += _md_table(["metric", "before", "after", "change"], [list(r) for r in _rows(report)])
    md += ["", "mAP changes are in percentage points; FLOPs and params changes are the percent removed.", ""]

    md += budget_markdown(report.get("budget"))

    lat = report.get("latency")
    if lat:
        md += ["## Measured latency", ""]
        md += [f"{lat.get('runtime')} {lat.get('precision')}, {lat.get('threads')} thread(s), {lat.get('imgsz')} px, "
               "batch 1, on the machine that ran the compression; dense and compressed exports timed interleaved "
               "(median).", ""]
        rows = [["dense (ms)", _fmt(lat.get("dense_ms"), 2)], ["compressed (ms)", _fmt(lat.get("compressed_ms"), 2)],
                ["measured speed-up", f"{_fmt(lat.get('speedup'), 2)}x"],
                ["FLOPs ratio (dense / compressed)", f"{_fmt(lat.get('flops_speedup'), 2)}x"]]
        if lat.get("predicted_ms") is not None:
            rows.append(["predicted by the latency table (ms)", _fmt(lat.get("predicted_ms"), 2)])
        if lat.get("target_ms") is not None:
            rows.append(["measured target (ms)", f"{_fmt(lat.get('target_ms'), 2)} ({'met' if lat.get('met') else 'NOT met'})"])
        if lat.get("round_to") is not None:
            rows.append(["round_to", lat.get("round_to")])
        md += _md_table(["", "value"], rows, align="lr") + [""]
        if lat.get("plot"):
            md += [f"![mAP against measured latency]({Path(lat['plot']).name})", ""]

    rounds = report.get("rounds") or []
    if rounds:
        md += ["## Rounds", ""]
        header = ["round", "ratio reached", "mAP50-95 before step", "mAP50-95 after step", "mAP50-95 after train",
                  _flops_label(report), "params (M)"]
        timed = any(r.get("latency_ms") is not None for r in rounds)
        if timed:
            at = f", {lat['imgsz']} px" if lat and lat.get("imgsz") else ""
            header += [f"latency (ms{at})", "speed-up"]
        rows = [
            [
                _int_or_dash(r.get("round")),
                _fmt(r.get("ratio_reached"), 3),
                _fmt(r.get("map50_95_before_step")),
                _fmt(r.get("map50_95_after_step")),
                _fmt(r.get("map50_95_after_train")),
                _fmt(r.get("flops_g"), 3),
                _fmt(r.get("params_m"), 3),
            ] + ([_fmt(r.get("latency_ms"), 2), _fmt(r.get("speedup_measured"), 2)] if timed else [])
            for r in rounds
        ]
        md += _md_table(header, rows) + [""]

    layers = report.get("layers") or []
    if layers:
        md += ["## Channels per layer", ""]
        rows = [
            [f"`{l.get('name')}`", _int_or_dash(l.get("before")), _int_or_dash(l.get("after")),
             _kept_pct(l.get("before"), l.get("after"))]
            for l in layers
        ]
        tb = sum(_num(l.get("before")) or 0 for l in layers)
        ta = sum(_num(l.get("after")) or 0 for l in layers)
        rows.append(["**total**", _int_or_dash(tb), _int_or_dash(ta), _kept_pct(tb, ta)])
        md += _md_table(["layer", "before", "after", "kept %"], rows) + [""]

    timings = report.get("timings") or {}
    if timings:
        md += ["## Wall time", ""]
        # a "total" entry (the run's own wall time, including untimed gaps) is the total row, not a phase; the
        # phases are disjoint, so their shares add up to 100 %; time spent across phases is listed apart
        within = set(report.get("timings_within") or ())
        phases = {k: v for k, v in timings.items() if k != "total" and k not in within}
        across = {k: v for k, v in timings.items() if k in within}
        total = _num(timings.get("total"))
        total = sum(_num(v) or 0.0 for v in phases.values()) if total is None else total

        def row(name: str, sec: Any) -> list[str]:
            s = _num(sec)
            share = DASH if s is None or total <= 0 else f"{100 * s / total:.1f}"
            return [name, _fmt(s, 1), DASH if s is None else _hms(s), share]

        rows = [row(phase, sec) for phase, sec in phases.items()]
        rest = total - sum(_num(v) or 0.0 for v in phases.values())
        if rest > 0.005 * total and rest > 0.05:
            rows.append(row("other (between phases)", rest))
        rows.append(["**total**", _fmt(total, 1), _hms(total), "100.0" if total > 0 else DASH])
        md += _md_table(["phase", "seconds", "h:mm:ss", "share %"], rows) + [""]
        if across:
            md += ["Inside those phases (included in them, not added to the total):", ""]
            md += _md_table(["activity", "seconds", "h:mm:ss", "share %"],
                            [row(ACROSS_PHASES.get(k, k), v) for k, v in across.items()]) + [""]

    md += ["## Settings", ""]
    settings = {k: report.get(k) for k in ("model", "data", "method", "target", "ratio")}
    # what the run recorded at the top (the model it was given, ...) wins over a settings entry of the same name
    settings.update({k: v for k, v in (report.get("settings") or {}).items() if k not in settings})
    rows = [[f"`{k}`", v if not isinstance(v, (dict, list)) else json.dumps(v, default=str)] for k, v in settings.items()]
    md += _md_table(["setting", "value"], rows, align="ll") + [""]

    paths = report.get("paths") or {}
    if paths:
        md += ["## Files", ""]
        md += _md_table(["file", "path"], [[k, f"`{v}`" if v else None] for k, v in paths.items()], align="ll") + [""]
    return "\n".join(md)


# ------------------------------------------------------------------------------------------------------------ chart
def plot_latency(report: dict, path: str | Path) -> Path | None:
    """mAP50-95 against measured latency: the dense model and each round's model after its step (and after its
    training, where validated); None when the rounds were not timed."""
    rounds = [r for r in report.get("rounds") or [] if r.get("latency_ms") is not None]
    lat = report.get("latency") or {}
    if not rounds or lat.get("dense_ms") is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    before = _num((report.get("before") or {}).get("map50_95"))
    if before is not None:
        ax.scatter([lat["dense_ms"]], [before], color="black", zorder=3, label="dense")
    for key, style, label in (("map50_95_after_step", "o--", "after step"), ("map50_95_after_train", "s-",
                                                                             "after training")):
        pts = [(r["latency_ms"], _num(r.get(key)), r.get("round")) for r in rounds if _num(r.get(key)) is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=label)
            for x, y, rnd in pts:
                ax.annotate(f"r{rnd}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel(f"measured latency (ms): {lat.get('runtime')} {lat.get('precision')}, {lat.get('threads')} thread(s),"
                  f" {lat.get('imgsz')} px")
    ax.set_ylabel("mAP50-95")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
    return Path(path)


def plot_channels(report: dict, path: str | Path) -> Path:
    """Horizontal bar chart of output channels per layer, before (grey) vs after (blue), saved as PNG.

    Uses matplotlib's object API with the Agg canvas: no pyplot, no global backend change, no display needed.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    layers = [l for l in report.get("layers") or [] if _num(l.get("before")) is not None]
    n = len(layers)
    height = min(max(2.5, 0.22 * n + 1.4), 60.0)
    fig = Figure(figsize=(9, height), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(111)
    pct = _removed_pct(report, "flops_g")
    title = "Output channels per layer"
    if pct is not None:
        before, after = (report.get("before") or {}).get("flops_g"), (report.get("after") or {}).get("flops_g")
        title += f"\nFLOPs {_fmt(before, 3)} G → {_fmt(after, 3)} G ({pct:.1f}% removed)"
    ax.set_title(title, fontsize=11)
    if n:
        ys = list(range(n))
        before = [_num(l.get("before")) or 0 for l in layers]
        after = [_num(l.get("after")) if _num(l.get("after")) is not None else 0 for l in layers]
        ax.barh(ys, before, height=0.8, color="#c8c8c8", label="before")
        ax.barh(ys, after, height=0.5, color="#1f77b4", label="after")
        ax.set_yticks(ys)
        ax.set_yticklabels([str(l.get("name")) for l in layers], fontsize=7 if n > 40 else 8)
        ax.invert_yaxis()  # first layer on top
        ax.set_ylim(n - 0.5, -0.5)
        ax.set_xlabel("output channels")
        ax.grid(axis="x", alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no per-layer channel data", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png")
    return path


# ------------------------------------------------------------------------------------------------------------ write
def write_report(run_dir: str | Path, report: dict) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` and ``channels.png`` into ``run_dir`` (created if needed).

    Returns:
        ``{"json": Path, "md": Path, "png": Path}``.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": run_dir / "report.json", "md": run_dir / "report.md", "png": run_dir / "channels.png"}
    from yolo_ldac.utils.io import atomic_save, atomic_write_json, atomic_write_text

    atomic_write_json(paths["json"], report)
    atomic_write_text(paths["md"], format_markdown(report))
    atomic_save(paths["png"], lambda tmp: plot_channels(report, tmp))
    if (report.get("latency") or {}).get("plot"):
        atomic_save(Path(report["latency"]["plot"]), lambda tmp: plot_latency(report, tmp))
    return paths
