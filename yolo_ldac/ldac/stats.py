"""Discriminant statistics for LDAC (METHOD.md, "Discriminant statistics and objective").

Pure torch; never imports Ultralytics.

From samples X (N x C) with labels y in [0, K):
    mu_k  class means, mu the global mean,
    St = (1/N) sum_i (x_i - mu)(x_i - mu)^T                         (total scatter)
    Sb = sum_k (n_k / N) (mu_k - mu)(mu_k - mu)^T                     (between-class scatter)
    Sw = St - Sb = (1/N) sum_i (x_i - mu_{y_i})(x_i - mu_{y_i})^T     (within-class scatter)
    J  = trace((Sw + rho' I)^-1 Sb),  rho' = rho * mean(diag(Sw))      (solve, never invert)

`DiscriminantStats` keeps only sums (float64), so it accumulates over batches (`update`, `merge`) and over
distributed ranks (`all_reduce`): class counts (K), class sums (K x C) and the total second-moment sum (C x C).
The scatters are derived from those sums. Note: St = S2/N - mu mu^T loses precision when |mu| is much
larger than the spread of the features; float64 keeps this harmless for network activations.

`batch_objective` computes the same J from one batch in the input dtype, differentiably (for L_LD = -J).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

__all__ = ["DiscriminantStats", "batch_objective", "ridge_value"]

_TINY = 1e-12


def ridge_value(Sw: Tensor, St: Optional[Tensor], rho: float) -> Tensor:
    """The absolute ridge rho' = rho * mean(diag(Sw)); falls back to St's diagonal, then a tiny floor."""
    r = rho * torch.diagonal(Sw).mean()
    if St is not None:
        r_t = rho * torch.diagonal(St).mean()
        r = torch.where(r > 0, r, r_t)
    return torch.clamp(r, min=_TINY)


def _check_xy(x: Tensor, y: Tensor, num_classes: int) -> None:
    if x.dim() != 2:
        raise ValueError(f"x must be (N, C), got shape {tuple(x.shape)}")
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"y must be (N,) matching x, got {tuple(y.shape)} for x {tuple(x.shape)}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{int(y.min())}, {int(y.max())}]")


class DiscriminantStats:
    """Accumulable discriminant statistics of one feature level.

    Args:
        num_classes: K, the number of class labels (labels lie in [0, K)).
        num_channels: C; if None it is taken from the first `update` (it must be known before
            `all_reduce` on a rank that saw no samples).
        device: where the float64 sums live (default: the device of the first update, else CPU).
    """

    def __init__(self, num_classes: int, num_channels: Optional[int] = None, device=None):
        if num_classes < 1:
            raise ValueError("num_classes must be >= 1")
        self.num_classes = int(num_classes)
        self.num_channels: Optional[int] = None
        self.counts: Optional[Tensor] = None  # (K,)   float64
        self.sums: Optional[Tensor] = None  # (K, C) float64
        self.sq_sum: Optional[Tensor] = None  # (C, C) float64, sum_i x_i x_i^T
        self._device = device
        if num_channels is not None:
            self._init(int(num_channels), device if device is not None else "cpu")

    # ------------------------------------------------------------------ accumulation
    def _init(self, C: int, device) -> None:
        K = self.num_classes
        self.num_channels = C
        self.counts = torch.zeros(K, dtype=torch.float64, device=device)
        self.sums = torch.zeros(K, C, dtype=torch.float64, device=device)
        self.sq_sum = torch.zeros(C, C, dtype=torch.float64, device=device)

    def reset(self) -> None:
        if self.num_channels is not None:
            self.counts.zero_()
            self.sums.zero_()
            self.sq_sum.zero_()

    @property
    def num_samples(self) -> int:
        return 0 if self.counts is None else int(round(float(self.counts.sum())))

    @torch.no_grad()
    def update(self, x: Tensor, y: Tensor) -> "DiscriminantStats":
        """Add samples x (N x C) with integer labels y (N,). Gradients are not tracked."""
        _check_xy(x, y, self.num_classes)
        if self.num_channels is None:
            self._init(x.shape[1], self._device if self._device is not None else x.device)
        elif x.shape[1] != self.num_channels:
            raise ValueError(f"expected {self.num_channels} channels, got {x.shape[1]}")
        if x.shape[0] == 0:
            return self
        dev = self.counts.device
        xd = x.detach().to(device=dev, dtype=torch.float64)
        yd = y.detach().to(device=dev, dtype=torch.long)
        self.counts += torch.bincount(yd, minlength=self.num_classes).to(torch.float64)
        self.sums.index_add_(0, yd, xd)
        self.sq_sum += xd.T @ xd
        return self

    def merge(self, other: "DiscriminantStats") -> "DiscriminantStats":
        """Add another accumulator's sums into this one (in place); returns self."""
        if other.num_classes != self.num_classes:
            raise ValueError("cannot merge statistics with different numbers of classes")
        if other.num_channels is None:
            return self
        if self.num_channels is None:
            self._init(other.num_channels, other.counts.device)
        elif other.num_channels != self.num_channels:
            raise ValueError("cannot merge statistics with different numbers of channels")
        dev = self.counts.device
        self.counts += other.counts.to(dev)
        self.sums += other.sums.to(dev)
        self.sq_sum += other.sq_sum.to(dev)
        return self

    @torch.no_grad()
    def all_reduce(self) -> "DiscriminantStats":
        """Sum the statistics over distributed ranks (no-op unless torch.distributed is initialised)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self
        if self.num_channels is None:
            raise RuntimeError("num_channels must be known before all_reduce (pass it to the constructor)")
        K, C = self.num_classes, self.num_channels
        flat = torch.cat([self.counts, self.sums.reshape(-1), self.sq_sum.reshape(-1)])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        self.counts.copy_(flat[:K])
        self.sums.copy_(flat[K : K + K * C].view(K, C))
        self.sq_sum.copy_(flat[K + K * C :].view(C, C))
        return self

    # ------------------------------------------------------------------ derived quantities
    @property
    def num_present_classes(self) -> int:
        return 0 if self.counts is None else int((self.counts > 0).sum())

    def means(self) -> Tuple[Tensor, Tensor]:
        """(class means K x C (zeros for absent classes), global mean C)."""
        self._require()
        N = self.counts.sum().clamp(min=1.0)
        mu_k = self.sums / self.counts.clamp(min=1.0)[:, None]
        mu = self.sums.sum(0) / N
        return mu_k, mu

    def scatter(self) -> Tuple[Tensor, Tensor, Tensor]:
        """(Sw, Sb, St), each C x C float64, normalised by the total count N."""
        self._require()
        N = self.counts.sum()
        C = self.num_channels
        if float(N) <= 0:
            z = torch.zeros(C, C, dtype=torch.float64, device=self.counts.device)
            return z, z.clone(), z.clone()
        mu_k, mu = self.means()
        St = self.sq_sum / N - torch.outer(mu, mu)
        d = (mu_k - mu) * torch.sqrt(self.counts / N)[:, None]  # rows of absent classes are 0
        Sb = d.T @ d
        St = 0.5 * (St + St.T)
        Sw = St - Sb
        Sw = 0.5 * (Sw + Sw.T)
        return Sw, Sb, St

    def objective(self, rho: float = 1e-3) -> float:
        """J = trace((Sw + rho * mean(diag(Sw)) I)^-1 Sb); 0.0 when fewer than 2 classes are present."""
        if self.num_present_classes < 2:
            return 0.0
        Sw, Sb, St = self.scatter()
        A = Sw + ridge_value(Sw, St, rho) * torch.eye(self.num_channels, dtype=Sw.dtype, device=Sw.device)
        return float(torch.trace(torch.linalg.solve(A, Sb)))

    def directions(self, q: Optional[int] = None, rho: float = 1e-3) -> Tuple[Tensor, Tensor]:
        """Top-q solutions of Sb w = lambda (Sw + rho' I) w, q <= (present classes) - 1.

        Solved by Cholesky whitening: L = chol(Sw + rho' I), eigh(L^-1 Sb L^-T) (triangular solves),
        w = L^-T v. Returns (eigvals (q,) descending, clamped >= 0; W (C x q), unit-norm columns).
        Fewer than 2 present classes give empty results.
        """
        self._require()
        C = self.num_channels
        dev = self.counts.device
        q_max = max(self.num_present_classes - 1, 0)
        q = q_max if q is None else max(0, min(int(q), q_max, C))
        if q == 0:
            return torch.zeros(0, dtype=torch.float64, device=dev), torch.zeros(C, 0, dtype=torch.float64, device=dev)
        Sw, Sb, St = self.scatter()
        eye = torch.eye(C, dtype=Sw.dtype, device=dev)
        r = ridge_value(Sw, St, rho)
        for _ in range(8):  # Sw from St - Sb can be slightly indefinite: grow the ridge until PD
            L, info = torch.linalg.cholesky_ex(Sw + r * eye)
            if int(info) == 0:
                break
            r = r * 10.0
        else:
            raise RuntimeError("within-class scatter is not positive definite even with a large ridge")
        A = torch.linalg.solve_triangular(L, Sb, upper=False)  # L^-1 Sb
        M = torch.linalg.solve_triangular(L, A.T, upper=False)  # L^-1 Sb L^-T (Sb symmetric)
        M = 0.5 * (M + M.T)
        evals, V = torch.linalg.eigh(M)  # ascending
        evals = evals.flip(0)[:q].clamp(min=0.0)
        V = V.flip(1)[:, :q]
        W = torch.linalg.solve_triangular(L.T, V, upper=True)  # w = L^-T v
        W = W / W.norm(dim=0, keepdim=True).clamp(min=_TINY)
        return evals, W

    def channel_utility(self, q: Optional[int] = None, rho: float = 1e-3) -> Tensor:
        """u_c = sum_j lambda_j |W_cj| over the kept directions (float64, C); zeros with < 2 classes."""
        evals, W = self.directions(q=q, rho=rho)
        return W.abs() @ evals

    def _require(self) -> None:
        if self.num_channels is None:
            raise RuntimeError("no statistics yet: call update() first or pass num_channels")


def batch_objective(x: Tensor, y: Tensor, num_classes: int, rho: float = 1e-3, sw_prior: Optional[Tensor] = None,
                    prior_weight: float = 0.0) -> Tensor:
    """Differentiable J of one batch, in x's dtype (scalar; gradients flow to x).

    Same definition as `DiscriminantStats.objective` (Sw computed directly from class-centred samples).
    Returns a zero that is still attached to x's graph when fewer than 2 classes are present.
    ``sw_prior`` (a running estimate of Sw, no gradient) is mixed in as
    ``(1 - prior_weight) * Sw_batch + prior_weight * sw_prior`` for batches with too few samples per class.
    """
    _check_xy(x, y, num_classes)
    y = y.to(device=x.device, dtype=torch.long)
    N, C = x.shape
    counts = torch.bincount(y, minlength=num_classes).to(x.dtype)
    if int((counts > 0).sum()) < 2:
        return x.sum() * 0.0
    sums = torch.zeros(num_classes, C, dtype=x.dtype, device=x.device).index_add(0, y, x)
    mu_k = sums / counts.clamp(min=1.0)[:, None]
    mu = x.mean(0)
    xc = x - mu
    St = xc.T @ xc / N
    xw = x - mu_k[y]
    Sw = xw.T @ xw / N
    d = (mu_k - mu) * torch.sqrt(counts / N)[:, None]
    Sb = d.T @ d
    if sw_prior is not None and prior_weight > 0:
        Sw = (1 - prior_weight) * Sw + prior_weight * sw_prior.detach().to(Sw)
    A = Sw + ridge_value(Sw, St, rho) * torch.eye(C, dtype=x.dtype, device=x.device)
    return torch.trace(torch.linalg.solve(A, Sb))


def within_scatter(x: Tensor, y: Tensor, num_classes: int) -> Tensor:
    """Sw of one batch (class-centred second moment, normalised by the sample count), without gradient."""
    x = x.detach()
    y = y.to(device=x.device, dtype=torch.long)
    counts = torch.bincount(y, minlength=num_classes).to(x.dtype).clamp(min=1.0)
    mu_k = torch.zeros(num_classes, x.shape[1], dtype=x.dtype, device=x.device).index_add(0, y, x) / counts[:, None]
    xw = x - mu_k[y]
    return xw.T @ xw / max(len(x), 1)
