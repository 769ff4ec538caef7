from __future__ import annotations

import numpy as np
import pytest
import torch

from molearn.solvers import cagrad_dual, cagrad_weights

cp = pytest.importorskip("cvxpy")
scipy_opt = pytest.importorskip("scipy.optimize")
pytestmark = pytest.mark.filterwarnings("ignore:Solution may be inaccurate")


def _jacobians(k: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)

    def r(*s: int) -> torch.Tensor:
        return torch.randn(*s, generator=gen, dtype=torch.float64)

    p = 2 * k + 3
    conflict = r(k, p)
    conflict[: k // 2] -= 0.8 * conflict[k // 2 :].mean(0)
    return [
        r(k, p),
        r(1, p) + 0.3 * r(k, p),
        conflict,
        r(k, 2) @ r(2, p),  # rank 2
        r(k, p) * torch.logspace(-1, 1, k, dtype=torch.float64).unsqueeze(1),
    ]


def _objective(g: torch.Tensor, w: torch.Tensor, c: float) -> float:
    k = g.shape[0]
    g0_norm = (g.sum() / k**2).sqrt()
    return float(g.sum(1) @ w / k + c * g0_norm * (w @ g @ w).clamp_min(0).sqrt())


def _cvxpy(jac: torch.Tensor, c: float) -> torch.Tensor:
    j = jac.numpy()
    k = j.shape[0]
    g0 = j.mean(0)
    w = cp.Variable(k)
    prob = cp.Problem(
        cp.Minimize((j @ g0) @ w + c * np.linalg.norm(g0) * cp.norm(j.T @ w)), [w >= 0, cp.sum(w) == 1]
    )
    try:
        prob.solve(cp.CLARABEL, tol_gap_abs=1e-11, tol_gap_rel=1e-11, tol_feas=1e-11)
    except cp.error.SolverError:
        prob.solve(cp.CLARABEL)
    return torch.from_numpy(np.asarray(w.value))


def _slsqp(g: torch.Tensor, c: float) -> torch.Tensor:
    """The official CAGrad subproblem solver (Cranial-XIX/CAGrad, `cagrad`)."""
    a = g.numpy()
    k = a.shape[0]
    x0 = np.ones(k) / k
    cc = c * np.sqrt(a.mean() + 1e-8) + 1e-8
    res = scipy_opt.minimize(
        lambda x: x @ a @ x0 + cc * np.sqrt(x @ a @ x + 1e-8),
        x0,
        bounds=[(0, 1)] * k,
        constraints=({"type": "eq", "fun": lambda x: 1 - x.sum()},),
    )
    return torch.from_numpy(res.x)


@pytest.mark.parametrize("c", [0.2, 0.4, 0.5, 1.0, 2.0])
def test_objective_matches_cvxpy_and_beats_slsqp(c: float) -> None:
    for k in (2, 3, 5, 10):
        for jac in _jacobians(k, seed=k):
            g = jac @ jac.T
            w = cagrad_dual(g, c)
            assert (w >= 0).all() and abs(float(w.sum()) - 1) < 1e-12
            scale = float(g.diagonal().mean())
            ours = _objective(g, w, c)
            assert ours <= _objective(g, _cvxpy(jac, c), c) + 1e-6 * scale
            assert ours <= _objective(g, _slsqp(g, c), c) + 1e-6 * scale


@pytest.mark.parametrize("rescale", [0, 1, 2])
def test_weights_follow_the_official_formula(rescale: int) -> None:
    c = 0.5
    for jac in _jacobians(4, seed=9):
        g = jac @ jac.T
        w = _cvxpy(jac, c)
        g0 = jac.mean(0)
        gw = w @ jac
        d = g0 + c * g0.norm() / gw.norm() * gw
        d = d / {0: 1.0, 1: 1 + c**2, 2: 1 + c}[rescale]
        torch.testing.assert_close(cagrad_weights(g, c, rescale=rescale) @ jac, d, rtol=1e-5, atol=1e-7)


def test_primal_properties() -> None:
    """d (rescale 0) solves max_d min_i g_i.d s.t. |d - g0| <= c|g0|: it lies on the ball and is at least
    as good as g0 for the worst task."""
    c = 0.5
    for jac in _jacobians(6, seed=4):
        d = cagrad_weights(jac @ jac.T, c, rescale=0) @ jac
        g0 = jac.mean(0)
        torch.testing.assert_close((d - g0).norm(), c * g0.norm(), rtol=1e-6, atol=0)
        assert (jac @ d).min() >= (jac @ g0).min() - 1e-9 * jac.norm() ** 2


def test_batched_scale_invariant_and_degenerate() -> None:
    jacs = _jacobians(5, seed=1)
    g = torch.stack([j @ j.T for j in jacs])
    w = cagrad_weights(g, 0.4)
    for i, j in enumerate(jacs):
        torch.testing.assert_close(w[i], cagrad_weights(j @ j.T, 0.4), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(cagrad_weights(g * 1e-12, 0.4), w, rtol=1e-8, atol=1e-10)
    zero = cagrad_weights(torch.zeros(3, 3, dtype=torch.float64), 0.5)
    assert torch.isfinite(zero).all()
    torch.testing.assert_close(zero, torch.full((3,), 1 / 3 / 1.25, dtype=torch.float64))
    with pytest.raises(ValueError):
        cagrad_weights(g, 0.5, rescale=3)


def test_near_singular_gramian_with_vanishing_mean_gradient_is_finite() -> None:
    """Regression: nearly anti-parallel gradients of equal size (g0 ≈ 0, met on the 2-D toy just above the
    Pareto set) made a Newton step non-finite; the solver keeps the last finite iterate."""
    g = torch.tensor(
        [[0.06470318307930858, -0.06486277322032143], [-0.06486277322032143, 0.06502699208863467]],
        dtype=torch.float64,
    )
    b = g.sum(1) / 2
    r = 0.4 * g.sum().sqrt() / 2
    grid = torch.linspace(0, 1, 20001, dtype=torch.float64)
    ws = torch.stack([grid, 1 - grid], 1)
    objective = ws @ b + r * ((ws @ g) * ws).sum(1).clamp_min(0).sqrt()
    w = cagrad_dual(g, 0.4)
    assert torch.isfinite(w).all() and torch.isfinite(cagrad_weights(g, 0.4)).all()
    ours = b @ w + r * (w @ g @ w).clamp_min(0).sqrt()
    assert ours <= objective.min() + 1e-5 * g.diagonal().mean()
