from __future__ import annotations

import math

import pytest
import torch
from torchjd import scalarization as tjd

from molearn.methods import FAMO, Inputs
from tests.unit.methods._asserts import (
    assert_finite,
    assert_k1_passthrough,
    assert_permutation_equivariant,
    assert_zero_gives_zero,
    direction,
    jacobian_families,
)

F64 = torch.float64
SEQUENCE = [  # (losses before the step, losses after the step, same batch)
    ([2.0, 1.0, 0.5], [1.5, 0.95, 0.45]),
    ([1.6, 0.9, 0.6], [1.2, 0.85, 0.5]),
    ([1.1, 0.8, 0.5], [1.0, 0.6, 0.49]),
]


def weights_of(m: FAMO, losses: list[float] | torch.Tensor) -> torch.Tensor:
    out = m.combine(Inputs(losses=torch.as_tensor(losses, dtype=F64)))
    assert out.weights is not None
    return out.weights


def hand_adam(seq: list, lr: float, wd: float, eps: float = 1e-8) -> list[list[float]]:
    """Plain-Python FAMO logit trajectory (softmax Jacobian and Adam written out per coordinate)."""
    k = len(seq[0][0])
    xi, m, v = [0.0] * k, [0.0] * k, [0.0] * k
    out = []
    for t, (before, after) in enumerate(seq, start=1):
        e = [math.exp(x) for x in xi]
        z = [x / sum(e) for x in e]
        delta = [math.log(b + eps) - math.log(a + eps) for b, a in zip(before, after, strict=True)]
        zd = sum(zi * di for zi, di in zip(z, delta, strict=True))
        for i in range(k):
            g = z[i] * (delta[i] - zd) + wd * xi[i]
            m[i] = 0.9 * m[i] + 0.1 * g
            v[i] = 0.999 * v[i] + 0.001 * g * g
            mhat, vhat = m[i] / (1 - 0.9**t), v[i] / (1 - 0.999**t)
            xi[i] -= lr * mhat / (math.sqrt(vhat) + 1e-8)
        out.append(list(xi))
    return out


def test_initial_weights_closed_form() -> None:
    losses = torch.tensor([2.0, 1.0, 0.5], dtype=F64)
    d = losses + 1e-8
    torch.testing.assert_close(weights_of(FAMO(), losses), (1 / d) / (1 / d).sum())


def test_logits_follow_a_hand_computed_adam_trajectory() -> None:
    m = FAMO(w_lr=0.025, gamma=1e-3)
    for (before, after), expected in zip(SEQUENCE, hand_adam(SEQUENCE, 0.025, 1e-3), strict=True):
        weights_of(m, before)
        m.after_step(torch.tensor(before, dtype=F64), torch.tensor(after, dtype=F64))
        assert m.logits is not None
        torch.testing.assert_close(m.logits, torch.tensor(expected, dtype=F64), rtol=1e-12, atol=1e-14)
    # the fastest-improving task (0, -25% in the first step) lost weight, the slowest gained it
    assert m.logits[0] < 0 < m.logits[2]


def test_weights_are_the_gradient_of_the_official_loss() -> None:
    m = FAMO(min_losses=[0.1, 0.0, 0.2])
    for before, after in SEQUENCE:
        m.after_step(torch.tensor(before, dtype=F64), torch.tensor(after, dtype=F64))
    assert m.logits is not None
    z = torch.softmax(m.logits, 0)
    losses = torch.tensor([1.3, 0.7, 0.9], dtype=F64, requires_grad=True)
    d = losses - torch.tensor([0.1, 0.0, 0.2], dtype=F64) + 1e-8
    c = (z / d).sum().detach()
    (z * d.log() / c).sum().backward()
    w = weights_of(m, losses.detach())
    torch.testing.assert_close(w, losses.grad)
    torch.testing.assert_close(w.sum(), torch.tensor(1.0, dtype=F64))


def test_matches_torchjd_famo() -> None:
    ours, ref = FAMO(w_lr=0.05, gamma=1e-3), tjd.FAMO(3, lr=0.05, weight_decay=1e-3)
    for before, after in [*SEQUENCE, *SEQUENCE]:
        v = torch.tensor(before, requires_grad=True)
        ref(v).backward()
        out = ours.combine(Inputs(losses=torch.tensor(before)))
        assert out.weights is not None and out.weights.dtype == torch.float32
        torch.testing.assert_close(out.weights, v.grad, rtol=1e-5, atol=1e-6)
        ref.update(torch.tensor(after))
        ours.after_step(torch.tensor(before), torch.tensor(after))
        assert ours.logits is not None
        torch.testing.assert_close(ours.logits.float(), ref._w.detach(), rtol=1e-4, atol=1e-6)


def test_state_dict_round_trip() -> None:
    a = FAMO()
    for before, after in SEQUENCE[:2]:
        weights_of(a, before)
        a.after_step(torch.tensor(before, dtype=F64), torch.tensor(after, dtype=F64))
    b = FAMO()
    b.load_state_dict(a.state_dict())
    assert b.state_dict()["t"] == 2
    for before, after in SEQUENCE[2:] + SEQUENCE:
        torch.testing.assert_close(weights_of(b, before), weights_of(a, before), rtol=0, atol=0)
        for x in (a, b):
            x.after_step(torch.tensor(before, dtype=F64), torch.tensor(after, dtype=F64))
    assert a.logits is not None and b.logits is not None
    assert torch.equal(a.logits, b.logits)
    a.reset()
    assert a.logits is None and a.state_dict() == {}
    b.load_state_dict(a.state_dict())
    assert b.logits is None
    with pytest.raises(ValueError, match="unknown state keys"):
        b.load_state_dict({"w": 1})


def test_weight_decay_shrinks_logits_when_nothing_changes() -> None:
    m = FAMO(w_lr=0.1, gamma=0.5)
    m.after_step(torch.tensor([1.0, 2.0], dtype=F64), torch.tensor([0.5, 2.0], dtype=F64))
    assert m.logits is not None
    first = m.logits.abs().max()
    for _ in range(30):
        m.after_step(torch.tensor([1.0, 2.0], dtype=F64), torch.tensor([1.0, 2.0], dtype=F64))
    assert m.logits.abs().max() < first


def test_errors() -> None:
    m = FAMO()
    weights_of(m, [1.0, 2.0])
    with pytest.raises(ValueError, match="call reset"):
        weights_of(m, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="two \\(K,\\) loss vectors"):
        m.after_step(torch.ones(2), torch.ones(3))
    with pytest.raises(ValueError, match="2 min_losses but received 3"):
        weights_of(FAMO(min_losses=[0.0, 0.0]), [1.0, 2.0, 3.0])
    for kw in ({"w_lr": -1.0}, {"gamma": -1.0}, {"eps": -1.0}, {"min_losses": [[0.0]]}):
        with pytest.raises(ValueError):
            FAMO(**kw)  # type: ignore[arg-type]


def test_after_step_before_combine_initialises() -> None:
    m = FAMO()
    m.after_step(torch.tensor([1.0, 2.0]), torch.tensor([0.9, 2.0]))
    assert m.logits is not None and m.logits.shape == (2,)


@pytest.mark.parametrize("k", [2, 3, 5, 10])
def test_properties(k: int) -> None:
    m = FAMO()
    for _name, jac in jacobian_families(k):
        assert_finite(direction(m, jac))
        assert_permutation_equivariant(m, jac)  # logits are still uniform
    assert_zero_gives_zero(m, k)


def test_k1_weight_is_one() -> None:
    m = FAMO()
    m.after_step(torch.tensor([1.0], dtype=F64), torch.tensor([0.5], dtype=F64))
    torch.testing.assert_close(weights_of(m, [3.0]), torch.ones(1, dtype=F64))
    assert_k1_passthrough(m, exact=True)
