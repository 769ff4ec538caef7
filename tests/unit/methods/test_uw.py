from __future__ import annotations

import pytest
import torch
import torchjd.scalarization as tjs

from molearn.methods import UW, Inputs, Needs
from tests.unit.methods._asserts import (
    assert_finite,
    assert_k1_passthrough,
    assert_zero_gives_zero,
    direction,
    jacobian_families,
)


def _run(m: UW, loss_seq: list[torch.Tensor]) -> list[torch.Tensor]:
    out = []
    for losses in loss_seq:
        w = m.combine(Inputs(losses=losses)).weights
        assert w is not None
        out.append(w)
    return out


def _loss_seq(k: int = 3, n: int = 8) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    return [torch.rand(k, generator=gen, dtype=torch.float64) * 5 + 0.1 for _ in range(n)]


def test_declares_loss_only_and_weighted() -> None:
    assert UW.needs == Needs()
    assert UW.task_grad == "weighted"


def test_first_weights_and_hand_computed_adam_step() -> None:
    m = UW()
    losses = torch.tensor([2.0, 0.5], dtype=torch.float64)
    w0 = _run(m, [losses])[0]
    torch.testing.assert_close(w0, torch.full((2,), 0.5, dtype=torch.float64))
    # first Adam step moves each s by -lr * sign(grad): grad = ½(1 - L) → s = +0.025 for L=2, -0.025 for L=.5
    w1 = _run(m, [losses])[0]
    s = torch.tensor([0.025, -0.025], dtype=torch.float64)
    torch.testing.assert_close(w1, 0.5 * torch.exp(-s))


def test_matches_torchjd_scalarizer_trained_with_adam() -> None:
    k = 3
    seq = _loss_seq(k)
    ours = _run(UW(lr=0.025), seq)
    oracle = tjs.UW(k).to(torch.float64)
    opt = torch.optim.Adam(oracle.parameters(), lr=0.025)
    for losses, w in zip(seq, ours):
        # the weight of L_i is d(scalarised)/dL_i = ½ e^{-s_i}
        lv = losses.clone().requires_grad_(True)
        opt.zero_grad()
        total = oracle(lv)
        total.backward()
        torch.testing.assert_close(w, lv.grad)
        opt.step()


def test_libmtl_init() -> None:
    w = _run(UW(init=-0.5), [torch.ones(2, dtype=torch.float64)])[0]
    torch.testing.assert_close(w, 0.5 * torch.exp(torch.full((2,), 0.5, dtype=torch.float64)))


def test_scaling_a_loss_divides_its_weight_at_equilibrium() -> None:
    # fixed point s_i = log L_i: w_i L_i = ½ whatever the scale of L_i
    m = UW(lr=0.05)
    losses = torch.tensor([1.0, 100.0, 0.01], dtype=torch.float64)
    for _ in range(3000):
        w = m.combine(Inputs(losses=losses)).weights
    assert w is not None
    torch.testing.assert_close(w * losses, torch.full((3,), 0.5, dtype=torch.float64), atol=1e-2, rtol=0)


def test_state_dict_round_trip_and_reset() -> None:
    seq = _loss_seq(3, 10)
    ref = UW()
    ref_w = _run(ref, seq)
    m = UW()
    _run(m, seq[:5])
    state = m.state_dict()
    m2 = UW()
    m2.load_state_dict(state)
    torch.testing.assert_close(_run(m2, seq[5:]), ref_w[5:])
    # the saved state is a copy: continuing m does not change it
    _run(m, seq[5:])
    m3 = UW()
    m3.load_state_dict(state)
    torch.testing.assert_close(_run(m3, seq[5:6])[0], ref_w[5])
    m.reset()
    assert m.state_dict() == {}
    torch.testing.assert_close(_run(m, seq[:1])[0], ref_w[0])


def test_wrong_k_is_an_error() -> None:
    m = UW()
    _run(m, [torch.ones(2)])
    with pytest.raises(ValueError, match="2 objectives"):
        _run(m, [torch.ones(3)])


def test_dtype_follows_losses() -> None:
    w = _run(UW(), [torch.ones(2, dtype=torch.float32)])[0]
    assert w.dtype == torch.float32


@pytest.mark.parametrize("k", [2, 3, 5, 10])
def test_properties(k: int) -> None:
    for name, jac in jacobian_families(k):
        d = direction(UW(), jac)
        assert_finite(d)
        # first step: equal weights ½ → d = ½ Σ g_i
        torch.testing.assert_close(d, 0.5 * jac.sum(0), msg=name)
    assert_zero_gives_zero(UW(), k)


def test_k1_positive_multiple() -> None:
    assert_k1_passthrough(UW(), exact=False)
