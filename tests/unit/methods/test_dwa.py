from __future__ import annotations

import pytest
import torch
from torchjd import scalarization as tjd

from molearn.methods import DWA, Inputs
from tests.unit.methods._asserts import (
    assert_finite,
    assert_k1_passthrough,
    assert_permutation_equivariant,
    assert_zero_gives_zero,
    direction,
    jacobian_families,
)


def run(m: DWA, losses: torch.Tensor) -> torch.Tensor:
    out = m.combine(Inputs(losses=losses))
    assert out.weights is not None
    return out.weights


def epochs(k: int = 3, n_epochs: int = 5, per_epoch: int = 4, seed: int = 0) -> list[list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [
        [torch.rand(k, generator=gen, dtype=torch.float64) + 0.5 / (e + 1) for _ in range(per_epoch)]
        for e in range(n_epochs)
    ]


def test_hand_computed_weights() -> None:
    m = DWA(T=2.0)
    data = epochs()
    got = []
    for ep in data:
        got.append([run(m, x) for x in ep])
        m.end_epoch()
    for e in (0, 1):
        for w in got[e]:
            torch.testing.assert_close(w, torch.ones(3, dtype=torch.float64))
    for e in range(2, len(data)):
        avg1 = torch.stack(data[e - 1]).mean(0)
        avg2 = torch.stack(data[e - 2]).mean(0)
        r = avg1 / avg2
        expected = 3 * torch.exp(r / 2.0) / torch.exp(r / 2.0).sum()
        for w in got[e]:
            torch.testing.assert_close(w, expected)
            torch.testing.assert_close(w.sum(), torch.tensor(3.0, dtype=torch.float64))


def test_matches_torchjd_dwa() -> None:
    ours, ref = DWA(T=1.5), tjd.DWA(temperature=1.5)
    for ep in epochs(k=4, n_epochs=5, per_epoch=3, seed=1):
        for x in ep:
            v = x.clone().requires_grad_(True)
            ref(v).backward()
            torch.testing.assert_close(run(ours, x), v.grad)
        ours.end_epoch()
        ref.step()


def test_period_equals_manual_end_epoch() -> None:
    a, b = DWA(period=3), DWA()
    for ep in epochs(k=2, n_epochs=5, per_epoch=3, seed=2):
        for x in ep:
            torch.testing.assert_close(run(a, x), run(b, x))
        b.end_epoch()
    assert len(a.state_dict()["history"]) == 2


def test_heavier_weight_on_slower_task() -> None:
    m = DWA(period=1)
    run(m, torch.tensor([1.0, 1.0]))
    run(m, torch.tensor([0.5, 0.9]))  # task 0 halves, task 1 barely moves
    w = run(m, torch.tensor([0.4, 0.8]))
    assert w[1] > w[0]


def test_state_dict_round_trip() -> None:
    data = [x for ep in epochs(k=3, n_epochs=6, per_epoch=2, seed=3) for x in ep]
    a = DWA(period=2)
    for x in data[:5]:  # stop mid-period
        run(a, x)
    b = DWA(period=2)
    b.load_state_dict(a.state_dict())
    for x in data[5:]:
        torch.testing.assert_close(run(b, x), run(a, x))
    a.reset()
    assert a.state_dict() == {"sum": None, "count": 0, "history": []}
    with pytest.raises(ValueError, match="unknown state keys"):
        a.load_state_dict({"foo": 1})


def test_wrong_k_and_bad_arguments() -> None:
    m = DWA(period=1)
    run(m, torch.ones(3))
    with pytest.raises(ValueError, match="call reset"):
        run(m, torch.ones(2))
    run(m, torch.ones(3))
    with pytest.raises(ValueError, match="call reset"):
        run(m, torch.ones(4))  # history has K = 3
    for bad_t in (0.0, -1.0):
        with pytest.raises(ValueError):
            DWA(T=bad_t)
    for bad_p in (0, -2, 1.5, True):
        with pytest.raises(ValueError):
            DWA(period=bad_p)  # type: ignore[arg-type]


def test_zero_average_gives_finite_weights() -> None:
    m = DWA(period=1)
    run(m, torch.tensor([0.0, 1.0]))
    run(m, torch.tensor([0.0, 0.5]))
    w = run(m, torch.tensor([0.1, 0.2]))
    assert torch.isfinite(w).all()
    torch.testing.assert_close(w.sum(), torch.tensor(2.0))


def test_k1_weight_is_one() -> None:
    m = DWA(period=1)
    for v in (2.0, 1.0, 0.5):
        w = run(m, torch.tensor([v], dtype=torch.float64))
        torch.testing.assert_close(w, torch.ones(1, dtype=torch.float64))
    assert_k1_passthrough(m, exact=True)


@pytest.mark.parametrize("k", [2, 3, 5, 10])
def test_properties(k: int) -> None:
    m = DWA(period=1)
    gen = torch.Generator().manual_seed(k)
    for _ in range(2):
        run(m, torch.rand(k, generator=gen, dtype=torch.float64) + 0.1)
    # period=1: every call changes the history, so restart each family from the same state
    state = m.state_dict()
    for _name, jac in jacobian_families(k):
        m.load_state_dict(state)
        assert_finite(direction(m, jac))
    m.load_state_dict(state)
    assert_zero_gives_zero(DWA(), k)


def test_permutation_equivariant_with_equal_history() -> None:
    # with identical history per task DWA's weights are all 1, and the update is Σ g_i for any order
    m = DWA()
    jac = torch.randn(4, 6, dtype=torch.float64)
    assert_permutation_equivariant(m, jac)
