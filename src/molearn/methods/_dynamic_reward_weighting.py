"""Dynamic reward weighting: gradient-based weight optimisation (multiplicative weights on influence)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from ._base import (
    Inputs,
    Method,
    Needs,
    Output,
    check_gramian,
    check_lengths,
    state_count,
    state_vector,
)
from ._preference import check_pref, resolve_pref


class DynamicRewardWeighting(Method):
    r"""Gradient-based weight optimisation of Lu et al., "Learning to Optimize Multi-Objective Alignment
    Through Dynamic Reward Weighting" (2025, `arXiv:2509.11452 <https://arxiv.org/abs/2509.11452>`_;
    official code yining610/dynamic-reward-weighting, ``verl/trainer/ppo/ray_trainer_optimization.py``).

    The influence of objective :math:`i` is the sum of the inner products of its gradient with every
    objective's gradient, :math:`s_i = \sum_j g_i^\top g_j = (G G^\top \mathbb 1)_i`; every
    ``accumulation_steps`` steps the averaged influence updates the weights multiplicatively (exponentiated
    gradient / mirror ascent on the simplex)

    .. math::
        w \leftarrow \mathrm{softmax}\big(\log w + \eta\, \bar s\big), \qquad d = \textstyle\sum_i w_i g_i,

    and the step uses the updated weights (the official code updates the weights from the step's gradients
    before the actor update that uses them). An objective whose gradient agrees with the others (its
    improvement helps them) gains weight; the weights stay on the simplex.

    Official settings: :math:`\eta = \mathrm{lr}_t / \rho` with the policy's learning rate
    :math:`\mathrm{lr}_t = 10^{-6}` and ``regularization_factor`` :math:`\rho = 10^{-5}` (every example
    script), i.e. ``eta = 0.1`` (the default here), ``weight_accumulation_steps = 1`` and initial weights
    (the user's preference) ``[0.334, 0.333, 0.333]``: ``pref`` (default uniform). The paper applies it to
    per-reward policy gradients of GRPO/REINFORCE/RLOO; here the :math:`g_i` are the gradients of any K
    losses (the Gramian is the same for :math:`\pm g_i`). The official code measures gradients on a subset
    of layers (``target_layer_ids``); molearn uses all shared parameters. :math:`\eta` multiplies raw
    Gramian entries, so it depends on the scale of the losses, as in the official code.

    The log-weights are kept normalised (``log_softmax``), so they stay finite; state: ``log_weights``,
    the accumulated influence and the step count. K = 1: the weight is exactly 1.
    """

    needs: ClassVar[Needs] = Needs(gramian=True)

    def __init__(
        self,
        eta: float = 0.1,
        accumulation_steps: int = 1,
        pref: Sequence[float] | Tensor | None = None,
    ) -> None:
        if not eta >= 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        if not isinstance(accumulation_steps, int) or isinstance(accumulation_steps, bool) \
                or accumulation_steps < 1:
            raise ValueError(f"accumulation_steps must be an int >= 1, got {accumulation_steps!r}")
        self.eta = float(eta)
        self.accumulation_steps = accumulation_steps
        self.pref = check_pref(pref, "DynamicRewardWeighting", positive=True)
        self.reset()

    def reset(self) -> None:
        self._log_w: Tensor | None = None
        self._acc: Tensor | None = None
        self._t = 0

    @property
    def weights(self) -> Tensor | None:
        """The current weights (None before the first step)."""
        return None if self._log_w is None else self._log_w.exp()

    def _ensure(self, g: Tensor) -> Tensor:
        k = g.shape[0]
        if self._log_w is None:
            self._log_w = resolve_pref(self.pref, k, "DynamicRewardWeighting", g).log()
        elif self._log_w.shape[0] != k:
            raise ValueError(f"DynamicRewardWeighting was used with {self._log_w.shape[0]} objectives and "
                             f"now received {k} losses; call reset() before changing the number of "
                             "objectives")
        elif self._log_w.device != g.device:
            self._log_w = self._log_w.to(g.device)
        return self._log_w

    def combine(self, inputs: Inputs) -> Output:
        g = check_gramian(inputs.gramian, "DynamicRewardWeighting").to(torch.float64)
        log_w = self._ensure(g)
        influence = g.sum(dim=1)  # s_i = Σ_j g_iᵀ g_j
        self._acc = influence if self._acc is None else self._acc.to(g.device) + influence
        self._t += 1
        if self._t % self.accumulation_steps == 0:
            scores = self.eta * self._acc / self.accumulation_steps
            log_w = torch.log_softmax(log_w + scores, dim=0)
            self._log_w = log_w
            self._acc = None
        w = log_w.exp()
        dtype = inputs.losses.dtype
        return Output(weights=w.to(dtype), info={"influence": influence.to(dtype)})

    def state_dict(self) -> dict[str, Any]:
        return {
            "log_weights": None if self._log_w is None else self._log_w.clone(),
            "accumulated": None if self._acc is None else self._acc.clone(),
            "step": self._t,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unknown = set(state) - {"log_weights", "accumulated", "step"}
        if unknown:
            raise ValueError(f"DynamicRewardWeighting got unknown state keys {sorted(unknown)}")
        owner = "DynamicRewardWeighting"
        log_w = state_vector(owner, state, "log_weights")
        acc = state_vector(owner, state, "accumulated")
        check_lengths(owner, log_weights=None if log_w is None else int(log_w.shape[0]),
                      accumulated=None if acc is None else int(acc.shape[0]))
        self._t = state_count(owner, state, "step")
        self._log_w = None if log_w is None else log_w.detach().to(torch.float64).clone()
        self._acc = None if acc is None else acc.detach().to(torch.float64).clone()
