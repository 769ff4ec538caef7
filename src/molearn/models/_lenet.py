"""Small multi-task models for the benchmarks.

:class:`MultiLeNet` is the LeNet of the Multi-MNIST experiments of Pareto-MTL (Lin et al., NeurIPS 2019,
``model_lenet.py``), also used by the SDMGrad consistency experiment (ml-opt-lab/sdmgrad ``consistency/``):
for 36×36 single-channel inputs,

- shared trunk: ``Conv2d(1, 10, 9)`` → ReLU → max-pool 2 → ``Conv2d(10, 20, 5)`` → ReLU → max-pool 2 →
  flatten (20·5·5 = 500) → ``Linear(500, 50)`` → ReLU;
- one head per task: ``Linear(50, 10)`` (logits).

``forward`` returns the list of the K heads' logits; :meth:`MultiLeNet.shared_parameters` gives the trunk's
parameters (what :class:`molearn.Balancer` / :class:`molearn.train.Trainer` balance) and
:meth:`MultiLeNet.task_parameters` the heads'.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MultiLeNet"]


class MultiLeNet(nn.Module):
    """Pareto-MTL's multi-task LeNet for ``(N, channels, size, size)`` inputs (default 1×36×36), ``tasks``
    heads of ``classes`` logits each."""

    def __init__(self, tasks: int = 2, classes: int = 10, size: int = 36, channels: int = 1) -> None:
        super().__init__()
        if tasks < 1:
            raise ValueError(f"tasks must be >= 1, got {tasks}")
        side = ((size - 8) // 2 - 4) // 2  # conv 9 (valid), pool 2, conv 5 (valid), pool 2
        if side < 1:
            raise ValueError(f"inputs of size {size} are too small for LeNet (need at least 20)")
        self.conv1 = nn.Conv2d(channels, 10, kernel_size=9)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.fc = nn.Linear(20 * side * side, 50)
        self.heads = nn.ModuleList(nn.Linear(50, classes) for _ in range(tasks))

    def trunk(self, x: Tensor) -> Tensor:
        """The shared representation (N, 50)."""
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return F.relu(self.fc(x.flatten(1)))

    def forward(self, x: Tensor) -> list[Tensor]:
        z = self.trunk(x)
        return [head(z) for head in self.heads]

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        for module in (self.conv1, self.conv2, self.fc):
            yield from module.parameters()

    def task_parameters(self) -> Iterator[nn.Parameter]:
        return self.heads.parameters()
