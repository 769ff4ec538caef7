"""Properties every registered method must have, over the whole registry (new methods join automatically)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from molearn.methods import Inputs, Method, get, registry

from ._asserts import direction, jacobian_families, make_inputs

# methods whose constructor needs arguments that depend on K
REQUIRED: dict[str, Any] = {"fixed": lambda k: {"weights": [1.0 + i for i in range(k)]}}


def build(name: str, k: int) -> Method:
    kwargs = REQUIRED[name](k) if name in REQUIRED else {}
    return get(name, **kwargs)


NAMES = sorted(registry())


def _run(method: Method, jac: torch.Tensor, losses: torch.Tensor, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    d = direction(method, jac, losses)
    if method.needs.after_step:
        method.after_step(losses, losses * 0.9)
    return d


@pytest.mark.parametrize("name", NAMES)
def test_finite_on_all_families(name: str) -> None:
    for k in (2, 5):
        for family, jac in jacobian_families(k):
            method = build(name, k)
            losses = torch.linspace(0.5, 2.0, k, dtype=jac.dtype)
            for step in range(3):
                d = _run(method, jac, losses, seed=step)
                assert torch.isfinite(d).all(), (
                    f"{name}: non-finite direction on {family} (K={k}, step {step})"
                )


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_continues_identically(name: str) -> None:
    k = 4
    gen = torch.Generator().manual_seed(3)
    jacs = [torch.randn(k, 12, generator=gen, dtype=torch.float64) for _ in range(6)]
    losses = [torch.rand(k, generator=gen, dtype=torch.float64) + 0.5 for _ in range(6)]
    original = build(name, k)
    for t in range(3):
        _run(original, jacs[t], losses[t], seed=t)
    state = original.state_dict()
    restored = build(name, k)
    restored.load_state_dict(state)
    for t in range(3, 6):
        a = _run(original, jacs[t], losses[t], seed=t)
        b = _run(restored, jacs[t], losses[t], seed=t)
        torch.testing.assert_close(a, b, msg=f"{name}: restored state diverges at step {t}")


@pytest.mark.parametrize("name", NAMES)
def test_k1_update_is_a_positive_multiple_of_the_gradient(name: str) -> None:
    g = torch.randn(1, 9, dtype=torch.float64)
    d = direction(build(name, 1), g, torch.tensor([1.3], dtype=torch.float64))
    cos = d @ g[0] / (d.norm() * g[0].norm())
    assert cos > 1 - 1e-9, f"{name}: K=1 update not along the gradient (cos {cos})"


@pytest.mark.parametrize("name", NAMES)
def test_declares_what_it_uses(name: str) -> None:
    """A method that does not declare the Gramian/Jacobian must work without them."""
    method = build(name, 3)
    jac = torch.randn(3, 6, dtype=torch.float64)
    inputs = make_inputs(method, jac)
    if not method.needs.gradients:
        assert inputs.gramian is None and inputs.jacobian is None
    out = method.combine(inputs)
    assert (out.weights is None) != (out.direction is None)
    if out.direction is not None:
        assert method.needs.jacobian, f"{name} returns a direction without declaring Needs.jacobian"
    assert isinstance(inputs, Inputs)
