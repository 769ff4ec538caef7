"""Losses and gradients at perturbed parameters, for methods that compute their own gradients (SAMO).

A :class:`Probe` is what the engine lends a method that declared ``Needs.closure``: it re-runs the
user's loss function on the current batch with the parameters moved by a flat offset, and restores
them (bit for bit) and the module's buffers (BatchNorm running statistics) afterwards. Offsets and
gradients are flat vectors over ``shared`` followed by ``tasks`` (the columns of the engine's
Jacobian).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from ._write import leaves_from_nodes, objective_root

__all__ = ["Probe", "perturbed"]


@contextmanager
def perturbed(params: Sequence[Tensor], offset: Tensor | None) -> Iterator[None]:
    """Temporarily add the slices of a flat ``offset`` to ``params`` (restored exactly on exit)."""
    if offset is None:
        yield
        return
    saved = [p.detach().clone() for p in params]
    try:
        with torch.no_grad():
            start = 0
            for p in params:
                n = p.numel()
                p.add_(offset[start : start + n].view_as(p).to(p.dtype))
                start += n
        yield
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved, strict=True):
                p.copy_(s)


@contextmanager
def _buffers_kept(module: nn.Module | None) -> Iterator[None]:
    """Run in the module's current mode but leave its buffers (BatchNorm statistics) untouched."""
    if module is None:
        yield
        return
    saved = [(b, b.detach().clone()) for b in module.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, s in saved:
                b.copy_(s)


@contextmanager
def _eval_mode(module: nn.Module | None) -> Iterator[None]:
    if module is None:
        yield
        return
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _flat(grads: Sequence[Tensor | None], params: Sequence[Tensor]) -> Tensor:
    return torch.cat(
        [(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params, strict=True)]
    )


class Probe:
    """The current batch's losses, re-evaluable at perturbed parameters.

    Args:
        loss_fn: zero-argument function returning the K losses of the current batch (1-D tensor).
        losses: the K losses already computed at the current parameters (with their graph).
        items: the K scalar losses as the user's function returned them (their graphs tell which
            task parameters each objective uses); default: the entries of ``losses``.
        shared, tasks: the parameters; flat vectors follow ``[*shared, *tasks]``.
        module: the model, if given: :meth:`losses_at` runs it in eval mode and :meth:`gradient_at`
            restores its buffers, so perturbed passes never change BatchNorm running statistics.
        optimizer: the optimiser that will take this step (``Balancer.step(..., optimizer)``), for
            methods whose look-ahead follows it (Auto-λ); ``None`` when unknown.
    """

    def __init__(
        self,
        loss_fn: Callable[[], Tensor],
        losses: Tensor,
        shared: Sequence[Tensor],
        tasks: Sequence[Tensor],
        module: nn.Module | None = None,
        items: Sequence[Tensor] | None = None,
        optimizer: torch.optim.Optimizer | None = None,
    ) -> None:
        self._loss_fn = loss_fn
        self.losses = losses
        self._items = list(losses.unbind()) if items is None else list(items)
        self.shared = list(shared)
        self.tasks = list(tasks)
        self.module = module
        self.optimizer = optimizer
        self.num_shared = sum(p.numel() for p in self.shared)
        self.params = [*self.shared, *self.tasks]
        self.forward_passes = 0
        self.backward_passes = 0

    @property
    def num_objectives(self) -> int:
        return int(self.losses.shape[0])

    def shared_sizes(self) -> list[int]:
        """Sizes of the shared parameter tensors (the layers of layer-wise rescalings), in order."""
        return [p.numel() for p in self.shared]

    def task_columns(self, i: int) -> Tensor:
        """Indices (into the task part of a flat vector) of the task parameters objective ``i`` uses.

        Found from objective ``i``'s own graph; when the K losses were stacked into one vector the walk
        enters only the ``i``-th input of the stack. Losses computed by one vectorised expression share
        one graph, and then every task parameter counts for every objective.
        """
        reached = {id(t) for t in leaves_from_nodes([objective_root(self._items[i], i)])}
        cols: list[Tensor] = []
        start = 0
        for t in self.tasks:
            n = t.numel()
            if id(t) in reached:
                cols.append(torch.arange(start, start + n, device=t.device))
            start += n
        device = self.tasks[0].device if self.tasks else self.losses.device
        return torch.cat(cols) if cols else torch.zeros(0, dtype=torch.long, device=device)

    def mean_gradient(self) -> Tensor:
        """Gradient of the mean loss at the current parameters (frees the graph of :attr:`losses`: call
        it once, before any other pass)."""
        self.backward_passes += 1
        grads = torch.autograd.grad(self.losses.mean(), self.params, allow_unused=True)
        return _flat(grads, self.params)

    def losses_at(self, offset: Tensor | None) -> Tensor:
        """The K losses (no graph) at parameters + ``offset``, the module in eval mode."""
        self.forward_passes += 1
        with torch.no_grad(), _eval_mode(self.module), perturbed(self.params, offset):
            return self._loss_fn().detach()

    def gradient_at(self, i: int, offset: Tensor | None) -> Tensor:
        """Gradient of objective ``i`` at parameters + ``offset`` (train mode, buffers kept)."""
        self.forward_passes += 1
        self.backward_passes += 1
        with _buffers_kept(self.module), perturbed(self.params, offset):
            loss = self._loss_fn()[i]
            grads = torch.autograd.grad(loss, self.params, allow_unused=True)
        return _flat(grads, self.params)
