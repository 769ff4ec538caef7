from __future__ import annotations

import pytest
import torch

from molearn.methods import Inputs, NashMTL, get
from molearn.solvers import alpha_fair

from ._asserts import (
    assert_finite,
    assert_k1_passthrough,
    assert_non_conflicting,
    assert_permutation_equivariant,
    assert_zero_gives_zero,
    direction,
    jacobian_families,
    make_inputs,
    weights,
)

torchjd_agg = pytest.importorskip("torchjd.aggregation")
pytest.importorskip("ecos")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _jac(k: int, seed: int) -> torch.Tensor:
    return torch.randn(k, 3 * k + 4, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) + 0.5


@pytest.mark.parametrize("k", [2, 3, 5, 8])
def test_golden_vs_torchjd_nash_mtl(k: int) -> None:
    """TorchJD 0.18 wraps the official CCCP/ECOS solver, which stops at its own tolerance (|GGᵀα - 1/α| < 1e-3
    on the Frobenius-normalised Gramian), hence the loose tolerance; molearn's residual is far smaller."""
    jac = _jac(k, seed=k)
    expected = torchjd_agg.NashMTL(n_tasks=k, max_norm=0.0).weighting(jac)
    out = NashMTL().combine(make_inputs(NashMTL(), jac))
    assert out.weights is not None
    torch.testing.assert_close(out.weights, expected, rtol=2e-3, atol=0)
    assert out.info["residual"] < 1e-9
    # the system itself: g_i . d = 1 / alpha_i
    torch.testing.assert_close(jac @ (out.weights @ jac), 1 / out.weights)


@pytest.mark.parametrize("k", [2, 3, 5, 10])
def test_properties_over_families(k: int) -> None:
    method = NashMTL()
    for _, jac in jacobian_families(k):
        d = direction(method, jac)
        assert_finite(d)
        assert_non_conflicting(d, jac)
        assert_permutation_equivariant(method, jac)


def test_k1_zero_and_scale() -> None:
    assert_k1_passthrough(NashMTL(), exact=False)
    g = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    torch.testing.assert_close(direction(NashMTL(), g), g[0] / 5)  # d = g / |g|
    assert_zero_gives_zero(NashMTL())
    jac = _jac(4, seed=3)
    w = weights(NashMTL(), jac)
    torch.testing.assert_close(weights(NashMTL(), 1e5 * jac), w * 1e-5)  # alpha(sJ) = alpha(J) / s
    torch.testing.assert_close(w, alpha_fair(jac @ jac.T, 1.0))


def test_max_norm_clips_the_direction_from_the_gramian() -> None:
    jac = _jac(4, seed=4)
    free = direction(NashMTL(), jac)
    assert free.norm() > 1.0  # |d|^2 = K for Nash-MTL
    torch.testing.assert_close(direction(NashMTL(max_norm=1.0), jac), free / free.norm())
    torch.testing.assert_close(direction(NashMTL(max_norm=10.0), jac), free)


def test_update_weights_every_and_state_dict() -> None:
    jacs = [_jac(3, seed=s) for s in range(5)]
    method = NashMTL(update_weights_every=2)
    w0 = weights(method, jacs[0])
    torch.testing.assert_close(weights(method, jacs[1]), w0)  # reused
    w2 = weights(method, jacs[2])
    torch.testing.assert_close(w2, weights(NashMTL(), jacs[2]))  # recomputed
    state = method.state_dict()
    restored = NashMTL(update_weights_every=2)
    restored.load_state_dict(state)
    for jac in jacs[3:]:
        torch.testing.assert_close(weights(restored, jac), weights(method, jac))
    method.reset()
    assert method.state_dict()["alpha"] is None
    with pytest.raises(ValueError):
        restored.load_state_dict({"bogus": 1})


def test_validation_and_registry() -> None:
    assert isinstance(get("nash_mtl"), NashMTL)
    assert isinstance(get("NashMTL", optim_niter=5), NashMTL)
    for bad in ({"max_norm": 0.0}, {"update_weights_every": 0}, {"optim_niter": 0}):
        with pytest.raises(ValueError):
            NashMTL(**bad)
    k = 3
    out = NashMTL().combine(Inputs(losses=torch.ones(k), gramian=torch.eye(k)))
    assert out.weights is not None and out.weights.dtype == torch.float32
