"""MGDA: the minimum-norm element of the convex hull of the task gradients."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch

from ..solvers import KKT_TOL, kkt_residual_min_norm, min_norm, min_norm_frank_wolfe, status_from_residual
from ._base import Inputs, Method, Needs, Output, check_gramian

Normalization = Literal["none", "l2", "loss", "loss+"]


class MGDA(Method):
    r"""Multiple-gradient descent (Désidéri 2012; Sener & Koltun, NeurIPS 2018, "Multi-Task Learning as
    Multi-Objective Optimization").

    .. math:: w = \arg\min_{w \in \Delta_K} \| \textstyle\sum_i w_i \tilde g_i \|^2,
        \quad d = \sum_i w_i \tilde g_i

    where :math:`\tilde g_i = g_i / n_i` with the normalisation of the official code: ``"none"``
    (default), ``"l2"`` (:math:`n_i=\|g_i\|`), ``"loss"`` (:math:`n_i=L_i`), ``"loss+"``
    (:math:`n_i=L_i\|g_i\|`). The returned weights are those of the raw gradients, :math:`w_i/n_i`,
    multiplied by ``scale`` (the Nash-MTL/FairGrad code uses ``scale=K``; default 1).
    MGDA-UB is this method with ``Balancer(mode="representation")``.

    ``solver="exact"`` (default) solves the QP exactly (:func:`molearn.solvers.min_norm`, KKT residual
    in ``info["residual"]``); ``solver="frank_wolfe"`` is the official ``MinNormSolver`` (closed form
    for K = 2, best-pair start, Frank-Wolfe with ``MAX_ITER`` 250 and ``STOP_CRIT`` 1e-5), which stops
    early, so its weights can differ from the exact ones by about 1e-5 (TorchJD's ``MGDAWeighting`` is
    also a Frank-Wolfe, with ``epsilon`` 1e-3 and 100 iterations, and differs more).
    """

    needs: ClassVar[Needs] = Needs(gramian=True)

    def __init__(
        self,
        normalization: Normalization = "none",
        scale: float | Literal["K"] = 1.0,
        solver: Literal["exact", "frank_wolfe"] = "exact",
    ) -> None:
        if normalization not in ("none", "l2", "loss", "loss+"):
            raise ValueError(f"unknown normalization {normalization!r}")
        if solver not in ("exact", "frank_wolfe"):
            raise ValueError(f"solver must be 'exact' or 'frank_wolfe', got {solver!r}")
        self.solver = solver
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
        w_hull = min_norm(gn) if self.solver == "exact" else min_norm_frank_wolfe(gn)
        res = kkt_residual_min_norm(gn, w_hull)
        info = {"residual": res, "status": status_from_residual(res, KKT_TOL)}
        w = w_hull / n
        k = inputs.num_objectives
        scale = float(k) if self.scale == "K" else float(self.scale)
        return Output(weights=(w * scale).to(inputs.losses.dtype), info=info)
