"""IMTL-G: the update with equal projections onto every task's unit gradient."""

from __future__ import annotations

from typing import ClassVar

from ..solvers import imtl_g_weights
from ._base import Inputs, Method, Needs, Output, check_gramian


class IMTLG(Method):
    r"""IMTL-G, the gradient part of Impartial Multi-task Learning (Liu et al., "Towards Impartial
    Multi-task Learning", ICLR 2021, https://openreview.net/forum?id=IMPnRXEWpvr).

    .. math:: d = \sum_i \alpha_i g_i,\quad \sum_i \alpha_i = 1,\quad d^\top u_1 = \dots = d^\top u_K,
        \quad u_i = g_i/\|g_i\|

    The paper (and the Nash-MTL/LibMTL code) solves it as :math:`\alpha_{2..K} = g_1 U^\top (D U^\top)^{-1}`,
    :math:`\alpha_1 = 1 - \sum_{j\ge2}\alpha_j`, with :math:`D_j = g_1 - g_j`, :math:`U_j = u_1 - u_j`.
    molearn uses the equivalent symmetric form :math:`\alpha = G^{+} n / \mathbb 1^\top G^{+} n`,
    :math:`n_i = \|g_i\|` (:func:`molearn.solvers.imtl_g_weights`): identical when the Gramian is
    nonsingular, permutation-equivariant and well defined when it is not. There the official code adds
    ``1e-8·I`` to :math:`DU^\top` (Nash-MTL) or fails (LibMTL); molearn uses a rank-revealing
    pseudo-inverse (cut-off ``K·eps`` relative), which is what TorchJD's ``IMTLG`` computes too
    (TorchJD zeroes the weights when :math:`|\mathbb 1^\top G^{+} n| < 10^{-12}`; molearn uses a relative
    threshold, so the weights are invariant to the scale of the gradients). The weights sum to 1; no
    parameters. LibMTL's ``IMTL`` also learns loss scales (IMTL-L); that part is not included here.
    """

    needs: ClassVar[Needs] = Needs(gramian=True)

    def combine(self, inputs: Inputs) -> Output:
        g = check_gramian(inputs.gramian, "IMTLG")
        return Output(weights=imtl_g_weights(g).to(inputs.losses.dtype))
