"""Euclidean projection onto the probability simplex, batched over leading dimensions."""

from __future__ import annotations

import torch
from torch import Tensor


def project_simplex(v: Tensor, radius: float = 1.0) -> Tensor:
    """Project each row ``v[..., :]`` onto ``{w ≥ 0, Σ w = radius}`` (sort-based, Duchi et al. 2008).

    No data-dependent control flow: safe on the GPU without a host synchronisation.
    """
    if v.shape[-1] == 0:
        raise ValueError("cannot project an empty vector onto the simplex")
    u, _ = torch.sort(v, dim=-1, descending=True)
    css = u.cumsum(-1) - radius
    k = torch.arange(1, v.shape[-1] + 1, dtype=v.dtype, device=v.device)
    cond = (u - css / k) > 0
    # index of the last True (cond is True for a prefix); at least index 0 is always True
    rho = cond.to(torch.int64).cumsum(-1).argmax(-1, keepdim=True)
    theta = css.gather(-1, rho) / (rho + 1).to(v.dtype)
    return (v - theta).clamp_min(0)
