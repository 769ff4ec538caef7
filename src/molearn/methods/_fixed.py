"""Fixed (user-given) loss weights: linear scalarisation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from ..solvers.consts import on_device
from ._base import Inputs, Method, Needs, Output, TaskGrad


class Fixed(Method):
    r"""Linear scalarisation with user-given weights: :math:`d = \sum_i w_i \nabla L_i`.

    ``weights`` is a sequence of K numbers or a 1-D tensor; the method then accepts exactly K losses
    and raises a :class:`ValueError` naming both sizes otherwise. Weights may have any sign (a
    negative weight maximises its loss); they must be finite. One backward pass of
    :math:`\sum_i w_i L_i`, which also reaches the task heads (``task_grad="weighted"``, as the
    ``LinearScalarization`` of the Nash-MTL/FAMO code). With K = 1 the update is ``w_1`` times the
    single gradient.
    """

    needs: ClassVar[Needs] = Needs()
    task_grad: ClassVar[TaskGrad] = "weighted"

    def __init__(self, weights: Sequence[float] | Tensor) -> None:
        w = torch.as_tensor(weights).detach().to(device="cpu", dtype=torch.float64).clone()
        if w.dim() != 1 or w.numel() == 0:
            raise ValueError(f"weights must be a non-empty 1-D sequence, got shape {tuple(w.shape)}")
        if not bool(torch.isfinite(w).all()):  # construction time: a host check is fine here
            raise ValueError(f"weights must be finite, got {w.tolist()}")
        self.weights = w
        self._values = tuple(float(x) for x in w.tolist())  # sync: construction, a CPU tensor
        self._on: Tensor | None = None  # the weights on the device and dtype of the last call

    def combine(self, inputs: Inputs) -> Output:
        k = inputs.num_objectives
        if k != self.weights.numel():
            raise ValueError(f"Fixed was given {self.weights.numel()} weights but received {k} losses")
        losses = inputs.losses
        if self._on is None or self._on.device != losses.device or self._on.dtype != losses.dtype:
            self._on = on_device(self._values, losses.device, losses.dtype)
        return Output(weights=self._on.clone())
