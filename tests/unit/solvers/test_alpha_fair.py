from __future__ import annotations

import numpy as np
import pytest
import torch

from molearn.solvers import alpha_fair, alpha_fair_residual

scipy_opt = pytest.importorskip("scipy.optimize")


def _family(kind: str, k: int, n: int, seed: int = 0) -> torch.Tensor:
    """n Gramians (n, k, k) of a well-posed family (a positive solution exists)."""
    gen = torch.Generator().manual_seed(seed)

    def r(*s: int) -> torch.Tensor:
        return torch.randn(*s, generator=gen, dtype=torch.float64)

    p = 3 * k + 5
    if kind == "wide":
        jac = r(n, k, p)
    elif kind == "aligned":
        jac = r(n, 1, p) + 0.3 * r(n, k, p)
    elif kind == "positive":
        jac = r(n, k, 2 * k) + 1.5
    elif kind == "row_scaled":  # gradient norms over 4 orders of magnitude
        jac = (r(n, 1, p) + 0.3 * r(n, k, p)) * torch.logspace(-2, 2, k, dtype=torch.float64).view(1, k, 1)
    elif kind == "ill":  # cond(G) = 1e6
        q, _ = torch.linalg.qr(r(n, k, k))
        jac = q * torch.logspace(0, -3, k, dtype=torch.float64)
    elif kind == "low_rank":  # rank 3 < K, with a common descent direction
        jac = (r(n, k, 3) + torch.tensor([3.0, 0.0, 0.0], dtype=torch.float64)) @ r(n, 3, p)
    else:
        raise ValueError(kind)
    return jac @ jac.transpose(-1, -2)


def _scipy(gram: torch.Tensor, alpha: float) -> torch.Tensor:
    """The official FairGrad solver: least_squares on Aw - w^(-1/alpha), bounds (0, inf), start 1/K."""
    a = gram.numpy()
    k = a.shape[0]
    res = scipy_opt.least_squares(
        lambda x: a @ x - np.power(x, -1.0 / alpha),
        np.ones(k) / k,
        bounds=(0, np.inf),
        xtol=1e-15,
        ftol=1e-15,
    )
    return torch.from_numpy(res.x)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0, 5.0])
@pytest.mark.parametrize("kind", ["wide", "aligned", "positive", "ill", "low_rank"])
def test_residual_reaches_1e6_on_well_posed(kind: str, alpha: float) -> None:
    for k in (2, 3, 5, 10, 40, 64):
        g = _family(kind, k, 8, seed=k)
        w = alpha_fair(g, alpha)
        assert (w > 0).all()
        res = alpha_fair_residual(g, w, alpha)
        assert res.max() <= 1e-6, f"{kind} K={k}: residual {res.max():.2e}"


@pytest.mark.parametrize("alpha", [1.0, 2.0])
def test_row_scaled_gradients(alpha: float) -> None:
    for k in (2, 10, 40):
        g = _family("row_scaled", k, 8, seed=k)
        assert alpha_fair_residual(g, alpha_fair(g, alpha), alpha).max() <= 1e-6


@pytest.mark.parametrize("alpha", [1.0, 2.0])
@pytest.mark.parametrize("kind", ["wide", "aligned", "low_rank"])
def test_matches_official_scipy_solver(kind: str, alpha: float) -> None:
    g = _family(kind, 5, 4, seed=11)
    w = alpha_fair(g, alpha)
    for i in range(g.shape[0]):
        torch.testing.assert_close(w[i], _scipy(g[i], alpha), rtol=1e-6, atol=0)


def test_closed_forms() -> None:
    # K = 1: g^2 w = w^(-1/a)  =>  w = g^(-2a/(a+1))
    for alpha in (0.5, 1.0, 2.0):
        w = alpha_fair(torch.tensor([[4.0]], dtype=torch.float64), alpha)
        torch.testing.assert_close(w, torch.tensor([4.0 ** (-alpha / (alpha + 1))], dtype=torch.float64))
    # orthogonal gradients decouple: w_i = G_ii^(-a/(a+1))
    d = torch.tensor([1e-3, 1.0, 25.0], dtype=torch.float64)
    torch.testing.assert_close(alpha_fair(torch.diag(d), 2.0), d.pow(-2.0 / 3.0))
    # K equal gradients: K |g|^2 c = c^(-1/a)
    k, alpha = 4, 2.0
    torch.testing.assert_close(
        alpha_fair(torch.full((k, k), 9.0, dtype=torch.float64), alpha),
        torch.full((k,), (k * 9.0) ** (-alpha / (alpha + 1)), dtype=torch.float64),
    )


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_scale_equivariance(alpha: float) -> None:
    g = _family("wide", 6, 3, seed=2)
    w = alpha_fair(g, alpha)
    for s in (1e-15, 1e-6, 1e6, 1e15):
        torch.testing.assert_close(
            alpha_fair(g * s, alpha), w * s ** (-alpha / (alpha + 1)), rtol=1e-9, atol=0
        )


def test_batched_equals_loop_and_float32_input() -> None:
    g = _family("aligned", 7, 5, seed=3)
    w = alpha_fair(g.view(5, 1, 7, 7), 2.0)
    assert w.shape == (5, 1, 7) and w.dtype == torch.float64
    for i in range(5):
        torch.testing.assert_close(w[i, 0], alpha_fair(g[i], 2.0), rtol=1e-12, atol=0)
    w32 = alpha_fair(g[0].float(), 2.0)
    torch.testing.assert_close(w32, w[0, 0], rtol=1e-5, atol=0)


def test_zero_gradient_gets_zero_weight_and_others_unchanged() -> None:
    jac = torch.randn(4, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    jac[2] = 0
    g = jac @ jac.T
    w = alpha_fair(g, 2.0)
    assert w[2] == 0
    keep = [0, 1, 3]
    torch.testing.assert_close(w[keep], alpha_fair(g[keep][:, keep], 2.0), rtol=1e-10, atol=0)
    assert (alpha_fair(torch.zeros(3, 3, dtype=torch.float64), 2.0) == 0).all()


@pytest.mark.parametrize("alpha", [1.0, 2.0])
def test_no_positive_solution_returns_zero_like_the_scipy_limit(alpha: float) -> None:
    """Opposite gradients: no positive solution. scipy drifts towards w → ∞ with d → 0 and an O(1) relative
    residual; molearn returns the limit w = 0 (d = 0)."""
    base = torch.randn(10, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    jac = torch.stack([1.3 * base, -0.7 * base, 0.2 * base])
    g = jac @ jac.T
    w = alpha_fair(g, alpha)
    assert torch.isfinite(w).all() and (w == 0).all()
    ws = _scipy(g, alpha)
    assert alpha_fair_residual(g, ws, alpha) > 1e-2  # scipy has no root either
    assert (ws @ jac).norm() < 1e-2 * jac.norm(dim=1).max()  # and its direction is nearly zero


def test_invalid_alpha() -> None:
    with pytest.raises(ValueError):
        alpha_fair(torch.eye(2), 0.0)
