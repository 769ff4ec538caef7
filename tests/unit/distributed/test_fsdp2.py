"""FSDP2 (``fully_shard``) under molearn's Balancer (issue 16), on the CPU with gloo.

The model of ``_worker`` sharded per trunk layer plus a root unit for the heads; every rank an equal slice
of a fixed global batch; after 3 steps the global parameters must equal one process's on the union batch
(without FSDP), and every rank must hold the same parameters and method state: a loss-only, a Gramian and
a Jacobian method at least, FSDP's own write (``check_finite=False``), the finite check when only one rank's
shard of the update is NaN, and the refused options.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist

from . import _fsdp_worker, _worker
from .test_distributed import _states_equal

try:  # public from torch 2.6 (torch 2.3 keeps FSDP2 private: molearn refuses it there)
    from torch.distributed.fsdp import fully_shard  # noqa: F401

    HAS_FSDP2 = True
except ImportError:
    HAS_FSDP2 = False

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available() and HAS_FSDP2),
    reason="torch.distributed with gloo and FSDP2 (torch >= 2.6) are needed",
)

TOL = 1e-6
#: the single-process run of each check (method, keyword arguments of ``_worker.train``)
REFERENCE: dict[str, tuple[str, dict[str, Any]]] = {
    "@unchecked-ew": ("ew", {}),
    "@unchecked-mgda": ("mgda", {}),
    "@one-objective": ("mgda", {"objectives": 1}),
    "@representation": ("mgda", {"mode": "representation"}),
    "@keep-root": ("upgrad", {}),
}
TWO = ["ew", "famo", "rlw", "mgda", "upgrad", "pcgrad", "graddrop", "modo", *REFERENCE]


def launch(world: int, plan: list[str], tmp: Path, timeout: float = 120.0) -> list[dict[str, Any]]:
    """``_fsdp_worker.worker`` on ``world`` processes; one still alive after ``timeout`` s fails (a hang)."""
    results = _worker.spawn(_fsdp_worker.worker, world, tmp, plan, timeout)
    for r, res in enumerate(results):
        assert "crash" not in res, f"rank {r}:\n{res['crash']}"
    return results


def check_exact(results: list[dict[str, Any]], names: list[str]) -> None:
    for name in names:
        ranks = [r[name] for r in results]
        method, kwargs = REFERENCE.get(name, (name, {}))
        ref = _worker.train(method, **kwargs)["params"]  # one process, the union batch, no FSDP
        for r, got in enumerate(ranks):
            between = float((got["params"] - ranks[0]["params"]).abs().max())
            assert between == 0.0, f"{name}: rank {r} differs from rank 0 by {between:.2e}"
            assert _states_equal(got["state"], ranks[0]["state"]), f"{name}: method state differs on rank {r}"
        diff = float((ranks[0]["params"] - ref).abs().max())
        assert diff < TOL, f"{name} ({len(results)} ranks): {diff:.2e} from one process on the union batch"


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    plan = [*TWO, "@nan-ew", "@nan-mgda", "@bf16-ew", "@bf16-mgda", "@refusals"]
    return launch(2, plan, tmp_path_factory.mktemp("fsdp2"))


def test_two_ranks_equal_the_union_batch(two: list[dict[str, Any]]) -> None:
    assert two[0]["mgda"]["collective"] == "FSDP2Collective(world=2, rank=0)"
    check_exact(two, TWO)


def test_molearn_adds_only_the_losses_and_the_gramian(two: list[dict[str, Any]]) -> None:
    """molearn's own collectives per step (FSDP's all-gathers and reduce-scatters are its own): K losses,
    the K×K Gramian, one number for the finite check; the Jacobian method all-gathers its shard rows."""
    k = _worker.K
    assert two[0]["mgda"]["log"] == [("all_reduce", 4 * k), ("all_reduce", 4 * k * k), ("all_reduce", 4)]
    assert two[0]["ew"]["log"] == [("all_reduce", 4 * k), ("all_reduce", 4)]
    assert two[0]["@unchecked-ew"]["log"] == [("all_reduce", 4 * k)]  # FSDP's backward writes .grad
    # GradDrop: the global K×P_shared rows, each rank's K×S padded to the largest shard (rank 0's:
    # ⌈8/2⌉·5 + 4 + ⌈8/2⌉·8 + 4 = 60 entries of the trunk)
    graddrop = two[0]["graddrop"]["log"]
    assert graddrop[:3] == [("all_reduce", 4 * k), ("all_reduce", 4 * k * k), ("all_gather", 4 * k * 60)]


def test_a_nan_in_one_ranks_shard_skips_the_step_on_every_rank(two: list[dict[str, Any]]) -> None:
    """Rank 1 makes the gradient of a row that rank 0 holds NaN (the losses stay finite): with the loss-only
    EW only rank 0's shard of the update is NaN; every rank must still skip the step."""
    for name in ("@nan-ew", "@nan-mgda"):
        a, b = (r[name] for r in two)
        assert a["skipped"] == b["skipped"] == [False, True, False], name
        assert torch.equal(a["params"], b["params"]), name


def test_mixed_precision_agrees_between_ranks(two: list[dict[str, Any]]) -> None:
    """``MixedPrecisionPolicy(param_dtype=bfloat16, reduce_dtype=float32)``: the rows are FSDP's reduced
    gradients, the same on every rank; against float32 in one process only bfloat16's rounding remains."""
    for name in ("@bf16-ew", "@bf16-mgda"):
        a, b = (r[name]["params"] for r in two)
        assert torch.equal(a, b), name
        ref = _worker.train(name[6:])["params"]
        assert 1e-6 < float((a - ref).abs().max()) < 5e-3, name  # bfloat16 forward: not float32's result


def test_refusals_name_what_is_unsupported(two: list[dict[str, Any]]) -> None:
    errors = two[0]["@refusals"]
    assert errors["gramian"].startswith("NotImplementedError") and "FSDP2" in errors["gramian"]
    assert errors["false"].startswith("ValueError") and "drift" in errors["false"]
    assert "set_requires_gradient_sync(False)" in errors["no-sync"]
    assert "set_gradient_divide_factor" in errors["divide"]
    # without a GPU fully_shard itself refuses CPU offload first (torch 2.13: "accelerator", 2.15: "driver")
    if "accelerator" not in errors["offload"] and "NVIDIA driver" not in errors["offload"]:
        assert "CPUOffloadPolicy" in errors["offload"]
    assert "HSDP" in errors["hsdp"]
    assert errors["fsdp1"].startswith("NotImplementedError") and "FSDP1" in errors["fsdp1"]
    assert "fully_shard" in errors["fsdp1"]


def test_three_ranks_equal_the_union_batch(tmp_path: Path) -> None:
    names = ["ew", "mgda", "graddrop"]
    check_exact(launch(3, names, tmp_path), names)
