r"""Quality indicators for approximation fronts (minimisation of every objective).

Indicators follow pymoo's pattern: the constructor takes and validates the reference once (a reference
point for the hypervolume, a reference front for IGD/IGD+/GD/GD+), and the public :meth:`Indicator.do`
validates an approximation front ``F`` of shape (N, M) (tensor or array-like, finite, M matching the
reference) before calling the protected :meth:`Indicator._do` that subclasses implement.

These are **on-request** objects: nothing is computed during training unless you call
:meth:`Indicator.do` (for instance at intervals or at the end of a run). :meth:`Indicator.do` synchronises
with the host and returns a Python ``float``; gradients are not tracked.

Backends (``backend=`` of :class:`Hypervolume`, :class:`IGD`, :class:`IGDPlus`, :class:`GD`, :class:`GDPlus`):

- ``"moocore"``: the C implementations of `moocore <https://multi-objective.github.io/moocore/python/>`_
  (``pip install molearn[pareto]``), imported lazily;
- ``"torch"``: pure torch in float64 on ``F``'s device. Exact hypervolume for M = 1, 2 (sort + sweep) and
  M = 3 (slicing along the third objective, each slice a 2-D sweep, all slices batched); M > 3 needs moocore;
- ``"auto"`` (default): moocore when it is installed, torch otherwise.

Both backends agree to 1e-9 in the tests (and with pymoo's ``pymoo.indicators`` classes).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Literal

import torch
from torch import Tensor

Backend = Literal["auto", "moocore", "torch"]

_INSTALL_HINT = (
    "moocore is not installed; install it with `pip install molearn[pareto]` (or `pip install moocore`)"
)
_CHUNK_ELEMENTS = 1 << 22  # bound on the size of the intermediate tensors of the torch backend


def _moocore() -> Any:
    try:
        import moocore
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError(_INSTALL_HINT) from exc
    return moocore


def _moocore_available() -> bool:
    try:
        import moocore  # noqa: F401
    except ImportError:  # pragma: no cover - exercised only without the extra
        return False
    return True


def _resolve_backend(backend: str) -> Literal["moocore", "torch"]:
    if backend == "auto":
        return "moocore" if _moocore_available() else "torch"
    if backend == "moocore":
        _moocore()  # fail early with the install hint
        return "moocore"
    if backend == "torch":
        return "torch"
    raise ValueError(f"backend must be 'auto', 'moocore' or 'torch', got {backend!r}")


def _as_float64(x: Any, name: str) -> Tensor:
    if isinstance(x, Tensor):
        t = x.detach()
    else:
        try:
            t = torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError) as exc:
            kind = type(x).__name__
            raise TypeError(f"{name} must be a tensor or a numeric array-like, got {kind}") from exc
    if t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must hold real numbers, got dtype {t.dtype}")
    if not isinstance(x, Tensor) and t.dtype != torch.float64:
        t = torch.as_tensor(x, dtype=torch.float64)  # Python floats would otherwise round through float32
    t = t.to(torch.float64)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return t


def _as_matrix(x: Any, name: str, n_obj: int | None = None) -> Tensor:
    t = _as_float64(x, name)
    if t.dim() != 2:
        raise ValueError(f"{name} must have shape (N, M), got shape {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise ValueError(f"{name} is empty (N = 0 points)")
    if t.shape[1] == 0:
        raise ValueError(f"{name} has no objectives (M = 0)")
    if n_obj is not None and t.shape[1] != n_obj:
        raise ValueError(f"{name} has M = {t.shape[1]} objectives, the reference has M = {n_obj}")
    return t


def _min_dist(X: Tensor, Y: Tensor, plus: bool) -> Tensor:
    """For each row x of X: min over rows y of Y of ``||x - y||`` or, if ``plus``, ``||max(x - y, 0)||``."""
    n, m = X.shape
    r = Y.shape[0]
    chunk = max(1, _CHUNK_ELEMENTS // max(1, r * (m if plus else 1)))
    out = []
    for start in range(0, n, chunk):
        Xc = X[start : start + chunk]
        if plus:
            d = (Xc[:, None, :] - Y[None, :, :]).clamp_min(0).pow(2).sum(-1).sqrt()
        else:
            # exact pairwise differences (the matmul shortcut of cdist loses ~1e-8 of precision)
            d = torch.cdist(Xc, Y, compute_mode="donot_use_mm_for_euclid_dist")
        out.append(d.min(dim=1).values)
    return torch.cat(out)


def _hv2d(F: Tensor, ref: Tensor) -> Tensor:
    """Exact 2-D hypervolume of points strictly dominating ``ref`` (sort by f1, sweep with cummin of f2)."""
    order = torch.argsort(F[:, 0])
    x = F[order, 0]
    y = F[order, 1]
    widths = torch.diff(x, append=ref[:1])
    heights = ref[1] - torch.cummin(y, dim=0).values
    return (widths * heights).sum()


def _hv3d(F: Tensor, ref: Tensor) -> Tensor:
    """Exact 3-D hypervolume by slices along f3: slice k is the 2-D hypervolume of the k+1 lowest in f3.

    All slices share one sort by f1: the points not yet in slice k keep their f1 but get f2 = ref2, so they
    change neither the cumulative minimum of f2 nor the partition of [min f1, ref1] into sweep intervals.
    """
    n = F.shape[0]
    by_x = torch.argsort(F[:, 0])
    x = F[by_x, 0]
    y = F[by_x, 1]
    z_order = torch.argsort(F[:, 2])
    rank_z = torch.empty(n, dtype=torch.long, device=F.device)
    rank_z[z_order] = torch.arange(n, device=F.device)
    rank_z = rank_z[by_x]  # rank in f3 of the points in f1 order
    widths = torch.diff(x, append=ref[:1])
    z = F[z_order, 2]
    depths = torch.diff(z, append=ref[2:3])
    chunk = max(1, _CHUNK_ELEMENTS // n)
    total = F.new_zeros(())
    for start in range(0, n, chunk):
        k = torch.arange(start, min(start + chunk, n), device=F.device)
        active = rank_z[None, :] <= k[:, None]
        y_k = torch.where(active, y[None, :], ref[1])
        areas = (widths[None, :] * (ref[1] - torch.cummin(y_k, dim=1).values)).sum(dim=1)
        total = total + (areas * depths[k]).sum()
    return total


def _lex_sorted(P: Tensor, first: int) -> Tensor:
    """Rows of a 2-column ``P`` sorted by column ``first``, ties broken by the other column."""
    P = P[torch.argsort(P[:, 1 - first], stable=True)]
    return P[torch.argsort(P[:, first], stable=True)]


def non_dominated_mask(F: Tensor) -> Tensor:
    """Boolean mask (N,) of the rows of ``F`` (N, M) that no other row Pareto-dominates: no worse in every
    objective and better in one, minimisation as every indicator here (negate a column to maximise it).
    Duplicates do not dominate each other."""
    if not isinstance(F, Tensor) or F.dim() != 2:
        raise ValueError(f"F must be a tensor of shape (N, M), got {getattr(F, 'shape', type(F).__name__)}")
    if F.shape[1] == 2 and F.shape[0] > 0:
        return _non_dominated_2d(F)
    mask = torch.ones(F.shape[0], dtype=torch.bool, device=F.device)
    for start in range(0, F.shape[0], 1024):  # (chunk, N, M) comparisons at a time
        block = F[start : start + 1024].unsqueeze(1)
        dominated = ((F.unsqueeze(0) <= block).all(dim=2) & (F.unsqueeze(0) < block).any(dim=2)).any(dim=1)
        mask[start : start + 1024] = ~dominated
    return mask


def _non_dominated_2d(F: Tensor) -> Tensor:
    """Two objectives in O(N log N) (dense grids of 10^4-10^5 points): p is dominated iff some q with
    q_1 <= p_1 has q_2 < p_2, or some q with q_1 < p_1 has q_2 <= p_2 (running minima of f_2 over the groups
    of equal f_1, sorted)."""
    order = torch.argsort(F[:, 0])
    f1, f2 = F[order, 0], F[order, 1]
    _, group = torch.unique_consecutive(f1, return_inverse=True)
    inf = torch.full((int(group.max()) + 1,), float("inf"), dtype=F.dtype, device=F.device)
    upto = torch.cummin(inf.scatter_reduce(0, group, f2, reduce="amin"), dim=0).values  # over f_1 <= this
    before = torch.cat([inf[:1], upto[:-1]])  # over f_1 < this
    mask = torch.empty(F.shape[0], dtype=torch.bool, device=F.device)
    mask[order] = ~((upto[group] < f2) | (before[group] <= f2))
    return mask


class Indicator(ABC):
    """Base of the quality indicators (pymoo style): public :meth:`do`, protected :meth:`_do`.

    Attributes:
        n_obj: the number of objectives fixed by the reference, ``None`` when the indicator has no reference.
        min_points: the fewest points ``F`` may hold.
    """

    n_obj: int | None = None
    min_points: int = 1

    def do(self, F: Any) -> float:
        """Validate ``F`` (shape (N, M), finite, N >= :attr:`min_points`, M as the reference) and evaluate."""
        F = _as_matrix(F, "F", self.n_obj)
        if F.shape[0] < self.min_points:
            name, n = type(self).__name__, F.shape[0]
            raise ValueError(f"{name} needs at least {self.min_points} points, got {n}")
        return float(self._do(F))

    def __call__(self, F: Any) -> float:
        return self.do(F)

    @abstractmethod
    def _do(self, F: Tensor) -> float | Tensor:
        """Evaluate a validated float64 front ``F`` of shape (N, M)."""


class Hypervolume(Indicator):
    r"""Hypervolume (Lebesgue measure of the region dominated by ``F`` and bounded by ``ref_point``).

    .. math:: \mathrm{HV}(F) = \lambda\Big(\bigcup_{f \in F} [f, r]\Big)

    Dominated points, duplicates and points that do not strictly dominate the reference point contribute
    nothing (the standard convention, as moocore and pymoo). If **no** point of ``F`` is strictly better than
    ``ref_point`` in every objective the hypervolume is 0 and the reference is almost surely wrong (e.g. a
    reference taken on the ideal side, or objectives on another scale): :meth:`do` raises ``ValueError``,
    unless ``clip=True``, which ignores the points beyond the reference and returns 0.0 in that case.

    Args:
        ref_point: the reference point, shape (M,).
        clip: return 0.0 instead of raising when no point dominates the reference point.
        backend: ``"auto"``, ``"moocore"`` or ``"torch"`` (exact for M <= 3; M > 3 needs moocore).
    """

    def __init__(self, ref_point: Any, *, clip: bool = False, backend: Backend = "auto") -> None:
        ref = _as_float64(ref_point, "ref_point")
        if ref.dim() != 1 or ref.numel() == 0:
            raise ValueError(f"ref_point must have shape (M,), got shape {tuple(ref.shape)}")
        self.ref_point = ref.cpu()
        self.n_obj = ref.numel()
        self.clip = clip
        self.backend = _resolve_backend(backend)
        if self.backend == "torch" and self.n_obj > 3:
            raise ValueError(
                f"the torch hypervolume is exact for M <= 3 objectives only, got M = {self.n_obj}; "
                f"use backend='moocore' ({_INSTALL_HINT.split('; ')[1]})"
            )

    def _do(self, F: Tensor) -> float | Tensor:
        ref = self.ref_point.to(F.device)
        inside = (ref > F).all(dim=1)
        if not bool(inside.any()):
            if self.clip:
                return 0.0
            raise ValueError(
                "no point of F strictly dominates the reference point "
                f"{self.ref_point.tolist()}: the hypervolume would be 0; check the reference point "
                "(it must be worse than the front in every objective) or pass clip=True"
            )
        if self.backend == "moocore":
            return float(_moocore().hypervolume(F.cpu().numpy(), ref=self.ref_point.numpy()))
        P = F[inside]
        if self.n_obj == 1:
            return ref[0] - P[:, 0].min()
        if self.n_obj == 2:
            return _hv2d(P, ref)
        return _hv3d(P, ref)


class _ReferenceFrontIndicator(Indicator):
    """An indicator measured against a reference front ``pf`` of shape (R, M)."""

    def __init__(self, pf: Any, *, backend: Backend = "auto") -> None:
        self.pf = _as_matrix(pf, "pf").cpu()
        self.n_obj = self.pf.shape[1]
        self.backend = _resolve_backend(backend)


class IGD(_ReferenceFrontIndicator):
    r"""Inverted generational distance: mean over the reference front of the distance to the nearest f in F.

    .. math:: \mathrm{IGD}(F) = \frac{1}{|Z|} \sum_{z \in Z} \min_{f \in F} \lVert f - z \rVert_2

    Same definition as ``moocore.igd`` and ``pymoo.indicators.igd.IGD`` (no normalisation).

    Args:
        pf: the reference front Z, shape (R, M).
        backend: ``"auto"``, ``"moocore"`` or ``"torch"``.
    """

    def _do(self, F: Tensor) -> float | Tensor:
        if self.backend == "moocore":
            return float(_moocore().igd(F.cpu().numpy(), ref=self.pf.numpy()))
        return _min_dist(self.pf.to(F.device), F, plus=False).mean()


class IGDPlus(_ReferenceFrontIndicator):
    r"""IGD+ (Ishibuchi et al., EMO 2015), weakly Pareto-compliant: the distance only counts where f is worse.

    .. math:: \mathrm{IGD}^+(F) = \frac{1}{|Z|} \sum_{z \in Z} \min_{f \in F}
        \big\lVert \max(f - z, 0) \big\rVert_2

    Same definition as ``moocore.igd_plus`` and ``pymoo.indicators.igd_plus.IGDPlus``.

    Args:
        pf: the reference front Z, shape (R, M).
        backend: ``"auto"``, ``"moocore"`` or ``"torch"``.
    """

    def _do(self, F: Tensor) -> float | Tensor:
        if self.backend == "moocore":
            return float(_moocore().igd_plus(F.cpu().numpy(), ref=self.pf.numpy()))
        # ||max(f - z, 0)|| = ||max(x - y, 0)|| with x = -z, y = -f
        return _min_dist(-self.pf.to(F.device), -F, plus=True).mean()


class GD(_ReferenceFrontIndicator):
    r"""Generational distance: mean over F of the distance to the closest reference point.

    .. math:: \mathrm{GD}(F) = \frac{1}{|F|} \sum_{f \in F} \min_{z \in Z} \lVert f - z \rVert_2

    This is pymoo's ``GD`` (``pymoo.indicators.gd.GD``) and moocore's power-mean :math:`\mathrm{GD}_p` with
    p = 1; Van Veldhuizen's original :math:`\frac{1}{|F|}(\sum d^2)^{1/2}` is *not* what is computed.
    With moocore it is evaluated as ``moocore.igd(Z, ref=F)`` (the roles of the two sets swapped).

    Args:
        pf: the reference front Z, shape (R, M).
        backend: ``"auto"``, ``"moocore"`` or ``"torch"``.
    """

    def _do(self, F: Tensor) -> float | Tensor:
        if self.backend == "moocore":
            return float(_moocore().igd(self.pf.numpy(), ref=F.cpu().numpy()))
        return _min_dist(F, self.pf.to(F.device), plus=False).mean()


class GDPlus(_ReferenceFrontIndicator):
    r"""GD+ (Ishibuchi et al., EMO 2015): GD with the distance counted only where f is worse than z.

    .. math:: \mathrm{GD}^+(F) = \frac{1}{|F|} \sum_{f \in F} \min_{z \in Z}
        \big\lVert \max(f - z, 0) \big\rVert_2

    As ``pymoo.indicators.gd_plus.GDPlus``. With moocore it is evaluated as
    ``moocore.igd_plus(Z, ref=F, maximise=True)`` (sets swapped, signs flipped).

    Args:
        pf: the reference front Z, shape (R, M).
        backend: ``"auto"``, ``"moocore"`` or ``"torch"``.
    """

    def _do(self, F: Tensor) -> float | Tensor:
        if self.backend == "moocore":
            return float(_moocore().igd_plus(self.pf.numpy(), ref=F.cpu().numpy(), maximise=True))
        return _min_dist(F, self.pf.to(F.device), plus=True).mean()


class Spacing(Indicator):
    r"""Schott's spacing (1995): spread of the nearest-neighbour L1 distances; 0 for an evenly spaced front.

    .. math:: S(F) = \sqrt{\frac{1}{N - 1} \sum_{i=1}^{N} (d_i - \bar d)^2}, \qquad
        d_i = \min_{j \ne i} \lVert f_i - f_j \rVert_1

    Schott's 1/(N - 1) is used; pymoo's ``SpacingIndicator`` divides by N instead (its value is
    :math:`\sqrt{(N-1)/N}` times this one). Needs N >= 2 points; any M; torch only (moocore has no spacing).
    """

    min_points = 2

    def _do(self, F: Tensor) -> float | Tensor:
        n = F.shape[0]
        D = torch.cdist(F, F, p=1.0)
        D.fill_diagonal_(float("inf"))
        d = D.min(dim=1).values
        return ((d - d.mean()).pow(2).sum() / (n - 1)).sqrt()


class Spread(Indicator):
    r"""Deb's spread :math:`\Delta` (Deb et al., NSGA-II, IEEE TEC 2002) for two objectives.

    .. math:: \Delta(F) = \frac{d_f + d_l + \sum_{i=1}^{N-1} \lvert d_i - \bar d \rvert}
        {d_f + d_l + (N - 1)\bar d}

    with F sorted by the first objective, :math:`d_i` the Euclidean distances between consecutive points,
    :math:`\bar d` their mean, and :math:`d_f`, :math:`d_l` the distances from the first and last point of F
    to the **extremes of the true front** (the point of ``pf`` with the smallest f1, ties broken by f2, and
    the one with the smallest f2, ties broken by f1) — so the indicator needs the true front, or just its two
    extreme points. 0 for an evenly spaced front that reaches both extremes. F should be the non-dominated
    front (it is not filtered). Needs N >= 2 points and M = 2; torch only; 0.0 when the denominator is 0
    (every point of F on the single extreme of a degenerate front).

    Args:
        pf: the true front or its two extreme points, shape (R, 2).
    """

    min_points = 2

    def __init__(self, pf: Any) -> None:
        pf = _as_matrix(pf, "pf")
        if pf.shape[1] != 2:
            raise ValueError(f"Spread is defined for M = 2 objectives, got M = {pf.shape[1]}")
        self.n_obj = 2
        # lexicographic extremes: smallest f1 (then f2) and smallest f2 (then f1)
        self.extremes = torch.stack([_lex_sorted(pf, 0)[0], _lex_sorted(pf, 1)[0]]).cpu()

    def _do(self, F: Tensor) -> float | Tensor:
        ext = self.extremes.to(F.device)
        G = _lex_sorted(F, 0)
        gaps = (G[1:] - G[:-1]).norm(dim=1)
        d_mean = gaps.mean()
        d_f = (G[0] - ext[0]).norm()
        d_l = (G[-1] - ext[1]).norm()
        num = d_f + d_l + (gaps - d_mean).abs().sum()
        den = d_f + d_l + gaps.numel() * d_mean
        return torch.where(den > 0, num / torch.where(den > 0, den, 1.0), 0.0)
