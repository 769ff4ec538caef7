"""EPO: exact Pareto optimal search."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from ..solvers.consts import combinations
from ..solvers.linalg import solve_ex
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
    LP optimum is unique. K = 1: α = 1, the gradient itself. :func:`epo_weights` solves N such LPs in
    one batched call; :meth:`combine_many` (used by :func:`molearn.pareto.preference_sweep`) gives N
    instances' weights at once, equal to N :meth:`combine` calls.
    """

    needs: ClassVar[Needs] = Needs(gramian=True)
    task_grad: ClassVar[TaskGrad] = "weighted"

    def __init__(self, pref: PrefLike = None, eps: float = 1e-4, relax: bool = False) -> None:
        if not eps >= 0:
            raise ValueError(f"EPO: eps must be >= 0, got {eps}")
        self.pref = check_pref(pref, "EPO", positive=True)
        self.eps = float(eps)
        self.relax = bool(relax)

    def combine(self, inputs: Inputs) -> Output:
        k = inputs.num_objectives
        if k > MAX_OBJECTIVES:
            raise ValueError(f"EPO enumerates LP vertices and supports K <= {MAX_OBJECTIVES}, got K={k}")
        losses = inputs.losses.detach()
        gram = check_gramian(inputs.gramian, "EPO").detach()
        r = resolve_pref(self.pref, k, "EPO", losses)
        w, info = epo_weights(
            losses.unsqueeze(0), gram.unsqueeze(0), r.unsqueeze(0), eps=self.eps, relax=self.relax
        )
        return Output(weights=w[0].to(losses.dtype), info={key: v[0] for key, v in info.items()})

    @staticmethod
    def combine_many(methods: Sequence[Method], losses: Tensor, gramian: Tensor | None) -> Tensor | None:
        """Weights (N, K) of N EPO instances, one per row of ``losses`` (N, K) and ``gramian`` (N, K, K),
        solved in batched calls (what :func:`molearn.pareto.preference_sweep` uses); equal to calling
        :meth:`combine` row by row. ``None`` if they differ in anything but ``pref``."""
        if gramian is None or not methods or not all(type(m) is EPO for m in methods):
            return None
        ms = [m for m in methods if isinstance(m, EPO)]
        if len({(m.eps, m.relax) for m in ms}) != 1:
            return None
        n, k = losses.shape
        if k > MAX_OBJECTIVES:
            return None
        prefs = torch.stack([resolve_pref(m.pref, k, "EPO", losses) for m in ms])
        # bound the number of small systems per call (N × C(2K+1, K-1)) to keep memory modest
        chunk = max(1, _MAX_SYSTEMS // _combinations(k, losses.device).shape[0])
        out = [
            epo_weights(
                losses[i : i + chunk],
                gramian[i : i + chunk],
                prefs[i : i + chunk],
                eps=ms[0].eps,
                relax=ms[0].relax,
            )[0]
            for i in range(0, n, chunk)
        ]
        return torch.cat(out).to(losses.dtype)


_MAX_SYSTEMS = 1 << 18


def _combinations(k: int, device: torch.device) -> Tensor:
    """Every choice of K−1 active inequalities among the 2K+1 of the LPs, shape (M, K−1)."""
    return combinations(2 * k + 1, k - 1, device)


def epo_weights(
    losses: Tensor, gramian: Tensor, pref: Tensor, *, eps: float = 1e-4, relax: bool = False
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""EPO's weights :math:`K\alpha` (N, K) in float64 for a batch: ``losses`` (N, K), ``gramian``
    (N, K, K), ``pref`` (N, K) (each row one independent LP; see :class:`EPO`), with diagnostics
    ``mu``, ``balance``, ``feasible`` (each (N,)). Pure torch, no host sync."""
    x = losses.to(torch.float64)
    gram = gramian.to(torch.float64)
    r = pref.to(torch.float64)
    n, k = x.shape
    dev = x.device
    tiny = torch.finfo(torch.float64).tiny

    # adjustments (official ``adjustments``/``mu``)
    rl = r * x.clamp_min(0)
    lhat = rl / rl.sum(1, keepdim=True).clamp_min(tiny)
    keep = lhat > torch.finfo(torch.float64).eps
    mu = torch.where(keep, lhat * torch.log((lhat * k).clamp_min(tiny)), torch.zeros_like(lhat)).sum(1)
    a = r * (torch.log((lhat * k).clamp_min(1e-3)) - mu.unsqueeze(1))

    c = gram / torch.diagonal(gram, dim1=1, dim2=2).mean(1).clamp_min(tiny).view(n, 1, 1)
    ca = (c @ a.unsqueeze(2)).squeeze(2)
    balance = mu > eps

    # balance LP: rhs as the official code sets it (-inf = no constraint)
    zeros = torch.zeros_like(ca)
    pos = ca > 0
    star = rl == rl.amax(1, keepdim=True)
    rhs_bal = torch.where(star, zeros, torch.where(pos, torch.full_like(ca, -float("inf")), ca))
    rhs_bal = torch.where(pos.any(1, keepdim=True), rhs_bal, zeros)
    # descent LP
    extra = ca.amax(1).clamp_max(0)
    rhs_c = torch.where(balance.unsqueeze(1), rhs_bal, zeros)
    on_c = torch.isfinite(rhs_c)
    on_extra = ~balance & (not relax)
    objective = torch.where(balance.unsqueeze(1), ca, c.sum(1))

    eye = torch.eye(k, dtype=torch.float64, device=dev).expand(n, k, k)
    a_rows = torch.cat([eye, c, ca.unsqueeze(1)], dim=1)  # (N, 2K+1, K): A alpha >= b
    b = torch.cat([zeros, torch.where(on_c, rhs_c, zeros), extra.unsqueeze(1)], dim=1)
    on = torch.cat([torch.ones_like(on_c), on_c, on_extra.unsqueeze(1)], dim=1)

    combos = _combinations(k, dev)
    m_c = combos.shape[0]
    ones = torch.ones(n, m_c, 1, k, dtype=torch.float64, device=dev)
    m = torch.cat([a_rows[:, combos], ones], dim=2)  # (N, M, K, K)
    rhs = torch.cat([b[:, combos], ones[..., 0]], dim=2)  # (N, M, K)
    alpha, _ = solve_ex(m, rhs)
    finite = torch.isfinite(alpha).all(dim=2)
    alpha = torch.where(finite.unsqueeze(2), alpha, torch.zeros_like(alpha))
    tol = 1e-9 * (1 + b.abs()).unsqueeze(1)
    resid = ((m @ alpha.unsqueeze(3)).squeeze(3) - rhs).abs().amax(dim=2)
    slack = alpha @ a_rows.transpose(1, 2) - b.unsqueeze(1)  # (N, M, 2K+1)
    ok = (slack >= -tol) | ~on.unsqueeze(1)
    valid = finite & on[:, combos].all(dim=2) & ok.all(dim=2) & (resid <= 1e-9 * (1 + rhs.abs().amax(dim=2)))
    value = (alpha * objective.unsqueeze(1)).sum(2)
    score = torch.where(valid, value, torch.full_like(value, -float("inf")))
    best = alpha.gather(1, score.argmax(dim=1).view(n, 1, 1).expand(n, 1, k)).squeeze(1)
    feasible = valid.any(dim=1)
    alpha = torch.where(feasible.unsqueeze(1), best, r / r.sum(1, keepdim=True))
    return k * alpha, {"mu": mu, "balance": balance, "feasible": feasible}
