"""``molearn compare``: train methods × seeds on one :class:`~molearn.compare.Benchmark` and write a report a
researcher can trust.

**Before the first run** everything is checked (:func:`resolve_config`, :func:`check_benchmark`): config keys
and types, method names and keyword arguments (against the constructor's signature and annotations, then by
constructing each method once), seeds, schedule, device, and a dry run of the benchmark (its data splits,
its model's shared / task-specific parameters, one batch through ``loss_fn`` giving K finite losses, one
batch through the metrics giving every declared metric). A failure exits with status 2 and one line.

**Runs**: every (method, seed) trains a fresh model from ``benchmark.model()`` with
:class:`molearn.train.Trainer` (one :meth:`molearn.Balancer.step` per step, no per-method code) on the
schedule's optimiser and LR scheduler, evaluating the validation and test splits at the end of every epoch.
EW is always run (the cost reference). On CPU each run executes in its own fresh worker process (``spawn``),
so its peak memory can be measured; ``--jobs 0`` runs in this process (CPU peak memory then not measured).

**Single-task baselines (STL)**, unless the benchmark gives ``baselines``: for each seed and task k the same
model trained with ``Fixed(one-hot k)``, scored on task k's metrics. Cached as JSON under
``$MOLEARN_CACHE/compare-stl/`` (default ``~/.cache/molearn``), keyed by benchmark, version, a fingerprint of
the data and of the model's parameter shapes, schedule, seed, task and device type.

**Model selection** (:mod:`molearn.compare._select`): with a validation split, each run's reported metrics
are the test metrics at the epoch of its lowest validation Δm% (STL runs: the best validation value of their
own task); the report also gives Δm% at the last epoch. Without one, the last epoch.

**Cost**: time per step = the median over a run's steps (first step left out) of the Trainer's per-step
wall-clock time; peak memory = ``torch.cuda.max_memory_allocated`` on CUDA, on CPU the worker's maximum
resident set size at the end of training minus its resident size just before (the interpreter, torch and the
data, identical for every method, are not counted). The report gives both as ratios to EW of the same seed.

A failed run (non-finite loss, an exception) is listed in the report with its error and makes the exit status
1; the other runs go on.

**Under torchrun** (:mod:`molearn.compare._ranks`): the ranks share out the runs (``cuda`` becomes each rank's
``cuda:LOCAL_RANK``), gather the results, and rank 0 writes the one report; the numbers are the one-process
comparison's (every run is seeded by its own seed).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import math
import multiprocessing as mp
import os
import pickle
import shlex
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ._benchmark import (
    Benchmark,
    BenchmarkError,
    DeviceLoader,
    Schedule,
    builtin_benchmarks,
    load_benchmark,
    make_optimizer,
    make_scheduler,
    split_parameters,
    to_device,
)
from ._config import (
    CONFIG_KEYS,
    ConfigError,
    apply_changes,
    check_device,
    check_methods,
    check_seeds,
    load_config,
    positive_int,
    positive_number,
    schedule_from,
)
from ._ranks import Shard, shard_from_env
from ._select import BEST_VAL, LAST, EpochScores, safe_delta_m, select_epoch, select_single_task_epoch

__all__ = [
    "DEFAULT_BENCHMARK",
    "DEFAULT_METHODS",
    "CompareConfig",
    "CompareResult",
    "RunSpec",
    "add_arguments",
    "check_benchmark",
    "compare",
    "resolve_config",
    "run",
    "run_cli",
    "run_one",
]

#: the default comparison: representative loss-weighting, Gramian and stochastic methods
DEFAULT_METHODS = ("ew", "mgda", "pcgrad", "cagrad", "nashmtl", "famo", "moco", "modo")
DEFAULT_SEEDS = 3  # seeds 0, 1, 2
DEFAULT_BENCHMARK = "multi_fashion"
STL_FORMAT = 2
PROG = "molearn compare"


@dataclass
class CompareConfig:
    """What to compare: a benchmark, methods (name -> constructor kwargs), seeds, a schedule, a device.

    ``benchmark_ref`` is how worker processes find the benchmark again (a built-in name or
    ``module:object``); ``None`` sends the object itself (it must then be picklable)."""

    benchmark: Benchmark
    methods: dict[str, dict[str, Any]]
    seeds: list[int]
    schedule: Schedule
    schedule_name: str = "default"
    device: str = "cpu"
    benchmark_ref: str | None = None


@dataclass(frozen=True)
class RunSpec:
    """One training run (picklable: sent to a worker process)."""

    label: str  # display name ("EW", "MGDA", "STL-left")
    method: str
    kwargs: dict[str, Any]
    seed: int
    benchmark: Any  # a reference string or a Benchmark
    schedule: Schedule
    device: str
    log_dir: str | None
    measure_memory: bool
    resume: bool = False
    threads: int = 1
    task: int | None = None  # single-task run of this task


# ------------------------------------------------------------------------------------------------ config
def resolve_config(args: argparse.Namespace) -> tuple[CompareConfig, dict[str, Any]]:
    """Options over config file over the benchmark's defaults; returns the config and the run options
    (``jobs``, ``threads``, ``out``). Raises :class:`ConfigError` / ``BenchmarkError`` (one line each)."""
    data = load_config(args.config) if getattr(args, "config", None) else {}
    where = f"{args.config}" if data else "arguments"

    def pick(flag: str, key: str, default: Any) -> tuple[Any, str]:
        value = getattr(args, flag, None)
        if value is not None:
            return value, f"--{flag.replace('_', '-')}"
        if key in data:
            return data[key], f"{where}: {key}"
        return default, key

    ref, _ = pick("benchmark", "benchmark", DEFAULT_BENCHMARK)
    try:
        bm = load_benchmark(ref)
    except BenchmarkError as err:
        raise ConfigError(str(err)) from None
    ref_str = ref if isinstance(ref, str) else None
    methods_value, src = pick("methods", "methods", list(bm.methods or DEFAULT_METHODS))
    methods = check_methods(methods_value, bm.method_kwargs, src)
    if "ew" not in methods:  # EW is always run: the cost reference
        methods = {"ew": {}, **methods}
    seeds_value, src = pick("seeds", "seeds", DEFAULT_SEEDS)
    seeds = check_seeds(seeds_value, src)

    named = [n for n in ("full", "quick") if getattr(args, n, False)]
    if getattr(args, "schedule", None) is not None:
        named.append(args.schedule)
    if len(named) > 1:
        raise ConfigError(
            f"choose one schedule: --full, --quick and --schedule exclude each other (got {named})"
        )
    if named:
        sched_name, sched = schedule_from(named[0], bm, "--full" if named[0] == "full" else "--schedule")
    else:
        sched_name, sched = schedule_from(data.get("schedule", "default"), bm, f"{where}: schedule")
    changes: dict[str, Any] = {}
    if getattr(args, "epochs", None) is not None:
        changes["epochs"] = positive_int(args.epochs, "--epochs")
    if getattr(args, "batch_size", None) is not None:
        changes["batch_size"] = positive_int(args.batch_size, "--batch-size")
    if getattr(args, "lr", None) is not None:
        changes["lr"] = positive_number(args.lr, "--lr")
    if changes:
        sched = apply_changes(sched, changes, "options")
        sched_name += ", " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in changes.items())
    device_value, src = pick("device", "device", "auto")
    device = check_device(device_value, src)
    jobs_value, src = pick("jobs", "jobs", 2)
    if isinstance(jobs_value, str) and jobs_value.strip().isdigit():
        jobs_value = int(jobs_value)
    if isinstance(jobs_value, bool) or not isinstance(jobs_value, int) or jobs_value < 0:
        raise ConfigError(f"{src} must be an integer >= 0 (0: runs in this process), got {jobs_value!r}")
    threads_value, src = pick("threads", "threads", None)
    threads = None if threads_value is None else positive_int(threads_value, src)
    out_value, src = pick("out", "out", "out/compare")
    if not isinstance(out_value, str) or not out_value:
        raise ConfigError(f"{src} must be a folder name, got {out_value!r}")
    if ref_str is None and jobs_value > 0:
        try:
            pickle.dumps(bm)
        except Exception as err:
            raise ConfigError(
                f"benchmark {bm.name!r} cannot be sent to worker processes ({err}); define it at module "
                "level "
                "and pass 'package.module:object', or use jobs 0"
            ) from None
    cfg = CompareConfig(bm, methods, seeds, sched, sched_name, device, ref_str)
    return cfg, {"jobs": jobs_value, "threads": threads, "out": out_value}


# ------------------------------------------------------------------------------------------------ dry run
def _losses_vector(losses: Any, k: int, where: str) -> Tensor:
    if isinstance(losses, Tensor):
        vec = losses.reshape(-1)
    elif isinstance(losses, Sequence) and all(isinstance(v, Tensor) for v in losses):
        vec = (
            torch.stack([v.reshape(()) if v.numel() == 1 else v for v in losses])
            if losses
            else torch.zeros(0)
        )
    else:
        raise BenchmarkError(
            f"{where}: loss_fn must return a (K,) tensor or K scalar tensors, got {type(losses)}"
        )
    if vec.dim() != 1 or vec.shape[0] != k:
        raise BenchmarkError(
            f"{where}: loss_fn returned {tuple(vec.shape)} losses; the benchmark has {k} tasks"
        )
    return vec


def _check_scores(values: Any, names: Sequence[str], where: str) -> dict[str, float]:
    if not isinstance(values, Mapping):
        raise BenchmarkError(f"{where}: the metrics must come as a mapping name -> value, got {type(values)}")
    missing = [n for n in names if n not in values]
    extra = [k for k in values if k not in names]
    if missing or extra:
        raise BenchmarkError(
            f"{where}: the metrics computed are {sorted(values)}, the benchmark declares {list(names)} "
            f"(missing {missing}, undeclared {extra})"
        )
    return {n: float(values[n]) for n in names}


def _bytes(t: Tensor) -> bytes:
    """The raw bytes of a tensor, without numpy."""
    raw = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
    if raw.numel() == 0:
        return b""
    buf = bytearray(raw.numel())
    torch.frombuffer(buf, dtype=torch.uint8).copy_(raw)
    return bytes(buf)


def _fingerprint_item(h: Any, item: Any) -> None:
    if isinstance(item, Tensor):
        h.update(f"{item.dtype}{tuple(item.shape)}".encode())
        h.update(_bytes(item))
    elif isinstance(item, (list, tuple)):
        for x in item:
            _fingerprint_item(h, x)
    elif isinstance(item, Mapping):
        for k in sorted(item, key=str):
            h.update(str(k).encode())
            _fingerprint_item(h, item[k])
    else:
        h.update(repr(item).encode()[:200])


def data_fingerprint(datasets: Mapping[str, Any], samples: int = 64) -> str:
    """A hash of each split's length and of up to ``samples`` evenly spaced items (a data set without
    ``__getitem__``: its type and length only)."""
    h = hashlib.sha256()
    for split, ds in datasets.items():
        h.update(split.encode())
        if ds is None:
            continue
        try:
            n = len(ds)
        except TypeError:
            n = -1
        h.update(str(n).encode())
        if n > 0 and hasattr(ds, "__getitem__"):
            for i in sorted({round(j * (n - 1) / max(1, samples - 1)) for j in range(min(samples, n))}):
                try:
                    _fingerprint_item(h, ds[i])
                except Exception:  # an unusual data set: its length must do
                    break
        else:
            h.update(type(ds).__name__.encode())
    return h.hexdigest()[:16]


def check_benchmark(cfg: CompareConfig) -> dict[str, Any]:
    """The dry run before any training: builds every split, the model and one batch of each, checks the
    K losses and the declared metrics. Returns facts for the report and the cache key (split sizes, a
    fingerprint of data and model). Raises :class:`BenchmarkError` naming the problem."""
    bm, s = cfg.benchmark, cfg.schedule
    where = f"benchmark {bm.name!r}"
    device = torch.device(cfg.device)
    splits: dict[str, Any] = {}
    for split, size in (("train", s.train_size), ("val", s.eval_size), ("test", s.eval_size)):
        try:
            splits[split] = bm.dataset(split, size)
        except BenchmarkError:
            raise
        except (FileNotFoundError, ValueError, ImportError, OSError) as err:
            raise BenchmarkError(f"{where}: building the {split!r} data failed: {err}") from None
    sizes = {}
    for split, ds in splits.items():
        if ds is None:
            continue
        try:
            sizes[split] = len(ds)
        except TypeError:
            sizes[split] = -1
        if sizes[split] == 0:
            raise BenchmarkError(f"{where}: the {split!r} data are empty")
    if s.scheduler == "plateau":
        monitor = s.scheduler_kwargs.get("monitor", "val_loss")
        if splits["val"] is None:
            raise BenchmarkError(
                f"{where}: the plateau LR scheduler monitors validation data; there is no 'val' split"
            )
        if monitor != "val_loss" and monitor not in [m.name for m in bm.metrics]:
            raise BenchmarkError(f"{where}: plateau monitor {monitor!r} is neither 'val_loss' nor a metric")
    torch.manual_seed(0)
    model = bm.model()
    if not isinstance(model, nn.Module):
        raise BenchmarkError(f"{where}: model() returned a {type(model).__name__}, not a torch.nn.Module")
    model = model.to(device)
    shared, tasks = split_parameters(model, where)
    loader = bm.make_loader(splits["train"], s.batch_size, True)
    try:
        if len(loader) == 0:  # type: ignore[arg-type]
            raise BenchmarkError(f"{where}: the training loader yields no batches")
    except TypeError:
        raise BenchmarkError(f"{where}: the training loader must have a length (len(loader))") from None
    batch = to_device(next(iter(loader)), device)
    losses = _losses_vector(bm.loss_fn(model, batch), len(bm.tasks), f"{where}, loss_fn")
    if not bool(torch.isfinite(losses).all()):
        raise BenchmarkError(
            f"{where}: loss_fn gives non-finite losses on the first batch: {losses.tolist()}"
        )
    if not losses.requires_grad:
        raise BenchmarkError(f"{where}: the losses do not depend on the model's parameters (no gradient)")
    model.eval()
    with torch.no_grad():
        meter = bm.new_meter()
        eval_loader = bm.make_loader(splits["test"], s.eval_batch_size, False)
        meter.update(model, to_device(next(iter(eval_loader)), device))
        scores = _check_scores(meter.compute(), [m.name for m in bm.metrics], f"{where}, metrics")
    model_key = hashlib.sha256(
        repr([type(model).__name__, [(n, tuple(p.shape)) for n, p in model.named_parameters()]]).encode()
    ).hexdigest()[:12]
    return {
        "sizes": sizes,
        "has_val": splits["val"] is not None,
        "fingerprint": data_fingerprint(splits) + "-" + model_key,
        "model": type(model).__name__,
        "shared": sum(p.numel() for p in shared),
        "task_specific": None if tasks is None else sum(p.numel() for p in tasks),
        "total": sum(p.numel() for p in model.parameters()),
        "first_scores": scores,
    }


# ------------------------------------------------------------------------------------------------ one run
#: test hook: a function (spec, losses) -> losses applied inside the loss (used to test failure handling)
_LOSS_HOOK: Callable[[RunSpec, Tensor], Tensor] | None = None


def _rss_now() -> float:
    try:
        with open("/proc/self/statm") as fh:
            return float(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return math.nan


def _max_rss() -> float:
    try:
        import resource
    except ImportError:  # not on Windows
        return math.nan
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * scale


class _Monitored:
    """ReduceLROnPlateau as the Trainer steps it (``step()`` with no argument): reads the monitored value
    of the evaluation that just ran."""

    def __init__(self, scheduler: Any, read: Callable[[], float]) -> None:
        self.scheduler = scheduler
        self.read = read

    def step(self) -> None:
        value = self.read()
        if math.isfinite(value):
            self.scheduler.step(value)

    def state_dict(self) -> dict[str, Any]:
        return dict(self.scheduler.state_dict())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state)


def run_one(spec: RunSpec) -> dict[str, Any]:
    """Train and evaluate one run; returns a plain dict (per-epoch validation and test metrics, median time
    per step, peak memory, weights, steps, error). Never raises for a failing run: the error is recorded."""
    from ..methods import get
    from ..train import Trainer

    if spec.threads > 0:
        torch.set_num_threads(spec.threads)
    out: dict[str, Any] = {
        "label": spec.label,
        "seed": spec.seed,
        "task": spec.task,
        "error": "",
        "traceback": "",
        "steps": 0,
        "history": [],
        "time_per_step": math.nan,
        "peak_memory": math.nan,
        "weights": [],
    }
    try:
        bm = load_benchmark(spec.benchmark)
        s = spec.schedule
        device = torch.device(spec.device)
        names = [m.name for m in bm.metrics]
        train = bm.dataset("train", s.train_size)
        evals = {sp: bm.dataset(sp, s.eval_size) for sp in ("val", "test")}
        evals = {sp: ds for sp, ds in evals.items() if ds is not None}
        torch.manual_seed(spec.seed)
        model = bm.model().to(device)
        shared, task_params = split_parameters(model, f"benchmark {bm.name!r}")
        optimizer = make_optimizer(s, model.parameters())
        loader = DeviceLoader(bm.make_loader(train, s.batch_size, True), device)
        method = get(spec.method, **spec.kwargs)
        per_step = max(1, method.needs.batches)
        latest: dict[str, float] = {}
        monitor = str(s.scheduler_kwargs.get("monitor", "val_loss")) if s.scheduler == "plateau" else None
        mode = (
            "max" if monitor not in (None, "val_loss") and bm.metric(str(monitor)).higher_is_better else "min"
        )
        scheduler = make_scheduler(s, optimizer, math.ceil(len(loader) / per_step), mode=mode)
        if monitor is not None:
            key = "val_loss" if monitor == "val_loss" else f"val:{monitor}"
            scheduler = _Monitored(scheduler, lambda: latest.get(key, math.nan))
        eval_loaders = {
            sp: DeviceLoader(bm.make_loader(ds, s.eval_batch_size, False), device) for sp, ds in evals.items()
        }
        k = len(bm.tasks)

        def loss_fn(m: nn.Module, batch: Any) -> Tensor:
            losses = _losses_vector(bm.loss_fn(m, batch), k, f"benchmark {bm.name!r}, loss_fn")
            return _LOSS_HOOK(spec, losses) if _LOSS_HOOK is not None else losses

        def eval_fn(m: nn.Module) -> dict[str, float]:
            result: dict[str, float] = {}
            for sp, ld in eval_loaders.items():
                meter = bm.new_meter()
                loss_sum, batches = 0.0, 0
                for batch in ld:
                    meter.update(m, batch)
                    if sp == "val" and monitor == "val_loss":
                        loss_sum += float(_losses_vector(bm.loss_fn(m, batch), k, "loss_fn").mean())
                        batches += 1
                scores = _check_scores(meter.compute(), names, f"benchmark {bm.name!r}, {sp} metrics")
                result.update({f"{sp}:{n}": v for n, v in scores.items()})
                if batches:
                    result["val_loss"] = loss_sum / batches
            latest.clear()
            latest.update(result)
            return result

        trainer = Trainer(
            model,
            loss_fn,
            method,
            optimizer,
            shared=shared,
            tasks=task_params,
            scheduler=scheduler,
            scheduler_step=s.scheduler_step,  # type: ignore[arg-type]
            log_dir=spec.log_dir,
            seed=spec.seed,
            progress=False,
            objective_names=list(bm.tasks),
            distributed=False,  # an independent run, also inside a process group (compare under torchrun)
        )
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        rss0 = _rss_now()
        try:
            history = trainer.fit(loader, epochs=s.epochs, eval_fn=eval_fn, resume=spec.resume)
        finally:
            out["steps"] = trainer.global_step
            if device.type == "cuda":
                out["peak_memory"] = float(torch.cuda.max_memory_allocated(device))
            elif spec.measure_memory:
                out["peak_memory"] = max(0.0, _max_rss() - rss0)
            if spec.log_dir is not None:
                out["time_per_step"], out["weights"] = _read_steps(Path(spec.log_dir) / "steps.csv", bm.tasks)
            out["history"] = [_epoch_scores(rec).to_json() for rec in trainer.history]
        out["history"] = [_epoch_scores(rec).to_json() for rec in history]
    except Exception as err:  # a failing run is reported, the others go on
        out["error"] = f"{type(err).__name__}: {err}"
        out["traceback"] = traceback.format_exc()
    return out


def _epoch_scores(record: Mapping[str, Any]) -> EpochScores:
    test = {k[5:]: float(v) for k, v in record.items() if k.startswith("test:")}
    val = {k[4:]: float(v) for k, v in record.items() if k.startswith("val:")}
    return EpochScores(int(record["epoch"]), test, val)


def _median(values: Sequence[float]) -> float:
    vals = sorted(v for v in values if math.isfinite(v))
    if not vals:
        return math.nan
    mid = len(vals) // 2
    return vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2


def _read_steps(
    path: Path, tasks: Sequence[str], points: int = 100
) -> tuple[float, list[tuple[int, list[float]]]]:
    """Median step time (first step left out as warm-up) and up to ``points`` logged weight vectors."""
    if not path.exists():
        return math.nan, []
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    times = [float(r["time"]) for r in rows]
    tps = _median(times[1:]) if len(times) > 1 else (times[0] if times else math.nan)
    wcols = [f"weight_{t}" for t in tasks]
    every = max(1, math.ceil(len(rows) / points))
    weights = []
    for i, r in enumerate(rows):
        if (i % every == 0 or i == len(rows) - 1) and all(r.get(c) not in (None, "") for c in wcols):
            weights.append((int(r["step"]), [float(r[c]) for c in wcols]))
    return tps, weights


# ------------------------------------------------------------------------------------------------ STL cache
def _stl_key(cfg: CompareConfig, fingerprint: str, seed: int, task: int) -> str:
    blob = json.dumps(
        {
            "format": STL_FORMAT,
            "benchmark": cfg.benchmark.name,
            "version": cfg.benchmark.version,
            "data": fingerprint,
            "seed": seed,
            "task": cfg.benchmark.tasks[task],
            "device": torch.device(cfg.device).type,
            "schedule": dataclasses.asdict(cfg.schedule),
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def stl_cache_dir() -> Path:
    from ..datasets import cache_dir

    return cache_dir() / "compare-stl"


def _number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def read_stl_cache(path: Path) -> dict[str, Any]:
    """A cached single-task result, checked field by field (it is read back as trusted data: a file edited
    by hand, truncated or from another version must fail here, naming itself, not deep inside Δm)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable cached single-task result ({err})") from err

    def bad(what: str) -> ValueError:
        return ValueError(f"{path}: cached single-task result has {what}")

    if not isinstance(data, dict):
        raise bad(f"a {type(data).__name__} at the top level, not an object")
    for key, ok in (("label", str), ("history", list)):
        if not isinstance(data.get(key), ok):
            raise bad(f"{key!r} = {data.get(key)!r:.60} (expected a {ok.__name__})")
    if not (data.get("error") is None or isinstance(data["error"], str)):
        raise bad(f"'error' = {data['error']!r:.60} (expected a string or null)")
    if not (isinstance(data.get("steps"), int) and not isinstance(data["steps"], bool)):
        raise bad(f"'steps' = {data.get('steps')!r:.60} (expected an integer)")
    for i, rec in enumerate(data["history"]):
        if not isinstance(rec, dict) or not isinstance(rec.get("epoch"), int):
            raise bad(f"history[{i}] = {rec!r:.60} (expected an object with an integer 'epoch')")
        for split in ("test", "val"):
            scores = rec.get(split) or {}
            if not isinstance(scores, dict) or not all(
                isinstance(k, str) and _number(v) for k, v in scores.items()
            ):
                raise bad(f"history[{i}][{split!r}] = {scores!r:.60} (expected metric names to numbers)")
    return data


# ------------------------------------------------------------------------------------------------ driver
@dataclass
class CompareResult:
    """What :func:`run` returns: the records and the single-task baselines they were scored against."""

    records: list[Any]  # RunRecord
    baselines: dict[str, float]  # test, at the selected epoch (what Δm uses)
    baselines_last: dict[str, float]  # test, last epoch
    stl: dict[str, list[float]]  # metric -> per-seed STL test values at the selected epoch
    stl_cached: int
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)
    selection: str = LAST
    given_baselines: bool = False
    report: Path | None = None

    @property
    def failed(self) -> list[Any]:
        """The records of runs that stopped with an error."""
        return [r for r in self.records if r.error]


def progress_bar(total: int, desc: str) -> Any:
    """A tqdm bar on stderr (silent when stderr is not a terminal)."""
    from .._progress import progress_bar as bar

    return bar(total, desc, unit="run")


def _execute(
    specs: list[RunSpec], jobs: int, log: Callable[[str], None], progress: bool
) -> dict[tuple[str, int], dict[str, Any]]:
    results: dict[tuple[str, int], dict[str, Any]] = {}
    bar = progress_bar(len(specs), "compare") if progress and specs else None

    def done(r: dict[str, Any]) -> None:
        results[(r["label"], r["seed"])] = r
        if r["error"]:
            status = f"FAILED ({r['error']})"
        else:
            last = r["history"][-1]["test"] if r["history"] else {}
            status = " ".join(f"{k}={v:.4f}" for k, v in list(last.items())[:4])
        line = f"[{len(results)}/{len(specs)}] {r['label']} seed {r['seed']}: {status}"
        if bar is not None:
            with bar.external_write_mode():
                log(line)
            bar.update(1)
        else:
            log(line)

    try:
        if jobs <= 0:
            for spec in specs:
                done(run_one(spec))
            return results
        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(
            max_workers=min(jobs, len(specs)), mp_context=ctx, max_tasks_per_child=1
        ) as pool:
            pending: list[Future[dict[str, Any]]] = [pool.submit(run_one, s) for s in specs]
            for fut in as_completed(pending):
                done(fut.result())
    finally:
        if bar is not None:
            bar.close()
    return results


def _cost_weight(method: str) -> float:
    """Rough relative cost for ordering the work (longest first): Gramian/Jacobian methods ~1.6× EW."""
    from ..methods import get

    try:
        needs = get(method).needs
    except Exception:
        return 1.0
    return 1.6 if (needs.gramian or needs.jacobian) else 1.0  # per epoch: multi-batch steps are fewer


def _history(r: Mapping[str, Any]) -> list[EpochScores]:
    return [EpochScores.from_json(h) for h in r.get("history") or []]


def _mean(values: Sequence[float]) -> float:
    vals = [v for v in values if math.isfinite(v)]
    return sum(vals) / len(vals) if vals else math.nan


def run(
    cfg: CompareConfig,
    out: str | os.PathLike[str],
    *,
    jobs: int = 1,
    threads: int | None = None,
    resume: bool = False,
    log: Callable[[str], None] = print,
    progress: bool = False,
    info: dict[str, Any] | None = None,
    shard: Shard | None = None,
) -> CompareResult:
    """Check the benchmark (dry run), run the STL baselines (cached) and every (method, seed), select each
    run's epoch and compute Δm; returns the records (nothing written but the runs' logs under ``out``).

    ``shard`` (several processes, :mod:`molearn.compare._ranks`): this rank trains its share of the runs,
    the results are gathered, and every rank returns the same result; only rank 0 writes the STL cache."""
    from ..methods import get
    from ._report import RunRecord

    t0 = time.perf_counter()
    bm = cfg.benchmark
    info = check_benchmark(cfg) if info is None else info
    out_dir = Path(out)
    writer = shard is None or shard.writer
    device = cfg.device if shard is None else shard.device(cfg.device)
    if threads is None:  # the cores of this machine shared by the runs in parallel on it
        local = 1 if shard is None else shard.local_world
        threads = max(1, (os.cpu_count() or 1) // (max(1, jobs) * local)) if cfg.device == "cpu" else 0
    measure = jobs > 0 or cfg.device != "cpu"
    ref = cfg.benchmark_ref if cfg.benchmark_ref is not None else bm
    labels = {m: type(get(m, **kw)).__name__ for m, kw in cfg.methods.items()}
    names = [m.name for m in bm.metrics]
    hib = {m.name: m.higher_is_better for m in bm.metrics}
    weights = {m.name: float(m.weight) for m in bm.metrics}

    def spec(
        label: str, method: str, kwargs: dict[str, Any], seed: int, folder: str, task: int | None
    ) -> RunSpec:
        log_dir = str(out_dir / "runs" / folder)
        return RunSpec(label, method, kwargs, seed, ref, cfg.schedule, device, log_dir, measure, resume,
                       threads, task)  # fmt: skip

    specs: list[RunSpec] = []
    stl_cached: dict[tuple[int, int], dict[str, Any]] = {}
    cache = stl_cache_dir()
    if bm.baselines is None and writer:  # across ranks: rank 0's cache decides, its records are sent
        for seed in cfg.seeds:
            for k in range(len(bm.tasks)):
                path = cache / f"{_stl_key(cfg, info['fingerprint'], seed, k)}.json"
                if path.is_file():
                    try:
                        stl_cached[(seed, k)] = read_stl_cache(path)
                    except ValueError as err:
                        log(f"warning: ignoring {err}; running it again")
    if shard is not None:
        stl_cached = shard.broadcast(stl_cached)
    if bm.baselines is None:
        for seed in cfg.seeds:
            for k, task in enumerate(bm.tasks):
                if (seed, k) in stl_cached:
                    continue
                onehot = [1.0 if i == k else 0.0 for i in range(len(bm.tasks))]
                specs.append(
                    spec(f"STL-{task}", "fixed", {"weights": onehot}, seed, f"stl-{k}-seed{seed}", k)
                )
    for m, kw in cfg.methods.items():
        for seed in cfg.seeds:
            specs.append(spec(labels[m], m, kw, seed, f"{m}-seed{seed}", None))
    specs.sort(key=lambda s: -_cost_weight(s.method))  # longest first keeps the workers busy to the end
    if writer:
        log(
            f"compare: {len(cfg.methods)} methods × {len(cfg.seeds)} seeds on {bm.name} "
            f"({cfg.schedule_name} schedule), {len(stl_cached)} STL runs cached, {len(specs)} runs to do"
            + ("" if shard is None else f", split over {shard.world} processes")
        )
    if shard is None:
        results = _execute(specs, jobs, log, progress)
    else:  # this rank's share; then every rank's results on every rank
        mine = shard.take(specs)
        rank = shard.rank
        results = _execute(mine, jobs, lambda line: log(f"rank {rank}: {line}"), progress and shard.writer)
        results = {key: r for part in shard.gather(results) for key, r in part.items()}

    # ---- single-task baselines, each STL run at its own selected epoch
    given = bm.baselines is not None
    if given:
        base_val = base_test = base_last = {k: float(v) for k, v in bm.baselines.items()}  # type: ignore[union-attr]
        stl: dict[str, list[float]] = {}
    else:
        per_val: dict[str, list[float]] = {n: [] for n in names}
        per_test: dict[str, list[float]] = {n: [] for n in names}
        per_last: dict[str, list[float]] = {n: [] for n in names}
        for seed in cfg.seeds:
            for k, task in enumerate(bm.tasks):
                r = stl_cached.get((seed, k)) or results.get((f"STL-{task}", seed))
                if r is None:
                    continue
                if writer and (seed, k) not in stl_cached and not r["error"] and r["history"]:
                    cache.mkdir(parents=True, exist_ok=True)
                    path = cache / f"{_stl_key(cfg, info['fingerprint'], seed, k)}.json"
                    tmp = path.with_name(path.name + f".{os.getpid()}.part")
                    keep = ("label", "seed", "task", "history", "steps", "error")
                    tmp.write_text(json.dumps({k2: r[k2] for k2 in keep}))
                    os.replace(tmp, path)
                hist = _history(r)
                if r["error"] or not hist:
                    log(f"warning: STL-{task} seed {seed} failed: {r['error']}")
                    continue
                own = [m.name for m in bm.metrics if m.task == task]
                idx, _ = select_single_task_epoch(hist, own, hib, weights)
                for n in own:
                    per_val[n].append(hist[idx].val.get(n, math.nan))
                    per_test[n].append(hist[idx].test.get(n, math.nan))
                    per_last[n].append(hist[-1].test.get(n, math.nan))
        base_val = {n: _mean(v) for n, v in per_val.items()}
        base_test = {n: _mean(v) for n, v in per_test.items()}
        base_last = {n: _mean(v) for n, v in per_last.items()}
        stl = {n: [v for v in per_test[n] if math.isfinite(v)] for n in names}

    records = []
    selection = LAST
    for m in cfg.methods:
        for seed in cfg.seeds:
            r = results[(labels[m], seed)]
            hist = _history(r)
            metrics = {n: math.nan for n in names}
            last_metrics = dict(metrics)
            dm = last_dm = math.nan
            epoch = 0
            if hist:
                idx, how = select_epoch(hist, base_val if info.get("has_val") else None, hib, weights)
                selection = BEST_VAL if how == BEST_VAL else selection
                epoch = hist[idx].epoch
                metrics = {n: hist[idx].test.get(n, math.nan) for n in names}
                last_metrics = {n: hist[-1].test.get(n, math.nan) for n in names}
                if not r["error"]:
                    dm = safe_delta_m(metrics, base_test, hib, weights)
                    last_dm = safe_delta_m(last_metrics, base_last, hib, weights)
            records.append(
                RunRecord(
                    method=labels[m],
                    seed=seed,
                    metrics=metrics,
                    delta_m=dm,
                    time_per_step=r["time_per_step"],
                    peak_memory=r["peak_memory"],
                    weights=[(int(s), list(w)) for s, w in r["weights"]],
                    steps=r["steps"],
                    error=r["error"],
                    epoch=epoch,
                    epochs=len(hist),
                    last_metrics=last_metrics,
                    last_delta_m=last_dm,
                )
            )
    return CompareResult(
        records=records,
        baselines=base_test,
        baselines_last=base_last,
        stl=stl,
        stl_cached=len(stl_cached),
        seconds=time.perf_counter() - t0,
        info=info,
        selection=selection,
        given_baselines=given,
    )


def _notes(cfg: CompareConfig, result: CompareResult, jobs: int) -> list[str]:
    bm, s, info = cfg.benchmark, cfg.schedule, result.info
    sizes = info.get("sizes", {})
    split_txt = ", ".join(f"{n} {sizes[n]}" for n in ("train", "val", "test") if n in sizes)
    what = (
        "the benchmark's published protocol"
        if cfg.schedule_name.startswith("full")
        else f"**{cfg.schedule_name} schedule**: not the published protocol"
        + ("; run with --full for it" if "full" in bm.named_schedules() else "")
    )
    params = f"{info.get('shared', '?')} shared" + (
        f", {info['task_specific']} task-specific" if info.get("task_specific") is not None else ""
    )
    notes = []
    if bm.description:
        notes.append(bm.description)
    notes.append(
        f"Benchmark {bm.name}: examples {split_txt}; model {info.get('model', '?')} ({params} parameters); "
        f"{s.describe()} — {what}. An epoch is one pass of batches: methods drawing several batches per step "
        "(MoDo, SDMGrad: 3) do a third of the steps."
    )
    metric_txt = ", ".join(
        f"{m.name} ({m.task}, {'↑' if m.higher_is_better else '↓'}"
        + (f", weight {m.weight:g}" if m.weight != 1 else "")
        + ")"
        for m in bm.metrics
    )
    if result.given_baselines:
        base_txt = "the benchmark's given single-task values " + ", ".join(
            f"{k} {v:.4g}" for k, v in result.baselines.items()
        )
    else:
        base_txt = (
            "the mean over seeds of single-task (STL) runs: "
            + ", ".join(
                f"{k} {_mean(v):.4f} (n={len(v)})" if v else f"{k} n/a" for k, v in result.stl.items()
            )
            + f" ({result.stl_cached} STL runs reused from the cache)"
        )
    if result.selection == BEST_VAL:
        sel = (
            "**Model selection: every run is reported at the epoch of its best validation Δm%** (column "
            "'epoch'; STL runs at the best validation value of their own task); 'Δm% last' is Δm% at the "
            "last epoch against the STL runs' last epoch."
        )
    else:
        sel = "Model selection: none (no validation split): every run is reported at its last epoch."
    notes.append(f"Metrics (test split): {metric_txt}. Δm% per metric against {base_txt}. {sel}")
    notes.append(
        f"Cost: device {cfg.device}; time per step = median over the run's training steps (first left out); "
        + (
            "peak memory = CUDA max_memory_allocated."
            if cfg.device != "cpu"
            else (
                "peak memory = the run's own worker process max RSS at the end of training minus its RSS "
                f"just before training (each run in a fresh process); {jobs} runs in parallel."
                if jobs > 0
                else "peak memory not measured (runs in one process, --jobs 0)."
            )
        )
    )
    return notes


# ------------------------------------------------------------------------------------------------ CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--benchmark",
        default=None,
        metavar="NAME|MODULE:OBJECT",
        help="the problem: a built-in (multi_fashion (default), multi_mnist, multi_fashion_mnist, qm9, "
        "nyuv2, cityscapes, celeba, office31, office_home; see --list) or your own "
        "molearn.compare.Benchmark as package.module:object",
    )
    parser.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help=f"a JSON or YAML file with any of: {', '.join(CONFIG_KEYS)} (options given here win)",
    )
    parser.add_argument(
        "--methods",
        default=None,
        help=f"comma-separated method names (default: the benchmark's, else {','.join(DEFAULT_METHODS)}); "
        "EW is always added as the cost reference",
    )
    parser.add_argument(
        "--seeds", default=None, help="a count N (seeds 0..N-1) or a comma-separated list (default: 3)"
    )
    parser.add_argument(
        "--schedule",
        default=None,
        metavar="NAME",
        help="a named schedule of the benchmark (default: default)",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--full", action="store_true", help="the benchmark's published protocol (--schedule full)"
    )
    group.add_argument(
        "--quick", action="store_true", help="a seconds-long smoke run: 1 epoch on at most 128 examples"
    )
    parser.add_argument("--epochs", default=None, help="change the schedule's number of epochs")
    parser.add_argument("--batch-size", default=None, help="change the schedule's training batch size")
    parser.add_argument("--lr", default=None, help="change the schedule's learning rate")
    parser.add_argument(
        "--device",
        default=None,
        help="cpu, cuda, cuda:1, mps or auto (default: auto); under torchrun the ranks share out the runs, "
        "cuda meaning each rank's cuda:LOCAL_RANK, and rank 0 writes the report",
    )
    parser.add_argument(
        "--jobs",
        default=None,
        help="worker processes, each run in a fresh one; 0 runs in this process (default 2)",
    )
    parser.add_argument(
        "--threads",
        default=None,
        help="torch threads per run (default: cores / jobs; 1 is often faster for small models)",
    )
    parser.add_argument("--resume", action="store_true", help="continue runs from their checkpoints in --out")
    parser.add_argument("--out", default=None, help="output folder (default: out/compare)")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG plots (no matplotlib needed)")
    parser.add_argument(
        "--list", action="store_true", help="list the built-in benchmarks and methods, then exit"
    )


def _missing_packages(plot: bool) -> list[str]:
    import importlib.util

    need = {"scipy": "scipy", "tqdm": "tqdm"}
    if plot:
        need["matplotlib"] = "matplotlib"
    return [pkg for mod, pkg in need.items() if importlib.util.find_spec(mod) is None]


def _list() -> int:
    from ..methods import registry

    print("built-in benchmarks: " + ", ".join(builtin_benchmarks()))
    print("methods: " + ", ".join(sorted(registry())))
    return 0


def _config_json(cfg: CompareConfig) -> dict[str, Any]:
    return {
        "benchmark": cfg.benchmark_ref or cfg.benchmark.name,
        "methods": cfg.methods,
        "seeds": cfg.seeds,
        "schedule": dataclasses.asdict(cfg.schedule),
        "device": cfg.device,
    }


def _dry_run(cfg: CompareConfig) -> dict[str, Any]:
    try:
        return check_benchmark(cfg)
    except BenchmarkError:
        raise
    except Exception as err:  # the user's code failed in the dry run
        raise BenchmarkError(
            f"benchmark {cfg.benchmark.name!r}: the dry run failed: {type(err).__name__}: {err}"
        ) from err


def _compare_and_report(
    cfg: CompareConfig,
    opts: Mapping[str, Any],
    *,
    command: str,
    plot: bool,
    resume: bool,
    progress: bool,
    log: Callable[[str], None],
) -> CompareResult:
    from ._report import collect_versions, write_report

    out = Path(opts["out"])
    saved = out / "config.json"
    if resume and saved.is_file():
        try:
            before = json.loads(saved.read_text())
        except ValueError:
            before = None
        now = json.loads(json.dumps(_config_json(cfg), default=str))
        if before is not None and before != now:
            raise ConfigError(
                f"--resume: {out} holds runs of another configuration ({saved}); use another --out"
            )
    t0 = time.perf_counter()
    shard = shard_from_env()  # under torchrun: this rank's share of the runs, rank 0 writes
    try:
        info = _dry_run(cfg if shard is None else dataclasses.replace(cfg, device=shard.device(cfg.device)))
        if shard is None or shard.writer:
            out.mkdir(parents=True, exist_ok=True)
            saved.write_text(json.dumps(_config_json(cfg), indent=2, default=str) + "\n")
        result = run(
            cfg,
            out,
            jobs=opts["jobs"],
            threads=opts["threads"],
            resume=resume,
            progress=progress,
            info=info,
            log=log,
            shard=shard,
        )
    finally:
        if shard is not None:
            shard.close()
    wall = time.perf_counter() - t0
    result.seconds = wall
    if shard is not None and not shard.writer:
        return result  # the other ranks write nothing (result.report stays None)
    notes = [*_notes(cfg, result, opts["jobs"]), f"Wall time of this invocation: {wall:.0f} s."]
    if shard is not None:
        notes.append(
            f"Runs split over {shard.world} processes (torchrun), each run trained by one of them"
            + (" on its own GPU (cuda:LOCAL_RANK)" if cfg.device == "cuda" else "")
            + "; rank 0 gathered the results and wrote this report."
        )
    bm = cfg.benchmark
    write_report(
        result.records,
        out,
        command=command,
        versions=collect_versions(),
        notes=notes,
        plot=plot,
        task_names=list(bm.tasks),
        title=f"molearn compare: {bm.name}",
        baselines=result.baselines,
        metric_labels={m.name: m.axis_label for m in bm.metrics},
        benchmark=cfg.benchmark_ref if cfg.benchmark_ref in builtin_benchmarks() else None,
        schedule=cfg.schedule_name,
        schedule_detail=cfg.schedule.describe(),
    )
    result.report = out / "report.md"
    return result


def compare(
    benchmark: Benchmark | str,
    *,
    methods: Any = None,
    seeds: Any = None,
    schedule: Any = None,
    device: str | None = None,
    jobs: int = 0,
    threads: int | None = None,
    out: str | os.PathLike[str] = "out/compare",
    plot: bool = True,
    resume: bool = False,
    log: Callable[[str], None] = print,
) -> CompareResult:
    """``molearn compare`` from Python: the same checks, runs and report (``out/report.md``).

    ``benchmark`` is a :class:`Benchmark` or a reference (``"multi_fashion"``, ``"pkg.mod:obj"``); ``methods``
    a comma-separated string, a list or a mapping name -> keyword arguments; ``seeds`` a count or a list;
    ``schedule`` a schedule name of the benchmark, a mapping of changes (``{"base": "quick", "epochs":
    2}``) or a :class:`Schedule`; ``jobs=0`` runs in this process (a Benchmark object then needs not be
    picklable). Raises :class:`ConfigError` / ``BenchmarkError`` before any training on bad input; failed
    runs are in ``result.records`` (``error``) and ``result.failed``."""
    ns = argparse.Namespace(
        benchmark=benchmark, config=None, methods=methods, seeds=seeds, schedule=schedule, full=False,
        quick=False, epochs=None, batch_size=None, lr=None, device=device, jobs=jobs, threads=threads,
        out=os.fspath(out),
    )  # fmt: skip
    cfg, opts = resolve_config(ns)
    name = benchmark if isinstance(benchmark, str) else benchmark.name
    command = f"molearn.compare.compare({name!r}, ...)"
    return _compare_and_report(cfg, opts, command=command, plot=plot, resume=resume, progress=False, log=log)


def run_cli(args: argparse.Namespace) -> int:
    from ._report import format_markdown, summarise

    def fail(msg: str) -> int:
        print(f"{PROG}: error: {msg}", file=sys.stderr)
        return 2

    if getattr(args, "list", False):
        return _list()
    missing = _missing_packages(plot=not args.no_plot)
    if missing:
        return fail(
            f"needs {', '.join(missing)}: pip install 'molearn[cli]'"
            + ("" if args.no_plot else " (or --no-plot)")
        )
    command = getattr(args, "command_line", None) or shlex.join(["molearn", *sys.argv[1:]])
    try:
        cfg, opts = resolve_config(args)
        result = _compare_and_report(
            cfg, opts, command=command, plot=not args.no_plot, resume=args.resume, progress=True, log=print
        )
    except (ConfigError, BenchmarkError) as err:
        return fail(str(err))
    if result.report is None:  # another rank of a comparison under torchrun: rank 0 reports
        return 1 if result.failed else 0
    md = format_markdown(result.records, command=command, versions={}, summaries=summarise(result.records))
    table = md.split("\n| rank", 1)
    if len(table) == 2:
        print("| rank" + table[1].split("\n\n", 1)[0])
    print(f"report: {result.report} ({result.seconds:.0f} s)")
    if result.failed:
        names = ", ".join(f"{r.method} seed {r.seed}" for r in result.failed)
        print(f"{PROG}: {len(result.failed)} run(s) failed: {names}; see {result.report}", file=sys.stderr)
        return 1
    return 0
