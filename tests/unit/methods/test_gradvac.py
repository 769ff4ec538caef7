from __future__ import annotations

import math

import pytest
import torch
from torchjd.aggregation import GradVacWeighting

from molearn.methods import GradVac, Inputs, Needs
from molearn.solvers import gradvac_weights, pcgrad_weights, random_orders
from tests.unit.methods._asserts import (
    assert_finite,
    assert_k1_passthrough,
    assert_zero_gives_zero,
    direction,
    jacobian_families,
    weights,
)

KS = (2, 3, 5, 10)


def reference(
    jac: torch.Tensor, targets: torch.Tensor, order: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The LibMTL/paper algorithm (whole-model group) on the explicit Jacobian, with a given order."""
    t = targets.clone()
    rows = []
    for i in range(jac.shape[0]):
        g = jac[i].clone()
        for j in order[i].tolist():
            gj = jac[j]
            phi = float(g @ gj / (g.norm() * gj.norm()))
            hat = float(t[i, j])
            if phi < hat:
                w = g.norm() * (hat * math.sqrt(1 - phi**2) - phi * math.sqrt(1 - hat**2))
                g = g + w / (gj.norm() * math.sqrt(1 - hat**2)) * gj
            t[i, j] = (1 - beta) * hat + beta * phi
        rows.append(g)
    return torch.stack(rows), t


def order_for(k: int, seed: int) -> torch.Tensor:
    return random_orders(
        k, generator=torch.Generator().manual_seed(seed), device=torch.device("cpu"), full=False
    )


def test_declares_gramian_and_validates() -> None:
    assert GradVac.needs == Needs(gramian=True)
    with pytest.raises(ValueError, match="beta"):
        GradVac(beta=1.5)
    with pytest.raises(ValueError, match="Gramian"):
        GradVac(group="layer")  # type: ignore[arg-type]


@pytest.mark.parametrize("k", (2, 3, 5))
def test_matches_explicit_reference_over_steps(k: int) -> None:
    gen = torch.Generator().manual_seed(k)
    targets = torch.zeros(k, k, dtype=torch.float64)
    ref_targets = targets.clone()
    for step in range(4):
        jac = torch.randn(k, 12, generator=gen, dtype=torch.float64)
        jac = jac - 0.5 * jac.mean(0)  # some conflicts
        order = order_for(k, step)
        coef, targets = gradvac_weights(jac @ jac.T, targets, order, beta=0.3)
        rows, ref_targets = reference(jac, ref_targets, order, beta=0.3)
        torch.testing.assert_close(coef @ jac, rows, rtol=1e-7, atol=1e-10)
        torch.testing.assert_close(targets, ref_targets, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("k", (2, 3, 5))
def test_matches_torchjd_with_same_seed_over_steps(k: int) -> None:
    torch.manual_seed(17)
    oracle = GradVacWeighting(beta=0.5, eps=0.0)  # eps=0: molearn divides exactly
    method = GradVac(generator=torch.Generator().manual_seed(17))
    data = torch.Generator().manual_seed(1)
    for _ in range(5):
        jac = torch.randn(k, 10, generator=data, dtype=torch.float64)
        expected = oracle(jac @ jac.T)
        torch.testing.assert_close(weights(method, jac), expected, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(method.state_dict()["targets"], oracle._phi_t)


def test_first_step_equals_pcgrad_with_the_same_order() -> None:
    """With targets 0 the vaccine correction is exactly the PCGrad projection."""
    for k in (3, 5):
        for _, jac in jacobian_families(k):
            order = order_for(k, 3)
            coef, _ = gradvac_weights(jac @ jac.T, torch.zeros(k, k, dtype=torch.float64), order, 0.5)
            torch.testing.assert_close(coef @ jac, pcgrad_weights(jac @ jac.T, order) @ jac)


def test_correction_reaches_the_target_cosine() -> None:
    g1, g2 = torch.tensor([1.0, 0.2]), torch.tensor([0.3, 1.0])
    jac = torch.stack([g1, g2]).double()
    targets = torch.full((2, 2), 0.9, dtype=torch.float64)
    order = torch.tensor([[1], [0]])
    coef, new = gradvac_weights(jac @ jac.T, targets, order, beta=0.25)
    rows = coef @ jac
    cos = torch.nn.functional.cosine_similarity(rows, jac.flip(0), dim=1)
    torch.testing.assert_close(cos, torch.full((2,), 0.9, dtype=torch.float64))
    phi = torch.nn.functional.cosine_similarity(g1, g2, dim=0).double()
    torch.testing.assert_close(new[0, 1], 0.75 * 0.9 + 0.25 * phi)


@pytest.mark.parametrize("k", KS)
def test_permutation_equivariant_with_fixed_order(k: int) -> None:
    perm = torch.randperm(k, generator=torch.Generator().manual_seed(11))
    inv = torch.argsort(perm)
    targets = torch.rand(k, k, generator=torch.Generator().manual_seed(2), dtype=torch.float64) - 0.3
    for seed, (family, jac) in enumerate(jacobian_families(k)):
        if family == "rank1_conflicting":
            continue  # the vaccine cancels g_i exactly; later cosines of the rounding residue are noise
        order = order_for(k, seed)
        coef, t = gradvac_weights(jac @ jac.T, targets, order, 0.5)
        jp = jac[perm]
        coef_p, t_p = gradvac_weights(jp @ jp.T, targets[perm][:, perm], inv[order[perm]], 0.5)
        d = coef.sum(0) @ jac
        # collinear gradients: cos = ±1 up to rounding and √(1-cos²) turns eps into √eps
        atol = (1e-7 if family.startswith("rank1") else 1e-9) * (1 + d.abs().max())
        torch.testing.assert_close(
            coef_p.sum(0) @ jp, d, rtol=1e-7, atol=atol, msg=lambda m, f=family: f"{f}: {m}"
        )
        torch.testing.assert_close(t_p, t[perm][:, perm])


@pytest.mark.parametrize("k", KS)
def test_finite_with_bounded_targets_over_steps(k: int) -> None:
    method = GradVac(beta=0.5, generator=torch.Generator().manual_seed(0))
    for _ in range(2):
        for _, jac in jacobian_families(k):
            assert_finite(direction(method, jac))
    targets = method.state_dict()["targets"]
    assert targets.shape == (k, k) and (targets.abs() <= 1).all()


def test_scale_equivariant() -> None:
    jac = next(jacobian_families(4))[1]
    a = GradVac(generator=torch.Generator().manual_seed(1))
    b = GradVac(generator=torch.Generator().manual_seed(1))
    for s in (1e-7, 1e7, 1.0):
        torch.testing.assert_close(weights(a, jac), weights(b, jac * s))


def test_state_dict_reset_and_k_change() -> None:
    gen = torch.Generator().manual_seed(0)
    jacs = [torch.randn(3, 8, generator=gen, dtype=torch.float64) for _ in range(4)]
    a = GradVac(generator=torch.Generator().manual_seed(2))
    assert a.state_dict() == {}
    for jac in jacs[:2]:
        weights(a, jac)
    state = a.state_dict()
    assert state["targets"].abs().sum() > 0
    b = GradVac(generator=torch.Generator().manual_seed(9))
    b.load_state_dict(state)
    a.generator = torch.Generator().manual_seed(4)
    b.generator = torch.Generator().manual_seed(4)
    for jac in jacs[2:]:
        torch.testing.assert_close(weights(a, jac), weights(b, jac))
    with pytest.raises(ValueError, match="unknown"):
        b.load_state_dict({"phi": torch.zeros(3, 3)})
    b.reset()
    assert b.state_dict() == {}
    weights(b, torch.randn(5, 8, dtype=torch.float64))  # K changed: fresh targets
    assert b.state_dict()["targets"].shape == (5, 5)


def test_k1_zero_and_dtype() -> None:
    assert_k1_passthrough(GradVac())
    assert_zero_gives_zero(GradVac())
    jac = torch.randn(3, 5)
    out = GradVac().combine(Inputs(losses=torch.ones(3), gramian=jac @ jac.T))
    assert out.weights is not None and out.weights.dtype == torch.float32
