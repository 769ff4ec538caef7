r"""Small non-negative QPs ``min_{x ≥ 0} ½ xᵀMx + qᵀx``, batched, fixed-shape, sync-free.

Two exact methods for the problems of UPGrad and DualProj (:mod:`._dual_cone`), both with a fixed
number of operations (no data-dependent control flow or shapes, no host synchronisation; the only
factorisation used is ``cholesky_ex`` + ``cholesky_solve``, which runs on cuSOLVER without a check):

* :func:`enumerate_nonneg_qp` (small K): every one of the :math:`2^K` free sets ``F`` is solved at
  once in one batched Cholesky (:math:`x_F = -M_{FF}^{-1} q_F`, :math:`x_{\bar F} = 0`), and the
  candidate that satisfies the KKT conditions (:math:`x \ge 0`, :math:`\lambda = Mx + q \ge 0`,
  :math:`\lambda_F = 0`) is kept. For a positive definite ``M`` exactly one solution exists and some
  ``F`` reproduces it; for a positive semi-definite ``M`` some solution has a free set with a
  non-singular :math:`M_{FF}` (a solution with a singular block can be moved along the null space
  until its support shrinks), so the enumeration is exact there too (a failed factorisation, i.e. a
  singular block, disqualifies its free set). Cost :math:`2^K` small factorisations: the default up
  to K = 8.
* :func:`pivot_nonneg_qp` (larger K, positive definite ``M``): block principal pivoting (Júdice &
  Pires 1994; Kim & Park 2011 for NNLS): from the free set, solve, exchange every index that violates
  its sign condition while the number of violations keeps falling, otherwise (after ``patience``
  non-improving iterations) only the largest violating index (Murty's rule, finite for the
  P-matrices that positive definite ``M`` are). Each iteration solves the penalised full system
  :math:`(M + P\,\mathrm{diag}(1 - f))x = -q` (``P`` = 1e10 on the fixed indices), so that the free
  set update is a sign test: ``x_i > 0`` exactly when ``i`` should be free. A final exact masked solve
  on the last free set removes the 1e-10 perturbation. Converged problems are fixed points (masked
  convergence by construction); a problem that did not converge within ``iters`` keeps the last
  iterate, clamped to ``x ≥ 0`` (check :func:`kkt_residual_nonneg_qp`).

``M`` is expected with a diagonal of order one (callers scale it, e.g. by ``diag(M)^{-1/2}`` on both
sides).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .consts import arange, eye, neg_mask, subset_masks

# Penalty on the fixed indices of the pivoting iteration (relative to a unit diagonal).
_PENALTY = 1e10


def enumerate_nonneg_qp(
    m: Tensor, q: Tensor, scale: Tensor | float | None = None, *, positive_definite: bool = False
) -> tuple[Tensor, Tensor]:
    r"""Exact ``argmin_{x ≥ 0} ½xᵀMx + qᵀx`` by enumerating the free sets (see the module docstring).

    ``m`` (..., K, K) symmetric positive semi-definite; ``q`` (..., B, K): B problems per matrix
    (UPGrad: B = K). Returns ``x`` (..., B, K) ≥ 0 in ``m``'s dtype and the KKT score (..., B) of the
    chosen free set, ``min_i min(s x_i, λ_i)`` with ``λ = Mx + q`` and ``s`` = ``scale`` ((..., 1), or a
    number; default ``max_i M_ii``), before ``x`` is clamped: ≥ 0 (up to rounding) at the solution,
    negative by the size of the violation otherwise. ``positive_definite=True`` (the caller guarantees
    a well-conditioned positive definite ``m``) skips the check that rejects the garbage of singular
    blocks.
    """
    k = m.shape[-1]
    masks, both = subset_masks(k, m.device)  # (S, K), (S, K, K)
    ms = m.unsqueeze(-3)
    h = torch.where(both, ms, eye(k, m.device, m.dtype))  # (..., S, K, K)
    chol = torch.linalg.cholesky_ex(h)[0]
    qt = q.mT.unsqueeze(-3)  # (..., 1, K, B)
    x = torch.cholesky_solve(qt * neg_mask(k, m.device, m.dtype), chol)  # (..., S, K, B); 0 off F
    lam = ms @ x + qt
    if scale is None:
        scale = m.diagonal(dim1=-2, dim2=-1).amax(-1, keepdim=True)
    xs = (
        x
        if isinstance(scale, float) and scale == 1.0
        else x * (scale[..., None, None] if isinstance(scale, Tensor) else scale)
    )
    if positive_definite:
        score = torch.minimum(xs, lam).amin(-2)  # (..., S, B); λ_F = 0 up to rounding
    else:
        # also λ_F = 0: rejects the solutions of failed factorisations and the garbage of numerically
        # singular blocks, whose huge x_F can have the right signs
        score = torch.minimum(xs, torch.where(masks.unsqueeze(-1), -lam.abs(), lam)).amin(-2)
        score = torch.nan_to_num(score, nan=-torch.inf)
    best = score.argmax(-2, keepdim=True)  # (..., 1, B)
    idx = best.unsqueeze(-2).expand(*best.shape[:-2], 1, k, best.shape[-1])
    return x.gather(-3, idx).squeeze(-3).mT.clamp_min(0), score.gather(-2, best).squeeze(-2)


def pivot_nonneg_qp(m: Tensor, q: Tensor, iters: int, *, patience: int = 1) -> Tensor:
    r"""``argmin_{x ≥ 0} ½xᵀMx + qᵀx`` for positive definite ``m`` by block principal pivoting.

    ``m`` (..., K, K) with a diagonal of order one, ``q`` (..., K) (broadcast against ``m``'s leading
    dimensions). ``iters`` pivoting iterations, then one exact solve. Returns x (..., K) ≥ 0.
    """
    k = m.shape[-1]
    batch = torch.broadcast_shapes(m.shape[:-2], q.shape[:-1])
    q = q.expand(*batch, k)
    idx = arange(k, m.device, start=1)
    free = q < 0  # the sign of the gradient at x = 0
    fewest = torch.full((*batch, 1), k + 1, device=m.device)
    left = torch.zeros((*batch, 1), dtype=fewest.dtype, device=m.device)
    rhs = -q.unsqueeze(-1)
    for _ in range(iters):
        pen = torch.where(free, 0.0, _PENALTY)
        chol = torch.linalg.cholesky_ex(m + torch.diag_embed(pen))[0]
        x = torch.cholesky_solve(rhs, chol).squeeze(-1)
        bad = (x > 0) ^ free  # free with x < 0, or fixed with a negative multiplier (λ_i = -P x_i)
        count = bad.sum(-1, keepdim=True)
        better = count < fewest
        fewest = torch.minimum(count, fewest)
        left = torch.where(better, patience, left - 1)
        last = (bad * idx).amax(-1, keepdim=True)  # Murty: the largest violating index
        free = free ^ (bad & ((left >= 0) | (idx == last)))
    h = torch.where(free.unsqueeze(-1) & free.unsqueeze(-2), m, eye(k, m.device, m.dtype))
    chol = torch.linalg.cholesky_ex(h)[0]
    x = torch.cholesky_solve(torch.where(free, -q, 0.0).unsqueeze(-1), chol).squeeze(-1)
    return x.clamp_min(0)


def kkt_residual_nonneg_qp(m: Tensor, q: Tensor, x: Tensor) -> Tensor:
    r"""Largest KKT violation of ``x`` for ``min_{x ≥ 0} ½xᵀMx + qᵀx``: ``max(-x)_+``, ``max(-λ)_+`` and
    ``max|x_i λ_i|`` with ``λ = Mx + q``, relative to ``max(1, ‖x‖_∞)`` and ``max(‖q‖_∞, tiny)``."""
    lam = (m @ x.unsqueeze(-1)).squeeze(-1) + q
    tiny = torch.finfo(x.dtype).tiny
    xs = x.abs().amax(-1).clamp_min(1.0)
    qs = q.abs().amax(-1).clamp_min(tiny)
    primal = (-x).clamp_min(0).amax(-1) / xs
    dual = (-lam).clamp_min(0).amax(-1) / qs
    comp = (x * lam).abs().amax(-1) / (xs * qs)
    return torch.maximum(primal, torch.maximum(dual, comp))
