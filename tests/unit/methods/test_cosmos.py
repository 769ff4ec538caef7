"""COSMOS's scalarisation: golden against autograd of the official loss, properties, bad input."""

from __future__ import annotations

import pytest
import torch

from molearn.methods import COSMOS, Inputs
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


def w_of(m: COSMOS, losses: torch.Tensor) -> torch.Tensor:
    out = m.combine(Inputs(losses=losses))
    assert out.weights is not None
    return out.weights


def official_loss(losses: torch.Tensor, alpha: torch.Tensor, lamda: float) -> torch.Tensor:
    """ruchtem/cosmos ``COSMOSMethod.step``: Σ α_i L_i − λ cos(L, α)."""
    total = (alpha * losses).sum()
    return total - lamda * torch.nn.functional.cosine_similarity(losses, alpha, dim=0)


@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("mu", [0.0, 2.0, 8.0])
def test_weights_are_the_gradient_of_the_official_loss(k: int, mu: float) -> None:
    gen = torch.Generator().manual_seed(k)
    for _ in range(10):
        losses = torch.rand(k, generator=gen, dtype=F64) * 3 + 0.05
        alpha = torch.distributions.Dirichlet(torch.full((k,), 1.2, dtype=F64)).sample()
        v = losses.clone().requires_grad_(True)
        official_loss(v, alpha, mu).backward()
        torch.testing.assert_close(w_of(COSMOS(alpha, mu=mu), losses), v.grad)


def test_hand_computed_and_sign() -> None:
    # p = (1/2, 1/2), L = (1, 0): cos = 1/√2, ∂cos/∂L = (p/‖p‖ − cos L/‖L‖)/‖L‖ = (0, 1/√2)
    w = w_of(COSMOS([1.0, 1.0], mu=2.0), torch.tensor([1.0, 0.0], dtype=F64))
    torch.testing.assert_close(w, torch.tensor([0.5, 0.5 - 2 * 2**-0.5], dtype=F64))
    # the penalty pushes the lagging objective (here L_2 = 0 < its share): its weight is negative,
    # i.e. the update raises L_2 towards the ray; on the ray the penalty's gradient vanishes
    assert w[1] < 0
    on_ray = torch.tensor([0.3, 0.9], dtype=F64)
    expected = torch.tensor([0.25, 0.75], dtype=F64)
    torch.testing.assert_close(w_of(COSMOS([1.0, 3.0], mu=5.0), on_ray), expected)


def test_zero_losses_give_the_preference() -> None:
    w = w_of(COSMOS([1.0, 3.0]), torch.zeros(2, dtype=F64))
    torch.testing.assert_close(w, torch.tensor([0.25, 0.75], dtype=F64))


def test_scale_of_losses() -> None:
    """cos is 0-homogeneous: its gradient scales as 1/s, the linear part not at all."""
    losses = torch.tensor([0.4, 1.3, 0.7], dtype=F64)
    m = COSMOS([0.2, 0.5, 0.3], mu=3.0)
    p = m.pref
    assert p is not None
    for s in (1e-3, 10.0):
        torch.testing.assert_close(w_of(m, s * losses) - p, (w_of(m, losses) - p) / s)


@pytest.mark.parametrize("k", [2, 3, 5, 10])
def test_properties(k: int) -> None:
    for family, jac in jacobian_families(k):
        m = COSMOS()
        assert_finite(direction(m, jac))
        if family in ("normal", "conflicting", "scaled_1e-07", "scaled_1e+07"):
            assert_permutation_equivariant(m, jac)
    assert_k1_passthrough(COSMOS(), exact=True)
    assert_zero_gives_zero(COSMOS(), k=min(k, 5))


@pytest.mark.parametrize(
    ("pref", "match"),
    [([0.5, -0.1], "negative"), ([0.0, 0.0], "sum to zero"), ([[0.5, 0.5]], "1-D"),
     ([float("nan"), 1.0], "finite")],
)
def test_bad_pref_is_a_clear_error(pref: list[float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        COSMOS(pref=pref)


def test_bad_mu_and_wrong_length() -> None:
    with pytest.raises(ValueError, match="mu"):
        COSMOS(mu=-1.0)
    with pytest.raises(ValueError, match="3 entries but received 2"):
        w_of(COSMOS([0.2, 0.3, 0.5]), torch.ones(2, dtype=F64))


def test_zero_entry_allowed_and_dtype_follows_losses() -> None:
    m = COSMOS([0.0, 2.0])
    assert m.pref is not None
    torch.testing.assert_close(m.pref, torch.tensor([0.0, 1.0], dtype=F64))
    out = m.combine(Inputs(losses=torch.tensor([1.0, 2.0])))
    assert out.weights is not None and out.weights.dtype == torch.float32


def test_through_the_balancer_equals_backward_of_the_official_loss() -> None:
    import molearn

    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 2).double()
    x = torch.randn(8, 3, dtype=F64)
    target = torch.randn(8, 2, dtype=F64)
    alpha = torch.tensor([0.3, 0.7], dtype=F64)

    def losses() -> torch.Tensor:
        return ((lin(x) - target) ** 2).mean(0)

    molearn.Balancer(COSMOS(alpha, mu=2.0), lin.parameters()).backward(losses())
    got = [p.grad.clone() for p in lin.parameters()]  # type: ignore[union-attr]
    lin.zero_grad()
    official_loss(losses(), alpha, 2.0).backward()
    for g, p in zip(got, lin.parameters(), strict=True):
        torch.testing.assert_close(g, p.grad)


def test_make_preference_method() -> None:
    m = make_preference_method("cosmos", torch.tensor([0.25, 0.75], dtype=F64))
    assert isinstance(m, COSMOS) and m.pref is not None
    torch.testing.assert_close(m.pref, torch.tensor([0.25, 0.75], dtype=F64))
