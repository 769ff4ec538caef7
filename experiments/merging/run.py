r"""Model merging on Multi-Fashion: MAP's amortised front and FW-Merging against a coefficient grid.

Papers: Li, Zhang, Kong, Ha, Xie, Guo, Zhang, Ruan, Sen, Li, Sun, Yin, "MAP: Low-compute Model Merging with
Amortized Pareto Fronts via Quadratic Approximation" (ICLR 2025, `arXiv:2406.07529
<https://arxiv.org/abs/2406.07529>`_); Chen, Hu, Luk, Hospedales, Fan, "FW-Merging: Scaling Model Merging
with Frank-Wolfe Optimization" (ICCV 2025, `arXiv:2503.12649 <https://arxiv.org/abs/2503.12649>`_).
Baselines: task arithmetic (Ilharco et al., ICLR 2023, arXiv:2212.04089) and TIES-Merging (Yadav et al.,
NeurIPS 2023, arXiv:2306.01708). Only the vision half of issue 18's merging item; the SmolLM2-adapter half is
not run here.

**Set-up.** Multi-Fashion (two Fashion-MNIST items in one 36×36 image, task ``left`` and task ``right``;
:func:`molearn.datasets.load_multi`), :class:`molearn.models.MultiLeNet` (shared trunk, one head per task).

1. A *base* :math:`\theta_0`: the network trained briefly (``--base-steps`` Adam steps) on the sum of both
   tasks' cross-entropies from a fixed initialisation (``--base-seed``), the stand-in for the pre-trained
   model every merging paper starts from (merging from a random initialisation gives task vectors with no
   shared basin, which is not the setting of either paper).
2. K = 2 *fine-tunes* of :math:`\theta_0`, one per task (``--ft-steps`` Adam steps on that task's loss alone,
   all parameters trainable), their data order drawn from the run's seed; task vectors
   :math:`\tau_i = \theta_i - \theta_0` (:func:`molearn.merging.task_vectors`).
3. The *objectives* of a coefficient vector :math:`c \in [0, 1]^2`: the two test cross-entropies of
   :math:`\theta_0 + c_1\tau_1 + c_2\tau_2` on ``--n-eval`` held-out test pairs (the errors are recorded too).
   Every call is one *evaluation* and is counted.

**Methods.** ``map``: :func:`molearn.merging.map_front` with the official (K+1)(K+2) = 12 Sobol samples and
``--n-prefs`` preference vectors, its front *re-evaluated* (those evaluations are counted); ``grid``: a
regular grid (:func:`molearn.merging.grid_search`) at MAP's evaluation count (the largest m×m grid that fits);
``sobol``: the same budget exactly, as scrambled Sobol points; ``ta``: task arithmetic
:math:`\theta_0 + \lambda(\tau_1+\tau_2)`, λ swept over the same budget in [0, 1]; ``ties``: TIES-Merging
(density 0.2) with its scale swept over the same budget in [0, 2]; ``fw``: FW-Merging (hard, ``--fw-steps``
Frank-Wolfe steps from the base on the summed training loss of ``--n-fw`` training pairs), one merged model,
evaluated once; ``dense``: the exhaustive reference, a ``--dense``×``--dense`` grid.

**Measure.** Hypervolume (:class:`molearn.pareto.Hypervolume`) of each method's evaluated non-dominated points
(true objectives, never surrogate values) with the fixed reference point (ln 10, ln 10): the cross-entropy of
a uniform guess, so a merge worse than chance on a task adds nothing. ``hv_ratio`` = HV / HV(dense). FW's
single merge is compared with the single-merge baselines TA (λ = 0.3) and TIES (density 0.2, scale 1) on the
summed test loss and the mean test error, paired by seed. Means ± 95 % Student-t intervals over seeds.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if not __package__:  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from experiments import common
from molearn.compare import mean_ci
from molearn.datasets import load_multi
from molearn.merging import (
    frank_wolfe_merge,
    grid_search,
    map_front,
    merge,
    task_arithmetic,
    task_vectors,
    ties,
)
from molearn.models import MultiLeNet
from molearn.pareto import Hypervolume, non_dominated_mask

NAME = "merging"
TASKS = ("left", "right")
REF = (math.log(10.0), math.log(10.0))
FRONT_METHODS = ("map", "grid", "sobol", "ta", "ties", "dense")
SINGLE_METHODS = ("fw", "ta0.3", "ties1")


@dataclass
class Config:
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    n_train: int = 10000
    n_eval: int = 2000
    n_fw: int = 512
    base_seed: int = 0
    base_steps: int = 150
    ft_steps: int = 150
    batch_size: int = 128
    lr: float = 1e-3
    n_prefs: int = 10
    fw_steps: int = 10
    dense: int = 21


@dataclass
class SeedResult:
    seed: int
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per method
    points: list[dict[str, Any]] = field(default_factory=list)  # every evaluated merge
    seconds: float = 0.0


# ------------------------------------------------------------------------------------------ training
def _data(cfg: Config) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    xs, ys = load_multi("multi_fashion", "train", n=cfg.n_train)
    xt, yt = load_multi("multi_fashion", "test", n=cfg.n_eval)
    return xs.float() / 255, ys, xt.float() / 255, yt


def _losses(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return torch.stack([F.cross_entropy(z, y[:, i]) for i, z in enumerate(model(x))])


def train(model: nn.Module, x: Tensor, y: Tensor, steps: int, weights: Sequence[float], seed: int,
          cfg: Config) -> None:
    """``steps`` Adam steps on ``weights · losses`` with mini-batches drawn in the order of ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    w = torch.tensor(weights)
    perm = torch.randperm(x.shape[0], generator=gen)
    pos = 0
    model.train()
    for _ in range(steps):
        if pos + cfg.batch_size > x.shape[0]:
            perm, pos = torch.randperm(x.shape[0], generator=gen), 0
        idx = perm[pos:pos + cfg.batch_size]
        pos += cfg.batch_size
        opt.zero_grad()
        (w @ _losses(model, x[idx], y[idx])).backward()
        opt.step()
    model.eval()


def _state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ------------------------------------------------------------------------------------------ one seed
class Evaluator:
    """The objectives of merged models on the evaluation set; counts every call."""

    def __init__(self, model: nn.Module, x: Tensor, y: Tensor, base: dict[str, Tensor],
                 vectors: list[dict[str, Tensor]]) -> None:
        self.model, self.x, self.y, self.base, self.vectors = model, x, y, base, vectors
        self.n = 0
        self.errs: list[Tensor] = []  # the errors of every call, in order
        self.by_c: dict[tuple[float, ...], Tensor] = {}  # the errors of the coefficient vectors evaluated

    def state(self, state: dict[str, Tensor]) -> Tensor:
        self.n += 1
        self.model.load_state_dict(state)
        with torch.no_grad():
            logits = self.model(self.x)
        loss = torch.stack([F.cross_entropy(z, self.y[:, i]) for i, z in enumerate(logits)]).double()
        err = torch.stack([(z.argmax(1) != self.y[:, i]).double().mean() for i, z in enumerate(logits)])
        self.errs.append(err)
        return loss

    def __call__(self, c: Tensor) -> Tensor:
        loss = self.state(merge(self.base, self.vectors, c))
        self.by_c[tuple(c.tolist())] = self.errs[-1]
        return loss


def hypervolume(F_: Tensor) -> float:
    return float(Hypervolume(torch.tensor(REF), clip=True).do(F_))


def run_seed(seed: int, cfg: Config, base: dict[str, Tensor], data: tuple[Tensor, ...]) -> SeedResult:
    t0 = time.perf_counter()
    xs, ys, xt, yt = data
    model = MultiLeNet(tasks=2)
    tuned = []
    for t in range(2):
        model.load_state_dict(base)
        train(model, xs, ys, cfg.ft_steps, [1.0 if i == t else 0.0 for i in range(2)], 1000 * seed + t, cfg)
        tuned.append(_state(model))
    taus = task_vectors(base, tuned)
    ev = Evaluator(model, xt, yt, base, taus)
    res = SeedResult(seed)

    def add_front(method: str, Fs: Tensor, n_evals: int, Cs: Tensor | None, extra: dict[str, Any]) -> None:
        mask = non_dominated_mask(Fs)
        rows = [ev.by_c[tuple(c.tolist())] for c in Cs] if Cs is not None else ev.errs[-Fs.shape[0]:]
        errs = torch.stack(rows)
        for i in range(Fs.shape[0]):
            res.points.append({
                "seed": seed, "method": method,
                "c1": "" if Cs is None else float(Cs[i, 0]), "c2": "" if Cs is None else float(Cs[i, 1]),
                "loss_left": float(Fs[i, 0]), "loss_right": float(Fs[i, 1]),
                "err_left": float(errs[i, 0]), "err_right": float(errs[i, 1]),
                "front": bool(mask[i]),
            })
        res.rows.append({"seed": seed, "method": method, "n_evals": n_evals, "n_front": int(mask.sum()),
                         "hv": hypervolume(Fs), **extra})

    # exhaustive reference
    start = ev.n
    g = grid_search(ev, 2, cfg.dense ** 2, sampler="grid")
    assert ev.n - start == g.n_evals
    add_front("dense", g.objectives, g.n_evals, g.coefficients, {})
    # MAP: fit points + re-evaluated amortised front
    start = ev.n
    m = map_front(ev, 2, n_prefs=cfg.n_prefs, reevaluate=True, seed=seed)
    n_map = ev.n - start
    assert n_map == m.n_evals
    Fm = torch.cat([m.sample_objectives, m.evaluated])
    Cm = torch.cat([m.samples, m.coefficients])
    n_s = m.samples.shape[0]
    r2 = m.r2.tolist()
    add_front("map", Fm, n_map, Cm, {"r2_left": r2[0], "r2_right": r2[1], "n_fit": n_s})
    budget = n_map
    # grid and Sobol at MAP's evaluation count
    for method, sampler in (("grid", "grid"), ("sobol", "sobol")):
        start = ev.n
        g = grid_search(ev, 2, budget, sampler=sampler, seed=seed)
        assert ev.n - start == g.n_evals <= budget
        add_front(method, g.objectives, g.n_evals, g.coefficients, {})
    # task arithmetic and TIES sweeps at the same count
    lams = torch.linspace(0, 1, budget, dtype=torch.float64)
    Fta = torch.stack([ev(torch.stack([lam, lam])) for lam in lams])
    add_front("ta", Fta, budget, torch.stack([lams, lams], 1), {})
    scales = torch.linspace(0, 2, budget, dtype=torch.float64)
    Fti = torch.stack([ev.state(ties(base, taus, density=0.2, scale=float(s))) for s in scales])
    add_front("ties", Fti, budget, None, {})
    # FW-Merging on a training batch, and the single-merge baselines
    gen = torch.Generator().manual_seed(10_000 + seed)
    idx = torch.randperm(xs.shape[0], generator=gen)[: cfg.n_fw]
    xf, yf = xs[idx], ys[idx]
    fw = frank_wolfe_merge(model, base, tuned, lambda mdl: list(_losses(mdl, xf, yf)), steps=cfg.fw_steps)
    singles = {
        "fw": (fw.state_dict, fw.coefficients.tolist()),
        "ta0.3": (task_arithmetic(base, taus, scale=0.3), [0.3, 0.3]),
        "ties1": (ties(base, taus, density=0.2, scale=1.0), ["", ""]),
    }
    for method, (sd, coef) in singles.items():
        loss = ev.state(sd)
        err = ev.errs[-1]
        res.points.append({"seed": seed, "method": method, "c1": coef[0], "c2": coef[1],
                           "loss_left": float(loss[0]), "loss_right": float(loss[1]),
                           "err_left": float(err[0]), "err_right": float(err[1]), "front": True})
        extra = {"fw_forward": fw.n_loss_evals, "fw_backward": fw.n_grad_evals} if method == "fw" else {}
        res.rows.append({"seed": seed, "method": method, "n_evals": 1, "n_front": 1,
                         "hv": hypervolume(loss[None]),
                         "sum_loss": float(loss.sum()), "mean_err": float(err.mean()), **extra})
    dense_hv = res.rows[0]["hv"]
    for r in res.rows:
        r["hv_ratio"] = r["hv"] / dense_hv if dense_hv > 0 else float("nan")
    res.seconds = time.perf_counter() - t0
    return res


# ------------------------------------------------------------------------------------------ run
@dataclass
class Result:
    cfg: Config
    seeds: list[SeedResult]
    base_losses: list[float]
    summary: list[dict[str, Any]]
    contrasts: list[dict[str, Any]]


def run(cfg: Config, log: Any = None) -> Result:
    say = common.printer(log)
    with common.single_thread():
        data = _data(cfg)
        torch.manual_seed(cfg.base_seed)
        model = MultiLeNet(tasks=2)
        train(model, data[0], data[1], cfg.base_steps, [1.0, 1.0], cfg.base_seed, cfg)
        base = _state(model)
        with torch.no_grad():
            base_losses = _losses(model, data[2], data[3]).tolist()
        say(f"base: test losses {base_losses[0]:.3f} / {base_losses[1]:.3f}")
        seeds = common.run_jobs(
            lambda s: run_seed(s, cfg, base, data), list(cfg.seeds),
            describe=lambda r: f"seed {r.seed}: {r.seconds:.1f} s", log=log,
        )
    return Result(cfg, seeds, base_losses, *summarise(seeds))


def _ci(vals: Sequence[float]) -> tuple[float, float]:
    mean, half, _ = mean_ci(vals)
    return mean, half


def summarise(seeds: list[SeedResult]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    by: dict[str, list[dict[str, Any]]] = {}
    for s in seeds:
        for r in s.rows:
            by.setdefault(r["method"], []).append(r)
    summary = []
    for method, rows in by.items():
        row: dict[str, Any] = {"method": method, "seeds": len(rows)}
        for key in ("n_evals", "hv", "hv_ratio", "sum_loss", "mean_err"):
            if key in rows[0]:
                row[key], row[key + "_ci"] = _ci([r[key] for r in rows])
        summary.append(row)
    contrasts = []

    def paired(a: str, b: str, key: str) -> None:
        da = {r["seed"]: r[key] for r in by.get(a, [])}
        db = {r["seed"]: r[key] for r in by.get(b, [])}
        diffs = [da[s] - db[s] for s in da if s in db]
        mean, half = _ci(diffs)
        separated = bool(math.isfinite(half) and abs(mean) > half)
        contrasts.append({"a": a, "b": b, "metric": key, "diff": mean, "ci": half, "separated": separated})

    for other in ("grid", "sobol", "ta", "ties"):
        paired("map", other, "hv")
    paired("map", "dense", "hv")
    for other in ("ta0.3", "ties1"):
        paired("fw", other, "sum_loss")
        paired("fw", other, "mean_err")
    return summary, contrasts


# ------------------------------------------------------------------------------------------ outputs
def _fmt(mean: float, half: float, digits: int = 4) -> str:
    if not math.isfinite(half):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


def markdown(res: Result) -> str:
    cfg = res.cfg
    lines = [
        f"Multi-Fashion, MultiLeNet; base: {cfg.base_steps} steps on both tasks (test losses "
        f"{res.base_losses[0]:.3f} / {res.base_losses[1]:.3f}); fine-tunes: {cfg.ft_steps} steps per task; "
        f"{cfg.n_train} training pairs, {cfg.n_eval} evaluation pairs; seeds {list(cfg.seeds)}; "
        f"reference point (ln 10, ln 10); dense grid {cfg.dense}×{cfg.dense}.",
        "",
        "| method | evaluations | hypervolume | HV / HV(dense) | summed test loss | mean test error |",
        "|---|---|---|---|---|---|",
    ]
    for r in res.summary:
        sl = _fmt(r["sum_loss"], r["sum_loss_ci"]) if "sum_loss" in r else "—"
        me = _fmt(r["mean_err"], r["mean_err_ci"]) if "mean_err" in r else "—"
        lines.append(f"| {r['method']} | {r['n_evals']:.0f} | {_fmt(r['hv'], r['hv_ci'])} | "
                     f"{_fmt(r['hv_ratio'], r['hv_ratio_ci'])} | {sl} | {me} |")
    fw_rows = [r for s in res.seeds for r in s.rows if r["method"] == "fw"]
    if fw_rows:
        lines += ["", f"FW-Merging used {fw_rows[0]['fw_forward']} forward and {fw_rows[0]['fw_backward']} "
                  f"backward passes on {cfg.n_fw} training pairs, plus 1 evaluation."]
    map_rows = [r for s in res.seeds for r in s.rows if r["method"] == "map"]
    if map_rows:
        r2l = _fmt(*_ci([r["r2_left"] for r in map_rows]), 3)
        r2r = _fmt(*_ci([r["r2_right"] for r in map_rows]), 3)
        lines += ["", f"MAP: {map_rows[0]['n_fit']} fit evaluations + the re-evaluated front; surrogate R² "
                  f"left {r2l}, right {r2r}."]
    lines += ["", "Paired differences over seeds (a − b, 95 % t-interval):", "",
              "| a | b | metric | a − b | separated |", "|---|---|---|---|---|"]
    for c in res.contrasts:
        lines.append(f"| {c['a']} | {c['b']} | {c['metric']} | {_fmt(c['diff'], c['ci'])} | "
                     f"{'yes' if c['separated'] else 'no'} |")
    return "\n".join(lines) + "\n"


def write_outputs(res: Result, out: str, plot: bool = True) -> common.Outputs:
    o = common.Outputs(out)
    o.text("results.md", markdown(res))
    o.csv("results.csv", [r for s in res.seeds for r in s.rows],
          header=["seed", "method", "n_evals", "n_front", "hv", "hv_ratio", "sum_loss", "mean_err",
                  "r2_left", "r2_right", "n_fit", "fw_forward", "fw_backward"])
    o.csv("points.csv", [p for s in res.seeds for p in s.points])
    o.csv("summary.csv", res.summary, header=list(dict.fromkeys(k for r in res.summary for k in r)))
    o.csv("contrasts.csv", res.contrasts)
    if plot:
        fig = figure_front(res)
        fig.savefig(o.path("front.png"), dpi=110)
    return o


def figure_front(res: Result) -> Any:
    fig = common.figure("front figure", figsize=(6.5, 5))
    ax = fig.add_subplot(1, 1, 1)
    pts = [p for p in res.seeds[0].points]
    style = {"dense": ("0.75", "."), "grid": ("tab:blue", "s"), "sobol": ("tab:cyan", "v"),
             "map": ("tab:red", "o"), "ta": ("tab:green", "^"), "ties": ("tab:purple", "D"),
             "fw": ("black", "*"), "ta0.3": ("tab:olive", "P"), "ties1": ("tab:pink", "X")}
    for method, (color, marker) in style.items():
        ps = [p for p in pts if p["method"] == method and (p["front"] or method == "dense")]
        if not ps:
            continue
        ps.sort(key=lambda p: p["loss_left"])
        ax.plot([p["loss_left"] for p in ps], [p["loss_right"] for p in ps], marker=marker, color=color,
                ls="-" if method not in ("dense", "fw", "ta0.3", "ties1") else "none",
                ms=9 if method == "fw" else 5, label=method)
    ax.set_xlabel("test cross-entropy, left task")
    ax.set_ylabel("test cross-entropy, right task")
    ax.set_title(f"seed {res.seeds[0].seed}: evaluated fronts (dense: all grid points)")
    ax.legend(fontsize=8)
    return fig


def build_parser() -> argparse.ArgumentParser:
    p = common.parser(NAME, __doc__, seeds="5; quick 2", jobs=False,
                      quick="seconds: 600 training pairs, 8+8 steps, 128 evaluation pairs, 2 seeds")
    d = Config()
    for name, typ, help_ in (
        ("n-train", int, "training pairs"), ("n-eval", int, "evaluation (test) pairs"),
        ("n-fw", int, "training pairs FW-Merging's losses use"), ("base-seed", int, "seed of the base"),
        ("base-steps", int, "Adam steps of the base on both tasks"),
        ("ft-steps", int, "Adam steps of each fine-tune"), ("batch-size", int, "mini-batch size"),
        ("lr", float, "Adam learning rate"), ("n-prefs", int, "MAP's preference vectors"),
        ("fw-steps", int, "Frank-Wolfe steps"), ("dense", int, "values per coordinate of the dense grid"),
    ):
        key = name.replace("-", "_")
        default = getattr(d, key)
        p.add_argument(f"--{name}", type=typ, default=default, help=f"{help_} (default {default})")
    return p


def _main(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    cfg = Config(**{k: getattr(args, k) for k in Config.__dataclass_fields__ if k != "seeds"})
    if cfg.dense < 2 or cfg.n_prefs < 2:
        raise ValueError("--dense and --n-prefs must be at least 2")
    if args.quick:
        cfg = Config(n_train=600, n_eval=128, n_fw=64, base_steps=8, ft_steps=8, batch_size=64, n_prefs=4,
                     fw_steps=3, dense=5, seeds=(0, 1))
    if args.seeds is not None:
        cfg.seeds = tuple(args.seeds)
    res = run(cfg, log=sys.stderr)
    return write_outputs(res, args.out, plot=not args.no_plot).done(NAME, markdown(res), t0)


def main(argv: Sequence[str] | None = None) -> int:
    """``python experiments/merging/run.py [options]``; returns the exit status."""
    return common.main(NAME, build_parser, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
