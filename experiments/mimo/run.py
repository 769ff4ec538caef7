"""Modality imbalance in late-fusion training: MIMO against its baselines.

Every method × seed trains the same late-fusion model (one encoder per modality, uni-modal heads, a
fusion head on the concatenated features) with SGD + momentum and reports the test accuracy of the fused
head and of each uni-modal head (mean ± 95 % t-interval over seeds), the median time per step relative
to joint training, and the imbalance: the accuracy of the weak modality's head under each method minus
its accuracy when its encoder is trained alone (``unimodal``), and MIMO minus every other method paired by
seed (:func:`paired`, with a one-line :func:`verdict`); ``--checkpoint`` makes a long run resumable.
Data: the audio-visual Fashion set (:func:`molearn.datasets.load_av_fashion`: Fashion-MNIST images +
synthesised spoken class names, see ``av-fashion.md``) or the synthetic two-Gaussian toy (``--data toy``;
``--quick`` always uses it).

Methods: ``fused`` (fused loss only; uni-modal heads are probes on detached features), ``joint`` (sum of
the fused and uni-modal losses, molearn ``EW``), ``unimodal`` (each encoder alone), ``ogm_ge``,
``gblend``, ``mgda``, ``cagrad``, ``fairgrad``, ``nashmtl`` (molearn methods on the objective vector
``[L_fused, L_1, L_2]``) and ``mimo`` (molearn's reconstruction, see :class:`molearn.multimodal.MIMO`).

:func:`imbalance_probe` measures the imbalance of the data set itself (``av-fashion.md``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

if not __package__:  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from experiments import common
from molearn.compare import mean_ci
from molearn.datasets import AVData, load_av_fashion
from molearn.methods import get
from molearn.multimodal import (
    MIMO,
    OGMGE,
    BalancerStrategy,
    FusedOnly,
    GBlend,
    LateFusion,
    Strategy,
    Unimodal,
    objectives,
    two_gaussian_modalities,
)

NAME = "mimo"

Data = dict[str, Any]  # {"train": (inputs, labels), "heldout": ..., "test": ..., "name": str}


def _strategies(epochs: int, ogm_alpha: float) -> dict[str, Callable[[], Strategy]]:
    return {
        "fused": FusedOnly,
        "joint": lambda: BalancerStrategy(get("ew")),
        "unimodal": Unimodal,
        "ogm_ge": lambda: OGMGE(alpha=ogm_alpha, epochs=epochs),
        "gblend": lambda: GBlend(interval=1),
        "mgda": lambda: BalancerStrategy(get("mgda")),
        "cagrad": lambda: BalancerStrategy(get("cagrad")),
        "fairgrad": lambda: BalancerStrategy(get("fairgrad")),
        "nashmtl": lambda: BalancerStrategy(get("nashmtl")),
        "mimo": lambda: BalancerStrategy(MIMO()),
    }


METHODS = tuple(_strategies(1, 0.1))


# ------------------------------------------------------------------------------------------------ data
def _split(inputs: dict[str, Tensor], labels: Tensor, idx: Tensor) -> tuple[dict[str, Tensor], Tensor]:
    return {m: x[idx] for m, x in inputs.items()}, labels[idx]


def load_data(name: str, *, n_per_class: int, seed: int = 0, heldout: float = 0.15) -> Data:
    """Train / held-out (carved from train, for G-Blending) / test splits as ``(inputs, labels)``."""
    if name == "toy":
        n_train = 10 * n_per_class
        inputs, labels = two_gaussian_modalities(
            n_train + max(200, n_train // 2), seed=seed, num_classes=10, dims=(16, 16), separation=(3.0, 1.5)
        )
        tr = torch.arange(n_train)
        te = torch.arange(n_train, labels.shape[0])
        train, test = _split(inputs, labels, tr), _split(inputs, labels, te)
    elif name == "av_fashion":
        tr_d = load_av_fashion("train", n_per_class=n_per_class, seed=seed)
        te_d = load_av_fashion("test", n_per_class=max(1, n_per_class // 2), seed=seed)
        train = ({"image": tr_d.image.float(), "audio": tr_d.audio.float()}, tr_d.label.long())
        test = ({"image": te_d.image.float(), "audio": te_d.audio.float()}, te_d.label.long())
    else:
        raise ValueError(f"unknown data set {name!r} (choose toy or av_fashion)")
    n = train[1].shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 12345))
    n_val = max(1, round(heldout * n))
    return {
        "name": name,
        "train": _split(*train, perm[n_val:]),
        "heldout": _split(*train, perm[:n_val]),
        "test": test,
        "num_classes": int(torch.cat([train[1], test[1]]).max()) + 1,
    }


def _build_model(data: Data, seed: int) -> LateFusion:
    torch.manual_seed(seed)
    inputs = data["train"][0]
    enc: dict[str, nn.Module] = {}
    dims: dict[str, int] = {}
    for m, x in inputs.items():
        if x.dim() == 2:  # vectors (toy)
            enc[m] = nn.Sequential(nn.Linear(x.shape[1], 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU())
        elif x.dim() == 3:  # (n_mels, T) spectrogram: 1-D convolutions over time (BatchNorm), max-pooled
            enc[m] = nn.Sequential(
                nn.Conv1d(x.shape[1], 64, 5, padding=2),
                nn.BatchNorm1d(64),
                nn.ReLU(),
                nn.Conv1d(64, 64, 5, padding=2),
                nn.BatchNorm1d(64),
                nn.ReLU(),
                nn.AdaptiveMaxPool1d(1),
                nn.Flatten(),
                nn.Linear(64, 32),
                nn.ReLU(),
            )
        elif x.dim() == 4:  # (1, 28, 28) image
            h, w = x.shape[2], x.shape[3]
            enc[m] = nn.Sequential(
                nn.Conv2d(x.shape[1], 16, 5, stride=2, padding=2),
                nn.ReLU(),
                nn.Conv2d(16, 32, 3, stride=2, padding=1),
                nn.ReLU(),
                nn.Flatten(),
                nn.Linear(32 * ((h + 3) // 4) * ((w + 3) // 4), 32),
                nn.ReLU(),
            )
        else:
            raise ValueError(f"modality {m!r}: unsupported input shape {tuple(x.shape)}")
        dims[m] = 32
    return LateFusion(enc, dims, data["num_classes"])


# ------------------------------------------------------------------------------------------- one run
@torch.no_grad()
def _evaluate(
    model: LateFusion, split: tuple[dict[str, Tensor], Tensor], bs: int = 512
) -> tuple[Tensor, dict]:
    inputs, labels = split
    model.eval()
    n = labels.shape[0]
    tot = torch.zeros(1 + len(model.modalities))
    correct = {k: 0 for k in ["fused", *model.modalities]}
    for s in range(0, n, bs):
        x = {m: v[s : s + bs] for m, v in inputs.items()}
        y = labels[s : s + bs]
        losses, out = objectives(model, x, y)
        tot += losses * y.shape[0]
        correct["fused"] += int((out.fused.argmax(1) == y).sum())
        for m in model.modalities:
            correct[m] += int((out.unimodal[m].argmax(1) == y).sum())
    model.train()
    return tot / n, {k: v / n for k, v in correct.items()}


_DATA: Data | None = None


def _init_worker(data: Data, threads: int) -> None:
    global _DATA
    _DATA = data
    torch.set_num_threads(threads)


def _one_run(task: tuple[str, int, dict[str, Any]]) -> dict[str, Any]:
    method, seed, cfg = task
    assert _DATA is not None
    data = _DATA
    model = _build_model(data, seed)
    strat = _strategies(cfg["epochs"], cfg["ogm_alpha"])[method]()
    opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=0.9, weight_decay=1e-4)
    inputs, labels = data["train"]
    n = labels.shape[0]
    g = torch.Generator().manual_seed(seed)
    step_times: list[float] = []
    probe_idx = torch.arange(min(n, 1024))
    for epoch in range(cfg["epochs"]):
        perm = torch.randperm(n, generator=g)
        for s in range(0, n - cfg["batch_size"] + 1, cfg["batch_size"]):
            idx = perm[s : s + cfg["batch_size"]]
            x, y = _split(inputs, labels, idx)
            t0 = time.perf_counter()
            losses = strat.step(model, x, y, opt)
            step_times.append(time.perf_counter() - t0)
            if not bool(torch.isfinite(losses).all()):
                raise FloatingPointError(f"{method} seed {seed}: non-finite losses {losses.tolist()}")
        tr = va = None
        if strat.needs_epoch_losses:
            tr, _ = _evaluate(model, _split(inputs, labels, probe_idx))
            va, _ = _evaluate(model, data["heldout"])
        strat.end_epoch(epoch, tr, va)
    _, acc = _evaluate(model, data["test"])
    step_times.sort()
    row = {
        "method": method,
        "seed": seed,
        **{f"acc_{k}": v for k, v in acc.items()},
        "step_ms": 1e3 * step_times[len(step_times) // 2],
        "steps": len(step_times),
    }
    if cfg.get("checkpoint"):  # one JSON line per finished run (O_APPEND: safe from several workers)
        line = json.dumps({**row, "config": _fingerprint(cfg)}) + "\n"
        with open(cfg["checkpoint"], "a") as fh:
            fh.write(line)
    return row


_CONFIG_KEYS = ("data", "n_per_class", "epochs", "batch_size", "lr", "ogm_alpha")


def _fingerprint(cfg: dict[str, Any]) -> dict[str, Any]:
    """The settings a finished run depends on (a checkpointed run is reused only when they all match)."""
    return {k: cfg[k] for k in _CONFIG_KEYS}


def load_checkpoint(path: str | os.PathLike[str], cfg: dict[str, Any]) -> dict[tuple[str, int], dict]:
    """Finished runs in the JSON-lines ``path`` whose settings match ``cfg``, keyed by (method, seed);
    a missing file is empty, a truncated last line (a run killed while writing) is skipped."""
    done: dict[tuple[str, int], dict] = {}
    if not Path(path).exists():
        return done
    want = _fingerprint(cfg)
    for text in Path(path).read_text().splitlines():
        try:
            row = json.loads(text)
        except json.JSONDecodeError:
            continue
        if row.pop("config", None) == want:
            done[(row["method"], int(row["seed"]))] = row
    return done


# ------------------------------------------------------------------------------------------ experiment
@dataclass
class MimoResult:
    runs: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    modalities: list[str]
    weak: str
    config: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0
    paired: list[dict[str, Any]] = field(default_factory=list)


def run(
    *,
    data: str = "av_fashion",
    methods: tuple[str, ...] = METHODS,
    seeds: int | Sequence[int] = 5,
    epochs: int = 5,
    batch_size: int = 64,
    lr: float = 0.05,
    n_per_class: int = 400,
    ogm_alpha: float = 0.8,
    jobs: int = 1,
    threads: int = 1,
    checkpoint: str | os.PathLike[str] | None = None,
    log: Any = None,
) -> MimoResult:
    """Train every method × seed and summarise (see the module docstring).

    With ``checkpoint`` (a JSON-lines file), every finished run is appended to it, and runs already in it
    with the same settings are reused instead of trained again, so a killed run resumes where it stopped.
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; known: {', '.join(METHODS)}")
    if "joint" not in methods or "unimodal" not in methods:
        raise ValueError(
            "the methods must include 'joint' (time reference) and 'unimodal' (imbalance reference)"
        )
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seed_list or epochs < 1 or jobs < 1:
        raise ValueError("seeds, epochs and jobs must be >= 1")
    t0 = time.perf_counter()
    dataset = load_data(data, n_per_class=n_per_class)
    cfg = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "ogm_alpha": ogm_alpha}
    full = {**cfg, "data": data, "n_per_class": n_per_class, "checkpoint": checkpoint and str(checkpoint)}
    tasks = [(m, s, full) for s in seed_list for m in methods]
    done = load_checkpoint(checkpoint, full) if checkpoint else {}
    todo = [t for t in tasks if (t[0], t[1]) not in done]
    if done and log is not None:
        print(f"{NAME}: {len(tasks) - len(todo)} of {len(tasks)} runs reused from {checkpoint}", file=log)
    fresh = common.run_jobs(
        _one_run,
        todo,
        jobs=jobs,
        describe=lambda r: f"{r['method']} seed {r['seed']}: fused {r['acc_fused']:.3f}",
        log=log,
        initializer=_init_worker,
        initargs=(dataset, threads),
    )
    by_key = {**done, **{(r["method"], r["seed"]): r for r in fresh}}
    runs = [by_key[(m, s)] for m, s, _ in tasks]
    modalities = list(dataset["train"][0])
    weak, summary = summarize(runs, methods, modalities)
    config = {
        "data": data,
        "seeds": len(seed_list),
        **cfg,
        "n_per_class": n_per_class,
        "jobs": jobs,
        "threads": threads,
        "n_train": int(dataset["train"][1].shape[0]),
        "n_heldout": int(dataset["heldout"][1].shape[0]),
        "n_test": int(dataset["test"][1].shape[0]),
        "reused": len(tasks) - len(todo),
    }
    result = MimoResult(runs, summary, modalities, weak, config, time.perf_counter() - t0)
    result.paired = paired(runs, methods, modalities, weak) if "mimo" in methods else []
    return result


def summarize(
    runs: list[dict[str, Any]], methods: tuple[str, ...], modalities: list[str]
) -> tuple[str, list[dict[str, Any]]]:
    """The weak modality (lower mean accuracy trained alone) and one summary row per method.

    ``weak_gap`` is paired by seed: ``acc_weak(method, s) − acc_weak(unimodal, s)`` (same seed = same
    initialisation and batch order), then mean ± 95 % t-interval over the seeds.
    """
    alone = {m: mean_ci(r[f"acc_{m}"] for r in runs if r["method"] == "unimodal")[0] for m in modalities}
    weak = min(modalities, key=lambda m: alone[m])
    alone_by_seed = {r["seed"]: r[f"acc_{weak}"] for r in runs if r["method"] == "unimodal"}
    joint_ms = mean_ci(r["step_ms"] for r in runs if r["method"] == "joint")[0]
    summary = []
    for meth in methods:
        rs = [r for r in runs if r["method"] == meth]
        row: dict[str, Any] = {"method": meth, "seeds": len(rs)}
        for k in ["fused", *modalities]:
            row[f"acc_{k}"], row[f"ci_{k}"], _ = mean_ci(r[f"acc_{k}"] for r in rs)
        gaps = [r[f"acc_{weak}"] - alone_by_seed[r["seed"]] for r in rs if r["seed"] in alone_by_seed]
        row["weak_gap"], row["weak_gap_ci"], _ = mean_ci(gaps)
        row["step_ms"] = mean_ci(r["step_ms"] for r in rs)[0]
        row["step_vs_joint"] = row["step_ms"] / joint_ms if joint_ms > 0 else math.nan
        summary.append(row)
    return weak, summary


def paired(
    runs: list[dict[str, Any]],
    methods: tuple[str, ...],
    modalities: list[str],
    weak: str,
    ref: str = "mimo",
) -> list[dict[str, Any]]:
    """``ref`` minus every other method, paired by seed (same initialisation and batch order), on the fused
    accuracy and the weak modality's accuracy: mean ± 95 % t-interval over the seeds both ran.

    ``sep_fused`` / ``sep_weak`` is ``+1`` when the interval lies above 0 (``ref`` better), ``-1`` below,
    ``0`` when it contains 0 (not separated), NaN for a single seed.
    """
    by = {(r["method"], r["seed"]): r for r in runs}
    ref_seeds = sorted(s for m, s in by if m == ref)
    rows = []
    for meth in methods:
        if meth == ref:
            continue
        seeds = [s for s in ref_seeds if (meth, s) in by]
        row: dict[str, Any] = {"ref": ref, "method": meth, "seeds": len(seeds)}
        for key, col in (("fused", "acc_fused"), ("weak", f"acc_{weak}")):
            diffs = [by[(ref, s)][col] - by[(meth, s)][col] for s in seeds]
            mean, ci, _ = mean_ci(diffs)
            row[f"d_{key}"], row[f"d_{key}_ci"] = mean, ci
            row[f"sep_{key}"] = math.nan if math.isnan(ci) else (mean - ci > 0) - (mean + ci < 0)
        rows.append(row)
    return rows


CLAIM = (
    "MIMO improves performance over existing balanced multi-modal and multi-objective baselines, with up to "
    "~20x less subroutine computation time (Fernando et al., arXiv 2511.06686, abstract)."
)


def verdict(result: MimoResult) -> str:
    """A one-line verdict from the paired intervals, for molearn's *reconstruction* at the run's settings.

    ``supported``: MIMO separated above every baseline (all methods but ``unimodal``) on fused accuracy
    and below none on either quantity; ``contradicted``: separated below at least one baseline on fused
    accuracy; otherwise ``not resolved at this scale``. The separated comparisons are listed.
    """
    rows = [r for r in result.paired if r["method"] != "unimodal"]
    if not rows:
        return "no paired comparison (run mimo with at least one baseline)"

    def which(key: str, sign: int) -> list[str]:
        return [r["method"] for r in rows if r[f"sep_{key}"] == sign]

    if len(which("fused", 1)) == len(rows) and not which("fused", -1) + which("weak", -1):
        word = "supported"
    elif which("fused", -1):
        word = "contradicted"
    else:
        word = "not resolved at this scale"
    parts = []
    for key, label in (("fused", "fused accuracy"), ("weak", f"{result.weak} (weak) head")):
        up, down = which(key, 1), which(key, -1)
        parts.append(f"{label}: above {', '.join(up) or 'none'}; below {', '.join(down) or 'none'}")
    return (
        f"{word} (for molearn's reconstruction at these settings; paired 95 % intervals that exclude 0, "
        f"MIMO vs {len(rows)} baselines: " + "; ".join(parts) + ")"
    )


def _sep(v: float) -> str:
    return "–" if math.isnan(v) else {1: "yes, above 0", -1: "yes, below 0", 0: "no"}[int(v)]


def _pm(mean: float, ci: float) -> str:
    if math.isnan(mean):
        return "–"
    return f"{100 * mean:.1f} ± {100 * ci:.1f}" if not math.isnan(ci) else f"{100 * mean:.1f}"


def markdown(result: MimoResult) -> str:
    mods = result.modalities
    head = ["method", "fused acc %"] + [f"{m} head acc %" for m in mods]
    head += [f"{result.weak} (weak) − alone, pts (paired)", "step ms", "× joint"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in result.summary:
        cells = [r["method"], _pm(r["acc_fused"], r["ci_fused"])]
        cells += [_pm(r[f"acc_{m}"], r[f"ci_{m}"]) for m in mods]
        cells += [_pm(r["weak_gap"], r["weak_gap_ci"]), f"{r['step_ms']:.2f}", f"{r['step_vs_joint']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    c = result.config
    note = (
        f"\nData `{c['data']}`: {c['n_train']} train / {c['n_heldout']} held-out / {c['n_test']} test; "
        f"{c['seeds']} seeds, {c['epochs']} epochs, batch {c['batch_size']}, SGD lr {c['lr']} momentum 0.9; "
        f"mean ± 95 % t-interval over seeds. Weak modality (lower accuracy trained alone): `{result.weak}`. "
        f"Wall time {result.wall_s:.0f} s"
        + (
            f" ({c['reused']} of {len(result.runs)} runs reused from the checkpoint)."
            if c.get("reused")
            else "."
        )
    )
    text = "\n".join(lines) + "\n" + note + "\n"
    if result.paired:
        ref = result.paired[0]["ref"]
        text += (
            f"\nPaired by seed, `{ref}` minus each method (percentage points, mean ± 95 % t-interval; "
            "separated = the interval excludes 0):\n\n"
            f"| {ref} − method | seeds | Δ fused acc | separated "
            f"| Δ {result.weak} (weak) head acc | separated |\n"
            "|---|---|---|---|---|---|\n"
        )
        for r in result.paired:
            text += (
                f"| {r['method']} | {r['seeds']} | {_pm(r['d_fused'], r['d_fused_ci'])} | "
                f"{_sep(r['sep_fused'])} | {_pm(r['d_weak'], r['d_weak_ci'])} | {_sep(r['sep_weak'])} |\n"
            )
    return text


def write_outputs(result: MimoResult, out: str | os.PathLike[str], *, plot: bool = True) -> common.Outputs:
    """``results.csv`` (one row per run), ``summary.csv``, ``results.md`` and (with ``plot``)
    ``accuracy.png`` in ``out``."""
    files = common.Outputs(out)
    files.csv("results.csv", result.runs)
    files.csv("summary.csv", result.summary)
    if result.paired:
        files.csv("paired.csv", result.paired)
    title = "# experiments/mimo: modality imbalance, MIMO and baselines"
    head = f"**Claim:** {CLAIM}\n\n"
    if result.paired:
        head += f"**Verdict:** {verdict(result)}.\n\n"
    files.text("results.md", f"{title}\n\n{head}{markdown(result)}")
    if plot:
        plot_accuracy(result, files.path("accuracy.png"))
    return files


def plot_accuracy(result: MimoResult, path: str | os.PathLike[str]) -> None:
    """Test accuracy of the fused and uni-modal heads per method (mean ± 95% CI), cost per step."""
    fig = common.figure("mimo accuracy plot", figsize=(11, 4))
    names = [r["method"] for r in result.summary]
    keys = ["fused", *result.modalities]
    ax = fig.add_subplot(1, 2, 1)
    width = 0.8 / len(keys)
    for j, k in enumerate(keys):
        ys = [100 * r[f"acc_{k}"] for r in result.summary]
        es = [0 if math.isnan(r[f"ci_{k}"]) else 100 * r[f"ci_{k}"] for r in result.summary]
        ax.bar([i + j * width for i in range(len(names))], ys, width, yerr=es, label=k, capsize=2)
    ax.set_xticks(
        [i + width * (len(keys) - 1) / 2 for i in range(len(names))], names, rotation=45, ha="right"
    )
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=8)
    ax.set_title("accuracy (mean ± 95% CI)")
    ax2 = fig.add_subplot(1, 2, 2)
    ax2.bar(names, [r["step_vs_joint"] for r in result.summary], color="gray")
    ax2.axhline(1.0, color="k", lw=0.8)
    ax2.set_ylabel("time per step / joint")
    ax2.tick_params(axis="x", rotation=45)
    ax2.set_title("cost per step")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# ------------------------------------------------------------------------------------ imbalance probe
def _encoder(modality: str, dim: int) -> nn.Module:
    flat = 32 * 7 * 7 if modality == "image" else 32 * 10 * 16
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(flat, dim),
        nn.ReLU(),
    )


def imbalance_probe(
    train: AVData,
    test: AVData,
    *,
    epochs: int = 5,
    seed: int = 0,
    dim: int = 64,
    lr: float = 1e-3,
    batch_size: int = 64,
) -> list[dict[str, float]]:
    """Measure modality imbalance with a late-fusion model (concatenated features, one linear fusion head).

    Trains three models with Adam on cross-entropy: image alone, audio alone, and joint (the fused logits
    only). After every epoch it records test accuracy of each uni-modal model, of the fused model, and of
    each modality's share of the joint model's logits (``W_m h_m + b / 2``, the uni-modal measure of OGM-GE,
    Peng et al., CVPR 2022). Returns one dict per epoch.
    """
    torch.manual_seed(seed)
    n_cls = len(train.class_names)
    enc = {m: _encoder(m, dim) for m in ("image", "audio")}
    heads = {m: nn.Linear(dim, n_cls) for m in ("image", "audio")}
    j_enc = {m: _encoder(m, dim) for m in ("image", "audio")}
    fusion = nn.Linear(2 * dim, n_cls)

    def x_of(d: AVData, m: str, sl: Any) -> Tensor:
        return d.image[sl] if m == "image" else d.audio[sl].unsqueeze(1)

    uni_opt = {m: torch.optim.Adam([*enc[m].parameters(), *heads[m].parameters()], lr=lr) for m in enc}
    j_params = [*j_enc["image"].parameters(), *j_enc["audio"].parameters(), *fusion.parameters()]
    j_opt = torch.optim.Adam(j_params, lr=lr)
    g = torch.Generator().manual_seed(seed)
    rows = []
    ce = nn.functional.cross_entropy
    for epoch in range(1, epochs + 1):
        perm = torch.randperm(len(train), generator=g)
        for s in range(0, len(train), batch_size):
            b = perm[s : s + batch_size]
            y = train.label[b]
            for m in enc:
                uni_opt[m].zero_grad()
                ce(heads[m](enc[m](x_of(train, m, b))), y).backward()
                uni_opt[m].step()
            j_opt.zero_grad()
            h = torch.cat([j_enc["image"](train.image[b]), j_enc["audio"](train.audio[b].unsqueeze(1))], 1)
            ce(fusion(h), y).backward()
            j_opt.step()
        with torch.no_grad():
            row: dict[str, float] = {"epoch": float(epoch)}
            for m in enc:
                row[f"{m}_alone"] = _acc(heads[m](enc[m](x_of(test, m, slice(None)))), test.label)
            hv, ha = j_enc["image"](test.image), j_enc["audio"](test.audio.unsqueeze(1))
            w, bias = fusion.weight, fusion.bias
            row["joint_fused"] = _acc(fusion(torch.cat([hv, ha], 1)), test.label)
            row["joint_image"] = _acc(hv @ w[:, :dim].T + bias / 2, test.label)
            row["joint_audio"] = _acc(ha @ w[:, dim:].T + bias / 2, test.label)
        rows.append(row)
    return rows


def _acc(logits: Tensor, y: Tensor) -> float:
    return float((logits.argmax(1) == y).float().mean())


# ------------------------------------------------------------------------------------------ command line
def build_parser() -> argparse.ArgumentParser:
    p = common.parser(
        NAME,
        __doc__,
        methods=f"methods of {','.join(METHODS)}; joint and unimodal are always run (default: all)",
        known_methods=METHODS,
        seeds="5; quick 2",
        jobs=True,
        quick="seconds: toy data, 2 seeds, 2 epochs, 20 examples per class, in this process",
    )
    p.add_argument("--data", default="av_fashion", choices=["av_fashion", "toy"], help="data set")
    p.add_argument("--epochs", type=int, default=5, help="epochs (default 5)")
    p.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    p.add_argument("--lr", type=float, default=0.05, help="SGD learning rate (default 0.05)")
    p.add_argument("--n-per-class", type=int, default=400, help="samples per class (default 400)")
    p.add_argument(
        "--checkpoint",
        default=None,
        metavar="FILE",
        help="JSON-lines file: each finished run is appended; runs already in it (same settings) are reused",
    )
    p.add_argument(
        "--ogm-alpha",
        type=float,
        default=0.8,
        help="OGM-GE alpha (official: 0.1 default, 0.8 recommended for CREMA-D)",
    )
    return p


def _main(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    kw: dict[str, Any] = dict(
        data=args.data,
        methods=tuple(m.lower() for m in args.methods or METHODS),
        seeds=args.seeds if args.seeds is not None else 5,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        n_per_class=args.n_per_class,
        ogm_alpha=args.ogm_alpha,
        jobs=args.jobs,
        checkpoint=args.checkpoint,
    )
    if args.quick:
        kw.update(data="toy", seeds=2, epochs=2, n_per_class=20, jobs=1)
    kw["methods"] = tuple(dict.fromkeys(("joint", "unimodal", *kw["methods"])))
    result = run(**kw, log=sys.stderr)
    return write_outputs(result, args.out, plot=not args.no_plot).done(NAME, markdown(result), t0)


def main(argv: Sequence[str] | None = None) -> int:
    """``python experiments/mimo/run.py [options]``; returns the exit status."""
    return common.main(NAME, build_parser, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
