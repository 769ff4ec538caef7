"""Task metrics, the meter protocol that evaluates a model split by split (with the meters of the dense
and multi-label benchmarks: segmentation, depth, normals, per-attribute accuracy / F1), and the
multi-task summary Δm (relative change against single-task baselines).
"""

from ._core import (
    ClassificationMeter,
    MeanMeter,
    Meter,
    accuracy,
    delta_m,
    relative_changes,
)
from ._dense import (
    ANGLE_THRESHOLDS,
    DepthMeter,
    MeterGroup,
    MultiLabelMeter,
    NormalMeter,
    SegmentationMeter,
)

__all__ = [
    "ANGLE_THRESHOLDS",
    "ClassificationMeter",
    "DepthMeter",
    "MeanMeter",
    "Meter",
    "MeterGroup",
    "MultiLabelMeter",
    "NormalMeter",
    "SegmentationMeter",
    "accuracy",
    "delta_m",
    "relative_changes",
]
