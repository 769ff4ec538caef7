r"""The CAGrad 2-D two-task toy: problem, runner through :class:`molearn.Balancer`, table and plot.

The problem (Liu et al., "Conflict-Averse Gradient Descent for Multi-task Learning", NeurIPS 2021,
`arXiv:2110.14048 <https://arxiv.org/abs/2110.14048>`_, ``toy.py``; reused by Nash-MTL, FAMO and
SDMGrad) on :math:`x = (x_1, x_2)`:

.. math::

    f_1^{\log} &= \log\max(|0.5(-x_1 - 7) - \tanh(-x_2)|, 5\cdot10^{-6}) + 6, \quad
    f_2^{\log} = \log\max(|0.5(-x_1 + 3) + \tanh(-x_2) + 2|, 5\cdot10^{-6}) + 6 \\
    f_1^{sq} &= ((-x_1 + 7)^2 + 0.1(-x_2 - 8)^2)/10 - 20, \quad
    f_2^{sq} = ((-x_1 - 7)^2 + 0.1(-x_2 - 8)^2)/10 - 20 \\
    c_1 &= \max(\tanh(x_2/2), 0), \quad c_2 = \max(\tanh(-x_2/2), 0), \quad
    f_i = c_1 f_i^{\log} + c_2 f_i^{sq}

and the objectives are :math:`(s\, f_1, f_2)` with the variant's scale :math:`s`.

**Pareto set.** Below :math:`x_2 \approx -2` only the quadratic parts matter. For
:math:`x_1 \in (-7, 7)` the two gradients have x1-components of opposite signs, so they are
anti-parallel exactly where their cross product vanishes, which reduces to

.. math:: c_2'(x_2)\,\bigl(0.1(49 - x_1^2) + 0.01(x_2 + 8)^2 - 20\bigr) + 0.02\,c_2(x_2)(x_2 + 8) = 0.

:func:`pareto_x2` solves it by bisection: :math:`x_2^*(0) = -8.35511` (the papers' plotted line
``-8.3552``), bending down to :math:`x_2^*(\pm 7) = -8.43446`, which are the individual minima of
:math:`f_1` (:math:`x_1 = 7`) and :math:`f_2` (:math:`x_1 = -7`). :func:`pareto_distance` measures
:math:`|x_2 - x_2^*(\mathrm{clip}(x_1))| + \max(|x_1| - 7, 0)`.

**Variants** (:data:`VARIANTS`): ``nash`` (Nash-MTL: :math:`s = 0.1`, 5 starts, Adam lr 1e-3,
35k steps, CAGrad c = 0.4), ``famo`` (the same with 50k steps and FAMO's
:math:`L^{\min} = (-21 s, -21)`, γ = 0), ``sdmgrad`` (SDMGrad: :math:`s = 1`, 3 starts, Adam lr 2e-3,
70k steps, N(0, 0.2²) noise added to every gradient entry, CAGrad c = 0.5, SDMGrad λ = 0.01) and
``cagrad`` (the original: :math:`s = 1`, 3 starts, Adam lr 1e-3, 100k steps, c = 0.5).

**Outcomes reported in the papers.** ``nash``/``famo``: Adam on the summed loss (EW/LS) fails to
reach the Pareto set from 1 of the 5 starts (FAMO README) — from (9, 9) it stays in the flat
:math:`x_2 > 0` region (so do PCGrad and CAGrad in our runs of the paper's schedule) — and converges
to the average-loss optimum :math:`x_1 = -63/11` (f2's side) from the others; LS, PCGrad and CAGrad
are controlled by the larger gradient of :math:`f_2` and end with imbalanced solutions, MGDA by the
smaller one (it ends at :math:`f_1`'s minimum from the right-hand starts); Nash-MTL and FAMO reach
the set from all 5 starts with balanced end points (Nash-MTL paper, Fig. 1; FAMO paper, Fig. 1).
``cagrad``: Adam on the average loss stays stuck from (-8.5, 7.5) and (9, 9) for all 100k steps,
MGDA and PCGrad stop wherever they hit the Pareto set, CAGrad converges to the average-loss optimum
(0, -8.355) from all 3 starts (CAGrad paper, Fig. 1).

**Shorter runs.** Adam's steps have size about ``lr``, so a run of ``n`` steps at ``lr`` covers the
same distance as ``n / k`` steps at ``k · lr``; :func:`run` with ``time_scale=k`` also raises the
moment decays to ``β^k`` so that Adam's averaging windows span the same distance: a coarser
discretisation of the same path at a k-th of the cost. How coarse it may get before an outcome
changes depends on the variant (:attr:`Variant.max_time_scale`, checked against the paper's schedule
with EW, MGDA, PCGrad and CAGrad): 10 for ``nash``/``famo`` — EW stays stuck from (9, 9) up to 35,
but PCGrad and CAGrad, also still in the flat region at the end of the paper's 35k steps from
(9, 9) (and at k = 5), get out of it in the last third of the run at k = 10 and sooner beyond —
5 for ``cagrad`` (at 10 EW escapes from both starts where it is stuck), 1 for ``sdmgrad`` (with the
gradient noise EW already escapes from (9, 9) at 2).
"""

from __future__ import annotations

import argparse
import ast
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

import torch
from torch import Tensor, nn

if not __package__:  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from experiments import common
from molearn import Balancer
from molearn import methods as _methods

NAME = "toy"

LOWER = 5e-6
X1_RANGE = (-7.0, 7.0)
PARETO_X2 = -8.35511  # x2 of the Pareto set at x1 = 0 (see pareto_x2; the papers draw the line at -8.3552)

#: The methods compared by the papers on this toy, in plotting order; those not registered are skipped.
DEFAULT_METHODS = ("ew", "mgda", "pcgrad", "cagrad", "nashmtl", "famo", "fairgrad", "sdmgrad")


# --------------------------------------------------------------------------------------------- problem
def losses(x: Tensor, scale: float = 1.0) -> Tensor:
    """The two objectives ``(scale · f1, f2)`` at a batch of points ``x`` of shape (..., 2) -> (..., 2)."""
    x1, x2 = x[..., 0], x[..., 1]
    t = torch.tanh(-x2)
    f1_log = torch.clamp((0.5 * (-x1 - 7) - t).abs(), LOWER).log() + 6
    f2_log = torch.clamp((0.5 * (-x1 + 3) + t + 2).abs(), LOWER).log() + 6
    c1 = torch.tanh(0.5 * x2).clamp_min(0)
    c2 = torch.tanh(-0.5 * x2).clamp_min(0)
    q = 0.1 * (-x2 - 8) ** 2
    f1_sq = ((-x1 + 7) ** 2 + q) / 10 - 20
    f2_sq = ((-x1 - 7) ** 2 + q) / 10 - 20
    f1 = c1 * f1_log + c2 * f1_sq
    f2 = c1 * f2_log + c2 * f2_sq
    return torch.stack([f1 * scale, f2], dim=-1)


def noisy_losses(x: Tensor, scale: float, z: Tensor | None) -> Tensor:
    """:func:`losses` whose gradient carries the noise ``z`` (K×2, one row per task), values unchanged.

    ``z_i · (x - x.detach())`` is zero but has gradient ``z_i``: this is how the SDMGrad variant adds
    N(0, σ²) to every entry of each task gradient while the methods still see the exact loss values.
    """
    out = losses(x, scale)
    if z is not None:
        out = out + (z * (x - x.detach()).unsqueeze(-2)).sum(-1)
    return out


def _pareto_residual(x1: Tensor, x2: Tensor) -> Tensor:
    """Zero where the two gradients are anti-parallel (x1 in [-7, 7], x2 well below 0)."""
    c2 = torch.tanh(-0.5 * x2)
    dc2 = -0.5 * (1 - c2 * c2)
    return dc2 * (0.1 * (49 - x1 * x1) + 0.01 * (x2 + 8) ** 2 - 20) + 0.02 * c2 * (x2 + 8)


def pareto_x2(x1: Tensor | float, *, iters: int = 64) -> Tensor:
    """x2 of the Pareto set at abscissa ``x1`` (clipped to [-7, 7]), by bisection on [-10, -7] in float64."""
    x1t = torch.as_tensor(x1, dtype=torch.float64).clamp(*X1_RANGE)
    lo = torch.full_like(x1t, -10.0)  # residual < 0 there
    hi = torch.full_like(x1t, -7.0)  # residual > 0 there
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        pos = _pareto_residual(x1t, mid) > 0
        hi = torch.where(pos, mid, hi)
        lo = torch.where(pos, lo, mid)
    return 0.5 * (lo + hi)


def pareto_distance(x: Tensor) -> Tensor:
    """``|x2 - x2*(clip(x1))| + max(|x1| - 7, 0)`` for points ``x`` of shape (..., 2) (float64)."""
    x = x.to(torch.float64)
    x1, x2 = x[..., 0], x[..., 1]
    return (x2 - pareto_x2(x1)).abs() + (x1.abs() - X1_RANGE[1]).clamp_min(0)


# --------------------------------------------------------------------------------------------- variants
@dataclass(frozen=True)
class Variant:
    """A published set-up of the toy: f1 scale, starts, Adam lr and steps, gradient noise, method options."""

    name: str
    description: str
    scale: float
    starts: tuple[tuple[float, float], ...]
    lr: float
    iterations: int
    noise: float = 0.0
    method_kwargs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: the coarsest time scale (see :func:`run`) checked to keep the paper's outcomes on this variant
    max_time_scale: float = 1.0


_NASH_STARTS = ((-8.5, 7.5), (0.0, 0.0), (9.0, 9.0), (-7.5, -0.5), (9.0, -1.0))
_CAGRAD_STARTS = ((-8.5, 7.5), (-8.5, -5.0), (9.0, 9.0))

VARIANTS: dict[str, Variant] = {
    "nash": Variant(
        "nash",
        "Nash-MTL toy (AvivNavon/nash-mtl experiments/toy): f1 scaled by 0.1, 5 starts, "
        "Adam lr 1e-3, 35k steps",
        scale=0.1,
        starts=_NASH_STARTS,
        lr=1e-3,
        iterations=35_000,
        method_kwargs={"cagrad": {"c": 0.4}, "famo": {"gamma": 0.0, "min_losses": (-2.1, -21.0)}},
        max_time_scale=10.0,
    ),
    "famo": Variant(
        "famo",
        "FAMO toy (Cranial-XIX/FAMO experiments/toy): the Nash-MTL toy with 50k steps, L_min = (-2.1, -21)",
        scale=0.1,
        starts=_NASH_STARTS,
        lr=1e-3,
        iterations=50_000,
        method_kwargs={"cagrad": {"c": 0.4}, "famo": {"gamma": 0.0, "min_losses": (-2.1, -21.0)}},
        max_time_scale=10.0,
    ),
    "sdmgrad": Variant(
        "sdmgrad",
        "SDMGrad toy (ml-opt-lab/sdmgrad toy/toy.py): 3 starts, Adam lr 2e-3, 70k steps, "
        "N(0, 0.2^2) gradient noise",
        scale=1.0,
        starts=_CAGRAD_STARTS,
        lr=2e-3,
        iterations=70_000,
        noise=0.2,
        method_kwargs={"cagrad": {"c": 0.5}, "sdmgrad": {"lmbda": 0.01}, "famo": {"gamma": 0.0}},
        max_time_scale=1.0,
    ),
    "cagrad": Variant(
        "cagrad",
        "original CAGrad toy (Cranial-XIX/CAGrad toy.py): 3 starts, Adam lr 1e-3, 100k steps",
        scale=1.0,
        starts=_CAGRAD_STARTS,
        lr=1e-3,
        iterations=100_000,
        method_kwargs={"cagrad": {"c": 0.5}, "famo": {"gamma": 0.0}},
        max_time_scale=5.0,
    ),
}


def _key(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


def resolve_methods(names: Sequence[str] | None, *, strict: bool = True) -> tuple[list[str], list[str]]:
    """Registered method keys for ``names`` (``None``: :data:`DEFAULT_METHODS`; ``["all"]``: every method).

    Returns ``(found, missing)``. With ``strict``, an unknown name raises a ``KeyError`` naming the known
    ones.
    """
    table = {_key(k): k for k in _methods.registry()}
    if names is None:
        wanted, strict = list(DEFAULT_METHODS), False
    elif [_key(n) for n in names] == ["all"]:
        return sorted(table.values()), []
    else:
        wanted = list(names)
    found: list[str] = []
    missing: list[str] = []
    for name in wanted:
        key = table.get(_key(name))
        if key is None:
            if strict:
                raise KeyError(f"unknown method {name!r}; known: {', '.join(sorted(table.values()))}")
            missing.append(name)
        elif key not in found:
            found.append(key)
    return found, missing


# --------------------------------------------------------------------------------------------- one run
@dataclass(frozen=True)
class Job:
    """One method from one start (picklable: sent to worker processes)."""

    method: str
    kwargs: Mapping[str, Any]
    start_index: int
    start: tuple[float, float]
    scale: float
    lr: float
    iterations: int
    noise: float = 0.0
    seed: int = 0
    betas: tuple[float, float] = (0.9, 0.999)
    record_every: int = 100
    tol: float = 0.05


@dataclass
class RunResult:
    """The trajectory and end point of one :class:`Job` (plain Python values)."""

    method: str
    start_index: int
    start: tuple[float, float]
    steps: list[int]
    points: list[tuple[float, float]]
    end: tuple[float, float]
    f1: float
    f2: float
    distance: float
    reached: bool
    settled_at: int | None
    outcome: str
    seconds: float
    error: str | None = None


def _outcome(end: tuple[float, float], reached: bool) -> str:
    x1, x2 = end
    if not math.isfinite(x1) or not math.isfinite(x2):
        return "diverged"
    if reached:
        if x1 >= X1_RANGE[1] - 0.5:
            return "Pareto set, at f1's minimum"
        if x1 <= X1_RANGE[0] + 0.5:
            return "Pareto set, at f2's minimum"
        return "Pareto set"
    if x2 > 0:
        return "not reached (still at x2 > 0)"
    return "not reached"


@common.single_thread()
def run_job(job: Job) -> RunResult:
    """Run one method from one start with the public API: ``Balancer.step(loss_fn, draw, Adam)``.

    The gradient noise of the SDMGrad variant is a fresh "batch" ``z`` (K×2, N(0, noise²)) per draw,
    entering the loss as ``z_i · (x - x.detach())``: the loss values are unchanged and each task
    gradient gets ``+ z_i``. Methods that need several batches therefore get independent noise.
    """
    t0 = time.perf_counter()
    torch.manual_seed(job.seed)
    gen = torch.Generator().manual_seed(job.seed)
    x = nn.Parameter(torch.tensor(job.start, dtype=torch.float64))
    steps = [0]
    points = [(float(job.start[0]), float(job.start[1]))]
    error: str | None = None
    try:
        method = _methods.get(job.method, **dict(job.kwargs))
        balancer = Balancer(method, shared=[x])
        optimizer = torch.optim.Adam([x], lr=job.lr, betas=job.betas)

        def draw() -> Tensor | None:
            if job.noise <= 0:
                return None
            return job.noise * torch.randn(2, 2, generator=gen, dtype=torch.float64)

        def loss_fn(z: Tensor | None) -> Tensor:
            return noisy_losses(x, job.scale, z)

        for it in range(1, job.iterations + 1):
            balancer.step(loss_fn, draw, optimizer)
            if it % job.record_every == 0 or it == job.iterations:
                p = x.detach().tolist()
                steps.append(it)
                points.append((p[0], p[1]))
    except Exception as exc:  # one failing method must not take the comparison down
        error = f"{type(exc).__name__}: {exc}"
    end = points[-1]
    pts = torch.tensor(points, dtype=torch.float64)
    dist = pareto_distance(pts)
    with torch.no_grad():
        f = losses(pts[-1], 1.0).tolist()
    distance = float(dist[-1])
    reached = error is None and distance <= job.tol
    settled_at: int | None = None
    if reached:
        far = (dist > job.tol).nonzero().flatten().tolist()
        settled_at = steps[far[-1] + 1] if far else 0
    return RunResult(
        method=job.method,
        start_index=job.start_index,
        start=(float(job.start[0]), float(job.start[1])),
        steps=steps,
        points=points,
        end=end,
        f1=f[0],
        f2=f[1],
        distance=distance,
        reached=reached,
        settled_at=settled_at,
        outcome=f"error ({error})" if error else _outcome(end, reached),
        seconds=time.perf_counter() - t0,
        error=error,
    )


# --------------------------------------------------------------------------------------------- timing
#: ``time_scale="auto"`` uses the finest of these (up to the variant's ``max_time_scale``) whose
#: estimated wall time fits the budget.
TIME_SCALES = (1.0, 2.0, 5.0, 10.0, 20.0, 35.0)


def step_seconds(method: str, kwargs: Mapping[str, Any], variant: Variant, *, steps: int = 25) -> float:
    """Measured wall seconds of one ``Balancer.step`` of ``method`` on the toy (after 5 warm-up steps)."""
    job = Job(method, kwargs, 0, variant.starts[0], variant.scale, variant.lr, 5, noise=variant.noise)
    run_job(job)
    t0 = time.perf_counter()
    job = Job(method, kwargs, 0, variant.starts[0], variant.scale, variant.lr, steps, noise=variant.noise)
    res = run_job(job)
    return (time.perf_counter() - t0) / steps if res.error is None else 0.0


def _makespan(costs: Sequence[float], workers: int) -> float:
    """Longest-processing-time-first schedule of ``costs`` on ``workers`` processes."""
    loads = [0.0] * max(1, workers)
    for c in sorted(costs, reverse=True):
        i = loads.index(min(loads))
        loads[i] += c
    return max(loads)


def auto_time_scale(
    per_step: Mapping[str, float],
    n_starts: int,
    iterations: int,
    workers: int,
    budget: float,
    max_scale: float = TIME_SCALES[-1],
) -> tuple[float, float]:
    """The finest scale of :data:`TIME_SCALES` up to ``max_scale`` whose estimated wall time fits ``budget``.

    Returns ``(time_scale, estimated_seconds)``; the coarsest allowed scale when none fits.
    """
    est = math.inf
    ladder = [k for k in TIME_SCALES if k <= max_scale] or [TIME_SCALES[0]]
    for k in ladder:
        n = max(1, round(iterations / k))
        est = _makespan([c * n for c in per_step.values() for _ in range(n_starts)], workers)
        if est <= budget:
            return k, est
    return ladder[-1], est


# --------------------------------------------------------------------------------------------- runner
@dataclass
class ToyResult:
    """Everything :func:`run` did: the settings and one :class:`RunResult` per (method, start)."""

    variant: Variant
    methods: list[str]
    iterations: int
    lr: float
    betas: tuple[float, float]
    time_scale: float
    tol: float
    seed: int
    kwargs: dict[str, dict[str, Any]]
    results: list[RunResult]
    seconds: float

    def for_method(self, method: str) -> list[RunResult]:
        return sorted((r for r in self.results if r.method == method), key=lambda r: r.start_index)


def run(
    variant: str | Variant = "nash",
    methods: Sequence[str] | None = None,
    *,
    iterations: int | None = None,
    lr: float | None = None,
    time_scale: float | Literal["auto"] = 1.0,
    budget: float = 240.0,
    seed: int = 0,
    tol: float = 0.05,
    jobs: int = 1,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    record_points: int = 500,
    log: TextIO | None = None,
) -> ToyResult:
    """Run every method from every start of ``variant``; progress lines go to ``log`` (e.g. ``sys.stderr``).

    Args:
        variant: a key of :data:`VARIANTS` or a :class:`Variant`.
        methods: method names (``None``: the registered ones of :data:`DEFAULT_METHODS`; ``["all"]``).
        iterations: Adam steps per start (default: the variant's, divided by ``time_scale``).
        lr: Adam learning rate (default: the variant's, multiplied by ``time_scale``).
        time_scale: ``k > 1`` runs the paper's schedule ``k`` times coarser: ``lr·k``, ``iterations/k``
            and Adam betas ``(0.9^k, 0.999^k)`` (see the module docstring). ``"auto"``: time each
            method's step and take the finest of :data:`TIME_SCALES` that fits ``budget`` seconds.
        budget: wall seconds aimed at by ``time_scale="auto"``.
        tol: a start "reached" the Pareto set when its end point is within ``tol`` (:func:`pareto_distance`).
        jobs: worker processes (one (method, start) pair each); 1 runs in this process.
        overrides: ``{method: {kwarg: value}}`` on top of the variant's method options.
        record_points: about how many points of each trajectory to keep.
    """
    var = VARIANTS[variant] if isinstance(variant, str) else variant
    found, missing = resolve_methods(methods)
    say = common.printer(log)
    if missing:
        say(f"toy: not registered (skipped): {', '.join(missing)}")
    if not found:
        raise ValueError("no method to run")
    over = {_key(k): dict(v) for k, v in (overrides or {}).items()}
    all_kwargs: dict[str, dict[str, Any]] = {}
    for m in found:
        base = {_key(k): v for k, v in var.method_kwargs.items()}.get(_key(m), {})
        kw, dropped = common.method_kwargs(m, base)
        if dropped:
            say(f"toy: {m} does not take {', '.join(dropped)} (variant option ignored)")
        kw.update(over.get(_key(m), {}))
        try:
            _methods.get(m, **kw)
        except Exception as exc:  # e.g. a method with a required argument under methods=["all"]
            say(f"toy: cannot construct {m} with {kw} ({type(exc).__name__}: {exc}); skipped")
            continue
        all_kwargs[m] = kw
    found = [m for m in found if m in all_kwargs]
    if not found:
        raise ValueError("no method could be constructed")
    workers = max(1, min(jobs, len(found) * len(var.starts)))

    per_step: dict[str, float] = {}
    if time_scale == "auto" and iterations is not None:
        time_scale = 1.0
    if time_scale == "auto" or workers > 1:
        per_step = {m: step_seconds(m, all_kwargs[m], var) for m in found}
        say("toy: time per step: " + ", ".join(f"{m} {1e3 * t:.2f} ms" for m, t in per_step.items()))
    if time_scale == "auto":
        time_scale, est = auto_time_scale(
            per_step, len(var.starts), var.iterations, workers, budget, var.max_time_scale
        )
        say(f"toy: time scale {time_scale:g} (estimated {est:.0f} s, budget {budget:g} s)")
    elif iterations is None and float(time_scale) > var.max_time_scale:
        say(
            f"toy: time scale {float(time_scale):g} is coarser than {var.max_time_scale:g}, the "
            f"coarsest checked to keep the papers' outcomes on variant {var.name}"
        )
    k = float(time_scale)
    if not k > 0:
        raise ValueError(f"time_scale must be > 0, got {time_scale}")
    n_iter = iterations if iterations is not None else max(1, round(var.iterations / k))
    step_lr = lr if lr is not None else var.lr * k
    betas = (0.9**k, 0.999**k)
    record_every = max(1, n_iter // max(1, record_points))
    job_list = [
        Job(
            method=m,
            kwargs=all_kwargs[m],
            start_index=i,
            start=s,
            scale=var.scale,
            lr=step_lr,
            iterations=n_iter,
            noise=var.noise,
            seed=seed + i,
            betas=betas,
            record_every=record_every,
            tol=tol,
        )
        for m in found
        for i, s in enumerate(var.starts)
    ]
    say(
        f"toy: variant {var.name}, {len(found)} method(s) x {len(var.starts)} start(s), "
        f"{n_iter} Adam steps (lr {step_lr:g}, betas ({betas[0]:.4g}, {betas[1]:.4g})), {workers} process(es)"
    )
    t0 = time.perf_counter()

    def describe(r: RunResult) -> str:
        sx, sy = r.start
        status = r.outcome if r.error else ("reached" if r.reached else "NOT reached")
        return (
            f"{r.method:<10} start {r.start_index} ({sx:g}, {sy:g}): "
            f"end ({r.end[0]:.3f}, {r.end[1]:.3f}), distance {r.distance:.3g}, {status} "
            f"({r.seconds:.1f} s, {1e3 * r.seconds / max(1, n_iter):.2f} ms/step)"
        )

    results = common.run_jobs(
        run_job, job_list, jobs=workers, describe=describe, log=log,
        cost=lambda j: per_step.get(j.method, 0.0),  # the longest first
    )
    return ToyResult(
        variant=var,
        methods=found,
        iterations=n_iter,
        lr=step_lr,
        betas=betas,
        time_scale=k,
        tol=tol,
        seed=seed,
        kwargs=all_kwargs,
        results=results,
        seconds=time.perf_counter() - t0,
    )


# --------------------------------------------------------------------------------------------- outputs
COLUMNS = (
    "method",
    "start",
    "start_x1",
    "start_x2",
    "end_x1",
    "end_x2",
    "f1",
    "f2",
    "distance",
    "reached",
    "settled_at",
    "outcome",
    "seconds",
)


def _display(method: str) -> str:
    cls = _methods.registry().get(method)
    return cls.__name__ if cls is not None else method


def csv_rows(result: ToyResult) -> list[list[Any]]:
    """One row per (method, start) under :data:`COLUMNS`: start, end point, f1, f2 (unscaled), distance,
    reached, ..."""
    return [
        [
            _display(r.method),
            r.start_index,
            r.start[0],
            r.start[1],
            f"{r.end[0]:.6g}",
            f"{r.end[1]:.6g}",
            f"{r.f1:.6g}",
            f"{r.f2:.6g}",
            f"{r.distance:.6g}",
            "yes" if r.reached else "no",
            "" if r.settled_at is None else r.settled_at,
            r.outcome,
            f"{r.seconds:.2f}",
        ]
        for r in result.results
    ]


def format_markdown(result: ToyResult) -> str:
    """The end-point table (method, start, end point, f1, f2, distance to the Pareto set, reached)."""
    var = result.variant
    lines = [
        f"# CAGrad 2-D toy, variant `{var.name}`",
        "",
        f"{var.description}.",
        "",
        f"Run: {result.iterations} Adam steps, lr {result.lr:g}, betas ({result.betas[0]:.4g}, "
        f"{result.betas[1]:.4g})"
        + (f" (the paper's schedule {result.time_scale:g}x coarser)" if result.time_scale != 1 else "")
        + f", f1 scaled by {var.scale:g} for the methods, gradient noise std {var.noise:g}, "
        f"seed {result.seed}; {result.seconds:.1f} s in all.",
        f"Pareto set: x1 in [-7, 7], x2 = x2*(x1) from {PARETO_X2:.4f} (x1 = 0) to "
        f"{float(pareto_x2(7.0)):.4f} (x1 = ±7); reached = distance <= {result.tol:g}. f1, f2 are unscaled.",
        "",
    ]
    opts = {m: kw for m, kw in result.kwargs.items() if kw}
    if opts:
        lines += ["Method options: " + "; ".join(f"{_display(m)} {kw}" for m, kw in opts.items()), ""]
    lines += [
        "| method | start | end point | f1 | f2 | distance | reached | settled at step | outcome |",
        "|---|---|---|---:|---:|---:|---|---:|---|",
    ]
    for r in result.results:
        lines.append(
            f"| {_display(r.method)} | ({r.start[0]:g}, {r.start[1]:g}) | ({r.end[0]:.3f}, {r.end[1]:.3f}) "
            f"| {r.f1:.3f} | {r.f2:.3f} | {r.distance:.3g} | {'yes' if r.reached else 'no'} "
            f"| {'' if r.settled_at is None else r.settled_at} | {r.outcome} |"
        )
    lines += ["", "| method | reached |", "|---|---|"]
    for m in result.methods:
        rs = result.for_method(m)
        lines.append(f"| {_display(m)} | {sum(r.reached for r in rs)}/{len(rs)} |")
    return "\n".join(lines) + "\n"


def plot_trajectories(result: ToyResult, path: str | os.PathLike[str], *, grid: int = 200) -> None:
    """One panel per method: contours of the mean loss, the Pareto set, one trajectory per start."""
    var = result.variant
    n = len(result.methods)
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig = common.figure("trajectories plot", figsize=(4.2 * ncols, 4.0 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    lim = 10.5
    g = torch.linspace(-lim, lim, grid, dtype=torch.float64)
    xx, yy = torch.meshgrid(g, g, indexing="xy")
    with torch.no_grad():
        zz = losses(torch.stack([xx, yy], dim=-1), var.scale).mean(-1)
    px = torch.linspace(*X1_RANGE, 101, dtype=torch.float64)
    py = pareto_x2(px)
    colors = ("tab:red", "tab:orange", "tab:green", "tab:blue", "tab:purple", "tab:brown", "tab:pink")
    for idx, m in enumerate(result.methods):
        ax = axes[idx // ncols][idx % ncols]
        ax.contour(xx.numpy(), yy.numpy(), zz.numpy(), levels=18, cmap="viridis", linewidths=0.8, alpha=0.7)
        ax.plot(px.numpy(), py.numpy(), color="0.55", linewidth=5, alpha=0.6, zorder=1)
        for end in X1_RANGE:
            ax.plot([end], [float(pareto_x2(end))], marker="*", color="k", markersize=11, zorder=4)
        rs = result.for_method(m)
        for r in rs:
            c = colors[r.start_index % len(colors)]
            xs = [p[0] for p in r.points]
            ys = [p[1] for p in r.points]
            label = f"start ({r.start[0]:g}, {r.start[1]:g})" if idx == 0 else None
            ax.plot(xs, ys, color=c, linewidth=1.6, zorder=3, label=label)
            ax.plot([xs[0]], [ys[0]], marker="o", color="k", markersize=6, zorder=5)
            ax.plot(
                [xs[-1]],
                [ys[-1]],
                marker="o" if r.reached else "X",
                color=c,
                markersize=7,
                zorder=6,
                markeredgecolor="k",
            )
        if idx == 0:
            ax.legend(loc="upper center", fontsize=7, framealpha=0.85)
        ok = sum(r.reached for r in rs)
        ax.set_title(f"{_display(m)}: {ok}/{len(rs)} reached")
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
    for idx in range(n, nrows * ncols):
        axes[idx // ncols][idx % ncols].set_axis_off()
    fig.suptitle(
        f"toy '{var.name}': mean loss contours, Pareto set (gray), ★ task minima, "
        f"{result.iterations} Adam steps (lr {result.lr:g})",
        fontsize=10,
    )
    fig.savefig(path, dpi=110)


def write_outputs(result: ToyResult, out: str | os.PathLike[str], *, plot: bool = True) -> common.Outputs:
    """``results.md``, ``results.csv`` and (with ``plot``) ``trajectories.png`` in ``out``."""
    files = common.Outputs(out)
    files.text("results.md", format_markdown(result))
    files.csv("results.csv", csv_rows(result), COLUMNS)
    if plot:
        plot_trajectories(result, files.path("trajectories.png"))
    return files


# --------------------------------------------------------------------------------------------- command line
def _parse_set(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["cagrad.c=0.5", "famo.gamma=1e-3"]`` -> ``{"cagrad": {"c": 0.5}, "famo": {"gamma": 0.001}}``."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        head, sep, raw = item.partition("=")
        method, dot, key = head.partition(".")
        if not sep or not dot or not method or not key:
            raise ValueError(f"--set expects METHOD.OPTION=VALUE, got {item!r}")
        try:
            value: Any = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        out.setdefault(method, {})[key] = value
    return out


def _time_scale(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0 or 'auto', got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0 or 'auto', got {text!r}")
    return value


#: ``--quick``: the paper's schedule this many times coarser (200 steps of the nash variant)
QUICK_TIME_SCALE = 175.0


def build_parser() -> argparse.ArgumentParser:
    p = common.parser(
        NAME,
        __doc__,
        methods="method names, or 'all' for every registered method "
        f"(default: those registered of {','.join(DEFAULT_METHODS)})",
        known_methods=[*_methods.registry(), "all"],
        jobs=True,
        quick=f"seconds: the paper's schedule {QUICK_TIME_SCALE:g}x coarser (too coarse for its outcomes)",
    )
    p.add_argument(
        "--variant",
        choices=sorted(VARIANTS),
        default="nash",
        help="published set-up: " + "; ".join(f"{k}: {v.description}" for k, v in VARIANTS.items()),
    )
    p.add_argument(
        "--time-scale",
        type=_time_scale,
        default="auto",
        metavar="K|auto",
        help="run the paper's Adam schedule K times coarser (lr*K, steps/K, betas**K); 'auto' (default): "
        "the finest of 1, 2, 5, 10, 20, 35 (at most the variant's checked limit: nash/famo 10, cagrad 5, "
        "sdmgrad 1) whose measured cost fits --budget",
    )
    p.add_argument("--budget", type=float, default=240.0, help="seconds aimed at by --time-scale auto (240)")
    p.add_argument("--paper", action="store_true", help="the paper's exact schedule (= --time-scale 1)")
    p.add_argument("--iterations", type=int, default=None, help="Adam steps per start")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (overrides the schedule)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first start (start i uses seed + i)")
    p.add_argument("--tol", type=float, default=0.05, help="distance to the Pareto set counted as reached")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="METHOD.OPTION=VALUE",
        help="method option on top of the variant's, e.g. --set cagrad.c=0.5 (repeatable)",
    )
    return p


def _main(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    if args.paper and args.time_scale not in ("auto", 1.0):
        raise ValueError("--paper and --time-scale disagree")
    scale = 1.0 if args.paper else QUICK_TIME_SCALE if args.quick else args.time_scale
    result = run(
        args.variant,
        args.methods,
        iterations=args.iterations,
        lr=args.lr,
        time_scale=scale,
        budget=args.budget,
        seed=args.seed,
        tol=args.tol,
        jobs=args.jobs,
        overrides=_parse_set(args.set),
        log=sys.stderr,
    )
    files = write_outputs(result, args.out, plot=not args.no_plot)
    status = files.done(NAME, format_markdown(result), t0)
    return 1 if any(r.error for r in result.results) else status


def main(argv: Sequence[str] | None = None) -> int:
    """``python experiments/toy/run.py [options]``; returns the exit status."""
    return common.main(NAME, build_parser, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
