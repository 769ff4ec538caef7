"""Rep-MTL: regularisers on the task saliencies (gradients w.r.t. the shared features) added to the loss."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from ._base import Inputs, Method, Needs, Output, TaskGrad


class RepMTL(Method):
    r"""Rep-MTL (Wang, Li & Xu, "Rep-MTL: Unleashing the Power of Representation-level Task Saliency for
    Multi-Task Learning", ICCV 2025, https://arxiv.org/abs/2507.21049; no official code is released: the
    repository Jacky1128/Rep-MTL holds a README only).

    The task saliencies are the gradients of the task losses w.r.t. the shared features
    :math:`Z \in \mathbb R^{B\times C\times H'\times W'}` (any trailing spatial shape, none for (B, C)),
    :math:`S_t = \nabla_Z L_t` (Eq. 3), and the model minimises (Eq. 10)

    .. math:: L_{\mathrm{Rep}} = \sum_t L_t + \lambda_{tsr} L_{tsr}(S) + \lambda_{csa} L_{csa}(S).

    **Task-specific saliency regulation** (Eq. 4-6): with the channel mean
    :math:`\hat S_t = \frac1C\sum_c S_{t,\cdot,c}` (B×H'×W'), at each position i (sample and pixel)
    :math:`P_{i,t} = |\hat S_{i,t}| / \sum_k |\hat S_{i,k}|` and
    :math:`L_{tsr} = \frac1{BH'W'}\sum_i -\sum_t P_{i,t}\log P_{i,t}` (a position where every saliency is 0
    counts 0).

    **Cross-task saliency alignment** (Eq. 7-9): per sample b the task affinities
    :math:`M_{t,b} = S_{t,b}S_{t,b}^\top` (C×C, :math:`S_{t,b}` as C×H'W') and the anchor
    :math:`\hat A_b = A_bA_b^\top` with :math:`A_b` the C×T matrix of the spatially averaged saliencies;
    :math:`z^t_b, z^a_b` are their L2-normalised flattenings and, with cosine similarities,

    .. math:: L_{csa} = \frac1{BT}\sum_{b,t} -\log\frac{\exp(\langle z^a_b, z^t_b\rangle/\tau)}
              {\sum_{k\ne b}\exp(\langle z^a_b, z^a_k\rangle/\tau)}

    (positives: the T task affinities of the same sample, averaged; negatives: the other samples' anchors;
    the denominator excludes the positive, as printed in Eq. 9). It needs B ≥ 2.

    **Why the regularisers enter through the losses.** Both terms are functions of the saliencies, so their
    gradient w.r.t. the parameters runs through second derivatives of the heads ("gradients from all these
    components flow through the multi-task model"); the engine's ``mode="representation"`` computes
    :math:`S_t` without a graph, which gives the saliencies but not that gradient. :meth:`regularized`
    computes :math:`S_t` with ``create_graph=True`` (K backward passes through the heads only) and returns
    the K losses with :math:`R/K` added to each one's gradient,
    :math:`R = \lambda_{tsr}L_{tsr} + \lambda_{csa}L_{csa}` (their values stay the task losses, for logging
    and for the finite check, which still sees a NaN in R); the method weighs them by 1 (the paper's
    "Rep-MTL (EW)"), so the Balancer's one backward pass of their sum is exactly
    :math:`\nabla L_{\mathrm{Rep}}`, for the shared parameters and the heads::

        method = RepMTL()
        bal = Balancer(method, shared=model.encoder, tasks=model.heads.parameters())
        z = model.encoder(x)
        losses = [loss_fn(head(z), y) for head, loss_fn, y in ...]
        bal.backward(method.regularized(losses, z))     # or loss_fn of Balancer.step returns it

    Without :meth:`regularized` the method is ``EW``. ``info`` of the step holds the last ``tsr`` and ``csa``.
    The paper also applies the log-loss transform of DB-MTL/IMTL to the task losses (Appendix A): pass
    ``torch.log(losses)`` to :meth:`regularized` for that (the saliencies are then those of the log-losses).

    Defaults: :math:`\lambda_{tsr} = \lambda_{csa} = 0.9`, the value the paper's sensitivity study holds one
    of them at (Appendix D.1; its per-data-set optima from a grid over {0.7, 0.9, ..., 1.5} are not
    published); :math:`\tau = 0.1` is not stated in the paper (the SimCLR-v2 value of the contrastive works
    it cites). ``channel_dim``: the channel axis of the features (1 for (B, C, ...), -1 for channels-last);
    axis 0 is the batch. The penalties are computed from the saliencies divided by their (detached) largest
    magnitude per sample, which leaves both values and their gradients unchanged (each term is invariant to
    a per-sample scale) and keeps the C×C products in range; :math:`L_{tsr}` is evaluated in float64.
    """

    needs: ClassVar[Needs] = Needs()
    task_grad: ClassVar[TaskGrad] = "weighted"
    loop_only: ClassVar[str] = (
        "its regularisers need the shared features: call RepMTL.regularized(losses, features) in your "
        "own loop (without it the method is EW)"
    )

    def __init__(
        self, lambda_tsr: float = 0.9, lambda_csa: float = 0.9, tau: float = 0.1, channel_dim: int = 1
    ) -> None:
        if not lambda_tsr >= 0:
            raise ValueError(f"lambda_tsr must be non-negative, got {lambda_tsr}")
        if not lambda_csa >= 0:
            raise ValueError(f"lambda_csa must be non-negative, got {lambda_csa}")
        if not tau > 0:
            raise ValueError(f"tau must be positive, got {tau}")
        if not isinstance(channel_dim, int) or isinstance(channel_dim, bool) or channel_dim == 0:
            raise ValueError(f"channel_dim must be a non-zero int (axis 0 is the batch), got {channel_dim!r}")
        self.lambda_tsr = float(lambda_tsr)
        self.lambda_csa = float(lambda_csa)
        self.tau = float(tau)
        self.channel_dim = channel_dim
        self._last: dict[str, Tensor] = {}

    # --- the regularisers ------------------------------------------------------------------------

    def saliencies(self, losses: Tensor | Sequence[Tensor], features: Tensor) -> Tensor:
        """:math:`S_t = \\nabla_Z L_t`, stacked to (K, *features.shape), with their graph (K backward passes
        from the losses to the features, ``create_graph=True``)."""
        items = _scalars(losses)
        if not isinstance(features, Tensor):
            raise TypeError(f"features must be a tensor, got {type(features).__name__}")
        if not features.requires_grad:
            raise ValueError(
                "the features do not require grad: pass the shared representation the heads were computed "
                "from (the encoder's output, not a detached copy)"
            )
        self._channel_axis(features.dim())
        rows = []
        for i, loss in enumerate(items):
            (g,) = torch.autograd.grad(
                loss, features, create_graph=True, retain_graph=True, allow_unused=True
            )
            if g is None:
                raise ValueError(f"objective {i} does not depend on the features: its saliency is undefined")
            rows.append(g)
        return torch.stack(rows)

    def penalties(self, saliency: Tensor) -> tuple[Tensor, Tensor]:
        """``(L_tsr, L_csa)`` of saliencies shaped (K, *features.shape) (0 for a term whose λ is 0)."""
        if saliency.dim() < 3:
            raise ValueError(f"saliency must be (K, B, C, ...), got shape {tuple(saliency.shape)}")
        k, b = saliency.shape[0], saliency.shape[1]
        axis = 1 + self._channel_axis(saliency.dim() - 1)
        s = saliency.movedim(axis, 2)
        s = s.reshape(k, b, s.shape[2], -1)  # (K, B, C, N): N positions per sample
        scale = s.detach().abs().amax(dim=(0, 2, 3), keepdim=True)
        s = s / torch.where(scale > 0, scale, torch.ones_like(scale))
        zero = torch.zeros((), dtype=saliency.dtype, device=saliency.device)
        tsr = _entropy_term(s).to(saliency.dtype) if self.lambda_tsr > 0 else zero
        if self.lambda_csa > 0:
            if b < 2:
                raise ValueError(
                    f"the cross-task saliency alignment contrasts samples: it needs a batch of at least 2, "
                    f"got {b} (or set lambda_csa=0)"
                )
            csa = _alignment_term(s, self.tau)
        else:
            csa = zero
        return tsr, csa

    def regularizer(self, losses: Tensor | Sequence[Tensor], features: Tensor) -> Tensor:
        """:math:`R = \\lambda_{tsr}L_{tsr} + \\lambda_{csa}L_{csa}` (a scalar with its graph)."""
        tsr, csa = self.penalties(self.saliencies(losses, features))
        self._last = {"tsr": tsr.detach(), "csa": csa.detach()}
        return self.lambda_tsr * tsr + self.lambda_csa * csa

    def regularized(self, losses: Tensor | Sequence[Tensor], features: Tensor) -> Tensor:
        """The (K,) losses for the Balancer: the values of :math:`L_t`, the gradients of :math:`L_t + R/K`
        (:math:`L_t + (R - \\mathrm{sg}(R))/K`); their sum's gradient is :math:`\\nabla L_{\\mathrm{Rep}}`."""
        items = _scalars(losses)
        reg = self.regularizer(items, features)
        vec = torch.stack(items)
        return vec + (reg - reg.detach()).to(vec.dtype) / len(items)

    # --- Method API --------------------------------------------------------------------------------

    def combine(self, inputs: Inputs) -> Output:
        k = inputs.num_objectives
        w = torch.ones(k, dtype=inputs.losses.dtype, device=inputs.losses.device)
        info, self._last = self._last, {}
        return Output(weights=w, info=info)

    def reset(self) -> None:
        self._last = {}

    def _channel_axis(self, ndim: int) -> int:
        """The channel axis among the features' ``ndim`` axes (validated; never the batch axis 0)."""
        if ndim < 2:
            raise ValueError(f"the features must be (B, C, ...) with a batch axis, got {ndim} dimension(s)")
        axis = self.channel_dim % ndim if -ndim <= self.channel_dim < ndim else -1
        if axis <= 0:
            raise ValueError(
                f"channel_dim={self.channel_dim} is not a channel axis of {ndim}-dimensional features "
                "(axis 0 is the batch)"
            )
        return axis


def _scalars(losses: Tensor | Sequence[Tensor]) -> list[Tensor]:
    items = list(losses.unbind()) if isinstance(losses, Tensor) and losses.dim() == 1 else None
    if items is None:
        if isinstance(losses, Tensor):
            raise ValueError(
                f"losses must be a 1-D tensor or a sequence of scalars, got {tuple(losses.shape)}"
            )
        items = list(losses)
    if not items:
        raise ValueError("no losses were given")
    for i, loss in enumerate(items):
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise ValueError(f"objective {i}: expected a scalar tensor loss")
        if not loss.requires_grad:
            raise ValueError(f"objective {i}: the loss does not require grad")
    return [loss.reshape(()) for loss in items]


def _entropy_term(s: Tensor) -> Tensor:
    """Eq. 4-6 on (K, B, C, N) saliencies, in float64: the mean over positions of the task entropy."""
    a = s.mean(dim=2).to(torch.float64).abs()  # (K, B, N)
    total = a.sum(0)
    p = a / torch.where(total > 0, total, torch.ones_like(total))
    log_p = torch.log(torch.where(p > 0, p, torch.ones_like(p)))  # 0 log 0 = 0, with a zero gradient
    return -(p * log_p).sum(0).mean()


def _alignment_term(s: Tensor, tau: float) -> Tensor:
    """Eq. 7-9 on (K, B, C, N) saliencies: InfoNCE of the anchors against the task affinities."""
    k, b = s.shape[0], s.shape[1]
    affinity = torch.einsum("kbcn,kbdn->kbcd", s, s).flatten(2)  # (K, B, C*C)
    pooled = s.mean(dim=3)  # (K, B, C): A_b's columns
    anchor = torch.einsum("kbc,kbd->bcd", pooled, pooled).flatten(1)  # (B, C*C)
    z_t = F.normalize(affinity, dim=-1)
    z_a = F.normalize(anchor, dim=-1)
    positive = (z_t * z_a.unsqueeze(0)).sum(-1) / tau  # (K, B)
    negative = (z_a @ z_a.T) / tau
    eye = torch.eye(b, dtype=torch.bool, device=s.device)
    log_denominator = torch.logsumexp(negative.masked_fill(eye, float("-inf")), dim=1)  # (B,)
    return (log_denominator.unsqueeze(0) - positive).sum() / (k * b)
