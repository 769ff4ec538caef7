from __future__ import annotations

import pytest
import torch
from torchjd.aggregation import PCGradWeighting

from molearn.methods import Inputs, Needs, PCGrad
from molearn.solvers import pcgrad_weights, random_orders
from tests.unit.methods._asserts import (
    assert_finite,
    assert_k1_passthrough,
    assert_non_conflicting,
    assert_permutation_equivariant,
    assert_zero_gives_zero,
    direction,
    jacobian_families,
    weights,
)

KS = (2, 3, 5, 10)


def official_rows(jac: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """The official algorithm on the explicit Jacobian, with the given visiting order per task."""
    rows = []
    for i in range(jac.shape[0]):
        g = jac[i].clone()
        for j in order[i].tolist():
            dot = g @ jac[j]
            if dot < 0:
                g = g - dot / (jac[j] @ jac[j]) * jac[j]
        rows.append(g)
    return torch.stack(rows)


def fixed_order(k: int, seed: int) -> torch.Tensor:
    return random_orders(
        k, generator=torch.Generator().manual_seed(seed), device=torch.device("cpu"), full=True
    )


def test_declares_gramian_and_validates() -> None:
    assert PCGrad.needs == Needs(gramian=True)
    with pytest.raises(ValueError, match="reduction"):
        PCGrad(reduction="max")  # type: ignore[arg-type]


@pytest.mark.parametrize("k", KS)
def test_matches_official_algorithm_with_fixed_order(k: int) -> None:
    for seed, (family, jac) in enumerate(jacobian_families(k)):
        order = fixed_order(k, seed)
        coef = pcgrad_weights(jac @ jac.T, order)
        expected = official_rows(jac, order)
        torch.testing.assert_close(
            coef @ jac, expected, rtol=1e-7, atol=1e-9 * (1 + expected.abs().max()), msg=family
        )


@pytest.mark.parametrize("k", KS)
def test_matches_torchjd_with_same_seed(k: int) -> None:
    for seed, (family, jac) in enumerate(jacobian_families(k)):
        torch.manual_seed(seed)
        expected = PCGradWeighting()(jac @ jac.T)
        got = weights(PCGrad(generator=torch.Generator().manual_seed(seed)), jac)
        torch.testing.assert_close(
            got @ jac, expected @ jac, rtol=1e-7, atol=1e-9 * (1 + jac.abs().max()), msg=family
        )


def test_mean_is_sum_over_k() -> None:
    jac = torch.randn(4, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    w_sum = weights(PCGrad(generator=torch.Generator().manual_seed(1)), jac)
    w_mean = weights(PCGrad("mean", generator=torch.Generator().manual_seed(1)), jac)
    torch.testing.assert_close(w_mean, w_sum / 4)


def test_hand_computed_two_tasks() -> None:
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
    # g1' = g1 - (-1/2) g2 = (0.5, 0.5); g2' = g2 - (-1/1) g1 = (0, 1); sum = (0.5, 1.5)
    d = direction(PCGrad(), torch.stack([g1, g2]).double())
    torch.testing.assert_close(d, torch.tensor([0.5, 1.5], dtype=torch.float64))


def test_non_conflicting_for_two_tasks() -> None:
    for _, jac in jacobian_families(2):
        assert_non_conflicting(direction(PCGrad(), jac), jac)


def test_projected_rows_do_not_conflict_with_the_last_visited_task() -> None:
    for k in (3, 5):
        for _, jac in jacobian_families(k):
            order = fixed_order(k, 7)
            rows = pcgrad_weights(jac @ jac.T, order) @ jac
            last = jac[order[:, -1]]
            scale = jac.norm(dim=1) * last.norm(dim=1)
            assert ((rows * last).sum(1) >= -1e-12 * scale).all()


@pytest.mark.parametrize("k", KS)
def test_permutation_equivariant_with_fixed_order(k: int) -> None:
    perm = torch.randperm(k, generator=torch.Generator().manual_seed(11))
    inv = torch.argsort(perm)
    for seed, (family, jac) in enumerate(jacobian_families(k)):
        order = fixed_order(k, seed)
        d = pcgrad_weights(jac @ jac.T, order).sum(0) @ jac
        jp = jac[perm]
        order_p = inv[order[perm]]  # task a of the permuted problem is task perm[a]
        d_p = pcgrad_weights(jp @ jp.T, order_p).sum(0) @ jp
        torch.testing.assert_close(d_p, d, rtol=1e-7, atol=1e-9 * (1 + d.abs().max()), msg=family)


def test_permutation_equivariant_for_two_tasks() -> None:
    for _, jac in jacobian_families(2):
        assert_permutation_equivariant(PCGrad(), jac)


@pytest.mark.parametrize("k", KS)
def test_finite_and_scale_equivariant(k: int) -> None:
    for _, jac in jacobian_families(k):
        assert_finite(direction(PCGrad(generator=torch.Generator().manual_seed(0)), jac))
    jac = next(jacobian_families(k))[1]
    w = weights(PCGrad(generator=torch.Generator().manual_seed(3)), jac)
    for s in (1e-7, 1e7):
        torch.testing.assert_close(weights(PCGrad(generator=torch.Generator().manual_seed(3)), jac * s), w)


def test_generator_makes_it_deterministic_and_advances() -> None:
    # all pairs conflict: the result depends on the visiting order
    jac = torch.tensor([[1.0, 0.0, 0.0], [-0.5, 1.0, 0.0], [-0.5, -0.8, 0.3]], dtype=torch.float64)
    a = PCGrad(generator=torch.Generator().manual_seed(5))
    b = PCGrad(generator=torch.Generator().manual_seed(5))
    da = [direction(a, jac) for _ in range(4)]
    db = [direction(b, jac) for _ in range(4)]
    for x, y in zip(da, db):
        torch.testing.assert_close(x, y)
    assert any(not torch.allclose(da[0], x) for x in da[1:]), "orders never changed between steps"


def test_k1_zero_and_dtype() -> None:
    assert_k1_passthrough(PCGrad())
    assert_zero_gives_zero(PCGrad())
    jac = torch.randn(3, 5)
    out = PCGrad().combine(Inputs(losses=torch.ones(3), gramian=jac @ jac.T))
    assert out.weights is not None and out.weights.dtype == torch.float32
