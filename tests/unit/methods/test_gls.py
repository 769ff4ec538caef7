from __future__ import annotations

import pytest
import torch
from torchjd.scalarization import GeometricMean

from molearn.methods import GLS, Inputs
from tests.unit.methods._asserts import (
    assert_finite,
    assert_k1_passthrough,
    assert_permutation_equivariant,
    assert_zero_gives_zero,
    direction,
    jacobian_families,
    weights,
)


def w_of(losses: torch.Tensor, **kw: object) -> torch.Tensor:
    out = GLS(**kw).combine(Inputs(losses=losses))  # type: ignore[arg-type]
    assert out.weights is not None
    return out.weights


def test_weights_are_the_gradient_of_the_geometric_mean() -> None:
    losses = torch.tensor([0.3, 1.7, 4.0, 0.05], dtype=torch.float64, requires_grad=True)
    losses.prod().pow(1 / 4).backward()
    torch.testing.assert_close(w_of(losses.detach()), losses.grad)
    # closed form GM / (K L_i)
    gm = losses.detach().prod() ** 0.25
    torch.testing.assert_close(w_of(losses.detach()), gm / (4 * losses.detach()))


def test_matches_torchjd_geometric_mean() -> None:
    losses = torch.tensor([0.8, 2.5, 0.1], requires_grad=True)
    GeometricMean()(losses).backward()
    torch.testing.assert_close(w_of(losses.detach()), losses.grad)


def test_log_space_is_stable_where_the_product_is_not() -> None:
    k = 60
    small = torch.full((k,), 1e-8)  # the float32 product underflows to 0
    assert small.prod() == 0
    torch.testing.assert_close(w_of(small), torch.full((k,), 1 / k))
    mixed = torch.tensor([1e30, 1e-30, 1e20, 1e-20], dtype=torch.float64)
    w = w_of(mixed)
    assert torch.isfinite(w).all()
    torch.testing.assert_close(w * mixed * 4, torch.ones(4, dtype=torch.float64))  # GM = 1


def test_scale_invariant_weights() -> None:
    losses = torch.tensor([0.2, 3.0, 1.1], dtype=torch.float64)
    torch.testing.assert_close(w_of(losses), w_of(1000 * losses))


def test_non_positive_losses() -> None:
    with pytest.raises(ValueError, match=r"objective\(s\) \[1\]"):
        w_of(torch.tensor([1.0, 0.0, 2.0]))
    with pytest.raises(ValueError, match="positive"):
        w_of(torch.tensor([1.0, -2.0]))
    with pytest.raises(ValueError, match="positive"):
        w_of(torch.tensor([1.0, float("nan")]))
    w = w_of(torch.tensor([1.0, 0.0], dtype=torch.float64), validate=False, eps=1e-6)
    torch.testing.assert_close(w, torch.tensor([1e-3 / 2, 1e-3 / 1e-6 / 2], dtype=torch.float64))
    with pytest.raises(ValueError):
        GLS(eps=0.0)


@pytest.mark.parametrize("k", [2, 3, 5, 10])
def test_properties(k: int) -> None:
    m = GLS()
    for _name, jac in jacobian_families(k):
        d = direction(m, jac)
        assert_finite(d)
        assert (weights(m, jac) > 0).all()
        assert_permutation_equivariant(m, jac)
    assert_zero_gives_zero(m, k)


def test_k1_passthrough_exact() -> None:
    assert_k1_passthrough(GLS(), exact=True)
