"""Torch-differentiable multi-objective test problems with known Pareto fronts.

Every problem follows pymoo's pattern: the public :meth:`Problem.evaluate` validates and reshapes its input
and calls the protected :meth:`Problem._evaluate` that a subclass implements on a ``(N, n_var)`` batch. All
problems are minimised. Evaluation is pure torch (autograd, any device, the input's float dtype) and does
**not** check bounds: points outside ``[lower, upper]`` are evaluated by the same formula (which may then
give NaN, e.g. the square root of ZDT1 at ``x_1 < 0``).

True fronts (:meth:`Problem.pareto_front`) are exact points of the front, computed in float64:

* ZDT1/ZDT4 (``f2 = 1 - sqrt(f1)``), ZDT2 (``f2 = 1 - f1**2``), ZDT6 (``f2 = 1 - f1**2`` on ``f1 in
  [0.2807753188, 1]``): ``f1`` on an evenly spaced grid (the same points as pymoo for the same ``n``).
* ZDT3: the five disconnected pieces of ``f2 = 1 - sqrt(f1) - f1 sin(10 pi f1)``, ``n // 5`` evenly spaced
  points per piece (the first ``n % 5`` pieces get one more; pymoo's points when ``5 | n``). The piece ends
  were recomputed to 1e-15 (pymoo's table has a 5e-8 typo in the second piece's start).
* DTLZ1 (simplex ``sum f = 1/2``) and DTLZ2-4 (unit sphere, positive orthant): a Das-Dennis lattice
  (normalised for the sphere, as pymoo does) with the fewest partitions giving at least ``n`` points; if it
  has more than ``n`` points, ``n`` evenly spaced lattice indices are kept. For 2 objectives, or ``n`` equal
  to a lattice size (91 or 136 for 3 objectives), this is the full lattice, pymoo's points for the same
  lattice.
* DTLZ7: the front is ``f_M = 2M - sum_i h(f_i)`` with ``h(t) = t (1 + sin(3 pi t))`` and every ``f_i`` (i <
  M) in the non-dominated set ``[0, 0.2514118361] U [0.6316265307, 0.8594008566]`` of ``h`` (the front is
  the product of these pieces, 2^(M-1) disconnected regions). It is sampled by a product grid over the
  pieces, thinned to ``n`` evenly spaced grid indices.
* VLMOP1/VLMOP2: the image of an evenly spaced grid of the (one-dimensional) Pareto set.

:meth:`Problem.pareto_set` returns decision vectors whose images are the points of ``pareto_front(n)`` (same
order, to ~1e-14) for every problem; for DTLZ7 and VLMOP1/2 the front is defined as that image. pymoo has no
VLMOP problems: both follow the original definitions (VLMOP1 is Schaffer's one-variable problem).
Gradients are those of the formulas: they are infinite where a square root or fourth root is taken at zero
(ZDT1/3/4 at ``x_1 = 0``, ZDT6 at ``x_2..x_n = 0``), i.e. on the boundary of the box, and finite at
interior points.

References: Zitzler, Deb & Thiele, "Comparison of Multiobjective Evolutionary Algorithms: Empirical
Results", Evolutionary Computation 8(2), 2000 (ZDT); Deb, Thiele, Laumanns & Zitzler, "Scalable Test
Problems for Evolutionary Multiobjective Optimization", 2002/2005 (DTLZ); Van Veldhuizen & Lamont,
"Multiobjective Evolutionary Algorithm Test Suites", ACM SAC 1999 (VLMOP). Objective formulas match pymoo
0.6 to float64 rounding.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor

__all__ = [
    "DTLZ1",
    "DTLZ2",
    "DTLZ3",
    "DTLZ4",
    "DTLZ7",
    "VLMOP1",
    "VLMOP2",
    "ZDT1",
    "ZDT2",
    "ZDT3",
    "ZDT4",
    "ZDT6",
    "Problem",
    "problem",
    "problem_names",
]

_F64 = torch.float64

# ZDT3: the x_1 (= f_1) ranges of the five pieces of the front (ends are local minima of f_2, starts are
# where f_2 first falls below the previous piece's end value); recomputed with scipy.optimize.brentq.
_ZDT3_PIECES = (
    (0.0, 0.08300153492691163),
    (0.1822287280293998, 0.2577623633878302),
    (0.4093136748086568, 0.4538821040888302),
    (0.6183967944392658, 0.6525117038046626),
    (0.8233317983266328, 0.8518328654364139),
)
_ZDT3_MIN_F2 = -0.7733690123266405  # f_2 at the end of the last piece
# ZDT6: f_1(x_1) = 1 - exp(-4 x_1) sin(6 pi x_1)^6 decreases on [0, x*] from 1 to its minimum.
_ZDT6_XSTAR = 0.08145779687998357
_ZDT6_F1MIN = 0.28077531881536977
# DTLZ7: the non-dominated set of h(t) = t (1 + sin(3 pi t)) on [0, 1] and h's maximum on it.
_DTLZ7_PIECES = ((0.0, 0.25141183608891715), (0.6316265307000614, 0.8594008566447239))
_DTLZ7_HMAX = 1.6929956344984227


def _check_n(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")


def _even_indices(count: int, n: int) -> Tensor:
    """``n`` distinct, evenly spaced indices into ``range(count)`` (``count >= n``), both ends included."""
    if n == 1:
        return torch.zeros(1, dtype=torch.long)
    return torch.linspace(0, count - 1, n, dtype=_F64).round().long()


def _simplex_lattice(n: int, m: int) -> Tensor:
    """``n`` points of the Das-Dennis lattice on the unit simplex in ``m`` dimensions (float64)."""
    if n == 1:
        return torch.full((1, m), 1.0 / m, dtype=_F64)
    h = 1
    while math.comb(h + m - 1, m - 1) < n:
        h += 1
    pts = das_dennis(m, h)
    return pts[_even_indices(pts.shape[0], n)]


def das_dennis(m: int, h: int) -> Tensor:
    """All points of the simplex lattice with step ``1/h`` in ``m`` dimensions (Das & Dennis 1998), shape
    ``(C(h+m-1, m-1), m)``, float64; for ``m = 2`` ordered from ``(0, 1)`` to ``(1, 0)``."""
    if m == 2:
        t = torch.linspace(0.0, 1.0, h + 1, dtype=_F64)
        return torch.stack([t, 1.0 - t], dim=1)
    rows = []
    for bars in itertools.combinations(range(h + m - 1), m - 1):
        edges = (-1, *bars, h + m - 1)
        rows.append([edges[i + 1] - edges[i] - 1 for i in range(m)])
    return torch.tensor(rows, dtype=_F64) / h


def _grid_on_pieces(m: int, pieces: tuple[tuple[float, float], ...]) -> Tensor:
    """``m`` points on a union of intervals: ``m // len(pieces)`` evenly spaced per piece, the first
    pieces get the remainder; a piece with one point gets its start."""
    k = len(pieces)
    parts = [
        torch.linspace(lo, hi, m // k + (1 if i < m % k else 0), dtype=_F64)
        for i, (lo, hi) in enumerate(pieces)
    ]
    return torch.cat(parts)


class Problem:
    """A box-bounded multi-objective minimisation problem ``f: R^n_var -> R^n_obj``, differentiable in torch.

    Subclasses set ``name``, ``n_var``, ``n_obj``, ``lower``, ``upper`` (float64 CPU tensors of shape
    ``(n_var,)``) and implement :meth:`_evaluate`; they override :meth:`_pareto_front`, :meth:`_pareto_set`,
    :meth:`_ideal` and :meth:`_nadir` where these are known.
    """

    name: ClassVar[str] = ""
    n_var: int
    n_obj: int
    lower: Tensor
    upper: Tensor

    def _set_box(self, lower: Tensor, upper: Tensor) -> None:
        self.lower = lower.to(_F64)
        self.upper = upper.to(_F64)

    # -- evaluation ----------------------------------------------------------------------------------
    def evaluate(self, x: Tensor) -> Tensor:
        """Objective values: ``(n_var,)`` -> ``(n_obj,)`` or ``(N, n_var)`` -> ``(N, n_obj)``.

        Computed in ``x``'s floating dtype and on its device, differentiable with autograd. Bounds are not
        checked.
        """
        if not isinstance(x, Tensor):
            raise TypeError(f"{type(self).__name__}.evaluate expects a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{type(self).__name__}.evaluate expects a floating-point tensor, got {x.dtype}")
        if x.dim() not in (1, 2) or x.shape[-1] != self.n_var:
            raise ValueError(
                f"{type(self).__name__}.evaluate expects shape ({self.n_var},) or (N, {self.n_var}), "
                f"got {tuple(x.shape)}"
            )
        if x.dim() == 1:
            return self._evaluate(x.unsqueeze(0)).squeeze(0)
        return self._evaluate(x)

    def _evaluate(self, x: Tensor) -> Tensor:
        """Objectives of a ``(N, n_var)`` batch as ``(N, n_obj)``; implemented by subclasses."""
        raise NotImplementedError

    # -- reference sets ------------------------------------------------------------------------------
    def pareto_front(
        self, n: int = 100, *, dtype: torch.dtype = _F64, device: torch.device | str | None = None
    ) -> Tensor:
        """``n`` points of the true Pareto front, shape ``(n, n_obj)`` (see the module docstring for
        the sampling)."""
        _check_n(n)
        return self._pareto_front(n).to(dtype=dtype, device=device)

    def pareto_set(
        self, n: int = 100, *, dtype: torch.dtype = _F64, device: torch.device | str | None = None
    ) -> Tensor:
        """``n`` Pareto-optimal decision vectors, shape ``(n, n_var)``, whose images lie on the front."""
        _check_n(n)
        return self._pareto_set(n).to(dtype=dtype, device=device)

    def _pareto_front(self, n: int) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no known Pareto front")

    def _pareto_set(self, n: int) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no known Pareto set")

    @property
    def ideal(self) -> Tensor | None:
        """Component-wise minimum of the Pareto front (float64, ``(n_obj,)``), or ``None`` if unknown."""
        return self._ideal()

    @property
    def nadir(self) -> Tensor | None:
        """Component-wise maximum of the Pareto front (float64, ``(n_obj,)``), or ``None`` if unknown."""
        return self._nadir()

    def _ideal(self) -> Tensor | None:
        return None

    def _nadir(self) -> Tensor | None:
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_var={self.n_var}, n_obj={self.n_obj})"


# ----------------------------------------------------------------------------------------------------------
# ZDT
# ----------------------------------------------------------------------------------------------------------
class _ZDT(Problem):
    """Two objectives, ``f_1`` depends on ``x_1`` only, ``f_2 = g(x_2..x_n) h(f_1, g)``; the Pareto set
    is ``g``'s minimiser (``x_2..x_n = 0``, ``g = 1``) with ``x_1`` ranging over the front's pieces."""

    default_n_var: ClassVar[int] = 30

    def __init__(self, n_var: int | None = None) -> None:
        n_var = self.default_n_var if n_var is None else n_var
        if n_var < 2:
            raise ValueError(f"{type(self).__name__} needs n_var >= 2, got {n_var}")
        self.n_var = n_var
        self.n_obj = 2
        self._set_box(torch.zeros(n_var), torch.ones(n_var))

    def _g(self, x: Tensor) -> Tensor:
        return 1.0 + 9.0 * x[:, 1:].sum(dim=1) / (self.n_var - 1)

    def _front_f1(self, n: int) -> Tensor:
        return torch.linspace(0.0, 1.0, n, dtype=_F64)

    def _front_f2(self, f1: Tensor) -> Tensor:
        raise NotImplementedError

    def _pareto_front(self, n: int) -> Tensor:
        f1 = self._front_f1(n)
        return torch.stack([f1, self._front_f2(f1)], dim=1)

    def _x1_of_f1(self, f1: Tensor) -> Tensor:
        return f1

    def _pareto_set(self, n: int) -> Tensor:
        x = torch.zeros(n, self.n_var, dtype=_F64)
        x[:, 0] = self._x1_of_f1(self._front_f1(n))
        return x

    def _ideal(self) -> Tensor:
        return torch.tensor([0.0, 0.0], dtype=_F64)

    def _nadir(self) -> Tensor:
        return torch.tensor([1.0, 1.0], dtype=_F64)


class ZDT1(_ZDT):
    r"""ZDT1 (Zitzler, Deb & Thiele 2000): convex front :math:`f_2 = 1 - \sqrt{f_1}`.

    :math:`f_1 = x_1`, :math:`g = 1 + 9 \sum_{i \ge 2} x_i / (n - 1)`, :math:`f_2 = g (1 - \sqrt{f_1 / g})`,
    :math:`x \in [0, 1]^n`, default ``n_var = 30``.
    """

    name = "zdt1"

    def _evaluate(self, x: Tensor) -> Tensor:
        f1 = x[:, 0]
        g = self._g(x)
        return torch.stack([f1, g * (1.0 - torch.sqrt(f1 / g))], dim=1)

    def _front_f2(self, f1: Tensor) -> Tensor:
        return 1.0 - torch.sqrt(f1)


class ZDT2(_ZDT):
    r"""ZDT2: non-convex front :math:`f_2 = 1 - f_1^2`; as ZDT1 with :math:`f_2 = g (1 - (f_1 / g)^2)`."""

    name = "zdt2"

    def _evaluate(self, x: Tensor) -> Tensor:
        f1 = x[:, 0]
        g = self._g(x)
        return torch.stack([f1, g * (1.0 - (f1 / g) ** 2)], dim=1)

    def _front_f2(self, f1: Tensor) -> Tensor:
        return 1.0 - f1**2


class ZDT3(_ZDT):
    r"""ZDT3: five disconnected front pieces; as ZDT1 with
    :math:`f_2 = g (1 - \sqrt{f_1 / g} - (f_1 / g) \sin(10 \pi f_1))`."""

    name = "zdt3"

    def _evaluate(self, x: Tensor) -> Tensor:
        f1 = x[:, 0]
        g = self._g(x)
        r = f1 / g
        return torch.stack([f1, g * (1.0 - torch.sqrt(r) - r * torch.sin(10.0 * math.pi * f1))], dim=1)

    def _front_f1(self, n: int) -> Tensor:
        return _grid_on_pieces(n, _ZDT3_PIECES)

    def _front_f2(self, f1: Tensor) -> Tensor:
        return 1.0 - torch.sqrt(f1) - f1 * torch.sin(10.0 * math.pi * f1)

    def _ideal(self) -> Tensor:
        return torch.tensor([0.0, _ZDT3_MIN_F2], dtype=_F64)

    def _nadir(self) -> Tensor:
        return torch.tensor([_ZDT3_PIECES[-1][1], 1.0], dtype=_F64)


class ZDT4(ZDT1):
    r"""ZDT4: ZDT1's front with a multimodal (Rastrigin) :math:`g = 1 + 10 (n - 1) + \sum_{i \ge 2}
    (x_i^2 - 10 \cos(4 \pi x_i))`, :math:`x_1 \in [0, 1]`, :math:`x_i \in [-5, 5]`, default ``n_var = 10``."""

    name = "zdt4"
    default_n_var = 10

    def __init__(self, n_var: int | None = None) -> None:
        super().__init__(n_var)
        lower = torch.full((self.n_var,), -5.0)
        upper = torch.full((self.n_var,), 5.0)
        lower[0], upper[0] = 0.0, 1.0
        self._set_box(lower, upper)

    def _g(self, x: Tensor) -> Tensor:
        xr = x[:, 1:]
        return 1.0 + 10.0 * (self.n_var - 1) + (xr**2 - 10.0 * torch.cos(4.0 * math.pi * xr)).sum(dim=1)


class ZDT6(_ZDT):
    r"""ZDT6: non-uniform, biased front :math:`f_2 = 1 - f_1^2` on :math:`f_1 \in [0.2807753188, 1]`.

    :math:`f_1 = 1 - e^{-4 x_1} \sin^6(6 \pi x_1)`, :math:`g = 1 + 9 (\sum_{i \ge 2} x_i / (n - 1))^{1/4}`,
    :math:`f_2 = g (1 - (f_1 / g)^2)`, default ``n_var = 10``. Every ``x_1`` in ``[0, 1]`` with ``g = 1`` is
    Pareto optimal; :meth:`pareto_set` returns the preimages in ``[0, 0.0814577969]`` (64 bisection steps).
    """

    name = "zdt6"
    default_n_var = 10

    @staticmethod
    def _f1(x1: Tensor) -> Tensor:
        return 1.0 - torch.exp(-4.0 * x1) * torch.sin(6.0 * math.pi * x1) ** 6

    def _g(self, x: Tensor) -> Tensor:
        return 1.0 + 9.0 * (x[:, 1:].sum(dim=1) / (self.n_var - 1)) ** 0.25

    def _evaluate(self, x: Tensor) -> Tensor:
        f1 = self._f1(x[:, 0])
        g = self._g(x)
        return torch.stack([f1, g * (1.0 - (f1 / g) ** 2)], dim=1)

    def _front_f1(self, n: int) -> Tensor:
        return torch.linspace(_ZDT6_F1MIN, 1.0, n, dtype=_F64)

    def _front_f2(self, f1: Tensor) -> Tensor:
        return 1.0 - f1**2

    def _x1_of_f1(self, f1: Tensor) -> Tensor:
        lo = torch.zeros_like(f1)
        hi = torch.full_like(f1, _ZDT6_XSTAR)
        for _ in range(64):  # f_1 decreases on [0, x*]
            mid = 0.5 * (lo + hi)
            above = self._f1(mid) > f1
            lo = torch.where(above, mid, lo)
            hi = torch.where(above, hi, mid)
        return 0.5 * (lo + hi)

    def _ideal(self) -> Tensor:
        return torch.tensor([_ZDT6_F1MIN, 0.0], dtype=_F64)

    def _nadir(self) -> Tensor:
        return torch.tensor([1.0, 1.0 - _ZDT6_F1MIN**2], dtype=_F64)


# ----------------------------------------------------------------------------------------------------------
# DTLZ
# ----------------------------------------------------------------------------------------------------------
class _DTLZ(Problem):
    """``n_obj`` objectives; ``x = (x_P, x_M)`` with ``n_obj - 1`` position variables and
    ``k = n_var - n_obj + 1`` distance variables, ``x in [0, 1]^n_var``."""

    default_k: ClassVar[int] = 10

    def __init__(self, n_obj: int = 3, n_var: int | None = None) -> None:
        if n_obj < 2:
            raise ValueError(f"{type(self).__name__} needs n_obj >= 2, got {n_obj}")
        n_var = n_obj + self.default_k - 1 if n_var is None else n_var
        if n_var < n_obj:
            raise ValueError(
                f"{type(self).__name__} needs n_var >= n_obj (k >= 1), got n_var={n_var}, n_obj={n_obj}"
            )
        self.n_obj = n_obj
        self.n_var = n_var
        self.k = n_var - n_obj + 1
        self._set_box(torch.zeros(n_var), torch.ones(n_var))

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x[:, : self.n_obj - 1], x[:, self.n_obj - 1 :]

    def _g_rastrigin(self, xm: Tensor) -> Tensor:
        d = xm - 0.5
        return 100.0 * (self.k + (d**2 - torch.cos(20.0 * math.pi * d)).sum(dim=1))

    @staticmethod
    def _g_sphere(xm: Tensor) -> Tensor:
        return ((xm - 0.5) ** 2).sum(dim=1)

    @staticmethod
    def _prefix_products(v: Tensor) -> Tensor:
        """``C[:, j] = prod_{l < j} v[:, l]`` for ``j = 0..m`` (shape ``(N, m + 1)``)."""
        ones = torch.ones_like(v[:, :1])
        return torch.cumprod(torch.cat([ones, v], dim=1), dim=1)

    def _zero_distance_set(self, xp: Tensor, xm_value: float) -> Tensor:
        x = torch.full((xp.shape[0], self.n_var), xm_value, dtype=_F64)
        x[:, : self.n_obj - 1] = xp
        return x

    def _ideal(self) -> Tensor:
        return torch.zeros(self.n_obj, dtype=_F64)


class DTLZ1(_DTLZ):
    r"""DTLZ1 (Deb et al. 2002): linear front :math:`\sum_i f_i = 1/2` with a multimodal distance function.

    :math:`g = 100 (k + \sum_{x_i \in x_M} (x_i - 0.5)^2 - \cos(20 \pi (x_i - 0.5)))`,
    :math:`f_1 = \tfrac12 (1 + g) x_1 \cdots x_{M-1}`,
    :math:`f_m = \tfrac12 (1 + g) x_1 \cdots x_{M-m} (1 - x_{M-m+1})`,
    :math:`f_M = \tfrac12 (1 + g)(1 - x_1)`; default ``n_obj = 3``, ``k = 5`` (``n_var = 7``).
    """

    name = "dtlz1"
    default_k = 5

    def _evaluate(self, x: Tensor) -> Tensor:
        xp, xm = self._split(x)
        g = self._g_rastrigin(xm)
        c = self._prefix_products(xp)
        f = torch.cat([c[:, -1:], (c[:, :-1] * (1.0 - xp)).flip(1)], dim=1)
        return 0.5 * (1.0 + g).unsqueeze(1) * f

    def _pareto_front(self, n: int) -> Tensor:
        return 0.5 * _simplex_lattice(n, self.n_obj)

    def _pareto_set(self, n: int) -> Tensor:
        w = _simplex_lattice(n, self.n_obj)
        s = w.cumsum(dim=1)  # s[:, M-1-j] = prod_{l<j} x_l
        num, den = s[:, :-1].flip(1), s[:, 1:].flip(1)
        xp = torch.where(den > 0, num / den.clamp_min(1e-300), torch.zeros_like(num))
        return self._zero_distance_set(xp, 0.5)

    def _nadir(self) -> Tensor:
        return torch.full((self.n_obj,), 0.5, dtype=_F64)


class _SphereDTLZ(_DTLZ):
    alpha: float = 1.0

    def _sphere(self, xp: Tensor, g: Tensor) -> Tensor:
        theta = (xp**self.alpha) * (math.pi / 2.0) if self.alpha != 1.0 else xp * (math.pi / 2.0)
        c = self._prefix_products(torch.cos(theta))
        f = torch.cat([c[:, -1:], (c[:, :-1] * torch.sin(theta)).flip(1)], dim=1)
        return (1.0 + g).unsqueeze(1) * f

    def _pareto_front(self, n: int) -> Tensor:
        w = _simplex_lattice(n, self.n_obj)
        return w / torch.linalg.vector_norm(w, dim=1, keepdim=True)

    def _pareto_set(self, n: int) -> Tensor:
        f = self._pareto_front(n)
        m = self.n_obj
        # theta_j = atan2(f_{M-1-j}, ||f_0..f_{M-2-j}||), j = 0..M-2
        cum = f.pow(2).cumsum(dim=1).sqrt()
        theta = torch.atan2(f[:, 1:].flip(1), cum[:, : m - 1].flip(1))
        xp = (theta * (2.0 / math.pi)).clamp(0.0, 1.0) ** (1.0 / self.alpha)
        return self._zero_distance_set(xp, 0.5)

    def _nadir(self) -> Tensor:
        return torch.ones(self.n_obj, dtype=_F64)


class DTLZ2(_SphereDTLZ):
    r"""DTLZ2: spherical front :math:`\sum_i f_i^2 = 1`, :math:`f_i \ge 0`.

    :math:`g = \sum_{x_i \in x_M} (x_i - 0.5)^2`, :math:`f_1 = (1 + g) \prod_{j<M} \cos(x_j \pi / 2)`,
    :math:`f_m = (1 + g) \prod_{j \le M-m} \cos(x_j \pi / 2) \sin(x_{M-m+1} \pi / 2)`; default ``n_obj = 3``,
    ``k = 10`` (``n_var = 12``).
    """

    name = "dtlz2"

    def _evaluate(self, x: Tensor) -> Tensor:
        xp, xm = self._split(x)
        return self._sphere(xp, self._g_sphere(xm))


class DTLZ3(_SphereDTLZ):
    """DTLZ3: DTLZ2's front with DTLZ1's multimodal ``g``; default ``n_obj = 3``, ``k = 10``."""

    name = "dtlz3"

    def _evaluate(self, x: Tensor) -> Tensor:
        xp, xm = self._split(x)
        return self._sphere(xp, self._g_rastrigin(xm))


class DTLZ4(_SphereDTLZ):
    r"""DTLZ4: DTLZ2 with position variables mapped :math:`x_j \mapsto x_j^\alpha` (biased density),
    default :math:`\alpha = 100`, ``n_obj = 3``, ``k = 10``."""

    name = "dtlz4"

    def __init__(self, n_obj: int = 3, n_var: int | None = None, alpha: float = 100.0) -> None:
        super().__init__(n_obj=n_obj, n_var=n_var)
        if alpha <= 0:
            raise ValueError(f"DTLZ4 needs alpha > 0, got {alpha}")
        self.alpha = float(alpha)

    def _evaluate(self, x: Tensor) -> Tensor:
        xp, xm = self._split(x)
        return self._sphere(xp, self._g_sphere(xm))


class DTLZ7(_DTLZ):
    r"""DTLZ7: :math:`2^{M-1}` disconnected front regions.

    :math:`f_i = x_i` (:math:`i < M`), :math:`g = 1 + \tfrac{9}{k} \sum_{x_i \in x_M} x_i`,
    :math:`h = M - \sum_{i<M} \tfrac{f_i}{1 + g} (1 + \sin(3 \pi f_i))`, :math:`f_M = (1 + g) h`; default
    ``n_obj = 3``, ``k = 20`` (``n_var = 22``; pymoo's default is ``n_var = 10``).
    """

    name = "dtlz7"
    default_k = 20

    def _evaluate(self, x: Tensor) -> Tensor:
        xp, xm = self._split(x)
        g = 1.0 + 9.0 / self.k * xm.sum(dim=1)
        h = self.n_obj - (xp / (1.0 + g).unsqueeze(1) * (1.0 + torch.sin(3.0 * math.pi * xp))).sum(dim=1)
        return torch.cat([xp, ((1.0 + g) * h).unsqueeze(1)], dim=1)

    def _pareto_set(self, n: int) -> Tensor:
        d = self.n_obj - 1
        m = 1
        while m**d < n:
            m += 1
        t = _grid_on_pieces(m, _DTLZ7_PIECES)
        grid = torch.cartesian_prod(*([t] * d)).reshape(-1, d)
        return self._zero_distance_set(grid[_even_indices(grid.shape[0], n)], 0.0)

    def _pareto_front(self, n: int) -> Tensor:
        return self._evaluate(self._pareto_set(n))

    def _ideal(self) -> Tensor:
        out = torch.zeros(self.n_obj, dtype=_F64)
        out[-1] = 2.0 * self.n_obj - (self.n_obj - 1) * _DTLZ7_HMAX
        return out

    def _nadir(self) -> Tensor:
        out = torch.full((self.n_obj,), _DTLZ7_PIECES[-1][1], dtype=_F64)
        out[-1] = 2.0 * self.n_obj
        return out


# ----------------------------------------------------------------------------------------------------------
# VLMOP
# ----------------------------------------------------------------------------------------------------------
class VLMOP1(Problem):
    r"""VLMOP1: Schaffer's problem, MOP1 of Van Veldhuizen & Lamont (1999), :math:`f_1 = x^2`,
    :math:`f_2 = (x - 2)^2`.

    pymoo has no VLMOP problems; this follows the original definition (one variable). The original box is
    :math:`[-10^5, 10^5]`; molearn uses ``[-2, 4]`` by default (as in Lin et al.'s Pareto set learning code)
    and takes other ``bounds``. Pareto set :math:`x \in [0, 2]`, front :math:`f_2 = (\sqrt{f_1} - 2)^2`,
    :math:`f_1 \in [0, 4]` (the image of an evenly spaced grid of ``x``).
    """

    name = "vlmop1"

    def __init__(self, bounds: tuple[float, float] = (-2.0, 4.0)) -> None:
        lo, hi = bounds
        if not lo <= 0.0 or not hi >= 2.0:
            raise ValueError(f"VLMOP1 bounds must contain the Pareto set [0, 2], got {bounds}")
        self.n_var = 1
        self.n_obj = 2
        self._set_box(torch.tensor([float(lo)]), torch.tensor([float(hi)]))

    def _evaluate(self, x: Tensor) -> Tensor:
        x0 = x[:, 0]
        return torch.stack([x0**2, (x0 - 2.0) ** 2], dim=1)

    def _pareto_set(self, n: int) -> Tensor:
        return torch.linspace(0.0, 2.0, n, dtype=_F64).unsqueeze(1)

    def _pareto_front(self, n: int) -> Tensor:
        return self._evaluate(self._pareto_set(n))

    def _ideal(self) -> Tensor:
        return torch.zeros(2, dtype=_F64)

    def _nadir(self) -> Tensor:
        return torch.full((2,), 4.0, dtype=_F64)


class VLMOP2(Problem):
    r"""VLMOP2 (Van Veldhuizen & Lamont 1999; Fonseca-Fleming):
    :math:`f_{1,2} = 1 - \exp(-\sum_i (x_i \mp 1/\sqrt{n})^2)`, :math:`x \in [-2, 2]^n`, default
    ``n_var = 2``.

    Pareto set :math:`x_1 = \dots = x_n \in [-1/\sqrt{n}, 1/\sqrt{n}]`; the front is its image (evenly
    spaced grid).
    """

    name = "vlmop2"

    def __init__(self, n_var: int = 2) -> None:
        if n_var < 1:
            raise ValueError(f"VLMOP2 needs n_var >= 1, got {n_var}")
        self.n_var = n_var
        self.n_obj = 2
        self._set_box(torch.full((n_var,), -2.0), torch.full((n_var,), 2.0))

    def _evaluate(self, x: Tensor) -> Tensor:
        c = 1.0 / math.sqrt(self.n_var)
        f1 = 1.0 - torch.exp(-((x - c) ** 2).sum(dim=1))
        f2 = 1.0 - torch.exp(-((x + c) ** 2).sum(dim=1))
        return torch.stack([f1, f2], dim=1)

    def _pareto_set(self, n: int) -> Tensor:
        c = 1.0 / math.sqrt(self.n_var)
        t = torch.linspace(c, -c, n, dtype=_F64)  # f_1 increasing
        return t.unsqueeze(1).expand(n, self.n_var).contiguous()

    def _pareto_front(self, n: int) -> Tensor:
        return self._evaluate(self._pareto_set(n))

    def _ideal(self) -> Tensor:
        return torch.zeros(2, dtype=_F64)

    def _nadir(self) -> Tensor:
        return torch.full((2,), 1.0 - math.exp(-4.0), dtype=_F64)


# ----------------------------------------------------------------------------------------------------------
# registry
# ----------------------------------------------------------------------------------------------------------
_REGISTRY: dict[str, Callable[..., Problem]] = {
    cls.name: cls for cls in (ZDT1, ZDT2, ZDT3, ZDT4, ZDT6, DTLZ1, DTLZ2, DTLZ3, DTLZ4, DTLZ7, VLMOP1, VLMOP2)
}


def problem_names() -> list[str]:
    """The names accepted by :func:`problem`."""
    return list(_REGISTRY)


def problem(name: str, **kwargs: object) -> Problem:
    """Build a test problem by name (case-insensitive), e.g. ``problem("dtlz2", n_obj=3)``.

    Keyword arguments go to the constructor: ``n_var`` (ZDT, DTLZ, VLMOP2), ``n_obj`` (DTLZ), ``alpha``
    (DTLZ4), ``bounds`` (VLMOP1).
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in _REGISTRY:
        raise ValueError(f"unknown problem {name!r}; valid names: {', '.join(_REGISTRY)}")
    return _REGISTRY[key](**kwargs)
