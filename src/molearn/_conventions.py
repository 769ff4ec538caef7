"""Conventions shared by the commands and the workbench: "did you mean" suggestions, seed lists."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["did_you_mean", "norm_name", "seed_list"]


def norm_name(name: str) -> str:
    """``"Nash-MTL"`` -> ``"nashmtl"``: names compared case-insensitively, ignoring ``-`` and ``_``."""
    return str(name).lower().replace("-", "").replace("_", "")


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest known name, or an empty string."""
    known = list(known)
    close = difflib.get_close_matches(str(name).lower(), [k.lower() for k in known], n=1, cutoff=0.6)
    if not close:  # also compare without '-' and '_' (nash_mtl vs nashmtl)
        table = {norm_name(k): k for k in known}
        hit = difflib.get_close_matches(norm_name(name), list(table), n=1, cutoff=0.6)
        close = [table[hit[0]]] if hit else []
    return f" (did you mean {close[0]!r}?)" if close else ""


def seed_list(value: object) -> list[int]:
    """Seeds as every command takes them: a count ``N`` (``3`` or ``"3"``) means ``0..N-1``; a list (or a
    comma-separated string ``"0,3,7"``) names them. Raises ``ValueError`` unless they are distinct integers
    >= 0, at least one."""
    if isinstance(value, bool):
        raise ValueError(f"seeds must be a count or a list of integers, got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"a seed count must be >= 1, got {value} (seed 0 alone: 1 or '0,')")
        return list(range(value))
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return seed_list(int(text))
        parts: list[object] = [v.strip() for v in text.split(",") if v.strip()]
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        raise ValueError(f"seeds must be a count or a list of integers, got {value!r}")
    seeds = []
    for p in parts:
        if isinstance(p, bool) or not (
            isinstance(p, int) or (isinstance(p, str) and p.lstrip("-").isdigit())
        ):
            raise ValueError(f"seeds must be a count (3 = seeds 0,1,2) or a list of integers, got {value!r}")
        seeds.append(int(p))
    if not seeds:
        raise ValueError(f"at least one seed is needed, got {value!r}")
    if len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"seeds must be distinct integers >= 0, got {value!r}")
    return seeds
