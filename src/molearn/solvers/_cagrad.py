r"""CAGrad's dual subproblem: ``min_{w ∈ Δ} wᵀ G 𝟙/K + c‖g0‖ √(wᵀ G w)`` and the combined direction.

Solved in float64 on the Gramian normalised by its mean diagonal (the minimiser is scale-invariant),
batched and sync-free, by one of two methods:

* enumeration of the supports (K ≤ :data:`ENUMERATE_MAX_K`, exact): with ``A = G``, ``b = A𝟙/K``,
  ``r = c‖g0‖`` and a support S, the stationarity conditions :math:`b_S + (r/n) A_{SS} w_S = \mu 𝟙`,
  :math:`𝟙^\top w_S = 1`, :math:`n = \|g_w\| = \sqrt{w^\top A w}` have the closed form
  :math:`p = A_{SS}^{-1}𝟙`, :math:`s = A_{SS}^{-1}b_S`, :math:`\alpha = 𝟙^\top p`,
  :math:`\beta = b^\top p`, :math:`\gamma = b^\top s`, :math:`\Delta = \beta^2 - \alpha\gamma +
  \alpha r^2`, :math:`\mu = (\beta + \sqrt\Delta)/\alpha`, :math:`w_S = (\mu p - s)/\sqrt\Delta`,
  :math:`n = r/\sqrt\Delta` (no solution on the face when :math:`\Delta \le 0`). All
  :math:`2^K - 1` supports are solved in one batched Cholesky with two right-hand sides, and the one
  satisfying the KKT conditions (:math:`w_S \ge 0`, :math:`b_i + (r/n)(Aw)_i \ge \mu` off S) is
  kept. A convex problem has no other KKT point than its minimiser; when f is minimised where it is
  not differentiable (:math:`g_w = 0`, only at a Pareto-stationary point), no support qualifies.
* a primal-dual interior-point method (larger K): the smooth perspective form in ``(w, t)``,
  :math:`\min_{w \in \Delta, t > 0} b^\top w + \tfrac r2 (w^\top A w / t + t)` (the minimum over
  ``t`` is at :math:`t = \sqrt{w^\top A w}`; the perspective term stays smooth when :math:`g_w \to 0`),
  ``iters`` Newton steps on the perturbed KKT system (one (K+1)×(K+1) Cholesky with two right-hand
  sides each), fixed centring σ = 0.1 and the fraction-to-the-boundary rule. 30 iterations give an
  objective within 1e-7 (relative to the mean squared gradient norm) of cvxpy/Clarabel in our tests.

Both use ``cholesky_ex``/``cholesky_solve`` only (no LU, no host synchronisation on the GPU).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from .consts import eye, subset_masks

CAGradSolver = Literal["auto", "enumerate", "interior_point"]

#: Largest K solved by enumerating the supports under ``solver="auto"``.
ENUMERATE_MAX_K = 8

_CENTERING = 0.1  # σ of the primal-dual interior-point method
_FRACTION = 0.99  # fraction-to-the-boundary rule
_NEWTON_RIDGE = 1e-14
_NEWTON_RIDGE_REL = 1e-13
# A support qualifies when its KKT score (w ≥ 0, multipliers, in units of the normalised Gramian) is
# above -_KKT_TOL.
_KKT_TOL = 1e-8


def _normalise(gramian: Tensor, c: float) -> tuple[Tensor, Tensor, Tensor]:
    """``(A, b, r)``: the Gramian in float64 divided by its mean diagonal, ``A𝟙/K`` and ``c‖g0‖``."""
    a = gramian.to(torch.float64)
    k = a.shape[-1]
    scale = a.diagonal(dim1=-2, dim2=-1).mean(-1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    a = a / scale.unsqueeze(-1)
    b = a.sum(-1) / k
    r = c * (b.sum(-1, keepdim=True) / k).clamp_min(0).sqrt()
    return a, b, r


def _enumerate(a: Tensor, b: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:
    """Exact minimiser over the supports (module docstring): ``(w, found)``, ``found`` (..., 1) False
    when no support satisfies the KKT conditions (then ``w`` is the least violating candidate)."""
    k = a.shape[-1]
    masks, both = subset_masks(k, a.device)  # (S, K), (S, K, K)
    maskf = masks.to(a.dtype)
    am = a.unsqueeze(-3)
    chol = torch.linalg.cholesky_ex(torch.where(both, am, eye(k, a.device, a.dtype)))[0]
    bb = b.unsqueeze(-2)  # (..., 1, K)
    sol = torch.cholesky_solve(torch.stack(torch.broadcast_tensors(maskf, bb * maskf), -1), chol)
    p, s = sol[..., 0], sol[..., 1]  # (..., S, K), zero off S
    alpha = p.sum(-1, keepdim=True)
    beta = (bb * p).sum(-1, keepdim=True)
    gamma = (bb * s).sum(-1, keepdim=True)
    rr = r.unsqueeze(-1)  # (..., 1, 1)
    disc = beta * beta - alpha * gamma + alpha * rr * rr
    sq = disc.clamp_min(0).sqrt()
    mu = (beta + sq) / alpha
    w = (mu * p - s) / sq.clamp_min(torch.finfo(a.dtype).tiny)
    # multipliers b + (r/n) A w - μ with r/n = √Δ: zero on S, ≥ 0 off S at the minimiser
    mult = bb + sq * (w @ a) - mu
    score = torch.minimum(w, torch.where(masks, -mult.abs(), mult)).amin(-1)  # (..., S)
    # 𝟙ᵀw = 1 holds by construction: a violation exposes the garbage of a numerically singular block
    score = torch.minimum(score, -(w.sum(-1) - 1.0).abs())
    score = torch.where((disc > 0).squeeze(-1) & masks.any(-1), score, -torch.inf)
    score = torch.nan_to_num(score, nan=-torch.inf)
    best = score.argmax(-1, keepdim=True)  # (..., 1)
    w_best = w.gather(-2, best.unsqueeze(-1).expand(*best.shape, k)).squeeze(-2)
    found = score.gather(-1, best) >= -_KKT_TOL
    w_best = w_best.clamp_min(0)
    return w_best / w_best.sum(-1, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny), found


def cagrad_dual(gramian: Tensor, c: float, *, iters: int = 30, solver: CAGradSolver = "auto") -> Tensor:
    r"""CAGrad's dual weights :math:`w^\star = \arg\min_{w \in \Delta_K} b^\top w + r \sqrt{w^\top G w}`.

    With :math:`b = G \mathbb 1 / K` (so :math:`b^\top w = g_0^\top g_w`) and :math:`r = c \|g_0\|`,
    :math:`\|g_0\| = \sqrt{\mathbb 1^\top G \mathbb 1}/K` (Liu et al., NeurIPS 2021, eq. (5); the official
    code solves it with ``scipy.optimize.minimize(method="SLSQP")`` from ``w = 𝟙/K``, which sometimes
    stops at a vertex). ``solver``: ``"enumerate"`` (exact), ``"interior_point"`` (``iters`` Newton
    steps) or ``"auto"`` (enumeration for K ≤ :data:`ENUMERATE_MAX_K`); see the module docstring. At a
    Pareto-stationary point with ``c ≥ 1`` the minimiser has :math:`g_w = 0` and is not unique; no
    support satisfies the KKT conditions there, and the enumeration's answer is replaced by the interior
    point's (both are computed; :func:`cagrad_weights` does not need the minimiser in that case).
    """
    w, found, a = _dual(gramian, c, iters, solver)
    if found is None:
        return w
    _, b, r = _normalise(gramian, c)
    return torch.where(found, w, _interior_point(a, b, r, iters))


def _dual(
    gramian: Tensor, c: float, iters: int, solver: CAGradSolver
) -> tuple[Tensor, Tensor | None, Tensor]:
    """``(w, found, A)``: the dual weights, whether the enumeration found a KKT support (None for the
    interior point) and the normalised Gramian."""
    if solver not in ("auto", "enumerate", "interior_point"):
        raise ValueError(f"unknown solver {solver!r}")
    a, b, r = _normalise(gramian, c)
    k = a.shape[-1]
    if solver == "enumerate" or (solver == "auto" and k <= ENUMERATE_MAX_K):
        w, found = _enumerate(a, b, r)
        return w, found, a
    return _interior_point(a, b, r, iters), None, a


def _interior_point(a: Tensor, b: Tensor, r: Tensor, iters: int) -> Tensor:
    """The primal-dual interior-point solve of the normalised problem (``a`` with a unit mean diagonal,
    ``b = a𝟙/K``, ``r = c‖g0‖``); returns w on the simplex."""
    k = a.shape[-1]
    batch = a.shape[:-2]
    r = r + 1e-300
    w = torch.full((*batch, k), 1.0 / k, dtype=a.dtype, device=a.device)
    t = (w * (a @ w.unsqueeze(-1)).squeeze(-1)).sum(-1, keepdim=True).clamp_min(0).sqrt().clamp_min(1e-3)
    x = torch.cat([w, t], -1)
    z = torch.ones_like(x)
    nu = torch.zeros_like(t)
    ones = torch.ones(k + 1, dtype=a.dtype, device=a.device)
    ones[-1] = 0.0  # the equality constraint Σ w_i = 1 does not involve t
    rhs2 = ones.expand_as(x)
    ridge = _NEWTON_RIDGE * torch.eye(k + 1, dtype=a.dtype, device=a.device)
    for _ in range(iters):
        w, t = x[..., :k], x[..., k:]
        aw = (a @ w.unsqueeze(-1)).squeeze(-1)
        waw = (w * aw).sum(-1, keepdim=True)
        rt = r / t
        grad = torch.cat([b + rt * aw, 0.5 * r * (1.0 - waw / (t * t))], -1)
        h_wt = (-rt / t * aw).unsqueeze(-1)
        h_tt = (rt * waw / (t * t)).unsqueeze(-1)
        hess = torch.cat(
            [torch.cat([rt.unsqueeze(-1) * a, h_wt], -1), torch.cat([h_wt.transpose(-1, -2), h_tt], -1)], -2
        )
        mu = (x * z).sum(-1, keepdim=True) / (k + 1)
        m = hess + torch.diag_embed(z / x) + ridge
        # relative ridge: the perspective's Hessian is singular along (w, t), and a barrier term z/x
        # that is tiny next to it leaves m semi-definite up to rounding (Cholesky would fail)
        m = m + _NEWTON_RIDGE_REL * m.diagonal(dim1=-2, dim2=-1).amax(-1)[..., None, None] * eye(
            k + 1, a.device, a.dtype
        )
        rhs = nu * ones - grad + _CENTERING * mu / x
        # m is symmetric positive definite (convex Hessian + positive barrier diagonal): Cholesky, which
        # (unlike LU) runs on cuSOLVER without a host synchronisation
        sol = torch.cholesky_solve(torch.stack([rhs, rhs2], -1), torch.linalg.cholesky_ex(m)[0])
        dnu = (1.0 - w.sum(-1, keepdim=True) - (ones * sol[..., 0]).sum(-1, keepdim=True)) / (
            ones * sol[..., 1]
        ).sum(-1, keepdim=True)
        dx = sol[..., 0] + dnu * sol[..., 1]
        dz = (_CENTERING * mu - x * z - z * dx) / x
        step_p = torch.where(dx < 0, -x / dx, torch.inf).amin(-1, keepdim=True)
        step_d = torch.where(dz < 0, -z / dz, torch.inf).amin(-1, keepdim=True)
        step = (_FRACTION * torch.minimum(step_p, step_d)).clamp_max(1.0)
        # a Newton step on a (numerically) singular system, e.g. g0 ≈ 0 with anti-parallel gradients,
        # can be non-finite: keep the last finite iterate instead (sync-free)
        ok = (torch.isfinite(dx).all(-1, keepdim=True) & torch.isfinite(dz).all(-1, keepdim=True)) & (
            torch.isfinite(dnu) & torch.isfinite(step)
        )
        x = torch.where(ok, x + step * dx, x)
        z = torch.where(ok, z + step * dz, z)
        nu = torch.where(ok, nu + step * dnu, nu)
    w = x[..., :k].clamp_min(0)
    return w / w.sum(-1, keepdim=True)


def cagrad_weights(
    gramian: Tensor, c: float, *, rescale: int = 1, iters: int = 30, solver: CAGradSolver = "auto"
) -> Tensor:
    r"""CAGrad's update as weights over the raw gradients: ``d = Σ_i weights_i g_i``, float64.

    :math:`d = g_0 + \frac{c\|g_0\|}{\|g_w\|} g_w` with ``w`` from :func:`cagrad_dual`, i.e.
    ``weights = 𝟙/K + (c‖g0‖/‖g_w‖) w``, divided by ``1 + c²`` (``rescale=1``, official default),
    ``1 + c`` (``rescale=2``) or 1 (``rescale=0``). As in the official code (``‖g_w‖ + 1e-8``) the
    division is damped: by ``‖g_w‖ + 1e-8·√(mean ‖g_i‖²)``.

    Where the dual is minimised at :math:`g_w = 0` (a Pareto-stationary point: 0 is in the convex hull
    of the gradients):

    * ``c ≥ 1``: the constrained problem :math:`\max_d \min_i g_i^\top d` s.t.
      :math:`\|d - g_0\| \le c\|g_0\|` has the value 0, attained at ``d = 0`` (the ball contains 0),
      and every ``d`` conflicts with some objective or is orthogonal to all of them: the weights are 0.
      Detected when no support satisfies the KKT conditions (enumeration), or when
      :math:`\|g_w\|` or the dual value :math:`f^\star` (≥ 0 for ``c ≥ 1``, 0 exactly at a stationary
      point) is at most :math:`10\sqrt{K \epsilon}` relative to the mean :math:`\|g_i\|^2`
      (ε of the Gramian's dtype: the size that the rounding of a Gramian in that precision can produce
      at a stationary point). The official code (and molearn before) returned
      the conflicting mean gradient there.
    * ``c < 1``: ``d = g0`` (the official code's limit ``g_w → 0``; the ball does not contain 0). This
      is not the primal optimum there (which moves g0 off the gradients it conflicts with), but it is
      what the official code converges to; it happens only when 0 is exactly in the convex hull and no
      combination of the gradients points far enough against g0 (e.g. exactly opposite gradients).

    All-zero gradients give ``d = 0``.
    """
    if rescale not in (0, 1, 2):
        raise ValueError(f"rescale must be 0, 1 or 2, got {rescale}")
    k = gramian.shape[-1]
    w, found, a = _dual(gramian, c, iters, solver)
    # in units of the normalised Gramian: mean ‖g_i‖² = 1 (or 0)
    g0_norm = a.sum((-2, -1)).unsqueeze(-1).clamp_min(0).sqrt() / k
    gw_norm = (w * (w.unsqueeze(-2) @ a).squeeze(-2)).sum(-1, keepdim=True).clamp_min(0).sqrt()
    out = 1.0 / k + (c * g0_norm / (gw_norm + 1e-8 + torch.finfo(torch.float64).tiny)) * w
    eps = (
        torch.finfo(gramian.dtype).eps if gramian.dtype.is_floating_point else torch.finfo(torch.float64).eps
    )
    stationary = gw_norm <= 10.0 * (k * eps) ** 0.5
    if found is not None:
        stationary = stationary | ~found
    # c ≥ 1: d = 0; c < 1: the official limit d = g0 (also where g_w is only rounding noise)
    out = torch.where(stationary, 0.0 if c >= 1 else 1.0 / k, out)
    if rescale == 1:
        out = out / (1.0 + c * c)
    elif rescale == 2:
        out = out / (1.0 + c)
    return out
