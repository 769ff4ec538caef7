"""Writing a combined direction back into ``.grad`` (accumulating, as ``Tensor.backward`` does)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["accumulate_flat", "backward_weighted", "reachable_leaves"]


def accumulate_flat(params: Sequence[Tensor], direction: Tensor) -> None:
    """Add the slices of a flat direction (P,) to the ``.grad`` of ``params``."""
    offset = 0
    for p in params:
        n = p.numel()
        g = direction[offset : offset + n].view_as(p).to(p.dtype)
        offset += n
        if p.grad is None:
            p.grad = g.clone()
        else:
            p.grad.add_(g)
    if offset != direction.numel():
        raise ValueError(f"direction has {direction.numel()} entries but the parameters have {offset}")


def backward_weighted(
    losses: Tensor, weights: Tensor, inputs: Sequence[Tensor], *, retain_graph: bool
) -> None:
    """Accumulate ``∇ Σ_i w_i L_i`` into the ``.grad`` of ``inputs`` (one backward pass)."""
    if not inputs:
        return
    total = (weights.to(losses.dtype).detach() * losses).sum()
    torch.autograd.backward(total, inputs=list(inputs), retain_graph=retain_graph)


def reachable_leaves(roots: Iterable[Tensor]) -> list[Tensor]:
    """Leaf tensors that require grad and that the graph of ``roots`` reaches, in discovery order."""
    return leaves_from_nodes(r.grad_fn for r in roots if r.grad_fn is not None)


def leaves_from_nodes(nodes: Iterable[Any]) -> list[Tensor]:
    """Leaf tensors that require grad reached from autograd graph nodes, in discovery order."""
    seen: set[int] = set()
    leaves: list[Tensor] = []
    stack = list(nodes)
    visited: set[int] = set()
    while stack:
        node = stack.pop()
        if node is None or id(node) in visited:
            continue
        visited.add(id(node))
        var = getattr(node, "variable", None)
        if var is not None and id(var) not in seen:
            seen.add(id(var))
            leaves.append(var)
        stack.extend(fn for fn, _ in node.next_functions if fn is not None)
    return leaves
