r"""Grid search over merging coefficients: the baseline at a given number of evaluations.

:func:`grid_search` evaluates the user's ``evaluate(c)`` (the M objectives of the merged model
:math:`\theta_0 + \sum_i c_i \tau_i`, lower is better unless ``maximize``) at about ``budget`` coefficient
vectors of the box :math:`[lo, hi]^K` and returns them with their non-dominated subset. With a budget of
:math:`m^K` points or more (:math:`m \ge 2`) the points form the regular grid of :math:`m` values per
coordinate (both ends included), else a scrambled Sobol sample of ``budget`` points.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from ..pareto import non_dominated_mask

__all__ = ["GridResult", "grid_points", "grid_search"]

Evaluate = Callable[[Tensor], Any]
Sampler = Literal["auto", "grid", "sobol", "uniform"]


def check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k (the number of task vectors) must be an int >= 1, got {k!r}")
    return k


def box(lo: Any, hi: Any, k: int) -> tuple[Tensor, Tensor]:
    """The bounds as float64 (k,) tensors, finite, ``lo < hi`` per coordinate."""
    bounds = []
    for name, value in (("lo", lo), ("hi", hi)):
        try:
            t = torch.as_tensor(value, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as exc:
            kind = type(value).__name__
            raise TypeError(f"{name} must be a number or a sequence of numbers, got {kind}") from exc
        if t.dim() == 0:
            t = t.expand(k).clone()
        if t.shape != (k,):
            raise ValueError(f"{name} must be a number or have shape ({k},), got {tuple(t.shape)}")
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} must be finite, got {t.tolist()}")
        bounds.append(t)
    if not bool((bounds[0] < bounds[1]).all()):
        raise ValueError(f"the box needs lo < hi in every coordinate, got lo={bounds[0].tolist()}, "
                         f"hi={bounds[1].tolist()}")
    return bounds[0], bounds[1]


def signs(maximize: bool | Sequence[bool], m: int) -> Tensor:
    """+1 for an objective to minimise, -1 for one to maximise (multiply to get a minimisation problem)."""
    if isinstance(maximize, bool):
        flags = [maximize] * m
    else:
        flags = list(maximize)
        if len(flags) != m or not all(isinstance(f, bool) for f in flags):
            raise ValueError(f"maximize must be a bool or {m} bools (one per objective), got {maximize!r}")
    return torch.tensor([-1.0 if f else 1.0 for f in flags], dtype=torch.float64)


def evaluate_all(evaluate: Evaluate, C: Tensor, m: int | None = None) -> Tensor:
    """``evaluate`` at every row of ``C`` (N, K): an (N, M) float64 tensor; each call must return M finite
    numbers (a 1-D tensor or a sequence)."""
    if not callable(evaluate):
        raise TypeError(f"evaluate must be callable as evaluate(coefficients), got {type(evaluate).__name__}")
    rows = []
    for n in range(C.shape[0]):
        value = evaluate(C[n].clone())
        try:
            f = torch.as_tensor(value.detach() if isinstance(value, Tensor) else value, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(f"evaluate(c) must return a 1-D tensor or a sequence of numbers, got "
                            f"{type(value).__name__}") from exc
        f = f.cpu().reshape(-1) if f.dim() <= 1 else f
        if f.dim() != 1 or f.numel() == 0:
            shape = tuple(f.shape)
            raise ValueError(f"evaluate(c) must return M >= 1 numbers (shape (M,)), got shape {shape}")
        if m is None:
            m = f.numel()
        elif f.numel() != m:
            raise ValueError(f"evaluate(c) returned {f.numel()} objectives at c = {C[n].tolist()}, "
                             f"earlier {m}")
        if not bool(torch.isfinite(f).all()):
            raise ValueError(f"evaluate(c) returned a non-finite value at c = {C[n].tolist()}: {f.tolist()}")
        rows.append(f)
    return torch.stack(rows)


def sobol(n: int, lo: Tensor, hi: Tensor, seed: int) -> Tensor:
    """``n`` scrambled Sobol points of the box (N, K), float64."""
    engine = torch.quasirandom.SobolEngine(lo.numel(), scramble=True, seed=seed)
    return lo + engine.draw(n, dtype=torch.float64) * (hi - lo)


def grid_points(
    k: int, budget: int, lo: Any = 0.0, hi: Any = 1.0, *, sampler: Sampler = "auto", seed: int = 0
) -> Tensor:
    """The coefficient vectors :func:`grid_search` evaluates, (N, K) float64 with N <= ``budget``.

    ``"grid"``: the regular grid of the largest :math:`m` with :math:`m^K \\le` ``budget`` (``ValueError``
    when :math:`m < 2`); ``"sobol"``/``"uniform"``: ``budget`` scrambled-Sobol / uniform points (seeded);
    ``"auto"``: the grid when :math:`m \\ge 2`, else Sobol.
    """
    k = check_k(k)
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"budget must be an int >= 1, got {budget!r}")
    if sampler not in ("auto", "grid", "sobol", "uniform"):
        raise ValueError(f"sampler must be 'auto', 'grid', 'sobol' or 'uniform', got {sampler!r}")
    low, high = box(lo, hi, k)
    m = 1
    while (m + 1) ** k <= budget:
        m += 1
    if sampler == "grid" and m < 2:
        raise ValueError(f"a regular grid of K = {k} coordinates needs a budget >= 2**{k} = {2 ** k}, "
                         f"got {budget}; use sampler='sobol'")
    if sampler == "grid" or (sampler == "auto" and m >= 2):
        axes = [torch.linspace(float(low[i]), float(high[i]), m, dtype=torch.float64) for i in range(k)]
        return torch.cartesian_prod(*axes).reshape(-1, k)
    if sampler == "uniform":
        gen = torch.Generator().manual_seed(seed)
        return low + torch.rand(budget, k, generator=gen, dtype=torch.float64) * (high - low)
    return sobol(budget, low, high, seed)


@dataclass
class GridResult:
    """Outcome of :func:`grid_search`.

    Attributes:
        coefficients: the evaluated coefficient vectors, (N, K) float64.
        objectives: their objective values as ``evaluate`` returned them, (N, M) float64.
        front_mask: (N,) bool, the non-dominated rows (with the ``maximize`` orientation).
        n_evals: N, the number of calls of ``evaluate`` (at most the budget).
    """

    coefficients: Tensor
    objectives: Tensor
    front_mask: Tensor
    n_evals: int

    @property
    def front(self) -> Tensor:
        """The non-dominated objective vectors."""
        return self.objectives[self.front_mask]

    @property
    def front_coefficients(self) -> Tensor:
        """The coefficient vectors of :attr:`front`."""
        return self.coefficients[self.front_mask]


def grid_search(
    evaluate: Evaluate,
    k: int,
    budget: int,
    lo: float | Sequence[float] = 0.0,
    hi: float | Sequence[float] = 1.0,
    *,
    maximize: bool | Sequence[bool] = False,
    sampler: Sampler = "auto",
    seed: int = 0,
) -> GridResult:
    """Evaluate the merges at most ``budget`` coefficient vectors of a grid; keep the non-dominated ones.

    The baseline for :func:`~molearn.merging.map_front` at an equal number of true evaluations (MAP's
    ``n_evals``). The points are :func:`grid_points` (a regular grid when ``budget`` allows :math:`m \\ge 2`
    values per coordinate, else scrambled Sobol); a regular grid uses :math:`m^K \\le` ``budget`` evaluations.

    Args:
        evaluate: ``evaluate(c)`` with ``c`` a (K,) float64 tensor returns the M objective values (a (M,)
            tensor or sequence) of the merged model, e.g. ``merge(base, vectors, c)`` loaded and tested.
            Lower is better, unless ``maximize`` says otherwise for an objective.
        k: the number K of task vectors.
        budget: the largest number of calls of ``evaluate``.
        lo, hi: the box (a number for every coordinate, or K numbers); default :math:`[0, 1]^K`.
        maximize: ``True`` (all) or one bool per objective for metrics where higher is better.
        sampler: ``"auto"``, ``"grid"``, ``"sobol"`` or ``"uniform"`` (see :func:`grid_points`).
        seed: the Sobol scrambling / uniform sampling seed.
    """
    C = grid_points(k, budget, lo, hi, sampler=sampler, seed=seed)
    F = evaluate_all(evaluate, C)
    front = non_dominated_mask(F * signs(maximize, F.shape[1]))  # minimisation orientation
    return GridResult(coefficients=C, objectives=F, front_mask=front, n_evals=C.shape[0])
