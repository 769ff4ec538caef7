"""What each process of ``accelerate launch`` runs in the launcher test (``python -m`` this module).

``accelerate launch --multi_gpu --num_processes 2 -m tests.unit.distributed._hf_launched OUT METHOD...``: the
launcher starts the processes through ``torch.distributed.run`` (the environment of a torchrun worker), the
``transformers.Trainer`` of :mod:`._hf_worker` initialises gloo on the CPU (``use_cpu=True``) and wraps the
model in DDP. Each rank saves what it ended with to ``OUT/rank{RANK}.pt``.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Any, NoReturn

import torch

from . import _hf_worker, _worker


def main(argv: list[str]) -> NoReturn:
    out, methods = Path(argv[0]), argv[1:]
    rank = int(os.environ["RANK"])
    torch.set_num_threads(1)
    results: dict[str, Any] = {"world": int(os.environ["WORLD_SIZE"])}
    try:
        for method in methods:
            results[method] = _hf_worker.train(method, out / method, batch=2, launched=True)
    except Exception:
        results["crash"] = traceback.format_exc()
    torch.save(results, out / f"rank{rank}.pt")
    _worker.shutdown(1 if "crash" in results else 0)


if __name__ == "__main__":
    main(sys.argv[1:])
