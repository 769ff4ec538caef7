"""``molearn.train.Trainer`` under DDP (issue 16, the launchers): 2 gloo ranks on the CPU, one process group.

Each rank's loader is a shuffled ``DistributedSampler`` slice (global batch 8 of 24 samples, 3 steps per
epoch, 2 epochs). Checked: the ranks' parameters equal one process's Trainer on the union batches; only rank
0 writes logs and checkpoints; a run killed in step 5 and resumed on every rank equals the uninterrupted
run; one process resumes a 2-rank checkpoint (the same global batch: equal to the 2-rank run; the same
per-rank batch: from an epoch-end checkpoint only); loaders of different lengths and a failing write on
rank 0 are errors on every rank.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist

from . import _trainer_worker as tw
from . import _worker

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed with gloo is needed"
)

NAMES = ["mgda", "famo", "rlw"]
TOL = 1e-6
STEPS = 3 * tw.EPOCHS


def _launch(world: int, names: list[str], tmp: Path, timeout: float = 120.0) -> list[dict[str, Any]]:
    return _worker.spawn(tw.run, world, tmp, names, timeout)


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and bool((a == b).all())
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _close(a: Any, b: Any, tol: float) -> bool:
    if isinstance(a, torch.Tensor):
        if a.is_floating_point():
            return a.shape == b.shape and (a.numel() == 0 or float((a - b).abs().max()) < tol)
        return _equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], tol) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_close(x, y, tol) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, Any]], Path]:
    tmp = tmp_path_factory.mktemp("trainer-ddp")
    results = _launch(2, NAMES, tmp)
    for r, res in enumerate(results):
        assert "crash" not in res, f"rank {r}:\n{res['crash']}"
    return results, tmp


@pytest.mark.parametrize("name", NAMES)
def test_two_ranks_equal_one_process_on_the_union(two: tuple[list[dict[str, Any]], Path], name: str) -> None:
    results, _ = two
    a, b = (r[name]["union"] for r in results)
    assert torch.equal(a["params"], b["params"]) and _equal(a["state"], b["state"])
    ref = tw.trainer(name, 1, None)
    ref.fit(tw.loader(0, 1), tw.EPOCHS)  # one process, a DistributedSampler of one replica, batch 8
    assert (a["step"], a["epoch"]) == (ref.global_step, ref.epoch) == (STEPS, tw.EPOCHS)
    diff = float((a["params"] - tw.params(ref)).abs().max())
    assert diff < TOL, f"{name}: {diff:.2e} from one process on the union batches"
    assert _close(a["state"], ref.method.state_dict(), TOL)


@pytest.mark.parametrize("name", NAMES)
def test_only_rank_zero_writes(two: tuple[list[dict[str, Any]], Path], name: str) -> None:
    _, tmp = two
    assert not (tmp / name / "union-rank1").exists()  # rank 1 had its own log_dir: never created
    mine = tmp / name / "union-rank0"
    assert (mine / "checkpoint.pt").exists()
    assert [int(r["step"]) for r in _rows(mine / "steps.csv")] == list(range(1, STEPS + 1))
    assert len(_rows(mine / "epochs.csv")) == tw.EPOCHS
    shared = tmp / name / "resume"  # one folder for both ranks: rows once, cut back to step 4 on resume
    assert [int(r["step"]) for r in _rows(shared / "steps.csv")] == list(range(1, STEPS + 1))
    assert not list(shared.glob(".*.tmp"))


@pytest.mark.parametrize("name", NAMES)
def test_killed_and_resumed_equals_uninterrupted(two: tuple[list[dict[str, Any]], Path], name: str) -> None:
    results, _ = two
    for r, res in enumerate(results):
        assert res[name]["killed-at"] == 4
        got, want = res[name]["resumed"], res[name]["union"]
        assert torch.equal(got["params"], want["params"]), f"{name}, rank {r}"
        assert _equal(got["state"], want["state"]), f"{name}, rank {r}: method state"
        assert (got["step"], got["epoch"]) == (STEPS, tw.EPOCHS)


@pytest.mark.parametrize("name", NAMES)
def test_one_process_resumes_a_two_rank_checkpoint(two: tuple[list[dict[str, Any]], Path], name: str) -> None:
    """The same global batch (8 on one rank): the loader keeps its length, the mid-epoch position maps and
    the run equals the uninterrupted 2-rank one; the method state is the checkpoint's."""
    results, tmp = two
    saved = torch.load(tmp / name / "step4.pt", weights_only=True)
    assert saved["world_size"] == 2 and saved["global_step"] == 4 and len(saved["rng_ranks"]) == 2
    t = tw.trainer(name, 1, None)
    t.load_checkpoint(tmp / name / "step4.pt")
    assert _equal(t.method.state_dict(), saved["balancer"]["method"])
    t.fit(tw.loader(0, 1), tw.EPOCHS, resume=tmp / name / "step4.pt")
    want = results[0][name]["union"]
    assert (t.global_step, t.epoch) == (STEPS, tw.EPOCHS)
    diff = float((tw.params(t) - want["params"]).abs().max())
    assert diff < TOL, f"{name}: {diff:.2e} from the uninterrupted 2-rank run"
    assert _close(t.method.state_dict(), want["state"], TOL)


def test_another_loader_length_maps_only_at_an_epoch_end(two: tuple[list[dict[str, Any]], Path]) -> None:
    """One process with the per-rank batch of 4: 6 batches per pass instead of 3. The epoch-end checkpoint
    continues with the next pass; the mid-epoch one is refused, naming why."""
    _, tmp = two
    t = tw.trainer("famo", 1, None)
    t.fit(tw.loader(0, 1, per_rank=4), 2, resume=tmp / "famo" / "epoch1.pt")
    assert t.epoch == 2 and t.global_step == 3 + 6
    assert t.method.state_dict().keys() == torch.load(tmp / "famo" / "epoch1.pt")["balancer"]["method"].keys()
    t2 = tw.trainer("famo", 1, None)
    with pytest.raises(ValueError, match=r"batch 1 of 3 in pass 1.*6 batches per pass"):
        t2.fit(tw.loader(0, 1, per_rank=4), 2, resume=tmp / "famo" / "step4.pt")


def test_a_failed_write_on_rank_zero_is_an_error_on_every_rank(
    two: tuple[list[dict[str, Any]], Path],
) -> None:
    results, _ = two
    assert results[0]["@failed-write"].startswith(("OSError", "FileExistsError", "NotADirectoryError"))
    assert results[1]["@failed-write"].startswith("RuntimeError: rank 0 could not write checkpoint")


def test_loaders_of_different_lengths_are_an_error_on_every_rank(
    two: tuple[list[dict[str, Any]], Path],
) -> None:
    results, _ = two
    for res in results:
        assert res["@uneven"].startswith("ValueError") and "[3, 6]" in res["@uneven"], res["@uneven"]


def test_the_stream_sets_the_distributed_samplers_epoch_per_pass() -> None:
    """Pass p of a DistributedSampler is shuffled by set_epoch(pass_seed(seed, p)): passes differ, and a
    stream restored to pass 1 draws what the uninterrupted stream drew there."""
    from molearn.train._data import BatchStream

    def order(stream: BatchStream, count: int) -> list[torch.Tensor]:
        return [stream()[0] for _ in range(count)]

    first = BatchStream(tw.loader(0, 1), seed=3)
    drawn = order(first, 6)  # passes 0 and 1, 3 batches each
    assert not all(torch.equal(a, b) for a, b in zip(drawn[:3], drawn[3:], strict=True))
    again = BatchStream(tw.loader(0, 1), seed=3)
    again.seek({"pass": 1, "batch": 1, "drawn": 4, "seed": 3})
    assert all(torch.equal(a, b) for a, b in zip(order(again, 2), drawn[4:], strict=True))
