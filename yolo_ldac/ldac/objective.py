"""The location-aware discriminant objective on a batch: samples per pyramid level, J per level, decorrelation.

Shared by the push loss (training) and the tracer (pruning). Pure torch: the batch is an Ultralytics-style dict
(``bboxes`` normalised xywh, ``cls``, ``batch_idx``) but nothing here imports Ultralytics.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from yolo_ldac.ldac.sampling import box_samples
from yolo_ldac.ldac.stats import batch_objective


@dataclass(frozen=True)
class SampleConfig:
    """How samples are drawn (METHOD.md). ``background`` cells per image become an extra class (0 = off; a
    single-class data set switches it on automatically, since LDA needs two classes)."""

    pool: str = "max"
    background: int = 0
    rho: float = 0.1
    level_assign: bool = False  # a box feeds only the level matching its size (<8, <16, >=16 strides of P3)


def head_feats(preds: dict) -> list[Tensor]:
    """The neck features a Detect head's raw prediction dict carries; for an end-to-end head (YOLO26, YOLOv10:
    ``{"one2many": ..., "one2one": ...}``) those of the one-to-many branch (the same tensors, not detached).

    Example:
        >>> f = [torch.zeros(1)]
        >>> head_feats({"one2many": {"feats": f}, "one2one": {"feats": f}}) is f
        True
    """
    return preds["one2many"]["feats"] if "one2many" in preds else preds["feats"]


def boxes_in_pixels(batch: dict, imgsz_hw: tuple[int, int], device) -> tuple[Tensor, Tensor, Tensor]:
    """(boxes xyxy in input pixels, class ids, image ids) of every ground-truth box of ``batch``."""
    h, w = imgsz_hw
    xywh = batch["bboxes"].to(device).float().reshape(-1, 4)
    scale = torch.tensor([w, h, w, h], device=device, dtype=xywh.dtype)
    xywh = xywh * scale
    xyxy = torch.cat([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], dim=1)
    cls = batch["cls"].to(device).reshape(-1).long()
    idx = batch["batch_idx"].to(device).reshape(-1).long()
    return xyxy, cls, idx


def background_samples(feat: Tensor, stride: float, boxes_xyxy: Tensor, batch_idx: Tensor, per_image: int) -> Tensor:
    """Up to ``per_image`` cells per image whose centres lie outside every box of that image, evenly spaced
    over the candidates (deterministic), as (N, C) samples."""
    B, C, H, W = feat.shape
    ys = (torch.arange(H, device=feat.device, dtype=torch.float32) + 0.5) * stride
    xs = (torch.arange(W, device=feat.device, dtype=torch.float32) + 0.5) * stride
    cy, cx = torch.meshgrid(ys, xs, indexing="ij")
    cy, cx = cy.reshape(-1), cx.reshape(-1)
    out = []
    for b in range(B):
        bx = boxes_xyxy[batch_idx == b]
        inside = torch.zeros(H * W, dtype=torch.bool, device=feat.device)
        if len(bx):
            inside = ((cx[None] >= bx[:, :1]) & (cx[None] <= bx[:, 2:3]) & (cy[None] >= bx[:, 1:2])
                      & (cy[None] <= bx[:, 3:4])).any(0)
        free = torch.nonzero(~inside).reshape(-1)
        if len(free) == 0:
            continue
        take = free[torch.linspace(0, len(free) - 1, min(per_image, len(free)), device=feat.device).round().long()]
        out.append(feat[b].reshape(C, -1)[:, take].T)
    return torch.cat(out) if out else feat.new_zeros((0, C))


def level_samples(feats: list[Tensor], strides: list[float], batch: dict, num_classes: int,
                  cfg: SampleConfig) -> list[tuple[Tensor, Tensor]]:
    """(samples, labels) for every level; background samples get label ``num_classes`` when enabled."""
    h, w = feats[0].shape[2] * strides[0], feats[0].shape[3] * strides[0]
    boxes, cls, idx = boxes_in_pixels(batch, (int(h), int(w)), feats[0].device)
    level = assigned_level(boxes, strides, len(feats)) if cfg.level_assign else None
    out = []
    for li, (feat, stride) in enumerate(zip(feats, strides)):
        keep = slice(None) if level is None else level == li
        x = box_samples(feat, float(stride), boxes[keep], idx[keep], pool=cfg.pool)
        y = cls[keep]
        if cfg.background > 0:
            bg = background_samples(feat, float(stride), boxes, idx, cfg.background)
            x = torch.cat([x, bg])
            y = torch.cat([y, torch.full((len(bg),), num_classes, dtype=torch.long, device=cls.device)])
        out.append((x, y))
    return out


def assigned_level(boxes_xyxy: Tensor, strides: list[float], n_levels: int) -> Tensor:
    """Level of each box by size: sqrt(area) below 8 P3 strides -> P3, below 16 -> P4, else P5 (for stride 8:
    64 and 128 px, the usual YOLO split)."""
    wh = (boxes_xyxy[:, 2:] - boxes_xyxy[:, :2]).clamp(min=1e-6)
    size = wh.prod(dim=1).sqrt()
    level = torch.floor(torch.log2(size / (8 * float(strides[0])))) + 1
    return level.clamp(0, n_levels - 1).long()


def total_classes(num_classes: int, cfg: SampleConfig) -> int:
    return num_classes + (1 if cfg.background > 0 else 0)


def objective_per_level(samples: list[tuple[Tensor, Tensor]], num_classes: int, cfg: SampleConfig,
                        running_sw: list | None = None, momentum: float = 0.9, min_per_class: int = 4) -> list[Tensor]:
    """Differentiable J of every level, divided by the number of discriminant directions (classes present - 1),
    so that levels and data sets with different class counts weigh alike.

    With ``running_sw`` (a list, one slot per level, updated in place) an EMA of Sw is kept; a batch where some
    present class has fewer than ``min_per_class`` samples mixes it in half and half (no gradient through it).
    """
    from yolo_ldac.ldac.stats import within_scatter

    k = total_classes(num_classes, cfg)
    out = []
    for li, (x, y) in enumerate(samples):
        present = int(torch.unique(y).numel()) if len(y) else 0
        prior, weight = None, 0.0
        if running_sw is not None and len(y):
            while len(running_sw) <= li:
                running_sw.append(None)
            sw = within_scatter(x.float(), y, k)
            prev = running_sw[li]
            running_sw[li] = sw if prev is None or prev.shape != sw.shape else momentum * prev + (1 - momentum) * sw
            counts = torch.bincount(y, minlength=k)
            if prev is not None and prev.shape == sw.shape and int(counts[counts > 0].min()) < min_per_class:
                prior, weight = running_sw[li], 0.5
        j = batch_objective(x.float(), y, k, rho=cfg.rho, sw_prior=prior, prior_weight=weight)
        out.append(j / max(present - 1, 1))
    return out


def decorrelation(x: Tensor) -> Tensor:
    """Mean squared off-diagonal correlation of the channels of samples ``x`` (N, C); 0 for N < 2."""
    if x.shape[0] < 2:
        return x.sum() * 0
    xc = x.float() - x.float().mean(0, keepdim=True)
    std = xc.pow(2).mean(0).add(1e-6).sqrt()
    corr = (xc.T @ xc) / x.shape[0] / (std[:, None] * std[None, :])
    c = corr.shape[0]
    off = corr - torch.diag(torch.diagonal(corr))
    return off.pow(2).sum() / max(c * (c - 1), 1)
