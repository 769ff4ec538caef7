"""STCH: smooth Tchebycheff scalarisation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from ._base import Inputs, Method, Needs, Output, TaskGrad, check_lengths, state_count, state_vector
from ._dwa import check_period

Variant = Literal["mtl", "plain"]


def _vector(value: Sequence[float] | Tensor | None, name: str, positive: bool = False) -> Tensor | None:
    if value is None:
        return None
    v = torch.as_tensor(value).detach().to(device="cpu", dtype=torch.float64).clone()
    if v.dim() != 1 or v.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence, got shape {tuple(v.shape)}")
    if not bool(torch.isfinite(v).all()) or (positive and not bool((v > 0).all())):
        raise ValueError(f"{name} must be finite{' and positive' if positive else ''}, got {v.tolist()}")
    return v


def _loaded(value: Any) -> Tensor | None:
    return None if value is None else torch.as_tensor(value).to(torch.float64).clone()


class STCH(Method):
    r"""Smooth Tchebycheff scalarisation (Lin, Zhang, Wang, Zhang, "Smooth Tchebycheff Scalarization for
    Multi-Objective Optimization", ICML 2024, `arXiv:2402.19078 <https://arxiv.org/abs/2402.19078>`_;
    official code Xi-L/STCH, ``STCH_MTL``, also in LibMTL).

    .. math:: L = s\,\mu \log \sum_i \exp\Big(\frac{p_i (f_i - z_i)}{\mu}\Big), \qquad
              w_i = \frac{\partial L}{\partial L_i}
                  = s\, p_i\, \mathrm{softmax}\Big(\frac{p \odot (f - z)}{\mu}\Big)_i\, f_i'(L_i)

    with the preference ``pref`` :math:`p`, the ideal point ``ideal`` :math:`z` (default 0) and:

    * ``variant="mtl"`` (default; the multi-task version of the official code and LibMTL):
      :math:`f_i = \log(L_i / n_i + 10^{-20})`, :math:`s = K`, :math:`p = 1` by default. The nadir
      :math:`n` is the average loss over a warm-up: during the first ``warmup`` periods (LibMTL
      ``STCH_warmup_epoch`` = 4) and the next one the method returns the weights of
      :math:`\sum_i \log(L_i + 10^{-20})`, i.e. :math:`1/(L_i + 10^{-20})`; the losses of that last
      warm-up period are averaged into :math:`n`. If ``nadir`` is given there is no warm-up.
      A period ends after ``period`` calls of :meth:`combine` or when the user calls
      :meth:`end_epoch` (LibMTL counts epochs; with ``period=None`` call :meth:`end_epoch` at the end of
      every epoch, otherwise the method stays in warm-up). The losses must be positive (log).
    * ``variant="plain"`` (the paper's formula, TorchJD ``STCH``): :math:`f_i = L_i / n_i` with
      :math:`n` = ``nadir`` or 1, :math:`s = 1`, :math:`p = 1/K` by default; no warm-up.

    ``mu``: 1.0 (LibMTL ``STCH_mu``); the paper tries {0.01, 0.1, 0.5, 1}. One backward pass
    (``task_grad="weighted"``, as the official code back-propagates the scalarised loss).
    K = 1: the weight is positive (``s p_1 f_1'``), so the update is a positive multiple of the
    gradient. State (warm-up counters, sums, nadir) is in :meth:`state_dict`.
    """

    needs: ClassVar[Needs] = Needs()
    task_grad: ClassVar[TaskGrad] = "weighted"

    def __init__(
        self,
        mu: float = 1.0,
        variant: Variant = "mtl",
        pref: Sequence[float] | Tensor | None = None,
        ideal: Sequence[float] | Tensor | None = None,
        nadir: Sequence[float] | Tensor | None = None,
        warmup: int = 4,
        period: int | None = None,
        log_eps: float = 1e-20,
    ) -> None:
        if not mu > 0:
            raise ValueError(f"mu must be > 0, got {mu}")
        if variant not in ("mtl", "plain"):
            raise ValueError(f"variant must be 'mtl' or 'plain', got {variant!r}")
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise ValueError(f"warmup must be a non-negative int, got {warmup!r}")
        if not log_eps >= 0:
            raise ValueError(f"log_eps must be >= 0, got {log_eps}")
        self.mu = float(mu)
        self.variant = variant
        self.pref = _vector(pref, "pref", positive=True)
        self.ideal = _vector(ideal, "ideal")
        self.nadir = _vector(nadir, "nadir", positive=True)
        self.warmup = warmup
        self.period = check_period(period)
        self.log_eps = float(log_eps)
        self.reset()

    def reset(self) -> None:
        self._periods = 0
        self._count = 0
        self._sum: Tensor | None = None
        self._nadir: Tensor | None = None

    @property
    def in_warmup(self) -> bool:
        """Whether the method still returns warm-up (log-loss) weights (``variant="mtl"`` only)."""
        return self.variant == "mtl" and self.nadir is None and self._nadir is None

    def end_epoch(self) -> None:
        """Close the current period (epoch); at the end of the warm-up this fixes the nadir point."""
        if not self.in_warmup or self._count == 0:
            return
        if self._periods == self.warmup and self._sum is not None:
            self._nadir = self._sum / self._count
            self._sum = None
        self._periods += 1
        self._count = 0

    def _param(self, v: Tensor | None, name: str, k: int, default: float, like: Tensor) -> Tensor:
        if v is None:
            return torch.full((k,), default, dtype=torch.float64, device=like.device)
        if v.shape[0] != k:
            raise ValueError(f"STCH {name} has {v.shape[0]} entries but received {k} losses")
        return v.to(like.device)

    def combine(self, inputs: Inputs) -> Output:
        losses = inputs.losses.detach()
        k = inputs.num_objectives
        x = losses.to(torch.float64)
        pref = self._param(self.pref, "pref", k, 1.0 if self.variant == "mtl" else 1.0 / k, x)
        ideal = self._param(self.ideal, "ideal", k, 0.0, x)
        if self.in_warmup:
            if self._sum is not None and self._sum.shape[0] != k:
                raise ValueError(
                    f"STCH was used with {self._sum.shape[0]} objectives and now received {k} losses; "
                    "call reset() before changing the number of objectives"
                )
            w = 1.0 / (x + self.log_eps)
            self._count += 1
            if self._periods == self.warmup:
                self._sum = x.clone() if self._sum is None else self._sum.to(x.device) + x
            if self.period is not None and self._count >= self.period:
                self.end_epoch()
            return Output(weights=w.to(losses.dtype))
        nadir_src = self.nadir if self.nadir is not None else self._nadir
        nadir = self._param(nadir_src, "nadir", k, 1.0, x)
        if self.variant == "mtl":
            f = torch.log(x / nadir + self.log_eps)
            df = 1.0 / (x + self.log_eps * nadir)
            scale = float(k)
        else:
            f = x / nadir
            df = 1.0 / nadir
            scale = 1.0
        s = torch.softmax(pref * (f - ideal) / self.mu, dim=0)
        w = scale * pref * s * df
        return Output(weights=w.to(losses.dtype))

    def state_dict(self) -> dict[str, Any]:
        return {
            "periods": self._periods,
            "count": self._count,
            "sum": None if self._sum is None else self._sum.clone(),
            "nadir": None if self._nadir is None else self._nadir.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unknown = set(state) - {"periods", "count", "sum", "nadir"}
        if unknown:
            raise ValueError(f"STCH got unknown state keys {sorted(unknown)}")
        total, nadir = state_vector("STCH", state, "sum"), state_vector("STCH", state, "nadir")
        check_lengths(
            "STCH",
            sum=None if total is None else total.shape[0],
            nadir=None if nadir is None else nadir.shape[0],
        )
        self._periods = state_count("STCH", state, "periods")
        self._count = state_count("STCH", state, "count")
        self._sum = _loaded(total)
        self._nadir = _loaded(nadir)
