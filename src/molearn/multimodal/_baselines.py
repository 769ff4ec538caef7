r"""Modality-balancing baselines as training strategies on a :class:`~molearn.multimodal.LateFusion` model.

Every strategy has ``step(model, inputs, labels, optimizer) -> losses`` (one optimiser step; returns the
detached objective vector ``[L_fused, L_1..L_M]``) and ``end_epoch(epoch, train_losses, val_losses)``
(called once per epoch by the training loop; the epoch-level schedules of OGM-GE and G-Blending use it).

* :class:`FusedOnly`: vanilla multi-modal training on the fused loss only (OGM-GE's ``Normal``); the
  uni-modal heads are linear probes on detached features, so they measure encoder quality only.
* :class:`Unimodal`: every encoder trained alone with its own head (``Σ_m L_m`` over disjoint parameters
  is M independent uni-modal trainings); the fusion head is a probe on detached features.
* :class:`BalancerStrategy`: any molearn method on ``[L_fused, L_1..L_M]`` through
  :class:`molearn.Balancer` (encoders shared, heads task-specific): joint training (``EW``: the sum of
  the losses), MGDA, CAGrad, FairGrad, Nash-MTL (:func:`molearn.methods.get`), and MIMO.
* :class:`OGMGE`: on-the-fly gradient modulation with generalisation enhancement.
* :class:`GBlend`: gradient blending with weights re-estimated on a held-out split.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

from .._balancer import Balancer
from ..methods import Method
from ._model import LateFusion, check_batch, objectives

__all__ = [
    "OGMGE",
    "BalancerStrategy",
    "FusedOnly",
    "GBlend",
    "Strategy",
    "Unimodal",
    "gblend_weights",
    "ogm_coefficients",
    "ogm_scores",
]


class Strategy:
    """Base class: one training step of a late-fusion model, plus an optional per-epoch hook.

    ``needs_epoch_losses``: the hook wants the train/held-out objective vectors (the loop computes them
    only then)."""

    needs_epoch_losses: bool = False

    def step(
        self,
        model: LateFusion,
        inputs: Mapping[str, Tensor],
        labels: Tensor,
        optimizer: torch.optim.Optimizer,
    ) -> Tensor:
        raise NotImplementedError

    def end_epoch(self, epoch: int, train_losses: Tensor | None, val_losses: Tensor | None) -> None:
        """Called after epoch ``epoch`` (0-based) with the objective vectors on a training subset and on
        the held-out split (``None`` when the loop does not compute them)."""


class FusedOnly(Strategy):
    """Fused loss only (vanilla late fusion); uni-modal heads are probes on detached features."""

    def step(self, model, inputs, labels, optimizer):  # type: ignore[no-untyped-def]
        optimizer.zero_grad(set_to_none=True)
        losses, _ = objectives(model, inputs, labels, probe=True)
        losses.sum().backward()  # encoders see only L_fused: the uni-modal losses reach the heads alone
        optimizer.step()
        return losses.detach()


class Unimodal(Strategy):
    """Each encoder with its own head, trained alone (no fused loss reaches an encoder); the fusion head
    is a probe on the detached features."""

    def step(self, model, inputs, labels, optimizer):  # type: ignore[no-untyped-def]
        optimizer.zero_grad(set_to_none=True)
        check_batch(model.modalities, inputs, labels)
        out = model(inputs, probe=False)
        fused = model.fusion(torch.cat([out.features[m].detach() for m in model.modalities], dim=1))
        losses = torch.stack(
            [F.cross_entropy(fused, labels)]
            + [F.cross_entropy(out.unimodal[m], labels) for m in model.modalities]
        )
        losses.sum().backward()
        optimizer.step()
        return losses.detach()


class BalancerStrategy(Strategy):
    """A molearn :class:`~molearn.methods.Method` on ``[L_fused, L_1..L_M]`` via :class:`molearn.Balancer`
    (shared = encoders, tasks = heads). The Balancer is built on the first step."""

    def __init__(self, method: Method, **balancer_kwargs: object) -> None:
        if not isinstance(method, Method):
            raise TypeError(f"method must be a molearn Method, got {type(method).__name__}")
        self.method = method
        self._kwargs = balancer_kwargs
        self._balancer: Balancer | None = None
        self._model_id: int | None = None

    def step(self, model, inputs, labels, optimizer):  # type: ignore[no-untyped-def]
        if self._balancer is None or self._model_id != id(model):
            self._balancer = Balancer(
                self.method,
                model.shared_parameters(),
                model.task_parameters(),
                **self._kwargs,  # type: ignore[arg-type]
            )
            self._model_id = id(model)
        optimizer.zero_grad(set_to_none=True)
        losses, _ = objectives(model, inputs, labels)
        self._balancer.backward(losses)
        optimizer.step()
        return losses.detach()


# ---------------------------------------------------------------------------------------------- OGM-GE
def ogm_scores(logits: Mapping[str, Tensor] | Sequence[Tensor], labels: Tensor) -> Tensor:
    r"""OGM-GE's per-modality confidence ``s_m = Σ_i softmax(z^m_i)[y_i]`` over the batch, shape (M,)."""
    items = list(logits.values()) if isinstance(logits, Mapping) else list(logits)
    if not items:
        raise ValueError("no modality logits given")
    for z in items:
        if z.dim() != 2 or z.shape[0] != labels.shape[0]:
            raise ValueError(
                f"logits of shape {tuple(z.shape)} do not match labels of shape {tuple(labels.shape)}"
            )
    return torch.stack([torch.softmax(z.detach(), dim=1).gather(1, labels.view(-1, 1)).sum() for z in items])


def ogm_coefficients(scores: Tensor, alpha: float) -> Tensor:
    r"""OGM's modulation coefficients (Peng et al., CVPR 2022, Eq. 10):
    ``k_u = 1 − tanh(α ρ_u)`` for the modality whose discrepancy ratio ``ρ_u`` exceeds 1, else 1.

    Two modalities (the paper): ``ρ_0 = s_0 / s_1``, ``ρ_1 = 1/ρ_0``; as in the official code, when
    ``ρ_0 > 1`` modality 0 is slowed, otherwise (ties included) modality 1. More modalities (an
    extension, not in the paper): ``ρ_m = s_m / mean_{j≠m} s_j`` and every ``ρ_m > 1`` is slowed.
    """
    if scores.dim() != 1 or scores.shape[0] < 2:
        raise ValueError(f"scores must be a 1-D tensor of >= 2 modalities, got shape {tuple(scores.shape)}")
    if alpha < 0:
        raise ValueError(f"alpha must be non-negative, got {alpha}")
    if not bool((scores > 0).all()):
        raise ValueError(f"confidence scores must be positive, got {scores.tolist()}")
    s = scores.to(torch.float64)
    k = torch.ones_like(s)
    if s.shape[0] == 2:
        rho = s[0] / s[1]
        if rho > 1:
            k[0] = 1 - torch.tanh(alpha * rho)
        else:
            k[1] = 1 - torch.tanh(alpha / rho)
        return k
    m = s.shape[0]
    others = (s.sum() - s) / (m - 1)
    rho = s / others
    return torch.where(rho > 1, 1 - torch.tanh(alpha * rho), k)


class OGMGE(Strategy):
    r"""OGM-GE (Peng, Wei, Deng, Wang, Hu, "Balanced Multimodal Learning via On-the-fly Gradient
    Modulation", CVPR 2022; official code GeWu-Lab/OGM-GE_CVPR2022, ``main.py``).

    Each step: backward of the fused loss; per-modality scores ``s_m`` from the fusion head's slices
    ``W[:, slice_m] f_m + b/M`` (:func:`ogm_scores`); coefficients :func:`ogm_coefficients`; the gradients of
    the encoder of modality m are multiplied by ``k_m`` and (GE, ``ge=True``) get Gaussian noise
    ``N(0, (std(grad) + 1e-8)²)`` added (noise for every modality, after the modulation, as in the code).

    Defaults from the official README: ``alpha=0.1`` (the "default modulation setting"; 0.8 is their
    recommendation for CREMA-D), modulation from epoch ``start=0`` to ``end=50`` of 100, i.e. the first
    half of training (``end=None`` here means half of ``epochs``), SGD with momentum (Adam would undo a
    per-encoder rescaling). Deviations: the official code modulates only 4-D (convolution) kernels; here every
    encoder parameter with ≥ 2 dimensions (conv and linear weights) so that MLP encoders are covered. The
    official loop's window test (``starts >= epoch >= ends``) never fires, so the released code modulates
    at every epoch; molearn follows the README/paper window. Uni-modal heads are probes (detached).
    """

    def __init__(
        self,
        alpha: float = 0.1,
        *,
        start: int = 0,
        end: int | None = None,
        epochs: int | None = None,
        ge: bool = True,
    ) -> None:
        if alpha < 0:
            raise ValueError(f"alpha must be non-negative, got {alpha}")
        self.alpha = float(alpha)
        self.start = int(start)
        self.end = end if end is not None else (None if epochs is None else epochs // 2)
        self.ge = ge
        self.epoch = 0
        self.last_coefficients: Tensor | None = None

    def active(self) -> bool:
        return self.epoch >= self.start and (self.end is None or self.epoch <= self.end)

    def end_epoch(self, epoch: int, train_losses: Tensor | None, val_losses: Tensor | None) -> None:
        self.epoch = epoch + 1

    def step(self, model, inputs, labels, optimizer):  # type: ignore[no-untyped-def]
        optimizer.zero_grad(set_to_none=True)
        losses, out = objectives(model, inputs, labels, probe=True)
        losses.sum().backward()
        if self.active():
            scores = ogm_scores(model.fusion_slice_logits(out.features), labels)
            k = ogm_coefficients(scores, self.alpha)
            self.last_coefficients = k
            for i, m in enumerate(model.modalities):
                coeff = k[i].detach()  # stays a tensor: no host synchronisation in the step
                for p in model.encoder_parameters(m):
                    if p.grad is None or p.dim() < 2:
                        continue
                    p.grad.mul_(coeff.to(p.grad.dtype))
                    if self.ge:
                        std = p.grad.std() if p.grad.numel() > 1 else p.grad.new_zeros(())
                        p.grad.add_(torch.randn_like(p.grad) * (std + 1e-8))
        optimizer.step()
        return losses.detach()


# ------------------------------------------------------------------------------------------ G-Blending
def gblend_weights(
    train_before: Tensor, val_before: Tensor, train_after: Tensor, val_after: Tensor, eps: float = 1e-12
) -> Tensor:
    r"""Gradient-Blending weights (Wang, Tran, Feiszli, "What Makes Training Multi-modal Classification
    Networks Hard?", CVPR 2020, Eq. 6–7):

    .. math:: w_k = \frac{1}{Z} \frac{\Delta G_k}{\Delta O_k^2}, \quad
        \Delta G_k = L^V_k(n) - L^V_k(n+\Delta), \quad \Delta O_k = O_k(n+\Delta) - O_k(n),
        \quad O_k = L^V_k - L^T_k

    (``L^T``/``L^V``: train/held-out losses of head k at the start and end of the window; Z makes the
    weights sum to 1). Implementation choices (not in the paper): a head whose held-out loss did not
    improve (``ΔG_k ≤ 0``) gets weight 0; ``ΔO_k²`` is floored at ``eps``; if no head improved, uniform.
    """
    vals = [train_before, val_before, train_after, val_after]
    shapes = {tuple(v.shape) for v in vals}
    if len(shapes) != 1 or vals[0].dim() != 1:
        raise ValueError(f"the four loss vectors must be 1-D of the same length, got shapes {sorted(shapes)}")
    for v in vals:
        if not bool(torch.isfinite(v).all()):
            raise ValueError(f"non-finite loss in G-Blending's estimate: {v.tolist()}")
    t0, v0, t1, v1 = (v.to(torch.float64) for v in vals)
    dg = v0 - v1
    do = (v1 - t1) - (v0 - t0)
    raw = torch.where(dg > 0, dg / (do * do).clamp_min(eps), torch.zeros_like(dg))
    total = raw.sum()
    if not total > 0:
        return torch.full_like(raw, 1.0 / raw.shape[0])
    return raw / total


class GBlend(Strategy):
    r"""Online Gradient-Blending: minimise ``Σ_k w_k L_k`` over ``[L_fused, L_1..L_M]`` with weights from
    :func:`gblend_weights`.

    Schedule (the paper's online G-Blend with super-epochs, sized for short runs): uniform weights
    ``1/(M+1)`` during the first ``interval`` epochs; afterwards, every ``interval`` epochs the weights are
    re-estimated from the change of the train/held-out losses over the last ``interval`` epochs (the
    training loop supplies both vectors through :meth:`end_epoch`; the held-out split is carved from the
    training data, never the test set).
    """

    needs_epoch_losses = True

    def __init__(self, interval: int = 1, eps: float = 1e-12) -> None:
        if interval < 1:
            raise ValueError(f"interval must be >= 1, got {interval}")
        self.interval = int(interval)
        self.eps = eps
        self.weights: Tensor | None = None
        self._anchor: tuple[Tensor, Tensor] | None = None
        self.history: list[list[float]] = []

    def end_epoch(self, epoch: int, train_losses: Tensor | None, val_losses: Tensor | None) -> None:
        if train_losses is None or val_losses is None:
            raise ValueError("G-Blending needs the train and held-out losses at the end of each epoch")
        if (epoch + 1) % self.interval:
            return
        t, v = train_losses.detach().cpu(), val_losses.detach().cpu()
        if self._anchor is not None:
            self.weights = gblend_weights(self._anchor[0], self._anchor[1], t, v, self.eps).to(torch.float32)
            self.history.append(self.weights.tolist())
        self._anchor = (t, v)

    def step(self, model, inputs, labels, optimizer):  # type: ignore[no-untyped-def]
        optimizer.zero_grad(set_to_none=True)
        losses, _ = objectives(model, inputs, labels)
        k = losses.shape[0]
        w = self.weights if self.weights is not None else torch.full((k,), 1.0 / k)
        if w.shape[0] != k:
            raise ValueError(f"G-Blending has {w.shape[0]} weights for {k} objectives")
        (w.to(losses) * losses).sum().backward()
        optimizer.step()
        return losses.detach()
