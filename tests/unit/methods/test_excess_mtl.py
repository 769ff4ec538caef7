from __future__ import annotations

import pytest
import torch
from torchjd.aggregation import ExcessMTLWeighting

from molearn.methods import ExcessMTL, Inputs, Needs
from tests.unit.methods._asserts import (
    assert_finite,
    assert_k1_passthrough,
    assert_zero_gives_zero,
    direction,
    jacobian_families,
)


def _jacs(k: int = 3, p: int = 15, n: int = 6, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    scales = torch.linspace(0.5, 2.0, k, dtype=torch.float64).unsqueeze(1)
    return [scales * torch.randn(k, p, generator=gen, dtype=torch.float64) for _ in range(n)]


def _run(m: ExcessMTL, jacs: list[torch.Tensor]) -> list[torch.Tensor]:
    out = []
    for jac in jacs:
        w = m.combine(Inputs(losses=torch.ones(jac.shape[0], dtype=jac.dtype), jacobian=jac)).weights
        assert w is not None
        out.append(w)
    return out


def _official(jacs: list[torch.Tensor], eta: float) -> list[torch.Tensor]:
    """The official ExcessMTL weighting, written from its formulas (weights start at 1 and sum to K)."""
    k = jacs[0].shape[0]
    w = torch.ones(k, dtype=torch.float64)
    sq_sum = torch.zeros_like(jacs[0])
    initial = None
    out = []
    for jac in jacs:
        sq_sum = sq_sum + jac**2
        e = torch.stack([(jac[i] / torch.sqrt(sq_sum[i] + 1e-7)) @ jac[i] for i in range(k)])
        if initial is None:
            initial = e
        else:
            w = w * torch.exp(eta * e / initial)
            w = w / w.sum() * k
        out.append(w.clone())
    return out


def test_declares_jacobian_weighted_and_default() -> None:
    assert ExcessMTL.needs == Needs(jacobian=True)
    assert ExcessMTL.task_grad == "weighted"
    assert ExcessMTL().robust_step_size == 1e-2


@pytest.mark.parametrize("eta", [1e-2, 0.5])
def test_matches_official_formula(eta: float) -> None:
    jacs = _jacs()
    for a, b in zip(_run(ExcessMTL(eta), jacs), _official(jacs, eta)):
        torch.testing.assert_close(a, b)


def test_first_call_records_baseline_only() -> None:
    w = _run(ExcessMTL(1.0), _jacs(n=1))[0]
    torch.testing.assert_close(w, torch.ones(3, dtype=torch.float64))


def test_multiplicative_updates_match_torchjd_after_the_first_call() -> None:
    # TorchJD starts from 1/K and already moves on call 1 (with the raw excess risk); from call 2 on both
    # multiply the weights by exp(eta * e / e_1) and renormalise.
    jacs = _jacs(4, 20, 6, seed=1)
    ours = _run(ExcessMTL(0.3), jacs)
    oracle = ExcessMTLWeighting(robust_step_size=0.3)
    theirs = [oracle(jac).clone() for jac in jacs]
    for t in range(2, len(jacs)):
        r_ours = ours[t] / ours[t - 1]
        r_theirs = theirs[t] / theirs[t - 1]
        torch.testing.assert_close(r_ours / r_ours.sum(), r_theirs / r_theirs.sum(), rtol=1e-6, atol=0)


def test_larger_excess_risk_gets_larger_weight() -> None:
    gen = torch.Generator().manual_seed(2)
    base = torch.randn(3, 10, generator=gen, dtype=torch.float64)
    jacs = [base.clone() for _ in range(2)]
    jacs[1][2] *= 3.0  # task 2's gradient (hence its excess risk) grows relative to its baseline
    w = _run(ExcessMTL(1.0), jacs)[-1]
    assert w[2] > w[0] and w[2] > w[1]
    torch.testing.assert_close(w.sum(), torch.tensor(3.0, dtype=torch.float64))


def test_zero_baseline_does_not_give_nan() -> None:
    jacs = _jacs(3, 6, 4)
    jacs[0] = jacs[0].clone()
    jacs[0][1] = 0
    for w in _run(ExcessMTL(), jacs):
        assert_finite(w)


def test_state_dict_round_trip_reset_and_shape_check() -> None:
    jacs = _jacs(3, 10, 7)
    ref = _run(ExcessMTL(0.2), jacs)
    m = ExcessMTL(0.2)
    _run(m, jacs[:3])
    m2 = ExcessMTL(0.2)
    m2.load_state_dict(m.state_dict())
    for a, b in zip(_run(m2, jacs[3:]), ref[3:]):
        torch.testing.assert_close(a, b)
    m.reset()
    assert m.state_dict() == {} and m.weights is None
    torch.testing.assert_close(_run(m, jacs[:2]), ref[:2])
    with pytest.raises(ValueError, match="squared-gradient sum"):
        _run(m, [torch.randn(3, 11, dtype=torch.float64)])


@pytest.mark.parametrize("k", [2, 3, 5, 10])
def test_properties(k: int) -> None:
    for name, jac in jacobian_families(k):
        m = ExcessMTL(0.5)
        for _ in range(3):
            w = m.combine(Inputs(losses=torch.ones(k, dtype=jac.dtype), jacobian=jac)).weights
            assert w is not None
            assert_finite(w)
            assert (w > 0).all(), name
            torch.testing.assert_close(w.sum(), torch.tensor(float(k), dtype=w.dtype))
    assert_zero_gives_zero(ExcessMTL(), k)


def test_k1_passthrough() -> None:
    assert_k1_passthrough(ExcessMTL(), exact=True)
    m = ExcessMTL(1.0)
    for jac in _jacs(1, 5, 3):
        torch.testing.assert_close(direction(m, jac), jac[0])
