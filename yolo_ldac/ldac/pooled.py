"""J from pooled statistics, and the check that it measures the labels rather than noise (METHOD.md, "Only a real
statistic may push").

One batch holds 17-28 boxes, 2-3 per class, in 64-256 channels: its J is about the same with shuffled labels.
:class:`PooledObjective` keeps, per level, an exponential moving average of the *sums* that define the scatters
(class counts, class sums, the second-moment sum), adds the current batch's sums with their gradient, and computes
``J = trace((Sw + rho' I)^-1 Sb)`` from the pooled sums (float64), so a batch is judged against what ~``1 / (1 -
momentum)`` batches saw. :func:`label_signal` compares J with the true labels and with shuffled labels on the
calibration samples; :func:`real_levels` keeps the levels where the true J is at least ``min_ratio`` times the
shuffled one.

Under ``torch.distributed`` (Ultralytics' multi-GPU training) each rank sees its own part of every batch: the
batch's sums are all-reduced (summed) over the ranks before they enter the EMA (:func:`world_sums`), so every rank
holds the same pooled sums, computes the same J and pushes towards the same directions; the gradient flows through
the rank's own samples only (DDP then combines the ranks' gradients).

Pure torch; never imports Ultralytics.

Example:
    >>> g = torch.Generator().manual_seed(0)
    >>> y = torch.arange(60) % 3
    >>> x = torch.randn(60, 4, generator=g) + 3 * torch.nn.functional.one_hot(y, 4).double()
    >>> true, shuffled = label_signal([(x, y)], 3, seed=0)[0]
    >>> true > 2 * shuffled
    True
"""

from __future__ import annotations

import torch
from torch import Tensor

from yolo_ldac.ldac.stats import DiscriminantStats, ridge_value


def distributed() -> bool:
    """True in a training forward inside an initialised process group of more than one rank.

    Every rank runs each training forward; Ultralytics validates on rank 0 alone, under no_grad, and an all-reduce
    there would wait for ranks that never come: so autograd must be on too.
    """
    import torch.distributed as dist

    return (torch.is_grad_enabled() and dist.is_available() and dist.is_initialized()
            and dist.get_world_size() > 1)


def world_sums(counts: Tensor, sums: Tensor, sq: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The scatter sums summed over all ranks (unchanged unless :func:`distributed`).

    Each result's value is the all-reduced sum exactly; its gradient is that of this rank's own term (the other
    ranks' samples are constants here).
    """
    if not distributed():
        return counts, sums, sq
    import torch.distributed as dist

    k, c = sums.shape
    flat = torch.cat([counts.detach().reshape(-1), sums.detach().reshape(-1), sq.detach().reshape(-1)])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    total_counts, total_sums, total_sq = flat[:k], flat[k:k + k * c].view(k, c), flat[k + k * c:].view(c, c)
    # value: the world's sum; gradient: this rank's (x - x.detach() is exactly zero)
    return (total_counts, total_sums + (sums - sums.detach()), total_sq + (sq - sq.detach()))


def _objective_from_sums(counts: Tensor, sums: Tensor, sq: Tensor, rho: float) -> Tensor:
    n = counts.sum().clamp(min=1.0)
    mu_k = sums / counts.clamp(min=1.0)[:, None]
    mu = sums.sum(0) / n
    st = sq / n - torch.outer(mu, mu)
    d = (mu_k - mu) * torch.sqrt(counts / n)[:, None]
    sb = d.T @ d
    sw = st - sb
    eye = torch.eye(sq.shape[0], dtype=sq.dtype, device=sq.device)
    return torch.trace(torch.linalg.solve(sw + ridge_value(sw, st, rho) * eye, sb))


class PooledObjective:
    """Differentiable J of one level from an EMA of the scatter sums plus the current batch's (summed over the
    ranks under ``torch.distributed``; then every rank must call it for every batch, also with no samples).

    Args:
        num_classes: labels lie in ``[0, num_classes)``.
        momentum: weight of the past in the EMA of the sums (0: the batch alone).
        rho: the ridge, relative to the mean diagonal of Sw.

    Example:
        >>> obj = PooledObjective(2, momentum=0.5)
        >>> x = torch.tensor([[0., 0.], [0., 1.], [4., 0.], [4., 1.]], requires_grad=True)
        >>> j = obj(x, torch.tensor([0, 0, 1, 1]))
        >>> j.requires_grad, round(float(obj.counts.sum()), 1)
        (True, 4.0)
    """

    def __init__(self, num_classes: int, momentum: float = 0.9, rho: float = 0.1):
        self.num_classes = int(num_classes)
        self.momentum = float(momentum)
        self.rho = float(rho)
        self.counts: Tensor | None = None
        self.sums: Tensor | None = None
        self.sq: Tensor | None = None

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        x64 = x.double()
        y = y.to(device=x.device, dtype=torch.long)
        c = x.shape[1]
        counts = torch.bincount(y, minlength=self.num_classes).double()
        sums = torch.zeros(self.num_classes, c, dtype=torch.float64, device=x.device).index_add(0, y, x64)
        sq = x64.T @ x64
        counts, sums, sq = world_sums(counts, sums, sq)  # every rank: the same sums (a no-op on one process)
        if self.counts is not None and self.sq.shape == sq.shape and self.counts.device == counts.device:
            m = self.momentum
            counts, sums, sq = m * self.counts + counts, m * self.sums + sums, m * self.sq + sq
        self.counts, self.sums, self.sq = counts.detach(), sums.detach(), sq.detach()
        if int((counts > 0).sum()) < 2:
            return x.sum() * 0.0
        return _objective_from_sums(counts, sums, sq, self.rho).to(x.dtype)


def label_signal(samples: list[tuple[Tensor, Tensor]], num_classes: int, rho: float = 0.1,
                 seed: int = 0) -> list[tuple[float, float]]:
    """``(J with the true labels, J with the labels shuffled)`` per level, from all of ``samples`` pooled.

    ``samples``: one ``(x (N, C), y (N,))`` per level (concatenate the calibration batches first).
    """
    g = torch.Generator().manual_seed(int(seed))
    out = []
    for x, y in samples:
        if len(y) < 2 or int(torch.unique(y).numel()) < 2:
            out.append((0.0, 0.0))
            continue
        true = DiscriminantStats(num_classes, x.shape[1]).update(x.double().cpu(), y.cpu()).objective(rho)
        perm = torch.randperm(len(y), generator=g)
        shuf = DiscriminantStats(num_classes, x.shape[1]).update(x.double().cpu(), y.cpu()[perm]).objective(rho)
        out.append((float(true), float(shuf)))
    return out


def real_levels(signal: list[tuple[float, float]], min_ratio: float = 2.0) -> list[bool]:
    """True for the levels whose J with true labels is at least ``min_ratio`` times J with shuffled labels.

    Example:
        >>> real_levels([(10.0, 2.0), (3.0, 2.0), (0.0, 0.0)])
        [True, False, False]
    """
    return [t > 0 and t >= min_ratio * s for t, s in signal]
