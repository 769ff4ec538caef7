"""Equal weighting (linear scalarisation with unit weights)."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch

from ._base import Inputs, Method, Needs, Output, TaskGrad


class EW(Method):
    r"""Equal weighting: :math:`d = \sum_i \nabla L_i` (``reduction="sum"``, as Nash-MTL/FairGrad/LibMTL) or
    :math:`\frac1K \sum_i \nabla L_i` (``"mean"``). Needs only the losses: one backward pass.
    """

    needs: ClassVar[Needs] = Needs()
    task_grad: ClassVar[TaskGrad] = "weighted"

    def __init__(self, reduction: Literal["sum", "mean"] = "sum") -> None:
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        self.reduction = reduction

    def combine(self, inputs: Inputs) -> Output:
        k = inputs.num_objectives
        value = 1.0 if self.reduction == "sum" else 1.0 / k
        return Output(weights=torch.full((k,), value, dtype=inputs.losses.dtype, device=inputs.losses.device))
