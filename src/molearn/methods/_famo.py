"""FAMO: fast adaptive multitask optimisation (loss-only, learnt task logits)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from ._adam import Adam
from ._base import Inputs, Method, Needs, Output, TaskGrad


class FAMO(Method):
    r"""Fast Adaptive Multitask Optimization (Liu, Feng, Stone, Liu, "FAMO: Fast Adaptive Multitask
    Optimization", NeurIPS 2023, `arXiv:2306.03792 <https://arxiv.org/abs/2306.03792>`_; official code
    Cranial-XIX/FAMO).

    With logits :math:`\xi` (zeros at start), :math:`z = \mathrm{softmax}(\xi)` and
    :math:`D_i = L_i - L_i^{\min} + \epsilon`, the official code back-propagates
    :math:`\sum_i z_i \log D_i / c` with :math:`c = \sum_j z_j / D_j` detached, i.e. the weights

    .. math:: w_i = \frac{z_i}{c\, D_i}, \qquad \textstyle\sum_i w_i = 1.

    After the optimiser step, :meth:`after_step` receives the losses of the same batch before and
    after it, :math:`\delta_i = \log D_i^{\text{before}} - \log D_i^{\text{after}}`, and takes one
    Adam step (lr ``w_lr``, L2 weight decay ``gamma``, betas (0.9, 0.999), eps 1e-8, as
    ``torch.optim.Adam``) that *descends* along :math:`J_{\mathrm{softmax}}(\xi)^\top \delta =
    z \odot (\delta - z^\top\delta)`: a task whose loss fell faster than the z-average loses weight
    (same sign as the official ``w.grad = autograd.grad(softmax(w), w, delta)``, then ``w_opt.step()``).
    Adam runs in float64 on the K logits (``molearn.methods._adam.Adam``, no ``torch.optim`` object), so ξ,
    the two moments and the step count are plain tensors in :meth:`state_dict`.

    Defaults: ``w_lr=0.025`` (paper, official, LibMTL). ``gamma``: the official experiment scripts
    pass 1e-3 (NYUv2, CelebA, QM9), 1e-2 (Cityscapes), 0 (toy); the class defaults in the official
    repository are 1e-2 (``famo.py``) and 1e-5 (``methods/weight_methods.py``); LibMTL and TorchJD use
    1e-3, which molearn follows. ``min_losses`` (:math:`L^{\min}`, default 0) and ``eps`` (1e-8) as
    official. Precondition (not checked, no sync): :math:`L_i > L_i^{\min} - \epsilon`.

    Use with :meth:`molearn.Balancer.step` (re-evaluates the losses after the step) or call
    ``balancer.update(new_losses)`` after ``optimizer.step()``. One backward plus one no-grad forward
    per step; ``task_grad="weighted"``. K = 1: the weight is exactly 1 (up to rounding).
    """

    needs: ClassVar[Needs] = Needs(after_step=True)
    task_grad: ClassVar[TaskGrad] = "weighted"

    def __init__(
        self,
        w_lr: float = 0.025,
        gamma: float = 1e-3,
        min_losses: Sequence[float] | Tensor | None = None,
        eps: float = 1e-8,
    ) -> None:
        if not w_lr >= 0:
            raise ValueError(f"w_lr must be >= 0, got {w_lr}")
        if not gamma >= 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        if not eps >= 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.w_lr = float(w_lr)
        self.gamma = float(gamma)
        self.eps = float(eps)
        self.min_losses: Tensor | None = None
        if min_losses is not None:
            m = torch.as_tensor(min_losses).detach().to(device="cpu", dtype=torch.float64).clone()
            if m.dim() != 1:
                raise ValueError(f"min_losses must be 1-D, got shape {tuple(m.shape)}")
            self.min_losses = m
        self.reset()

    def reset(self) -> None:
        self._adam = Adam(self.w_lr, weight_decay=self.gamma)

    @property
    def logits(self) -> Tensor | None:
        """The task logits ξ (None before the first call)."""
        return self._adam.param

    def _ensure(self, losses: Tensor) -> tuple[Tensor, Tensor]:
        k = losses.shape[0]
        if self.min_losses is not None and self.min_losses.shape[0] != k:
            raise ValueError(f"FAMO has {self.min_losses.shape[0]} min_losses but received {k} losses")
        if self._adam.param is None:
            logits = self._adam.init(torch.zeros(k, dtype=torch.float64, device=losses.device))
        elif self._adam.param.shape[0] != k:
            raise ValueError(
                f"FAMO was used with {self._adam.param.shape[0]} objectives and now received {k} losses; "
                "call reset() before changing the number of objectives"
            )
        else:
            logits = self._adam.to(losses.device)
        lo = torch.zeros(k, dtype=torch.float64, device=losses.device)
        if self.min_losses is not None:
            lo = self.min_losses.to(losses.device)
        return logits, lo

    def combine(self, inputs: Inputs) -> Output:
        losses = inputs.losses.detach()
        logits, lo = self._ensure(losses)
        z = torch.softmax(logits, dim=0)
        d = losses.to(torch.float64) - lo + self.eps
        c = (z / d).sum()
        w = z / (c * d)
        return Output(weights=w.to(losses.dtype), info={"z": z.to(losses.dtype)})

    def after_step(self, losses_before: Tensor, losses_after: Tensor) -> None:
        before = losses_before.detach()
        after = losses_after.detach()
        if before.shape != after.shape or before.dim() != 1:
            raise ValueError(
                "FAMO.after_step needs two (K,) loss vectors, "
                f"got {tuple(before.shape)} and {tuple(after.shape)}"
            )
        logits, lo = self._ensure(before)
        delta = (before.to(torch.float64) - lo + self.eps).log() - (
            after.to(device=before.device, dtype=torch.float64) - lo + self.eps
        ).log()
        z = torch.softmax(logits, dim=0)
        grad = z * (delta - (z * delta).sum())  # J_softmax(ξ)ᵀ δ (the Jacobian is symmetric)
        self._adam.step(grad)

    def state_dict(self) -> dict[str, Any]:
        return self._adam.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unknown = set(state) - {"param", "m", "v", "t"}
        if unknown:
            raise ValueError(f"FAMO got unknown state keys {sorted(unknown)}")
        self._adam.load_state_dict(state, owner="FAMO")
