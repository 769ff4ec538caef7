"""``molearn compare``: train several methods on a multi-task problem over seeds and report Δm, per-task
metrics, time and memory relative to equal weighting, with confidence intervals and plots.

A problem is a :class:`Benchmark` (data splits, a model with shared and task-specific parameters, the K
losses, the metrics with their direction and weight in Δm, optional single-task baselines, a default
:class:`Schedule`); the built-in ones are Multi-MNIST, Multi-Fashion and Multi-(Fashion+MNIST)
(:func:`multi_benchmark`), QM9 (:func:`qm9_benchmark`), NYUv2 and Cityscapes (:func:`nyuv2_benchmark`,
:func:`cityscapes_benchmark`), CelebA-40 (:func:`celeba_benchmark`) and Office-31 / Office-Home
(:func:`office_benchmark`), each reported beside its published numbers (:func:`published`). See
``docs/compare.md`` and ``docs/benchmarks.md``.
"""

from .._stats import mean_ci
from ..metrics import MeanMeter, Meter
from ._benchmark import (
    OPTIMIZERS,
    SCHEDULERS,
    Benchmark,
    BenchmarkError,
    Metric,
    Schedule,
    builtin_benchmarks,
    load_benchmark,
)
from ._config import CONFIG_KEYS, ConfigError, check_method, check_methods, load_config
from ._multi import multi_benchmark
from ._published import PUBLISHED, STL, Published, published, published_benchmarks
from ._qm9 import qm9_benchmark
from ._report import (
    EW_NAME,
    MethodSummary,
    RunRecord,
    collect_versions,
    cost_ratios,
    ew_figures,
    format_markdown,
    place_labels,
    plot_cost,
    plot_tasks,
    plot_weights,
    published_section,
    ratio_ci,
    read_runs_csv,
    summarise,
    write_report,
    write_runs_csv,
)
from ._run import (
    DEFAULT_BENCHMARK,
    DEFAULT_METHODS,
    CompareConfig,
    CompareResult,
    RunSpec,
    add_arguments,
    check_benchmark,
    compare,
    resolve_config,
    run,
    run_cli,
    run_one,
)
from ._select import EpochScores, select_epoch, select_single_task_epoch
from ._vision import celeba_benchmark, cityscapes_benchmark, nyuv2_benchmark, office_benchmark

__all__ = [
    "CONFIG_KEYS",
    "DEFAULT_BENCHMARK",
    "DEFAULT_METHODS",
    "EW_NAME",
    "OPTIMIZERS",
    "PUBLISHED",
    "SCHEDULERS",
    "STL",
    "Benchmark",
    "BenchmarkError",
    "CompareConfig",
    "CompareResult",
    "ConfigError",
    "EpochScores",
    "MeanMeter",
    "Meter",
    "MethodSummary",
    "Metric",
    "Published",
    "RunRecord",
    "RunSpec",
    "Schedule",
    "add_arguments",
    "builtin_benchmarks",
    "celeba_benchmark",
    "check_benchmark",
    "check_method",
    "check_methods",
    "cityscapes_benchmark",
    "collect_versions",
    "compare",
    "cost_ratios",
    "ew_figures",
    "format_markdown",
    "load_benchmark",
    "load_config",
    "mean_ci",
    "multi_benchmark",
    "nyuv2_benchmark",
    "office_benchmark",
    "place_labels",
    "plot_cost",
    "plot_tasks",
    "plot_weights",
    "published",
    "published_benchmarks",
    "published_section",
    "qm9_benchmark",
    "ratio_ci",
    "read_runs_csv",
    "resolve_config",
    "run",
    "run_cli",
    "run_one",
    "select_epoch",
    "select_single_task_epoch",
    "summarise",
    "write_report",
    "write_runs_csv",
]
