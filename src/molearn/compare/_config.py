"""What ``molearn compare`` runs, checked in full before the first run: config files (JSON or YAML), method
names and their keyword arguments, seeds, schedules, devices.

Every check raises :class:`ConfigError` (a ``ValueError``) with one line naming the key or option, the
bad value and, for names, the closest valid one.

A config file is a mapping with the keys of :data:`CONFIG_KEYS`::

    benchmark: multi_fashion            # a built-in name, or package.module:object
    methods:                            # a list of names, or name -> keyword arguments
      ew: {}
      cagrad: {c: 0.4}
    seeds: 3                            # a count (seeds 0, 1, 2) or a list [0, 3, 7]
    schedule:                           # a named schedule of the benchmark, or changes to one
      base: default
      epochs: 5
      lr: 0.01
    device: auto                        # auto, cpu, cuda, cuda:1, mps
    jobs: 2                             # worker processes (0: in this process)
    out: out/compare

Command-line options win over the file. YAML reads ``1e-3`` as text (it needs ``1.0e-3``); number fields
accept such text when it parses as a number.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import math
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .._conventions import did_you_mean, norm_name, seed_list
from ._benchmark import Benchmark, BenchmarkError, Schedule, check_schedule

__all__ = [
    "CONFIG_KEYS",
    "ConfigError",
    "check_device",
    "check_method",
    "check_methods",
    "check_seeds",
    "load_config",
    "schedule_from",
]

CONFIG_KEYS = ("benchmark", "methods", "seeds", "schedule", "device", "jobs", "threads", "out")
_SCHEDULE_KEYS = tuple(f.name for f in dataclasses.fields(Schedule))
_FLOAT_FIELDS = ("lr", "momentum", "weight_decay")


class ConfigError(ValueError):
    """A config file, option or method argument is invalid (one line: where, what, the valid choices)."""


# ------------------------------------------------------------------------------------------ files
def load_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a JSON or YAML (``.yaml`` / ``.yml``) config; an unknown key is an error with a suggestion.
    YAML needs PyYAML (``pip install molearn[cli]``), imported only for YAML files."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as err:
        raise ConfigError(f"cannot read the config {p}: {err.strerror or err}") from None
    if p.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ConfigError(
                f"reading the YAML config {p} needs PyYAML: pip install 'molearn[cli]' (or write it as JSON)"
            ) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"{p}: not valid YAML ({' '.join(str(err).split())})") from None
    else:
        try:
            data = json.loads(text) if text.strip() else None
        except json.JSONDecodeError as err:
            raise ConfigError(
                f"{p}: not valid JSON ({err}); YAML configs must end in .yaml or .yml"
            ) from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{p}: a config is a mapping with keys {', '.join(CONFIG_KEYS)}")
    for key in data:
        if key not in CONFIG_KEYS:
            raise ConfigError(
                f"{p}: unknown key {key!r}{did_you_mean(str(key), CONFIG_KEYS)}; "
                f"valid keys: {', '.join(CONFIG_KEYS)}"
            )
    return dict(data)


# ------------------------------------------------------------------------------------------ values
def _number(value: Any, where: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise ConfigError(f"{where} must be a number, got {value!r}")


def positive_int(value: Any, where: str) -> int:
    """A positive integer: ``3`` and ``"3"`` pass; ``1.5``, ``2.0``, ``0``, ``True`` are errors."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where} must be a positive integer, got {value!r}")
    return value


def positive_number(value: Any, where: str) -> float:
    """A finite number > 0 (text that parses as one is accepted: YAML reads ``1e-3`` as text)."""
    v = _number(value, where)
    if not math.isfinite(v) or v <= 0:
        raise ConfigError(f"{where} must be a positive number, got {value!r}")
    return v


def check_seeds(value: Any, where: str = "seeds") -> list[int]:
    try:
        return seed_list(value)
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from None


def check_device(value: Any, where: str = "device") -> str:
    """``"auto"`` -> cuda when available, else cpu; otherwise a torch device string that is available here."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where} must be a device name (auto, cpu, cuda, cuda:1, mps), got {value!r}")
    if value == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(value)
    except (RuntimeError, ValueError):
        raise ConfigError(
            f"{where}: {value!r} is not a torch device (auto, cpu, cuda, cuda:1, mps)"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{where}: {value!r} asked for, but CUDA is not available here")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"{where}: {value!r}, but there are {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{where}: 'mps' asked for, but it is not available here")
    return value


# ------------------------------------------------------------------------------------------ schedules
def schedule_from(value: Any, benchmark: Benchmark, where: str = "schedule") -> tuple[str, Schedule]:
    """A schedule name of the benchmark, a mapping ``{base: name, field: value, ...}`` (changes to the
    named schedule, default ``default``) or a :class:`Schedule`; every field is type-checked."""
    named = benchmark.named_schedules()
    if isinstance(value, Schedule):
        try:
            check_schedule(value, where)
        except BenchmarkError as err:
            raise ConfigError(str(err)) from None
        _probe_schedule(value, where)
        return "custom", value
    if isinstance(value, str):
        if value not in named:
            raise ConfigError(
                f"{where}: benchmark {benchmark.name!r} has no schedule {value!r}"
                f"{did_you_mean(value, named)}; "
                f"it has: {', '.join(named)}"
            )
        return value, named[value]
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a schedule name ({', '.join(named)}) or a mapping, got {value!r}")
    base = value.get("base", "default")
    if base not in named:
        raise ConfigError(
            f"{where}.base: benchmark {benchmark.name!r} has no schedule {base!r}"
            f"{did_you_mean(str(base), named)}; "
            f"it has: {', '.join(named)}"
        )
    changes = {k: v for k, v in value.items() if k != "base"}
    return f"{base} (changed: {', '.join(changes) or 'nothing'})", apply_changes(named[base], changes, where)


def apply_changes(schedule: Schedule, changes: Mapping[str, Any], where: str = "schedule") -> Schedule:
    """``schedule`` with ``changes`` applied, each key and value checked."""
    clean: dict[str, Any] = {}
    for key, v in changes.items():
        if key not in _SCHEDULE_KEYS:
            raise ConfigError(
                f"{where}: unknown key {key!r}{did_you_mean(str(key), _SCHEDULE_KEYS)}; "
                f"valid keys: base, {', '.join(_SCHEDULE_KEYS)}"
            )
        if key in _FLOAT_FIELDS:
            v = _number(v, f"{where}.{key}")
        elif key in ("epochs", "batch_size", "eval_batch_size"):
            v = positive_int(v, f"{where}.{key}")
        elif key in ("train_size", "eval_size"):
            v = None if v is None else positive_int(v, f"{where}.{key}")
        elif key in ("optimizer_kwargs", "scheduler_kwargs"):
            if not isinstance(v, Mapping):
                raise ConfigError(f"{where}.{key} must be a mapping, got {v!r}")
            v = dict(v)
        elif key == "scheduler" and isinstance(v, str) and v.lower() in ("none", "null", ""):
            v = None
        clean[key] = v
    try:
        out = dataclasses.replace(schedule, **clean)
        check_schedule(out, where)
        _probe_schedule(out, where)
    except BenchmarkError as err:
        raise ConfigError(str(err)) from None
    return out


def _probe_schedule(s: Schedule, where: str) -> None:
    """Build the optimiser and LR scheduler once on a dummy parameter: bad keyword arguments fail here."""
    from ._benchmark import make_optimizer, make_scheduler

    p = torch.nn.Parameter(torch.zeros(1))
    try:
        opt = make_optimizer(s, [p])
    except (TypeError, ValueError) as err:
        raise ConfigError(
            f"{where}: optimizer {s.optimizer!r} with {dict(s.optimizer_kwargs)}: {err}"
        ) from None
    try:
        make_scheduler(s, opt, steps_per_epoch=1)
    except (TypeError, ValueError, KeyError) as err:
        raise ConfigError(
            f"{where}: scheduler {s.scheduler!r} with {dict(s.scheduler_kwargs)}: {err}"
        ) from None


# ------------------------------------------------------------------------------------------ methods
def _registry() -> dict[str, type]:
    from ..methods import registry

    return dict(registry())


def method_key(name: Any, where: str = "methods") -> str:
    """The registry name of ``name`` (case, ``-`` and ``_`` ignored); unknown -> error with a suggestion."""
    table = {norm_name(k): k for k in _registry()}
    key = norm_name(str(name))
    if key not in table:
        raise ConfigError(
            f"{where}: unknown method {name!r}{did_you_mean(str(name), table.values())}; "
            f"known: {', '.join(sorted(table.values()))}"
        )
    return table[key]


def _type_text(hint: Any) -> str:
    if hint is type(None):
        return "None"
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "").replace("collections.abc.", "")


def _matches(value: Any, hint: Any) -> bool | None:
    """Whether ``value`` fits the annotation ``hint``: True, False, or None (cannot tell)."""
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin is typing.Union or (hasattr(types, "UnionType") and origin is types.UnionType):
        results = [_matches(value, a) for a in args]
        if any(r is True for r in results):
            return True
        return None if any(r is None for r in results) else False
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint is Tensor:
        return isinstance(value, Tensor)
    if origin in (list, tuple, Sequence, typing.Sequence):
        if not isinstance(value, (list, tuple)):
            return False
        inner = args[0] if args else Any
        results = [_matches(v, inner) for v in value]
        return not any(r is False for r in results)
    return None


def check_method(name: Any, kwargs: Any, where: str = "methods") -> tuple[str, dict[str, Any]]:
    """``(registry name, keyword arguments)`` after checking the name, every argument against the
    constructor's signature and annotations, and constructing the method once."""
    key = method_key(name, where)
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, Mapping):
        raise ConfigError(f"{where}: the arguments of method {name!r} must be a mapping, got {kwargs!r}")
    cls = _registry()[key]
    if cls.loop_only:
        raise ConfigError(f"{where}.{key}: {cls.__name__} cannot run in molearn compare: {cls.loop_only}")
    sig = inspect.signature(cls.__init__)
    params = {n: p for n, p in sig.parameters.items() if n != "self" and p.kind not in (p.VAR_POSITIONAL,)}
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # unresolvable annotations: the construction below still checks
        hints = {}
    out: dict[str, Any] = {}
    for arg, value in kwargs.items():
        arg = str(arg)
        if arg not in params and not takes_any:
            valid = [n for n, p in params.items() if p.kind is not p.VAR_KEYWORD]
            raise ConfigError(
                f"{where}.{key}: {cls.__name__} has no argument {arg!r}{did_you_mean(arg, valid)}; "
                f"its arguments: {', '.join(valid) or 'none'}"
            )
        hint = hints.get(arg)
        if hint is not None:
            if isinstance(value, str) and _matches(value, hint) is False and _matches(1.0, hint) is True:
                with contextlib.suppress(ValueError):  # YAML reads 1e-3 as text
                    value = float(value)
            if _matches(value, hint) is False:
                raise ConfigError(
                    f"{where}.{key}.{arg} must be {_type_text(hint)}, got {value!r} ({type(value).__name__})"
                )
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{where}.{key}.{arg} must be finite, got {value!r}")
        out[arg] = value
    try:
        cls(**out)
    except Exception as err:  # the method's own checks
        raise ConfigError(f"{where}.{key}: {cls.__name__}({_kw_text(out)}) fails: {err}") from None
    return key, out


def _kw_text(kwargs: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


def check_methods(
    value: Any, defaults: Mapping[str, Mapping[str, Any]] | None = None, where: str = "methods"
) -> dict[str, dict[str, Any]]:
    """Methods as a comma-separated string, a list of names (or one-key ``{name: kwargs}`` mappings) or a
    mapping name -> kwargs; ``defaults`` (the benchmark's ``method_kwargs``) under the given kwargs.
    Returns registry name -> kwargs, in the given order."""
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    items: list[tuple[Any, Any]] = []
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, (list, tuple)):
        for v in value:
            if isinstance(v, Mapping) and len(v) == 1:
                items.append(next(iter(v.items())))
            elif isinstance(v, str):
                items.append((v, None))
            else:
                raise ConfigError(f"{where}: a method is a name or {{name: {{arguments}}}}, got {v!r}")
    else:
        raise ConfigError(f"{where} must be a list of names or a mapping name -> arguments, got {value!r}")
    if not items:
        raise ConfigError(f"{where}: no methods given")
    out: dict[str, dict[str, Any]] = {}
    defaults = {method_key(k, "benchmark method_kwargs"): dict(v) for k, v in (defaults or {}).items()}
    for name, kwargs in items:
        key = method_key(name, where)
        if key in out:
            raise ConfigError(f"{where}: method {key!r} is given twice")
        if kwargs is not None and not isinstance(kwargs, Mapping):
            raise ConfigError(f"{where}: the arguments of method {name!r} must be a mapping, got {kwargs!r}")
        merged = {**defaults.get(key, {}), **dict(kwargs or {})}
        out[key] = check_method(key, merged, where)[1]
    return out
