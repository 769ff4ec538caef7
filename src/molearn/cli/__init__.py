"""The ``molearn`` command line: ``molearn <command> [options]`` (``molearn --help`` lists the commands).

Each command is a :class:`Command` in :data:`COMMANDS`: a name, a help line, a function that adds
its options to an ``argparse`` sub-parser and a function that runs it and returns the exit status.
A new command (``compare``, ``pareto``, ...) is one more entry.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from ._options import did_you_mean, parse_methods, parse_seeds

__all__ = [
    "COMMANDS",
    "Command",
    "build_parser",
    "did_you_mean",
    "main",
    "parse_methods",
    "parse_seeds",
    "run",
]


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _experiment(name: str, module: str, help: str) -> Command:
    """A command whose module provides ``add_arguments`` and ``run_cli`` (imported only when the command
    line is built or run)."""

    def load() -> Any:
        return importlib.import_module(module)

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


def run() -> NoReturn:
    """The ``molearn`` script and ``python -m molearn``: :func:`main`, then exit with its status.

    A run under ``torchrun`` (``molearn compare`` across ranks) leaves without the interpreter's teardown:
    gloo's worker threads may still be releasing the last collective's tensors then, and a thread that
    cannot take the GIL aborts the process (SIGABRT, "terminate called without an active exception",
    pytorch/pytorch#179291) after the report was written."""
    code = main()
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()
