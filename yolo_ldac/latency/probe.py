"""Measure a latency table (:mod:`yolo_ldac.latency.table`) on this machine, in the runtime the model will run in.

Each shape class of the model becomes one probe graph: a branch per grid point (a convolution at that point's input
and output widths, its SiLU, and a cheap depthwise consumer so that an int8 graph quantizes the activation as in the
model), exported to ONNX, compiled by the runtime and run with its per-node profiler (ONNX Runtime's profiling, or
OpenVINO's performance counters). A branch's time is the sum of its convolution's and activation's nodes; layout
reorders and the consumer are not counted. One graph per class keeps the cost of building a table to seconds per
class instead of a compile per point.

Example:
    >>> from yolo_ldac.latency.probe import build_table
    >>> table = build_table(model, runtime="onnxruntime", precision="fp32", imgsz=640, threads=1)  # doctest: +SKIP
"""

from __future__ import annotations

import collections
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from yolo_ldac.latency.table import (  # noqa: F401
    ConvShape,
    LayerGrid,
    grid_widths,
    narrower_never_slower,
    normalise_runtime,
)

_BRANCH = re.compile(r"/b\.(\d+)/(conv|act)")


def _pair(v: Any) -> tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (int(v), int(v))


@torch.no_grad()
def conv_shapes(model: nn.Module, imgsz: int = 640) -> dict[str, ConvShape]:
    """Every ``nn.Conv2d`` of ``model`` (by module name) with its shape class at a square ``imgsz`` input."""
    names = {m: n for n, m in model.named_modules()}
    found: dict[str, ConvShape] = {}
    handles = []

    def hook(m, inp, _out):
        x = inp[0]
        depthwise = m.groups > 1 and m.groups == m.in_channels == m.out_channels
        if m.groups > 1 and not depthwise:
            return  # grouped, not depthwise: left to the FLOPs fallback
        found[names[m]] = ConvShape(_pair(m.kernel_size), _pair(m.stride), _pair(m.padding), _pair(m.dilation),
                                    depthwise, (int(x.shape[2]), int(x.shape[3])), m.in_channels, m.out_channels)

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(hook))
    was = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        model(torch.zeros(1, 3, imgsz, imgsz, device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    return found


class _Branch(nn.Module):
    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv, self.act = conv, nn.SiLU()
        co = conv.out_channels
        self.use = nn.Conv2d(co, co, 1, groups=co, bias=True)  # a consumer, so int8 quantizes the activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.use(self.act(self.conv(x)))


class _Probe(nn.Module):
    """One branch per (cin, cout) point of a shape class, each reading the input of its cin."""

    def __init__(self, shape: ConvShape, points: list[tuple[int, int]], cins: list[int]):
        super().__init__()
        self.cins = cins
        self.src = [cins.index(ci) for ci, _ in points]
        self.b = nn.ModuleList()
        for ci, co in points:
            g = ci if shape.depthwise else 1
            self.b.append(_Branch(nn.Conv2d(ci, co, shape.k, shape.stride, shape.padding, shape.dilation, groups=g)))

    def forward(self, *xs: torch.Tensor):
        return tuple(br(xs[i]) for br, i in zip(self.b, self.src))


def _probe_points(shape: ConvShape, multiple: int, points: int) -> list[tuple[int, int]]:
    couts = grid_widths(shape.cout, multiple, points)
    if shape.depthwise:
        return [(c, c) for c in couts]
    return [(ci, co) for ci in grid_widths(shape.cin, multiple, points) for co in couts]


def _export_probe(probe: _Probe, shape: ConvShape, path: Path) -> list[np.ndarray]:
    g = torch.Generator().manual_seed(0)
    xs = [torch.rand(1, c, *shape.hw, generator=g) for c in probe.cins]
    torch.onnx.export(probe.eval(), tuple(xs), str(path), opset_version=17, dynamo=False,
                      input_names=[f"x{i}" for i in range(len(xs))])
    return [x.numpy() for x in xs]


def _branch_times(names_ms: dict[str, float], n: int) -> list[float]:
    out = [0.0] * n
    for name, ms in names_ms.items():
        m = _BRANCH.search(name)
        if m:
            out[int(m.group(1))] += ms
    return out


def _ort_session(path: Path, threads: int, profile_prefix: str | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    if profile_prefix is not None:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _openvino_request(path: Path, threads: int, precision: str = "fp32", calib: list | None = None,
                      perf_count: bool = False):
    """An OpenVINO CPU infer request of ``path`` (f32 precision hint); an ONNX probe at ``int8`` is quantized by
    NNCF on ``calib`` (its calibration samples) first."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path))
    if precision == "int8" and calib is not None:
        import nncf

        model = nncf.quantize(model, nncf.Dataset(calib), subset_size=len(calib), preset=nncf.QuantizationPreset.MIXED)
    config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads}
    if perf_count:
        config["PERF_COUNT"] = True
    return core.compile_model(model, "CPU", config).create_infer_request()


def onnxruntime_node_ms(path: Path, inputs: list[np.ndarray], threads: int = 1, runs: int = 20,
                        warmup: int = 3) -> dict[tuple[str, str], float]:
    """Median kernel ms of every node, keyed ``(node name, operator type)``, over ``runs`` runs after ``warmup``,
    from ONNX Runtime's profiler (NCHWc reorders and fused activations included)."""
    import json

    with tempfile.TemporaryDirectory(prefix="yolo-ldac-profile-") as tmp:
        sess = _ort_session(path, threads, profile_prefix=str(Path(tmp) / "p"))
        feed = {i.name: x for i, x in zip(sess.get_inputs(), inputs)}
        for _ in range(warmup + runs):
            sess.run(None, feed)
        events = json.loads(Path(sess.end_profiling()).read_text())
    per: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            key = (e["name"][:-len("_kernel_time")], str(e.get("args", {}).get("op_name", "?")))
            per[key].append(e["dur"] / 1e3)
    return {k: float(np.median(v[warmup:] or v)) for k, v in per.items()}


def openvino_node_ms(path: Path, inputs: list[np.ndarray], threads: int = 1, runs: int = 20, warmup: int = 3,
                     precision: str = "fp32", calib: list | None = None) -> dict[tuple[str, str], float]:
    """Median real ms of every executed node, keyed ``(node name, node type)``, over ``runs`` runs after
    ``warmup``, from OpenVINO's performance counters (``calib``: see :func:`_openvino_request`)."""
    req = _openvino_request(path, threads, precision, calib, perf_count=True)
    per: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    for i in range(warmup + runs):
        req.infer(list(inputs))
        if i >= warmup:
            for p in req.get_profiling_info():
                per[(p.node_name, p.node_type)].append(p.real_time.total_seconds() * 1e3)
    return {k: float(np.median(v)) for k, v in per.items()}


def ncnn_node_ms(param: Path, x: np.ndarray, threads: int = 1, runs: int = 20,
                 warmup: int = 3) -> dict[tuple[str, str], float]:
    """Median ms of every layer of an NCNN graph (``model.ncnn.param`` beside its ``.bin``), keyed ``(layer name,
    layer type)``, for the input ``x`` (CHW, float32).

    NCNN's Python package has no profiler, but its extractor computes only the layers that the blob it is asked
    for needs and keeps what it computed: asking for every layer's first output in the graph's order (light mode,
    outputs left in NCNN's packed layout) runs exactly one layer per call, so each call's time is that layer's.
    The layers' sum is within a few percent of a whole run (the per-call overhead is microseconds).
    """
    import time

    import ncnn

    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = threads
    if net.load_param(str(param)) != 0 or net.load_model(str(Path(param).with_suffix(".bin"))) != 0:
        raise ValueError(f"ncnn cannot read '{param}' and its .bin")
    layers = [(i, L.name, L.type, L.tops[0]) for i, L in enumerate(net.layers()) if L.type != "Input" and len(L.tops)]
    seen = collections.Counter(n for _, n, _, _ in layers)
    layers = [(i, n if seen[n] == 1 else f"{n}#{i}", t, top) for i, n, t, top in layers]  # names can repeat
    mat = ncnn.Mat(np.ascontiguousarray(x, dtype=np.float32))
    name = net.input_names()[0]
    per: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    for r in range(warmup + runs):
        with net.create_extractor() as ex:
            ex.set_light_mode(True)
            ex.input(name, mat)
            for _, lname, ltype, top in layers:
                t = time.perf_counter()
                ex.extract(top, 1)  # type 1: no conversion of the packed output
                if r >= warmup:
                    per[(lname, ltype)].append((time.perf_counter() - t) * 1e3)
    return {k: float(np.median(v)) for k, v in per.items()}


_TFL_LAYER = re.compile(r"(?:DetectionModel|Model)_model/[\w.]+?_(\d+)(?:/|;|$)")


class _TFLGraph:
    """A ``.tflite`` file as the flatbuffer schema's object tree, with its constants inlined, so that pieces of its
    graph can be written out as models of their own (:meth:`piece`)."""

    def __init__(self, path: Path):
        from ai_edge_litert import schema_py_generated as schema

        self.schema = schema
        self.buf = Path(path).read_bytes()
        self.model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(self.buf, 0))
        self.sg = self.model.subgraphs[0]
        for bf in self.model.buffers or []:  # constants stored after the flatbuffer (offset, size): inlined
            if getattr(bf, "offset", 0) and bf.offset > 1:
                bf.data = np.frombuffer(self.buf, np.uint8, count=int(bf.size), offset=int(bf.offset)).copy()
                bf.offset, bf.size = 0, 0
        self.ops = list(self.sg.operators)
        self._codes = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
        layer = [self._layer_of(o) for o in self.ops]
        for i in range(1, len(layer)):  # an op without a name of its own belongs to the layer before it
            if layer[i] == "?":
                layer[i] = layer[i - 1]
        self.layers = layer

    def _layer_of(self, op) -> str:
        for t in op.outputs:
            m = _TFL_LAYER.search(self.sg.tensors[t].name.decode(errors="replace"))
            if m:
                return f"model.{m.group(1)}"
        return "?"

    def op_type(self, op) -> str:
        """The operator's name, with ``/f`` when its output is float32 (in an int8 model: kept in float)."""
        oc = self.model.operatorCodes[op.opcodeIndex]
        name = self._codes.get(max(oc.builtinCode, oc.deprecatedBuiltinCode), "?")
        return name + ("/f" if self.sg.tensors[op.outputs[0]].type == self.schema.TensorType.FLOAT32 else "")

    def piece(self, start: int, stop: int) -> tuple[bytes, list[int]]:
        """Operators ``start:stop`` as a model of their own (its inputs: every tensor they read that is neither a
        constant nor made by one of them; its output: the last operator's) and those input tensors."""
        import flatbuffers

        sg, ops = self.sg, self.ops[start:stop]
        made: set[int] = set()
        ins: list[int] = []
        for op in ops:
            for t in op.inputs:
                buf = self.model.buffers[sg.tensors[t].buffer] if t >= 0 and sg.tensors[t].buffer else None
                const = buf is not None and buf.data is not None and len(buf.data) > 0
                if t >= 0 and t not in made and not const and t not in ins:
                    ins.append(t)
            made.update(op.outputs)
        keep = (sg.operators, sg.inputs, sg.outputs)
        sg.operators, sg.inputs, sg.outputs = ops, ins, list(ops[-1].outputs)
        b = flatbuffers.Builder(len(self.buf) + (1 << 20))
        b.Finish(self.model.Pack(b), file_identifier=b"TFL3")
        sg.operators, sg.inputs, sg.outputs = keep
        return bytes(b.Output()), ins


def _tfl_runner(content: bytes, threads: int, xnnpack: bool = True, x: np.ndarray | None = None, seed: int = 0):
    """A call that runs ``content`` once: fed ``x`` when given, else random inputs of each input's type."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    it = Interpreter(model_content=content, num_threads=threads, experimental_op_resolver_type=resolver)
    it.allocate_tensors()
    rng = np.random.default_rng(seed)
    feeds = []
    for d in it.get_input_details():
        if x is not None:
            v = x
        elif np.issubdtype(d["dtype"], np.floating):
            v = rng.random(tuple(d["shape"]), dtype=np.float32).astype(d["dtype"])
        else:
            v = rng.integers(-100, 100, size=tuple(d["shape"])).astype(d["dtype"])
        feeds.append((d["index"], v))

    def run(_x=None):
        for i, v in feeds:
            it.set_tensor(i, v)
        it.invoke()
    return run


def litert_layer_ms(path: Path, x: np.ndarray, threads: int = 1, runs: int = 20, warmup: int = 3,
                    rounds: int = 4) -> dict[tuple[str, str], float]:
    """Milliseconds of every layer (``model.N``) of a LiteRT model, keyed ``(layer, its operator types)``, for the
    input ``x`` (as the interpreter takes it).

    LiteRT's Python interpreter has no per-operator profiler and its XNNPACK delegate runs the graph as one node, so
    the graph is cut instead: prefix models holding the operators up to the end of each layer (in the graph's
    order, the layer read from the operator's output tensor name) are written with the flatbuffer schema, timed
    interleaved (``rounds`` blocks of ``runs``; medians), and each layer gets the difference between its prefix and
    the one before. Differences of medians are noisy where a layer is short (hundredths of a ms): read them summed
    over groups of layers, not one by one. :func:`litert_op_ms` times each operator instead.
    """
    from yolo_ldac.deploy.benchmark import _time_blocks

    g = _TFLGraph(path)
    layer, ops = g.layers, g.ops
    cuts = [i + 1 for i in range(len(ops)) if i + 1 == len(ops) or layer[i + 1] != layer[i]]
    runners = {}
    for k in cuts:
        content, _ = g.piece(0, k)
        runners[k] = _tfl_runner(content, threads, x=x)
    stats = _time_blocks(runners, x, runs * rounds, warmup=warmup, rounds=rounds)
    out: dict[tuple[str, str], float] = {}
    prev, start = 0.0, 0
    for k in cuts:
        ms = float(stats[k]["median_ms"])
        kinds = "+".join(dict.fromkeys(g.op_type(o).removesuffix("/f") for o in ops[start:k]))
        key = (layer[k - 1], kinds)
        out[key] = out.get(key, 0.0) + ms - prev
        prev, start = ms, k
    return out


def litert_op_ms(path: Path, threads: int = 1, runs: int = 30, warmup: int = 3, rounds: int = 4,
                 xnnpack: bool = True, max_ops: int = 45) -> dict[tuple[int, str, str], float]:
    """Milliseconds of every operator of a LiteRT model, keyed ``(index, layer, operator)`` (the operator with
    ``/f`` when it computes in float), with XNNPACK (the default) or LiteRT's own kernels (``xnnpack=False``: which
    operators XNNPACK runs slower than they are).

    Each layer's operators (at most ``max_ops`` at a time) become models of their own that start at the layer's
    first operator and end at each of its operators, fed random inputs of the right type; they are timed
    interleaved and each operator gets the difference to the model before it. A layer's sum is as exact as its
    timing; inside a layer XNNPACK fuses some operators into the next one (a ``PAD`` into its convolution, a
    ``SLICE`` or ``QUANTIZE`` into a concat), so a piece that ends at such an operator computes it on its own and
    single operators can read high or negative: read per-operator figures in pairs, and layers as a whole.

    Example:
        >>> ms = litert_op_ms(Path("best_int8.tflite"))  # doctest: +SKIP
        >>> max(ms.items(), key=lambda kv: kv[1])  # doctest: +SKIP
        ((3, 'model.0', 'CONV_2D'), 4.0)
    """
    from yolo_ldac.deploy.benchmark import _time_blocks

    g = _TFLGraph(path)
    spans, s = [], 0
    for i in range(1, len(g.ops) + 1):
        if i == len(g.ops) or g.layers[i] != g.layers[s] or i - s >= max_ops:
            spans.append((s, i))
            s = i
    out: dict[tuple[int, str, str], float] = {}
    for s, e in spans:
        runners = {k: _tfl_runner(g.piece(s, k)[0], threads, xnnpack=xnnpack) for k in range(s + 1, e + 1)}
        stats = _time_blocks(runners, None, runs, warmup=warmup, rounds=rounds)
        prev = 0.0
        for k in range(s + 1, e + 1):
            ms = float(stats[k]["median_ms"])
            out[(k - 1, g.layers[k - 1], g.op_type(g.ops[k - 1]))] = ms - prev
            prev = ms
    return out


def _time_onnxruntime(path: Path, inputs: list[np.ndarray], threads: int, runs: int, n: int) -> list[float]:
    nodes = onnxruntime_node_ms(path, inputs, threads, runs)
    return _branch_times({name: ms for (name, op), ms in nodes.items() if not op.startswith("Reorder")}, n)


def _time_openvino(path: Path, inputs: list[np.ndarray], threads: int, runs: int, n: int, precision: str) -> list[float]:
    calib = [tuple(np.random.default_rng(i).random(x.shape, dtype=np.float32) for x in inputs) for i in range(2)]
    nodes = openvino_node_ms(path, inputs, threads, runs, precision=precision, calib=calib)
    return _branch_times({name: ms for (name, kind), ms in nodes.items() if kind != "Reorder"}, n)


def time_shape(shape: ConvShape, runtime: str, precision: str, threads: int, multiple: int = 16, points: int = 6,
               runs: int = 15, workdir: Path | None = None) -> LayerGrid:
    """The measured grid of one shape class (see the module docstring)."""
    pts = _probe_points(shape, multiple, points)
    cins = sorted({ci for ci, _ in pts})
    # Branch 0 is sacrificial (a copy of the first point, not read): the graph's first node absorbs costs of its
    # own (OpenVINO int8 timed it 3-5x its neighbours), which would make the narrowest point look the slowest.
    probe = _Probe(shape, [pts[0], *pts], cins)
    with tempfile.TemporaryDirectory(prefix="yolo-ldac-probe-", dir=workdir) as tmp:
        path = Path(tmp) / "probe.onnx"
        inputs = _export_probe(probe, shape, path)
        if runtime == "onnxruntime":
            ms = _time_onnxruntime(path, inputs, threads, runs, len(pts) + 1)[1:]
        else:
            ms = _time_openvino(path, inputs, threads, runs, len(pts) + 1, precision)[1:]
    couts = sorted({co for _, co in pts})
    if shape.depthwise:
        return LayerGrid(cin=[couts[0]], cout=couts,
                         ms=narrower_never_slower([[ms[pts.index((c, c))] for c in couts]]))
    return LayerGrid(cin=cins, cout=couts,
                     ms=narrower_never_slower([[ms[pts.index((ci, co))] for co in couts] for ci in cins]))


MULTIPLE_PROBES = (  # (kernel, input side): a 3x3 and a 1x1 pair of convolutions as YOLO's neck has them
    ((3, 3), 40),
    ((1, 1), 80),
)
MULTIPLE_WIDTHS = tuple(range(8, 136, 8))
_CHAIN_WIDTH = 64


class _Chain(nn.Module):
    """``64 -> w -> 64`` channels through two convolutions and their SiLUs: a layer pruned to ``w`` between two
    kept ones, so the runtime's layout changes around a width it dislikes are timed too."""

    def __init__(self, k: tuple[int, int], w: int):
        super().__init__()
        pad = (k[0] // 2, k[1] // 2)
        self.a, self.b = nn.Conv2d(_CHAIN_WIDTH, w, k, 1, pad), nn.Conv2d(w, _CHAIN_WIDTH, k, 1, pad)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.b(self.act(self.a(x))))


def _whole_runners(paths: list[Path], x: np.ndarray, runtime: str, precision: str, threads: int) -> list[Any]:
    """One callable ``runner(x)`` per ONNX file, in the runtime (an OpenVINO int8 one quantized by NNCF)."""
    if runtime == "onnxruntime":
        runners = []
        for p in paths:
            sess = _ort_session(p, threads)
            name = sess.get_inputs()[0].name
            runners.append(lambda x, s=sess, n=name: s.run(None, {n: x}))
        return runners
    calib = [np.random.default_rng(i).random(x.shape, dtype=np.float32) for i in range(2)]
    return [lambda x, r=_openvino_request(p, threads, precision, calib): r.infer([x]) for p in paths]


def width_staircase(runtime: str, precision: str, threads: int, runs: int = 30, rounds: int = 3,
                    workdir: Path | None = None) -> list[dict]:
    """Whole-graph latency of a :class:`_Chain` at every width of :data:`MULTIPLE_WIDTHS` for each of
    :data:`MULTIPLE_PROBES`, timed interleaved (``rounds`` blocks of ``runs`` per width,
    :func:`yolo_ldac.deploy.benchmark.time_interleaved`'s blocks; the median): the measurements ``round_to=auto``
    reads (:func:`yolo_ldac.latency.table.staircase_multiple`)."""
    from yolo_ldac.deploy.benchmark import _time_blocks

    out = []
    for k, side in MULTIPLE_PROBES:
        x = np.random.default_rng(0).random((1, _CHAIN_WIDTH, side, side), dtype=np.float32)
        with tempfile.TemporaryDirectory(prefix="yolo-ldac-probe-", dir=workdir) as tmp:
            paths = []
            for w in MULTIPLE_WIDTHS:
                path = Path(tmp) / f"chain{w}.onnx"
                torch.onnx.export(_Chain(k, w).eval(), (torch.from_numpy(x),), str(path), opset_version=17,
                                  dynamo=False)
                paths.append(path)
            runners = dict(enumerate(_whole_runners(paths, x, runtime, precision, threads)))
            stats = _time_blocks(runners, x, runs * rounds, warmup=3, rounds=rounds)
        out.append({"kernel": list(k), "side": side, "widths": list(MULTIPLE_WIDTHS),
                    "ms": [round(float(stats[i]["median_ms"]), 4) for i in range(len(paths))]})
    return out


def measured_multiple(staircases: list[dict], candidates: tuple[int, ...] = (8, 16, 32, 64)) -> int:
    """The width multiple all staircases agree loses nothing: the smallest of each one's
    :func:`~yolo_ldac.latency.table.staircase_multiple` (one layer kind that gains from finer widths decides)."""
    from yolo_ldac.latency.table import staircase_multiple

    return min(staircase_multiple(s["widths"], s["ms"], candidates) for s in staircases)
