"""``molearn compare``: train methods × seeds on a Multi-X dataset and write a report a researcher can trust.

Every (method, seed) run trains :class:`~molearn.models.MultiLeNet` with
:class:`molearn.train.Trainer` (one :meth:`molearn.Balancer.step` per step, no per-method code; per-method
hyper-parameters live in :data:`METHOD_KWARGS`) and is evaluated on the test pairs at the end of every
epoch; the final epoch's test accuracy of each task is the run's metric (higher is better).

**Single-task baselines (STL)**: for each seed and task k, the same model trained with
``Fixed(one-hot k)`` (only task k's loss; the other head gets no gradient), scored on task k. They are
cached as JSON under ``$MOLEARN_CACHE/compare-stl/`` (default ``~/.cache/molearn``), keyed by dataset,
data fingerprint, schedule, seed, task and model, and reused by later invocations.
**Δm%** (:func:`molearn.metrics.delta_m`, the per-metric convention of Nash-MTL / FAMO / FairGrad):
one term per metric, the metrics being the test accuracy of each task (higher is better), each run
against the mean over seeds of the STL accuracies; lower is better, negative = better than STL.

**Cost**: EW is always run. ``time_per_step`` is the mean wall-clock time of a training step (the
Trainer's per-step timer, first step left out as warm-up); the report gives it per seed as a ratio to
the EW run of the same seed in the same invocation (:mod:`molearn.compare`). Peak memory: on CUDA
``torch.cuda.max_memory_allocated`` during training; on CPU each run executes in its own fresh worker
process (``spawn``, one task per child), and its peak memory is the process's maximum resident set size
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) at the end of training **minus** its resident size just
before training (so the interpreter, torch and the data, identical for every method, are not counted).
With ``--jobs 0`` runs execute in this process and CPU peak memory is not measured (n/a). Runs executed
in parallel share the machine, so the timings carry that noise; use ``--jobs 1`` for cleaner figures.

**Schedules** (:data:`SCHEDULES`): ``full`` is the SDMGrad consistency protocol (``algorithms.md`` §8:
LeNet, all 120k/20k pairs, 100 epochs, batch 256, SGD lr 1e-2 momentum 0.9, MultiStepLR milestones
[15, 30, 45, 60, 75, 90] γ 0.5 stepped **per iteration**, as the official code does, so the learning rate
reaches 1e-2/64 after 90 steps); ``default`` is a short schedule that finishes in about 6 minutes on 2 CPU
cores: 24k/5k pairs, 3 epochs, batch 64 (about 1,100 steps; with batch 256 and 2 epochs the ~190 steps left
the tasks at ~50 % accuracy), the same SGD without the learning-rate decay (the official milestones count
iterations and would decay it 64-fold within the short run); ``quick`` takes seconds.

A run whose loss becomes non-finite stops (the Trainer names the step and objective); the report lists
it as failed, its last good checkpoint stays in ``runs/<method>-seed<k>/``, and the other runs go on.
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
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "DEFAULT_METHODS",
    "METHOD_KWARGS",
    "SCHEDULES",
    "CompareConfig",
    "RunSpec",
    "Schedule",
    "add_arguments",
    "load_config",
    "run",
    "run_cli",
    "run_one",
]

#: the default comparison: representative loss-weighting, Gramian and stochastic methods
DEFAULT_METHODS = ("ew", "mgda", "pcgrad", "cagrad", "nashmtl", "famo", "moco", "modo")
DEFAULT_SEEDS = (0, 1, 2)
DEFAULT_DATASET = "multi_fashion"
MODEL_NAME = "MultiLeNet"
TASKS = ("left", "right")
STL_FORMAT = 1

#: per-method hyper-parameters of this benchmark (from the papers' / official codes' multi-task settings);
#: a config file's ``methods`` mapping overrides them
METHOD_KWARGS: dict[str, dict[str, Any]] = {
    "cagrad": {"c": 0.4},  # Nash-MTL / FAMO / FairGrad supervised setting
    "sdmgrad": {"lamda": 0.5},  # SDMGrad consistency experiment (algorithms.md §8)
}


@dataclass(frozen=True)
class Schedule:
    """A training schedule: data size, epochs, optimiser (SGD) and a MultiStepLR stepped per iteration."""

    n_train: int | None  # None: all pairs (120k)
    n_test: int | None  # None: all pairs (20k)
    epochs: int
    batch_size: int = 256
    lr: float = 1e-2
    momentum: float = 0.9
    milestones: tuple[int, ...] = (15, 30, 45, 60, 75, 90)
    gamma: float = 0.5
    eval_batch: int = 1000


SCHEDULES: dict[str, Schedule] = {
    "full": Schedule(n_train=None, n_test=None, epochs=100),
    # no decay: the protocol's per-iteration milestones would all pass within the first 90 steps
    "default": Schedule(n_train=24_000, n_test=5_000, epochs=3, batch_size=64, milestones=()),
    "quick": Schedule(n_train=96, n_test=64, epochs=1, batch_size=32, eval_batch=64),
}


@dataclass
class CompareConfig:
    """What to compare: methods (name -> constructor kwargs), seeds, dataset, schedule."""

    methods: dict[str, dict[str, Any]]
    seeds: list[int]
    dataset: str = DEFAULT_DATASET
    schedule_name: str = "default"
    schedule: Schedule = field(default_factory=lambda: SCHEDULES["default"])
    device: str = "cpu"


@dataclass(frozen=True)
class RunSpec:
    """One training run (picklable: sent to a worker process)."""

    label: str  # display name ("EW", "MGDA", "STL-left")
    method: str
    kwargs: dict[str, Any]
    seed: int
    dataset: str
    schedule: Schedule
    device: str
    log_dir: str | None
    measure_memory: bool
    resume: bool = False
    threads: int = 1
    data_key: str = ""


# ------------------------------------------------------------------------------------------------ config
_CONFIG_KEYS = ("methods", "seeds", "dataset", "schedule", "device")


def _method_names() -> list[str]:
    from ..methods import registry

    return sorted(registry())


def _check_method(name: str) -> str:
    key = name.lower().replace("-", "").replace("_", "")
    names = _method_names()
    norm = {n.replace("_", ""): n for n in names}
    if key not in norm:
        raise ValueError(f"unknown method {name!r}; valid names: {', '.join(names)}")
    return norm[key]


def _check_dataset(name: str) -> str:
    from ..datasets import MULTI_DATASETS

    if name not in MULTI_DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(sorted(MULTI_DATASETS))}")
    return name


def _parse_methods(value: Any, where: str) -> dict[str, dict[str, Any]]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    out: dict[str, dict[str, Any]] = {}
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, Sequence):
        items = []
        for v in value:
            if isinstance(v, Mapping) and len(v) == 1:
                items.append(next(iter(v.items())))
            elif isinstance(v, str):
                items.append((v, None))
            else:
                raise ValueError(f"{where}: a method is a name or {{name: {{kwargs}}}}, got {v!r}")
    else:
        raise ValueError(f"{where}: methods must be a list or a mapping, got {type(value).__name__}")
    for name, kwargs in items:
        if kwargs is not None and not isinstance(kwargs, Mapping):
            raise ValueError(f"{where}: the arguments of method {name!r} must be a mapping, got {kwargs!r}")
        key = _check_method(str(name))
        out[key] = {**METHOD_KWARGS.get(key, {}), **dict(kwargs or {})}
    if not out:
        raise ValueError(f"{where}: no methods given")
    return out


def _parse_seeds(value: Any, where: str) -> list[int]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, int):
        value = [value]
    try:
        seeds = [int(v) for v in value]
    except (TypeError, ValueError):
        raise ValueError(f"{where}: seeds must be integers, got {value!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"{where}: seeds must be a non-empty list of distinct integers, got {seeds}")
    return seeds


def _parse_schedule(value: Any, where: str) -> tuple[str, Schedule]:
    if isinstance(value, str):
        if value not in SCHEDULES:
            raise ValueError(f"{where}: unknown schedule {value!r}; valid names: {', '.join(SCHEDULES)}")
        return value, SCHEDULES[value]
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: schedule must be a name or a mapping, got {value!r}")
    fields = {f.name for f in dataclasses.fields(Schedule)}
    base_name = str(value.get("base", "default"))
    if base_name not in SCHEDULES:
        raise ValueError(f"{where}: unknown schedule base {base_name!r}; valid names: {', '.join(SCHEDULES)}")
    changes = {}
    for key, v in value.items():
        if key == "base":
            continue
        if key not in fields:
            raise ValueError(
                f"{where}: unknown key 'schedule.{key}'; valid keys: base, {', '.join(sorted(fields))}"
            )
        changes[key] = tuple(int(m) for m in v) if key == "milestones" else v
    return f"{base_name} (modified)", dataclasses.replace(SCHEDULES[base_name], **changes)


def load_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a JSON or YAML config (keys: ``methods``, ``seeds``, ``dataset``, ``schedule``, ``device``);
    an unknown key is an error naming it. YAML needs PyYAML (imported only for ``.yaml``/``.yml``)."""
    p = Path(path)
    text = p.read_text()
    if p.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as err:
            raise ImportError(
                f"reading the YAML config {p} needs PyYAML: pip install pyyaml (or write the config as JSON)"
            ) from err
        data = yaml.safe_load(text)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{p}: not valid JSON ({err}); YAML configs must end in .yaml or .yml") from err
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ValueError(f"{p}: a config is a mapping of keys {', '.join(_CONFIG_KEYS)}")
    for key in data:
        if key not in _CONFIG_KEYS:
            raise ValueError(f"{p}: unknown config key {key!r}; valid keys: {', '.join(_CONFIG_KEYS)}")
    return dict(data)


def resolve_config(args: argparse.Namespace) -> CompareConfig:
    """Flags over config file over built-in defaults (``--full`` / ``--quick`` pick the schedule)."""
    data = load_config(args.config) if getattr(args, "config", None) else {}
    where = f"config {args.config}" if data else "arguments"
    methods = _parse_methods(
        args.methods if args.methods is not None else data.get("methods", DEFAULT_METHODS),
        "--methods" if args.methods is not None else where,
    )
    if "ew" not in methods:  # EW is always run: the cost reference
        methods = {"ew": {}, **methods}
    seeds = _parse_seeds(
        args.seeds if args.seeds is not None else data.get("seeds", DEFAULT_SEEDS),
        "--seeds" if args.seeds is not None else where,
    )
    dataset = _check_dataset(
        args.dataset if args.dataset is not None else data.get("dataset", DEFAULT_DATASET)
    )
    if args.full and args.quick:
        raise ValueError("--full and --quick exclude each other")
    if args.full:
        sched_name, sched = "full", SCHEDULES["full"]
    elif args.quick:
        sched_name, sched = "quick", SCHEDULES["quick"]
    else:
        sched_name, sched = _parse_schedule(data.get("schedule", "default"), where)
    if args.epochs is not None:
        sched = dataclasses.replace(sched, epochs=int(args.epochs))
        sched_name += f", {args.epochs} epochs"
    device = args.device if args.device is not None else str(data.get("device", "auto"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return CompareConfig(methods, seeds, dataset, sched_name, sched, device)


# ------------------------------------------------------------------------------------------------ one run
def _losses(model: nn.Module, batch: Any) -> Tensor:
    x, y = batch
    device = next(model.parameters()).device
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    logits = model(x)
    return torch.stack([F.cross_entropy(z, y[:, i]) for i, z in enumerate(logits)])


#: test hook: a function (spec, losses) -> losses applied inside the loss (used to test failure handling)
_LOSS_HOOK: Callable[[RunSpec, Tensor], Tensor] | None = None


def _data(spec: RunSpec, split: str) -> Any:
    from ..datasets import MultiDataset

    n = spec.schedule.n_train if split == "train" else spec.schedule.n_test
    return MultiDataset.load(spec.dataset, split, n=n)


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


def run_one(spec: RunSpec) -> dict[str, Any]:
    """Train and evaluate one run; returns a plain dict (metrics, time per step, peak memory, weights,
    steps, error). Never raises for a failing run: the error is recorded."""
    from ..methods import get
    from ..metrics import ClassificationMeter
    from ..models import MultiLeNet
    from ..train import Trainer

    if spec.threads > 0:
        torch.set_num_threads(spec.threads)
    out: dict[str, Any] = {
        "label": spec.label,
        "seed": spec.seed,
        "error": "",
        "steps": 0,
        "metrics": {f"acc_{t}": math.nan for t in TASKS},
        "time_per_step": math.nan,
        "peak_memory": math.nan,
        "weights": [],
    }
    try:
        device = torch.device(spec.device)
        train, test = _data(spec, "train"), _data(spec, "test")
        x_test, y_test = test.tensors()
        torch.manual_seed(spec.seed)
        model = MultiLeNet(tasks=len(TASKS), size=int(train.images.shape[-1])).to(device)
        sched = spec.schedule
        optimizer = torch.optim.SGD(model.parameters(), lr=sched.lr, momentum=sched.momentum)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(sched.milestones), sched.gamma)
        loader = torch.utils.data.DataLoader(train, batch_size=sched.batch_size, shuffle=True)

        def loss_fn(m: nn.Module, batch: Any) -> Tensor:
            losses = _losses(m, batch)
            return _LOSS_HOOK(spec, losses) if _LOSS_HOOK is not None else losses

        def eval_fn(m: nn.Module) -> dict[str, float]:
            meter = ClassificationMeter(list(TASKS))
            for i in range(0, x_test.shape[0], sched.eval_batch):
                xb = x_test[i : i + sched.eval_batch].to(device)
                meter.update(m(xb), y_test[i : i + sched.eval_batch].to(device))
            return {f"test_{k}": v for k, v in meter.compute().items()}

        trainer = Trainer(
            model,
            loss_fn,
            get(spec.method, **spec.kwargs),
            optimizer,
            scheduler=scheduler,
            scheduler_step="step",
            log_dir=spec.log_dir,
            seed=spec.seed,
            progress=False,
            objective_names=list(TASKS),
        )
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        rss0 = _rss_now()
        try:
            history = trainer.fit(loader, epochs=sched.epochs, eval_fn=eval_fn, resume=spec.resume)
        finally:
            out["steps"] = trainer.global_step
            if device.type == "cuda":
                out["peak_memory"] = float(torch.cuda.max_memory_allocated(device))
            elif spec.measure_memory:
                out["peak_memory"] = max(0.0, _max_rss() - rss0)
            if spec.log_dir is not None:
                out["time_per_step"], out["weights"] = _read_steps(Path(spec.log_dir) / "steps.csv")
        last = history[-1]
        out["metrics"] = {f"acc_{t}": float(last[f"test_acc_{t}"]) for t in TASKS}
    except Exception as err:  # a failing run is reported, the others go on
        out["error"] = f"{type(err).__name__}: {err}"
        out["traceback"] = traceback.format_exc()
    return out


def _read_steps(path: Path, points: int = 100) -> tuple[float, list[tuple[int, list[float]]]]:
    """Mean step time (first step left out as warm-up) and up to ``points`` logged weight vectors."""
    if not path.exists():
        return math.nan, []
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    times = [float(r["time"]) for r in rows]
    tps = sum(times[1:]) / (len(times) - 1) if len(times) > 1 else (times[0] if times else math.nan)
    wcols = [f"weight_{t}" for t in TASKS]
    every = max(1, math.ceil(len(rows) / points))
    weights = []
    for i, r in enumerate(rows):
        if (i % every == 0 or i == len(rows) - 1) and all(r.get(c) not in (None, "") for c in wcols):
            weights.append((int(r["step"]), [float(r[c]) for c in wcols]))
    return tps, weights


# ------------------------------------------------------------------------------------------------ STL cache
def _stl_key(cfg: CompareConfig, data_key: str, seed: int, task: int) -> str:
    blob = json.dumps(
        {
            "format": STL_FORMAT,
            "dataset": cfg.dataset,
            "data": data_key,
            "seed": seed,
            "task": TASKS[task],
            "model": MODEL_NAME,
            "device": torch.device(cfg.device).type,
            "schedule": dataclasses.asdict(cfg.schedule),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def stl_cache_dir() -> Path:
    from ..datasets import cache_dir

    return cache_dir() / "compare-stl"


def _bytes(t: Tensor) -> bytes:
    """The raw bytes of a tensor, without numpy."""
    raw = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
    if raw.numel() == 0:
        return b""
    buf = bytearray(raw.numel())
    torch.frombuffer(buf, dtype=torch.uint8).copy_(raw)
    return bytes(buf)


def _data_fingerprint(cfg: CompareConfig) -> str:
    """A hash of the exact train/test tensors the runs see (builds and caches them once, here)."""
    from ..datasets import load_multi

    h = hashlib.sha256()
    for split, n in (("train", cfg.schedule.n_train), ("test", cfg.schedule.n_test)):
        x, y = load_multi(cfg.dataset, split, n=n)
        h.update(str((split, tuple(x.shape))).encode())
        h.update(_bytes(x))
        h.update(_bytes(y))
    return h.hexdigest()[:16]


# ------------------------------------------------------------------------------------------------ driver
@dataclass
class CompareResult:
    records: list[Any]  # RunRecord
    stl: dict[str, list[float]]  # metric -> per-seed STL values
    stl_cached: int  # STL runs taken from the cache
    seconds: float


def _execute(
    specs: list[RunSpec], jobs: int, log: Callable[[str], None]
) -> dict[tuple[str, int], dict[str, Any]]:
    results: dict[tuple[str, int], dict[str, Any]] = {}

    def done(r: dict[str, Any]) -> None:
        results[(r["label"], r["seed"])] = r
        status = (
            f"FAILED ({r['error']})"
            if r["error"]
            else " ".join(f"{k}={v:.4f}" for k, v in r["metrics"].items())
        )
        log(f"[{len(results)}/{len(specs)}] {r['label']} seed {r['seed']}: {status}")

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
    return results


def _cost_weight(method: str) -> float:
    """Rough relative cost for ordering the work (longest first): Gramian/Jacobian methods ~1.6× EW."""
    from ..methods import get

    try:
        m = get(method)
    except Exception:
        return 1.0
    needs = m.needs
    return 1.0 if not (needs.gramian or needs.jacobian) else 1.6


def run(
    cfg: CompareConfig,
    out: str | os.PathLike[str],
    *,
    jobs: int = 1,
    threads: int | None = None,
    resume: bool = False,
    log: Callable[[str], None] = print,
) -> CompareResult:
    """Run the STL baselines (cached) and every (method, seed), compute Δm; returns the records."""
    from ..methods import get
    from ..metrics import delta_m
    from ._report import RunRecord

    t0 = time.perf_counter()
    out_dir = Path(out)
    if threads is None:
        threads = max(1, (os.cpu_count() or 1) // max(1, jobs)) if cfg.device == "cpu" else 0
    data_key = _data_fingerprint(cfg)  # also builds the dataset cache before the workers start
    measure = jobs > 0 or cfg.device != "cpu"
    labels = {m: type(get(m, **kw)).__name__ for m, kw in cfg.methods.items()}
    specs: list[RunSpec] = []
    stl_cached: dict[tuple[int, int], dict[str, Any]] = {}
    cache = stl_cache_dir()
    for seed in cfg.seeds:
        for k, task in enumerate(TASKS):
            path = cache / f"{_stl_key(cfg, data_key, seed, k)}.json"
            if path.is_file():
                try:
                    stl_cached[(seed, k)] = json.loads(path.read_text())
                    continue
                except (OSError, ValueError):
                    pass
            onehot = [1.0 if i == k else 0.0 for i in range(len(TASKS))]
            specs.append(
                RunSpec(
                    f"STL-{task}",
                    "fixed",
                    {"weights": onehot},
                    seed,
                    cfg.dataset,
                    cfg.schedule,
                    cfg.device,
                    str(out_dir / "runs" / f"stl-{task}-seed{seed}"),
                    measure,
                    resume,
                    threads,
                    data_key,
                )
            )
    for m, kw in cfg.methods.items():
        for seed in cfg.seeds:
            specs.append(
                RunSpec(
                    labels[m],
                    m,
                    kw,
                    seed,
                    cfg.dataset,
                    cfg.schedule,
                    cfg.device,
                    str(out_dir / "runs" / f"{m}-seed{seed}"),
                    measure,
                    resume,
                    threads,
                    data_key,
                )
            )
    specs.sort(key=lambda s: -_cost_weight(s.method))  # longest first keeps the workers busy to the end
    log(
        f"compare: {len(cfg.methods)} methods × {len(cfg.seeds)} seeds on {cfg.dataset} "
        f"({cfg.schedule_name} schedule), {len(stl_cached)} STL runs cached, {len(specs)} runs to do"
    )
    results = _execute(specs, jobs, log)

    # STL baselines: fresh ones go to the cache (only finished runs)
    stl: dict[str, list[float]] = {f"acc_{t}": [] for t in TASKS}
    for seed in cfg.seeds:
        for k, task in enumerate(TASKS):
            r = stl_cached.get((seed, k)) or results.get((f"STL-{task}", seed))
            if r is None:
                continue
            if (seed, k) not in stl_cached and not r["error"]:
                cache.mkdir(parents=True, exist_ok=True)
                path = cache / f"{_stl_key(cfg, data_key, seed, k)}.json"
                tmp = path.with_name(path.name + f".{os.getpid()}.part")
                tmp.write_text(
                    json.dumps({k2: r[k2] for k2 in ("label", "seed", "metrics", "steps", "error")})
                )
                os.replace(tmp, path)
            value = float(r["metrics"][f"acc_{task}"])
            if r["error"] or not math.isfinite(value):
                log(f"warning: STL-{task} seed {seed} failed: {r['error']}")
                continue
            stl[f"acc_{task}"].append(value)
    baselines = {name: (sum(v) / len(v) if v else math.nan) for name, v in stl.items()}

    records = []
    for m in cfg.methods:
        for seed in cfg.seeds:
            r = results[(labels[m], seed)]
            dm = math.nan
            if not r["error"] and all(math.isfinite(b) and b > 0 for b in baselines.values()):
                try:
                    dm = delta_m(r["metrics"], baselines, higher_is_better=True)
                except ValueError:
                    dm = math.nan
            records.append(
                RunRecord(
                    method=labels[m],
                    seed=seed,
                    metrics=dict(r["metrics"]),
                    delta_m=dm,
                    time_per_step=r["time_per_step"],
                    peak_memory=r["peak_memory"],
                    weights=[(int(s), list(w)) for s, w in r["weights"]],
                    steps=r["steps"],
                    error=r["error"],
                )
            )
    return CompareResult(records, stl, len(stl_cached), time.perf_counter() - t0)


def _notes(cfg: CompareConfig, result: CompareResult, jobs: int) -> list[str]:
    from ..datasets import DEFAULT_PAIRS

    s = cfg.schedule
    n_train = s.n_train if s.n_train is not None else DEFAULT_PAIRS["train"]
    n_test = s.n_test if s.n_test is not None else DEFAULT_PAIRS["test"]
    what = (
        "the SDMGrad consistency protocol (full schedule)"
        if cfg.schedule_name == "full"
        else f"**short schedule** ({cfg.schedule_name}): not the published protocol; run with --full for it"
    )
    lr_txt = (
        f"MultiStepLR milestones {list(s.milestones)} γ {s.gamma} stepped per iteration"
        if s.milestones
        else "constant learning rate (the protocol's per-iteration milestones would all pass in 90 steps)"
    )
    stl_txt = ", ".join(
        f"{k} {sum(v) / len(v):.4f} (n={len(v)})" if v else f"{k} n/a" for k, v in result.stl.items()
    )
    return [
        f"Data {cfg.dataset}: {n_train} training / {n_test} test pairs, 36×36; model {MODEL_NAME}; "
        f"{s.epochs} epochs, batch {s.batch_size}, SGD lr {s.lr} momentum {s.momentum}, "
        f"{lr_txt} — {what}. An epoch is one pass of batches: methods drawing several batches per step "
        "(MoDo, SDMGrad: 3) do a third of the steps.",
        "Metrics: final-epoch test accuracy of each task (higher is better). Δm% is per metric (Nash-MTL / "
        f"FAMO convention) against the mean over seeds of single-task (STL) runs: {stl_txt} "
        f"({result.stl_cached} STL runs reused from the cache).",
        f"Cost: device {cfg.device}; time per step = mean over the training steps (first left out); "
        + (
            "peak memory = CUDA max_memory_allocated."
            if cfg.device != "cpu"
            else (
                "peak memory = the run's own worker process max RSS at the end of training minus its RSS "
                f"just before training (each run in a fresh process); {jobs} runs in parallel."
                if jobs > 0
                else "peak memory not measured (runs in one process, --jobs 0)."
            )
        ),
    ]


# ------------------------------------------------------------------------------------------------ CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--methods",
        default=None,
        help=f"comma-separated method names (default: {','.join(DEFAULT_METHODS)}; EW is always "
        "added as the cost reference)",
    )
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default: 0,1,2)")
    parser.add_argument(
        "--dataset", default=None, help="multi_fashion (default), multi_mnist or multi_fashion_mnist"
    )
    parser.add_argument(
        "--config", default=None, help="a JSON or YAML file with methods/seeds/dataset/schedule/device"
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--full",
        action="store_true",
        help="the SDMGrad consistency protocol: all 120k pairs, 100 epochs (GPU or patient CPU)",
    )
    group.add_argument("--quick", action="store_true", help="a seconds-long smoke run (tiny data, 1 epoch)")
    parser.add_argument("--epochs", type=int, default=None, help="override the schedule's number of epochs")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 or auto (default: auto)")
    parser.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="worker processes (each run in a fresh one); 0 runs in this process",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads per run (default: cores / jobs)"
    )
    parser.add_argument("--resume", action="store_true", help="continue runs from their checkpoints in --out")
    parser.add_argument("--out", default="out/compare", help="output folder (default: out/compare)")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG plots")


def run_cli(args: argparse.Namespace) -> int:
    from ._report import collect_versions, format_markdown, summarise, write_report

    prog = "molearn compare"
    try:
        cfg = resolve_config(args)
    except (ValueError, ImportError, OSError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        result = run(cfg, args.out, jobs=args.jobs, threads=args.threads, resume=args.resume)
    except (FileNotFoundError, ValueError) as err:  # missing data, corrupt files
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    command = getattr(args, "command_line", None) or shlex.join(["molearn", *sys.argv[1:]])
    wall = time.perf_counter() - t0
    notes = [*_notes(cfg, result, args.jobs), f"Wall time of this invocation: {wall:.0f} s."]
    write_report(
        result.records,
        args.out,
        command=command,
        versions=collect_versions(),
        notes=notes,
        plot=not args.no_plot,
        task_names=list(TASKS),
    )
    md = format_markdown(
        result.records, command=command, versions={}, notes=(), summaries=summarise(result.records)
    )
    table = [line for line in md.splitlines() if line.startswith("|")]
    print("\n".join(table[: len(table) - 2]))
    print(f"report: {Path(args.out) / 'report.md'} ({wall:.0f} s)")
    failed = [r for r in result.records if r.error]
    if failed:
        print(f"{len(failed)} run(s) failed; see the report", file=sys.stderr)
    return 0
