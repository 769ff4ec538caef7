"""The table of issue 16: parameter differences after the worker's steps, DDP on 2 and 3 processes (gloo).

    python -m tests.unit.distributed._measure            # with molearn's distributed mode
    python -m tests.unit.distributed._measure --before   # each rank balancing its own slice (the issue's bug)

Prints, per method, the largest parameter difference to one process on the union batch and between the ranks.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from . import _worker
from .test_distributed import launch

METHODS = ["ew", "mgda", "upgrad", "nashmtl", "famo", "pcgrad", "rlw"]


def main() -> None:
    before = "--before" in sys.argv
    which = "before" if before else "after"
    print(f"{_worker.STEPS} steps, global batch {_worker.N}, K = {_worker.K}, {which}")
    print("| ranks | method | max abs difference to one process | between ranks |\n|---|---|---|---|")
    for world in (2, 3):
        plan = [f"@before-{m}" if before else m for m in METHODS]
        with tempfile.TemporaryDirectory() as tmp:
            results = launch(world, plan, Path(tmp))
        for name, item in zip(METHODS, plan, strict=True):
            if any("crash" in r for r in results):
                raise RuntimeError(next(r["crash"] for r in results if "crash" in r))
            ref = _worker.train(name)["params"]
            params = [r[item]["params"] for r in results]
            single = max(float((p - ref).abs().max()) for p in params)
            between = max(float((p - params[0]).abs().max()) for p in params)
            print(f"| {world} | {name} | {single:.1e} | {between:.1e} |")


if __name__ == "__main__":
    main()
