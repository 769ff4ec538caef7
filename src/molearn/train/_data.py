"""An endless, resumable stream of batches: passes over a loader in an order the trainer owns."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch

__all__ = ["BatchStream"]

_MIX = 0x9E3779B97F4A7C15  # spreads (seed, pass) pairs over the generator's seed space


def pass_seed(seed: int, index: int) -> int:
    """The shuffling seed of pass ``index`` (a pure function, so no generator state needs saving)."""
    return (seed * 1_000_003 + index * _MIX) % (2**63 - 1)


class BatchStream:
    """Batches from successive passes over ``loader``, each pass shuffled by a generator seeded from
    ``(seed, pass)``.

    For a ``torch.utils.data.DataLoader`` the generator is installed as the loader's ``generator`` (the
    worker base seed) and as the sampler's ``generator`` when the sampler has one (``shuffle=True``
    gives a ``RandomSampler``), so the order never depends on the global RNG; a sampler with ``set_epoch``
    (``DistributedSampler``) gets ``set_epoch(pass_seed(seed, pass))`` at each pass. The position is
    ``(pass, batch index in the pass)``; :meth:`seek` restores it by re-creating the pass and skipping
    the batches already drawn (they are loaded again, not used).
    """

    def __init__(self, loader: Iterable[Any], seed: int) -> None:
        try:
            self.length = len(loader)  # type: ignore[arg-type]
        except TypeError as err:
            raise TypeError(
                "the training loader must have a length (a DataLoader over a map-style dataset, a list)"
            ) from err
        if self.length == 0:
            raise ValueError("the training loader yields no batches")
        self.loader = loader
        self.seed = seed
        self.pass_index = 0
        self.batch_index = 0
        self.drawn = 0  # batches drawn since the stream started (all passes)
        self._it: Iterator[Any] | None = None
        self._skip = 0
        self.last: Any = None

    def _generator(self) -> torch.Generator:
        gen = torch.Generator()
        gen.manual_seed(pass_seed(self.seed, self.pass_index))
        return gen

    def _open(self) -> Iterator[Any]:
        gen = self._generator()
        if hasattr(self.loader, "generator"):
            self.loader.generator = gen  # type: ignore[attr-defined]
        sampler = getattr(self.loader, "sampler", None)
        if sampler is not None and hasattr(sampler, "generator"):
            sampler.generator = gen
        if sampler is not None and callable(getattr(sampler, "set_epoch", None)):
            # a DistributedSampler shuffles with its own generator, seeded from (its seed + the epoch)
            sampler.set_epoch(pass_seed(self.seed, self.pass_index))
        it = iter(self.loader)
        for _ in range(self._skip):
            next(it)
        self._skip = 0
        return it

    def __call__(self) -> Any:
        """The next batch (a zero-argument callable, as :meth:`molearn.Balancer.step` accepts)."""
        if self.batch_index >= self.length:
            self.pass_index += 1
            self.batch_index = 0
            self._it = None
        if self._it is None:
            self._it = self._open()
        try:
            batch = next(self._it)
        except StopIteration:  # a loader shorter than its len(): start the next pass
            if self.batch_index == 0:
                msg = f"pass {self.pass_index} over the training loader yielded no batch"
                raise ValueError(msg) from None
            self.batch_index = self.length
            return self()
        self.batch_index += 1
        self.drawn += 1
        self.last = batch
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"pass": self.pass_index, "batch": self.batch_index, "drawn": self.drawn, "seed": self.seed}

    def seek(self, state: dict[str, int]) -> None:
        """Continue exactly where :meth:`state_dict` was taken."""
        self.seed = int(state["seed"])
        self.pass_index = int(state["pass"])
        self.batch_index = int(state["batch"])
        self.drawn = int(state["drawn"])
        self._it = None
        self._skip = self.batch_index if self.batch_index < self.length else 0
