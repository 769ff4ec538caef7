"""CAGrad: conflict-averse gradient descent."""

from __future__ import annotations

from typing import ClassVar, Literal

from ..solvers import cagrad_weights
from ._base import Inputs, Method, Needs, Output, check_gramian


class CAGrad(Method):
    r"""Conflict-Averse Gradient descent (Liu, Liu, Jin, Stone, Liu, NeurIPS 2021, "Conflict-Averse
    Gradient Descent for Multi-task Learning", https://arxiv.org/abs/2110.14048).

    .. math::
        w^\star = \arg\min_{w \in \Delta_K} g_w^\top g_0 + c\|g_0\|\,\|g_w\|, \qquad
        d = \Big(g_0 + \frac{c\|g_0\|}{\|g_w^\star\|}\, g_w^\star\Big) \Big/ \rho

    with :math:`g_0 = \frac1K\sum_i g_i`, :math:`g_w = \sum_i w_i g_i` and :math:`\rho = 1 + c^2`
    (``rescale=1``, the official default), :math:`1 + c` (``rescale=2``) or 1 (``rescale=0``). The
    subproblem is solved by :func:`molearn.solvers.cagrad_dual` (interior point, sync-free) instead of
    the official ``scipy`` SLSQP; same minimiser, better accuracy. Returned as weights
    ``(𝟙/K + λ w*)/ρ`` over the raw gradients, times ``scale`` (1, or ``"K"``: the Nash-MTL/FairGrad
    harness multiplies every combined gradient by K "to match the sum loss").

    Defaults: ``c = 0.5`` (official CAGrad code, LibMTL ``calpha``); the Nash-MTL/FAMO/FairGrad harness
    uses ``c = 0.4``; sdmgrad uses 0.3. K = 1 gives ``(1 + c)/ρ · g`` (a positive multiple; exactly ``g``
    with ``rescale=2``). Zero gradients give ``d = 0``.

    Differences: TorchJD 0.18's ``CAGradWeighting`` returns ``𝟙/K + λ w*`` (``rescale=0``), zeroes the
    weights when ``‖g_w‖ < 1e-4`` or when ``trace(G) < 1e-4`` (absolute thresholds), and solves with
    Clarabel. The official code divides by ``‖g_w‖ + 1e-8`` (absolute); molearn uses
    ``‖g_w‖ + 1e-8·√(mean ‖g_i‖²)`` (scale-invariant).
    """

    needs: ClassVar[Needs] = Needs(gramian=True)

    def __init__(
        self, c: float = 0.5, rescale: int = 1, scale: float | Literal["K"] = 1.0, iters: int = 30
    ) -> None:
        if c < 0:
            raise ValueError(f"c must be non-negative, got {c}")
        if rescale not in (0, 1, 2):
            raise ValueError(f"rescale must be 0, 1 or 2, got {rescale}")
        self.c = c
        self.rescale = rescale
        self.scale = scale
        self.iters = iters

    def combine(self, inputs: Inputs) -> Output:
        g = check_gramian(inputs.gramian, "CAGrad")
        w = cagrad_weights(g, self.c, rescale=self.rescale, iters=self.iters)
        scale = float(inputs.num_objectives) if self.scale == "K" else float(self.scale)
        return Output(weights=(w * scale).to(inputs.losses.dtype))
