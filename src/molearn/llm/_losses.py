"""SFT and DPO objectives for causal language models, computed the way TRL 1.16 computes them.

- SFT: token-level negative log-likelihood of the response tokens, prompt tokens masked (labels
  −100), averaged
  over all response tokens of the batch (TRL ``SFTTrainer`` with ``completion_only_loss``; the
  official XRIGHT /
  OpenRLHF ``GPTLMLoss`` is the same token mean).
- DPO (Rafailov et al., "Direct Preference Optimization", NeurIPS 2023): with sequence
  log-probabilities summed
  over response tokens, Δ = (log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l)) and
  L = mean[−(1−ε) log σ(βΔ) − ε log σ(−βΔ)] (ε = label smoothing, "conservative DPO", as in OpenRLHF's
  ``DPOLoss``; TRL's ``sigmoid`` is the ε = 0 case). IPO (Azar et al., AISTATS 2024):
  L = mean[(Δ̄ − 1/(2β))²] where Δ̄ uses log-ratios divided by the number of response tokens, as TRL 1.16
  does (OpenRLHF uses the unnormalised Δ; we follow TRL so the losses can be checked against it).
- Chosen and rejected sequences go through one concatenated forward (batch = [chosen; rejected]);
  the reference
  runs under ``torch.no_grad``: a separate frozen model, or — for a PEFT model without one — the same model
  with its adapters disabled (no copy).

Tokenisation follows TRL: the prompt is rendered with the chat template and
``add_generation_prompt=True``, the
full conversation without it, and the response starts where the two token lists diverge. Plain-string records
are wrapped as a user / assistant exchange when the tokenizer has a chat template (plain text + EOS
otherwise).
Sequences are truncated to ``max_length`` keeping the start; a record whose prompt alone fills
``max_length`` has
no response token left and is skipped (counted and logged), as TRL drops it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "SkipCounter",
    "collate_preference",
    "collate_sft",
    "dpo_loss",
    "dpo_loss_from_batch",
    "reference_context",
    "sequence_logps",
    "sft_loss",
    "tokenize_preference",
    "tokenize_sft",
]

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _chat_ids(tokenizer: Any, messages: list[dict[str, str]], *,
              add_generation_prompt: bool = False) -> list[int]:
    out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                        add_generation_prompt=add_generation_prompt)
    return list(out["input_ids"])


def _text_ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text=text)["input_ids"])


def _check_message_list(value: Any, where: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where}: expected a non-empty list of messages, got {type(value).__name__}")
    for m in value:
        if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
            raise ValueError(f"{where}: every message needs 'role' and 'content', got {m!r}")
        if not isinstance(m["content"], str):
            raise TypeError(f"{where}: message content must be a string, got {type(m['content']).__name__}")
    return [dict(m) for m in value]


class SkipCounter:
    """Counts records skipped during tokenisation (``reasons``: reason → count)."""

    def __init__(self) -> None:
        self.reasons: dict[str, int] = {}

    def add(self, reason: str) -> None:
        self.reasons[reason] = self.reasons.get(reason, 0) + 1

    @property
    def total(self) -> int:
        return sum(self.reasons.values())


def _prompt_completion(tokenizer: Any, prompt: Any, completion: Any,
                       where: str) -> tuple[list[int], list[int]]:
    """Token ids of the prompt and of prompt + completion (conversational when a chat template exists)."""
    has_template = getattr(tokenizer, "chat_template", None) is not None
    if isinstance(prompt, str) and isinstance(completion, str):
        if has_template:
            prompt = [{"role": "user", "content": prompt}]
            completion = [{"role": "assistant", "content": completion}]
        else:
            eos = tokenizer.eos_token or ""
            if not completion.endswith(eos):
                completion = completion + eos
            return _text_ids(tokenizer, prompt), _text_ids(tokenizer, prompt + completion)
    if isinstance(prompt, list) and isinstance(completion, list):
        if not has_template:
            raise ValueError(f"{where}: conversational records need a tokenizer with a chat template")
        prompt = _check_message_list(prompt, where)
        completion = _check_message_list(completion, where)
        return (_chat_ids(tokenizer, prompt, add_generation_prompt=True),
                _chat_ids(tokenizer, prompt + completion))
    raise TypeError(f"{where}: prompt and response must both be strings or both message lists, got "
                    f"{type(prompt).__name__} and {type(completion).__name__}")


def tokenize_sft(example: Mapping[str, Any], tokenizer: Any, max_length: int | None = None, *,
                 index: int | None = None) -> dict[str, list[int]] | None:
    """One SFT record → ``{"input_ids", "labels"}`` with the prompt labels set to −100.

    Accepted records: ``{"messages": [..., {"role": "assistant", "content": response}]}`` (the last message is
    the target, everything before it the prompt) or ``{"prompt": str|messages, "completion": str|messages}``.
    Returns None when the prompt alone fills ``max_length`` (caller counts it). Raises ValueError on a missing
    field, a last message that is not the assistant's, or an empty response.
    """
    where = f"SFT record {index}" if index is not None else "SFT record"
    if not isinstance(example, Mapping):
        raise TypeError(f"{where}: expected a mapping, got {type(example).__name__}")
    if "messages" in example and example["messages"] is not None:
        messages = _check_message_list(example["messages"], where)
        if messages[-1]["role"] != "assistant":
            raise ValueError(f"{where}: the last message must be the assistant's response, got role "
                             f"{messages[-1]['role']!r}")
        if len(messages) < 2:
            raise ValueError(f"{where}: needs at least one prompt message before the response")
        prompt, completion = messages[:-1], messages[-1:]
        text = completion[0]["content"]
    elif "prompt" in example and "completion" in example:
        prompt, completion = example["prompt"], example["completion"]
        text = completion if isinstance(completion, str) else " ".join(
            m.get("content", "") for m in completion if isinstance(m, Mapping))
    else:
        raise ValueError(f"{where}: needs a 'messages' list or 'prompt' and 'completion' fields; has "
                         f"{sorted(example)}")
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{where}: empty response")
    prompt_ids, full_ids = _prompt_completion(tokenizer, prompt, completion, where)
    n_prompt = _common_prefix(prompt_ids, full_ids)
    if max_length is not None and n_prompt >= max_length:
        return None
    if len(full_ids) <= n_prompt:
        raise ValueError(f"{where}: the response has no tokens")
    labels = [IGNORE_INDEX] * n_prompt + full_ids[n_prompt:]
    if max_length is not None:
        full_ids, labels = full_ids[:max_length], labels[:max_length]
    return {"input_ids": full_ids, "labels": labels}


def tokenize_preference(example: Mapping[str, Any], tokenizer: Any, max_length: int | None = None, *,
                        index: int | None = None) -> dict[str, list[int]] | None:
    """One preference record ``{"prompt", "chosen", "rejected"}`` → ``{"prompt_ids", "chosen_ids",
    "rejected_ids"}`` (TRL's layout). Strings or message lists. Returns None when the prompt alone fills
    ``max_length``. Raises ValueError on missing fields or an empty chosen/rejected response."""
    where = f"preference record {index}" if index is not None else "preference record"
    if not isinstance(example, Mapping):
        raise TypeError(f"{where}: expected a mapping, got {type(example).__name__}")
    missing = [k for k in ("prompt", "chosen", "rejected") if example.get(k) is None]
    if missing:
        raise ValueError(f"{where}: missing field(s) {missing}")
    for key in ("prompt", "chosen", "rejected"):
        value = example[key]
        if isinstance(value, str):
            text = value
        elif isinstance(value, list):
            text = " ".join(m.get("content", "") for m in value if isinstance(m, Mapping))
        else:
            text = None
        if text is None:
            raise TypeError(f"{where}: {key!r} must be a string or a message list, "
                            f"got {type(value).__name__}")
        if not text.strip():
            raise ValueError(f"{where}: empty {key!r}")
    prompt_ids, chosen_full = _prompt_completion(tokenizer, example["prompt"], example["chosen"], where)
    _, rejected_full = _prompt_completion(tokenizer, example["prompt"], example["rejected"], where)
    n_prompt = min(_common_prefix(prompt_ids, chosen_full), _common_prefix(prompt_ids, rejected_full))
    if max_length is not None and n_prompt >= max_length:
        return None
    return {"prompt_ids": prompt_ids[:n_prompt], "chosen_ids": chosen_full[n_prompt:],
            "rejected_ids": rejected_full[n_prompt:]}


def tokenize_all(records: Any, tokenizer: Any, max_length: int | None, kind: str
                 ) -> tuple[list[dict[str, list[int]]], SkipCounter]:
    """Tokenise every record (``kind`` ``"sft"`` or ``"preference"``); skipped records are counted and logged.
    Raises ValueError when no record is left."""
    fn = tokenize_sft if kind == "sft" else tokenize_preference
    out, skipped = [], SkipCounter()
    for i, rec in enumerate(records):
        tok = fn(rec, tokenizer, max_length, index=i)
        if tok is None:
            skipped.add("prompt_too_long")
        else:
            out.append(tok)
    if skipped.total:
        logger.warning("%s data: skipped %d of %d records whose prompt fills max_length=%s", kind,
                       skipped.total, skipped.total + len(out), max_length)
    if not out:
        raise ValueError(f"{kind} data: no usable record (empty input, or every prompt is longer than "
                         f"max_length={max_length})")
    return out, skipped


def collate_sft(examples: list[dict[str, list[int]]], pad_token_id: int) -> dict[str, Tensor]:
    """Right-padded ``input_ids``, ``attention_mask``, ``labels`` (TRL's
    ``DataCollatorForLanguageModeling``)."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    return DataCollatorForLanguageModeling(pad_token_id=pad_token_id)(examples)


def collate_preference(examples: list[dict[str, list[int]]], pad_token_id: int,
                       max_length: int | None = None) -> dict[str, Tensor]:
    """TRL's ``DataCollatorForPreference``: rows [chosen; rejected], ``completion_mask`` marks the response,
    sequences truncated to ``max_length`` keeping the start."""
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    return DataCollatorForPreference(pad_token_id=pad_token_id, max_length=max_length)(examples)


def _to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}


def _token_logps(model: Any, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """log p(x_t | x_<t) for t ≥ 1, shape (B, T−1), float32."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    logits = logits[:, :-1].float()
    return torch.log_softmax(logits, dim=-1).gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)


def sft_loss(model: Any, batch: Mapping[str, Tensor]) -> Tensor:
    """Token-mean NLL over the labelled (response) tokens of the batch: Σ −log p / #tokens (TRL's
    reduction)."""
    device = next(model.parameters()).device
    b = _to_device(batch, device)
    labels = b["labels"][:, 1:]
    mask = labels != IGNORE_INDEX
    n = mask.sum()
    if int(n) == 0:
        raise ValueError("SFT batch has no response token (all labels are -100)")
    logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], use_cache=False).logits
    logits = logits[:, :-1].float()
    nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=IGNORE_INDEX,
                          reduction="sum")
    return nll / n


def sequence_logps(model: Any, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Summed response log-probs of a collated preference batch, one concatenated forward.

    Returns ``(chosen_logps, rejected_logps, completion_lengths)``; lengths are (2B,) [chosen; rejected]."""
    device = next(model.parameters()).device
    b = _to_device(batch, device)
    mask = b["completion_mask"][:, 1:].to(torch.float32)
    logps = (_token_logps(model, b["input_ids"], b["attention_mask"]) * mask).sum(dim=1)
    chosen, rejected = logps.chunk(2, dim=0)
    return chosen, rejected, b["completion_mask"].sum(dim=1)


def dpo_loss(policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor, *,
             beta: float = 0.1, label_smoothing: float = 0.0, loss_type: str = "sigmoid",
             chosen_lengths: Tensor | None = None, rejected_lengths: Tensor | None = None) -> Tensor:
    """DPO / cDPO (``"sigmoid"``) or length-normalised IPO (``"ipo"``, needs the lengths) from
    summed log-probs;
    see the module docstring for the formulas. Returns the mean over pairs."""
    chosen_lr = policy_chosen - ref_chosen
    rejected_lr = policy_rejected - ref_rejected
    if loss_type == "sigmoid":
        delta = chosen_lr - rejected_lr
        losses = (-(1 - label_smoothing) * F.logsigmoid(beta * delta)
                  - label_smoothing * F.logsigmoid(-beta * delta))
    elif loss_type == "ipo":
        if chosen_lengths is None or rejected_lengths is None:
            raise ValueError("IPO needs chosen_lengths and rejected_lengths (response token counts)")
        delta = chosen_lr / chosen_lengths.clamp(min=1) - rejected_lr / rejected_lengths.clamp(min=1)
        losses = (delta - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"loss_type must be 'sigmoid' or 'ipo', got {loss_type!r}")
    return losses.mean()


def reference_context(model: Any, ref_model: Any | None):
    """Context in which ``ref`` (returned by the caller's choice) acts as the reference: the PEFT adapters of
    ``model`` disabled when ``ref_model`` is None, a null context otherwise."""
    if ref_model is not None:
        return contextlib.nullcontext()
    if hasattr(model, "disable_adapter"):
        return model.disable_adapter()
    raise ValueError("no reference model: pass ref_model, or use a PEFT model (its adapter-disabled base is "
                     "the reference)")


def dpo_loss_from_batch(model: Any, batch: Mapping[str, Tensor], *, ref_model: Any | None = None,
                        beta: float = 0.1, label_smoothing: float = 0.0,
                        loss_type: str = "sigmoid") -> Tensor:
    """DPO loss of a collated preference batch: policy log-probs with grad, reference under no-grad (a frozen
    ``ref_model``, or ``model`` with adapters disabled when ``ref_model`` is None)."""
    chosen, rejected, lengths = sequence_logps(model, batch)
    with torch.no_grad(), reference_context(model, ref_model):
        ref_chosen, ref_rejected, _ = sequence_logps(ref_model if ref_model is not None else model, batch)
    c_len, r_len = lengths.to(chosen.dtype).chunk(2, dim=0)
    return dpo_loss(chosen, rejected, ref_chosen.detach(), ref_rejected.detach(), beta=beta,
                    label_smoothing=label_smoothing, loss_type=loss_type, chosen_lengths=c_len,
                    rejected_lengths=r_len)
