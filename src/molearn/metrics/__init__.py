"""Task metrics and the multi-task summary Δm (relative change against single-task baselines).
"""

from ._core import (
    ClassificationMeter,
    accuracy,
    delta_m,
    relative_changes,
)

__all__ = [
    "ClassificationMeter",
    "accuracy",
    "delta_m",
    "relative_changes",
]
