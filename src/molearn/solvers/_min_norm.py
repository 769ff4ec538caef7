"""Minimum-norm point in the convex hull of the gradients (MGDA's subproblem)."""

from __future__ import annotations

import torch
from torch import Tensor

from ._simplex import project_simplex


def min_norm(gramian: Tensor, *, iters: int = 500) -> Tensor:
    """``argmin_{w ∈ Δ} wᵀ G w`` for a batch of Gramians (..., K, K), in float64, sync-free.

    Accelerated projected gradient (FISTA) on the Gramian scaled by its largest eigenvalue bound (the
    solution is invariant to the scale of G), a fixed number of iterations.
    """
    g = gramian.to(torch.float64)
    k = g.shape[-1]
    scale = g.diagonal(dim1=-2, dim2=-1).sum(-1, keepdim=True).unsqueeze(-1).clamp_min(torch.finfo(g.dtype).tiny)
    g = g / scale
    w = torch.full(g.shape[:-1], 1.0 / k, dtype=g.dtype, device=g.device)
    y, t = w, 1.0
    for _ in range(iters):
        w_next = project_simplex(y - (g @ y.unsqueeze(-1)).squeeze(-1))
        t_next = (1 + (1 + 4 * t * t) ** 0.5) / 2
        y = w_next + ((t - 1) / t_next) * (w_next - w)
        w, t = w_next, t_next
    return w
