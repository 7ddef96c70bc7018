"""Calibration batches: a few training images with labels, shared by data-driven criteria and compensation."""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn as nn


def detection_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    """Ultralytics' detection loss of ``model`` on a preprocessed ``batch`` (scalar, differentiable).

    A model with its own ``batch_loss(batch)`` (the torchvision adapter: the sum of Faster R-CNN's loss dict, BN
    statistics untouched) computes it itself."""
    own = getattr(model, "batch_loss", None)
    if callable(own):
        return own(batch)
    ensure_loss_args(model)
    device = next(model.parameters()).device
    batch = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
    loss, _ = model.loss(batch)
    return loss.sum()


def ensure_loss_args(model: nn.Module) -> None:
    """Give ``model`` the hyper-parameters its loss reads (box, cls, dfl gains) when it lacks them."""
    from ultralytics.cfg import get_cfg
    from ultralytics.utils import DEFAULT_CFG

    args = getattr(model, "args", None)
    if not hasattr(args, "box"):
        overrides = args if isinstance(args, dict) else {}
        valid = {k: v for k, v in overrides.items() if k in vars(DEFAULT_CFG)}
        model.args = get_cfg(DEFAULT_CFG, valid)
    if getattr(model, "criterion", None) is None:
        model.criterion = model.init_criterion()


def build_calibration_batches(data: dict, imgsz: int, batch: int, n_batches: int, seed: int = 0,
                              workers: int = 0, shape: tuple[int, int] | None = None,
                              task: str = "detect") -> list[dict]:
    """Return ``n_batches`` preprocessed batches (images scaled to [0, 1]) from the training split of ``data``,
    with the labels of ``task`` (masks for ``segment``, keypoints for ``pose``, oriented boxes for ``obb``).

    ``data`` is the dict Ultralytics' ``check_det_dataset`` returns. Images are letterboxed without
    augmentation, in a fixed seeded order, so every criterion sees the same calibration set; ``shape`` (h, w)
    letterboxes them to a non-square input instead of ``imgsz`` x ``imgsz``.
    """
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_yolo_dataset
    from ultralytics.utils import DEFAULT_CFG

    cfg = get_cfg(DEFAULT_CFG, {"imgsz": imgsz, "rect": False, "cache": False, "fraction": 1.0, "task": task})
    dataset = build_yolo_dataset(cfg, data["train"], batch, data, mode="val", stride=32)
    if shape is not None and hasattr(dataset.transforms.transforms[0], "new_shape"):
        dataset.transforms.transforms[0].new_shape = tuple(shape)  # letterboxed to (h, w) instead of a square
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(dataset), generator=generator)[: batch * n_batches].tolist()
    subset = torch.utils.data.Subset(dataset, order)
    subset.collate_fn = dataset.collate_fn
    loader = torch.utils.data.DataLoader(subset, batch_size=batch, shuffle=False, num_workers=workers,
                                         collate_fn=dataset.collate_fn)
    batches = []
    for b in loader:
        b["img"] = b["img"].float() / 255.0
        batches.append(b)
    return batches


def iter_images(batches: Iterable[dict]) -> Iterable[torch.Tensor]:
    for b in batches:
        yield b["img"]
