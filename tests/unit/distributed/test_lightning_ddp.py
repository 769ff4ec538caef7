"""``molearn.integrations.lightning.BalancedModule`` under Lightning's DDP strategy on 2 gloo processes (the
environment ``torchrun`` sets): both ranks end with the parameters and method state of one process on the
union batches; the method state goes into Lightning checkpoints and back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist

pytest.importorskip("lightning")

from . import _lightning_worker as lw
from . import _worker

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed with gloo is needed"
)

METHODS = ["mgda", "famo", "ew:unchecked", "famo:unchecked"]
TOL = 1e-6


def _launch(world: int, tmp: Path, timeout: float = 150.0) -> list[dict[str, Any]]:
    return _worker.spawn(lw.run, world, tmp, METHODS, timeout)


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    results = _launch(2, tmp_path_factory.mktemp("lightning-ddp"))
    for r, res in enumerate(results):
        assert "crash" not in res, f"rank {r}:\n{res['crash']}"
    return results


def _same(a: dict[str, Any], b: dict[str, Any], tol: float) -> bool:
    return a.keys() == b.keys() and all(
        float(
            (torch.as_tensor(a[k]).double() - torch.as_tensor(b[k]).double()).abs().max(),
        )
        <= tol
        for k in a
        if torch.as_tensor(a[k]).numel()
    )


@pytest.mark.parametrize("method", METHODS)
def test_two_ranks_equal_one_process_on_the_union(two: list[dict[str, Any]], method: str) -> None:
    a, b = (r[method] for r in two)
    assert a["wrapped"] == "DistributedDataParallel" and a["distributed"]
    assert torch.equal(a["params"], b["params"]) and _same(a["state"], b["state"], 0.0)
    ref = lw.train(method, 1)
    assert not ref["distributed"]
    diff = float((a["params"] - ref["params"]).abs().max())
    print(f"{method}: max parameter difference to one process {diff:.1e}, between ranks 0")
    assert diff < TOL, f"{method}: {diff:.2e} from one process on the union batches"
    assert _same(a["state"], ref["state"], TOL)


def test_method_state_in_lightning_checkpoints(tmp_path: Path) -> None:
    path = tmp_path / "famo.ckpt"
    ref = lw.train("famo", 1, checkpoint=path)
    saved = torch.load(path, weights_only=False)["molearn_balancer"]
    assert _same(saved["method"], ref["state"], 0.0)
    module = lw._module("famo")
    module.on_load_checkpoint({"molearn_balancer": saved})
    assert module._pending_method_state is not None
