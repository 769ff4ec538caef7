r"""SDMGrad-OS vs SDMGrad on a problem with many objectives.

SDMGrad-OS (Xiao, Ban, Ji, "Direction-oriented Multi-objective Learning: Simple and Provable Stochastic
Algorithms", NeurIPS 2023, `arXiv:2305.18409 <https://arxiv.org/abs/2305.18409>`_) includes each of the K
objectives with probability n/K every step (redrawn if none is drawn) and computes gradients only for
that set S: about n backward passes instead of K, for the same direction-oriented subproblem over S. The
paper motivates it by the per-step cost of SDMGrad growing with K (Meta-World MT10/MT50, OS with n = 4/8).

**Problem** (synthetic, seeded by ``Problem.seed``; no real data set with K ≥ 20 tasks fits this CPU: QM9
costs about 1.4 s per equal-weighting step here and SDMGrad needs K backward passes per step, and CelebA is
not available offline). A teacher :math:`h^*(x) = \tanh(W^* x / \sqrt{d} \cdot 1.5) \in \mathbb{R}^m`,
:math:`x \sim N(0, I_d)`, gives K regression targets
:math:`y_k = s_k\,(c_k^\top h^*(x) / \sigma_k + \varepsilon_k)`, :math:`\sigma_k` the standard deviation
of :math:`c_k^\top h^*` on the training set and :math:`\varepsilon_k \sim N(0, 0.1^2)`. The student is one
shared MLP trunk :math:`d \to H \to H \to r` (ReLU, linear bottleneck of width :math:`r < m`) with a linear
head per task (:math:`r \to 1`), trained on the K mean-squared errors; the bottleneck makes the tasks
compete for the r directions of the shared representation, and the K backward passes through the trunk
dominate the cost of a full-gradient step.

*Controlled conflict* (``kind="conflict"``, the default): :math:`c_k = \cos\theta\,u + \sin\theta\,v_k`
with ``u`` a common direction and :math:`v_k` random unit vectors orthogonal to it, so that the pairwise
cosines of the task directions are :math:`\cos^2\theta + \sin^2\theta\cos(v_j, v_k)` (θ = ``angle``,
default 60°: from identical tasks at 0° to unrelated directions of both signs at 90°); and loss scales
:math:`s_k` log-uniform in [1/R, R] (R = ``scale_range``, default 10: squared errors whose scales differ
by up to 10⁴), so that the sum of the losses that equal weighting descends is dominated by a few
large-scale tasks. Quality is measured per task in the task's own units, the *normalised* test MSE
:math:`\mathrm{MSE}_k / s_k^2` (1 ≈ predicting 0, 0.01 = the noise floor), worst task and average; the
conflict itself by the share of task pairs whose gradients on the trunk have a negative cosine.
``kind="teacher"`` (:data:`TEACHER`, ``--problem teacher``) is the previous version of this experiment:
uniformly random directions, scales in [1/2, 2], noise not scaled, H = 128 (there equal weighting beat
every SDMGrad variant, so it could not test the claim).

**Protocol.** Every setting runs the same number of Adam steps from the same initialisation on the same
stream of mini-batches (per seed; the 3-batch SDMGrad draws three per step), through
:meth:`molearn.Balancer.step` (per-objective gradients in the default ``"loop"`` mode: one backward pass
per computed gradient). Measured per step: the training wall time (evaluation excluded), its ratio to
SDMGrad's (1 batch) measured in the same worker process (all settings of a seed run in one process with
one thread, interleaved checkpoint by checkpoint so that changes of the machine's load hit them
alike), the backward passes through the trunk (a hook on the trunk output counts them) and the
objectives with a non-zero weight in ``StepInfo.weights`` (|S| for OS). At checkpoints: the average
and the worst-task test MSE (raw and normalised), the gradient conflict on the trunk, and the
Pareto-stationarity
:math:`\min_{w \in \Delta} \|\sum_k w_k \nabla_\theta L_k\|^2` of the training losses on a fixed training
subset, over all parameters (trunk and heads). Quality is compared after the same number of steps and
at the same training wall time (the whole run of the fastest non-reference setting), as paired
differences to SDMGrad over seeds (:func:`contrasts`: same start and batches). Mean ± 95% CI (Student t)
over seeds.

**Settings** (:func:`setting`): λ = 0.6 for every SDMGrad variant (the paper's MT10/MT50 value).
By default every variant solves its simplex QP exactly (``solver="exact"``), so that SDMGrad and OS
differ only by the objective sampling. ``--solver official`` uses the official inner solvers instead:
for the 1-batch SDMGrad and OS that of the RL code that introduced OS (w from 1/K every step, 20
projected SGD steps with momentum 0.5, best of the 21 iterates, lr 25 for K ≠ 50 and 50 for OS), for the
3-batch SDMGrad LibMTL's (lr 5, warm start). On this problem the RL solver's SGD steps overshoot for
the full SDMGrad (K = 40, lr 25): its best iterate was the uniform start on every step checked, so it
reduces to equal weighting (in a 100-step check OS left the uniform start on about 80% of the steps
with n = 4 and 30% with n = 16).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import inspect
import json
import math
import os
import sys
import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TextIO

import torch
from torch import Tensor, nn

if not __package__:  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from experiments import common
from molearn import Balancer
from molearn import methods as _methods
from molearn.compare import mean_ci
from molearn.solvers import min_norm

NAME = "objective-sampling"

#: Setting keys run by default: the reference, full SDMGrad (official 1 batch), OS n = 4/8/16 (the 3-batch
#: LibMTL SDMGrad, ``sdmgrad3``, costs 3x SDMGrad per step: available with ``--methods``).
DEFAULT_METHODS = ("ew", "sdmgrad", "os4", "os8", "os16")

#: λ of the paper's MT10/MT50 runs (``sdmgrad_lmbda`` 0.6 in ``mtrl/mtrl_files/run.sh``), for all variants.
LAMBDA = 0.6

Solver = Literal["exact", "official"]


# --------------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Setting:
    """One compared configuration: a registered method and its options (the per-method config table)."""

    key: str
    label: str
    method: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    #: a reference outside the comparison (EW): not used for the wall-clock budget
    reference: bool = False


def setting(key: str, solver: Solver = "exact") -> Setting:
    """The :class:`Setting` of a key: ``ew``, ``sdmgrad`` (1 batch), ``sdmgrad3`` (3 batches), ``os<n>``.

    ``solver="exact"``: every SDMGrad variant solves its simplex QP exactly (``SDMGrad(solver="exact")``).
    ``"official"``: each variant's official inner solver: for ``sdmgrad`` and ``os<n>`` the one of the RL
    code that introduced OS (w from 1/K every step, 20 projected SGD steps with momentum 0.5, best of the
    21 iterates; lr 25, the code's value for K ≠ 50, and 50 for OS), for ``sdmgrad3`` LibMTL's (lr 5,
    warm start).
    """
    if solver not in ("exact", "official"):
        raise ValueError(f"solver must be 'exact' or 'official', got {solver!r}")
    k = key.strip().lower().replace("-", "").replace("_", "")
    exact = {"solver": "exact"} if solver == "exact" else {}
    tag = "" if solver == "exact" else ", official solver"
    if k == "ew":
        return Setting("ew", "EW", "ew", {}, reference=True)
    if k == "sdmgrad":
        kw: dict[str, Any] = {"lamda": LAMBDA, "batches": 1}
        kw.update(exact or {"lr": 25.0, "warm_start": False})
        return Setting("sdmgrad", f"SDMGrad (1 batch{tag})", "sdmgrad", kw)
    if k == "sdmgrad3":
        return Setting(
            "sdmgrad3", f"SDMGrad (3 batches{tag})", "sdmgrad", {"lamda": LAMBDA, "batches": 3, **exact}
        )
    if k.startswith("os") and k[2:].isdigit() and int(k[2:]) >= 1:
        n = int(k[2:])
        return Setting(f"os{n}", f"SDMGrad-OS (n={n}{tag})", "sdmgrados", {"n": n, "lamda": LAMBDA, **exact})
    raise KeyError(f"unknown setting {key!r}: expected ew, sdmgrad, sdmgrad3 or os<n> (e.g. os8)")


Settings = Sequence[Setting]


# --------------------------------------------------------------------------------------------- problem
ProblemKind = Literal["conflict", "teacher"]


@dataclass(frozen=True)
class Problem:
    """The synthetic many-task regression problem (see the module docstring).

    ``kind="conflict"`` (default): task directions at a controlled angle ``angle`` (degrees) from a
    common direction and loss scales log-uniform over ``[1/scale_range, scale_range]``; ``"teacher"``:
    the previous problem (random directions, scales in [1/2, 2]; :data:`TEACHER`)."""

    tasks: int = 40
    dim: int = 16
    teacher_features: int = 12
    bottleneck: int = 4
    hidden: int = 64
    train_size: int = 4096
    test_size: int = 2048
    noise: float = 0.1
    seed: int = 0
    kind: ProblemKind = "conflict"
    angle: float = 60.0
    scale_range: float = 10.0


#: the problem of the previous version of this experiment (``--problem teacher``)
TEACHER = Problem(kind="teacher", hidden=128, scale_range=2.0)


@dataclass
class Data:
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    scales: Tensor
    cosines: Tensor  # pairwise cosines of the task directions c_k


def task_directions(problem: Problem, g: torch.Generator) -> Tensor:
    """The K unit directions ``c_k`` (K×m, float64) in the teacher's feature space.

    ``"teacher"``: uniform on the sphere. ``"conflict"``: ``c_k = cos θ·u + sin θ·v_k`` with ``u`` the first
    axis and ``v_k`` uniform unit vectors orthogonal to it, so that the pairwise cosines are
    ``cos²θ + sin²θ·cos(v_j, v_k)``: all tasks alike at θ = 0, unrelated (random directions of both signs
    in m − 1 dimensions) at θ = 90°."""
    k, m = problem.tasks, problem.teacher_features
    c = torch.randn(k, m, generator=g, dtype=torch.float64)
    if problem.kind == "teacher":
        return c / c.norm(dim=1, keepdim=True)
    if problem.kind != "conflict":
        raise ValueError(f"unknown problem kind {problem.kind!r}: expected 'conflict' or 'teacher'")
    if m < 2:
        raise ValueError("the conflict problem needs at least 2 teacher features")
    v = c[:, 1:] / c[:, 1:].norm(dim=1, keepdim=True)
    theta = math.radians(problem.angle)
    return torch.cat([torch.full((k, 1), math.cos(theta), dtype=torch.float64), math.sin(theta) * v], 1)


def make_data(problem: Problem) -> Data:
    """Training and test sets (float32) of ``problem``; deterministic in ``problem.seed``."""
    g = torch.Generator().manual_seed(10_000 + problem.seed)
    d, m, k = problem.dim, problem.teacher_features, problem.tasks
    w_star = torch.randn(m, d, generator=g, dtype=torch.float64)
    c = task_directions(problem, g)
    log_range = math.log(problem.scale_range)
    scales = torch.exp((torch.rand(k, generator=g, dtype=torch.float64) * 2 - 1) * log_range)
    n = problem.train_size + problem.test_size
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    clean = torch.tanh(x @ w_star.T * (1.5 / math.sqrt(d))) @ c.T  # (n, K)
    std = clean[: problem.train_size].std(0).clamp_min(1e-12)
    noise = problem.noise * torch.randn(n, k, generator=g, dtype=torch.float64)
    if problem.kind == "conflict":  # noise in units of the task's scale: the same floor for every task
        noise = noise * scales
    y = clean / std * scales + noise
    tr = problem.train_size
    return Data(
        x_train=x[:tr].float(),
        y_train=y[:tr].float(),
        x_test=x[tr:].float(),
        y_test=y[tr:].float(),
        scales=scales,
        cosines=c @ c.T,
    )


class Model(nn.Module):
    """Shared MLP trunk ``d -> H -> H -> r`` (ReLU, linear bottleneck) and K linear heads ``r -> 1``."""

    def __init__(self, problem: Problem) -> None:
        super().__init__()
        h, r = problem.hidden, problem.bottleneck
        self.trunk = nn.Sequential(
            nn.Linear(problem.dim, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, r)
        )
        self.heads = nn.Linear(r, problem.tasks)  # row k is task k's head

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z = self.trunk(x)
        return self.heads(z), z


def make_model(problem: Problem, seed: int) -> Model:
    torch.manual_seed(seed)
    return Model(problem)


def task_losses(pred: Tensor, y: Tensor) -> Tensor:
    """The K mean-squared errors, shape (K,)."""
    return (pred - y).pow(2).mean(0)


# --------------------------------------------------------------------------------------------- one seed
@dataclass
class Curve:
    """Checkpoints of one (setting, seed) run."""

    steps: list[int]
    seconds: list[float]  # cumulative training wall time at the checkpoint (evaluation excluded)
    avg_loss: list[float]  # mean of the K test MSEs
    worst_loss: list[float]  # max of the K test MSEs
    stationarity: list[float]  # min_{w in simplex} |sum_k w_k grad L_k|^2 (training subset, all params)
    avg_norm: list[float] = field(default_factory=list)  # mean of the K test MSEs / s_k^2
    worst_norm: list[float] = field(default_factory=list)  # max of the K test MSEs / s_k^2
    neg_cos: list[float] = field(default_factory=list)  # share of task pairs with trunk-gradient cosine < 0
    mean_cos: list[float] = field(default_factory=list)  # mean pairwise cosine of the trunk gradients


@dataclass
class SeedRun:
    """One setting on one seed."""

    key: str
    seed: int
    steps: int
    seconds: float  # training wall time (evaluation excluded)
    backward_passes: float  # per step, counted on the trunk output
    objectives: float  # per step: objectives with a non-zero weight in StepInfo.weights (|S| for OS)
    curve: Curve
    error: str | None = None

    @property
    def ms_per_step(self) -> float:
        return 1e3 * self.seconds / max(1, self.steps)


@dataclass(frozen=True)
class Job:
    """All settings on one seed (run in one process so that time ratios share the same conditions)."""

    problem: Problem
    settings: tuple[Setting, ...]
    seed: int
    steps: int
    batch_size: int
    lr: float
    eval_every: int
    stationarity_size: int


def _constructor_kwargs(
    method: str, kwargs: Mapping[str, Any], seed: int
) -> tuple[dict[str, Any], list[str]]:
    """The options the method's constructor accepts (and those it does not); a seeded ``generator``
    when the constructor takes one (random methods, e.g. SDMGrad-OS's sampling)."""
    kw, dropped = common.method_kwargs(method, kwargs)
    if "generator" in inspect.signature(_methods.registry()[method].__init__).parameters:
        kw["generator"] = torch.Generator().manual_seed(7_919 * seed + 1)
    return kw, dropped


def _stationarity(model: Model, x: Tensor, y: Tensor) -> tuple[float, float, float]:
    """On the batch ``(x, y)``: ``min_{w ∈ Δ} ‖Σ_k w_k ∇_θ L_k‖²`` over all parameters, and the share of task
    pairs whose gradients on the shared trunk have a negative cosine (conflict) and their mean cosine."""
    params = [p for p in model.parameters()]
    n_trunk = sum(p.numel() for p in model.trunk.parameters())
    pred, _ = model(x)
    losses = task_losses(pred, y)
    k = losses.shape[0]
    eye = torch.eye(k, dtype=losses.dtype)
    grads = torch.autograd.grad(losses, params, grad_outputs=eye, is_grads_batched=True)
    jac = torch.cat([g.reshape(k, -1) for g in grads], dim=1).double()
    gram = jac @ jac.T
    w = min_norm(gram)
    trunk = jac[:, :n_trunk]  # model.parameters() lists the trunk first
    unit = trunk / trunk.norm(dim=1, keepdim=True).clamp_min(1e-30)
    cos = (unit @ unit.T)[~torch.eye(k, dtype=torch.bool)]
    return float(w @ gram @ w), float((cos < 0).double().mean()), float(cos.mean())


def _evaluate(model: Model, data: Data, stat_x: Tensor, stat_y: Tensor) -> dict[str, float]:
    with torch.no_grad():
        pred, _ = model(data.x_test)
        test = task_losses(pred, data.y_test)
    norm = test.double() / data.scales.pow(2)
    stat, neg, mean_cos = _stationarity(model, stat_x, stat_y)
    return {
        "avg_loss": float(test.mean()),
        "worst_loss": float(test.max()),
        "stationarity": stat,
        "avg_norm": float(norm.mean()),
        "worst_norm": float(norm.max()),
        "neg_cos": neg,
        "mean_cos": mean_cos,
    }


def _run_setting(job: Job, s: Setting, data: Data) -> Generator[None, None, SeedRun]:
    """Train one setting, pausing (``yield``) after every checkpoint; returns its :class:`SeedRun`."""
    problem = job.problem
    model = make_model(problem, job.seed)
    gen = torch.Generator().manual_seed(job.seed)
    stat_n = min(job.stationarity_size, problem.train_size)
    stat_x, stat_y = data.x_train[:stat_n], data.y_train[:stat_n]
    curve = Curve([], [], [], [], [])
    counter = [0]

    def record(step: int, elapsed: float) -> None:
        model.eval()
        values = _evaluate(model, data, stat_x, stat_y)
        model.train()
        curve.steps.append(step)
        curve.seconds.append(elapsed)
        for name, value in values.items():
            getattr(curve, name).append(value)

    def draw() -> tuple[Tensor, Tensor]:
        idx = torch.randint(problem.train_size, (job.batch_size,), generator=gen)
        return data.x_train[idx], data.y_train[idx]

    def count(grad: Tensor) -> None:
        counter[0] += 1

    def loss_fn(batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = batch
        pred, z = model(x)
        if z.requires_grad:
            z.register_hook(count)
        return task_losses(pred, y)

    elapsed = 0.0
    used = 0
    error: str | None = None
    record(0, 0.0)
    try:
        kw, _ = _constructor_kwargs(s.method, s.kwargs, job.seed)
        method = _methods.get(s.method, **kw)
        balancer = Balancer(
            method, shared=list(model.trunk.parameters()), tasks=list(model.heads.parameters())
        )
        optimizer = torch.optim.Adam(model.parameters(), lr=job.lr)
        for step in range(1, job.steps + 1):
            t0 = time.perf_counter()
            info = balancer.step(loss_fn, draw, optimizer)
            elapsed += time.perf_counter() - t0
            used += problem.tasks if info.weights is None else int((info.weights != 0).sum())
            if step % job.eval_every == 0 or step == job.steps:
                record(step, elapsed)
                yield
    except Exception as exc:  # one failing method must not take the comparison down
        error = f"{type(exc).__name__}: {exc}"
    done = curve.steps[-1]
    return SeedRun(
        key=s.key,
        seed=job.seed,
        steps=done,
        seconds=elapsed,
        backward_passes=counter[0] / max(1, done) if error is None else math.nan,
        objectives=used / max(1, done) if error is None else math.nan,
        curve=curve,
        error=error,
    )


def run_seed(job: Job) -> list[SeedRun]:
    """Every setting of ``job`` on its seed, with one torch thread, interleaved: each setting trains up to
    its next checkpoint in turn, so that a change of the machine's load affects all settings alike and the
    time ratios stay comparable."""
    with common.single_thread():
        data = make_data(job.problem)
        runners = [_run_setting(job, s, data) for s in job.settings]
        results: list[SeedRun | None] = [None] * len(runners)
        while any(r is None for r in results):
            for i, runner in enumerate(runners):
                if results[i] is None:
                    try:
                        next(runner)
                    except StopIteration as stop:
                        results[i] = stop.value
        return [r for r in results if r is not None]


def _cache_path(cache: str | os.PathLike[str], job: Job) -> Path:
    """The file of ``job``'s finished runs in the folder ``cache`` (named by a hash of the job)."""
    return Path(cache) / f"seed{job.seed}-{hashlib.sha1(repr(job).encode()).hexdigest()[:16]}.json"


def _load_seed(path: Path) -> list[SeedRun]:
    return [SeedRun(**{**raw, "curve": Curve(**raw["curve"])}) for raw in json.loads(path.read_text())]


def run_seed_cached(cache: str, job: Job) -> list[SeedRun]:
    """:func:`run_seed`, storing its runs in the folder ``cache`` (JSON, written atomically)."""
    runs = run_seed(job)
    path = _cache_path(cache, job)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([asdict(r) for r in runs]))
    tmp.replace(path)
    return runs


# --------------------------------------------------------------------------------------------- runner
@dataclass
class Result:
    """Everything :func:`run` did."""

    problem: Problem
    settings: list[Setting]
    seeds: list[int]
    steps: int
    batch_size: int
    lr: float
    eval_every: int
    runs: list[SeedRun]
    seconds: float
    jobs: int
    notes: list[str] = field(default_factory=list)

    def of(self, key: str) -> list[SeedRun]:
        return sorted((r for r in self.runs if r.key == key and r.error is None), key=lambda r: r.seed)

    def baseline_key(self) -> str | None:
        """The setting time ratios refer to: SDMGrad (1 batch) when run, else the first full SDMGrad."""
        keys = [s.key for s in self.settings]
        for k in ("sdmgrad", "sdmgrad3"):
            if k in keys and self.of(k):
                return k
        return None

    def time_ratios(self, key: str) -> list[float]:
        """Per seed: ms/step of ``key`` over the baseline's, both measured in the same worker process."""
        base = self.baseline_key()
        if base is None:
            return []
        ref = {r.seed: r.ms_per_step for r in self.of(base)}
        return [r.ms_per_step / ref[r.seed] for r in self.of(key) if r.seed in ref and ref[r.seed] > 0]

    def budget(self, seed: int) -> float:
        """Wall-clock budget of ``seed``: the training time of the fastest non-reference setting."""
        times = [
            r.seconds for s in self.settings if not s.reference for r in self.of(s.key) if r.seed == seed
        ]
        return min(times) if times else math.inf

    def at_budget(self, key: str, metric: str) -> list[float]:
        """Per seed: ``metric`` at the last checkpoint within the seed's wall-clock :meth:`budget`."""
        out = []
        for r in self.of(key):
            b = self.budget(r.seed) * (1 + 1e-9)
            values: list[float] = getattr(r.curve, metric)
            last = max(i for i, t in enumerate(r.curve.seconds) if t <= b)
            out.append(values[last])
        return out


def run(
    settings: Sequence[str | Setting] = DEFAULT_METHODS,
    *,
    problem: Problem | None = None,
    seeds: int | Sequence[int] = 5,
    steps: int = 1000,
    batch_size: int = 128,
    lr: float = 2e-3,
    eval_every: int = 20,
    stationarity_size: int = 512,
    jobs: int = 1,
    log: TextIO | None = None,
    cache: str | os.PathLike[str] | None = None,
) -> Result:
    """Train every setting on every seed (one process per seed with ``jobs > 1``).

    Args:
        settings: keys (see :func:`setting`) or :class:`Setting` objects; those whose method is not
            registered are skipped with a note.
        problem: the :class:`Problem` (default: K = 40 tasks).
        seeds: a number of seeds (0, 1, ...) or the seeds themselves; they drive the initialisation,
            the mini-batches and the methods' randomness (the problem itself is fixed by ``problem.seed``).
        steps: Adam steps for every setting.
        eval_every: steps between checkpoints (test losses, Pareto-stationarity).
        stationarity_size: training examples on which Pareto-stationarity is measured.
        jobs: worker processes (one seed each).
        cache: a folder keeping each finished seed (one JSON file per seed); a rerun with the same folder
            loads the seeds found there instead of repeating them (an interrupted run resumes).
    """
    problem = problem or Problem()
    if problem.tasks < 2:
        raise ValueError("the problem needs at least 2 tasks")
    say = common.printer(log)
    registered = _methods.registry()
    chosen: list[Setting] = []
    notes: list[str] = []
    for item in settings:
        s = item if isinstance(item, Setting) else setting(item)
        if s.method not in registered:
            notes.append(f"{s.label}: method {s.method!r} is not registered (skipped)")
            continue
        _, dropped = _constructor_kwargs(s.method, s.kwargs, 0)
        if dropped:
            notes.append(
                f"{s.label}: {registered[s.method].__name__} takes no {', '.join(dropped)} (ignored)"
            )
        if s.key not in [c.key for c in chosen]:
            chosen.append(s)
    for n in notes:
        say(f"objective-sampling: {n}")
    if not chosen:
        raise ValueError("no setting to run")
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seed_list:
        raise ValueError("no seed to run")
    workers = max(1, min(jobs, len(seed_list)))
    job_list = [
        Job(problem, tuple(chosen), sd, steps, batch_size, lr, max(1, eval_every), stationarity_size)
        for sd in seed_list
    ]
    say(
        f"objective-sampling: K = {problem.tasks} tasks, {len(chosen)} setting(s) x "
        f"{len(seed_list)} seed(s), {steps} Adam steps (lr {lr:g}, batch {batch_size}), {workers} process(es)"
    )
    t0 = time.perf_counter()

    def describe(rs: list[SeedRun]) -> str:
        lines = []
        for r in rs:
            c = r.curve
            status = (
                f"error ({r.error})"
                if r.error
                else f"avg {c.avg_loss[-1]:.4f}, worst {c.worst_loss[-1]:.4f}, stat {c.stationarity[-1]:.3g}"
            )
            lines.append(
                f"seed {r.seed} {r.key:<9} {r.ms_per_step:7.2f} ms/step, "
                f"{r.backward_passes:6.2f} backward/step, {status}"
            )
        return "\n".join(lines)

    loaded: list[list[SeedRun]] = []
    if cache is not None:
        Path(cache).mkdir(parents=True, exist_ok=True)
        found = [(j, _cache_path(cache, j)) for j in job_list]
        loaded = [_load_seed(path) for _, path in found if path.exists()]
        job_list = [j for j, path in found if not path.exists()]
        if loaded:
            say(f"objective-sampling: {len(loaded)} seed(s) loaded from {cache}")
            notes.append(
                f"{len(loaded)} seed(s) loaded from the cache folder (their times are those measured when "
                "they ran); the time in all above counts only this invocation"
            )
    fn = run_seed if cache is None else functools.partial(run_seed_cached, str(cache))
    per_seed = [*loaded, *common.run_jobs(fn, job_list, jobs=workers, describe=describe, log=log)]
    runs = [r for rs in per_seed for r in rs]
    for r in runs:
        if r.error:
            notes.append(f"{r.key} seed {r.seed}: {r.error}")
    return Result(
        problem=problem,
        settings=chosen,
        seeds=seed_list,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        eval_every=max(1, eval_every),
        runs=sorted(runs, key=lambda r: ([s.key for s in chosen].index(r.key), r.seed)),
        seconds=time.perf_counter() - t0,
        jobs=workers,
        notes=notes,
    )


# --------------------------------------------------------------------------------------------- outputs
def _mean_ci(values: Sequence[float]) -> tuple[float, float]:
    mean, half, _ = mean_ci(values)
    return mean, half


def _fmt(mean: float, half: float, digits: int = 4) -> str:
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}g} ± {half:.2g}" if math.isfinite(half) else f"{mean:.{digits}g}"


def _final(rs: list[SeedRun], metric: str) -> list[float]:
    return [getattr(r.curve, metric)[-1] for r in rs]


def _rows(result: Result) -> list[dict[str, Any]]:
    rows = []
    for s in result.settings:
        rs = result.of(s.key)
        ratio = result.time_ratios(s.key)
        row: dict[str, Any] = {"key": s.key, "setting": s.label, "seeds": len(rs)}
        row["objectives_per_step"] = _mean_ci([r.objectives for r in rs])
        row["backward_per_step"] = _mean_ci([r.backward_passes for r in rs])
        row["ms_per_step"] = _mean_ci([r.ms_per_step for r in rs])
        row["time_ratio"] = _mean_ci(ratio)
        for metric in QUALITY:
            row[metric] = _mean_ci(_final(rs, metric))
            row[f"{metric}_budget"] = _mean_ci(result.at_budget(s.key, metric))
        for metric in ("neg_cos", "mean_cos"):
            row[f"{metric}_start"] = _mean_ci([getattr(r.curve, metric)[0] for r in rs])
            row[metric] = _mean_ci(_final(rs, metric))
        rows.append(row)
    return rows


#: quality metrics (lower is better), final and at the wall-clock budget
QUALITY = ("worst_norm", "avg_norm", "avg_loss", "worst_loss", "stationarity")

#: the paper's claim, opening results.md
CLAIM = (
    "**Claim** (Xiao, Ban & Ji, NeurIPS 2023, arXiv:2305.18409): SDMGrad-OS, which computes the gradients "
    "of only about n of the K objectives per step, keeps SDMGrad's quality at a much lower cost per step "
    "when K is large."
)


def paired(result: Result, key: str, ref: str, metric: str, *, budget: bool) -> tuple[float, float, int]:
    """Mean and 95 % t-interval over seeds of ``metric(key) - metric(ref)`` (same seed: same start and
    batches), after the same number of steps or (``budget``) at the same training wall time."""

    def values(k: str) -> dict[int, float]:
        rs = result.of(k)
        vals = result.at_budget(k, metric) if budget else _final(rs, metric)
        return {r.seed: v for r, v in zip(rs, vals, strict=True)}

    a, b = values(key), values(ref)
    return mean_ci([a[sd] - b[sd] for sd in sorted(a.keys() & b.keys())])


def contrasts(result: Result) -> list[dict[str, Any]]:
    """Every setting against SDMGrad (the baseline, :meth:`Result.baseline_key`): paired differences of
    the worst-task and average normalised test MSE, after the same steps and at the same wall time."""
    base = result.baseline_key()
    out: list[dict[str, Any]] = []
    if base is None:
        return out
    for s in result.settings:
        if s.key == base or not result.of(s.key):
            continue
        for metric in ("worst_norm", "avg_norm"):
            for budget in (False, True):
                mean, half, n = paired(result, s.key, base, metric, budget=budget)
                out.append({"key": s.key, "ref": base, "metric": metric, "budget": budget, "diff": mean,
                            "ci95": half, "seeds": n,
                            "separates": bool(math.isfinite(half) and abs(mean) > half)})  # fmt: skip
    return out


def _compare(row: dict[str, Any]) -> str:
    if not row["separates"]:
        return "not separated"
    return "worse" if row["diff"] > 0 else "better"


def verdicts(result: Result, rows: Sequence[dict[str, Any]] | None = None) -> dict[str, str]:
    """Per OS setting, the claim's verdict from :func:`contrasts` on the normalised test MSE (worst task
    and average) against SDMGrad: ``"contradicted"`` when a metric is worse (interval excluding 0) after
    the same steps or at the same wall time, ``"supported"`` when none is worse and one is better at the
    same wall time, else ``"not resolved at this scale"``; with the measured differences."""
    rows = list(rows if rows is not None else contrasts(result))
    out = {}
    for s in result.settings:
        pick = {(r["metric"], r["budget"]): r for r in rows if r["key"] == s.key}
        if s.method != "sdmgrados" or len(pick) < 4:
            continue
        moves = {k: _compare(r) for k, r in pick.items()}
        if "worse" in moves.values():
            word = "contradicted"
        elif any(moves[(m, True)] == "better" for m in ("worst_norm", "avg_norm")):
            word = "supported"
        else:
            word = "not resolved at this scale"
        detail = ", ".join(
            f"{'worst' if m == 'worst_norm' else 'avg'} {'same time' if b else 'same steps'} "
            f"{_fmt(pick[(m, b)]['diff'], pick[(m, b)]['ci95'], 3)}"
            + (f" ({moves[(m, b)]})" if moves[(m, b)] != "not separated" else "")
            for m in ("avg_norm", "worst_norm")
            for b in (False, True)
        )
        out[s.key] = f"{s.label}: {word} ({detail})"
    return out


def verdict(result: Result, rows: Sequence[dict[str, Any]] | None = None) -> str:
    """:func:`verdicts` as one line."""
    return "; ".join(verdicts(result, rows).values())


_CSV_FIELDS = (
    "objectives_per_step",
    "backward_per_step",
    "ms_per_step",
    "time_ratio",
    *QUALITY,
    *(f"{m}_budget" for m in QUALITY),
    "neg_cos_start",
    "neg_cos",
    "mean_cos_start",
    "mean_cos",
)


def csv_rows(result: Result) -> tuple[list[str], list[list[Any]]]:
    """One row per setting: every metric as mean and 95% CI half-width over the seeds."""
    header = ["key", "setting", "seeds", *[f"{f}_{x}" for f in _CSV_FIELDS for x in ("mean", "ci95")]]
    rows = [
        [row["key"], row["setting"], row["seeds"], *[f"{v:.6g}" for f in _CSV_FIELDS for v in row[f]]]
        for row in _rows(result)
    ]
    return header, rows


def describe_problem(p: Problem) -> str:
    """One sentence on the problem's set-up."""
    head = (
        f"{p.tasks} regression tasks on a shared MLP trunk {p.dim} -> {p.hidden} -> {p.hidden} -> "
        f"{p.bottleneck} (ReLU, linear bottleneck) with linear heads; targets from a tanh teacher with "
        f"{p.teacher_features} features"
    )
    if p.kind == "conflict":
        body = (
            f", task directions at {p.angle:g}° from a common one (controlled conflict), loss scales s_k "
            f"log-uniform in [1/{p.scale_range:g}, {p.scale_range:g}] (squared-error scales spread over a "
            f"factor up to {p.scale_range**4:g}), noise {p.noise:g}·s_k"
        )
    else:
        body = (
            f" and a random unit direction per task (the previous problem; scales log-uniform in "
            f"[1/{p.scale_range:g}, {p.scale_range:g}], noise {p.noise:g})"
        )
    return head + body + f"; {p.train_size} training / {p.test_size} test examples, problem seed {p.seed}."


def format_markdown(result: Result) -> str:
    """The claim and verdict, then the cost, conflict and quality tables (mean ± 95% CI over seeds)."""
    p = result.problem
    base = result.baseline_key()
    base_label = _label(result, base)
    crows = contrasts(result)
    lines = [
        f"# SDMGrad-OS vs SDMGrad with K = {p.tasks} objectives",
        "",
        CLAIM,
        "",
        "**Verdict** (computed: paired over seeds, OS − SDMGrad in normalised test MSE, negative = OS "
        "better; "
        "contradicted when OS is worse with an interval excluding 0 after the same steps or at the same wall "
        "time, supported when it is better at the same wall time and nowhere worse): "
        f"{verdict(result, crows) or 'no OS setting run'}.",
        "",
        "Problem: " + describe_problem(p),
        f"Run: {result.steps} Adam steps (lr {result.lr:g}, batch {result.batch_size}) per setting, "
        f"seeds {', '.join(map(str, result.seeds))}, checkpoints every {result.eval_every} steps, "
        f"{result.jobs} process(es), {result.seconds:.1f} s in all. λ = {LAMBDA:g} for every SDMGrad variant "
        "(the paper's MT10/MT50 value).",
        "",
        "Cost per step: the objectives whose gradient enters the update (non-zero weights in "
        "`StepInfo.weights`; |S| for OS), the backward passes through the trunk (a hook on its output), "
        f"the training wall time (evaluation excluded) and its ratio to {base_label}, measured in the same "
        "process (all settings of a seed interleaved checkpoint by checkpoint). Mean ± 95% CI over seeds.",
        "",
        "| setting | objectives/step | backward/step | ms/step | time / SDMGrad |",
        "|---|---:|---:|---:|---:|",
    ]
    rows = _rows(result)
    for row in rows:
        lines.append(
            f"| {row['setting']} | {_fmt(*row['objectives_per_step'], 3)} "
            f"| {_fmt(*row['backward_per_step'], 3)} | {_fmt(*row['ms_per_step'], 3)} "
            f"| {_fmt(*row['time_ratio'], 3)} |"
        )
    lines += [
        "",
        "Conflict: the share of the K(K−1) task pairs whose gradients on the shared trunk have a negative "
        "cosine, and the mean pairwise cosine, on the training subset at the start (the same model for every "
        f"setting of a seed) and after {result.steps} steps.",
        "",
        "| setting | negative pairs, start | negative pairs, end | mean cosine, start | mean cosine, end |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['setting']} | {_fmt(*row['neg_cos_start'], 3)} | {_fmt(*row['neg_cos'], 3)} "
            f"| {_fmt(*row['mean_cos_start'], 3)} | {_fmt(*row['mean_cos'], 3)} |"
        )
    lines += [
        "",
        f"Quality after the same number of steps ({result.steps}) and at the same training wall time "
        "(*@budget*: the last checkpoint within the training time of the fastest non-reference setting, per "
        "seed). Normalised MSE: each task's test MSE divided by s_k² (1 ≈ predicting 0, "
        f"{p.noise**2:g} = the noise floor of the conflict problem), worst task and average; raw average "
        "test MSE (the sum EW descends); Pareto-stationarity min_w |Σ w_k ∇L_k|² (w on the simplex; training "
        "subset, all parameters). Mean ± 95% CI over seeds.",
        "",
        "| setting | worst norm. MSE | avg norm. MSE | avg raw MSE | stationarity "
        "| worst norm. @budget | avg norm. @budget | avg raw @budget |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['setting']} | {_fmt(*row['worst_norm'])} | {_fmt(*row['avg_norm'])} "
            f"| {_fmt(*row['avg_loss'])} | {_fmt(*row['stationarity'], 3)} "
            f"| {_fmt(*row['worst_norm_budget'])} | {_fmt(*row['avg_norm_budget'])} "
            f"| {_fmt(*row['avg_loss_budget'])} |"
        )
    if crows:
        lines += [
            "",
            f"Paired differences to {base_label} (same seed: same start and batches), mean ± 95% CI; "
            "**bold**: the interval excludes 0; negative = better than SDMGrad.",
            "",
            "| setting | worst norm., same steps | worst norm., same time "
            "| avg norm., same steps | avg norm., same time |",
            "|---|---:|---:|---:|---:|",
        ]
        for s in result.settings:
            pick = {(r["metric"], r["budget"]): r for r in crows if r["key"] == s.key}
            if not pick:
                continue
            cells = []
            for metric in ("worst_norm", "avg_norm"):
                for budget in (False, True):
                    r = pick[(metric, budget)]
                    text = _fmt(r["diff"], r["ci95"], 3)
                    cells.append(f"**{text}**" if r["separates"] else text)
            lines.append(f"| {s.label} | " + " | ".join(cells) + " |")
    budgets = [result.budget(sd) for sd in result.seeds]
    if budgets and all(math.isfinite(b) for b in budgets):
        lines += ["", f"Wall-clock budget per seed: {', '.join(f'{b:.2f} s' for b in budgets)}."]
    lines += ["", "Method options: " + "; ".join(f"{s.label}: {_options(s)}" for s in result.settings) + "."]
    if result.notes:
        lines += ["", "Notes:", *[f"- {n}" for n in result.notes]]
    return "\n".join(lines) + "\n"


def _label(result: Result, key: str | None) -> str:
    return next((s.label for s in result.settings if s.key == key), "none")


def _options(s: Setting) -> str:
    cls = _methods.registry().get(s.method)
    name = cls.__name__ if cls is not None else s.method
    return f"{name}({', '.join(f'{k}={v!r}' for k, v in s.kwargs.items())})"


_METRICS = (
    ("worst_norm", "worst-task normalised test MSE"),
    ("avg_norm", "average normalised test MSE"),
    ("avg_loss", "average raw test MSE"),
    ("stationarity", "Pareto-stationarity"),
)


def _mean_curve(rs: list[SeedRun], attr: str) -> tuple[list[float], list[float]]:
    n = min(len(getattr(r.curve, attr)) for r in rs)
    cols = [[getattr(r.curve, attr)[i] for r in rs] for i in range(n)]
    pairs = [_mean_ci(c) for c in cols]
    return [m for m, _ in pairs], [h for _, h in pairs]


def plot_curves(result: Result, path: str | os.PathLike[str]) -> None:
    """Quality vs step (top row) and vs training wall-clock (bottom row), mean and 95% CI over seeds."""
    fig = common.figure("objective-sampling plot", figsize=(18, 8), layout="constrained")
    axes = fig.subplots(2, len(_METRICS), squeeze=False)
    colors = ("0.45", "tab:red", "tab:purple", "tab:blue", "tab:green", "tab:orange", "tab:cyan", "tab:olive")
    shown: dict[tuple[int, int], list[float]] = {}
    base = result.baseline_key()
    t_max = max(_mean_ci([r.seconds for r in result.of(base)])[0], 1e-9) * 1.05 if base else None
    for i, s in enumerate(result.settings):
        rs = result.of(s.key)
        if not rs:
            continue
        color = colors[i % len(colors)]
        steps = rs[0].curve.steps[: min(len(r.curve.steps) for r in rs)]
        secs, _ = _mean_curve(rs, "seconds")
        for j, (metric, title) in enumerate(_METRICS):
            mean, half = _mean_curve(rs, metric)
            lo = [m - h for m, h in zip(mean, half, strict=True)]
            hi = [m + h for m, h in zip(mean, half, strict=True)]
            style = "--" if s.reference else "-"
            for row, xs in ((0, steps), (1, secs)):
                ax = axes[row][j]
                ax.plot(xs, mean, style, color=color, label=s.label if j == 0 else None, linewidth=1.5)
                ax.fill_between(xs, lo, hi, color=color, alpha=0.15, linewidth=0)
                inside = [m for x, m in zip(xs, mean, strict=True) if row == 0 or t_max is None or x <= t_max]
                shown.setdefault((row, j), []).extend(v for v in inside if v > 0 and math.isfinite(v))
                ax.set_title(title)
                ax.set_xlabel("step" if row == 0 else "training wall-clock (s)")
                ax.grid(True, alpha=0.3)
    # log axes framed on the mean curves (a 95% CI from few seeds can reach below zero)
    for (row, j), values in shown.items():
        ax = axes[row][j]
        ax.set_yscale("log")
        if values:
            ax.set_ylim(min(values) / 1.5, max(values) * 1.5)
    budgets = [result.budget(sd) for sd in result.seeds]
    if t_max is not None:
        for j in range(len(_METRICS)):
            axes[1][j].set_xlim(0, t_max)
            if budgets and all(math.isfinite(b) for b in budgets):
                axes[1][j].axvline(sum(budgets) / len(budgets), color="k", linestyle=":", linewidth=1)
    axes[0][0].legend(fontsize=8)
    axes[1][0].legend(fontsize=8)
    p = result.problem
    note = f"; bottom: x axis up to {_label(result, base)}'s run time, dotted line: budget" if base else ""
    fig.suptitle(
        f"SDMGrad-OS vs SDMGrad, K = {p.tasks} objectives: mean ± 95% CI over {len(result.seeds)} seeds"
        + note,
        fontsize=11,
    )
    fig.savefig(path, dpi=100)


def write_outputs(result: Result, out: str | os.PathLike[str], *, plot: bool = True) -> common.Outputs:
    """``results.md``, ``results.csv``, ``contrasts.csv`` and (with ``plot``) ``objective_sampling.png`` in
    ``out``."""
    files = common.Outputs(out)
    files.text("results.md", format_markdown(result))
    header, rows = csv_rows(result)
    files.csv("results.csv", rows, header)
    cols = ("key", "ref", "metric", "budget", "diff", "ci95", "seeds", "separates")
    files.csv(
        "contrasts.csv",
        [[r[c] if not isinstance(r[c], float) else f"{r[c]:.6g}" for c in cols] for r in contrasts(result)],
        cols,
    )
    if plot:
        plot_curves(result, files.path("objective_sampling.png"))
    return files


# --------------------------------------------------------------------------------------------- command line
#: ``--quick``: K = 20, a smaller trunk, 2 seeds and 30 steps (seconds).
QUICK: dict[str, Any] = {
    "problem": Problem(tasks=20, hidden=32, train_size=1024, test_size=512),
    "seeds": 2,
    "steps": 30,
    "eval_every": 10,
    "stationarity_size": 256,
}


def build_parser() -> argparse.ArgumentParser:
    p = common.parser(
        NAME,
        __doc__,
        methods="settings: ew, sdmgrad (1 batch), sdmgrad3 (3 batches), os<n> "
        f"(default: {','.join(DEFAULT_METHODS)})",
        seeds="5; quick 2",
        jobs=True,
        quick="seconds: K = 20, 30 steps, 2 seeds",
    )
    p.add_argument(
        "--solver",
        choices=("exact", "official"),
        default="exact",
        help="inner solver of every SDMGrad variant: exact QP (default) or the official SGD-on-simplex "
        "(the RL code's for sdmgrad/os<n>, LibMTL's for sdmgrad3)",
    )
    p.add_argument(
        "--problem",
        choices=("conflict", "teacher"),
        default="conflict",
        help="conflict: controlled angle and loss scales (default); teacher: the previous problem",
    )
    p.add_argument(
        "--angle",
        type=float,
        default=None,
        help="conflict problem: degrees between each task and the common direction (default 60)",
    )
    p.add_argument(
        "--scale-range",
        type=float,
        default=None,
        help="conflict problem: loss scales s_k log-uniform in [1/R, R] (default 10)",
    )
    p.add_argument("--tasks", type=int, default=None, help="number of objectives K (default 40; quick 20)")
    p.add_argument(
        "--cache",
        default=None,
        metavar="DIR",
        help="keep each finished seed in DIR (one JSON file each) and load those found there: an "
        "interrupted run resumes where it stopped",
    )
    p.add_argument("--steps", type=int, default=None, help="Adam steps per setting (default 1000; quick 30)")
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (default 2e-3)")
    p.add_argument("--batch-size", type=int, default=128, help="mini-batch size (default 128)")
    p.add_argument(
        "--eval-every", type=int, default=None, help="steps between checkpoints (default 20; quick 10)"
    )
    return p


def _main(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    cfg: dict[str, Any] = dict(QUICK) if args.quick else {}
    problem: Problem = cfg.pop("problem", Problem())
    if args.problem == "teacher":
        hidden = problem.hidden if args.quick else TEACHER.hidden
        problem = replace(problem, kind="teacher", hidden=hidden, scale_range=TEACHER.scale_range)
    if args.tasks is not None:
        problem = replace(problem, tasks=args.tasks)
    if args.angle is not None:
        problem = replace(problem, angle=args.angle)
    if args.scale_range is not None:
        problem = replace(problem, scale_range=args.scale_range)
    for name in ("seeds", "steps", "eval_every"):
        value = getattr(args, name)
        if value is not None:
            cfg[name] = value
    result = run(
        [setting(k, args.solver) for k in args.methods or DEFAULT_METHODS],
        problem=problem,
        lr=args.lr,
        batch_size=args.batch_size,
        jobs=args.jobs,
        log=sys.stderr,
        cache=args.cache,
        **cfg,
    )
    return write_outputs(result, args.out, plot=not args.no_plot).done(NAME, format_markdown(result), t0)


def main(argv: Sequence[str] | None = None) -> int:
    """``python experiments/objective-sampling/run.py [options]``; returns the exit status."""
    return common.main(NAME, build_parser, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
