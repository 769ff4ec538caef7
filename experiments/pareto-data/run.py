r"""``molearn pareto --dataset``: a real-data Pareto front on Multi-Fashion (or Multi-MNIST).

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
``quick``: a few hundred pairs, seconds of CPU. Pareto HyperNetworks (Navon et al., ICLR 2021) and COSMOS
train on all 120k pairs for 100+ epochs; these short schedules give fronts of under-trained models,
consistently for all methods.
Outputs in ``--out``: ``front.png``, ``results.md``, ``results.csv``, ``points.csv``.
"""

from __future__ import annotations

import argparse
import csv
import math
import multiprocessing as mp
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._stats import fmt_cell

__all__ = [
    "DEFAULT_COND_METHODS",
    "DEFAULT_METHODS",
    "SETTINGS",
    "Front",
    "Result",
    "Settings",
    "add_arguments",
    "markdown",
    "run",
    "run_cli",
    "write_outputs",
]

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
    from ..datasets import MULTI_DATASETS

    key = name.lower().replace("-", "_")
    if key not in MULTI_DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(sorted(MULTI_DATASETS))}")
    return key


def _data(dataset: str, split: str, n: int) -> tuple[Tensor, Tensor]:
    from ..datasets import MultiDataset

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
    from ..models import MultiLeNet
    from ..pareto._conditioned import PreferenceAsInput, PreferenceConditioned

    if conditioning == "input":
        return PreferenceAsInput(MultiLeNet(tasks=2, size=size, channels=3), n_obj=2)
    lenet = MultiLeNet(tasks=2, size=size)
    trunk = nn.Sequential(
        lenet.conv1, nn.ReLU(), nn.MaxPool2d(2), lenet.conv2, nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), lenet.fc, nn.ReLU(),
    )  # fmt: skip  # MultiLeNet.trunk, as modules
    return PreferenceConditioned(trunk, list(lenet.heads), n_obj=2, channels=lenet.fc.out_features)


def _job(spec: dict[str, Any]) -> dict[str, Any]:
    """One training run (a picklable dict in, a plain dict out): a sweep model at one preference, or a
    conditioned model evaluated at many."""
    from .. import Balancer
    from ..models import MultiLeNet
    from ..pareto._conditioned import train_conditioned
    from ..pareto._sweep import make_preference_method

    if spec["threads"] > 0:
        torch.set_num_threads(spec["threads"])
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
    say: Callable[[str], None] | None = None,
) -> Result:
    """Train the sweep (``methods`` × ``n_prefs`` preferences) and the conditioned models
    (``conditioning`` × ``cond_methods``), evaluate them on the test pairs, score the fronts.

    ``jobs``: worker processes (``spawn``, one torch thread each); 0 runs everything in this process.
    """
    from ..pareto import Hypervolume
    from ..pareto._sweep import uniform_preferences

    ds = _check_dataset(dataset)
    if isinstance(settings, str) and settings not in SETTINGS:
        raise ValueError(f"unknown settings {settings!r}; valid: {', '.join(SETTINGS)}")
    s = SETTINGS[settings] if isinstance(settings, str) else settings
    if n_prefs < 2 or n_eval_prefs < 2:
        raise ValueError(f"need at least 2 preferences, got n_prefs={n_prefs}, n_eval_prefs={n_eval_prefs}")
    if jobs < 0:
        raise ValueError(f"jobs must be >= 0, got {jobs}")
    for c in conditioning:
        if c not in CONDITIONINGS:
            raise ValueError(f"unknown conditioning {c!r}; valid: {', '.join(CONDITIONINGS)}")
    if not methods and not (cond_methods and conditioning):
        raise ValueError("nothing to run: no sweep methods and no conditioned model")
    _check_methods([*methods, *(cond_methods if conditioning else ())])
    threads = 1 if jobs > 0 else max(1, torch.get_num_threads())
    base = {"dataset": ds, "settings": asdict(s), "seed": seed, "threads": threads if jobs > 0 else 0}
    prefs = uniform_preferences(2, n_prefs).tolist()
    eval_prefs = uniform_preferences(2, n_eval_prefs).tolist()
    specs: list[dict[str, Any]] = [
        {**base, "kind": "conditioned", "method": m, "conditioning": c, "eval_prefs": eval_prefs}
        for c in conditioning
        for m in cond_methods
    ]  # longest first: the pool stays busy
    specs += [{**base, "kind": "sweep", "method": m, "pref": p} for m in methods for p in prefs]

    say = say or (lambda _s: None)
    t0 = time.perf_counter()
    done: list[dict[str, Any]] = []

    def report(r: dict[str, Any]) -> None:
        done.append(r)
        sp = r["spec"]
        what = (
            f"sweep {sp['method']} pref {sp['pref'][0]:.3f}"
            if sp["kind"] == "sweep"
            else (f"conditioned ({sp['conditioning']}) {sp['method']}")
        )
        say(f"[{len(done)}/{len(specs)}] {what}: {r['seconds']:.1f} s  ({time.perf_counter() - t0:.0f} s)")

    if jobs == 0:
        for sp in specs:
            report(_job(sp))
    else:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(_job, sp) for sp in specs]
            for fut in as_completed(futures):
                report(fut.result())
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
    from ..pareto._sweep import make_preference_method

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
        lines.append("| " + " | ".join(fmt_cell(r[c]) for c in _COLUMNS) + " |")
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


def write_outputs(result: Result, out: str | Path, *, plot: bool = True) -> list[Path]:
    """``results.md``, ``results.csv``, ``points.csv`` and (with ``plot``) ``front.png`` in ``out``."""
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    paths = [d / "results.md", d / "results.csv", d / "points.csv"]
    paths[0].write_text(markdown(result))
    with open(paths[1], "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(_COLUMNS)
        for f in result.fronts:
            r = _row(f)
            w.writerow([r[c] for c in _COLUMNS])
    with open(paths[2], "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["front", "kind", "method", "pref_left", "pref_right", "loss_left", "loss_right",
                    "acc_left", "acc_right"])  # fmt: skip
        for f in result.fronts:
            for p, L, a in zip(f.prefs.tolist(), f.losses.tolist(), f.accs.tolist()):
                w.writerow([f.label, f.kind, f.method, *p, *L, *a])
    if plot and result.fronts:
        paths.append(_plot(result, d / "front.png"))
    return paths


def _plot(result: Result, path: Path) -> Path:
    from .._plot import figure_class

    Figure = figure_class("pareto front plot")
    fig = Figure(figsize=(12, 5))
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


# ------------------------------------------------------------------------------------------ CLI
def _names(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def add_dataset_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The options only the real-data front has (``molearn pareto --dataset`` adds them as a group)."""
    parser.add_argument(
        "--cond-methods",
        default=",".join(DEFAULT_COND_METHODS),
        help="scalarisations of the conditioned model",
    )
    parser.add_argument(
        "--conditioning",
        default=",".join(DEFAULT_CONDITIONING),
        help="conditioned models: film, input (COSMOS channels); '' for none",
    )
    parser.add_argument(
        "--eval-prefs", type=int, default=11, help="preferences the conditioned model is scored at"
    )
    parser.add_argument("--epochs", type=int, default=None, help="override the sweep epochs")
    parser.add_argument("--cond-epochs", type=int, default=None, help="override the conditioned epochs")
    parser.add_argument("--n-train", type=int, default=None, help="override the number of training pairs")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset", default=DEFAULT_DATASET, help="multi_fashion (default), multi_mnist, ..."
    )
    parser.add_argument(
        "--methods", default=",".join(DEFAULT_METHODS), help="sweep methods (comma-separated)"
    )
    parser.add_argument("--prefs", type=int, default=5, help="preferences of the sweep (default 5)")
    add_dataset_arguments(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2; 0: in-process)")
    parser.add_argument("--quick", action="store_true", help="seconds-long run on a few hundred pairs")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG (no matplotlib needed)")
    parser.add_argument("--out", default="results/pareto-data", help="output folder")


def run_cli(args: argparse.Namespace) -> int:
    import dataclasses

    s = SETTINGS["quick" if args.quick else "default"]
    changes = {k: v for k, v in (("epochs", args.epochs), ("cond_epochs", args.cond_epochs),
                                 ("n_train", args.n_train)) if v is not None}  # fmt: skip
    s = dataclasses.replace(s, **changes)
    try:
        result = run(
            args.dataset,
            _names(args.methods),
            cond_methods=_names(args.cond_methods),
            conditioning=_names(args.conditioning),
            settings=s,
            n_prefs=args.prefs,
            n_eval_prefs=args.eval_prefs,
            seed=args.seed,
            jobs=args.jobs,
            say=lambda m: print(m, file=sys.stderr, flush=True),
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_outputs(result, args.out, plot=not args.no_plot)
    print(markdown(result))
    return 0
