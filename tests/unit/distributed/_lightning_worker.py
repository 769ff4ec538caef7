"""What each process runs in the Lightning test (as ``torchrun`` would start it: Lightning finds the
torchelastic environment, initialises gloo and wraps the module in DDP).

The model and losses of :mod:`._worker`, 24 samples (Lightning's ``DistributedSampler`` of the training
loader shuffles with seed 0 and gives rank r the positions r, r + W, ... of its order), ``GLOBAL // world``
per rank and step, 3 steps of SGD.
"""

from __future__ import annotations

import datetime
import os
import traceback
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from . import _worker

GLOBAL = 8
STEPS = 3


def _module(method: str) -> Any:
    """``"name"`` or ``"name:unchecked"`` (``check_finite=False``: a loss-only write would go through DDP's
    hooks, which Lightning's forward has not prepared; BalancedModule makes molearn average it)."""
    from molearn.integrations.lightning import BalancedModule

    name, _, variant = method.partition(":")
    kwargs = {"check_finite": False} if variant == "unchecked" else {}

    class Module(BalancedModule):
        def __init__(self) -> None:
            super().__init__(name, balancer_kwargs=kwargs)
            self.net = _worker.model()

        def shared_parameters(self) -> Any:
            return self.net.trunk.parameters()

        def objectives(self, batch: Any, batch_idx: int) -> list[torch.Tensor]:
            x, y = batch
            return _worker.losses_of(self.net, x, y)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return Module()


def train(method: str, world: int, checkpoint: Path | None = None) -> dict[str, Any]:
    import lightning.pytorch as pl
    from lightning.pytorch.strategies import DDPStrategy

    x, y = _worker.batches(1)[0]
    data = TensorDataset(x, y)
    # under DDP Lightning replaces the sampler by DistributedSampler(shuffle=True, seed=0); one process
    # gets that sampler's order for one replica: the ranks' batches j together are its batch j
    one = DistributedSampler(data, num_replicas=1, rank=0, shuffle=True, seed=0) if world == 1 else None
    loader = DataLoader(data, batch_size=GLOBAL // world, sampler=one)
    strategy: Any = (
        DDPStrategy(process_group_backend="gloo", timeout=datetime.timedelta(seconds=60))
        if world > 1
        else "auto"
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=world,
        strategy=strategy,
        max_steps=STEPS,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    module = _module(method)
    trainer.fit(module, loader)
    if checkpoint is not None:
        trainer.save_checkpoint(checkpoint)
    bal = module.balancer
    return {
        "params": torch.cat([p.detach().flatten() for p in module.net.parameters()]),
        "state": module.method.state_dict(),
        "wrapped": type(bal.collective.ddp).__name__
        if bal is not None and bal.collective is not None
        else None,
        "distributed": bal is not None and bal.collective is not None,
    }


def run(rank: int, world: int, port: int, outdir: str, methods: list[str]) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        GROUP_RANK="0",
        WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    out = Path(outdir)
    results: dict[str, Any] = {}
    try:
        for method in methods:
            results[method] = train(method, world)
    except Exception:
        results["crash"] = traceback.format_exc()
    torch.save(results, out / f"rank{rank}.pt")
    _worker.shutdown()
