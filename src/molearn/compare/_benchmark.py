"""The benchmark protocol of ``molearn compare``: what a multi-task problem must say so that any method can be
trained, evaluated and compared on it.

A :class:`Benchmark` names its tasks and gives

- ``data``: the splits ``"train"``, ``"test"`` and optionally ``"val"``, as a mapping split -> data set or a
  factory ``data(split)`` (or ``data(split, size)``) called lazily, once per split and process;
- ``model``: a factory of a fresh model whose ``shared_parameters()`` are the parameters the methods
  balance (the trunk) and whose optional ``task_parameters()`` are the task-specific ones (heads);
- ``loss_fn(model, batch)``: the K task losses;
- ``metrics``: one :class:`Metric` per reported number (its task, direction and weight in Δm) and how to
  compute them: ``score_fn(model, batch) -> {metric: per-example values}`` for means over examples, or
  ``meter()`` returning a :class:`molearn.metrics.Meter` for anything else (mIoU, median errors);
- optional single-task ``baselines`` (published numbers) — otherwise molearn trains them (and caches them);
- a default :class:`Schedule` (epochs, batch size, optimiser, learning rate, LR scheduler).

Batches reach ``loss_fn``, ``score_fn`` and meters **already on the run's device** (tensors inside
tuples, lists and dicts are moved). The default loader is ``torch.utils.data.DataLoader(data, batch_size,
shuffle=...)``; a problem whose batches need more (one data set per task, graphs) gives ``loader``.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import math
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .._conventions import did_you_mean

__all__ = [
    "OPTIMIZERS",
    "SCHEDULERS",
    "Benchmark",
    "BenchmarkError",
    "Metric",
    "Schedule",
    "builtin_benchmarks",
    "load_benchmark",
]

SPLITS = ("train", "val", "test")

#: optimiser names of a :class:`Schedule` -> ``torch.optim`` class name
OPTIMIZERS = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop", "adagrad": "Adagrad"}
#: LR scheduler names of a :class:`Schedule` -> ``torch.optim.lr_scheduler`` class name
SCHEDULERS = {
    "multistep": "MultiStepLR",
    "step": "StepLR",
    "exponential": "ExponentialLR",
    "cosine": "CosineAnnealingLR",
    "plateau": "ReduceLROnPlateau",
}


class BenchmarkError(ValueError):
    """A benchmark, a schedule or a reference to a benchmark is malformed (the message says what, where)."""


# ------------------------------------------------------------------------------------------ metric
@dataclass(frozen=True)
class Metric:
    """One reported number of one task.

    Args:
        name: the key that ``score_fn`` / the meter returns (``"acc_left"``, ``"mae_mu"``, ``"miou"``).
        task: the task it measures (a name of ``Benchmark.tasks``); the single-task baseline of this metric
            is the run trained on that task alone.
        higher_is_better: the direction (accuracy, mIoU: True; errors: False).
        weight: the metric's weight in Δm (default 1, the published per-metric convention; 0 reports it
            without counting it).
        label: the axis label in plots (default: the name with its direction).
    """

    name: str
    task: str
    higher_is_better: bool = True
    weight: float = 1.0
    label: str = ""

    @property
    def axis_label(self) -> str:
        arrow = "higher is better" if self.higher_is_better else "lower is better"
        return f"{self.label or self.name} ({arrow})"


# ------------------------------------------------------------------------------------------ schedule
@dataclass(frozen=True)
class Schedule:
    """How every run of a comparison trains: the same for every method.

    Args:
        epochs: passes over the training data (a positive integer).
        batch_size: training batch size.
        optimizer: ``"sgd"``, ``"adam"``, ``"adamw"``, ``"rmsprop"`` or ``"adagrad"`` (``torch.optim``).
        lr: learning rate.
        momentum: SGD / RMSprop momentum (0 for the others).
        weight_decay: L2 penalty of the optimiser.
        optimizer_kwargs: further keyword arguments of the optimiser (``betas``, ``nesterov``, ...).
        scheduler: ``None`` or ``"multistep"``, ``"step"``, ``"exponential"``, ``"cosine"``, ``"plateau"``
            (``torch.optim.lr_scheduler`` MultiStepLR, StepLR, ExponentialLR, CosineAnnealingLR,
            ReduceLROnPlateau).
        scheduler_kwargs: its keyword arguments (``milestones``/``gamma``, ``step_size``, ``T_max`` —
            default: the number of scheduler steps of the run —, ``factor``/``patience``/``min_lr``, ...).
            ``"plateau"`` also takes ``monitor``: ``"val_loss"`` (default: the mean of the K validation
            losses) or the name of a metric (its direction sets the mode; the QM9 protocol of Nash-MTL /
            FAMO monitors validation Δm against the published single-task errors, ``"delta_m_published"``);
            it needs a validation split.
        scheduler_step: ``"epoch"`` (default) or ``"step"``: when the scheduler steps (``"plateau"``: epoch).
        train_size: use at most this many training examples (the first ones; None: all).
        eval_size: use at most this many validation and test examples each (None: all).
        eval_batch_size: batch size of evaluation.
    """

    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.0
    weight_decay: float = 0.0
    optimizer_kwargs: Mapping[str, Any] = field(default_factory=dict)
    scheduler: str | None = None
    scheduler_kwargs: Mapping[str, Any] = field(default_factory=dict)
    scheduler_step: str = "epoch"
    train_size: int | None = None
    eval_size: int | None = None
    eval_batch_size: int = 512

    def describe(self) -> str:
        """One line: ``3 epochs, batch 64, SGD lr 0.01 momentum 0.9, no LR schedule, ...``."""
        opt = f"{OPTIMIZERS.get(self.optimizer, self.optimizer)} lr {self.lr:g}"
        if self.momentum:
            opt += f" momentum {self.momentum:g}"
        if self.weight_decay:
            opt += f" weight decay {self.weight_decay:g}"
        for k, v in self.optimizer_kwargs.items():
            opt += f" {k} {v}"
        if self.scheduler is None:
            sched = "no LR schedule"
        else:
            kw = ", ".join(f"{k}={v}" for k, v in self.scheduler_kwargs.items())
            sched = (
                f"{SCHEDULERS.get(self.scheduler, self.scheduler)}({kw}) stepped per {self.scheduler_step}"
            )
        sizes = (
            f"{'all' if self.train_size is None else self.train_size} train / "
            f"{'all' if self.eval_size is None else self.eval_size} val and test examples"
        )
        epochs = f"{self.epochs} epoch{'s' if self.epochs != 1 else ''}"
        return f"{epochs}, batch {self.batch_size}, {opt}, {sched}, {sizes}"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_schedule(s: Schedule, where: str = "schedule") -> Schedule:
    """Raise :class:`BenchmarkError` naming the first bad field of ``s`` (types and ranges); returns ``s``."""
    for name in ("epochs", "batch_size", "eval_batch_size"):
        v = getattr(s, name)
        if not _is_int(v) or v < 1:
            raise BenchmarkError(f"{where}: {name} must be a positive integer, got {v!r}")
    for name in ("train_size", "eval_size"):
        v = getattr(s, name)
        if v is not None and (not _is_int(v) or v < 1):
            raise BenchmarkError(f"{where}: {name} must be a positive integer or null (all), got {v!r}")
    if not _is_number(s.lr) or not math.isfinite(s.lr) or s.lr <= 0:
        raise BenchmarkError(f"{where}: lr must be a positive number, got {s.lr!r}")
    for name in ("momentum", "weight_decay"):
        v = getattr(s, name)
        if not _is_number(v) or not math.isfinite(v) or v < 0:
            raise BenchmarkError(f"{where}: {name} must be a number >= 0, got {v!r}")
    if s.optimizer not in OPTIMIZERS:
        raise BenchmarkError(
            f"{where}: unknown optimizer {s.optimizer!r}{did_you_mean(str(s.optimizer), OPTIMIZERS)}; "
            f"valid: {', '.join(OPTIMIZERS)}"
        )
    if s.momentum and s.optimizer not in ("sgd", "rmsprop"):
        raise BenchmarkError(f"{where}: momentum applies to sgd and rmsprop, not {s.optimizer}")
    if not isinstance(s.optimizer_kwargs, Mapping) or not isinstance(s.scheduler_kwargs, Mapping):
        raise BenchmarkError(f"{where}: optimizer_kwargs and scheduler_kwargs must be mappings")
    if s.scheduler is not None and s.scheduler not in SCHEDULERS:
        raise BenchmarkError(
            f"{where}: unknown scheduler {s.scheduler!r}{did_you_mean(str(s.scheduler), SCHEDULERS)}; "
            f"valid: {', '.join(SCHEDULERS)} or null"
        )
    if s.scheduler_step not in ("epoch", "step"):
        raise BenchmarkError(f"{where}: scheduler_step must be 'epoch' or 'step', got {s.scheduler_step!r}")
    if s.scheduler == "plateau" and s.scheduler_step != "epoch":
        raise BenchmarkError(f"{where}: the plateau scheduler steps per epoch (scheduler_step: epoch)")
    if s.scheduler != "plateau" and "monitor" in s.scheduler_kwargs:
        raise BenchmarkError(f"{where}: scheduler_kwargs.monitor applies to the plateau scheduler only")
    return s


def quick_schedule(s: Schedule) -> Schedule:
    """The seconds-long smoke version of ``s``: one epoch, at most 128 training / 64 evaluation examples."""
    return dataclasses.replace(
        s,
        epochs=1,
        train_size=min(s.train_size or 128, 128),
        eval_size=min(s.eval_size or 64, 64),
        batch_size=min(s.batch_size, 32),
        eval_batch_size=64,
    )


def make_optimizer(s: Schedule, params: Iterable[Tensor]) -> torch.optim.Optimizer:
    cls = getattr(torch.optim, OPTIMIZERS[s.optimizer])
    kwargs: dict[str, Any] = {"lr": s.lr, "weight_decay": s.weight_decay, **dict(s.optimizer_kwargs)}
    if s.optimizer in ("sgd", "rmsprop"):
        kwargs.setdefault("momentum", s.momentum)
    return cls(params, **kwargs)


def make_scheduler(
    s: Schedule, optimizer: torch.optim.Optimizer, steps_per_epoch: int, mode: str = "min"
) -> Any:
    """The schedule's ``torch.optim.lr_scheduler`` object (None without one); ``monitor`` is taken out and
    ``mode`` is the plateau scheduler's default mode (the monitored value's direction)."""
    if s.scheduler is None:
        return None
    cls = getattr(torch.optim.lr_scheduler, SCHEDULERS[s.scheduler])
    kwargs = {k: v for k, v in s.scheduler_kwargs.items() if k != "monitor"}
    if s.scheduler == "cosine":
        kwargs.setdefault("T_max", s.epochs * (steps_per_epoch if s.scheduler_step == "step" else 1))
    if s.scheduler == "plateau":
        kwargs.setdefault("mode", mode)
    if s.scheduler == "multistep" and "milestones" in kwargs:
        kwargs["milestones"] = list(kwargs["milestones"])
    return cls(optimizer, **kwargs)


# ------------------------------------------------------------------------------------------ benchmark
@dataclass(frozen=True)
class Benchmark:
    """A multi-task problem that ``molearn compare`` runs every method on (see the module docstring).

    Args:
        name: a short name (reports, caches, ``--benchmark``).
        tasks: the K task names, in the order of ``loss_fn``'s losses.
        data: ``{"train": ..., "test": ..., "val": ...}`` or a factory ``data(split)`` returning the data
            set of a split (``None`` for a split it does not have: only ``"val"`` is optional). A factory
            with a ``size`` parameter is called as ``data(split, size=n)`` with the schedule's
            ``train_size`` / ``eval_size`` (None = all) so it can build only what is used; in any case
            at most ``n`` examples (the first ones) of a ``torch.utils.data.Dataset`` are used. A split may
            be anything ``loader`` can batch, e.g. a tuple of data sets, one per task.
        model: ``model()`` -> a fresh ``nn.Module`` with ``shared_parameters()`` (required: what the methods
            balance) and optionally ``task_parameters()`` (task-specific; default: the rest).
        loss_fn: ``loss_fn(model, batch)`` -> the K losses (a (K,) tensor or K scalars), in task order.
        metrics: the reported :class:`Metric` s; every task needs at least one unless ``baselines`` are given.
        score_fn: ``score_fn(model, batch)`` -> ``{metric name: per-example values (N,)}``; each metric is
            the mean over the split (accuracy, absolute error). Give this or ``meter``.
        meter: ``meter()`` -> a fresh :class:`molearn.metrics.Meter` (``update(model, batch)``,
            ``compute()``), for metrics that are not means over examples.
        schedule: the default :class:`Schedule`.
        schedules: further named schedules (``"full"``: the published protocol, ``--full``); ``"quick"`` is
            derived from ``schedule`` unless given.
        baselines: single-task values of the metrics (e.g. from a paper), metric name -> value, used for Δm
            on validation and test; ``None``: molearn trains one single-task run per task and seed and
            caches them.
        methods: the methods compared by default (default: :data:`molearn.compare.DEFAULT_METHODS`).
        method_kwargs: per-method hyper-parameters of this problem (``{"cagrad": {"c": 0.4}}``); a config
            file's ``methods`` mapping overrides them.
        loader: ``loader(data, batch_size, shuffle)`` -> an iterable of batches with a length; default
            ``DataLoader(data, batch_size=batch_size, shuffle=shuffle)``. For shuffling that follows the
            run's seed, return a DataLoader (molearn seeds its sampler) or read ``torch.initial_seed()``.
        description: one paragraph for the report (data, model, protocol, sources).
        version: change it when the data or model change, so that cached single-task runs are not reused.
    """

    name: str
    tasks: Sequence[str]
    data: Mapping[str, Any] | Callable[..., Any]
    model: Callable[[], nn.Module]
    loss_fn: Callable[[nn.Module, Any], Tensor | Sequence[Tensor]]
    metrics: Sequence[Metric]
    score_fn: Callable[[nn.Module, Any], Mapping[str, Tensor]] | None = None
    meter: Callable[[], Any] | None = None
    schedule: Schedule = field(default_factory=Schedule)
    schedules: Mapping[str, Schedule] = field(default_factory=dict)
    baselines: Mapping[str, float] | None = None
    methods: Sequence[str] | None = None
    method_kwargs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    loader: Callable[[Any, int, bool], Iterable[Any]] | None = None
    description: str = ""
    version: str = "1"
    _cache: dict[tuple[str, int | None], Any] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __getstate__(self) -> dict[str, Any]:  # the built data stay in the process that built them
        state = dict(self.__dict__)
        state["_cache"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            object.__setattr__(self, k, v)

    # ---------------------------------------------------------------- structure
    def validate(self) -> Benchmark:
        """Check the fields that need no data or model (names, metrics, baselines, schedules); raises
        :class:`BenchmarkError` naming the first problem. Returns ``self``."""
        where = f"benchmark {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise BenchmarkError(f"a benchmark needs a non-empty name, got {self.name!r}")
        tasks = list(self.tasks) if not isinstance(self.tasks, str) else []
        if not tasks or not all(isinstance(t, str) and t for t in tasks) or len(set(tasks)) != len(tasks):
            raise BenchmarkError(f"{where}: tasks must be distinct non-empty names, got {self.tasks!r}")
        if not (isinstance(self.data, Mapping) or callable(self.data)):
            raise BenchmarkError(
                f"{where}: data must be a mapping split -> data set or a factory data(split)"
            )
        if isinstance(self.data, Mapping):
            unknown = [k for k in self.data if k not in SPLITS]
            if unknown:
                raise BenchmarkError(
                    f"{where}: unknown data split(s) {unknown}; splits are {', '.join(SPLITS)}"
                )
        for name in ("model", "loss_fn"):
            if not callable(getattr(self, name)):
                raise BenchmarkError(f"{where}: {name} must be callable")
        metrics = list(self.metrics)
        if not metrics or not all(isinstance(m, Metric) for m in metrics):
            raise BenchmarkError(f"{where}: metrics must be a non-empty list of molearn.compare.Metric")
        names = [m.name for m in metrics]
        if len(set(names)) != len(names):
            raise BenchmarkError(f"{where}: metric names must be distinct, got {names}")
        for m in metrics:
            if m.task not in tasks:
                raise BenchmarkError(f"{where}: metric {m.name!r} names task {m.task!r}, not one of {tasks}")
            if not _is_number(m.weight) or not math.isfinite(m.weight) or m.weight < 0:
                raise BenchmarkError(
                    f"{where}: metric {m.name!r} has weight {m.weight!r}; need a number >= 0"
                )
        if not any(m.weight > 0 for m in metrics):
            raise BenchmarkError(f"{where}: at least one metric needs a positive weight in Δm")
        if (self.score_fn is None) == (self.meter is None):
            raise BenchmarkError(f"{where}: give exactly one of score_fn (per-example values) and meter")
        if self.baselines is None:
            bare = [t for t in tasks if not any(m.task == t and m.weight > 0 for m in metrics)]
            if bare:
                raise BenchmarkError(
                    f"{where}: task(s) {bare} have no metric of positive weight, so their single-task runs "
                    "would measure nothing; add metrics or give baselines"
                )
        else:
            if not isinstance(self.baselines, Mapping):
                raise BenchmarkError(f"{where}: baselines must be a mapping metric name -> value")
            missing = [m.name for m in metrics if m.weight > 0 and m.name not in self.baselines]
            extra = [k for k in self.baselines if k not in names]
            if missing or extra:
                raise BenchmarkError(f"{where}: baselines lack {missing} and name unknown metrics {extra}")
            for k, v in self.baselines.items():
                if not _is_number(v) or not math.isfinite(v) or v <= 0:
                    raise BenchmarkError(f"{where}: baseline of {k!r} must be a positive number, got {v!r}")
        check_schedule(self.schedule, f"{where}, schedule")
        for key, s in self.schedules.items():
            if not isinstance(s, Schedule):
                raise BenchmarkError(f"{where}: schedules[{key!r}] is not a Schedule")
            check_schedule(s, f"{where}, schedule {key!r}")
        if self.loader is not None and not callable(self.loader):
            raise BenchmarkError(f"{where}: loader must be callable")
        return self

    def named_schedules(self) -> dict[str, Schedule]:
        """``{"default": schedule, "quick": ..., **schedules}``."""
        out = {"default": self.schedule, "quick": quick_schedule(self.schedule)}
        out.update(self.schedules)
        return out

    def metric(self, name: str) -> Metric:
        return next(m for m in self.metrics if m.name == name)

    def new_meter(self) -> Any:
        if self.meter is not None:
            return self.meter()
        from ..metrics import MeanMeter

        assert self.score_fn is not None
        return MeanMeter(self.score_fn)

    # ---------------------------------------------------------------- data
    def dataset(self, split: str, size: int | None = None) -> Any:
        """The data set of ``split`` (None when the benchmark has no such split), at most ``size`` items."""
        if split not in SPLITS:
            raise BenchmarkError(f"unknown split {split!r}; splits are {', '.join(SPLITS)}")
        key = (split, size)
        if key in self._cache:
            return self._cache[key]
        if isinstance(self.data, Mapping):
            ds = self.data.get(split)
        elif _takes_size(self.data):
            ds = self.data(split, size=size)
        else:
            ds = self.data(split)
        if ds is None and split != "val":
            raise BenchmarkError(f"benchmark {self.name!r} has no {split!r} data")
        if size is not None and isinstance(ds, torch.utils.data.Dataset):  # not a tuple of data sets
            try:
                n = len(ds)  # type: ignore[arg-type]
            except TypeError:
                n = None
            if n is not None and n > size:
                ds = torch.utils.data.Subset(ds, range(size))
        self._cache[key] = ds
        return ds

    def make_loader(self, data: Any, batch_size: int, shuffle: bool) -> Iterable[Any]:
        if self.loader is not None:
            return self.loader(data, batch_size, shuffle)
        return torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=shuffle)


def _takes_size(fn: Callable[..., Any]) -> bool:
    try:
        return "size" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


# ------------------------------------------------------------------------------------------ device
def to_device(batch: Any, device: torch.device) -> Any:
    """Tensors in ``batch`` (nested tuples, lists, dicts) moved to ``device``; anything else as it is."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # named tuple
        return type(batch)(*(to_device(b, device) for b in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    to = getattr(batch, "to", None)
    if callable(to):  # e.g. a graph batch object
        try:
            return to(device)
        except TypeError:
            return batch
    return batch


class DeviceLoader:
    """Wraps a loader so that its batches arrive on ``device``; keeps ``len``, ``generator`` and ``sampler``
    (so :class:`molearn.train.Trainer` can seed the shuffling of a DataLoader)."""

    def __init__(self, loader: Iterable[Any], device: torch.device) -> None:
        self.loader = loader
        self.device = device

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Any]:
        for batch in self.loader:
            yield to_device(batch, self.device)

    def __getattr__(self, name: str) -> Any:
        if name in ("generator", "sampler"):
            return getattr(self.__dict__["loader"], name)
        raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "generator" and hasattr(self.__dict__.get("loader"), "generator"):
            self.loader.generator = value  # type: ignore[attr-defined]
        else:
            super().__setattr__(name, value)


# ------------------------------------------------------------------------------------------ model
def split_parameters(model: nn.Module, where: str) -> tuple[list[Tensor], list[Tensor] | None]:
    """``(shared, task-specific or None)`` from ``model.shared_parameters()`` / ``task_parameters()``."""
    own = getattr(model, "shared_parameters", None)
    if not callable(own):
        raise BenchmarkError(
            f"{where}: the model ({type(model).__name__}) has no shared_parameters() method; it must say "
            "which parameters are shared by the tasks (the trunk), e.g. `def shared_parameters(self): "
            "return self.trunk.parameters()`"
        )
    shared = list(own())
    if not shared:
        raise BenchmarkError(f"{where}: {type(model).__name__}.shared_parameters() is empty")
    ids = {id(p) for p in model.parameters()}
    if any(id(p) not in ids for p in shared):
        raise BenchmarkError(
            f"{where}: shared_parameters() yields tensors that are not the model's parameters"
        )
    task_fn = getattr(model, "task_parameters", None)
    tasks = None
    if callable(task_fn):
        tasks = list(task_fn())
        if any(id(p) not in ids for p in tasks):
            raise BenchmarkError(
                f"{where}: task_parameters() yields tensors that are not the model's parameters"
            )
        both = {id(p) for p in shared} & {id(p) for p in tasks}
        if both:
            raise BenchmarkError(f"{where}: {len(both)} parameter(s) are both shared and task-specific")
    return shared, tasks


# ------------------------------------------------------------------------------------------ references
def builtin_benchmarks() -> dict[str, Callable[[], Benchmark]]:
    """Built-in benchmark name -> factory (imported when asked for)."""
    from ._multi import MULTI_BENCHMARKS
    from ._qm9 import QM9_BENCHMARKS
    from ._vision import VISION_BENCHMARKS

    return {**MULTI_BENCHMARKS, **QM9_BENCHMARKS, **VISION_BENCHMARKS}


def load_benchmark(ref: str | Benchmark) -> Benchmark:
    """A built-in benchmark by name (``"multi_fashion"``) or a user's by ``"package.module:object"``
    (``object`` a :class:`Benchmark`, or a function of no arguments returning one; the module is imported
    from ``sys.path`` with the current folder added at its end). Raises
    :class:`BenchmarkError` with a one-line reason (unknown name with a suggestion, module not importable,
    object missing or not a Benchmark). The benchmark is validated (:meth:`Benchmark.validate`)."""
    if isinstance(ref, Benchmark):
        return ref.validate()
    if not isinstance(ref, str) or not ref.strip():
        raise BenchmarkError(f"a benchmark is a built-in name or 'package.module:object', got {ref!r}")
    ref = ref.strip()
    if ":" not in ref:
        table = builtin_benchmarks()
        key = ref.lower().replace("-", "_")
        if key not in table:
            raise BenchmarkError(
                f"unknown benchmark {ref!r}{did_you_mean(key, table)}; built-in: {', '.join(table)}; "
                "or give your own as package.module:object"
            )
        return _cached(key, table[key])
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise BenchmarkError(f"--benchmark {ref!r}: expected package.module:object")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:  # the current folder, as `python -m` would have it
        sys.path.append(cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise BenchmarkError(
            f"--benchmark {ref!r}: cannot import module {module_name!r} ({err}); it is looked up on "
            "PYTHONPATH and in the current folder"
        ) from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            known = [n for n in dir(obj) if not n.startswith("_")]
            raise BenchmarkError(
                f"--benchmark {ref!r}: module {module_name!r} has no attribute {part!r}"
                f"{did_you_mean(part, known)}"
            )
        obj = getattr(obj, part)
    if not isinstance(obj, Benchmark) and callable(obj) and not isinstance(obj, type):
        try:
            params = inspect.signature(obj).parameters.values()
        except (TypeError, ValueError):
            params = []  # type: ignore[assignment]
        if all(p.default is not inspect.Parameter.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
               for p in params):  # fmt: skip
            obj = obj()
    if not isinstance(obj, Benchmark):
        raise BenchmarkError(
            f"--benchmark {ref!r} is a {type(obj).__name__}, not a molearn.compare.Benchmark "
            "(or a function of no arguments returning one)"
        )
    return obj.validate()


_BUILTIN_CACHE: dict[str, Benchmark] = {}


def _cached(key: str, factory: Callable[[], Benchmark]) -> Benchmark:
    if key not in _BUILTIN_CACHE:
        _BUILTIN_CACHE[key] = factory().validate()
    return _BUILTIN_CACHE[key]
