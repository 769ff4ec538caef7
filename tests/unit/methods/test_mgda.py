"""MGDA: exact and official Frank-Wolfe solvers, normalisations, golden values and properties."""

from __future__ import annotations

import pytest
import torch

from molearn.methods import MGDA

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
from ._torchjd_oracle import mgda_weights


def fixed_jacobian(k: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    j = torch.randn(k, 15, generator=gen, dtype=torch.float64)
    return j - 0.6 * j.mean(0)


def objective(w: torch.Tensor, j: torch.Tensor) -> float:
    return float((w @ j).norm() ** 2)


@pytest.mark.parametrize("k", [3, 5, 10])
def test_close_to_torchjd_frank_wolfe(k: int) -> None:
    """TorchJD's MGDAWeighting stops at a Frank-Wolfe step below 1e-3: its weights are near ours and its
    objective is never below the exact minimum."""
    for seed in range(3):
        j = fixed_jacobian(k, seed)
        w = weights(MGDA(), j)
        w_tjd = mgda_weights(j @ j.T)
        assert objective(w, j) <= objective(w_tjd, j) + 1e-12
        assert objective(w_tjd, j) - objective(w, j) <= 1e-2 * float((j @ j.T).diagonal().max())
        torch.testing.assert_close(w, w_tjd, atol=5e-2, rtol=0)


def test_k2_closed_form() -> None:
    for seed in range(4):
        j = fixed_jacobian(2, seed) * (1 + seed)
        g = j @ j.T
        a = ((g[1, 1] - g[0, 1]) / (g[0, 0] + g[1, 1] - 2 * g[0, 1])).clamp(0, 1)
        expected = torch.stack([a, 1 - a])
        torch.testing.assert_close(weights(MGDA(), j), expected, atol=1e-10, rtol=0)
        w_fw = weights(MGDA(solver="frank_wolfe"), j)
        torch.testing.assert_close(w_fw, expected.clamp(0.001, 0.999), atol=1e-10, rtol=0)


def test_frank_wolfe_solver_close_to_exact() -> None:
    for k in (3, 6):
        j = fixed_jacobian(k, 1)
        w, w_fw = weights(MGDA(), j), weights(MGDA(solver="frank_wolfe"), j)
        assert objective(w, j) <= objective(w_fw, j) + 1e-12
        assert objective(w_fw, j) <= objective(w, j) * (1 + 1e-3) + 1e-12


def test_normalisations_and_scale() -> None:
    j = fixed_jacobian(4, 2)
    losses = torch.tensor([0.5, 1.0, 2.0, 4.0], dtype=torch.float64)
    norms = j.norm(dim=1)
    ones = torch.ones(4, dtype=torch.float64)
    for name, n in [("none", ones), ("l2", norms), ("loss", losses), ("loss+", losses * norms)]:
        w = weights(MGDA(normalization=name), j, losses)  # type: ignore[arg-type]
        w_hull = weights(MGDA(), j / n[:, None], losses)  # MGDA on the normalised gradients
        torch.testing.assert_close(w, w_hull / n, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(weights(MGDA(scale="K"), j), 4 * weights(MGDA(), j))
    with pytest.raises(ValueError, match="solver"):
        MGDA(solver="cvx")  # type: ignore[arg-type]


def test_weights_invariant_to_scaling_j() -> None:
    j = fixed_jacobian(6, 3)
    w = weights(MGDA(), j)
    for s in (1e-7, 1e-3, 1e3, 1e7):
        torch.testing.assert_close(weights(MGDA(), j * s), w, atol=1e-9, rtol=0)


def test_residual_info() -> None:
    j = fixed_jacobian(8, 0)
    out = MGDA().combine(make_inputs(MGDA(), j))
    assert out.info["residual"] <= 1e-6


@pytest.mark.parametrize("k", [2, 3, 5, 10])
def test_properties(k: int) -> None:
    for name, j in jacobian_families(k):
        for method in (MGDA(), MGDA(normalization="l2")):
            d = direction(method, j)
            assert_finite(d)
            w = weights(method, j)
            g = j @ j.T
            # J d ≥ 0 up to the solver's KKT tolerance (relative to max G_ii · max |w|)
            assert (g @ w >= -1e-8 * g.diagonal().max() * w.abs().max()).all(), name
            if name == "normal":
                assert_non_conflicting(d, j, rtol=1e-9)
        assert_permutation_equivariant(MGDA(), j, atol=1e-6)
    assert_k1_passthrough(MGDA())
    assert_zero_gives_zero(MGDA(), k)
