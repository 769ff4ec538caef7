"""Checkpoint files: atomic writes, safe reads, and the random-number-generator states a run depends on.

A checkpoint holds tensors and plain data only (dicts, lists, tuples, numbers, strings, ``None``), and is
read with ``torch.load(..., weights_only=True)``: a file that needs anything else (an object whose
unpickling would run code) is refused with an error naming it, never executed.
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

__all__ = ["atomic_save", "capture_rng", "check_plain", "load", "remove_stale", "restore_rng"]

# what ``torch.load(weights_only=True)`` rebuilds besides tensors and containers, in every supported torch
# (2.3 refuses sets, bytes, complex numbers, torch.device and collections.Counter)
_PLAIN = (bool, int, float, str, type(None), torch.dtype, torch.Size)


def check_plain(obj: Any, path: str = "checkpoint") -> None:
    """Raise a ``TypeError`` naming the entry unless ``obj`` holds only tensors and plain data, so that a
    checkpoint that could not be read back with ``weights_only=True`` is never written."""
    if isinstance(obj, torch.Tensor) or type(obj) in _PLAIN:
        return
    if type(obj) in (dict, OrderedDict):
        for key, value in obj.items():
            if type(key) not in _PLAIN:
                raise TypeError(f"{path} has a key of type {type(key).__name__}")
            check_plain(value, f"{path}[{key!r}]")
        return
    if type(obj) in (list, tuple):
        for i, value in enumerate(obj):
            check_plain(value, f"{path}[{i}]")
        return
    raise TypeError(
        f"{path} is a {type(obj).__module__}.{type(obj).__qualname__}: a checkpoint holds tensors and plain "
        "data only (a scheduler or method with such state cannot be checkpointed safely)"
    )


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (not possible on every platform)."""
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync it, then ``os.replace`` it over ``path``.

    A run killed at any point leaves either the previous file or the new one, never a truncated mix. An
    error while writing (disk full, no permission, an object that cannot be saved) removes the temporary
    file and raises an error that names ``path`` and says that the previous checkpoint is intact.
    """
    target = Path(path)
    kept = (
        f"the previous checkpoint {os.fspath(target)!r} is intact"
        if target.exists()
        else "no previous checkpoint exists"
    )
    tmp: str | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            why = err.strerror or str(err)
            raise OSError(
                err.errno, f"cannot write checkpoint {os.fspath(target)!r} ({why}); {kept}"
            ) from err
        if isinstance(err, Exception):
            raise RuntimeError(f"cannot write checkpoint {os.fspath(target)!r} ({err}); {kept}") from err
        raise  # KeyboardInterrupt, SystemExit: as they are, after the clean-up
    _fsync_dir(target.parent)


def remove_stale(path: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files :func:`atomic_save` leaves when the process is killed while writing
    ``path`` (``.<name>.*.tmp`` beside it); returns them."""
    target = Path(path)
    if not target.parent.is_dir():
        return []
    stale = sorted(target.parent.glob(f".{target.name}.*.tmp"))
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


def load(path: str | os.PathLike[str], required: Iterable[str] = ("format",)) -> dict[str, Any]:
    """Read a checkpoint written by :func:`atomic_save` with ``weights_only=True``.

    A damaged file, one that holds anything but tensors and plain data (refused: unpickling it could run
    code), or a dict without the ``required`` keys gives an error naming the file.
    """
    name = os.fspath(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()] or [type(err).__name__]
        first = next((ln for ln in lines if "unsupported" in ln.lower() or "Unpickler" in ln), lines[0])
        if "weights only" in str(err).lower() or "weights_only" in str(err):
            raise RuntimeError(
                f"refusing to load checkpoint {name!r}: it holds objects other than tensors and plain data, "
                f"and unpickling them could run code ({first})"
            ) from err
        raise RuntimeError(f"cannot read checkpoint {name!r}: {first}") from err
    except Exception as err:
        raise RuntimeError(f"cannot read checkpoint {name!r}: {err}") from err
    if not isinstance(state, dict) or "format" not in state:
        raise RuntimeError(f"{name!r} is not a molearn training checkpoint")
    missing = [k for k in required if k not in state]
    if missing:
        raise RuntimeError(f"checkpoint {name!r} misses {', '.join(map(repr, missing))}")
    return state


def capture_rng() -> dict[str, Any]:
    """The global generators a training step may draw from: torch CPU (and CUDA if in use), ``random``."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value: Any) -> Any:
    """``random.setstate`` wants tuples (a state that went through JSON-like containers has lists)."""
    if isinstance(value, list):
        return tuple(_as_tuples(v) for v in value)
    if isinstance(value, tuple):
        return tuple(_as_tuples(v) for v in value)
    return value
