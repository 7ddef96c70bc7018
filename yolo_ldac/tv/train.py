"""A short, standard training loop for torchvision detectors: SGD with momentum, linear warm-up then cosine decay,
gradient clipping, AMP on CUDA; the loss is torchvision's train-mode loss dict (plus any push term).

Example:
    >>> history = train(adapter, loader, epochs=2, lr=0.01)  # doctest: +SKIP
    >>> history[-1]["loss"]  # doctest: +SKIP
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn


def lr_factor(it: int, total: int, warmup: int, final: float = 0.1) -> float:
    """Learning-rate factor at iteration ``it`` of ``total``: linear from 0.001 to 1 over ``warmup`` iterations,
    then cosine down to ``final``.

    Example:
        >>> lr_factor(0, 100, 10), lr_factor(10, 100, 10), round(lr_factor(100, 100, 10), 3)
        (0.001, 1.0, 0.1)
    """
    if warmup > 0 and it < warmup:
        return 0.001 + (1 - 0.001) * it / warmup
    span = max(total - warmup, 1)
    t = min(max(it - warmup, 0) / span, 1.0)
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * t))


def train(adapter: nn.Module, loader, epochs: int, lr: float = 0.01, momentum: float = 0.9,
          weight_decay: float = 1e-4, warmup_iters: int = 100, clip: float = 10.0, amp: bool = True,
          device: torch.device | str = "cpu", extra: Callable | None = None,
          on_epoch_end: Callable[[int, dict], None] | None = None) -> list[dict]:
    """Train ``adapter`` (a :class:`~yolo_ldac.tv.adapter.FasterRCNNAdapter`) for ``epochs`` on ``loader``'s
    batches; returns the mean of every loss term per epoch (``loss`` their sum) and the optimizer steps.

    ``extra(features, targets, image_list) -> dict`` adds terms to the loss dict (LDAC's push loss). AMP is used only
    on CUDA. A non-finite loss stops the run with :class:`~yolo_ldac.errors.LDACError`.
    """
    from yolo_ldac.errors import LDACError

    device = torch.device(device)
    params = [p for p in adapter.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    total = max(1, epochs * len(loader))
    warmup = min(int(warmup_iters), max(total - 1, 0))
    use_amp = bool(amp) and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    history, it = [], 0
    adapter.to(device)
    for epoch in range(int(epochs)):
        adapter.train()
        sums: dict[str, float] = {}
        n = 0
        for batch in loader:
            for g in opt.param_groups:
                g["lr"] = lr * lr_factor(it, total, warmup)
            with torch.autocast(device.type, enabled=use_amp):
                losses = adapter.loss_dict(batch["img"].to(device), batch["targets"], extra=extra)
                loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise LDACError(f"the training loss is not finite at epoch {epoch + 1}, iteration {it + 1} "
                                f"({ {k: float(v) for k, v in losses.items()} }): lower lr0")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if clip:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(params, clip)
            scaler.step(opt)
            scaler.update()
            it += 1
            n += 1
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
        row = {k: v / max(n, 1) for k, v in sums.items()}
        row.update(epoch=epoch + 1, steps=it, lr=opt.param_groups[0]["lr"])
        history.append(row)
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)
    adapter.zero_grad(set_to_none=True)
    return history
