"""Least-squares compensation: refit each consumer convolution on its kept input channels (ridge, float64).

The mean fold (:mod:`yolo_ldac.pruning.compensate`) replaces a removed input channel ``x_r`` of a consumer
convolution by its calibration mean. This module replaces it by its best affine prediction from the channels that
stay, measured on calibration activations::

    x_r(p) ~= sum_k A[r, k] x_k(p) + m_r      at every pixel p        (ridge least squares, float64)

and rewrites the consumer so that it computes exactly that: for every kernel tap t,
``W'[o, k, t] = W[o, k, t] + sum_r W[o, r, t] A[r, k]`` and the constant ``sum_{r,t} W[o, r, t] m_r`` goes into the
bias (or the running mean of the BN after it), as the mean fold does. With ``A = 0`` (or no correlation) this *is*
the mean fold, so it subsumes it.

Which least-squares problem this solves. Per output channel ``o`` the brief is
``min ||W'_o * X_keep + b'_o - (W_o * X + b_o)||^2`` over the calibration positions. For a 1x1 convolution the
regression above gives exactly that minimiser (least squares is linear in the target: the fit of
``W_oK X_K + W_oR X_R`` on ``[X_K, 1]`` is ``W_oK + W_oR A`` with ``A`` the fit of ``X_R`` on ``[X_K, 1]``), for every
output channel at once and whatever the weights. For a k x k convolution it is the per-pixel version: exact when a
removed channel is, pixel by pixel, an affine function of kept ones (the output then is reproduced exactly), and an
approximation otherwise (it does not use the kept channels at *neighbouring* pixels, which a full im2col fit
would, at (C k^2)^2 memory per consumer). Its statistics are one ``C x C`` Gram matrix and one mean per consumer
input, accumulated over the calibration batches in float64, so it costs what the mean fold costs plus ``C^2``.

The ridge ``lambda = ridge * mean(diag(Cov_KK))`` (relative, so it means the same in every layer) keeps the solve
stable when kept channels are collinear or the calibration set is small; ``A`` is shrunk towards 0, i.e. towards
the mean fold.

Pure torch (no Ultralytics import). Grouped and depthwise consumers are skipped (a removed input channel of a
depthwise convolution takes its output with it; there is nothing to refit), as the mean fold does.

Example:
    >>> conv = nn.Conv2d(2, 1, 1, bias=True)
    >>> x = torch.randn(4, 1, 3, 3); x = torch.cat([x, 2 * x + 1], 1)   # channel 1 = 2 * channel 0 + 1
    >>> y = conv(x)
    >>> stats = InputGram.measure(nn.Sequential(conv), [x])
    >>> stats.fold(conv, [1], ridge=0.0)
    True
    >>> import torch_pruning as tp; _ = tp.prune_conv_in_channels(conv, [1])
    >>> bool(torch.allclose(conv(x[:, :1]), y, atol=1e-5))
    True
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn as nn


def channel_regression(gram: torch.Tensor, total: torch.Tensor, count: int, keep: list[int] | torch.Tensor,
                       remove: list[int] | torch.Tensor, ridge: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """Ridge regression of channels ``remove`` on channels ``keep`` with an intercept, from raw sums.

    Args:
        gram: ``sum_p x(p) x(p)^T`` over all positions (C x C, float64).
        total: ``sum_p x(p)`` (C,).
        count: the number of positions.
        ridge: ``lambda`` relative to the mean variance of the kept channels.

    Returns:
        ``A`` (R x K) and ``m`` (R,) with ``x_remove ~= A x_keep + m``.

    Example:
        >>> x = torch.tensor([[1., 2., 3., 4.], [3., 5., 7., 9.]]).double()   # x1 = 2 x0 + 1
        >>> A, m = channel_regression(x @ x.T, x.sum(1), 4, [0], [1], ridge=0.0)
        >>> round(float(A), 6), round(float(m), 6)
        (2.0, 1.0)
    """
    keep = torch.as_tensor(keep, dtype=torch.long)
    remove = torch.as_tensor(remove, dtype=torch.long)
    gram, total = gram.double(), total.double()
    mean = total / max(count, 1)
    cov = gram / max(count, 1) - torch.outer(mean, mean)  # population covariance
    if len(keep) == 0:
        return torch.zeros(len(remove), 0, dtype=torch.float64), mean[remove]
    ckk = cov[keep][:, keep]
    crk = cov[remove][:, keep]
    lam = float(ridge) * float(ckk.diagonal().mean().clamp(min=0.0))
    eye = torch.eye(len(keep), dtype=torch.float64)
    reg = ckk + (lam if lam > 0 else 1e-12 * max(float(ckk.diagonal().abs().max()), 1e-30)) * eye
    a = torch.linalg.solve(reg, crk.T).T if len(remove) else torch.zeros(0, len(keep), dtype=torch.float64)
    m = mean[remove] - a @ mean[keep]
    return a, m


def refit_weight(weight: torch.Tensor, a: torch.Tensor, m: torch.Tensor, keep: torch.Tensor,
                 remove: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """New weights of the kept input channels and the constant output shift, given ``x_R ~= A x_K + m``.

    ``weight``: (out, C, kh, kw). Returns (out, K, kh, kw) weights (in ``weight``'s dtype) and (out,) shift.
    """
    w = weight.detach().double()
    w_k, w_r = w[:, keep], w[:, remove]  # (O, K, kh, kw), (O, R, kh, kw)
    new_k = w_k + torch.einsum("orhw,rk->okhw", w_r, a.to(w))
    shift = torch.einsum("orhw,r->o", w_r, m.to(w))
    return new_k.to(weight.dtype), shift.to(weight.dtype)


class InputGram:
    """Per-consumer input statistics (count, sum, Gram in float64) for least-squares compensation.

    Same interface as :class:`~yolo_ldac.pruning.compensate.InputMeans` (``measure`` / ``fold`` / ``drop``), so the
    engine uses either. ``fold`` refits the consumer's kept input weights and moves the constant part into its bias
    or its BN's running mean.
    """

    def __init__(self, stats: dict[nn.Module, list], bn_after: dict[nn.Module, nn.BatchNorm2d], ridge: float = 1e-3):
        self.stats = stats  # conv -> [count, sum (C,), gram (C, C)]
        self.bn_after = bn_after
        self.ridge = ridge

    @classmethod
    @torch.no_grad()
    def measure(cls, model: nn.Module, images: Iterable[torch.Tensor], ridge: float = 1e-3,
                convs: Iterable[nn.Module] | None = None) -> "InputGram":
        """Accumulate the input statistics of ``convs`` (default: every ungrouped ``nn.Conv2d``) over ``images``."""
        convs = [m for m in (convs if convs is not None else model.modules())
                 if isinstance(m, nn.Conv2d) and m.groups == 1]
        stats: dict[nn.Module, list] = {}

        def pre_hook(module, inputs):
            x = inputs[0].detach().double()
            flat = x.transpose(0, 1).reshape(x.shape[1], -1)  # (C, B*H*W)
            st = stats.get(module)
            if st is None:
                st = stats[module] = [0, torch.zeros(x.shape[1], dtype=torch.float64),
                                      torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64)]
            st[0] += flat.shape[1]
            st[1] += flat.sum(1).cpu()
            st[2] += (flat @ flat.T).cpu()

        from yolo_ldac.pruning.compensate import bn_after_convs, run_with_input_hooks

        run_with_input_hooks(model, convs, pre_hook, images)
        return cls(stats, bn_after_convs(model), ridge)

    @property
    def means(self) -> dict[nn.Module, torch.Tensor]:
        return {c: (s[1] / max(s[0], 1)).float() for c, s in self.stats.items()}

    @torch.no_grad()
    def fold(self, conv: nn.Conv2d, removed: list[int], ridge: float | None = None) -> bool:
        """Refit ``conv`` so that it needs no input channel in ``removed``; True if refit.

        The removed columns of the weight are left as they were (the pruner cuts them next).
        """
        if conv not in self.stats or not removed or conv.groups > 1:
            return False
        count, total, gram = self.stats[conv]
        c = conv.weight.shape[1]
        if gram.shape[0] != c:  # statistics out of step with the layer: do nothing rather than something wrong
            return False
        rem = torch.as_tensor(sorted(set(int(i) for i in removed)), dtype=torch.long)
        mask = torch.ones(c, dtype=torch.bool)
        mask[rem] = False
        keep = torch.nonzero(mask).flatten()
        a, m = channel_regression(gram, total, count, keep, rem, self.ridge if ridge is None else ridge)
        new_k, shift = refit_weight(conv.weight, a, m, keep, rem)
        dev = conv.weight.device
        conv.weight[:, keep.to(dev)] = new_k.to(dev)
        from yolo_ldac.pruning.compensate import add_output_shift

        add_output_shift(conv, shift.to(dev), self.bn_after)
        return True

    def drop(self, conv: nn.Module, removed: list[int]) -> None:
        """Forget input channels ``removed`` of ``conv`` so later indices stay aligned after pruning."""
        if conv in self.stats:
            count, total, gram = self.stats[conv]
            keep = torch.ones(len(total), dtype=torch.bool)
            keep[torch.as_tensor(list(removed), dtype=torch.long)] = False
            self.stats[conv] = [count, total[keep], gram[keep][:, keep]]
