"""ConFIG: conflict-free update from the pseudo-inverse of the unit gradients."""

from __future__ import annotations

from typing import ClassVar

from ..solvers import config_weights
from ._base import Inputs, Method, Needs, Output, check_gramian


class ConFIG(Method):
    r"""ConFIG (Liu, Chu, Thuerey, "ConFIG: Towards Conflict-free Training of Physics Informed Neural
    Networks", ICLR 2025, https://arxiv.org/abs/2408.11104).

    .. math:: d_u = \tilde U^{+}\mathbb 1,\quad \hat d_u = d_u/\|d_u\|,\quad
        d = \Big(\sum_i g_i^\top \hat d_u\Big)\hat d_u

    with :math:`\tilde U` the matrix of unit gradients :math:`g_i/\|g_i\|`. Since :math:`d_u =
    \tilde U^\top(\tilde U\tilde U^\top)^{+}\mathbb 1` lies in the span of the gradients, the update is a
    weighting of the raw gradients computed from the Gramian (:func:`molearn.solvers.config_weights`).
    When the gradients are linearly independent, :math:`\tilde U d_u = \mathbb 1`: the update has the
    same positive cosine with every gradient, so it conflicts with no task. When :math:`\mathbb 1` is
    orthogonal to the range of :math:`\tilde U\tilde U^\top` (e.g. :math:`g_2 = -g_1`), :math:`d_u = 0` and
    molearn returns zero weights where the official code normalises rounding noise.

    Official code (tum-pbs/ConFIG ``ConFIG_update``) defaults: equal weights (the right-hand side
    :math:`\mathbb 1`), ``ProjectionLength`` (the length above), least squares (``lstsq``, the
    minimum-norm solution like ``pinv``). Its other weight/length models are not offered. molearn's
    pseudo-inverse of :math:`\tilde U\tilde U^\top` uses a rank cut-off of ``K·eps`` of the Gramian's
    dtype relative to the largest eigenvalue (``pinv`` of :math:`\tilde U` itself can resolve smaller
    singular values than the Gramian can). Zero gradients get unit vector 0, as in the official code.
    """

    needs: ClassVar[Needs] = Needs(gramian=True)

    def combine(self, inputs: Inputs) -> Output:
        g = check_gramian(inputs.gramian, "ConFIG")
        return Output(weights=config_weights(g).to(inputs.losses.dtype))
