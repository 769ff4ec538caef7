"""Small constant tensors, created once per (shape, device, dtype) on the device and reused.

Creating them per call would cost a few kernel launches each (and, for tensors built from Python
lists, a host-to-device copy); reusing them keeps the solvers cheap on the CPU and capturable in a
CUDA graph. The returned tensors are shared: never modify them in place.
"""

from __future__ import annotations

import math
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


@lru_cache(maxsize=64)
def combinations(n: int, r: int, device: torch.device) -> Tensor:
    """``itertools.combinations(range(n), r)`` as a (C(n, r), r) int64 tensor, built on the device (no
    host-to-device copy): the ``n``-bit codes with ``r`` bits set (bit ``n-1-i`` for index ``i``), in
    decreasing order, which is the lexicographic order of the index tuples."""
    count = math.comb(n, r)
    if r == 0:
        return torch.zeros(1, 0, dtype=torch.int64, device=device)
    codes = torch.arange(2**n, device=device)
    shifts = torch.arange(n - 1, -1, -1, device=device)  # column i: bit n-1-i, i.e. index i
    members = ((codes.unsqueeze(-1) >> shifts) & 1).to(torch.uint8)  # (2^n, n)
    key = torch.where(members.sum(-1) == r, codes, -1)
    top = key.topk(count).indices  # decreasing codes
    chosen = members[top]  # (C, n), in index order
    # the positions of the r members, increasing (a stable sort puts the members first, in order)
    return torch.argsort(1 - chosen.to(torch.int8), dim=-1, stable=True)[:, :r]


def on_device(values: tuple[float, ...], device: torch.device, dtype: torch.dtype) -> Tensor:
    """A 1-D tensor of the Python numbers ``values`` made on ``device`` by fill kernels, without a
    host-to-device copy (which synchronises a GPU stream): for constants set once per device."""
    if not values:
        return torch.zeros(0, device=device, dtype=dtype)
    return torch.stack([torch.full((), v, device=device, dtype=dtype) for v in values])


def device_scalar(value: Tensor | float, device: torch.device) -> Tensor:
    """A 0-d float64 tensor on ``device``: ``value`` itself when it already is one there, else made by a
    fill kernel (a Python number: no host-to-device copy) or moved (a tensor on another device)."""
    if isinstance(value, Tensor):
        return value if value.device == device else value.to(device=device, dtype=torch.float64)
    return torch.full((), value, dtype=torch.float64, device=device)
