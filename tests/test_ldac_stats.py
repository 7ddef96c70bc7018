"""LDAC math: discriminant statistics, objective, directions and location-aware samples (fast, no Ultralytics)."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from yolo_ldac.ldac.sampling import box_samples
from yolo_ldac.ldac.stats import DiscriminantStats, batch_objective


def np_reference(x: np.ndarray, y: np.ndarray, K: int, rho: float):
    """Independent float64 reference from the definitions."""
    x = x.astype(np.float64)
    N, C = x.shape
    mu = x.mean(0)
    Sw = np.zeros((C, C))
    Sb = np.zeros((C, C))
    for k in range(K):
        xk = x[y == k]
        if len(xk) == 0:
            continue
        mk = xk.mean(0)
        Sw += (xk - mk).T @ (xk - mk)
        Sb += len(xk) * np.outer(mk - mu, mk - mu)
    Sw /= N
    Sb /= N
    St = (x - mu).T @ (x - mu) / N
    A = Sw + rho * np.mean(np.diag(Sw)) * np.eye(C)
    J = np.trace(np.linalg.solve(A, Sb))
    return Sw, Sb, St, J


def rand_data(N=200, C=12, K=5, seed=0, shift=1.0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, K, (N,), generator=g)
    centers = torch.randn(K, C, generator=g, dtype=torch.float64) * shift
    x = centers[y] + torch.randn(N, C, generator=g, dtype=torch.float64)
    return x, y


def relerr(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


@pytest.mark.parametrize("N,C,K", [(200, 12, 5), (15, 20, 3)])  # second case: N < C, the ridge matters
def test_stats_match_numpy_reference(N, C, K):
    x, y = rand_data(N, C, K, seed=1)
    rho = 1e-3
    s = DiscriminantStats(K).update(x, y)
    Sw, Sb, St = s.scatter()
    rSw, rSb, rSt, rJ = np_reference(x.numpy(), y.numpy(), K, rho)
    assert relerr(Sw, rSw) <= 1e-6
    assert relerr(Sb, rSb) <= 1e-6
    assert relerr(St, rSt) <= 1e-6
    assert abs(s.objective(rho) - rJ) / abs(rJ) <= 1e-6
    assert s.num_samples == N


def test_float32_input_accumulates_in_float64():
    x, y = rand_data(100, 8, 4, seed=2)
    s = DiscriminantStats(4).update(x.float(), y)
    assert s.sq_sum.dtype == torch.float64
    _, _, _, rJ = np_reference(x.float().numpy(), y.numpy(), 4, 1e-3)
    assert abs(s.objective() - rJ) / rJ <= 1e-6


def test_one_pass_equals_merge_of_batches():
    x, y = rand_data(300, 10, 6, seed=3)
    full = DiscriminantStats(6).update(x, y)
    parts = [DiscriminantStats(6).update(x[i : i + 37], y[i : i + 37]) for i in range(0, 300, 37)]
    merged = DiscriminantStats(6)
    for p in parts:
        merged.merge(p)
    acc = DiscriminantStats(6, num_channels=10)
    for i in range(0, 300, 50):
        acc.update(x[i : i + 50], y[i : i + 50])
    for other in (merged, acc):
        for a, b in zip(full.scatter(), other.scatter()):
            assert torch.allclose(a, b, rtol=0, atol=1e-10)
        assert abs(full.objective() - other.objective()) <= 1e-10 * max(1.0, abs(full.objective()))
    # all_reduce is a no-op without an initialised process group
    before = full.objective()
    full.all_reduce()
    assert full.objective() == before


def test_channel_utility_ranks_signal_channels_on_top():
    g = torch.Generator().manual_seed(4)
    N, C, K = 600, 16, 4
    signal = [2, 7, 11]
    y = torch.randint(0, K, (N,), generator=g)
    x = torch.randn(N, C, generator=g, dtype=torch.float64)
    means = torch.randn(K, len(signal), generator=g, dtype=torch.float64) * 3.0
    x[:, signal] += means[y]
    s = DiscriminantStats(K).update(x, y)
    evals, W = s.directions()
    assert evals.shape == (K - 1,) and W.shape == (C, K - 1)
    assert torch.all(evals[:-1] >= evals[1:])
    assert torch.allclose(W.norm(dim=0), torch.ones(K - 1, dtype=torch.float64))
    # generalised eigen-equation holds: Sb w = lambda (Sw + rho' I) w
    Sw, Sb, _ = s.scatter()
    r = 1e-3 * torch.diagonal(Sw).mean()
    lhs = Sb @ W
    rhs = (Sw + r * torch.eye(C, dtype=torch.float64)) @ W * evals
    assert torch.allclose(lhs, rhs, atol=1e-8)
    u = s.channel_utility()
    assert u.shape == (C,) and torch.all(u >= 0)
    top = set(torch.topk(u, len(signal)).indices.tolist())
    assert top == set(signal)
    # q is capped at K-1 (present classes - 1)
    assert s.directions(q=100)[0].shape == (K - 1,)
    assert s.directions(q=1)[1].shape == (C, 1)


def test_single_class_gives_zero_and_no_nan():
    x = torch.randn(50, 6, dtype=torch.float64)
    y = torch.full((50,), 2, dtype=torch.long)
    s = DiscriminantStats(4).update(x, y)
    assert s.objective() == 0.0
    u = s.channel_utility()
    assert u.shape == (6,) and torch.all(u == 0) and not torch.isnan(u).any()
    Sw, Sb, St = s.scatter()
    assert not torch.isnan(Sw).any() and torch.allclose(Sb, torch.zeros_like(Sb))
    xb = x.clone().requires_grad_(True)
    J = batch_objective(xb, y, 4)
    assert float(J.detach()) == 0.0
    J.backward()
    assert xb.grad is not None and not torch.isnan(xb.grad).any()
    # empty accumulator with known channels
    e = DiscriminantStats(3, num_channels=5)
    assert e.objective() == 0.0 and torch.all(e.channel_utility() == 0)


def test_absent_classes_ignored():
    x, y = rand_data(120, 7, 3, seed=5)
    y = y * 2  # labels 0, 2, 4 of K=6: classes 1, 3, 5 absent
    s = DiscriminantStats(6).update(x, y)
    _, _, _, rJ = np_reference(x.numpy(), y.numpy(), 6, 1e-3)
    assert abs(s.objective() - rJ) / rJ <= 1e-6
    assert s.directions()[0].shape == (2,)


def test_batch_objective_matches_stats_and_sgd_step_increases_J():
    x, y = rand_data(80, 10, 4, seed=6, shift=0.3)
    s = DiscriminantStats(4).update(x, y)
    J = batch_objective(x, y, 4)
    assert J.dtype == torch.float64
    assert abs(float(J) - s.objective()) / s.objective() <= 1e-6

    torch.manual_seed(0)
    P = (torch.eye(10, dtype=torch.float64) + 0.1 * torch.randn(10, 10, dtype=torch.float64)).requires_grad_(True)
    J0 = batch_objective(x @ P, y, 4)
    (-J0).backward()
    assert P.grad is not None and torch.isfinite(P.grad).all() and P.grad.abs().sum() > 0
    with torch.no_grad():
        P1 = P - 1e-3 * P.grad / P.grad.norm()
        J1 = batch_objective(x @ P1, y, 4)
    assert float(J1) > float(J0.detach())
    # float32 path runs in float32
    assert batch_objective(x.float(), y, 4).dtype == torch.float32


def test_label_validation():
    with pytest.raises(ValueError):
        DiscriminantStats(3).update(torch.randn(4, 2), torch.tensor([0, 1, 2, 3]))


# ---------------------------------------------------------------------------------------- sampling
def feat_map():
    # 1 x 2 x 4 x 4, stride 8 (32 x 32 image); cell centres at 4, 12, 20, 28
    c0 = torch.arange(16, dtype=torch.float64).reshape(4, 4)  # value = 4*i + j
    c1 = -c0 * 10.0
    return torch.stack([c0, c1])[None]


def test_box_samples_exact_vectors():
    f = feat_map().requires_grad_(True)
    boxes = torch.tensor(
        [
            [9.0, 17.0, 11.0, 19.0],  # inside cell (i=2, j=1), covers no centre -> that cell
            [4.0, 4.0, 12.0, 12.0],  # spans the 2x2 centres (0,0),(0,1),(1,0),(1,1), inclusive bounds
            [25.0, 0.0, 40.0, 8.0],  # image border, partly outside: centre (28, 4) -> cell (0, 3)
            [30.0, 30.0, 31.0, 31.0],  # tiny box in the corner, no centre -> cell (3, 3)
            [-10.0, -10.0, -2.0, -2.0],  # outside the map -> centre clamped to cell (0, 0)
        ],
        dtype=torch.float64,
    )
    bi = torch.zeros(5, dtype=torch.long)
    v = box_samples(f, 8, boxes, bi)
    expected = torch.tensor(
        [[9.0, -90.0], [5.0, 0.0], [3.0, -30.0], [15.0, -150.0], [0.0, 0.0]], dtype=torch.float64
    )
    assert torch.equal(v, expected)
    vm = box_samples(f, 8, boxes, bi, pool="mean")
    expected_mean = torch.tensor(
        [[9.0, -90.0], [2.5, -25.0], [3.0, -30.0], [15.0, -150.0], [0.0, 0.0]], dtype=torch.float64
    )
    assert torch.allclose(vm, expected_mean)
    # gradients flow to feat
    v.sum().backward()
    assert f.grad is not None and float(f.grad.abs().sum()) > 0
    assert f.grad[0, 0, 2, 1] == 1.0  # max cell of box 0, channel 0


def test_box_samples_batch_index_and_empty():
    f = torch.cat([feat_map(), feat_map() + 100.0])
    v = box_samples(f, 8, torch.tensor([[4.0, 4.0, 12.0, 12.0]] * 2), torch.tensor([0, 1]))
    assert torch.equal(v[1] - v[0], torch.tensor([100.0, 100.0], dtype=torch.float64))
    e = box_samples(f, 8, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    assert e.shape == (0, 2)
    with pytest.raises(ValueError):
        box_samples(f, 8, torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([2]))
    with pytest.raises(ValueError):
        box_samples(f, 8, torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([0]), pool="median")


def test_no_ultralytics_import():
    import subprocess
    import sys

    code = (
        "import sys, yolo_ldac.ldac.stats, yolo_ldac.ldac.sampling; "
        "assert 'ultralytics' not in sys.modules, 'ultralytics imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_batch_objective_sw_prior_mixing():
    import torch

    from yolo_ldac.ldac.stats import batch_objective, within_scatter

    g = torch.Generator().manual_seed(1)
    x = torch.randn(30, 5, generator=g, dtype=torch.float64)
    y = torch.arange(30) % 3
    sw = within_scatter(x, y, 3)
    # mixing the batch's own Sw changes nothing; a larger prior Sw lowers J
    assert float(batch_objective(x, y, 3, sw_prior=sw, prior_weight=0.5)) == pytest.approx(float(batch_objective(x, y, 3)))
    assert float(batch_objective(x, y, 3, sw_prior=4 * sw, prior_weight=0.5)) < float(batch_objective(x, y, 3))
