r"""Minimum-norm point in the convex hull of the gradients (MGDA's subproblem), exact and sync-free.

The solvers here share one engine, :func:`prox_active_set`, a proximal primal-dual active-set method
for small non-negative QPs

.. math:: \min_{x \ge 0} \tfrac12 x^\top M x + q^\top x \quad [\text{s.t. } a^\top x = 1].

Each iteration solves the equality-constrained problem on the current free set with a proximal term
:math:`\tfrac{\delta_t}2\|x - x_{t-1}\|^2` (masked fixed-shape Cholesky: no data-dependent shapes),
then updates the free set from the signs of the primal variables (free indices) and of the multipliers
(fixed indices), as in the primal-dual active-set method (Hintermüller, Ito & Kunisch, SIAM J. Optim.
2002). The proximal weight decreases geometrically from 1e-1 to 1e-4 (relative to a unit diagonal):
without it the plain active-set iteration cycles on rank-deficient (degenerate) Gramians. At a fixed
point the proximal term vanishes, so a fixed point is an exact KKT point of the original problem.
A fixed number of iterations, no host synchronisation.
"""

from __future__ import annotations

import torch
from torch import Tensor


def default_iters(k: int) -> int:
    """Iterations used by the solvers for K objectives (enough for K ≤ 64 in the tests)."""
    if k <= 2:
        return 6
    if k <= 5:
        return 10
    if k <= 16:
        return 14
    return 20 + k // 8


def prox_active_set(m: Tensor, q: Tensor, a: Tensor | None, iters: int) -> Tensor:
    """Solve ``min ½xᵀMx + qᵀx`` s.t. ``x ≥ 0`` (and ``aᵀx = 1`` if ``a`` is given), batched.

    ``m`` (..., K, K) must have a diagonal of order one (callers scale it). Returns x (..., K) ≥ 0.
    """
    k = q.shape[-1]
    eye = torch.eye(k, dtype=m.dtype, device=m.device)
    if a is None:
        free = torch.zeros(q.shape, dtype=torch.bool, device=q.device)
        x = torch.zeros_like(q)
    else:
        free = torch.ones(q.shape, dtype=torch.bool, device=q.device)
        x = a / (a * a).sum(-1, keepdim=True)
    # proximal weights 1e-1 → 1e-4, geometric (plain Python floats: no device tensor involved)
    deltas = [10.0 ** (-1.0 - 3.0 * t / max(iters - 1, 1)) for t in range(iters)]
    for delta in deltas:
        h = torch.where(free.unsqueeze(-1) & free.unsqueeze(-2), m + delta * eye, eye)
        chol, _ = torch.linalg.cholesky_ex(h)
        rhs = torch.where(free, delta * x - q, 0.0)
        if a is None:
            x_new = torch.cholesky_solve(rhs.unsqueeze(-1), chol).squeeze(-1)
            lam = (m @ x_new.unsqueeze(-1)).squeeze(-1) + q - delta * x
        else:
            af = torch.where(free, a, 0.0)
            sol = torch.cholesky_solve(torch.stack((rhs, af), -1), chol)
            base, dir_ = sol[..., 0], sol[..., 1]
            denom = (af * dir_).sum(-1, keepdim=True)
            denom = torch.where(denom > 0, denom, 1.0)
            mu = (1.0 - (af * base).sum(-1, keepdim=True)) / denom
            x_new = base + mu * dir_
            lam = (m @ x_new.unsqueeze(-1)).squeeze(-1) + q - delta * x - mu * a
        free = torch.where(free, x_new > 0, lam < 0)
        x = x_new.clamp_min(0)
    if a is not None:
        s = (a * x).sum(-1, keepdim=True)
        x = torch.where(s > 0, x / torch.where(s > 0, s, 1.0), a / (a * a).sum(-1, keepdim=True))
    return x


def _jacobi(gramian: Tensor) -> tuple[Tensor, Tensor]:
    """``(G / (d dᵀ), d)`` with ``d = √diag(G)`` (zero rows get the largest ``d``, or 1 if G = 0)."""
    diag = gramian.diagonal(dim1=-2, dim2=-1).clamp_min(0)
    dmax = diag.amax(-1, keepdim=True)
    diag = torch.where(diag > 0, diag, torch.where(dmax > 0, dmax, 1.0))
    d = diag.sqrt()
    return gramian / (d.unsqueeze(-1) * d.unsqueeze(-2)), d


def min_norm(gramian: Tensor, *, iters: int | None = None) -> Tensor:
    r"""``argmin_{w ∈ Δ} wᵀ G w`` for a batch of Gramians (..., K, K), in float64, sync-free.

    Exact active-set solution (see the module docstring) of the problem rescaled by
    :math:`D = \mathrm{diag}(G)^{1/2}` (:math:`y = D w`, the simplex becoming :math:`(D^{-1}1)^\top y = 1`),
    so the result does not depend on the scale of G nor on the relative scales of the gradients'
    norms. ``iters`` defaults to :func:`default_iters` (K). Returns weights (..., K) in float64.
    """
    g = gramian.to(torch.float64)
    k = g.shape[-1]
    if k == 1:
        return torch.ones(g.shape[:-1], dtype=g.dtype, device=g.device)
    m, d = _jacobi(g)
    a = d.amin(-1, keepdim=True) / d
    y = prox_active_set(m, torch.zeros_like(a), a, default_iters(k) if iters is None else iters)
    w = y / d
    return w / w.sum(-1, keepdim=True)


def kkt_residual_min_norm(gramian: Tensor, weights: Tensor) -> Tensor:
    r"""Scale-free KKT residual of ``weights`` for ``min_{w ∈ Δ} wᵀGw`` (batched, float64).

    With :math:`r = Gw`, :math:`\mu = w^\top G w` and :math:`s = \max_i G_{ii}` it is the largest of
    the primal infeasibility :math:`\max_i(-w_i)_+` and :math:`|1^\top w - 1|`, the dual infeasibility
    :math:`\max_i(\mu - r_i)_+ / s` (which bounds the objective gap: :math:`f(w) - f^\star \le
    2 s \cdot` it) and the complementarity :math:`\max_i w_i |r_i - \mu| / s`. Zero for the exact
    solution, invariant to the scale of G.
    """
    g = gramian.to(torch.float64)
    w = weights.to(torch.float64)
    r = (g @ w.unsqueeze(-1)).squeeze(-1)
    mu = (w * r).sum(-1, keepdim=True)
    s = g.diagonal(dim1=-2, dim2=-1).amax(-1).clamp_min(torch.finfo(torch.float64).tiny)
    primal = torch.maximum((-w).clamp_min(0).amax(-1), (w.sum(-1) - 1).abs())
    dual = (mu - r).clamp_min(0).amax(-1) / s
    comp = (w.clamp_min(0) * (r - mu).abs()).amax(-1) / s
    return torch.maximum(primal, torch.maximum(dual, comp))


def _min_norm_2(v11: Tensor, v12: Tensor, v22: Tensor) -> tuple[Tensor, Tensor]:
    """Sener & Koltun's ``_min_norm_element_from2``: weight of the first point and the squared norm
    (with their 0.999 / 0.001 clamps when one point dominates)."""
    den = (v11 + v22 - 2 * v12).clamp_min(torch.finfo(v11.dtype).tiny)
    gamma = -(v12 - v22) / den
    cost = v22 + gamma * (v12 - v22)
    gamma = torch.where(v12 >= v22, torch.full_like(gamma, 0.001), gamma)
    cost = torch.where(v12 >= v22, v22, cost)
    gamma = torch.where(v12 >= v11, torch.full_like(gamma, 0.999), gamma)
    cost = torch.where(v12 >= v11, v11, cost)
    return gamma, cost


def min_norm_frank_wolfe(gramian: Tensor, *, max_iter: int = 250, stop_crit: float = 1e-5) -> Tensor:
    """The official MGDA solver (Sener & Koltun 2018, ``MinNormSolver.find_min_norm_element_FW``).

    Starts from the best pair (closed form for every pair; for K = 2 that is the answer), then runs
    Frank-Wolfe with exact line search. The official loop stops when ``Σ|Δw| < stop_crit``; here the
    ``max_iter`` iterations always run and an element freezes once its change fell below
    ``stop_crit`` (same result, no host sync). It is therefore *not* exact: weights can differ from
    :func:`min_norm` by about ``stop_crit``.
    """
    g = gramian.to(torch.float64)
    k = g.shape[-1]
    if k == 1:
        return torch.ones(g.shape[:-1], dtype=g.dtype, device=g.device)
    diag = g.diagonal(dim1=-2, dim2=-1)
    # best pair: i < j (row-major order as in the official double loop; first minimum wins)
    iu, ju = torch.triu_indices(k, k, 1, device=g.device)
    v11, v22, v12 = diag[..., iu], diag[..., ju], g[..., iu, ju]
    gam, cost = _min_norm_2(v11, v12, v22)
    best = cost.argmin(-1, keepdim=True)
    c = gam.gather(-1, best)
    eye = torch.eye(k, dtype=g.dtype, device=g.device)
    w = c * eye[iu[best.squeeze(-1)]] + (1 - c) * eye[ju[best.squeeze(-1)]]
    if k == 2:
        return w
    active = torch.ones((*w.shape[:-1], 1), dtype=torch.bool, device=g.device)
    for _ in range(max_iter):
        gw = (g @ w.unsqueeze(-1)).squeeze(-1)
        t = gw.argmin(-1, keepdim=True)
        v11 = (w * gw).sum(-1, keepdim=True)
        v12 = gw.gather(-1, t)
        v22 = diag.gather(-1, t)
        nc, _ = _min_norm_2(v11, v12, v22)
        new = nc * w + (1 - nc) * eye[t.squeeze(-1)]
        # the official loop returns the *previous* iterate once the change is below stop_crit
        active = active & ((new - w).abs().sum(-1, keepdim=True) >= stop_crit)
        w = torch.where(active, new, w)
    return w
