"""ONNX export of a torchvision Faster R-CNN, checked against PyTorch on a fixed input in ONNX Runtime.

torchvision's detection models export with the TorchScript-based exporter at opset >= 11 (``dynamo=False``); the
file takes one ``(3, imgsz, imgsz)`` image in [0, 1] and returns ``boxes``, ``labels``, ``scores`` after the model's
own post-processing (NMS included). The check runs both on the same input and requires the same detections:
equal count and labels, boxes within ``box_atol`` pixels, scores within ``score_atol``. A file that fails is removed.

Example:
    >>> path, parity = export_onnx(adapter, "best.onnx")  # doctest: +SKIP
    >>> parity["max_box_diff_px"] < 0.1  # doctest: +SKIP
    True
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

from yolo_ldac.errors import LDACError

OPSET = 17


def fixed_input(imgsz: int, image: str | Path | None = None, seed: int = 0) -> torch.Tensor:
    """A (3, imgsz, imgsz) input in [0, 1]: ``image`` resized and padded as the data loader does, else seeded noise."""
    if image is not None:
        from yolo_ldac.tv.data import YoloDetectionDataset

        return YoloDetectionDataset([Path(image)], imgsz).load(0)[0]
    return torch.rand(3, imgsz, imgsz, generator=torch.Generator().manual_seed(seed))


def export_onnx(adapter, path: str | Path, opset: int = OPSET, image: str | Path | None = None,
                box_atol: float = 0.05, score_atol: float = 1e-3, parity: bool = True) -> tuple[Path, dict]:
    """Export ``adapter``'s detector to ``path`` and check it (see the module docstring); returns the path and the
    measured differences ``{"detections", "max_box_diff_px", "max_score_diff", "labels_equal"}``."""
    if int(opset) < 11:
        raise LDACError(f"torchvision's detection models need ONNX opset >= 11, got {opset}")
    import onnxruntime as ort

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    det = adapter.detector.cpu().eval()
    x = fixed_input(adapter.imgsz, image)
    tmp = path.with_name(path.stem + ".tmp.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(det, ([x],), str(tmp), opset_version=int(opset), dynamo=False, input_names=["images"],
                          output_names=["boxes", "labels", "scores"])
    figures: dict = {}
    if parity:
        sess = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        boxes, labels, scores = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
        with torch.no_grad():
            ref = det([x])[0]
        rb, rl, rs = ref["boxes"].numpy(), ref["labels"].numpy(), ref["scores"].numpy()
        same = boxes.shape == rb.shape
        figures = {"detections": int(len(rb)), "onnx_detections": int(len(boxes)),
                   "labels_equal": bool(same and np.array_equal(labels, rl)),
                   "max_box_diff_px": float(np.abs(boxes - rb).max()) if same and len(rb) else 0.0 if same else None,
                   "max_score_diff": float(np.abs(scores - rs).max()) if same and len(rs) else 0.0 if same else None}
        ok = same and figures["labels_equal"] and figures["max_box_diff_px"] <= box_atol and \
            figures["max_score_diff"] <= score_atol
        if not ok:
            tmp.unlink(missing_ok=True)
            raise LDACError(f"the ONNX export does not match PyTorch on a fixed input ({figures}); the file was "
                            "discarded (parity=False keeps it)")
    os.replace(tmp, path)
    return path, figures
