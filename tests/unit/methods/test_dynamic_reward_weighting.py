"""DynamicRewardWeighting against hand-computed steps of the official update rule."""

from __future__ import annotations

import math

import pytest
import torch

from molearn.methods import DynamicRewardWeighting, Inputs, get, registry


def _inputs(jac: torch.Tensor) -> Inputs:
    return Inputs(losses=torch.ones(jac.shape[0], dtype=jac.dtype), gramian=jac @ jac.T)


def test_one_step_by_hand() -> None:
    # g1 = (1, 0), g2 = (1, 1): G = [[1, 1], [1, 2]], influence s = (2, 3)
    jac = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    m = DynamicRewardWeighting(eta=0.5)
    w = m.combine(_inputs(jac)).weights
    # softmax(log(1/2) + 0.5 * (2, 3)) = (e^1, e^1.5) / (e^1 + e^1.5)
    e1, e2 = math.exp(1.0), math.exp(1.5)
    torch.testing.assert_close(w, torch.tensor([e1 / (e1 + e2), e2 / (e1 + e2)], dtype=torch.float64))
    # second step multiplies again: w ∝ w_prev * exp(eta * s)
    w2 = m.combine(_inputs(jac)).weights
    a, b = w[0] * math.exp(1.0), w[1] * math.exp(1.5)
    torch.testing.assert_close(w2, torch.stack([a, b]) / (a + b))


def test_preference_is_the_initial_weight_and_eta_zero_keeps_it() -> None:
    jac = torch.randn(3, 5, dtype=torch.float64)
    m = DynamicRewardWeighting(eta=0.0, pref=[2.0, 1.0, 1.0])
    w = m.combine(_inputs(jac)).weights
    torch.testing.assert_close(w, torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64))


def test_accumulation_averages_the_influence() -> None:
    jac1 = torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=torch.float64)  # s = (1, 0)
    jac2 = torch.tensor([[0.0, 0.0], [0.0, 3.0]], dtype=torch.float64)  # s = (0, 9)
    m = DynamicRewardWeighting(eta=1.0, accumulation_steps=2)
    w1 = m.combine(_inputs(jac1)).weights  # no update yet
    torch.testing.assert_close(w1, torch.tensor([0.5, 0.5], dtype=torch.float64))
    w2 = m.combine(_inputs(jac2)).weights  # mean influence (0.5, 4.5)
    e = torch.tensor([0.5, 4.5], dtype=torch.float64)
    torch.testing.assert_close(w2, torch.softmax(e, 0))


def test_state_round_trip_and_validation() -> None:
    jac = torch.randn(2, 4, dtype=torch.float64)
    m = DynamicRewardWeighting(eta=0.01, accumulation_steps=3)
    for _ in range(4):
        m.combine(_inputs(jac))
    state = m.state_dict()
    assert state["step"] == 4 and state["accumulated"] is not None
    other = DynamicRewardWeighting(eta=0.01, accumulation_steps=3)
    other.load_state_dict(state)
    torch.testing.assert_close(other.combine(_inputs(jac)).weights, m.combine(_inputs(jac)).weights)
    with pytest.raises(ValueError, match="unknown state keys"):
        other.load_state_dict({"nope": 1})
    with pytest.raises(ValueError, match="disagrees"):
        other.load_state_dict({"log_weights": torch.zeros(2, dtype=torch.float64),
                               "accumulated": torch.zeros(3, dtype=torch.float64), "step": 1})


def test_errors_and_registry() -> None:
    with pytest.raises(ValueError):
        DynamicRewardWeighting(eta=-1.0)
    with pytest.raises(ValueError):
        DynamicRewardWeighting(accumulation_steps=0)
    with pytest.raises(ValueError):
        DynamicRewardWeighting(pref=[1.0, -1.0])
    m = DynamicRewardWeighting(pref=[0.5, 0.5])
    with pytest.raises(ValueError, match="pref has 2 entries but received 3"):
        m.combine(_inputs(torch.randn(3, 4, dtype=torch.float64)))
    assert registry()["dynamicrewardweighting"] is DynamicRewardWeighting
    assert isinstance(get("dynamic_reward_weighting"), DynamicRewardWeighting)
