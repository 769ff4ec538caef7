"""Hypothesis properties of :class:`molearn.Balancer` over every method (issue 17).

Drawn: the method, K (1-6), the parameters' dtype (float64, float32, bfloat16, float16), a loss scale
from 1e-15 to 1e15, the strategy and one fault: none, a NaN or infinite loss, a finite loss with a NaN
gradient, a zero gradient, two opposite objectives. The invariant, whatever is drawn: **a clear error
(NonFiniteLossError, ValueError or TypeError, with a message) and the model untouched** (parameters,
their ``.grad`` and the method's state as before the step), **or a finite, documented result** (finite
parameters, gradients and weights; a fault that makes the step non-finite is never stepped in, and with
``on_nonfinite="skip"`` it is skipped, not raised).
"""

from __future__ import annotations

import re
from typing import Any

import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

import molearn
from molearn.methods import Method, get, registry

METHODS = sorted(registry())
FAULTS = ["none", "nan_loss", "inf_loss", "nan_grad", "zero_grad", "opposite"]
DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]
NONFINITE = {"nan_loss", "inf_loss", "nan_grad"}
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _method(name: str, k: int) -> Method:
    extra: dict[str, dict[str, Any]] = {"fixed": {"weights": [1.0] * k}, "autolambda": {"lr": 0.01}}
    return get(name, **extra.get(name, {}))


class _Net(nn.Module):
    def __init__(self, k: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(3, 5), nn.Tanh()).to(dtype)
        self.heads = nn.ModuleList(nn.Linear(5, 1) for _ in range(k)).to(dtype)

    def losses(self, x: Tensor, fault: str, where: int, scale: float) -> list[Tensor]:
        z = self.trunk(x)
        ys = [head(z).squeeze(1).float() for head in self.heads]
        out = [(y.pow(2).mean() + 0.1) * scale for y in ys]
        y = ys[where]
        if fault == "nan_loss":
            out[where] = out[where] * float("nan")
        elif fault == "inf_loss":
            out[where] = out[where] + float("inf")
        elif fault == "nan_grad":  # finite loss, NaN gradient (sqrt at 0)
            out[where] = (y * 0).sqrt().mean() + 0.1 * scale
        elif fault == "zero_grad":
            out[where] = (y * 0).mean() + 0.1 * scale
        elif fault == "opposite" and len(out) > 1:  # the next objective's gradient is the negative
            other = (where + 1) % len(out)
            out[other] = 10.0 * scale - out[where]
        return out


def _snapshot(net: nn.Module, method: Method) -> tuple[list[Tensor], dict[str, Any]]:
    return [p.detach().clone() for p in net.parameters()], method.state_dict()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor):
        return isinstance(b, Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return bool(a == b)


@SETTINGS
@given(
    name=st.sampled_from(METHODS),
    k=st.integers(1, 6),
    dtype=st.sampled_from(DTYPES),
    exponent=st.sampled_from([-15, -6, 0, 6, 15]),
    fault=st.sampled_from(FAULTS),
    where=st.integers(0, 5),
    mode=st.sampled_from(["auto", "loop", "gramian"]),
    skip=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_a_clear_error_or_a_finite_step(
    name: str,
    k: int,
    dtype: torch.dtype,
    exponent: int,
    fault: str,
    where: int,
    mode: str,
    skip: bool,
    seed: int,
) -> None:
    torch.manual_seed(seed)
    where = where % k
    net = _Net(k, dtype)
    method = _method(name, k)
    heads = [p for h in net.heads for p in h.parameters()]
    x = torch.randn(6, 3, dtype=dtype)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    try:
        bal = molearn.Balancer(
            method,
            net.trunk,
            heads,
            mode=mode,
            on_nonfinite="skip" if skip else "raise",  # type: ignore[arg-type]
        )
    except ValueError as err:  # e.g. a Jacobian method in mode="gramian": said so at construction
        assert str(err)
        event("refused at construction")
        return
    params, state = _snapshot(net, method)
    scale = 10.0**exponent
    try:
        info = bal.step(lambda b: net.losses(b, fault, where, scale), lambda: x, opt)
    except (molearn.NonFiniteLossError, ValueError, TypeError) as err:
        assert str(err), "an error without a message"
        assert not skip or not isinstance(err, molearn.NonFiniteLossError), "skip policy raised"
        after, state_after = _snapshot(net, method)
        assert all(torch.equal(a, b) for a, b in zip(params, after)), "the error left the model changed"
        assert all(p.grad is None for p in net.parameters()), "the error left gradients behind"
        assert _same(state, state_after), "the error left the method state changed"
        event(f"error: {type(err).__name__}")
        return
    if info.skipped:
        assert skip and info.reason
        assert all(torch.equal(a, b.detach()) for a, b in zip(params, net.parameters()))
        assert all(p.grad is None for p in net.parameters())
        event("skipped")
        return
    # a NaN/Inf is never stepped in (SDMGrad-OS may leave the NaN objective out of its sample: then its
    # gradient is never computed, and the step is finite)
    assert fault not in NONFINITE or (name == "sdmgrados" and fault == "nan_grad"), f"{fault} was stepped in"
    for p in net.parameters():
        assert torch.isfinite(p).all(), "a finite step made a parameter non-finite"
        assert p.grad is None or torch.isfinite(p.grad).all()
    if info.weights is not None:
        assert torch.isfinite(info.weights).all()
    event("stepped")


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 6), data=st.data())
def test_every_repeated_parameter_is_named(n: int, data: st.DataObject) -> None:
    """A parameter listed twice (shared twice, task twice, or both) is refused, naming both positions."""
    params = [nn.Parameter(torch.zeros(i + 1)) for i in range(n)]
    first = data.draw(st.integers(0, n - 1))
    shared_twice = data.draw(st.booleans())
    shared = list(params)
    tasks: list[Tensor] = []
    if shared_twice:
        at = data.draw(st.integers(first + 1, n))
        shared.insert(at, params[first])
        expected = (
            rf"shared parameter {at} \(shape \({first + 1},\)\) is the same tensor as shared parameter "
        )
    else:
        tasks = [nn.Parameter(torch.zeros(1)), params[first]]
        expected = rf"task parameter 1 \(shape \({first + 1},\)\) is the same tensor as shared parameter "
    try:
        molearn.Balancer(get("ew"), shared, tasks)
    except ValueError as err:
        assert re.search(expected + f"{first}:", str(err)), str(err)
    else:
        raise AssertionError("a repeated parameter was accepted")
