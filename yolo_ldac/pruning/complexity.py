"""Model complexity: FLOPs, parameters and channels, counted from module shapes.

The analytic count covers every ``nn.Conv2d`` and ``nn.Linear`` (2 x multiply-accumulates), which is what pruning
changes; the spatial size of each convolution's output is recorded once with a forward pass and reused, so counting
a candidate channel configuration costs no forward pass (the planner's deltas). It misses what Ultralytics' counter
(thop, as ``YOLO().info()`` prints it) adds: BN, pooling and the attention products of YOLO12's area attention,
which is 15 % of yolo12n's FLOPs (a "30 %" analytic cut measured 26 % in Ultralytics). So :func:`measure` takes a
``flops_fn``: the run passes Ultralytics' own counter (``yolo_ldac.nn.adapter.ultralytics_gflops``) and the ratios
it reports and meets are that count's; this module itself imports no Ultralytics.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn as nn


@dataclass(frozen=True)
class Complexity:
    """FLOPs (in G, at the recorded input size), parameters and prunable output channels of a model."""

    flops_g: float
    params: int
    channels: int
    counter: str = "analytic"  # who counted flops_g: "analytic" (convolutions) or "ultralytics" (thop)
    latency_ms: float | None = None  # predicted latency in the run's runtime (target=latency), else None

    def removed_vs(self, dense: "Complexity", target: str = "flops") -> float:
        """Fraction of ``target`` removed relative to ``dense`` (0.3 means 30 % removed).

        Example:
            >>> Complexity(1.0, 50, 8).removed_vs(Complexity(2.0, 100, 16))
            0.5
        """
        key = {"flops": "flops_g", "params": "params", "channels": "channels", "latency": "latency_ms"}[target]
        return 1.0 - getattr(self, key) / getattr(dense, key)

    def as_dict(self) -> dict:
        return asdict(self)


def conv_flops(conv: nn.Conv2d, out_hw: int, in_ch: int | None = None, out_ch: int | None = None) -> float:
    """FLOPs (2 x MACs) of ``conv`` producing ``out_hw`` output cells, optionally with other channel counts."""
    in_ch = conv.in_channels if in_ch is None else in_ch
    out_ch = conv.out_channels if out_ch is None else out_ch
    kh, kw = conv.kernel_size
    depthwise = conv.groups > 1 and conv.groups == conv.in_channels
    in_per_group = 1 if depthwise else in_ch / conv.groups
    return 2.0 * out_hw * kh * kw * in_per_group * out_ch


def conv_params(conv: nn.Conv2d, in_ch: int | None = None, out_ch: int | None = None) -> float:
    in_ch = conv.in_channels if in_ch is None else in_ch
    out_ch = conv.out_channels if out_ch is None else out_ch
    kh, kw = conv.kernel_size
    depthwise = conv.groups > 1 and conv.groups == conv.in_channels
    in_per_group = 1 if depthwise else in_ch / conv.groups
    return kh * kw * in_per_group * out_ch + (out_ch if conv.bias is not None else 0)


def layer_flops(layer: nn.Module, out_hw: int, in_ch: int | None = None, out_ch: int | None = None) -> float:
    """FLOPs of a Conv2d (as :func:`conv_flops`) or of a Linear applied to ``out_hw`` rows, optionally with other
    widths.

    Example:
        >>> layer_flops(nn.Linear(4, 2), 3)
        48.0
    """
    if isinstance(layer, nn.Linear):
        i = layer.in_features if in_ch is None else in_ch
        o = layer.out_features if out_ch is None else out_ch
        return 2.0 * out_hw * i * o
    return conv_flops(layer, out_hw, in_ch, out_ch)


def layer_params(layer: nn.Module, in_ch: int | None = None, out_ch: int | None = None) -> float:
    """Parameters of a Conv2d (as :func:`conv_params`) or a Linear, optionally with other widths."""
    if isinstance(layer, nn.Linear):
        i = layer.in_features if in_ch is None else in_ch
        o = layer.out_features if out_ch is None else out_ch
        return i * o + (o if layer.bias is not None else 0)
    return conv_params(layer, in_ch, out_ch)


@torch.no_grad()
def record_output_sizes(model: nn.Module, imgsz: int = 640, in_channels: int = 3) -> dict[nn.Module, int]:
    """Map every Conv2d/Linear of ``model`` to the number of output cells it produces for one ``imgsz`` image.

    A model with a ``complexity_mode()`` context (the torchvision adapter: a fixed number of RoIs per image, so the
    box head's FLOPs do not depend on what the RPN proposes for a blank image) runs inside it."""
    sizes: dict[nn.Module, int] = {}
    handles = []

    def hook(module, _inp, out):
        # per image: the output's cells, times its leading dim when that is not the image (a RoI head's convolution
        # over (RoIs, C, r, r) runs once per RoI; for every other layer of a one-image input it is 1)
        sizes[module] = int(out.shape[0] * out.shape[2] * out.shape[3]) if out.dim() == 4 else \
            int(out.numel() // out.shape[-1])

    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            handles.append(m.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        mode = getattr(model, "complexity_mode", None)
        with (mode() if callable(mode) else contextlib.nullcontext()):
            model(torch.zeros(1, in_channels, imgsz, imgsz, device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return sizes


def measure(model: nn.Module, imgsz: int = 640, sizes: dict[nn.Module, int] | None = None,
            protected: list[nn.Module] | None = None,
            flops_fn: Callable[[nn.Module, int], float | None] | None = None) -> Complexity:
    """Count FLOPs (G), parameters and prunable channels of ``model`` for a square ``imgsz`` input.

    ``flops_fn(model, imgsz)`` (GFLOPs, or None when it cannot count) replaces the analytic FLOPs count.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1))
        >>> measure(net, imgsz=4).params
        224
    """
    sizes = record_output_sizes(model, imgsz) if sizes is None else sizes
    protected_ids = {id(m) for m in protected or ()}
    flops = 0.0
    channels = 0
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            flops += conv_flops(m, sizes.get(m, 0))
            if id(m) not in protected_ids:
                channels += m.out_channels
        elif isinstance(m, nn.Linear):
            flops += 2.0 * sizes.get(m, 0) * m.in_features * m.out_features
            if id(m) not in protected_ids:
                channels += m.out_features
    params = sum(p.numel() for p in model.parameters())
    counted = flops_fn(model, imgsz) if flops_fn is not None else None
    if counted:
        return Complexity(flops_g=float(counted), params=int(params), channels=int(channels), counter="ultralytics")
    return Complexity(flops_g=flops / 1e9, params=int(params), channels=int(channels))


def layer_channels(model: nn.Module) -> dict[str, int]:
    """Output channels of every Conv2d (and output features of every Linear), by module name (the per-layer view
    reports and plots use)."""
    return {name: (m.out_channels if isinstance(m, nn.Conv2d) else m.out_features)
            for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
