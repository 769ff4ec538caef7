r"""Multi-objective alignment of SmolLM2 on three conflicting preference objectives; MAP over its adapters.

Issue 18's experiment, at a size a 2-core CPU runs in about an hour. Two parts:

**1. Fronts of the alignment methods.** :func:`molearn.llm.train_alignment` trains LoRA adapters of
SmolLM2-135M-Instruct on the *constructed* preference data of :func:`molearn.llm.multi_objective_preferences`
(chatterbot-corpus trivia; one DPO pair per objective and question: *correctness*, *conciseness*, *format*;
the objectives disagree on a large share of the pairs, see :func:`molearn.llm.conflict_counts`). Every recipe
gets the same step budget, batch, learning rate and seed set:

- ``linear-<objective>``: linear scalarisation at a vertex of the simplex (that objective alone), one run per
  objective; with ``ew`` (the simplex centre: equal weights, the same direction as linear scalarisation at
  (1/3, 1/3, 1/3) up to a factor AdamW removes) they are the linear-scalarisation sweep;
- ``ew-rpo``: equal weights on RPO losses (DPO plus the SFT term on the chosen answers, Liu et al. 2024);
- ``mgda``, ``cagrad`` (the conflict-averse update RACO clips), ``dynamicrewardweighting`` (Lu et al. 2025):
  molearn methods through :class:`molearn.llm.BalancedTrainer`, on the Gramian of the K LoRA gradients.

Evaluation on held-out questions (disjoint from training): per objective the mean DPO loss against the
adapter-free base model and the preference accuracy (:class:`Scorer`). Cost, of the trainer's ``train``
only: CPU seconds per optimizer step (``time.process_time``) and the peak resident memory above the memory
at its start (``/proc/self/clear_refs``; every run starts from a fresh copy of the base model).

**2. MAP over the adapters.** The ``linear-<objective>`` adapters of two objectives are turned into dense
task vectors (:func:`molearn.merging.load_lora_task_vector`, :math:`s\,BA`), merged into the base model at
coefficients :math:`c \in [0, 1]^2`, and scored by the two objectives' held-out DPO losses. MAP
(:func:`molearn.merging.map_front`, re-evaluated) against a regular grid at MAP's evaluation count, and a
dense grid as the reference front; hypervolumes with the fixed reference point ``REF``.

Finished runs are saved in ``OUT/runs/`` and reused (resumable); ``--part I/N`` runs every N-th job, so N
processes can share the jobs (a merging job waits for the adapters it needs).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

if not __package__:  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch

from experiments import common

NAME = "alignment"
GRAMIAN = ("mgda", "cagrad", "dynamicrewardweighting")
REF = (1.0, 1.0)  # hypervolume reference: above log 2 (the untrained model's DPO loss) on both objectives


@dataclass(frozen=True)
class Settings:
    objectives: tuple[str, ...] = ("correctness", "conciseness", "format")
    methods: tuple[str, ...] = ("ew", "ew-rpo", *GRAMIAN)
    seeds: tuple[int, ...] = (0, 1, 2)
    steps: int = 16
    batch_size: int = 2
    learning_rate: float = 2e-4
    beta: float = 0.1
    n_train: int | None = None
    n_eval: int | None = 32
    n_merge_eval: int = 16  # held-out rows of each merge evaluation
    max_length: int = 128
    eval_batch_size: int = 4
    merge_objectives: tuple[str, ...] = ("conciseness", "format")
    dense: int = 7  # the reference grid: dense x dense coefficients (7 x 7 holds the 4 x 4 grid)
    n_prefs: int = 4  # MAP's front points
    model: str | None = None


QUICK = dict(steps=2, n_train=8, n_eval=4, n_merge_eval=2, seeds=(0,), methods=("ew", "mgda"), dense=2,
             n_prefs=2)


def recipes(s: Settings) -> list[str]:
    return [f"linear-{o}" for o in s.objectives] + list(s.methods)


def jobs(s: Settings) -> list[tuple[str, int, str]]:
    out = [("train", seed, r) for seed in s.seeds for r in recipes(s)]
    return out + [("merge", seed, "map") for seed in s.seeds]


# ------------------------------------------------------------------------------------------ state
class State:
    """The base model, tokenizer and data, loaded once per process."""

    def __init__(self, s: Settings) -> None:
        from molearn.llm import load_model, multi_objective_preferences, reward_functions

        self.model, self.tokenizer = load_model(s.model)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        rewards = reward_functions(s.objectives)
        self.train, self.eval = (multi_objective_preferences(s.objectives, split=split, max_samples=n, seed=0,
                                                             rewards=rewards)
                                 for split, n in (("train", s.n_train), ("eval", s.n_eval)))
        self.score = Scorer(self, s, s.objectives, self.eval)
        self.score_merge = Scorer(self, s, s.merge_objectives, self.eval[: s.n_merge_eval])


class Scorer:
    """Held-out DPO loss and preference accuracy per objective, as :func:`molearn.llm.evaluate_alignment`
    computes them, with the reference (the adapter-free base model, the same for every run and merge)
    log-probabilities computed once: each call runs the policy only."""

    def __init__(self, st: State, s: Settings, objectives: Sequence[str],
                 rows: Sequence[dict[str, Any]]) -> None:
        from molearn.llm import collate_multi, sequence_logps, tokenize_multi

        self.objectives, self.beta, self.logps = list(objectives), s.beta, sequence_logps
        tok = tokenize_multi(rows, self.objectives, st.tokenizer, s.max_length)
        pad = int(st.tokenizer.pad_token_id)
        self.batches = [collate_multi(tok[i:i + s.eval_batch_size], self.objectives, pad, s.max_length)
                        for i in range(0, len(tok), s.eval_batch_size)]
        self.n = len(tok)
        with torch.no_grad():
            self.ref = [self._pair_logps(st.model, b) for b in self.batches]

    def _pair_logps(self, model: Any, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        chosen, rejected, _ = self.logps(model, batch)
        k = len(self.objectives)
        return chosen.reshape(k, -1), rejected.reshape(k, -1)

    def __call__(self, model: Any) -> dict[str, dict[str, float]]:
        was = model.training
        model.eval()
        loss = torch.zeros(len(self.objectives), dtype=torch.float64)
        wins = torch.zeros_like(loss)
        with torch.no_grad():
            for batch, (rc, rr) in zip(self.batches, self.ref):
                c, r = self._pair_logps(model, batch)
                margin = ((c - rc) - (r - rr)).double()
                loss += -torch.nn.functional.logsigmoid(self.beta * margin).sum(1)
                wins += (margin > 0).double().sum(1)
        model.train(was)
        return {o: {"loss": float(loss[i]) / self.n, "accuracy": float(wins[i]) / self.n}
                for i, o in enumerate(self.objectives)}


def _cpu_clock() -> Any:
    from transformers import TrainerCallback

    class Clock(TrainerCallback):  # type: ignore[misc]
        """CPU seconds and the peak memory above the start, of the trainer's ``train`` only."""

        cpu, base, peak = 0.0, 0, 0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.base = common.reset_peak_memory()
            self.cpu = -time.process_time()

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.cpu += time.process_time()
            self.peak = common.peak_memory()

    return Clock()


def train_job(st: State, s: Settings, seed: int, recipe: str, out: Path) -> dict[str, Any]:
    from molearn.llm import AlignConfig, train_alignment

    k = len(s.objectives)
    kw: dict[str, Any] = dict(objectives=s.objectives, max_steps=s.steps, batch_size=s.batch_size,
                              learning_rate=s.learning_rate, beta=s.beta, seed=seed, max_length=s.max_length,
                              logging_steps=1)
    if recipe.startswith("linear-"):
        i = s.objectives.index(recipe.removeprefix("linear-"))
        kw.update(method="linear", preferences=[[float(j == i) for j in range(k)]])
    elif recipe == "ew-rpo":
        kw.update(method="ew", loss="rpo")
    else:
        kw.update(method=recipe)
    clock = _cpu_clock()
    (res,) = train_alignment(AlignConfig(**kw), model=st.model, tokenizer=st.tokenizer, train_rows=st.train,
                             eval_rows=[], keep_model=True, callbacks=[clock])
    ev = st.score(res.model)
    if recipe.startswith("linear-"):
        res.model.save_pretrained(str(out / "adapters" / f"seed{seed}" / recipe))
    weights = [h for h in res.log if "weight_0" in h]
    return {"kind": "train", "seed": seed, "recipe": recipe, "steps": res.steps,
            "loss": {o: ev[o]["loss"] for o in s.objectives},
            "accuracy": {o: ev[o]["accuracy"] for o in s.objectives},
            "cpu_s_per_step": clock.cpu / max(res.steps, 1),
            "wall_s_per_step": res.train_seconds / max(res.steps, 1),
            "peak_mib": clock.peak / 2**20, "extra_mib": (clock.peak - clock.base) / 2**20,
            "final_weights": [float(weights[-1][f"weight_{i}"]) for i in range(k)] if weights else None}


def merge_job(st: State, s: Settings, seed: int, out: Path, wait_s: float = 7200.0) -> dict[str, Any]:
    from molearn.merging import grid_search, load_lora_task_vector, map_front, merge
    from molearn.pareto import Hypervolume

    folders = [out / "adapters" / f"seed{seed}" / f"linear-{o}" for o in s.merge_objectives]
    t_end = time.monotonic() + wait_s
    while not all((f / "adapter_config.json").is_file() for f in folders):  # another part trains them
        if time.monotonic() > t_end:
            raise FileNotFoundError(f"adapters {folders} did not appear")
        time.sleep(20)
    taus = [load_lora_task_vector(f) for f in folders]
    full = st.model.state_dict()
    base = {name: full[name].detach().clone() for name in taus[0]}
    policy = copy.deepcopy(st.model).eval()
    points: list[dict[str, Any]] = []
    seen: dict[tuple[float, ...], torch.Tensor] = {}  # a coefficient vector another method already scored

    def evaluate(c: torch.Tensor, method: str) -> torch.Tensor:
        key = tuple(round(x, 12) for x in c.tolist())
        if key not in seen:
            policy.load_state_dict(merge(base, taus, c), strict=False)
            ev = st.score_merge(policy)
            seen[key] = torch.tensor([ev[o]["loss"] for o in s.merge_objectives], dtype=torch.float64)
        f = seen[key]
        points.append({"seed": seed, "method": method, "c": c.tolist(), "f": f.tolist()})
        return f

    def hv(F: torch.Tensor) -> float:
        return float(Hypervolume(torch.tensor(REF, dtype=torch.float64), clip=True).do(F))

    t0 = time.perf_counter()
    dense = grid_search(lambda c: evaluate(c, "dense"), 2, s.dense ** 2)
    mp = map_front(lambda c: evaluate(c, "map"), 2, n_prefs=s.n_prefs, reevaluate=True, seed=seed)
    assert mp.evaluated is not None
    grid = grid_search(lambda c: evaluate(c, "grid"), 2, mp.n_evals)
    map_F = torch.cat([mp.sample_objectives, mp.evaluated])
    rows = {"dense": (dense.n_evals, hv(dense.objectives)), "map": (mp.n_evals, hv(map_F)),
            "grid": (grid.n_evals, hv(grid.objectives))}
    return {"kind": "merge", "seed": seed, "recipe": "map", "wall_s": time.perf_counter() - t0,
            "r2": mp.r2.tolist(), "rows": {m: {"n_evals": n, "hv": h, "hv_ratio": h / rows["dense"][1]}
                                           for m, (n, h) in rows.items()}, "points": points}


# ------------------------------------------------------------------------------------------ driver
def _path(out: Path, kind: str, seed: int, recipe: str) -> Path:
    return out / "runs" / f"{kind}_seed{seed}_{recipe}.json"


def run(s: Settings, out: str | os.PathLike[str], part: tuple[int, int] = (0, 1), log: Any = None
        ) -> list[dict[str, Any]]:
    """Run (or reuse) this part's jobs; return every finished record found in ``out``."""
    outp = Path(out)
    (outp / "runs").mkdir(parents=True, exist_ok=True)
    say = common.printer(log)
    state: State | None = None
    for idx, (kind, seed, recipe) in enumerate(jobs(s)):
        path = _path(outp, kind, seed, recipe)
        if idx % part[1] != part[0] or path.is_file():
            continue
        state = state or State(s)
        t0 = time.perf_counter()
        rec = train_job(state, s, seed, recipe, outp) if kind == "train" else merge_job(state, s, seed, outp)
        rec["settings"] = asdict(s)
        path.write_text(json.dumps(rec))
        say(f"{kind} seed {seed} {recipe}: {time.perf_counter() - t0:.0f} s")
    return [json.loads(p.read_text()) for p in sorted((outp / "runs").glob("*.json"))]


# ------------------------------------------------------------------------------------------ report
def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    m = sum(values) / n if n else float("nan")
    if n < 2:
        return m, float("nan")
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))
    return m, common.t_quantile(n - 1) * sd / math.sqrt(n)


def _ci(values: Sequence[float], digits: int = 3) -> str:
    m, h = mean_ci(values)
    return f"{m:.{digits}f} ± {h:.{digits}f}" if math.isfinite(h) else f"{m:.{digits}f}"


def summary(records: Sequence[dict[str, Any]], s: Settings) -> list[dict[str, Any]]:
    rows = []
    for recipe in recipes(s):
        rs = [r for r in records if r["kind"] == "train" and r["recipe"] == recipe]
        if not rs:
            continue
        row: dict[str, Any] = {"recipe": recipe, "seeds": len(rs)}
        for o in s.objectives:
            row[f"loss_{o}"] = _ci([r["loss"][o] for r in rs])
            row[f"acc_{o}"] = _ci([r["accuracy"][o] for r in rs], 2)
        row["mean_loss"] = _ci([sum(r["loss"].values()) / len(s.objectives) for r in rs])
        row["worst_loss"] = _ci([max(r["loss"].values()) for r in rs])
        row["cpu_s_per_step"] = _ci([r["cpu_s_per_step"] for r in rs], 2)
        row["extra_mib"] = _ci([r["extra_mib"] for r in rs], 0)
        rows.append(row)
    return rows


def contrasts(records: Sequence[dict[str, Any]], s: Settings, base: str = "ew") -> list[dict[str, Any]]:
    """Per recipe, paired by seed against ``base``: differences of the mean and the worst held-out loss, and
    the ratios of CPU time per step and of the extra memory."""
    by = {(r["recipe"], r["seed"]): r for r in records if r["kind"] == "train"}
    out = []
    for recipe in recipes(s):
        seeds = [sd for sd in s.seeds if (recipe, sd) in by and (base, sd) in by]
        if recipe == base or not seeds:
            continue
        a, b = [by[(recipe, sd)] for sd in seeds], [by[(base, sd)] for sd in seeds]
        mean = [sum(x["loss"].values()) / len(x["loss"]) - sum(y["loss"].values()) / len(y["loss"])
                for x, y in zip(a, b)]
        worst = [max(x["loss"].values()) - max(y["loss"].values()) for x, y in zip(a, b)]
        out.append({"recipe": recipe, "vs": base, "seeds": len(seeds), "d_mean_loss": _ci(mean),
                    "d_worst_loss": _ci(worst),
                    "cpu_ratio": _ci([x["cpu_s_per_step"] / y["cpu_s_per_step"] for x, y in zip(a, b)], 2),
                    "extra_mem_ratio": _ci([x["extra_mib"] / y["extra_mib"] for x, y in zip(a, b)], 2)})
    return out


def merge_summary(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    ms = [r for r in records if r["kind"] == "merge"]
    if not ms:
        return []
    rows = [{"method": m, "seeds": len(ms), "n_evals": _ci([r["rows"][m]["n_evals"] for r in ms], 1),
             "hv": _ci([r["rows"][m]["hv"] for r in ms], 4),
             "hv_ratio": _ci([r["rows"][m]["hv_ratio"] for r in ms], 4)} for m in ("dense", "map", "grid")]
    rows.append({"method": "map - grid (paired)", "seeds": len(ms), "n_evals": "",
                 "hv": _ci([r["rows"]["map"]["hv"] - r["rows"]["grid"]["hv"] for r in ms], 4),
                 "hv_ratio": _ci([r["rows"]["map"]["hv_ratio"] - r["rows"]["grid"]["hv_ratio"]
                                  for r in ms], 4)})
    return rows


def _table(rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return "(none)\n"
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(r[h]) for h in head) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def markdown(records: Sequence[dict[str, Any]], s: Settings) -> str:
    return (f"# alignment: results\n\nSettings: `{json.dumps(asdict(s))}`\n\n"
            "## Held-out DPO loss and preference accuracy per objective (mean ± 95% CI over seeds)\n\n"
            + _table(summary(records, s))
            + "\n## Paired against equal weights (difference of losses; ratios of CPU time per step and of "
              "the extra memory)\n\n" + _table(contrasts(records, s))
            + f"\n## MAP over the adapters of {', '.join(s.merge_objectives)} (hypervolume, reference "
              f"{REF})\n\n"
            + _table(merge_summary(records)))


def plot(records: Sequence[dict[str, Any]], s: Settings, path: Path) -> None:
    fig = common.figure("alignment fronts", figsize=(13.0, 4.2))
    pairs = [(i, j) for i in range(len(s.objectives)) for j in range(i + 1, len(s.objectives))]
    for n, (i, j) in enumerate(pairs):
        ax = fig.add_subplot(1, len(pairs), n + 1)
        oi, oj = s.objectives[i], s.objectives[j]
        for recipe in recipes(s):
            rs = [r for r in records if r["kind"] == "train" and r["recipe"] == recipe]
            if not rs:
                continue
            xs, ys = [r["loss"][oi] for r in rs], [r["loss"][oj] for r in rs]
            (mx, hx), (my, hy) = mean_ci(xs), mean_ci(ys)
            ax.errorbar(mx, my, xerr=hx if math.isfinite(hx) else None,
                        yerr=hy if math.isfinite(hy) else None,
                        fmt="s" if recipe.startswith("linear-") else "o", capsize=3, label=recipe)
        ax.axvline(math.log(2), color="0.7", lw=0.8)
        ax.axhline(math.log(2), color="0.7", lw=0.8)
        ax.set_xlabel(f"held-out DPO loss: {oi}")
        ax.set_ylabel(f"held-out DPO loss: {oj}")
    fig.axes[-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write(records: Sequence[dict[str, Any]], s: Settings, files: common.Outputs, no_plot: bool) -> str:
    text = markdown(records, s)
    files.text("results.md", text)
    files.csv("summary.csv", summary(records, s) or [{"recipe": ""}])
    files.csv("contrasts.csv", contrasts(records, s) or [{"recipe": ""}])
    pts = [{"seed": p["seed"], "method": p["method"], "c1": p["c"][0], "c2": p["c"][1], "f1": p["f"][0],
            "f2": p["f"][1]} for r in records if r["kind"] == "merge" for p in r["points"]]
    files.csv("merge_points.csv", pts or [{"seed": ""}])
    if not no_plot:
        plot(records, s, files.path("front.png"))
    return text


def build_parser() -> argparse.ArgumentParser:
    p = common.parser(NAME, __doc__, seeds="0,1,2", quick="a seconds-long smoke run (2 steps, 8 rows)")
    p.add_argument("--steps", type=common.positive_int, default=None,
                   help="optimizer steps of every training run (default: 16; --quick: 2)")
    p.add_argument("--part", default="0/1", help="I/N: run every N-th job starting at I (default 0/1)")
    p.add_argument("--report", action="store_true", help="only write the report from OUT/runs")
    return p


def _main(args: argparse.Namespace) -> int:
    s = Settings(**QUICK) if args.quick else Settings()  # type: ignore[arg-type]
    over = {k: getattr(args, k) for k in ("steps", "seeds") if getattr(args, k, None) is not None}
    s = replace(s, **{k: tuple(v) if k == "seeds" else v for k, v in over.items()})
    i, n = (int(x) for x in args.part.split("/"))
    if not 0 <= i < n:
        raise ValueError(f"--part I/N needs 0 <= I < N, got {args.part}")
    t0 = time.perf_counter()
    if args.report:
        records = [json.loads(p.read_text()) for p in sorted((Path(args.out) / "runs").glob("*.json"))]
    else:
        records = run(s, args.out, (i, n), log=sys.stderr)
    files = common.Outputs(args.out)
    return files.done(NAME, write(records, s, files, args.no_plot), t0)


def main(argv: Sequence[str] | None = None) -> int:
    return common.main(NAME, build_parser, _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
