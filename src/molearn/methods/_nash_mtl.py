"""Nash-MTL: the Nash bargaining solution among the task gradients."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from ..solvers import alpha_fair_with_residual
from ._base import Inputs, Method, Needs, Output, check_gramian


class NashMTL(Method):
    r"""Nash-MTL (Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik, Fetaya, ICML 2022, "Multi-Task
    Learning as a Bargaining Game", https://arxiv.org/abs/2202.01017).

    .. math:: G G^\top \alpha = 1/\alpha \quad (\alpha > 0), \qquad d = \textstyle\sum_i \alpha_i g_i

    (every task gets :math:`g_i^\top d = 1/\alpha_i`). The official code reaches this fixed point with a
    CCCP sequence of up to ``optim_niter = 20`` cvxpy/ECOS problems (GGᵀ normalised by its Frobenius
    norm for conditioning, warm-started from the previous α, stopping at its own tolerances); molearn
    solves the same system as FairGrad's α-fair system with α = 1 (:func:`molearn.solvers.alpha_fair`,
    ``optim_niter`` damped Newton steps, sync-free; the Frobenius normalisation is implicit since the
    solver is scale-equivariant). ``info["residual"]`` is the relative residual of the system.

    ``update_weights_every = n`` recomputes α every n-th call and reuses the previous α in between
    (state: ``step``, ``alpha``). ``max_norm`` (default ``None``, off): rescale α so that
    :math:`\|\sum_i \alpha_i g_i\| \le` ``max_norm``, computed from the Gramian without a host sync, as
    TorchJD does; the official code (``max_norm = 1.0``) instead clips the shared-parameter gradient in
    the training loop. K = 1 gives ``d = g/‖g‖`` (a positive multiple). Zero gradients get α = 0.
    The state tensors are updated in place; the step counter is a Python int, so a CUDA graph captures
    one branch of ``update_weights_every``: capture with the default 1.
    """

    needs: ClassVar[Needs] = Needs(gramian=True)

    def __init__(
        self, max_norm: float | None = None, update_weights_every: int = 1, optim_niter: int = 20
    ) -> None:
        if max_norm is not None and max_norm <= 0:
            raise ValueError(f"max_norm must be positive or None, got {max_norm}")
        if update_weights_every < 1:
            raise ValueError(f"update_weights_every must be >= 1, got {update_weights_every}")
        if optim_niter < 1:
            raise ValueError(f"optim_niter must be >= 1, got {optim_niter}")
        self.max_norm = max_norm
        self.update_weights_every = update_weights_every
        self.optim_niter = optim_niter
        self.reset()

    def reset(self) -> None:
        self._step = 0
        self._alpha: Tensor | None = None
        self._residual: Tensor | None = None

    def combine(self, inputs: Inputs) -> Output:
        g = check_gramian(inputs.gramian, "NashMTL").to(torch.float64)
        k = inputs.num_objectives
        stale = self._alpha is None or self._alpha.shape != (k,) or self._alpha.device != g.device
        if stale or self._step % self.update_weights_every == 0:
            alpha, residual = alpha_fair_with_residual(g, 1.0, iters=self.optim_niter)
            if stale or self._alpha is None or self._residual is None:
                self._alpha, self._residual = alpha, residual
            else:  # in place: the state tensors stay the same objects (CUDA-graph friendly)
                self._alpha.copy_(alpha)
                self._residual.copy_(residual)
        self._step += 1
        assert self._alpha is not None and self._residual is not None
        alpha = self._alpha
        if self.max_norm is not None:
            norm = (alpha @ g @ alpha).clamp_min(0).sqrt()
            alpha = alpha * (self.max_norm / norm.clamp_min(self.max_norm))
        # copies: the state is updated in place by the next call
        return Output(
            weights=alpha.to(inputs.losses.dtype, copy=True), info={"residual": self._residual.clone()}
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self._step,
            "alpha": None if self._alpha is None else self._alpha.clone(),
            "residual": None if self._residual is None else self._residual.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unknown = set(state) - {"step", "alpha", "residual"}
        if unknown:
            raise ValueError(f"NashMTL got unknown state keys {sorted(unknown)}")
        self._step = int(state.get("step", 0))
        alpha, residual = state.get("alpha"), state.get("residual")
        self._alpha = None if alpha is None else torch.as_tensor(alpha, dtype=torch.float64).clone()
        self._residual = None if residual is None else torch.as_tensor(residual, dtype=torch.float64).clone()
