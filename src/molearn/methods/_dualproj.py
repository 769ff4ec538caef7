"""DualProj: projection of the (preference-weighted) mean gradient onto the dual cone of the gradients."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from ..solvers import kkt_residual_dual_cone, project_dual_cone
from ._base import Inputs, Method, Needs, Output, check_gramian
from ._upgrad import pref_weights, regularized_gramian


class DualProj(Method):
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

    needs: ClassVar[Needs] = Needs(gramian=True)

    def __init__(
        self, pref_vector: Tensor | None = None, norm_eps: float = 1e-4, reg_eps: float = 1e-4
    ) -> None:
        if norm_eps < 0 or reg_eps < 0:
            raise ValueError("norm_eps and reg_eps must be non-negative")
        self.pref_vector = pref_vector
        self.norm_eps = norm_eps
        self.reg_eps = reg_eps

    def combine(self, inputs: Inputs) -> Output:
        gram = check_gramian(inputs.gramian, "DualProj")
        k = gram.shape[-1]
        g = regularized_gramian(gram, self.norm_eps, self.reg_eps)
        u = pref_weights(self.pref_vector, k, gram)
        v = project_dual_cone(g, u)
        res = kkt_residual_dual_cone(g, u, v)
        return Output(weights=v.to(inputs.losses.dtype), info={"residual": res})
