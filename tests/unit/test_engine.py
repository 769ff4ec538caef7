from __future__ import annotations

import pytest
import torch
from torch import nn

import molearn
from molearn.engine import flat_jacobian, jacobian_batched, jacobian_loop
from molearn.methods import EW, MGDA


class MTLNet(nn.Module):
    def __init__(self, k: int = 3, bn: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(6, 16)]
        if bn:
            layers.append(nn.BatchNorm1d(16))
        layers += [nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 8), nn.Tanh()]
        self.trunk = nn.Sequential(*layers)
        self.heads = nn.ModuleList(nn.Linear(8, 1) for _ in range(k))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.trunk(x)
        return z, torch.cat([h(z) for h in self.heads], dim=1)


def losses_of(model: MTLNet, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    z, out = model(x)
    return ((out - y) ** 2).mean(0), z


def reference_jacobian(model: MTLNet, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    rows = []
    for i in range(y.shape[1]):
        model.zero_grad()
        torch.manual_seed(1)
        losses_of(model, x, y)[0][i].backward()
        rows.append(torch.cat([p.grad.flatten() for p in model.trunk.parameters()]))
    model.zero_grad()
    return torch.stack(rows)


@pytest.mark.parametrize("bn", [False, True])
def test_jacobian_modes_agree(bn: bool) -> None:
    model = MTLNet(bn=bn)
    x, y = torch.randn(10, 6), torch.randn(10, 3)
    ref = reference_jacobian(model, x, y)
    shared = list(model.trunk.parameters())
    losses = losses_of(model, x, y)[0]
    j_loop = flat_jacobian(jacobian_loop(losses, shared))
    j_batched = flat_jacobian(jacobian_batched(losses, shared))
    torch.testing.assert_close(j_loop, ref)
    torch.testing.assert_close(j_batched, ref)
    with molearn.Balancer(MGDA(), model.trunk, mode="gramian") as bal:  # hooks the trunk's layers
        torch.manual_seed(1)
        gram = bal.backward(losses_of(model, x, y)[0]).gramian
    assert gram is not None
    torch.testing.assert_close(gram, ref @ ref.T, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["loop", "batched", "gramian"])
@pytest.mark.parametrize("bn", [False, True])
def test_balancer_writes_weighted_direction(mode: str, bn: bool) -> None:
    model = MTLNet(bn=bn)
    x, y = torch.randn(10, 6), torch.randn(10, 3)
    ref = reference_jacobian(model, x, y)
    bal = molearn.Balancer(MGDA(), model.trunk.parameters(), mode=mode)  # type: ignore[arg-type]
    torch.manual_seed(1)
    info = bal.backward(losses_of(model, x, y)[0])
    assert info.weights is not None
    got = torch.cat([p.grad.flatten() for p in model.trunk.parameters()])
    torch.testing.assert_close(got, info.weights @ ref, rtol=1e-5, atol=1e-6)
    # heads get their own loss's gradient (official convention of gradient methods)
    head_grads = [h.weight.grad.clone() for h in model.heads]
    model.zero_grad()
    torch.manual_seed(1)
    losses_of(model, x, y)[0].sum().backward()
    for h, g in zip(model.heads, head_grads):
        torch.testing.assert_close(g, h.weight.grad)
    assert info.cosines is not None and info.cosines.shape == (3, 3)


@pytest.mark.parametrize("mode", ["loop", "batched", "gramian"])
def test_task_params_conventions(mode: str) -> None:
    model = MTLNet()
    x, y = torch.randn(10, 6), torch.randn(10, 3)
    losses_of(model, x, y)[0].sum().backward()
    head_ref = [h.weight.grad.clone() for h in model.heads]
    model.zero_grad()
    own = molearn.Balancer(MGDA(), model.trunk.parameters(), mode=mode)  # type: ignore[arg-type]
    info = own.backward(losses_of(model, x, y)[0])
    head_own = [h.weight.grad.clone() for h in model.heads]
    for got, ref in zip(head_own, head_ref):
        torch.testing.assert_close(got, ref)
    model.zero_grad()
    weighted = molearn.Balancer(MGDA(), model.trunk.parameters(), mode=mode, task_grad="weighted")  # type: ignore[arg-type]
    weighted.backward(losses_of(model, x, y)[0])
    assert info.weights is not None
    for i, h in enumerate(model.heads):
        torch.testing.assert_close(h.weight.grad, info.weights[i] * head_own[i], rtol=1e-4, atol=1e-7)


def test_ew_equals_sum_backward() -> None:
    model = MTLNet()
    x, y = torch.randn(10, 6), torch.randn(10, 3)
    losses_of(model, x, y)[0].sum().backward()
    ref = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    molearn.Balancer(EW(), model.trunk.parameters()).backward(losses_of(model, x, y)[0])
    for p, r in zip(model.parameters(), ref):
        torch.testing.assert_close(p.grad, r)


def test_representation_mode_is_mgda_ub() -> None:
    model = MTLNet()
    x, y = torch.randn(10, 6), torch.randn(10, 3)
    losses, z = losses_of(model, x, y)
    jz = flat_jacobian(jacobian_loop(losses, [z]))
    expected_w = MGDA().combine(molearn.methods.Inputs(losses=losses.detach(), gramian=jz @ jz.T)).weights
    bal = molearn.Balancer(MGDA(), model.trunk.parameters(), mode="representation")
    info = bal.backward(losses, features=z)
    assert info.weights is not None and expected_w is not None
    torch.testing.assert_close(info.weights, expected_w)
    got = torch.cat([p.grad.flatten() for p in model.trunk.parameters()])
    ref = reference_jacobian(model, x, y)
    torch.testing.assert_close(got, info.weights @ ref, rtol=1e-5, atol=1e-6)


def test_dropout_loop_mode_uses_one_mask() -> None:
    model = MTLNet(dropout=0.5)
    x, y = torch.randn(10, 6), torch.randn(10, 3)
    torch.manual_seed(3)
    losses = losses_of(model, x, y)[0]
    j = flat_jacobian(jacobian_loop(losses, list(model.trunk.parameters())))
    jb = flat_jacobian(jacobian_batched(losses, list(model.trunk.parameters())))
    torch.testing.assert_close(j, jb)


def test_loop_flat_writes_the_same_matrix() -> None:
    model = MTLNet()
    x, y = torch.randn(10, 6), torch.randn(10, 3)
    losses = losses_of(model, x, y)[0]
    shared = list(model.trunk.parameters())
    blocks = jacobian_loop(list(losses.unbind()), shared)
    flat = jacobian_loop(list(losses.unbind()), shared, flat=True)
    assert isinstance(flat, torch.Tensor)
    torch.testing.assert_close(flat, flat_jacobian(blocks), rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["loop", "batched"])
def test_direction_method_heads_get_their_own_gradient(mode: str) -> None:
    model = MTLNet()
    x, y = torch.randn(10, 6), torch.randn(10, 3)
    losses_of(model, x, y)[0].sum().backward()
    head_ref = [p.grad.clone() for p in model.heads.parameters()]
    model.zero_grad()
    bal = molearn.Balancer(molearn.methods.DBMTL(), model.trunk.parameters(), mode=mode)  # type: ignore[arg-type]
    bal.backward(losses_of(model, x, y)[0])
    for p, ref in zip(model.heads.parameters(), head_ref):
        torch.testing.assert_close(p.grad, ref)
