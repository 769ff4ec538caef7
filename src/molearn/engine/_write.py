"""Writing a combined direction back into ``.grad`` (accumulating, as ``Tensor.backward`` does)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["accumulate_flat", "backward_weighted", "leaves_from_nodes", "objective_root", "reachable_leaves"]


def accumulate_flat(params: Sequence[Tensor], direction: Tensor, *, only: set[int] | None = None) -> None:
    """Add the slices of a flat direction (P,) to the ``.grad`` of ``params`` (of those whose ``id`` is in
    ``only``, if given: the others keep their ``.grad``, e.g. ``None``)."""
    offset = 0
    for p in params:
        n = p.numel()
        if only is not None and id(p) not in only:
            offset += n
            continue
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
    w = weights if weights.dtype == losses.dtype else weights.to(losses.dtype)
    total = torch.dot(w.detach(), losses)
    torch.autograd.backward(
        total, inputs=inputs if isinstance(inputs, list) else list(inputs), retain_graph=retain_graph
    )


def reachable_leaves(roots: Iterable[Tensor]) -> list[Tensor]:
    """Leaf tensors that require grad and that the graph of ``roots`` reaches, in discovery order."""
    return leaves_from_nodes(r.grad_fn for r in roots if r.grad_fn is not None)


def leaves_from_nodes(nodes: Iterable[Any]) -> list[Tensor]:
    """Leaf tensors that require grad reached from autograd graph nodes, in discovery order."""
    seen: set[int] = set()
    leaves: list[Tensor] = []
    stack = list(nodes)
    # the nodes themselves, not their ids: a node's Python wrapper may be created on access and freed
    # afterwards (torch < 2.4), and a freed wrapper's id can be reused by another node
    visited: set[Any] = set()
    while stack:
        node = stack.pop()
        if node is None or node in visited:
            continue
        visited.add(node)
        var = getattr(node, "variable", None)
        if var is not None and id(var) not in seen:
            seen.add(id(var))
            leaves.append(var)
        stack.extend(fn for fn, _ in node.next_functions if fn is not None)
    return leaves


def objective_root(item: Tensor, i: int) -> Any:
    """The graph node of objective ``i`` alone: skips the ``stack``/``cat`` that gathered the K losses."""
    node = item.grad_fn
    if node is None:
        return None
    name = type(node).__name__
    index: int | None = None
    if name.startswith("UnbindBackward"):
        index = item.output_nr
    elif name.startswith("SelectBackward"):
        index = int(getattr(node, "_saved_index", i))
    if index is None:
        return node
    inner = node.next_functions[0][0]
    if inner is not None and type(inner).__name__.startswith(("StackBackward", "CatBackward")):
        branches = inner.next_functions
        if -len(branches) <= index < len(branches):
            return branches[index][0]
    return node
