"""DB-MTL: dual balancing of loss scales (log losses) and gradient magnitudes (Lin et al., 2023)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from ..solvers.consts import device_scalar
from ._base import Inputs, Method, Needs, Output, check_jacobian, state_tensor

_LOG_EPS = 1e-8  # LibMTL differentiates log(L_i + 1e-8)


class DBMTL(Method):
    r"""Dual-Balancing Multi-Task Learning (Lin, Jiang, Ye, Zhang, Chen, Chen, Liu, Kwok, "Dual-Balancing
    for Multi-Task Learning", arXiv:2308.12029; official code: LibMTL ``DB_MTL``).

    Loss balance: gradients of the log losses, :math:`\nabla\log(L_i+\epsilon) = g_i / (L_i+\epsilon)`,
    :math:`\epsilon = 10^{-8}`. Gradient balance: an EMA of those gradients rescaled to the largest norm:

    .. math:: \hat g_i^{(t)} = \beta_t \hat g_i^{(t-1)} + (1-\beta_t)\,\frac{g_i}{L_i+\epsilon},\quad
              \beta_t = \beta / t^{\sigma},\quad \hat g^{(0)} = 0, \qquad
              d = \sum_i \frac{\max_j \|\hat g_j\|}{\|\hat g_i\|}\, \hat g_i

    Defaults :math:`\beta = 0.9`, :math:`\sigma = 0` (LibMTL ``--DB_beta 0.9 --DB_beta_sigma 0``). Returns
    a direction (the rescaled buffer sum, no further scaling, as LibMTL writes it to ``.grad``).

    State: the K×P buffer :math:`\hat g` (as large as the Jacobian), kept in the Jacobian's dtype and
    device; the number of columns must not change between steps (in ``mode="representation"`` use a fixed
    batch size). Differences from LibMTL: the scale :math:`\max_j\|\hat g_j\|/\|\hat g_i\|` uses a guarded
    division (0 for a zero row) instead of adding 1e-8 to the norm, so the direction is exactly
    scale-equivariant; losses :math:`\le -\epsilon` (log undefined, NaN in LibMTL) are clamped to a
    denominator of :math:`\epsilon`. Task heads: LibMTL back-propagates :math:`\sum_i \log L_i` into the
    heads (each gets :math:`\nabla L_i / L_i`); molearn's engine gives heads of direction methods their own
    :math:`\nabla L_i`. K = 1: a positive multiple of the gradient.
    """

    needs: ClassVar[Needs] = Needs(jacobian=True)
    _buffer: Tensor | None
    _step: Tensor | int

    def __init__(self, beta: float = 0.9, beta_sigma: float = 0.0) -> None:
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {beta}")
        self.beta = beta
        self.beta_sigma = beta_sigma
        self.reset()

    def combine(self, inputs: Inputs) -> Output:
        jac = check_jacobian(inputs.jacobian, "DBMTL")
        if self._buffer is None:
            self._buffer = torch.zeros_like(jac)
            self._step = torch.zeros((), dtype=torch.float64, device=jac.device)
        elif self._buffer.shape != jac.shape:
            raise ValueError(
                f"DBMTL's gradient buffer has shape {tuple(self._buffer.shape)} but the Jacobian has shape "
                f"{tuple(jac.shape)}; the objectives and parameters must stay the same (call reset())"
            )
        elif self._buffer.device != jac.device or self._buffer.dtype != jac.dtype:
            self._buffer = self._buffer.to(device=jac.device, dtype=jac.dtype)
        step = device_scalar(self._step, jac.device)
        # the state (step count included) lives on the device and is updated in place
        self._step = step.add_(1.0)
        beta_t = (self.beta / self._step.pow(self.beta_sigma)).to(jac.dtype)
        denom = (inputs.losses.detach().to(jac.dtype) + _LOG_EPS).clamp_min(_LOG_EPS)
        log_grads = jac.detach() / denom.unsqueeze(1)
        self._buffer.copy_(log_grads + beta_t * (self._buffer - log_grads))
        norms = torch.linalg.vector_norm(self._buffer, dim=1)
        positive = norms > 0
        scale = torch.where(positive, norms.max() / torch.where(positive, norms, torch.ones_like(norms)), 0.0)
        return Output(direction=scale @ self._buffer, info={"scale": scale})

    def state_dict(self) -> dict[str, Any]:
        if self._buffer is None:
            return {}
        return {"buffer": self._buffer.clone(), "step": torch.as_tensor(self._step).clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            self.reset()
            return
        unknown = set(state) - {"buffer", "step"}
        if unknown:
            raise ValueError(f"DBMTL got unknown state keys {sorted(unknown)}")
        buffer = state_tensor("DBMTL", state, "buffer", ndim=2)
        step = state_tensor("DBMTL", state, "step", integral=True)  # an int or a 0-d tensor
        self._buffer = buffer.detach().clone()
        self._step = step.detach().to(torch.float64).reshape(()).clone()

    def reset(self) -> None:
        self._buffer = None
        self._step = 0
