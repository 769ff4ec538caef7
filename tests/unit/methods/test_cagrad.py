from __future__ import annotations

import pytest
import torch

from molearn.methods import CAGrad, get

from ._asserts import (
    assert_finite,
    assert_k1_passthrough,
    assert_permutation_equivariant,
    assert_zero_gives_zero,
    direction,
    jacobian_families,
    weights,
)

torchjd_agg = pytest.importorskip("torchjd.aggregation")
pytestmark = pytest.mark.filterwarnings("ignore:Solution may be inaccurate")


@pytest.mark.parametrize("c", [0.4, 0.5, 0.8])
@pytest.mark.parametrize("k", [2, 3, 5, 10])
def test_golden_vs_torchjd_cagrad(c: float, k: int) -> None:
    """TorchJD's CAGradWeighting = the official formula without the 1/(1+c^2) rescale (rescale=0); it solves
    with Clarabel at its default tolerance, so it agrees to ~1e-4 (the exact subproblem is checked against a
    tight cvxpy solve in tests/unit/solvers/test_cagrad.py)."""
    jac = torch.randn(k, 2 * k + 3, dtype=torch.float64, generator=torch.Generator().manual_seed(k))
    expected = torchjd_agg.CAGradWeighting(c=c)(jac @ jac.T)
    torch.testing.assert_close(weights(CAGrad(c=c, rescale=0), jac), expected, rtol=5e-4, atol=1e-6)
    torch.testing.assert_close(weights(CAGrad(c=c), jac), expected / (1 + c * c), rtol=5e-4, atol=1e-6)


@pytest.mark.parametrize("k", [2, 3, 5, 10])
def test_properties_over_families(k: int) -> None:
    method = CAGrad()
    for _, jac in jacobian_families(k):
        d = direction(CAGrad(rescale=0), jac)
        assert_finite(d)
        g0 = jac.mean(0)
        # d maximises the worst improvement over the ball |d - g0| <= c|g0|, which contains g0
        assert (jac @ d).min() >= (jac @ g0).min() - 1e-8 * jac.norm(dim=1).max() ** 2
        assert (d - g0).norm() <= 0.5 * g0.norm() * (1 + 1e-6) + 1e-12
        assert_permutation_equivariant(method, jac)


def test_k1_and_zero() -> None:
    for c, rescale, factor in [(0.5, 1, 1.5 / 1.25), (0.4, 0, 1.4), (0.5, 2, 1.0)]:
        method = CAGrad(c=c, rescale=rescale)
        assert_k1_passthrough(method, exact=False)
        g = torch.tensor([[1.0, -2.0, 0.5]], dtype=torch.float64)
        torch.testing.assert_close(direction(method, g), factor * g[0])
    assert_k1_passthrough(CAGrad(rescale=2), exact=True)
    assert_zero_gives_zero(CAGrad())


def test_scale_invariance_and_options() -> None:
    jac = torch.randn(4, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    w = weights(CAGrad(), jac)
    for s in (1e-6, 1e6):
        torch.testing.assert_close(weights(CAGrad(), jac * s), w, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(weights(CAGrad(scale="K"), jac), 4 * w)
    assert CAGrad().c == 0.5 and CAGrad().rescale == 1
    assert isinstance(get("cagrad", c=0.4), CAGrad)
    with pytest.raises(ValueError):
        CAGrad(rescale=5)
    with pytest.raises(ValueError):
        CAGrad(c=-1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("c", [1.0, 2.0, 5.0])
def test_c_at_least_one_gives_the_zero_direction_at_a_stationary_point(c: float, dtype: torch.dtype) -> None:
    """Issue 13: with c ≥ 1 the ball |d - g0| ≤ c|g0| contains 0, and at a Pareto-stationary point (0 in the
    convex hull of the gradients) max_d min_i g_i·d = 0 is attained at d = 0; every other d conflicts with
    some objective. The float32 dual used to stop at a wrong minimiser and the rule g_w → 0 ⇒ d → g0
    returned the conflicting mean gradient (J·d = [0.162, -0.318, -0.079] here for c = 2)."""
    jac = torch.tensor([[1.0, 0.28], [-1.82, -0.15], [-0.97, -1.5]], dtype=dtype)
    for rescale in (0, 1, 2):
        d = direction(CAGrad(c=c, rescale=rescale), jac)
        assert (jac @ d >= -1e-6 * jac.norm(dim=1) * jac.norm()).all(), f"conflicting: J·d = {jac @ d}"
        assert d.norm() <= 1e-6 * jac.norm()


def test_c_below_one_at_a_stationary_point_keeps_the_official_limit() -> None:
    """c < 1: the ball does not contain 0; where the dual is minimised at g_w = 0 the official limit
    d = g0 (rescaled) is kept; off the degenerate cases the direction is the constrained optimum."""
    jac = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)  # g0 = 0: d = 0 for every c
    assert direction(CAGrad(c=0.5), jac).abs().max() <= 1e-12
    jac = torch.tensor([[1.0, 0.28], [-1.82, -0.15], [-0.97, -1.5]], dtype=torch.float64)
    d = direction(CAGrad(c=0.5, rescale=0), jac)
    g0 = jac.mean(0)
    assert (d - g0).norm() <= 0.5 * g0.norm() * (1 + 1e-9)
    assert (jac @ d).min() >= (jac @ g0).min() - 1e-9


@pytest.mark.parametrize("k", [9, 12])
def test_large_k_interior_point_path_agrees_with_the_enumeration_where_both_apply(k: int) -> None:
    """The interior point (K > 8) and the exact enumeration solve the same problem."""
    from molearn.solvers import cagrad_dual

    gen = torch.Generator().manual_seed(k)
    for _ in range(3):
        jac = torch.randn(k, 2 * k, generator=gen, dtype=torch.float64)
        jac = jac - 0.5 * jac.mean(0)
        g = jac @ jac.T
        w_ip = cagrad_dual(g, 0.5, solver="interior_point")
        w_en = cagrad_dual(g, 0.5, solver="enumerate")
        b = g.sum(1) / k
        r = 0.5 * g.sum().sqrt() / k
        f_ip, f_en = (float(b @ w + r * (w @ g @ w).clamp_min(0).sqrt()) for w in (w_ip, w_en))
        assert abs(f_ip - f_en) <= 1e-6 * float(g.diagonal().mean())
