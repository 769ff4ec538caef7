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
:math:`1/(t+1)^{0.05}` every step), 5000 steps, 10 seeds, batch 100, starts (−8.5, 7.5), (−8.5, −5),
(9, 9), (0, 0), (10, −8).

**Metric.** Pareto stationarity :math:`PS(x) = \min_{\lambda\in\Delta_2}\|\nabla F_S(x)^\top\lambda\|`,
the norm of the MGDA (min-norm) direction of the two *empirical* gradients
(:func:`pareto_stationarity`, closed form for K = 2), at every iterate. "Final PS" is its mean over the
last 10 % of the steps of a run (the curves are noisy step to step); the tables give its mean over
seeds ± the half-width of a two-sided 95 % t-interval (:func:`t_interval`), per start, as the paper
plots one panel per start.

**Methods** (:data:`CONFIGS`, everything through ``molearn.methods.get`` and
``molearn.Balancer.step``): stochastic MGDA ("SMG", batch 100), MoCo (``variant="tradeoff"``,
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

**What the runs show** (``experiments/stochastic-toy``: 3 seeds × 2000 steps; an independent
vectorised re-implementation of the official loop gave the same picture at 10 seeds × 5000 steps). Adam
moves the iterate by at most about :math:`\sum_t 5\cdot10^{-4}/(t+1)^{0.05}` ≈ 1.7 per coordinate in
5000 steps, so no start reaches the Pareto set (:math:`x_2 \approx -8.36`, :math:`|x_1| \le 7`): the PS
curves follow the paths (falling from (−8.5, −5), (0, 0), (10, −8), slowly rising from (−8.5, 7.5) and
(9, 9), where the iterates climb the log valley of :math:`f_1`), and the MGDA-type stochastic methods
stay within 10 % of deterministic MGDA (EW follows its own path: from (0, 0) it heads to positive x1) —
the batch-100 noise (std 0.1 per coordinate) does not create a PS plateau at this step size. What the
noise does change is the speed: Adam divides by the root mean square of the direction, so a noisy
direction moves less. MoCo, whose tracked Y averages the noise out, follows full-batch MGDA closely
(final PS within 1 % from every start), while SMG, MoDo (γ = 0.01 keeps λ near ½) and SDMGrad lag behind
(from (−8.5, −5) after 2000 steps: MGDA 0.228, MoCo 0.229, EW 0.233, SMG 0.238, MoDo 0.249, SDMGrad
0.252). The papers' claim that MoDo and MoCo drive the PS well below the plateau of the biased
stochastic MGDA is therefore *not* visible in this set-up. Part of the reason is structural: with one
shift :math:`\bar z_B` shared by both objectives, at a Pareto-stationary point with anti-parallel
gradients :math:`g_1 \parallel -g_2` the stochastic min-norm point is :math:`\bar z_B` minus its
component along them (while the noise is small against the gradients) — zero-mean, so SMG is not biased
there. The MoCo paper's toy (``Toy/toy-stochastic-moco-iclr23.py``: lr 1e-3, 70k steps) adds independent
N(0, 1) noise to each objective's gradient instead; ``noise="independent"`` draws an independent batch
per objective (a deviation from this toy's code), which in our exploratory runs (lr 5e-3, batch 100)
still gave no SMG plateau above MoDo/MoCo.
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
from molearn import Balancer
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
    diff = g2 - g1
    den = (diff * diff).sum(-1)
    lam = torch.where(den > 0, (diff * g2).sum(-1) / den.clamp_min(1e-300), torch.ones_like(den))
    lam = lam.clamp(0.0, 1.0).unsqueeze(-1)
    return (lam * g1 + (1 - lam) * g2).norm(dim=-1).reshape(shape)


# --------------------------------------------------------------------------------------------- statistics
def t_interval(values: Tensor, dim: int = 0) -> tuple[Tensor, Tensor]:
    """Mean and half-width of the two-sided 95 % t-interval along ``dim`` (half-width NaN for one value)."""
    n = values.shape[dim]
    mean = values.mean(dim)
    if n < 2:
        return mean, torch.full_like(mean, math.nan)
    sd = values.std(dim, unbiased=True)
    return mean, common.t_quantile(n - 1) * sd / math.sqrt(n)


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

    iterations: int = 5000
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
    every = max(1, n_iter // max(1, job.record_points))
    steps = [0]
    ps = [float(ps_all[0])]
    for end in range(every, n_iter + 1, every):
        steps.append(end)
        ps.append(float(ps_all[end - every + 1 : end + 1].mean()))
    if steps[-1] != n_iter:
        steps.append(n_iter)
        ps.append(float(ps_all[steps[-2] + 1 :].mean()))
    window = max(1, round(s.final_window * n_iter))
    end_point = xs[done].tolist()
    return RunResult(
        key=job.key,
        start_index=job.start_index,
        seed=job.seed,
        steps=steps,
        ps=ps,
        final_ps=float(ps_all[n_iter + 1 - window :].mean()),
        last_ps=float(ps_all[-1]),
        end=(end_point[0], end_point[1]),
        step_seconds=seconds / max(1, done),
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
        f"(base seed {s.seed}); {result.seconds:.0f} s wall on {result.jobs} process(es).",
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
    """``results.md``, ``results.csv`` and (with ``plot``) ``ps.png`` in ``out``."""
    files = common.Outputs(out)
    files.text("results.md", format_markdown(result))
    files.csv("results.csv", csv_rows(result), COLUMNS)
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
        methods=f"configurations (default: all of {','.join(CONFIGS)})",
        known_methods=list(CONFIGS),
        seeds=f"{DEFAULT.seeds}; --paper {PAPER.seeds}",
        jobs=True,
        quick=f"seconds: {QUICK.seeds} seeds x {QUICK.iterations} steps",
    )
    p.add_argument(
        "--paper",
        action="store_true",
        help=f"the paper's size: {PAPER.seeds} seeds x {PAPER.iterations} steps (about 40 min on 2 cores)",
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
    result = run(args.methods, settings, starts=args.starts, jobs=args.jobs, log=sys.stderr)
    return write_outputs(result, args.out, plot=not args.no_plot).done(NAME, format_markdown(result))


def main(argv: Sequence[str] | None = None) -> int:
    """``python experiments/stochastic-toy/run.py [options]``; returns the exit status."""
    return common.main(NAME, build_parser, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
