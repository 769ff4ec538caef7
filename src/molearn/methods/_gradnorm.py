"""GradNorm: gradient normalisation for adaptive loss balancing (Chen et al., ICML 2018)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from ._adam import Adam
from ._base import (
    Inputs,
    Method,
    Needs,
    Output,
    TaskGrad,
    check_gramian,
    check_lengths,
    state_count,
    state_tensor,
)


class GradNorm(Method):
    r"""GradNorm (Chen, Badrinarayanan, Lee, Rabinovich, "GradNorm: Gradient Normalization for Adaptive
    Loss Balancing in Deep Multitask Networks", ICML 2018, arXiv:1711.02257), parametrised as in LibMTL:
    :math:`w = K\,\mathrm{softmax}(\xi)` (positive, summing to K), :math:`\xi = 0` initially.

    .. math:: G_i = w_i \|g_i\|,\quad \bar G = \tfrac1K\textstyle\sum_j G_j,\quad
              r_i = \frac{\tilde L_i}{\frac1K\sum_j \tilde L_j},\ \tilde L_i = \frac{L_i(t)}{L_i(0)},\qquad
              \mathcal L_{\mathrm{grad}} = \textstyle\sum_i \big|G_i - \bar G\, r_i^{\alpha}\big|

    with :math:`\bar G r_i^\alpha` held constant and :math:`\|g_i\|` from the Gramian's diagonal. Each
    call returns the current weights (those of the step, as the paper's Algorithm 1 and LibMTL, where
    the optimiser updates :math:`\xi` after the backward) and then takes one Adam step on :math:`\xi` with
    :math:`\nabla_\xi \mathcal L_{\mathrm{grad}}` (``lr`` default 0.025; LibMTL trains :math:`\xi` with the
    model's optimiser and learning rate, 1e-4 in its examples). :math:`\alpha = 1.5` (LibMTL ``--alpha``).

    Warm-up: the first ``warmup_steps`` calls return equal weights (1) and do not update :math:`\xi`;
    :math:`L_i(0)` is the mean of their losses (LibMTL: the first epoch, with its average loss; the paper:
    the loss at the first step — ``warmup_steps=1``, the default). The paper updates raw weights and
    renormalises them to sum K (they can turn negative); molearn follows LibMTL's softmax. The paper
    differentiates w.r.t. the last shared layer only: pass those parameters (or use
    ``mode="representation"``, as LibMTL's ``rep_grad``). ``task_grad="weighted"`` (the paper back-propagates
    :math:`\sum_i w_i L_i` everywhere; LibMTL gives the heads their own gradients). Zero losses at the
    start give ratio 1. K = 1: the weight is 1 (exact pass-through). The warm-up is counted on the host
    and the rest of the state lives in tensors updated in place: capture a CUDA graph after the warm-up.
    """

    needs: ClassVar[Needs] = Needs(gramian=True)
    _loss_sum: Tensor | None
    task_grad: ClassVar[TaskGrad] = "weighted"

    def __init__(
        self,
        alpha: float = 1.5,
        lr: float = 0.025,
        warmup_steps: int = 1,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        if warmup_steps < 1:
            raise ValueError(f"warmup_steps must be at least 1 (L(0) is needed), got {warmup_steps}")
        self.alpha = alpha
        self.lr = lr
        self.warmup_steps = warmup_steps
        self.betas = betas
        self.eps = eps
        self.reset()

    def combine(self, inputs: Inputs) -> Output:
        gram = check_gramian(inputs.gramian, "GradNorm").detach().to(torch.float64)
        losses = inputs.losses.detach().to(torch.float64)
        k = losses.shape[0]
        dev = losses.device
        if self._adam.param is None:
            self._adam.init(torch.zeros(k, dtype=torch.float64, device=dev))
            self._loss_sum = torch.zeros(k, dtype=torch.float64, device=dev)
        elif self._adam.param.shape[0] != k:
            raise ValueError(f"GradNorm was set up for {self._adam.param.shape[0]} objectives, got {k}")
        xi = self._adam.to(dev)
        assert self._loss_sum is not None
        if self._loss_sum.device != dev:
            self._loss_sum = self._loss_sum.to(dev)
        if self._seen < self.warmup_steps:
            self._seen += 1
            self._loss_sum.add_(losses)
            return Output(weights=torch.ones(k, dtype=inputs.losses.dtype, device=dev))
        soft = torch.softmax(xi, dim=0)
        w = k * soft
        norms = gram.diagonal().clamp_min(0).sqrt()
        g_w = w * norms
        init = self._loss_sum / self.warmup_steps
        ratio = torch.where(init > 0, losses / torch.where(init > 0, init, torch.ones_like(init)), 1.0)
        mean_ratio = ratio.mean()
        r = ratio / torch.where(mean_ratio > 0, mean_ratio, torch.ones_like(mean_ratio))
        target = g_w.mean() * r.pow(self.alpha)
        grad_loss = (g_w - target).abs().sum()
        # ∂L/∂w_i = sign(G_i - target_i) ‖g_i‖, chained through w = K softmax(ξ)
        a = torch.sign(g_w - target) * norms
        grad_xi = w * a - soft * (w * a).sum()
        self._adam.step(grad_xi)
        return Output(weights=w.to(inputs.losses.dtype), info={"gradnorm_loss": grad_loss, "r": r})

    def state_dict(self) -> dict[str, Any]:
        if self._loss_sum is None:
            return {}
        return {"adam": self._adam.state_dict(), "loss_sum": self._loss_sum.clone(), "seen": self._seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reset()
        if not state:
            return
        unknown = set(state) - {"adam", "loss_sum", "seen"}
        if unknown:
            raise ValueError(f"GradNorm got unknown state keys {sorted(unknown)}")
        adam = state.get("adam")
        if not isinstance(adam, dict):
            raise TypeError(f"GradNorm state 'adam': expected a dict, got {type(adam).__name__}")
        loss_sum = state_tensor("GradNorm", state, "loss_sum", ndim=1)
        self._adam.load_state_dict(adam, owner="GradNorm")
        logits = self._adam.param
        check_lengths(
            "GradNorm", logits=None if logits is None else logits.shape[0], loss_sum=loss_sum.shape[0]
        )
        self._loss_sum = loss_sum.detach().clone().to(torch.float64)
        self._seen = state_count("GradNorm", state, "seen")

    @property
    def logits(self) -> Tensor | None:
        """ξ (the weights are K·softmax(ξ)); ``None`` before the first call."""
        return self._adam.param

    def reset(self) -> None:
        self._adam = Adam(self.lr, self.betas, self.eps)
        self._loss_sum = None
        self._seen = 0
