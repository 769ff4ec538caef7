"""project_dual_cone (argmin_{v ≥ u} vᵀGv, batched) and its KKT residual."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from molearn.solvers import kkt_residual_dual_cone, project_dual_cone

quadprog = pytest.importorskip("quadprog")
cp = pytest.importorskip("cvxpy")

TOL = 1e-6


def jac(k: int, p: int, seed: int, rank: int | None = None) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if rank is None:
        return torch.randn(k, p, generator=gen, dtype=torch.float64)
    a = torch.randn(k, rank, generator=gen, dtype=torch.float64)
    return a @ torch.randn(rank, p, generator=gen, dtype=torch.float64)


def quadprog_project(g: torch.Tensor, u: torch.Tensor) -> np.ndarray:
    k = g.shape[0]
    return quadprog.solve_qp(g.numpy(), np.zeros(k), np.eye(k), u.numpy())[0]


def cvxpy_value(j: torch.Tensor, u: torch.Tensor) -> float:
    v = cp.Variable(j.shape[0])
    prob = cp.Problem(cp.Minimize(cp.sum_squares(j.numpy().T @ v)), [v >= u.numpy()])
    prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    return float(prob.value)


def upgrad_rows(k: int) -> torch.Tensor:
    return torch.eye(k, dtype=torch.float64) / k


@pytest.mark.parametrize("k", [2, 3, 5, 10, 20, 40, 64])
def test_matches_quadprog_regularised(k: int) -> None:
    """The UPGrad/DualProj setting: trace-normalised Gramian + 1e-4·I, all K rows in one batch."""
    for seed in range(2):
        j = jac(k, k + 5, seed)
        j = j - 0.6 * seed * j.mean(0)
        g = j @ j.T
        g = g / g.trace() + 1e-4 * torch.eye(k, dtype=torch.float64)
        gen = torch.Generator().manual_seed(seed)
        u = torch.cat([upgrad_rows(k), torch.randn(3, k, generator=gen, dtype=torch.float64)])
        v = project_dual_cone(g, u)
        assert v.shape == u.shape
        assert kkt_residual_dual_cone(g, u, v).max() <= TOL
        ref = torch.from_numpy(np.stack([quadprog_project(g, row) for row in u]))
        torch.testing.assert_close(v, ref, atol=1e-6 * float(u.abs().max()), rtol=0)


@pytest.mark.parametrize(("k", "rank"), [(3, 1), (5, 2), (8, 3), (10, 4)])
def test_rank_deficient_objective_matches_cvxpy(k: int, rank: int) -> None:
    for seed in range(2):
        j = jac(k, 20, 50 + seed, rank)
        g = j @ j.T
        u = upgrad_rows(k)
        v = project_dual_cone(g, u)
        assert kkt_residual_dual_cone(g, u, v).max() <= TOL
        scale = float(g.diagonal().max())
        for row in range(k):
            value = float(v[row] @ g @ v[row])
            assert abs(value - cvxpy_value(j, u[row])) <= 1e-6 * scale / k**2


@pytest.mark.parametrize(("k", "rank"), [(16, 5), (32, 8), (64, 20)])
def test_rank_deficient_regularised_large_k(k: int, rank: int) -> None:
    j = jac(k, 40, 9, rank)
    g = j @ j.T
    g = g / g.trace() + 1e-4 * torch.eye(k, dtype=torch.float64)
    u = upgrad_rows(k)
    v = project_dual_cone(g, u)
    assert kkt_residual_dual_cone(g, u, v).max() <= TOL


def test_scale_invariance_and_badly_scaled_rows() -> None:
    k = 12
    j = jac(k, 20, 4) * torch.logspace(-3, 3, k, dtype=torch.float64)[:, None]
    g0 = j @ j.T
    u = upgrad_rows(k)
    v0 = project_dual_cone(g0, u)
    assert kkt_residual_dual_cone(g0, u, v0).max() <= TOL
    for e in (-15, -7, 7, 15):
        g = g0 * 10.0**e
        v = project_dual_cone(g, u)
        assert kkt_residual_dual_cone(g, u, v).max() <= TOL
        torch.testing.assert_close(v, v0, atol=1e-9, rtol=1e-9)


def test_broadcasting_over_gramians_and_rows() -> None:
    k = 5
    gs = torch.stack([jac(k, 8, s) @ jac(k, 8, s).T for s in range(3)])  # (3, K, K)
    u = torch.randn(3, 4, k, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    v = project_dual_cone(gs[:, None], u)
    assert v.shape == (3, 4, k)
    for b in range(3):
        torch.testing.assert_close(v[b], project_dual_cone(gs[b], u[b]), atol=1e-12, rtol=0)
        for r in range(4):
            torch.testing.assert_close(v[b, r], project_dual_cone(gs[b], u[b, r]), atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="entries"):
        project_dual_cone(gs[0], torch.ones(k + 1))


def test_already_in_dual_cone_and_zero_gramian() -> None:
    # all gradients pairwise non-conflicting: each projection is the gradient itself, v = u
    base = torch.randn(10, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    j = base + 0.1 * jac(4, 10, 2)
    g = j @ j.T
    assert (g > 0).all()
    u = upgrad_rows(4)
    torch.testing.assert_close(project_dual_cone(g, u), u, atol=1e-12, rtol=0)
    z = torch.zeros(4, 4, dtype=torch.float64)
    torch.testing.assert_close(project_dual_cone(z, u), u)


def test_projection_is_non_conflicting() -> None:
    for k in (3, 10, 30):
        j = jac(k, 2 * k, k)
        j = j - 0.8 * j.mean(0)
        g = j @ j.T
        v = project_dual_cone(g, upgrad_rows(k))
        d = v @ j  # rows: the projected gradients
        assert (d @ j.T >= -1e-9 * g.diagonal().max() / k).all()


def test_kkt_residual_detects_non_optimal_points() -> None:
    k = 6
    j = jac(k, 10, 3)
    j = j - 0.8 * j.mean(0)
    g = j @ j.T
    u = upgrad_rows(k)
    v = project_dual_cone(g, u)
    assert kkt_residual_dual_cone(g, u, v).max() <= TOL
    assert kkt_residual_dual_cone(g, u, u).max() > 1e-3  # conflicting, so u itself is not optimal
    assert kkt_residual_dual_cone(g, u, v - 0.1 / k).max() > 1e-3  # infeasible
