"""Bad input: each case gives a clear error naming the problem, or the documented safe fallback."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import molearn
from molearn.methods import EW, MGDA


def _model_and_losses(k: int = 3) -> tuple[nn.Module, nn.Module, torch.Tensor]:
    trunk = nn.Linear(4, 5)
    heads = nn.Linear(5, k)
    x = torch.randn(8, 4)
    return trunk, heads, heads(torch.tanh(trunk(x))).pow(2).mean(0)


@pytest.mark.parametrize("mode", ["loop", "batched", "gramian"])
def test_nan_loss_raises_naming_objective(mode: str) -> None:
    trunk, _, losses = _model_and_losses()
    losses = losses * torch.tensor([1.0, float("nan"), 1.0])
    bal = molearn.Balancer(MGDA(), trunk.parameters(), mode=mode)  # type: ignore[arg-type]
    with pytest.raises(molearn.NonFiniteLossError, match=r"objective\(s\) \[1\]"):
        bal.backward(losses)


def test_inf_loss_skip_counts_and_writes_nothing() -> None:
    trunk, _, losses = _model_and_losses()
    losses = losses * torch.tensor([1.0, 1.0, math.inf])
    bal = molearn.Balancer(MGDA(), trunk.parameters(), on_nonfinite="skip")
    info = bal.backward(losses)
    assert info.skipped
    assert bal.skipped_steps == 1
    assert all(p.grad is None for p in trunk.parameters())
    assert bal.state_dict()["skipped_steps"] == 1


def test_skip_in_step_does_not_step_optimizer() -> None:
    trunk, heads, _ = _model_and_losses()
    before = [p.detach().clone() for p in trunk.parameters()]
    opt = torch.optim.SGD([*trunk.parameters(), *heads.parameters()], lr=0.1)
    bal = molearn.Balancer(EW(), trunk.parameters(), on_nonfinite="skip")

    def loss_fn(x: torch.Tensor) -> torch.Tensor:
        return heads(trunk(x)).mean(0) * torch.tensor([1.0, float("nan"), 1.0])

    info = bal.step(loss_fn, lambda: torch.randn(8, 4), opt)
    assert info.skipped
    for p, b in zip(trunk.parameters(), before):
        assert torch.equal(p, b)


@pytest.mark.parametrize("mode", ["loop", "batched", "gramian"])
def test_zero_gradients_give_zero_direction(mode: str) -> None:
    trunk = nn.Linear(4, 5)
    heads = nn.Linear(5, 3)
    x = torch.randn(8, 4)
    # the losses do not depend on the trunk through a live path: zero shared gradients
    losses = heads(torch.relu(trunk(x)) * 0.0).pow(2).mean(0) + 1.0
    bal = molearn.Balancer(MGDA(), trunk.parameters(), mode=mode)  # type: ignore[arg-type]
    bal.backward(losses)
    for p in trunk.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().max() == 0


def test_non_scalar_loss() -> None:
    trunk, heads, _ = _model_and_losses()
    out = heads(trunk(torch.randn(8, 4)))
    with pytest.raises(ValueError, match=r"objective 1: the loss must be a scalar"):
        molearn.Balancer(EW(), trunk.parameters()).backward([out[:, 0].mean(), out[:, 1], out[:, 2].mean()])


def test_wrong_shape_loss_tensor() -> None:
    trunk, heads, _ = _model_and_losses()
    out = heads(trunk(torch.randn(8, 4)))
    with pytest.raises(ValueError, match="1-D tensor"):
        molearn.Balancer(EW(), trunk.parameters()).backward(out)


def test_empty_losses_and_params() -> None:
    trunk, _, _ = _model_and_losses()
    with pytest.raises(ValueError, match="no losses"):
        molearn.Balancer(EW(), trunk.parameters()).backward([])
    with pytest.raises(ValueError, match="shared parameters is empty"):
        molearn.Balancer(EW(), [])


def test_params_not_requiring_grad() -> None:
    frozen = nn.Linear(3, 3).requires_grad_(False)
    with pytest.raises(ValueError, match=r"shared parameter 0 \(shape \(3, 3\)\) does not require grad"):
        molearn.Balancer(EW(), frozen.parameters())


def test_losses_without_graph() -> None:
    trunk, _, _ = _model_and_losses()
    with pytest.raises(ValueError, match="do not require grad"):
        molearn.Balancer(EW(), trunk.parameters()).backward(torch.tensor([1.0, 2.0]))


def test_bad_options() -> None:
    trunk, _, _ = _model_and_losses()
    with pytest.raises(ValueError, match="unknown mode"):
        molearn.Balancer(EW(), trunk.parameters(), mode="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="on_nonfinite"):
        molearn.Balancer(EW(), trunk.parameters(), on_nonfinite="ignore")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="molearn Method"):
        molearn.Balancer("mgda", trunk.parameters())  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="unknown method 'nope'"):
        molearn.methods.get("nope")


def test_representation_mode_needs_features() -> None:
    trunk, _, losses = _model_and_losses()
    with pytest.raises(ValueError, match="features"):
        molearn.Balancer(MGDA(), trunk.parameters(), mode="representation").backward(losses)


def test_k1_passes_gradient_through() -> None:
    trunk = nn.Linear(4, 1)
    x = torch.randn(8, 4)
    trunk(x).pow(2).mean().backward()
    ref = [p.grad.clone() for p in trunk.parameters()]
    trunk.zero_grad()
    molearn.Balancer(MGDA(), trunk.parameters(), mode="gramian").backward([trunk(x).pow(2).mean()])
    for p, r in zip(trunk.parameters(), ref):
        torch.testing.assert_close(p.grad, r)


@pytest.mark.parametrize(("mode", "named"), [("loop", r"\[0\]"), ("gramian", r"\[0")])
def test_nan_gradient_with_finite_loss_raises(mode: str, named: str) -> None:
    # (batched back-propagation multiplies the other objectives' zero cotangent by the infinite
    # derivative too, so in 'gramian'/'batched' mode more objectives may be named)
    trunk = nn.Linear(4, 2)
    x = torch.randn(8, 4)
    out = trunk(x)
    # sqrt at 0 has an infinite derivative: finite losses, non-finite gradient for objective 0
    losses = [(out[:, 0] * 0).sqrt().mean(), out[:, 1].pow(2).mean()]
    with pytest.raises(molearn.NonFiniteLossError, match=r"gradient for objective\(s\) " + named):
        molearn.Balancer(MGDA(), trunk.parameters(), mode=mode).backward(losses)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(molearn.methods.registry()))
def test_k1_passes_gradient_through_every_method(name: str) -> None:
    trunk = nn.Linear(4, 3)
    x = torch.randn(8, 4)
    trunk(x).pow(2).mean().backward()
    ref = [p.grad.clone() for p in trunk.parameters()]
    trunk.zero_grad()
    method = molearn.methods.get(name, **({"weights": [2.0]} if name == "fixed" else {}))
    opt = torch.optim.SGD(trunk.parameters(), lr=0.0)
    molearn.Balancer(method, trunk.parameters()).step(lambda b: [trunk(b).pow(2).mean()], lambda: x, opt)
    for p, r in zip(trunk.parameters(), ref):
        torch.testing.assert_close(p.grad, r)
