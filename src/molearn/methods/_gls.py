"""GLS: geometric loss strategy (geometric mean of the losses)."""

from __future__ import annotations

from typing import ClassVar

import torch

from ._base import Inputs, Method, Needs, Output, TaskGrad


class GLS(Method):
    r"""Geometric Loss Strategy (Chennupati, Sistu, Yogamani, Rawashdeh, "MultiNet++: Multi-Stream
    Feature Aggregation and Geometric Loss Strategy for Multi-Task Learning", CVPR Workshops 2019,
    `arXiv:1904.08492 <https://arxiv.org/abs/1904.08492>`_).

    .. math:: L = \Big(\prod_i L_i\Big)^{1/K}, \qquad
              w_i = \frac{\partial L}{\partial L_i} = \frac{(\prod_j L_j)^{1/K}}{K L_i}
                  = \frac1K \exp\Big(\frac1K \sum_j \log L_j - \log L_i\Big)

    computed in log space (no overflow/underflow of the product for many or extreme losses). LibMTL
    and TorchJD (``GeometricMean``) back-propagate the geometric mean itself, which gives the same
    gradient. The losses must be positive: with ``validate=True`` a non-positive loss raises a
    :class:`ValueError` (this input check reads the losses on the host: one synchronisation per step
    on a GPU); with ``validate=False`` the losses are floored at ``eps`` in the weights instead (no
    sync; a loss at 0 then gets a very large weight). The default ``validate=None`` checks losses that
    live on the CPU (nothing to synchronise) and floors the others, so that a GPU step never syncs.
    One backward pass (``task_grad="weighted"``). K = 1: the weight is exactly 1.
    """

    needs: ClassVar[Needs] = Needs()
    task_grad: ClassVar[TaskGrad] = "weighted"

    def __init__(self, validate: bool | None = None, eps: float = 1e-12) -> None:
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.validate = validate
        self.eps = float(eps)

    def combine(self, inputs: Inputs) -> Output:
        losses = inputs.losses.detach()
        validate = losses.device.type == "cpu" if self.validate is None else self.validate
        if validate and not bool((losses > 0).all()):  # sync: opt-in validation (CPU losses by default)
            bad = (~(losses > 0)).nonzero().flatten().tolist()  # sync: opt-in validation (validate=True)
            values = losses[bad].tolist()  # sync: as above
            raise ValueError(
                f"GLS needs positive losses; objective(s) {bad} have {values} "
                "(use GLS(validate=False) to floor them at eps instead)"
            )
        x = losses.to(torch.float64)
        log_l = (x if validate else x.clamp_min(self.eps)).log()
        k = inputs.num_objectives
        w = torch.exp(log_l.mean() - log_l) / k
        return Output(weights=w.to(losses.dtype))
