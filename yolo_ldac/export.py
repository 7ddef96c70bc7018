"""Export (pruned) detectors for edge runtimes and check every export against PyTorch before handing it over.

Formats with a runtime check (:mod:`yolo_ldac.deploy.runtimes`): ``onnx`` (ONNX Runtime), ``litert`` (alias
``tflite``; LiteRT, converted by litert-torch, no TensorFlow) and ``openvino``, each in ``fp32``, ``fp16``
(``half=True``) or ``int8`` (``int8=True``, calibrated on images of ``data``'s train split); ``ncnn`` (Ultralytics'
pnnx conversion, run by the ``ncnn`` package: the Raspberry Pi runtime) in ``fp32`` or ``fp16``. Any other Ultralytics
format (``torchscript``, ``engine``, ...) is exported as Ultralytics does it, without the runtime check.

Every export is written to a temporary folder, checked there, and only then moved next to the model, named by its
precision (``best.onnx``, ``best_fp16.onnx``, ``best_int8.onnx``, ``best_int8.tflite``,
``best_fp16_openvino_model/``, ...), so a failed export never replaces a good one. Checks
(:mod:`yolo_ldac.deploy.parity`):

1. raw outputs against PyTorch on real images (Ultralytics' bus.jpg and zidane.jpg, plus two val images when
   ``data`` is given), with the precision's tolerance;
2. with ``data``: mAP50-95 of the exported file on the val set against PyTorch's (0.5 points for fp32/fp16,
   2 points for int8).

LiteRT has no fp16 file in Ultralytics 8.4 (its runtime casts an fp32 model to fp16 on GPU delegates); ``half=True``
for ``litert`` writes the fp32 model with its weights stored as float16 (ai-edge-quantizer's float casting), the
classic TFLite "float16 quantization": half the file size, computed in fp32 on CPU and in fp16 on GPU delegates.

Example:
    >>> from yolo_ldac.export import export_model
    >>> export_model("runs/ldac/exp/weights/best.pt", format="litert", int8=True, data="kitti.yaml", imgsz=640)
    PosixPath('runs/ldac/exp/weights/best_int8.tflite')
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from yolo_ldac.deploy.parity import (  # noqa: F401  (parity_metrics, preprocess_image: public API of this module)
    check_map_parity,
    check_raw_parity,
    parity_metrics,
    shape2,
    split_images,
    val_images,
    validate_map,
)
from yolo_ldac.deploy.litert_int8 import calibration_images, copy_metadata, float_rules, quantize_litert_int8
from yolo_ldac.deploy.parity import preprocess_image as _preprocess
from yolo_ldac.errors import LDACError, first_line

from yolo_ldac.utils.log import LOGGER  # noqa: E402

FORMAT_ALIASES = {"tflite": "litert"}
CHECKED_FORMATS = ("onnx", "litert", "openvino", "ncnn")  # formats whose runtime the parity check runs
PRECISIONS = ("fp32", "fp16", "int8")
INT8_CALIB_IMAGES = 300  # calibration images for int8 (Ultralytics recommends >= 300)

# What each format needs beyond the base install to export, per precision; the pip extra that installs it.
EXPORT_REQUIREMENTS: dict[str, dict[str, tuple[tuple[str, ...], str]]] = {
    "litert": {
        "fp32": (("litert_torch", "ai_edge_litert"), "litert"),
        "fp16": (("litert_torch", "ai_edge_litert", "ai_edge_quantizer"), "litert"),
        "int8": (("litert_torch", "ai_edge_litert", "ai_edge_quantizer"), "litert"),
    },
    "openvino": {
        "fp32": (("openvino",), "openvino"),
        "fp16": (("openvino",), "openvino"),
        "int8": (("openvino", "nncf"), "openvino"),
    },
    "ncnn": {
        "fp32": (("ncnn", "pnnx"), "ncnn"),
        "fp16": (("ncnn", "pnnx"), "ncnn"),
    },
}


@dataclass
class ExportResult:
    """An export and its checks (``parity``: raw outputs; ``accuracy``: mAP against PyTorch, when data was given)."""

    path: Path
    format: str
    precision: str
    imgsz: int | tuple[int, int]
    size_mb: float
    seconds: float
    parity: dict | None = None
    accuracy: dict | None = None
    notes: list[str] = field(default_factory=list)
    failure: str | None = None  # the failed check's message, when export_checked(strict=False) kept the file

    def summary(self) -> str:
        """One line: file, size, time and what the checks measured."""
        parts = [f"exported {self.format} {self.precision} to {self.path} ({self.size_mb:.2f} MB, {self.seconds:.1f} s)"]
        if self.parity and "max_rel_diff" in self.parity:
            parts.append(f"raw outputs vs PyTorch: max rel diff {self.parity['max_rel_diff']:.2e}, "
                         f"mean {self.parity['mean_rel_diff']:.2e} on {len(self.parity['images'])} images")
        if self.accuracy and "map50_95" in self.accuracy:
            parts.append(f"mAP50-95 {self.accuracy['map50_95']:.4f} vs PyTorch {self.accuracy['map50_95_pytorch']:.4f}")
        parts += self.notes
        if self.failure:
            parts.append(f"CHECK FAILED: {self.failure}")
        return "; ".join(parts)


def normalise_format(fmt: str) -> str:
    """``fmt`` lower-cased, with ``tflite`` read as ``litert``."""
    f = str(fmt).strip().lower()
    return FORMAT_ALIASES.get(f, f)


def precision_of(half: bool = False, int8: bool = False) -> str:
    """``fp32``, ``fp16`` or ``int8`` from Ultralytics-style flags; both flags at once is an error."""
    if half and int8:
        raise LDACError("half=True and int8=True exclude each other: pick one precision")
    return "int8" if int8 else "fp16" if half else "fp32"


def export_name(stem: str, fmt: str, precision: str) -> str:
    """File (or folder) name of an export: ``best.onnx``, ``best_fp16.tflite``, ``best_int8_openvino_model``, ..."""
    tag = "" if precision == "fp32" else f"_{precision}"
    if fmt in ("openvino", "ncnn"):
        return f"{stem}{tag}_{fmt}_model"
    ext = {"onnx": ".onnx", "litert": ".tflite"}.get(fmt)
    if ext is None:
        raise LDACError(f"no file name rule for format '{fmt}'")
    return f"{stem}{tag}{ext}"


def check_export_requirements(fmt: str, precision: str) -> None:
    """Raise :class:`LDACError` naming the pip extra when ``fmt`` at ``precision`` cannot be exported here."""
    from yolo_ldac.deploy.runtimes import require_modules

    modules, extra = EXPORT_REQUIREMENTS.get(fmt, {}).get(precision, ((), None))
    require_modules(modules, extra, what=f"{fmt} {precision} export")


# --------------------------------------------------------------------------------------------------- ONNX (legacy API)
def preprocess_image(image: str | Path | None, imgsz: int | tuple[int, int] = 640) -> np.ndarray:
    """``image`` (default Ultralytics' ``bus.jpg``) letterboxed to ``imgsz``: ``(1, 3, H, W)`` float32 in [0, 1]."""
    from yolo_ldac.deploy.parity import default_images

    return _preprocess(image if image is not None else default_images()[0], shape2(imgsz))


def check_onnx_parity(
    pt_model: nn.Module,
    onnx_path: str | Path,
    image: str | Path | None = None,
    imgsz: int | tuple[int, int] = 640,
    rtol: float = 1e-3,
) -> dict[str, Any]:
    """Compare a PyTorch model (a ``DetectionModel`` or a ``YOLO`` wrapper) with an fp32 ONNX file on one real image
    (default bus.jpg); raise :class:`LDACError` when ``max_rel_diff > rtol``. See :func:`check_raw_parity`."""
    from yolo_ldac.deploy.runtimes import ModuleRuntime

    if not isinstance(getattr(pt_model, "model", None), nn.Sequential) and isinstance(
        getattr(pt_model, "model", None), nn.Module
    ):  # an Ultralytics YOLO wrapper: calling it would run predict(), compare its DetectionModel instead
        pt_model = pt_model.model
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise LDACError(f"ONNX file '{onnx_path}' not found")
    images = [image] if image is not None else None
    if image is not None and not Path(image).is_file():
        raise LDACError(f"parity image '{image}' not found")
    nc = getattr(pt_model.model[-1], "nc", None) if isinstance(getattr(pt_model, "model", None), nn.Sequential) else None
    result = check_raw_parity(ModuleRuntime(pt_model), onnx_path, images=images or _one_default(), imgsz=imgsz,
                              precision="fp32", rtol=rtol, nc=nc)
    result["rtol"] = float(rtol)
    return result


def _one_default() -> list[Path]:
    from yolo_ldac.deploy.parity import default_images

    return default_images()[:1]


# ------------------------------------------------------------------------------------------------------------ export
def _onnxslim_available() -> bool:
    return importlib.util.find_spec("onnxslim") is not None


def _ultralytics_export(pt_path: Path, **args: Any) -> Path:
    from ultralytics import YOLO

    out = YOLO(str(pt_path)).export(**args)
    if not out or not Path(out).exists():
        raise LDACError(f"Ultralytics exported nothing for format '{args.get('format')}'")
    return Path(out)


class _TempPathFilter(logging.Filter):
    """Rewrites Ultralytics' export messages that name the temporary folder: its "Predict:"/"Validate:" hints and
    "Results saved to" line are dropped (the file is renamed and moved after the checks; the summary names the final
    path), every other mention of the folder becomes the folder the export is moved to."""

    _DROP = ("Predict:", "Validate:", "Results saved to")

    def __init__(self, tmp: Path, dest: Path):
        super().__init__()
        self.tmps = sorted({str(tmp), str(Path(tmp).resolve())}, key=len, reverse=True)
        self.dest = str(dest)

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if not any(t in msg for t in self.tmps):
            return True
        lines = [ln for ln in msg.split("\n") if not (any(t in ln for t in self.tmps) and any(d in ln for d in self._DROP))]
        msg = "\n".join(lines)
        for t in self.tmps:
            msg = msg.replace(t, self.dest)
        record.msg, record.args = msg, None
        return bool(msg.strip())


@contextlib.contextmanager
def _temp_paths_hidden(tmp: Path, dest: Path) -> Iterator[None]:
    """While exporting in ``tmp``, Ultralytics' messages name ``dest`` instead (see :class:`_TempPathFilter`)."""
    from ultralytics.utils import LOGGER as ULTRA_LOGGER

    filt = _TempPathFilter(tmp, dest)
    ULTRA_LOGGER.addFilter(filt)
    try:
        yield
    finally:
        ULTRA_LOGGER.removeFilter(filt)


def _to_pt(src: Path, tmp: Path) -> Path:
    """``src`` as an Ultralytics ``.pt`` inside ``tmp`` (a copy, or a portable checkpoint written as ``.pt``)."""
    if src.suffix in {".json", ".safetensors"}:
        import ultralytics

        from yolo_ldac.checkpoint import load_portable, portable_paths

        model = load_portable(src)
        model.args = dict(getattr(model, "args", None) or {})
        pt = tmp / (portable_paths(src)[0].stem + ".pt")
        torch.save({"model": model, "train_args": model.args, "date": None, "version": ultralytics.__version__}, pt)
        return pt
    pt = tmp / src.name
    shutil.copy2(src, pt)
    return pt


def write_deploy_checkpoint(pt: Path, out: Path, fuse_splits: bool = False,
                            fast_dfl: bool = True) -> dict[str, int]:
    """Write ``pt`` rewritten in its export form (:func:`yolo_ldac.nn.deploy.deploy_form`) to ``out``, in the
    checkpoint's own dtype; return what was rewritten. ``pt`` itself is not changed (the export's checks compare
    against it).

    Example:
        >>> write_deploy_checkpoint(Path("best.pt"), Path("deploy/best.pt"))  # doctest: +SKIP
        {'split_blocks': 0, 'dfl': 1}
    """
    from yolo_ldac.nn.deploy import deploy_form
    from yolo_ldac.safe_load import load_checkpoint

    ckpt = load_checkpoint(pt)
    key = "ema" if ckpt.get("ema") is not None else "model"
    model = ckpt[key]
    dtype = next(model.parameters()).dtype
    deployed, counts = deploy_form(model.float(), fuse_splits=fuse_splits, fast_dfl=fast_dfl)
    ckpt[key] = deployed.to(dtype)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, out)
    return counts


def _precision_from_quantize(quantize: Any, precision: str) -> str:
    """An explicit Ultralytics ``quantize`` (8, 16, 32) as a precision; other schemes are not checked here."""
    q = str(quantize).strip().lower()
    mapped = {"8": "int8", "int8": "int8", "16": "fp16", "fp16": "fp16", "32": "fp32", "fp32": "fp32", "none": "fp32"}
    if q not in mapped:
        raise LDACError(f"quantize={quantize!r} is not supported here: use half=True (fp16) or int8=True")
    if precision != "fp32" and mapped[q] != precision:
        raise LDACError(f"quantize={quantize!r} contradicts the requested {precision}")
    return mapped[q]


def _precision_args(precision: str, fmt: str) -> dict:
    """The precision as Ultralytics 8.4's ``quantize``."""
    if precision == "int8":
        return {"quantize": 8}
    if precision == "fp16" and fmt != "litert":  # LiteRT fp16 is made from the fp32 file (module docstring)
        return {"quantize": 16}
    return {}


def litert_fp16(src: Path, dst: Path) -> Path:
    """Write ``src`` (an fp32 ``.tflite``) to ``dst`` with its weights stored as float16 (float casting), keeping
    the metadata Ultralytics appends to the file."""
    from ai_edge_quantizer import qtyping, quantizer, recipe_manager
    from ai_edge_quantizer.recipe import AlgorithmName, TFLOperationName

    manager = recipe_manager.RecipeManager()
    manager.add_quantization_config(
        regex=".*",
        operation_name=TFLOperationName.ALL_SUPPORTED,
        op_config=qtyping.OpQuantizationConfig(
            weight_tensor_config=qtyping.TensorQuantizationConfig(num_bits=16, dtype=qtyping.TensorDataType.FLOAT),
            compute_precision=qtyping.ComputePrecision.FLOAT,
            explicit_dequantize=True,
        ),
        algorithm_key=AlgorithmName.FLOAT_CASTING,
    )
    q = quantizer.Quantizer(str(src))
    q.load_quantization_recipe(manager.get_quantization_recipe())
    q.quantize().export_model(str(dst), overwrite=True)
    copy_metadata(src, dst)
    return dst


def _size_mb(path: Path) -> float:
    files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
    return sum(f.stat().st_size for f in files) / 1e6


def _model_files_mb(path: Path) -> float:
    """Size of what a device loads: the file, or an OpenVINO folder's .xml + .bin."""
    if path.is_dir():
        return sum(f.stat().st_size for f in path.iterdir() if f.suffix in {".xml", ".bin"}) / 1e6
    return _size_mb(path)


def _replace(src: Path, dst: Path) -> Path:
    """Move ``src`` to ``dst``, replacing what is there."""
    if src.resolve() == dst.resolve():
        return dst
    if dst.is_dir():
        shutil.rmtree(dst)
    elif dst.exists():
        dst.unlink()
    return Path(shutil.move(str(src), str(dst)))


def export_checked(
    model_path: str | Path,
    format: str = "onnx",
    imgsz: int | tuple[int, int] = 640,
    half: bool = False,
    int8: bool = False,
    data: str | Path | None = None,
    parity: bool = True,
    rtol: float | None = None,
    image: str | Path | None = None,
    map_check: bool = True,
    calib_images: int = INT8_CALIB_IMAGES,
    reference_map: dict | None = None,
    max_map_drop: float | None = None,
    strict: bool = True,
    deploy_graph: bool = True,
    fuse_splits: bool = False,
    int8_float: str = "auto",
    **kwargs: Any,
) -> ExportResult:
    """Export ``model_path`` and check it (module docstring); return the file and the checks' figures.

    Args:
        model_path: an Ultralytics ``.pt`` checkpoint or a portable checkpoint (``.safetensors``/``.json``); the
            export is written next to it.
        format: ``onnx``, ``litert`` (or ``tflite``), ``openvino``, or any other Ultralytics format (unchecked).
        imgsz: input size of the exported model (an int, or ``(h, w)``).
        half, int8: precision (``fp16`` / ``int8``; default ``fp32``). ``int8`` needs ``data``.
        data: dataset yaml: int8 calibration images (train split) and the mAP check (val split).
        parity: run the checks (raw outputs always, mAP when ``data`` is given and ``map_check``).
        rtol: overrides the raw ``max_rel_diff`` tolerance of the precision.
        image: one parity image instead of Ultralytics' bus.jpg and zidane.jpg.
        map_check: with ``data``, also compare mAP50-95 against PyTorch on the val split.
        calib_images: int8 calibration images taken from the train split (a fraction of it when it is larger).
        reference_map: PyTorch's mAP on ``data`` at ``imgsz`` (batch 1, rect off) when already known.
        max_map_drop: overrides the precision's allowed mAP50-95 loss (a fraction: 0.005 = 0.5 points).
        strict: raise on a failed check and discard the export (default); False keeps the file and records the
            failure in ``ExportResult.failure`` (the benchmark times failed exports too, marked as such).
        deploy_graph: export the graph the runtimes are fast on (:mod:`yolo_ldac.nn.deploy`: the DFL without a
            Softmax), checked against the checkpoint as it is; only for the checked formats.
        fuse_splits: with ``deploy_graph``, also fuse each split block's two first convolutions back into one and
            a split (the dense graph's shape; measured slower for pruned models, so off by default).
        int8_float: LiteRT int8 only: ``auto`` keeps in float the operators that XNNPACK runs slower in int8 (the
            attention's matmuls and softmax, the first convolution; :mod:`yolo_ldac.deploy.litert_int8`),
            ``none`` quantises everything as Ultralytics does (for int8-only accelerators).
        **kwargs: passed to ``YOLO.export`` (``opset``, ``dynamic``, ``batch``, ``simplify``, ``quantize``, ...).

    Raises:
        LDACError: bad input, a missing optional runtime (with its pip command), an export failure, or a failed
            check (the export is then discarded; ``parity=False`` keeps it).
    """
    from yolo_ldac.safe_load import check_checkpoint, is_trusted, policy

    src = Path(model_path)
    if not src.is_file():
        raise LDACError(f"model file '{src}' not found")
    if src.suffix == ".pt":
        check_checkpoint(src)  # refuse an unsafe file with one line before anything unpickles it
    fmt = normalise_format(format)
    precision = precision_of(half, int8)
    if "quantize" in kwargs:
        precision = _precision_from_quantize(kwargs.pop("quantize"), precision)
    if fmt == "ncnn" and precision == "int8":
        raise LDACError("ncnn int8 is not available: Ultralytics' NCNN exporter (pnnx) writes fp32 or fp16 (half=True)")
    if precision == "int8" and not data:
        raise LDACError("int8 export needs data=... (its train images calibrate the quantization)")
    if precision != "fp32" and fmt not in CHECKED_FORMATS:
        LOGGER.warning(f"{fmt}: {precision} is passed to Ultralytics as is and not checked against PyTorch")
    check_export_requirements(fmt, precision)
    if parity and fmt in CHECKED_FORMATS:
        from yolo_ldac.deploy.runtimes import check_runtime

        check_runtime(fmt)

    float_rules(int8_float)  # a bad value is refused before anything is exported
    own_int8 = fmt == "litert" and precision == "int8" and int8_float != "none"  # quantised here, not by Ultralytics
    args: dict[str, Any] = {"format": fmt, "imgsz": imgsz, **({} if own_int8 else _precision_args(precision, fmt)),
                            **kwargs}
    if fmt in CHECKED_FORMATS:
        args.setdefault("device", "cpu")  # these runtimes are checked and timed on the CPU
    if data is not None and precision == "int8":
        n_train = len(split_images(data, "train"))
        if n_train == 0:
            raise LDACError(f"int8 calibration found no training images in '{data}'")
        if not own_int8:
            args.update(data=str(data), split="train")
            args.setdefault("fraction", min(1.0, calib_images / n_train))
    if fmt == "onnx":
        args.setdefault("simplify", True)
        if args["simplify"] and not _onnxslim_available():
            LOGGER.warning("onnxslim is not installed: exporting ONNX without simplification")
            args["simplify"] = False

    t0 = time.perf_counter()
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="yolo-ldac-export-") as tmp, policy(is_trusted()), \
            _temp_paths_hidden(Path(tmp), src.parent):
        pt_path = _to_pt(src, Path(tmp))
        export_pt = pt_path
        if deploy_graph and fmt in CHECKED_FORMATS:
            export_pt = Path(tmp) / "deploy" / pt_path.name
            rewritten = write_deploy_checkpoint(pt_path, export_pt, fuse_splits=fuse_splits)
            if any(rewritten.values()):
                notes.append("export graph: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in rewritten.items() if v)
                             + " rewritten")
        out = _export_in(export_pt, fmt, args)
        if own_int8:
            out = quantize_litert_int8(out, out.with_name(export_name(pt_path.stem, fmt, "int8")),
                                       calibration_images(data, imgsz, calib_images), int8_float)
            notes.append("int8, with the attention's matmuls and softmax and the first convolution in float "
                         "(int8_float=auto; int8_float=none quantises them too)")
        if fmt == "litert" and precision == "fp16":
            out = litert_fp16(out, out.with_name(export_name(pt_path.stem, fmt, "fp16")))
            notes.append("fp16 weights, fp32 compute on CPU (float16 on GPU delegates)")
        named = out
        if fmt in CHECKED_FORMATS:
            named = out.with_name(export_name(pt_path.stem, fmt, precision))
            if named != out:
                named = _replace(out, named)
        raw = acc = failure = None
        if parity and fmt in CHECKED_FORMATS:
            images = [Path(image)] if image is not None else None
            if images is None:
                from yolo_ldac.deploy.parity import default_images

                images = default_images() + val_images(data, 2)
            from yolo_ldac.deploy.runtimes import load_runtime

            reference = load_runtime(pt_path)  # loaded once for both checks
            raw = check_raw_parity(reference, named, images=images, imgsz=imgsz, precision=precision, rtol=rtol,
                                   raise_on_fail=False)
            if data is not None and map_check:
                acc = check_map_parity(reference, named, data, max(shape2(imgsz)), precision=precision,
                                       reference_map=reference_map, max_drop=max_map_drop, raise_on_fail=False)
            errors = [r["error"] for r in (raw, acc) if r is not None and not r["ok"]]
            if errors:
                failure = "; ".join(errors)
                if strict:
                    raise LDACError(f"{failure}; export discarded (parity=False keeps it)")
                LOGGER.warning(f"{failure}; export kept (strict=False)")
        elif parity and fmt not in CHECKED_FORMATS:
            notes.append(f"no runtime check for {fmt}")
        final = _replace(named, src.parent / named.name)
    return ExportResult(path=final, format=fmt, precision=precision, imgsz=imgsz, size_mb=_model_files_mb(final),
                        seconds=time.perf_counter() - t0, parity=raw, accuracy=acc, notes=notes, failure=failure)


def _export_in(pt_path: Path, fmt: str, args: dict) -> Path:
    """Run Ultralytics' exporter on ``pt_path`` (in the temporary folder); ONNX retries without onnxslim."""
    try:
        try:
            return _ultralytics_export(pt_path, **args)
        except LDACError:
            raise
        except Exception as e:
            if fmt != "onnx" or not args.get("simplify"):
                raise
            LOGGER.warning(f"ONNX export with simplify=True failed ({first_line(e)}); retrying without onnxslim")
            return _ultralytics_export(pt_path, **{**args, "simplify": False})
    except LDACError:
        raise
    except Exception as e:
        raise LDACError(f"export of '{pt_path.name}' to {fmt} failed ({first_line(e)})") from e


def export_model(model_path: str | Path, **kwargs: Any) -> Path:
    """Export and check a detector; return the exported file or folder. Takes the arguments of
    :func:`export_checked` (``format``, ``imgsz``, ``half``, ``int8``, ``data``, ``parity``, ...).

    Example:
        >>> export_model("best.pt", format="onnx", imgsz=640)
        PosixPath('best.onnx')
    """
    return export_checked(model_path, **kwargs).path
