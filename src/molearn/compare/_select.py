"""Model selection as the field does it: each run is scored at the epoch of its best validation Δm.

A run's history is one :class:`EpochScores` per epoch (validation and test metrics). With a validation split
and finite baselines, :func:`select_epoch` picks the epoch whose **validation** Δm% against the single-task
baselines is lowest (the first such epoch on ties; epochs with a non-finite Δm are skipped); without a
validation split it picks the last epoch. The test metrics of the picked epoch are what the report
shows, beside those of the last epoch. Single-task runs are selected on their own task's metrics alone
(:func:`select_single_task_epoch`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..metrics import delta_m

__all__ = ["BEST_VAL", "LAST", "EpochScores", "safe_delta_m", "select_epoch", "select_single_task_epoch"]

BEST_VAL = "best validation Δm"
LAST = "last epoch"


@dataclass
class EpochScores:
    """The metrics of one epoch: ``val`` (empty without a validation split) and ``test``."""

    epoch: int
    test: dict[str, float]
    val: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {"epoch": self.epoch, "test": self.test, "val": self.val}

    @classmethod
    def from_json(cls, obj: Mapping[str, object]) -> EpochScores:
        return cls(int(obj["epoch"]), dict(obj["test"]), dict(obj.get("val") or {}))  # type: ignore[arg-type]


def safe_delta_m(
    values: Mapping[str, float],
    baselines: Mapping[str, float],
    higher_is_better: Mapping[str, bool],
    weights: Mapping[str, float],
) -> float:
    """Δm% over the metrics of positive weight, or NaN when a value or a baseline makes it undefined."""
    names = [k for k, w in weights.items() if w > 0]
    if not names or any(k not in values or k not in baselines for k in names):
        return math.nan
    try:
        return delta_m(
            {k: values[k] for k in names},
            {k: baselines[k] for k in names},
            {k: higher_is_better[k] for k in names},
            {k: weights[k] for k in names},
        )
    except ValueError:
        return math.nan


def select_epoch(
    history: Sequence[EpochScores],
    baselines: Mapping[str, float] | None,
    higher_is_better: Mapping[str, bool],
    weights: Mapping[str, float],
) -> tuple[int, str]:
    """``(index into history, how)``: the epoch of the lowest validation Δm% (``how`` = :data:`BEST_VAL`),
    or the last epoch (:data:`LAST`) when there is no validation data, no baselines or no finite
    validation Δm. Raises ``ValueError`` for an empty history."""
    if not history:
        raise ValueError("no epochs to select from")
    if baselines is None or not any(h.val for h in history):
        return len(history) - 1, LAST
    best, best_dm = None, math.inf
    for i, h in enumerate(history):
        dm = safe_delta_m(h.val, baselines, higher_is_better, weights)
        if math.isfinite(dm) and dm < best_dm:
            best, best_dm = i, dm
    if best is None:
        return len(history) - 1, LAST
    return best, BEST_VAL


def select_single_task_epoch(
    history: Sequence[EpochScores], metrics: Sequence[str], higher_is_better: Mapping[str, bool],
    weights: Mapping[str, float],
) -> tuple[int, str]:  # fmt: skip
    """The epoch of a single-task run: its task's validation Δm% against the run's own last-epoch
    validation values (so one metric: simply its best validation value), the last epoch without
    validation data."""
    sub_w = {k: weights[k] for k in metrics}
    if not history or not history[-1].val:
        return select_epoch(history, None, higher_is_better, sub_w)
    ref = {k: history[-1].val.get(k, math.nan) for k in metrics}
    if all(math.isfinite(v) and v > 0 for v in ref.values()):
        return select_epoch(history, ref, higher_is_better, sub_w)
    # a non-positive reference: rank by the first metric of positive weight alone
    first = next(k for k in metrics if sub_w[k] > 0)
    sign = -1.0 if higher_is_better[first] else 1.0
    vals = [(sign * h.val.get(first, math.nan), i) for i, h in enumerate(history)]
    finite = [(v, i) for v, i in vals if math.isfinite(v)]
    if not finite:
        return len(history) - 1, LAST
    return min(finite)[1], BEST_VAL
