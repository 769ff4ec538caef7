"""What each ``torchrun`` rank runs in the distributed ``molearn compare`` test (``python -m`` this module).

``OUT``: the Python function ``molearn.compare.compare`` (its STL runs fill the cache), then the command line
``molearn compare`` on the same configuration in another folder (its STL baselines come from rank 0's
cache). Each rank saves its records and whether it got the report to ``OUT/rank{RANK}.pt``.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Any

import torch

BENCHMARK = "tests.unit.compare._tiny:bench"
METHODS = "ew,mgda"
SEEDS = 2
EPOCHS = 2


def records(result: Any) -> list[dict[str, Any]]:
    """What the report's numbers are made of (time and memory left out: they are measured, not computed)."""
    keep = ("method", "seed", "metrics", "delta_m", "weights", "steps", "error", "epoch", "last_metrics")
    return [{k: getattr(r, k) for k in keep} for r in result.records] + [{"baselines": result.baselines}]


def function(out: Path) -> Any:
    from molearn.compare import compare

    return compare(BENCHMARK, methods=METHODS, seeds=SEEDS, schedule={"epochs": EPOCHS}, jobs=0, threads=1,
                   out=out, plot=False)  # fmt: skip


def command(out: Path) -> list[str]:
    return ["compare", "--benchmark", BENCHMARK, "--methods", METHODS, "--seeds", str(SEEDS), "--epochs",
            str(EPOCHS), "--jobs", "0", "--threads", "1", "--no-plot", "--out", str(out)]  # fmt: skip


def main(out: Path) -> int:
    from molearn.cli import main as cli

    rank = int(os.environ["RANK"])
    torch.set_num_threads(1)
    saved: dict[str, Any] = {}
    try:
        result = function(out / "function")
        saved["function"] = records(result)
        saved["function-report"] = result.report is not None
        saved["cli-rc"] = cli(command(out / "cli"))
    except Exception:
        saved["crash"] = traceback.format_exc()
    torch.save(saved, out / f"rank{rank}.pt")
    return 1 if "crash" in saved else 0


if __name__ == "__main__":
    from . import _worker

    _worker.shutdown(main(Path(sys.argv[1])))
