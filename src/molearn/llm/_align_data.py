"""Multi-objective preference data: constructed from the chatterbot corpus, or loaded from user files.

**Format.** One row holds one preference pair per objective: ``{"pairs": {objective: {"prompt", "chosen",
"rejected"}}, ...}``; the pairs of a row may share the prompt (constructed data) or not (user files, one per
objective). :func:`molearn.llm.train_alignment` turns each objective's pairs into its own DPO-style loss.

**Constructed data** (:func:`multi_objective_preferences`; no human preference data set can be installed here,
so none of this is a human judgement — every row carries ``constructed=True``). For each conversation of the
chosen topics (default ``("trivia",)``: 260 question/answer pairs with short verifiable answers), with corpus
answer ``a`` and a *wrong* answer ``b`` (another answer of the same topics that :func:`correctness_reward`
does not accept, drawn with a generator seeded by ``seed``, the topic and the conversation index), the
candidate responses are (column ``candidates``, kind → text):

- ``answer``: ``a`` as in the corpus;
- ``sentence``: ``"The answer is <a>."`` (``a`` without its final ``.!?``);
- ``verbose``: a hedged 25-word reply ending in ``a`` (correct, long, a complete sentence);
- ``lowercase``: ``a`` lower-cased without its final punctuation (correct, short, unformatted);
- ``wrong``: ``b``; ``wrong_sentence``: ``"The answer is <b>."``;
- ``dont_know``: ``"I don't know."``.

Duplicate texts keep the first kind. Every candidate is scored by every objective's reward
(:mod:`molearn.llm._rewards`; column ``rewards``: kind → objective → value). For each objective the pair is
drawn uniformly (seeded by ``seed``, topic, index and objective) among the ordered candidate pairs whose
reward differs by more than ``min_margin``: ``chosen`` has the higher reward *for that objective*. The
objectives conflict: e.g. ``verbose`` beats ``wrong`` on correctness and loses on conciseness
(:func:`conflict_counts` counts, per pair of objectives, the rows whose two pairs the other objective orders
oppositely). A row where some objective ties on every candidate is skipped (counted and logged).

Splits are disjoint by question (:func:`molearn.llm.split_by_question`, ``eval_fraction``, ``seed``).

**User data** (:func:`load_preference_file`): JSONL (one object per line, blank lines ignored) or JSON (a
list of objects, or an object with a ``"data"`` list) in TRL's preference layout: ``prompt``/``chosen``/
``rejected`` strings; or conversational, ``prompt``/``chosen``/``rejected`` message lists
(``[{"role", "content"}]``); or the implicit-prompt form with ``chosen``/``rejected`` full conversations that
share their first messages (the prompt is the longest shared prefix of whole messages, the responses the
rest). Bad rows (invalid JSON, missing fields, non-text or empty content, ``chosen == rejected``, no shared
prompt, a prompt longer than the context with ``tokenizer``/``max_length``) are skipped, counted and logged
(``on_invalid="skip"``, default) or raise ValueError naming the row and line (``"raise"``). String rows are
checked by :func:`molearn.llm.validate_preference_rows`. :func:`multi_objective_from_files` zips one file
(or row list) per objective into rows; shorter objectives are cycled to the length of the longest, so
every pair of every objective is used at least once per pass; rows given as lists get the same checks
(:func:`check_preference_rows`).
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ._data import (
    DONT_KNOW,
    SkipReport,
    load_chatterbot_conversations,
    split_by_question,
    validate_preference_rows,
)
from ._rewards import correctness_reward, reward_functions, reward_values

__all__ = [
    "CANDIDATE_KINDS",
    "check_preference_rows",
    "conflict_counts",
    "load_preference_file",
    "multi_objective_from_files",
    "multi_objective_preferences",
    "response_candidates",
]

CANDIDATE_KINDS = ("answer", "sentence", "verbose", "lowercase", "wrong", "wrong_sentence", "dont_know")
VERBOSE = ("That is a good question. After thinking about it carefully for a while, I am fairly sure that "
           "the answer you are looking for is {}.")


def _bare(answer: str) -> str:
    return answer.strip().rstrip(".!?").strip()


def response_candidates(answer: str, wrong: str) -> dict[str, str]:
    """The candidate responses (kind → text) for corpus answer ``answer`` and a wrong answer ``wrong``;
    see the module docstring. Duplicate texts keep the first kind."""
    a, b = _bare(answer) or answer.strip(), _bare(wrong) or wrong.strip()
    texts = {
        "answer": answer.strip(),
        "sentence": f"The answer is {a}.",
        "verbose": VERBOSE.format(a),
        "lowercase": a.lower(),
        "wrong": wrong.strip(),
        "wrong_sentence": f"The answer is {b}.",
        "dont_know": DONT_KNOW,
    }
    out: dict[str, str] = {}
    seen: set[str] = set()
    for kind, text in texts.items():
        if text and text not in seen:
            out[kind] = text
            seen.add(text)
    return out


def _score(rows: list[dict[str, Any]], rewards: Mapping[str, Callable[[str, str], float]]) -> None:
    """Fill ``row["rewards"][kind][objective]``; rewards with a ``pairwise`` method are batched."""
    flat = [(i, kind, text, r["reference"]) for i, r in enumerate(rows)
            for kind, text in r["candidates"].items()]
    for r in rows:
        r["rewards"] = {kind: {} for kind in r["candidates"]}
    for name, fn in rewards.items():
        values = reward_values(fn, [t for _, _, t, _ in flat], [ref for _, _, _, ref in flat])
        for (i, kind, _, _), v in zip(flat, values, strict=True):
            rows[i]["rewards"][kind][name] = v


def multi_objective_preferences(
    objectives: Sequence[str] = ("correctness", "conciseness", "format"),
    *,
    topics: Iterable[str] = ("trivia",),
    split: str | None = "train",
    eval_fraction: float = 0.2,
    seed: int = 0,
    max_samples: int | None = None,
    rewards: Mapping[str, Callable[[str, str], float]] | None = None,
    min_margin: float = 1e-6,
    language: str = "english",
    corpus_dir: str | os.PathLike[str] | None = None,
) -> list[dict[str, Any]]:
    """The constructed multi-objective preference rows (see the module docstring).

    Args:
        objectives: reward names (``correctness``, ``conciseness``, ``format``, ``similarity``) or keys of
            ``rewards``; one preference pair per objective and row.
        topics: chatterbot topics whose first exchanges give the questions and answers.
        split: ``"train"`` / ``"eval"`` (disjoint by question) or ``None``/``"all"``.
        eval_fraction, seed: the split and every random choice; the rows are a deterministic function of
            the arguments.
        max_samples: a seeded subset of the rows (after the split).
        rewards: name → ``reward(response, reference)``; default :func:`molearn.llm.reward_functions`.
        min_margin: the smallest reward difference that orders a pair.

    Returns:
        rows ``{"prompt", "reference", "topic", "index", "candidates", "rewards", "pairs", "constructed"}``
        where ``pairs[objective] = {"prompt", "chosen", "rejected", "chosen_kind", "rejected_kind",
        "margin"}``.
    """
    objectives = list(objectives)
    if not objectives or len(set(objectives)) != len(objectives):
        raise ValueError(f"objectives must be distinct names, got {objectives!r}")
    if rewards is None:
        rewards = reward_functions(objectives)
    missing = [o for o in objectives if o not in rewards]
    if missing:
        raise ValueError(f"no reward for objective(s) {missing}")
    rewards = {o: rewards[o] for o in objectives}
    convs = load_chatterbot_conversations(language, list(topics), corpus_dir=corpus_dir)
    answers = [c["answer"] for c in convs]
    if split is not None and split != "all":
        if split not in ("train", "eval"):
            raise ValueError(f"split must be 'train', 'eval', 'all' or None, got {split!r}")
        train_idx, eval_idx = split_by_question(convs, eval_fraction, seed)
        convs = [convs[i] for i in (train_idx if split == "train" else eval_idx)]
    rows: list[dict[str, Any]] = []
    for c in convs:
        rng = random.Random(f"moa-wrong-{seed}-{c['topic']}-{c['index']}")
        wrong_pool = [a for a in answers if not correctness_reward(a, c["answer"])
                      and not correctness_reward(c["answer"], a)]
        if not wrong_pool:  # pragma: no cover - a one-answer corpus
            continue
        wrong = wrong_pool[rng.randrange(len(wrong_pool))]
        rows.append({"prompt": c["question"], "reference": c["answer"], "topic": c["topic"],
                     "index": c["index"], "candidates": response_candidates(c["answer"], wrong),
                     "constructed": True})
    _score(rows, rewards)
    report, kept = SkipReport(), []
    for r in rows:
        pairs: dict[str, dict[str, Any]] = {}
        for o in objectives:
            score = {k: v[o] for k, v in r["rewards"].items()}
            ordered = [(c, j) for c in score for j in score if score[c] - score[j] > min_margin]
            if not ordered:
                break
            rng = random.Random(f"moa-pair-{seed}-{r['topic']}-{r['index']}-{o}")
            c, j = ordered[rng.randrange(len(ordered))]
            pairs[o] = {"prompt": r["prompt"], "chosen": r["candidates"][c], "rejected": r["candidates"][j],
                        "chosen_kind": c, "rejected_kind": j, "margin": score[c] - score[j]}
        if len(pairs) < len(objectives):
            report.add(f"objective {o!r} ties on every candidate", f"{r['topic']} {r['index']}")
            continue
        r["pairs"] = pairs
        kept.append(r)
    report.kept = len(kept)
    report.log("constructed multi-objective preferences")
    if not kept:
        raise ValueError("no constructed row left (every row had an objective that ties on every candidate)")
    if max_samples is not None and max_samples < len(kept):
        if max_samples < 1:
            raise ValueError(f"max_samples must be >= 1, got {max_samples}")
        idx = sorted(random.Random(f"moa-sub-{seed}").sample(range(len(kept)), max_samples))
        kept = [kept[i] for i in idx]
    return kept


def conflict_counts(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], int]:
    """For each ordered pair of objectives (i, j): the number of rows whose objective-i pair is ordered
    the *other* way by objective j's reward (``rewards[chosen_kind][j] < rewards[rejected_kind][j]``)."""
    out: dict[tuple[str, str], int] = {}
    for r in rows:
        for i, p in r["pairs"].items():
            for j in r["pairs"]:
                if j == i:
                    continue
                rc, rr = r["rewards"][p["chosen_kind"]][j], r["rewards"][p["rejected_kind"]][j]
                out[(i, j)] = out.get((i, j), 0) + int(rc < rr)
    return out


# ------------------------------------------------------------------------------------------ user files


def _message_problem(value: Any) -> str | None:
    if not isinstance(value, list) or not value:
        return "a message list is empty or not a list"
    for m in value:
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str) or not isinstance(
                m.get("content"), str):
            return "a message without text role/content"
        if not m["content"].strip():
            return "empty message"
    return None


def _conversational(row: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """A conversational row → (row with explicit prompt, None) or (None, reason)."""
    chosen: Any = row.get("chosen")
    rejected: Any = row.get("rejected")
    for name, value in (("chosen", chosen), ("rejected", rejected)):
        if value is None:
            return None, f"missing field {name!r}"
        problem = _message_problem(value)
        if problem:
            return None, f"{name}: {problem}"
    prompt: Any = row.get("prompt")
    if prompt is None:  # implicit prompt: the longest shared prefix of whole messages
        n = 0
        while n < min(len(chosen), len(rejected)) and dict(chosen[n]) == dict(rejected[n]):
            n += 1
        if n == 0:
            return None, "chosen and rejected share no prompt message"
        prompt, chosen, rejected = chosen[:n], chosen[n:], rejected[n:]
        if not chosen or not rejected:
            return None, "chosen == rejected" if not chosen and not rejected else "empty response"
    else:
        problem = _message_problem(prompt)
        if problem:
            return None, f"prompt: {problem}"
    if [dict(m) for m in chosen] == [dict(m) for m in rejected]:
        return None, "chosen == rejected"
    out = {k: v for k, v in row.items() if k not in ("prompt", "chosen", "rejected")}
    out.update(prompt=[dict(m) for m in prompt], chosen=[dict(m) for m in chosen],
               rejected=[dict(m) for m in rejected])
    return out, None


def _read_rows(path: Path) -> list[tuple[int, Any]]:
    """(line number, parsed object or an exception) for a JSONL file; (index + 1, object) for JSON."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        out: list[tuple[int, Any]] = []
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                out.append((n, json.loads(line)))
            except json.JSONDecodeError as exc:
                out.append((n, exc))
        return out
    if path.suffix != ".json":
        raise ValueError(f"{path}: expected a .jsonl or .json file")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if isinstance(doc, Mapping) and isinstance(doc.get("data"), list):
        doc = doc["data"]
    if not isinstance(doc, list):
        raise ValueError(f"{path}: expected a JSON list of rows (or {{'data': [...]}}), got "
                         f"{type(doc).__name__}")
    return [(i + 1, r) for i, r in enumerate(doc)]


def _check_rows(numbered: Iterable[tuple[int, Any]], label: str, what: str, tokenizer: Any,
                max_length: int | None, on_invalid: str) -> list[dict[str, Any]]:
    if on_invalid not in ("skip", "raise"):
        raise ValueError(f"on_invalid must be 'skip' or 'raise', got {on_invalid!r}")
    if (tokenizer is None) != (max_length is None):
        raise ValueError("give both tokenizer and max_length (to check prompt lengths) or neither")
    report, kept = SkipReport(), []
    for n, row in numbered:
        where = f"{label} {what} {n}"
        reason: str | None = None
        out: dict[str, Any] | None = None
        if isinstance(row, Exception):
            reason = f"invalid JSON ({getattr(row, 'msg', row)})"
        elif not isinstance(row, Mapping):
            reason = "not an object"
        elif isinstance(row.get("chosen"), list) or isinstance(row.get("rejected"), list):
            out, reason = _conversational(row)
            if out is not None and tokenizer is not None and max_length is not None:
                ids = tokenizer.apply_chat_template(out["prompt"], tokenize=True, add_generation_prompt=True)
                ids = ids["input_ids"] if isinstance(ids, Mapping) else ids
                if len(ids) >= max_length:
                    out, reason = None, f"prompt longer than the context ({max_length} tokens)"
        else:
            try:
                (out,), _ = validate_preference_rows([dict(row)], tokenizer=tokenizer, max_length=max_length,
                                                     on_invalid="raise")
            except ValueError as exc:
                reason = str(exc).split(": ", 1)[-1]
        if reason is not None or out is None:
            reason = reason or "invalid row"
            if on_invalid == "raise":
                raise ValueError(f"{where}: {reason}")
            report.add(reason, where)
            continue
        kept.append(out)
    report.kept = len(kept)
    report.log(f"preference data {label}")
    if not kept:
        raise ValueError(f"{label}: no valid preference row ({report.skipped} skipped: "
                         f"{dict(report.counts)})")
    return kept


def load_preference_file(
    path: str | os.PathLike[str],
    *,
    tokenizer: Any = None,
    max_length: int | None = None,
    on_invalid: str = "skip",
) -> list[dict[str, Any]]:
    """Preference rows from a JSONL/JSON file (see the module docstring): ``prompt``/``chosen``/``rejected``
    as strings or message lists (implicit prompts made explicit). Other fields are kept. Errors name the
    file and the line (JSONL) or row (JSON, from 1)."""
    p = Path(os.fspath(path))
    if not p.is_file():
        raise FileNotFoundError(f"preference file not found: {p}")
    what = "line" if p.suffix == ".jsonl" else "row"
    return _check_rows(_read_rows(p), p.name, what, tokenizer, max_length, on_invalid)


def check_preference_rows(
    rows: Iterable[Mapping[str, Any]],
    *,
    tokenizer: Any = None,
    max_length: int | None = None,
    on_invalid: str = "skip",
) -> list[dict[str, Any]]:
    """The checks of :func:`load_preference_file` on rows already in memory (string or conversational);
    errors name the row (from 0)."""
    return _check_rows(enumerate(rows), "preference", "row", tokenizer, max_length, on_invalid)


def multi_objective_from_files(
    sources: Mapping[str, str | os.PathLike[str] | Sequence[Mapping[str, Any]]],
    **load_kwargs: Any,
) -> list[dict[str, Any]]:
    """Rows ``{"pairs": {objective: pair}}`` from one preference file (or list of rows) per objective, in
    file order; shorter objectives are cycled to the length of the longest. ``load_kwargs`` go to
    :func:`load_preference_file` / :func:`check_preference_rows`."""
    if not sources:
        raise ValueError("give at least one objective's preference data")
    data: dict[str, list[dict[str, Any]]] = {}
    for name, src in sources.items():
        if isinstance(src, (str, os.PathLike)):
            data[name] = load_preference_file(src, **load_kwargs)
        else:
            data[name] = check_preference_rows(src, **load_kwargs)
    n = max(len(v) for v in data.values())
    return [{"pairs": {name: rows[i % len(rows)] for name, rows in data.items()}} for i in range(n)]
