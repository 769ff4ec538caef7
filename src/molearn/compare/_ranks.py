"""``molearn compare`` under ``torchrun``: the independent runs split over the ranks, one report.

A comparison is a set of independent trainings (method × seed, and the single-task baselines), so several
processes need no gradient communication: rank r trains every W-th run of the ordered list (on
``cuda:LOCAL_RANK`` when the device is ``cuda``), then the ranks exchange their results (a few kilobytes of
metrics each, one ``all_gather_object``) and rank 0 writes the report. Every run is seeded by its own seed, so
the numbers are those of the one-process comparison.

The objects travel over a gloo group of their own: it works whatever the default group's backend (NCCL
cannot send Python objects without a current device), and its timeout is long, since a rank that finishes its
share early waits in the gather for the slowest rank (hours for a full benchmark). A rank that dies ends the
others' wait at once (gloo sees the closed connection).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

__all__ = ["WAIT", "Shard", "shard_from_env"]

#: how long a rank waits for the others in the gather (their share of the runs may take that long)
WAIT = datetime.timedelta(days=7)


@dataclass
class Shard:
    """This process's place among the ranks of a distributed ``molearn compare``."""

    rank: int
    world: int
    local_rank: int
    local_world: int
    group: Any = None  # the gloo group the results travel over (None: the default group)
    owned: bool = False  # compare initialised the default process group (gloo, WAIT)

    @property
    def writer(self) -> bool:
        """Rank 0 writes the report, the configuration and the single-task cache."""
        return self.rank == 0

    def device(self, device: str) -> str:
        """``cuda`` becomes this rank's ``cuda:LOCAL_RANK``; a device with an index is kept as given."""
        return f"cuda:{self.local_rank}" if device == "cuda" else device

    def take(self, items: list[Any]) -> list[Any]:
        """This rank's share of an ordered list: every W-th item from the rank's position (longest first
        in, so the shares end at about the same time)."""
        return items[self.rank :: self.world]

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0, group=self.group)  # the group holds every rank: 0 is 0
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order, on every rank."""
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, value, group=self.group)
        return out

    def close(self) -> None:
        """Destroy the group made for this comparison. A default group initialised here stays: initialising
        one again after destroying it hangs under torchrun (pytorch/pytorch#55967), and a second
        comparison in the same process makes its own group on it."""
        import torch.distributed as dist

        if self.group is not None:
            dist.destroy_process_group(self.group)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip().isdigit() else default


def shard_from_env() -> Shard | None:
    """The ranks of this comparison: an initialised default process group of more than one process, or the
    environment ``torchrun`` sets (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...: the default group is then
    initialised here, gloo); ``None`` for one process."""
    import torch.distributed as dist

    if not dist.is_available():
        return None
    local = (_env_int("LOCAL_RANK", 0), _env_int("LOCAL_WORLD_SIZE", 1))
    if dist.is_initialized():
        world = dist.get_world_size()
        if world <= 1:
            return None
        group = dist.new_group(backend="gloo", timeout=WAIT)  # every rank calls it: a collective
        return Shard(dist.get_rank(), world, local[0], local[1], group=group)
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1 or "RANK" not in os.environ or "MASTER_ADDR" not in os.environ:
        return None
    dist.init_process_group("gloo", timeout=WAIT)
    return Shard(dist.get_rank(), world, local[0], local[1], owned=True)
