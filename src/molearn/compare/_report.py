"""The comparison report of ``molearn compare``: per-method mean ± 95 % CI over seeds, Δm%, cost relative
to EW, written as ``report.md``, ``runs.csv`` and PNG plots.

Input: one :class:`RunRecord` per (method, seed) run. Aggregation (:func:`summarise`):

- every per-task metric, Δm% and the absolute time per step and peak memory: mean ± half-width of the
  two-sided 95 % Student-t interval over the seeds (:func:`molearn._stats.mean_ci`; non-finite values,
  e.g. of a diverged run, are left out and the count of seeds used is reported);
- cost relative to EW: **per seed** the paired ratio ``time_per_step / ew_time_per_step`` (and the same for
  peak memory), with EW measured in the same run (same process, same machine state), then mean ± CI of the
  ratios. The EW figures come from the record's own ``ew_*`` fields; where those are missing (NaN), from
  the ``"EW"`` record of the same seed when there is one. **With neither, the ratio is "n/a"** (NaN in
  ``runs.csv``, "n/a" in the table, and the report says which runs lack it) rather than an error: peak
  memory in particular is not measurable on every device.

Methods are sorted by mean Δm% (lower is better, see :mod:`molearn.metrics`), methods without a finite
Δm last, ties by name.
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
from .._stats import mean_ci

__all__ = [
    "EW_NAME",
    "MethodSummary",
    "RunRecord",
    "collect_versions",
    "cost_ratios",
    "ew_figures",
    "format_markdown",
    "plot_cost",
    "plot_tasks",
    "plot_weights",
    "read_runs_csv",
    "summarise",
    "write_report",
    "write_runs_csv",
]

#: the method name whose records supply EW's cost when a record has no ``ew_*`` figures of its own
EW_NAME = "EW"

Interval = tuple[float, float, int]  # (mean, 95 % CI half-width, number of finite values)


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


@dataclass
class MethodSummary:
    """One method over its seeds: every figure as ``(mean, 95 % CI half-width, n finite)``; ``weights``
    is the mean over seeds of the weights at each logged step."""

    method: str
    seeds: list[int]
    metrics: dict[str, Interval]
    delta_m: Interval
    time_ratio: Interval
    memory_ratio: Interval
    time_per_step: Interval
    peak_memory: Interval
    weights: list[tuple[int, list[float]]]
    errors: list[str]


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
                time_ratio=mean_ci(t for t, _ in ratios),
                memory_ratio=mean_ci(m for _, m in ratios),
                time_per_step=mean_ci(r.time_per_step for r in runs),
                peak_memory=mean_ci(r.peak_memory for r in runs),
                weights=_mean_weights(runs),
                errors=[f"seed {r.seed}: {r.error}" for r in runs if r.error],
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
    text = _num(mean * scale, digits)
    if math.isfinite(half):
        text += f" ± {_num(half * scale, 2)}"
    return text + suffix


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


def format_markdown(
    records: Sequence[RunRecord],
    *,
    command: str | Sequence[str],
    versions: Mapping[str, str],
    notes: str | Sequence[str] = (),
    title: str = "molearn compare",
    summaries: Sequence[MethodSummary] | None = None,
    plots: Sequence[str] = (),
) -> str:
    """``report.md``: notes, the table sorted by Δm% (mean ± 95 % CI), cost columns, command and versions."""
    sums = list(summaries) if summaries is not None else summarise(records)
    names = list(records[0].metrics)
    seeds = sorted({r.seed for r in records})
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
        "ratios to EW measured in the same run (per seed, then averaged); n/a where EW was not measured.",
        "",
    ]
    header = ["rank", "method", "seeds", "Δm% ↓", *names, "time/step ÷ EW", "peak mem ÷ EW", "time/step (ms)",
              "peak mem (MiB)"]  # fmt: skip
    lines += ["| " + " | ".join(header) + " |", "|---:|:---|---:|" + "---:|" * (len(header) - 3)]
    for i, s in enumerate(sums, 1):
        cells = [
            str(i),
            s.method,
            str(len(s.seeds)),
            _fmt(s.delta_m, digits=3),
            *(_fmt(s.metrics[n]) for n in names),
            _fmt(s.time_ratio, digits=3, suffix="×"),
            _fmt(s.memory_ratio, digits=3, suffix="×"),
            _fmt(s.time_per_step, scale=1e3, digits=3),
            _fmt(s.peak_memory, scale=1 / 2**20, digits=4),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    no_ew = [f"{r.method} (seed {r.seed})" for r in records if not math.isfinite(cost_ratios(r, records)[0])]
    if no_ew:
        lines += [f"Time ratio to EW n/a (no EW time measured): {', '.join(no_ew)}.", ""]
    errors = [(s.method, e) for s in sums for e in s.errors]
    if errors:
        lines += ["## Runs stopped early", "", *(f"- {m}, {e}" for m, e in errors), ""]
    if plots:
        lines += ["## Plots", "", *(f"![{p}]({p})" for p in plots), ""]
    lines += ["## Command", "", "```", _command_text(command), "```", "", "## Versions", ""]
    lines += ["| package | version |", "|:---|:---|", *(f"| {k} | {v} |" for k, v in versions.items()), ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- runs.csv
_FIXED = ("method", "seed", "delta_m", "time_per_step", "peak_memory", "ew_time_per_step", "ew_peak_memory",
          "time_ratio", "memory_ratio", "steps")  # fmt: skip
_METRIC_PREFIX = "metric:"


def write_runs_csv(records: Sequence[RunRecord], path: str | os.PathLike[str]) -> None:
    """``runs.csv``: one row per run; floats at full precision (``repr``), metrics as ``metric:<name>``
    columns, the final weights as ``w_final_<i>`` and the whole weight history as JSON in ``weights``."""
    names = _check(records)
    k = max((len(w) for r in records for _, w in r.weights), default=0)
    cols = [*_FIXED, *(_METRIC_PREFIX + n for n in names), *(f"w_final_{i}" for i in range(k))]
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
            row.append(r.steps)
            row += [repr(float(r.metrics[n])) for n in names]
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
            )
        )
    return out


# --------------------------------------------------------------------------------------------- plots
def _half(iv: Interval) -> float:
    return iv[1] if math.isfinite(iv[1]) else 0.0


def plot_tasks(summaries: Sequence[MethodSummary], x: str, y: str, path: str | os.PathLike[str]) -> None:
    """Metric ``x`` vs metric ``y`` per method (mean, 95 % CI bars both ways)."""
    Figure = figure_class("task-1 vs task-2 plot")
    fig = Figure(figsize=(6, 5), layout="constrained")
    ax = fig.subplots()
    for i, s in enumerate(summaries):  # colour by rank, the same in every plot
        mx, my = s.metrics[x], s.metrics[y]
        if not (math.isfinite(mx[0]) and math.isfinite(my[0])):
            continue
        ax.errorbar(
            mx[0],
            my[0],
            xerr=_half(mx),
            yerr=_half(my),
            fmt="o",
            capsize=3,
            label=s.method,
            color=f"C{i % 10}",
        )
        ax.annotate(s.method, (mx[0], my[0]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(f"{x} vs {y} (mean ± 95% CI over seeds)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=110)


def plot_weights(
    summaries: Sequence[MethodSummary], path: str | os.PathLike[str], task_names: Sequence[str] = ()
) -> bool:
    """Task weights over training, one panel per method with weights (mean over seeds); False (nothing
    written) when no method logged weights."""
    with_w = [s for s in summaries if s.weights]
    if not with_w:
        return False
    Figure = figure_class("weights plot")
    cols = min(3, len(with_w))
    rows = math.ceil(len(with_w) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.0 * rows), layout="constrained")
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
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in [a for row in axes for a in row][len(with_w) :]:
        ax.set_visible(False)
    fig.suptitle("task weights over training (mean over seeds)", fontsize=10)
    fig.savefig(path, dpi=110)
    return True


def plot_cost(summaries: Sequence[MethodSummary], path: str | os.PathLike[str]) -> None:
    """Time per step relative to EW vs Δm% per method (mean, 95 % CI bars); methods with either n/a are
    left out."""
    Figure = figure_class("time vs Δm plot")
    fig = Figure(figsize=(6, 4.5), layout="constrained")
    ax = fig.subplots()
    for i, s in enumerate(summaries):
        if not (math.isfinite(s.time_ratio[0]) and math.isfinite(s.delta_m[0])):
            continue
        ax.errorbar(
            s.time_ratio[0],
            s.delta_m[0],
            xerr=_half(s.time_ratio),
            yerr=_half(s.delta_m),
            fmt="o",
            capsize=3,
            color=f"C{i % 10}",
        )
        ax.annotate(s.method, (s.time_ratio[0], s.delta_m[0]), textcoords="offset points", xytext=(4, 4),
                    fontsize=8)  # fmt: skip
    ax.axhline(0.0, color="0.5", lw=0.8)
    ax.set_xlabel("time per step ÷ EW (same run)")
    ax.set_ylabel("Δm% (lower is better)")
    ax.set_title("cost vs Δm% (mean ± 95% CI over seeds)", fontsize=10)
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=110)


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
) -> dict[str, Path]:
    """Write ``report.md``, ``runs.csv`` and (``plot``) ``tasks.png`` (first two metrics, or
    ``plot_metrics``, against each other; skipped with fewer than two metrics), ``weights.png`` (skipped
    when no run logged weights) and ``cost.png`` into ``out``; returns the paths written by name.

    ``command`` is the exact command line (a string, or argv joined with shell quoting), ``versions``
    package -> version (default :func:`collect_versions`), ``notes`` one or more lines shown at the top
    (e.g. "short schedule: ...").
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
            plot_tasks(sums, pair[0], pair[1], paths["tasks.png"])
        if plot_weights(sums, out_dir / "weights.png", task_names):
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
    )
    paths["report.md"].write_text(md)
    return paths
