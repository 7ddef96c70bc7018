"""Two-convolution forms of Ultralytics' split blocks (``C2f``, ``C3k2``, ``C2fCIB``, ``RepNCSPELAN4``, ``ELAN1``).

``C2f`` computes ``cv1(x).chunk(2, 1)``; torch-pruning cannot follow a ``chunk`` through its dependency graph,
so the first convolution is rewritten as two convolutions (``cv0`` for the first half, ``cv1`` for the second)
with the weights copied. The outputs are identical to float tolerance.

YOLOv9's ``RepNCSPELAN4`` (and its light ``ELAN1``) is the same pattern: ``cv1(x).chunk(2, 1)``, then two stages
(``cv2``, ``cv3``) chained on the second half, all four concatenated into ``cv4``. Its split form is a
:class:`C2fSplit` whose ``m`` is ``[cv2, cv3]`` and whose output convolution is ``cv4``. YOLOv10's ``C2fCIB`` is a
``C2f`` with CIB stages.

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
        _copy_layer_attrs(block, new)
        return new


class C3k2Split(C2fSplit):
    """``C3k2`` (YOLO11) in two-convolution form; same forward as :class:`C2fSplit`, kept distinct for readability
    of model summaries and so that a checkpoint says which block it came from."""


class C2fCIBSplit(C2fSplit):
    """``C2fCIB`` (YOLOv10) in two-convolution form; same forward as :class:`C2fSplit`."""


class RepNCSPELAN4Split(C2fSplit):
    """``RepNCSPELAN4`` (YOLOv9) in two-convolution form: ``m`` is ``[cv2, cv3]`` of the block, ``cv2`` its ``cv4``.

    Example:
        >>> from ultralytics.nn.modules import RepNCSPELAN4
        >>> block = RepNCSPELAN4(16, 32, 32, 16, n=1).eval()
        >>> split = RepNCSPELAN4Split.from_block(block).eval()
        >>> x = torch.randn(1, 16, 8, 8)
        >>> bool(torch.allclose(block(x), split(x), atol=1e-5))
        True
    """

    @classmethod
    def from_block(cls, block: nn.Module) -> "RepNCSPELAN4Split":
        """Build the split form of a ``RepNCSPELAN4``-like block (``c``, ``cv1`` .. ``cv4``), copying weights."""
        cv0, cv1 = _split_conv(block.cv1, block.c)
        new = cls(cv0, cv1, block.cv4, nn.ModuleList([block.cv2, block.cv3]))
        _copy_layer_attrs(block, new)
        return new


class ELAN1Split(RepNCSPELAN4Split):
    """``ELAN1`` (YOLOv9-t's light ELAN) in two-convolution form; same forward as :class:`RepNCSPELAN4Split`."""


def _copy_layer_attrs(block: nn.Module, new: nn.Module) -> None:
    """Copy the attributes Ultralytics' parse_model and tooling read from every layer (``i``, ``f``, ``type``, ``np``)."""
    for attr in ("i", "f", "type", "np"):
        if hasattr(block, attr):
            setattr(new, attr, getattr(block, attr))


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
torch.serialization.add_safe_globals([C2fSplit, C3k2Split, C2fCIBSplit, RepNCSPELAN4Split, ELAN1Split])


# ---------------------------------------------------------------------------------------------- deploy (export) forms
class SplitConvBlock(nn.Module):
    """Export form of a pruned split block: its two first convolutions (``cv0``, ``cv1``, which read the same input)
    fused back into one convolution whose output is split, as in the dense ``C2f``. The two halves may differ in
    width after pruning, so ``split`` takes the two widths. Same forward as :class:`C2fSplit` to float tolerance;
    the runtimes then read the input once and run one kernel instead of two (:func:`yolo_ldac.nn.deploy.deploy_form`).

    Example:
        >>> from ultralytics.nn.modules import C2f
        >>> split = C2fSplit.from_block(C2f(16, 32, n=1)).eval()
        >>> fused = SplitConvBlock.from_split(split).eval()
        >>> x = torch.randn(1, 16, 8, 8)
        >>> bool(torch.allclose(split(x), fused(x), atol=1e-5))
        True
    """

    def __init__(self, cv1: nn.Module, sizes: tuple[int, int], cv2: nn.Module, m: nn.ModuleList):
        super().__init__()
        self.cv1, self.cv2, self.m = cv1, cv2, m
        self.sizes = (int(sizes[0]), int(sizes[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).split(self.sizes, 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))

    @classmethod
    def from_split(cls, block: C2fSplit) -> "SplitConvBlock":
        """The fused form of a :class:`C2fSplit` (or subclass), its weights concatenated (the block is not changed)."""
        sizes = (block.cv0.conv.out_channels, block.cv1.conv.out_channels)
        new = cls(_cat_convs(block.cv0, block.cv1), sizes, block.cv2, block.m)
        _copy_layer_attrs(block, new)
        return new


class DFLExp(nn.Module):
    """Export form of Ultralytics' ``DFL``: the expected bin of each box side's distribution computed as
    ``sum(i * exp(x_i - max)) / sum(exp(x_i - max))`` (what ``conv(softmax(x))`` computes) with a max, an exp and
    two sums. ONNX Runtime's Softmax over the 16 bins of YOLO's 8400 anchors took 4.4 ms of a 46 ms YOLO11n at
    640 px on one core (10 %, the same for a dense and a pruned model); this form about 0.4 ms
    (``benchmarks/results/profile/yolo11n-640-{plain,deploy}.md``).

    Example:
        >>> from ultralytics.nn.modules.block import DFL
        >>> x = torch.randn(1, 64, 100) * 3
        >>> bool(torch.allclose(DFL(16)(x), DFLExp(16)(x), atol=1e-5))
        True
    """

    def __init__(self, c1: int = 16):
        super().__init__()
        self.c1 = int(c1)
        self.register_buffer("bins", torch.arange(self.c1, dtype=torch.float).view(1, 1, self.c1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, a = x.shape
        y = x.view(b, 4, self.c1, a)
        e = (y - y.amax(2, keepdim=True)).exp()
        return (e * self.bins.to(e.dtype)).sum(2) / e.sum(2)


def _cat_convs(a: nn.Module, b: nn.Module) -> nn.Module:
    """One Ultralytics ``Conv`` whose outputs are ``a``'s then ``b``'s (same input, kernel and activation);
    with or without its BatchNorm (a model fused for inference has none)."""
    new = copy.deepcopy(a)
    ca, cb = a.conv, b.conv
    new.conv.out_channels = ca.out_channels + cb.out_channels
    new.conv.weight = nn.Parameter(torch.cat([ca.weight.detach(), cb.weight.detach()]))
    if ca.bias is not None:
        new.conv.bias = nn.Parameter(torch.cat([ca.bias.detach(), cb.bias.detach()]))
    if hasattr(a, "bn") and hasattr(b, "bn"):
        ba, bb, bn = a.bn, b.bn, new.bn
        bn.num_features = ba.num_features + bb.num_features
        bn.weight = nn.Parameter(torch.cat([ba.weight.detach(), bb.weight.detach()]))
        bn.bias = nn.Parameter(torch.cat([ba.bias.detach(), bb.bias.detach()]))
        bn.running_mean = torch.cat([ba.running_mean, bb.running_mean])
        bn.running_var = torch.cat([ba.running_var, bb.running_var])
    return new


torch.serialization.add_safe_globals([SplitConvBlock, DFLExp])
