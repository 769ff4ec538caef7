"""Helpers shared by the benchmark scripts: machine description, interleaved timing, peak memory, output."""

from __future__ import annotations

import csv
import ctypes
import datetime as _dt
import importlib
import json
import os
import pkgutil
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"


# ---------------------------------------------------------------------------------------------- machine
def machine_info(device: str = "cpu") -> dict[str, Any]:
    """What produced the numbers: platform, CPUs, torch/torchjd versions, device, date (UTC)."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        affinity = os.cpu_count() or 0
    try:
        import torchjd

        tj_version = getattr(torchjd, "__version__", None) or _dist_version("torchjd")
    except ImportError:
        tj_version = "not installed"
    info: dict[str, Any] = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torchjd": tj_version,
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def _dist_version(name: str) -> str:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # pragma: no cover
        return "unknown"


def command_line() -> str:
    args = " ".join(sys.argv[1:])
    script = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "?"
    return f"python benchmarks/{script} {args}".strip()


def load_all_methods() -> dict[str, str]:
    """Import every ``molearn/methods/_*.py`` so that ``registry()`` sees the methods written so far
    (even those not yet exported by ``molearn.methods``); returns the modules that failed to import."""
    import molearn.methods

    failed = {}
    for mod in pkgutil.iter_modules(molearn.methods.__path__):
        if mod.name.startswith("_") and mod.name != "_base":
            try:
                importlib.import_module(f"molearn.methods.{mod.name}")
            except Exception as exc:
                failed[mod.name] = f"{type(exc).__name__}: {exc}"[:200]
    return failed


# ---------------------------------------------------------------------------------------------- timing
def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def interleaved_times(
    fns: dict[str, Callable[[], Any]],
    *,
    device: str = "cpu",
    warmup: int = 2,
    min_reps: int = 5,
    max_reps: int = 50,
    budget_s: float = 2.0,
    clock: str = "wall",
    wall_times: dict[str, list[float]] | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of each function, measured round-robin so that drift hits all of them alike.

    ``clock="process"`` measures the CPU time of this process (``time.process_time``) instead of the wall
    time: on shared CPUs it does not count the time spent waiting for a core (use it with one torch
    thread, on the CPU only: with several threads it sums their times). ``wall_times``, if given, also
    receives the wall times of the same calls.

    Each repetition calls every function once, in an order rotated by one at each repetition. At
    least ``min_reps`` and at most ``max_reps`` repetitions are made; between the two, repetitions stop
    once ``budget_s`` seconds have been spent.
    """
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    synchronize(device)
    now = time.process_time if clock == "process" else time.perf_counter
    times: dict[str, list[float]] = {n: [] for n in names}
    start = time.perf_counter()
    rep = 0
    while rep < max_reps and (rep < min_reps or time.perf_counter() - start < budget_s):
        shift = rep % len(names)
        for n in names[shift:] + names[:shift]:
            synchronize(device)
            w0 = time.perf_counter()
            t0 = now()
            fns[n]()
            synchronize(device)
            times[n].append(now() - t0)
            if wall_times is not None:
                wall_times.setdefault(n, []).append(time.perf_counter() - w0)
        rep += 1
    return times


def default_clock(device: str, threads: int) -> str:
    """Process CPU time on the CPU with one thread (robust to other jobs on shared cores), else wall time."""
    return "process" if device == "cpu" and threads == 1 else "wall"


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def paired_ratio(num: Sequence[float], den: Sequence[float]) -> float:
    """Median over the repetitions of num[r] / den[r] (both measured in the same round-robin repetition)."""
    return median([a / b for a, b in zip(num, den) if b > 0])


# ---------------------------------------------------------------------------------------------- memory
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


class PeakMemory:
    """Peak memory of a piece of code above what was held before it.

    CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (exact for tensors).

    CPU (Linux): the process's peak resident set size ``VmHWM``, reset through ``/proc/self/clear_refs``
    (writing ``5``), minus ``VmRSS`` just before the code runs. For this to follow tensor allocations,
    glibc is told (``mallopt``) during :meth:`measure` to serve every allocation above 64 KiB with its own
    ``mmap`` and to return freed memory at once (``malloc_trim`` first), so a freed tensor leaves the RSS
    when it is freed. Outside :meth:`measure` glibc is set to keep freed memory for reuse (mmap threshold
    32 MiB, no trimming below 1 GiB), so that timings do not pay a page fault per allocation. This
    counts every allocation of the process during the code (autograd buffers included), not only
    Python-visible tensors; small allocations (< 64 KiB) from the heap are counted too.
    :meth:`calibrate` checks the method on tensors of known size. ``available`` is False elsewhere.
    """

    def __init__(self, device: str) -> None:
        self.device = device
        self.kind = "cuda.max_memory_allocated" if device.startswith("cuda") else "VmHWM-VmRSS (mallopt mmap)"
        self.available = True
        self._libc: Any = None
        if not device.startswith("cuda"):
            try:
                self._libc = ctypes.CDLL("libc.so.6")
                self._reset_hwm()
                self._status()
                self._fast()
            except (OSError, AttributeError):
                self.available = False

    def _lean(self) -> None:
        """Every allocation above 64 KiB gets its own mmap, freed memory goes back at once (measuring)."""
        ok = self._libc.mallopt(_M_MMAP_THRESHOLD, 64 * 1024)
        ok = ok and self._libc.mallopt(_M_TRIM_THRESHOLD, 128 * 1024)
        self._libc.malloc_trim(0)
        if not ok:
            raise OSError("mallopt failed")

    def _fast(self) -> None:
        """glibc keeps freed memory for reuse, as in steady-state training (timing: no page faults)."""
        self._libc.mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024)
        self._libc.mallopt(_M_TRIM_THRESHOLD, 1024 * 1024 * 1024)

    @staticmethod
    def _status() -> dict[str, int]:
        out = {}
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":")
                    out[key] = int(value.split()[0]) * 1024
        return out

    @staticmethod
    def _reset_hwm() -> None:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")

    def measure(self, fn: Callable[[], Any]) -> float:
        """Bytes of peak memory during ``fn()`` above the memory held before it (NaN if unavailable)."""
        if not self.available:
            fn()
            return float("nan")
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            before = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            fn()
            torch.cuda.synchronize()
            return float(torch.cuda.max_memory_allocated() - before)
        try:
            self._lean()
            self._reset_hwm()
            before = self._status()["VmRSS"]
            fn()
            return float(self._status()["VmHWM"] - before)
        except OSError:
            self.available = False
            return float("nan")
        finally:
            self._fast()

    def calibrate(self, mbytes: int = 64) -> float:
        """Measured / true peak (1.0 is exact) of a code holding ``mbytes`` MB in 2 large tensors, then in
        64 small ones; the heap is first filled and freed with small tensors outside :meth:`measure`
        (as the timed steps do). Returns the ratio farthest from 1."""
        n = mbytes * 1_000_000 // 4

        def big() -> None:
            a = torch.randn(n // 2, device=self.device)
            b = a * 2
            del a, b

        def small() -> None:
            held = [torch.randn(n // 64, device=self.device) for _ in range(64)]
            del held

        small()  # dirty the heap in "fast" mode
        ratios = [self.measure(big) / (n * 4), self.measure(small) / (n * 4)]
        return max(ratios, key=lambda r: abs(r - 1.0))


# ---------------------------------------------------------------------------------------------- output
def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(x: Any) -> str:
        return str(x).replace("|", "\\|")

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(x) for x in r) + " |" for r in rows]
    return "\n".join(lines)


def machine_block(info: dict[str, Any]) -> str:
    keys = ["date_utc", "platform", "processor", "python", "cpu_count", "cpus_usable", "torch_threads"]
    keys += ["torch", "torchjd", "device"] + [k for k in ("gpu", "clock") if k in info]
    return "\n".join(f"- {k}: `{info[k]}`" for k in keys)


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, default=str)


def fmt(x: float, digits: int = 3) -> str:
    if x != x:  # NaN
        return "–"
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.{digits}g}"


def fmt_time(seconds: float) -> str:
    if seconds != seconds:
        return "–"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"
