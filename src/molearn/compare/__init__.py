"""`molearn compare`: train several methods on a multi-task problem over seeds and report Δm, per-task
metrics, time and memory relative to equal weighting, with confidence intervals and plots.
"""

from .._stats import mean_ci
from ._report import (
    EW_NAME,
    MethodSummary,
    RunRecord,
    collect_versions,
    cost_ratios,
    ew_figures,
    format_markdown,
    plot_cost,
    plot_tasks,
    plot_weights,
    read_runs_csv,
    summarise,
    write_report,
    write_runs_csv,
)
from ._run import (
    DEFAULT_METHODS,
    METHOD_KWARGS,
    SCHEDULES,
    CompareConfig,
    RunSpec,
    Schedule,
    add_arguments,
    load_config,
    run,
    run_cli,
    run_one,
)

__all__ = [
    "DEFAULT_METHODS",
    "EW_NAME",
    "METHOD_KWARGS",
    "SCHEDULES",
    "CompareConfig",
    "MethodSummary",
    "RunRecord",
    "RunSpec",
    "Schedule",
    "add_arguments",
    "collect_versions",
    "cost_ratios",
    "ew_figures",
    "format_markdown",
    "load_config",
    "mean_ci",
    "plot_cost",
    "plot_tasks",
    "plot_weights",
    "read_runs_csv",
    "run",
    "run_cli",
    "run_one",
    "summarise",
    "write_report",
    "write_runs_csv",
]
