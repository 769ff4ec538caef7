from __future__ import annotations

import pytest
import torch
from torchjd import scalarization as tjd

from molearn.methods import STCH, Inputs
from tests.unit.methods._asserts import (
    assert_finite,
    assert_k1_passthrough,
    assert_permutation_equivariant,
    assert_zero_gives_zero,
    direction,
    jacobian_families,
)

F64 = torch.float64


def w_of(m: STCH, losses: list[float] | torch.Tensor) -> torch.Tensor:
    out = m.combine(Inputs(losses=torch.as_tensor(losses, dtype=F64)))
    assert out.weights is not None
    return out.weights


def libmtl_grad(losses: torch.Tensor, nadir: torch.Tensor, mu: float) -> torch.Tensor:
    """Gradient of the LibMTL / official STCH_MTL loss after warm-up, by autograd."""
    x = losses.clone().requires_grad_(True)
    f = torch.log(x / nadir + 1e-20)
    (mu * torch.logsumexp(f / mu, 0) * x.shape[0]).backward()
    assert x.grad is not None
    return x.grad


@pytest.mark.parametrize("mu", [0.01, 0.5, 1.0])
def test_plain_matches_torchjd(mu: float) -> None:
    losses = torch.tensor([0.7, 1.9, 1.2])
    for pref, ideal in [(None, None), ([0.2, 0.5, 0.3], [0.1, 0.0, 0.3])]:
        v = losses.clone().requires_grad_(True)
        ref = tjd.STCH(
            mu,
            weights=None if pref is None else torch.tensor(pref),
            reference=None if ideal is None else torch.tensor(ideal),
        )
        ref(v).backward()
        m = STCH(mu, variant="plain", pref=pref, ideal=ideal)
        out = m.combine(Inputs(losses=losses))
        assert out.weights is not None and out.weights.dtype == torch.float32
        torch.testing.assert_close(out.weights, v.grad)


def test_plain_with_nadir_normalises() -> None:
    losses = torch.tensor([10.0, 0.2], dtype=F64, requires_grad=True)
    nadir = torch.tensor([20.0, 0.5], dtype=F64)
    (0.3 * torch.logsumexp(0.5 * (losses / nadir) / 0.3, 0)).backward()
    torch.testing.assert_close(w_of(STCH(0.3, variant="plain", nadir=nadir), losses.detach()), losses.grad)


def test_mtl_with_given_nadir_matches_libmtl_formula() -> None:
    nadir = torch.tensor([2.0, 0.5, 1.0], dtype=F64)
    losses = torch.tensor([1.5, 0.1, 0.9], dtype=F64)
    for mu in (0.1, 1.0):
        m = STCH(mu, nadir=nadir)
        assert not m.in_warmup
        torch.testing.assert_close(w_of(m, losses), libmtl_grad(losses, nadir, mu))


def test_mtl_warmup_then_nadir_from_the_last_warmup_period() -> None:
    gen = torch.Generator().manual_seed(0)
    m = STCH(mu=0.5, warmup=2, period=3)
    seen = []
    for _ in range(9):  # 3 periods of 3 calls: periods 0, 1 pure warm-up, period 2 also averages
        x = torch.rand(3, generator=gen, dtype=F64) + 0.1
        seen.append(x)
        assert m.in_warmup
        torch.testing.assert_close(w_of(m, x), 1 / (x + 1e-20))
    assert not m.in_warmup
    nadir = torch.stack(seen[6:]).mean(0)
    torch.testing.assert_close(m.state_dict()["nadir"], nadir)
    x = torch.tensor([0.3, 0.8, 0.5], dtype=F64)
    torch.testing.assert_close(w_of(m, x), libmtl_grad(x, nadir, 0.5))


def test_end_epoch_equals_period() -> None:
    a, b = STCH(warmup=1, period=2), STCH(warmup=1)
    gen = torch.Generator().manual_seed(1)
    for _ in range(4):
        for _ in range(2):
            x = torch.rand(2, generator=gen, dtype=F64) + 0.2
            torch.testing.assert_close(w_of(a, x), w_of(b, x))
        b.end_epoch()
    b.end_epoch()  # no-op after the warm-up
    assert not a.in_warmup and not b.in_warmup


def test_period_none_stays_in_warmup_without_end_epoch() -> None:
    m = STCH(warmup=0)
    for _ in range(5):
        w_of(m, [1.0, 2.0])
    assert m.in_warmup
    m.end_epoch()
    assert not m.in_warmup
    torch.testing.assert_close(m.state_dict()["nadir"], torch.tensor([1.0, 2.0], dtype=F64))


def test_largest_normalised_loss_gets_most_weight_for_small_mu() -> None:
    m = STCH(mu=0.01, nadir=[1.0, 1.0, 1.0])
    x = torch.tensor([0.5, 0.9, 0.7], dtype=F64)
    w = w_of(m, x)
    assert torch.argmax(w * x) == 1  # weight on the relative (log) gradient concentrates on the max
    assert (w * x)[1] > 0.99 * 3


def test_state_dict_round_trip_mid_warmup_and_after() -> None:
    gen = torch.Generator().manual_seed(2)
    data = [torch.rand(3, generator=gen, dtype=F64) + 0.1 for _ in range(12)]
    for cut in (2, 5, 8):
        a = STCH(warmup=1, period=3)
        for x in data[:cut]:
            w_of(a, x)
        b = STCH(warmup=1, period=3)
        b.load_state_dict(a.state_dict())
        for x in data[cut:]:
            torch.testing.assert_close(w_of(b, x), w_of(a, x), rtol=0, atol=0)
    a.reset()
    assert a.in_warmup and a.state_dict()["periods"] == 0
    with pytest.raises(ValueError, match="unknown state keys"):
        a.load_state_dict({"bad": 1})


def test_errors() -> None:
    with pytest.raises(ValueError, match="3 entries but received 2"):
        w_of(STCH(variant="plain", pref=[0.2, 0.3, 0.5]), [1.0, 2.0])
    with pytest.raises(ValueError, match="3 entries but received 2"):
        w_of(STCH(nadir=[1.0, 1.0, 1.0]), [1.0, 2.0])
    m = STCH(warmup=0)
    w_of(m, [1.0, 2.0])
    with pytest.raises(ValueError, match="call reset"):
        w_of(m, [1.0, 2.0, 3.0])
    for kw in (
        {"mu": 0.0},
        {"variant": "tch"},
        {"pref": [1.0, -1.0]},
        {"nadir": [0.0, 1.0]},
        {"ideal": [float("nan")]},
        {"warmup": -1},
        {"period": 0},
        {"log_eps": -1.0},
    ):
        with pytest.raises(ValueError):
            STCH(**kw)  # type: ignore[arg-type]


def test_extreme_values_stay_finite() -> None:
    m = STCH(mu=1e-3, variant="plain")
    w = w_of(m, [1e6, 3.0, 1e6 - 1])
    assert torch.isfinite(w).all()
    torch.testing.assert_close(w.sum(), torch.tensor(1 / 3, dtype=F64))


@pytest.mark.parametrize("k", [2, 3, 5, 10])
def test_properties(k: int) -> None:
    for m in (STCH(variant="plain"), STCH(nadir=torch.ones(k)), STCH(warmup=1)):
        for _name, jac in jacobian_families(k):
            assert_finite(direction(m, jac))
            assert_permutation_equivariant(m, jac)
        assert_zero_gives_zero(m, k)


def test_k1_positive_multiple() -> None:
    assert_k1_passthrough(STCH(variant="plain"), exact=True)  # p = 1, softmax = 1
    assert_k1_passthrough(STCH(nadir=[2.0]), exact=False)
    assert_k1_passthrough(STCH(), exact=False)  # warm-up: 1 / L
