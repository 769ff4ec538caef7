from __future__ import annotations

import pytest
import torch

from molearn.methods import GradNorm, Inputs, Needs
from tests.unit.methods._asserts import (
    assert_finite,
    assert_k1_passthrough,
    assert_zero_gives_zero,
    direction,
    jacobian_families,
)

Step = tuple[torch.Tensor, torch.Tensor]


def _steps(k: int = 3, p: int = 10, n: int = 8, seed: int = 0) -> list[Step]:
    gen = torch.Generator().manual_seed(seed)
    scales = torch.linspace(0.3, 3.0, k, dtype=torch.float64).unsqueeze(1)
    return [
        (
            scales * torch.randn(k, p, generator=gen, dtype=torch.float64),
            torch.rand(k, generator=gen, dtype=torch.float64) + 0.5,
        )
        for _ in range(n)
    ]


def _run(m: GradNorm, steps: list[Step]) -> list[torch.Tensor]:
    out = []
    for jac, losses in steps:
        w = m.combine(Inputs(losses=losses, gramian=jac @ jac.T)).weights
        assert w is not None
        out.append(w)
    return out


def _libmtl(steps: list[Step], alpha: float, lr: float) -> list[torch.Tensor]:
    """LibMTL's GradNorm by autograd: w = K softmax(ξ), L_grad = Σ|w_i‖g_i‖ - mean(w‖g‖)·r_i^α| with
    the target detached, ξ stepped by torch.optim.Adam; the warm-up step uses unit weights, gives L(0)."""
    k = steps[0][0].shape[0]
    xi = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([xi], lr=lr)
    l0 = steps[0][1]
    out = [torch.ones(k, dtype=torch.float64)]
    for jac, losses in steps[1:]:
        w = k * torch.softmax(xi, dim=-1)
        g_per = torch.norm(w.unsqueeze(1) * jac, dim=-1)
        li = losses / l0
        r = li / li.mean()
        target = (g_per.mean() * r**alpha).detach()
        opt.zero_grad()
        (g_per - target).abs().sum().backward()
        out.append(w.detach().clone())
        opt.step()
    return out


def test_declares_gramian_weighted_and_defaults() -> None:
    assert GradNorm.needs == Needs(gramian=True)
    assert GradNorm.task_grad == "weighted"
    m = GradNorm()
    assert (m.alpha, m.lr, m.warmup_steps) == (1.5, 0.025, 1)


@pytest.mark.parametrize(("alpha", "lr"), [(1.5, 0.025), (0.5, 0.1), (0.0, 0.01)])
def test_matches_libmtl_autograd_reference(alpha: float, lr: float) -> None:
    steps = _steps()
    for a, b in zip(_run(GradNorm(alpha=alpha, lr=lr), steps), _libmtl(steps, alpha, lr)):
        torch.testing.assert_close(a, b)


def test_warmup_gives_unit_weights_and_averages_initial_losses() -> None:
    steps = _steps(2, 5, 4)
    m = GradNorm(warmup_steps=3)
    ws = _run(m, steps)
    for w in ws[:3]:
        torch.testing.assert_close(w, torch.ones(2, dtype=torch.float64))
    l0 = torch.stack([losses for _, losses in steps[:3]]).mean(0)
    torch.testing.assert_close(m.state_dict()["loss_sum"] / 3, l0)
    # the first GradNorm step still returns the initial (unit) weights, then ξ moves
    torch.testing.assert_close(ws[3], torch.ones(2, dtype=torch.float64))
    assert m.logits is not None and not torch.equal(m.logits, torch.zeros(2, dtype=torch.float64))


def test_slow_task_gains_weight_and_large_gradient_loses_it() -> None:
    jac = torch.eye(2, 4, dtype=torch.float64)
    # equal gradient norms; task 0's loss ratio stays at 1 while task 1's halves: task 0 lags → up-weighted
    m = GradNorm(lr=0.05)
    _run(m, [(jac, torch.tensor([1.0, 1.0], dtype=torch.float64))])
    w = _run(m, [(jac, torch.tensor([1.0, 0.5], dtype=torch.float64))] * 10)[-1]
    assert w[0] > 1 > w[1]
    # equal loss ratios; task 1's gradient is 5x larger → its weight goes down
    big = torch.diag(torch.tensor([1.0, 5.0], dtype=torch.float64))
    m = GradNorm(lr=0.05)
    w = _run(m, [(big, torch.ones(2, dtype=torch.float64))] * 11)[-1]
    assert w[1] < 1 < w[0]
    torch.testing.assert_close(w.sum(), torch.tensor(2.0, dtype=torch.float64))


def test_state_dict_round_trip_and_reset() -> None:
    steps = _steps(3, 6, 9)
    ref = _run(GradNorm(), steps)
    m = GradNorm()
    _run(m, steps[:4])
    m2 = GradNorm()
    m2.load_state_dict(m.state_dict())
    for a, b in zip(_run(m2, steps[4:]), ref[4:]):
        torch.testing.assert_close(a, b)
    m.reset()
    assert m.state_dict() == {}
    for a, b in zip(_run(m, steps[:3]), ref[:3]):
        torch.testing.assert_close(a, b)


def test_zero_initial_loss_is_finite() -> None:
    steps = _steps(3, 6, 4)
    steps[0] = (steps[0][0], torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64))
    for w in _run(GradNorm(), steps):
        assert_finite(w)


@pytest.mark.parametrize("k", [2, 3, 5, 10])
def test_properties(k: int) -> None:
    for name, jac in jacobian_families(k):
        m = GradNorm()
        losses = torch.linspace(1.0, 2.0, k, dtype=jac.dtype)
        for t in range(4):
            w = m.combine(Inputs(losses=losses / (t + 1), gramian=jac @ jac.T)).weights
            assert w is not None
            assert_finite(w)
            assert (w > 0).all(), name
            torch.testing.assert_close(w.sum(), torch.tensor(float(k), dtype=w.dtype))
        assert_finite(direction(m, jac))
    m = GradNorm()
    assert_zero_gives_zero(m, k)
    assert_zero_gives_zero(m, k)  # also after the warm-up


def test_k1_passthrough() -> None:
    assert_k1_passthrough(GradNorm(), exact=True)
    m = GradNorm()
    for jac, losses in _steps(1, 5, 3):
        torch.testing.assert_close(direction(m, jac, losses), jac[0])
