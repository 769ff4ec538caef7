"""ExcessMTL: robust task weighting by estimated excess risks (He et al., ICML 2024)."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from ._base import (
    Inputs,
    Method,
    Needs,
    Output,
    TaskGrad,
    check_jacobian,
    check_lengths,
    state_tensor,
    state_vector,
)

_ADAGRAD_EPS = 1e-7  # official code: h_i = sqrt(Σ_t g_i(t)² + 1e-7)


class ExcessMTL(Method):
    r"""ExcessMTL (He, Zhou, Zhang, Yun, Xu, Zeng, Chilimbi, Zhao, "Robust Multi-Task Learning with Excess
    Risks", ICML 2024, arXiv:2402.02009; official code yifei-he/ExcessMTL, also in LibMTL).

    Excess risk of task :math:`i` from a diagonal (AdaGrad-like) Hessian estimate built from the
    accumulated squared gradients, then an exponentiated-gradient step on the weights:

    .. math:: S_i \mathrel{+}= g_i \odot g_i,\quad h_i = \sqrt{S_i + 10^{-7}},\quad
              e_i = \textstyle\sum_p g_{ip}^2 / h_{ip},\qquad
              w_i \leftarrow K\,\frac{w_i\, \exp(\eta\, e_i / e_i^{(1)})}
              {\sum_j w_j \exp(\eta\, e_j / e_j^{(1)})}

    where :math:`e^{(1)}` is the first call's excess risk (the baseline, "scale processing"). As in the
    official code: the weights start at 1 (they sum to K), the first call only records the baseline and
    returns the initial weights, later calls return the weights *after* their update, and the loss
    :math:`\sum_i w_i L_i` is back-propagated into every parameter (``task_grad="weighted"``). Default
    ``robust_step_size`` :math:`\eta = 0.01` (official/LibMTL ``--robust_step_size``). The update is done
    in log space (same values, no overflow), and a zero baseline gives ratio 0 (no update) instead of the
    official code's division by zero.

    TorchJD's ``ExcessMTLWeighting`` computes the same excess risks but starts from :math:`1/K`, already
    updates the weights on the first call (with the raw, unnormalised excess risk) and divides by
    :math:`e^{(1)} + 10^{-7}`; from the second call on, its multiplicative updates equal these. It is also
    elementwise (not a Gramian approximation), which is why molearn needs the Jacobian. State: the K×P sum
    of squared gradients (as large as the Jacobian, in its dtype/device), the baseline and the weights.
    K = 1: the weight is always 1 (exact pass-through).
    """

    needs: ClassVar[Needs] = Needs(jacobian=True)
    _sq_sum: Tensor | None
    _log_w: Tensor | None
    _baseline: Tensor | None
    task_grad: ClassVar[TaskGrad] = "weighted"

    def __init__(self, robust_step_size: float = 1e-2) -> None:
        if robust_step_size < 0:
            raise ValueError(f"robust_step_size must be non-negative, got {robust_step_size}")
        self.robust_step_size = robust_step_size
        self.reset()

    def combine(self, inputs: Inputs) -> Output:
        jac = check_jacobian(inputs.jacobian, "ExcessMTL").detach()
        k = jac.shape[0]
        if self._sq_sum is None:
            self._sq_sum = torch.zeros_like(jac)
            self._log_w = torch.zeros(k, dtype=torch.float64, device=jac.device)
        elif self._sq_sum.shape != jac.shape:
            raise ValueError(
                f"ExcessMTL's squared-gradient sum has shape {tuple(self._sq_sum.shape)} but the Jacobian "
                f"has shape {tuple(jac.shape)}; the objectives and parameters must stay fixed (call reset())"
            )
        elif self._sq_sum.device != jac.device or self._sq_sum.dtype != jac.dtype:
            self._sq_sum = self._sq_sum.to(device=jac.device, dtype=jac.dtype)
        assert self._log_w is not None
        if self._log_w.device != jac.device:
            self._log_w = self._log_w.to(jac.device)
        sq = jac * jac
        self._sq_sum.add_(sq)  # state updated in place (CUDA-graph friendly)
        excess = (sq / torch.sqrt(self._sq_sum + _ADAGRAD_EPS)).sum(1).to(torch.float64)
        if self._baseline is None:  # the first call sets it (on the host: capture a graph after it)
            self._baseline = excess.clone()
        else:
            base = self._baseline.to(jac.device)
            ratio = torch.where(base > 0, excess / torch.where(base > 0, base, torch.ones_like(base)), 0.0)
            logits = self._log_w + self.robust_step_size * ratio
            self._log_w.copy_(torch.log_softmax(logits, dim=0) + math.log(k))
        w = torch.exp(self._log_w)
        return Output(weights=w.to(inputs.losses.dtype), info={"excess_risk": excess})

    @property
    def weights(self) -> Tensor | None:
        """The current task weights (``None`` before the first step)."""
        return None if self._log_w is None else torch.exp(self._log_w)

    def state_dict(self) -> dict[str, Any]:
        if self._sq_sum is None:
            return {}
        assert self._log_w is not None
        state: dict[str, Any] = {"sq_grad_sum": self._sq_sum.clone(), "log_weights": self._log_w.clone()}
        if self._baseline is not None:
            state["baseline"] = self._baseline.clone()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reset()
        if not state:
            return
        unknown = set(state) - {"sq_grad_sum", "log_weights", "baseline"}
        if unknown:
            raise ValueError(f"ExcessMTL got unknown state keys {sorted(unknown)}")
        sq_sum = state_tensor("ExcessMTL", state, "sq_grad_sum", ndim=2)
        log_w = state_tensor("ExcessMTL", state, "log_weights", ndim=1)
        baseline = state_vector("ExcessMTL", state, "baseline")
        check_lengths(
            "ExcessMTL",
            sq_grad_sum=sq_sum.shape[0],
            log_weights=log_w.shape[0],
            baseline=None if baseline is None else baseline.shape[0],
        )
        if bool((sq_sum < 0).any()):  # sync: loading a state
            raise ValueError("ExcessMTL state 'sq_grad_sum' has negative entries")
        self._sq_sum = sq_sum.detach().clone()
        self._log_w = log_w.detach().clone().to(torch.float64)
        if baseline is not None:
            self._baseline = baseline.detach().clone().to(torch.float64)

    def reset(self) -> None:
        self._sq_sum = None
        self._log_w = None
        self._baseline = None
