from __future__ import annotations

import pytest
import torch
import torchjd.scalarization as tjs

from molearn.methods import IMTLL, UW, Inputs, Needs
from tests.unit.methods._asserts import (
    assert_finite,
    assert_k1_passthrough,
    assert_zero_gives_zero,
    direction,
    jacobian_families,
)


def _run(m: IMTLL | UW, loss_seq: list[torch.Tensor]) -> list[torch.Tensor]:
    out = []
    for losses in loss_seq:
        w = m.combine(Inputs(losses=losses)).weights
        assert w is not None
        out.append(w)
    return out


def _loss_seq(k: int = 3, n: int = 8) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(4)
    return [torch.rand(k, generator=gen, dtype=torch.float64) * 5 + 0.1 for _ in range(n)]


def test_declares_loss_only_and_weighted() -> None:
    assert IMTLL.needs == Needs()
    assert IMTLL.task_grad == "weighted"


def test_first_weights_and_hand_computed_adam_step() -> None:
    m = IMTLL()
    losses = torch.tensor([2.0, 0.5], dtype=torch.float64)
    torch.testing.assert_close(_run(m, [losses])[0], torch.ones(2, dtype=torch.float64))
    # grad = e^s L - 1 = (1, -0.5): the first Adam step moves s by -lr * sign(grad)
    s = torch.tensor([-0.025, 0.025], dtype=torch.float64)
    torch.testing.assert_close(_run(m, [losses])[0], torch.exp(s))


def test_matches_torchjd_scalarizer_trained_with_adam() -> None:
    k = 4
    seq = _loss_seq(k)
    ours = _run(IMTLL(lr=0.01), seq)
    oracle = tjs.IMTLL(k).to(torch.float64)
    opt = torch.optim.Adam(oracle.parameters(), lr=0.01)
    for losses, w in zip(seq, ours):
        lv = losses.clone().requires_grad_(True)
        opt.zero_grad()
        oracle(lv).backward()
        torch.testing.assert_close(w, lv.grad)  # weight of L_i = e^{s_i}
        opt.step()


def test_scaling_a_loss_divides_its_weight_at_equilibrium() -> None:
    # fixed point s_i = -log L_i: w_i L_i = 1 whatever the scale of L_i (scale invariance of the paper)
    m = IMTLL(lr=0.05)
    losses = torch.tensor([1.0, 100.0, 0.01], dtype=torch.float64)
    for _ in range(3000):
        w = m.combine(Inputs(losses=losses)).weights
    assert w is not None
    torch.testing.assert_close(w * losses, torch.ones(3, dtype=torch.float64), atol=2e-2, rtol=0)


def test_state_dict_round_trip_and_reset() -> None:
    seq = _loss_seq(3, 10)
    ref_w = _run(IMTLL(), seq)
    m = IMTLL()
    _run(m, seq[:4])
    m2 = IMTLL()
    m2.load_state_dict(m.state_dict())
    torch.testing.assert_close(_run(m2, seq[4:]), ref_w[4:])
    m.reset()
    assert m.state_dict() == {}
    torch.testing.assert_close(_run(m, seq[:2]), ref_w[:2])


def test_equivalent_to_twice_uw() -> None:
    # IMTL-L at s equals 2·UW at -s, and Adam (invariant to the gradient's scale and sign convention up to
    # eps) keeps the two trajectories mirrored: the weights differ by exactly a factor 2 at every step
    seq = _loss_seq(3, 20)
    for a, b in zip(_run(IMTLL(), seq), _run(UW(), seq)):
        torch.testing.assert_close(a, 2 * b)


@pytest.mark.parametrize("k", [2, 3, 5, 10])
def test_properties(k: int) -> None:
    for name, jac in jacobian_families(k):
        d = direction(IMTLL(), jac)
        assert_finite(d)
        torch.testing.assert_close(d, jac.sum(0), msg=name)  # first step: weights e^0 = 1
    assert_zero_gives_zero(IMTLL(), k)


def test_k1_positive_multiple() -> None:
    assert_k1_passthrough(IMTLL(), exact=False)
