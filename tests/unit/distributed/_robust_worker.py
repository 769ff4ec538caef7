"""What each rank runs in the robustness tests (spawned processes import this module): BatchNorm under DDP,
uneven slices, a rank whose losses are NaN, a rank whose loss function raises, Lightning on 3 ranks.

The model, data and losses of :mod:`._worker` (a tanh MLP trunk, three heads, a global batch of 24), and
for BatchNorm the same trunk with a ``BatchNorm1d`` after its first layer.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

import molearn
from molearn import methods as M

from . import _worker

STEPS = 3
#: rank 0's and rank 1's slices of a global batch of 32 (uneven)
UNEVEN = (20, 12)
#: the methods of the BatchNorm and uneven checks: a Gramian method, a loss-only method with post-step losses
METHODS: dict[str, Callable[[], M.Method]] = {"mgda": M.MGDA, "famo": M.FAMO, "ew": M.EW}


class BNNet(_worker.Net):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh())


def bn_model() -> BNNet:
    torch.manual_seed(0)
    return BNNet()


def flat(net: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in net.parameters()])


def _train(
    name: str,
    net: nn.Module,
    model: nn.Module,
    losses_fn: Callable[[nn.Module], list[torch.Tensor]],
    **balancer: Any,
) -> dict[str, Any]:
    """``STEPS`` steps of the user loop (FAMO's post-step ``update`` included); the parameters, buffers and
    method state after them."""
    method = METHODS[name]()
    bal = molearn.Balancer(method, shared=net.trunk, module=model, **balancer)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(STEPS):
        opt.zero_grad()
        bal.backward(losses_fn(model))
        opt.step()
        if method.needs.after_step:
            with torch.no_grad():
                bal.update(losses_fn(model))
    return {
        "params": flat(net),
        "buffers": {n: b.detach().clone() for n, b in net.named_buffers()},
        "state": method.state_dict(),
    }


def batch_norm(rank: int, world: int, name: str) -> dict[str, Any]:
    """Plain BatchNorm under DDP: each rank normalises its own equal slice (DDP broadcasts rank 0's running
    statistics at every forward pass)."""
    net = bn_model()
    ddp = nn.parallel.DistributedDataParallel(net)
    x, y = _worker.batches(1)[0]
    n = _worker.N // world
    part = slice(rank * n, (rank + 1) * n)
    return _train(name, net, ddp, lambda m: _worker.losses_of(m, x[part], y[part]))


def per_slice_reference(name: str, world: int) -> dict[str, Any]:
    """One process doing what plain BatchNorm under DDP does: each slice normalised with its own statistics,
    the loss the mean of the slices' means, the running statistics those of slice 0 only (rank 0's, which DDP
    broadcasts; the other slices run on throw-away copies of the buffers)."""
    from torch.func import functional_call

    net = bn_model()
    x, y = _worker.batches(1)[0]
    n = _worker.N // world

    def losses(m: nn.Module) -> list[torch.Tensor]:
        per = [_worker.losses_of(m, x[:n], y[:n])]
        for r in range(1, world):
            spare = {k: b.clone() for k, b in m.named_buffers()}
            part = slice(r * n, (r + 1) * n)

            def forward(inp: torch.Tensor, buffers: dict[str, torch.Tensor] = spare) -> Any:
                return functional_call(m, buffers, (inp,))

            per.append(_worker.losses_of(forward, x[part], y[part]))
        return [sum(ls) / world for ls in zip(*per, strict=True)]

    return _train(name, net, net, losses)


def union_reference(name: str) -> dict[str, Any]:
    """One process on the union batch with BatchNorm over all of it (what SyncBatchNorm would give)."""
    net = bn_model()
    x, y = _worker.batches(1)[0]
    return _train(name, net, net, lambda m: _worker.losses_of(m, x, y))


def sync_batch_norm(rank: int, world: int) -> str:
    """``nn.SyncBatchNorm.convert_sync_batchnorm`` on the CPU: torch refuses it (the DDP wrapper, and the
    layer's own forward pass, need a GPU), on every rank alike."""
    net = nn.SyncBatchNorm.convert_sync_batchnorm(bn_model())
    x, y = _worker.batches(1)[0]
    n = _worker.N // world
    part = slice(rank * n, (rank + 1) * n)

    def run() -> None:
        ddp = nn.parallel.DistributedDataParallel(net)
        _train("mgda", net, ddp, lambda m: _worker.losses_of(m, x[part], y[part]))

    return _worker._expect_error(run)


def uneven_data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    total = sum(UNEVEN)
    return torch.randn(total, 5, generator=g), torch.randn(total, _worker.K, generator=g)


def uneven_slices() -> list[slice]:
    starts = [sum(UNEVEN[:r]) for r in range(len(UNEVEN))]
    return [slice(s, s + n) for s, n in zip(starts, UNEVEN, strict=True)]


def uneven(rank: int, name: str) -> dict[str, Any]:
    """Rank 0 holds 20 samples, rank 1 holds 12; each rank's losses are means over its own slice."""
    net = _worker.model()
    ddp = nn.parallel.DistributedDataParallel(net)
    x, y = uneven_data()
    part = uneven_slices()[rank]
    return _train(name, net, ddp, lambda m: _worker.losses_of(m, x[part], y[part]))


def uneven_reference(name: str, per_rank_mean: bool) -> dict[str, Any]:
    """One process: the mean of the slices' mean losses (``per_rank_mean``) or the mean over the union."""
    net = _worker.model()
    x, y = uneven_data()

    def losses(m: nn.Module) -> list[torch.Tensor]:
        if not per_rank_mean:
            return _worker.losses_of(m, x, y)
        per = [_worker.losses_of(m, x[s], y[s]) for s in uneven_slices()]
        return [sum(ls) / len(per) for ls in zip(*per, strict=True)]

    return _train(name, net, net, losses)


def failing(rank: int, world: int, how: str) -> dict[str, Any]:
    """Rank 1 breaks in step 2: its losses are NaN (``"nan"``), or its loss function raises (``"raise"``;
    the rank then ends). Each rank's outcome and how long it took."""
    net = _worker.model()
    ddp = nn.parallel.DistributedDataParallel(net)
    x, y = _worker.batches(1)[0]
    n = _worker.N // world
    x, y = x[rank * n : (rank + 1) * n], y[rank * n : (rank + 1) * n]
    bal = molearn.Balancer(M.MGDA(), shared=net.trunk, module=ddp)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)

    def losses_fn(step: int) -> list[torch.Tensor]:
        losses = _worker.losses_of(ddp, x, y)
        if step == 1 and rank == 1:
            if how == "nan":
                return [loss * float("nan") for loss in losses]
            raise ValueError("rank 1's loss function fails on purpose")
        return losses

    def loop() -> None:
        for step in range(STEPS):
            opt.zero_grad()
            bal.backward(losses_fn(step))
            opt.step()

    t0 = time.monotonic()
    error = _worker._expect_error(loop)
    return {"error": error, "seconds": time.monotonic() - t0}


def worker(rank: int, world: int, port: int, outdir: str, plan: Sequence[str]) -> None:
    """Run ``plan`` (``"bn-<method>"``, ``"sync-bn"``, ``"uneven-<method>"``, ``"fail-<how>"``, ``"lightning-
    <method>"``) and save what each rank saw to ``outdir/rank{rank}.pt``. A ``fail-`` item is alone in its
    plan: the process group has the short timeout and rank 1 may end without an orderly shutdown."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    results: dict[str, Any] = {}
    failure = next((item[5:] for item in plan if item.startswith("fail-")), None)
    try:
        dist.init_process_group(
            "gloo",
            init_method=f"tcp://127.0.0.1:{port}",
            rank=rank,
            world_size=world,
            timeout=_worker.SHORT if failure is not None else _worker.TIMEOUT,
        )
        for item in plan:
            kind, _, name = item.partition("-")
            if kind == "bn":
                results[item] = batch_norm(rank, world, name)
            elif item == "sync-bn":
                results[item] = sync_batch_norm(rank, world)
            elif kind == "uneven":
                results[item] = uneven(rank, name)
            elif kind == "fail":
                results[item] = failing(rank, world, name)
            else:
                raise ValueError(f"unknown plan item {item!r}")
        if failure is None:
            dist.barrier()
    except Exception:
        results["crash"] = traceback.format_exc()
    torch.save(results, Path(outdir) / f"rank{rank}.pt")
    if failure is not None:
        os._exit(0)  # no orderly shutdown with a peer gone
    _worker.shutdown()


def lightning(rank: int, world: int, port: int, outdir: str, methods: list[str]) -> None:
    """The Lightning worker of :mod:`._lightning_worker` with a global batch of 6 (3 ranks × 2 samples)."""
    from . import _lightning_worker as lw

    lw.GLOBAL = 6
    lw.run(rank, world, port, outdir, methods)
