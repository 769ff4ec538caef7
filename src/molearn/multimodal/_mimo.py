r"""MIMO as molearn reconstructs it (Fernando, Ram, Zhou, Dan, Samulowitz, Baracaldo, Chen, "Mitigating
Modality Imbalance in Multi-modal Learning via Multi-objective Optimization", arXiv 2511.06686, 2025).

**Reconstruction.** The official code (heshandevaka/MIMO) was not public when this was written and only the
paper's abstract and third-party summaries were available. What they state: multi-modal learning is
recast as a *lexicographic* multi-objective problem that prioritises the worst uni-modal objective, in a
late-fusion model; MIMO is a gradient method on a *smoothly penalised* objective, the multi-modal loss
plus a penalty on the uni-modal losses through a smooth approximation of their maximum; its per-step
subroutine is much cheaper (up to ~20×) than balanced-MML and MOO solvers. molearn implements

.. math:: F_{\mu,\tau}(\theta) = L_0(\theta) + \mu\,\tau \log \sum_{m=1}^{M} e^{L_m(\theta)/\tau}

(``L_0`` the fused loss, ``L_m`` the uni-modal losses; ``τ log Σ exp(·/τ)`` is the log-sum-exp smooth
max, within ``τ log M`` of ``max_m L_m``) and plain gradient steps on it:

.. math:: \nabla F = \nabla L_0 + \mu \sum_m \pi_m \nabla L_m, \qquad \pi = \mathrm{softmax}(L_{1:M}/\tau)

so the per-step subroutine is a softmax over M numbers (no Gramian, no QP, one backward pass), and the
worst (largest) uni-modal loss always gets the largest weight. The exact penalty form, whether μ grows
during training, and the published μ, τ are **not verified**. Defaults here: ``mu=1`` (the penalty on
the same scale as the fused loss, as in joint training ``L_0 + Σ L_m``) and ``tau=0.1`` (cross-entropy
gaps of ~0.5 between modalities then give the worst one > 99 % of the penalty weight, i.e. close to the
lexicographic max the paper describes, while staying smooth).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import Tensor

from ..methods import Inputs, Method, Needs, Output

__all__ = ["MIMO", "mimo_objective", "mimo_weights", "smoothmax"]


def _check(losses: Tensor, mu: float, tau: float) -> None:
    if not isinstance(losses, Tensor) or losses.dim() != 1:
        raise ValueError("losses must be a 1-D tensor [L_fused, L_1, ..., L_M]")
    if losses.shape[0] < 2:
        raise ValueError(f"MIMO needs the fused loss and at least one uni-modal loss, got {losses.shape[0]}")
    if not tau > 0:
        raise ValueError(f"tau must be positive, got {tau}")
    if not mu >= 0:
        raise ValueError(f"mu must be non-negative, got {mu}")


def smoothmax(values: Tensor, tau: float) -> Tensor:
    """``τ log Σ exp(v/τ)``: the log-sum-exp smooth maximum (``max v ≤ smoothmax ≤ max v + τ log M``)."""
    if not tau > 0:
        raise ValueError(f"tau must be positive, got {tau}")
    return tau * torch.logsumexp(values / tau, dim=-1)


def mimo_objective(losses: Tensor, mu: float = 1.0, tau: float = 0.1) -> Tensor:
    """``L_0 + μ smoothmax_τ(L_1, ..., L_M)`` from the objective vector ``[L_0, L_1, ..., L_M]``."""
    _check(losses, mu, tau)
    return losses[0] + mu * smoothmax(losses[1:], tau)


def mimo_weights(losses: Tensor, mu: float = 1.0, tau: float = 0.1) -> Tensor:
    """The gradient of :func:`mimo_objective` with respect to the losses: ``[1, μ softmax(L_{1:M}/τ)]``.

    This is MIMO's whole per-step subroutine; ``Σ_i w_i ∇L_i`` is the exact gradient of the objective.
    """
    _check(losses, mu, tau)
    x = losses.detach()
    pi = torch.softmax(x[1:] / tau, dim=0)
    return torch.cat([torch.ones_like(x[:1]), mu * pi])


class _MIMO(Method):
    r"""MIMO (reconstructed, see the module docstring): weights ``[1, μ softmax(L_{1:M}/τ)]`` on the
    objectives ``[L_fused, L_1, ..., L_M]`` (the order :func:`molearn.multimodal.objectives` returns).

    A loss-only method (1 forward, 1 backward, no per-objective gradients); every parameter, heads
    included, receives the exact gradient of ``L_0 + μ smoothmax_τ(L_1..L_M)`` (``task_grad="weighted"``).
    ``info["pi"]`` holds the softmax weights of the uni-modal losses.

    Not in :func:`molearn.methods.registry` (the class name starts with ``_``; the public name is
    ``MIMO``): its objective order ``[fused, uni-modal...]`` is specific to multi-modal models, so the
    generic method sweeps (``molearn compare``, ``experiments/toy``) must not pick it up, and the registry
    must not depend on whether this package was imported.
    """

    needs: ClassVar[Needs] = Needs()
    task_grad: ClassVar[Literal["own", "weighted"]] = "weighted"

    def __init__(self, mu: float = 1.0, tau: float = 0.1) -> None:
        if not tau > 0:
            raise ValueError(f"tau must be positive, got {tau}")
        if not mu >= 0:
            raise ValueError(f"mu must be non-negative, got {mu}")
        self.mu = float(mu)
        self.tau = float(tau)

    def combine(self, inputs: Inputs) -> Output:
        losses = inputs.losses
        if losses.shape[0] < 2:
            raise ValueError(f"MIMO needs [L_fused, L_1, ..., L_M] with M >= 1, got {losses.shape[0]} losses")
        pi = torch.softmax(losses[1:] / self.tau, dim=0)  # the whole subroutine: one softmax over M losses
        w = torch.cat([torch.ones_like(losses[:1]), self.mu * pi])
        return Output(weights=w, info={"pi": pi})

    def __repr__(self) -> str:
        return f"MIMO(mu={self.mu!r}, tau={self.tau!r})"


MIMO = _MIMO
