"""What exactness means, and that nothing hangs, off the ideal path (issue 16, item 4): gloo on the CPU.

- **Plain BatchNorm** under DDP normalises each rank's slice with the slice's statistics: the update equals
  one process that normalises each slice on its own (running statistics: rank 0's, which DDP broadcasts),
  not one process on the union batch. **SyncBatchNorm** would give the union batch; torch runs it on GPUs
  only (its forward pass raises ``ValueError`` on the CPU, on every rank: no hang).
- **Uneven slices** (rank 0: 20 samples, rank 1: 12): the ranks' mean losses count with weight 1/W each, so
  the update equals one process minimising the mean of the two slices' mean losses, not the union mean.
- **A failing rank**: NaN losses on rank 1 only make every rank raise the same error, naming rank 1; a loss
  function that raises on rank 1 in step 2 (rank 1 then ends) makes rank 0 raise too (the peer is gone), in
  seconds.
- **Lightning on 3 ranks** (slow: ``--runslow``): ``BalancedModule`` under the DDP strategy equals one
  process on the union batches.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist

from . import _robust_worker as rw
from . import _worker

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed with gloo is needed"
)

TOL = 1e-6


def launch(
    world: int, plan: list[str], tmp: Path, timeout: float = 90.0, target: Callable[..., None] = rw.worker
) -> list[dict[str, Any]]:
    """Run ``target`` on ``world`` spawned processes; one still alive after ``timeout`` s is killed and fails
    the test (a hang)."""
    return _worker.spawn(target, world, tmp, plan, timeout)


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    plan = ["bn-mgda", "bn-famo", "sync-bn", "uneven-mgda", "uneven-famo", "uneven-ew"]
    results = launch(2, plan, tmp_path_factory.mktemp("robust"))
    for r, res in enumerate(results):
        assert "crash" not in res, f"rank {r}:\n{res['crash']}"
    return results


def _same_on_every_rank(results: list[dict[str, Any]], item: str) -> dict[str, Any]:
    first = results[0][item]
    for res in results[1:]:
        assert torch.equal(res[item]["params"], first["params"]), f"{item}: the ranks' parameters differ"
    return first


@pytest.mark.parametrize("name", ["mgda", "famo"])
def test_plain_batch_norm_equals_per_slice_normalisation(two: list[dict[str, Any]], name: str) -> None:
    got = _same_on_every_rank(two, f"bn-{name}")
    ref = rw.per_slice_reference(name, 2)
    assert _diff(got["params"], ref["params"]) < TOL, f"{name}: {_diff(got['params'], ref['params']):.1e}"
    for key, value in ref["buffers"].items():  # rank 0's running statistics: its slices' only
        assert _diff(got["buffers"][key].double(), value.double()) < TOL, key
    union = rw.union_reference(name)  # BatchNorm over the whole batch: another update (SyncBatchNorm's)
    assert _diff(got["params"], union["params"]) > 1e-4


def test_sync_batch_norm_on_the_cpu_is_torch_s_error_on_every_rank(two: list[dict[str, Any]]) -> None:
    for res in two:
        assert res["sync-bn"].startswith("ValueError") and "SyncBatchNorm" in res["sync-bn"], res["sync-bn"]


@pytest.mark.parametrize("name", ["mgda", "famo", "ew"])
def test_uneven_slices_weigh_each_rank_equally(two: list[dict[str, Any]], name: str) -> None:
    got = _same_on_every_rank(two, f"uneven-{name}")
    ref = rw.uneven_reference(name, per_rank_mean=True)
    assert _diff(got["params"], ref["params"]) < TOL, f"{name}: {_diff(got['params'], ref['params']):.1e}"
    for key, value in ref["state"].items():
        assert _diff(torch.as_tensor(got["state"][key]).double(), torch.as_tensor(value).double()) < TOL
    union = rw.uneven_reference(name, per_rank_mean=False)  # 20 and 12 samples at 1/32 each: not that
    assert _diff(got["params"], union["params"]) > 1e-4


def test_nan_on_one_rank_raises_on_every_rank_naming_it(tmp_path: Path) -> None:
    results = launch(2, ["fail-nan"], tmp_path, timeout=60.0)
    errors = [res["fail-nan"]["error"] for res in results]
    assert errors[0] == errors[1], errors  # the same error, from the global losses
    assert errors[0].startswith("NonFiniteLossError") and "(from rank 1 of 2)" in errors[0], errors[0]


def test_a_loss_function_raising_on_one_rank_does_not_hang_the_other(tmp_path: Path) -> None:
    """Rank 1's loss function raises in step 2, after the ranks have taken a step together, and rank 1 ends:
    rank 0, waiting for rank 1's losses, gets an error (the peer is gone) instead of hanging. (A failing
    rank that stays alive: rank 0 gets the process group's timeout, ``test_distributed.py``.)"""
    item = "fail-raise"
    results = launch(2, [item], tmp_path, timeout=60.0)
    assert results[1][item]["error"] == "ValueError: rank 1's loss function fails on purpose"
    assert results[0][item]["error"].startswith(("RuntimeError", "DistBackendError")), results[0][item]
    assert results[0][item]["seconds"] < 30.0


@pytest.mark.slow  # 3 processes importing Lightning: 25-30 s on 2 busy cores
def test_lightning_three_ranks_equal_one_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``BalancedModule`` under Lightning's DDP strategy on 3 processes (2 samples each, a global batch of
    6): MGDA ends where one process on the union batches ends."""
    pytest.importorskip("lightning")
    from . import _lightning_worker as lw

    methods = ["mgda"]
    results = launch(3, methods, tmp_path, timeout=150.0, target=rw.lightning)
    for r, res in enumerate(results):
        assert "crash" not in res, f"rank {r}:\n{res['crash']}"
    monkeypatch.setattr(lw, "GLOBAL", 6)
    for name in methods:
        got = _same_on_every_rank(results, name)
        assert got["distributed"] and got["wrapped"] == "DistributedDataParallel"
        ref = lw.train(name, 1)
        assert _diff(got["params"], ref["params"]) < TOL, f"{name}: {_diff(got['params'], ref['params']):.1e}"
