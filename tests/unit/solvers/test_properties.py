"""Hypothesis properties of every solver (TorchJD-style: families of matrices, scaled from 1e-15 to 1e15).

Families (as TorchJD's samplers): normal, zero, strongly non-conflicting (a common direction plus small
noise), weakly conflicting, strongly conflicting (minus the mean), rank-deficient, duplicate rows,
opposite rows and rows with norms over six orders of magnitude; K from 1 to 12 (``large``: 16-24).
Properties: finite, feasible (simplex, dual cone, positivity), KKT residual small, permutation
invariance (permuting the objectives permutes the weights), scale behaviour (invariant where the
method is; the documented power law for the α-fair system).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from molearn.solvers import (
    aligned_mtl_weights,
    alpha_fair,
    alpha_fair_residual,
    cagrad_dual,
    cagrad_weights,
    config_weights,
    imtl_g_weights,
    kkt_residual_dual_cone,
    kkt_residual_min_norm,
    min_norm,
    project_dual_cone,
)
from molearn.solvers.linalg import jacobi_eigh

FAMILIES = ["normal", "zero", "strong", "weak", "conflicting", "low_rank", "duplicate", "opposite", "spread"]
SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SMALL_K = st.integers(1, 12)


def jacobian(family: str, k: int, seed: int, p: int = 24) -> torch.Tensor:
    """A K×P Jacobian (float64) of the family."""
    gen = torch.Generator().manual_seed(seed)

    def r(*s: int) -> torch.Tensor:
        return torch.randn(*s, generator=gen, dtype=torch.float64)

    if family == "zero":
        return torch.zeros(k, p, dtype=torch.float64)
    if family == "strong":
        return r(1, p) + 0.1 * r(k, p)
    if family == "weak":
        return r(1, p) + 0.8 * r(k, p)
    if family == "conflicting":
        j = r(k, p)
        return j - 0.9 * j.mean(0) * min(k, 3)
    if family == "low_rank":
        return r(k, 2) @ r(2, p)
    if family == "duplicate":
        base = r((k + 1) // 2, p)
        return torch.cat([base, base])[:k]
    if family == "opposite":
        base = r((k + 1) // 2, p)
        return torch.cat([base, -base])[:k]
    if family == "spread":
        return r(k, p) * torch.logspace(-3, 3, k, dtype=torch.float64).unsqueeze(1)
    return r(k, p)


cases = st.tuples(st.sampled_from(FAMILIES), SMALL_K, st.integers(0, 2**31 - 1))
scales = st.integers(-15, 15).map(lambda e: 10.0**e)


def permutation(k: int, seed: int) -> torch.Tensor:
    return torch.randperm(k, generator=torch.Generator().manual_seed(seed + 1))


def upgrad_gramian(j: torch.Tensor) -> torch.Tensor:
    g = j @ j.T
    tr = g.trace()
    g = g / tr if tr > 0 else g
    return g + 1e-4 * torch.eye(j.shape[0], dtype=j.dtype)


# ---- dual cone (UPGrad / DualProj)


@SETTINGS
@given(case=cases, scale=scales)
def test_dual_cone_regularised(case: tuple[str, int, int], scale: float) -> None:
    family, k, seed = case
    g = upgrad_gramian(jacobian(family, k, seed)) * scale
    u = torch.cat([torch.eye(k, dtype=torch.float64) / k, torch.full((1, k), 1.0 / k, dtype=torch.float64)])
    v = project_dual_cone(g, u, positive_definite=True)
    assert torch.isfinite(v).all()
    assert (v >= u - 1e-12).all()
    assert kkt_residual_dual_cone(g, u, v).max() <= 1e-7
    # scale invariance and permutation invariance
    torch.testing.assert_close(
        project_dual_cone(g / scale, u, positive_definite=True), v, atol=1e-9, rtol=1e-7
    )
    perm = permutation(k, seed)
    vp = project_dual_cone(g[perm][:, perm], u[:, perm], positive_definite=True)
    torch.testing.assert_close(vp, v[:, perm], atol=1e-8, rtol=1e-6)


@SETTINGS
@given(case=st.tuples(st.sampled_from(FAMILIES), st.integers(1, 8), st.integers(0, 2**31 - 1)), scale=scales)
def test_dual_cone_exact_on_semidefinite_gramians(case: tuple[str, int, int], scale: float) -> None:
    """No regularisation (rank-deficient, zero, duplicate, opposite gradients): the enumeration (K ≤ 8)
    is exact for any positive semi-definite G; the projected gradients conflict with no objective."""
    family, k, seed = case
    j = jacobian(family, k, seed)
    g = j @ j.T * scale
    u = torch.eye(k, dtype=torch.float64) / k
    v = project_dual_cone(g, u)
    assert torch.isfinite(v).all() and (v >= u - 1e-12).all()
    assert kkt_residual_dual_cone(g, u, v).max() <= 1e-7
    lam = v @ g  # rows: J (Jᵀ v_i) = G v_i ≥ 0
    assert (lam >= -1e-8 * g.diagonal().max().clamp_min(1e-300) / k).all()


@settings(max_examples=8, deadline=None)
@given(case=st.tuples(st.sampled_from(FAMILIES), st.integers(13, 24), st.integers(0, 2**31 - 1)))
def test_dual_cone_large_k(case: tuple[str, int, int]) -> None:
    family, k, seed = case
    g = upgrad_gramian(jacobian(family, k, seed, p=2 * k))
    u = torch.eye(k, dtype=torch.float64) / k
    for solver in ("pivot", "prox"):
        v = project_dual_cone(
            g, u, solver=solver, positive_definite=True, iters=40 if solver == "pivot" else 60
        )
        assert torch.isfinite(v).all() and (v >= u - 1e-12).all()
        assert kkt_residual_dual_cone(g, u, v).max() <= 1e-6, solver


# ---- min-norm (MGDA)


@SETTINGS
@given(case=cases, scale=scales)
def test_min_norm(case: tuple[str, int, int], scale: float) -> None:
    family, k, seed = case
    j = jacobian(family, k, seed)
    g = j @ j.T * scale
    w = min_norm(g)
    assert torch.isfinite(w).all() and (w >= 0).all()
    assert abs(float(w.sum()) - 1.0) <= 1e-12
    assert kkt_residual_min_norm(g, w) <= 1e-7
    # the minimum norm is unique (the weights need not be): compare ‖g_w‖², scale- and permutation-free
    value = float(w @ g @ w)
    perm = permutation(k, seed)
    gp = g[perm][:, perm]
    wp = min_norm(gp / scale)  # the weights are invariant to the scale of G
    assert abs(float(wp @ gp @ wp) - value) <= 1e-7 * float(g.diagonal().max()) + 1e-300


# ---- CAGrad


@SETTINGS
@given(case=cases, scale=scales, c=st.sampled_from([0.2, 0.5, 0.9, 1.0, 2.0]))
def test_cagrad(case: tuple[str, int, int], scale: float, c: float) -> None:
    family, k, seed = case
    j = jacobian(family, k, seed)
    g = j @ j.T * scale
    w = cagrad_dual(g, c)
    assert torch.isfinite(w).all() and (w >= 0).all() and abs(float(w.sum()) - 1) <= 1e-9
    weights = cagrad_weights(g, c, rescale=0)
    assert torch.isfinite(weights).all()
    d = weights @ j
    g0 = j.mean(0)
    n0 = float(g0.norm())
    # feasible for the primal: |d - g0| ≤ c|g0| (d = 0 at a stationary point with c ≥ 1 is feasible)
    assert float((d - g0).norm()) <= c * n0 * (1 + 1e-6) + 1e-8 * float(j.norm())  # 1e-8: the damping
    # as good as g0 for the worst objective (the primal maximises the worst improvement)
    assert float((j @ d).min()) >= float((j @ g0).min()) - 1e-7 * float(j.norm()) ** 2
    # scale and permutation invariance of the direction (the weights are not unique for duplicate rows)
    tol = 1e-6 * float(j.norm())
    torch.testing.assert_close(cagrad_weights(g / scale, c, rescale=0) @ j, d, atol=tol, rtol=1e-5)
    perm = permutation(k, seed)
    torch.testing.assert_close(
        cagrad_weights(g[perm][:, perm], c, rescale=0) @ j[perm], d, atol=tol, rtol=1e-5
    )


# ---- α-fair (FairGrad, Nash-MTL)


@SETTINGS
@given(
    case=st.tuples(
        st.sampled_from(["strong", "weak", "spread", "normal"]), SMALL_K, st.integers(0, 2**31 - 1)
    ),
    exponent=st.integers(-6, 6),
    alpha=st.sampled_from([0.5, 1.0, 2.0]),
)
def test_alpha_fair(case: tuple[str, int, int], exponent: int, alpha: float) -> None:
    """Families with a common descent direction (a positive solution exists) plus normal ones (which may
    have none: then w = 0); scales 1e-12 … 1e12 on G (the weights follow ``s^(-α/(α+1))``)."""
    family, k, seed = case
    j = jacobian(family, k, seed, p=k + 20)
    g = j @ j.T
    # norms over 6 orders with α = 0.5 need more than the default 12 Newton steps (documented: ~20)
    iters = 25 if family == "spread" and alpha < 1 else 12
    w = alpha_fair(g, alpha, iters=iters)
    assert torch.isfinite(w).all() and (w >= 0).all()
    if (w > 0).all():
        assert alpha_fair_residual(g, w, alpha) <= 1e-6
    s = 10.0 ** (2 * exponent)
    ws = alpha_fair(g * s, alpha, iters=iters)
    torch.testing.assert_close(ws, w * s ** (-alpha / (alpha + 1)), rtol=1e-6, atol=0.0)
    perm = permutation(k, seed)
    torch.testing.assert_close(alpha_fair(g[perm][:, perm], alpha, iters=iters), w[perm], rtol=1e-6, atol=0.0)


# ---- closed forms (IMTL-G, Aligned-MTL, ConFIG)


@SETTINGS
@given(case=cases, scale=scales)
def test_closed_forms(case: tuple[str, int, int], scale: float) -> None:
    family, k, seed = case
    j = jacobian(family, k, seed)
    g = j @ j.T * scale
    perm = permutation(k, seed)
    # norms over 6 orders of magnitude: κ(G) ≈ 1e12, so eigen-decomposition-based weights carry relative
    # errors of about κ·ε ≈ 1e-4 (the Gramian squares the conditioning of the gradients)
    rtol = 1e-3 if family == "spread" else 1e-5
    for name, fn in (
        ("imtl_g", imtl_g_weights),
        ("config", config_weights),
        ("aligned", lambda m: aligned_mtl_weights(m)[0]),
    ):
        w = fn(g)
        assert torch.isfinite(w).all(), name
        # invariant to the scale of the gradients, equivariant to their order
        atol = rtol * 0.1 * float(w.abs().max().clamp_min(1.0))
        torch.testing.assert_close(fn(g / scale), w, atol=atol, rtol=rtol, msg=name)
        torch.testing.assert_close(fn(g[perm][:, perm]), w[perm], atol=atol, rtol=rtol, msg=name)
    # IMTL-G: equal projections of d onto the unit gradients, on well-conditioned full-rank families
    if family in ("normal", "strong", "weak") and k <= 12:
        w = imtl_g_weights(g)
        d = w @ (j * scale**0.5)
        n = (j * scale**0.5).norm(dim=1)
        proj = (j * scale**0.5) @ d / n
        assert float(proj.max() - proj.min()) <= 1e-6 * float(proj.abs().max()) + 1e-12 * float(d.norm())


# ---- the sync-free eigen-decomposition


@SETTINGS
@given(case=cases, scale=scales)
def test_jacobi_eigh_matches_lapack(case: tuple[str, int, int], scale: float) -> None:
    family, k, seed = case
    j = jacobian(family, k, seed)
    g = j @ j.T * scale
    lam, vec = jacobi_eigh(g)
    ref = torch.linalg.eigvalsh(g)
    top = float(ref.abs().max().clamp_min(1e-300))
    assert float((lam - ref).abs().max()) <= 1e-12 * top
    assert float((vec @ torch.diag_embed(lam) @ vec.T - g).abs().max()) <= 1e-8 * top
    assert float((vec.T @ vec - torch.eye(k, dtype=g.dtype)).abs().max()) <= 1e-10


@pytest.mark.parametrize("k", [1, 2])
def test_tiny_k_everything_is_finite(k: int) -> None:
    j = torch.randn(k, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(k))
    g = j @ j.T
    for w in (min_norm(g), cagrad_dual(g, 0.5), alpha_fair(g, 2.0), imtl_g_weights(g), config_weights(g)):
        assert torch.isfinite(w).all()
