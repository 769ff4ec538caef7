"""UPGrad and DualProj (dual-cone projections): golden values vs TorchJD 0.18 and the paper's properties."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from molearn.methods import DualProj, Method, UPGrad

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
from ._torchjd_oracle import dualproj_weights, upgrad_weights

CASES = pytest.mark.parametrize(("cls", "oracle"), [(UPGrad, upgrad_weights), (DualProj, dualproj_weights)])
Oracle = Callable[..., torch.Tensor]


def fixed_jacobian(k: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    j = torch.randn(k, 12, generator=gen, dtype=torch.float64)
    return j - 0.7 * j.mean(0)


@pytest.mark.parametrize("k", [2, 3, 5, 10])
@CASES
def test_weights_equal_torchjd(cls: type[Method], oracle: Oracle, k: int) -> None:
    for seed in range(3):
        j = fixed_jacobian(k, seed) * 10.0 ** (seed - 1)
        g = j @ j.T
        torch.testing.assert_close(weights(cls(), j), oracle(g), atol=1e-6, rtol=1e-6)
        pref = torch.linspace(0.5, 2.0, k, dtype=torch.float64)
        torch.testing.assert_close(weights(cls(pref_vector=pref), j), oracle(g, pref), atol=1e-6, rtol=1e-6)


@CASES
def test_tiny_gramian_is_treated_as_zero_like_torchjd(cls: type[Method], oracle: Oracle) -> None:
    j = fixed_jacobian(4, 0) * 1e-4  # trace ≈ 1e-7 < norm_eps
    torch.testing.assert_close(weights(cls(), j), torch.full((4,), 0.25, dtype=torch.float64))
    torch.testing.assert_close(weights(cls(), j), oracle(j @ j.T), atol=1e-9, rtol=0)


@pytest.mark.parametrize("k", [2, 3, 5, 10])
@CASES
def test_properties(cls: type[Method], oracle: Oracle, k: int) -> None:
    exact = cls(norm_eps=0.0, reg_eps=0.0)
    for name, j in jacobian_families(k):
        d = direction(cls(), j)
        assert_finite(d)
        # with the default reg_eps the update conflicts by at most reg_eps relative to tr(G)
        assert (j @ d >= -2e-4 * (j @ j.T).trace() * weights(cls(), j).abs().max() - 1e-12).all(), name
        if not name.startswith("scaled_1e-07"):  # tr(G) < norm_eps: TorchJD's convention zeroes G
            # exact version: J d ≥ 0 up to the solver's KKT tolerance (relative to max G_ii · max |w|; a
            # tolerance relative to |d| is unreachable when the exact d is 0, e.g. rank1_conflicting)
            w_exact = weights(exact, j)
            g = j @ j.T
            assert (g @ w_exact >= -1e-8 * g.diagonal().max() * w_exact.abs().max()).all(), name
            if name == "normal":
                assert_non_conflicting(w_exact @ j, j, rtol=1e-9)
        assert_permutation_equivariant(cls(), j, atol=1e-6)
    assert_k1_passthrough(cls())
    assert_zero_gives_zero(cls(), k)


@CASES
def test_residual_info_and_validation(cls: type[Method], oracle: Oracle) -> None:
    j = fixed_jacobian(6, 1)
    out = cls().combine(make_inputs(cls(), j))
    assert out.info["residual"] <= 1e-6
    with pytest.raises(ValueError):
        cls(reg_eps=-1.0)
    with pytest.raises(ValueError, match="pref_vector"):
        cls(pref_vector=torch.ones(3)).combine(make_inputs(cls(), j))
