"""FairGrad's RL solver (``solver="sgd"``): golden against the official loop, and its properties."""

from __future__ import annotations

import math

import pytest
import torch

from molearn.methods import FairGrad, Inputs, get
from molearn.solvers import alpha_fair, alpha_fair_residual, alpha_fair_sgd

from ._asserts import (
    assert_finite,
    assert_k1_passthrough,
    assert_permutation_equivariant,
    assert_zero_gives_zero,
    direction,
    jacobian_families,
    make_inputs,
    weights,
)

ALPHAS = [0.5, 1.0, 2.0, 5.0]


def official_sgd(gramian: torch.Tensor, alpha: float) -> tuple[torch.Tensor, int]:
    """OptMN-Lab/fairgrad ``mtrl_files/fairgrad.py`` ``Agent.fairgrad``, written out with torch.optim.SGD
    and clip_grad_norm_ (float64 instead of the official float32). Returns (w_best, index of w_best)."""
    k = gramian.shape[0]
    w = torch.ones(k, dtype=torch.float64) / k
    w_best, obj_best, i_best = None, math.inf, -1
    w.requires_grad = True
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.5)
    for i in range(20):
        opt.zero_grad()
        obj = torch.linalg.norm(torch.mv(gramian, w) - torch.pow(1 / (w + 1e-8), 1 / alpha)) ** 2
        if float(obj.detach()) < obj_best:
            obj_best, w_best, i_best = float(obj.detach()), w.detach().clone(), i
        obj.backward()
        torch.nn.utils.clip_grad_norm_(w, max_norm=1.0)
        opt.step()
        w.data.clamp_(min=1e-8)
    assert w_best is not None
    return w_best, i_best


def objective(gramian: torch.Tensor, w: torch.Tensor, alpha: float) -> torch.Tensor:
    return ((gramian @ w.unsqueeze(-1)).squeeze(-1) - (w + 1e-8).pow(-1 / alpha)).pow(2).sum(-1)


def fixed_gramians() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    out = []
    for k in (2, 3, 5, 10):
        for scale in (0.1, 1.0, 10.0, 100.0):
            j = torch.randn(k, 8, generator=gen, dtype=torch.float64) + 0.3
            out.append(j @ j.T * scale)
    j = torch.randn(4, 8, generator=gen, dtype=torch.float64)
    j[1] = -j[0]  # opposite gradients (no positive solution)
    out.append(j @ j.T)
    j[2] = 0.0  # and a zero gradient
    out.append(j @ j.T)
    return out


@pytest.mark.parametrize("alpha", ALPHAS)
def test_golden_vs_official_sgd_loop(alpha: float) -> None:
    best_indices = set()
    for gram in fixed_gramians():
        expected, i_best = official_sgd(gram, alpha)
        best_indices.add(i_best)
        torch.testing.assert_close(alpha_fair_sgd(gram, alpha), expected, rtol=1e-10, atol=1e-12)
        out = FairGrad(alpha=alpha, solver="sgd").combine(Inputs(losses=torch.ones(len(gram)), gramian=gram))
        assert out.weights is not None
        torch.testing.assert_close(out.weights, expected.float(), rtol=1e-6, atol=1e-7)
    # the cases exercise the best-iterate selection (not always the last evaluated iterate)
    assert len(best_indices) >= 3 and min(best_indices) < 19


def test_golden_method_weights_and_scale() -> None:
    gen = torch.Generator().manual_seed(5)
    jac = torch.randn(4, 9, generator=gen, dtype=torch.float64) + 0.2
    expected, _ = official_sgd(jac @ jac.T, 2.0)
    torch.testing.assert_close(weights(FairGrad(solver="sgd"), jac), expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(weights(FairGrad(solver="sgd", scale="K"), jac), 4 * expected)
    assert weights(FairGrad(solver="sgd"), jac.float()).dtype == torch.float32
    assert get("fairgrad", solver="sgd").solver == "sgd"
    assert FairGrad().solver == "newton"
    with pytest.raises(ValueError, match="solver"):
        FairGrad(solver="lbfgs")  # type: ignore[arg-type]


def test_batched_equals_one_by_one() -> None:
    grams = fixed_gramians()[4:8]  # K = 3
    stacked = torch.stack(grams)
    for alpha in (1.0, 2.0):
        batched = alpha_fair_sgd(stacked, alpha)
        for b, gram in enumerate(grams):
            torch.testing.assert_close(batched[b], alpha_fair_sgd(gram, alpha), rtol=1e-13, atol=0)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_best_iterate_never_worse_than_start(alpha: float) -> None:
    for gram in fixed_gramians():
        k = gram.shape[0]
        w = alpha_fair_sgd(gram, alpha)
        start = torch.full((k,), 1.0 / k, dtype=torch.float64)
        assert (w >= 1e-8).all()
        assert objective(gram, w, alpha) <= objective(gram, start, alpha)
    # one evaluation only: the start itself
    one = alpha_fair_sgd(fixed_gramians()[5], alpha, steps=1)
    torch.testing.assert_close(one, torch.full((3,), 1 / 3, dtype=torch.float64))


@pytest.mark.parametrize("alpha", [1.0, 2.0, 5.0])
def test_reaches_the_newton_root_when_it_is_near_the_start(alpha: float) -> None:
    """Small, well-conditioned Gramians: the root is within reach of 19 clipped steps of lr 0.1."""
    gen = torch.Generator().manual_seed(0)
    j = torch.randn(2, 8, generator=gen, dtype=torch.float64) + 0.3
    gram = j @ j.T * 0.1
    w_newton = alpha_fair(gram, alpha)
    w = alpha_fair_sgd(gram, alpha)
    start = torch.full((2,), 0.5, dtype=torch.float64)
    assert alpha_fair_residual(gram, w, alpha) < 2e-3
    assert (w - w_newton).norm() < 2e-3 * w_newton.norm()
    assert (w - w_newton).norm() < 0.05 * (start - w_newton).norm()


@pytest.mark.parametrize("k", [2, 3, 5, 10])
def test_sgd_method_properties_over_families(k: int) -> None:
    method = FairGrad(solver="sgd")
    for name, jac in jacobian_families(k):
        d = direction(method, jac)
        assert_finite(d)
        assert_permutation_equivariant(method, jac)
        out = method.combine(make_inputs(method, jac))
        assert out.weights is not None and (out.weights >= 1e-8).all(), name
        assert torch.isfinite(out.info["residual"]), name


def test_sgd_k1_and_zero() -> None:
    method = FairGrad(solver="sgd")
    assert_k1_passthrough(method, exact=False)
    assert_zero_gives_zero(method)
    # zero Gramian: the objective only pushes w up, the returned w is positive, the direction is 0
    w = alpha_fair_sgd(torch.zeros(3, 3, dtype=torch.float64), 2.0)
    assert (w > 1 / 3).all()
