"""Two-convolution forms of Ultralytics' split blocks (``C2f``, ``C3k2``).

``C2f`` computes ``cv1(x).chunk(2, 1)``; torch-pruning cannot follow a ``chunk`` through its dependency graph,
so the first convolution is rewritten as two convolutions (``cv0`` for the first half, ``cv1`` for the second)
with the weights copied. The outputs are identical to float tolerance.

These classes live at a stable import path (``yolo_ldac.nn.modules``): pickled checkpoints of pruned models
reference them, so moving them breaks loading of every saved ``best.pt``.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn


class C2fSplit(nn.Module):
    """``C2f`` with its first convolution split in two, so every channel is visible to the dependency graph.

    Example:
        >>> from ultralytics.nn.modules import C2f
        >>> block = C2f(16, 32, n=1).eval()
        >>> split = C2fSplit.from_block(block).eval()
        >>> x = torch.randn(1, 16, 8, 8)
        >>> bool(torch.allclose(block(x), split(x), atol=1e-5))
        True
    """

    def __init__(self, cv0: nn.Module, cv1: nn.Module, cv2: nn.Module, m: nn.ModuleList):
        super().__init__()
        self.cv0, self.cv1, self.cv2, self.m = cv0, cv1, cv2, m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv0(x), self.cv1(x)]
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))

    @classmethod
    def from_block(cls, block: nn.Module) -> "C2fSplit":
        """Build the split form of a ``C2f``-like block (attributes ``c``, ``cv1``, ``cv2``, ``m``), copying weights."""
        cv0, cv1 = _split_conv(block.cv1, block.c)
        new = cls(cv0, cv1, block.cv2, block.m)
        # Attributes Ultralytics' parse_model/ tooling read from every layer.
        for attr in ("i", "f", "type", "np"):
            if hasattr(block, attr):
                setattr(new, attr, getattr(block, attr))
        return new


class C3k2Split(C2fSplit):
    """``C3k2`` (YOLO11) in two-convolution form; same forward as :class:`C2fSplit`, kept distinct for readability
    of model summaries and so that a checkpoint says which block it came from."""


def _split_conv(conv: nn.Module, c: int) -> tuple[nn.Module, nn.Module]:
    """Split an Ultralytics ``Conv`` (conv + BN + act) with ``2c`` outputs into two ``Conv`` with ``c`` outputs."""
    halves = []
    for sl in (slice(0, c), slice(c, 2 * c)):
        half = copy.deepcopy(conv)
        src_conv, dst_conv = conv.conv, half.conv
        dst_conv.out_channels = c
        dst_conv.weight = nn.Parameter(src_conv.weight.detach()[sl].clone())
        if src_conv.bias is not None:
            dst_conv.bias = nn.Parameter(src_conv.bias.detach()[sl].clone())
        bn, dst_bn = conv.bn, half.bn
        dst_bn.num_features = c
        dst_bn.weight = nn.Parameter(bn.weight.detach()[sl].clone())
        dst_bn.bias = nn.Parameter(bn.bias.detach()[sl].clone())
        dst_bn.running_mean = bn.running_mean[sl].clone()
        dst_bn.running_var = bn.running_var[sl].clone()
        halves.append(half)
    return halves[0], halves[1]


# Pickled best.pt files name these classes: on torch's weights_only allow-list, such a file also loads under
# Ultralytics' own restricted mode (ULTRALYTICS_SAFE_LOAD=1) once this module is imported.
torch.serialization.add_safe_globals([C2fSplit, C3k2Split])
