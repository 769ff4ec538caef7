"""EPO: exact Pareto optimal search."""

from __future__ import annotations

import itertools
from typing import ClassVar

import torch
from torch import Tensor

from ._base import Inputs, Method, Needs, Output, TaskGrad, check_gramian
from ._preference import PrefLike, check_pref, resolve_pref

MAX_OBJECTIVES = 8


class EPO(Method):
    r"""Exact Pareto optimal search (Mahapatra & Rajan, "Multi-Task Learning with User Preferences: Gradient
    Descent with Controlled Ascent in Pareto Optimization", ICML 2020; official code dbmptr/EPOSearch,
    ``epo_lp.py``; also LibMOON ``epo_solver.py``).

    The preference ``pref`` :math:`r` asks for losses on the ray :math:`r_1 L_1 = \dots = r_K L_K`
    (:math:`L_i \propto 1/r_i`). With :math:`\hat l = r\odot L / \sum_i r_i L_i`, the non-uniformity
    :math:`\mu = \sum_i \hat l_i \log(K \hat l_i)` and the adjustment
    :math:`a = r \odot (\log(K\hat l) - \mu)`, :math:`C = GG^\top`, one LP over the simplex per step:

    * :math:`\mu > \epsilon` (balance): :math:`\max_\alpha \alpha^\top Ca` s.t. :math:`(C\alpha)_j \ge
      \text{rhs}_j` with, if some :math:`(Ca)_j > 0`: rhs = :math:`Ca`, no constraint where
      :math:`(Ca)_j > 0`, and 0 for the objectives of largest :math:`r_j L_j`; otherwise rhs = 0.
    * :math:`\mu \le \epsilon` (descent): :math:`\max_\alpha \mathbf 1^\top C\alpha` s.t.
      :math:`C\alpha \ge 0` and (unless ``relax``) :math:`\alpha^\top Ca \ge \min(\max_j (Ca)_j, 0)`.

    Weights :math:`w = K\alpha` (the official training scripts multiply by the number of tasks);
    ``task_grad="weighted"`` (they back-propagate :math:`\sum_i w_i L_i`). Defaults: ``eps=1e-4``,
    ``relax=False`` (official). ``pref``: strictly positive entries (a zero makes the ray
    degenerate), normalised to sum 1 (the ray does not depend on the scale), default uniform.

    Differences: the official code solves the LP with cvxpy/GLPK on the CPU; molearn enumerates the
    vertices of the feasible polytope in torch (every choice of K−1 active inequalities plus
    :math:`\sum\alpha = 1`, solved as one batch with ``torch.linalg.solve_ex``, feasibility checked with a
    tolerance, best objective kept): exact, no host sync, but :math:`\binom{2K+1}{K-1}` small systems,
    so K ≤ 8 (ValueError beyond). C is divided by its mean diagonal first (the LPs are invariant to that),
    so badly scaled gradients work. Where the LP is infeasible (cvxpy returns ``None``), molearn uses the
    official patch :math:`\alpha = r/\sum r`; ``info["feasible"]`` reports it. :math:`\log(K\hat l)`
    is clipped at :math:`\log 10^{-3}` as in LibMOON (the official code gives −∞ and falls back to the
    patch), and negative losses are clipped at 0 (the official code raises). LibMOON passes
    :math:`r = 1/p` (losses ∝ p); molearn follows the official convention (losses ∝ 1/pref). Ties between
    optimal vertices go to the first one found, so exact permutation equivariance holds only where the
    LP optimum is unique. K = 1: α = 1, the gradient itself.
    """

    needs: ClassVar[Needs] = Needs(gramian=True)
    task_grad: ClassVar[TaskGrad] = "weighted"

    def __init__(self, pref: PrefLike = None, eps: float = 1e-4, relax: bool = False) -> None:
        if not eps >= 0:
            raise ValueError(f"EPO: eps must be >= 0, got {eps}")
        self.pref = check_pref(pref, "EPO", positive=True)
        self.eps = float(eps)
        self.relax = bool(relax)
        self._combos: dict[tuple[int, str], Tensor] = {}

    def _combinations(self, k: int, device: torch.device) -> Tensor:
        key = (k, str(device))
        if key not in self._combos:
            rows = list(itertools.combinations(range(2 * k + 1), k - 1))
            self._combos[key] = torch.tensor(rows, dtype=torch.long).reshape(len(rows), k - 1).to(device)
        return self._combos[key]

    def combine(self, inputs: Inputs) -> Output:
        k = inputs.num_objectives
        if k > MAX_OBJECTIVES:
            raise ValueError(f"EPO enumerates LP vertices and supports K <= {MAX_OBJECTIVES}, got K={k}")
        losses = inputs.losses.detach()
        gram = check_gramian(inputs.gramian, "EPO").detach().to(torch.float64)
        x = losses.to(torch.float64)
        r = resolve_pref(self.pref, k, "EPO", x)
        tiny = torch.finfo(torch.float64).tiny

        # adjustments (official ``adjustments``/``mu``)
        rl = r * x.clamp_min(0)
        lhat = rl / rl.sum().clamp_min(tiny)
        keep = lhat > torch.finfo(torch.float64).eps
        mu = torch.where(keep, lhat * torch.log((lhat * k).clamp_min(tiny)), torch.zeros_like(lhat)).sum()
        a = r * (torch.log((lhat * k).clamp_min(1e-3)) - mu)

        c = gram / torch.diagonal(gram).mean().clamp_min(tiny)
        ca = c @ a
        balance = mu > self.eps

        # balance LP: rhs as the official code sets it (-inf = no constraint)
        pos = ca > 0
        star = rl == rl.max()
        inf = torch.full_like(ca, float("inf"))
        rhs_bal = torch.where(star, torch.zeros_like(ca), torch.where(pos, -inf, ca))
        rhs_bal = torch.where(pos.any(), rhs_bal, torch.zeros_like(ca))
        # descent LP
        extra = torch.minimum(ca.max(), torch.zeros_like(ca[0]))
        extra_on = torch.tensor(not self.relax, device=x.device)

        rhs_c = torch.where(balance, rhs_bal, torch.zeros_like(ca))
        on_c = torch.isfinite(rhs_c)
        on_extra = ~balance & extra_on
        objective = torch.where(balance, ca, c.sum(0))

        eye = torch.eye(k, dtype=torch.float64, device=x.device)
        a_rows = torch.cat([eye, c, ca.unsqueeze(0)])  # (2K+1, K): A alpha >= b
        b = torch.cat([torch.zeros_like(ca), torch.where(on_c, rhs_c, torch.zeros_like(ca)), extra.view(1)])
        on = torch.cat([torch.ones_like(on_c), on_c, on_extra.view(1)])

        combos = self._combinations(k, x.device)
        n = combos.shape[0]
        m = torch.cat([a_rows[combos], torch.ones(n, 1, k, dtype=torch.float64, device=x.device)], dim=1)
        rhs = torch.cat([b[combos], torch.ones(n, 1, dtype=torch.float64, device=x.device)], dim=1)
        alpha, _ = torch.linalg.solve_ex(m, rhs)
        finite = torch.isfinite(alpha).all(dim=1)
        alpha = torch.where(finite.unsqueeze(1), alpha, torch.zeros_like(alpha))
        tol = 1e-9 * (1 + b.abs())
        resid = ((m @ alpha.unsqueeze(2)).squeeze(2) - rhs).abs().amax(dim=1)
        slack = alpha @ a_rows.T - b  # (n, 2K+1)
        ok = (slack >= -tol) | ~on
        valid = finite & on[combos].all(dim=1) & ok.all(dim=1) & (resid <= 1e-9 * (1 + rhs.abs().amax(dim=1)))
        score = torch.where(valid, alpha @ objective, torch.full_like(alpha[:, 0], -float("inf")))
        best = alpha[score.argmax()]
        feasible = valid.any()
        alpha = torch.where(feasible, best, r / r.sum())
        info = {"mu": mu, "balance": balance, "feasible": feasible}
        return Output(weights=(k * alpha).to(losses.dtype), info=info)
