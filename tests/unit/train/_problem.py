"""A tiny two-task problem for the trainer tests (imported by the test module and by killed child runs)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from molearn.methods import Method, get
from molearn.train import Trainer


class Net(nn.Module):
    """Shared trunk (with dropout, so the global RNG matters) and two regression heads."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Dropout(0.1))
        self.heads = nn.ModuleList(nn.Linear(16, 1) for _ in range(2))

    def shared_parameters(self) -> Any:
        return self.trunk.parameters()

    def forward(self, x: Tensor) -> list[Tensor]:
        z = self.trunk(x)
        return [h(z).squeeze(1) for h in self.heads]


def data(n: int = 96) -> TensorDataset:
    g = torch.Generator().manual_seed(123)
    x = torch.randn(n, 6, generator=g)
    y = torch.stack([x[:, 0] - x[:, 1], torch.sin(x[:, 2]) + 0.5 * x[:, 0]], dim=1)
    return TensorDataset(x, y)


def loss_fn(model: nn.Module, batch: Any) -> Tensor:
    x, y = batch
    preds = model(x)
    return torch.stack([((p - y[:, i]) ** 2).mean() for i, p in enumerate(preds)])


def build(
    method: str | Method,
    log_dir: str | Path | None,
    *,
    sleep: float = 0.0,
    scheduler_step: str = "epoch",
    checkpoint_every: int | None = 4,
    seed: int = 0,
    batch_size: int = 16,
    n: int = 96,
    loss: Any = None,
    **kwargs: Any,
) -> tuple[Trainer, DataLoader]:
    """A fresh trainer (model initialised from a fixed seed, independent of the global RNG)."""
    with torch.random.fork_rng():
        torch.manual_seed(7)
        model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    if scheduler_step == "step":
        sched: Any = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[5, 15, 25], gamma=0.5)
    else:
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.7)
    base = loss or loss_fn

    def slow_loss(model: nn.Module, batch: Any) -> Tensor:
        if sleep:
            time.sleep(sleep)
        return base(model, batch)

    trainer = Trainer(
        model,
        slow_loss,
        get(method) if isinstance(method, str) else method,
        opt,
        scheduler=sched,
        scheduler_step=scheduler_step,  # type: ignore[arg-type]
        log_dir=log_dir,
        checkpoint_every=checkpoint_every,
        seed=seed,
        progress=False,
        **kwargs,
    )
    loader = DataLoader(data(n), batch_size=batch_size, shuffle=True)
    return trainer, loader
