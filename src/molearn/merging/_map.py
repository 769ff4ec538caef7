r"""MAP: amortised Pareto fronts of merging coefficients from quadratic surrogates.

Li, Zhang, Bu, Wang, He, Fu, Wu, Bian, Chen, Bengio, "MAP: Low-compute Model Merging with Amortized Pareto
Fronts via Quadratic Approximation", `arXiv:2406.07529 <https://arxiv.org/abs/2406.07529>`_ (2024; official
code luli-git/MAP).

The merged model :math:`\theta(c) = \theta_0 + \sum_{i=1}^K c_i \tau_i` is scored by M metrics
:math:`f_m(c)`, each one expensive (a full evaluation of the merged model). MAP

1. evaluates the metrics at N coefficient vectors of the box :math:`[lo, hi]^K` (default :math:`[0, 1]^K`);
2. fits per metric a quadratic surrogate
   :math:`\hat f_m(c) = c^\top A_m c + b_m^\top c + e_m` by least squares: :math:`(K+1)(K+2)/2` unknowns
   (:math:`K(K+1)/2` in the symmetric :math:`A_m`, :math:`K` in :math:`b_m`, one :math:`e_m`), so N must be
   at least that (the official code samples twice as many, :math:`(K+1)(K+2)`, the default here);
3. finds the Pareto front of the cheap surrogates — the *amortised* front — with no further evaluation, and
   optionally re-evaluates its points with the true metrics.

Differences from the official code: it wraps the quadratic in a link (sigmoid for accuracies, softplus for
losses) fitted by non-linear least squares (``scipy.optimize.curve_fit``) and searches the surrogate front
with NSGA-III (DEAP, 100 individuals); here the plain quadratic is fitted by linear least squares (exact
when the metric is quadratic in :math:`c`, as the loss of a linear model is) and the front is found by
scalarisation: for each of ``n_prefs`` preference vectors :math:`w` on the simplex
(:func:`molearn.pareto.uniform_preferences`) a projected-gradient descent on the box (backtracking step,
started from the best of 2048 Sobol candidates and the samples) minimises either the **smooth Tchebycheff**
scalarisation (Lin et al., ICML 2024, arXiv:2402.19078) of the normalised surrogates

.. math:: \min_{c \in [lo, hi]^K}\; \mu \log \sum_m \exp\Big(\frac{w_m\, h_m(c)}{\mu}\Big), \qquad
          h_m(c) = \frac{s_m \hat f_m(c) - z_m}{r_m},

(``scalarization="tchebycheff"``, the default: reaches non-convex parts of the front; its minimisers are
Pareto optimal for the surrogates when all :math:`w_m > 0`) or the weighted sum :math:`\sum_m w_m h_m(c)`
(``"weighted_sum"``: a box-constrained quadratic program, convex when the surrogates are). Here
:math:`s_m = \pm 1` turns a metric to maximise into one to minimise, :math:`z_m` is the surrogate's minimum
over the box (the ideal point) and :math:`r_m` its range over the M single-objective minimisers (the payoff
table's nadir minus :math:`z_m`; the spread of the sampled values where that range is 0).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from ..pareto import uniform_preferences
from ._grid import Evaluate, box, check_k, evaluate_all, signs, sobol

__all__ = ["MapResult", "QuadraticSurrogate", "fit_quadratic", "map_front", "n_quadratic_terms"]

_N_CANDIDATES = 2048


def n_quadratic_terms(k: int) -> int:
    """The unknowns of a quadratic in K variables: :math:`(K+1)(K+2)/2`."""
    return (k + 1) * (k + 2) // 2


def _features(U: Tensor) -> Tensor:
    """(N, (K+1)(K+2)/2): the products u_i u_j (i <= j, row-major), the u_i and 1."""
    k = U.shape[1]
    iu = torch.triu_indices(k, k)
    quad = U[:, iu[0]] * U[:, iu[1]]
    return torch.cat([quad, U, torch.ones(U.shape[0], 1, dtype=U.dtype)], dim=1)


@dataclass
class QuadraticSurrogate:
    r"""A fitted quadratic :math:`\hat f(c) = c^\top A c + b^\top c + e` (float64).

    Attributes:
        A: the symmetric (K, K) matrix.
        b: the (K,) linear term.
        e: the constant.
        r2: the coefficient of determination on the fitting points, :math:`1 - SS_{res}/SS_{tot}` (1 when the
            fit is exact; 1 when the values are constant and fitted exactly, 0 if constant and not).
    """

    A: Tensor
    b: Tensor
    e: float
    r2: float

    def __call__(self, c: Tensor) -> Tensor:
        """The surrogate at ``c`` of shape (..., K): shape (...)."""
        c = torch.as_tensor(c, dtype=torch.float64)
        return ((c @ self.A) * c).sum(-1) + c @ self.b + self.e

    def gradient(self, c: Tensor) -> Tensor:
        """:math:`2 A c + b` at ``c`` (..., K)."""
        c = torch.as_tensor(c, dtype=torch.float64)
        return 2.0 * c @ self.A + self.b


def fit_quadratic(
    coefficients: Tensor, values: Tensor, lo: Any = None, hi: Any = None
) -> QuadraticSurrogate:
    """Least-squares quadratic through ``values`` (N,) at ``coefficients`` (N, K).

    The fit is done in the coordinates :math:`u = (c - lo) / (hi - lo)` (by default the samples' own range),
    which keeps the least-squares problem well conditioned on any box, and mapped back to :math:`c`.

    Raises:
        ValueError: fewer than :math:`(K+1)(K+2)/2` points, or points that do not determine a quadratic (for
            instance all on a line or repeated): the design matrix is rank deficient.
    """
    C = torch.as_tensor(coefficients, dtype=torch.float64).cpu()
    y = torch.as_tensor(values, dtype=torch.float64).cpu()
    if C.dim() != 2 or y.dim() != 1 or y.shape[0] != C.shape[0]:
        raise ValueError(
            f"coefficients must be (N, K) and values (N,), got {tuple(C.shape)} and {tuple(y.shape)}"
        )
    n, k = C.shape
    p = n_quadratic_terms(k)
    if n < p:
        raise ValueError(f"a quadratic in K = {k} coefficients has (K+1)(K+2)/2 = {p} unknowns; "
                         f"fitting it needs at least {p} points, got {n}")
    if not (bool(torch.isfinite(C).all()) and bool(torch.isfinite(y).all())):
        raise ValueError("coefficients and values must be finite")
    low = C.min(0).values if lo is None else torch.as_tensor(lo, dtype=torch.float64).expand(k)
    high = C.max(0).values if hi is None else torch.as_tensor(hi, dtype=torch.float64).expand(k)
    span = torch.where(high > low, high - low, torch.ones_like(high))
    Phi = _features((C - low) / span)
    rank = int(torch.linalg.matrix_rank(Phi))
    if rank < p:
        raise ValueError(f"the {n} points do not determine a quadratic in K = {k} coefficients (the design "
                         f"matrix has rank {rank} < {p}): use more points, or points not on a line/plane")
    theta = torch.linalg.lstsq(Phi, y.unsqueeze(1)).solution.squeeze(1)
    iu = torch.triu_indices(k, k)
    Au = torch.zeros(k, k, dtype=torch.float64)
    Au[iu[0], iu[1]] = theta[: iu.shape[1]]
    Au = (Au + Au.T) / 2  # diagonal kept, each cross term split evenly
    bu = theta[iu.shape[1]: iu.shape[1] + k]
    eu = theta[-1]
    D = 1.0 / span
    A = D[:, None] * Au * D[None, :]
    b = D * bu - 2.0 * A @ low
    e = float(low @ A @ low - (bu * D) @ low + eu)
    sur = QuadraticSurrogate(A=A, b=b, e=e, r2=0.0)
    res = float(((sur(C) - y) ** 2).sum())
    tot = float(((y - y.mean()) ** 2).sum())
    if tot > 0.0:
        sur.r2 = 1.0 - res / tot
    else:
        sur.r2 = 1.0 if res <= 1e-24 * max(1.0, float((y**2).sum())) else 0.0
    return sur


@dataclass
class MapResult:
    """Outcome of :func:`map_front`; objective values are in the orientation ``evaluate`` returns them.

    Attributes:
        coefficients: the amortised front's coefficient vectors, (P, K) float64, one per preference.
        prefs: the preferences, (P, M).
        predicted: the surrogates' values at ``coefficients``, (P, M).
        evaluated: the true values at ``coefficients`` (``reevaluate=True``), else ``None``.
        samples: the N coefficient vectors the surrogates were fitted on, (N, K).
        sample_objectives: their true values, (N, M).
        surrogates: the M fitted :class:`QuadraticSurrogate` (each with its ``r2``).
        n_evals: true evaluations used: N, plus the distinct front points when re-evaluated.
    """

    coefficients: Tensor
    prefs: Tensor
    predicted: Tensor
    evaluated: Tensor | None
    samples: Tensor
    sample_objectives: Tensor
    surrogates: list[QuadraticSurrogate]
    n_evals: int

    @property
    def r2(self) -> Tensor:
        """The surrogates' R² on the fitting points, (M,)."""
        return torch.tensor([s.r2 for s in self.surrogates], dtype=torch.float64)


def _pgd(
    obj: Callable[[Tensor], Tensor],
    grad: Callable[[Tensor], Tensor],
    c: Tensor,
    lo: Tensor,
    hi: Tensor,
    steps: int,
) -> Tensor:
    """Projected gradient descent on the box for a batch of problems (rows of ``c``), with a per-row
    backtracking step (sufficient decrease of the projected-gradient kind)."""
    eta = torch.ones(c.shape[0], dtype=torch.float64)
    f = obj(c)
    for _ in range(steps):
        g = grad(c)
        ok = torch.zeros(c.shape[0], dtype=torch.bool)
        cn, fn = c, f
        for _ in range(60):
            cn = torch.minimum(torch.maximum(c - eta[:, None] * g, lo), hi)
            fn = obj(cn)
            d = cn - c
            bound = f + (g * d).sum(1) + (d * d).sum(1) / (2 * eta) + 1e-12 * (1 + f.abs())
            ok = fn <= bound
            if bool(ok.all()):
                break
            eta = torch.where(ok, eta, eta / 2)
        c = torch.where(ok[:, None], cn, c)
        f = torch.where(ok, fn, f)
        eta = torch.where(ok, eta * 2, eta).clamp(max=1e8)
    return c


def map_front(
    evaluate: Evaluate,
    k: int,
    *,
    n_samples: int | None = None,
    lo: float | Sequence[float] = 0.0,
    hi: float | Sequence[float] = 1.0,
    maximize: bool | Sequence[bool] = False,
    n_prefs: int = 20,
    scalarization: Literal["tchebycheff", "weighted_sum"] = "tchebycheff",
    mu: float = 0.01,
    steps: int = 200,
    reevaluate: bool = False,
    samples: Tensor | None = None,
    seed: int = 0,
) -> MapResult:
    r"""MAP (see the module docstring): sample, fit quadratic surrogates, amortise the Pareto front.

    Args:
        evaluate: ``evaluate(c)``, ``c`` a (K,) float64 tensor, returns the M metrics of the merged model
            :math:`\theta_0 + \sum_i c_i \tau_i` (a (M,) tensor or sequence). **Lower is better**; pass
            ``maximize`` for metrics where higher is better (accuracies), or negate them yourself.
        k: the number K of task vectors.
        n_samples: N, the evaluations the surrogates are fitted on; default :math:`(K+1)(K+2)` (the official
            code's), at least :math:`(K+1)(K+2)/2` (``ValueError`` below). Scrambled Sobol points of the box.
        lo, hi: the box of coefficients (a number, or K numbers); default :math:`[0, 1]^K`.
        maximize: ``True`` (all) or one bool per metric.
        n_prefs: the number of preference vectors (front points); 3 or more metrics may give fewer (the
            Das–Dennis lattice of :func:`molearn.pareto.uniform_preferences`).
        scalarization: ``"tchebycheff"`` (smooth Tchebycheff) or ``"weighted_sum"``.
        mu: the smooth-Tchebycheff temperature on the normalised surrogates (the paper of STCH tries 0.01 to
            1; small is closer to the exact Tchebycheff).
        steps: projected-gradient iterations per preference.
        reevaluate: evaluate the front's distinct coefficient vectors with ``evaluate`` too.
        samples: explicit (N, K) coefficient vectors instead of the Sobol sample (e.g. with the one-hot
            vectors of the fine-tuned models, as the official code includes).
        seed: the Sobol scrambling seed.
    """
    k = check_k(k)
    low, high = box(lo, hi, k)
    p_terms = n_quadratic_terms(k)
    if scalarization not in ("tchebycheff", "weighted_sum"):
        raise ValueError(f"scalarization must be 'tchebycheff' or 'weighted_sum', got {scalarization!r}")
    if not (isinstance(mu, (int, float)) and mu > 0):
        raise ValueError(f"mu must be > 0, got {mu!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    if isinstance(n_prefs, bool) or not isinstance(n_prefs, int) or n_prefs < 2:
        raise ValueError(f"n_prefs must be an int >= 2, got {n_prefs!r}")
    if samples is not None:
        C = torch.as_tensor(samples, dtype=torch.float64).cpu()
        if C.dim() != 2 or C.shape[1] != k:
            raise ValueError(f"samples must have shape (N, {k}), got {tuple(C.shape)}")
        if not bool(torch.isfinite(C).all()):
            raise ValueError("samples must be finite")
        if C.shape[0] < p_terms:
            raise ValueError(f"MAP fits (K+1)(K+2)/2 = {p_terms} unknowns per metric for K = {k}: it needs "
                             f"at least {p_terms} samples, got {C.shape[0]}")
    else:
        n = (k + 1) * (k + 2) if n_samples is None else n_samples
        if isinstance(n, bool) or not isinstance(n, int):
            raise ValueError(f"n_samples must be an int, got {n_samples!r}")
        if n < p_terms:
            raise ValueError(f"MAP fits (K+1)(K+2)/2 = {p_terms} unknowns per metric for K = {k}: n_samples "
                             f"must be at least {p_terms}, got {n}")
        C = sobol(n, low, high, seed)

    F = evaluate_all(evaluate, C)
    m = F.shape[1]
    s = signs(maximize, m)
    surrogates = [fit_quadratic(C, F[:, j], low, high) for j in range(m)]
    As = torch.stack([sur.A for sur in surrogates])  # (M, K, K)
    bs = torch.stack([sur.b for sur in surrogates])  # (M, K)
    es = torch.tensor([sur.e for sur in surrogates], dtype=torch.float64)

    def values(c: Tensor) -> Tensor:  # (P, K) -> (P, M) surrogate values
        return torch.einsum("pk,mkl,pl->pm", c, As, c) + c @ bs.T + es

    def grads(c: Tensor) -> Tensor:  # (P, K) -> (P, M, K)
        return 2.0 * torch.einsum("mkl,pl->pmk", As, c) + bs.unsqueeze(0)

    candidates = torch.cat([C, sobol(_N_CANDIDATES, low, high, seed + 1)])
    cand_values = values(candidates) * s  # minimisation orientation

    # ideal point: each surrogate minimised on its own over the box; nadir from the payoff table (the
    # surrogates at those m minimisers), so that the normalised front spans about [0, 1] per objective
    z = torch.empty(m, dtype=torch.float64)
    payoff = torch.empty(m, m, dtype=torch.float64)
    for j in range(m):
        start = candidates[int(cand_values[:, j].argmin())].unsqueeze(0)

        def single(c: Tensor, j: int = j) -> Tensor:
            return values(c)[:, j] * s[j]

        def single_grad(c: Tensor, j: int = j) -> Tensor:
            return grads(c)[:, j] * s[j]

        cj = _pgd(single, single_grad, start, low, high, steps)
        payoff[j] = values(cj)[0] * s
        z[j] = torch.minimum(payoff[j, j], cand_values[:, j].min())
    r = payoff.max(0).values - z
    spread = (F * s).max(0).values - z
    r = torch.where(r > 1e-12 * (1 + z.abs()), r, torch.where(spread > 0, spread, torch.ones_like(spread)))

    W = uniform_preferences(m, n_prefs) if m >= 2 else torch.ones(1, 1, dtype=torch.float64)

    def normalised(c: Tensor) -> tuple[Tensor, Tensor]:
        return (values(c) * s - z) / r, grads(c) * (s / r)[None, :, None]

    def scal(c: Tensor, w: Tensor) -> Tensor:
        h = (values(c) * s - z) / r
        if scalarization == "weighted_sum":
            return (w * h).sum(1)
        return mu * torch.logsumexp(w * h / mu, dim=1)

    def scal_grad(c: Tensor, w: Tensor) -> Tensor:
        h, dh = normalised(c)
        if scalarization == "weighted_sum":
            return (w[:, :, None] * dh).sum(1)
        soft = torch.softmax(w * h / mu, dim=1)
        return ((soft * w)[:, :, None] * dh).sum(1)

    hc = (cand_values - z) / r  # (Nc, M)
    if scalarization == "weighted_sum":
        start_scores = W @ hc.T  # (P, Nc)
    else:
        start_scores = mu * torch.logsumexp(W[:, None, :] * hc[None] / mu, dim=2)
    start = candidates[start_scores.argmin(dim=1)]
    coeffs = _pgd(lambda c: scal(c, W), lambda c: scal_grad(c, W), start, low, high, steps)
    predicted = values(coeffs)

    evaluated = None
    n_evals = C.shape[0]
    if reevaluate:
        unique, inverse = torch.unique(coeffs, dim=0, return_inverse=True)
        true = evaluate_all(evaluate, unique, m)
        evaluated = true[inverse]
        n_evals += unique.shape[0]
    return MapResult(
        coefficients=coeffs,
        prefs=W,
        predicted=predicted,
        evaluated=evaluated,
        samples=C,
        sample_objectives=F,
        surrogates=surrogates,
        n_evals=n_evals,
    )
