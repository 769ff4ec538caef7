"""Small constant tensors, created once per (shape, device, dtype) on the device and reused.

Creating them per call would cost a few kernel launches each (and, for tensors built from Python
lists, a host-to-device copy); reusing them keeps the solvers cheap on the CPU and capturable in a
CUDA graph. The returned tensors are shared: never modify them in place.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor


@lru_cache(maxsize=512)
def eye(k: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """The K×K identity."""
    return torch.eye(k, device=device, dtype=dtype)


@lru_cache(maxsize=512)
def scaled_eye(k: int, device: torch.device, dtype: torch.dtype, scale: float) -> Tensor:
    """``scale`` times the K×K identity."""
    return torch.eye(k, device=device, dtype=dtype) * scale


@lru_cache(maxsize=512)
def scaled_ones(k: int, device: torch.device, dtype: torch.dtype, scale: float) -> Tensor:
    """A K-vector filled with ``scale``."""
    return torch.full((k,), scale, device=device, dtype=dtype)


@lru_cache(maxsize=512)
def arange(k: int, device: torch.device, dtype: torch.dtype = torch.int64, start: int = 0) -> Tensor:
    """``start, ..., start + K - 1``."""
    return torch.arange(start, start + k, device=device, dtype=dtype)


@lru_cache(maxsize=64)
def subset_masks(k: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """All ``2^K`` subsets of ``range(K)``: (2^K, K) bool (row ``s``: the bits of ``s``) and their
    outer products (2^K, K, K) bool (``i`` and ``j`` both in the subset)."""
    codes = torch.arange(2**k, device=device).unsqueeze(-1)
    masks = ((codes >> torch.arange(k, device=device)) & 1).bool()
    return masks, masks.unsqueeze(-1) & masks.unsqueeze(-2)


@lru_cache(maxsize=64)
def neg_mask(k: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``-1`` where the subset of :func:`subset_masks` holds the index, else 0: (2^K, K, 1)."""
    return -subset_masks(k, device)[0].unsqueeze(-1).to(dtype)
