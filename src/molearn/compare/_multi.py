"""The built-in benchmarks: Multi-MNIST, Multi-Fashion and Multi-(Fashion+MNIST) with the Pareto-MTL LeNet.

Two items on a 36×36 canvas (:mod:`molearn.datasets`), two 10-way classification tasks (left and right
item), :class:`~molearn.models.MultiLeNet` (shared trunk, one linear head per task), cross-entropy losses,
test accuracy per task (higher is better, weight 1 in Δm).

**Validation split**: 10 % of the source training images (:data:`VAL_FRACTION`, held out by a
permutation seeded with ``molearn.datasets.VAL_SPLIT_SEED`` = 0) are kept for validation pairs only; the
training pairs are built from the other 90 %, the test pairs from the test images.

**Schedules**: ``full`` is the SDMGrad consistency protocol (LeNet, 120k training pairs, 100 epochs,
batch 256, SGD lr 1e-2 momentum 0.9, MultiStepLR milestones [15, 30, 45, 60, 75, 90] γ 0.5 stepped **per
iteration**, as the official code does), with 10k validation and all 20k test pairs; ``default`` is a
short schedule that finishes in about 20 minutes on 2 CPU cores for eight methods × 3 seeds: 24k training
pairs, 5k validation and 5k test pairs, 3 epochs, batch 64, the same SGD without the learning-rate decay
(the official milestones count iterations and would cut it 64-fold within the short run).
``method_kwargs``: CAGrad c = 0.4 (Nash-MTL / FAMO / FairGrad supervised setting), SDMGrad λ = 0.5
(SDMGrad consistency experiment).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._benchmark import Benchmark, Metric, Schedule

__all__ = ["MULTI_BENCHMARKS", "VAL_FRACTION", "multi_benchmark"]

VAL_FRACTION = 0.1
TASKS = ("left", "right")

DEFAULT_SCHEDULE = Schedule(
    epochs=3, batch_size=64, optimizer="sgd", lr=1e-2, momentum=0.9, train_size=24_000, eval_size=5_000,
    eval_batch_size=1000,
)  # fmt: skip
FULL_SCHEDULE = Schedule(
    epochs=100,
    batch_size=256,
    optimizer="sgd",
    lr=1e-2,
    momentum=0.9,
    scheduler="multistep",
    scheduler_kwargs={"milestones": [15, 30, 45, 60, 75, 90], "gamma": 0.5},
    scheduler_step="step",
    eval_batch_size=1000,
)
METHOD_KWARGS: dict[str, dict[str, Any]] = {
    "cagrad": {"c": 0.4},  # Nash-MTL / FAMO / FairGrad supervised setting
    "sdmgrad": {"lamda": 0.5},  # SDMGrad consistency experiment
}
_WHAT = {
    "multi_fashion": "two Fashion-MNIST items",
    "multi_mnist": "two MNIST digits",
    "multi_fashion_mnist": "an MNIST digit (left) and a Fashion-MNIST item (right)",
}


def _losses(model: nn.Module, batch: Any) -> Tensor:
    x, y = batch
    return torch.stack([F.cross_entropy(z, y[:, i]) for i, z in enumerate(model(x))])


def _scores(model: nn.Module, batch: Any) -> dict[str, Tensor]:
    x, y = batch
    return {f"acc_{t}": (z.argmax(1) == y[:, i]).float() for i, (t, z) in enumerate(zip(TASKS, model(x)))}


def _model() -> nn.Module:
    from ..models import MultiLeNet

    return MultiLeNet(tasks=len(TASKS))


class _MultiData:
    """``data(split, size)`` of a Multi-X benchmark (picklable: the benchmark can go to worker processes)."""

    def __init__(self, dataset: str) -> None:
        self.dataset = dataset

    def __call__(self, split: str, size: int | None = None) -> Any:
        from ..datasets import MultiDataset

        return MultiDataset.load(self.dataset, split, n=size, val_fraction=VAL_FRACTION)


def multi_benchmark(dataset: str) -> Benchmark:
    """The built-in benchmark on Multi-X data set ``dataset`` (``"multi_fashion"``, ``"multi_mnist"``,
    ``"multi_fashion_mnist"``)."""
    if dataset not in _WHAT:
        raise ValueError(f"unknown Multi-X data set {dataset!r}; valid: {', '.join(_WHAT)}")
    return Benchmark(
        name=dataset,
        tasks=TASKS,
        data=_MultiData(dataset),
        model=_model,
        loss_fn=_losses,
        metrics=[Metric(f"acc_{t}", t, True, label=f"{t} item accuracy") for t in TASKS],
        score_fn=_scores,
        schedule=DEFAULT_SCHEDULE,
        schedules={"full": FULL_SCHEDULE},
        method_kwargs=METHOD_KWARGS,
        description=(
            f"{dataset}: {_WHAT[dataset]} overlaid on a 36×36 canvas, classify the left and the right one "
            "(Sener & Koltun 2018; the Pareto-MTL construction); model: the Pareto-MTL / SDMGrad LeNet "
            f"(shared conv trunk, one linear head per task). Validation pairs come from {VAL_FRACTION:.0%} "
            "of the training images held out (seed 0), never seen in training."
        ),
    )


MULTI_BENCHMARKS: dict[str, Callable[[], Benchmark]] = {
    name: (lambda name=name: multi_benchmark(name))
    for name in _WHAT  # type: ignore[misc]
}
