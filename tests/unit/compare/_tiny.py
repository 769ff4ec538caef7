"""A tiny regression benchmark (two tasks, MAE) for the protocol tests, plus broken variants.

Importable as ``tests.unit.compare._tiny:<name>`` by ``molearn compare --benchmark``."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from molearn.compare import Benchmark, Metric, Schedule

_g = torch.Generator().manual_seed(0)
X = torch.randn(112, 6, generator=_g)
W = torch.randn(6, 2, generator=_g)
Y = X @ W + 0.1 * torch.randn(112, 2, generator=_g)
SPLITS = {"train": slice(0, 64), "val": slice(64, 88), "test": slice(88, 112)}


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(6, 16), nn.ReLU())
        self.heads = nn.ModuleList(nn.Linear(16, 1) for _ in range(2))

    def forward(self, x: Tensor) -> Tensor:
        z = self.trunk(x)
        return torch.cat([h(z) for h in self.heads], dim=1)

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        return self.trunk.parameters()

    def task_parameters(self) -> Iterator[nn.Parameter]:
        return self.heads.parameters()


def data(split: str) -> TensorDataset:
    return TensorDataset(X[SPLITS[split]], Y[SPLITS[split]])


def losses(model: nn.Module, batch: Any) -> Tensor:
    x, y = batch
    return ((model(x) - y) ** 2).mean(0)


def scores(model: nn.Module, batch: Any) -> dict[str, Tensor]:
    x, y = batch
    err = (model(x) - y).abs()
    return {"mae_a": err[:, 0], "mae_b": err[:, 1]}


bench = Benchmark(
    name="tiny",
    tasks=["a", "b"],
    data=data,
    model=Net,
    loss_fn=losses,
    metrics=[Metric("mae_a", "a", higher_is_better=False), Metric("mae_b", "b", higher_is_better=False)],
    score_fn=scores,
    schedule=Schedule(epochs=4, batch_size=16, optimizer="adam", lr=1e-2),
    methods=["ew", "mgda"],
)


def make_bench() -> Benchmark:  # a factory of no arguments is accepted too
    return dataclasses.replace(bench, name="tiny-factory")


# published-style baselines and ReduceLROnPlateau on the validation loss (the QM9 protocol's shape)
plateau = dataclasses.replace(
    bench,
    name="tiny-plateau",
    baselines={"mae_a": 1.0, "mae_b": 1.0},
    schedule=Schedule(
        epochs=4, batch_size=16, optimizer="adam", lr=1e-2, scheduler="plateau",
        scheduler_kwargs={"factor": 0.5, "patience": 0},
    ),
)  # fmt: skip


# one data set per task (Office-31's shape): batches are ((x_a, y_a), (x_b, y_b))
class ZipLoader:
    def __init__(self, parts: tuple[Any, ...], batch_size: int, shuffle: bool) -> None:
        self.loaders = [DataLoader(p, batch_size=batch_size, shuffle=shuffle) for p in parts]

    def __len__(self) -> int:
        return min(len(ld) for ld in self.loaders)

    def __iter__(self) -> Iterator[Any]:
        return zip(*self.loaders)


def _per_task_data(split: str) -> tuple[TensorDataset, TensorDataset]:
    sl = SPLITS[split]
    return TensorDataset(X[sl], Y[sl, 0]), TensorDataset(X[sl].flip(0), Y[sl, 1].flip(0))


def _per_task_losses(model: nn.Module, batch: Any) -> Tensor:
    return torch.stack([((model(x)[:, k] - y) ** 2).mean() for k, (x, y) in enumerate(batch)])


def _per_task_scores(model: nn.Module, batch: Any) -> dict[str, Tensor]:
    return {f"mae_{t}": (model(x)[:, k] - y).abs() for k, (t, (x, y)) in enumerate(zip("ab", batch))}


multi_input = dataclasses.replace(
    bench,
    name="tiny-multi-input",
    data=_per_task_data,
    loss_fn=_per_task_losses,
    score_fn=_per_task_scores,
    loader=ZipLoader,
)


# ---------------------------------------------------------------------------------------- broken variants
class NoShared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(6, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.lin(x)


no_shared = dataclasses.replace(bench, name="tiny-no-shared", model=NoShared)
three_losses = dataclasses.replace(
    bench, name="tiny-3", loss_fn=lambda m, b: torch.cat([losses(m, b), losses(m, b)[:1]])
)
bad_metric = dataclasses.replace(
    bench,
    name="tiny-bad-metric",
    score_fn=lambda m, b: {"mae_a": scores(m, b)["mae_a"], "mae_c": scores(m, b)["mae_b"]},
)
not_a_benchmark = 42
