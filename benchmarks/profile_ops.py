"""Where the time goes: per-operator profiles of dense against pruned models, per runtime and precision.

Each model (``--models label=path.pt ...``; the first is the reference) is exported with ``yolo-ldac``'s checked
exporter (``--graph deploy``: the export graph, the default; ``--graph plain``: as Ultralytics writes it, split blocks
as two convolutions and the DFL's Softmax) and profiled at ``--imgsz`` with one thread:

- ONNX Runtime fp32: its profiler (``SessionOptions.enable_profiling``), kernel time per node, summed per operator
  type (NCHWc reorders, fused activations and all);
- OpenVINO fp32 and int8 (NNCF, calibrated on ``--data``'s train images): the CPU plugin's performance counters
  (``PERF_COUNT``), real time per executed node, summed per node type;
- NCNN fp32: each layer run on its own by its extractor (:func:`yolo_ldac.latency.probe.ncnn_node_ms`), summed per
  layer type;
- LiteRT fp32 and int8 (XNNPACK): prefix graphs cut after each layer, timed interleaved, the differences per layer
  (:func:`yolo_ldac.latency.probe.litert_layer_ms`): per layer ``model.N``, not per operator type;
- ``litert-ops`` (fp32, int8): every operator timed in pieces of its layer (:func:`yolo_ldac.latency.probe.litert_op_ms`),
  summed per operator type (``/f``: computed in float) and per layer; ``litert-ref`` the same with LiteRT's own
  kernels instead of XNNPACK (which operators XNNPACK runs slower). ``--int8-float`` sets what the int8 export keeps
  in float (:mod:`yolo_ldac.deploy.litert_int8`).

The median over ``--runs`` runs of every node is taken. Writes ``benchmarks/results/profile/<name>.json`` and
``.md`` (per operator type: ms per model and the ratio to the reference); docs/deployment.md quotes them.

Usage:
    python benchmarks/profile_ops.py --name yolo11n-640 --models dense=runs/speed/yolo11n-coco-dense/weights/best.pt \\
        r8=runs/speed/yolo11n-coco-flops-r8/weights/best.pt auto=runs/speed/yolo11n-coco-flops-auto/weights/best.pt
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("YOLO_CONFIG_DIR", str(ROOT / ".cache" / "ultralytics"))
from yolo_ldac.utils.env import setup_offline_env  # noqa: E402

setup_offline_env(offline=True)


def ort_profile(path: Path, x: np.ndarray, runs: int) -> dict[str, float]:
    from yolo_ldac.latency.probe import onnxruntime_node_ms

    return _by_type(onnxruntime_node_ms(path, [x], threads=1, runs=runs))


def ov_profile(path: Path, x: np.ndarray, runs: int) -> dict[str, float]:
    from yolo_ldac.latency.probe import openvino_node_ms

    return _by_type(openvino_node_ms(path, [x], threads=1, runs=runs))


def ncnn_profile(folder: Path, x: np.ndarray, runs: int) -> dict[str, float]:
    from yolo_ldac.latency.probe import ncnn_node_ms

    return _by_type(ncnn_node_ms(Path(folder) / "model.ncnn.param", x[0], threads=1, runs=runs))


def litert_profile(path: Path, x: np.ndarray, runs: int) -> dict[str, float]:
    """Per layer (``model.N``), not per operator type: LiteRT is profiled by cutting the graph (see
    :func:`yolo_ldac.latency.probe.litert_layer_ms`)."""
    from ai_edge_litert.interpreter import Interpreter

    from yolo_ldac.latency.probe import litert_layer_ms

    shape = tuple(Interpreter(model_path=str(path)).get_input_details()[0]["shape"])
    xin = x if tuple(x.shape) == shape else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    nodes = litert_layer_ms(path, xin, threads=1, runs=max(5, runs // 4), rounds=4)
    return _by_type({(kinds, layer): ms for (layer, kinds), ms in nodes.items()})


def litert_ops_profile(path: Path, x: np.ndarray, runs: int, xnnpack: bool = True) -> dict[str, float]:
    """Per operator type (``/f``: in float) and, under ``layer model.N`` keys, per layer."""
    from yolo_ldac.latency.probe import litert_op_ms

    ops = litert_op_ms(path, threads=1, runs=runs, xnnpack=xnnpack)
    out = _by_type({(layer, op): ms for (_, layer, op), ms in ops.items()})
    for (_, layer, _), ms in ops.items():
        out[f"layer {layer}"] = out.get(f"layer {layer}", 0.0) + ms
    return out


PROFILERS = {"onnx": ort_profile, "openvino": ov_profile, "ncnn": ncnn_profile, "litert": litert_profile,
             "litert-ops": litert_ops_profile,
             "litert-ref": lambda path, x, runs: litert_ops_profile(path, x, runs, xnnpack=False)}


def _partial_deploy(pt: Path, graph: str) -> Path:
    """``pt`` with one of the export graph's two rewrites only (to measure each alone)."""
    from yolo_ldac.export import write_deploy_checkpoint

    out = pt.parent / "partial" / pt.name
    write_deploy_checkpoint(pt, out, fuse_splits=graph == "splits", fast_dfl=graph == "dfl")
    return out


def _by_type(nodes: dict[tuple[str, str], float]) -> dict[str, float]:
    out: dict[str, float] = collections.Counter()
    for (_, op), ms in nodes.items():
        out[op] += ms
    out["total"] = sum(nodes.values())
    out["nodes"] = len(nodes)
    return dict(out)


def table(results: dict[str, dict[str, float]], top: int = 12, layers: bool = False) -> str:
    """Markdown table of the profiles: operator types (or, with ``layers``, the ``layer model.N`` entries), the
    reference's ``top`` largest first, the rest summed as ``other``."""
    labels = list(results)
    ref = results[labels[0]]
    mine = [k for k in {k for r in results.values() for k in r} - {"total", "nodes"} if k.startswith("layer ") == layers]
    ops = sorted((k for k in mine if k in ref), key=lambda k: -ref[k])[:top]
    rest = sorted(set(mine) - set(ops))
    head = "| operator | " + " | ".join(f"{l} (ms)" for l in labels) + " | " + " | ".join(
        f"{labels[0]} / {l}" for l in labels[1:]) + " |"
    lines = [head, "| --- |" + " ---: |" * (2 * len(labels) - 1)]
    for op in ops + ["other", "total"]:
        vals = [sum(r.get(k, 0.0) for k in rest) if op == "other" else r.get(op, 0.0) for r in results.values()]
        ratios = [f"{vals[0] / v:.2f}x" if v > 0 else "–" for v in vals[1:]]
        name = f"**{op}**" if op == "total" else op
        lines.append(f"| {name} | " + " | ".join(f"{v:.2f}" for v in vals) + " | " + " | ".join(ratios) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", required=True)
    ap.add_argument("--models", nargs="+", required=True,
                    help="label=path.pt[:graph]; the first is the reference; graph (default --graph): plain, deploy, "
                         "splits (only the split blocks fused) or dfl (only the DFL rewritten)")
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--graph", choices=("deploy", "plain"), default="deploy")
    ap.add_argument("--settings", default="onnx:fp32,openvino:fp32,openvino:int8",
                    help="format:precision,...: onnx:fp32, openvino:fp32|int8, ncnn:fp32, litert:fp32|int8")
    ap.add_argument("--int8-float", default="auto", help="what LiteRT int8 exports keep in float: auto or none")
    ap.add_argument("--data", type=Path, default=ROOT / "datasets" / "composite-400x160" / "data.yaml")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "profile")
    args = ap.parse_args()

    from yolo_ldac.deploy.parity import default_images, preprocess_image
    from yolo_ldac.export import export_checked
    from yolo_ldac.utils.env import machine_info

    x = preprocess_image(default_images()[0], (args.imgsz, args.imgsz)).astype(np.float32)
    models = {}
    for spec in args.models:
        label, rest = spec.split("=", 1)
        path, _, graph = rest.partition(":")
        models[label] = (path, graph or args.graph)
    out = {"settings": vars(args) | {"out": str(args.out), "data": str(args.data)}, "machine": machine_info(),
           "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "profiles": {}}
    md = [f"Written by `benchmarks/profile_ops.py` on {out['date'][:10]} (`{' '.join(sys.argv[1:])}`); machine: "
          f"{out['machine']['cpu']}; one thread, {args.imgsz} px, median of {args.runs} runs per node; "
          f"export graph: {args.graph} unless a model names its own.", ""]
    with tempfile.TemporaryDirectory(prefix="profile-") as tmp:
        for setting in args.settings.split(","):
            fmt, prec = setting.split(":")
            res = {}
            for label, (pt, graph) in models.items():
                local = Path(tmp) / label / f"{label}.pt"
                local.parent.mkdir(exist_ok=True, parents=True)
                shutil.copy2(pt, local)
                if graph in ("splits", "dfl"):
                    local = _partial_deploy(local, graph)
                fmt_export = "litert" if fmt.startswith("litert") else fmt
                e = export_checked(local, format=fmt_export, imgsz=args.imgsz, int8=prec == "int8", data=args.data,
                                   parity=False, calib_images=64, deploy_graph=graph == "deploy",
                                   int8_float=args.int8_float)
                path = next(e.path.glob("*.xml")) if fmt == "openvino" else e.path
                res[label] = PROFILERS[fmt](path, x, args.runs)
                print(setting, label, f"{res[label]['total']:.2f} ms", flush=True)
            out["profiles"][setting] = res
            per = "layer (model.N; the graph cut after each layer, differences of prefix medians)" \
                if fmt == "litert" else "operator type"
            md += [f"### {fmt} {prec}", "", f"Per {per}.", "", table(res, top=30 if fmt == "litert" else 12), ""]
            if fmt in ("litert-ops", "litert-ref"):
                md += ["Per layer (the same operators summed by their layer).", "", table(res, top=12, layers=True), ""]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(out, indent=1))
    (args.out / f"{args.name}.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
