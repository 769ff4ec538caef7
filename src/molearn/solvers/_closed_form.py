"""Closed-form Gramian methods: IMTL-G, Aligned-MTL, ConFIG, PCGrad and GradVac as weights over the raw
gradients, computed from the K×K Gramian ``G = J Jᵀ`` alone.

Every function is batched over leading dimensions (``(..., K, K)``), works in float64 and has no
data-dependent control flow or shapes: rank decisions are masks, conditional updates are
``torch.where``. Eigen-decompositions go through :func:`molearn.solvers.linalg.eigh`: LAPACK on the
CPU, a sync-free Jacobi method on other devices (``torch.linalg.eigh`` checks its error code on the
host, which synchronises a GPU and breaks CUDA-graph capture).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from .consts import eye
from .linalg import eigh

AlignedScale = Literal["min", "median", "rmse"]


def _eps(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps if dtype.is_floating_point else torch.finfo(torch.float64).eps


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` where ``den > 0``, else 0 (no NaN in either branch)."""
    ok = den > 0
    return torch.where(ok, num / torch.where(ok, den, 1.0), 0.0)


def _eigh_psd(matrix: Tensor, rtol: float | None) -> tuple[Tensor, Tensor, Tensor]:
    """Eigen-decomposition of a symmetric PSD matrix in float64 with a rank mask.

    Eigenvalues ``λ ≤ rtol · λ_max`` (and non-positive ones) are masked out. ``rtol`` defaults to
    ``K · eps`` of the *input* dtype: the entries of a float32 Gramian are only accurate to float32
    precision, so smaller eigenvalues are noise (LibMTL/TorchJD/NumPy use the same cut-off).
    """
    k = matrix.shape[-1]
    if rtol is None:
        rtol = k * _eps(matrix.dtype)
    lam, vec = eigh(matrix.to(torch.float64))  # LAPACK reads one triangle; Jacobi symmetrises
    # λ > rtol·λ_max, and λ > 0 (the zero matrix: λ_max = 0)
    mask = lam > lam[..., -1:].clamp_min(torch.finfo(torch.float64).tiny) * rtol
    return lam, vec, mask


def psd_pinv(matrix: Tensor, *, rtol: float | None = None) -> Tensor:
    """Moore–Penrose pseudo-inverse of symmetric PSD matrices (..., K, K), float64, rank-revealing.

    Eigenvalues at or below ``rtol · λ_max`` (default ``K · eps`` of the input dtype) are treated as
    zero. The zero matrix gives the zero matrix.
    """
    lam, vec, mask = _eigh_psd(matrix, rtol)
    inv = torch.where(mask, lam.reciprocal(), 0.0)  # 1/0 = inf is never selected
    return (vec * inv.unsqueeze(-2)) @ vec.mT


def _norms(g: Tensor) -> Tensor:
    return g.diagonal(dim1=-2, dim2=-1).clamp_min(0).sqrt()


def imtl_g_weights(gramian: Tensor, *, rtol: float | None = None) -> Tensor:
    r"""IMTL-G weights (Liu et al., ICLR 2021) from the Gramian, (..., K) float64.

    The IMTL-G direction :math:`d = \sum_i \alpha_i g_i` with :math:`\sum_i \alpha_i = 1` has equal
    projections onto every unit gradient, :math:`d^\top u_i = c`. With :math:`n_i = \|g_i\|` this is
    :math:`G\alpha = c\,n`, so :math:`\alpha = G^{+} n / \mathbb 1^\top G^{+} n`. When :math:`G` is
    nonsingular this is exactly the paper's :math:`\alpha_{2..K} = g_1 U^\top (D U^\top)^{-1}`,
    :math:`\alpha_1 = 1-\sum_{j\ge2}\alpha_j` (both solve the same K linear equations); for singular
    :math:`G` the pseudo-inverse gives the least-squares solution (TorchJD's generalisation) instead of
    the official code's ``+1e-8·I`` regularisation. If :math:`|\mathbb 1^\top G^{+} n|` vanishes
    (below ``rtol`` times its natural size :math:`K \max_i n_i / \lambda_{min}`, the smallest kept
    eigenvalue) the constraint is infeasible (or only rounding noise is left, e.g. when n is orthogonal
    to the range of G) and the weights are 0.
    """
    k = gramian.shape[-1]
    tol = k * _eps(gramian.dtype) if rtol is None else rtol
    lam, vec, mask = _eigh_psd(gramian, rtol)
    n = gramian.diagonal(dim1=-2, dim2=-1).to(torch.float64).clamp_min(0).sqrt()
    # v = G⁺ n = V diag(1/λ) Vᵀ n on the kept eigenpairs
    coef = torch.where(mask, (n.unsqueeze(-2) @ vec).squeeze(-2) / lam, 0.0)
    v = (vec @ coef.unsqueeze(-1)).squeeze(-1)
    s = v.sum(-1, keepdim=True)
    # |𝟙ᵀG⁺n| against its natural size K·max(n)/λ_min (rounding noise, e.g. n ⟂ range(G), stays far below)
    lam_min = torch.where(mask, lam, torch.inf).amin(-1, keepdim=True)
    ok = s.abs() * lam_min > tol * k * n.amax(-1, keepdim=True)
    return torch.where(ok, v / s, 0.0)


def aligned_mtl_weights(
    gramian: Tensor, *, scale: AlignedScale = "min", rtol: float | None = None
) -> tuple[Tensor, Tensor]:
    r"""Aligned-MTL weights (Senushkin et al., CVPR 2023) from the Gramian: ``(weights, rank)``.

    :math:`G = V \Lambda V^\top` restricted to the eigenpairs with :math:`\lambda > \lambda_{max} K
    \epsilon`, :math:`B = \sqrt{\sigma}\, V \Lambda^{-1/2} V^\top` and :math:`\alpha = B \mathbb 1`
    (the column sums of the symmetric B), where :math:`\sigma` is the smallest kept eigenvalue
    (``"min"``), their lower median (``"median"``) or their mean (``"rmse"``). Rank 0 gives zero weights.
    """
    if scale not in ("min", "median", "rmse"):
        raise ValueError(f"scale must be 'min', 'median' or 'rmse', got {scale!r}")
    k = gramian.shape[-1]
    lam, vec, mask = _eigh_psd(gramian, rtol)
    rank = mask.sum(-1, keepdim=True)  # eigh sorts ascending: the kept eigenvalues are the last `rank`
    if scale == "rmse":
        sigma = torch.where(mask, lam, 0.0).sum(-1, keepdim=True) / rank.clamp_min(1)
    elif scale == "min":
        sigma = lam.gather(-1, (k - rank).clamp(max=k - 1))
    else:
        offset = torch.div(rank - 1, 2, rounding_mode="floor")  # lower median
        sigma = lam.gather(-1, (k - rank + offset).clamp(0, k - 1))
    # rank 0: no eigenpair kept, the weights are 0 whatever sigma is (clamped: no NaN)
    inv_sqrt = torch.where(mask, lam.rsqrt(), 0.0)  # rsqrt of a dropped λ ≤ 0 is never selected
    # α = B𝟙 = √σ V diag(λ^-1/2) Vᵀ𝟙
    alpha = (vec @ (vec.sum(-2) * inv_sqrt).unsqueeze(-1)).squeeze(-1) * sigma.clamp_min(0).sqrt()
    return alpha, rank.squeeze(-1)


def config_weights(gramian: Tensor, *, rtol: float | None = None) -> Tensor:
    r"""ConFIG weights (Liu et al., ICLR 2025) from the Gramian, (..., K) float64.

    With unit gradients :math:`u_i = g_i/\|g_i\|` (0 for a zero gradient) as rows of :math:`\tilde U`,
    the minimum-norm least-squares solution of :math:`\tilde U x = \mathbb 1` is
    :math:`x = \tilde U^\top c`, :math:`c = (\tilde U\tilde U^\top)^{+}\mathbb 1`, and the update is
    :math:`(\sum_i g_i^\top \hat x)\,\hat x` with :math:`\hat x = x/\|x\|`. Over the raw gradients:
    :math:`\alpha = \frac{\mathbb 1^\top G N c}{c^\top N G N c}\, N c`, :math:`N = \mathrm{diag}(1/\|g_i\|)`.
    If :math:`\mathbb 1` is orthogonal to the range of :math:`\tilde U\tilde U^\top` up to the cut-off
    (:math:`\|P\mathbb 1\|^2 \le K \cdot \mathrm{rtol}`), :math:`d_u = 0` and the weights are 0 (the official
    code then normalises rounding noise).
    """
    k = gramian.shape[-1]
    if rtol is None:
        rtol = k * _eps(gramian.dtype)
    g = gramian.to(torch.float64)
    n = _norms(g)
    inv_n = torch.where(n > 0, n.reciprocal(), 0.0)
    a = g * (inv_n.unsqueeze(-1) * inv_n.unsqueeze(-2))  # Ũ Ũᵀ
    lam, vec, mask = _eigh_psd(a, rtol)
    proj = vec.sum(-2)  # components of 𝟙 along the eigenvectors
    coef = torch.where(mask, proj / lam, 0.0)
    # 𝟙 (numerically) orthogonal to the range: d_u = 0, no conflict-free direction (e.g. g_2 = -g_1)
    inside = torch.where(mask, proj * proj, 0.0).sum(-1, keepdim=True) > rtol * k
    x = inv_n * (vec @ coef.unsqueeze(-1)).squeeze(-1)  # x = Σ_i x_i g_i
    gx = (g @ x.unsqueeze(-1)).squeeze(-1)  # g_iᵀ x
    xx = (x * gx).sum(-1, keepdim=True)  # ‖x‖²
    length = gx.sum(-1, keepdim=True)  # Σ_i g_iᵀ x
    return torch.where(inside & (xx > 0), length / xx * x, 0.0)


def _one_hot(index: Tensor, k: int, dtype: torch.dtype) -> Tensor:
    # not F.one_hot: on CUDA it checks the index range with a host synchronisation
    return (index.unsqueeze(-1) == torch.arange(k, device=index.device)).to(dtype)


def pcgrad_weights(gramian: Tensor, order: Tensor) -> Tensor:
    r"""PCGrad (Yu et al., NeurIPS 2020) as coefficients over the raw gradients, (..., K, K) float64.

    ``order`` (..., K, K-1) lists, for each task i, the other tasks in the order they are visited.
    Row i of the result holds :math:`c_i` with :math:`g_i^{PC} = \sum_k c_{ik} g_k`; all rows advance
    together, one visited task per step: if :math:`g_i^{PC\top} g_j = (c_i G)_j < 0` then
    :math:`c_{ij} \mathrel{-}= (c_i G)_j / G_{jj}`. Zero gradients are never projected against.
    The PCGrad update is the column sum (``reduction="sum"``) of the result.
    """
    g = gramian.to(torch.float64)
    k = g.shape[-1]
    order = order.to(g.device)
    diag = g.diagonal(dim1=-2, dim2=-1).unsqueeze(-2).expand(*g.shape[:-1], k)  # diag[..., i, j] = G_jj
    c = eye(k, g.device, g.dtype).expand_as(g)
    for step in range(k - 1):
        j = order[..., step : step + 1]  # (..., K, 1): the task each row visits now
        inner = (c @ g).gather(-1, j)  # g_i^PCᵀ g_j
        # a zero gradient g_j has inner = 0: 0/0 is never selected
        coef = torch.where(inner < 0, inner / diag.gather(-1, j), 0.0)
        c = c.scatter_add(-1, j, -coef)
    return c


def gradvac_weights(gramian: Tensor, targets: Tensor, order: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    r"""GradVac (Wang et al., ICLR 2021) as coefficients over the raw gradients: ``(C, new_targets)``.

    ``targets`` (..., K, K) are the EMA targets :math:`\hat\phi_{ij}`; ``order`` as in
    :func:`pcgrad_weights`. For each visited pair, with :math:`\phi_{ij}` the cosine between the
    current :math:`g_i^{PC} = \sum_k C_{ik} g_k` and :math:`g_j`: if :math:`\phi_{ij} < \hat\phi_{ij}`,
    :math:`C_{ij} \mathrel{+}= \|g_i^{PC}\| (\hat\phi_{ij}\sqrt{1-\phi_{ij}^2}
    - \phi_{ij}\sqrt{1-\hat\phi_{ij}^2}) / (\|g_j\|\sqrt{1-\hat\phi_{ij}^2})`; then
    :math:`\hat\phi_{ij} \leftarrow (1-\beta)\hat\phi_{ij} + \beta\phi_{ij}`.
    Norms and inner products come from the Gramian; zero norms give :math:`\phi = 0` and no correction.
    """
    g = gramian.to(torch.float64)
    k = g.shape[-1]
    order = order.to(g.device)
    targets = targets.to(device=g.device, dtype=torch.float64)
    norms = _norms(g)
    c = torch.eye(k, dtype=g.dtype, device=g.device).expand_as(g).clone()
    for step in range(k - 1):
        j = order[..., step]
        onehot = _one_hot(j, k, g.dtype)
        cg = c @ g
        dot = (cg * onehot).sum(-1)
        norm_i = (cg * c).sum(-1).clamp_min(0).sqrt()
        norm_j = norms.gather(-1, j)
        phi = _safe_div(dot, norm_i * norm_j).clamp(-1.0, 1.0)
        phi_hat = (targets * onehot).sum(-1)
        root_phi = (1 - phi * phi).clamp_min(0).sqrt()
        root_hat = (1 - phi_hat * phi_hat).clamp_min(0).sqrt()
        w = _safe_div(norm_i * (phi_hat * root_phi - phi * root_hat), norm_j * root_hat)
        c = c + torch.where(phi < phi_hat, w, 0.0).unsqueeze(-1) * onehot
        new = (1 - beta) * phi_hat + beta * phi
        targets = torch.where(onehot.bool(), new.unsqueeze(-1), targets)
    return c, targets


def random_orders(k: int, *, generator: torch.Generator | None, device: torch.device, full: bool) -> Tensor:
    """For each task i, a random order of the other K-1 tasks, (K, K-1) int64 on ``device``.

    ``full=True`` draws one ``randperm(K)`` per task and drops i (PCGrad: the official code shuffles
    the whole task list); ``full=False`` draws ``randperm(K-1)`` over the others (GradVac, as LibMTL).
    Each task's draw consumes the generator in the same way as TorchJD 0.18, so equal seeds give equal
    orders. The permutations are drawn on the generator's device (``device``'s default generator if
    None) and then moved to ``device``: a CPU generator with CUDA data costs a host-to-device copy, so
    pass a generator on the data's device (or None) for a sync-free step.
    """
    gen_device = generator.device if generator is not None else device
    rows = torch.arange(k, device=gen_device).unsqueeze(-1)
    if full:
        perms = torch.stack([torch.randperm(k, generator=generator, device=gen_device) for _ in range(k)])
        keep = torch.argsort((perms == rows).to(torch.int8), dim=-1, stable=True)[:, : k - 1]
        orders = perms.gather(-1, keep)
    elif k > 1:
        perms = torch.stack([torch.randperm(k - 1, generator=generator, device=gen_device) for _ in range(k)])
        orders = perms + (perms >= rows).to(perms.dtype)
    else:
        orders = torch.zeros(k, 0, dtype=torch.int64, device=gen_device)
    return orders.to(device)
