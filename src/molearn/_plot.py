"""matplotlib, imported only when a figure is drawn (it is in the ``plot`` extra, not a dependency)."""

from __future__ import annotations

from typing import Any

__all__ = ["figure_class"]


def figure_class(what: str) -> Any:
    """``matplotlib.figure.Figure`` (no pyplot, no global backend state), or an ImportError saying
    which figure needs it and how to install it."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"the {what} needs matplotlib: pip install molearn[plot]") from exc
    return Figure
