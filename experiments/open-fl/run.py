r"""Open federated learning (clients join and leave): empirical stability radius of local SGD and local Adam.

Seed paper: Sun, Fernando, Chen, Shahrampour, "On the Stability Analysis of Open Federated Learning
Systems", arXiv:2209.12307 (2022). Its abstract states that the radius of stability of local SGD and
local Adam on strongly convex, smooth clients depends on the condition number of the functions and on
the variance of the stochastic gradient; the bounds themselves could not be read from this machine, so
this experiment measures the dependences without comparing to the paper's constants (see
:func:`molearn.federated.simulate_open_fl` for the model of a round and what is reconstruction).

Set-up (all through :func:`molearn.federated.simulate_open_fl`; the clients join by Poisson arrivals and
leave by Bernoulli departures, FedAvg weights = data sizes, ``E`` local steps, radius = 0.95-quantile of
:math:`\|x_{t+1} - x^\star_t\|` over the second half of the rounds, mean ± sd over seeds):

* **quadratic** (d = 10, universe of 1000 clients, eigenvalues log-spaced in [1, κ] with ±20 % jitter per
  client, one shared random eigenbasis, centres N(0, I), ~20 present clients: arrivals Poisson(2),
  departures Bernoulli(0.1)); SGD step ``0.1/κ`` (= 0.1/L), Adam step 0.01; sweeps over κ (σ = 1), over the
  gradient-noise std σ (κ = 10), and over the turnover (departure probability, arrivals scaled to keep ~20
  clients; 0 = a closed system);
* **logistic** (synthetic 3-class, d = 10, 300 clients × 40 samples, Dirichlet(0.5) label skew, per-client
  feature shift, anisotropic features): κ through the ridge l2 (batch 4), gradient variance through the
  minibatch size (l2 = 0.01); SGD step 0.5/L (L at the optimum of all clients), Adam 0.01;
* **fashion-mnist** (real data: 10-class logistic regression on 32 PCA components + bias of Fashion-MNIST
  train images, 200 clients with Dirichlet(0.3) label skew, 40..200 samples each): κ through the ridge
  l2 (κ ≈ L/l2; batch 16) and gradient variance through the minibatch size (l2 = 0.01); 200 rounds × 2 seeds,
  the optimum tracked every 10 rounds (synthetic logistic: every 5).

``κ`` and the gradient variance :math:`\sigma^2 = \operatorname{mean}_i \mathbb E\|g_i - \nabla f_i\|^2`
(at the optimum of all clients; Fashion-MNIST: of 60 clients) are *measured* and reported next to the knob
that sets them.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import torch
from torch import Tensor

if not __package__:  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from experiments import common
from molearn.datasets import load_fashion_mnist
from molearn.federated import (
    BernoulliPoissonProcess,
    LogisticClients,
    QuadraticClients,
    StaticPopulation,
    random_quadratic_clients,
    simulate_open_fl,
)

NAME = "open-fl"
OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class Settings:
    rounds: int = 600
    logit_rounds: int = 400
    seeds: int | tuple[int, ...] = 3  # a count N (seeds 0..N-1) or the seeds
    local_steps: int = 5
    adam_lr: float = 0.01
    quad_kappas: tuple[float, ...] = (1.0, 3.0, 10.0, 30.0, 100.0)
    quad_sigmas: tuple[float, ...] = (0.0, 1.0, 3.0, 10.0, 30.0)
    quad_departures: tuple[float, ...] = (0.0, 0.02, 0.1, 0.3)
    logit_l2s: tuple[float, ...] = (1e-1, 3e-2, 1e-2, 3e-3)
    logit_batches: tuple[int | None, ...] = (None, 16, 4, 1)
    fmnist: bool = True
    fmnist_l2s: tuple[float, ...] = (1e-1, 1e-2, 1e-3)
    fmnist_batches: tuple[int | None, ...] = (None, 64, 16, 4)
    fmnist_rounds: int = 200
    fmnist_seeds: int = 2
    fmnist_clients: int = 200
    track_every: int = 5
    fmnist_track_every: int = 10
    quad_universe: int = 1000
    logit_clients: int = 300


DEFAULT = Settings()
QUICK = Settings(
    rounds=60,
    logit_rounds=40,
    seeds=1,
    quad_kappas=(1.0, 10.0),
    quad_sigmas=(0.0, 2.0),
    quad_departures=(0.0, 0.1),
    logit_l2s=(1e-1, 1e-2),
    logit_batches=(None, 2),
    fmnist=False,
    fmnist_rounds=20,
    fmnist_clients=20,
    track_every=5,
)


@dataclass
class Row:
    problem: str
    sweep: str
    optimizer: str
    knob: str
    value: float
    kappa: float
    grad_var: float
    radius: float
    radius_sd: float
    mean_distance: float
    mean_model_norm: float
    mean_clients: float
    skipped_rounds: float
    seconds: float


@dataclass
class OpenFLResult:
    settings: Settings
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _seed_list(seeds: int | Sequence[int]) -> list[int]:
    return list(range(seeds)) if isinstance(seeds, int) else list(seeds)


# ------------------------------------------------------------------------------------------- problems
def _grad_var(obj: QuadraticClients | LogisticClients, x: Tensor, draws: int = 8, clients: int = 50) -> float:
    gen = torch.Generator().manual_seed(123)
    idx = torch.arange(min(clients, obj.num_clients))
    xs = x.expand(idx.numel(), -1)
    exact = obj.exact_grad(idx, xs)
    total = sum(float(((obj.grad(idx, xs, gen) - exact) ** 2).sum(1).mean()) for _ in range(draws))
    return total / draws


def _kappa(
    obj: QuadraticClients | LogisticClients, x: Tensor, idx: Tensor | None = None
) -> tuple[float, float]:
    idx = torch.arange(obj.num_clients) if idx is None else idx
    h = torch.linalg.eigvalsh(obj.hessian(idx, x))
    return float(h.max() / h.min()), float(h.max())


def _dirichlet(alpha: float, n: int, gen: torch.Generator) -> Tensor:
    """Dirichlet(alpha·1) draw seeded from ``gen`` (fork_rng keeps the global RNG untouched)."""
    with torch.random.fork_rng():
        torch.manual_seed(int(torch.randint(2**31 - 1, (1,), generator=gen)))
        return torch.distributions.Dirichlet(torch.full((n,), alpha, dtype=torch.float64)).sample()


def _synthetic_logistic(
    l2: float, batch: int | None, clients: int = 300, n: int = 40, d: int = 10, C: int = 3, seed: int = 0
) -> LogisticClients:
    gen = torch.Generator().manual_seed(seed)
    w_true = torch.randn(d, C, generator=gen, dtype=torch.float64)
    feat_scale = torch.logspace(0.0, -1.0, d, dtype=torch.float64)  # anisotropic features
    xs, ys = [], []
    for _ in range(clients):
        prior = _dirichlet(0.5, C, gen)
        shift = 0.5 * torch.randn(d, generator=gen, dtype=torch.float64)
        x = (torch.randn(n, d, generator=gen, dtype=torch.float64) + shift) * feat_scale
        logits = x @ w_true * 2 + torch.log(prior + 1e-3)
        y = torch.multinomial(torch.softmax(logits, -1), 1, generator=gen).squeeze(1)
        xs.append(x)
        ys.append(y)
    return LogisticClients(xs, ys, C, l2=l2, batch_size=batch)


def _fmnist_partitions(clients: int, seed: int = 0) -> tuple[list[Tensor], list[Tensor]]:
    images, labels = load_fashion_mnist(split="train")
    gen = torch.Generator().manual_seed(seed)
    x = images.reshape(images.shape[0], -1).to(torch.float64) / 255.0
    x = x - x.mean(0)
    # 32 principal components (from a 10k-image subsample), whitened to unit variance, plus a bias column
    sub = x[torch.randperm(x.shape[0], generator=gen)[:10000]]
    _, s, v = torch.linalg.svd(sub, full_matrices=False)
    z = x @ v[:32].T / (s[:32] / math.sqrt(sub.shape[0]))
    z = torch.cat([z, torch.ones(z.shape[0], 1, dtype=z.dtype)], 1)
    by_class = [torch.nonzero(labels == c).squeeze(1) for c in range(10)]
    by_class = [b[torch.randperm(b.numel(), generator=gen)] for b in by_class]
    used = [0] * 10
    xs, ys = [], []
    for _ in range(clients):
        size = int(torch.randint(40, 201, (1,), generator=gen))
        draw = torch.multinomial(_dirichlet(0.3, 10, gen), size, replacement=True, generator=gen)
        counts = torch.bincount(draw, minlength=10)
        take = []
        for c in range(10):
            k = int(counts[c])
            if used[c] + k > by_class[c].numel():
                used[c] = 0
            take.append(by_class[c][used[c] : used[c] + k])
            used[c] += k
        rows = torch.cat(take)
        xs.append(z[rows])
        ys.append(labels[rows])
    return xs, ys


# ---------------------------------------------------------------------------------------------- runs
def _measure(
    result: OpenFLResult,
    make: object,
    *,
    problem: str,
    sweep: str,
    knob: str,
    value: float,
    lr_sgd: float,
    settings: Settings,
    process: object,
    rounds: int,
    kappa: float,
    grad_var: float,
    log: TextIO | None,
) -> None:
    for opt in OPTIMIZERS:
        t0 = time.perf_counter()
        radii, dists, norms, ncl, skip = [], [], [], [], []
        for seed in _seed_list(settings.seeds):
            trace = simulate_open_fl(
                make,  # type: ignore[arg-type]
                process,  # type: ignore[arg-type]
                rounds=rounds,
                local_steps=settings.local_steps,
                lr=lr_sgd if opt == "sgd" else settings.adam_lr,
                optimizer=opt,
                seed=seed,
                track_every=1 if problem == "quadratic" else settings.track_every,
            )
            radii.append(trace.radius())
            half = trace.distance[rounds // 2 :]
            dists.append(float(half[torch.isfinite(half)].mean()))
            norms.append(float(trace.model_norm[rounds // 2 :].mean()))
            ncl.append(float(trace.num_clients.double().mean()))
            skip.append(float(trace.skipped.sum()))
        r = torch.tensor(radii)
        row = Row(
            problem,
            sweep,
            opt,
            knob,
            value,
            kappa,
            grad_var,
            float(r.mean()),
            float(r.std()) if r.numel() > 1 else 0.0,
            sum(dists) / len(dists),
            sum(norms) / len(norms),
            sum(ncl) / len(ncl),
            sum(skip) / len(skip),
            time.perf_counter() - t0,
        )
        result.rows.append(row)
        if log is not None:
            print(
                f"{problem:13s} {sweep:9s} {opt:4s} {knob}={value:<8g} kappa={kappa:8.2f} "
                f"var={grad_var:9.4g} radius={row.radius:.4g}±{row.radius_sd:.2g} ({row.seconds:.1f}s)",
                file=log,
                flush=True,
            )


def run(settings: Settings = DEFAULT, *, log: TextIO | None = None) -> OpenFLResult:
    """All sweeps of the module docstring: one :class:`Row` per (problem, sweep, knob value, optimizer)."""
    result = OpenFLResult(settings)
    R, M, d = settings.rounds, settings.quad_universe, 10
    pop = BernoulliPoissonProcess(arrival_rate=2.0, departure_prob=0.1)
    # quadratic: condition number, gradient noise, turnover
    for sweep, values in (
        ("kappa", settings.quad_kappas),
        ("sigma", settings.quad_sigmas),
        ("turnover", settings.quad_departures),
    ):
        for v in values:
            kappa = v if sweep == "kappa" else 10.0
            sigma = v if sweep == "sigma" else 1.0
            obj = random_quadratic_clients(M, d, condition_number=kappa, noise_std=sigma, seed=0)
            if sweep == "turnover":
                process: object = (
                    StaticPopulation(20)
                    if v == 0
                    else BernoulliPoissonProcess(arrival_rate=20 * v, departure_prob=v)
                )
            else:
                process = pop
            x_all = obj.optimum(torch.arange(M))
            k_meas, _ = _kappa(obj, x_all)
            _measure(
                result,
                obj,
                problem="quadratic",
                sweep=sweep,
                knob={"kappa": "kappa", "sigma": "sigma", "turnover": "departure_prob"}[sweep],
                value=v,
                lr_sgd=0.1 / kappa,
                settings=settings,
                process=process,
                rounds=R,
                kappa=k_meas,
                grad_var=sigma**2,
                log=log,
            )
    # synthetic logistic: ridge (kappa ~ L / l2), minibatch (variance)
    for sweep, values in (("kappa", settings.logit_l2s), ("batch", settings.logit_batches)):
        for v in values:
            l2 = float(v) if sweep == "kappa" else 1e-2  # type: ignore[arg-type]
            batch = v if sweep == "batch" else 4
            obj = _synthetic_logistic(l2, batch, clients=settings.logit_clients)  # type: ignore[arg-type]
            x_all = obj.optimum(torch.arange(obj.num_clients))
            k_meas, L = _kappa(obj, x_all)
            _measure(
                result,
                obj,
                problem="logistic",
                sweep=sweep,
                knob="l2" if sweep == "kappa" else "batch",
                value=float(v) if v is not None else 0.0,
                lr_sgd=0.5 / L,
                settings=settings,
                process=pop,
                rounds=settings.logit_rounds,
                kappa=k_meas,
                grad_var=_grad_var(obj, x_all),
                log=log,
            )
    if settings.fmnist:
        try:
            xs, ys = _fmnist_partitions(settings.fmnist_clients)
        except FileNotFoundError as exc:
            result.notes.append(f"fashion-mnist skipped: {exc}")
        else:
            fm_kw = {"seeds": settings.fmnist_seeds, "track_every": settings.fmnist_track_every}
            fm = Settings(**{**settings.__dict__, **fm_kw})
            for sweep, values in (("kappa", settings.fmnist_l2s), ("batch", settings.fmnist_batches)):
                for v in values:
                    l2 = float(v) if sweep == "kappa" else 1e-2  # type: ignore[arg-type]
                    batch = v if sweep == "batch" else 16
                    obj = LogisticClients(xs, ys, 10, l2=l2, batch_size=batch)  # type: ignore[arg-type]
                    sub = torch.arange(min(60, obj.num_clients))  # a 60-client point keeps this cheap
                    x_all = obj.optimum(sub)
                    k_meas, L = _kappa(obj, x_all, sub)
                    _measure(
                        result,
                        obj,
                        problem="fashion-mnist",
                        sweep=sweep,
                        knob="l2" if sweep == "kappa" else "batch",
                        value=float(v) if v is not None else 0.0,
                        lr_sgd=0.5 / L,
                        settings=fm,
                        process=pop,
                        rounds=settings.fmnist_rounds,
                        kappa=k_meas,
                        grad_var=_grad_var(obj, x_all),
                        log=log,
                    )
    return result


# ------------------------------------------------------------------------------------------- outputs
def _trend(rows: list[Row], x: str) -> tuple[float, bool]:
    """Least-squares slope of log radius vs log ``x`` ("kappa" or "grad_var", positive values only) and
    whether the radius increases monotonically along the sweep sorted by ``x``."""
    pts = sorted((getattr(r, x), r.radius) for r in rows)
    mono = all(b[1] > a[1] for a, b in itertools.pairwise(pts))
    pts = [(a, b) for a, b in pts if a > 0 and b > 0]
    if len(pts) < 2:
        return float("nan"), mono
    lx = torch.tensor([math.log(a) for a, _ in pts])
    ly = torch.tensor([math.log(b) for _, b in pts])
    lx = lx - lx.mean()
    slope = float((lx * (ly - ly.mean())).sum() / (lx * lx).sum().clamp_min(1e-12))
    return slope, mono


def trends(result: OpenFLResult) -> list[tuple[str, str, str, str, float, bool]]:
    """(problem, sweep, optimizer, measured quantity, log-log slope, monotone increase) per sweep."""
    out = []
    keys = sorted({(r.problem, r.sweep, r.optimizer) for r in result.rows}, key=str)
    for problem, sweep, opt in keys:
        rows = [r for r in result.rows if (r.problem, r.sweep, r.optimizer) == (problem, sweep, opt)]
        x = {"kappa": "kappa", "sigma": "grad_var", "batch": "grad_var", "turnover": "value"}[sweep]
        slope, mono = _trend(rows, x) if x != "value" else _trend_value(rows)
        out.append((problem, sweep, opt, x if x != "value" else "departure_prob", slope, mono))
    return out


def _trend_value(rows: list[Row]) -> tuple[float, bool]:
    pts = sorted((r.value, r.radius) for r in rows)
    mono = all(b[1] > a[1] for a, b in itertools.pairwise(pts))
    return float("nan"), mono


def format_markdown(result: OpenFLResult) -> str:
    s = result.settings
    lines = [
        "# Open federated learning: empirical stability radius",
        "",
        f"{s.rounds} rounds (logistic {s.logit_rounds}, Fashion-MNIST {s.fmnist_rounds} x {s.fmnist_seeds} "
        f"seeds), E = {s.local_steps} local steps, {len(_seed_list(s.seeds))} seed(s); "
        "radius = 0.95-quantile of ||x_{t+1} - x*_t|| over the second half (mean ± sd over seeds); "
        "kappa and grad_var measured at the optimum of all clients (Fashion-MNIST: of 60 clients).",
        "",
        "| problem | sweep | optimizer | knob | value | kappa | grad_var | radius | mean dist | mean ‖x‖ "
        "| clients | skipped |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result.rows:
        lines.append(
            f"| {r.problem} | {r.sweep} | {r.optimizer} | {r.knob} | {r.value:g} | {r.kappa:.3g} "
            f"| {r.grad_var:.3g} "
            f"| {r.radius:.4g} ± {r.radius_sd:.2g} | {r.mean_distance:.4g} | {r.mean_model_norm:.4g} "
            f"| {r.mean_clients:.1f} | {r.skipped_rounds:g} |"
        )
    lines += [
        "",
        "## Trends (radius vs the measured quantity)",
        "",
        "| problem | sweep | optimizer | against | log-log slope | radius increases monotonically |",
        "|---|---|---|---|---:|---|",
    ]
    for problem, sweep, opt, x, slope, mono in trends(result):
        lines.append(f"| {problem} | {sweep} | {opt} | {x} | {slope:.3g} | {'yes' if mono else 'no'} |")
    for n in result.notes:
        lines += ["", f"Note: {n}"]
    return "\n".join(lines) + "\n"


def plot_radius(result: OpenFLResult, path: str | os.PathLike[str]) -> None:
    panels = sorted(
        {(r.problem, r.sweep) for r in result.rows},
        key=lambda p: (["quadratic", "logistic", "fashion-mnist"].index(p[0]), p[1]),
    )
    cols = 3
    rows_n = max(1, math.ceil(len(panels) / cols))
    fig = common.figure("open-FL radius figure", figsize=(4.2 * cols, 3.3 * rows_n), layout="constrained")
    from matplotlib.ticker import NullFormatter
    axes = fig.subplots(rows_n, cols, squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, (problem, sweep) in zip(axes.flat, panels):
        x = {"kappa": "kappa", "sigma": "grad_var", "batch": "grad_var", "turnover": "value"}[sweep]
        for opt, marker in zip(OPTIMIZERS, "os"):
            rs = sorted(
                (r for r in result.rows if (r.problem, r.sweep, r.optimizer) == (problem, sweep, opt)),
                key=lambda r: getattr(r, x),
            )
            xs = [getattr(r, x) for r in rs]
            ax.errorbar(
                xs,
                [r.radius for r in rs],
                yerr=[r.radius_sd for r in rs],
                marker=marker,
                label=f"local {opt.upper() if opt == 'sgd' else 'Adam'}",
                capsize=2,
            )
        if x != "value" and all(
            getattr(r, x) > 0 for r in result.rows if (r.problem, r.sweep) == (problem, sweep)
        ):
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
        elif x != "value":
            ax.set_xscale("symlog", linthresh=0.1)
        ax.set_yscale("log")
        ax.set_xlabel(
            {
                "kappa": "condition number κ (measured)",
                "grad_var": "gradient variance σ² (measured)",
                "value": "departure probability per round",
            }[x]
        )
        ax.set_ylabel("stability radius")
        ax.set_title(f"{problem}: {sweep}", fontsize=10)
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)


def write_outputs(result: OpenFLResult, out: str | os.PathLike[str], *, plot: bool = True) -> common.Outputs:
    """``results.md``, ``results.csv`` and (with ``plot``) ``radius.png`` in ``out``."""
    files = common.Outputs(out)
    files.text("results.md", format_markdown(result))
    names = list(Row.__dataclass_fields__)
    files.csv("results.csv", [[getattr(r, n) for n in names] for r in result.rows], names)
    if plot:
        plot_radius(result, files.path("radius.png"))
    return files


# ---------------------------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    p = common.parser(
        NAME,
        __doc__,
        seeds=f"{DEFAULT.seeds}; Fashion-MNIST {DEFAULT.fmnist_seeds}",
        quick="seconds: tiny sweeps, no Fashion-MNIST",
    )
    p.add_argument("--rounds", type=int, default=None, help=f"rounds per run (default {DEFAULT.rounds})")
    p.add_argument("--local-steps", type=int, default=None, help=f"E (default {DEFAULT.local_steps})")
    p.add_argument("--no-fmnist", action="store_true", help="skip the Fashion-MNIST sweeps")
    p.add_argument("--threads", type=int, default=1, help="torch threads (tiny tensors: 1 is fastest)")
    return p


def _main(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    base = QUICK if args.quick else DEFAULT
    kw: dict[str, object] = {}
    if args.rounds is not None:
        kw["rounds"] = args.rounds
    if args.seeds is not None:
        kw["seeds"] = tuple(args.seeds)
    if args.local_steps is not None:
        kw["local_steps"] = args.local_steps
    if args.no_fmnist:
        kw["fmnist"] = False
    settings = Settings(**{**base.__dict__, **kw})
    torch.set_num_threads(max(1, args.threads))
    result = run(settings, log=sys.stderr)
    return write_outputs(result, args.out, plot=not args.no_plot).done(NAME, format_markdown(result), t0)


def main(argv: Sequence[str] | None = None) -> int:
    """``python experiments/open-fl/run.py [options]``; returns the exit status."""
    return common.main(NAME, build_parser, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
