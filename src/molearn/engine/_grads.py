"""Per-objective gradients of K losses: the Jacobian, by K backward passes or one batched pass.

All functions take the K losses as a 1-D tensor (or a sequence of scalars) and the tensors to
differentiate with respect to (``inputs``: shared parameters, or a shared feature tensor for the
representation mode). None of them writes ``.grad``; :mod:`molearn.engine._write` does that.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["flat_jacobian", "jacobian_batched", "jacobian_loop"]


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
            with torch.no_grad():  # torch < 2.4 materialises unused inputs' zeros with requires_grad=True
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
