"""The ``molearn`` command line: ``molearn <command> [options]`` (``molearn --help`` lists the commands).

Each command is a :class:`Command` in :data:`COMMANDS`: a name, a help line, a function that adds
its options to an ``argparse`` sub-parser and a function that runs it and returns the exit status.
A new command (``compare``, ``pareto``, ...) is one more entry.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ._options import did_you_mean, parse_methods, parse_seeds

__all__ = ["COMMANDS", "Command", "build_parser", "did_you_mean", "main", "parse_methods", "parse_seeds"]


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# ------------------------------------------------------------------------------------------------ toy
def _parse_set(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["cagrad.c=0.5", "famo.gamma=1e-3"]`` -> ``{"cagrad": {"c": 0.5}, "famo": {"gamma": 0.001}}``."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        head, sep, raw = item.partition("=")
        method, dot, key = head.partition(".")
        if not sep or not dot or not method or not key:
            raise argparse.ArgumentTypeError(f"--set expects METHOD.OPTION=VALUE, got {item!r}")
        try:
            value: Any = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        out.setdefault(method, {})[key] = value
    return out


def _time_scale(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0 or 'auto', got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0 or 'auto', got {text!r}")
    return value


def _toy_arguments(p: argparse.ArgumentParser) -> None:
    from ..bench.toy import DEFAULT_METHODS, VARIANTS

    p.add_argument("--out", default="out/toy", help="output folder (default: out/toy)")
    p.add_argument(
        "--variant",
        choices=sorted(VARIANTS),
        default="nash",
        help="published set-up: " + "; ".join(f"{k}: {v.description}" for k, v in VARIANTS.items()),
    )
    p.add_argument(
        "--methods",
        default=None,
        help="comma-separated method names, or 'all' for every registered method "
        f"(default: those registered of {','.join(DEFAULT_METHODS)})",
    )
    p.add_argument(
        "--time-scale",
        type=_time_scale,
        default="auto",
        metavar="K|auto",
        help="run the paper's Adam schedule K times coarser (lr*K, steps/K, betas**K); 'auto' (default): "
        "the finest of 1, 2, 5, 10, 20, 35 (at most the variant's checked limit: nash/famo 10, cagrad 5, "
        "sdmgrad 1) whose measured cost fits --budget",
    )
    p.add_argument("--budget", type=float, default=240.0, help="seconds aimed at by --time-scale auto (240)")
    p.add_argument("--paper", action="store_true", help="the paper's exact schedule (= --time-scale 1)")
    p.add_argument("--iterations", type=int, default=None, help="Adam steps per start")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (overrides the schedule)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tol", type=float, default=0.05, help="distance to the Pareto set counted as reached")
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="worker processes, one (method, start) pair each (default: the number of CPUs)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="METHOD.OPTION=VALUE",
        help="method option on top of the variant's, e.g. --set cagrad.c=0.5 (repeatable)",
    )
    p.add_argument("--no-plot", action="store_true", help="skip trajectories.png (no matplotlib needed)")


def _toy_run(args: argparse.Namespace) -> int:
    from ..bench import toy

    if args.paper and args.time_scale not in ("auto", 1.0):
        print("molearn toy: --paper and --time-scale disagree", file=sys.stderr)
        return 2
    scale = 1.0 if args.paper else args.time_scale
    methods = None if args.methods is None else [m.strip() for m in args.methods.split(",") if m.strip()]
    try:
        overrides = _parse_set(args.set)
    except argparse.ArgumentTypeError as exc:
        print(f"molearn toy: {exc}", file=sys.stderr)
        return 2
    jobs = args.jobs if args.jobs is not None else (os.cpu_count() or 1)
    t0 = time.perf_counter()
    try:
        result = toy.run(
            args.variant,
            methods,
            iterations=args.iterations,
            lr=args.lr,
            time_scale=scale,
            budget=args.budget,
            seed=args.seed,
            tol=args.tol,
            jobs=jobs,
            overrides=overrides,
            log=sys.stderr,
        )
    except (KeyError, ValueError) as exc:
        print(f"molearn toy: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    paths = toy.write_outputs(result, args.out, plot=not args.no_plot)
    print(toy.format_markdown(result))
    print(
        f"molearn toy: wrote {', '.join(str(p) for p in paths.values())} in {time.perf_counter() - t0:.1f} s",
        file=sys.stderr,
    )
    return 1 if any(r.error for r in result.results) else 0


def _experiment(name: str, module: str, help: str) -> Command:
    """A command whose module (absolute, or under :mod:`molearn.bench`) provides ``add_arguments`` and
    ``run_cli`` (imported only when the command line is built or run)."""

    def load() -> Any:
        return importlib.import_module(module if "." in module else f"molearn.bench.{module}")

    return Command(name, help, lambda p: load().add_arguments(p), lambda args: int(load().run_cli(args)))


COMMANDS: list[Command] = [
    _experiment(
        "compare",
        "molearn.compare",
        "train and compare methods on real multi-task data: Δm, per-task metrics, time and memory vs EW, "
        "mean ± CI over seeds (report.md, plots, runs.csv)",
    ),
    _experiment(
        "pareto",
        "molearn.cli._pareto",
        "preference sweeps on test problems with known fronts: front plots, hypervolume and IGD vs the true "
        "front and vs NSGA-II",
    ),
    Command(
        "toy",
        "the CAGrad 2-D two-task toy: trajectories of several methods from the papers' starts",
        _toy_arguments,
        _toy_run,
    ),
    _experiment(
        "stochastic-toy",
        "stochastic_toy",
        "the stochastic 2-D toy (MoDo/MoCo papers): Pareto-stationarity over iterations, mean ± CI",
    ),
    _experiment(
        "modo-tradeoff",
        "modo_tradeoff",
        "MoDo's three-objective Fashion-MNIST experiment: optimisation, generalisation, conflict-avoidance "
        "errors as functions of the step sizes",
    ),
    _experiment(
        "objective-sampling",
        "objective_sampling",
        "SDMGrad-OS vs SDMGrad with many objectives: time per step and quality",
    ),
    _experiment(
        "llm-joint",
        "llm_joint",
        "joint SFT+DPO post-training (ALRIGHT, MAXRIGHT, Mix) vs sequential SFT→DPO / DPO→SFT on SmolLM2: "
        "final points in the (f_SFT, f_DPO) plane, time and memory per step",
    ),
    _experiment(
        "fed-alora",
        "fed_alora",
        "federated LoRA fine-tuning: Fed-ALoRA (B-only averaging) vs FedAvg of A and B, per-client loss and "
        "bytes per round",
    ),
    _experiment(
        "open-fl",
        "open_fl",
        "open federated learning (clients join and leave): stability radius of local SGD and local Adam "
        "against the condition number and the gradient noise",
    ),
    _experiment(
        "mimo",
        "mimo",
        "multi-modal learning without modality imbalance: MIMO and baselines on audio-visual Fashion-MNIST, "
        "fused and uni-modal accuracy over seeds",
    ),
]


# ------------------------------------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="molearn", description="Multi-objective learning for PyTorch.")
    parser.add_argument("--version", action="version", version=f"molearn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for cmd in COMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.add_arguments(p)
        p.set_defaults(_run=cmd.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``molearn`` script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    words = list(sys.argv[1:] if argv is None else argv)
    args.command_line = shlex.join(["molearn", *words])  # for reports: the exact command
    if getattr(args, "_run", None) is None:
        parser.print_help(sys.stderr)
        return 2
    return int(args._run(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
