"""J from pooled statistics and the true-vs-shuffled-label check (yolo_ldac.ldac.pooled): exact values, milliseconds."""

from __future__ import annotations

import pytest
import torch

from yolo_ldac.ldac.pooled import PooledObjective, label_signal, real_levels
from yolo_ldac.ldac.stats import DiscriminantStats


def _blobs(n: int, c: int, k: int, sep: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k
    centres = torch.randn(k, c, generator=g, dtype=torch.float64) * sep
    return centres[y] + torch.randn(n, c, generator=g, dtype=torch.float64), y


def test_momentum_zero_is_the_batch_objective_and_pooling_adds_the_sums():
    x1, y1 = _blobs(30, 5, 3, 2.0, 0)
    x2, y2 = _blobs(30, 5, 3, 2.0, 1)
    alone = PooledObjective(3, momentum=0.0, rho=0.1)
    alone(x1, y1)
    assert float(alone(x2, y2)) == pytest.approx(DiscriminantStats(3, 5).update(x2, y2).objective(0.1), rel=1e-9)
    pooled = PooledObjective(3, momentum=1.0, rho=0.1)  # momentum 1: plain sums over both batches
    pooled(x1, y1)
    both = DiscriminantStats(3, 5).update(x1, y1).update(x2, y2).objective(0.1)
    assert float(pooled(x2, y2)) == pytest.approx(both, rel=1e-9)


def test_gradient_flows_only_through_the_batch_part():
    x1, y1 = _blobs(30, 4, 2, 2.0, 0)
    obj = PooledObjective(2, momentum=0.9)
    a = x1.clone().requires_grad_(True)
    obj(a, y1).backward()
    b = x1.clone().requires_grad_(True)
    j = obj(b, y1)
    j.backward()
    assert a.grad is not None and b.grad is not None and float(b.grad.abs().sum()) > 0
    assert obj.counts.requires_grad is False and obj.sq.requires_grad is False


def test_label_signal_separates_real_labels_from_noise():
    real = _blobs(120, 16, 4, 3.0, 0)
    noise_x, _ = _blobs(120, 16, 4, 0.0, 1)  # no class structure at all
    noise = (noise_x, real[1])
    (t1, s1), (t2, s2) = label_signal([real, noise], 4, seed=0)
    assert t1 > 2 * s1 and t2 < 2 * s2
    assert real_levels([(t1, s1), (t2, s2)], 2.0) == [True, False]
    assert real_levels([(1.0, 0.0)], 2.0) == [True] and real_levels([(0.0, 0.0)], 2.0) == [False]
