"""MGDA: the minimum-norm element of the convex hull of the task gradients."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch

from ..solvers import min_norm
from ._base import Inputs, Method, Needs, Output, check_gramian

Normalization = Literal["none", "l2", "loss", "loss+"]


class MGDA(Method):
    r"""Multiple-gradient descent (Désidéri 2012; Sener & Koltun, NeurIPS 2018, "Multi-Task Learning as
    Multi-Objective Optimization").

    .. math:: w = \arg\min_{w \in \Delta_K} \| \textstyle\sum_i w_i \tilde g_i \|^2, \quad d = \sum_i w_i \tilde g_i

    where :math:`\tilde g_i = g_i / n_i` with the normalisation of the official code: ``"none"``
    (default), ``"l2"`` (:math:`n_i=\|g_i\|`), ``"loss"`` (:math:`n_i=L_i`), ``"loss+"``
    (:math:`n_i=L_i\|g_i\|`). The returned weights are those of the raw gradients, :math:`w_i/n_i`,
    multiplied by ``scale`` (the Nash-MTL/FairGrad code uses ``scale=K``; default 1).
    MGDA-UB is this method with ``Balancer(mode="representation")``.
    """

    needs: ClassVar[Needs] = Needs(gramian=True)

    def __init__(self, normalization: Normalization = "none", scale: float | Literal["K"] = 1.0) -> None:
        if normalization not in ("none", "l2", "loss", "loss+"):
            raise ValueError(f"unknown normalization {normalization!r}")
        self.normalization = normalization
        self.scale = scale

    def combine(self, inputs: Inputs) -> Output:
        g = check_gramian(inputs.gramian, "MGDA").to(torch.float64)
        losses = inputs.losses.to(torch.float64)
        tiny = torch.finfo(torch.float64).tiny
        norms = g.diagonal().clamp_min(0).sqrt()
        n = torch.ones_like(norms)
        if self.normalization in ("l2", "loss+"):
            n = n * norms
        if self.normalization in ("loss", "loss+"):
            n = n * losses
        n = torch.where(n.abs() > tiny, n, 1.0)
        gn = g / torch.outer(n, n)
        w = min_norm(gn) / n
        k = inputs.num_objectives
        scale = float(k) if self.scale == "K" else float(self.scale)
        return Output(weights=(w * scale).to(inputs.losses.dtype))
