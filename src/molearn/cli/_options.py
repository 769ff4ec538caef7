"""Option types shared by every command and experiment script, so that options mean the same everywhere:
``--methods a,b,c`` (comma-separated, names as :func:`molearn.methods.get` takes them) and ``--seeds``
(a count ``N`` for the seeds ``0..N-1``, or a comma-separated list ``0,3,7``)."""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Iterable

__all__ = ["did_you_mean", "parse_methods", "parse_seeds"]


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest known name, or an empty string."""
    close = difflib.get_close_matches(name.lower(), [k.lower() for k in known], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def parse_seeds(text: str) -> list[int]:
    """``"3"`` -> ``[0, 1, 2]``; ``"0,3,7"`` -> ``[0, 3, 7]`` (distinct integers >= 0)."""
    text = str(text).strip()
    try:
        seeds = list(range(int(text))) if text.isdigit() else [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--seeds expects a count (3 = seeds 0,1,2) or a comma-separated list of seeds, got {text!r}"
        ) from None
    if not seeds:
        raise argparse.ArgumentTypeError(f"--seeds needs at least one seed, got {text!r}")
    if len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"--seeds must be distinct integers >= 0, got {text!r}")
    return seeds


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
