"""PMGDA: preference-based multiple gradient descent."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from ..solvers import min_norm, min_norm_frank_wolfe
from ..solvers.consts import combinations
from ..solvers.linalg import solve_ex
from ._base import Inputs, Method, Needs, Output, TaskGrad, check_gramian
from ._preference import PrefLike, check_pref, resolve_pref

MAX_OBJECTIVES = 8
_MAX_SYSTEMS = 1 << 18


def _combinations(k: int, device: torch.device) -> Tensor:
    """Every choice of K+1 active inequalities among the 2K+2 of the correction LP."""
    return combinations(2 * k + 2, k + 1, device)


def pmgda_weights(
    losses: Tensor,
    gramian: Tensor,
    pref: Tensor,
    *,
    h_tol: float = 1e-2,
    sigma: float = 0.8,
    norm_eps: float = 1e-4,
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""PMGDA's loss weights for a batch: ``losses`` (N, K), ``gramian`` (N, K, K), ``pref`` (N, K).

    Returns the weights (N, K) in float64 and diagnostics (each (N,)): ``h`` (distance of the losses
    to the preference ray), ``correction`` (whether the LP branch was used) and ``feasible`` (the LP
    had a solution). See :class:`PMGDA` for the rule; pure torch, no host sync.
    """
    f = losses.to(torch.float64)
    c = gramian.to(torch.float64)
    p = pref.to(torch.float64)
    n, k = f.shape
    dev = f.device
    tiny = torch.finfo(torch.float64).tiny

    # constraint h(f) = PBI distance d2 to the ray of p, and its gradient q = ∂h/∂f
    u = p / p.norm(dim=1, keepdim=True)
    r = f - (f * u).sum(1, keepdim=True) * u
    h = r.norm(dim=1)
    q = r / h.clamp_min(tiny).unsqueeze(1)

    # Gramian of the K+1 rows [J; ∇h = qᵀJ]
    cq = (c @ q.unsqueeze(2)).squeeze(2)
    qcq = (q * cq).sum(1, keepdim=True)
    top = torch.cat([c, cq.unsqueeze(2)], dim=2)
    bottom = torch.cat([cq, qcq], dim=1).unsqueeze(1)
    gg = torch.cat([top, bottom], dim=1)  # (N, K+1, K+1)
    norms = gg.diagonal(dim1=1, dim2=2).clamp_min(0).sqrt()  # ‖g_j‖, ‖∇h‖ last
    den = norms + norm_eps
    ggn = gg / torch.where(den > 0, den, 1.0).unsqueeze(1)  # column j divided by ‖g_j‖ + eps (0/0 → 0)
    # the LP is invariant to scaling all its rows and right-hand sides together: work at unit scale
    scale = norms.amax(1).clamp_min(tiny).view(n, 1, 1)
    ggn = ggn / scale
    h_rhs = sigma * norms[:, k] / scale.view(n)

    # LP over z = (μ_0..μ_K, t): min t  s.t.  (ggn μ)_i + t >= 0 (i < K), (ggn μ)_K >= σ‖∇h‖,
    # μ >= 0, Σμ = 1.  Rows A z >= b:
    ones_t = torch.ones(n, k, 1, dtype=torch.float64, device=dev)
    rows_obj = torch.cat([ggn[:, :k], ones_t], dim=2)  # (N, K, K+2)
    row_h = torch.cat([ggn[:, k:], torch.zeros(n, 1, 1, dtype=torch.float64, device=dev)], dim=2)
    eye = torch.eye(k + 1, k + 2, dtype=torch.float64, device=dev).expand(n, k + 1, k + 2)
    a_rows = torch.cat([rows_obj, row_h, eye], dim=1)  # (N, 2K+2, K+2)
    zeros_k = torch.zeros(n, k, dtype=torch.float64, device=dev)
    b = torch.cat([zeros_k, h_rhs.unsqueeze(1), torch.zeros(n, k + 1, dtype=torch.float64, device=dev)], 1)

    combos = _combinations(k, dev)  # (M, K+1)
    m_c = combos.shape[0]
    simplex_row = torch.ones(k + 2, dtype=torch.float64, device=dev)
    simplex_row[k + 1] = 0.0
    sys = torch.cat([a_rows[:, combos], simplex_row.expand(n, m_c, 1, k + 2)], dim=2)  # (N, M, K+2, K+2)
    rhs = torch.cat([b[:, combos], torch.ones(n, m_c, 1, dtype=torch.float64, device=dev)], dim=2)
    z, _ = solve_ex(sys, rhs)
    finite = torch.isfinite(z).all(dim=2)
    z = torch.where(finite.unsqueeze(2), z, torch.zeros_like(z))
    resid = ((sys @ z.unsqueeze(3)).squeeze(3) - rhs).abs().amax(dim=2)
    slack = (z @ a_rows.transpose(1, 2)) - b.unsqueeze(1)  # (N, M, 2K+2)
    tol = 1e-9 * (1 + z.abs().amax(dim=2, keepdim=True))
    valid = finite & (slack >= -tol).all(dim=2) & (resid <= 1e-9 * (1 + z.abs().amax(dim=2)))
    score = torch.where(valid, -z[..., k + 1], torch.full_like(z[..., 0], -float("inf")))
    best = z.gather(1, score.argmax(dim=1).view(n, 1, 1).expand(n, 1, k + 2)).squeeze(1)
    feasible = valid.any(dim=1)
    fallback = torch.zeros(n, k + 1, dtype=torch.float64, device=dev)
    fallback[:, k] = 1.0  # no feasible μ: move along ∇h alone
    mu = torch.where(feasible.unsqueeze(1), best[:, : k + 1], fallback)
    inv = torch.where(norms > 0, 1.0 / norms.clamp_min(tiny), torch.zeros_like(norms))
    w_corr = mu[:, :k] * inv[:, :k] + (mu[:, k] * inv[:, k]).unsqueeze(1) * q

    # on the ray (h < h_tol): MGDA; LibMOON's solver is the Sener-Koltun closed form for K = 2
    # (0.999/0.001 clamps) and an exact QP otherwise
    w_mgda = min_norm_frank_wolfe(c) if k == 2 else min_norm(c)
    correction = h >= h_tol
    w = torch.where(correction.unsqueeze(1), w_corr, w_mgda)
    return w, {"h": h, "correction": correction, "feasible": feasible | ~correction}


class PMGDA(Method):
    r"""Preference-based multiple gradient descent (Zhang, Lin, Zhang, et al., "PMGDA: A Preference-based
    Multiple Gradient Descent Algorithm", 2024, `arXiv:2402.09492 <https://arxiv.org/abs/2402.09492>`_;
    official code LibMOON ``pmgda_solver.py``, ``solve_pmgda``).

    The preference is a constraint :math:`h(L) = 0` with :math:`h` the PBI distance of the losses to the
    ray of ``pref`` :math:`p` (losses ∝ p): :math:`u = p/\|p\|`, :math:`h = \|L - (L^\top u)u\|`. With
    the gradients :math:`g_i` (Gramian :math:`C`), :math:`g_{K} = \nabla h = \sum_i q_i g_i`,
    :math:`q = \partial h/\partial L`, and :math:`\hat g_j = g_j / (\|g_j\| + 10^{-4})`:

    * :math:`h <` ``h_tol`` (on the ray): MGDA weights (min-norm point of the :math:`g_i`);
    * otherwise the correction LP over :math:`\mu` on the simplex of :math:`K+1` entries:

      .. math:: \min_{\mu, t}\ t \quad\text{s.t.}\quad g_i^\top d \ge -t\ (i < K),\quad
                \nabla h^\top d \ge \sigma \|\nabla h\|,\qquad d = \sum_{j \le K} \mu_j \hat g_j

      (decrease h at a rate σ while keeping every objective's first-order change as small as
      possible), and the weights on the losses :math:`w_i = \mu_i / \|g_i\| + \mu_K q_i / \|\nabla h\|`
      (the official ``get_pmgda_DWA_coeff``; note the official code normalises by
      :math:`\|g\| + 10^{-4}` inside the LP and by :math:`\|g\|` here).

    The update is :math:`\sum_i w_i g_i` (LibMOON back-propagates :math:`\sum_i w_i L_i`:
    ``task_grad="weighted"``). Defaults ``h_tol=1e-2``, ``sigma=0.8`` from LibMOON's ``config/pmgda.json``,
    which the solver reads (its ``sigma=0.1``/``h_tol`` arguments are unused); ``norm_eps=1e-4`` is the
    official guard (set 0 for exact invariance to the gradients' scale; ``h_tol`` is absolute, like the
    official one). ``pref``: non-negative, positive sum, normalised to sum 1, default uniform.

    Differences: the official code solves the LP with cvxopt on the CPU; molearn enumerates the LP's
    vertices in torch (every choice of K+1 active inequalities among 2K+2, one batched
    ``torch.linalg.solve_ex``, best feasible vertex kept): exact, no host sync, K ≤ 8. Where the LP is
    infeasible (possible when ‖∇h‖ is below about ``4·norm_eps``, the official code then crashes) molearn
    moves along ∇h alone (μ = e_K); ``info["feasible"]`` reports it. A zero gradient row gets weight 0
    (the official code divides by zero). The MGDA branch uses LibMOON's solvers: the Sener–Koltun
    closed form with its 0.999/0.001 clamps for K = 2, the exact min-norm QP for K ≥ 3. The weights of
    the two branches have different scales (sum 1 on the ray, about 1/‖g‖ off it), as in the official
    code. Ties between optimal LP vertices go to the first found, so exact permutation equivariance
    holds where the LP optimum is unique. K = 1: h = 0, weight 1 (the gradient itself).
    :func:`pmgda_weights` is the batched rule; :meth:`combine_many` (used by
    :func:`molearn.pareto.preference_sweep`) gives N instances' weights in one solve.
    """

    needs: ClassVar[Needs] = Needs(gramian=True)
    task_grad: ClassVar[TaskGrad] = "weighted"

    def __init__(
        self, pref: PrefLike = None, h_tol: float = 1e-2, sigma: float = 0.8, norm_eps: float = 1e-4
    ) -> None:
        if not h_tol >= 0:
            raise ValueError(f"PMGDA: h_tol must be >= 0, got {h_tol}")
        if not 0 <= sigma < float("inf"):
            raise ValueError(f"PMGDA: sigma must be finite and >= 0, got {sigma}")
        if not 0 <= norm_eps < float("inf"):
            raise ValueError(f"PMGDA: norm_eps must be finite and >= 0, got {norm_eps}")
        self.pref = check_pref(pref, "PMGDA")
        self.h_tol = float(h_tol)
        self.sigma = float(sigma)
        self.norm_eps = float(norm_eps)

    def _hparams(self) -> tuple[float, float, float]:
        return (self.h_tol, self.sigma, self.norm_eps)

    def combine(self, inputs: Inputs) -> Output:
        k = inputs.num_objectives
        if k > MAX_OBJECTIVES:
            raise ValueError(f"PMGDA enumerates LP vertices and supports K <= {MAX_OBJECTIVES}, got K={k}")
        losses = inputs.losses.detach()
        gram = check_gramian(inputs.gramian, "PMGDA").detach()
        p = resolve_pref(self.pref, k, "PMGDA", losses)
        if k == 1:
            return Output(weights=torch.ones_like(losses))
        w, info = pmgda_weights(
            losses.unsqueeze(0),
            gram.unsqueeze(0),
            p.unsqueeze(0),
            h_tol=self.h_tol,
            sigma=self.sigma,
            norm_eps=self.norm_eps,
        )
        return Output(weights=w[0].to(losses.dtype), info={key: v[0] for key, v in info.items()})

    @staticmethod
    def combine_many(methods: Sequence[Method], losses: Tensor, gramian: Tensor | None) -> Tensor | None:
        """Weights (N, K) of N PMGDA instances (one per row of ``losses`` (N, K) and ``gramian``
        (N, K, K)) in one batched solve; ``None`` if they differ in anything but ``pref``."""
        if gramian is None or not methods or not all(type(m) is PMGDA for m in methods):
            return None
        ms = [m for m in methods if isinstance(m, PMGDA)]
        if len({m._hparams() for m in ms}) != 1:
            return None
        k = losses.shape[1]
        if k > MAX_OBJECTIVES or k == 1:
            return None
        prefs = torch.stack([resolve_pref(m.pref, k, "PMGDA", losses) for m in ms])
        h_tol, sigma, norm_eps = ms[0]._hparams()
        # bound the number of small systems per call (N × C(2K+2, K+1)) to keep memory modest
        chunk = max(1, _MAX_SYSTEMS // _combinations(k, losses.device).shape[0])
        out = [
            pmgda_weights(
                losses[i : i + chunk],
                gramian[i : i + chunk],
                prefs[i : i + chunk],
                h_tol=h_tol,
                sigma=sigma,
                norm_eps=norm_eps,
            )[0]
            for i in range(0, losses.shape[0], chunk)
        ]
        return torch.cat(out).to(losses.dtype)
