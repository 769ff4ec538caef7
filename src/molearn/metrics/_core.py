r"""Per-task metrics and Δm%, the relative multi-task performance against single-task baselines.

Δm% convention (pinned; the one of Nash-MTL, FAMO and FairGrad, OptMN-Lab/fairgrad
``experiments/*/utils.py`` ``delta_fn``): one term **per metric**, averaged over the M metrics,

.. math::

    \Delta m\% = \frac{100}{M} \sum_{j=1}^{M} (-1)^{s_j}\, \frac{M_j - B_j}{B_j},

where :math:`M_j` is the multi-task model's value of metric j, :math:`B_j` the single-task (STL) baseline's,
and :math:`s_j = 1` when higher is better (accuracy, mIoU), :math:`s_j = 0` when lower is better (errors,
losses). **Lower Δm is better: a negative Δm means the model beats the single-task baselines on average,
a positive Δm means it is worse.** A task with several metrics (NYUv2 segmentation: mIoU and pixel
accuracy) contributes one term per metric, not one per task.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ClassificationMeter", "MeanMeter", "Meter", "accuracy", "delta_m", "relative_changes"]


def accuracy(logits: Tensor, target: Tensor) -> Tensor:
    """Fraction of rows of ``logits`` (N, C) whose arg-max equals ``target`` (N,), as a 0-d tensor on the
    logits' device (no host sync); NaN for N = 0."""
    if logits.dim() != 2 or target.dim() != 1 or logits.shape[0] != target.shape[0]:
        raise ValueError(
            f"accuracy needs logits (N, C) and targets (N,), "
            f"got {tuple(logits.shape)} and {tuple(target.shape)}"
        )
    return (logits.argmax(dim=1) == target).to(torch.float64).mean()


def _task_targets(targets: Tensor | Sequence[Tensor], k: int) -> list[Tensor]:
    if isinstance(targets, Tensor):
        if targets.dim() != 2 or targets.shape[1] != k:
            raise ValueError(f"targets as one tensor must have shape (N, {k}), got {tuple(targets.shape)}")
        return [targets[:, i] for i in range(k)]
    out = list(targets)
    if len(out) != k:
        raise ValueError(f"expected {k} target tensors (one per task), got {len(out)}")
    return out


class ClassificationMeter:
    """Accumulates per-task accuracy and mean cross-entropy over evaluation batches.

    ``update(logits, targets)`` takes the K heads' logits (each (N, C_i)) and the targets, either K tensors
    of shape (N,) or one (N, K) tensor. Sums stay on the logits' device until :meth:`compute`, which returns
    ``{"acc_<name>": ..., "loss_<name>": ...}`` as Python floats (accuracy in [0, 1], loss = mean
    cross-entropy per example), task names defaulting to ``"0"``, ``"1"``, ...
    """

    def __init__(self, names: Sequence[str] | int) -> None:
        self.names = [str(i) for i in range(names)] if isinstance(names, int) else [str(n) for n in names]
        if not self.names or len(set(self.names)) != len(self.names):
            raise ValueError(f"task names must be non-empty and distinct, got {self.names}")
        self.reset()

    def reset(self) -> None:
        self._correct: list[Tensor | None] = [None] * len(self.names)
        self._loss: list[Tensor | None] = [None] * len(self.names)
        self.count = 0

    def update(self, logits: Sequence[Tensor], targets: Tensor | Sequence[Tensor]) -> None:
        logits = list(logits)
        k = len(self.names)
        if len(logits) != k:
            raise ValueError(f"expected logits of {k} tasks, got {len(logits)}")
        tgts = _task_targets(targets, k)
        n = logits[0].shape[0]
        for i, (z, t) in enumerate(zip(logits, tgts)):
            if z.dim() != 2 or t.shape != (n,) or z.shape[0] != n:
                raise ValueError(
                    f"task {self.names[i]}: logits (N, C) and targets (N,) with the same N for every task, "
                    f"got {tuple(z.shape)} and {tuple(t.shape)} (N = {n})"
                )
            with torch.no_grad():
                c = (z.argmax(dim=1) == t).sum()
                loss = F.cross_entropy(z.detach().to(torch.float64), t, reduction="sum")
            prev_c, prev_l = self._correct[i], self._loss[i]
            self._correct[i] = c if prev_c is None else prev_c + c
            self._loss[i] = loss if prev_l is None else prev_l + loss
        self.count += n

    def compute(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, c in zip(self.names, self._correct):
            out[f"acc_{name}"] = math.nan if c is None or self.count == 0 else int(c.item()) / self.count
        for name, s in zip(self.names, self._loss):
            out[f"loss_{name}"] = math.nan if s is None or self.count == 0 else float(s.item()) / self.count
        return out


@runtime_checkable
class Meter(Protocol):
    """What evaluates a model on one split, batch by batch (the protocol of ``molearn.compare.Benchmark``).

    A fresh meter is made for every evaluation; ``update(model, batch)`` is called once per batch (the
    model in eval mode, under ``torch.no_grad``, the batch already on the model's device) and
    ``compute()`` returns ``{metric name: value}`` over all the batches seen. The meter runs the model
    itself, so problems whose batches are not ``(inputs, targets)`` (one data set per task, graphs, dense
    targets) fit, and metrics that are not means over examples (mIoU from a confusion matrix, a median
    angle) accumulate whatever they need.
    """

    def update(self, model: Any, batch: Any) -> None: ...

    def compute(self) -> Mapping[str, float]: ...


ScoreFn = Callable[[Any, Any], Mapping[str, Tensor]]


class MeanMeter:
    """A :class:`Meter` for metrics that are means over examples (accuracy, absolute error, squared error).

    ``score_fn(model, batch)`` returns ``{metric name: per-example values}``, each a tensor of shape (N,)
    (or anything that flattens to N values); the meter sums them on the device and :meth:`compute`
    returns each metric's mean over all the examples seen (NaN when none). Different metrics may count
    different numbers of examples (a task whose targets are missing in some rows).
    """

    def __init__(self, score_fn: ScoreFn) -> None:
        if not callable(score_fn):
            raise TypeError(f"score_fn must be callable, got {type(score_fn).__name__}")
        self.score_fn = score_fn
        self._sums: dict[str, Tensor] = {}
        self._counts: dict[str, int] = {}

    def update(self, model: Any, batch: Any) -> None:
        scores = self.score_fn(model, batch)
        if not isinstance(scores, Mapping):
            raise TypeError(
                "score_fn must return a mapping metric name -> per-example values, "
                f"got {type(scores).__name__}"
            )
        for name, values in scores.items():
            v = torch.as_tensor(values).detach().reshape(-1).to(torch.float64)
            prev = self._sums.get(name)
            self._sums[name] = v.sum() if prev is None else prev + v.sum()
            self._counts[name] = self._counts.get(name, 0) + int(v.numel())

    def compute(self) -> dict[str, float]:
        return {
            name: (float(s.item()) / self._counts[name]) if self._counts[name] else math.nan
            for name, s in self._sums.items()
        }


def _floats(x: Sequence[float] | Mapping[str, float] | Tensor) -> list[float]:
    if isinstance(x, Tensor):
        return [float(v) for v in x.detach().reshape(-1).tolist()]
    if isinstance(x, Mapping):
        return [float(v) for v in x.values()]
    return [float(v) for v in x]


def _aligned(
    values: Sequence[float] | Mapping[str, float] | Tensor,
    baselines: Sequence[float] | Mapping[str, float] | Tensor,
    higher_is_better: bool | Sequence[bool] | Mapping[str, bool],
) -> tuple[list[float], list[float], list[bool]]:
    if isinstance(values, Mapping) or isinstance(baselines, Mapping):
        if not (isinstance(values, Mapping) and isinstance(baselines, Mapping)):
            raise ValueError(
                "values and baselines must both be mappings (metric name -> value) or both sequences"
            )
        if set(values) != set(baselines):
            raise ValueError(
                "values and baselines name different metrics: "
                f"only in values {sorted(set(values) - set(baselines))}, "
                f"only in baselines {sorted(set(baselines) - set(values))}"
            )
        keys = list(baselines)
        vals = [float(values[k]) for k in keys]
        base = [float(baselines[k]) for k in keys]
        if isinstance(higher_is_better, Mapping):
            missing = [k for k in keys if k not in higher_is_better]
            if missing:
                raise ValueError(f"higher_is_better does not say the direction of {missing}")
            hib = [bool(higher_is_better[k]) for k in keys]
        elif isinstance(higher_is_better, bool):
            hib = [higher_is_better] * len(keys)
        else:
            hib = [bool(h) for h in higher_is_better]
    else:
        if isinstance(higher_is_better, Mapping):
            raise ValueError("higher_is_better as a mapping needs values and baselines as mappings")
        vals, base = _floats(values), _floats(baselines)
        hib = (
            [higher_is_better] * len(base)
            if isinstance(higher_is_better, bool)
            else [bool(h) for h in higher_is_better]
        )
    if not base:
        raise ValueError("Δm needs at least one metric")
    if not (len(vals) == len(base) == len(hib)):
        raise ValueError(
            f"shape mismatch: {len(vals)} values, {len(base)} baselines, {len(hib)} higher_is_better flags"
        )
    return vals, base, hib


def relative_changes(
    values: Sequence[float] | Mapping[str, float] | Tensor,
    baselines: Sequence[float] | Mapping[str, float] | Tensor,
    higher_is_better: bool | Sequence[bool] | Mapping[str, bool],
) -> list[float]:
    """The signed per-metric terms ``(-1)^{s_j} (M_j - B_j) / B_j`` of :func:`delta_m` (not in %), each
    positive when the model is worse than the baseline on that metric. Same arguments and checks as
    :func:`delta_m`."""
    vals, base, hib = _aligned(values, baselines, higher_is_better)
    for j, (v, b) in enumerate(zip(vals, base)):
        if not math.isfinite(v):
            raise ValueError(
                f"metric {j}: value is {v}; Δm is undefined for a non-finite metric (diverged run?)"
            )
        if not math.isfinite(b):
            raise ValueError(f"metric {j}: baseline is {b}; the single-task baseline must be finite")
        if b <= 0:
            raise ValueError(
                f"metric {j}: baseline is {b}; Δm divides by the baseline, which must be positive "
                "(a relative change from a zero or negative baseline has no meaning)"
            )
    return [(-(v - b) if h else (v - b)) / b for v, b, h in zip(vals, base, hib)]


def delta_m(
    values: Sequence[float] | Mapping[str, float] | Tensor,
    baselines: Sequence[float] | Mapping[str, float] | Tensor,
    higher_is_better: bool | Sequence[bool] | Mapping[str, bool],
    weights: Sequence[float] | Mapping[str, float] | None = None,
) -> float:
    r"""Δm% of ``values`` against the single-task ``baselines``, per metric (Nash-MTL / FAMO / FairGrad):

    .. math:: \Delta m\% = \frac{100}{M} \sum_j (-1)^{s_j} \frac{M_j - B_j}{B_j}

    with :math:`s_j = 1` where higher is better, :math:`s_j = 0` where lower is better.

    **Sign: lower is better; Δm < 0 means better than the single-task baselines, Δm > 0 worse.**

    ``values`` and ``baselines`` are M numbers each (sequences, 1-D tensors, or mappings metric name ->
    value with the same names); ``higher_is_better`` is one flag for all metrics, M flags, or a mapping by
    name. Raises ``ValueError`` on a length or name mismatch, no metrics, a non-finite value or baseline,
    or a baseline that is zero or negative (the relative change divides by it).

    ``weights`` (optional, one per metric, or a mapping by name when ``values`` is a mapping) weighs the
    terms: :math:`100 \sum_j w_j t_j / \sum_j w_j`; metrics of weight 0 are left out entirely (their
    values and baselines are not checked). Default: every metric weight 1, the published convention.
    """
    if weights is None:
        terms = relative_changes(values, baselines, higher_is_better)
        return 100.0 * sum(terms) / len(terms)
    if isinstance(values, Mapping) and isinstance(baselines, Mapping):
        if not isinstance(weights, Mapping):
            raise ValueError("weights must be a mapping by metric name when values are mappings")
        unknown = sorted(set(weights) - set(baselines))
        if unknown:
            raise ValueError(f"weights name metrics that are not among the baselines: {unknown}")
        w_map = {k: float(weights.get(k, 1.0)) for k in baselines}
        keep = [k for k in baselines if w_map[k] != 0.0]
        if not keep:
            raise ValueError("Δm needs at least one metric of positive weight")
        if isinstance(higher_is_better, Mapping):
            hib: Any = {k: higher_is_better[k] for k in keep if k in higher_is_better}
        else:
            hib = higher_is_better
        terms = relative_changes(
            {k: values[k] for k in keep if k in values}, {k: baselines[k] for k in keep}, hib
        )
        ws = [w_map[k] for k in keep]
    else:
        if isinstance(weights, Mapping):
            raise ValueError("weights as a mapping needs values and baselines as mappings")
        vals, base = _floats(values), _floats(baselines)
        w_all = [float(w) for w in weights]
        if len(w_all) != len(base):
            raise ValueError(f"shape mismatch: {len(w_all)} weights for {len(base)} metrics")
        flags = (
            [higher_is_better] * len(base) if isinstance(higher_is_better, bool) else list(higher_is_better)
        )
        if len(flags) != len(base):
            raise ValueError(f"shape mismatch: {len(flags)} higher_is_better flags for {len(base)} metrics")
        idx = [j for j, w in enumerate(w_all) if w != 0.0]
        if not idx:
            raise ValueError("Δm needs at least one metric of positive weight")
        terms = relative_changes(
            [vals[j] for j in idx], [base[j] for j in idx], [bool(flags[j]) for j in idx]
        )
        ws = [w_all[j] for j in idx]
    if any(not math.isfinite(w) or w < 0 for w in ws):
        raise ValueError(f"Δm weights must be finite and >= 0, got {ws}")
    total = sum(ws)
    if total <= 0:
        raise ValueError("Δm needs at least one metric of positive weight")
    return 100.0 * sum(w * t for w, t in zip(ws, terms)) / total
