"""A dependency-free progress bar for the commands (one redrawn line on a terminal, one line per item
otherwise, so logs stay readable)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``Progress(total, "pareto")``; ``advance("zdt1 stch HV 0.99")`` after each finished item."""

    def __init__(self, total: int, label: str = "", *, stream: TextIO | None = None, width: int = 24) -> None:
        if total < 0:
            raise ValueError(f"total must be >= 0, got {total}")
        self.total = total
        self.done = 0
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.t0 = time.perf_counter()
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def line(self, message: str = "") -> str:
        frac = self.done / self.total if self.total else 1.0
        filled = round(frac * self.width)
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
        eta_s = f", ~{eta:.0f} s left" if self.done and self.done < self.total else ""
        bar = "#" * filled + "." * (self.width - filled)
        head = f"{self.label} " if self.label else ""
        return f"{head}[{bar}] {self.done}/{self.total} {elapsed:.0f} s{eta_s}  {message}".rstrip()

    def advance(self, message: str = "") -> None:
        self.done = min(self.done + 1, self.total)
        if self._tty:
            end = "\n" if self.done == self.total else ""
            self.stream.write("\r\x1b[2K" + self.line(message) + end)
        else:
            self.stream.write(self.line(message) + "\n")
        self.stream.flush()
