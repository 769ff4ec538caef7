"""Reusable property checks for methods, over families of Jacobians (TorchJD-style).

Use: ``direction(method, J, losses)`` runs a method the way the engine does (Gramian and/or Jacobian as
the method declares) and returns the shared-parameter update ``d`` (P,). The ``assert_*`` helpers check
one property each; ``jacobian_families`` yields (name, J) pairs covering the usual hard cases.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from molearn.methods import Inputs, Method


def make_inputs(method: Method, jac: Tensor, losses: Tensor | None = None) -> Inputs:
    """The Inputs the engine would build from one Jacobian: every independent batch of a multi-batch
    method sees the same ``jac``; a method that selects objectives gets only their rows."""
    k = jac.shape[0]
    if losses is None:
        losses = torch.linspace(1.0, 2.0, k, dtype=jac.dtype)
    needs = method.needs
    selected = method.select(k) if k > 1 else None
    rows = jac if selected is None else jac[selected]

    def one() -> Inputs:
        return Inputs(
            losses=losses,
            gramian=rows @ rows.T if needs.gradients else None,
            jacobian=rows if needs.jacobian else None,
            selected=selected,
        )

    inputs = one()
    inputs.extra = [one() for _ in range(needs.batches - 1)]
    return inputs


def direction(method: Method, jac: Tensor, losses: Tensor | None = None) -> Tensor:
    out = method.combine(make_inputs(method, jac, losses))
    if out.direction is not None:
        return out.direction
    assert out.weights is not None, "method returned neither weights nor direction"
    assert out.weights.shape == (jac.shape[0],)
    d = out.weights.to(jac.dtype) @ jac
    for w in out.extra_weights or []:
        assert w.shape == (jac.shape[0],)
        d = d + w.to(jac.dtype) @ jac
    return d


def weights(method: Method, jac: Tensor, losses: Tensor | None = None) -> Tensor:
    out = method.combine(make_inputs(method, jac, losses))
    assert out.weights is not None
    return out.weights


def jacobian_families(
    k: int, p: int = 20, dtype: torch.dtype = torch.float64, seed: int = 0
) -> Iterator[tuple[str, Tensor]]:
    """Random, conflicting, rank-1, rank-deficient, zero, one-zero-row and scaled Jacobians (K×P)."""
    gen = torch.Generator().manual_seed(seed)
    rand = torch.randn(k, p, generator=gen, dtype=dtype)
    yield "normal", rand
    base = torch.randn(p, generator=gen, dtype=dtype)
    yield "rank1_positive", torch.rand(k, 1, generator=gen, dtype=dtype).add(0.1) * base
    signs = torch.tensor([(-1.0) ** i for i in range(k)], dtype=dtype).unsqueeze(1)
    yield "rank1_conflicting", signs * torch.rand(k, 1, generator=gen, dtype=dtype).add(0.1) * base
    low = torch.randn(k, 2, generator=gen, dtype=dtype) @ torch.randn(2, p, generator=gen, dtype=dtype)
    yield "rank2", low
    conflict = rand - 0.9 * rand.mean(0, keepdim=True) * k
    yield "conflicting", conflict
    zero_row = rand.clone()
    zero_row[0] = 0
    yield "one_zero_row", zero_row
    for s in (1e-7, 1e7):
        yield f"scaled_{s:g}", rand * s


def zero_jacobian(k: int, p: int = 20, dtype: torch.dtype = torch.float64) -> Tensor:
    return torch.zeros(k, p, dtype=dtype)


def assert_finite(d: Tensor) -> None:
    assert torch.isfinite(d).all(), f"non-finite direction {d}"


def assert_non_conflicting(d: Tensor, jac: Tensor, rtol: float = 1e-6) -> None:
    """``J d ≥ 0`` up to a tolerance relative to the norms."""
    scale = jac.norm(dim=1) * d.norm()
    assert (jac @ d >= -rtol * scale - 1e-12).all(), f"conflicting direction: J d = {jac @ d}"


def assert_permutation_equivariant(
    method: Method, jac: Tensor, atol: float = 1e-7, rtol: float = 1e-5
) -> None:
    """Permuting the objectives does not change the direction (weights permute with them)."""
    losses = torch.linspace(1.0, 2.0, jac.shape[0], dtype=jac.dtype)
    d = direction(method, jac, losses)
    perm = torch.randperm(jac.shape[0], generator=torch.Generator().manual_seed(1))
    d_perm = direction(method, jac[perm], losses[perm])
    torch.testing.assert_close(d_perm, d, atol=atol * (1 + d.abs().max()), rtol=rtol)


def assert_k1_passthrough(method: Method, p: int = 7, exact: bool = True) -> None:
    """With K = 1 the update is the single gradient (``exact``) or a positive multiple of it."""
    g = torch.randn(1, p, dtype=torch.float64)
    d = direction(method, g, torch.tensor([1.5], dtype=torch.float64))
    if exact:
        torch.testing.assert_close(d, g[0])
    else:
        cos = d @ g[0] / (d.norm() * g[0].norm())
        assert cos > 1 - 1e-6, f"K=1 direction not parallel to the gradient (cos {cos})"


def assert_zero_gives_zero(method: Method, k: int = 3) -> None:
    d = direction(method, zero_jacobian(k))
    assert torch.isfinite(d).all() and d.abs().max() == 0, f"zero gradients gave {d}"
