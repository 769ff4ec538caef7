"""UPGrad: sum of the projections of every gradient onto the dual cone of all gradients."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from ..solvers import KKT_TOL, DualConeSolver, project_dual_cone_residual, status_from_residual
from ..solvers.consts import eye, scaled_eye, scaled_ones
from ._base import Inputs, Method, Needs, Output, check_gramian


def regularized_gramian(gramian: Tensor, norm_eps: float, reg_eps: float) -> Tensor:
    """TorchJD's ``regularize(normalize(G, norm_eps), reg_eps)``: ``G / tr G`` (zero if ``tr G < norm_eps``)
    plus ``reg_eps·I``, in float64."""
    g = gramian.to(torch.float64)
    tr = g.diagonal(dim1=-2, dim2=-1).sum(-1)[..., None, None]
    g = torch.where(tr < norm_eps, 0.0, g / tr.clamp_min(torch.finfo(torch.float64).tiny))
    return torch.add(g, eye(g.shape[-1], g.device, g.dtype), alpha=reg_eps)


def pref_weights(pref_vector: Tensor | None, k: int, like: Tensor) -> Tensor:
    if pref_vector is None:
        return torch.full((k,), 1.0 / k, dtype=torch.float64, device=like.device)
    if pref_vector.shape != (k,):
        raise ValueError(f"pref_vector has shape {tuple(pref_vector.shape)}, expected ({k},)")
    return pref_vector.to(device=like.device, dtype=torch.float64)


class _DualConeMethod(Method):
    """Shared set-up of UPGrad and DualProj: options, regularised Gramian, one batched projection."""

    needs: ClassVar[Needs] = Needs(gramian=True)

    def __init__(
        self,
        pref_vector: Tensor | None = None,
        norm_eps: float = 1e-4,
        reg_eps: float = 1e-4,
        solver: DualConeSolver = "auto",
        iters: int | None = None,
    ) -> None:
        if norm_eps < 0 or reg_eps < 0:
            raise ValueError("norm_eps and reg_eps must be non-negative")
        if solver not in ("auto", "enumerate", "pivot", "prox"):
            raise ValueError(f"unknown solver {solver!r}")
        self.pref_vector = pref_vector
        self.norm_eps = norm_eps
        self.reg_eps = reg_eps
        self.solver = solver
        self.iters = iters

    def _project(self, inputs: Inputs, rows: bool) -> tuple[Tensor, Tensor]:
        """Projections (and KKT residuals) of ``diag(p)`` (``rows``) or of ``p`` onto the dual cone."""
        gram = check_gramian(inputs.gramian, type(self).__name__)
        k = gram.shape[-1]
        g = regularized_gramian(gram, self.norm_eps, self.reg_eps)
        if self.pref_vector is None:
            u = (
                scaled_eye(k, g.device, g.dtype, 1.0 / k)
                if rows
                else scaled_ones(k, g.device, g.dtype, 1.0 / k)
            )
            u_max: float | None = 1.0 / k
        else:
            p = pref_weights(self.pref_vector, k, gram)
            u = torch.diag(p) if rows else p
            u_max = None
        # G / tr G has a diagonal ≤ 1: the residual's scale (exact up to that bound)
        v, res = project_dual_cone_residual(
            g,
            u,
            solver=self.solver,
            iters=self.iters,
            positive_definite=self.reg_eps > 0,
            scale=1.0,
            u_max=u_max,
        )
        assert res is not None
        return v, res


class UPGrad(_DualConeMethod):
    r"""Unconflicting projection of gradients (Quinton & Rey, "Jacobian Descent for Multi-Objective
    Optimization", 2024, `arXiv:2406.16232 <https://arxiv.org/abs/2406.16232>`_; official code: TorchJD).

    .. math:: w = \sum_{i=1}^K v^{(i)}, \qquad v^{(i)} = \arg\min_{v \ge p_i e_i} v^\top \tilde G v,
        \qquad \tilde G = G / \operatorname{tr} G + \epsilon_{\text{reg}} I

    i.e. :math:`J^\top v^{(i)}` is the projection of :math:`p_i g_i` onto the dual cone
    :math:`\{x : Jx \ge 0\}` and the update is the sum of the projections. ``pref_vector`` :math:`p`
    defaults to :math:`\frac1K 1` (TorchJD's default, the mean). As in TorchJD 0.18: the Gramian is
    set to zero if :math:`\operatorname{tr} G <` ``norm_eps`` (then :math:`w = p`), and ``reg_eps``
    makes it positive definite, so the update is non-conflicting up to ``reg_eps`` relative to
    :math:`\operatorname{tr} G` (exactly with ``norm_eps = reg_eps = 0``). TorchJD solves the K QPs with
    quadprog on the CPU; molearn solves them in one batch with an exact sync-free active-set method
    (:func:`molearn.solvers.project_dual_cone`), same weights up to the solvers' accuracy.
    ``info["residual"]`` is the largest KKT residual of the K subproblems.
    """

    def combine(self, inputs: Inputs) -> Output:
        v, res = self._project(inputs, rows=True)
        worst = res.amax()
        info = {"residual": worst, "status": status_from_residual(worst, KKT_TOL)}
        return Output(weights=v.sum(0).to(inputs.losses.dtype), info=info)
