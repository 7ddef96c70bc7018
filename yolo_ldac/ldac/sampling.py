"""Location-aware object samples (METHOD.md, "Location-aware samples"). Pure torch; no Ultralytics import."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["box_samples"]


def box_samples(
    feat: Tensor, stride: int, boxes_xyxy: Tensor, batch_idx: Tensor, pool: str = "max"
) -> Tensor:
    """One C-vector per box from a feature level.

    Args:
        feat: (B, C, H, W) features of one level.
        stride: the level's stride in input pixels; cell (i, j) has centre ((j+0.5)*stride, (i+0.5)*stride).
        boxes_xyxy: (M, 4) boxes x1, y1, x2, y2 in input pixels.
        batch_idx: (M,) image index of each box.
        pool: "max" (default) or "mean" over the box's cells, per channel.

    The box's cells are those whose centres lie inside the box (inclusive bounds). A box that covers no
    cell centre uses the single cell that holds its centre (clamped to the map), so small objects are never
    dropped. A box's cells form a rectangle; all boxes are pooled at once over rectangle masks, in chunks of
    boxes that bound memory. Gradients flow to feat.

    Returns:
        (M, C) samples in feat's dtype; (0, C) when there are no boxes.
    """
    if feat.dim() != 4:
        raise ValueError(f"feat must be (B, C, H, W), got {tuple(feat.shape)}")
    if pool not in ("max", "mean"):
        raise ValueError(f"pool must be 'max' or 'mean', got {pool!r}")
    if stride <= 0:
        raise ValueError("stride must be positive")
    B, C, H, W = feat.shape
    boxes = boxes_xyxy.reshape(-1, 4) if boxes_xyxy.numel() == 0 else boxes_xyxy
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes_xyxy must be (M, 4), got {tuple(boxes_xyxy.shape)}")
    M = boxes.shape[0]
    if batch_idx.reshape(-1).shape[0] != M:
        raise ValueError("batch_idx must have one entry per box")
    if M == 0:
        return feat[:0].sum(dim=(2, 3))  # (0, C), still attached to feat's graph
    bidx = batch_idx.reshape(-1).to(torch.long).cpu()
    if int(bidx.min()) < 0 or int(bidx.max()) >= B:
        raise ValueError(f"batch_idx out of range [0, {B})")

    bx = boxes.detach().to(device="cpu", dtype=torch.float64)
    x1, y1, x2, y2 = bx.unbind(1)
    cx = (torch.arange(W, dtype=torch.float64) + 0.5) * stride  # (W,)
    cy = (torch.arange(H, dtype=torch.float64) + 0.5) * stride  # (H,)
    inx = (cx[None] >= x1[:, None]) & (cx[None] <= x2[:, None])  # (M, W), contiguous runs
    iny = (cy[None] >= y1[:, None]) & (cy[None] <= y2[:, None])  # (M, H)
    nx, ny = inx.sum(1), iny.sum(1)
    j0 = inx.to(torch.uint8).argmax(1)  # first True (0 when none)
    i0 = iny.to(torch.uint8).argmax(1)
    covered = (nx > 0) & (ny > 0)
    # fallback: the cell holding the box centre, clamped to the map
    jc = torch.floor((x1 + x2) * 0.5 / stride).clamp(0, W - 1).to(torch.long)
    ic = torch.floor((y1 + y2) * 0.5 / stride).clamp(0, H - 1).to(torch.long)
    j0 = torch.where(covered, j0, jc)
    i0 = torch.where(covered, i0, ic)
    nx = torch.where(covered, nx, torch.ones_like(nx))
    ny = torch.where(covered, ny, torch.ones_like(ny))

    # Pool every box at once over a rectangle mask; boxes go in chunks so the (boxes, C, H, W) gather stays small.
    rows = torch.arange(H)[None, :]
    cols = torch.arange(W)[None, :]
    row_in = (rows >= i0[:, None]) & (rows < (i0 + ny)[:, None])  # (M, H)
    col_in = (cols >= j0[:, None]) & (cols < (j0 + nx)[:, None])  # (M, W)
    mask_all = (row_in[:, :, None] & col_in[:, None, :]).to(feat.device)  # (M, H, W)
    bidx = bidx.to(feat.device)
    chunk = max(1, (1 << 22) // max(C * H * W, 1))
    out = []
    for s in range(0, M, chunk):
        x = feat[bidx[s : s + chunk]]  # (m, C, H, W)
        mask = mask_all[s : s + chunk, None]
        if pool == "max":
            out.append(x.masked_fill(~mask, float("-inf")).amax(dim=(2, 3)))
        else:
            out.append((x * mask).sum(dim=(2, 3)) / mask.sum(dim=(2, 3)).clamp(min=1))
    return torch.cat(out, 0)
