from __future__ import annotations

import pytest
import torch

from molearn.methods import FairGrad, get

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


def _jac(k: int, seed: int, shift: float = 0.5) -> torch.Tensor:
    return (
        torch.randn(k, 3 * k + 4, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) + shift
    )


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0, 4.0])
@pytest.mark.parametrize("k", [2, 3, 5, 10])
def test_golden_vs_torchjd_fairgrad(alpha: float, k: int) -> None:
    """TorchJD 0.18's FairGradWeighting runs the official scipy least_squares (own stopping tolerance)."""
    jac = _jac(k, seed=k)
    g = jac @ jac.T
    expected = torchjd_agg.FairGradWeighting(alpha)(g)
    torch.testing.assert_close(weights(FairGrad(alpha=alpha), jac), expected, rtol=1e-5, atol=0)


@pytest.mark.parametrize("k", [2, 3, 5, 10])
def test_properties_over_families(k: int) -> None:
    method = FairGrad()
    for name, jac in jacobian_families(k):
        d = direction(method, jac)
        assert_finite(d)
        assert_non_conflicting(d, jac)
        assert_permutation_equivariant(method, jac)
        out = method.combine(make_inputs(method, jac))
        res = out.info["residual"]
        # a positive solution exists unless the gradients are Pareto-stationary (then w = 0, d = 0)
        assert res <= 1e-6 or (out.weights == 0).all(), f"{name}: residual {res}"


def test_k1_and_zero() -> None:
    method = FairGrad(alpha=2.0)
    assert_k1_passthrough(method, exact=False)
    g = torch.tensor([[3.0, 4.0]], dtype=torch.float64)  # |g| = 5: w = 25^(-2/3)
    torch.testing.assert_close(weights(method, g), torch.tensor([25.0 ** (-2 / 3)], dtype=torch.float64))
    assert_zero_gives_zero(method)


@pytest.mark.parametrize("alpha", [1.0, 2.0])
def test_scale_behaviour(alpha: float) -> None:
    jac = _jac(4, seed=1)
    w = weights(FairGrad(alpha=alpha), jac)
    for s in (1e-6, 1e6):  # J -> sJ: G -> s^2 G, w -> s^(-2a/(a+1)) w
        torch.testing.assert_close(
            weights(FairGrad(alpha=alpha), jac * s), w * s ** (-2 * alpha / (alpha + 1))
        )


def test_scale_option_and_dtype_and_registry() -> None:
    jac = _jac(5, seed=2)
    torch.testing.assert_close(weights(FairGrad(scale="K"), jac), 5 * weights(FairGrad(), jac))
    torch.testing.assert_close(weights(FairGrad(scale=0.5), jac), 0.5 * weights(FairGrad(), jac))
    assert weights(FairGrad(), jac.float()).dtype == torch.float32
    assert isinstance(get("fairgrad", alpha=1.0), FairGrad)
    assert FairGrad().alpha == 2.0
    with pytest.raises(ValueError):
        FairGrad(alpha=0.0)
