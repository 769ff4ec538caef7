r"""Projection onto the dual cone of the gradients, in the weight space (UPGrad/DualProj's subproblem).

For a Gramian :math:`G = JJ^\top` and weights :math:`u`, the projection of :math:`J^\top u` onto the
dual cone :math:`\{x : Jx \ge 0\}` is :math:`J^\top v` with

.. math:: v = \arg\min_{v \ge u} v^\top G v

(Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", arXiv 2406.16232, Prop. 1).
Solved exactly, batched and sync-free with the proximal active-set method of :mod:`._min_norm`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._min_norm import _jacobi, default_iters, prox_active_set


def project_dual_cone(gramian: Tensor, u: Tensor, *, iters: int | None = None) -> Tensor:
    r"""``argmin_{v ≥ u} vᵀGv`` for every row ``u`` (..., K), in float64, sync-free.

    ``gramian`` (..., K, K) and ``u`` (..., K) broadcast over their leading dimensions, so one Gramian
    (K, K) with ``u`` (B, K) solves B problems in one batch (UPGrad: B = K). The problem is solved in
    :math:`x = D(v - u) \ge 0`, :math:`D = \mathrm{diag}(G)^{1/2}` (invariant to the scale of G and
    of the individual gradients). ``iters`` defaults to :func:`default_iters` (K). Returns v, float64.
    """
    g = gramian.to(torch.float64)
    uu = u.to(torch.float64)
    k = g.shape[-1]
    if uu.shape[-1] != k:
        raise ValueError(f"u has {uu.shape[-1]} entries but the Gramian is {k}×{k}")
    batch = torch.broadcast_shapes(g.shape[:-2], uu.shape[:-1])
    g = g.expand(*batch, k, k)
    uu = uu.expand(*batch, k)
    m, d = _jacobi(g)
    q = (g @ uu.unsqueeze(-1)).squeeze(-1) / d
    x = prox_active_set(m, q, None, default_iters(k) if iters is None else iters)
    return uu + x / d


def kkt_residual_dual_cone(gramian: Tensor, u: Tensor, v: Tensor) -> Tensor:
    r"""Scale-free KKT residual of ``v`` for ``min_{v ≥ u} vᵀGv`` (batched, float64).

    With :math:`\lambda = Gv` (the multipliers), :math:`s = \max_i G_{ii}` and
    :math:`n = \max(\|u\|_\infty, \|v\|_\infty)`: the largest of the primal infeasibility
    :math:`\max_i (u_i - v_i)_+ / n`, the dual infeasibility :math:`\max_i (-\lambda_i)_+ / (s n)`
    and the complementarity :math:`\max_i |\lambda_i (v_i - u_i)| / (s n^2)`. Zero for the exact
    solution, invariant to the scales of G and u.
    """
    g = gramian.to(torch.float64)
    uu = u.to(torch.float64)
    vv = v.to(torch.float64)
    tiny = torch.finfo(torch.float64).tiny
    lam = (g @ vv.unsqueeze(-1)).squeeze(-1)
    s = g.diagonal(dim1=-2, dim2=-1).amax(-1).clamp_min(tiny)
    n = torch.maximum(uu.abs().amax(-1), vv.abs().amax(-1)).clamp_min(tiny)
    primal = (uu - vv).clamp_min(0).amax(-1) / n
    dual = (-lam).clamp_min(0).amax(-1) / (s * n)
    comp = (lam * (vv - uu)).abs().amax(-1) / (s * n * n)
    return torch.maximum(primal, torch.maximum(dual, comp))
