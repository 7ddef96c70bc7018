"""Where a convolution's channels become activations: the conv -> BN pairs of Ultralytics and torchvision layers.

Criteria that measure a channel after its BN and activation (Group Fisher's masks, HRank/CHIP's feature maps) and
the compensations that fold a shift into the BN after a convolution need, per ``nn.Conv2d``, the module whose output
is that channel's activation and the BN that follows it. Three layouts are recognised, without importing either
library:

- Ultralytics' ``Conv`` (attributes ``conv``, ``bn``, ``act``): the block's output.
- torchvision's ``Conv2dNormActivation`` and any ``nn.Sequential`` that starts with ``Conv2d, BatchNorm2d``
  (MobileNet, the ResNet ``downsample``, FPN blocks with a norm): the sequence's output.
- torchvision's ResNet ``BasicBlock`` / ``Bottleneck`` (attributes ``conv1``/``bn1``, ... with a functional ReLU):
  the BN's output (the ReLU of 0 is 0, so a mask there is the channel's removal).

Example:
    >>> seq = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    >>> block, bn = conv_bn_blocks(seq)[seq[0]]
    >>> block is seq, bn is seq[1]
    (True, True)
"""

from __future__ import annotations

import torch.nn as nn


def conv_bn_blocks(model: nn.Module) -> dict[nn.Conv2d, tuple[nn.Module, nn.BatchNorm2d]]:
    """``conv -> (module whose output is the conv's activated channels, the BN right after the conv)``."""
    out: dict[nn.Conv2d, tuple[nn.Module, nn.BatchNorm2d]] = {}
    for m in model.modules():
        conv, bn = getattr(m, "conv", None), getattr(m, "bn", None)
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            out.setdefault(conv, (m, bn))
        if isinstance(m, nn.Sequential) and len(m) >= 2 and isinstance(m[0], nn.Conv2d) \
                and isinstance(m[1], nn.BatchNorm2d):
            out.setdefault(m[0], (m, m[1]))
        for i in range(1, 5):
            conv, bn = getattr(m, f"conv{i}", None), getattr(m, f"bn{i}", None)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                out.setdefault(conv, (bn, bn))
    return out
