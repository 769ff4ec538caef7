"""MoDo: golden tests against the official updates (LibMTL 3-batch, Trade-Off-MOL 2-batch), properties,
state, and one end-to-end step through ``Balancer.step``."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import molearn
from molearn.methods import Inputs, Method, MoDo, Needs, Output

from ._asserts import (
    assert_finite,
    assert_k1_passthrough,
    assert_permutation_equivariant,
    assert_zero_gives_zero,
    direction,
    jacobian_families,
)

F64 = torch.float64


class _Fresh(Method):
    """Runs a stateful method from its initial state on every call (for the one-call property helpers)."""

    def __init__(self, method: Method) -> None:
        self.method = method

    @property  # type: ignore[override]
    def needs(self) -> Needs:  # type: ignore[override]
        return self.method.needs

    def combine(self, inputs: Inputs) -> Output:
        self.method.reset()
        return self.method.combine(inputs)


def official_projection(y: Tensor) -> Tensor:
    """``_projection2simplex`` of both MoDo codes, transcribed: sort, then scan for the threshold."""
    m = len(y)
    sorted_y = torch.sort(y, descending=True)[0]
    tmpsum = 0.0
    tmax_f = (torch.sum(y) - 1.0) / m
    for i in range(m - 1):
        tmpsum += sorted_y[i]
        tmax = (tmpsum - 1) / (i + 1.0)
        if tmax > sorted_y[i + 1]:
            tmax_f = tmax
            break
    return torch.max(y - tmax_f, torch.zeros(m, dtype=y.dtype))


def official_lambda_step(lambd: Tensor, g1: Tensor, g2: Tensor, gamma: float, rho: float) -> Tensor:
    return official_projection(lambd - gamma * (g1 @ (torch.transpose(g2, 0, 1) @ lambd) + rho * lambd))


def batch_jacobians(seed: int, steps: int, batches: int, k: int = 4, p: int = 9) -> list[list[Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(k, p, generator=gen, dtype=F64)
    return [
        [base + 0.7 * torch.randn(k, p, generator=gen, dtype=F64) for _ in range(batches)]
        for _ in range(steps)
    ]


def run(method: MoDo, jacs: list[Tensor]) -> tuple[Tensor, Tensor]:
    """One combine on the batches ``jacs`` (drawn in that order); returns (direction, λ)."""
    k = jacs[0].shape[0]
    losses = torch.linspace(1.0, 2.0, k, dtype=F64)
    parts = [Inputs(losses=losses, gramian=j @ j.T, jacobian=j) for j in jacs]
    inputs = parts[-1]
    inputs.extra = parts[:-1]
    out = method.combine(inputs)
    assert out.weights is not None
    d = out.weights @ jacs[-1]
    if out.extra_weights is not None:
        for w, j in zip(out.extra_weights, jacs[:-1], strict=True):
            d = d + w @ j
    return d, out.info["lambda"]


def test_golden_three_batches_matches_libmtl() -> None:
    gamma, rho = 0.2, 0.1
    method = MoDo(gamma=gamma, rho=rho, variant="three")
    assert method.needs.batches == 3 and method.needs.jacobian
    lambd = torch.full((4,), 0.25, dtype=F64)
    moved = clipped = False
    for g1, g2, g3 in batch_jacobians(0, steps=5, batches=3):
        lambd = official_lambda_step(lambd, g1, g2, gamma, rho)
        expected = lambd @ g3  # the direction uses the *updated* λ on the third batch
        d, lam = run(method, [g1, g2, g3])
        torch.testing.assert_close(lam, lambd, atol=1e-10, rtol=0)
        torch.testing.assert_close(d, expected, atol=1e-10, rtol=0)
        moved |= bool((lambd - 0.25).abs().max() > 1e-3)
        clipped |= bool((lambd == 0).any())
    assert moved, "λ never moved: the test would not see a wrong update"
    assert clipped, "the projection never clipped: pick a larger gamma"


@pytest.mark.parametrize("average", [True, False])
def test_golden_two_batches_matches_trade_off_mol(average: bool) -> None:
    gamma, rho = 0.1, 0.1
    method = MoDo(gamma=gamma, rho=rho, variant="two", average=average)
    assert method.needs.batches == 2
    lambd = torch.full((4,), 0.25, dtype=F64)
    for g1, g2 in batch_jacobians(1, steps=5, batches=2):
        lambd = official_lambda_step(lambd, g1, g2, gamma, rho)
        # Toy/moo.py: 0.5 λ (g1 + g2); the LibMTL fork: λ (g1 + g2) ("averaging via lr")
        expected = (0.5 if average else 1.0) * lambd @ (g1 + g2)
        d, lam = run(method, [g1, g2])
        torch.testing.assert_close(lam, lambd, atol=1e-10, rtol=0)
        torch.testing.assert_close(d, expected, atol=1e-10, rtol=0)


def test_order_of_batches_matters_for_lambda() -> None:
    """λ uses G₁G₂ᵀ from the first two batches, not the last one (guards against a wrong batch index)."""
    g1, g2, g3 = batch_jacobians(2, steps=1, batches=3)[0]
    _, lam = run(MoDo(gamma=0.3), [g1, g2, g3])
    _, lam_swapped = run(MoDo(gamma=0.3), [g3, g2, g1])
    assert (lam - lam_swapped).abs().max() > 1e-3


def test_state_dict_round_trip_and_reset() -> None:
    seq = batch_jacobians(3, steps=6, batches=3)
    a = MoDo(gamma=0.2)
    for jacs in seq[:3]:
        run(a, jacs)
    b = MoDo(gamma=0.2)
    b.load_state_dict(a.state_dict())
    for jacs in seq[3:]:
        da, _ = run(a, jacs)
        db, _ = run(b, jacs)
        torch.testing.assert_close(da, db, atol=0, rtol=0)
    a.reset()
    assert a.state_dict() == {}
    _, lam = run(a, seq[0])
    _, lam_fresh = run(MoDo(gamma=0.2), seq[0])
    torch.testing.assert_close(lam, lam_fresh)
    with pytest.raises(ValueError, match="unknown state"):
        a.load_state_dict({"y": torch.zeros(2)})


def test_lambda_reinitialised_when_k_changes() -> None:
    method = MoDo(gamma=0.2)
    run(method, batch_jacobians(4, steps=1, batches=3, k=4)[0])
    _, lam = run(method, batch_jacobians(4, steps=1, batches=3, k=3)[0])
    assert lam.shape == (3,)
    torch.testing.assert_close(lam.sum(), torch.tensor(1.0, dtype=F64))


def test_wrong_number_of_batches_raises() -> None:
    g = torch.randn(3, 5, dtype=F64)
    with pytest.raises(ValueError, match="3 independent batches"):
        MoDo().combine(Inputs(losses=torch.ones(3, dtype=F64), gramian=g @ g.T, jacobian=g))


@pytest.mark.parametrize("k", [2, 3, 5, 10])
@pytest.mark.parametrize("variant", ["three", "two"])
def test_properties(k: int, variant: str) -> None:
    for _, jac in jacobian_families(k):
        for _ in range(3):  # a few steps: λ moves
            assert_finite(direction(MoDo(gamma=0.5, variant=variant), jac))  # type: ignore[arg-type]
        assert_permutation_equivariant(_Fresh(MoDo(gamma=0.5, variant=variant)), jac)  # type: ignore[arg-type]
    assert_zero_gives_zero(MoDo(variant=variant), k)  # type: ignore[arg-type]


def test_k1() -> None:
    assert_k1_passthrough(MoDo(variant="three"))
    assert_k1_passthrough(MoDo(variant="two"))
    g = torch.randn(1, 6, dtype=F64)
    torch.testing.assert_close(direction(MoDo(variant="two", average=False), g), 2 * g[0])


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        MoDo(variant="four")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        MoDo(gamma=-1.0)


# ---------------------------------------------------------------- end to end through Balancer.step
class Net(nn.Module):
    def __init__(self, k: int = 2) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(5, 4), nn.Tanh())
        self.heads = nn.ModuleList(nn.Linear(4, 1) for _ in range(k))

    def losses(self, batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = batch
        z = self.trunk(x)
        out = torch.cat([h(z) for h in self.heads], dim=1)
        return ((out - y) ** 2).mean(0)


def per_batch_grads(net: Net, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """(K×P_shared Jacobian, Σ_i ∇_heads L_i flattened), by plain autograd."""
    shared = list(net.trunk.parameters())
    heads = list(net.heads.parameters())
    losses = net.losses(batch)
    rows = [
        torch.cat([g.flatten() for g in torch.autograd.grad(li, shared, retain_graph=True)]) for li in losses
    ]
    head = torch.cat([g.flatten() for g in torch.autograd.grad(losses.sum(), heads)])
    return torch.stack(rows), head


@pytest.mark.parametrize("variant", ["three", "two"])
def test_balancer_step_end_to_end(variant: str) -> None:
    torch.manual_seed(0)
    net = Net().double()
    gen = torch.Generator().manual_seed(5)
    batches = [(torch.randn(8, 5, generator=gen, dtype=F64), torch.randn(8, 2, generator=gen, dtype=F64))
               for _ in range(3)]
    nb = 3 if variant == "three" else 2
    gamma, rho = 0.5, 0.1
    grads = [per_batch_grads(net, b) for b in batches[:nb]]
    lambd = official_lambda_step(torch.full((2,), 0.5, dtype=F64), grads[0][0], grads[1][0], gamma, rho)
    g_dir = grads[2][0] if variant == "three" else 0.5 * (grads[0][0] + grads[1][0])
    expected_shared = lambd @ g_dir
    expected_heads = torch.stack([h for _, h in grads]).mean(0)

    bal = molearn.Balancer(
        MoDo(gamma=gamma, rho=rho, variant=variant),  # type: ignore[arg-type]
        net.trunk.parameters(),
        net.heads.parameters(),
        mode="loop",
    )
    info = bal.step(net.losses, iter(batches))
    got_shared = torch.cat([p.grad.flatten() for p in net.trunk.parameters()])  # type: ignore[union-attr]
    got_heads = torch.cat([p.grad.flatten() for p in net.heads.parameters()])  # type: ignore[union-attr]
    torch.testing.assert_close(info.info["lambda"], lambd, atol=1e-12, rtol=0)
    torch.testing.assert_close(got_shared, expected_shared, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(got_heads, expected_heads, atol=1e-12, rtol=1e-10)
