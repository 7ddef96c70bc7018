"""Every Ultralytics 8.4 detector family through yolo-ldac: reachable ratio, FLOPs and params, and a pipeline pass mark.

Per family (each one's smallest yaml, random weights, no download):

1. **Complexity** (80 classes, FLOPs at 640 px by Ultralytics' own counter, as ``YOLO().info()`` prints them): the
   largest FLOPs ratio the planner reaches with the default ``floor`` (0.125) and ``round_to`` (8), then the model
   pruned (criterion ``l2``, no compensation) to 0.3 and on to 0.5: GFLOPs, params and the ratio Ultralytics measures.
2. **Pipeline** (the shapes data set, 3 classes, ``imgsz`` 64): ``yolo-ldac prune ratio=0.3 method=l2`` -> a forward
   pass of the saved model -> ``yolo-ldac finetune epochs=1`` -> ``YOLO(best.pt)`` reload (its raw head tensors equal
   the trained model's) -> ONNX export with raw-output parity. The parity runs on a copy whose BatchNorms carry
   real-image statistics (:func:`yolo_ldac.deploy.activate.activate_batchnorm`): on the bare random weights the
   decoded output is set by the head's bias init and a wrong graph could pass.

Results: ``benchmarks/results/families/<family>.json`` and ``families.json``; the table goes into README.md between
``<!-- section:families -->`` markers (rerunning replaces it).

Usage:
    taskset -c 1 python benchmarks/families.py                    # every family (~15 min on one core)
    taskset -c 1 python benchmarks/families.py --families yolov9t yolov10n
    python benchmarks/families.py --report-only                   # rewrite the README table from the JSON
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Each family's smallest detection yaml as Ultralytics 8.4.190 resolves it (cfg/models/<v>/<family>.yaml + scale).
FAMILIES = ("yolov3-tinyu", "yolov5nu", "yolov6n", "yolov8n", "yolov9t", "yolov10n", "yolo11n", "yolo12n", "yolo26n")
STAGES = ("prune", "forward", "train", "reload", "onnx")
OUT = ROOT / "benchmarks" / "results" / "families"


def complexity_figures(family: str, floor: float = 0.125, round_to: int = 8, ratios=(0.3, 0.5)) -> dict:
    """Dense and pruned GFLOPs (Ultralytics' counter, 640 px) and params of ``family``'s yaml with 80 classes."""
    import torch

    from yolo_ldac.nn.adapter import load_detection_model, protected_layers, rewrite_split_blocks, ultralytics_gflops
    from yolo_ldac.pruning.complexity import layer_channels, measure
    from yolo_ldac.pruning.criteria import build_criterion
    from yolo_ldac.pruning.engine import ChannelPruner

    torch.manual_seed(0)
    model = load_detection_model(f"{family}.yaml")
    original = ultralytics_gflops(model)  # before the split rewrite: what the user's own model reports
    rewrite_split_blocks(model)
    prot = protected_layers(model)
    dense = measure(model, 640, protected=prot, flops_fn=ultralytics_gflops)
    analytic_dense = measure(model, 640, protected=prot)
    pruner = ChannelPruner(model, build_criterion("l2"), dense, layer_channels(model), prot, imgsz=640,
                           round_to=round_to, floor=floor, compensate="none", flops_fn=ultralytics_gflops)
    out = {"gflops": dense.flops_g, "gflops_before_rewrite": original, "params": dense.params,
           "analytic_gflops": analytic_dense.flops_g, "max_ratio": round(pruner.max_ratio(), 4), "steps": {}}
    for ratio in ratios:
        step = pruner.step(ratio)
        after = measure(model, 640, protected=prot, flops_fn=ultralytics_gflops)
        analytic = measure(model, 640, protected=prot)
        out["steps"][str(ratio)] = {
            "gflops": after.flops_g, "params": after.params,
            "flops_removed": round(1 - after.flops_g / original, 4),  # against the unrewritten model's count
            "params_removed": round(1 - after.params / dense.params, 4),
            "analytic_flops_removed": round(analytic.removed_vs(analytic_dense), 4),
            "reached_ratio": round(step.reached_ratio, 4)}
    return out


def _one_line(e: BaseException) -> str:
    from yolo_ldac.errors import first_line

    return first_line(e)


def check_pipeline(family: str, data: Path, workdir: Path, imgsz: int = 64, ratio: float = 0.3) -> dict:
    """Run prune -> forward -> train one epoch -> YOLO() reload -> ONNX parity on ``family``; one entry per stage:
    ``{"ok": bool, "seconds": float, ...}`` with ``error`` (one line) on the first failing stage, the rest not run."""
    import copy

    import torch

    from yolo_ldac import YOLOLDAC

    stages: dict[str, dict] = {}
    common = dict(imgsz=imgsz, batch=8, workers=0, seed=0, plots=False, exist_ok=True, project=str(workdir),
                  val_steps=False, verbose=False)
    state: dict = {}
    x = torch.rand(1, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(0))

    def prune():
        res = YOLOLDAC(f"{family}.yaml").prune(data=str(data), ratio=ratio, method="l2", rounds=1, name="prune",
                                               **common)
        state["pruned"] = res.best
        return {"flops_removed_pct": res.removed.get("flops_pct"), "params_removed_pct": res.removed.get("params_pct")}

    def forward():
        from yolo_ldac.nn.adapter import load_detection_model

        model = load_detection_model(state["pruned"]).eval()
        with torch.no_grad():
            y = model(x)
        pred = y[0] if isinstance(y, (tuple, list)) else y
        if not torch.isfinite(pred).all():
            raise RuntimeError("non-finite output")
        return {"shape": list(pred.shape)}

    def train():
        res = YOLOLDAC(str(state["pruned"])).finetune(data=str(data), epochs=1, name="train", **common)
        state["trained"] = res.best
        return {"map50_95": res.after.get("map50_95")}

    def reload():
        from ultralytics import YOLO

        from yolo_ldac.nn.adapter import outputs_difference, raw_head_outputs
        from yolo_ldac.safe_load import load_model

        wrapper = YOLO(str(state["trained"]))
        reloaded = wrapper.model.float().eval()
        direct = load_model(state["trained"], device="cpu").float().eval()
        diff = outputs_difference(raw_head_outputs(direct, x), raw_head_outputs(reloaded, x))
        if diff > 1e-5:
            raise RuntimeError(f"YOLO() reload differs from the checkpoint by {diff:.2e}")
        state["model"] = reloaded
        return {"max_diff": diff}

    def onnx():
        from yolo_ldac.deploy.activate import activate_batchnorm
        from yolo_ldac.export import export_checked

        model = activate_batchnorm(copy.deepcopy(state["model"]))
        pt = workdir / f"{family}-active.pt"
        _save(model, pt)
        res = export_checked(pt, format="onnx", imgsz=imgsz)
        return {k: res.parity[k] for k in ("max_rel_diff", "mean_rel_diff", "max_rel_tol")}

    for name, fn in zip(STAGES, (prune, forward, train, reload, onnx)):
        t = time.perf_counter()
        try:
            stages[name] = {"ok": True, **(fn() or {})}
        except Exception as e:  # a stage's failure is reported in one line; the traceback goes to the log
            stages[name] = {"ok": False, "error": _one_line(e)}
            traceback.print_exc()
        stages[name]["seconds"] = round(time.perf_counter() - t, 1)
        if not stages[name]["ok"]:
            break
    return stages


def _save(model, path: Path) -> Path:
    import copy

    import torch
    import ultralytics

    torch.save({"model": copy.deepcopy(model).float(), "train_args": {}, "date": None,
                "version": ultralytics.__version__}, path)
    return path


def run_family(family: str, data: Path, imgsz: int, workdir: Path) -> dict:
    """Both parts for one family, each failure caught and reported in one line."""
    record: dict = {"family": family, "yaml": f"{family}.yaml", "imgsz": imgsz}
    t = time.perf_counter()
    try:
        record["complexity"] = complexity_figures(family)
    except Exception as e:
        record["complexity"] = {"error": _one_line(e)}
        traceback.print_exc()
    record["complexity_seconds"] = round(time.perf_counter() - t, 1)
    record["pipeline"] = check_pipeline(family, data, workdir / family, imgsz=imgsz)
    record["passed"] = all(record["pipeline"].get(s, {}).get("ok") for s in STAGES)
    return record


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f} %"


def table(records: list[dict]) -> str:
    """The README table: one row per family."""
    head = ("| family | GFLOPs (640 px) | params M | max FLOPs ratio | at 0.3: GFLOPs / params M (Ultralytics' FLOPs "
            "removed) | at 0.5: GFLOPs / params M (removed) | prune -> forward -> train -> reload -> ONNX |")
    lines = [head, "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in records:
        c = r.get("complexity", {})
        if "error" in c:
            cells = ["–", "–", "–", f"cannot prune: {c['error']}", "–"]
        else:
            s3, s5 = c["steps"].get("0.3", {}), c["steps"].get("0.5", {})
            cells = [f"{c['gflops_before_rewrite']:.2f}", f"{c['params'] / 1e6:.2f}", _pct(c["max_ratio"]),
                     f"{s3['gflops']:.2f} / {s3['params'] / 1e6:.2f} ({_pct(s3['flops_removed'])})" if s3 else "–",
                     f"{s5['gflops']:.2f} / {s5['params'] / 1e6:.2f} ({_pct(s5['flops_removed'])})" if s5 else "–"]
        p = r.get("pipeline", {})
        failed = next((s for s in STAGES if not p.get(s, {}).get("ok")), None)
        if failed is None:
            onnx = p["onnx"]
            mark = f"pass (ONNX max rel diff {onnx['max_rel_diff']:.1e})"
        else:
            mark = f"FAIL at {failed}: {p.get(failed, {}).get('error', 'not run')}"
        lines.append(f"| {r['family']} | " + " | ".join(cells) + f" | {mark} |")
    return "\n".join(lines)


def section(records: list[dict], machine: dict, command: str, date: str) -> str:
    return "\n".join([
        f"Written by `benchmarks/families.py` on {date} (`{command}`); do not edit by hand. Machine: {machine['cpu']} "
        f"({machine['cores']} cores, run on {machine['cores_usable']}), torch {machine['torch']}, ultralytics {machine['ultralytics']}, "
        f"torch-pruning {machine['torch_pruning']}.", "",
        "Each family's smallest yaml, random weights. GFLOPs are Ultralytics' own count (thop, `YOLO().info()`) at "
        "640 px with 80 classes; the max ratio is the largest the planner predicts reachable with the default floor 0.125 "
        "and round_to 8 (planned, not pruned); the "
        "0.3 / 0.5 columns are the model pruned by `l2` to that ratio, with the FLOPs removed as Ultralytics "
        "counts them. The last column runs `prune ratio=0.3 method=l2` -> a forward pass -> `finetune epochs=1` "
        "-> `YOLO(best.pt)` -> ONNX export with raw-output parity (on a copy with real-image BatchNorm statistics, "
        f"so the decoded outputs are not set by the head's bias init), on the shapes data set at imgsz "
        f"{records[0]['imgsz'] if records else 64}.", "",
        table(records)])


def write_readme(text: str, readme: Path = ROOT / "README.md") -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from sections import write_section

    write_section("families", text, report=readme)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", nargs="+", default=list(FAMILIES))
    ap.add_argument("--imgsz", type=int, default=64)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md")
    ap.add_argument("--report-only", action="store_true", help="rewrite the README table from the saved JSON")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "False")
    from yolo_ldac.utils.env import setup_offline_env

    setup_offline_env(offline=True)
    import torch

    torch.set_num_threads(1)
    from yolo_ldac.utils.env import machine_info

    args.out.mkdir(parents=True, exist_ok=True)
    summary_path = args.out / "families.json"
    if args.report_only:
        summary = json.loads(summary_path.read_text())
    else:
        from datetime import datetime, timezone

        from yolo_ldac.data import make_shapes_dataset

        old = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        done = {r["family"]: r for r in old.get("records", [])}
        with tempfile.TemporaryDirectory(prefix="yolo-ldac-families-") as tmp:
            data = make_shapes_dataset(Path(tmp) / "shapes", n_train=16, n_val=8, imgsz=128, seed=0)
            for family in args.families:
                t = time.perf_counter()
                record = run_family(family, data, args.imgsz, Path(tmp) / "runs")
                record["seconds"] = round(time.perf_counter() - t, 1)
                (args.out / f"{family}.json").write_text(json.dumps(record, indent=2))
                done[family] = record
                print(f"{family}: {'pass' if record['passed'] else 'FAIL'} in {record['seconds']} s", flush=True)
        records = [done[f] for f in FAMILIES if f in done] + [r for f, r in done.items() if f not in FAMILIES]
        summary = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "machine": machine_info(),
                   "command": "taskset -c 1 python benchmarks/families.py " + " ".join(sys.argv[1:]),
                   "records": records}
        summary_path.write_text(json.dumps(summary, indent=2))
    write_readme(section(summary["records"], summary["machine"], summary["command"].strip(), summary["date"]),
                 args.readme)
    print(table(summary["records"]))


if __name__ == "__main__":
    main()
