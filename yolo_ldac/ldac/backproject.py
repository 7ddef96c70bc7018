"""Weight back-projection tracer (``tracer=weights``): the optional second tracer of METHOD.md, for comparison.

The neck channel utilities u (from the discriminant directions, ``DiscriminantStats.channel_utility``) are
carried back layer by layer: an input channel of a convolution receives, from every output channel o, u_o times
its share of o's absolute weights, scaled by |BN scale_o| (a channel whose BN scale is zero passes nothing on).
Instead of a hand-written graph walk, every Conv block is replaced during one forward pass by a linear surrogate
(its row-normalised absolute weights, no BN shift, no activation; same kernel, stride and padding), so that
autograd carries sum_s <u_s, mean(feats_s)> back through concat, residual adds, upsampling and pooling exactly as
the real graph routes channels. A channel's score is the gradient it receives, summed over positions.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from yolo_ldac.ldac.objective import head_feats


def surrogate_weight(block: nn.Module) -> torch.Tensor:
    """Linear stand-in for an Ultralytics Conv block: share of |W| per output row, times |BN scale|."""
    conv, bn = block.conv, block.bn
    w = conv.weight.detach().abs()
    kh, kw = conv.kernel_size
    per_in = w.sum(dim=(2, 3))  # (out, in/groups)
    share = per_in / per_in.sum(dim=1, keepdim=True).clamp(min=1e-12)
    scale = (bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)).abs()
    return (share * scale[:, None])[:, :, None, None].expand(-1, -1, kh, kw) / (kh * kw)


def backproject_scores(model: nn.Module, wrappers: dict[nn.Conv2d, nn.Module], images: torch.Tensor,
                       utilities: list[torch.Tensor]) -> dict[nn.Conv2d, torch.Tensor]:
    """Utility of every Conv block's output channels, back-projected from the neck ``utilities`` (one per level)."""
    outs: dict[nn.Module, torch.Tensor] = {}

    def linearise(module, inputs, _out):
        conv = module.conv
        y = F.conv2d(inputs[0], surrogate_weight(module).to(inputs[0].dtype), None, conv.stride, conv.padding,
                     conv.dilation, conv.groups)
        outs[module] = y
        return y

    handles = [w.register_forward_hook(linearise) for w in wrappers.values()]
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            x = images.float().requires_grad_(True)
            _, preds = model(x)
            total = sum((f.mean(dim=(0, 2, 3)) * u.to(f.device, f.dtype)).sum()
                        for f, u in zip(head_feats(preds), utilities))
            mods = list(outs)
            grads = torch.autograd.grad(total, [outs[m] for m in mods], allow_unused=True)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    scores = {conv: torch.zeros(conv.out_channels, dtype=torch.float64) for conv in wrappers}
    for m, g in zip(mods, grads):
        if g is not None:
            scores[m.conv] += g.sum(dim=(0, 2, 3)).abs().double().cpu()
    return scores
