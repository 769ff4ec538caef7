"""What every multi-task architecture of :mod:`molearn.models` shares: the split of its parameters.

The rule used throughout: a parameter is *shared* when the outputs of more than one task depend on it (its
per-task gradients can conflict, so the methods balance it); it is *task-specific* when only one task's
output depends on it (it receives that task's gradient, see :class:`molearn.Balancer`'s ``task_grad``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import cast

from torch import nn

__all__ = ["MultiTaskModule", "mlp", "sub"]


class MultiTaskModule(nn.Module):
    """Base class: subclasses implement :meth:`shared_modules` and :meth:`task_modules`; the parameter
    lists that :class:`molearn.Balancer` and ``molearn compare`` read follow from them."""

    def shared_modules(self) -> Iterable[nn.Module | nn.Parameter]:
        raise NotImplementedError

    def task_modules(self) -> Iterable[nn.Module | nn.Parameter]:
        raise NotImplementedError

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters the tasks share (what the balancing methods act on)."""
        return _unique(self.shared_modules())

    def task_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters that only one task's output depends on (heads, per-task gates and attention)."""
        return _unique(self.task_modules())


def _unique(items: Iterable[nn.Module | nn.Parameter]) -> Iterator[nn.Parameter]:
    seen: set[int] = set()
    for item in items:
        params = [item] if isinstance(item, nn.Parameter) else item.parameters()
        for p in params:
            if id(p) not in seen:
                seen.add(id(p))
                yield p


def sub(modules: nn.Module, *index: int) -> nn.ModuleList:
    """``modules[i][j]...`` of nested ``nn.ModuleList`` s, typed as a ModuleList (for the type checker)."""
    for i in index:
        modules = cast(nn.ModuleList, modules)[i]
    return cast(nn.ModuleList, modules)


def mlp(in_features: int, widths: Iterable[int]) -> nn.Sequential:
    """``Linear -> ReLU`` for each width (the default expert of the mixture-of-experts models)."""
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Linear(in_features, w), nn.ReLU()]
        in_features = w
    if not layers:
        raise ValueError("an MLP needs at least one width")
    return nn.Sequential(*layers)
