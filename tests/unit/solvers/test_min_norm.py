"""min_norm (exact simplex QP), its KKT residual and the official Frank-Wolfe variant."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from molearn.solvers import kkt_residual_min_norm, min_norm, min_norm_frank_wolfe

quadprog = pytest.importorskip("quadprog")
cp = pytest.importorskip("cvxpy")

TOL = 1e-6


def jac(k: int, p: int, seed: int, rank: int | None = None) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if rank is None:
        return torch.randn(k, p, generator=gen, dtype=torch.float64)
    a = torch.randn(k, rank, generator=gen, dtype=torch.float64)
    return a @ torch.randn(rank, p, generator=gen, dtype=torch.float64)


def quadprog_min_norm(g: torch.Tensor) -> np.ndarray:
    k = g.shape[0]
    c = np.concatenate([np.ones((k, 1)), np.eye(k)], axis=1)
    b = np.concatenate([[1.0], np.zeros(k)])
    return quadprog.solve_qp(g.numpy(), np.zeros(k), c, b, meq=1)[0]


def cvxpy_min_norm_value(j: torch.Tensor) -> float:
    """min ||Jᵀw||² over the simplex, from the factor J (works for singular Gramians)."""
    w = cp.Variable(j.shape[0])
    prob = cp.Problem(cp.Minimize(cp.sum_squares(j.numpy().T @ w)), [w >= 0, cp.sum(w) == 1])
    prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    return float(prob.value)


@pytest.mark.parametrize("k", [2, 3, 5, 10, 20, 40, 64])
def test_matches_quadprog_full_rank(k: int) -> None:
    for seed in range(3):
        j = jac(k, k + 8, seed)
        j = j - (0.4 * seed) * j.mean(0)  # more conflict for larger seeds
        g = j @ j.T
        w = min_norm(g)
        assert kkt_residual_min_norm(g, w) <= TOL
        torch.testing.assert_close(w, torch.from_numpy(quadprog_min_norm(g)), atol=1e-6, rtol=0)


@pytest.mark.parametrize(("k", "rank"), [(3, 1), (5, 2), (10, 3), (16, 5), (32, 8), (40, 13), (64, 20)])
def test_rank_deficient_objective_matches_cvxpy(k: int, rank: int) -> None:
    for seed in range(2):
        j = jac(k, 30, 100 + seed, rank)
        g = j @ j.T
        w = min_norm(g)
        res = kkt_residual_min_norm(g, w)
        assert res <= TOL, f"residual {res}"
        value = float(w @ g @ w)
        scale = float(g.diagonal().max())
        ref = cvxpy_min_norm_value(j)
        assert abs(value - ref) <= 1e-6 * scale
        # the direction's squared norm, from J, is the same (the weights need not be unique)
        assert abs(float((w @ j).norm() ** 2) - ref) <= 1e-6 * scale


@pytest.mark.parametrize("k", [3, 10, 40])
def test_badly_scaled_gramians(k: int) -> None:
    j = jac(k, 2 * k, 7)
    perm = torch.randperm(k, generator=torch.Generator().manual_seed(0))
    rows = torch.logspace(-3, 3, k, dtype=torch.float64)[perm]
    g0 = (rows[:, None] * j) @ (rows[:, None] * j).T
    w0 = min_norm(g0)
    assert kkt_residual_min_norm(g0, w0) <= TOL
    for e in (-15, -8, 8, 15):
        g = g0 * 10.0**e
        w = min_norm(g)
        assert kkt_residual_min_norm(g, w) <= TOL
        torch.testing.assert_close(w, w0, atol=1e-9, rtol=0)


def test_batched_equals_single_and_keeps_leading_dims() -> None:
    gs = torch.stack([jac(6, 9, s) @ jac(6, 9, s).T for s in range(6)]).reshape(2, 3, 6, 6)
    w = min_norm(gs)
    assert w.shape == (2, 3, 6)
    for a in range(2):
        for b in range(3):
            torch.testing.assert_close(w[a, b], min_norm(gs[a, b]), atol=1e-12, rtol=0)


def test_k2_closed_form_and_zero_rows() -> None:
    for seed in range(5):
        j = jac(2, 5, seed)
        g = j @ j.T
        w1 = ((g[1, 1] - g[0, 1]) / (g[0, 0] + g[1, 1] - 2 * g[0, 1])).clamp(0, 1)
        torch.testing.assert_close(min_norm(g), torch.stack([w1, 1 - w1]), atol=1e-10, rtol=0)
    j = jac(4, 6, 0)
    j[2] = 0
    w = min_norm(j @ j.T)
    torch.testing.assert_close(w, torch.tensor([0.0, 0.0, 1.0, 0.0], dtype=torch.float64))


def test_zero_gramian_and_k1_are_finite() -> None:
    w = min_norm(torch.zeros(4, 4, dtype=torch.float64))
    torch.testing.assert_close(w, torch.full((4,), 0.25, dtype=torch.float64))
    assert min_norm(torch.tensor([[3.0]])).item() == 1.0


def test_float32_input_is_solved_in_float64() -> None:
    j = jac(5, 8, 1)
    g = j @ j.T
    assert min_norm(g.float()).dtype == torch.float64
    torch.testing.assert_close(min_norm(g.float()), min_norm(g), atol=1e-5, rtol=0)


def test_kkt_residual_detects_non_optimal_weights() -> None:
    j = jac(6, 10, 3)
    j = j - 0.8 * j.mean(0)
    g = j @ j.T
    w = min_norm(g)
    assert kkt_residual_min_norm(g, w) <= TOL
    assert kkt_residual_min_norm(g, torch.full((6,), 1 / 6, dtype=torch.float64)) > 1e-3
    assert kkt_residual_min_norm(g, w * 1.01) > 1e-3  # off the simplex


def test_frank_wolfe_is_close_to_exact_and_official_for_k2() -> None:
    for k in (3, 5, 10):
        j = jac(k, 2 * k, k)
        g = j @ j.T
        w_fw = min_norm_frank_wolfe(g)
        w = min_norm(g)
        assert float(w_fw @ g @ w_fw) <= float(w @ g @ w) * (1 + 1e-3) + 1e-12
        assert (w_fw.sum() - 1).abs() < 1e-12 and (w_fw >= 0).all()
    # K = 2, one gradient dominates: the official code returns 0.999 / 0.001, not 1 / 0
    g = torch.tensor([[1.0, 2.0], [2.0, 9.0]], dtype=torch.float64)
    torch.testing.assert_close(min_norm_frank_wolfe(g), torch.tensor([0.999, 0.001], dtype=torch.float64))
    torch.testing.assert_close(min_norm(g), torch.tensor([1.0, 0.0], dtype=torch.float64))
