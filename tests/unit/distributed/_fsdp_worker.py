"""What each rank runs in the FSDP2 tests (spawned processes import this module).

The model, data and methods of :mod:`._worker` (a tanh MLP trunk of two Linear layers, three linear heads,
a fixed global batch of 24), sharded with FSDP2: each trunk Linear is its own ``fully_shard`` unit, the
root unit holds the heads (a 1×8 head leaves ranks 1 and 2 an empty shard). The user loop is unchanged.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

import molearn
from molearn import methods as M

from . import _worker
from ._worker import METHODS, STEPS, TIMEOUT, batches, losses_of


def shard(net: nn.Module, world: int, **kw: Any) -> nn.Module:
    """``fully_shard`` per trunk layer, then the root (the heads)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (world,))
    trunk = net.trunk
    for layer in (trunk[0], trunk[2]):
        fully_shard(layer, mesh=mesh, **kw)
    fully_shard(net, mesh=mesh, **kw)
    return net


def _full(params: list[torch.Tensor]) -> torch.Tensor:
    """The global parameters from the sharded ones (an all-gather of each, in one order on every rank; a
    forward pass without backward, as FAMO's ``update``, leaves the root unit's modules unsharded)."""
    return torch.cat([p.full_tensor().detach().flatten() for p in params])


def train(
    name: str,
    rank: int,
    world: int,
    *,
    objectives: int = _worker.K,
    poison: bool = False,
    fsdp: dict[str, Any] | None = None,
    **balancer: Any,
) -> dict[str, Any]:
    """``STEPS`` steps on this rank's slice, the model sharded with FSDP2: the global parameters, the
    method's state, the skipped steps and the bytes of molearn's collectives in the last step.

    ``poison``: in the second step rank 1 turns the gradient of the first trunk layer's unit 0 into NaN
    (a row that rank 0 holds): only rank 0's shard of the update is NaN, the losses stay finite."""
    net = shard(_worker.model(), world, **(fsdp or {}))
    sharded = list(net.parameters())
    method = METHODS[name](rank)
    bal = molearn.Balancer(method, shared=net.trunk, module=net, **balancer)
    representation = balancer.get("mode") == "representation"
    opt = torch.optim.SGD(sharded, lr=0.1)
    n = _worker.N // world
    part = slice(rank * n, (rank + 1) * n)
    several = method.needs.batches > 1
    data = [(x[part], y[part]) for x, y in batches(method.needs.batches * STEPS if several else 1)]
    skipped: list[bool] = []
    if several:
        it = iter(data)
        for _ in range(STEPS):
            bal.step(lambda b: losses_of(net, *b), it, opt)
    else:
        x, y = data[0]
        first = net.trunk[0]
        for step in range(STEPS):
            opt.zero_grad()
            hook = None
            if poison and step == 1 and rank == 1:

                def nan_unit0(module: nn.Module, args: Any, out: torch.Tensor) -> None:
                    out.register_hook(lambda g: g.index_fill(1, torch.tensor([0]), float("nan")))

                hook = first.register_forward_hook(nan_unit0)
            losses = losses_of(net, x, y)[:objectives]
            if hook is not None:
                hook.remove()
            info = bal.backward(losses, features=net.features if representation else None)
            skipped.append(info.skipped)
            if not info.skipped:
                opt.step()
            if method.needs.after_step:
                with torch.no_grad():
                    bal.update(losses_of(net, x, y)[:objectives])
    coll = bal.collective
    return {
        "params": _full(sharded),
        "state": method.state_dict(),
        "skipped": skipped,
        "log": list(coll.log.calls) if coll is not None else [],
        "collective": repr(coll),
    }


def _expect_error(fn: Callable[[], Any]) -> str:
    try:
        fn()
    except Exception as exc:  # what the test asserts on: the type and the message
        return f"{type(exc).__name__}: {exc}"
    return "no error"


def refusals(rank: int, world: int) -> dict[str, str]:
    """The errors of the FSDP options and modes molearn does not run (each names it)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, FullyShardedDataParallel, fully_shard

    out: dict[str, str] = {}
    x, y = batches(1)[0]
    n = _worker.N // world
    x, y = x[rank * n : (rank + 1) * n], y[rank * n : (rank + 1) * n]

    def build(**kw: Any) -> tuple[nn.Module, Any]:
        net = shard(_worker.model(), world)
        return net, molearn.Balancer(M.MGDA(), shared=net.trunk, module=net, **kw)

    out["gramian"] = _expect_error(lambda: build(mode="gramian"))
    out["false"] = _expect_error(lambda: build(distributed=False))

    def no_sync() -> None:
        net, bal = build()
        net.set_requires_gradient_sync(False)
        bal.backward(losses_of(net, x, y))

    out["no-sync"] = _expect_error(no_sync)

    def divide() -> None:
        net, bal = build()
        net.set_gradient_divide_factor(3.0)
        bal.backward(losses_of(net, x, y))

    out["divide"] = _expect_error(divide)

    def offload() -> None:
        net = _worker.model()
        fully_shard(net, mesh=init_device_mesh("cpu", (world,)), offload_policy=CPUOffloadPolicy())
        molearn.Balancer(M.EW(), shared=net.trunk, module=net)

    out["offload"] = _expect_error(offload)

    def hsdp() -> None:
        net = _worker.model()
        fully_shard(net, mesh=init_device_mesh("cpu", (1, world)))
        molearn.Balancer(M.EW(), shared=net.trunk, module=net)

    out["hsdp"] = _expect_error(hsdp)

    def fsdp1() -> None:
        f1 = FullyShardedDataParallel(_worker.model(), device_id=torch.device("cpu"))
        molearn.Balancer(M.EW(), shared=f1.parameters(), module=f1)

    out["fsdp1"] = _expect_error(fsdp1)
    return out


def worker(rank: int, world: int, port: int, outdir: str, plan: list[str]) -> None:
    """Run ``plan`` (method names, ``"@..."`` checks) and save each rank's results to ``outdir``."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    results: dict[str, Any] = {}
    try:
        dist.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world, timeout=TIMEOUT
        )
        for item in plan:
            if item == "@refusals":
                results[item] = refusals(rank, world)
            elif item.startswith("@unchecked-"):  # check_finite=False: FSDP's backward writes .grad
                results[item] = train(item[11:], rank, world, check_finite=False)
            elif item == "@one-objective":
                results[item] = train("mgda", rank, world, objectives=1)
            elif item == "@representation":
                results[item] = train("mgda", rank, world, mode="representation")
            elif item == "@keep-root":  # FSDP2's default: the root keeps its parameters after forward
                results[item] = train("upgrad", rank, world, fsdp={"reshard_after_forward": False})
            elif item.startswith("@bf16-"):  # parameters gathered in bfloat16, gradients reduced in float32
                from torch.distributed.fsdp import MixedPrecisionPolicy

                policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
                results[item] = train(item[6:], rank, world, fsdp={"mp_policy": policy})
            elif item.startswith("@nan-"):  # one rank's update shard is NaN: every rank skips the step
                results[item] = train(item[5:], rank, world, poison=True, on_nonfinite="skip")
            else:
                results[item] = train(item, rank, world)
        dist.barrier()
    except Exception:
        results["crash"] = traceback.format_exc()
    torch.save(results, Path(outdir) / f"rank{rank}.pt")
    _worker.shutdown()
