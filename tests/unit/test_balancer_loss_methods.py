"""Loss-only methods end to end through molearn.Balancer: the written .grad is Σ w_i ∇L_i."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

import molearn
from molearn.methods import DWA, FAMO, GLS, RLW, STCH, Fixed, Inputs, Method

F64 = torch.float64

FACTORIES: dict[str, Callable[[], Method]] = {
    "fixed": lambda: Fixed([0.3, 1.7]),
    "dwa": lambda: DWA(period=2),
    "rlw": lambda: RLW(generator=torch.Generator().manual_seed(7)),
    "gls": lambda: GLS(),
    "famo": lambda: FAMO(w_lr=0.05),
    "stch": lambda: STCH(mu=0.5, warmup=0, period=2),
    "stch_plain": lambda: STCH(mu=0.5, variant="plain"),
}


class TwoHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(4, 6), nn.Tanh())
        self.heads = nn.ModuleList(nn.Linear(6, 1) for _ in range(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.trunk(x)
        return torch.cat([h(z) for h in self.heads], dim=1)


def setup(seed: int = 0) -> tuple[TwoHead, Callable[[tuple], torch.Tensor], tuple]:
    torch.manual_seed(seed)
    model = TwoHead().to(F64)
    x, y = torch.randn(16, 4, dtype=F64), torch.randn(16, 2, dtype=F64)

    def loss_fn(batch: tuple) -> torch.Tensor:
        xb, yb = batch
        return ((model(xb) - yb) ** 2).mean(0)

    return model, loss_fn, (x, y)


def per_loss_grads(model: nn.Module, losses: torch.Tensor) -> list[list[torch.Tensor]]:
    params = list(model.parameters())
    out = []
    for i in range(losses.shape[0]):
        gs = torch.autograd.grad(losses[i], params, retain_graph=True, allow_unused=True)
        out.append([torch.zeros_like(p) if g is None else g for p, g in zip(params, gs, strict=True)])
    return out


def assert_grad_is_weighted_sum(model: nn.Module, grads: list[list[torch.Tensor]], w: torch.Tensor) -> None:
    for j, p in enumerate(model.parameters()):
        expected = sum(w[i] * grads[i][j] for i in range(len(grads)))
        assert p.grad is not None
        torch.testing.assert_close(p.grad, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_backward_and_update(name: str) -> None:
    model, loss_fn, batch = setup()
    method, twin = FACTORIES[name](), FACTORIES[name]()
    bal = molearn.Balancer(method, model.trunk.parameters())
    assert bal.task_grad == "weighted"
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(5):
        opt.zero_grad(set_to_none=True)
        losses = loss_fn(batch)
        grads = per_loss_grads(model, losses)
        w = twin.combine(Inputs(losses=losses.detach())).weights
        assert w is not None
        info = bal.backward(losses)
        assert info.weights is not None
        torch.testing.assert_close(info.weights, w, rtol=0, atol=0)
        assert_grad_is_weighted_sum(model, grads, w)
        opt.step()
        if method.needs.after_step:
            with torch.no_grad():
                new = loss_fn(batch)
            bal.update(new)
            twin.after_step(losses.detach(), new)
    assert str(method.state_dict()) == str(twin.state_dict())


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_step_closure(name: str) -> None:
    model, loss_fn, batch = setup(1)
    method, twin = FACTORIES[name](), FACTORIES[name]()
    bal = molearn.Balancer(method, model.trunk.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(5):
        losses = loss_fn(batch)
        grads = per_loss_grads(model, losses)
        w = twin.combine(Inputs(losses=losses.detach())).weights
        assert w is not None
        info = bal.step(loss_fn, lambda: batch, opt)
        assert info.weights is not None
        torch.testing.assert_close(info.weights, w, rtol=0, atol=0)
        assert_grad_is_weighted_sum(model, grads, w)  # SGD.step does not touch .grad
        if twin.needs.after_step:
            with torch.no_grad():
                twin.after_step(losses.detach(), loss_fn(batch))
    if isinstance(method, FAMO):
        assert method.logits is not None and twin.logits is not None
        assert method.logits.abs().max() > 1e-3  # the engine fed the post-step losses back
        torch.testing.assert_close(method.logits, twin.logits, rtol=1e-12, atol=1e-14)


def test_famo_without_update_keeps_uniform_logits() -> None:
    model, loss_fn, batch = setup(2)
    method = FAMO()
    bal = molearn.Balancer(method, model.trunk.parameters())
    bal.backward(loss_fn(batch))
    bal.step(loss_fn, lambda: batch, optimizer=None)  # no optimiser: nothing to learn from
    assert method.logits is not None and torch.equal(method.logits, torch.zeros(2, dtype=F64))


def test_non_finite_loss_does_not_reach_the_method_state() -> None:
    model, loss_fn, batch = setup(3)
    method = DWA(period=1)
    bal = molearn.Balancer(method, model.trunk.parameters(), on_nonfinite="skip")
    losses = loss_fn(batch)
    bad = torch.stack([losses[0], losses[1] * float("nan")])
    info = bal.backward(bad)
    assert info.skipped and method.state_dict()["history"] == []
    strict = molearn.Balancer(GLS(), model.trunk.parameters())
    with pytest.raises(molearn.NonFiniteLossError):
        strict.backward(torch.stack([losses[0], losses[1] * float("inf")]))


def test_gls_rejects_a_non_positive_loss_through_the_balancer() -> None:
    model, loss_fn, batch = setup(4)
    bal = molearn.Balancer(GLS(), model.trunk.parameters())
    losses = loss_fn(batch)
    with pytest.raises(ValueError, match="positive"):
        bal.backward(torch.stack([losses[0], losses[1] - losses[1].detach() - 1.0]))


def test_fixed_wrong_k_through_the_balancer() -> None:
    model, loss_fn, batch = setup(5)
    bal = molearn.Balancer(Fixed([1.0, 2.0, 3.0]), model.trunk.parameters())
    with pytest.raises(ValueError, match="3 weights but received 2 losses"):
        bal.backward(loss_fn(batch))


def test_registry_names() -> None:
    table = [("fixed", Fixed), ("dwa", DWA), ("rlw", RLW), ("gls", GLS), ("famo", FAMO), ("stch", STCH)]
    for name, cls in table:
        assert molearn.methods.registry()[name] is cls
    assert isinstance(molearn.methods.get("STCH", mu=0.1), STCH)
