"""DualProj: projection of the (preference-weighted) mean gradient onto the dual cone of the gradients."""

from __future__ import annotations

from ..solvers import KKT_TOL, status_from_residual
from ._base import Inputs, Output
from ._upgrad import _DualConeMethod


class DualProj(_DualConeMethod):
    r"""Projection of the averaged gradient onto the dual cone of the gradients (GEM's projection,
    Lopez-Paz & Ranzato, NeurIPS 2017, Eq. 11; as an aggregator in Quinton & Rey, "Jacobian Descent
    for Multi-Objective Optimization", 2024, `arXiv:2406.16232 <https://arxiv.org/abs/2406.16232>`_;
    official code: TorchJD).

    .. math:: w = \arg\min_{v \ge p} v^\top \tilde G v, \qquad
        \tilde G = G / \operatorname{tr} G + \epsilon_{\text{reg}} I

    so :math:`J^\top w` is the projection of :math:`J^\top p` onto :math:`\{x : Jx \ge 0\}`.
    ``pref_vector`` :math:`p` defaults to :math:`\frac1K 1`. ``norm_eps`` / ``reg_eps`` as in
    :class:`UPGrad` and TorchJD 0.18 (non-conflicting up to ``reg_eps``; exactly with both 0). TorchJD
    uses quadprog on the CPU; molearn the exact sync-free :func:`molearn.solvers.project_dual_cone`.
    """

    def combine(self, inputs: Inputs) -> Output:
        v, res = self._project(inputs, rows=False)
        info = {"residual": res, "status": status_from_residual(res, KKT_TOL)}
        return Output(weights=v.to(inputs.losses.dtype), info=info)
