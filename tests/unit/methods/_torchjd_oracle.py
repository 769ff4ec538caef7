"""TorchJD 0.18 weightings as test oracles (UPGrad/DualProj's default projector needs ``qpsolvers``; without
it, the same QP goes to quadprog directly through TorchJD's own normalize/regularize)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

torchjd_agg = pytest.importorskip("torchjd.aggregation")
quadprog = pytest.importorskip("quadprog")
from torchjd._linalg import DualConeProjector, normalize, regularize  # noqa: E402


class QuadprogDirect(DualConeProjector):
    """TorchJD's QuadprogProjector without the qpsolvers wrapper."""

    def __init__(self, norm_eps: float = 1e-4, reg_eps: float = 1e-4) -> None:
        self.norm_eps, self.reg_eps = norm_eps, reg_eps

    def __call__(self, U: torch.Tensor, G: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        g = regularize(normalize(G, self.norm_eps), self.reg_eps).double().numpy()
        u = U.double().numpy()
        k = g.shape[0]
        w = np.apply_along_axis(lambda row: quadprog.solve_qp(g, np.zeros(k), np.eye(k), row)[0], -1, u)
        return torch.as_tensor(w, dtype=G.dtype)


def projector(norm_eps: float = 1e-4, reg_eps: float = 1e-4) -> DualConeProjector:
    try:
        from torchjd._linalg import QuadprogProjector

        return QuadprogProjector(norm_eps=norm_eps, reg_eps=reg_eps)
    except ImportError:
        return QuadprogDirect(norm_eps, reg_eps)


def upgrad_weights(g: torch.Tensor, pref: torch.Tensor | None = None) -> torch.Tensor:
    return torchjd_agg.UPGradWeighting(pref, projector=projector())(g)


def dualproj_weights(g: torch.Tensor, pref: torch.Tensor | None = None) -> torch.Tensor:
    return torchjd_agg.DualProjWeighting(pref, projector=projector())(g)


def mgda_weights(g: torch.Tensor) -> torch.Tensor:
    return torchjd_agg.MGDAWeighting()(g)
