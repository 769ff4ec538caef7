r"""The α-fair system of FairGrad (and Nash-MTL for α = 1): ``(G w)_i = w_i^{-1/α}``, ``w > 0``."""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

from ._status import CONVERGED, INFEASIBLE, ITERATION_LIMIT
from .consts import eye

# Gradients whose squared norm is below this fraction of the largest one are treated as exactly zero.
_ZERO_TOL = 1e-40
# Log-space step bounds of the damped Newton iteration (up: ×e², down: ×e⁻¹⁰ per iteration).
_STEP_UP = 2.0
_STEP_DOWN = 10.0
# Ridge of the Newton matrix only (not of the system): keeps the linear solve non-singular.
_NEWTON_RIDGE = 1e-12
# A fallback counts as solvable (iteration limit) when the iterate's direction improves every task by
# more than this fraction of its length: a certificate that a positive solution exists (Gordan).
_IMPROVES = 1e-9


def alpha_fair(gramian: Tensor, alpha: float, *, iters: int = 12, fallback_tol: float = 1e-3) -> Tensor:
    r"""Solve :math:`(G w)_i = w_i^{-1/\alpha}` for :math:`w > 0`, batched over leading dimensions.

    This is the optimality condition of the α-fair allocation of FairGrad (Ban & Ji, ICML 2024) and,
    for ``alpha = 1``, of Nash-MTL (:math:`G G^\top \alpha = 1/\alpha`, Navon et al., ICML 2022). It is
    the stationarity condition of the strictly convex
    :math:`\phi(w) = \tfrac12 w^\top G w - \sum_i H_\alpha(w_i)` (:math:`H_\alpha' = w^{-1/\alpha}`), so
    the positive solution is unique when it exists; it exists iff some direction ``d`` has
    :math:`g_i^\top d > 0` for every task (e.g. ``G`` positive definite).

    Method (float64, fixed iteration count, no host synchronisation):

    * change of variables to the correlation matrix :math:`C = D^{-1/2} G D^{-1/2}`, ``w = D^{-1/2} v``,
      giving :math:`(C v)_i = c_i v_i^{-1/\alpha}` with :math:`c_i = G_{ii}^{-(1-1/\alpha)/2}`; this makes
      the linear algebra independent of the scale of each gradient and of ``G`` (exact equivariance
      :math:`w(sG) = s^{-\alpha/(\alpha+1)} w(G)`);
    * start: the better (lower :math:`\phi`) of two closed-form guesses
      :math:`v \propto c^{\alpha/(\alpha+1)}` (uncoupled tasks) and :math:`v \propto c^{\min(\alpha, 2)}`
      (aligned tasks), each scaled by the exact minimiser of :math:`\phi` along its ray;
    * ``iters`` Newton steps on :math:`\phi` (one batched ``linalg.solve_ex`` each), applied
      multiplicatively in log space with the relative change clipped to ``[e^{-10}, e^{2}]`` (keeps
      ``w > 0``, line-search free).

    Degenerate inputs: a task with an (exactly, or below ``1e-40`` of the largest squared norm) zero
    gradient has no finite solution (``w_i → ∞``) and no influence on ``d = Σ w_i g_i``; it gets
    ``w_i = 0``. An all-zero Gramian gives ``w = 0``. A positive solution fails to exist exactly when
    no direction improves every task (``0`` in the convex hull of the gradients, by Gordan's theorem:
    Pareto-stationary gradients, e.g. opposite ones); then the least-squares path runs to infinity with
    ``d = Σ w_i g_i → 0`` (``scipy.optimize.least_squares``, the official FairGrad solver, stops somewhere
    on it with a relative residual of order 1 and a small ``d``). molearn returns the limit, ``w = 0``
    (so ``d = 0``), whenever the relative residual after ``iters`` steps exceeds ``fallback_tol``; this
    also catches the rare solvable inputs that did not converge (raise ``iters``).

    Args:
        gramian: (..., K, K) symmetric positive semi-definite.
        alpha: α > 0 (1: proportional fairness / Nash-MTL; 2: FairGrad's published runs).
        iters: Newton iterations. 12 reaches a relative residual ≤ 1e-6 in our tests on Gramians with
            K ≤ 64 and condition number ≤ 1e6 for α ∈ [0.5, 5], and on gradient norms spread over
            6 orders of magnitude for α ∈ [1, 2]; α = 0.5 there needs ~20, α = 5 more than 25.
        fallback_tol: relative residual above which ``w = 0`` is returned (see above).

    Returns:
        (..., K) float64 weights ``w ≥ 0``.
    """
    return alpha_fair_with_residual(gramian, alpha, iters=iters, fallback_tol=fallback_tol)[0]


@lru_cache(maxsize=64)
def _start_exponents(alpha: float, device: torch.device) -> Tensor:
    """The exponents of the two closed-form starts, (2, 1) float64 on ``device`` (created once, on the
    device: no host-to-device copy)."""
    first = torch.full((1, 1), alpha / (alpha + 1.0), dtype=torch.float64, device=device)
    return torch.cat([first, torch.full((1, 1), min(alpha, 2.0), dtype=torch.float64, device=device)])


def alpha_fair_with_residual(
    gramian: Tensor, alpha: float, *, iters: int = 12, fallback_tol: float = 1e-3
) -> tuple[Tensor, Tensor]:
    """:func:`alpha_fair` and the relative residual of its last Newton iterate (as
    :func:`alpha_fair_residual`). For the fallback ``w = 0`` this is the residual the iterate reached
    before it was abandoned (above ``fallback_tol``; ``inf`` for an all-zero Gramian), never 0: use
    :func:`alpha_fair_with_status` to tell a fallback from a solution without reading values."""
    w, res, _ = alpha_fair_with_status(gramian, alpha, iters=iters, fallback_tol=fallback_tol)
    return w, res


def alpha_fair_with_status(
    gramian: Tensor, alpha: float, *, iters: int = 12, fallback_tol: float = 1e-3
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`alpha_fair_with_residual` plus a status code (:mod:`molearn.solvers` ``CONVERGED``,
    ``ITERATION_LIMIT``, ``INFEASIBLE``), batched, no host sync.

    ``CONVERGED``: the weights solve the system to ``fallback_tol``. Otherwise ``w = 0`` is returned and
    the status says why: ``ITERATION_LIMIT`` when the last iterate proves that a positive solution
    exists (its direction ``Σ v_i g_i/‖g_i‖`` improves every task: a solvable but hard problem, raise
    ``iters``), ``INFEASIBLE`` when it does not, which is certain when no improving direction exists
    (Pareto-stationary gradients, e.g. opposite ones: Gordan's theorem) and for an all-zero Gramian; a
    feasible problem whose iterate is still far from the solution can land here too.
    """
    if not alpha > 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    g = gramian.to(torch.float64)
    k = g.shape[-1]
    ia = 1.0 / alpha
    diag = g.diagonal(dim1=-2, dim2=-1)
    mask = diag > diag.amax(-1, keepdim=True) * _ZERO_TOL
    dd = torch.where(mask, diag, 1.0)
    sig = dd.rsqrt()
    both = mask.unsqueeze(-1) & mask.unsqueeze(-2)
    corr = torch.where(both, g * (sig.unsqueeze(-1) * sig.unsqueeze(-2)), eye(k, g.device, g.dtype))
    lc = dd.log() * (-(1.0 - ia) / 2)  # log c
    c = lc.exp()

    # two candidate starts, each scaled optimally along its ray: tau^(1+1/a) = sum c v^(1-1/a) / v'Cv
    lv = lc.unsqueeze(-2) * _start_exponents(alpha, g.device)  # (..., 2, K)
    cand = lv.exp()
    vcv = ((cand @ corr) * cand).sum(-1, keepdim=True)
    cvp = (lc.unsqueeze(-2) + (1.0 - ia) * lv).exp().sum(-1, keepdim=True)
    vcv = vcv.clamp_min(cvp * 1e-30)
    log_tau = (cvp.log() - vcv.log()) * (alpha / (alpha + 1.0))
    # phi at the ray optimum, in closed form
    if alpha == 1.0:
        phi = 0.5 * cvp.squeeze(-1) - (lv + log_tau).sum(-1)
    else:
        phi = (0.5 - 1.0 / (1.0 - ia)) * (cvp * ((1.0 - ia) * log_tau).exp()).squeeze(-1)
    pick = (phi[..., 1] < phi[..., 0]).unsqueeze(-1)
    cand = cand * log_tau.exp()
    v = torch.where(pick, cand[..., 1, :], cand[..., 0, :])

    # Newton on phi: v_new = v - H^-1 (Cv - b) = (1 + 1/a) H^-1 b, H = C + diag(b / (a v)), applied in
    # log space with the relative change clipped; H is symmetric positive definite: Cholesky (no LU,
    # which is not sync-free on the GPU)
    corr_r = torch.add(corr, eye(k, g.device, g.dtype), alpha=_NEWTON_RIDGE)
    lo, hi = -_STEP_DOWN, _STEP_UP
    for _ in range(iters):
        b = c * v.pow(-ia)
        hess = torch.add(corr_r, torch.diag_embed(b / v), alpha=ia)
        vn = torch.cholesky_solve(b.unsqueeze(-1), torch.linalg.cholesky_ex(hess)[0]).squeeze(-1)
        v = v * (vn * (1.0 + ia) / v - 1.0).clamp(lo, hi).exp()
    # residual in the original units: (Gw)_i = √G_ii (Cv)_i and w_i^(-1/a) = √G_ii b_i (masked tasks: 0)
    b = c * v.pow(-ia)
    root = torch.where(mask, dd.sqrt(), 0.0)
    num = (root * ((v.unsqueeze(-2) @ corr).squeeze(-2) - b)).norm(dim=-1, keepdim=True)
    den = (root * b).norm(dim=-1, keepdim=True)
    res = torch.nan_to_num(num / den, nan=torch.inf)
    w = torch.nan_to_num(torch.where(mask, sig * v, 0.0), nan=0.0, posinf=0.0)
    ok = res <= fallback_tol
    # feasibility certificate: a direction d = Σ u_i g_i/|g_i| (u ≥ 0) that improves every non-zero task,
    # (C u)_i > 0, proves that a positive solution exists (Gordan's theorem: none can when it does not).
    # Candidates: the iterate v, its square root (closer to the start when Newton overshoots) and 1.
    vm = torch.where(mask, v, 0.0)
    cands = torch.stack([vm, vm.sqrt(), mask.to(vm.dtype)], dim=-2)  # (..., 3, K)
    gains = cands @ corr
    margin = torch.where(mask.unsqueeze(-2), gains, torch.inf).amin(-1)
    none = ~mask.any(-1, keepdim=True)  # all-zero Gramian: nothing to solve, no solution
    solvable = (margin > _IMPROVES * cands.norm(dim=-1)).any(-1, keepdim=True)  # False for NaN too
    infeasible = none | ~solvable
    res = torch.where(none, torch.inf, res)
    status = torch.where(ok & ~none, CONVERGED, torch.where(infeasible, INFEASIBLE, ITERATION_LIMIT))
    return torch.where(ok & ~none, w, 0.0), res.squeeze(-1), status.squeeze(-1)


def alpha_fair_residual(gramian: Tensor, weights: Tensor, alpha: float) -> Tensor:
    r"""Relative residual :math:`\|G w - w^{-1/\alpha}\| / \|w^{-1/\alpha}\|` over the tasks with ``w_i > 0``.

    Scale-invariant (unchanged when ``G → sG`` and ``w → s^{-α/(α+1)} w``). Batched; float64; 0 when
    every weight is 0 (all-zero Gramian).
    """
    g = gramian.to(torch.float64)
    w = weights.to(torch.float64)
    pos = w > 0
    tiny = torch.finfo(torch.float64).tiny
    rhs = torch.where(pos, w.clamp_min(tiny).pow(-1.0 / alpha), 0.0)
    r = torch.where(pos, (g @ w.unsqueeze(-1)).squeeze(-1) - rhs, 0.0)
    return r.norm(dim=-1) / rhs.norm(dim=-1).clamp_min(tiny)


def alpha_fair_sgd(
    gramian: Tensor,
    alpha: float,
    *,
    steps: int = 20,
    lr: float = 0.1,
    momentum: float = 0.5,
    eps: float = 1e-8,
    max_norm: float = 1.0,
) -> Tensor:
    r"""FairGrad's RL solver: momentum SGD on :math:`\|A w - (w + \epsilon)^{-1/\alpha}\|^2`, best iterate.

    The solver of the official Meta-World code (OptMN-Lab/fairgrad ``mtrl_files/fairgrad.py``,
    ``Agent.fairgrad``), batched over leading dimensions, float64, without host synchronisation:

    * start :math:`w_0 = \mathbb 1/K`; ``A`` is the raw Gramian (not normalised);
    * ``steps`` evaluations of :math:`f(w) = \|r\|^2`, :math:`r = A w - (w + \epsilon)^{-1/\alpha}`,
      at :math:`w_0, \dots, w_{steps-1}`; after each evaluation one step: the gradient
      :math:`\nabla f = 2\,(A^\top r + \tfrac1\alpha (w+\epsilon)^{-1/\alpha-1} \odot r)` (analytic) is
      clipped as ``torch.nn.utils.clip_grad_norm_(max_norm)`` does (factor
      :math:`\min(1, \text{max\_norm}/(\|\nabla f\| + 10^{-6}))`), then the ``torch.optim.SGD`` momentum
      step :math:`v \leftarrow \mu v + \nabla f` (:math:`v_0 = 0`), :math:`w \leftarrow w - \text{lr}\, v`,
      then :math:`w \leftarrow \max(w, 10^{-8})`;
    * the result is the evaluated iterate with the smallest objective (the first one on ties; the start
      counts; the iterate produced by the last step is never evaluated and never returned, as in the
      official loop). Non-finite objectives are never selected.

    Not a root finder: with the fixed step (at most ``lr·max_norm/(1-μ)`` per coordinate and step) it
    only reaches solutions near ``1/K``; the result depends on the scale of the Gramian (unlike
    :func:`alpha_fair`). The official code runs it in float32 on the CPU.

    Args:
        gramian: (..., K, K) Gramian.
        alpha: α > 0.
        steps: objective evaluations (official 20).
        lr, momentum: ``torch.optim.SGD`` hyper-parameters (official 0.1 and 0.5).
        eps: offset inside the power (official 1e-8); also the lower clamp of ``w``.
        max_norm: gradient clipping norm (official 1.0).

    Returns:
        (..., K) float64 weights ``w ≥ 1e-8``.
    """
    if not alpha > 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    g = gramian.to(torch.float64)
    k = g.shape[-1]
    ia = 1.0 / alpha
    w = torch.full(g.shape[:-1], 1.0 / k, dtype=g.dtype, device=g.device)
    buf = torch.zeros_like(w)
    best_w = w
    best_obj = torch.full(g.shape[:-2], float("inf"), dtype=g.dtype, device=g.device)
    gt = g.transpose(-1, -2)
    for t in range(steps):
        s = w + eps
        b = s.pow(-ia)
        r = (g @ w.unsqueeze(-1)).squeeze(-1) - b
        obj = (r * r).sum(-1)
        better = obj < best_obj  # False for NaN: a non-finite iterate is never selected
        best_obj = torch.where(better, obj, best_obj)
        best_w = torch.where(better.unsqueeze(-1), w, best_w)
        if t == steps - 1:
            break  # the official loop still steps once more, but never uses the result
        grad = 2.0 * ((gt @ r.unsqueeze(-1)).squeeze(-1) + (ia * b / s) * r)
        norm = torch.linalg.vector_norm(grad, dim=-1, keepdim=True)
        grad = grad * (max_norm / (norm + 1e-6)).clamp(max=1.0)
        buf = momentum * buf + grad
        w = (w - lr * buf).clamp_min(eps)
    return best_w
