"""DWA: dynamic weight average of the per-epoch loss ratios."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from ._base import Inputs, Method, Needs, Output, TaskGrad, check_lengths, state_count, state_vector


def check_period(period: int | None) -> int | None:
    if period is not None and (isinstance(period, bool) or not isinstance(period, int) or period < 1):
        raise ValueError(f"period must be None or a positive int, got {period!r}")
    return period


def check_k(name: str, state: Tensor | None, k: int) -> None:
    if state is not None and state.shape[0] != k:
        raise ValueError(
            f"{name} was used with {state.shape[0]} objectives and now received {k} losses; "
            "call reset() before changing the number of objectives"
        )


class DWA(Method):
    r"""Dynamic Weight Average (Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention",
    CVPR 2019, `arXiv:1803.10704 <https://arxiv.org/abs/1803.10704>`_).

    .. math:: w_i(t) = \frac{K \exp(r_i / T)}{\sum_j \exp(r_j / T)}, \qquad
              r_i = \bar L_i(t-1) / \bar L_i(t-2)

    where :math:`\bar L_i(t)` is the average of the losses seen during period :math:`t` (an epoch in
    the official MTAN code, lorenmt/mtan; LibMTL and TorchJD do the same). The method averages the
    (detached) losses it receives; a period ends after ``period`` calls of :meth:`combine` or when
    the user calls :meth:`end_epoch` (with ``period=None``, the default, only :meth:`end_epoch` ends
    one, i.e. per-epoch averages as in MTAN). The weights are 1 during the first two periods. The
    Nash-MTL code instead uses a *sliding* window (ratio of the means of the last 25 and the 25
    before, recomputed every step); ``period=25`` gives the tumbling-window analogue.

    ``T = 2`` (paper, MTAN, LibMTL). Losses should keep a consistent non-zero sign; a zero average
    in the denominator gives a ratio of 1 instead of an infinity. One backward pass of
    :math:`\sum_i w_i L_i` (``task_grad="weighted"``). K = 1: the weight is exactly 1.
    State (running sum, count, last two averages) is in :meth:`state_dict`.
    """

    needs: ClassVar[Needs] = Needs()
    task_grad: ClassVar[TaskGrad] = "weighted"

    def __init__(self, T: float = 2.0, period: int | None = None) -> None:
        if not T > 0:
            raise ValueError(f"temperature T must be > 0, got {T}")
        self.T = float(T)
        self.period = check_period(period)
        self.reset()

    def reset(self) -> None:
        self._sum: Tensor | None = None
        self._count = 0
        self._history: list[Tensor] = []

    def end_epoch(self) -> None:
        """Close the current period (epoch): its average becomes the newest entry of the history."""
        if self._sum is None or self._count == 0:
            return
        self._history = [*self._history, self._sum / self._count][-2:]
        self._sum = None
        self._count = 0

    def _weights(self, losses: Tensor) -> Tensor:
        k = losses.shape[0]
        if len(self._history) < 2:
            return torch.ones(k, dtype=losses.dtype, device=losses.device)
        older, newer = (h.to(device=losses.device, dtype=torch.float64) for h in self._history)
        ratio = torch.where(older != 0, newer / torch.where(older != 0, older, 1.0), 1.0)
        return (k * torch.softmax(ratio / self.T, dim=0)).to(losses.dtype)

    def combine(self, inputs: Inputs) -> Output:
        losses = inputs.losses.detach()
        k = losses.shape[0]
        check_k("DWA", self._sum, k)
        check_k("DWA", self._history[-1] if self._history else None, k)
        w = self._weights(losses)
        current = losses.to(torch.float64)
        self._sum = current.clone() if self._sum is None else self._sum.to(current.device) + current
        self._count += 1
        if self.period is not None and self._count >= self.period:
            self.end_epoch()
        return Output(weights=w)

    def state_dict(self) -> dict[str, Any]:
        return {
            "sum": None if self._sum is None else self._sum.clone(),
            "count": self._count,
            "history": [h.clone() for h in self._history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unknown = set(state) - {"sum", "count", "history"}
        if unknown:
            raise ValueError(f"DWA got unknown state keys {sorted(unknown)}")
        total = state_vector("DWA", state, "sum")
        count = state_count("DWA", state, "count")
        history = state.get("history") or []
        if not isinstance(history, (list, tuple)):
            raise TypeError(f"DWA state 'history': expected a list, got {type(history).__name__}")
        past = [state_vector("DWA", {"history": h}, "history") for h in history][-2:]
        check_lengths(
            "DWA",
            sum=None if total is None else total.shape[0],
            **{f"history[{i}]": None if h is None else h.shape[0] for i, h in enumerate(past)},
        )
        if (total is None) != (count == 0):
            raise ValueError(f"DWA state: 'sum' and 'count' disagree (count {count}, sum {total})")
        self._sum = None if total is None else total.detach().clone()
        self._count = count
        self._history = [h.detach().clone() for h in past if h is not None]
