"""Preference vectors for the preference-conditioned methods: validation and resolution."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

PrefLike = float | Sequence[float] | Tensor | None


def check_pref(pref: PrefLike, name: str, positive: bool = False) -> Tensor | None:
    """Validate a user preference once (host checks at construction are fine) and normalise it to sum 1.

    Raises :class:`ValueError` for a non-1-D/empty/non-finite vector, a negative entry, a zero entry when
    ``positive`` (methods that divide by it), or a zero sum.
    """
    if pref is None:
        return None
    p = torch.as_tensor(pref).detach().to(device="cpu", dtype=torch.float64).clone()
    if p.dim() != 1 or p.numel() == 0:
        raise ValueError(f"{name}: pref must be a non-empty 1-D vector, got shape {tuple(p.shape)}")
    if not bool(torch.isfinite(p).all()):
        raise ValueError(f"{name}: pref must be finite, got {p.tolist()}")
    if bool((p < 0).any()):
        raise ValueError(f"{name}: pref must have no negative entries, got {p.tolist()}")
    if positive and bool((p == 0).any()):
        raise ValueError(f"{name}: pref entries must be positive (it divides by them), got {p.tolist()}")
    if not bool(p.sum() > 0):
        raise ValueError(f"{name}: pref must not sum to zero, got {p.tolist()}")
    return p / p.sum()


def resolve_pref(pref: Tensor | None, k: int, name: str, like: Tensor) -> Tensor:
    """The preference for K objectives on ``like``'s device in float64: the user's (length checked
    against K, a shape check only) or the uniform ``1/K``."""
    if pref is None:
        return torch.full((k,), 1.0 / k, dtype=torch.float64, device=like.device)
    if pref.shape[0] != k:
        raise ValueError(f"{name}: pref has {pref.shape[0]} entries but received {k} losses")
    return pref.to(device=like.device, dtype=torch.float64)


def check_ideal(ideal: PrefLike, name: str) -> Tensor | None:
    if ideal is None:
        return None
    z = torch.as_tensor(ideal).detach().to(device="cpu", dtype=torch.float64).clone()
    if z.dim() > 1 or not bool(torch.isfinite(z).all()):
        raise ValueError(f"{name}: ideal must be a finite scalar or 1-D vector, got {z}")
    return z


def resolve_ideal(ideal: Tensor | None, k: int, name: str, like: Tensor) -> Tensor:
    if ideal is None:
        return torch.zeros(k, dtype=torch.float64, device=like.device)
    if ideal.dim() == 1 and ideal.shape[0] != k:
        raise ValueError(f"{name}: ideal has {ideal.shape[0]} entries but received {k} losses")
    return ideal.to(device=like.device, dtype=torch.float64).expand(k)


def argmax_onehot(v: Tensor) -> Tensor:
    """Indicator of the maximisers of ``v``, shared equally among exact ties (a subgradient of max)."""
    hit = (v == v.max()).to(v.dtype)
    return hit / hit.sum()
