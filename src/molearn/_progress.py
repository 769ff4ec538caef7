"""Progress bars from tqdm (in the ``cli`` extra), imported only when a bar is drawn."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["progress_bar"]


def progress_bar(total: int, desc: str, *, unit: str = "it") -> Any:
    """A ``tqdm`` bar on stderr, silent when stderr is not a terminal (logs keep one line per item, written
    by the caller); an ImportError naming the install command when tqdm is missing."""
    try:
        from tqdm import tqdm
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("progress bars need tqdm: pip install 'molearn[cli]'") from exc
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=None, dynamic_ncols=True)
