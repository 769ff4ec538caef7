"""Uncertainty weighting: learned homoscedastic log-variances (Kendall et al., CVPR 2018)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from ._adam import Adam
from ._base import Inputs, Method, Needs, Output, TaskGrad


class _LearnedLogScale(Method):
    """Shared machinery of UW and IMTL-L: one learned scalar per objective, trained by Adam inside
    :meth:`combine` on its own gradient (the step the official code's optimiser takes on it)."""

    needs: ClassVar[Needs] = Needs()
    task_grad: ClassVar[TaskGrad] = "weighted"

    def __init__(
        self,
        lr: float = 0.025,
        init: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.lr = lr
        self.init = init
        self.betas = betas
        self.eps = eps
        self.reset()

    # the two methods differ only by these two formulas
    def _weights(self, s: Tensor) -> Tensor:
        raise NotImplementedError

    def _grad(self, s: Tensor, losses: Tensor) -> Tensor:
        raise NotImplementedError

    def _ensure(self, losses: Tensor) -> Tensor:
        k = losses.shape[0]
        if self._adam.param is None:
            return self._adam.init(
                torch.full((k,), float(self.init), dtype=torch.float64, device=losses.device)
            )
        if self._adam.param.shape[0] != k:
            raise ValueError(
                f"{type(self).__name__} was set up for {self._adam.param.shape[0]} objectives, got {k}"
            )
        return self._adam.to(losses.device)

    def combine(self, inputs: Inputs) -> Output:
        losses = inputs.losses.detach().to(torch.float64)
        s = self._ensure(losses)
        w = self._weights(s)  # weights of this step: the current parameters, before their update
        self._adam.step(self._grad(s, losses))
        return Output(weights=w.to(inputs.losses.dtype), info={"log_scale": s.clone()})

    @property
    def log_scale(self) -> Tensor | None:
        """The learned parameters (``None`` before the first step)."""
        return self._adam.param

    def state_dict(self) -> dict[str, Any]:
        return self._adam.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._adam.load_state_dict(state, owner=type(self).__name__)

    def reset(self) -> None:
        self._adam = Adam(self.lr, self.betas, self.eps)


class UW(_LearnedLogScale):
    r"""Uncertainty weighting (Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty to Weigh
    Losses for Scene Geometry and Semantics", CVPR 2018, arXiv:1705.07115).

    .. math:: \mathcal L = \sum_i \tfrac12\big(e^{-s_i} L_i + s_i\big), \qquad
              w_i = \tfrac12 e^{-s_i}, \qquad \partial_{s_i}\mathcal L = \tfrac12\big(1 - e^{-s_i} L_i\big)

    with :math:`s_i = \log\sigma_i^2`. Loss-only (one backward of :math:`\sum_i w_i L_i`,
    ``task_grad="weighted"``). Each call returns the weights of the current :math:`s` and then takes one
    Adam step on :math:`s` with the gradient above (the official pipelines step :math:`s` with the model's
    optimiser after the same backward), so the model update and the :math:`s` update use the same losses.

    Defaults: ``init=0`` (Nash-MTL/FairGrad code and TorchJD; LibMTL initialises :math:`s_i=-0.5`), Adam
    with ``lr=0.025`` (the Nash-MTL/FairGrad code's ``method_params_lr``; LibMTL trains :math:`s` with the
    model's optimiser and learning rate). The fixed point :math:`s_i=\log L_i` gives :math:`w_iL_i=\tfrac12`:
    scaling a loss by :math:`c` eventually divides its weight by :math:`c`. The Nash-MTL code *reports*
    :math:`e^{-s_i}` as "weights" although its loss uses :math:`\tfrac12 e^{-s_i}`; LibMTL reports
    :math:`1/(2e^{s_i})`, as molearn. K = 1: a positive multiple (:math:`\tfrac12 e^{-s}`) of the gradient.
    """

    def _weights(self, s: Tensor) -> Tensor:
        return 0.5 * torch.exp(-s)

    def _grad(self, s: Tensor, losses: Tensor) -> Tensor:
        return 0.5 * (1.0 - torch.exp(-s) * losses)
