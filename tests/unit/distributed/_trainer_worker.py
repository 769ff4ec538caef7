"""What each rank runs in the Trainer tests under DDP (spawned processes import this module).

The model and losses of :mod:`._worker` (a tanh MLP trunk, three heads), a dataset of ``N`` samples, each
rank a shuffled ``DistributedSampler`` slice with ``GLOBAL // world`` samples per batch, so that a pass has
``N // GLOBAL`` batches on every world size; :func:`run` trains with :class:`molearn.train.Trainer`.
"""

from __future__ import annotations

import shutil
import traceback
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from molearn import methods as M
from molearn.train import Trainer

from . import _worker

N = 24
GLOBAL = 8  # samples per step, all ranks together: 3 batches per pass
EPOCHS = 2
#: name -> method factory (RLW with a generator: its state is in the checkpoint, broadcast at the first step)
METHODS = {
    "mgda": lambda: M.MGDA(),
    "famo": lambda: M.FAMO(),
    "rlw": lambda: M.RLW(generator=torch.Generator().manual_seed(5)),
}


class KilledError(RuntimeError):
    """Raised by the loss function on every rank at once: a run killed in the middle of an epoch."""


def data() -> TensorDataset:
    g = torch.Generator().manual_seed(3)
    return TensorDataset(torch.randn(N, 5, generator=g), torch.randn(N, _worker.K, generator=g))


def loader(rank: int, world: int, per_rank: int | None = None) -> DataLoader[Any]:
    """Rank ``rank``'s loader: a shuffled ``DistributedSampler`` slice, ``GLOBAL // world`` per batch."""
    sampler = DistributedSampler(data(), num_replicas=world, rank=rank, shuffle=True, seed=7)
    return DataLoader(data(), batch_size=per_rank or GLOBAL // world, sampler=sampler)


def trainer(name: str, world: int, log_dir: Path | None, **kw: Any) -> Trainer:
    """A Trainer of a fresh model (seed 0), wrapped in DDP when ``world > 1``."""
    net = _worker.model()
    model: nn.Module = nn.parallel.DistributedDataParallel(net) if world > 1 else net
    stop_at = kw.pop("stop_at", None)
    made: list[Trainer] = []

    def loss_fn(m: nn.Module, batch: Any) -> list[torch.Tensor]:
        if stop_at is not None and made[0].global_step + 1 == stop_at:
            raise KilledError(f"killed in step {stop_at}")
        x, y = batch
        return _worker.losses_of(m, x, y)

    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    made.append(
        Trainer(
            model,
            loss_fn,
            METHODS[name](),
            opt,
            shared=net.trunk.parameters(),
            log_dir=log_dir,
            progress=False,
            **kw,
        )
    )
    return made[0]


def params(t: Trainer) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in t.model.parameters()])


def summary(t: Trainer) -> dict[str, Any]:
    return {"params": params(t), "state": t.method.state_dict(), "step": t.global_step, "epoch": t.epoch}


def run(rank: int, world: int, port: int, outdir: str, names: list[str]) -> None:
    """For each method: an uninterrupted run (epoch 1, then on to epoch 2: the epoch-end checkpoint is kept
    as ``epoch1.pt``), each rank with its own ``log_dir`` (only rank 0 may create one); then a run in a
    shared ``log_dir`` killed in step 5 (checkpoints every 2 steps: step 4's is kept as ``step4.pt``) and
    resumed by a fresh Trainer on every rank. Also: loaders of different lengths and a failing write on rank 0
    are errors on every rank."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    out = Path(outdir)
    results: dict[str, Any] = {}
    try:
        dist.init_process_group(
            "gloo",
            init_method=f"tcp://127.0.0.1:{port}",
            rank=rank,
            world_size=world,
            timeout=_worker.TIMEOUT,
        )
        for name in names:
            res: dict[str, Any] = {}
            own = out / name / f"union-rank{rank}"
            t = trainer(name, world, own)
            t.fit(loader(rank, world), 1)
            if rank == 0:
                shutil.copy(own / "checkpoint.pt", out / name / "epoch1.pt")
            t.fit(loader(rank, world), EPOCHS)
            res["union"] = summary(t)
            shared = out / name / "resume"
            killed = trainer(name, world, shared, checkpoint_every=2, stop_at=5)
            try:
                killed.fit(loader(rank, world), EPOCHS)
            except KilledError:
                res["killed-at"] = killed.global_step
            dist.barrier()
            if rank == 0:
                shutil.copy(shared / "checkpoint.pt", out / name / "step4.pt")
            resumed = trainer(name, world, shared, checkpoint_every=2)
            resumed.fit(loader(rank, world), EPOCHS, resume=True)
            res["resumed"] = summary(resumed)
            results[name] = res
        uneven = trainer("mgda", world, None)  # rank 1's loader has 6 batches per pass, rank 0's 3
        try:
            uneven.fit(loader(rank, world, per_rank=2 if rank == 1 else None), 1)
            results["@uneven"] = "no error"
        except Exception as exc:
            results["@uneven"] = f"{type(exc).__name__}: {exc}"
        blocked = out / "a-file"
        if rank == 0:
            blocked.write_text("not a folder")
        dist.barrier()
        t = trainer("mgda", world, None)
        t.fit(loader(rank, world), 1)
        try:
            t.save_checkpoint(blocked / "checkpoint.pt")
            results["@failed-write"] = "no error"
        except Exception as exc:
            results["@failed-write"] = f"{type(exc).__name__}: {exc}"
        dist.barrier()
    except Exception:
        results["crash"] = traceback.format_exc()
    torch.save(results, out / f"rank{rank}.pt")
    _worker.shutdown()
