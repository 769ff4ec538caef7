"""What each rank runs in the distributed tests (spawned processes import this module).

A tiny multi-task model (a tanh MLP trunk, three linear heads), a fixed global batch of 24 samples, each rank
an equal slice of it, the unchanged user loop (``balancer.backward(losses)``, ``optimizer.step()``, FAMO's
``balancer.update``), a few steps. :func:`train` also runs the single-process reference on the union batch.
"""

from __future__ import annotations

import datetime
import os
import socket
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch import nn

import molearn
from molearn import methods as M

K = 3
N = 24  # the global batch: equal slices for 1, 2 and 3 ranks
STEPS = 3
TIMEOUT = datetime.timedelta(seconds=20)
SHORT = datetime.timedelta(seconds=3)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh())
        self.heads = nn.ModuleList(nn.Linear(8, 1) for _ in range(K))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        z = self.trunk(x)
        self.features = z  # for mode="representation"
        return [h(z).squeeze(-1) for h in self.heads]


def model() -> Net:
    torch.manual_seed(0)
    return Net()


def batches(count: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Global batches (the first one for the drop-in loop; the closure-driven ``step`` draws several)."""
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(N, 5, generator=g), torch.randn(N, K, generator=g)) for _ in range(count)]


def losses_of(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    return [((o - y[:, i]) ** 2).mean() for i, o in enumerate(net(x))]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


#: name -> method factory of the rank (a rank-dependent seed: the Balancer must broadcast rank 0's state)
METHODS: dict[str, Callable[[int], M.Method]] = {
    "ew": lambda r: M.EW(),
    "dwa": lambda r: M.DWA(),
    "uw": lambda r: M.UW(),
    "famo": lambda r: M.FAMO(),
    "rlw": lambda r: M.RLW(generator=_gen(100 + r)),
    "mgda": lambda r: M.MGDA(),
    "upgrad": lambda r: M.UPGrad(),
    "nashmtl": lambda r: M.NashMTL(),
    "pcgrad": lambda r: M.PCGrad(generator=_gen(200 + r)),
    "pcgrad-global-rng": lambda r: M.PCGrad(),
    "graddrop": lambda r: M.GradDrop(generator=_gen(300 + r)),
    "modo": lambda r: M.MoDo(),
    "sdmgrad": lambda r: M.SDMGrad(),  # three batches per step, warm-started state
    "sdmgrad-os": lambda r: M.SDMGradOS(n=2, generator=_gen(400 + r)),  # a random subset per step
}


def train(
    name: str,
    *,
    rank: int = 0,
    world: int = 1,
    wrap: Callable[[nn.Module], nn.Module] | None = None,
    pass_module: bool = True,
    objectives: int = K,
    **balancer: Any,
) -> dict[str, Any]:
    """``STEPS`` steps of the method on this rank's slice (the whole batch when ``world == 1``): the final
    parameters, the method's state and the bytes of the last step's collectives."""
    net = model()
    wrapped = wrap(net) if wrap is not None else net
    method = METHODS[name](rank)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10) if balancer.pop("scaled", False) else None
    sharded = balancer.pop("sharded", None)
    bal = molearn.Balancer(method, shared=net.trunk, module=wrapped if pass_module else None, **balancer)
    if sharded is not None:  # force the Gramian scheme (by default: reduce-scatter on NCCL only)
        assert bal.collective is not None
        bal.collective.sharded = sharded
    representation = balancer.get("mode") == "representation"
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    n = N // world
    part = slice(rank * n, (rank + 1) * n)
    several = method.needs.batches > 1
    data = [(x[part], y[part]) for x, y in batches(method.needs.batches * STEPS if several else 1)]
    if several:  # closure-driven: independent batches per step
        it = iter(data)
        for _ in range(STEPS):
            bal.step(lambda b: losses_of(wrapped, *b), it, opt)
    else:
        x, y = data[0]
        for _ in range(STEPS):
            opt.zero_grad()
            losses = losses_of(wrapped, x, y)[:objectives]
            bal.backward(losses, features=net.features if representation else None, scaler=scaler)
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            if method.needs.after_step:
                with torch.no_grad():
                    bal.update(losses_of(wrapped, x, y)[:objectives])
    coll = bal.collective
    return {
        "params": torch.cat([p.detach().flatten() for p in net.parameters()]),
        "state": method.state_dict(),
        "log": list(coll.log.calls) if coll is not None else [],
        "shared": sum(p.numel() for p in net.trunk.parameters()),
        "width": sum(p.numel() for p in net.parameters()),
    }


def nan_on_one_rank(rank: int, world: int) -> dict[str, Any]:
    """Rank 1's losses are NaN in the second step: with ``on_nonfinite="skip"`` every rank skips it."""
    net = model()
    ddp = _ddp()(net)
    bal = molearn.Balancer(M.MGDA(), shared=net.trunk, module=ddp, on_nonfinite="skip")
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = batches(1)[0]
    n = N // world
    x, y = x[rank * n : (rank + 1) * n], y[rank * n : (rank + 1) * n]
    skipped = []
    for step in range(STEPS):
        opt.zero_grad()
        losses = losses_of(ddp, x, y)
        if step == 1 and rank == 1:
            losses = [loss * float("nan") for loss in losses]
        info = bal.backward(losses)
        skipped.append(info.skipped)
        if not info.skipped:
            opt.step()
    return {"params": torch.cat([p.detach().flatten() for p in net.parameters()]), "skipped": skipped}


def _ddp(**kw: Any) -> Callable[[nn.Module], nn.Module]:
    return lambda m: nn.parallel.DistributedDataParallel(m, **kw)


def _expect_error(fn: Callable[[], Any]) -> str:
    try:
        fn()
    except Exception as exc:  # what the test asserts on: the type and the message
        return f"{type(exc).__name__}: {exc}"
    return "no error"


def refusals(rank: int, world: int) -> dict[str, str]:
    """The errors of what is not supported (each names it)."""
    out: dict[str, str] = {}
    net = model()
    out["no-ddp"] = _expect_error(lambda: molearn.Balancer(M.MGDA(), shared=net.trunk))
    out["false-with-ddp"] = _expect_error(
        lambda: molearn.Balancer(M.EW(), shared=net.trunk, module=_ddp()(net), distributed=False)
    )
    out["static-graph"] = _expect_error(
        lambda: molearn.Balancer(M.MGDA(), shared=net.trunk, module=_ddp(static_graph=True)(model()))
    )
    out["samo"] = _expect_error(
        lambda: molearn.Balancer(M.SAMO(M.MGDA()), shared=net.trunk, module=_ddp()(model()))
    )

    def layout() -> None:  # rank 1's objective 2 skips its head: the ranks find different task parameters
        m = model()
        ddp = _ddp()(m)
        bal = molearn.Balancer(M.MGDA(), shared=m.trunk, module=ddp)
        x, y = batches(1)[0]
        outs = ddp(x)
        if rank == 1:
            outs[2] = m.trunk(x).sum(-1)
        bal.backward([((o - y[:, i]) ** 2).mean() for i, o in enumerate(outs)])

    out["layout"] = _expect_error(layout)
    from torch.distributed.fsdp import FullyShardedDataParallel

    m1 = model()
    f1 = FullyShardedDataParallel(m1, device_id=torch.device("cpu"))
    out["fsdp"] = _expect_error(lambda: molearn.Balancer(M.EW(), shared=f1.parameters(), module=f1))
    return out


def shutdown(code: int = 0) -> NoReturn:
    """Destroy the default group and leave the process without the interpreter's teardown.

    After the last collective, gloo's worker threads may still be releasing its work, whose tensors belong to
    Python objects; if the interpreter is being torn down by then, the thread cannot take the GIL and the
    process aborts (SIGABRT, "terminate called without an active exception"; seen in about 1 of 30 3-process
    runs on torch 2.13, with a core dump showing ``~AsyncWork`` in ``ProcessGroupGloo::runLoop`` during
    ``Py_FinalizeEx``; pytorch/pytorch#179291). ``destroy_process_group()`` did not join those threads (the
    group stayed alive after it, its threads too), so the rank's results are saved first and the process
    ends with ``os._exit``."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def worker(rank: int, world: int, port: int, outdir: str, plan: list[str]) -> None:
    """Run ``plan`` (method names, ``"@refusals"``, ``"@find-unused"``, ``"@by-hand"``, ``"@raise"``) and
    save what each rank saw to ``outdir/rank{rank}.pt``."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    results: dict[str, Any] = {}
    try:
        timeout = SHORT if "@raise-alive" in plan else TIMEOUT
        dist.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world, timeout=timeout
        )
        for item in plan:
            if item == "@raise":  # rank 1 fails before the step; rank 0 must get an error, not hang
                if rank == 1:
                    raise RuntimeError("rank 1 fails on purpose")
                results[item] = _expect_error(lambda: train("mgda", rank=rank, world=world, wrap=_ddp()))
            elif item == "@raise-alive":  # rank 1 fails and stays alive: rank 0 times out, no hang
                if rank == 1:
                    time.sleep(SHORT.total_seconds() + 3)
                    raise RuntimeError("rank 1 fails on purpose")
                results[item] = _expect_error(lambda: train("mgda", rank=rank, world=world, wrap=_ddp()))
            elif item == "@nan":
                results[item] = nan_on_one_rank(rank, world)
            elif item == "@refusals":
                results[item] = refusals(rank, world)
            elif item == "@find-unused":
                results[item] = train("mgda", rank=rank, world=world, wrap=_ddp(find_unused_parameters=True))
            elif item == "@found":  # the DDP wrapper is not given: found from the shared parameters
                results[item] = train("nashmtl", rank=rank, world=world, wrap=_ddp(), pass_module=False)
            elif item.startswith("@scaled-"):  # a GradScaler: scaled writes, unscaled statistics
                results[item] = train(item[8:], rank=rank, world=world, wrap=_ddp(), scaled=True)
            elif item.startswith("@sharded-"):  # the reduce-scattered Jacobian, as on NCCL
                results[item] = train(item[9:], rank=rank, world=world, wrap=_ddp(), sharded=True)
            elif item == "@one-objective":  # K = 1: the gradient passes through, averaged
                results[item] = train("mgda", rank=rank, world=world, wrap=_ddp(), objectives=1)
            elif item == "@representation":
                results[item] = train("mgda", rank=rank, world=world, wrap=_ddp(), mode="representation")
            elif item.startswith("@unchecked-"):  # check_finite=False: DDP's hooks average loss-only writes
                results[item] = train(item[11:], rank=rank, world=world, wrap=_ddp(), check_finite=False)
            elif item.startswith("@before-"):  # the Balancer as before issue 16: each rank balances alone
                import molearn._balancer as balancer_module

                detect = balancer_module.detect
                balancer_module.detect = lambda *args: None
                try:
                    results[item] = train(item[8:], rank=rank, world=world, wrap=_ddp())
                finally:
                    balancer_module.detect = detect
            elif item == "@by-hand":
                results[item] = train("upgrad", rank=rank, world=world, distributed=True)
            else:
                results[item] = train(item, rank=rank, world=world, wrap=_ddp())
        if "@raise" not in plan and "@raise-alive" not in plan:
            dist.barrier()
    except Exception:
        results["crash"] = traceback.format_exc()
    torch.save(results, Path(outdir) / f"rank{rank}.pt")
    if "@raise" in plan or "@raise-alive" in plan:
        os._exit(1 if "crash" in results else 0)  # no orderly shutdown with a peer gone
    shutdown()


def spawn(
    target: Callable[..., None], world: int, tmp: Path, plan: Any, timeout: float
) -> list[dict[str, Any]]:
    """Run ``target(rank, world, port, tmp, plan)`` on ``world`` spawned processes and load what each saved
    to ``tmp/rank{r}.pt``; a process still alive after ``timeout`` s is killed and fails the test (a hang)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [
        ctx.Process(target=target, args=(r, world, port, str(tmp), plan), daemon=True) for r in range(world)
    ]
    for p in procs:
        p.start()
    deadline = time.monotonic() + timeout
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    hung = [r for r, p in enumerate(procs) if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    assert not hung, f"ranks {hung} still running after {timeout} s (a hang)"
    return [torch.load(Path(tmp) / f"rank{r}.pt", weights_only=False) for r in range(world)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
