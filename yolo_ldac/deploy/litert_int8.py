"""Static int8 quantisation of an fp32 LiteRT model, with the operators that int8 makes slower kept in float.

Ultralytics 8.4 quantises every operator of a LiteRT model it can (ai-edge-quantizer's ``static_wi8_ai8`` recipe).
Per-operator profiles of YOLO11n at 640 px on an x86 CPU (XNNPACK, one thread; docs/deployment.md, section 7) found
three operators that run slower in int8 than in fp32:

- the attention block's two ``BATCH_MATMUL`` and its ``SOFTMAX`` (the block took 7.6-7.9 ms in int8): XNNPACK has no
  int8 kernel for a product of two activations, so they run in LiteRT's reference kernels; in float XNNPACK
  computes the two products in 0.4 ms;
- the first convolution, on the 3-channel image (its layer 5.0 ms in int8, 3.4 ms in float): XNNPACK's fp32 has a
  kernel made for a 3-channel stride-2 first layer, its int8 has not.

``int8_float="auto"`` keeps those in float (a dequantise before, a quantise after); everything else is int8 as
before. Timed interleaved (``benchmarks/litert_int8.py``), it made the int8 YOLO11n 1.22x faster there
(27.08 -> 22.26 ms) and its 50 %-pruned form 1.43x (28.69 -> 20.01 ms). ``"none"`` quantises everything, for
accelerators that run int8 only (NPUs, the Edge TPU).

Example:
    >>> quantize_litert_int8(Path("best.tflite"), Path("best_int8.tflite"), samples, int8_float="auto")  # doctest: +SKIP
    PosixPath('best_int8.tflite')
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from yolo_ldac.errors import LDACError

INT8_FLOAT_CHOICES = ("auto", "none")

# (regex on an operator's output tensor name, TFLite operator) pairs kept in float by int8_float="auto". The first
# convolution is the model's layer 0 (litert-torch names tensors by module path: ...DetectionModel_model/...Conv_0/).
AUTO_FLOAT_OPS = (
    (".*", "BATCH_MATMUL"),
    (".*", "SOFTMAX"),
    (r".*Model_model/[\w.]+_0/.*", "ALL_SUPPORTED"),
)


def float_rules(int8_float: str) -> tuple[tuple[str, str], ...]:
    """The (regex, operator) pairs that ``int8_float`` keeps in float.

    Example:
        >>> [op for _, op in float_rules("auto")]
        ['BATCH_MATMUL', 'SOFTMAX', 'ALL_SUPPORTED']
        >>> float_rules("none")
        ()
    """
    if int8_float not in INT8_FLOAT_CHOICES:
        raise LDACError(f"int8_float={int8_float!r} is not one of {', '.join(INT8_FLOAT_CHOICES)}")
    return AUTO_FLOAT_OPS if int8_float == "auto" else ()


def quantize_litert_int8(src: Path, dst: Path, samples: Iterable[np.ndarray], int8_float: str = "auto") -> Path:
    """Write ``src`` (an fp32 ``.tflite``) to ``dst`` statically quantised to int8 weights and activations, calibrated
    on ``samples`` (``(1, 3, H, W)`` float32 images in [0, 1], as the model takes them), with graph input and output
    in float as Ultralytics writes them and the operators of ``int8_float`` (:func:`float_rules`) in float. Keeps the
    metadata Ultralytics appends to the file."""
    from ai_edge_quantizer import qtyping, quantizer, recipe

    rules = float_rules(int8_float)
    calib = [{"args_0": np.ascontiguousarray(x, dtype=np.float32)} for x in samples]
    if not calib:
        raise LDACError("int8 calibration got no images")
    q = quantizer.Quantizer(str(src))
    q.load_quantization_recipe(recipe.static_wi8_ai8())
    keep = [(".*", "INPUT"), (".*", "OUTPUT"), *rules]  # must come after the recipe is loaded
    for regex, op in keep:
        q.update_quantization_recipe(regex=regex, operation_name=getattr(qtyping.TFLOperationName, op),
                                     algorithm_key=recipe.AlgorithmName.NO_QUANTIZE)
    result = q.calibrate({"serving_default": calib})
    q.quantize(calibration_result=result).export_model(str(dst), overwrite=True)
    copy_metadata(src, dst)
    return dst


def calibration_images(data: str | Path, imgsz: int | tuple[int, int], n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` images of ``data``'s train split (all of them when it has fewer) as the exported model takes them:
    letterboxed to ``imgsz`` without augmentation (Ultralytics' validation transforms, as its own int8 calibration
    does), ``(1, 3, H, W)`` float32 in [0, 1], in a fixed seeded order.

    Example:
        >>> [x.shape for x in calibration_images("coco8.yaml", 64, 2)]  # doctest: +SKIP
        [(1, 3, 64, 64), (1, 3, 64, 64)]
    """
    from ultralytics.data.utils import check_det_dataset

    from yolo_ldac.pruning.calibration import build_calibration_batches

    shape = (imgsz, imgsz) if isinstance(imgsz, int) else tuple(imgsz)
    batches = build_calibration_batches(check_det_dataset(str(data)), imgsz=max(shape), batch=1, n_batches=n,
                                        seed=seed, shape=shape)
    return [b["img"].numpy() for b in batches]


def operator_dtypes(path: Path) -> list[tuple[str, str]]:
    """``(operator, dtype of its first output)`` for every operator of a ``.tflite`` file, in graph order.

    Example:
        >>> [op for op, dtype in operator_dtypes(Path("best_int8.tflite")) if dtype == "FLOAT32"][:2]  # doctest: +SKIP
        ['DEQUANTIZE', 'TRANSPOSE']
    """
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(Path(path).read_bytes(), 0)
    graph = model.Subgraphs(0)
    ops = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    dtypes = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    out = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        name = ops.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?")
        out.append((name, dtypes.get(graph.Tensors(op.Outputs(0)).Type(), "?")))
    return out


def copy_metadata(src: Path, dst: Path) -> None:
    """Append the ``metadata.json`` Ultralytics stores in ``src`` (a zip entry after the flatbuffer) to ``dst``."""
    try:
        with zipfile.ZipFile(src) as zf:
            meta = zf.read("metadata.json")
    except (zipfile.BadZipFile, KeyError):
        return
    with zipfile.ZipFile(dst, "a", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("metadata.json", meta)
