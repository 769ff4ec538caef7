"""Option types shared by every command and experiment script, so that options mean the same everywhere:
``--methods a,b,c`` (comma-separated, names as :func:`molearn.methods.get` takes them) and ``--seeds``
(a count ``N`` for the seeds ``0..N-1``, or a comma-separated list ``0,3,7``)."""

from __future__ import annotations

import argparse
from collections.abc import Iterable

from .._conventions import did_you_mean, seed_list

__all__ = ["did_you_mean", "parse_methods", "parse_seeds"]


def parse_seeds(text: str) -> list[int]:
    """``"3"`` -> ``[0, 1, 2]``; ``"0,3,7"`` -> ``[0, 3, 7]`` (distinct integers >= 0)."""
    try:
        return seed_list(str(text))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--seeds: {err}") from None


def parse_methods(text: str, known: Iterable[str] | None = None) -> list[str]:
    """``"mgda, cagrad"`` -> ``["mgda", "cagrad"]``; with ``known`` names, an unknown one is an error
    with a suggestion. Names are compared case-insensitively, ignoring ``-`` and ``_``."""
    names = [m.strip() for m in str(text).split(",") if m.strip()]
    if not names:
        raise argparse.ArgumentTypeError("--methods needs at least one method name")
    if known is not None:
        table = {k.lower().replace("-", "").replace("_", ""): k for k in known}
        for name in names:
            if name.lower().replace("-", "").replace("_", "") not in table:
                hint = did_you_mean(name, table.values())
                known_list = ", ".join(sorted(table.values()))
                raise argparse.ArgumentTypeError(f"unknown method {name!r}{hint}; known: {known_list}")
    return names
