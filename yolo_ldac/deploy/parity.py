"""Check an exported detector against its PyTorch model: raw outputs on real images, and mAP after NMS.

Two checks, each raising :class:`~yolo_ldac.errors.LDACError` on a mismatch:

1. **Raw outputs** (:func:`check_raw_parity`): the exported file runs in its own runtime
   (:mod:`yolo_ldac.deploy.runtimes`) on real, letterboxed images; every output is compared with PyTorch's: the
   ``(B, 4 + nc [+ k], anchors)`` prediction and, for a segmentation model, the mask prototypes. Boxes, class
   scores and the task's own channels (mask coefficients, keypoints, angles) are each measured against their own
   largest magnitude (``max |a - b| / max |a|``, see :func:`parity_metrics`), the worst part is reported.
2. **Detections** (:func:`check_map_parity`): the task's mAP50-95 (box, mask, keypoint or oriented-box mAP) of the
   exported file on the val set, through Ultralytics' validator of the task and its NMS, against the PyTorch
   model's under the same settings.

Tolerances per precision (:data:`TOLERANCES`): raw ``1e-3`` for fp32 (float reordering only); fp16 and int8 change
the numbers by design, so their raw tolerance only catches a broken file (wrong layout, swapped channels, NaN),
and the mAP check is the one that decides: at most 0.5 mAP50-95 points lost for fp32 and fp16, 2 points for int8.

Example:
    >>> from yolo_ldac.deploy.parity import check_raw_parity
    >>> check_raw_parity("best.pt", "best_int8.tflite", precision="int8", imgsz=640)["max_rel_diff"]
    0.041
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from yolo_ldac.errors import LDACError

ELEM_FLOOR = 1e-3  # floor of the elementwise relative difference's denominator, as a fraction of max |a|
_EPS = 1e-12


@dataclass(frozen=True)
class Tolerance:
    """How far an export of one precision may be from PyTorch."""

    max_rel: float | None  # largest max_rel_diff of raw outputs (per part: boxes, scores); None: not checked
    mean_rel: float | None  # largest mean_rel_diff of raw outputs; None: not checked
    map_drop: float  # largest mAP50-95 loss against PyTorch, as a fraction (0.005 = 0.5 points)


# Measured with the COCO YOLO11n (docs/deployment.md): max_rel_diff of fp32 <= 1e-5 in every runtime; fp16 0.006
# (ONNX), 0.008 (LiteRT), 0.007 (OpenVINO) at 640 px on bus.jpg and zidane.jpg, up to 0.027 at 160 px; int8 0.45-0.90
# on some low-score anchor in every runtime, so int8 is held to the mean (0.005-0.014) and to the mAP check instead.
TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(max_rel=1e-3, mean_rel=None, map_drop=0.005),
    "fp16": Tolerance(max_rel=0.05, mean_rel=5e-3, map_drop=0.005),
    "int8": Tolerance(max_rel=None, mean_rel=0.05, map_drop=0.02),
}


def parity_metrics(a: np.ndarray, b: np.ndarray, parts: list[slice] | None = None) -> dict[str, float]:
    """``max_abs_diff``, ``max_rel_diff``, ``mean_rel_diff`` and ``max_elem_rel_diff`` of ``b`` against ``a``.

    ``parts`` are channel slices (axis 1) each measured against its own largest magnitude; ``max_rel_diff`` is the
    worst part's ``max |a - b| / max |a|``, ``mean_rel_diff`` its ``mean |a - b| / max |a|``; ``max_elem_rel_diff``
    the elementwise ``|a - b| / (|a| + 1e-3 max |a|)`` (diagnosis only).

    Example:
        >>> parity_metrics(np.array([[1.0, 2.0]]), np.array([[1.0, 2.2]]))["max_rel_diff"]
        0.1
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    max_abs = float(np.abs(a - b).max()) if a.size else 0.0
    rel = mean = elem = 0.0
    for sl in parts or [slice(None)]:
        pa, pb = (a[:, sl], b[:, sl]) if a.ndim > 1 else (a, b)
        if not pa.size:
            continue
        d, scale = np.abs(pa - pb), float(np.abs(pa).max())
        rel = max(rel, float(d.max()) / max(scale, _EPS))
        mean = max(mean, float(d.mean()) / max(scale, _EPS))
        elem = max(elem, float((d / (np.abs(pa) + max(ELEM_FLOOR * scale, _EPS))).max()))
    return {"max_abs_diff": max_abs, "max_rel_diff": rel, "mean_rel_diff": mean, "max_elem_rel_diff": elem}


def detect_parts(shape: tuple[int, ...], nc: int | None, extra: int | None = 0) -> list[slice]:
    """Boxes, class scores and the task's ``extra`` channels after them (mask coefficients, keypoints, angles) of a
    ``(B, 4 + nc + extra, anchors)`` prediction, else the whole tensor (prototypes, an end-to-end ``(B, 300, 6)``).

    Example:
        >>> detect_parts((1, 4 + 3 + 32, 100), 3, extra=32)
        [slice(0, 4, None), slice(4, 7, None), slice(7, None, None)]
        >>> detect_parts((1, 300, 6), 80)
        [slice(None, None, None)]
    """
    extra = int(extra or 0)
    if nc is not None and len(shape) == 3 and shape[1] == 4 + int(nc) + extra:
        parts = [slice(0, 4), slice(4, 4 + int(nc))]
        return parts + ([slice(4 + int(nc), None)] if extra else [])
    return [slice(None)]


def default_images() -> list[Path]:
    """Ultralytics' bundled real photos (bus.jpg, zidane.jpg)."""
    from ultralytics.utils import ASSETS

    return [p for p in (Path(ASSETS) / "bus.jpg", Path(ASSETS) / "zidane.jpg") if p.is_file()]


def split_images(data: str | Path | None, split: str = "val") -> list[Path]:
    """The image files of ``data``'s ``split`` (a folder, a list of folders, or a .txt list of paths), sorted."""
    if not data:
        return []
    from ultralytics.data.utils import check_det_dataset

    from yolo_ldac.data._common import split_image_files

    try:
        folders = check_det_dataset(str(data)).get(split)
    except Exception as e:
        raise LDACError(f"cannot read dataset '{data}' ({type(e).__name__}: {e})") from e
    return split_image_files(folders)


def val_images(data: str | Path | None, n: int = 2) -> list[Path]:
    """The first ``n`` images of ``data``'s val split (none when ``data`` is None)."""
    return split_images(data, "val")[:n] if n > 0 else []


def preprocess_image(image: str | Path, imgsz: tuple[int, int]) -> np.ndarray:
    """``image`` letterboxed to ``imgsz`` as a ``(1, 3, H, W)`` float32 RGB array in ``[0, 1]``, exactly as
    Ultralytics' predictor prepares it."""
    import cv2
    from ultralytics.data.augment import LetterBox

    path = Path(image)
    if not path.is_file():
        raise LDACError(f"parity image '{path}' not found")
    img = cv2.imread(str(path))
    if img is None:
        raise LDACError(f"parity image '{path}' could not be read as an image")
    img = LetterBox(new_shape=imgsz, auto=False, stride=32)(image=img)
    x = img[..., ::-1].transpose(2, 0, 1)[None]  # BGR HWC -> RGB CHW, add batch
    return np.ascontiguousarray(x, dtype=np.float32) / 255.0


def shape2(imgsz: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """``imgsz`` as ``(h, w)``."""
    if isinstance(imgsz, (list, tuple)):
        return (int(imgsz[0]), int(imgsz[0])) if len(imgsz) == 1 else (int(imgsz[0]), int(imgsz[1]))
    return int(imgsz), int(imgsz)


def _tolerance(precision: str) -> Tolerance:
    if precision not in TOLERANCES:
        raise LDACError(f"unknown precision '{precision}' (one of {', '.join(TOLERANCES)})")
    return TOLERANCES[precision]


def check_raw_parity(
    reference: Any,
    exported: str | Path,
    images: list[str | Path] | None = None,
    imgsz: int | tuple[int, int] = 640,
    precision: str = "fp32",
    rtol: float | None = None,
    nc: int | None = None,
    raise_on_fail: bool = True,
) -> dict[str, Any]:
    """Run ``exported`` in its runtime and ``reference`` in PyTorch on ``images``; raise on a mismatch.

    Args:
        reference: a ``.pt`` path, or a loaded runtime (:class:`~yolo_ldac.deploy.runtimes.Runtime`).
        exported: the exported file or OpenVINO folder.
        images: real images (default: Ultralytics' bus.jpg and zidane.jpg), letterboxed to ``imgsz``.
        precision: ``fp32``, ``fp16`` or ``int8``: picks the tolerance (:data:`TOLERANCES`).
        rtol: overrides the precision's ``max_rel_diff`` tolerance (and switches that check on for int8).
        nc: number of classes (boxes and scores are measured apart); read from the ``.pt`` when None.
        raise_on_fail: False returns a failed result (``ok`` False, ``error`` the message) instead of raising.

    Returns:
        the :func:`parity_metrics` keys (worst over the images and outputs) and ``"max_rel_tol", "mean_rel_tol",
        "ok", "shape"`` (the prediction's), ``"shapes"`` (every output's), ``"images", "precision"``.
    """
    from yolo_ldac.deploy.runtimes import Runtime, load_runtime

    tolerance = _tolerance(precision)
    max_tol = tolerance.max_rel if rtol is None else float(rtol)
    mean_tol = tolerance.mean_rel
    runtime = load_runtime(exported, threads=None)
    ref = reference if isinstance(reference, Runtime) else load_runtime(reference, threads=None)
    if nc is None:
        nc = len(getattr(getattr(ref, "model", None), "names", {}) or {}) or None
    from yolo_ldac.tasks import extra_channels

    net = getattr(ref, "model", None)
    extra = extra_channels(net) if net is not None else 0
    h, w = shape2(imgsz)
    static = runtime.input_shape[2:4]
    if len(static) == 2 and all(d > 0 for d in static) and tuple(static) != (h, w):
        raise LDACError(f"'{Path(exported).name}' takes {static[0]}x{static[1]} images, not imgsz {h}x{w}")
    images = [Path(p) for p in (images or default_images())]
    if not images:
        raise LDACError("no parity images: pass image=PATH")
    worst: dict[str, float] = {"max_abs_diff": 0.0, "max_rel_diff": 0.0, "mean_rel_diff": 0.0, "max_elem_rel_diff": 0.0}
    shape: list[int] = []
    shapes: list[list[int]] = []
    for image in images:
        x = preprocess_image(image, (h, w))
        if runtime.input_shape[0] > 1:  # static batch: the same image in every slot
            x = np.repeat(x, runtime.input_shape[0], axis=0)
        refs, gots = ref.outputs(x), runtime.outputs(x)
        if len(refs) != len(gots):
            raise LDACError(f"{runtime.format} file '{Path(exported).name}' has {len(gots)} outputs, PyTorch's model "
                            f"{len(refs)}")
        for a, b in zip(refs, gots):
            if a.shape != b.shape:
                raise LDACError(
                    f"{runtime.format} output shape {tuple(b.shape)} of '{Path(exported).name}' differs from "
                    f"PyTorch's {tuple(a.shape)}"
                )
            if not np.isfinite(b).all():
                raise LDACError(f"{runtime.format} output of '{Path(exported).name}' contains NaN or Inf")
            for k, v in parity_metrics(a, b, detect_parts(a.shape, nc, extra)).items():
                worst[k] = max(worst[k], v)
        shape = list(refs[0].shape)
        shapes = [list(a.shape) for a in refs]
    result = {**worst, "max_rel_tol": max_tol, "mean_rel_tol": mean_tol, "shape": shape, "shapes": shapes,
              "images": [str(p) for p in images], "precision": precision}
    failed = []
    if max_tol is not None and worst["max_rel_diff"] > max_tol:
        failed.append(f"max relative difference {worst['max_rel_diff']:.3g} > {max_tol:g}")
    if mean_tol is not None and worst["mean_rel_diff"] > mean_tol:
        failed.append(f"mean relative difference {worst['mean_rel_diff']:.3g} > {mean_tol:g}")
    result["ok"] = not failed
    if failed:
        result["error"] = (f"{runtime.format} {precision} parity check failed for '{Path(exported).name}': "
                           f"{'; '.join(failed)} (max abs diff {worst['max_abs_diff']:.3g})")
        if raise_on_fail:
            raise LDACError(result["error"])
    return result


class RuntimeModule(torch.nn.Module):
    """A runtime (:mod:`yolo_ldac.deploy.runtimes`) as the ``nn.Module`` Ultralytics' validator expects, so exported
    files are validated through exactly the runtime (threads, precision hint, box scaling) that is checked and timed."""

    def __init__(self, runtime: Any, names: dict, stride: int = 32, task: str = "detect") -> None:
        super().__init__()
        self.runtime, self.names, self.task = runtime, dict(names), task
        self.register_buffer("stride", torch.tensor([float(stride)]))
        self.anchor = torch.nn.Parameter(torch.zeros(1), requires_grad=False)  # validators read a parameter's device

    def __deepcopy__(self, memo: dict) -> "RuntimeModule":  # the validator copies its model; sessions cannot be
        return RuntimeModule(self.runtime, self.names, int(self.stride.item()), self.task)

    def forward(self, im: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor | tuple[torch.Tensor, ...]:
        ys = [torch.from_numpy(y) for y in self.runtime.outputs(im.detach().float().cpu().numpy())]
        return ys[0] if len(ys) == 1 else tuple(ys)  # a segmentation model: (prediction, prototypes)


def model_task(model: Any) -> str:
    """The task (``detect``, ``segment``, ``pose``, ``obb``) of a ``.pt`` checkpoint or of a PyTorch runtime."""
    from yolo_ldac.deploy.runtimes import Runtime
    from yolo_ldac.tasks import task_of

    if isinstance(model, Runtime):
        net = getattr(model, "model", None)
    else:
        from yolo_ldac.safe_load import load_model

        net = load_model(model, device="cpu")
    return (task_of(net) if net is not None else None) or "detect"


def model_meta(model: Any) -> tuple[dict, int]:
    """Class names and largest stride (at least 32) of a ``.pt`` checkpoint or of a PyTorch runtime."""
    from yolo_ldac.deploy.runtimes import Runtime

    if isinstance(model, Runtime):
        net = getattr(model, "model", None)
        if net is None:
            raise LDACError(f"validating '{model.path}' needs the class names of the model it was exported from")
    else:
        from yolo_ldac.safe_load import load_model

        net = load_model(model, device="cpu")
    return dict(net.names), int(max(net.stride.max().item(), 32))


def validate_map(model: Any, data: str | Path, imgsz: int, names: dict | None = None, stride: int = 32,
                 task: str | None = None, **kwargs: Any) -> dict[str, float]:
    """The task's mAP50-95 and mAP50 on ``data``'s val split of ``model``: a ``.pt`` path, an exported file (run by
    :func:`~yolo_ldac.deploy.runtimes.load_runtime`; ``names`` and ``task`` then come from the ``.pt`` it was made
    from) or a runtime. Batch 1, ``rect=False`` (exported files have a fixed input shape), CPU, no plots; PyTorch and
    every runtime go through the same validator, so only the numerics differ."""
    from yolo_ldac.deploy.runtimes import Runtime, load_runtime
    from yolo_ldac.engine.validator import detection_map

    try:
        runtime = model if isinstance(model, Runtime) else load_runtime(model)
        if names is None:
            names, stride = model_meta(runtime)
        if task is None:
            task = model_task(runtime) if getattr(runtime, "model", None) is not None else "detect"
        args = {"data": str(data), "imgsz": imgsz, "batch": 1, "rect": False, "device": "cpu", "half": False, **kwargs}
        return detection_map(RuntimeModule(runtime, names, stride, task), task=task, **args)
    except LDACError:
        raise
    except Exception as e:
        raise LDACError(f"validation of '{model}' on '{data}' failed ({type(e).__name__}: {e})") from e


def check_map_parity(
    reference: Any,
    exported: str | Path,
    data: str | Path,
    imgsz: int,
    precision: str = "fp32",
    max_drop: float | None = None,
    reference_map: dict[str, float] | None = None,
    raise_on_fail: bool = True,
) -> dict[str, Any]:
    """mAP50-95 of ``exported`` against ``reference`` (a ``.pt`` path or its loaded PyTorch runtime) on ``data``;
    raise when it is lower by more than the precision's tolerance (:data:`TOLERANCES`; ``max_drop`` overrides it,
    as a fraction: 0.005 = 0.5 points).

    ``reference_map`` reuses a PyTorch result already computed under the same settings; ``raise_on_fail=False``
    returns a failed result (``ok`` False, ``error`` the message) instead of raising.
    """
    tol = _tolerance(precision).map_drop if max_drop is None else float(max_drop)
    ref = reference_map or validate_map(reference, data, imgsz)
    names, stride = model_meta(reference)
    got = validate_map(exported, data, imgsz, names=names, stride=stride, task=model_task(reference))
    drop = ref["map50_95"] - got["map50_95"]
    result = {"map50_95_pytorch": ref["map50_95"], "map50_95": got["map50_95"], "map50": got["map50"],
              "map50_pytorch": ref["map50"], "drop": drop, "max_drop": tol, "precision": precision}
    result["ok"] = bool(drop <= tol + 1e-9)
    if not result["ok"]:
        result["error"] = (f"{precision} export '{Path(exported).name}' loses {100 * drop:.2f} mAP50-95 points against "
                           f"PyTorch ({100 * got['map50_95']:.2f} vs {100 * ref['map50_95']:.2f}; allowed {100 * tol:.1f})")
        if raise_on_fail:
            raise LDACError(result["error"])
    return result
