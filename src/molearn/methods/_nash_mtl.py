"""Nash-MTL: the Nash bargaining solution among the task gradients."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from ..solvers import CONVERGED, ITERATION_LIMIT, alpha_fair_with_status
from ._base import Inputs, Method, Needs, Output, check_gramian, state_count, state_vector


class NashMTL(Method):
    r"""Nash-MTL (Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik, Fetaya, ICML 2022, "Multi-Task
    Learning as a Bargaining Game", https://arxiv.org/abs/2202.01017).

    .. math:: G G^\top \alpha = 1/\alpha \quad (\alpha > 0), \qquad d = \textstyle\sum_i \alpha_i g_i

    (every task gets :math:`g_i^\top d = 1/\alpha_i`). The official code reaches this fixed point with a
    CCCP sequence of up to ``optim_niter = 20`` cvxpy/ECOS problems (GGᵀ normalised by its Frobenius
    norm for conditioning, warm-started from the previous α, stopping at its own tolerances); molearn
    solves the same system as FairGrad's α-fair system with α = 1 (:func:`molearn.solvers.alpha_fair`,
    ``optim_niter`` damped Newton steps, sync-free; the Frobenius normalisation is implicit since the
    solver is scale-equivariant). ``info["residual"]`` is the relative residual of the system and
    ``info["status"]`` whether α solves it (:mod:`molearn.solvers` ``CONVERGED``) or is the documented
    fallback α = 0 (``ITERATION_LIMIT``, or ``INFEASIBLE`` when no direction improves every task).

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
        self._status: Tensor | None = None

    def combine(self, inputs: Inputs) -> Output:
        g = check_gramian(inputs.gramian, "NashMTL").to(torch.float64)
        k = inputs.num_objectives
        stale = self._alpha is None or self._alpha.shape != (k,) or self._alpha.device != g.device
        if stale or self._step % self.update_weights_every == 0:
            alpha, residual, status = alpha_fair_with_status(g, 1.0, iters=self.optim_niter)
            if stale or self._alpha is None or self._residual is None or self._status is None:
                self._alpha, self._residual, self._status = alpha, residual, status
            else:  # in place: the state tensors stay the same objects (CUDA-graph friendly)
                self._alpha.copy_(alpha)
                self._residual.copy_(residual)
                self._status.copy_(status)
        self._step += 1
        assert self._alpha is not None and self._residual is not None and self._status is not None
        alpha = self._alpha
        if self.max_norm is not None:
            norm = (alpha @ g @ alpha).clamp_min(0).sqrt()
            alpha = alpha * (self.max_norm / norm.clamp_min(self.max_norm))
        # copies: the state is updated in place by the next call
        info = {"residual": self._residual.clone(), "status": self._status.clone()}
        return Output(weights=alpha.to(inputs.losses.dtype, copy=True), info=info)

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self._step,
            "alpha": None if self._alpha is None else self._alpha.clone(),
            "residual": None if self._residual is None else self._residual.clone(),
            "status": None if self._status is None else self._status.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unknown = set(state) - {"step", "alpha", "residual", "status"}
        if unknown:
            raise ValueError(f"NashMTL got unknown state keys {sorted(unknown)}")
        step = state_count("NashMTL", state, "step")
        alpha, residual = (
            state_vector("NashMTL", state, "alpha"),
            state_vector("NashMTL", state, "residual", ndim=0),
        )
        if (alpha is None) != (residual is None):
            raise ValueError("NashMTL state: 'alpha' and 'residual' come together")
        if alpha is not None and bool((alpha < 0).any()):  # sync: loading a state
            raise ValueError("NashMTL state 'alpha' has negative entries")
        self._step = step
        self._alpha = None if alpha is None else alpha.detach().to(torch.float64).clone()
        self._residual = None if residual is None else residual.detach().to(torch.float64).clone()
        self._status = _loaded_status(state.get("status"), self._residual)


def _loaded_status(status: Any, residual: Tensor | None) -> Tensor | None:
    """The stored status; older states have none: converged if α solved the system, else an iteration
    limit (the fallback of an older version, whose residual was stored as 0, counts as converged)."""
    if residual is None:
        return None
    if status is None:
        return torch.where(residual <= 1e-3, CONVERGED, ITERATION_LIMIT).to(residual.device)
    value = torch.as_tensor(status)  # sync: loading a state
    if value.dim() != 0 or value.is_floating_point() or not 0 <= int(value) <= 2:  # sync: loading a state
        raise ValueError(f"NashMTL state 'status': expected a solver status code, got {status!r}")
    return value.to(device=residual.device, dtype=torch.int64).clone()
