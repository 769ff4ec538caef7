"""Hard parameter sharing and cross-stitch networks.

- :class:`HardSharing`: one encoder shared by every task, one head per task (Caruana, "Multitask
  Learning: A Knowledge-Based Source of Inductive Bias", ICML 1993).
- :class:`CrossStitch`: one network ("column") per task whose stage outputs are mixed by learned K×K
  cross-stitch units (Misra, Shrivastava, Gupta & Hebert, "Cross-stitch Networks for Multi-task
  Learning", CVPR 2016).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from ._common import MultiTaskModule, sub

__all__ = ["CrossStitch", "HardSharing"]


def _heads(heads: Sequence[nn.Module]) -> nn.ModuleList:
    if isinstance(heads, nn.Module) and not isinstance(heads, nn.ModuleList):
        raise TypeError("heads must be a sequence of modules, one per task")
    out = nn.ModuleList(heads)
    if len(out) == 0:
        raise ValueError("give at least one head (one per task)")
    return out


class HardSharing(MultiTaskModule):
    """Hard parameter sharing: ``forward(x) = [head_t(encoder(x)) for each task t]``.

    Args:
        encoder: the shared trunk, any module mapping the input to a representation.
        heads: one module per task, reading the representation.

    ``forward(x, task=i)`` returns only task i's output (multi-input problems, one data set per task).
    Shared: the encoder; task-specific: the heads.
    """

    def __init__(self, encoder: nn.Module, heads: Sequence[nn.Module]) -> None:
        super().__init__()
        self.encoder = encoder
        self.heads = _heads(heads)

    def forward(self, x: Tensor, task: int | None = None) -> list[Tensor] | Tensor:
        z = self.encoder(x)
        if task is not None:
            return self.heads[task](z)
        return [head(z) for head in self.heads]

    def shared_modules(self) -> Iterable[nn.Module]:
        return [self.encoder]

    def task_modules(self) -> Iterable[nn.Module]:
        return [self.heads]


class CrossStitch(MultiTaskModule):
    """Cross-stitch network: K columns of L stages; after every stage ``l`` a cross-stitch unit
    ``α_l ∈ R^{K×K}`` replaces the column outputs ``x_1..x_K`` by ``x̃_i = Σ_j α_l[i, j] x_j``, which the
    next stage of column ``i`` (or, after the last stage, head ``i``) reads.

    Args:
        columns: one sequence of L stage modules per task; at each stage the columns' outputs must have the
            same shape (columns are usually copies of one architecture, e.g. ``copy.deepcopy``).
        heads: one module per task, reading its column's last mixed output.
        init: ``(α_same, α_different)``, the initial diagonal and off-diagonal entries of every unit. Default
            ``(0.9, 0.1)``, the paper's best convex initialisation (Misra et al., Sec. 5.1); ``(1, 0)``
            starts from independent networks. LibMTL initialises every entry to 1 (and mixes only after
            ResNet layers 1-3); pass ``(1.0, 1.0)`` for that.

    ``forward(x)`` feeds x to every column and returns the K heads' outputs. The units are
    ``self.units`` (shape (L, K, K)); the paper trains them with a larger learning rate (×10²-10³), for
    which they can be given their own optimiser parameter group.

    Shared parameters: every column and the units. Once an off-diagonal ``α`` is non-zero, the output of
    every task depends on every column (and every unit), so no column is task-specific — the choice of
    LibMTL, whose ``Cross_stitch.get_share_params()`` is the whole cross-stitch encoder. Task-specific:
    the heads.
    """

    def __init__(
        self,
        columns: Sequence[Sequence[nn.Module]],
        heads: Sequence[nn.Module],
        *,
        init: tuple[float, float] = (0.9, 0.1),
    ) -> None:
        super().__init__()
        cols = [list(c) for c in columns]
        if not cols:
            raise ValueError("give one column (a sequence of stages) per task")
        depth = len(cols[0])
        if depth == 0 or any(len(c) != depth for c in cols):
            raise ValueError(
                f"every column needs the same positive number of stages, got {[len(c) for c in cols]}"
            )
        self.columns = nn.ModuleList(nn.ModuleList(c) for c in cols)
        self.heads = _heads(heads)
        k = len(cols)
        if len(self.heads) != k:
            raise ValueError(f"{k} columns but {len(self.heads)} heads: give one of each per task")
        same, diff = (float(v) for v in init)
        unit = torch.full((k, k), diff)
        unit.fill_diagonal_(same)
        self.units = nn.Parameter(unit.expand(depth, k, k).clone())

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = [x] * len(self.columns)
        for stage in range(self.units.shape[0]):
            outs = torch.stack([sub(self.columns, t)[stage](f) for t, f in enumerate(feats)])  # (K, N, ...)
            mixed = torch.tensordot(self.units[stage], outs, dims=([1], [0]))
            feats = list(mixed.unbind(0))
        return [head(f) for head, f in zip(self.heads, feats)]

    def shared_modules(self) -> Iterable[nn.Module | nn.Parameter]:
        return [self.columns, self.units]

    def task_modules(self) -> Iterable[nn.Module]:
        return [self.heads]
