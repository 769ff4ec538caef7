"""``molearn.llm.BalancedTrainer`` on 2 processes (issue 16, the launchers): the environment ``torchrun``
sets, ``transformers.Trainer`` initialises gloo and wraps the model in DDP; the Balancer finds the wrapper.
Both ranks must end with the parameters and method state of one process on the union batches (2 items per
process vs 4 in one process, the same sampler seed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from . import _hf_worker as hw
from . import _worker

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed with gloo is needed"
)

METHODS = ["mgda", "famo", "ew:unchecked"]
TOL = 1e-6


def _launch(world: int, tmp: Path, timeout: float = 150.0) -> list[dict[str, Any]]:
    return _worker.spawn(hw.run, world, tmp, METHODS, timeout)


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    results = _launch(2, tmp_path_factory.mktemp("hf-ddp"))
    for r, res in enumerate(results):
        assert "crash" not in res, f"rank {r}:\n{res['crash']}"
    return results


@pytest.mark.parametrize("method", METHODS)
def test_two_processes_equal_one_on_the_union(two: list[dict[str, Any]], method: str, tmp_path: Path) -> None:
    a, b = (r[method] for r in two)
    assert a["wrapped"] == "DistributedDataParallel" and a["distributed"]
    assert torch.equal(a["params"], b["params"])
    assert a["state"].keys() == b["state"].keys()
    for key, value in a["state"].items():
        assert torch.equal(torch.as_tensor(value), torch.as_tensor(b["state"][key])), key
    assert a["weights"] == b["weights"] and len(a["weights"]) == hw.STEPS
    ref = hw.train(method, tmp_path, batch=4)  # one process, the union batches
    assert not ref["distributed"]
    diff = float((a["params"] - ref["params"]).abs().max())
    print(f"{method}: max parameter difference to one process {diff:.1e}, between ranks 0")
    assert diff < TOL, f"{method}: {diff:.2e} from one process on the union batches"
    for (w0, w1), (r0, r1) in zip(a["weights"], ref["weights"], strict=True):
        assert abs(w0 - r0) < 1e-4 and abs(w1 - r1) < 1e-4
