"""Multi-modal learning without modality imbalance: late-fusion models whose fused and uni-modal losses are
objectives for molearn's methods, MIMO, and the modality-balancing baselines (OGM-GE, G-Blending).
"""

from ._baselines import (
    OGMGE,
    BalancerStrategy,
    FusedOnly,
    GBlend,
    Strategy,
    Unimodal,
    gblend_weights,
    ogm_coefficients,
    ogm_scores,
)
from ._mimo import MIMO, mimo_objective, mimo_weights, smoothmax
from ._model import FusionOutput, LateFusion, check_batch, objectives
from ._toy import two_gaussian_modalities

__all__ = [
    "MIMO",
    "OGMGE",
    "BalancerStrategy",
    "FusedOnly",
    "FusionOutput",
    "GBlend",
    "LateFusion",
    "Strategy",
    "Unimodal",
    "check_batch",
    "gblend_weights",
    "mimo_objective",
    "mimo_weights",
    "objectives",
    "ogm_coefficients",
    "ogm_scores",
    "smoothmax",
    "two_gaussian_modalities",
]
