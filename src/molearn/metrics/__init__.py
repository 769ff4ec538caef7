"""Task metrics, the meter protocol that evaluates a model split by split, and the multi-task summary Δm
(relative change against single-task baselines).
"""

from ._core import (
    ClassificationMeter,
    MeanMeter,
    Meter,
    accuracy,
    delta_m,
    relative_changes,
)

__all__ = [
    "ClassificationMeter",
    "MeanMeter",
    "Meter",
    "accuracy",
    "delta_m",
    "relative_changes",
]
