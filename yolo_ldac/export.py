"""Export pruned detectors through Ultralytics' exporter, with an ONNX-vs-PyTorch parity check on a real image.

A pruned model is an ordinary Ultralytics ``DetectionModel`` with narrower convolutions, so Ultralytics' own
exporter handles it (ONNX, OpenVINO, TensorRT, ...). For ONNX the exported graph is then run with onnxruntime on a
real, letterboxed image and compared with the PyTorch model, so a broken export fails loudly instead of shipping.

Parity metrics (see :func:`check_onnx_parity`), with ``a`` the PyTorch output and ``b`` the ONNX output:

- ``max_abs_diff``: ``max |a - b|``.
- ``max_rel_diff``: ``max |a - b| / max |a|``, i.e. relative to the output's largest magnitude. This is robust to
  near-zero entries (an elementwise ratio explodes on them). A detector's output concatenates box coordinates (in
  pixels, up to ``imgsz``) and class scores (0..1): each part is measured against its own largest magnitude and the
  worse of the two is reported, so a score error cannot hide behind the scale of the boxes. The check passes when
  ``max_rel_diff <= rtol``.
- ``max_elem_rel_diff``: the elementwise ``max |a - b| / (|a| + 1e-3 * max |a|)`` (per part likewise); reported for
  diagnosis, not used for pass/fail.

Example:
    >>> from yolo_ldac.export import export_model
    >>> onnx_path = export_model("runs/prune/best.pt", format="onnx", imgsz=640)  # raises LDACError on mismatch
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from yolo_ldac.errors import LDACError

LOGGER = logging.getLogger(__name__)

ELEM_FLOOR = 1e-3  # floor of the elementwise relative difference's denominator, as a fraction of max |a|
_EPS = 1e-12


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def _default_image() -> Path:
    from ultralytics.utils import ASSETS

    return Path(ASSETS) / "bus.jpg"


def _shape2(imgsz: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(imgsz, (list, tuple)):
        if len(imgsz) == 1:
            return int(imgsz[0]), int(imgsz[0])
        return int(imgsz[0]), int(imgsz[1])
    return int(imgsz), int(imgsz)


def preprocess_image(image: str | Path | None, imgsz: int | tuple[int, int] = 640) -> np.ndarray:
    """Read ``image`` (default: Ultralytics' ``bus.jpg``) and return it letterboxed to ``imgsz`` as a
    ``(1, 3, H, W)`` float32 RGB array in ``[0, 1]``, exactly as Ultralytics' predictor prepares it."""
    import cv2
    from ultralytics.data.augment import LetterBox

    path = Path(image) if image is not None else _default_image()
    if not path.is_file():
        raise LDACError(f"parity image '{path}' not found")
    img = cv2.imread(str(path))
    if img is None:
        raise LDACError(f"parity image '{path}' could not be read as an image")
    img = LetterBox(new_shape=_shape2(imgsz), auto=False, stride=32)(image=img)
    x = img[..., ::-1].transpose(2, 0, 1)[None]  # BGR HWC -> RGB CHW, add batch
    return np.ascontiguousarray(x, dtype=np.float32) / 255.0


def _first_tensor(out: Any) -> torch.Tensor:
    """The prediction tensor of a model output: Detect in eval mode returns ``(y, preds)``."""
    while isinstance(out, (tuple, list)):
        out = out[0]
    if isinstance(out, dict):  # training-style outputs; not expected in eval mode
        raise LDACError("the PyTorch model returned raw head outputs; it must be in eval mode with a Detect head")
    if not isinstance(out, torch.Tensor):
        raise LDACError(f"the PyTorch model returned {type(out).__name__}, not a tensor")
    return out


def _parts(a: np.ndarray, model: nn.Module) -> list[slice]:
    """Channel slices measured separately: boxes and class scores of a Detect output, else the whole tensor."""
    head = model.model[-1] if isinstance(getattr(model, "model", None), nn.Sequential) else None
    nc = getattr(head, "nc", None)
    if a.ndim == 3 and nc is not None and a.shape[1] == 4 + int(nc) and not getattr(head, "end2end", False):
        return [slice(0, 4), slice(4, None)]
    return [slice(None)]


def parity_metrics(a: np.ndarray, b: np.ndarray, parts: list[slice] | None = None) -> dict[str, float]:
    """``max_abs_diff``, ``max_rel_diff`` and ``max_elem_rel_diff`` of ``b`` against the reference ``a`` (module
    docstring); ``parts`` are channel slices (axis 1) measured against their own largest magnitude."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    max_abs = float(np.abs(a - b).max()) if a.size else 0.0
    rel = elem = 0.0
    for sl in parts or [slice(None)]:
        pa, pb = (a[:, sl], b[:, sl]) if a.ndim > 1 else (a, b)
        if not pa.size:
            continue
        d, scale = np.abs(pa - pb), float(np.abs(pa).max())
        rel = max(rel, float(d.max()) / max(scale, _EPS))
        elem = max(elem, float((d / (np.abs(pa) + max(ELEM_FLOOR * scale, _EPS))).max()))
    return {"max_abs_diff": max_abs, "max_rel_diff": rel, "max_elem_rel_diff": elem}


def check_onnx_parity(
    pt_model: nn.Module,
    onnx_path: str | Path,
    image: str | Path | None = None,
    imgsz: int | tuple[int, int] = 640,
    rtol: float = 1e-3,
) -> dict[str, Any]:
    """Compare ``pt_model`` (eval mode) with the ONNX file on one real image; raise :class:`LDACError` on mismatch.

    Args:
        pt_model: the PyTorch reference, e.g. ``YOLO(path).model`` (fused or not: folding BN changes outputs
            by float rounding only).
        onnx_path: the exported ``.onnx`` file (run with onnxruntime's CPUExecutionProvider).
        image: a real image (default Ultralytics' ``bus.jpg``), letterboxed to ``imgsz``.
        imgsz: input size, an int (square) or ``(h, w)``; must match a static ONNX input shape.
        rtol: the largest accepted ``max_rel_diff`` (see the module docstring).

    Returns:
        ``{"max_abs_diff", "max_rel_diff", "max_elem_rel_diff", "rtol", "ok", "shape", "image"}``.
    """
    import onnxruntime as ort

    if not isinstance(getattr(pt_model, "model", None), nn.Sequential) and isinstance(
        getattr(pt_model, "model", None), nn.Module
    ):  # an Ultralytics YOLO wrapper: calling it would run predict(), compare its DetectionModel instead
        pt_model = pt_model.model
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise LDACError(f"ONNX file '{onnx_path}' not found")
    try:
        sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    except Exception as e:
        raise LDACError(f"onnxruntime cannot load '{onnx_path}' ({_first_line(e)})") from e
    inp = sess.get_inputs()[0]
    h, w = _shape2(imgsz)
    static = [d for d in inp.shape[2:4]]
    if len(static) == 2 and all(isinstance(d, int) for d in static) and tuple(static) != (h, w):
        raise LDACError(f"'{onnx_path.name}' takes {static[0]}x{static[1]} images, not imgsz {h}x{w}")
    x = preprocess_image(image, (h, w))
    if isinstance(inp.shape[0], int) and inp.shape[0] > 1:  # static batch: the same image in every slot
        x = np.repeat(x, inp.shape[0], axis=0)

    param = next(pt_model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    was_training = pt_model.training
    pt_model.eval()
    try:
        with torch.no_grad():
            a = _first_tensor(pt_model(torch.from_numpy(x).to(device=device, dtype=dtype))).float().cpu().numpy()
    except LDACError:
        raise
    except Exception as e:
        raise LDACError(f"the PyTorch model failed on the parity image ({_first_line(e)})") from e
    finally:
        pt_model.train(was_training)
    try:
        b = sess.run(None, {inp.name: x.astype(np.float16) if "float16" in inp.type else x})[0]
    except Exception as e:
        raise LDACError(f"onnxruntime failed to run '{onnx_path.name}' ({_first_line(e)})") from e
    b = np.asarray(b, dtype=np.float32)
    if a.shape != b.shape:
        raise LDACError(f"ONNX output shape {tuple(b.shape)} differs from PyTorch output shape {tuple(a.shape)}")
    if not np.isfinite(b).all():
        raise LDACError(f"ONNX output of '{onnx_path.name}' contains NaN or Inf")

    result = {**parity_metrics(a, b, _parts(a, pt_model)), "rtol": float(rtol), "shape": list(a.shape)}
    result["ok"] = bool(result["max_rel_diff"] <= rtol)
    result["image"] = str(Path(image) if image is not None else _default_image())
    if not result["ok"]:
        raise LDACError(
            f"ONNX parity check failed for '{onnx_path.name}': max relative difference "
            f"{result['max_rel_diff']:.3g} > rtol {rtol:g} (max abs diff {result['max_abs_diff']:.3g})"
        )
    return result


def _onnxslim_available() -> bool:
    return importlib.util.find_spec("onnxslim") is not None


def _ultralytics_export(pt_path: Path, **args: Any) -> Path:
    from ultralytics import YOLO

    out = YOLO(str(pt_path)).export(**args)
    if not out or not Path(out).exists():
        raise LDACError(f"Ultralytics exported nothing for format '{args.get('format')}'")
    return Path(out)


def _portable_to_pt(path: Path, tmp: Path) -> Path:
    """Write a portable checkpoint (``.json``/``.safetensors``) as an Ultralytics ``.pt`` in ``tmp``."""
    import ultralytics

    from yolo_ldac.checkpoint import load_portable, portable_paths

    model = load_portable(path)
    model.args = dict(getattr(model, "args", None) or {})
    pt = tmp / (portable_paths(path)[0].stem + ".pt")
    torch.save({"model": model, "train_args": model.args, "date": None, "version": ultralytics.__version__}, pt)
    return pt


def _precision_args(half: bool, int8: bool, kwargs: dict) -> dict:
    """``half``/``int8`` as this Ultralytics wants them: its unified ``quantize`` (8, 16 or None) when it has one
    (passing the legacy flags, even False, prints a deprecation warning), else the legacy flags themselves.
    An explicit ``quantize`` in ``kwargs`` wins."""
    from ultralytics.cfg import DEFAULT_CFG_DICT

    if "quantize" in kwargs:
        return {}
    if "quantize" in DEFAULT_CFG_DICT:
        return {"quantize": 8 if int8 else 16} if (int8 or half) else {}
    return {"half": bool(half), "int8": bool(int8)}


def _reduced_precision(args: dict) -> bool:
    q = args.get("quantize")
    legacy = bool(args.get("half")) or bool(args.get("int8"))
    return legacy or (q is not None and str(q).strip().lower() not in {"32", "fp32", "none", "false", "0"})


def export_model(
    model_path: str | Path,
    format: str = "onnx",
    imgsz: int | tuple[int, int] = 640,
    half: bool = False,
    int8: bool = False,
    data: str | None = None,
    parity: bool = True,
    rtol: float = 1e-3,
    image: str | Path | None = None,
    **kwargs: Any,
) -> Path:
    """Export a (pruned) detector with Ultralytics' exporter and return the exported file or directory.

    Args:
        model_path: an Ultralytics ``.pt`` checkpoint, or a portable checkpoint (``.safetensors``/``.json``, see
            :mod:`yolo_ldac.checkpoint`; converted to a temporary ``.pt`` first, output written next to it).
        format: any Ultralytics export format (``onnx``, ``openvino``, ``engine``, ``torchscript``, ...).
        imgsz, half, int8, data: as in ``YOLO.export`` (``data`` is the calibration dataset for int8). Ultralytics
            8.4 replaced ``half``/``int8`` by ``quantize=16/8``; they are translated (an explicit ``quantize``
            keyword wins).
        parity: for ONNX, compare the exported file with the PyTorch model on ``image`` and raise on mismatch.
            Skipped (with a warning) for ``half``/``int8`` exports, whose numerics differ by design.
        rtol: tolerance of the parity check (max relative difference, see :func:`check_onnx_parity`).
        image: the parity image (default Ultralytics' ``bus.jpg``).
        **kwargs: passed to ``YOLO.export`` (e.g. ``opset``, ``dynamic``, ``batch``, ``device``). For ONNX,
            ``simplify`` defaults to True; if onnxslim is missing or fails, the export is redone without it.

    Raises:
        LDACError: missing model file, export failure, or an ONNX parity mismatch.
    """
    from ultralytics import YOLO

    src = Path(model_path)
    if not src.is_file():
        raise LDACError(f"model file '{src}' not found")
    fmt = str(format).lower()
    args = {"format": fmt, "imgsz": imgsz, **_precision_args(half, int8, kwargs), **kwargs}
    if data is not None:
        args["data"] = data
    reduced = _reduced_precision(args)
    if fmt == "onnx":
        args.setdefault("simplify", True)
        if args["simplify"] and not _onnxslim_available():
            LOGGER.warning("onnxslim is not installed: exporting ONNX without simplification")
            args["simplify"] = False

    with tempfile.TemporaryDirectory(prefix="yolo-ldac-export-") as tmp:
        portable = src.suffix in {".json", ".safetensors"}
        pt_path = _portable_to_pt(src, Path(tmp)) if portable else src
        try:
            try:
                out = _ultralytics_export(pt_path, **args)
            except LDACError:
                raise
            except Exception as e:
                if fmt != "onnx" or not args.get("simplify"):
                    raise
                LOGGER.warning(f"ONNX export with simplify=True failed ({_first_line(e)}); retrying without onnxslim")
                out = _ultralytics_export(pt_path, **{**args, "simplify": False})
        except LDACError:
            raise
        except Exception as e:
            raise LDACError(f"export of '{src}' to {fmt} failed ({_first_line(e)})") from e

        if fmt == "onnx" and parity:
            if reduced:
                LOGGER.warning("ONNX parity check skipped: half/int8 exports differ from the float32 model by design")
            else:
                reference = YOLO(str(pt_path)).model
                result = check_onnx_parity(reference, out, image=image, imgsz=imgsz, rtol=rtol)
                LOGGER.info(
                    f"ONNX parity ok: max rel diff {result['max_rel_diff']:.2e} <= {rtol:g} "
                    f"(max abs diff {result['max_abs_diff']:.2e})"
                )
        if portable:  # move the export out of the temporary directory, next to the portable checkpoint
            dst = src.parent / out.name
            if dst.is_dir():
                shutil.rmtree(dst)
            elif dst.exists():
                dst.unlink()
            out = Path(shutil.move(str(out), str(dst)))
    return out
