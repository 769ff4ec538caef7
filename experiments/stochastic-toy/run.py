r"""The stochastic 2-D toy of Trade-Off-MOL (MoDo): Pareto stationarity of stochastic MGDA, MoCo, MoDo, ...

Set-up (heshandevaka/Trade-Off-MOL ``Toy/toy-stochastic.py``, the toy of Chen, Fernando, Ying, Chen,
"Three-Way Trade-Off in Multi-Objective Learning: Optimization, Generalization and Conflict-Avoidance",
NeurIPS 2023, `arXiv:2305.20057 <https://arxiv.org/abs/2305.20057>`_): the CAGrad toy
(``losses`` of ``experiments/toy/run.py``) with :math:`f_1` scaled by 2, and an "empirical data set" of
:math:`n = 5000` points :math:`z_j \sim \mathcal N(0, I_2)` drawn once. A minibatch :math:`B` (drawn
with replacement) gives the stochastic objectives

.. math:: f_i(x; B) = f_i(x) + \bar z_B^\top x, \qquad i = 1, 2,

with the **same** batch mean :math:`\bar z_B` for both objectives (the official code adds one column
vector to both columns of its 2×2 gradient matrix), so each stochastic gradient is
:math:`\nabla f_i(x) + \bar z_B` (covariance :math:`I/|B|`). The empirical objectives use the mean of
all :math:`n` points, the population ones are the :math:`f_i`. Adam (lr 5e-4, decayed by
:math:`1/(t+1)^{0.05}` every step), 70,000 steps (``run_all``'s ``n_iter = 5000 # 70000``; its PS
plot reaches 60K), 10 seeds, batch 100, starts (−8.5, 7.5), (−8.5, −5), (9, 9), (0, 0), (10, −8).

**Metric.** Pareto stationarity :math:`PS(x) = \min_{\lambda\in\Delta_2}\|\nabla F_S(x)^\top\lambda\|`,
the norm of the MGDA (min-norm) direction of the two *empirical* gradients
(:func:`pareto_stationarity`, closed form for K = 2), at every iterate. "Final PS" is its mean over the
last 10 % of the steps of a run (the curves are noisy step to step); the tables give its mean over
seeds ± the half-width of a two-sided 95 % t-interval (:func:`t_interval`), per start, as the paper
plots one panel per start.

**Methods** (:data:`CONFIGS`; per run through ``molearn.methods.get`` and ``molearn.Balancer.step``
(:func:`run`), or all runs at once with the same update rules (:func:`run_batched`, see "batched runs"
below)): stochastic MGDA ("SMG", batch 100), MoCo (``variant="tradeoff"``,
β = γ = ρ = 0.1, λ0 uniform, Y0 = 0; batch 100), MoDo (``variant="two"``, γ = 0.01, ρ = 0.001, two
batches of 50, direction ½λᵀ(G1 + G2)), SDMGrad (λ = 0.01, the value of the SDMGrad toy — its toy
code is not public; ``batches=3``: the paper's stochastic algorithm with the weight QP on
:math:`G(\xi_1)G(\xi_2)^\top` and the direction on an independent batch, the official inner solver, 20
projected SGD steps at lr 5, momentum 0.5; three batches of 33 so that every method sees 100 samples
per step, as the MoDo toy halves its batch), EW (batch 100) and, as the official code's ``mgd``
reference, deterministic MGDA on the full empirical data set (one run per start: no randomness).

**Deviations from the official code.** The official MoDo branch samples its two gradient matrices
only at the first step and reuses them for the whole run (``if it==0``); here every method draws
fresh batches at every step. float64 instead of float32. The step-0 PS is recorded before the first
update, as in the official loop.

**What the runs show** (``experiments/stochastic-toy``: the paper's 70,000 steps, 20 seeds, batched).
From the three starts that reach the Pareto set, (−8.5, −5), (0, 0) and (10, −8), full-batch MGDA drives
the PS to about 1e-7, while every stochastic method levels off near 1e-3. SMG ends at 6.9e-4 to 8.6e-4 and
MoDo at the same values (Welch intervals of the difference contain 0). MoCo ends at 1.5e-3 to 1.6e-3,
higher than SMG, with separated intervals: its ρ = 0.1 pulls λ to ½ and it ends at EW's optimum. From
(−8.5, 7.5) and (9, 9) no method reaches the Pareto set: every run climbs the log kink at x1 = ∓5. So
"SMG stalls while MoCo and MoDo reach Pareto stationarity" is contradicted in this set-up. The reason is
structural. With one shift :math:`\bar z_B` shared by both objectives, at a Pareto-stationary point with
anti-parallel gradients the stochastic min-norm point is :math:`\bar z_B` minus its component along
:math:`g_1 - g_2`, which has zero mean. So SMG is not biased there (:func:`smg_bias`), and the floor is the
variance that Adam turns into steps of size lr, common to all stochastic methods. The MoCo paper's toy
(``Toy/toy-stochastic-moco-iclr23.py``) adds independent noise to each objective's gradient instead.
``noise="independent"`` draws an independent batch per objective (a deviation from this toy's code), and
with it SMG is biased near the Pareto set.
"""

from __future__ import annotations

import argparse
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
from molearn import Balancer, solvers
from molearn import methods as _methods

losses = common.load("toy").losses
NAME = "stochastic-toy"

SCALE = 2.0  # f1 is scaled by 2 in Toy/toy-stochastic.py
STARTS: tuple[tuple[float, float], ...] = ((-8.5, 7.5), (-8.5, -5.0), (9.0, 9.0), (0.0, 0.0), (10.0, -8.0))
Samples = Literal["split", "each", "full"]
Noise = Literal["shared", "independent"]


# --------------------------------------------------------------------------------------------- problem
def make_dataset(n: int = 5000, seed: int = 0) -> Tensor:
    """The "empirical data set": ``n`` points ``z_j ~ N(0, I_2)`` (float64), drawn once per ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=gen, dtype=torch.float64)


def stochastic_losses(x: Tensor, zbar: Tensor) -> Tensor:
    """``(2 f1(x) + zbar_1·x, f2(x) + zbar_2·x)`` for ``zbar`` of shape (2,) (one shift for both
    objectives, the official toy) or (2, 2) (one row per objective)."""
    shift = zbar * x if zbar.dim() == 1 else (zbar * x.unsqueeze(-2))
    return losses(x, SCALE) + shift.sum(-1)


def _gradients(points: Tensor) -> tuple[Tensor, Tensor]:
    """Population gradients of ``(2 f1, f2)`` at points (N, 2): two (N, 2) tensors."""
    with torch.enable_grad():
        x = points.detach().to(torch.float64).clone().requires_grad_(True)
        f = losses(x, SCALE)
        g1 = torch.autograd.grad(f[..., 0].sum(), x, retain_graph=True)[0]
        g2 = torch.autograd.grad(f[..., 1].sum(), x)[0]
    return g1, g2


def pareto_stationarity(points: Tensor, shift: Tensor | None = None) -> Tensor:
    r"""``min_{λ∈Δ₂} ‖λ g1 + (1-λ) g2‖`` at points (..., 2), with ``g_i = ∇f_i + shift`` (the empirical
    gradients when ``shift`` is the data mean; ``None``: population). Closed form:
    :math:`\lambda^* = \mathrm{clip}((g_2 - g_1)^\top g_2 / \|g_1 - g_2\|^2, 0, 1)`."""
    shape = points.shape[:-1]
    g1, g2 = _gradients(points.reshape(-1, 2))
    if shift is not None:
        g1 = g1 + shift.to(g1)
        g2 = g2 + shift.to(g2)
    return _min_norm_2(g1, g2).reshape(shape)


def _min_norm_direction_2(g1: Tensor, g2: Tensor) -> Tensor:
    """The MGDA direction ``λ g1 + (1-λ) g2``, λ the argmin over [0, 1] of its norm (closed form)."""
    diff = g2 - g1
    den = (diff * diff).sum(-1)
    lam = torch.where(den > 0, (diff * g2).sum(-1) / den.clamp_min(1e-300), torch.ones_like(den))
    lam = lam.clamp(0.0, 1.0).unsqueeze(-1)
    return lam * g1 + (1 - lam) * g2


def _min_norm_2(g1: Tensor, g2: Tensor) -> Tensor:
    """``min_{λ∈[0,1]} ‖λ g1 + (1-λ) g2‖`` for gradients (..., P), closed form."""
    return _min_norm_direction_2(g1, g2).norm(dim=-1)


# --------------------------------------------------------------------------------------------- statistics
def t_interval(values: Tensor, dim: int = 0) -> tuple[Tensor, Tensor]:
    """Mean and half-width of the two-sided 95 % t-interval along ``dim`` (half-width NaN for one value)."""
    n = values.shape[dim]
    mean = values.mean(dim)
    if n < 2:
        return mean, torch.full_like(mean, math.nan)
    sd = values.std(dim, unbiased=True)
    return mean, common.t_quantile(n - 1) * sd / math.sqrt(n)


def welch_difference(a: Tensor, b: Tensor) -> tuple[float, float]:
    """``mean(a) - mean(b)`` and the half-width of its two-sided 95 % Welch interval (a sample of one value
    counts as a constant: the interval of the other alone; NaN when neither has two values)."""
    diff = float(a.mean() - b.mean())
    parts = [(float(v.var(unbiased=True)) / v.numel(), v.numel() - 1) for v in (a, b) if v.numel() > 1]
    if not parts:
        return diff, math.nan
    se2 = sum(var for var, _ in parts)
    if se2 == 0:
        return diff, 0.0
    df = max(1, int(se2**2 / sum(var**2 / dof for var, dof in parts)))
    return diff, common.t_quantile(df) * math.sqrt(se2)


def smg_bias(
    point: Sequence[float],
    data: Tensor,
    batch: int,
    *,
    noise: Noise = "shared",
    draws: int = 20_000,
    seed: int = 0,
) -> dict[str, float]:
    r"""Bias of the stochastic MGDA direction at ``point``: ``draws`` batches of ``batch`` points give
        :math:`d_B = \mathrm{MGDA}(
    abla F(x) + ar z_B)`; returns ``bias`` :math:`\|ar d_B - d^st\|`
        (:math:`d^st` the MGDA direction of the empirical gradients, whose norm is ``ps``), ``bias_se`` (the
        standard error of :math:`ar d_B`, :math:`\sqrt{\mathrm{tr}\,\mathrm{Cov}(d_B)/	ext{draws}}`) and
        ``mean_norm`` :math:`\overline{\|d_B\|}`."""
    gen = torch.Generator().manual_seed(seed)
    rows = 2 if noise == "independent" else 1
    idx = torch.randint(0, data.shape[0], (draws, rows, batch), generator=gen)
    zbar = data[idx].mean(-2)  # (draws, rows, 2): broadcast over the two objectives when rows == 1
    jac = _population_jacobian(torch.tensor([point], dtype=torch.float64))[0]  # (K, P)
    emp = data.mean(0)
    g = jac + zbar
    d = _min_norm_direction_2(g[:, 0], g[:, 1])
    ref = _min_norm_direction_2(jac[0] + emp, jac[1] + emp)
    cov_trace = float(d.var(0, unbiased=True).sum())
    return {
        "ps": float(ref.norm()),
        "bias": float((d.mean(0) - ref).norm()),
        "bias_se": math.sqrt(cov_trace / draws),
        "mean_norm": float(d.norm(dim=-1).mean()),
    }


# --------------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class MethodConfig:
    """One curve of the figure: a registered method, its options and how it samples.

    ``samples``: ``"split"`` — the nominal batch is shared among the method's independent batches
    (``Needs.batches``), each gets ``batch // batches`` points (MoDo's toy: two batches of 50);
    ``"each"`` — every independent batch has ``batch`` points; ``"full"`` — the whole data set
    (deterministic: one run per start).
    """

    label: str
    method: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    samples: Samples = "split"
    note: str = ""


CONFIGS: dict[str, MethodConfig] = {
    "mgda": MethodConfig("SMG (stochastic MGDA)", "mgda", {}, "split", "MGDA on one batch of 100"),
    "moco": MethodConfig(
        "MoCo",
        "moco",
        {"variant": "tradeoff", "beta": 0.1, "gamma": 0.1, "rho": 0.1},
        "split",
        "Trade-Off-MOL toy: beta = gamma = rho = 0.1, lambda0 = 1/2, Y0 = 0",
    ),
    "modo": MethodConfig(
        "MoDo",
        "modo",
        {"variant": "two", "gamma": 0.01, "rho": 0.001},
        "split",
        "Trade-Off-MOL toy: gamma = 0.01, rho = 0.001, two batches of 50",
    ),
    "sdmgrad": MethodConfig(
        "SDMGrad",
        "sdmgrad",
        {"lamda": 0.01, "batches": 3},
        "split",
        "lambda = 0.01 (SDMGrad toy), 3 batches of 33, official inner solver",
    ),
    "ew": MethodConfig("EW", "ew", {"reduction": "mean"}, "split", "mean of the two stochastic gradients"),
    "mgda-full": MethodConfig(
        "MGDA (full batch)", "mgda", {}, "full", "deterministic reference: the official code's 'mgd'"
    ),
}
DEFAULT_METHODS = tuple(CONFIGS)


@dataclass(frozen=True)
class Settings:
    """The experiment's size and schedule (:data:`PAPER`: the official ``run_all``)."""

    iterations: int = 70_000  # run_all's commented-out "n_iter = 5000 # 70000"; its plots reach 60K
    seeds: int | Sequence[int] = 10  # a count N (seeds 0..N-1) or the seeds
    lr: float = 5e-4
    decay: float = 0.05
    batch: int = 100
    n_data: int = 5000
    data_seed: int = 0
    seed: int = 0
    noise: Noise = "shared"
    final_window: float = 0.1

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)


PAPER = Settings()


# --------------------------------------------------------------------------------------------- one run
@dataclass(frozen=True)
class Job:
    """One (method config, start, seed) run (picklable)."""

    key: str
    config: MethodConfig
    start_index: int
    start: tuple[float, float]
    seed: int
    settings: Settings
    record_points: int = 250


@dataclass
class RunResult:
    """PS along one run: block means of the PS over ``record_every`` steps, ending at ``steps``."""

    key: str
    start_index: int
    seed: int
    steps: list[int]
    ps: list[float]
    final_ps: float
    last_ps: float
    end: tuple[float, float]
    step_seconds: float
    error: str | None = None


def batch_seed(seed: int, start_index: int) -> int:
    """Seed of the batch sampler of run ``seed`` from start ``start_index`` (the same for every method)."""
    return 1_000_003 * seed + start_index


def _batch_size(cfg: MethodConfig, batches: int, batch: int) -> int | None:
    if cfg.samples == "full":
        return None
    if cfg.samples == "each":
        return batch
    return max(1, batch // max(1, batches))


@common.single_thread()
def run_job(job: Job) -> RunResult:
    """Run one method from one start with ``Balancer.step(loss_fn, draw, Adam)`` and a LambdaLR decay."""
    s = job.settings
    data = make_dataset(s.n_data, s.data_seed)
    emp = data.mean(0)
    n_iter = s.iterations
    xs = torch.empty(n_iter + 1, 2, dtype=torch.float64)
    xs[0] = torch.tensor(job.start, dtype=torch.float64)
    done = 0
    error: str | None = None
    seconds = 0.0
    try:
        method = _methods.get(job.config.method, **dict(job.config.kwargs))
        size = _batch_size(job.config, method.needs.batches, s.batch)
        # the same batches for every method at a given (start, seed): common random numbers
        gen = torch.Generator().manual_seed(batch_seed(s.seed + job.seed, job.start_index))
        torch.manual_seed(batch_seed(s.seed + job.seed, job.start_index))
        rows = 2 if s.noise == "independent" else 1

        def draw() -> Tensor:
            if size is None:
                return emp if rows == 1 else emp.expand(2, 2)
            idx = torch.randint(0, s.n_data, (rows, size), generator=gen)
            zbar = data[idx].mean(-2)
            return zbar[0] if rows == 1 else zbar

        x = nn.Parameter(xs[0].clone())
        balancer = Balancer(method, shared=[x])
        optimizer = torch.optim.Adam([x], lr=s.lr)
        decay = s.decay
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 1.0 / (t + 1) ** decay)

        def loss_fn(zbar: Tensor) -> Tensor:
            return stochastic_losses(x, zbar)

        t0 = time.perf_counter()
        for it in range(1, n_iter + 1):
            balancer.step(loss_fn, draw, optimizer)
            schedule.step()
            xs[it] = x.detach()
            done = it
        seconds = time.perf_counter() - t0
    except Exception as exc:  # one failing method must not take the comparison down
        error = f"{type(exc).__name__}: {exc}"
    ps_all = pareto_stationarity(xs[: done + 1], emp)
    if done < n_iter:
        ps_all = torch.cat([ps_all, torch.full((n_iter - done,), math.nan, dtype=torch.float64)])
    end_point = xs[done].tolist()
    per_step = seconds / max(1, done)
    key, i, seed = job.key, job.start_index, job.seed
    return _result(key, i, seed, ps_all, s, job.record_points, end_point, per_step, error)


def _result(
    key: str,
    start_index: int,
    seed: int,
    ps_all: Tensor,
    s: Settings,
    record_points: int,
    end_point: Sequence[float],
    step_seconds: float,
    error: str | None = None,
) -> RunResult:
    """A :class:`RunResult` from the PS at every iterate ``ps_all`` (``iterations + 1`` values): block
    means over ``iterations // record_points`` steps and the final-window mean."""
    n_iter = s.iterations
    every = max(1, n_iter // max(1, record_points))
    steps = [0]
    ps = [float(ps_all[0])]
    for end in range(every, n_iter + 1, every):
        steps.append(end)
        ps.append(float(ps_all[end - every + 1 : end + 1].mean()))
    if steps[-1] != n_iter:
        steps.append(n_iter)
        ps.append(float(ps_all[steps[-2] + 1 :].mean()))
    window = max(1, round(s.final_window * n_iter))
    return RunResult(
        key=key,
        start_index=start_index,
        seed=seed,
        steps=steps,
        ps=ps,
        final_ps=float(ps_all[n_iter + 1 - window :].mean()),
        last_ps=float(ps_all[-1]),
        end=(float(end_point[0]), float(end_point[1])),
        step_seconds=step_seconds,
        error=error,
    )


# --------------------------------------------------------------------------------------------- runner
@dataclass
class StochasticToyResult:
    """Every run of :func:`run` and the settings that produced them."""

    settings: Settings
    methods: list[str]
    configs: dict[str, MethodConfig]
    starts: list[tuple[float, float]]
    runs: list[RunResult]
    seconds: float
    jobs: int = 1
    engine: str = "per-run"

    def select(self, key: str, start_index: int) -> list[RunResult]:
        return sorted(
            (r for r in self.runs if r.key == key and r.start_index == start_index), key=lambda r: r.seed
        )

    def curves(self, key: str, start_index: int) -> tuple[list[int], Tensor]:
        """(steps, PS block means of shape (seeds, points)) of one method from one start."""
        rs = self.select(key, start_index)
        if not rs:
            return [], torch.empty(0, 0, dtype=torch.float64)
        return rs[0].steps, torch.tensor([r.ps for r in rs], dtype=torch.float64)

    def final(self, key: str, start_index: int) -> Tensor:
        """Final PS of every seed of one method from one start."""
        return torch.tensor([r.final_ps for r in self.select(key, start_index)], dtype=torch.float64)

    def ms_per_step(self, key: str) -> float:
        times = [r.step_seconds for r in self.runs if r.key == key and r.error is None]
        return 1e3 * sum(times) / len(times) if times else math.nan


def _resolve(methods: Sequence[str] | None) -> list[str]:
    if methods is None:
        return [k for k in DEFAULT_METHODS if CONFIGS[k].method in _methods.registry()]
    keys = []
    for m in methods:
        key = m.lower()
        if key not in CONFIGS:
            raise KeyError(f"unknown method {m!r}; known: {', '.join(CONFIGS)}")
        if key not in keys:
            keys.append(key)
    return keys


def run(
    methods: Sequence[str] | None = None,
    settings: Settings = PAPER,
    *,
    starts: Sequence[int] | None = None,
    jobs: int = 1,
    record_points: int = 250,
    configs: Mapping[str, MethodConfig] | None = None,
    log: TextIO | None = None,
) -> StochasticToyResult:
    """Run every method (keys of :data:`CONFIGS`) from every start for ``settings.seeds`` seeds.

    ``starts``: indices into :data:`STARTS` (default all five). ``jobs``: worker processes (one run
    each); 1 runs here. Progress lines go to ``log``.
    """
    table = dict(CONFIGS if configs is None else configs)
    keys = _resolve(methods) if configs is None else list(methods or table)
    say = common.printer(log)
    idx = list(range(len(STARTS))) if starts is None else list(starts)
    job_list = [
        Job(k, table[k], i, STARTS[i], seed, settings, record_points)
        for k in keys
        for i in idx
        for seed in (settings.seed_list[:1] if table[k].samples == "full" else settings.seed_list)
    ]
    workers = max(1, min(jobs, len(job_list)))
    say(
        f"stochastic-toy: {len(keys)} method(s) x {len(idx)} start(s) x {len(settings.seed_list)} seed(s), "
        f"{settings.iterations} Adam steps (lr {settings.lr:g}, decay 1/(t+1)^{settings.decay:g}), "
        f"batch {settings.batch}, {settings.noise} noise, {len(job_list)} runs on {workers} process(es)"
    )
    t0 = time.perf_counter()

    def describe(r: RunResult) -> str:
        status = f"ERROR {r.error}" if r.error else f"final PS {r.final_ps:.4g}"
        return (
            f"{r.key:<9} start {r.start_index} seed {r.seed}: {status}, "
            f"end ({r.end[0]:.3f}, {r.end[1]:.3f}), {1e3 * r.step_seconds:.2f} ms/step"
        )

    def cost(j: Job) -> int:  # rough: independent batches per step, the longest first
        try:
            return _methods.get(j.config.method, **dict(j.config.kwargs)).needs.batches
        except Exception:
            return 0

    runs = common.run_jobs(run_job, job_list, jobs=workers, describe=describe, log=log, cost=cost)
    runs.sort(key=lambda r: (keys.index(r.key), r.start_index, r.seed))
    return StochasticToyResult(
        settings=settings,
        methods=keys,
        configs={k: table[k] for k in keys},
        starts=[STARTS[i] for i in idx],
        runs=runs,
        seconds=time.perf_counter() - t0,
        jobs=workers,
    )


# --------------------------------------------------------------------------------------------- batched runs
# The per-run path above costs milliseconds per step of a 2-D problem: the time goes to per-call
# overhead (two backward passes, the 6-iteration active-set min-norm solver, the Balancer's bookkeeping;
# cProfile of 300 SMG steps: 0.41 s backward, 0.56 s min_norm, 2.2 s in all), not to arithmetic. The
# batched path below runs every (method, start, seed) of an experiment as one row of a single (R, 2)
# parameter: one forward and one backward pass per step for all rows, each method's update rule applied
# to its rows at once with molearn's batched solvers (``solvers.min_norm`` on (R, 2, 2) Gramians,
# ``solvers.project_simplex`` on (R, 2) weights), and one Adam on the stacked parameter — Adam is
# elementwise, so this is R independent Adams with the same schedule.


class _Rule:
    """One method's update rule on the rows of a group of independent runs: ``direction`` maps the
    per-batch Jacobians (R, B, K, P) to the update directions (R, P); per-run state in ``state``."""

    batches = 1

    def direction(self, jac: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def state(self) -> dict[str, Tensor]:
        return {}

    def load(self, state: Mapping[str, Tensor]) -> None:
        del state


class _MGDARule(_Rule):
    """MGDA (Sener & Koltun 2018) on one batch: the exact min-norm point of the rows of each Jacobian."""

    def direction(self, jac: Tensor) -> Tensor:
        j = jac[:, 0]
        w = solvers.min_norm(j @ j.transpose(-1, -2)).to(j.dtype)
        return (w.unsqueeze(-1) * j).sum(-2)


class _EWRule(_Rule):
    """Equal weighting: the mean (``scale`` 1/K) or the sum of the rows."""

    def __init__(self, scale: float) -> None:
        self.scale = scale

    def direction(self, jac: Tensor) -> Tensor:
        return jac[:, 0].sum(-2) * self.scale


class _MoCoRule(_Rule):
    r"""MoCo (Fernando et al., ICLR 2023), the Trade-Off-MOL ``moco``: :math:`Y \leftarrow Y - \beta_n
    (Y - G)`, :math:`\lambda \leftarrow \Pi_\Delta(\lambda - \gamma_n (YY^\top\lambda + \rho\lambda))`,
    :math:`d = Y^\top\lambda`; Y starts at 0, λ at 1/K; :math:`\beta_n = \beta/n^{\sigma_\beta}`."""

    def __init__(self, rows: int, k: int, p: int, moco: Any) -> None:
        self.beta, self.beta_sigma, self.rho = moco.beta, moco.beta_sigma, moco.rho
        self.gamma, self.gamma_sigma = moco.gamma, moco.gamma_sigma
        self.y = torch.zeros(rows, k, p, dtype=torch.float64)
        self.lambd = torch.full((rows, k), 1.0 / k, dtype=torch.float64)
        self.n = 0

    def direction(self, jac: Tensor) -> Tensor:
        self.n += 1
        beta = self.beta / self.n**self.beta_sigma
        gamma = self.gamma / self.n**self.gamma_sigma
        self.y = self.y * (1.0 - beta) + beta * jac[:, 0]
        gram = self.y @ self.y.transpose(-1, -2)
        step = self.lambd - gamma * ((gram @ self.lambd.unsqueeze(-1)).squeeze(-1) + self.rho * self.lambd)
        self.lambd = solvers.project_simplex(step)
        return (self.lambd.unsqueeze(-1) * self.y).sum(-2)

    def state(self) -> dict[str, Tensor]:
        return {"y": self.y, "lambd": self.lambd, "n": torch.tensor(self.n)}

    def load(self, state: Mapping[str, Tensor]) -> None:
        self.y, self.lambd, self.n = state["y"].clone(), state["lambd"].clone(), int(state["n"])


class _MoDoRule(_Rule):
    r"""MoDo (Chen et al., NeurIPS 2023), the two-batch toy variant: :math:`\lambda \leftarrow
    \Pi_\Delta(\lambda - \gamma (G_1 G_2^\top\lambda + \rho\lambda))`, then
    :math:`d = \tfrac12 (G_1 + G_2)^\top\lambda` (``average``; else the unhalved sum); λ starts at 1/K."""

    batches = 2

    def __init__(self, rows: int, k: int, gamma: float, rho: float, average: bool) -> None:
        self.gamma, self.rho, self.factor = gamma, rho, 0.5 if average else 1.0
        self.lambd = torch.full((rows, k), 1.0 / k, dtype=torch.float64)

    def direction(self, jac: Tensor) -> Tensor:
        g1, g2 = jac[:, 0], jac[:, 1]
        v = (self.lambd.unsqueeze(-1) * g2).sum(-2)  # G2ᵀλ (R, P)
        cross = (g1 @ v.unsqueeze(-1)).squeeze(-1)  # G1 G2ᵀ λ (R, K)
        self.lambd = solvers.project_simplex(self.lambd - self.gamma * (cross + self.rho * self.lambd))
        return self.factor * (self.lambd.unsqueeze(-1) * (g1 + g2)).sum(-2)

    def state(self) -> dict[str, Tensor]:
        return {"lambd": self.lambd}

    def load(self, state: Mapping[str, Tensor]) -> None:
        self.lambd = state["lambd"].clone()


def batched_rule(cfg: MethodConfig, rows: int) -> _Rule:
    """The batched update rule of ``cfg`` for ``rows`` runs, or ValueError for a method or option that
    has none here (SDMGrad, MoCo's other variants, normalisations, ...): run those per run."""
    m = _methods.get(cfg.method, **dict(cfg.kwargs))
    name = type(m).__name__
    if name == "MGDA" and m.normalization == "none" and m.solver == "exact" and m.scale == 1.0:
        return _MGDARule()
    if name == "EW":
        return _EWRule(1.0 if m.reduction == "sum" else 0.5)  # mean of the K = 2 objectives
    if (
        name == "MoCo"
        and m.variant == "tradeoff"
        and m.normalization == "none"
        and not (m.raw_loss or m.avg_reg or m.step_wise or m.steps_per_epoch)
        and m.scale == 1.0
    ):
        return _MoCoRule(rows, 2, 2, m)
    if name == "MoDo" and m.variant == "two":
        return _MoDoRule(rows, 2, m.gamma, m.rho, m.average)
    raise ValueError(f"no batched update rule for {cfg.method} {dict(cfg.kwargs)}: use --engine per-run")


class Sampler:
    """Batch means for the rows of one group: ``draw()`` -> (R, B, 2) (one shift for both objectives) or
    (R, B, 2, 2) (``rows=2``: one batch per objective). One generator for the whole group."""

    def __init__(self, data: Tensor, runs: int, batches: int, size: int, rows: int, seed: int) -> None:
        self.data, self.shape, self.rows = data, (runs, batches, rows, size), rows
        self.gen = torch.Generator().manual_seed(seed)

    def draw(self) -> Tensor:
        idx = torch.randint(0, self.data.shape[0], self.shape, generator=self.gen)
        zbar = self.data[idx].mean(-2)  # (R, B, rows, 2)
        return zbar[:, :, 0] if self.rows == 1 else zbar

    def state(self) -> list[Tensor]:
        return [self.gen.get_state()]

    def load(self, state: Sequence[Tensor]) -> None:
        self.gen.set_state(state[0])


class PerRunSampler(Sampler):
    """The random stream of :func:`run_job`, run by run (one generator per run seeded by
    :func:`batch_seed`, ``batches`` draws of ``(rows, size)`` indices per step): slow, for the check that
    the batched path reproduces the per-run one."""

    def __init__(
        self, data: Tensor, runs: Sequence[tuple[int, int]], batches: int, size: int, rows: int, base: int
    ) -> None:
        self.data, self.batches, self.size, self.rows = data, batches, size, rows
        self.gens = [torch.Generator().manual_seed(batch_seed(base + seed, i)) for i, seed in runs]

    def draw(self) -> Tensor:
        out = []
        for gen in self.gens:
            per = []
            for _ in range(self.batches):
                idx = torch.randint(0, self.data.shape[0], (self.rows, self.size), generator=gen)
                per.append(self.data[idx].mean(-2))
            out.append(torch.stack(per))
        zbar = torch.stack(out)
        return zbar[:, :, 0] if self.rows == 1 else zbar

    def state(self) -> list[Tensor]:
        return [g.get_state() for g in self.gens]

    def load(self, state: Sequence[Tensor]) -> None:
        for g, s in zip(self.gens, state, strict=True):
            g.set_state(s)


#: The configurations with a batched update rule (the default of :func:`run_batched`; SDMGrad has none).
BATCHED_METHODS = ("mgda", "moco", "modo", "ew", "mgda-full")


@dataclass
class _Group:
    key: str
    config: MethodConfig
    runs: list[tuple[int, int]]  # (start index, seed)
    rows: slice
    rule: _Rule
    sampler: Sampler | None  # None: the full data set


def _population_jacobian(x: Tensor) -> Tensor:
    """Rows ``(∇(2 f1), ∇f2)`` at each point of x (R, 2): (R, 2, 2), one backward pass."""
    with torch.enable_grad():
        xx = x.detach().unsqueeze(-2).repeat(1, 2, 1).requires_grad_(True)  # copy a for objective a
        f = losses(xx, SCALE)  # (R, 2 copies, 2 objectives)
        return torch.autograd.grad(f.diagonal(dim1=-2, dim2=-1).sum(), xx)[0]


@common.single_thread()
def run_batched(
    methods: Sequence[str] | None = None,
    settings: Settings = PAPER,
    *,
    starts: Sequence[int] | None = None,
    record_points: int = 250,
    configs: Mapping[str, MethodConfig] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every: int = 5000,
    per_run_streams: bool = False,
    log: TextIO | None = None,
) -> StochasticToyResult:
    """:func:`run` with every (method, start, seed) as one row of a single batched run (see above).

    The update rules are those of the per-run path (:func:`batched_rule`), and with ``per_run_streams``
    the batches too (:class:`PerRunSampler`: same numbers as :func:`run_job`, up to rounding); by default
    each method draws its batches for all its rows from one generator. ``checkpoint``: a file written
    every ``checkpoint_every`` steps and read back on a restart with the same arguments (resumable);
    deleted at the end.
    """
    table = dict(CONFIGS if configs is None else configs)
    keys = _resolve(methods or BATCHED_METHODS) if configs is None else list(methods or table)
    say = common.printer(log)
    s = settings
    idx = list(range(len(STARTS))) if starts is None else list(starts)
    data = make_dataset(s.n_data, s.data_seed)
    emp = data.mean(0)
    nrows = 2 if s.noise == "independent" else 1
    groups: list[_Group] = []
    row = 0
    for gi, k in enumerate(keys):
        cfg = table[k]
        seeds = s.seed_list[:1] if cfg.samples == "full" else s.seed_list
        runs = [(i, seed) for i in idx for seed in seeds]
        rule = batched_rule(cfg, len(runs))
        sampler: Sampler | None = None
        size = _batch_size(cfg, rule.batches, s.batch)
        if size is not None:
            if per_run_streams:
                sampler = PerRunSampler(data, runs, rule.batches, size, nrows, s.seed)
            else:
                sampler = Sampler(data, len(runs), rule.batches, size, nrows, batch_seed(s.seed, 1000 + gi))
        groups.append(_Group(k, cfg, runs, slice(row, row + len(runs)), rule, sampler))
        row += len(runs)
    start_x = torch.tensor([STARTS[i] for g in groups for i, _ in g.runs], dtype=torch.float64)
    x = nn.Parameter(start_x.clone())
    optimizer = torch.optim.Adam([x], lr=s.lr)
    decay = s.decay
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 1.0 / (t + 1) ** decay)
    n_iter = s.iterations
    ps = torch.empty(row, n_iter + 1, dtype=torch.float64)
    fingerprint = repr((s, keys, idx, per_run_streams, [g.config for g in groups]))
    first, seconds = 1, 0.0
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, weights_only=True)
        if state["fingerprint"] == fingerprint:
            done = int(state["step"])
            with torch.no_grad():
                x.copy_(state["x"])
            optimizer.load_state_dict(state["adam"])
            schedule.load_state_dict(state["schedule"])
            for g, rs, ss in zip(groups, state["rules"], state["samplers"], strict=True):
                g.rule.load(rs)
                if g.sampler is not None:
                    g.sampler.load(ss)
            ps[:, :done] = state["ps"]
            first, seconds = done + 1, float(state["seconds"])
            say(f"stochastic-toy: resumed from {ckpt} at step {done}")
        else:
            say(f"stochastic-toy: {ckpt} is from other settings: starting afresh")
    say(
        f"stochastic-toy (batched): {len(keys)} method(s) x {len(idx)} start(s) x {len(s.seed_list)} seed(s) "
        f"= {row} runs as one batch, {n_iter} Adam steps (lr {s.lr:g}, decay 1/(t+1)^{s.decay:g}), "
        f"batch {s.batch}, {s.noise} noise"
    )
    grad = torch.empty(row, 2, dtype=torch.float64)
    t0 = time.perf_counter()
    report = max(1, n_iter // 20)
    for it in range(first, n_iter + 1):
        jac_pop = _population_jacobian(x)  # (R, K, P) at x_{it-1}
        ps[:, it - 1] = _min_norm_2(jac_pop[:, 0] + emp, jac_pop[:, 1] + emp)
        for g in groups:
            base = jac_pop[g.rows].unsqueeze(1)  # (Rg, 1, K, P)
            if g.sampler is None:
                jac = base + (emp if nrows == 1 else emp.expand(2, 2))
            else:
                zbar = g.sampler.draw()
                jac = base + (zbar.unsqueeze(-2) if zbar.dim() == 3 else zbar)
            grad[g.rows] = g.rule.direction(jac)
        x.grad = grad.clone()
        optimizer.step()
        schedule.step()
        if it % report == 0 or it == n_iter:
            el = seconds + time.perf_counter() - t0
            say(f"  step {it}/{n_iter}: {el:.0f} s, {1e3 * el / it:.2f} ms/step for all {row} runs")
        if ckpt is not None and checkpoint_every > 0 and it % checkpoint_every == 0 and it < n_iter:
            state = {
                "fingerprint": fingerprint,
                "step": it,
                "x": x.detach().clone(),
                "adam": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "rules": [g.rule.state() for g in groups],
                "samplers": [[] if g.sampler is None else g.sampler.state() for g in groups],
                "ps": ps[:, :it].clone(),
                "seconds": seconds + time.perf_counter() - t0,
            }
            tmp = ckpt.with_name(ckpt.name + ".tmp")
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            torch.save(state, tmp)
            os.replace(tmp, ckpt)
    seconds += time.perf_counter() - t0
    end = x.detach()
    jac_pop = _population_jacobian(end)
    ps[:, n_iter] = _min_norm_2(jac_pop[:, 0] + emp, jac_pop[:, 1] + emp)
    per_run = seconds / max(1, n_iter) / row  # seconds: all sessions of a resumed run
    runs: list[RunResult] = []
    for g in groups:
        for r, (i, seed) in zip(range(g.rows.start, g.rows.stop), g.runs, strict=True):
            runs.append(_result(g.key, i, seed, ps[r], s, record_points, end[r].tolist(), per_run))
    if ckpt is not None and ckpt.exists():
        ckpt.unlink()
    return StochasticToyResult(
        settings=s,
        methods=keys,
        configs={k: table[k] for k in keys},
        starts=[STARTS[i] for i in idx],
        runs=runs,
        seconds=seconds,
        jobs=1,
        engine="batched",
    )


# --------------------------------------------------------------------------------------------- outputs
@dataclass
class Summary:
    """Final PS statistics of one method from one start."""

    key: str
    label: str
    start_index: int
    start: tuple[float, float]
    seeds: int
    mean: float
    half_width: float
    minimum: float
    maximum: float
    end_mean: tuple[float, float]
    ms_per_step: float
    errors: int


def summarize(result: StochasticToyResult) -> list[Summary]:
    """One :class:`Summary` per (method, start), in the order of ``result.methods`` then starts."""
    out = []
    start_ids = sorted({r.start_index for r in result.runs})
    for k in result.methods:
        ms = result.ms_per_step(k)
        for i in start_ids:
            rs = result.select(k, i)
            if not rs:
                continue
            vals = torch.tensor([r.final_ps for r in rs], dtype=torch.float64)
            mean, hw = t_interval(vals)
            ends = torch.tensor([r.end for r in rs], dtype=torch.float64).mean(0).tolist()
            out.append(
                Summary(
                    key=k,
                    label=result.configs[k].label,
                    start_index=i,
                    start=STARTS[i],
                    seeds=len(rs),
                    mean=float(mean),
                    half_width=float(hw),
                    minimum=float(vals.min()),
                    maximum=float(vals.max()),
                    end_mean=(ends[0], ends[1]),
                    ms_per_step=ms,
                    errors=sum(r.error is not None for r in rs),
                )
            )
    return out


COLUMNS = (
    "method",
    "label",
    "start",
    "start_x1",
    "start_x2",
    "seeds",
    "final_ps_mean",
    "ci95_low",
    "ci95_high",
    "ci95_half_width",
    "final_ps_min",
    "final_ps_max",
    "end_x1_mean",
    "end_x2_mean",
    "ms_per_step",
    "errors",
)


def csv_rows(result: StochasticToyResult) -> list[list[Any]]:
    """One row per (method, start) under :data:`COLUMNS`: final PS mean, 95 % t-interval, min/max, mean
    end point, ms/step."""
    rows = []
    for s in summarize(result):
        hw = s.half_width
        rows.append(
            [
                s.key,
                s.label,
                s.start_index,
                s.start[0],
                s.start[1],
                s.seeds,
                f"{s.mean:.6g}",
                "" if math.isnan(hw) else f"{s.mean - hw:.6g}",
                "" if math.isnan(hw) else f"{s.mean + hw:.6g}",
                "" if math.isnan(hw) else f"{hw:.6g}",
                f"{s.minimum:.6g}",
                f"{s.maximum:.6g}",
                f"{s.end_mean[0]:.6g}",
                f"{s.end_mean[1]:.6g}",
                f"{s.ms_per_step:.4g}",
                s.errors,
            ]
        )
    return rows


RUN_COLUMNS = ("method", "start", "seed", "final_ps", "last_ps", "end_x1", "end_x2", "error")


def run_rows(result: StochasticToyResult) -> list[list[Any]]:
    """One row per run under :data:`RUN_COLUMNS` (the per-seed values behind the intervals)."""
    return [
        [
            r.key,
            r.start_index,
            r.seed,
            f"{r.final_ps:.9g}",
            f"{r.last_ps:.9g}",
            f"{r.end[0]:.9g}",
            f"{r.end[1]:.9g}",
            r.error or "",
        ]
        for r in result.runs
    ]


def _seeds(s: Settings) -> str:
    return f"{len(s.seed_list)} seed(s)" + ("" if isinstance(s.seeds, int) else f" {tuple(s.seed_list)}")


def _pm(mean: float, hw: float) -> str:
    return f"{mean:.4g}" if math.isnan(hw) else f"{mean:.4g} ± {hw:.2g}"


def format_markdown(result: StochasticToyResult) -> str:
    """Final-PS table (method × start, mean ± 95 % t half-width), ratios to SMG and time per step."""
    s = result.settings
    sums = summarize(result)
    start_ids = sorted({x.start_index for x in sums})
    by = {(x.key, x.start_index): x for x in sums}
    noise = "one shift shared by both objectives" if s.noise == "shared" else "one batch per objective"
    head = "| method | " + " | ".join(f"({STARTS[i][0]:g}, {STARTS[i][1]:g})" for i in start_ids)
    sep = "|---|" + "---:|" * len(start_ids)
    lines = [
        "# Stochastic 2-D toy (Trade-Off-MOL `Toy/toy-stochastic.py`): Pareto stationarity",
        "",
        f"CAGrad toy with f1 scaled by {SCALE:g}; stochastic objectives f_i(x) + z̄_B·x with z̄_B the mean "
        f"of a batch of {s.batch} points drawn with replacement from {s.n_data} points z ~ N(0, I2) "
        f"(data seed {s.data_seed}; {noise}). "
        f"Adam lr {s.lr:g} decayed by 1/(t+1)^{s.decay:g}, {s.iterations} steps, {_seeds(s)} "
        f"(base seed {s.seed}); {result.seconds:.0f} s wall on {result.jobs} process(es)"
        + (
            f", every run as one row of one batched run ({len(result.runs)} runs; ms/step = wall time per "
            "step divided by the number of runs)."
            if result.engine == "batched"
            else "."
        ),
        "",
        "PS = ‖min-norm combination of the two empirical gradients‖ (MGDA direction). Final PS = its mean "
        f"over the last {100 * s.final_window:g} % of the steps; mean over seeds ± half-width of the 95 % "
        "t-interval. Deterministic runs (full batch) have one seed and no interval.",
        "",
        "## Final PS per start",
        "",
        head + " | ms/step |",
        sep + "---:|",
    ]
    for k in result.methods:
        cells = []
        for i in start_ids:
            x = by.get((k, i))
            cells.append("" if x is None else _pm(x.mean, x.half_width) + (" (errors)" if x.errors else ""))
        ms = result.ms_per_step(k)
        lines.append(f"| {result.configs[k].label} | " + " | ".join(cells) + f" | {ms:.2f} |")
    if "mgda" in result.methods:
        lines += [
            "",
            "## Final PS relative to SMG (stochastic MGDA), mean over seeds",
            "",
            head + " |",
            sep,
        ]
        for k in result.methods:
            cells = []
            for i in start_ids:
                x, ref = by.get((k, i)), by.get(("mgda", i))
                cells.append("" if x is None or ref is None or ref.mean == 0 else f"{x.mean / ref.mean:.3f}")
            lines.append(f"| {result.configs[k].label} | " + " | ".join(cells) + " |")
        smg = {i: torch.tensor([r.final_ps for r in result.select("mgda", i)]) for i in start_ids}
        lines += [
            "",
            "## Final PS minus SMG's: mean difference ± 95 % Welch half-width (* the interval excludes 0)",
            "",
            head + " |",
            sep,
        ]
        for k in result.methods:
            if k == "mgda":
                continue
            cells = []
            for i in start_ids:
                vals = torch.tensor([r.final_ps for r in result.select(k, i)])
                if not len(vals) or len(smg[i]) < 2:
                    cells.append("")
                    continue
                diff, hw = welch_difference(vals, smg[i])
                star = "" if math.isnan(hw) or abs(diff) <= hw else " *"
                cells.append(f"{diff:+.3g} ± {hw:.2g}{star}")
            lines.append(f"| {result.configs[k].label} | " + " | ".join(cells) + " |")
        data = make_dataset(s.n_data, s.data_seed)
        lines += [
            "",
            f"## Bias of the SMG direction at SMG's mean end point ({20_000} batches of {s.batch})",
            "",
            "‖mean d_B − d*‖ (± 1.96 standard errors) against the PS ‖d*‖ there and the mean ‖d_B‖; "
            "d_B: MGDA of one batch's gradients, d*: MGDA of the empirical gradients.",
            "",
            "| start | SMG mean end point | PS ‖d*‖ | bias ‖mean d_B − d*‖ | mean ‖d_B‖ |",
            "|---|---|---:|---:|---:|",
        ]
        for i in start_ids:
            x = by.get(("mgda", i))
            if x is None:
                continue
            b = smg_bias(x.end_mean, data, s.batch, noise=s.noise, seed=i)
            lines.append(
                f"| ({STARTS[i][0]:g}, {STARTS[i][1]:g}) | ({x.end_mean[0]:.3f}, {x.end_mean[1]:.3f}) | "
                f"{b['ps']:.3g} | {b['bias']:.3g} ± {1.96 * b['bias_se']:.2g} | {b['mean_norm']:.3g} |"
            )
    lines += ["", "## Mean end point", "", head + " |", sep]
    for k in result.methods:
        cells = []
        for i in start_ids:
            x = by.get((k, i))
            cells.append("" if x is None else f"({x.end_mean[0]:.2f}, {x.end_mean[1]:.2f})")
        lines.append(f"| {result.configs[k].label} | " + " | ".join(cells) + " |")
    lines += ["", "Method settings:", ""]
    for k in result.methods:
        c = result.configs[k]
        lines.append(f"- {c.label}: `{c.method}` {dict(c.kwargs)}, samples `{c.samples}` — {c.note}")
    return "\n".join(lines) + "\n"


_COLORS = {
    "mgda": "tab:blue",
    "moco": "#9D02D7",
    "modo": "tab:red",
    "sdmgrad": "tab:green",
    "ew": "tab:orange",
    "mgda-full": "0.35",
}


def plot_ps(result: StochasticToyResult, path: str | os.PathLike[str]) -> None:
    """One panel per start: PS over iterations (log y), mean over seeds with its 95 % t-band."""
    start_ids = sorted({r.start_index for r in result.runs})
    n = len(start_ids)
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig = common.figure("PS plot", figsize=(4.6 * ncols, 3.7 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for pos, i in enumerate(start_ids):
        ax = axes[pos // ncols][pos % ncols]
        for k in result.methods:
            steps, curves = result.curves(k, i)
            if not steps:
                continue
            mean, hw = t_interval(curves)
            color = _COLORS.get(k)
            style = "--" if result.configs[k].samples == "full" else "-"
            ax.plot(steps, mean.numpy(), style, color=color, linewidth=1.6, label=result.configs[k].label)
            if curves.shape[0] > 1:
                lo = (mean - hw).clamp_min(mean * 1e-3)
                ax.fill_between(steps, lo.numpy(), (mean + hw).numpy(), color=color, alpha=0.2, linewidth=0)
        ax.set_yscale("log")
        ax.set_title(f"start ({STARTS[i][0]:g}, {STARTS[i][1]:g})", fontsize=10)
        ax.set_xlabel("iteration")
        if pos % ncols == 0:
            ax.set_ylabel("PS = ‖MGDA direction‖ (empirical)")
        ax.grid(True, which="both", alpha=0.3)
    for pos in range(n, nrows * ncols):
        axes[pos // ncols][pos % ncols].set_axis_off()
    handles, labels = axes[0][0].get_legend_handles_labels()
    if n < nrows * ncols:
        axes[-1][-1].legend(handles, labels, loc="center", fontsize=9)
    else:
        axes[0][0].legend(fontsize=7)
    s = result.settings
    fig.suptitle(
        f"Stochastic toy: Adam lr {s.lr:g}/(t+1)^{s.decay:g}, batch {s.batch}, {_seeds(s)}; "
        "mean ± 95% t-interval (block means)",
        fontsize=10,
    )
    fig.savefig(path, dpi=110)


def write_outputs(
    result: StochasticToyResult, out: str | os.PathLike[str], *, plot: bool = True
) -> common.Outputs:
    """``results.md``, ``results.csv`` (per method and start), ``runs.csv`` (per run) and (with ``plot``)
    ``ps.png`` in ``out``."""
    files = common.Outputs(out)
    files.text("results.md", format_markdown(result))
    files.csv("results.csv", csv_rows(result), COLUMNS)
    files.csv("runs.csv", run_rows(result), RUN_COLUMNS)
    if plot:
        plot_ps(result, files.path("ps.png"))
    return files


# --------------------------------------------------------------------------------------------- command line
DEFAULT = Settings(iterations=2000, seeds=3)
QUICK = Settings(iterations=100, seeds=2)


def build_parser() -> argparse.ArgumentParser:
    p = common.parser(
        NAME,
        __doc__,
        methods=f"configurations of {','.join(CONFIGS)} (default: those the engine has)",
        known_methods=list(CONFIGS),
        seeds=f"{DEFAULT.seeds}; --paper {PAPER.seeds}",
        jobs=True,
        quick=f"seconds: {QUICK.seeds} seeds x {QUICK.iterations} steps",
    )
    p.add_argument(
        "--paper",
        action="store_true",
        help=f"the paper's size: {PAPER.seeds} seeds x {PAPER.iterations} steps (batched: minutes of CPU)",
    )
    p.add_argument(
        "--starts", type=common.ints, default=None, help="start indices 0-4, comma-separated (default: all)"
    )
    p.add_argument("--iterations", type=int, default=None, help=f"Adam steps (default {DEFAULT.iterations})")
    p.add_argument("--lr", type=float, default=None, help=f"Adam learning rate (default {PAPER.lr:g})")
    p.add_argument("--batch", type=int, default=None, help=f"samples per step (default {PAPER.batch})")
    p.add_argument(
        "--noise",
        choices=("shared", "independent"),
        default="shared",
        help="one batch shift for both objectives (the official toy) or one batch per objective",
    )
    p.add_argument("--data-seed", type=int, default=0, help="seed of the 5000-point data set")
    p.add_argument(
        "--engine",
        choices=("batched", "per-run"),
        default="batched",
        help="batched: every run as one row of one batched run (default; methods "
        f"{','.join(BATCHED_METHODS)}); per-run: Balancer.step, one process per run (--jobs)",
    )
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=10_000,
        help="batched engine: steps between checkpoints (OUT/checkpoint.pt, resumed on a rerun; 0: none)",
    )
    return p


def _main(args: argparse.Namespace) -> int:
    if args.paper and args.quick:
        raise ValueError("--paper and --quick disagree")
    base = PAPER if args.paper else QUICK if args.quick else DEFAULT
    settings = Settings(
        iterations=args.iterations if args.iterations is not None else base.iterations,
        seeds=tuple(args.seeds) if args.seeds is not None else base.seeds,
        lr=args.lr if args.lr is not None else base.lr,
        decay=base.decay,
        batch=args.batch if args.batch is not None else base.batch,
        n_data=base.n_data,
        data_seed=args.data_seed,
        noise=args.noise,
    )
    if args.engine == "batched":
        result = run_batched(
            args.methods,
            settings,
            starts=args.starts,
            checkpoint=Path(args.out) / "checkpoint.pt",
            checkpoint_every=args.checkpoint_every,
            log=sys.stderr,
        )
    else:
        result = run(args.methods, settings, starts=args.starts, jobs=args.jobs, log=sys.stderr)
    return write_outputs(result, args.out, plot=not args.no_plot).done(NAME, format_markdown(result))


def main(argv: Sequence[str] | None = None) -> int:
    """``python experiments/stochastic-toy/run.py [options]``; returns the exit status."""
    return common.main(NAME, build_parser, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
