"""Per-objective gradients of K losses: the Jacobian (loop or batched) or only its Gramian (blockwise).

All functions take the K losses as a 1-D tensor (or a sequence of scalars) and the tensors to
differentiate with respect to (``inputs``: shared parameters, or a shared feature tensor for the
representation mode). None of them writes ``.grad``; :mod:`molearn.engine._write` does that.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["flat_jacobian", "gramian_blockwise", "jacobian_batched", "jacobian_loop"]


def _eye_like(losses: Tensor) -> Tensor:
    return torch.eye(losses.shape[0], dtype=losses.dtype, device=losses.device)


def jacobian_loop(
    losses: Tensor | Sequence[Tensor],
    inputs: Sequence[Tensor],
    *,
    retain_graph: bool = True,
    flat: bool = False,
) -> list[Tensor] | Tensor:
    """K backward passes, one per loss; one (K, *shape) tensor per input, or the K×P matrix (``flat``).

    Pass the K scalar losses as a sequence (not a stacked tensor) so that each pass only runs through
    its own objective's graph. With ``flat=True`` each pass writes its row straight into one preallocated
    K×P buffer (no second copy of the Jacobian).
    """
    inputs = list(inputs)
    k = len(losses)
    jac = None
    if flat:
        total = sum(t.numel() for t in inputs)
        jac = torch.empty(k, total, dtype=inputs[0].dtype, device=inputs[0].device)
    rows: list[tuple[Tensor, ...]] = []
    for i in range(k):
        grads = torch.autograd.grad(
            losses[i],
            inputs,
            retain_graph=retain_graph or i < k - 1,
            allow_unused=True,
            materialize_grads=True,
        )
        if jac is not None:
            torch.cat([g.reshape(-1) for g in grads], out=jac[i])
        else:
            rows.append(grads)
    if jac is not None:
        return jac
    return [torch.stack([r[j] for r in rows]) for j in range(len(inputs))]


def jacobian_batched(losses: Tensor, inputs: Sequence[Tensor], *, retain_graph: bool = True) -> list[Tensor]:
    """One batched vector-Jacobian product (``is_grads_batched``) with the K unit cotangents."""
    return list(
        torch.autograd.grad(
            losses,
            list(inputs),
            grad_outputs=_eye_like(losses),
            is_grads_batched=True,
            retain_graph=retain_graph,
            allow_unused=True,
            materialize_grads=True,
        )
    )


def flat_jacobian(blocks: Sequence[Tensor]) -> Tensor:
    """Concatenate per-input Jacobian blocks (K, *shape) into the K×P matrix."""
    k = blocks[0].shape[0]
    return torch.cat([b.reshape(k, -1) for b in blocks], dim=1)


def _gram_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def gramian_blockwise(losses: Tensor, inputs: Sequence[Tensor], *, retain_graph: bool = True) -> Tensor:
    """The K×K Gramian ``J Jᵀ`` accumulated block by block, never holding the K×P Jacobian.

    One batched backward pass; a hook on each input receives that input's K gradient rows, adds their
    Gramian to the total and hands autograd back a zero-stride zero tensor, so at most one block of
    K×p_b gradients lives at a time (plus the K-fold activation gradients of the batched pass).
    The hook relies on the batching layer that ``is_grads_batched`` uses; if it is not available the
    Gramian is computed from the batched Jacobian instead (same value, more memory).
    """
    inputs = list(inputs)
    k = losses.shape[0]
    if any(not t.is_leaf for t in inputs) or not hasattr(torch, "_remove_batch_dim"):
        j = flat_jacobian(jacobian_batched(losses, inputs, retain_graph=retain_graph))
        j = j.to(_gram_dtype(j.dtype))
        return j @ j.T
    dtype = _gram_dtype(inputs[0].dtype)
    total = torch.zeros(k, k, dtype=dtype, device=losses.device)
    state = {"total": total}

    def hook(grad: Tensor) -> Tensor:
        level = torch._C._vmapmode_increment_nesting()
        torch._C._vmapmode_decrement_nesting()
        rows = torch._remove_batch_dim(grad, level - 1, k, 0).reshape(k, -1).to(dtype)
        state["total"] = state["total"] + rows @ rows.T
        return torch.zeros((), dtype=grad.dtype, device=grad.device).expand(grad.shape)

    handles = [t.register_hook(hook) for t in inputs]
    try:
        torch.autograd.grad(
            losses,
            inputs,
            grad_outputs=_eye_like(losses),
            is_grads_batched=True,
            retain_graph=retain_graph,
            allow_unused=True,
        )
    finally:
        for h in handles:
            h.remove()
    return state["total"]
