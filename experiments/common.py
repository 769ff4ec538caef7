"""What every experiment script shares: its options, its parallel runs and its output files.

Each ``experiments/<name>/run.py`` builds its command line with :func:`parser`, so that options mean the
same everywhere:

- ``--out DIR``: output folder, ``out/<name>`` by default;
- ``--methods a,b,c``: comma-separated names (:func:`molearn.cli.parse_methods`, "did you mean" for an
  unknown one);
- ``--seeds N|a,b,c``: a count ``N`` for the seeds ``0..N-1`` or a list (:func:`molearn.cli.parse_seeds`);
  an experiment that runs a single seed has ``--seed S`` instead;
- ``--jobs N``: worker processes, one run each (1 runs in this process);
- ``--quick``: a seconds-long run that exercises the code, not the claim;
- ``--no-plot``: no figure (no matplotlib needed).

It runs its jobs with :func:`run_jobs` (one ``spawn`` process pool, torch single-threaded in the workers,
one line per finished run, a tqdm bar on a terminal) and writes its files with :class:`Outputs`;
:func:`main` parses the options, turns a bad input into a one-line message and exit status 2, and prints
the table. The scripts use molearn's public API only (``tests/unit/test_architecture.py`` checks it).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib
import inspect
import os
import resource
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from types import ModuleType
from typing import Any, TextIO

import torch

from molearn.cli import parse_methods, parse_seeds
from molearn.methods import registry

__all__ = [
    "Outputs",
    "figure",
    "floats",
    "ints",
    "load",
    "main",
    "method_kwargs",
    "parser",
    "printer",
    "run_jobs",
    "single_thread",
    "t_quantile",
]

def load(name: str) -> ModuleType:
    """The script of experiment ``name`` (``experiments/<name>/run.py``) as a module."""
    return importlib.import_module(f"experiments.{name}.run")


# ------------------------------------------------------------------------------------------ options
def parser(
    name: str,
    description: str | None,
    *,
    methods: str | None = None,
    known_methods: Sequence[str] | None = None,
    seeds: str | None = None,
    jobs: bool = False,
    quick: str | None = None,
    plot: bool = True,
) -> argparse.ArgumentParser:
    """The options every experiment shares; the script adds its own to the returned parser.

    ``methods``, ``seeds`` and ``quick`` are the help texts of ``--methods`` (checked against
    ``known_methods`` when given), ``--seeds`` (the default in words) and ``--quick``; ``None`` leaves
    the option out. Their defaults are ``None``: the script fills in its own.
    """
    p = argparse.ArgumentParser(
        prog=f"experiments/{name}/run.py",
        description=(description or "").strip().split("\n\n")[0],
    )
    p.add_argument("--out", default=f"out/{name}", help=f"output folder (default: out/{name})")
    if methods is not None:
        known = None if known_methods is None else list(known_methods)
        p.add_argument(
            "--methods",
            type=lambda text: parse_methods(text, known),
            default=None,
            metavar="A,B,...",
            help=f"comma-separated {methods}",
        )
    if seeds is not None:
        p.add_argument(
            "--seeds",
            type=parse_seeds,
            default=None,
            metavar="N|A,B,...",
            help=f"a count N (seeds 0..N-1) or a comma-separated list of seeds (default: {seeds})",
        )
    if jobs:
        default = max(1, min(2, os.cpu_count() or 1))
        p.add_argument(
            "--jobs",
            type=positive_int,
            default=default,
            help=f"worker processes, one run each; 1 runs in this process (default: {default})",
        )
    if quick is not None:
        p.add_argument("--quick", action="store_true", help=quick)
    if plot:
        p.add_argument("--no-plot", action="store_true", help="write no figure (no matplotlib needed)")
    return p


def positive_int(text: str) -> int:
    """An ``argparse`` type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def floats(text: str) -> tuple[float, ...]:
    """An ``argparse`` type: comma-separated numbers, ``"0.1,1"`` -> ``(0.1, 1.0)``."""
    try:
        values = tuple(float(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one number, got {text!r}")
    return values


def ints(text: str) -> tuple[int, ...]:
    """An ``argparse`` type: comma-separated integers, ``"4,5"`` -> ``(4, 5)``."""
    values = floats(text)
    if any(v != int(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    return tuple(int(v) for v in values)


def main(
    name: str,
    build_parser: Callable[[], argparse.ArgumentParser],
    run: Callable[[argparse.Namespace], int],
    argv: Sequence[str] | None = None,
) -> int:
    """Parse ``argv`` and call ``run(args)``; returns the exit status (never raises ``SystemExit``).

    A bad option, or a ``ValueError``, ``KeyError``, ``FileNotFoundError`` or ``ImportError`` raised by
    ``run`` (unknown names, missing data or packages), is one line on stderr and status 2.
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a bad option (argparse printed why)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return int(run(args))
    except (ValueError, KeyError, FileNotFoundError, ImportError) as exc:
        print(f"{name}: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2


# ------------------------------------------------------------------------------------------ runs
@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """torch on one thread inside the block or the decorated function (``@single_thread()``): tiny
    tensors gain nothing from threads, and one thread makes the numbers independent of ``--jobs``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _worker_init(initializer: Callable[..., None] | None, initargs: tuple[Any, ...]) -> None:
    torch.set_num_threads(1)
    if initializer is not None:
        initializer(*initargs)


def run_jobs(
    fn: Callable[[Any], Any],
    items: Sequence[Any],
    *,
    jobs: int = 1,
    describe: Callable[[Any], str] | None = None,
    log: TextIO | None = None,
    cost: Callable[[Any], float] | None = None,
    initializer: Callable[..., None] | None = None,
    initargs: tuple[Any, ...] = (),
) -> list[Any]:
    """``[fn(item) for item in items]``, in this process (``jobs <= 1``) or in ``jobs`` spawned worker
    processes with one torch thread each (``initializer(*initargs)`` runs first in each worker).

    ``cost`` orders the submissions, the most expensive first, so that no worker is left with a long
    run at the end. After each finished item, ``[i/n] describe(result)`` goes to ``log`` (above a tqdm
    bar when ``log`` is a terminal). The results come back in the order of ``items``.
    """
    n = len(items)
    workers = max(1, min(jobs, n))
    results: list[Any] = [None] * n
    width = len(str(n))
    bar = _bar(n, log)
    done = 0

    def report(i: int, result: Any) -> None:
        nonlocal done
        results[i] = result
        done += 1
        if log is None:
            return
        line = f"[{done:>{width}}/{n}]" + (f" {describe(result)}" if describe is not None else "")
        if bar is not None:
            bar.write(line, file=log)
            bar.update()
        else:
            print(line, file=log, flush=True)

    order = list(range(n))
    if cost is not None and workers > 1:
        order.sort(key=lambda i: -cost(items[i]))
    try:
        if workers == 1:
            if initializer is not None:
                initializer(*initargs)
            for i in order:
                report(i, fn(items[i]))
        else:
            import multiprocessing as mp

            ctx = mp.get_context("spawn")
            with ProcessPoolExecutor(
                workers, mp_context=ctx, initializer=_worker_init, initargs=(initializer, initargs)
            ) as pool:
                futures = {pool.submit(fn, items[i]): i for i in order}
                for fut in as_completed(futures):
                    report(futures[fut], fut.result())
    finally:
        if bar is not None:
            bar.close()
    return results


def _bar(total: int, log: TextIO | None) -> Any:
    """A tqdm bar on ``log`` when it is a terminal and tqdm is installed, else ``None``."""
    if log is None or not getattr(log, "isatty", lambda: False)():
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is in molearn's cli and test extras
        return None
    return tqdm(total=total, file=log, leave=False, dynamic_ncols=True)


def printer(log: TextIO | None) -> Callable[[str], None]:
    """A function that prints a line to ``log`` (flushed), or does nothing when ``log`` is None."""
    return (lambda msg: print(msg, file=log, flush=True)) if log is not None else (lambda msg: None)


def method_kwargs(method: str, kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Split ``kwargs`` into those the constructor of the registered ``method`` takes and the names it
    does not."""
    cls = registry()[method]
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(kwargs), []
    return {k: v for k, v in kwargs.items() if k in params}, [k for k in kwargs if k not in params]


def t_quantile(df: int, level: float = 0.95) -> float:
    """The two-sided ``level`` quantile of Student's t with ``df`` degrees of freedom (SciPy); NaN for
    ``df < 1``."""
    if df < 1:
        return float("nan")
    from scipy import stats

    return float(stats.t.ppf(0.5 + level / 2, df))


# ------------------------------------------------------------------------------------------ memory
def _status_kib(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_memory() -> int:
    """Start a per-run peak: free what the last run left (gc, glibc ``malloc_trim``), reset the kernel's peak
    RSS (``/proc/self/clear_refs`` ← 5, Linux ≥ 4.0) or CUDA's peak; returns the current memory in bytes."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        return int(torch.cuda.memory_allocated())
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass
    return (_status_kib("VmRSS") or 0) * 1024


def peak_memory() -> int:
    """Peak since :func:`reset_peak_memory`: CUDA max allocated, else the kernel's peak RSS (VmHWM; the
    process lifetime peak where the reset is not available)."""
    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    hwm = _status_kib("VmHWM")
    return hwm * 1024 if hwm is not None else int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


# ------------------------------------------------------------------------------------------ outputs
class Outputs:
    """The files of one run, in the folder ``out`` (created); :attr:`paths` maps file names to paths."""

    def __init__(self, out: str | os.PathLike[str]) -> None:
        self.dir = Path(out)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.paths: dict[str, Path] = {}

    def path(self, name: str) -> Path:
        """The path of ``name`` in the folder, recorded as written."""
        self.paths[name] = self.dir / name
        return self.paths[name]

    def text(self, name: str, text: str) -> Path:
        path = self.path(name)
        path.write_text(text)
        return path

    def csv(self, name: str, rows: Sequence[Any], header: Sequence[str] | None = None) -> Path:
        """``rows`` of values under ``header``, or of dicts (``header``: the first row's keys)."""
        path = self.path(name)
        with open(path, "w", newline="") as fh:
            if rows and isinstance(rows[0], Mapping):
                w = csv.DictWriter(fh, fieldnames=list(header or rows[0]))
                w.writeheader()
                w.writerows(rows)
            else:
                w2 = csv.writer(fh)
                if header is not None:
                    w2.writerow(header)
                w2.writerows(rows)
        return path

    def done(self, name: str, markdown: str, t0: float | None = None) -> int:
        """Print ``markdown`` (stdout) and the files written (stderr); returns exit status 0."""
        print(markdown)
        took = "" if t0 is None else f" in {time.perf_counter() - t0:.1f} s"
        print(f"{name}: wrote {', '.join(str(p) for p in self.paths.values())}{took}", file=sys.stderr)
        return 0


def figure(what: str, **kwargs: Any) -> Any:
    """A ``matplotlib.figure.Figure(**kwargs)`` (no pyplot state), or an ImportError saying that the
    ``what`` needs matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"the {what} needs matplotlib: pip install matplotlib, or pass --no-plot") from exc
    return Figure(**kwargs)
