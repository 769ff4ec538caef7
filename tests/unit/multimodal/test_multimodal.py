"""Late-fusion interface, MIMO (reconstructed), OGM-GE and G-Blending on hand cases and the toy."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import molearn
from molearn.multimodal import (
    MIMO,
    OGMGE,
    BalancerStrategy,
    FusedOnly,
    GBlend,
    LateFusion,
    Unimodal,
    gblend_weights,
    mimo_objective,
    mimo_weights,
    objectives,
    ogm_coefficients,
    ogm_scores,
    smoothmax,
    two_gaussian_modalities,
)


def _model(seed: int = 0, c: int = 4) -> LateFusion:
    torch.manual_seed(seed)
    enc = {m: nn.Sequential(nn.Linear(16, 8), nn.ReLU()) for m in ("strong", "weak")}
    return LateFusion(enc, {"strong": 8, "weak": 8}, c)


def _batch(n: int = 32, seed: int = 0):
    return two_gaussian_modalities(n, seed=seed)


# ------------------------------------------------------------------------------------------- interface
def test_shapes_and_objectives() -> None:
    model = _model()
    x, y = _batch()
    out = model(x)
    assert out.fused.shape == (32, 4)
    assert set(out.unimodal) == {"strong", "weak"} and out.unimodal["weak"].shape == (32, 4)
    losses, _ = objectives(model, x, y)
    assert losses.shape == (3,) and losses.requires_grad
    assert model.objective_names == ["fused", "strong", "weak"]
    ref = nn.functional.cross_entropy(out.unimodal["weak"], y)
    assert torch.allclose(losses[2], ref)
    # the fusion slices add up to the fused logits
    sl = model.fusion_slice_logits(out.features)
    assert torch.allclose(sl["strong"] + sl["weak"], out.fused, atol=1e-6)


def test_probe_detaches_unimodal_heads() -> None:
    model = _model()
    x, y = _batch()
    losses, _ = objectives(model, x, y, probe=True)
    losses[2].backward()
    # the stacked vector routes zeros through the fused path; nothing from L_weak reaches the encoder
    assert all(p.grad is None or not p.grad.any() for p in model.encoders["weak"].parameters())
    assert model.heads["weak"].weight.grad is not None and model.heads["weak"].weight.grad.any()
    model.zero_grad()
    objectives(model, x, y, probe=False)[0][2].backward()
    assert model.encoders["weak"][0].weight.grad.any()


def test_bad_input_errors() -> None:
    model = _model()
    x, y = _batch()
    with pytest.raises(ValueError, match="'weak' is missing"):
        model({"strong": x["strong"]})
    with pytest.raises(ValueError, match="batch sizes differ"):
        model({"strong": x["strong"], "weak": x["weak"][:5]})
    with pytest.raises(ValueError, match="unknown modality 'text'"):
        model({**x, "text": x["weak"]})
    with pytest.raises(ValueError, match="labels have shape"):
        objectives(model, x, y[:3])
    with pytest.raises(TypeError, match="expected a tensor"):
        model({"strong": x["strong"], "weak": [1, 2]})
    with pytest.raises(ValueError, match="differ in modalities"):
        LateFusion({"a": nn.Identity()}, {"b": 3}, 2)


# ------------------------------------------------------------------------------------------------ MIMO
def test_mimo_weights_are_the_analytic_gradient() -> None:
    losses = torch.tensor([0.7, 0.4, 1.3, 0.9], dtype=torch.float64, requires_grad=True)
    mu, tau = 0.8, 0.3
    obj = mimo_objective(losses, mu, tau)
    (grad,) = torch.autograd.grad(obj, losses)
    w = mimo_weights(losses, mu, tau)
    # hand formula: [1, mu * softmax(L_uni / tau)]
    e = [math.exp(v / tau) for v in (0.4, 1.3, 0.9)]
    expected = [1.0] + [mu * v / sum(e) for v in e]
    assert torch.allclose(w, torch.tensor(expected, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(grad, w, atol=1e-12)
    # the worst uni-modal loss (1.3, index 2) gets the largest weight
    assert int(w[1:].argmax()) == 1
    # smooth max bounds: max <= smoothmax <= max + tau log M
    sm = float(smoothmax(losses[1:].detach(), tau))
    assert 1.3 <= sm <= 1.3 + tau * math.log(3) + 1e-12


def test_mimo_through_balancer_equals_gradient_of_objective() -> None:
    x, y = _batch()
    m1, m2 = _model(1), _model(1)
    losses, _ = objectives(m1, x, y)
    bal = molearn.Balancer(MIMO(mu=1.0, tau=0.1), m1.shared_parameters(), m1.task_parameters())
    info = bal.backward(losses)
    l2, _ = objectives(m2, x, y)
    mimo_objective(l2, 1.0, 0.1).backward()
    for p1, p2 in zip(m1.parameters(), m2.parameters(), strict=True):
        assert p1.grad is not None and p2.grad is not None
        assert torch.allclose(p1.grad, p2.grad, atol=1e-6)
    assert info.weights is not None and info.weights.shape == (3,)
    assert "mimo" not in molearn.methods.registry() and repr(MIMO()) == "MIMO(mu=1.0, tau=0.1)"


def test_mimo_bad_hyperparameters() -> None:
    with pytest.raises(ValueError, match="tau"):
        MIMO(tau=0.0)
    with pytest.raises(ValueError, match="mu"):
        MIMO(mu=-1.0)
    with pytest.raises(ValueError, match="at least one uni-modal"):
        mimo_weights(torch.tensor([1.0]))


# ---------------------------------------------------------------------------------------------- OGM-GE
def test_ogm_coefficients_hand_case() -> None:
    alpha = 0.8
    # modality 0 more confident: ratio 30/12 = 2.5 -> k_0 = 1 - tanh(0.8 * 2.5), k_1 = 1
    k = ogm_coefficients(torch.tensor([30.0, 12.0]), alpha)
    assert torch.allclose(k, torch.tensor([1 - math.tanh(2.0), 1.0], dtype=torch.float64))
    # modality 1 more confident: ratio_1 = 20/5 = 4 -> k_1 = 1 - tanh(0.8 * 4)
    k = ogm_coefficients(torch.tensor([5.0, 20.0]), alpha)
    assert torch.allclose(k, torch.tensor([1.0, 1 - math.tanh(3.2)], dtype=torch.float64))
    # a tie slows modality 1 (the official code's else-branch)
    k = ogm_coefficients(torch.tensor([4.0, 4.0]), alpha)
    assert torch.allclose(k, torch.tensor([1.0, 1 - math.tanh(0.8)], dtype=torch.float64))
    with pytest.raises(ValueError, match="positive"):
        ogm_coefficients(torch.tensor([0.0, 1.0]), alpha)


def test_ogm_scores_hand_case() -> None:
    z = torch.log(torch.tensor([[0.5, 0.5], [0.9, 0.1]]))
    s = ogm_scores([z, z.flip(1)], torch.tensor([0, 0]))
    assert torch.allclose(s, torch.tensor([1.4, 0.6]), atol=1e-6)


def test_ogmge_scales_the_dominant_encoder() -> None:
    x, y = _batch(64)
    m_ref, m_ogm = _model(2), _model(2)
    for m in (m_ref, m_ogm):  # the strong modality dominates the fused head after a few steps
        opt = torch.optim.SGD(m.parameters(), lr=0.5)
        for _ in range(20):
            FusedOnly().step(m, x, y, opt)
    m_ogm.load_state_dict(m_ref.state_dict())
    strat = OGMGE(alpha=0.8, ge=False)
    opt = torch.optim.SGD(m_ogm.parameters(), lr=0.0)
    strat.step(m_ogm, x, y, opt)
    k = strat.last_coefficients
    assert k is not None and float(k[0]) < 1.0 and float(k[1]) == 1.0
    m_ref.zero_grad()
    losses, _ = objectives(m_ref, x, y, probe=True)
    losses.sum().backward()
    w_ref = m_ref.encoders["strong"][0].weight.grad
    w_ogm = m_ogm.encoders["strong"][0].weight.grad
    assert torch.allclose(w_ogm, float(k[0]) * w_ref, atol=1e-6)
    assert torch.allclose(m_ogm.encoders["weak"][0].weight.grad, m_ref.encoders["weak"][0].weight.grad)


# ------------------------------------------------------------------------------------------ G-Blending
def test_gblend_weights_hand_case() -> None:
    t0 = torch.tensor([1.0, 1.0, 1.0])
    v0 = torch.tensor([1.2, 1.2, 1.2])
    t1 = torch.tensor([0.4, 0.8, 0.5])
    v1 = torch.tensor([0.9, 1.1, 1.3])
    # dG = [0.3, 0.1, -0.1]; dO = (v1 - t1) - (v0 - t0) = [0.3, 0.1, 0.6]
    # raw = [0.3/0.09, 0.1/0.01, 0] = [3.333, 10, 0] -> normalised
    w = gblend_weights(t0, v0, t1, v1)
    raw = torch.tensor([0.3 / 0.09, 0.1 / 0.01, 0.0], dtype=torch.float64)
    assert torch.allclose(w, raw / raw.sum(), atol=1e-9)
    assert math.isclose(float(w.sum()), 1.0)
    # nothing improved -> uniform
    assert torch.allclose(gblend_weights(t0, v0, t0, v0 + 1), torch.full((3,), 1 / 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="same length"):
        gblend_weights(t0, v0, t1, v1[:2])


def test_gblend_schedule() -> None:
    g = GBlend(interval=1)
    g.end_epoch(0, torch.tensor([1.0, 1.0]), torch.tensor([1.2, 1.2]))
    assert g.weights is None  # first window: uniform
    g.end_epoch(1, torch.tensor([0.5, 0.9]), torch.tensor([1.0, 1.3]))
    assert g.weights is not None and torch.allclose(g.weights, torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="held-out"):
        g.end_epoch(2, None, None)


# -------------------------------------------------------------------------------- strategies on the toy
@pytest.mark.parametrize(
    "make",
    [
        FusedOnly,
        Unimodal,
        lambda: OGMGE(alpha=0.8),
        lambda: GBlend(),
        lambda: BalancerStrategy(molearn.methods.get("ew")),
        lambda: BalancerStrategy(molearn.methods.get("mgda")),
        lambda: BalancerStrategy(MIMO()),
    ],
)
def test_strategies_learn_the_toy(make) -> None:  # type: ignore[no-untyped-def]
    x, y = _batch(256, seed=3)
    model = _model(4)
    strat = make()
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    first = strat.step(model, x, y, opt)
    for epoch in range(30):
        last = strat.step(model, x, y, opt)
        with torch.no_grad():
            lv, _ = objectives(model, x, y)
        strat.end_epoch(epoch, lv, lv + 0.01 * (30 - epoch))
    assert last.shape == (3,) and torch.isfinite(last).all()
    assert float(last[0]) < float(first[0])  # the fused loss went down
