"""FairGrad: α-fair resource allocation among the task gradients."""

from __future__ import annotations

from typing import ClassVar, Literal

from ..solvers import alpha_fair_residual, alpha_fair_sgd, alpha_fair_with_status, status_from_residual
from ._base import Inputs, Method, Needs, Output, check_gramian

# the relative residual below which the SGD solver's best iterate counts as a solution (as the Newton one)
_SGD_TOL = 1e-3


class FairGrad(Method):
    r"""FairGrad (Ban & Ji, ICML 2024, "Fair Resource Allocation in Multi-Task Learning",
    https://arxiv.org/abs/2402.15638).

    .. math:: (G G^\top w)_i = w_i^{-1/\alpha} \quad (w > 0), \qquad d = \textstyle\sum_i w_i g_i

    i.e. the per-task improvements :math:`g_i^\top d = w_i^{-1/\alpha}` are α-fair. α → 0: linear
    scalarisation; α = 1: proportional fairness (Nash-MTL, see :class:`NashMTL`); α = 2: minimum
    potential delay; α → ∞: max-min fairness. Solved by :func:`molearn.solvers.alpha_fair` (damped
    Newton, fixed ``iters``) instead of the official ``scipy.optimize.least_squares`` (same root where one
    exists; see the solver for the degenerate cases). ``info["residual"]`` is the relative residual and
    ``info["status"]`` says whether the weights solve the system (:mod:`molearn.solvers` ``CONVERGED``) or
    are the fallback ``w = 0`` because the iterations ran out (``ITERATION_LIMIT``) or no solution exists
    (``INFEASIBLE``).

    ``w`` is not normalised: ``w(sG) = s^{-α/(α+1)} w(G)``; K = 1 gives ``d = g/‖g‖^{2α/(α+1)}`` (a positive
    multiple of ``g``). Zero gradients get weight 0 (so all-zero gradients give ``d = 0``).

    Defaults: ``alpha = 2.0`` — the value of every official run script (NYUv2, Cityscapes, CelebA, QM9,
    MT10/MT50); the official argument parser's default is 1.0. ``scale``: 1 (default) or ``"K"`` (the
    official harness multiplies the combined gradient by K and then clips its norm to ``max_norm = 1``;
    the clipping belongs to the training loop). TorchJD 0.18's ``FairGradWeighting`` wraps the official
    scipy solver (scale 1).

    ``solver="sgd"``: the solver of the official Meta-World (MT10/MT50) code,
    :func:`molearn.solvers.alpha_fair_sgd` — 20 momentum-SGD steps (lr 0.1, momentum 0.5, gradient
    clipped to norm 1, ``w ≥ 1e-8``) on :math:`\|Gw - (w + 10^{-8})^{-1/\alpha}\|^2` from ``w = 1/K``,
    best iterate by objective, raw (unnormalised) Gramian, combined gradient not multiplied by K there
    (use ``scale=1``). An approximation that depends on the scale of ``G``: it only moves ``w`` a bounded
    distance from ``1/K``, so it is neither scale-equivariant nor guaranteed non-conflicting; zero
    gradients give positive weights but ``d = 0``. ``iters`` is not used by it.
    """

    needs: ClassVar[Needs] = Needs(gramian=True)

    def __init__(
        self,
        alpha: float = 2.0,
        scale: float | Literal["K"] = 1.0,
        iters: int = 12,
        solver: Literal["newton", "sgd"] = "newton",
    ) -> None:
        if not alpha > 0:
            raise ValueError(f"alpha must be positive, got {alpha}")
        if solver not in ("newton", "sgd"):
            raise ValueError(f"solver must be 'newton' or 'sgd', got {solver!r}")
        self.alpha = alpha
        self.scale = scale
        self.iters = iters
        self.solver = solver

    def combine(self, inputs: Inputs) -> Output:
        g = check_gramian(inputs.gramian, "FairGrad")
        if self.solver == "sgd":
            w = alpha_fair_sgd(g, self.alpha)
            res = alpha_fair_residual(g, w, self.alpha)
            status = status_from_residual(res, _SGD_TOL)
        else:
            w, res, status = alpha_fair_with_status(g, self.alpha, iters=self.iters)
        scale = float(inputs.num_objectives) if self.scale == "K" else float(self.scale)
        info = {"residual": res, "status": status}
        return Output(weights=(w * scale).to(inputs.losses.dtype), info=info)
