from __future__ import annotations

import pytest
import torch
from torchjd.aggregation import IMTLGWeighting

from molearn.methods import IMTLG, Inputs, Needs
from tests.unit.methods._asserts import (
    assert_finite,
    assert_k1_passthrough,
    assert_permutation_equivariant,
    assert_zero_gives_zero,
    direction,
    jacobian_families,
    weights,
)

KS = (2, 3, 5, 10)


def paper_weights(jac: torch.Tensor) -> torch.Tensor:
    """The formula of the paper / Nash-MTL / LibMTL code, from the explicit Jacobian."""
    units = jac / jac.norm(dim=1, keepdim=True)
    d = jac[:1] - jac[1:]
    u = units[:1] - units[1:]
    alpha = jac[0] @ u.T @ torch.linalg.inv(d @ u.T)
    return torch.cat([1 - alpha.sum(0, keepdim=True), alpha])


def full_rank(jac: torch.Tensor) -> bool:
    return bool(torch.linalg.matrix_rank(jac) == jac.shape[0])


def test_declares_gramian() -> None:
    assert IMTLG.needs == Needs(gramian=True)


@pytest.mark.parametrize("k", (2, 3, 5))
def test_matches_paper_formula_on_explicit_jacobian(k: int) -> None:
    gen = torch.Generator().manual_seed(k)
    for _ in range(5):
        jac = torch.randn(k, 15, generator=gen, dtype=torch.float64)
        torch.testing.assert_close(weights(IMTLG(), jac), paper_weights(jac), rtol=1e-8, atol=1e-10)


def test_hand_computed_orthogonal_gradients() -> None:
    # orthogonal g_1 = (3, 0), g_2 = (0, 1): equal projections onto e_1, e_2 need α_1·3 = α_2·1, Σα = 1
    jac = torch.tensor([[3.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(weights(IMTLG(), jac), torch.tensor([0.25, 0.75], dtype=torch.float64))


@pytest.mark.parametrize("k", KS)
def test_matches_torchjd_weighting(k: int) -> None:
    for family, jac in jacobian_families(k):
        if family.startswith("scaled_1e-07"):
            continue  # TorchJD zeroes the weights when |Σ G⁺n| < 1e-12 (absolute): not scale-invariant
        expected = IMTLGWeighting()(jac @ jac.T)
        got_d = direction(IMTLG(), jac)
        torch.testing.assert_close(got_d, expected @ jac, rtol=1e-6, atol=1e-8 * (1 + got_d.abs().max()))


@pytest.mark.parametrize("k", KS)
def test_equal_projections_onto_unit_gradients(k: int) -> None:
    for family, jac in jacobian_families(k):
        if not full_rank(jac):
            continue
        w = weights(IMTLG(), jac)
        torch.testing.assert_close(w.sum(), torch.tensor(1.0, dtype=w.dtype))
        proj = jac @ (w @ jac) / jac.norm(dim=1)
        torch.testing.assert_close(proj, proj.mean().expand(k), rtol=1e-7, atol=0, msg=family)


@pytest.mark.parametrize("k", KS)
def test_properties_over_families(k: int) -> None:
    for _, jac in jacobian_families(k):
        assert_finite(direction(IMTLG(), jac))
        assert_permutation_equivariant(IMTLG(), jac)


def test_weights_invariant_to_gradient_scale() -> None:
    jac = torch.randn(4, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    w = weights(IMTLG(), jac)
    for s in (1e-8, 1e-3, 1e5):
        torch.testing.assert_close(weights(IMTLG(), jac * s), w)


def test_one_zero_gradient_reduces_to_the_others() -> None:
    jac = torch.randn(4, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    jac[2] = 0
    w = weights(IMTLG(), jac)
    assert w[2].abs() < 1e-12
    rest = weights(IMTLG(), jac[[0, 1, 3]])
    torch.testing.assert_close(w[[0, 1, 3]], rest)


def test_infeasible_gives_zero_weights_not_nan() -> None:
    # g_2 = -g_1: equal projections onto u_1 = -u_2 force d = 0 with Σα = 1 (Σ G⁺n = 0)
    g = torch.randn(1, 6, dtype=torch.float64)
    w = weights(IMTLG(), torch.cat([g, -g]))
    assert torch.isfinite(w).all() and (w == 0).all()


def test_k1_and_zero() -> None:
    assert_k1_passthrough(IMTLG())
    assert_zero_gives_zero(IMTLG())


def test_float32_gramian_returns_float32_weights() -> None:
    jac = torch.randn(3, 8, generator=torch.Generator().manual_seed(2))
    out = IMTLG().combine(Inputs(losses=torch.ones(3), gramian=jac @ jac.T))
    assert out.weights is not None and out.weights.dtype == torch.float32
    torch.testing.assert_close(out.weights.double(), paper_weights(jac.double()), rtol=1e-4, atol=1e-5)
