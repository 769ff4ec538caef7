"""Run logs: CSV files that can be cut back to a checkpoint, optional TensorBoard, a stdlib progress line."""

from __future__ import annotations

import csv
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

__all__ = ["CsvLog", "Progress", "TensorBoardLog"]

TB_HINT = "tensorboard=True needs the tensorboard package: pip install tensorboard"


class CsvLog:
    """An append-only CSV file whose header is fixed by the first row written.

    :meth:`offset` (after :meth:`sync`) is recorded in a checkpoint; :meth:`truncate` cuts the file back to
    it on resume, so rows written after the checkpoint by a killed run are not duplicated.
    """

    def __init__(self, path: Path, fresh: bool, columns: Sequence[str] | None = None) -> None:
        self.path = path
        self.columns: list[str] | None = list(columns) if columns else None
        path.parent.mkdir(parents=True, exist_ok=True)
        if fresh or not path.exists():
            path.write_text("")
        elif self.columns is None:
            with path.open(newline="") as f:
                header = next(csv.reader(f), None)
            self.columns = header or None
        self._file: TextIO = path.open("a", newline="")
        self._writer: csv.DictWriter[str] | None = None
        if self.columns is not None:
            self._writer = csv.DictWriter(self._file, self.columns, restval="", extrasaction="ignore")
        self._last_flush = time.monotonic()

    def write(self, row: Mapping[str, Any]) -> None:
        """Append one row (keys missing from the header are dropped, missing columns left empty)."""
        if self._writer is None:
            self.columns = list(row)
            self._writer = csv.DictWriter(self._file, self.columns, restval="", extrasaction="ignore")
            self._writer.writeheader()
        self._writer.writerow(row)
        now = time.monotonic()
        if now - self._last_flush > 1.0:
            self._file.flush()
            self._last_flush = now

    def sync(self) -> None:
        """Flush to the operating system and to disk."""
        self._file.flush()
        os.fsync(self._file.fileno())

    def offset(self) -> int:
        return self._file.tell()

    def truncate(self, size: int) -> None:
        """Cut the file back to ``size`` bytes (the offset recorded in the checkpoint)."""
        self._file.flush()
        if os.path.getsize(self.path) > size:
            self._file.truncate(size)
        self._file.seek(0, os.SEEK_END)
        if size == 0:  # the header went too: the next row writes it again
            self.columns, self._writer = None, None

    def close(self) -> None:
        self._file.close()


class TensorBoardLog:
    """Scalars to TensorBoard through ``torch.utils.tensorboard`` (imported only when asked for)."""

    def __init__(self, log_dir: Path, purge_step: int | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:  # tensorboard is optional
            raise ImportError(TB_HINT) from err
        self._writer = SummaryWriter(str(log_dir), purge_step=purge_step)

    def write(self, row: Mapping[str, Any], step: int, prefix: str) -> None:
        for key, value in row.items():
            if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                self._writer.add_scalar(f"{prefix}/{key}", value, step)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class Progress:
    """One status line on a terminal, rewritten in place with ``\\r`` (nothing when not a TTY)."""

    def __init__(self, enabled: bool = True, stream: TextIO | None = None, every: float = 0.1) -> None:
        self.stream = sys.stderr if stream is None else stream
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = bool(enabled and isatty is not None and isatty())
        self.every = every
        self._last = 0.0
        self._width = 0

    def update(self, text: str, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < self.every:
            return
        self._last = now
        pad = " " * max(0, self._width - len(text))
        self._width = len(text)
        self.stream.write("\r" + text + pad)
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0


def format_eta(seconds: float) -> str:
    """``1:02:03`` / ``02:03``."""
    s = max(0, int(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"
