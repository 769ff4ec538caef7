"""Writing a combined direction back into ``.grad`` (accumulating, as ``Tensor.backward`` does)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "GradBuffer",
    "accumulate_flat",
    "add_grad",
    "all_finite",
    "backward_weighted",
    "leaves_from_nodes",
    "objective_root",
    "reachable_leaves",
]


def _check_width(params: Sequence[Tensor], direction: Tensor) -> None:
    width = sum(p.numel() for p in params)
    if width != direction.numel():
        raise ValueError(f"direction has {direction.numel()} entries but the parameters have {width}")


def accumulate_flat(params: Sequence[Tensor], direction: Tensor, *, only: set[int] | None = None) -> None:
    """Add the slices of a flat direction (P,) to the ``.grad`` of ``params`` (of those whose ``id`` is in
    ``only``, if given: the others keep their ``.grad``, e.g. ``None``)."""
    _check_width(params, direction)
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


def add_grad(p: Tensor, g: Tensor) -> None:
    """Accumulate a freshly computed gradient into ``p.grad`` as ``Tensor.backward`` does: a new ``.grad``
    takes the parameter's dtype and strides (autograd's layout contract), so an expanded result (stride 0)
    is copied into a dense tensor that a later in-place ``add_`` of the optimiser can write."""
    if p.grad is not None:
        p.grad.add_(g.to(p.dtype))
    elif g.is_sparse or (g.dtype == p.dtype and g.stride() == p.stride()):
        p.grad = g
    else:
        p.grad = torch.empty_like(p, requires_grad=False).copy_(g)


def all_finite(tensors: Sequence[Tensor], device: torch.device) -> Tensor:
    """A 0-dim bool tensor on ``device``: whether every entry of every tensor is finite, without a host
    sync. Extremes, not sums (a sum of large finite values may overflow; the largest magnitude never does
    and is NaN/Inf exactly when an entry is): on an accelerator one fused max-abs reduction per (device,
    dtype) group (``torch._foreach_norm``), on the CPU one ``aminmax`` per tensor (measured 10× faster
    there than the infinity norm)."""
    groups: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
    for t in tensors:
        t = t.detach()
        if t.is_sparse:
            t = t.coalesce().values()
        if t.numel() and (t.is_floating_point() or t.is_complex()):
            groups.setdefault((t.device, t.dtype), []).append(t)
    flags = []
    for (dev, dtype), group in groups.items():
        if dev.type == "cpu" and not dtype.is_complex:
            ends = torch.stack([torch.stack(torch.aminmax(t)) for t in group])
        else:
            ends = torch.stack(list(torch._foreach_norm(group, float("inf"))))
        flags.append(torch.isfinite(ends).all().to(device))
    if not flags:
        return torch.ones((), dtype=torch.bool, device=device)
    return flags[0] if len(flags) == 1 else torch.stack(flags).all()


class GradBuffer:
    """The gradients a step writes, held until the Balancer's finite check passes, then added to ``.grad``.

    The strategies' writers hand their results here instead of touching ``.grad``, so that a step whose
    update turns out non-finite leaves every ``.grad`` as it was. ``staged=False`` (the check is off) adds
    them at once: no copy is kept and nothing synchronises.
    """

    def __init__(self, staged: bool = True) -> None:
        self.staged = staged
        self._grads: list[tuple[Tensor, Tensor]] = []
        self._flat: list[tuple[list[Tensor], Tensor, set[int] | None]] = []

    def add(self, p: Tensor, g: Tensor) -> None:
        """``p.grad += g`` (staged: later)."""
        if self.staged:
            self._grads.append((p, g))
        else:
            add_grad(p, g)

    def add_flat(self, params: Sequence[Tensor], direction: Tensor, *, only: set[int] | None = None) -> None:
        """:func:`accumulate_flat` (staged: later; the flat vector is what the check reduces)."""
        if self.staged:
            _check_width(params, direction)
            self._flat.append((list(params), direction, only))
        else:
            accumulate_flat(params, direction, only=only)

    def tensors(self) -> list[Tensor]:
        """Everything staged, for the finite check."""
        return [g for _, g in self._grads] + [d for _, d, _ in self._flat]

    def commit(self) -> None:
        """Add what was staged to ``.grad`` (once)."""
        for p, g in self._grads:
            add_grad(p, g)
        for params, direction, only in self._flat:
            accumulate_flat(params, direction, only=only)
        self._grads, self._flat = [], []

    def nonfinite(self) -> list[Tensor]:
        """The parameters whose staged gradient has a NaN/Inf entry (for the error; this synchronises)."""
        bad: dict[int, Tensor] = {}
        for p, g in self._grads:
            values = g.coalesce().values() if g.is_sparse else g
            if not bool(torch.isfinite(values).all()):  # sync: only after the check failed
                bad[id(p)] = p
        for params, direction, only in self._flat:
            offset = 0
            for p in params:
                n = p.numel()
                piece = direction[offset : offset + n]
                offset += n
                wanted = only is None or id(p) in only
                if wanted and not bool(torch.isfinite(piece).all()):  # sync: only after the check failed
                    bad[id(p)] = p
        return list(bad.values())


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
