"""The engine strategies on a CUDA device: no host synchronisation, and the same values as on the CPU.

Skipped without CUDA. Each strategy runs under ``torch.cuda.set_sync_debug_mode("error")`` with
``check_finite=False`` (the finite check is the Balancer's one documented sync) and a method whose
``combine`` does not synchronise (unit weights), so that any sync raised comes from the engine; with the
check on, each strategy synchronises exactly once per step (``"warn"`` mode, warnings counted).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import ClassVar

import pytest
import torch
from torch import Tensor, nn

import molearn
from molearn.engine import LayerwiseGramian
from molearn.methods import Inputs, Method, Needs, Output

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


class _Unit(Method):
    needs: ClassVar[Needs] = Needs(gramian=True)

    def combine(self, inputs: Inputs) -> Output:
        return Output(weights=torch.ones_like(inputs.losses))


class _UnitJacobian(_Unit):
    needs: ClassVar[Needs] = Needs(jacobian=True)


class _Net(nn.Module):
    def __init__(self, conv: bool) -> None:
        super().__init__()
        if conv:
            self.trunk: nn.Module = nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1),
                nn.BatchNorm2d(8),
                nn.ReLU(inplace=True),
                nn.Conv2d(8, 8, 3, stride=2, padding=1),
                nn.Flatten(),
                nn.Linear(8 * 16, 16),
            )
        else:
            self.trunk = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 16), nn.Tanh())
        self.heads = nn.Linear(16, 5)

    def losses(self, x: Tensor, y: Tensor) -> Tensor:
        return ((self.heads(self.trunk(x)) - y) ** 2).mean(0)


STRATEGIES: dict[str, tuple[Callable[[], object], type[Method]]] = {
    "loss-only": (lambda: "auto", molearn.methods.EW),
    "loop": (lambda: "loop", _UnitJacobian),
    "batched": (lambda: "batched", _UnitJacobian),
    "gramian": (lambda: "gramian", _Unit),
    "gramian-loop-always": (lambda: LayerwiseGramian(1, activation_form="always"), _Unit),
    "gramian-batched-always": (lambda: LayerwiseGramian(5, activation_form="always"), _Unit),
    "auto": (lambda: "auto", _Unit),
}


def _problem(conv: bool, device: str) -> tuple[_Net, Tensor, Tensor]:
    torch.manual_seed(0)
    net = _Net(conv).to(device)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(6, 3, 8, 8, generator=gen) if conv else torch.randn(6, 12, generator=gen)
    y = torch.randn(6, 5, generator=gen)
    return net, x.to(device), y.to(device)


@pytest.mark.parametrize("conv", [False, True])
@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_strategy_is_sync_free_and_matches_the_cpu(name: str, conv: bool) -> None:
    make_mode, method_cls = STRATEGIES[name]
    grads = {}
    for device in ("cpu", "cuda"):
        net, x, y = _problem(conv, device)
        with molearn.Balancer(
            method_cls(),
            net.trunk,
            net.heads.parameters(),
            mode=make_mode(),
            check_finite=False,  # type: ignore[arg-type]
        ) as bal:
            losses = net.losses(x, y)
            if device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.set_sync_debug_mode("error")
            try:
                bal.backward(losses)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        grads[device] = [p.grad.detach().cpu() for p in net.parameters()]
    for a, b in zip(grads["cpu"], grads["cuda"], strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("conv", [False, True])
@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_the_finite_check_is_one_sync_per_step(name: str, conv: bool) -> None:
    """Issue 17: losses, Gramian diagonal, weights and the staged update are reduced on the device and read
    once (the update then reaches ``.grad``)."""
    make_mode, method_cls = STRATEGIES[name]
    net, x, y = _problem(conv, "cuda")
    with molearn.Balancer(method_cls(), net.trunk, net.heads.parameters(), mode=make_mode()) as bal:  # type: ignore[arg-type]
        bal.backward(net.losses(x, y))  # warm-up: the first step finds the task parameters, caches constants
        net.zero_grad(set_to_none=True)
        losses = net.losses(x, y)
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                bal.backward(losses)
            finally:
                torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in seen if "synchroniz" in str(w.message).lower()]
    assert len(syncs) == 1, [str(w.message) for w in syncs]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_grad_scaler_and_autocast_on_cuda() -> None:
    net, x, y = _problem(True, "cuda")
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0**10)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    ref = copy.deepcopy(net)

    def loss_fn(b: tuple[Tensor, Tensor]) -> Tensor:
        with torch.autocast("cuda", dtype=torch.float16):
            return net.losses(*b).float()

    with molearn.Balancer(molearn.methods.MGDA(), net.trunk, net.heads.parameters()) as bal:
        info = bal.step(loss_fn, lambda: (x, y), opt, scaler=scaler)
    assert not info.skipped and info.gramian is not None and torch.isfinite(info.gramian).all()
    moved = [not torch.equal(a, b) for a, b in zip(net.parameters(), ref.parameters())]
    assert all(moved)
