from __future__ import annotations

import pytest
import torch
from torchjd.scalarization import Random

from molearn.methods import RLW, Inputs
from tests.unit.methods._asserts import (
    assert_finite,
    assert_k1_passthrough,
    assert_zero_gives_zero,
    direction,
    jacobian_families,
)


def draw(m: RLW, k: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    out = m.combine(Inputs(losses=torch.ones(k, dtype=dtype)))
    assert out.weights is not None and out.weights.shape == (k,) and out.weights.dtype == dtype
    return out.weights


def test_softmax_normal_is_softmax_of_a_normal_draw() -> None:
    m = RLW(generator=torch.Generator().manual_seed(3))
    ref = torch.Generator().manual_seed(3)
    for _ in range(3):
        eps = torch.randn(4, generator=ref, dtype=torch.float64)
        torch.testing.assert_close(draw(m, 4), torch.softmax(eps, 0))


def test_softmax_uniform() -> None:
    m = RLW("softmax_uniform", generator=torch.Generator().manual_seed(5))
    ref = torch.Generator().manual_seed(5)
    expected = torch.softmax(torch.rand(3, generator=ref, dtype=torch.float64), 0)
    torch.testing.assert_close(draw(m, 3), expected)


def test_matches_torchjd_random_with_the_global_rng() -> None:
    values = torch.tensor([0.3, 1.2, 2.0], requires_grad=True)
    torch.manual_seed(11)
    Random()(values).backward()
    torch.manual_seed(11)
    torch.testing.assert_close(draw(RLW(), 3, torch.float32), values.grad)


def test_deterministic_with_generator_and_scale() -> None:
    a = RLW(generator=torch.Generator().manual_seed(0))
    b = RLW(generator=torch.Generator().manual_seed(0), scale="K")
    c = RLW(generator=torch.Generator().manual_seed(0), scale=2.5)
    for _ in range(5):
        wa, wb, wc = draw(a, 5), draw(b, 5), draw(c, 5)
        assert (wa > 0).all()
        torch.testing.assert_close(wa.sum(), torch.tensor(1.0, dtype=torch.float64))
        torch.testing.assert_close(wb, 5 * wa)
        torch.testing.assert_close(wc, 2.5 * wa)
    assert not torch.equal(draw(a, 5), draw(a, 5))  # a new draw every step


def test_dirichlet_is_uniform_on_the_simplex() -> None:
    m = RLW("dirichlet", generator=torch.Generator().manual_seed(1))
    ws = torch.stack([draw(m, 3) for _ in range(4000)])
    assert (ws >= 0).all()
    torch.testing.assert_close(ws.sum(1), torch.ones(4000, dtype=torch.float64))
    # Dirichlet(1,1,1): mean 1/3, variance (1/3)(2/3)/4 = 1/18
    torch.testing.assert_close(ws.mean(0), torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.02, rtol=0)
    torch.testing.assert_close(ws.var(0), torch.full((3,), 1 / 18, dtype=torch.float64), atol=0.01, rtol=0)


def test_bernoulli_never_all_zero_and_uniform_over_patterns() -> None:
    m = RLW("bernoulli", generator=torch.Generator().manual_seed(2))
    ws = torch.stack([draw(m, 2) for _ in range(3000)])
    assert ((ws == 0) | (ws == 1)).all()
    assert (ws.sum(1) > 0).all()
    codes = (ws[:, 0] + 2 * ws[:, 1]).long()
    freq = torch.bincount(codes, minlength=4).double() / 3000
    assert freq[0] == 0
    torch.testing.assert_close(freq[1:], torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.04, rtol=0)
    big = draw(RLW("bernoulli", generator=torch.Generator().manual_seed(0)), 70)
    assert ((big == 0) | (big == 1)).all()


def test_one_hot() -> None:
    m = RLW("one_hot", generator=torch.Generator().manual_seed(4))
    ws = torch.stack([draw(m, 4) for _ in range(400)])
    assert (ws.sum(1) == 1).all() and ((ws == 0) | (ws == 1)).all()
    assert (ws.sum(0) > 50).all()  # every objective gets picked


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown distribution"):
        RLW("gamma")  # type: ignore[arg-type]
    for bad in (0.0, -1.0, "k"):
        with pytest.raises(ValueError, match="scale"):
            RLW(scale=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("k", [2, 3, 5, 10])
def test_properties(k: int) -> None:
    for dist in ("softmax_normal", "softmax_uniform", "dirichlet", "bernoulli", "one_hot"):
        m = RLW(dist, generator=torch.Generator().manual_seed(k))  # type: ignore[arg-type]
        for _name, jac in jacobian_families(k):
            assert_finite(direction(m, jac))
        assert_zero_gives_zero(m, k)
    assert_k1_passthrough(RLW(generator=torch.Generator().manual_seed(0)), exact=True)
    assert_k1_passthrough(RLW(scale=3.0), exact=False)
