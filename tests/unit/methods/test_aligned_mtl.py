from __future__ import annotations

import pytest
import torch
from torchjd.aggregation import AlignedMTLWeighting

from molearn.methods import AlignedMTL, Inputs, Needs
from tests.unit.methods._asserts import (
    assert_finite,
    assert_k1_passthrough,
    assert_permutation_equivariant,
    assert_zero_gives_zero,
    direction,
    jacobian_families,
    make_inputs,
    weights,
)

KS = (2, 3, 5, 10)
SCALES = ("min", "median", "rmse")


def libmtl_weights(gramian: torch.Tensor) -> torch.Tensor:
    """LibMTL's formula (truncated eigen-decomposition, B = √λ_min V Λ^{-1/2} Vᵀ, column sums)."""
    lam, v = torch.linalg.eigh(gramian)
    tol = lam.max() * gramian.shape[0] * torch.finfo(gramian.dtype).eps
    keep = lam > tol
    lam, v = lam[keep], v[:, keep]
    b = lam.min().sqrt() * (v @ torch.diag(lam.rsqrt()) @ v.T)
    return b.sum(0)


def test_declares_gramian() -> None:
    assert AlignedMTL.needs == Needs(gramian=True)


def test_rejects_unknown_scale() -> None:
    with pytest.raises(ValueError, match="scale"):
        AlignedMTL(scale="max")  # type: ignore[arg-type]


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("k", KS)
def test_matches_torchjd_with_unit_preferences(k: int, scale: str) -> None:
    ones = torch.ones(k, dtype=torch.float64)
    for family, jac in jacobian_families(k):
        expected = AlignedMTLWeighting(pref_vector=ones, scale_mode=scale)(jac @ jac.T) @ jac  # type: ignore[arg-type]
        got = direction(AlignedMTL(scale=scale), jac)  # type: ignore[arg-type]
        torch.testing.assert_close(
            got, expected, rtol=1e-6, atol=1e-9 * (1 + expected.abs().max()), msg=family
        )


def test_torchjd_default_preference_is_one_over_k() -> None:
    jac = torch.randn(4, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(weights(AlignedMTL(), jac) / 4, AlignedMTLWeighting()(jac @ jac.T))


@pytest.mark.parametrize("k", (2, 3, 5))
def test_matches_libmtl_formula(k: int) -> None:
    for _, jac in jacobian_families(k):
        g = jac @ jac.T
        if not torch.isfinite(libmtl_weights(g)).all():
            continue
        torch.testing.assert_close(weights(AlignedMTL(), jac), libmtl_weights(g), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("k", KS)
def test_aligned_components_have_norm_sqrt_sigma(k: int) -> None:
    """Full rank: B G B = σ I, so the update has squared norm ‖Jᵀ B 𝟙‖² = σ K with σ = λ_min(G)."""
    for family, jac in jacobian_families(k):
        if torch.linalg.matrix_rank(jac) < k:
            continue
        d = direction(AlignedMTL(), jac)
        lam_min = torch.linalg.eigvalsh(jac @ jac.T)[0]
        torch.testing.assert_close(d @ d, lam_min * k, rtol=1e-6, atol=0, msg=family)


@pytest.mark.parametrize("k", KS)
def test_rank_is_reported(k: int) -> None:
    for family, jac in jacobian_families(k):
        out = AlignedMTL().combine(make_inputs(AlignedMTL(), jac))
        assert int(out.info["rank"]) == int(torch.linalg.matrix_rank(jac)), family


@pytest.mark.parametrize("k", KS)
def test_properties_over_families(k: int) -> None:
    for _, jac in jacobian_families(k):
        assert_finite(direction(AlignedMTL(), jac))
        assert_permutation_equivariant(AlignedMTL(), jac)
        assert_permutation_equivariant(AlignedMTL(scale="median"), jac)


def test_weights_invariant_to_gradient_scale() -> None:
    jac = torch.randn(5, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for scale in SCALES:
        w = weights(AlignedMTL(scale=scale), jac)  # type: ignore[arg-type]
        for s in (1e-6, 1e6):
            torch.testing.assert_close(weights(AlignedMTL(scale=scale), jac * s), w)  # type: ignore[arg-type]


def test_k1_and_zero() -> None:
    for scale in SCALES:
        assert_k1_passthrough(AlignedMTL(scale=scale))  # type: ignore[arg-type]
        assert_zero_gives_zero(AlignedMTL(scale=scale))  # type: ignore[arg-type]


def test_float32_rank_deficient_uses_float32_tolerance() -> None:
    gen = torch.Generator().manual_seed(4)
    jac = torch.randn(5, 2, generator=gen) @ torch.randn(2, 30, generator=gen)  # rank 2, float32
    out = AlignedMTL().combine(Inputs(losses=torch.ones(5), gramian=jac @ jac.T))
    assert out.weights is not None and out.weights.dtype == torch.float32
    assert int(out.info["rank"]) == 2
    assert torch.isfinite(out.weights).all()
