r"""Symmetric eigen-decomposition without a host synchronisation.

``torch.linalg.eigh`` checks the solver's error code on the host after every call (there is no
``eigh_ex``), which synchronises a GPU stream and cannot be captured in a CUDA graph. :func:`eigh`
therefore uses LAPACK's ``eigh`` on the CPU only (fast, and a CPU has nothing to synchronise with) and
a fixed-shape cyclic Jacobi method everywhere else (:func:`jacobi_eigh`): ``sweeps`` sweeps of the
round-robin ("chess tournament", Brent & Luk 1985) ordering, each made of K−1 rounds of K/2 disjoint
plane rotations applied at once as one orthogonal matrix. The classical rotation (Golub & Van Loan,
Alg. 8.5.2) zeroes each pivot exactly; convergence is quadratic once the off-diagonal part is small
(6-8 sweeps to double precision for K ≤ 64 in our tests; :func:`default_sweeps` runs one or two
more). Odd K is padded with one
decoupled index, removed at the end.

:func:`sync_free_paths` forces the GPU path on the CPU (for tests).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import lru_cache

import torch
from torch import Tensor

from .consts import eye

_FORCE = False


@contextlib.contextmanager
def sync_free_paths() -> Iterator[None]:
    """Within the block, the solvers take their GPU (sync-free) code paths on the CPU too."""
    global _FORCE
    old, _FORCE = _FORCE, True
    try:
        yield
    finally:
        _FORCE = old


def use_lapack(x: Tensor) -> bool:
    """Whether ``x`` may use host-checked LAPACK routines (CPU tensors, unless forced otherwise)."""
    return x.device.type == "cpu" and not _FORCE


@lru_cache(maxsize=64)
def _schedule(n: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Round-robin pairs for even ``n``, built on the device: round ``r`` pairs ``r`` with ``n - 1`` and
    ``(r + i) mod (n-1)`` with ``(r - i) mod (n-1)`` for ``i = 1 … n/2 - 1`` (every pair once over the
    ``n - 1`` rounds). Returns the rows and columns of the 4 non-identity entries of each round's
    rotation (n-1, 2n) and the pairs (2, n-1, n/2), ``p < q``."""
    m = n - 1
    r = torch.arange(m, device=device).unsqueeze(-1)
    i = torch.arange(1, n // 2, device=device)
    a = torch.cat([r, (r + i) % m], -1)
    b = torch.cat([torch.full_like(r, m), (r - i) % m], -1)
    pq = torch.stack([torch.minimum(a, b), torch.maximum(a, b)])  # (2, n-1, n/2)
    rows = torch.cat([pq[0], pq[1], pq[0], pq[1]], -1)  # entries (p,p) (q,q) (p,q) (q,p)
    cols = torch.cat([pq[0], pq[1], pq[1], pq[0]], -1)
    return rows, cols, pq


def default_sweeps(k: int) -> int:
    """Jacobi sweeps used for K×K matrices (double precision reached in our tests with one to spare)."""
    return 5 if k <= 4 else 7 if k <= 8 else 9 if k <= 16 else 10


def jacobi_eigh(a: Tensor, *, sweeps: int | None = None) -> tuple[Tensor, Tensor]:
    """Eigenvalues (ascending) and eigenvectors (columns) of symmetric ``a`` (..., K, K), like
    ``torch.linalg.eigh``, by the cyclic Jacobi method (module docstring); fixed shape, sync-free.
    ``sweeps`` defaults to :func:`default_sweeps`."""
    k = a.shape[-1]
    if sweeps is None:
        sweeps = default_sweeps(k)
    batch = a.shape[:-2]
    a = (a + a.mT) / 2
    n = k + (k % 2)
    if n != k:  # pad with one decoupled index (its rotations have angle 0)
        a = torch.nn.functional.pad(a, (0, 1, 0, 1))
    if k <= 1:
        return a.diagonal(dim1=-2, dim2=-1)[..., :k], eye(k, a.device, a.dtype).expand(*batch, k, k).clone()
    rows, cols, pq = _schedule(n, a.device)
    ident = eye(n, a.device, a.dtype)
    v = ident.expand(*batch, n, n).clone()
    for _ in range(sweeps):
        for r in range(n - 1):
            p, q = pq[0, r], pq[1, r]
            app = a[..., p, p]
            aqq = a[..., q, q]
            apq = a[..., p, q]
            # classical Jacobi rotation zeroing a_pq: t = sign(θ)/(|θ| + √(θ²+1)), θ = (a_qq - a_pp)/(2 a_pq)
            nz = apq != 0
            theta = (aqq - app) / (2 * torch.where(nz, apq, 1.0))
            t = torch.where(theta >= 0, 1.0, -1.0) / (theta.abs() + (theta * theta + 1).sqrt())
            t = torch.where(nz, t, 0.0)
            c = (t * t + 1).rsqrt()
            s = t * c
            rot = ident.expand(*batch, n, n).clone()
            rot[..., rows[r], cols[r]] = torch.cat([c, c, s, -s], -1)
            a = rot.mT @ a @ rot
            v = v @ rot
    lam = a.diagonal(dim1=-2, dim2=-1)
    if n != k:
        lam, v = lam[..., :k], v[..., :k, :k]
    order = lam.argsort(-1)
    return lam.gather(-1, order), v.gather(-1, order.unsqueeze(-2).expand(*batch, k, k))


def eigh(a: Tensor) -> tuple[Tensor, Tensor]:
    """``torch.linalg.eigh`` on the CPU, :func:`jacobi_eigh` elsewhere (no host synchronisation)."""
    if use_lapack(a):
        return torch.linalg.eigh(a)
    return jacobi_eigh(a)


def gauss_jordan_solve(a: Tensor, b: Tensor) -> Tensor:
    """``a⁻¹ b`` for square ``a`` (..., n, n) and ``b`` (..., n, m) by Gauss-Jordan elimination with
    partial pivoting in fixed-shape tensor operations (n steps; no host synchronisation). A singular
    system gives non-finite entries."""
    n = a.shape[-1]
    batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    aug = torch.cat([a.expand(*batch, n, n), b.expand(*batch, n, b.shape[-1])], -1)
    rows = torch.arange(n, device=a.device)
    for j in range(n):
        col = torch.where(rows >= j, aug[..., :, j].abs(), -1.0)
        p = col.argmax(-1, keepdim=True)  # (..., 1)
        # swap rows j and p
        perm = torch.where(rows == j, p, torch.where(rows == p, j, rows))
        aug = aug.gather(-2, perm.unsqueeze(-1).expand(aug.shape))
        pivot_row = aug[..., j : j + 1, :] / aug[..., j : j + 1, j : j + 1]
        aug = torch.where((rows == j).unsqueeze(-1), pivot_row, aug - aug[..., :, j : j + 1] * pivot_row)
    return aug[..., :, n:]


def solve_ex(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """``torch.linalg.solve_ex`` on the CPU; elsewhere :func:`gauss_jordan_solve` (LU with a host-side
    check or MAGMA's hybrid code may run on a GPU). Returns ``(x, info)`` (``info`` all zeros off the CPU:
    singular systems give non-finite ``x`` there)."""
    if use_lapack(a):
        return torch.linalg.solve_ex(a, b)
    vector = b.dim() == 1 or (b.dim() == a.dim() - 1 and b.shape == a.shape[:-1])  # torch's rule
    x = gauss_jordan_solve(a, b.unsqueeze(-1) if vector else b)
    if vector:
        x = x.squeeze(-1)
    batch = x.shape[:-1] if vector else x.shape[:-2]
    return x, torch.zeros(batch, dtype=torch.int32, device=x.device)
