"""COCO mAP50-95 and mAP50 of torchvision-style detections, with pycocotools (the COCO reference evaluation).

Example:
    >>> gt = [{"boxes": torch.tensor([[0., 0., 10., 10.]]), "labels": torch.tensor([1])}]
    >>> pred = [{"boxes": torch.tensor([[0., 0., 10., 10.]]), "labels": torch.tensor([1]), "scores": torch.tensor([0.9])}]
    >>> coco_map(pred, gt, num_classes=1)
    {'map50_95': 1.0, 'map50': 1.0}
"""

from __future__ import annotations

import contextlib
import io

import torch
import torch.nn as nn


def coco_map(predictions: list[dict], targets: list[dict], num_classes: int) -> dict[str, float]:
    """COCO bbox mAP over IoU 0.50:0.95 and at 0.50 (``COCOeval.stats[0]`` and ``[1]``, area "all", 100
    detections) of per-image ``predictions`` (``boxes`` xyxy, ``labels`` 1..C, ``scores``) against ``targets``
    (``boxes``, ``labels``). No ground-truth box at all, or no detection, gives 0.0."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, anns, dets = [], [], []
    for i, (p, t) in enumerate(zip(predictions, targets)):
        images.append({"id": i})
        for b, c in zip(t["boxes"].tolist(), t["labels"].tolist()):
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(c), "bbox": [b[0], b[1], w, h],
                         "area": w * h, "iscrowd": 0})
        for b, c, s in zip(p["boxes"].tolist(), p["labels"].tolist(), p["scores"].tolist()):
            dets.append({"image_id": i, "category_id": int(c), "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                         "score": float(s)})
    if not anns or not dets:
        return {"map50_95": 0.0, "map50": 0.0}
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns,
                  "categories": [{"id": c} for c in range(1, int(num_classes) + 1)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes(dets)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"map50_95": max(float(ev.stats[0]), 0.0), "map50": max(float(ev.stats[1]), 0.0)}


@torch.no_grad()
def evaluate(adapter: nn.Module, loader, device: torch.device | str = "cpu") -> dict[str, float]:
    """mAP50-95 and mAP50 of a :class:`~yolo_ldac.tv.adapter.FasterRCNNAdapter` on a loader of
    :mod:`yolo_ldac.tv.data` batches (the detector's own inference, its score threshold and detections per image)."""
    preds, gts = [], []
    for batch in loader:
        out = adapter.predict(batch["img"].to(device))
        preds += [{k: v.cpu() for k, v in o.items()} for o in out]
        gts += batch["targets"]
    return coco_map(preds, gts, adapter.num_classes)
