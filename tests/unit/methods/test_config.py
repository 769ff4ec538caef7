from __future__ import annotations

import pytest
import torch
from torchjd.aggregation import ConFIG as TorchJDConFIG

from molearn.methods import ConFIG, Inputs, Needs
from tests.unit.methods._asserts import (
    assert_finite,
    assert_k1_passthrough,
    assert_non_conflicting,
    assert_permutation_equivariant,
    assert_zero_gives_zero,
    direction,
    jacobian_families,
)

KS = (2, 3, 5, 10)


def official(jac: torch.Tensor) -> torch.Tensor:
    """The official ConFIG_update (equal weights, projection length, least squares) on the explicit J."""
    norms = jac.norm(dim=1, keepdim=True)
    units = torch.where(norms > 0, jac / torch.where(norms > 0, norms, 1.0), 0.0)
    x = torch.linalg.lstsq(units, torch.ones(jac.shape[0], 1, dtype=jac.dtype), driver="gelsd").solution[:, 0]
    unit = x / x.norm()
    return (jac @ unit).sum() * unit


def test_declares_gramian() -> None:
    assert ConFIG.needs == Needs(gramian=True)


@pytest.mark.parametrize("k", KS)
def test_matches_official_least_squares_and_torchjd(k: int) -> None:
    for family, jac in jacobian_families(k):
        got = direction(ConFIG(), jac)
        if family == "rank1_conflicting" and k % 2 == 0:
            # u_i = ±u with as many + as -: Ũx = 𝟙 has least-squares solution x = 0, the official code
            # normalises rounding noise; molearn returns 0
            assert (got == 0).all()
            continue
        tol = {"rtol": 1e-6, "atol": 1e-9 * (1 + got.abs().max())}
        torch.testing.assert_close(got, official(jac), **tol, msg=lambda m, f=family: f"{f}: {m}")
        torch.testing.assert_close(got, TorchJDConFIG()(jac), **tol, msg=lambda m, f=family: f"{f}: {m}")


def test_hand_computed_orthogonal_gradients() -> None:
    # u = e1, e2: x = (1, 1), x̂ = (1, 1)/√2, length = (3 + 1)/√2 → d = (2, 2)
    jac = torch.tensor([[3.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(direction(ConFIG(), jac), torch.tensor([2.0, 2.0], dtype=torch.float64))


@pytest.mark.parametrize("k", KS)
def test_non_conflicting_and_equal_cosines_at_full_rank(k: int) -> None:
    for family, jac in jacobian_families(k):
        if torch.linalg.matrix_rank(jac) < k:
            continue
        d = direction(ConFIG(), jac)
        assert_non_conflicting(d, jac)
        cos = jac @ d / (jac.norm(dim=1) * d.norm())
        assert (cos > 0).all(), family
        torch.testing.assert_close(cos, cos.mean().expand(k), msg=lambda m, f=family: f"{f}: {m}")


@pytest.mark.parametrize("k", KS)
def test_properties_over_families(k: int) -> None:
    for _, jac in jacobian_families(k):
        assert_finite(direction(ConFIG(), jac))
        assert_permutation_equivariant(ConFIG(), jac)


def test_direction_scales_with_the_gradients() -> None:
    jac = torch.randn(4, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    d = direction(ConFIG(), jac)
    for s in (1e-7, 1e7):
        torch.testing.assert_close(direction(ConFIG(), jac * s), d * s)
    jac2 = jac.clone()
    jac2[1] *= 100.0  # a longer gradient changes the length, not the direction
    d2 = direction(ConFIG(), jac2)
    torch.testing.assert_close(d2 / d2.norm(), d / d.norm())


def test_k1_zero_and_dtype() -> None:
    assert_k1_passthrough(ConFIG())
    assert_zero_gives_zero(ConFIG())
    jac = torch.randn(3, 5)
    out = ConFIG().combine(Inputs(losses=torch.ones(3), gramian=jac @ jac.T))
    assert out.weights is not None and out.weights.dtype == torch.float32
