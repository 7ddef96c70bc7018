"""How the cost of a prune step, a trace and a push step grows with the model and with the calibration set.

For YOLO11 n/s/m/l/x built from their yaml (random weights, 80 classes, split blocks rewritten as a run does):

* **prune step**: one 50 % FLOPs step (``criterion=l2``, no data, ``compensate=none``, FLOPs counted at 640 px),
  twice: with one fresh dependency-graph trace per removed group (``retrace=True``, the former engine) and with all
  groups removed on one graph whose concat bookkeeping is refreshed after each (the default). Both must remove the
  same channels; the script checks that their pruned state dicts are identical and says so in the JSON.
* **trace**: ``criterion=ldac``'s ``prepare`` (the Fisher of the assigner-located detection loss) over ``--trace-images``
  images of a generated shapes set at ``--imgsz``; and, for ``--calib-model``, over growing calibration sets.
* **push step**: one training step with LDAC's push loss (forward, ``LDACDetectionLoss`` with pooled J, backward,
  SGD step) on a batch of ``--batch`` images at ``--imgsz``: median of ``--repeats`` after one warm-up.

Times are CPU seconds of the measuring process (``time.process_time``; one torch thread, so CPU time is the work
done, and it does not grow when other jobs share the core, as they did here); wall-clock seconds are in the JSON too.
Every measurement runs in its own child process, so that its peak memory is its own: peak RSS is the process's
``VmHWM`` (Linux ``/proc/self/status``), reset (``/proc/self/clear_refs``) just before the measured call, so it is the
whole process's resident peak during that call (Python, torch and the model), not an increment. ``rss_before_mb``
is the resident size just before the call.

Writes ``benchmarks/results/cost/cost.json`` (every figure, the settings, the machine), ``cost.png`` (log-log) and,
with ``--benchmarks-md``, the ``cost-model`` section of BENCHMARKS.md: a table, the plot and the fitted log-log
slopes. Run it on one core, as the figures in BENCHMARKS.md were:

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/cost_model.py --benchmarks-md

``--report-only`` rewrites the table, plot and section from an existing ``cost.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "results" / "cost"
SIZES = ("n", "s", "m", "l", "x")


# --- memory ---------------------------------------------------------------------------------------------------------
def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"{key} not in /proc/self/status")


def reset_peak() -> float:
    """Reset this process's peak RSS to its current RSS (Linux); returns the current RSS in MiB."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_mb("VmRSS")


def peak_mb() -> float:
    return _status_mb("VmHWM")


# --- the measurements (run in a child process) ----------------------------------------------------------------------
def _model(size: str):
    import torch
    from ultralytics.nn.tasks import DetectionModel

    from yolo_ldac.nn.adapter import rewrite_split_blocks

    torch.manual_seed(0)
    model = DetectionModel(f"yolo11{size}.yaml", nc=80, verbose=False).float()
    rewrite_split_blocks(model)
    return model.eval()


def _batches(n: int, imgsz: int, workdir: Path, batch: int = 8) -> list[dict]:
    from ultralytics.data.utils import check_det_dataset

    from yolo_ldac.data import make_shapes_dataset
    from yolo_ldac.pruning.calibration import build_calibration_batches

    data = make_shapes_dataset(workdir / f"shapes-{n}-{imgsz}", n_train=n, n_val=2, imgsz=imgsz, seed=0)
    b = min(batch, n)
    return build_calibration_batches(check_det_dataset(str(data)), imgsz=imgsz, batch=b, n_batches=math.ceil(n / b))


def measure_prune(size: str, retrace: bool) -> dict:
    import hashlib

    import torch

    from yolo_ldac.nn.adapter import protected_layers
    from yolo_ldac.parts import build_parts
    from yolo_ldac.pruning.complexity import layer_channels, measure
    from yolo_ldac.pruning.engine import ChannelPruner, build_graph

    model = _model(size)
    dense = measure(model, 640, protected=protected_layers(model))
    pruner = ChannelPruner(model, build_parts({"method": "l2"})["criterion"], dense, layer_channels(model),
                           protected_layers(model), compensate="none", retrace=retrace)
    c = time.process_time()
    nodes = len(build_graph(model).module2node)
    trace_s = time.process_time() - c
    groups = len(pruner._collect_groups(build_graph(model), score=False))
    before = reset_peak()
    t, c = time.perf_counter(), time.process_time()
    result = pruner.step(0.5)
    seconds, cpu = time.perf_counter() - t, time.process_time() - c
    peak = peak_mb()
    digest = hashlib.sha256()
    for k, v in model.state_dict().items():
        digest.update(k.encode() + str(tuple(v.shape)).encode() + v.detach().cpu().numpy().tobytes())
    return {"seconds": cpu, "wall_seconds": seconds, "peak_rss_mb": peak, "rss_before_mb": before,
            "groups_pruned": result.groups_pruned,
            "groups_prunable": groups, "graph_trace_s": trace_s, "graph_nodes": nodes, "reached": result.reached_ratio,
            "gflops_640": dense.flops_g, "params": dense.params, "state_sha256": digest.hexdigest(),
            "torch_threads": torch.get_num_threads()}


def measure_trace(size: str, n: int, imgsz: int, workdir: Path) -> dict:
    from yolo_ldac.parts import build_parts

    model = _model(size)
    batches = _batches(n, imgsz, workdir)
    crit = build_parts({"method": "ldac"})["criterion"]
    before = reset_peak()
    t, c = time.perf_counter(), time.process_time()
    crit.prepare(model, batches)
    seconds, cpu = time.perf_counter() - t, time.process_time() - c
    return {"seconds": cpu, "wall_seconds": seconds, "peak_rss_mb": peak_mb(), "rss_before_mb": before,
            "images": sum(len(b["img"]) for b in batches), "imgsz": imgsz}


def measure_push(size: str, batch: int, imgsz: int, repeats: int, workdir: Path) -> dict:
    import torch
    from ultralytics.cfg import get_cfg
    from ultralytics.utils import DEFAULT_CFG

    from yolo_ldac.ldac.loss import LDACDetectionLoss

    model = _model(size)
    model.args = get_cfg(DEFAULT_CFG)
    model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    step_batch = _batches(batch, imgsz, workdir, batch=batch)[0]
    loss_fn = LDACDetectionLoss(model, alpha=0.05, beta=0.01, pooled=True)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def step() -> tuple[float, float]:
        t, c = time.perf_counter(), time.process_time()
        loss, _ = loss_fn(model(step_batch["img"]), step_batch)
        loss.sum().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.process_time() - c, time.perf_counter() - t

    step()  # warm-up
    before = reset_peak()
    times = sorted(step() for _ in range(repeats))
    return {"seconds": times[len(times) // 2][0], "wall_seconds": times[len(times) // 2][1],
            "all_seconds": [c for c, _ in times], "peak_rss_mb": peak_mb(),
            "rss_before_mb": before, "batch": batch, "imgsz": imgsz}


def _child(args) -> None:
    import torch

    from yolo_ldac.utils.env import setup_offline_env

    setup_offline_env(offline=True)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    work = Path(args.workdir)
    if args.measure == "prune":
        out = measure_prune(args.size, retrace=args.retrace)
    elif args.measure == "trace":
        out = measure_trace(args.size, args.n, args.imgsz, work)
    else:
        out = measure_push(args.size, args.batch, args.imgsz, args.repeats, work)
    print("RESULT " + json.dumps(out), flush=True)


def run_child(argv: list[str], timeout: int = 1800) -> dict:
    cmd = [sys.executable, __file__, *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(lines[-1][len("RESULT "):])
    print(f"  {' '.join(argv[:5])}: {out['seconds']:.2f} s CPU ({out['wall_seconds']:.2f} s wall), peak {out['peak_rss_mb']:.0f} MiB", flush=True)
    return out


# --- fits, table, plot ----------------------------------------------------------------------------------------------
def loglog_slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log(y) on log(x): y ~ x ** slope.

    Example:
        >>> round(loglog_slope([1, 2, 4, 8], [3, 12, 48, 192]), 6)
        2.0
    """
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    sxx = sum((a - mx) ** 2 for a in lx)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sxx if sxx > 0 else float("nan")


def fits(record: dict) -> dict:
    rows = record["models"]
    g = [r["prune_retrace"]["groups_pruned"] for r in rows]
    fl = [r["prune"]["gflops_640"] for r in rows]
    calib = record["calibration"]
    return {
        "prune_retrace_vs_groups": loglog_slope(g, [r["prune_retrace"]["seconds"] for r in rows]),
        "prune_vs_groups": loglog_slope(g, [r["prune"]["seconds"] for r in rows]),
        "prune_retrace_vs_gflops": loglog_slope(fl, [r["prune_retrace"]["seconds"] for r in rows]),
        "prune_vs_gflops": loglog_slope(fl, [r["prune"]["seconds"] for r in rows]),
        "graph_trace_vs_gflops": loglog_slope(fl, [r["prune"]["graph_trace_s"] for r in rows]),
        "graph_trace_vs_nodes": loglog_slope([r["prune"]["graph_nodes"] for r in rows],
                                             [r["prune"]["graph_trace_s"] for r in rows]),
        "prune_retrace_vs_nodes_x_groups": loglog_slope(
            [r["prune"]["graph_nodes"] * r["prune_retrace"]["groups_pruned"] for r in rows],
            [r["prune_retrace"]["seconds"] for r in rows]),
        "trace_vs_gflops": loglog_slope(fl, [r["trace"]["seconds"] for r in rows]),
        "push_vs_gflops": loglog_slope(fl, [r["push"]["seconds"] for r in rows]),
        "trace_vs_images": loglog_slope([c["images"] for c in calib], [c["seconds"] for c in calib]),
        "trace_peak_vs_images": loglog_slope([c["images"] for c in calib], [c["peak_rss_mb"] for c in calib]),
    }


def plot(record: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from yolo_ldac.utils.io import atomic_save

    rows = record["models"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    fl = [r["prune"]["gflops_640"] for r in rows]
    a.loglog(fl, [r["prune_retrace"]["seconds"] for r in rows], "o-", label="prune step, a trace per group")
    a.loglog(fl, [r["prune"]["seconds"] for r in rows], "s-", label="prune step, one graph (default)")
    a.loglog(fl, [r["trace"]["seconds"] for r in rows], "^-",
             label=f"ldac trace, {rows[0]['trace']['images']} images @ {record['settings']['imgsz']}")
    a.loglog(fl, [r["push"]["seconds"] for r in rows], "v-",
             label=f"push step, batch {record['settings']['batch']} @ {record['settings']['imgsz']}")
    for r, x in zip(rows, fl):
        a.annotate(f"{r['model']} ({r['prune']['groups_pruned']} groups)", (x, r["prune_retrace"]["seconds"]),
                   textcoords="offset points", xytext=(-20, 6), fontsize=7)
    a.set_xlabel("model GFLOPs at 640 px (YOLO11 n s m l x)")
    a.set_ylabel("CPU seconds, one thread")
    a.grid(True, which="both", alpha=0.3)
    a.legend(fontsize=8)
    calib = record["calibration"]
    n = [c["images"] for c in calib]
    b.loglog(n, [c["seconds"] for c in calib], "o-", label="seconds")
    b.set_xlabel(f"calibration images (yolo11{record['settings']['calib_model']}, {record['settings']['imgsz']} px)")
    b.set_ylabel("ldac trace, CPU seconds")
    b2 = b.twinx()
    b2.semilogx(n, [c["peak_rss_mb"] for c in calib], "s--", color="tab:red", label="peak RSS")
    b2.set_ylabel("peak RSS, MiB", color="tab:red")
    b.grid(True, which="both", alpha=0.3)
    fig.suptitle("Cost against model size and calibration set (log-log)")
    fig.tight_layout()
    atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path


def section(record: dict, png: Path) -> str:
    m, s, f = record["machine"], record["settings"], fits(record)
    lines = [
        "## Cost model: prune step, trace and push step against model size and data",
        "",
        f"Written by `benchmarks/cost_model.py --benchmarks-md` ({record['date']}). YOLO11 n/s/m/l/x from their yaml "
        "(random weights, 80 classes, split blocks rewritten), one process per measurement, "
        f"{s['threads']} torch thread, pinned to one core (`taskset -c 1`). Times are CPU seconds of the measuring "
        "process (the machine was shared with other jobs; wall-clock seconds are in the JSON). Peak RSS is the process's VmHWM reset just "
        "before the measured call (the whole process, not an increment). Prune step: one 50 % FLOPs step, l2, no "
        "data, no compensation, FLOPs counted at 640 px. Trace: `criterion=ldac` over "
        f"{s['trace_images']} images at {s['imgsz']} px. Push step: forward + LDAC push loss (pooled J) + backward + "
        f"SGD step, batch {s['batch']} at {s['imgsz']} px, median of {s['repeats']} after a warm-up.",
        "",
        f"Machine: {m.get('cpu')} ({m.get('cores')} logical cores, {m.get('cores_usable')} usable), GPU "
        f"{m.get('gpu') or 'none'}; torch {m.get('torch')}, ultralytics {m.get('ultralytics')}, torch-pruning "
        f"{m.get('torch_pruning')}.",
        "",
        "| model | params (M) | GFLOPs @640 | graph nodes | prunable groups | groups removed | one graph trace (s) | prune step, a trace "
        "per group (s) | prune step, one graph (s) | same channels | prune peak RSS (MiB) | ldac trace (s) | trace "
        "peak RSS (MiB) | push step (s) | push peak RSS (MiB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in record["models"]:
        p, q, t, u = r["prune"], r["prune_retrace"], r["trace"], r["push"]
        same = "yes" if p["state_sha256"] == q["state_sha256"] else "**no**"
        lines.append(
            f"| {r['model']} | {p['params'] / 1e6:.1f} | {p['gflops_640']:.1f} | {p['graph_nodes']} | "
            f"{p['groups_prunable']} | "
            f"{p['groups_pruned']} | {p['graph_trace_s']:.2f} | {q['seconds']:.1f} | **{p['seconds']:.1f}** | {same} | "
            f"{p['peak_rss_mb']:.0f} | {t['seconds']:.1f} | {t['peak_rss_mb']:.0f} | {u['seconds']:.2f} | "
            f"{u['peak_rss_mb']:.0f} |")
    lines += ["", f"Trace against calibration images (yolo11{s['calib_model']}, {s['imgsz']} px):", "",
              "| images | ldac trace (s) | s / image | peak RSS (MiB) |", "| ---: | ---: | ---: | ---: |"]
    for c in record["calibration"]:
        lines.append(f"| {c['images']} | {c['seconds']:.2f} | {c['seconds'] / c['images']:.3f} | "
                     f"{c['peak_rss_mb']:.0f} |")
    x = next(r for r in record["models"] if r["model"] == "yolo11x") if any(
        r["model"] == "yolo11x" for r in record["models"]) else None
    lines += [
        "",
        "Fitted growth (least-squares slope on log-log, y ~ x^slope):",
        "",
        f"- prune step with a trace per group: against groups removed **{f['prune_retrace_vs_groups']:.2f}**, "
        f"against GFLOPs {f['prune_retrace_vs_gflops']:.2f} (each group re-traces the whole model: groups x one "
        f"trace; one graph trace grows as {f['graph_trace_vs_nodes']:.2f} with the graph's nodes and "
        f"{f['graph_trace_vs_gflops']:.2f} with GFLOPs), against graph nodes x groups removed "
        f"{f['prune_retrace_vs_nodes_x_groups']:.2f}.",
        f"- prune step on one refreshed graph: against groups removed **{f['prune_vs_groups']:.2f}**, against GFLOPs "
        f"{f['prune_vs_gflops']:.2f}.",
        f"- ldac trace against GFLOPs: {f['trace_vs_gflops']:.2f}; push step against GFLOPs: {f['push_vs_gflops']:.2f}.",
        f"- ldac trace against calibration images: **{f['trace_vs_images']:.2f}** in time, "
        f"{f['trace_peak_vs_images']:.2f} in peak RSS.",
    ]
    if x is not None:
        lines += ["", f"YOLO11x, one 50 % prune step on one core: **{x['prune']['seconds']:.1f} s** CPU "
                      f"({x['prune']['wall_seconds']:.1f} s wall) on one graph, was {x['prune_retrace']['seconds']:.1f} s "
                      f"CPU ({x['prune_retrace']['wall_seconds']:.1f} s wall) with a trace per group; peak RSS "
                      f"{x['prune']['peak_rss_mb']:.0f} MiB."]
    lines += ["", f"![cost model]({Path(os.path.relpath(png, ROOT)).as_posix()})"]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--measure", choices=("prune", "trace", "push"), help=argparse.SUPPRESS)
    ap.add_argument("--size", default="n", help=argparse.SUPPRESS)
    ap.add_argument("--retrace", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=8, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--sizes", default=",".join(SIZES))
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--trace-images", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--calib-model", default="n")
    ap.add_argument("--calib", default="8,16,32,64,128")
    ap.add_argument("--out-dir", default=str(OUT))
    ap.add_argument("--benchmarks-md", action="store_true")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--remeasure-prune", default="", help="re-measure only the prune steps of these sizes (e.g. n,s) "
                    "in an existing cost.json, then report")
    args = ap.parse_args()
    if args.measure:
        return _child(args)

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "cost.json"
    if args.report_only or args.remeasure_prune:
        record = json.loads(path.read_text())
        if args.remeasure_prune:
            import tempfile
            from datetime import datetime, timezone

            from yolo_ldac.utils.io import atomic_write_text

            with tempfile.TemporaryDirectory() as tmp:
                for size in args.remeasure_prune.split(","):
                    row = next(r for r in record["models"] if r["model"] == f"yolo11{size}")
                    common = ["--workdir", tmp]
                    row["prune"] = run_child(["--measure", "prune", "--size", size, *common])
                    row["prune_retrace"] = run_child(["--measure", "prune", "--size", size, "--retrace", *common])
                    row["prune_remeasured"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            atomic_write_text(path, json.dumps(record, indent=1))
    else:
        import tempfile
        from datetime import datetime, timezone

        from yolo_ldac.utils.env import machine_info
        from yolo_ldac.utils.io import atomic_write_text

        record = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine_info(),
                  "settings": {"imgsz": args.imgsz, "trace_images": args.trace_images, "batch": args.batch,
                               "repeats": args.repeats, "calib_model": args.calib_model,
                               "threads": int(os.environ.get("OMP_NUM_THREADS", "1")),
                               "affinity": sorted(os.sched_getaffinity(0))},
                  "models": [], "calibration": []}
        with tempfile.TemporaryDirectory() as tmp:
            common = ["--workdir", tmp, "--imgsz", str(args.imgsz)]
            for size in args.sizes.split(","):
                print(f"yolo11{size}", flush=True)
                row = {"model": f"yolo11{size}",
                       "prune": run_child(["--measure", "prune", "--size", size, *common]),
                       "prune_retrace": run_child(["--measure", "prune", "--size", size, "--retrace", *common]),
                       "trace": run_child(["--measure", "trace", "--size", size, "--n", str(args.trace_images),
                                           *common]),
                       "push": run_child(["--measure", "push", "--size", size, "--batch", str(args.batch),
                                          "--repeats", str(args.repeats), *common])}
                record["models"].append(row)
                atomic_write_text(path, json.dumps(record, indent=1))
            for n in (int(v) for v in args.calib.split(",")):
                record["calibration"].append(
                    run_child(["--measure", "trace", "--size", args.calib_model, "--n", str(n), *common]))
                atomic_write_text(path, json.dumps(record, indent=1))
    png = plot(record, out_dir / "cost.png")
    body = section(record, png)
    from yolo_ldac.utils.io import atomic_write_text

    atomic_write_text(out_dir / "cost.md", body + "\n")
    print(body)
    if args.benchmarks_md:
        from sections import write_section

        write_section("cost-model", body)


if __name__ == "__main__":
    main()
