"""Rep-MTL: the two saliency regularisers against hand computations, one full step against plain autograd."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

import molearn
from molearn.methods import RepMTL, get

# ------------------------------------------------------------------------------------------ penalties
# K = 2 tasks, B = 2 samples, C = 2 channels, no spatial axes: S[t][b] is a 2-vector
SAL = [[[1.0, 3.0], [2.0, 0.0]], [[1.0, 1.0], [0.0, 4.0]]]


def _outer(u: list[float], v: list[float]) -> list[float]:
    return [a * b for a in u for b in v]


def _cos(u: list[float], v: list[float]) -> float:
    dot = sum(a * b for a, b in zip(u, v))
    return dot / math.sqrt(sum(a * a for a in u) * sum(b * b for b in v))


def _hand_penalties(sal: list[list[list[float]]], tau: float) -> tuple[float, float]:
    """Eq. 4-9 of the paper with Python floats (no spatial axes: one position per sample)."""
    k, b = len(sal), len(sal[0])
    entropies = []
    for j in range(b):
        a = [abs(sum(sal[t][j]) / len(sal[t][j])) for t in range(k)]
        p = [x / sum(a) for x in a]
        entropies.append(-sum(x * math.log(x) for x in p if x > 0))
    tsr = sum(entropies) / b
    anchors = []
    for j in range(b):
        total = [0.0] * 4
        for t in range(k):
            total = [x + y for x, y in zip(total, _outer(sal[t][j], sal[t][j]))]
        anchors.append(total)
    terms = []
    for j in range(b):
        neg = sum(math.exp(_cos(anchors[j], anchors[i]) / tau) for i in range(b) if i != j)
        for t in range(k):
            pos = math.exp(_cos(anchors[j], _outer(sal[t][j], sal[t][j])) / tau)
            terms.append(-math.log(pos / neg))
    return tsr, sum(terms) / len(terms)


def test_penalties_match_the_paper_formulas_by_hand() -> None:
    s = torch.tensor(SAL, dtype=torch.float64)
    tsr, csa = RepMTL(tau=0.5).penalties(s)
    want_tsr, want_csa = _hand_penalties(SAL, tau=0.5)
    # both samples have channel means (2, 1) and (1, 2): P = (2/3, 1/3)
    assert want_tsr == pytest.approx(math.log(3) - 2 / 3 * math.log(2), rel=1e-12)
    assert float(tsr) == pytest.approx(want_tsr, rel=1e-12)
    assert float(csa) == pytest.approx(want_csa, rel=1e-12)


def test_penalties_ignore_the_scale_and_the_channel_layout() -> None:
    gen = torch.Generator().manual_seed(0)
    s = torch.randn(3, 4, 5, 2, 3, generator=gen, dtype=torch.float64)  # (K, B, C, H, W)
    tsr, csa = RepMTL().penalties(s)
    scaled = s * torch.tensor([1e-30, 1.0, 1e20, 3.0], dtype=torch.float64).view(1, 4, 1, 1, 1)
    torch.testing.assert_close(torch.stack(RepMTL().penalties(scaled)), torch.stack([tsr, csa]))
    last = RepMTL(channel_dim=-1).penalties(s.movedim(2, -1))
    torch.testing.assert_close(torch.stack(last), torch.stack([tsr, csa]))
    # a position where every task's saliency is 0 adds 0 entropy (and no NaN)
    s[:, :, :, 0, 0] = 0
    assert all(torch.isfinite(v) for v in RepMTL().penalties(s))


def test_switched_off_terms_are_zero() -> None:
    s = torch.tensor(SAL, dtype=torch.float64)
    tsr, csa = RepMTL(lambda_tsr=0.0).penalties(s)
    assert float(tsr) == 0 and float(csa) != 0
    tsr, csa = RepMTL(lambda_csa=0.0).penalties(s[:, :1])  # one sample is fine without the alignment
    assert float(csa) == 0 and float(tsr) >= 0


# ------------------------------------------------------------------------------------------ a full step
class _Net(nn.Module):
    """Linear trunk reshaped to (B, C=2, 2, 2) features; two tanh + linear heads."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.trunk = nn.Linear(5, 8).double()
        self.heads = nn.ModuleList([nn.Linear(8, 1).double() for _ in range(2)])

    def forward(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        z = self.trunk(x).view(-1, 2, 2, 2)
        return [h(torch.tanh(z).flatten(1)).squeeze(1) for h in self.heads], z


def _data() -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(3, 5, generator=gen, dtype=torch.float64), torch.randn(2, 3, generator=gen).double()


def _losses(net: _Net, x: Tensor, y: Tensor) -> tuple[list[Tensor], Tensor]:
    preds, z = net(x)
    return [((p - t) ** 2).mean() for p, t in zip(preds, y)], z


def _hand_objective(losses: list[Tensor], z: Tensor, lam: float, tau: float) -> Tensor:
    """Σ L_t + λ L_tsr + λ L_csa with saliencies from autograd (create_graph) and explicit loops."""
    sal = [torch.autograd.grad(loss, z, create_graph=True)[0] for loss in losses]  # each (B, C, H, W)
    b, c = z.shape[0], z.shape[1]
    entropies = []
    for j in range(b):
        for h in range(z.shape[2]):
            for w in range(z.shape[3]):
                a = torch.stack([s[j, :, h, w].sum() / c for s in sal]).abs()
                p = a / a.sum()
                entropies.append(-(p * p.log()).sum())
    tsr = torch.stack(entropies).mean()
    anchors, affinities = [], []
    for j in range(b):
        mats = [s[j].reshape(c, -1) for s in sal]  # C × H'W'
        pooled = torch.stack([m.mean(1) for m in mats], dim=1)  # C × T
        anchors.append((pooled @ pooled.T).flatten())
        affinities.append([(m @ m.T).flatten() for m in mats])

    def cos(u: Tensor, v: Tensor) -> Tensor:
        return torch.dot(u, v) / (u.norm() * v.norm())

    terms = []
    for j in range(b):
        neg = sum(torch.exp(cos(anchors[j], anchors[i]) / tau) for i in range(b) if i != j)
        for aff in affinities[j]:
            terms.append(-torch.log(torch.exp(cos(anchors[j], aff) / tau) / neg))
    csa = torch.stack(terms).mean()
    return sum(losses) + lam * tsr + lam * csa  # type: ignore[return-value]


def test_one_step_equals_the_gradient_of_the_regularised_objective() -> None:
    x, y = _data()
    ref = _Net()
    ref_params = list(ref.parameters())
    losses, z = _losses(ref, x, y)
    want = torch.autograd.grad(_hand_objective(losses, z, lam=0.9, tau=0.1), ref_params)
    with torch.no_grad():
        want_after = [p - 0.1 * g for p, g in zip(ref_params, want)]

    net = _Net()
    method = get("rep_mtl")
    assert isinstance(method, RepMTL)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    bal = molearn.Balancer(method, net.trunk.parameters(), net.heads.parameters())
    losses, z = _losses(net, x, y)
    info = bal.backward(method.regularized(losses, z))
    for p, g in zip(net.parameters(), want):
        torch.testing.assert_close(p.grad, g, rtol=1e-10, atol=1e-12)
    opt.step()
    for p, q in zip(net.parameters(), want_after):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)
    assert set(info.info) == {"tsr", "csa"} and float(info.info["tsr"]) > 0
    torch.testing.assert_close(info.losses, torch.stack(_losses(ref, x, y)[0]).detach())  # the task losses
    torch.testing.assert_close(info.weights, torch.ones(2, dtype=torch.float64))


def test_step_with_a_loss_function_and_without_the_regulariser() -> None:
    """Through Balancer.step (loss_fn returns the regularised losses); without it the method is EW."""
    x, y = _data()
    net, plain = _Net(), _Net()
    method = RepMTL()

    def loss_fn(batch: tuple[Tensor, Tensor]) -> Tensor:
        return method.regularized(*_losses(net, *batch))

    molearn.Balancer(method, net.trunk.parameters(), net.heads.parameters()).step(loss_fn, lambda: (x, y))
    losses, _ = _losses(plain, x, y)
    molearn.Balancer(RepMTL(), plain.trunk.parameters(), plain.heads.parameters()).backward(losses)
    ref = _Net()
    want = torch.autograd.grad(sum(_losses(ref, x, y)[0]), list(ref.parameters()))  # type: ignore[arg-type]
    for p, g in zip(plain.parameters(), want):
        torch.testing.assert_close(p.grad, g)  # EW
    assert any(not torch.allclose(p.grad, q.grad) for p, q in zip(net.parameters(), plain.parameters()))  # type: ignore[arg-type]


def test_stateless_round_trip() -> None:
    method = RepMTL(lambda_tsr=1.1, lambda_csa=0.7, tau=0.2)
    assert method.state_dict() == {}
    method.load_state_dict({})
    with pytest.raises(ValueError, match="stateless"):
        method.load_state_dict({"lambda": torch.ones(2)})
    assert "lambda_tsr=1.1" in repr(method)


def test_bad_inputs_give_clear_errors() -> None:
    x, y = _data()
    net = _Net()
    losses, z = _losses(net, x, y)
    method = RepMTL()
    with pytest.raises(ValueError, match="do not require grad"):
        method.regularized(losses, z.detach())
    with pytest.raises(ValueError, match="does not depend on the features"):
        method.regularized([losses[0], net.heads[0].bias.sum()], z)  # type: ignore[operator]
    losses1, z1 = _losses(net, x[:1], y[:, :1])
    with pytest.raises(ValueError, match="batch of at least 2"):
        method.regularized(losses1, z1)
    with pytest.raises(ValueError, match="channel_dim"):
        RepMTL(channel_dim=4).regularized(losses, z)
    with pytest.raises(ValueError, match="channel_dim"):
        RepMTL(channel_dim=0)
    with pytest.raises(ValueError, match="scalar"):
        method.regularized([torch.stack(losses)], z)
    for kwargs in ({"lambda_tsr": -1.0}, {"lambda_csa": float("nan")}, {"tau": 0.0}):
        with pytest.raises(ValueError):
            RepMTL(**kwargs)  # type: ignore[arg-type]
