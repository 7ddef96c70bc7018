"""Run an exported detector in its own runtime (ONNX Runtime, LiteRT, OpenVINO, NCNN) or in PyTorch, with a set thread
count.

Every runtime takes a ``(B, 3, H, W)`` float32 RGB batch in ``[0, 1]`` (letterboxed, as Ultralytics' predictor
prepares it) and returns the detector's raw prediction in PyTorch's convention: ``(B, 4 + nc, anchors)`` with
boxes ``xywh`` in input pixels, before NMS (``(B, 4 + nc + k, anchors)`` for a segment, pose or obb model: mask
coefficients, keypoints in input pixels, or angles follow the scores). :meth:`Runtime.outputs` returns every
output in PyTorch's order and layout: a segmentation model's mask prototypes ``(B, nm, H/4, W/4)`` come second.
Format quirks are undone here, so outputs compare directly:

- LiteRT files written by Ultralytics 8.4 (litert-torch) hold box coordinates (and pose keypoints) divided by the
  input size (so that int8 quantization keeps the class-score resolution); they are multiplied back, as Ultralytics'
  LiteRT backend does, which also orders a segmentation model's outputs (prototypes last) and turns NHWC prototypes
  of an NHWC graph to NCHW.
- OpenVINO on CPUs with AMX/AVX-512 BF16 computes in bfloat16 by default, whatever the IR holds (bf16 moved boxes
  by up to 26 % of the input size on low-score anchors here). Every IR is run with the ``f32`` precision hint, so an
  fp16 IR means fp16 weights computed in fp32 (as on CPUs without bf16) and the checks test what they name.
- ONNX files converted to fp16 by Ultralytics keep float32 inputs and outputs; a file with fp16 inputs is fed fp16.
- NCNN (``*_ncnn_model/``, written by pnnx) runs one image at a time through the ``ncnn`` Python package, on the CPU
  (no Vulkan), as Ultralytics' NCNN backend does; its output has no batch axis, which is added back.

Example:
    >>> from yolo_ldac.deploy.runtimes import load_runtime
    >>> rt = load_runtime("best_int8.tflite", threads=1)
    >>> y = rt(x)  # x: (1, 3, 640, 640) float32 in [0, 1]  ->  y: (1, 84, 8400)
"""

from __future__ import annotations

import importlib.util
import json
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from yolo_ldac.errors import LDACError, first_line
from yolo_ldac.utils.env import usable_cores

# Format name -> (python modules its runtime needs, the pip extra that installs them).
RUNTIME_REQUIREMENTS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "pytorch": ((), None),
    "onnx": (("onnxruntime",), None),
    "litert": (("ai_edge_litert",), "litert"),
    "openvino": (("openvino",), "openvino"),
    "ncnn": (("ncnn",), "ncnn"),
}


def format_of(path: str | Path) -> str:
    """The format of an exported model from its name: ``pytorch``, ``onnx``, ``litert``, ``openvino`` or ``ncnn``."""
    p = Path(path)
    name = p.name
    if name.endswith("_openvino_model") or p.suffix == ".xml":
        return "openvino"
    if name.endswith("_ncnn_model") or p.suffix == ".param":
        return "ncnn"
    if p.suffix == ".tflite":
        return "litert"
    if p.suffix == ".onnx":
        return "onnx"
    if p.suffix == ".pt":
        return "pytorch"
    raise LDACError(f"cannot tell the format of '{p}' (expected .pt, .onnx, .tflite, *_openvino_model/ or "
                    "*_ncnn_model/)")


def require_modules(modules: tuple[str, ...], extra: str | None, what: str) -> None:
    """Raise :class:`LDACError` ``"<what> needs <missing>, which is not installed: <pip command>"`` when any of the
    python ``modules`` cannot be imported; the command installs the project's ``extra`` (or the modules)."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        how = f"pip install 'yolo-ldac[{extra}]'" if extra else f"pip install {' '.join(missing)}"
        raise LDACError(f"{what} needs {', '.join(missing)}, which is not installed: {how}")


def check_runtime(fmt: str) -> None:
    """Raise :class:`LDACError` with the install command when ``fmt``'s runtime is not installed."""
    if fmt not in RUNTIME_REQUIREMENTS:
        raise LDACError(f"no runtime for format '{fmt}' (runtimes: {', '.join(RUNTIME_REQUIREMENTS)})")
    require_modules(*RUNTIME_REQUIREMENTS[fmt], what=f"format '{fmt}'")


class Runtime:
    """One loaded model. Call it on a ``(B, 3, H, W)`` float32 array; ``input_shape`` is ``(B, 3, H, W)``."""

    format = ""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        self.path = Path(path)
        self.threads = int(threads) if threads else usable_cores()
        if not self.path.exists():
            raise LDACError(f"exported model '{self.path}' not found")
        check_runtime(self.format)
        try:
            self._load()
        except LDACError:
            raise
        except Exception as e:
            raise LDACError(f"{self.format} runtime cannot load '{self.path}' ({first_line(e)})") from e

    def _load(self) -> None:
        raise NotImplementedError

    def _model_file(self, suffix: str) -> Path:
        """``path`` itself when it ends in ``suffix``, else the first such file in the export folder ``path``."""
        found = self.path if self.path.suffix == suffix else next(iter(sorted(self.path.glob(f"*{suffix}"))), None)
        if found is None:
            raise LDACError(f"no {suffix} model in '{self.path}'")
        return found

    def _run_all(self, x: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError

    def outputs(self, x: np.ndarray) -> list[np.ndarray]:
        """Every output on ``x`` (float32): the prediction, then a segmentation model's prototypes."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        try:
            ys = self._run_all(x)
        except LDACError:
            raise
        except Exception as e:
            raise LDACError(f"{self.format} runtime failed to run '{self.path.name}' ({first_line(e)})") from e
        return [np.asarray(y, dtype=np.float32) for y in ys]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The prediction (the first output) on ``x``."""
        return self.outputs(x)[0]


class OnnxRuntime(Runtime):
    """ONNX Runtime, CPU execution provider, ``threads`` intra-op threads."""

    format = "onnx"

    def _load(self) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_fp16 = "float16" in inp.type
        self.input_shape = tuple(d if isinstance(d, int) else -1 for d in inp.shape)

    def _run_all(self, x: np.ndarray) -> list[np.ndarray]:
        return list(self.session.run(None, {self.input_name: x.astype(np.float16) if self.input_fp16 else x}))


def read_litert_metadata(path: str | Path) -> dict:
    """The ``metadata.json`` Ultralytics appends to a ``.tflite`` file as a zip entry (``{}`` when absent)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return json.loads(zf.read("metadata.json"))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError):
        return {}


class LiteRTRuntime(Runtime):
    """The LiteRT (TFLite) interpreter with ``threads`` threads (XNNPACK on CPU)."""

    format = "litert"

    def _load(self) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(self.path), num_threads=self.threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output_details = self.interpreter.get_output_details()
        shape = tuple(int(d) for d in self.input["shape"])
        self.nhwc = shape[-1] == 3 and shape[1] != 3
        self.input_shape = (shape[0], shape[3], shape[1], shape[2]) if self.nhwc else shape
        meta = read_litert_metadata(self.path)
        # litert-torch exports of detect heads hold normalised box coordinates (see the module docstring).
        self.normalised_boxes = bool(meta) and not meta.get("end2end", False) and meta.get("head") != "RTDETRDecoder"
        self.task = str(meta.get("task", "detect"))
        self.kpt_start = 4 + len(meta.get("names") or {})
        self.kpt_dim = int((meta.get("kpt_shape") or [0, 0])[1])

    def _run_all(self, x: np.ndarray) -> list[np.ndarray]:
        h, w = x.shape[2:4]
        if self.nhwc:
            x = x.transpose(0, 2, 3, 1)
        if self.input["dtype"] in (np.int8, np.int16):  # full-integer graph input
            scale, zero = self.input["quantization"]
            info = np.iinfo(self.input["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(self.input["dtype"])
        self.interpreter.set_tensor(self.input["index"], np.ascontiguousarray(x))
        self.interpreter.invoke()
        ys = []
        for out in self.output_details:
            y = self.interpreter.get_tensor(out["index"])
            if out["dtype"] in (np.int8, np.int16):
                scale, zero = out["quantization"]
                y = (y.astype(np.float32) - zero) * scale
            y = np.array(y, dtype=np.float32)  # a copy: the interpreter reuses its buffers
            if self.normalised_boxes and y.ndim == 3:
                y[:, [0, 2]] *= w
                y[:, [1, 3]] *= h
                if self.task == "pose" and self.kpt_dim:
                    y[:, self.kpt_start::self.kpt_dim] *= w
                    y[:, self.kpt_start + 1::self.kpt_dim] *= h
            ys.append(y)
        ys.sort(key=lambda y: y.ndim == 4)  # (prediction, prototypes), as Ultralytics' LiteRT backend orders them
        if self.nhwc and len(ys) > 1 and ys[1].ndim == 4:
            ys[1] = ys[1].transpose(0, 3, 1, 2)
        return ys


class OpenVINORuntime(Runtime):
    """OpenVINO on CPU with ``threads`` inference threads (latency hint), computing in f32 (module docstring)."""

    format = "openvino"

    def _load(self) -> None:
        import openvino as ov

        xml = self._model_file(".xml")
        core = ov.Core()
        model = core.read_model(str(xml))
        config: dict[str, Any] = {"INFERENCE_NUM_THREADS": self.threads, "PERFORMANCE_HINT": "LATENCY",
                                  "INFERENCE_PRECISION_HINT": "f32"}
        self.precision = self.precision_of_ir(model)
        self.compiled = core.compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        pshape = model.inputs[0].get_partial_shape()
        self.input_shape = tuple(int(d.get_length()) if d.is_static else -1 for d in pshape)

    @staticmethod
    def precision_of_ir(model: Any) -> str:
        """``int8`` when the IR holds FakeQuantize/quantized ops, ``fp16`` when it holds fp16 constants, else ``fp32``."""
        import openvino as ov

        ops = list(model.get_ops())
        if any(op.get_type_name() in {"FakeQuantize", "FakeConvert"} for op in ops):
            return "int8"
        if any(op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.f16 for op in ops):
            return "fp16"
        return "fp32"

    def _run_all(self, x: np.ndarray) -> list[np.ndarray]:
        self.request.infer({0: x})
        return [self.request.get_output_tensor(i).data.copy() for i in range(len(self.compiled.outputs))]


class NcnnRuntime(Runtime):
    """NCNN on the CPU with ``threads`` threads (``ncnn`` Python package), fed one image at a time."""

    format = "ncnn"

    def _load(self) -> None:
        import ncnn

        param = self._model_file(".param")
        self.ncnn = ncnn
        self.net = ncnn.Net()
        self.net.opt.use_vulkan_compute = False
        self.net.opt.num_threads = self.threads
        if self.net.load_param(str(param)) != 0 or self.net.load_model(str(param.with_suffix(".bin"))) != 0:
            raise LDACError(f"ncnn cannot read '{param}' and its .bin")
        self.input_name = self.net.input_names()[0]
        self.output_names = sorted(self.net.output_names())  # Ultralytics' backend sorts them too (pnnx naming)
        h, w = _ncnn_imgsz(param.parent)
        self.input_shape = (1, 3, h, w)

    def _run_all(self, x: np.ndarray) -> list[np.ndarray]:
        outs: list[list[np.ndarray]] = []
        for sample in x:
            with self.net.create_extractor() as ex:
                ex.input(self.input_name, self.ncnn.Mat(np.ascontiguousarray(sample)))
                row = []
                for name in self.output_names:
                    ret, out = ex.extract(name)
                    if ret != 0:
                        raise LDACError(f"ncnn extract of '{name}' failed (code {ret})")
                    row.append(np.array(out))
                outs.append(row)
        return [np.stack(ys) for ys in zip(*outs)]


def _ncnn_imgsz(folder: Path) -> tuple[int, int]:
    """The input size recorded in the export's ``metadata.yaml`` (``-1, -1`` when absent: NCNN graphs take any)."""
    meta = folder / "metadata.yaml"
    if meta.is_file():
        import yaml

        try:
            imgsz = (yaml.safe_load(meta.read_text()) or {}).get("imgsz")
        except yaml.YAMLError:
            imgsz = None
        if isinstance(imgsz, (list, tuple)) and len(imgsz) == 2:
            return int(imgsz[0]), int(imgsz[1])
    return -1, -1


class TorchRuntime(Runtime):
    """The PyTorch model itself (fused, eval mode, CPU), for the reference numbers."""

    format = "pytorch"

    def _load(self) -> None:
        from yolo_ldac.safe_load import load_model

        model = load_model(self.path, device="cpu", fuse=True)
        self.model = model.float().eval()
        self.input_shape = (1, 3, -1, -1)

    def _run_all(self, x: np.ndarray) -> list[np.ndarray]:
        import torch

        param = next(self.model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        previous, was_training = torch.get_num_threads(), self.model.training
        if self.threads:
            torch.set_num_threads(self.threads)
        self.model.eval()
        try:
            with torch.inference_mode():
                y = self.model(torch.from_numpy(x).to(device=device, dtype=dtype))
        finally:
            torch.set_num_threads(previous)
            self.model.train(was_training)
        # eval mode returns (prediction, raw maps); a segmentation model's prediction is (boxes, prototypes)
        if isinstance(y, (tuple, list)) and y:
            y = y[0]
        ys = list(y) if isinstance(y, (tuple, list)) else [y]
        while ys and isinstance(ys[0], (tuple, list)):
            ys = list(ys[0])
        if not ys or not all(isinstance(t, torch.Tensor) for t in ys):
            raise LDACError(f"the PyTorch model returned {type(y).__name__}, not tensors")
        return [t.float().cpu().numpy() for t in ys]


class ModuleRuntime(TorchRuntime):
    """A PyTorch model already in memory, on its own device and dtype (not copied: it is run in eval mode and its
    mode restored; torch's thread count is left alone unless ``threads`` is given)."""

    def __init__(self, model: Any, threads: int | None = None) -> None:  # noqa: D107 (no file to load)
        self.path = Path("<module>")
        self.threads = threads
        self.model = model
        self.input_shape = (1, 3, -1, -1)


RUNTIMES: dict[str, Callable[..., Runtime]] = {
    "pytorch": TorchRuntime,
    "onnx": OnnxRuntime,
    "litert": LiteRTRuntime,
    "openvino": OpenVINORuntime,
    "ncnn": NcnnRuntime,
}


def load_runtime(path: str | Path, threads: int | None = None) -> Runtime:
    """Load ``path`` (``.pt``, ``.onnx``, ``.tflite``, ``*_openvino_model/`` or ``*_ncnn_model/``) in its runtime with ``threads``
    threads (default: every core); raises :class:`LDACError` with the install command if the runtime is missing."""
    return RUNTIMES[format_of(path)](path, threads=threads)
