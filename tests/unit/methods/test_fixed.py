from __future__ import annotations

import pytest
import torch

from molearn.methods import Fixed, Inputs
from tests.unit.methods._asserts import (
    assert_finite,
    assert_k1_passthrough,
    assert_zero_gives_zero,
    direction,
    jacobian_families,
    weights,
)


def test_weights_are_the_given_ones() -> None:
    jac = torch.randn(3, 5, dtype=torch.float64)
    m = Fixed([0.5, 2.0, -1.0])
    torch.testing.assert_close(weights(m, jac), torch.tensor([0.5, 2.0, -1.0], dtype=torch.float64))
    torch.testing.assert_close(direction(m, jac), 0.5 * jac[0] + 2.0 * jac[1] - jac[2])


def test_tensor_input_and_dtype_follow_losses() -> None:
    m = Fixed(torch.tensor([1.0, 3.0]))
    out = m.combine(Inputs(losses=torch.tensor([0.1, 0.2], dtype=torch.float32)))
    assert out.weights is not None and out.weights.dtype == torch.float32
    torch.testing.assert_close(out.weights, torch.tensor([1.0, 3.0]))


def test_wrong_k_is_a_clear_error() -> None:
    m = Fixed([1.0, 2.0])
    with pytest.raises(ValueError, match="2 weights but received 3 losses"):
        m.combine(Inputs(losses=torch.ones(3)))


@pytest.mark.parametrize("bad", [[], [[1.0, 2.0]], [1.0, float("nan")], [float("inf")]])
def test_invalid_weights(bad: list) -> None:
    with pytest.raises(ValueError):
        Fixed(bad)


@pytest.mark.parametrize("k", [2, 3, 5, 10])
def test_properties(k: int) -> None:
    m = Fixed(torch.linspace(0.5, 2.0, k))
    for name, jac in jacobian_families(k):
        d = direction(m, jac)
        assert_finite(d)
        torch.testing.assert_close(d, m.weights @ jac, msg=name)
    assert_zero_gives_zero(Fixed([1.0, 2.0, 3.0]))


def test_k1_positive_multiple() -> None:
    assert_k1_passthrough(Fixed([1.0]), exact=True)
    assert_k1_passthrough(Fixed([3.0]), exact=False)


def test_stateless() -> None:
    m = Fixed([1.0, 2.0])
    assert m.state_dict() == {}
    with pytest.raises(ValueError):
        m.load_state_dict({"x": 1})
