"""The comparison report of ``molearn compare``: per-method mean ± 95 % CI over seeds, Δm%, cost relative
to EW, written as ``report.md``, ``runs.csv`` and PNG plots.

Input: one :class:`RunRecord` per (method, seed) run. Aggregation (:func:`summarise`):

- every per-task metric, Δm% and the absolute time per step and peak memory: mean ± half-width of the
  two-sided 95 % Student-t interval over the seeds (:func:`molearn._stats.mean_ci`; non-finite values,
  e.g. of a diverged run, are left out and the count of seeds used is reported);
- cost relative to EW: **per seed** the paired ratio ``time_per_step / ew_time_per_step`` (``compare``
  records the median step time of each run, so this is a ratio of medians; the same for peak memory), with
  EW measured in the same invocation, then over the seeds the **geometric mean with a 95 % Student-t
  interval computed on the log scale** (:func:`ratio_ci`): ``exp(mean(log r) ± t·sd(log r)/√n)``. The
  interval is never below 0 and is not symmetric; a cost interval wider than its value is flagged (⚠) in
  the table and drawn hatched in the plot. The EW figures come from the record's own ``ew_*`` fields; where
  those are missing (NaN), from the ``"EW"`` record of the same seed when there is one. **With neither,
  the ratio is "n/a"** (NaN in ``runs.csv``, "n/a" in the table, and the report says which runs lack it)
  rather than an error: peak memory in particular is not measurable on every device.
- model selection (``compare``): ``metrics`` and ``delta_m`` are at the epoch the run was selected at
  (``epoch``; the best validation Δm), ``last_metrics`` and ``last_delta_m`` at its last epoch.

Methods are sorted by mean Δm% (lower is better, see :mod:`molearn.metrics`), methods without a finite
Δm last, ties by name.

**Published results** (:func:`published_section`): for a built-in benchmark with published numbers
(:mod:`molearn.compare._published`), the report prints each method's published Δm% and per-metric values
with their source beside the measured ones, names the sources' protocols, and says whether the run's
schedule is the published protocol (``default`` and ``quick`` are not).
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import platform
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._plot import figure_class
from .._stats import mean_ci, t_quantile
from ._published import DELTA_M, STL, Published, published

__all__ = [
    "EW_NAME",
    "MethodSummary",
    "RunRecord",
    "collect_versions",
    "cost_ratios",
    "ew_figures",
    "format_markdown",
    "place_labels",
    "plot_cost",
    "plot_tasks",
    "plot_weights",
    "published_section",
    "ratio_ci",
    "read_runs_csv",
    "summarise",
    "write_report",
    "write_runs_csv",
]

#: the method name whose records supply EW's cost when a record has no ``ew_*`` figures of its own
EW_NAME = "EW"

Interval = tuple[float, float, int]  # (mean, 95 % CI half-width, number of finite values)
RatioInterval = tuple[float, float, float, int]  # (geometric mean, 95 % CI low, high, n finite > 0)
#: more metrics than this go to their own table (metrics as rows) instead of columns
INLINE_METRICS = 6


@dataclass
class RunRecord:
    """One training run: one method, one seed. Schema (what the trainer / ``compare`` fills in):

    - ``method``: the method's name as given on the command line (e.g. ``"EW"``, ``"MGDA"``).
    - ``seed``: the run's seed; ``(method, seed)`` is unique within a report.
    - ``metrics``: final per-task metrics, name -> value, in task order (``{"acc_left": 0.91,
      "acc_right": 0.89}``); every record of a report has the same names. NaN for a diverged run. The
      first two names are the axes of the task-1 vs task-2 plot unless ``write_report`` is told others.
    - ``delta_m``: Δm% against the single-task baselines (:func:`molearn.metrics.delta_m`, lower is
      better); NaN when not computed (STL runs themselves, diverged runs).
    - ``time_per_step``: mean wall-clock seconds per training step of this method.
    - ``peak_memory``: peak memory of training in bytes (e.g. ``torch.cuda.max_memory_allocated``); NaN if
      not measured.
    - ``ew_time_per_step``, ``ew_peak_memory``: the same two figures for EW measured in the same run (same
      process, data, model and seed), for the paired cost ratios; NaN if not measured.
    - ``weights``: the task weights over training as ``(step, [w_1, ..., w_K])`` pairs (empty if the
      method has no weights, e.g. a Jacobian method returning a direction).
    - ``steps``: number of training steps done.
    - ``error``: empty for a run that finished; otherwise why it stopped (e.g. non-finite loss at step t).
    - ``epoch``: the (1-based) epoch ``metrics`` and ``delta_m`` are taken at (0: not recorded);
      ``epochs``: the epochs run; ``last_metrics`` / ``last_delta_m``: the same at the last epoch (empty /
      NaN when not recorded).
    """

    method: str
    seed: int
    metrics: dict[str, float]
    delta_m: float = math.nan
    time_per_step: float = math.nan
    peak_memory: float = math.nan
    ew_time_per_step: float = math.nan
    ew_peak_memory: float = math.nan
    weights: list[tuple[int, list[float]]] = field(default_factory=list)
    steps: int = 0
    error: str = ""
    epoch: int = 0
    epochs: int = 0
    last_metrics: dict[str, float] = field(default_factory=dict)
    last_delta_m: float = math.nan


@dataclass
class MethodSummary:
    """One method over its seeds: every figure as ``(mean, 95 % CI half-width, n finite)``, the cost
    ratios as ``(geometric mean, low, high, n)`` (:func:`ratio_ci`); ``weights`` is the mean over seeds of
    the weights at each logged step."""

    method: str
    seeds: list[int]
    metrics: dict[str, Interval]
    delta_m: Interval
    time_ratio: RatioInterval
    memory_ratio: RatioInterval
    time_per_step: Interval
    peak_memory: Interval
    weights: list[tuple[int, list[float]]]
    errors: list[str]
    last_delta_m: Interval = (math.nan, math.nan, 0)
    epoch: Interval = (math.nan, math.nan, 0)


# --------------------------------------------------------------------------------------------- checks
def _check(records: Sequence[RunRecord]) -> list[str]:
    """Validate the records; returns the metric names (from the first record)."""
    if not records:
        raise ValueError("no run records to report")
    bad = [type(r).__name__ for r in records if not isinstance(r, RunRecord)]
    if bad:
        raise TypeError(f"expected RunRecord objects, got {', '.join(sorted(set(bad)))}")
    names = list(records[0].metrics)
    seen: set[tuple[str, int]] = set()
    for r in records:
        if not r.method:
            raise ValueError(f"a record (seed {r.seed}) has an empty method name")
        key = (r.method, r.seed)
        if key in seen:
            raise ValueError(f"two records for method {r.method!r}, seed {r.seed}")
        seen.add(key)
        if list(r.metrics) != names:
            raise ValueError(
                f"record {r.method!r} seed {r.seed} has metrics {list(r.metrics)}, "
                f"the first record has {names}"
            )
        ks = {len(w) for _, w in r.weights}
        if len(ks) > 1:
            raise ValueError(
                f"record {r.method!r} seed {r.seed}: weight vectors of different lengths {sorted(ks)}"
            )
    return names


def _ratio(num: float, den: float) -> float:
    if math.isfinite(num) and math.isfinite(den) and den > 0:
        return num / den
    return math.nan


def ew_figures(record: RunRecord, records: Sequence[RunRecord]) -> tuple[float, float]:
    """EW's (time per step, peak memory) for ``record``: its own ``ew_*`` fields, each falling back to the
    :data:`EW_NAME` record of the same seed when NaN; NaN when neither has it."""
    ew = next((r for r in records if r.method == EW_NAME and r.seed == record.seed), None)
    t, m = record.ew_time_per_step, record.ew_peak_memory
    if not math.isfinite(t) and ew is not None:
        t = ew.ew_time_per_step if math.isfinite(ew.ew_time_per_step) else ew.time_per_step
    if not math.isfinite(m) and ew is not None:
        m = ew.ew_peak_memory if math.isfinite(ew.ew_peak_memory) else ew.peak_memory
    return t, m


def cost_ratios(record: RunRecord, records: Sequence[RunRecord]) -> tuple[float, float]:
    """The paired (time per step, peak memory) ratios of ``record`` to EW in the same run (NaN = n/a)."""
    t, m = ew_figures(record, records)
    return _ratio(record.time_per_step, t), _ratio(record.peak_memory, m)


def ratio_ci(values: Sequence[float], level: float = 0.95) -> RatioInterval:
    """Geometric mean of the positive finite ``values`` with the two-sided Student-t interval of the mean of
    their logarithms, exponentiated: ``(gm, low, high, n)``, always positive; NaN bounds for one value, all
    NaN for none."""
    logs = [math.log(v) for v in values if math.isfinite(v) and v > 0]
    n = len(logs)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = sum(logs) / n
    if n == 1:
        return math.exp(mean), math.nan, math.nan, 1
    sd = math.sqrt(sum((v - mean) ** 2 for v in logs) / (n - 1))
    half = t_quantile(n - 1, level) * sd / math.sqrt(n)
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half), n


def is_wide(iv: RatioInterval) -> bool:
    """A cost interval wider than its value (``high - low > value``): the figure is not to be trusted."""
    gm, low, high, _ = iv
    return all(math.isfinite(v) for v in (gm, low, high)) and high - low > gm


def _mean_weights(records: Sequence[RunRecord]) -> list[tuple[int, list[float]]]:
    by_step: dict[int, list[list[float]]] = {}
    for r in records:
        for step, w in r.weights:
            by_step.setdefault(int(step), []).append([float(v) for v in w])
    out = []
    for step in sorted(by_step):
        ws = [w for w in by_step[step] if len(w) == len(by_step[step][0])]
        out.append((step, [sum(col) / len(ws) for col in zip(*ws)]))
    return out


def _sort_key(s: MethodSummary) -> tuple[int, float, str]:
    d = s.delta_m[0]
    return (0, d, s.method) if math.isfinite(d) else (1, 0.0, s.method)


def summarise(records: Sequence[RunRecord]) -> list[MethodSummary]:
    """One :class:`MethodSummary` per method, sorted by mean Δm% (ascending; no finite Δm last)."""
    names = _check(records)
    methods: dict[str, list[RunRecord]] = {}
    for r in records:
        methods.setdefault(r.method, []).append(r)
    out = []
    for method, runs in methods.items():
        runs = sorted(runs, key=lambda r: r.seed)
        ratios = [cost_ratios(r, records) for r in runs]
        out.append(
            MethodSummary(
                method=method,
                seeds=[r.seed for r in runs],
                metrics={n: mean_ci(r.metrics[n] for r in runs) for n in names},
                delta_m=mean_ci(r.delta_m for r in runs),
                time_ratio=ratio_ci([t for t, _ in ratios]),
                memory_ratio=ratio_ci([m for _, m in ratios]),
                time_per_step=mean_ci(r.time_per_step for r in runs),
                peak_memory=mean_ci(r.peak_memory for r in runs),
                weights=_mean_weights(runs),
                errors=[f"seed {r.seed}: {r.error}" for r in runs if r.error],
                last_delta_m=mean_ci(r.last_delta_m for r in runs),
                epoch=mean_ci(float(r.epoch) if r.epoch > 0 else math.nan for r in runs),
            )
        )
    return sorted(out, key=_sort_key)


# --------------------------------------------------------------------------------------------- markdown
def _num(x: float, sig: int) -> str:
    """``x`` to ``sig`` significant digits, in positional notation below 1e6 (``8000`` not ``8e+03``)."""
    r = float(f"{x:.{sig}g}")
    if r == 0.0 or not 1e-4 <= abs(r) < 1e6:
        return f"{r:.{sig}g}"
    return str(int(r)) if r == int(r) else repr(r)


def _fmt(iv: Interval, scale: float = 1.0, digits: int = 4, suffix: str = "") -> str:
    mean, half, n = iv
    if n == 0 or not math.isfinite(mean):
        return "n/a"
    if abs(mean) < 1e-12:  # rounding noise around zero (a Δm of identical values)
        mean = 0.0
    text = _num(mean * scale, digits)
    if math.isfinite(half) and half <= 1e-9 * abs(mean):  # rounding noise of identical values
        half = 0.0
    if math.isfinite(half):
        text += f" ± {_num(half * scale, 2)}"
    return text + suffix


def _fmt_ratio(iv: RatioInterval) -> str:
    gm, low, high, n = iv
    if n == 0 or not math.isfinite(gm):
        return "n/a"
    text = f"{_num(gm, 3)}×"
    if math.isfinite(low) and math.isfinite(high):
        text += f" [{_num(low, 2)}, {_num(high, 2)}]"
        if is_wide(iv):
            text += " ⚠"
    return text


def collect_versions() -> dict[str, str]:
    """Python, platform, torch and molearn versions (and numpy / matplotlib when importable)."""
    import torch

    from .. import __version__

    versions = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "molearn": __version__,
        "torch": torch.__version__,
    }
    for mod in ("numpy", "matplotlib"):
        with contextlib.suppress(ImportError):
            versions[mod] = __import__(mod).__version__
    return versions


def _command_text(command: str | Sequence[str]) -> str:
    return command if isinstance(command, str) else shlex.join(command)


def _no_weights(records: Sequence[RunRecord]) -> list[str]:
    """Methods none of whose finished runs logged weights (they return an update direction, e.g. MoCo)."""
    by: dict[str, list[RunRecord]] = {}
    for r in records:
        by.setdefault(r.method, []).append(r)
    return [m for m, rs in by.items() if not any(r.weights for r in rs) and any(not r.error for r in rs)]


def format_markdown(
    records: Sequence[RunRecord],
    *,
    command: str | Sequence[str],
    versions: Mapping[str, str],
    notes: str | Sequence[str] = (),
    title: str = "molearn compare",
    summaries: Sequence[MethodSummary] | None = None,
    plots: Sequence[str] = (),
    published_rows: Sequence[Published] = (),
    schedule: str | None = None,
    schedule_detail: str = "",
    baselines: Mapping[str, float] | None = None,
) -> str:
    """``report.md``: notes, the table sorted by Δm% (mean ± 95 % CI), cost columns, command and versions.

    With more than :data:`INLINE_METRICS` metrics the per-metric values get their own table (one row per
    metric). The columns "Δm% last" and "epoch" appear when the records carry model selection. With
    ``published_rows`` a "Published results" section follows (:func:`published_section`; ``schedule`` is
    the run's schedule name, ``baselines`` the measured single-task values)."""
    sums = list(summaries) if summaries is not None else summarise(records)
    names = list(records[0].metrics)
    seeds = sorted({r.seed for r in records})
    selected = any(r.epochs > 0 for r in records)
    inline = len(names) <= INLINE_METRICS
    note_list = [notes] if isinstance(notes, str) else list(notes)
    lines = [f"# {title}", ""]
    for note in note_list:
        lines += [f"> **Note:** {note}", ""]
    lines += [
        f"{len(sums)} methods × seeds {', '.join(map(str, seeds))} ({len(records)} runs). "
        "Every cell is the mean ± half-width of the two-sided 95 % Student-t interval over seeds "
        "(no ± with one seed).",
        "",
        "Δm% = (100/M) Σ_j (−1)^{s_j} (M_j − B_j) / B_j over the M metrics against the single-task baselines "
        "B_j, s_j = 1 where higher is better (per metric, as in Nash-MTL, FAMO and FairGrad): "
        "**lower is better, negative = better than single-task.** Time per step and peak memory are paired "
        "ratios to EW measured in the same invocation (per seed), summarised by their geometric mean and "
        "[95 % interval] computed on the log scale; ⚠ marks an interval wider than its value (too noisy to "
        "read); n/a where EW was not measured.",
        "",
    ]
    if selected:
        lines += [
            "Metrics and Δm% are taken at each run's **selected epoch** (column 'epoch', mean over seeds; "
            "the best validation Δm% when there is a validation split, else the last); 'Δm% last' is Δm% at "
            "the last epoch.",
            "",
        ]
    header = ["rank", "method", "seeds", "Δm% ↓"]
    if selected:
        header += ["Δm% last", "epoch"]
    if inline:
        header += names
    header += ["time/step ÷ EW", "peak mem ÷ EW", "time/step (ms)", "peak mem (MiB)"]
    lines += ["| " + " | ".join(header) + " |", "|---:|:---|---:|" + "---:|" * (len(header) - 3)]
    for i, s in enumerate(sums, 1):
        cells = [str(i), s.method, str(len(s.seeds)), _fmt(s.delta_m, digits=3)]
        if selected:
            cells += [_fmt(s.last_delta_m, digits=3), _fmt((s.epoch[0], math.nan, s.epoch[2]), digits=3)]
        if inline:
            cells += [_fmt(s.metrics[n]) for n in names]
        cells += [
            _fmt_ratio(s.time_ratio),
            _fmt_ratio(s.memory_ratio),
            _fmt(s.time_per_step, scale=1e3, digits=3),
            _fmt(s.peak_memory, scale=1 / 2**20, digits=4),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if not inline:
        lines += ["## Per-metric test results", "", "| metric | " + " | ".join(s.method for s in sums) + " |"]
        lines.append("|:---|" + "---:|" * len(sums))
        for n in names:
            lines.append(f"| {n} | " + " | ".join(_fmt(s.metrics[n]) for s in sums) + " |")
        lines.append("")
    no_ew = [f"{r.method} (seed {r.seed})" for r in records if not math.isfinite(cost_ratios(r, records)[0])]
    if no_ew:
        lines += [f"Time ratio to EW n/a (no EW time measured): {', '.join(no_ew)}.", ""]
    wide = [s.method for s in sums if is_wide(s.time_ratio) or is_wide(s.memory_ratio)]
    if wide:
        lines += [f"⚠ Cost intervals wider than their value (noisy timing or memory): {', '.join(wide)}.", ""]
    absent = _no_weights(records)
    if absent:
        lines += [
            f"No task weights logged (the method returns an update direction, not weights; absent from the "
            f"weights plot): {', '.join(absent)}.",
            "",
        ]
    if published_rows:
        lines += published_section(
            sums, published_rows, schedule=schedule, schedule_detail=schedule_detail, baselines=baselines
        )
    errors = [(s.method, e) for s in sums for e in s.errors]
    if errors:
        lines += ["## Runs stopped early", "", *(f"- {m}, {e}" for m, e in errors), ""]
    if plots:
        lines += ["## Plots", "", *(f"![{p}]({p})" for p in plots), ""]
    lines += ["## Command", "", "```", _command_text(command), "```", "", "## Versions", ""]
    lines += ["| package | version |", "|:---|:---|", *(f"| {k} | {v} |" for k, v in versions.items()), ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- published
def _method_names() -> tuple[dict[str, str], dict[str, str]]:
    """(name or class name, lower case -> registry name; registry name -> display name, the class name
    the records use)."""
    from ..methods import registry

    keys: dict[str, str] = {}
    display: dict[str, str] = {STL: "STL"}
    for key, obj in registry().items():
        cls = getattr(obj, "__name__", key)
        keys[key.lower()] = key
        keys[str(cls).lower()] = key
        display[key] = str(cls)
    return keys, display


def _pub_value(p: Published) -> str:
    text = f"{p.value:g}"
    if p.spread is not None:
        text += f" ± {p.spread:g}"
    return text + (" %" if p.unit == "%" else "")


def _protocol_line(schedule: str | None, detail: str) -> str:
    """How far the run's schedule is from the published protocol (``full``; ``full (changed: ...)`` is
    the published one with changes)."""
    this = f" (this run: {detail})" if detail else ""
    if schedule is None:
        return f"The run's schedule is not recorded{this}: compare with care."
    if schedule in ("full", "full (changed: nothing)"):
        return (
            f"This run used the **full** schedule, the benchmark's published protocol{this}; the published "
            "numbers may still differ in data, implementation and seeds (each source's protocol is listed "
            "below)."
        )
    what = ", the published one with changes" if schedule.startswith("full") else ""
    return (
        f"This run used the **{schedule}** schedule{this}{what}: **not the published protocol**, so its "
        "numbers are not comparable to the published ones (each source's protocol is listed below); run "
        "with `--full` for the published protocol."
    )


def published_section(
    summaries: Sequence[MethodSummary],
    rows: Sequence[Published],
    *,
    schedule: str | None = None,
    schedule_detail: str = "",
    baselines: Mapping[str, float] | None = None,
) -> list[str]:
    """The "Published results" section of ``report.md``: published Δm% (source) beside the measured Δm%
    (mean ± 95 % CI) per method, methods run without a published row as "—" and published methods not
    run as "not run"; then the per-metric values (published as printed, ``unit="%"`` rows beside the
    measured value × 100; the single-task row beside ``baselines``), the sources with their protocols,
    and the notes. Markdown lines; empty without ``rows``."""
    if not rows:
        return []
    keys, display = _method_names()
    by_key = {keys.get(s.method.lower(), s.method.lower()): s for s in summaries}
    dm: dict[str, list[Published]] = {}
    per: dict[str, list[Published]] = {}
    for p in rows:
        (dm if p.metric == DELTA_M else per).setdefault(p.method, []).append(p)
    run_keys = list(by_key)
    extra = sorted(
        {p.method for p in rows} - set(run_keys) - {STL},
        key=lambda m: (min((p.value for p in dm.get(m, [])), default=math.inf), m),
    )
    lines = ["## Published results", "", _protocol_line(schedule, schedule_detail), ""]
    lines += [
        "| method | published Δm% ↓ | source | measured Δm% ↓ (mean ± 95 % CI) |",
        "|:---|---:|:---|---:|",
    ]
    for key in run_keys + extra:
        name = by_key[key].method if key in by_key else display.get(key, key)
        pub = dm.get(key, [])
        cells = [
            name,
            "; ".join(_pub_value(p) for p in pub) or "—",
            "; ".join(p.label for p in pub) or "—",
            _fmt(by_key[key].delta_m, digits=3) if key in by_key else "not run",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if per:
        run_metrics = {n.lower(): n for s in summaries for n in s.metrics}
        base = {k.lower(): v for k, v in (baselines or {}).items()}
        lines += [
            "Per-metric values (published as printed; measured: mean ± 95 % CI over seeds, single-task: the "
            "run's baselines; % rows show the measured fraction × 100):",
            "",
            "| method | metric | published | measured | source |",
            "|:---|:---|---:|---:|:---|",
        ]
        for key in [STL, *run_keys, *extra]:
            for p in per.get(key, []):
                name = by_key[key].method if key in by_key else display.get(key, key)
                scale = 100.0 if p.unit == "%" else 1.0
                metric = run_metrics.get(p.metric.lower())
                if metric is None:
                    measured = "not measured"
                elif key == STL:
                    v = base.get(p.metric.lower(), math.nan)
                    measured = _fmt((v, math.nan, 1 if math.isfinite(v) else 0), scale=scale)
                elif key in by_key:
                    measured = _fmt(by_key[key].metrics[metric], scale=scale)
                else:
                    measured = "not run"
                if measured not in ("n/a", "not measured", "not run") and p.unit == "%":
                    measured += " %"
                lines.append(f"| {name} | {p.metric} | {_pub_value(p)} | {measured} | {p.label} |")
        lines.append("")
    sources: dict[tuple[str, str], set[str]] = {}
    notes: dict[tuple[str, str], list[str]] = {}
    for p in rows:
        sources.setdefault((p.label, p.source), set()).add(p.protocol)
        if p.note:
            methods = notes.setdefault((p.label, p.note), [])
            if display.get(p.method, p.method) not in methods:
                methods.append(display.get(p.method, p.method))
    lines += ["Sources and their protocols:", ""]
    for (label, source), protocols in sources.items():
        lines.append(f"- **{label}**: {source}. Protocol: {'; '.join(sorted(protocols))}.")
    lines.append("")
    if notes:
        lines += ["Notes:", ""]
        lines += [f"- {', '.join(ms)} ({label}): {note}." for (label, note), ms in notes.items()]
        lines.append("")
    return lines


# --------------------------------------------------------------------------------------------- runs.csv
_FIXED = ("method", "seed", "delta_m", "time_per_step", "peak_memory", "ew_time_per_step", "ew_peak_memory",
          "time_ratio", "memory_ratio", "steps", "epoch", "epochs", "last_delta_m")  # fmt: skip
_METRIC_PREFIX = "metric:"
_LAST_PREFIX = "last:"


def write_runs_csv(records: Sequence[RunRecord], path: str | os.PathLike[str]) -> None:
    """``runs.csv``: one row per run; floats at full precision (``repr``), metrics as ``metric:<name>``
    columns, the final weights as ``w_final_<i>`` and the whole weight history as JSON in ``weights``."""
    names = _check(records)
    k = max((len(w) for r in records for _, w in r.weights), default=0)
    cols = [*_FIXED, *(_METRIC_PREFIX + n for n in names), *(_LAST_PREFIX + n for n in names)]
    cols += [f"w_final_{i}" for i in range(k)]
    cols += ["weights", "error"]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for r in records:
            t_ratio, m_ratio = cost_ratios(r, records)
            final = r.weights[-1][1] if r.weights else []
            row: list[Any] = [r.method, r.seed]
            row += [repr(float(v)) for v in (r.delta_m, r.time_per_step, r.peak_memory, r.ew_time_per_step,
                                              r.ew_peak_memory, t_ratio, m_ratio)]  # fmt: skip
            row += [r.steps, r.epoch, r.epochs, repr(float(r.last_delta_m))]
            row += [repr(float(r.metrics[n])) for n in names]
            row += [repr(float(r.last_metrics[n])) if n in r.last_metrics else "" for n in names]
            row += [repr(float(final[i])) if i < len(final) else "" for i in range(k)]
            row.append(json.dumps([[int(s), [float(v) for v in ws]] for s, ws in r.weights]))
            row.append(r.error)
            w.writerow(row)


def read_runs_csv(path: str | os.PathLike[str]) -> list[RunRecord]:
    """The records back from a ``runs.csv`` written by :func:`write_runs_csv` (ratio columns are derived
    and not read)."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    out = []
    for row in rows:
        weights_json = json.loads(row["weights"]) if row.get("weights") else []
        out.append(
            RunRecord(
                method=row["method"],
                seed=int(row["seed"]),
                metrics={
                    c[len(_METRIC_PREFIX) :]: float(v) for c, v in row.items() if c.startswith(_METRIC_PREFIX)
                },
                delta_m=float(row["delta_m"]),
                time_per_step=float(row["time_per_step"]),
                peak_memory=float(row["peak_memory"]),
                ew_time_per_step=float(row["ew_time_per_step"]),
                ew_peak_memory=float(row["ew_peak_memory"]),
                weights=[(int(s), [float(v) for v in ws]) for s, ws in weights_json],
                steps=int(row["steps"]),
                error=row.get("error", ""),
                epoch=int(row.get("epoch") or 0),
                epochs=int(row.get("epochs") or 0),
                last_metrics={
                    c[len(_LAST_PREFIX) :]: float(v)
                    for c, v in row.items()
                    if c.startswith(_LAST_PREFIX) and v not in (None, "")
                },
                last_delta_m=float(row.get("last_delta_m") or "nan"),
            )
        )
    return out


# --------------------------------------------------------------------------------------------- plots
def _half(iv: Interval) -> float:
    return iv[1] if math.isfinite(iv[1]) else 0.0


def _renderer(fig: Any) -> Any:
    """A renderer for measuring text (the Agg canvas; attaching it changes nothing else)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    return canvas.get_renderer()


def _overlap(a: Any, b: Any) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w * h if w > 0 and h > 0 else 0.0


def place_labels(
    ax: Any, points: Sequence[tuple[float, float]], texts: Sequence[str], fontsize: float = 8
) -> list[Any]:
    """Annotate each point with its text at the first of a ring of offsets (growing radius) where the label
    overlaps no label placed before and no point, staying inside the axes; when none is free, the offset of
    least overlap. Call after the axes' limits are final. Returns the annotations."""
    from matplotlib.transforms import Bbox

    fig = ax.figure
    ax.get_xlim(), ax.get_ylim()  # settle autoscaling before transforming
    renderer = _renderer(fig)
    if fig.get_layout_engine() is not None:
        fig.get_layout_engine().execute(fig)
    axes_box = ax.get_window_extent(renderer)
    trans = ax.transData
    marks = []
    for x, y in points:
        px, py = trans.transform((x, y))
        marks.append(Bbox.from_bounds(px - 3, py - 3, 6, 6))
    placed: list[Any] = []
    out = []
    dirs = [(1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1)]
    for (x, y), text in zip(points, texts):
        best = None
        for radius in (5, 12, 20, 30, 42):
            for dx, dy in dirs:
                ha = "left" if dx > 0 else "right" if dx < 0 else "center"
                va = "bottom" if dy > 0 else "top" if dy < 0 else "center"
                ann = ax.annotate(text, (x, y), xytext=(dx * radius, dy * radius), textcoords="offset points",
                                  ha=ha, va=va, fontsize=fontsize)  # fmt: skip
                ann.set_in_layout(False)
                box = ann.get_window_extent(renderer)
                cost = sum(_overlap(box, b) for b in placed) + sum(_overlap(box, m) for m in marks)
                outside = (
                    (box.x0 < axes_box.x0)
                    + (box.x1 > axes_box.x1)
                    + (box.y0 < axes_box.y0)
                    + (box.y1 > axes_box.y1)
                )
                cost += 1e6 * outside
                if best is None or cost < best[0]:
                    if best is not None:
                        best[1].remove()
                    best = (cost, ann, box)
                else:
                    ann.remove()
                if cost == 0:
                    break
            if best is not None and best[0] == 0:
                break
        assert best is not None
        placed.append(best[2])
        out.append(best[1])
    return out


def plot_tasks(
    summaries: Sequence[MethodSummary],
    x: str,
    y: str,
    path: str | os.PathLike[str],
    *,
    baselines: Mapping[str, float] | None = None,
    labels: Mapping[str, str] | None = None,
) -> Any:
    """Metric ``x`` vs metric ``y`` per method (mean, 95 % CI bars both ways), the single-task point
    (``baselines``) as a star, axes labelled by metric (``labels``: name -> axis label). Returns the
    figure."""
    labels = labels or {}
    Figure = figure_class("task-1 vs task-2 plot")
    fig = Figure(figsize=(6.4, 5.2), layout="constrained")
    ax = fig.subplots()
    pts, names = [], []
    for i, s in enumerate(summaries):  # colour by rank, the same in every plot
        mx, my = s.metrics[x], s.metrics[y]
        if not (math.isfinite(mx[0]) and math.isfinite(my[0])):
            continue
        ax.errorbar(mx[0], my[0], xerr=_half(mx), yerr=_half(my), fmt="o", capsize=3, label=s.method,
                    color=f"C{i % 10}")  # fmt: skip
        pts.append((mx[0], my[0]))
        names.append(s.method)
    if baselines is not None and all(math.isfinite(baselines.get(k, math.nan)) for k in (x, y)):
        ax.plot(
            [baselines[x]], [baselines[y]], marker="*", ms=14, color="black", ls="none", label="single-task"
        )
        pts.append((baselines[x], baselines[y]))
        names.append("single-task")
    ax.set_xlabel(labels.get(x, x))
    ax.set_ylabel(labels.get(y, y))
    ax.set_title(f"{x} vs {y} (mean ± 95% CI over seeds)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.margins(0.12)
    if pts:
        ax.legend(fontsize=7, loc="best")
        place_labels(ax, pts, names)
    fig.savefig(path, dpi=110)
    return fig


def plot_weights(
    summaries: Sequence[MethodSummary],
    path: str | os.PathLike[str],
    task_names: Sequence[str] = (),
    absent: Sequence[str] = (),
) -> bool:
    """Task weights over training, one panel per method with weights (mean over seeds); methods that logged
    none (``absent``: they return a direction, e.g. MoCo) are named in the figure. False (nothing written)
    when no method logged weights."""
    with_w = [s for s in summaries if s.weights]
    if not with_w:
        return False
    Figure = figure_class("weights plot")
    cols = min(3, len(with_w))
    rows = math.ceil(len(with_w) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.0 * rows + (0.4 if absent else 0)), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, s in zip((a for row in axes for a in row), with_w):
        steps = [st for st, _ in s.weights]
        k = len(s.weights[0][1])
        for i in range(k):
            label = task_names[i] if i < len(task_names) else f"task {i + 1}"
            ax.plot(steps, [w[i] for _, w in s.weights], label=label)
        top = max((v for _, w in s.weights for v in w if math.isfinite(v)), default=1.0)
        low = min((v for _, w in s.weights for v in w if math.isfinite(v)), default=0.0)
        ax.set_ylim(min(0.0, low) * 1.1, (top if top > 0 else 1.0) * 1.1)  # from 0: constant looks constant
        ax.set_title(f"{s.method} ({len(s.seeds)} seeds)", fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("task weight")
        ax.grid(alpha=0.3)
        if k <= 10:
            ax.legend(fontsize=7)
    for ax in [a for row in axes for a in row][len(with_w) :]:
        ax.set_visible(False)
    title = "task weights over training (mean over seeds)"
    if absent:
        title += f"\nnot shown, no weights (they return an update direction): {', '.join(absent)}"
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110)
    return True


def plot_cost(summaries: Sequence[MethodSummary], path: str | os.PathLike[str]) -> Any:
    """Time per step relative to EW (log scale; geometric mean and its 95 % interval) vs Δm% per method
    (mean, 95 % CI); an interval wider than its value is drawn dashed and marked ⚠. Methods with either
    n/a are left out. Returns the figure."""
    Figure = figure_class("time vs Δm plot")
    fig = Figure(figsize=(6.4, 4.8), layout="constrained")
    ax = fig.subplots()
    pts, names = [], []
    for i, s in enumerate(summaries):
        gm, low, high, _ = s.time_ratio
        if not (math.isfinite(gm) and math.isfinite(s.delta_m[0])):
            continue
        xerr = [[gm - low], [high - gm]] if math.isfinite(low) and math.isfinite(high) else None
        bars = ax.errorbar(gm, s.delta_m[0], xerr=xerr, yerr=_half(s.delta_m), fmt="o", capsize=3,
                           color=f"C{i % 10}")  # fmt: skip
        wide = is_wide(s.time_ratio)
        if wide and xerr is not None:
            bars.lines[2][0].set_linestyle("--")  # the x (cost) bars
        pts.append((gm, s.delta_m[0]))
        names.append(s.method + (" ⚠" if wide else ""))
    ax.set_xscale("log")
    ax.axhline(0.0, color="0.5", lw=0.8)
    ax.axvline(1.0, color="0.7", lw=0.8, ls=":")
    ax.set_xlabel("time per step ÷ EW (same seed; log scale, geometric mean)")
    ax.set_ylabel("Δm% (lower is better)")
    ax.set_title("cost vs Δm% (95% intervals over seeds; ⚠ interval wider than its value)", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.margins(0.15)
    if pts:
        place_labels(ax, pts, names)
    fig.savefig(path, dpi=110)
    return fig


# --------------------------------------------------------------------------------------------- all outputs
def write_report(
    records: Sequence[RunRecord],
    out: str | os.PathLike[str],
    *,
    command: str | Sequence[str],
    versions: Mapping[str, str] | None = None,
    notes: str | Sequence[str] = (),
    title: str = "molearn compare",
    plot: bool = True,
    plot_metrics: tuple[str, str] | None = None,
    task_names: Sequence[str] = (),
    baselines: Mapping[str, float] | None = None,
    metric_labels: Mapping[str, str] | None = None,
    benchmark: str | None = None,
    schedule: str | None = None,
    schedule_detail: str = "",
) -> dict[str, Path]:
    """Write ``report.md``, ``runs.csv`` and (``plot``) ``tasks.png`` (first two metrics, or
    ``plot_metrics``, against each other; skipped with fewer than two metrics), ``weights.png`` (skipped
    when no run logged weights) and ``cost.png`` into ``out``; returns the paths written by name.

    ``command`` is the exact command line (a string, or argv joined with shell quoting), ``versions``
    package -> version (default :func:`collect_versions`), ``notes`` one or more lines shown at the top
    (e.g. "short schedule: ..."), ``baselines`` the single-task values (the star in ``tasks.png``) and
    ``metric_labels`` the axis label of each metric. ``benchmark`` (a built-in name) adds the published
    results of that benchmark beside the measured ones, with ``schedule`` (the run's schedule name, e.g.
    ``"default"``) and ``schedule_detail`` (its description) saying how far the run is from the published
    protocol.
    """
    names = _check(records)
    if plot_metrics is not None:
        missing = [m for m in plot_metrics if m not in names]
        if missing:
            raise ValueError(f"plot_metrics {missing} are not among the records' metrics {names}")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    sums = summarise(records)
    paths: dict[str, Path] = {"report.md": out_dir / "report.md", "runs.csv": out_dir / "runs.csv"}
    write_runs_csv(records, paths["runs.csv"])
    if plot:
        pair = plot_metrics if plot_metrics is not None else (tuple(names[:2]) if len(names) >= 2 else None)
        if pair is not None:
            paths["tasks.png"] = out_dir / "tasks.png"
            plot_tasks(sums, pair[0], pair[1], paths["tasks.png"], baselines=baselines, labels=metric_labels)
        if plot_weights(sums, out_dir / "weights.png", task_names, absent=_no_weights(records)):
            paths["weights.png"] = out_dir / "weights.png"
        paths["cost.png"] = out_dir / "cost.png"
        plot_cost(sums, paths["cost.png"])
    md = format_markdown(
        records,
        command=command,
        versions=versions if versions is not None else collect_versions(),
        notes=notes,
        title=title,
        summaries=sums,
        plots=[name for name in paths if name.endswith(".png")],
        published_rows=published(benchmark) if benchmark is not None else (),
        schedule=schedule,
        schedule_detail=schedule_detail,
        baselines=baselines,
    )
    paths["report.md"].write_text(md)
    return paths
