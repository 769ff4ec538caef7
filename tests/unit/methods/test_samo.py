"""SAMO: one Balancer step equals the official SAMO step (OptMN-Lab/SAMO ``experiments/*/trainer_samo.py``,
``GradEstimator``) written out independently below; BatchNorm/dropout handling; wrapping other methods."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import molearn
from molearn.engine import Probe
from molearn.methods import (
    DBMTL,
    EW,
    MGDA,
    SAMO,
    CAGrad,
    FairGrad,
    GradDrop,
    Inputs,
    Method,
    MoDo,
    SDMGradOS,
    UPGrad,
    get,
)

from ._asserts import direction, jacobian_families, make_inputs

F64 = torch.float64
Batch = tuple[Tensor, Tensor]


class Net(nn.Module):
    def __init__(self, k: int, bn: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(4, 6)]
        if bn:
            layers.append(nn.BatchNorm1d(6))
        layers += [nn.Tanh(), nn.Linear(6, 5), nn.Tanh()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        self.trunk = nn.Sequential(*layers)
        self.heads = nn.ModuleList(nn.Linear(5, 1) for _ in range(k))

    def forward(self, x: Tensor) -> list[Tensor]:
        z = self.trunk(x)
        return [h(z).squeeze(-1) for h in self.heads]


def losses_of(model: Net, batch: Batch) -> Tensor:
    x, y = batch
    return torch.stack([((out - y[:, i]) ** 2).mean() + 0.1 * out.mean() for i, out in enumerate(model(x))])


def setup(k: int = 3, seed: int = 0, **kw: Any) -> tuple[Net, Batch]:
    torch.manual_seed(seed)
    model = Net(k, **kw).to(F64)
    x = torch.randn(12, 4, dtype=F64)
    y = torch.randn(12, k, dtype=F64)
    return model, (x, y)


def head_params(model: Net) -> list[Tensor]:
    return [p for h in model.heads for p in h.parameters()]


def samo_step(
    model: Net, batch: Batch, method: SAMO, loss_fn: Callable[[Batch], Tensor] | None = None
) -> None:
    model.zero_grad(set_to_none=True)
    bal = molearn.Balancer(method, model.trunk.parameters(), head_params(model), module=model)
    bal.step(loss_fn or (lambda b: losses_of(model, b)), lambda: batch, optimizer=None)


# ------------------------------------------------------------------------------ the official step
def official_step(
    model: Net, batch: Batch, twin: Method, rho: float, beta: float, zo_eps: float, layerwise: bool, seed: int
) -> tuple[list[Tensor], Tensor]:
    """The official SAMO step on ``model`` (its .grad is written); returns the shared SAM gradients
    (K×P_shared) and the losses. Random directions: one ``randn(P_shared)`` per task from a generator
    seeded with ``seed``, split per tensor (the official code draws per tensor from a reseeded global RNG)."""
    gen = torch.Generator().manual_seed(seed)
    shared = list(model.trunk.named_parameters())
    k = len(model.heads)
    model.train()
    model.zero_grad(set_to_none=True)
    losses = losses_of(model, batch)
    losses.mean().backward()
    # GradEstimator: a copy in eval mode, L_task(θ + εz) and L_task(θ + εz - 2εz), heads unperturbed
    zeroth: list[dict[str, Tensor]] = []
    for task in range(k):
        flat = torch.randn(sum(p.numel() for _, p in shared), generator=gen, dtype=F64)
        zs, start = {}, 0
        for n, p in shared:
            zs[n] = flat[start : start + p.numel()].view_as(p)
            start += p.numel()
        est = copy.deepcopy(model)
        with torch.no_grad():
            for n, p in est.trunk.named_parameters():
                p.data = p.data + 1 * zs[n] * zo_eps
            est.eval()
            loss1 = losses_of(est, batch)[task]
            for n, p in est.trunk.named_parameters():
                p.data = p.data + (-2) * zs[n] * zo_eps
            est.eval()
            loss2 = losses_of(est, batch)[task]
        projected = (loss1 - loss2) / (2 * zo_eps)
        zeroth.append({n: projected * zs[n] for n, _ in shared})
    # Stage I: perturbations
    shared_saved = {n: p.data.clone() for n, p in shared}
    head_saved: list[dict[str, Tensor]] = []
    eps_shared: list[dict[str, Tensor]] = []
    eps_head: list[dict[str, Tensor]] = []
    for task in range(k):
        hp = list(model.heads[task].named_parameters())
        head_saved.append({n: p.data.clone() for n, p in hp})
        h_norm = torch.norm(torch.stack([p.grad.norm(p=2) for _, p in hp]), p=2)
        eps_head.append({n: p.grad.clone() * (rho / (h_norm + 1e-12)) for n, p in hp})
        mixed, norms = {}, []
        for n, p in shared:
            if layerwise:
                n1 = p.grad.norm(p=2)
                n2 = zeroth[task][n].norm(p=2)
                g = (1 - beta) * p.grad.clone() + beta * n1 * (zeroth[task][n] / n2)
            else:  # the NYUv2 trainer
                g = (1 - beta) * p.grad.clone() + beta * zeroth[task][n]
            mixed[n] = g
            norms.append(g.norm(p=2))
        s_norm = torch.norm(torch.stack(norms), p=2)
        eps_shared.append({n: g * (rho / (s_norm + 1e-12)) for n, g in mixed.items()})
    # Stage II: per-task gradients at the perturbed points (BatchNorm momentum 0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.backup_momentum = m.momentum  # type: ignore[assignment]
            m.momentum = 0.0
    model.zero_grad()
    sam: list[Tensor] = []
    for task in range(k):
        for n, p in model.heads[task].named_parameters():
            p.data = (head_saved[task][n] + eps_head[task][n]).clone()
        for n, p in shared:
            p.data = (shared_saved[n] + eps_shared[task][n]).clone()
        losses_of(model, batch)[task].backward()
        for n, p in model.heads[task].named_parameters():
            p.data = head_saved[task][n].clone()
        sam.append(torch.cat([p.grad.reshape(-1).clone() for _, p in shared]))
        for _, p in shared:
            p.grad.zero_()
    for n, p in shared:
        p.data = shared_saved[n]
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.momentum = m.backup_momentum  # type: ignore[assignment]
    jac = torch.stack(sam)
    d = direction(twin, jac, losses.detach())
    start = 0
    for _, p in shared:
        p.grad = d[start : start + p.numel()].view_as(p).clone()
        start += p.numel()
    return sam, losses.detach()


INNER: dict[str, Callable[[], Method]] = {
    "ew": lambda: EW(),
    "mgda": lambda: MGDA(),
    "fairgrad": lambda: FairGrad(alpha=2.0),
    "cagrad": lambda: CAGrad(c=0.4),
    "graddrop": lambda: GradDrop(generator=torch.Generator().manual_seed(5)),  # a Jacobian method
}


@pytest.mark.parametrize("bn", [False, True])
@pytest.mark.parametrize("layerwise", [True, False])
@pytest.mark.parametrize("inner", sorted(INNER))
def test_step_equals_the_official_samo_step(inner: str, layerwise: bool, bn: bool) -> None:
    rho, beta, zo_eps = 0.05, 0.3, 0.01  # a large ρ so that the perturbation matters
    model, batch = setup(3, seed=1, bn=bn)
    oracle = copy.deepcopy(model)
    method = SAMO(
        INNER[inner](),
        rho=rho,
        beta=beta,
        zo_eps=zo_eps,
        layerwise=layerwise,
        generator=torch.Generator().manual_seed(11),
    )
    samo_step(model, batch, method)
    official_step(oracle, batch, INNER[inner](), rho, beta, zo_eps, layerwise, seed=11)
    for (name, p), q in zip(model.named_parameters(), oracle.parameters(), strict=True):
        assert p.grad is not None and q.grad is not None
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-10, atol=1e-12, msg=name)
        assert torch.equal(p, q), f"{name}: parameters not restored"
    for (name, b), c in zip(model.named_buffers(), oracle.named_buffers(), strict=True):
        if "num_batches_tracked" in name:  # the official momentum-0 passes still count batches
            assert int(b) == 1 and int(c[1]) == 1 + 3
        else:
            assert torch.equal(b, c[1]), name


def test_perturbation_changes_the_gradients_and_rho_zero_is_plain_fairgrad() -> None:
    model, batch = setup(3, seed=2)
    plain = copy.deepcopy(model)
    samo_step(model, batch, SAMO(rho=0.0, generator=torch.Generator().manual_seed(0)))
    plain.zero_grad()
    molearn.Balancer(FairGrad(), plain.trunk.parameters(), head_params(plain)).backward(
        losses_of(plain, batch)
    )
    for p, q in zip(model.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-10, atol=1e-13)
    samo_step(model, batch, SAMO(rho=0.05, generator=torch.Generator().manual_seed(0)))
    diff = max(float((p.grad - q.grad).abs().max()) for p, q in zip(model.parameters(), plain.parameters()))
    assert diff > 1e-4


def test_head_gradient_at_its_own_perturbed_point() -> None:
    """Objective 2 = ‖W₂‖² on its head alone: its local estimate is exactly 0 (guarded, no NaN) and
    its head gradient is 2(W₂ + ρ W₂/‖W₂‖), taken at the perturbed head."""
    model, batch = setup(3, seed=3)
    rho = 0.1

    def loss_fn(b: Batch) -> Tensor:
        base = losses_of(model, b)
        return torch.stack([base[0], base[1], (model.heads[2].weight ** 2).sum()])

    samo_step(model, batch, SAMO(EW(), rho=rho, generator=torch.Generator().manual_seed(0)), loss_fn)
    w = model.heads[2].weight.detach()
    torch.testing.assert_close(model.heads[2].weight.grad, 2 * w * (1 + rho / w.norm()), rtol=1e-9, atol=0)
    assert model.heads[2].bias.grad is None or model.heads[2].bias.grad.abs().max() == 0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_zero_losses_give_zero_gradients() -> None:
    model, batch = setup(3, seed=4)
    samo_step(
        model, batch, SAMO(generator=torch.Generator().manual_seed(0)), lambda b: 0.0 * losses_of(model, b)
    )
    for p in model.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().max() == 0


# ------------------------------------------------------------------------------ BatchNorm, dropout, cost
def test_batchnorm_statistics_move_once_and_parameters_are_restored() -> None:
    model, batch = setup(3, seed=5, bn=True)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    expected = copy.deepcopy(model)
    expected.train()
    with torch.no_grad():
        expected(batch[0])  # one ordinary training forward
    samo_step(model, batch, SAMO(rho=0.05, generator=torch.Generator().manual_seed(0)))
    for (name, b), (_, e) in zip(model.named_buffers(), expected.named_buffers(), strict=True):
        assert torch.equal(b, e), f"{name}: {b} != {e}"
    assert int(model.trunk[1].num_batches_tracked) == 1
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n
    assert model.training


def test_zeroth_order_passes_run_in_eval_mode_and_modes_are_restored() -> None:
    k = 3
    model, batch = setup(k, seed=6, dropout=0.5)
    model.heads[1].eval()  # a mixed state, restored module by module
    modes_before = [m.training for m in model.modules()]
    calls: list[bool] = []

    def loss_fn(b: Batch) -> Tensor:
        calls.append(model.trunk.training)
        return losses_of(model, b)

    samo_step(model, batch, SAMO(generator=torch.Generator().manual_seed(0)), loss_fn)
    assert [m.training for m in model.modules()] == modes_before
    assert len(calls) == 3 * k + 1  # the (3K + 1) forward passes of the paper
    assert calls.count(False) == 2 * k and calls[0]
    # the zeroth-order evaluations (Probe.losses_at) are deterministic under dropout
    losses = losses_of(model, batch)
    probe = Probe(
        lambda: losses_of(model, batch), losses, list(model.trunk.parameters()), head_params(model), model
    )
    offset = 0.01 * torch.randn(sum(p.numel() for p in model.parameters()), dtype=F64)
    a, b = probe.losses_at(offset), probe.losses_at(offset)
    assert torch.equal(a, b)
    model.eval()
    with torch.no_grad():
        ref = losses_of(model, batch)
    torch.testing.assert_close(probe.losses_at(None), ref, rtol=0, atol=0)


def test_cost_counts_and_k1() -> None:
    model, batch = setup(4, seed=7)
    losses = losses_of(model, batch)
    probe = Probe(lambda: losses_of(model, batch), losses, list(model.trunk.parameters()), head_params(model))
    jac = SAMO(generator=torch.Generator().manual_seed(0)).jacobian(probe)
    assert jac.shape == (4, sum(p.numel() for p in model.parameters()))
    assert probe.forward_passes == 3 * 4 and probe.backward_passes == 4 + 1
    # K = 1, β = 0: plain SAM, ∇L(θ + ρ ḡ_s/‖ḡ_s‖ + ρ ḡ_h/‖ḡ_h‖) (shared and head normalised apart)
    model1, batch1 = setup(1, seed=8)
    params = [*model1.trunk.parameters(), *head_params(model1)]
    ns = sum(p.numel() for p in model1.trunk.parameters())
    loss = losses_of(model1, batch1)
    g = torch.cat([x.reshape(-1) for x in torch.autograd.grad(loss[0], params)])
    rho = 0.2
    offset = torch.cat([rho * g[:ns] / (g[:ns].norm() + 1e-12), rho * g[ns:] / (g[ns:].norm() + 1e-12)])
    with torch.no_grad():
        start = 0
        for p in params:
            p.add_(offset[start : start + p.numel()].view_as(p))
            start += p.numel()
    expected = torch.cat([x.reshape(-1) for x in torch.autograd.grad(losses_of(model1, batch1)[0], params)])
    with torch.no_grad():
        start = 0
        for p in params:
            p.sub_(offset[start : start + p.numel()].view_as(p))
            start += p.numel()
    probe1 = Probe(
        lambda: losses_of(model1, batch1),
        losses_of(model1, batch1),
        list(model1.trunk.parameters()),
        head_params(model1),
    )
    row = SAMO(rho=rho, beta=0.0, generator=torch.Generator().manual_seed(0)).jacobian(probe1)
    torch.testing.assert_close(row[0], expected, rtol=1e-10, atol=1e-13)
    # through the Balancer, K = 1 passes the plain gradient through (no perturbation)
    model1.zero_grad()
    samo_step(model1, batch1, SAMO(rho=rho))
    torch.testing.assert_close(torch.cat([p.grad.reshape(-1) for p in params]), g, rtol=1e-12, atol=0)


# ------------------------------------------------------------------------------ the Method API
@pytest.mark.parametrize("inner", [MGDA, CAGrad, FairGrad, UPGrad, DBMTL])
def test_combine_is_the_inner_methods(inner: type[Method]) -> None:
    method = SAMO(inner())
    assert method.needs.closure and method.needs.gradients
    assert method.needs.jacobian == inner.needs.jacobian
    assert method.task_grad == "own"
    for k in (2, 5):
        for family, jac in jacobian_families(k):
            losses = torch.linspace(0.5, 2.0, k, dtype=F64)
            a = direction(SAMO(inner()), jac, losses)  # fresh: DBMTL is stateful
            b = direction(inner(), jac, losses)
            torch.testing.assert_close(a, b, rtol=1e-12, atol=0, msg=family)
            assert torch.isfinite(a).all()


def test_constructor_defaults_and_validation() -> None:
    method = get("samo")
    assert isinstance(method, SAMO) and isinstance(method.method, FairGrad) and method.method.alpha == 2.0
    assert (method.rho, method.beta, method.zo_eps, method.layerwise) == (0.001, 0.5, 0.01, True)
    named = SAMO("mgda", rho=0.01, scale="K")
    assert isinstance(named.method, MGDA) and named.method.scale == "K"
    assert SAMO("fairgrad", alpha=1.0).method.alpha == 1.0  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        SAMO(MGDA(), scale="K")
    for bad in ({"rho": -1.0}, {"beta": 1.5}, {"zo_eps": 0.0}):
        with pytest.raises(ValueError):
            SAMO(**bad)
    for inner in (SAMO(), MoDo(), SDMGradOS()):
        with pytest.raises(ValueError):
            SAMO(inner)
    inputs = make_inputs(SAMO(), torch.randn(3, 6, dtype=F64))
    assert inputs.gramian is not None
    with pytest.raises(TypeError, match="closure"):
        model, batch = setup(2)
        molearn.Balancer(SAMO(), model.trunk.parameters()).backward(losses_of(model, batch))


def test_state_generator_and_reset() -> None:
    method = SAMO(generator=torch.Generator().manual_seed(3))
    state = method.state_dict()
    assert set(state) == {"method", "generator"}
    z1 = torch.randn(5, generator=method.generator)
    method.load_state_dict(state)
    assert method.generator is not None
    assert torch.equal(torch.randn(5, generator=method.generator), z1)
    with pytest.raises(ValueError):
        SAMO().load_state_dict(state)
    inner = DBMTL()
    wrapped = SAMO(inner)
    jac = torch.randn(2, 4, dtype=F64)
    wrapped.combine(Inputs(losses=torch.ones(2, dtype=F64), gramian=jac @ jac.T, jacobian=jac))
    assert str(wrapped.state_dict()["method"]) == str(inner.state_dict())
    wrapped.reset()
    assert str(wrapped.state_dict()["method"]) == str(DBMTL().state_dict())
