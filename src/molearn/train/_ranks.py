"""The Trainer across processes (``torchrun``, a DDP-wrapped model): who writes, and how the ranks wait.

Rank 0 of the Balancer's process group writes the logs and the checkpoint; every rank takes the same steps
(the Balancer makes the update and the method state identical on every rank), reads the same checkpoint on
resume and learns from rank 0 whether a write succeeded, so that no rank waits on a peer that has failed.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..engine import Collective

__all__ = ["Ranks", "unwrap"]


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` wrapper (the model itself otherwise): its
    ``state_dict`` keys do not depend on the wrapping, so a checkpoint loads with any world size."""
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model


class Ranks:
    """The process group the Balancer reduces over (``None``: one process, every call is a no-op)."""

    def __init__(self, collective: Collective | None) -> None:
        self.group = None if collective is None else collective.group
        self.world = 1 if collective is None else collective.world
        self.rank = 0 if collective is None else collective.rank

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def writer(self) -> bool:
        """Whether this process writes logs and checkpoints (rank 0 of the group)."""
        return self.rank == 0

    def _src(self) -> int:
        import torch.distributed as dist

        return 0 if self.group is None else dist.get_global_rank(self.group, 0)

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (a small picklable object; a barrier as well: the others wait
        until rank 0 sends)."""
        if not self.active:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=self._src(), group=self.group)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order, on every rank."""
        if not self.active:
            return [value]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, value, group=self.group)
        return out

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier(group=self.group)
