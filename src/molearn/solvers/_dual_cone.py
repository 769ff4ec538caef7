r"""Projection onto the dual cone of the gradients, in the weight space (UPGrad/DualProj's subproblem).

For a Gramian :math:`G = JJ^\top` and weights :math:`u`, the projection of :math:`J^\top u` onto the
dual cone :math:`\{x : Jx \ge 0\}` is :math:`J^\top v` with

.. math:: v = \arg\min_{v \ge u} v^\top G v

(Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", arXiv 2406.16232, Prop. 1).
With :math:`x = D(v - u) \ge 0`, :math:`D = \mathrm{diag}(G)^{1/2}`, it is the non-negative QP
:math:`\min_{x \ge 0} \tfrac12 x^\top M x + (D^{-1} G u)^\top x` with the unit-diagonal
:math:`M = D^{-1} G D^{-1}` (invariant to the scale of G and of the individual gradients), solved
exactly, batched and sync-free by :mod:`._nonneg_qp` (enumeration of the free sets for small K, block
principal pivoting for larger K when G is positive definite) or by the proximal active-set method of
:mod:`._min_norm` (any positive semi-definite G).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from ._min_norm import _jacobi, default_iters, prox_active_set
from ._nonneg_qp import enumerate_nonneg_qp, pivot_nonneg_qp

DualConeSolver = Literal["auto", "enumerate", "pivot", "prox"]

#: Largest K solved by enumerating the 2^K free sets under ``solver="auto"``.
ENUMERATE_MAX_K = 8


def pivot_iters(k: int) -> int:
    """Pivoting iterations used for K objectives (``solver="pivot"``)."""
    return 8 if k <= 16 else 10


def project_dual_cone(
    gramian: Tensor,
    u: Tensor,
    *,
    iters: int | None = None,
    solver: DualConeSolver = "auto",
    positive_definite: bool = False,
) -> Tensor:
    r"""``argmin_{v ≥ u} vᵀGv`` for every row ``u`` (..., K), in float64, sync-free.

    ``gramian`` (..., K, K) symmetric positive semi-definite and ``u`` (..., K) broadcast over their
    leading dimensions, so one Gramian (K, K) with ``u`` (B, K) solves B problems in one batch
    (UPGrad: B = K).

    ``solver``: ``"enumerate"`` (all :math:`2^K` free sets in one batched Cholesky, exact for any
    positive semi-definite G), ``"pivot"`` (block principal pivoting, ``iters`` iterations, default
    :func:`pivot_iters`; needs a positive definite G, e.g. UPGrad's regularised Gramian),
    ``"prox"`` (the proximal active-set method, ``iters`` default :func:`default_iters`; any PSD G) or
    ``"auto"``: enumeration for K ≤ :data:`ENUMERATE_MAX_K`, else pivoting if ``positive_definite``
    (the caller guarantees it) and the proximal method otherwise. Returns v, float64.
    """
    return project_dual_cone_residual(
        gramian, u, iters=iters, solver=solver, positive_definite=positive_definite, residual=False
    )[0]


def project_dual_cone_residual(
    gramian: Tensor,
    u: Tensor,
    *,
    iters: int | None = None,
    solver: DualConeSolver = "auto",
    positive_definite: bool = False,
    residual: bool = True,
    scale: float | None = None,
    u_max: float | None = None,
) -> tuple[Tensor, Tensor | None]:
    """:func:`project_dual_cone` and (``residual=True``) the KKT residual of each row (the enumeration's
    own check where it ran: ``max(-x)_+`` and ``max(-λ)_+`` relative to ``max_i G_ii · max|u|``, which
    the caller may pass as ``scale`` and ``u_max`` when it knows them; :func:`kkt_residual_dual_cone`
    otherwise)."""
    g = gramian.to(torch.float64)
    uu = u.to(torch.float64)
    k = g.shape[-1]
    if uu.shape[-1] != k:
        raise ValueError(f"u has {uu.shape[-1]} entries but the Gramian is {k}×{k}")
    if solver not in ("auto", "enumerate", "pivot", "prox"):
        raise ValueError(f"unknown solver {solver!r}")
    if solver == "auto":
        solver = "enumerate" if k <= ENUMERATE_MAX_K else ("pivot" if positive_definite else "prox")
    batch = torch.broadcast_shapes(g.shape[:-2], uu.shape[:-1])
    if solver == "enumerate":
        # one factorisation per free set, shared by the rows u of the same Gramian: the last batch
        # dimension of u becomes the right-hand sides when the Gramian does not vary along it
        gb = (1,) * (len(batch) + 2 - g.dim()) + tuple(g.shape[:-2])
        shared = len(batch) > 0 and gb[-1] == 1
        outer = batch[:-1] if shared else batch
        g2 = g.reshape(*gb[:-1], k, k).expand(*outer, k, k) if shared else g.expand(*batch, k, k)
        u2 = uu.expand(*batch, k) if shared else uu.expand(*batch, k).unsqueeze(-2)
        # x = v - u ≥ 0 minimises ½xᵀGx + (Gu)ᵀx; no rescaling needed (Cholesky is insensitive to it)
        sc: Tensor | float = g2.diagonal(dim1=-2, dim2=-1).amax(-1, keepdim=True) if scale is None else scale
        x, score = enumerate_nonneg_qp(g2, u2 @ g2, sc, positive_definite=positive_definite)
        v = (u2 + x).reshape(*batch, k)
        if not residual:
            return v, None
        n: Tensor | float = u2.abs().amax(-1) if u_max is None else u_max
        res = (-score).clamp_min(0) / (sc * n)
        if scale is None or u_max is None:
            res = torch.nan_to_num(res, nan=0.0, posinf=0.0)  # zero Gramian: nothing to violate
        return v, res.reshape(batch)
    m, d = _jacobi(g)
    g = g.expand(*batch, k, k)
    m = m.expand(*batch, k, k)
    d = d.expand(*batch, k)
    uu = uu.expand(*batch, k)
    q = (g @ uu.unsqueeze(-1)).squeeze(-1) / d
    if solver == "pivot":
        x = pivot_nonneg_qp(m, q, pivot_iters(k) if iters is None else iters)
    else:
        x = prox_active_set(m, q, None, default_iters(k) if iters is None else iters)
    v = uu + x / d
    return v, kkt_residual_dual_cone(g, uu, v) if residual else None


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
