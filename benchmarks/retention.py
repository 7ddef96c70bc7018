"""Retention curves: how much mAP a criterion keeps when it prunes a trained detector ONE-SHOT, without training.

For every criterion (registered in ``yolo_ldac.pruning.criteria.CRITERIA``), every variant (compensation and
allocation options of :class:`~yolo_ldac.pruning.engine.ChannelPruner`) and every FLOPs ratio, a fresh copy of the
base model is pruned by ONE ``ChannelPruner.step`` to that ratio (or ``steps`` back-to-back steps, rescoring in
between, for the ``stepsK`` variant), with compensation, no training, and validated (mAP50-95, mAP50 on val). This
measures the channel *choice* (and what compensation recovers), which is what a criterion is for, in seconds per
point instead of the hours a train-prune-finetune comparison takes.

The code path is the library's: ``adapt_head_to_names``, ``rewrite_split_blocks``, ``protected_layers``, ``measure``
(FLOPs counted at 640 px, as ``YOLOLDAC.compress`` does), ``ChannelPruner``, ``build_calibration_batches`` (the
training split, seeded, no augmentation), ``yolo_ldac.api.validate``, and for each point
``yolo_ldac.sweep.retention_point`` (the one-shot point ``yolo-ldac sweep`` and ``max_drop=`` measure too; the user
command for a curve is ``yolo-ldac sweep model=... data=... ratios=...``).

One JSON per (criterion, variant, ratio) point in ``<out>/<criterion>__<variant>__r<ratio>.json`` (settings,
machine, versions, wall times, reached ratio, widths); finished points are read back, never redone (a point whose
settings differ is an error: choose another --out). Then ``retention.png`` (mAP50-95 vs FLOPs removed, one line per
criterion/variant, the base as a dashed line), ``retention_panels.png`` (one panel per variant) and
``retention.md`` (the table) are written to ``<out>``.

Variants are written as ``+``-joined tokens: ``mean`` | ``lsq`` | ``none`` (compensation), ``capX`` (no layer loses
more than X of its channels per step), ``perflop`` (blocks ranked by score per FLOP removed), ``stepsK`` (K
back-to-back prune steps to the ratio, rescoring between them), ``ridgeX`` (the lsq ridge). E.g. ``lsq+cap0.3``.

Ratios are of the analytic conv FLOPs count by default (every point so far); ``--counter ultralytics`` counts them as
``compress`` and ``yolo-ldac sweep`` do (Ultralytics' counter), so that a sweep and this script measure the same
points (``tests/test_sweep.py`` checks that they agree).

Usage:
    python benchmarks/retention.py --base runs/base/yolo11n-composite400-e50-last.pt \\
        --data datasets/composite-400x160/data.yaml --criteria random l2 group_fisher --variants mean lsq
    python benchmarks/retention.py ... --report-only     # redraw the plot and table from the JSON files

As a function: ``retention_curves(base, data, criteria, ratios, variants, ...)`` returns the records;
``markdown_section(records, base_record)`` gives the table for a report.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
import traceback
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "benchmarks"):  # the package, and the scripts' shared module (common.py)
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))
os.environ.setdefault("YOLO_CONFIG_DIR", str(ROOT / ".cache" / "ultralytics"))
from yolo_ldac.utils.env import setup_offline_env  # noqa: E402

setup_offline_env(offline=True)
from yolo_ldac.utils.io import atomic_write_json, read_json  # noqa: E402
from common import data_key  # noqa: E402  (benchmarks/common.py)

SCRIPT = "benchmarks/retention.py"
RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
FLOPS_IMGSZ = 640  # what YOLOLDAC.compress counts FLOPs at


# ----------------------------------------------------------------------------------------------- variants
def parse_variant(variant: str) -> dict:
    """``"lsq+cap0.3+perflop"`` -> ChannelPruner keyword options and the number of steps.

    Example:
        >>> parse_variant("lsq+cap0.3")
        {'compensate': 'lsq', 'layer_cap': 0.3, 'per_flop': False, 'steps': 1, 'lsq_ridge': 0.001}
    """
    out = {"compensate": "mean", "layer_cap": None, "per_flop": False, "steps": 1, "lsq_ridge": 1e-3}
    for tok in str(variant).split("+"):
        tok = tok.strip()
        if tok in ("mean", "lsq", "none"):
            out["compensate"] = tok
        elif tok.startswith("cap"):
            out["layer_cap"] = float(tok[3:])
        elif tok == "perflop":
            out["per_flop"] = True
        elif tok.startswith("steps"):
            out["steps"] = int(tok[5:])
        elif tok.startswith("ridge"):
            out["lsq_ridge"] = float(tok[5:])
        else:
            raise ValueError(f"unknown variant token {tok!r} in {variant!r}")
    return out


def point_name(criterion: str, variant: str, ratio: float) -> str:
    return f"{criterion}__{variant}__r{float(ratio):g}"


# ----------------------------------------------------------------------------------------------- the runner
class Retention:
    """Everything shared by the points of one (base, data, settings): the loaded base, calibration, validation."""

    def __init__(self, base: str | Path, data: str | Path, imgsz: int = 160, calib_batches: int = 4,
                 calib_batch: int = 8, val_batch: int = 16, seed: int = 0, threads: int = 1,
                 out: str | Path | None = None, counter: str = "analytic"):
        import torch

        torch.set_num_threads(int(threads))
        import yolo_ldac  # noqa: F401  (registers every criterion)
        import yolo_ldac.pruning.fisher_variants  # noqa: F401  (research variants)
        from yolo_ldac.api import check_data
        from yolo_ldac.nn.adapter import adapt_head_to_names, load_detection_model

        self.base, self.data = Path(base).resolve(), Path(data).resolve()
        self.data_dict = check_data(str(self.data))
        self.imgsz, self.seed, self.threads = int(imgsz), int(seed), int(threads)
        self.n_calib, self.calib_batch, self.val_batch = int(calib_batches), int(calib_batch), int(val_batch)
        self.model = adapt_head_to_names(load_detection_model(str(self.base)), self.data_dict["names"]).float().cpu()
        self.out = Path(out) if out else ROOT / "benchmarks" / "results" / "retention" / data_key(self.data) / \
            self.base.stem
        self._calib = None
        self.calib_s = 0.0
        if counter not in ("analytic", "ultralytics"):
            raise ValueError(f"counter must be analytic or ultralytics, got {counter!r}")
        self.counter = counter

    @property
    def settings(self) -> dict:
        return {"base": str(self.base), "data": str(self.data), "imgsz": self.imgsz, "calib_batches": self.n_calib,
                "calib_batch": self.calib_batch, "calib_images": self.n_calib * self.calib_batch,
                "calib_split": "train (seeded, no augmentation)", "val_batch": self.val_batch, "seed": self.seed,
                "flops_imgsz": FLOPS_IMGSZ, "target": "flops", "round_to": 8, "floor": 0.125, "tolerance": 0.01,
                "threads": self.threads, "training": "none (one-shot)",
                # only when not the default: the points measured before the option existed read back unchanged
                **({"counter": self.counter} if self.counter != "analytic" else {})}

    @property
    def flops_fn(self):
        """Ultralytics' FLOPs counter (``--counter ultralytics``: what ``compress`` and ``yolo-ldac sweep`` count
        ratios by), or None: the analytic conv count."""
        if self.counter != "ultralytics":
            return None
        from yolo_ldac.nn.adapter import ultralytics_gflops

        return ultralytics_gflops

    def calib(self) -> list[dict]:
        if self._calib is None:
            from yolo_ldac.pruning.calibration import build_calibration_batches
            from yolo_ldac.tasks import task_of

            t = time.perf_counter()
            self._calib = build_calibration_batches(self.data_dict, imgsz=self.imgsz, batch=self.calib_batch,
                                                    n_batches=self.n_calib, seed=self.seed,
                                                    task=task_of(self.model) or "detect")
            self.calib_s = time.perf_counter() - t
        return self._calib

    def validate(self, model) -> dict:
        from yolo_ldac.api import validate

        return validate(model, {"data": str(self.data)}, {"imgsz": self.imgsz, "batch": self.val_batch,
                                                          "device": "cpu", "workers": 0})

    def fresh(self):
        from yolo_ldac.nn.adapter import protected_layers, rewrite_split_blocks
        from yolo_ldac.pruning.complexity import layer_channels, measure

        model = copy.deepcopy(self.model)
        rewrite_split_blocks(model)
        dense = measure(model, FLOPS_IMGSZ, protected=protected_layers(model), flops_fn=self.flops_fn)
        return model, dense, layer_channels(model)

    def base_record(self) -> dict:
        """mAP of the base model itself (the dashed line), cached in ``<out>/base_val.json``."""
        path = self.out / "base_val.json"
        rec = read_json(path)
        if rec and rec.get("settings") == self.settings:
            return rec
        from yolo_ldac.utils.env import machine_info

        model, dense, _ = self.fresh()  # the split rewrite is checked to be output-preserving
        t = time.perf_counter()
        m = self.validate(model)
        rec = {"what": "base", "settings": self.settings, "map50_95": m["map50_95"], "map50": m["map50"],
               "flops_g": round(dense.flops_g, 4), "params_m": round(dense.params / 1e6, 4),
               "wall_s": round(time.perf_counter() - t, 2), "machine": machine_info(),
               "date": datetime.now().astimezone().isoformat(timespec="seconds")}
        atomic_write_json(path, rec, indent=1)
        return rec

    def point(self, criterion: str, variant: str, ratio: float, redo_failed: bool = False) -> dict:
        """Prune a fresh copy of the base one-shot and validate it; read back if already done."""
        path = self.out / f"{point_name(criterion, variant, ratio)}.json"
        rec = read_json(path)
        if rec and rec.get("status") in ("finished", "failed"):
            if rec.get("settings") != self.settings:
                raise RuntimeError(f"{path} was measured with other settings; use another --out")
            if rec["status"] == "finished" or not redo_failed:
                return rec
        from yolo_ldac.nn.adapter import protected_layers
        from yolo_ldac.pruning.criteria import build_criterion
        from yolo_ldac.pruning.engine import ChannelPruner
        from yolo_ldac.sweep import retention_point
        from yolo_ldac.utils.env import machine_info

        opts = parse_variant(variant)
        rec = {"id": path.stem, "script": SCRIPT, "criterion": criterion, "variant": variant, "options": opts,
               "ratio": float(ratio), "settings": self.settings, "machine": machine_info(),
               "date": datetime.now().astimezone().isoformat(timespec="seconds")}
        t0 = time.perf_counter()
        try:
            built = self._calib is None
            calib = self.calib()
            model, dense, dense_channels = self.fresh()
            crit = build_criterion(criterion, seed=self.seed)

            def make_pruner(m):  # the library's one-shot point (yolo_ldac.sweep), with this variant's options
                return ChannelPruner(m, crit, dense, dense_channels, protected_layers(m), imgsz=FLOPS_IMGSZ,
                                     compensate=opts["compensate"] if opts["compensate"] != "none" else False,
                                     layer_cap=opts["layer_cap"], per_flop=opts["per_flop"],
                                     lsq_ridge=opts["lsq_ridge"], flops_fn=self.flops_fn)

            point = retention_point(model, ratio, make_pruner, calib, self.validate, steps=opts["steps"],
                                    start_step=False)
            point.pop("model", None)
            rec.update(status="finished", map50_95=point["map50_95"], map50=point["map50"],
                       reached_ratio=point["reached_ratio"], steps=point["steps"],
                       flops_g=point["flops_g"], params_m=point["params_m"], widths=point["widths"],
                       wall_s={"calibration_data": round(self.calib_s, 2) if built else 0.0,
                               "prune": point["wall_s"]["prune"], "validate": point["wall_s"]["validate"],
                               "total": round(time.perf_counter() - t0, 2)})
        except Exception as e:  # an unreachable ratio under a cap, ...: recorded, not retried
            rec.update(status="failed", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc(),
                       wall_s={"total": round(time.perf_counter() - t0, 2)})
        atomic_write_json(path, rec, indent=1)
        return rec


def retention_curves(base, data, criteria, ratios=RATIOS, variants=("mean",), out=None, verbose=True,
                     **kwargs) -> tuple[dict, list[dict]]:
    """Measure (or read back) every (criterion, variant, ratio) point; write the plot and the table.

    Returns ``(base_record, point_records)``. ``kwargs`` go to :class:`Retention` (imgsz, calib_batches, ...).
    """
    r = Retention(base, data, out=out, **kwargs)
    base_rec = r.base_record()
    records = []
    for variant in variants:
        for crit in criteria:
            for ratio in ratios:
                rec = r.point(crit, variant, ratio)
                records.append(rec)
                if verbose:
                    if rec["status"] == "finished":
                        print(f"{rec['id']}: mAP50-95 {rec['map50_95']:.4f} mAP50 {rec['map50']:.4f} "
                              f"reached {rec['reached_ratio']:.3f} in {rec['wall_s']['total']:.1f}s", flush=True)
                    else:
                        print(f"{rec['id']}: FAILED {rec['error']}", flush=True)
    write_outputs(r.out, base_rec, load_records(r.out))
    return base_rec, records


def load_records(out: Path) -> list[dict]:
    recs = []
    for p in sorted(Path(out).glob("*__r*.json")):
        rec = read_json(p)
        if rec and rec.get("status") in ("finished", "failed"):
            recs.append(rec)
    return recs


# ----------------------------------------------------------------------------------------------- report
def _curves(records: list[dict]) -> dict[str, list[dict]]:
    curves: dict[str, list[dict]] = {}
    for rec in records:
        curves.setdefault(f"{rec['criterion']} / {rec['variant']}", []).append(rec)
    for k in curves:
        curves[k].sort(key=lambda r: r["ratio"])
    return curves


def markdown_section(records: list[dict], base: dict, title: str | None = None) -> str:
    """A markdown section: mAP50-95 (and mAP50) per criterion / variant per FLOPs ratio, wall time per curve."""
    curves = _curves(records)
    ratios = sorted({r["ratio"] for r in records})
    s = base["settings"]
    label = "mAP50-95"  # a segment or pose base: its own mAP is the mask / keypoint one
    if Path(s["base"]).is_file():
        from yolo_ldac.nn.adapter import load_detection_model
        from yolo_ldac.tasks import metric_label, task_of

        try:
            label = metric_label(task_of(load_detection_model(s["base"])))
        except Exception:  # a base that no longer loads: the table is the same, its label generic
            pass
    title = title or f"Retention curves on {Path(s['data']).parent.name} (one-shot, no training)"
    box = f", box mAP50-95 {base['box_map50_95']:.4f}" if "box_map50_95" in base else ""
    lines = [f"## {title}", "",
             f"Base `{Path(s['base']).name}` on `{Path(s['data']).parent.name}` (val {label} **{base['map50_95']:.4f}**{box}, "
             f"mAP50 {base['map50']:.4f}, {base['flops_g']:.3f} GFLOPs at {s['flops_imgsz']} px). Each point: a fresh "
             f"copy pruned one-shot to the FLOPs ratio, no training; calibration {s['calib_batches']} x "
             f"{s['calib_batch']} train images at {s['imgsz']} px; validated at {s['imgsz']} px. "
             f"Written by `{SCRIPT}`.", "",
             f"{label} ({label.removesuffix('-95')}) per FLOPs ratio removed:", "",
             "| criterion / variant | " + " | ".join(f"{r:g}" for r in ratios) + " | wall s (curve) |",
             "|---|" + "---:|" * len(ratios) + "---:|"]
    for name, recs in curves.items():
        by = {r["ratio"]: r for r in recs}
        cells = []
        for ratio in ratios:
            r = by.get(ratio)
            if r is None:
                cells.append("")
            elif r["status"] != "finished":
                cells.append("failed")
            else:
                cells.append(f"{r['map50_95']:.3f} ({r['map50']:.3f})")
        wall = sum(r["wall_s"]["total"] for r in recs)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {wall:.0f} |")
    lines.append("")
    return "\n".join(lines)


def write_plot(records: list[dict], base: dict, path: Path) -> Path:
    """mAP50-95 vs FLOPs removed: one panel per variant (one line per criterion in it); the base model dashed."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = _curves(records)
    variants = list(dict.fromkeys(r["variant"] for r in records))
    criteria = list(dict.fromkeys(r["criterion"] for r in records))
    colors = {c: plt.get_cmap("tab10" if len(criteria) <= 10 else "tab20")(i) for i, c in enumerate(criteria)}
    n = len(variants)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.0 * rows), squeeze=False, sharey=True)
    panels = [(v, [k for k in curves if k.endswith(f" / {v}")]) for v in variants]
    styles = ["-", "--", "-.", ":"]
    for ax, (title, names) in zip(axes.flat, panels):
        for name in names:
            ok = [r for r in curves[name] if r["status"] == "finished"]
            if not ok:
                continue
            crit, var = ok[0]["criterion"], ok[0]["variant"]
            ls = "-" if title != "all" else styles[variants.index(var) % len(styles)]
            ax.plot([100 * r["reached_ratio"] for r in ok], [r["map50_95"] for r in ok], marker="o", ms=3, ls=ls,
                    color=colors[crit], label=crit if title != "all" else name, lw=1.2)
        ax.axhline(base["map50_95"], color="k", ls="--", lw=1, label=f"base {base['map50_95']:.3f}")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("FLOPs removed (%), one-shot, no training", fontsize=8)
        ax.set_ylim(bottom=0)
        ax.set_xlim(0, 100 * max([0.65] + [r.get("reached_ratio") or 0 for r in records]) + 2)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=1 if title != "all" else 2)
    for ax in axes[:, 0]:
        ax.set_ylabel("val mAP50-95")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    s = base["settings"]
    fig.suptitle(f"Retention: {Path(s['base']).stem} on {Path(s['data']).parent.name} "
                 f"(calib {s['calib_batches']}x{s['calib_batch']} imgs, {s['imgsz']} px)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_overview_plot(records: list[dict], base: dict, path: Path) -> Path:
    """Every criterion / variant line on one axes: colour = criterion, line style = compensation (mean solid,
    lsq dashed, none dotted), marker = allocation (o plain, s cap, ^ perflop, D steps); the base dashed black."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    criteria = list(dict.fromkeys(r["criterion"] for r in records))
    cmap = plt.get_cmap("tab10" if len(criteria) <= 10 else "tab20")
    colors = {c: cmap(i) for i, c in enumerate(criteria)}
    fig, ax = plt.subplots(figsize=(13, 7.5))
    for name, recs in _curves(records).items():
        ok = [r for r in recs if r["status"] == "finished"]
        if not ok:
            continue
        o = parse_variant(ok[0]["variant"])
        ls = {"mean": "-", "lsq": "--", "none": ":"}[o["compensate"]]
        marker = "s" if o["layer_cap"] else "^" if o["per_flop"] else "D" if o["steps"] > 1 else "o"
        ax.plot([100 * r["reached_ratio"] for r in ok], [r["map50_95"] for r in ok], ls=ls, marker=marker, ms=4,
                lw=1.3, color=colors[ok[0]["criterion"]], label=name)
    ax.axhline(base["map50_95"], color="k", ls="--", lw=1.5, label=f"base {base['map50_95']:.3f}")
    ax.set_xlabel("FLOPs removed (%), one-shot, no training")
    ax.set_ylabel("val mAP50-95")
    ax.set_ylim(bottom=0)
    ax.set_xlim(0, 100 * max([0.65] + [r.get("reached_ratio") or 0 for r in records]) + 2)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), ncol=1 if len(records) < 200 else 2)
    s = base["settings"]
    ax.set_title(f"Retention: {Path(s['base']).stem} on {Path(s['data']).parent.name} (calib {s['calib_batches']}x"
                 f"{s['calib_batch']} imgs, {s['imgsz']} px)\ncolour: criterion; line: mean fold (-), lsq (--), none (:); "
                 f"marker: cap (s), perflop (^), steps (D)", fontsize=9)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def write_outputs(out: Path, base: dict, records: list[dict]) -> None:
    """``retention.png`` (every line on one axes), ``retention_panels.png`` (one panel per variant), ``retention.md``."""
    out = Path(out)
    write_overview_plot(records, base, out / "retention.png")
    write_plot(records, base, out / "retention_panels.png")
    (out / "retention.md").write_text(markdown_section(records, base), encoding="utf-8")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="base checkpoint (.pt)")
    ap.add_argument("--data", required=True, help="data yaml")
    ap.add_argument("--criteria", nargs="+", default=["random", "l2", "taylor", "group_fisher", "group_fisher_flops"])
    ap.add_argument("--ratios", nargs="+", type=float, default=list(RATIOS))
    ap.add_argument("--compensate", choices=["none", "mean", "lsq"], default="mean",
                    help="compensation of the default variant (ignored with --variants)")
    ap.add_argument("--layer-cap", type=float, default=None, help="default variant: per-layer cap per step")
    ap.add_argument("--per-flop", action="store_true", help="default variant: rank blocks per FLOP removed")
    ap.add_argument("--steps", type=int, default=1, help="default variant: back-to-back steps to each ratio")
    ap.add_argument("--variants", nargs="+", default=None, help="explicit variants, e.g. mean lsq mean+cap0.3")
    ap.add_argument("--calib-batches", type=int, default=4)
    ap.add_argument("--calib-batch", type=int, default=8)
    ap.add_argument("--imgsz", type=int, default=160)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--counter", choices=["analytic", "ultralytics"], default="analytic",
                    help="FLOPs count the ratios are of: analytic (the points so far) or ultralytics (what compress "
                         "and `yolo-ldac sweep` use: compare a sweep with --counter ultralytics)")
    ap.add_argument("--out", default=None, help="default benchmarks/results/retention/<data>/<base stem>")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--benchmarks-md", action="store_true", help="also write the table into BENCHMARKS.md")
    args = ap.parse_args(argv)

    variants = args.variants
    if not variants:
        toks = [args.compensate]
        if args.layer_cap:
            toks.append(f"cap{args.layer_cap:g}")
        if args.per_flop:
            toks.append("perflop")
        if args.steps > 1:
            toks.append(f"steps{args.steps}")
        variants = ["+".join(toks)]
    for v in variants:
        parse_variant(v)
    if args.report_only:
        out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / "retention" / \
            data_key(Path(args.data).resolve()) / Path(args.base).stem
        base = read_json(out / "base_val.json")
        write_outputs(out, base, load_records(out))
        text = markdown_section(load_records(out), base)
        print(text)
        if args.benchmarks_md:
            from sections import write_section

            rel = out.relative_to(ROOT)
            findings = f"\n\nFindings: `{rel.parent}/FINDINGS.md`." if (out.parent / "FINDINGS.md").is_file() else ""
            write_section(f"retention-{out.parent.name}", text + f"\n\nWritten by `benchmarks/retention.py "
                          f"--report-only --benchmarks-md` from the points in `{rel}/`; plots: "
                          f"![retention]({rel}/retention.png){findings}")
        return 0
    retention_curves(args.base, args.data, args.criteria, args.ratios, variants, out=args.out, imgsz=args.imgsz,
                     calib_batches=args.calib_batches, calib_batch=args.calib_batch, threads=args.threads,
                     counter=args.counter)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
