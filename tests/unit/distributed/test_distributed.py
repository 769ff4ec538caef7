"""Exact data parallelism under torch.distributed (issue 16), on the CPU with gloo.

Each spawn starts one process group and runs many checks in it (a process group costs seconds to start):
for one method of each family, the model wrapped in DDP, every rank an equal slice of a fixed global batch,
the unchanged user loop; the parameters after 3 steps must equal a single process's on the union batch,
and every rank must hold the same parameters and the same method state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist

from . import _worker

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed with gloo is needed"
)

#: DDP(find_unused_parameters=True); a model not wrapped (distributed=True); the wrapper found without
#: module=; MGDA in mode="representation"
#: check_finite=False (loss-only writes then go through DDP's own hooks); a single objective; a GradScaler
CHECKS = [
    "@find-unused",
    "@by-hand",
    "@found",
    "@representation",
    "@unchecked-ew",
    "@unchecked-famo",
    "@unchecked-mgda",
    "@one-objective",
    "@scaled-ew",
    "@scaled-upgrad",
    "@sharded-mgda",
    "@sharded-upgrad",
    "@sharded-nashmtl",
]
EXACT = [
    "ew",
    "dwa",
    "uw",
    "famo",
    "rlw",
    "mgda",
    "upgrad",
    "nashmtl",
    "pcgrad",
    "graddrop",
    "modo",
    "sdmgrad",
    "sdmgrad-os",
]
TOL = 1e-6
#: the single-process run of the checks that are not a method name
REFERENCE: dict[str, tuple[str, dict[str, Any]]] = {
    "@find-unused": ("mgda", {}),
    "@by-hand": ("upgrad", {}),
    "@found": ("nashmtl", {}),
    "@representation": ("mgda", {"mode": "representation"}),
    "@unchecked-ew": ("ew", {}),
    "@unchecked-famo": ("famo", {}),
    "@unchecked-mgda": ("mgda", {}),
    "@one-objective": ("mgda", {"objectives": 1}),
    "@scaled-ew": ("ew", {"scaled": True}),
    "@scaled-upgrad": ("upgrad", {"scaled": True}),
    "@sharded-mgda": ("mgda", {}),
    "@sharded-upgrad": ("upgrad", {}),
    "@sharded-nashmtl": ("nashmtl", {}),
}  # the method of the checks that are not one


def launch(world: int, plan: list[str], tmp: Path, timeout: float = 120.0) -> list[dict[str, Any]]:
    """Run ``_worker.worker`` on ``world`` processes; a process still alive after ``timeout`` s is killed
    and fails the test (a hang)."""
    return _worker.spawn(_worker.worker, world, tmp, plan, timeout)


def _states_equal(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and bool((a == b).all())
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_states_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_states_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _check_exact(results: list[dict[str, Any]], names: list[str], world: int) -> None:
    for name in names:
        ranks = [r[name] for r in results]
        method, kwargs = REFERENCE.get(name, (name, {}))
        ref = _worker.train(method, **kwargs)["params"]  # one process, the union batch
        for r, got in enumerate(ranks):
            between = float((got["params"] - ranks[0]["params"]).abs().max())
            assert between == 0.0, f"{name}: rank {r} differs from rank 0 by {between:.2e}"
            assert _states_equal(got["state"], ranks[0]["state"]), f"{name}: method state differs on rank {r}"
        diff = float((ranks[0]["params"] - ref).abs().max())
        assert diff < TOL, f"{name} ({world} ranks): {diff:.2e} from the single-process run on the union"


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    plan = [*EXACT, *CHECKS, "pcgrad-global-rng", "@nan", "@refusals"]
    return launch(2, plan, tmp_path_factory.mktemp("two"))


def test_two_ranks_ran(two: list[dict[str, Any]]) -> None:
    for r, res in enumerate(two):
        assert "crash" not in res, f"rank {r}:\n{res['crash']}"


def test_two_ranks_equal_the_union_batch(two: list[dict[str, Any]]) -> None:
    _check_exact(two, [*EXACT, *CHECKS], 2)


def test_global_rng_draws_agree(two: list[dict[str, Any]]) -> None:
    """PCGrad without a generator draws from the global RNG: seeded alike on every rank for the step."""
    a, b = (r["pcgrad-global-rng"]["params"] for r in two)
    assert torch.equal(a, b)


def test_communication_rule(two: list[dict[str, Any]]) -> None:
    """Bytes per step as docs/distributed.md states them (float32, K = 3, W = 2)."""
    k, w = _worker.K, 2
    mgda = two[0]["mgda"]
    p = mgda["width"]
    # on gloo (whose reduce-scatter sends an all-reduce's bytes) the Jacobian is all-reduced
    # mode="auto" takes the per-layer scheme: the layers' row counts (int64, one per hooked layer) are
    # gathered (the trunk's two Linear layers; the heads are task parameters); at 12 rows per rank the
    # activation form costs more than the gradient form for both
    layers = 2
    assert mgda["log"] == [("all_reduce", 4 * k), ("all_gather", 8 * layers), ("all_reduce", 4 * k * p)]
    cols = -(-p // w)
    assert two[0]["@sharded-mgda"]["log"] == [  # the scheme on NCCL
        ("all_reduce", 4 * k),  # the losses
        ("all_gather", 8 * layers),  # the row counts
        ("reduce_scatter", 4 * k * cols * w),  # the K×P Jacobian, each rank keeps K×P/W
        ("all_reduce", 4 * k * k),  # the Gramian
        ("all_gather", 4 * cols),  # each rank's slice of the update
    ]
    ew = two[0]["ew"]
    n_params = 4 + 2 * _worker.K  # tensors of the trunk and the heads
    assert ew["log"] == [("all_reduce", 4 * k), ("all_reduce", 4 * (p + n_params))]
    # with the finite check off, a loss-only write is one backward through the DDP model: DDP averages it
    assert two[0]["@unchecked-ew"]["log"] == [("all_reduce", 4 * k)]
    graddrop = two[0]["graddrop"]
    assert graddrop["log"] == [("all_reduce", 4 * k), ("all_reduce", 4 * k * p)]


def test_a_nonfinite_step_is_skipped_on_every_rank(two: list[dict[str, Any]]) -> None:
    a, b = (r["@nan"] for r in two)
    assert a["skipped"] == b["skipped"] == [False, True, False]
    assert torch.equal(a["params"], b["params"])


def test_refusals_name_what_is_unsupported(two: list[dict[str, Any]]) -> None:
    errors = two[0]["@refusals"]
    assert errors["no-ddp"].startswith("RuntimeError") and "DistributedDataParallel" in errors["no-ddp"]
    assert "distributed=True" in errors["no-ddp"]
    assert "static_graph=True" in errors["static-graph"]
    assert "SAMO" in errors["samo"] and "closure" in errors["samo"]
    assert errors["false-with-ddp"].startswith("ValueError") and "drift" in errors["false-with-ddp"]
    for rank in two:  # every rank raises, none waits for the others
        assert "disagree on the task parameters" in rank["@refusals"]["layout"]
    # FSDP1 is refused (FSDP2 is supported: tests/unit/distributed/test_fsdp2.py)
    assert errors["fsdp"].startswith("NotImplementedError"), errors["fsdp"]
    assert "FSDP" in errors["fsdp"] and "issue 16" in errors["fsdp"]


def test_three_ranks_equal_the_union_batch(tmp_path: Path) -> None:
    names = ["ew", "famo", "rlw", "mgda", "upgrad", "pcgrad", "graddrop", "@sharded-mgda"]
    results = launch(3, names, tmp_path)
    for r, res in enumerate(results):
        assert "crash" not in res, f"rank {r}:\n{res['crash']}"
    _check_exact(results, names, 3)


@pytest.mark.parametrize("how", ["@raise", "@raise-alive"])
def test_a_failing_rank_does_not_hang_the_others(tmp_path: Path, how: str) -> None:
    """Rank 1 fails before its step, and exits (rank 0's collective sees the peer gone) or stays alive (rank
    0's collective ends at the process group's timeout): rank 0 gets an error either way."""
    results = launch(2, [how], tmp_path, timeout=60.0)
    assert "rank 1 fails on purpose" in results[1]["crash"]
    assert results[0][how].startswith("RuntimeError"), results[0][how]


def test_one_process_stays_local() -> None:
    """Without an initialised process group nothing is distributed; asking for it is an error."""
    net = _worker.model()
    assert _worker.molearn.Balancer(_worker.M.MGDA(), shared=net.trunk).collective is None
    with pytest.raises(RuntimeError, match="not initialised"):
        _worker.molearn.Balancer(_worker.M.MGDA(), shared=net.trunk, distributed=True)
