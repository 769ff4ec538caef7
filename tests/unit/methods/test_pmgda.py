"""PMGDA: golden against a transcription of LibMOON's ``solve_pmgda`` (scipy/cvxpy), properties,
reaching the preference ray, the batched entry point, bad input."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
import torch
from scipy.optimize import linprog

from molearn.methods import PMGDA, Inputs
from molearn.methods._pmgda import pmgda_weights
from molearn.pareto import make_preference_method
from tests.unit.methods._asserts import (
    assert_finite,
    assert_k1_passthrough,
    assert_permutation_equivariant,
    assert_zero_gives_zero,
    direction,
    jacobian_families,
)

F64 = torch.float64


def official_pmgda(
    jac: np.ndarray, f: np.ndarray, pref: np.ndarray, h_tol: float = 1e-2, sigma: float = 0.8
) -> np.ndarray:
    """LibMOON ``PMGDACore.get_alpha`` → ``solve_pmgda`` (PBI constraint), written out from the Jacobian:
    cvxopt's LP replaced by HiGHS, the MGDA branch by the closed form (K = 2) or a cvxpy QP."""
    m = jac.shape[0]
    u = pref / np.linalg.norm(pref)
    r = f - (f @ u) * u
    h = np.linalg.norm(r)
    if h < h_tol:
        if m == 2:
            v11, v22, v12 = jac[0] @ jac[0], jac[1] @ jac[1], jac[0] @ jac[1]
            if v12 >= v11:
                g = 0.999
            elif v12 >= v22:
                g = 0.001
            else:
                g = -(v12 - v22) / (v11 + v22 - 2 * v12)
            return np.array([g, 1 - g])
        a = cp.Variable(m)
        cp.Problem(cp.Minimize(cp.sum_squares(jac.T @ a)), [a >= 0, cp.sum(a) == 1]).solve()
        return np.asarray(a.value) / np.sum(a.value)
    jhf = r / h
    grad_h = jhf @ jac
    g_all = np.vstack([jac, grad_h])
    g_norm = np.linalg.norm(g_all, axis=1)
    ggn = g_all @ (g_all / (g_norm[:, None] + 1e-4)).T
    c = np.zeros(m + 2)
    c[-1] = 1.0
    a_ub = np.zeros((m + 1, m + 2))
    a_ub[:, : m + 1] = -ggn
    a_ub[:m, -1] = -1.0
    b_ub = np.zeros(m + 1)
    b_ub[-1] = -sigma * np.linalg.norm(grad_h)
    a_eq = np.ones((1, m + 2))
    a_eq[0, -1] = 0.0
    bounds = [(0, None)] * (m + 1) + [(None, None)]
    res = linprog(c, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=[1.0], bounds=bounds, method="highs")
    assert res.status == 0
    mu = res.x[:-1]
    return mu[:m] / g_norm[:m] + mu[m] / g_norm[m] * jhf


@pytest.mark.parametrize("k", [2, 3, 5])
def test_matches_the_official_rule(k: int) -> None:
    gen = torch.Generator().manual_seed(10 + k)
    seen = {"lp": 0, "mgda": 0}
    for trial in range(16):
        jac = torch.randn(k, 6, generator=gen, dtype=F64)
        p = torch.rand(k, generator=gen, dtype=F64) + 0.1
        p = p / p.sum()
        if trial % 4 == 0:  # on the ray (h < h_tol): MGDA branch
            losses = 0.8 * p * (1 + 1e-3 * torch.rand(k, generator=gen, dtype=F64))
        else:
            losses = torch.rand(k, generator=gen, dtype=F64) + 0.1
        out = PMGDA(p).combine(Inputs(losses=losses, gramian=jac @ jac.T))
        assert out.weights is not None
        seen["lp" if bool(out.info["correction"]) else "mgda"] += 1
        assert bool(out.info["feasible"])
        ref = official_pmgda(jac.numpy(), losses.numpy(), p.numpy())
        torch.testing.assert_close(out.weights, torch.as_tensor(ref), atol=1e-6, rtol=1e-5)
    assert seen["lp"] > 0 and seen["mgda"] > 0


def test_correction_direction_decreases_h_and_is_balanced() -> None:
    """Off the ray the direction d = Σ w_i g_i satisfies the LP's constraint ∇h·d ≥ σ‖∇h‖ (up to the
    1e-4 guard) and no objective increases more than the LP's optimum t allows."""
    gen = torch.Generator().manual_seed(5)
    for _ in range(10):
        jac = torch.randn(3, 8, generator=gen, dtype=F64)
        losses = torch.rand(3, generator=gen, dtype=F64) + 0.2
        p = torch.tensor([0.2, 0.3, 0.5], dtype=F64)
        w, info = pmgda_weights(losses[None], (jac @ jac.T)[None], p[None])
        assert bool(info["correction"][0])
        d = w[0] @ jac
        u = p / p.norm()
        r = losses - (losses @ u) * u
        grad_h = (r / r.norm()) @ jac
        assert grad_h @ d >= 0.8 * grad_h.norm() * (1 - 1e-3)


def test_reaches_the_preference_ray_on_a_convex_quadratic() -> None:
    """f_i(x) = ‖x − c_i‖², front = segment c1–c2. PMGDA's ray is the PBI one, f ∝ pref; from every
    start it ends on the front within its tolerance h < h_tol = 0.01 (the fixed step makes it hover
    around that level). The 16 (pref, start) runs go through the batched rule at once (it equals
    ``combine`` row by row: ``test_combine_many_equals_rows``)."""
    c = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=F64)
    prefs = torch.tensor([[0.5, 0.5], [0.2, 0.8], [0.7, 0.3], [0.1, 0.9]], dtype=F64)
    starts = torch.tensor([[0.2, 0.1], [0.9, 0.6], [-0.3, 0.2], [2.0, 2.0]], dtype=F64)
    p = prefs.repeat_interleave(4, 0)
    x = starts.repeat(4, 1)
    ms = [PMGDA(row) for row in p]
    for _ in range(400):
        diff = x.unsqueeze(1) - c  # (16, 2, 2)
        f = (diff**2).sum(2)
        jac = 2 * diff
        w = PMGDA.combine_many(ms, f, jac @ jac.transpose(1, 2))
        assert w is not None
        x = x - 0.02 * (w.unsqueeze(1) @ jac).squeeze(1)
    f = ((x.unsqueeze(1) - c) ** 2).sum(2)
    assert ((f / f.sum(1, keepdim=True) - p).abs().amax(1) < 0.03).all(), f"not on the ray: {f}"  # <= 0.012
    assert ((x.sum(1) - 1).abs() < 1e-3).all(), f"not Pareto optimal: x = {x}"
    u = p / p.norm(dim=1, keepdim=True)
    h = (f - (f * u).sum(1, keepdim=True) * u).norm(dim=1)
    assert (h < 0.02).all(), h  # measured <= 0.017


@pytest.mark.parametrize("k", [2, 3, 5])
def test_properties(k: int) -> None:
    for family, jac in jacobian_families(k):
        m = PMGDA()
        assert_finite(direction(m, jac))
        if family in ("normal", "conflicting"):
            assert_permutation_equivariant(m, jac)
    assert_k1_passthrough(PMGDA(), exact=True)
    assert_zero_gives_zero(PMGDA(), k=k)


def test_infeasible_lp_falls_back_to_the_constraint_gradient() -> None:
    # ‖∇h‖ far below the 1e-4 guard: (ĝ_h·∇h) < σ‖∇h‖ for every μ; move along ∇h alone
    jac = 1e-7 * torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=F64)
    losses = torch.tensor([1.0, 0.2], dtype=F64)
    out = PMGDA([0.5, 0.5]).combine(Inputs(losses=losses, gramian=jac @ jac.T))
    assert out.weights is not None
    assert bool(out.info["correction"]) and not bool(out.info["feasible"])
    u = torch.tensor([1.0, 1.0], dtype=F64) / 2**0.5
    q = losses - (losses @ u) * u
    q = q / q.norm()
    d = out.weights @ jac
    grad_h = q @ jac
    torch.testing.assert_close(d, grad_h / grad_h.norm())


def test_norm_eps_zero_is_scale_invariant() -> None:
    jac = torch.randn(3, 8, generator=torch.Generator().manual_seed(4), dtype=F64)
    losses = torch.tensor([0.5, 1.0, 2.0], dtype=F64)
    m = PMGDA([0.2, 0.3, 0.5], norm_eps=0.0)
    d = direction(m, jac, losses)
    for s in (1e-6, 1e6):
        torch.testing.assert_close(direction(m, s * jac, losses), d)


def test_combine_many_equals_rows() -> None:
    gen = torch.Generator().manual_seed(2)
    n, k = 7, 3
    jac = torch.randn(n, k, 5, generator=gen, dtype=F64)
    losses = torch.rand(n, k, generator=gen, dtype=F64) + 0.1
    losses[0] = torch.tensor([0.2, 0.3, 0.5], dtype=F64)  # on its ray: MGDA branch
    prefs = torch.rand(n, k, generator=gen, dtype=F64) + 0.1
    prefs[0] = torch.tensor([0.2, 0.3, 0.5], dtype=F64)
    ms = [PMGDA(prefs[i]) for i in range(n)]
    gram = jac @ jac.transpose(1, 2)
    w = PMGDA.combine_many(ms, losses, gram)
    assert w is not None
    for i in range(n):
        out = ms[i].combine(Inputs(losses=losses[i], gramian=gram[i]))
        torch.testing.assert_close(w[i], out.weights)
    assert PMGDA.combine_many([*ms[:2], PMGDA(sigma=0.5)], losses[:3], gram[:3]) is None


@pytest.mark.parametrize(
    ("pref", "match"),
    [([0.5, -0.1], "negative"), ([0.0, 0.0], "sum to zero"), ([[0.5, 0.5]], "1-D"),
     ([float("nan"), 1.0], "finite")],
)
def test_bad_pref_is_a_clear_error(pref: list[float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PMGDA(pref=pref)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="3 entries but received 2"):
        PMGDA([0.2, 0.3, 0.5]).combine(Inputs(losses=torch.ones(2, dtype=F64), gramian=torch.eye(2)))
    with pytest.raises(ValueError, match="sigma"):
        PMGDA(sigma=-1.0)
    with pytest.raises(ValueError, match="h_tol"):
        PMGDA(h_tol=float("nan"))
    with pytest.raises(ValueError, match="K <= 8"):
        PMGDA().combine(Inputs(losses=torch.ones(9, dtype=F64), gramian=torch.eye(9, dtype=F64)))
    with pytest.raises(ValueError, match="Gramian"):
        PMGDA().combine(Inputs(losses=torch.ones(2, dtype=F64)))


def test_make_preference_method_and_sweep() -> None:
    from molearn.pareto import preference_sweep, problem

    m = make_preference_method("pmgda", torch.tensor([0.25, 0.75], dtype=F64))
    assert isinstance(m, PMGDA) and m.pref is not None
    res = preference_sweep(problem("zdt1", n_var=4), "pmgda", 3, steps=5, lr=0.05)
    assert res.F.shape == (3, 2) and bool(torch.isfinite(res.F).all())


def test_norm_eps_zero_with_zero_rows_is_finite() -> None:
    for k in (2, 3):
        for _family, jac in jacobian_families(k):
            assert_finite(direction(PMGDA(norm_eps=0.0), jac))
        assert_zero_gives_zero(PMGDA(norm_eps=0.0), k=k)
