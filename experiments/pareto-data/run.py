r"""A real-data Pareto front on Multi-Fashion (or Multi-MNIST): preference sweep and conditioned models.

Two ways to get the front of the two tasks (left item, right item; cross-entropy each):

* **preference sweep** — one :class:`~molearn.models.MultiLeNet` per preference
  (:func:`molearn.pareto.uniform_preferences`, ``--prefs``, default 5), each trained with
  ``Balancer(make_preference_method(method, pref), trunk, heads)`` (default methods: linear scalarisation,
  Tchebycheff, EPO);
* **conditioned** — one preference-conditioned network trained with
  :func:`molearn.pareto.train_conditioned` (a Dirichlet(1) preference per batch, scalarised by the same
  methods; default LS and EPO), evaluated at ``--eval-prefs`` (default 11) evenly spaced preferences.
  ``film``: the LeNet's 50-d representation is FiLM-modulated by the preference
  (:class:`~molearn.pareto.PreferenceConditioned`);
  ``input``: COSMOS-style, the preference is appended to the image as two extra channels
  (:class:`~molearn.pareto.PreferenceAsInput`, a LeNet with 3 input channels).

Every model is trained on the ``train`` split (``n_train`` pairs) with Adam and evaluated on the
``test`` split (``n_test`` pairs): test loss and accuracy of each task. **Hypervolume** of each front in
the (task-1 loss, task-2 loss) plane with one reference point for all methods, derived from the data:
``ref_k = 1.1 × max`` over every evaluated point of every method of the task-k test loss (the worst
single-task loss found, typically at the preference that neglects task k). ``hv_vs_best_sweep`` is a
front's hypervolume divided by the best sweep method's.

**Settings** (:data:`SETTINGS`): ``default``: 20,000 train / 5,000 test pairs, batch 128, Adam lr 1e-3;
sweep 3 epochs per preference, conditioned 6 epochs (one conditioned model costs about three sweep runs
and replaces all of them); the four conditioned models (film/input × LS/EPO) and 15 sweep runs take
about 420 s of CPU time in all (measured), i.e. about 3.5 minutes on 2 idle cores with ``--jobs 2``.
Every run uses one torch thread (``--jobs`` runs them side by side), so the numbers do not depend on
``--jobs``.
``quick``: a few hundred pairs, seconds of CPU. Pareto HyperNetworks (Navon et al., ICLR 2021) and COSMOS
train on all 120k pairs for 100+ epochs; these short schedules give fronts of under-trained models,
consistently for all methods.
Outputs in ``--out``: ``front.png``, ``results.md``, ``results.csv``, ``points.csv``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if not __package__:  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from experiments import common
from molearn import Balancer
from molearn.datasets import MULTI_DATASETS, MultiDataset
from molearn.models import MultiLeNet
from molearn.pareto import (
    Hypervolume,
    PreferenceAsInput,
    PreferenceConditioned,
    make_preference_method,
    train_conditioned,
    uniform_preferences,
)

NAME = "pareto-data"

DEFAULT_DATASET = "multi_fashion"
DEFAULT_METHODS = ("ls", "tchebycheff", "epo")
DEFAULT_COND_METHODS = ("ls", "epo")
DEFAULT_CONDITIONING = ("film", "input")
CONDITIONINGS = ("film", "input")
REF_FACTOR = 1.1
_TASKS = ("left", "right")


@dataclass(frozen=True)
class Settings:
    """Data sizes and training schedule (Adam) of every run."""

    n_train: int
    n_test: int
    epochs: int  # per sweep run
    cond_epochs: int  # for the conditioned model
    batch_size: int = 128
    lr: float = 1e-3
    eval_batch: int = 1000
    alpha: float = 1.0  # Dirichlet concentration of the conditioned training


SETTINGS: dict[str, Settings] = {
    "default": Settings(n_train=20_000, n_test=5_000, epochs=3, cond_epochs=6),
    "quick": Settings(n_train=256, n_test=128, epochs=1, cond_epochs=2, batch_size=64, eval_batch=128),
}


@dataclass
class Front:
    """One method's front: preferences (N, 2), test losses (N, 2), test accuracies (N, 2), training +
    evaluation seconds (summed over the runs: CPU-process time of the workers, not wall time)."""

    label: str
    kind: str  # "sweep" or "conditioned"
    method: str
    prefs: Tensor
    losses: Tensor
    accs: Tensor
    seconds: float
    hv: float = math.nan
    hv_vs_best_sweep: float = math.nan


@dataclass
class Result:
    dataset: str
    settings: Settings
    fronts: list[Front]
    ref: Tensor
    wall_seconds: float
    jobs: int
    seed: int
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ jobs
def _check_dataset(name: str) -> str:
    key = name.lower().replace("-", "_")
    if key not in MULTI_DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(sorted(MULTI_DATASETS))}")
    return key


def _data(dataset: str, split: str, n: int) -> tuple[Tensor, Tensor]:
    return MultiDataset.load(dataset, split, n=n).tensors()


def _batches(x: Tensor, y: Tensor, size: int, gen: torch.Generator | None) -> list[tuple[Tensor, Tensor]]:
    idx = torch.randperm(x.shape[0], generator=gen) if gen is not None else torch.arange(x.shape[0])
    return [(x[idx[i : i + size]], y[idx[i : i + size]]) for i in range(0, x.shape[0], size)]


class _Epochs:
    """Re-iterable shuffled batches: a fresh permutation (from one seeded generator) per pass."""

    def __init__(self, x: Tensor, y: Tensor, size: int, seed: int) -> None:
        self.x, self.y, self.size = x, y, size
        self.gen = torch.Generator().manual_seed(seed)

    def __iter__(self) -> Any:
        return iter(_batches(self.x, self.y, self.size, self.gen))


def _ce(outputs: Sequence[Tensor], y: Tensor) -> Tensor:
    return torch.stack([F.cross_entropy(z, y[:, i]) for i, z in enumerate(outputs)])


@torch.no_grad()
def _evaluate(
    model: Callable[[Tensor], Sequence[Tensor]], x: Tensor, y: Tensor, bs: int
) -> tuple[list[float], list[float]]:
    loss = torch.zeros(2, dtype=torch.float64)
    correct = torch.zeros(2, dtype=torch.float64)
    for xb, yb in _batches(x, y, bs, None):
        out = model(xb)
        for k in range(2):
            loss[k] += F.cross_entropy(out[k], yb[:, k], reduction="sum").double()
            correct[k] += (out[k].argmax(1) == yb[:, k]).sum().double()
    return (loss / x.shape[0]).tolist(), (correct / x.shape[0]).tolist()


def _lenet_conditioned(conditioning: str, size: int) -> nn.Module:
    if conditioning == "input":
        return PreferenceAsInput(MultiLeNet(tasks=2, size=size, channels=3), n_obj=2)
    lenet = MultiLeNet(tasks=2, size=size)
    trunk = nn.Sequential(
        lenet.conv1, nn.ReLU(), nn.MaxPool2d(2), lenet.conv2, nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), lenet.fc, nn.ReLU(),
    )  # fmt: skip  # MultiLeNet.trunk, as modules
    return PreferenceConditioned(trunk, list(lenet.heads), n_obj=2, channels=lenet.fc.out_features)


@common.single_thread()
def _job(spec: dict[str, Any]) -> dict[str, Any]:
    """One training run (a picklable dict in, a plain dict out): a sweep model at one preference, or a
    conditioned model evaluated at many (one torch thread)."""
    s: Settings = Settings(**spec["settings"])
    x, y = _data(spec["dataset"], "train", s.n_train)
    xt, yt = _data(spec["dataset"], "test", s.n_test)
    size = int(x.shape[-1])
    torch.manual_seed(spec["seed"])
    t0 = time.process_time()
    out: dict[str, Any] = {"spec": spec}
    if spec["kind"] == "sweep":
        pref = torch.tensor(spec["pref"], dtype=torch.float64)
        model = MultiLeNet(tasks=2, size=size)
        opt = torch.optim.Adam(model.parameters(), lr=s.lr)
        shared, tasks = list(model.shared_parameters()), list(model.task_parameters())
        data = _Epochs(x, y, s.batch_size, spec["seed"])
        bal = Balancer(make_preference_method(spec["method"], pref), shared, tasks)
        model.train()
        for _ in range(s.epochs):
            for xb, yb in data:
                opt.zero_grad(set_to_none=True)
                bal.backward(_ce(model(xb), yb))
                opt.step()
        model.eval()
        loss, acc = _evaluate(model, xt, yt, s.eval_batch)
        out.update(prefs=[spec["pref"]], losses=[loss], accs=[acc])
    else:
        model = _lenet_conditioned(spec["conditioning"], size)

        def loss_fn(m: nn.Module, batch: Any, p: Tensor) -> Tensor:
            return _ce(m(batch[0], p), batch[1])

        train_conditioned(
            model,
            loss_fn,
            _Epochs(x, y, s.batch_size, spec["seed"]),
            spec["method"],
            epochs=s.cond_epochs,
            lr=s.lr,
            alpha=s.alpha,
            seed=spec["seed"],
        )
        losses, accs = [], []
        for p in spec["eval_prefs"]:
            loss, acc = _evaluate(model.at(torch.tensor(p)), xt, yt, s.eval_batch)  # type: ignore[operator]
            losses.append(loss)
            accs.append(acc)
        out.update(prefs=spec["eval_prefs"], losses=losses, accs=accs)
    out["seconds"] = time.process_time() - t0
    return out


# ------------------------------------------------------------------------------------------ run
def run(
    dataset: str = DEFAULT_DATASET,
    methods: Sequence[str] = DEFAULT_METHODS,
    *,
    cond_methods: Sequence[str] = DEFAULT_COND_METHODS,
    conditioning: Sequence[str] = DEFAULT_CONDITIONING,
    settings: Settings | str = "default",
    n_prefs: int = 5,
    n_eval_prefs: int = 11,
    seed: int = 0,
    jobs: int = 2,
    log: Any = None,
) -> Result:
    """Train the sweep (``methods`` × ``n_prefs`` preferences) and the conditioned models
    (``conditioning`` × ``cond_methods``), evaluate them on the test pairs, score the fronts.

    ``jobs``: worker processes (``spawn``); 1 runs everything in this process.
    """
    ds = _check_dataset(dataset)
    if isinstance(settings, str) and settings not in SETTINGS:
        raise ValueError(f"unknown settings {settings!r}; valid: {', '.join(SETTINGS)}")
    s = SETTINGS[settings] if isinstance(settings, str) else settings
    if n_prefs < 2 or n_eval_prefs < 2:
        raise ValueError(f"need at least 2 preferences, got n_prefs={n_prefs}, n_eval_prefs={n_eval_prefs}")
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    for c in conditioning:
        if c not in CONDITIONINGS:
            raise ValueError(f"unknown conditioning {c!r}; valid: {', '.join(CONDITIONINGS)}")
    if not methods and not (cond_methods and conditioning):
        raise ValueError("nothing to run: no sweep methods and no conditioned model")
    _check_methods([*methods, *(cond_methods if conditioning else ())])
    base = {"dataset": ds, "settings": asdict(s), "seed": seed}
    prefs = uniform_preferences(2, n_prefs).tolist()
    eval_prefs = uniform_preferences(2, n_eval_prefs).tolist()
    specs: list[dict[str, Any]] = [
        {**base, "kind": "conditioned", "method": m, "conditioning": c, "eval_prefs": eval_prefs}
        for c in conditioning
        for m in cond_methods
    ]  # longest first: the pool stays busy
    specs += [{**base, "kind": "sweep", "method": m, "pref": p} for m in methods for p in prefs]

    t0 = time.perf_counter()

    def describe(r: dict[str, Any]) -> str:
        sp = r["spec"]
        what = (
            f"sweep {sp['method']} pref {sp['pref'][0]:.3f}"
            if sp["kind"] == "sweep"
            else (f"conditioned ({sp['conditioning']}) {sp['method']}")
        )
        return f"{what}: {r['seconds']:.1f} s  ({time.perf_counter() - t0:.0f} s)"

    done = common.run_jobs(_job, specs, jobs=jobs, describe=describe, log=log)
    wall = time.perf_counter() - t0

    groups: dict[str, list[dict[str, Any]]] = {}
    for r in done:
        groups.setdefault(_label(r["spec"]), []).append(r)
    labels = list(dict.fromkeys(_label(sp) for sp in sorted(specs, key=lambda sp: sp["kind"] != "sweep")))
    fronts: list[Front] = []
    for label in labels:
        rs = groups[label]
        rs.sort(key=lambda r: r["prefs"][0][0])
        sp = rs[0]["spec"]
        fronts.append(
            Front(
                label=label,
                kind=sp["kind"],
                method=sp["method"],
                prefs=torch.tensor([p for r in rs for p in r["prefs"]], dtype=torch.float64),
                losses=torch.tensor([v for r in rs for v in r["losses"]], dtype=torch.float64),
                accs=torch.tensor([v for r in rs for v in r["accs"]], dtype=torch.float64),
                seconds=sum(r["seconds"] for r in rs),
            )
        )
    allpts = torch.cat([f.losses for f in fronts])
    if not bool(torch.isfinite(allpts).all()):
        raise FloatingPointError("a run ended with a non-finite test loss; lower the learning rate")
    ref = REF_FACTOR * allpts.max(dim=0).values
    hv = Hypervolume(ref)
    for f in fronts:
        f.hv = float(hv.do(f.losses))
    best = max((f.hv for f in fronts if f.kind == "sweep"), default=math.nan)
    for f in fronts:
        f.hv_vs_best_sweep = f.hv / best if best > 0 else math.nan
    return Result(ds, s, fronts, ref, wall, jobs, seed)


def _label(spec: dict[str, Any]) -> str:
    if spec["kind"] == "sweep":
        return f"sweep-{spec['method']}"
    return f"cond-{spec['conditioning']}-{spec['method']}"


def _check_methods(names: Sequence[str]) -> None:
    for name in dict.fromkeys(names):
        try:
            meth = make_preference_method(name, torch.tensor([0.5, 0.5], dtype=torch.float64))
        except KeyError as exc:
            raise ValueError(f"unknown method {name!r}: {exc.args[0] if exc.args else exc}") from exc
        except TypeError as exc:
            raise ValueError(f"method {name!r} does not take a preference ({exc})") from exc
        n = meth.needs
        if n.batches > 1 or n.closure or n.after_step:
            raise ValueError(f"method {name!r} needs several batches or a closure; not supported here")


# ------------------------------------------------------------------------------------------ outputs
_COLUMNS = ("front", "kind", "method", "points", "hv", "hv_vs_best_sweep", "mean_acc_left",
            "mean_acc_right", "best_acc_left", "best_acc_right", "seconds")  # fmt: skip


def _row(f: Front) -> dict[str, Any]:
    return {
        "front": f.label,
        "kind": f.kind,
        "method": f.method,
        "points": int(f.losses.shape[0]),
        "hv": f.hv,
        "hv_vs_best_sweep": f.hv_vs_best_sweep,
        "mean_acc_left": float(f.accs[:, 0].mean()),
        "mean_acc_right": float(f.accs[:, 1].mean()),
        "best_acc_left": float(f.accs[:, 0].max()),
        "best_acc_right": float(f.accs[:, 1].max()),
        "seconds": f.seconds,
    }


def _cell(v: object) -> str:
    """A table cell: floats with 4 decimals (1 from 100 on), NaN as empty, anything else as ``str``."""
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4f}" if abs(v) < 100 else f"{v:.1f}"
    return str(v)


def markdown(result: Result) -> str:
    s = result.settings
    lines = [
        f"Dataset {result.dataset}: {s.n_train} train / {s.n_test} test pairs, MultiLeNet, Adam lr {s.lr}, "
        f"batch {s.batch_size}; sweep {s.epochs} epochs per preference, conditioned {s.cond_epochs} epochs "
        f"(Dirichlet({s.alpha}) preference per batch); seed {result.seed}.",
        f"Hypervolume reference point (test losses) = {REF_FACTOR} × the worst task-k loss of all points "
        f"= ({result.ref[0]:.4f}, {result.ref[1]:.4f}). Wall time {result.wall_seconds:.0f} s with "
        f"{result.jobs} worker process(es); `seconds` = summed process time of a front's runs.",
        "",
        "| " + " | ".join(_COLUMNS) + " |",
        "|" + "---|" * len(_COLUMNS),
    ]
    for f in result.fronts:
        r = _row(f)
        lines.append("| " + " | ".join(_cell(r[c]) for c in _COLUMNS) + " |")
    lines += [
        "",
        "Points (test loss and accuracy per preference):",
        "",
        "| front | p_left | loss_left | loss_right | acc_left | acc_right |",
        "|---|---|---|---|---|---|",
    ]
    for f in result.fronts:
        for p, L, a in zip(f.prefs.tolist(), f.losses.tolist(), f.accs.tolist()):
            lines.append(f"| {f.label} | {p[0]:.3f} | {L[0]:.4f} | {L[1]:.4f} | {a[0]:.4f} | {a[1]:.4f} |")
    lines += [f"- {n}" for n in result.notes]
    return "\n".join(lines) + "\n"


def write_outputs(result: Result, out: str | Path, *, plot: bool = True) -> common.Outputs:
    """``results.md``, ``results.csv``, ``points.csv`` and (with ``plot``) ``front.png`` in ``out``."""
    files = common.Outputs(out)
    files.text("results.md", markdown(result))
    files.csv("results.csv", [[_row(f)[c] for c in _COLUMNS] for f in result.fronts], _COLUMNS)
    points = [
        [f.label, f.kind, f.method, *p, *L, *a]
        for f in result.fronts
        for p, L, a in zip(f.prefs.tolist(), f.losses.tolist(), f.accs.tolist())
    ]
    header = ["front", "kind", "method", "pref_left", "pref_right", "loss_left", "loss_right", "acc_left",
              "acc_right"]  # fmt: skip
    files.csv("points.csv", points, header)
    if plot and result.fronts:
        _plot(result, files.path("front.png"))
    return files


def _plot(result: Result, path: Path) -> Path:
    fig = common.figure("pareto front plot", figsize=(12, 5))
    allpts = torch.cat([f.losses for f in result.fronts])
    lo = allpts.min(dim=0).values
    markers = {"sweep": "o", "conditioned": "s"}
    for i in range(2):  # full view, then a zoom on the knee (up to 1.5 x the best loss of each task)
        ax = fig.add_subplot(1, 2, i + 1)
        for f in result.fronts:
            L = f.losses
            ls = "-" if f.kind == "conditioned" else "--"
            ax.plot(L[:, 0].tolist(), L[:, 1].tolist(), ls=ls, marker=markers[f.kind], ms=5, lw=1,
                    label=f"{f.label} (HV {f.hv:.3f})")  # fmt: skip
        ax.set_xlabel(f"task 1 ({_TASKS[0]}) test loss")
        ax.set_ylabel(f"task 2 ({_TASKS[1]}) test loss")
        if i == 0:
            ax.set_title(
                f"{result.dataset}: test-loss fronts (HV ref {result.ref[0]:.2f}, {result.ref[1]:.2f})"
            )
            ax.legend(fontsize=7)
        else:
            span = 0.5 * lo
            ax.set_xlim(float(lo[0] - 0.05 * span[0]), float(lo[0] + span[0]))
            ax.set_ylim(float(lo[1] - 0.05 * span[1]), float(lo[1] + span[1]))
            ax.set_title("zoom: up to 1.5 × the best loss of each task")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


# ------------------------------------------------------------------------------------------ command line
def build_parser() -> argparse.ArgumentParser:
    p = common.parser(
        NAME,
        __doc__,
        methods=f"preference methods of the sweep (default: {','.join(DEFAULT_METHODS)})",
        jobs=True,
        quick="seconds: a few hundred pairs, 1 epoch per preference",
    )
    p.add_argument("--dataset", default=DEFAULT_DATASET, help="multi_fashion (default), multi_mnist, ...")
    p.add_argument("--prefs", type=int, default=5, help="preferences of the sweep (default 5)")
    p.add_argument(
        "--cond-methods",
        type=_names,
        default=list(DEFAULT_COND_METHODS),
        help=f"scalarisations of the conditioned models (default: {','.join(DEFAULT_COND_METHODS)})",
    )
    p.add_argument(
        "--conditioning",
        type=_names,
        default=list(DEFAULT_CONDITIONING),
        help="conditioned models: film, input (COSMOS channels); '' for none (default: film,input)",
    )
    p.add_argument("--eval-prefs", type=int, default=11, help="preferences a conditioned model is scored at")
    p.add_argument("--epochs", type=int, default=None, help="override the sweep epochs")
    p.add_argument("--cond-epochs", type=int, default=None, help="override the conditioned epochs")
    p.add_argument("--n-train", type=int, default=None, help="override the number of training pairs")
    p.add_argument("--seed", type=int, default=0, help="seed of the initialisations and batches")
    return p


def _names(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _main(args: argparse.Namespace) -> int:
    s = SETTINGS["quick" if args.quick else "default"]
    changes = {k: v for k, v in (("epochs", args.epochs), ("cond_epochs", args.cond_epochs),
                                 ("n_train", args.n_train)) if v is not None}  # fmt: skip
    result = run(
        args.dataset,
        args.methods or DEFAULT_METHODS,
        cond_methods=args.cond_methods,
        conditioning=args.conditioning,
        settings=replace(s, **changes),
        n_prefs=args.prefs,
        n_eval_prefs=args.eval_prefs,
        seed=args.seed,
        jobs=args.jobs,
        log=sys.stderr,
    )
    return write_outputs(result, args.out, plot=not args.no_plot).done(NAME, markdown(result))


def main(argv: Sequence[str] | None = None) -> int:
    """``python experiments/pareto-data/run.py [options]``; returns the exit status."""
    return common.main(NAME, build_parser, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
