"""Joint SFT + DPO post-training: ALRIGHT, MAXRIGHT, Mix and the sequential baselines SFT→DPO, DPO→SFT.

Paper: Fernando, Shen, Ram, Zhou, Samulowitz, Baracaldo, Chen, "Mitigating Forgetting in LLM Supervised
Fine-Tuning and Preference Learning" (arXiv 2410.15483, 2024; official code heshandevaka/XRIGHT, OpenRLHF).
λ is the DPO weight; the trade-off target is (1−λ) f_SFT + λ f_DPO.

- ALRIGHT: each step draws DPO with probability λ (else SFT) from a seeded generator and steps on that
  objective's *unweighted* loss with the next batch of that objective only.
- MAXRIGHT: stale weighted gaps s_SFT = (1−λ)(L_SFT − f*_SFT), s_DPO = λ(L_DPO − f*_DPO), initialised from
  one no-grad batch each; the step goes to argmax s (ties → SFT), the stepped objective's gap is refreshed
  from its training loss, and both gaps are recomputed under no-grad, on the step's own training batches,
  every ``maxright_refresh`` steps (0 = never, the official ``--max_eval_steps -1``).
- Mix: (1−λ) L_SFT + λ L_DPO every step (costs both objectives).
- sft_dpo / dpo_sft: one stage after the other; the DPO reference is the model at the start of the DPO stage
  (after SFT for sft_dpo, as in the paper).

**MAXRIGHT's f* is a value of the training objective.** In the official trainer
(``xright/trainer/sft_dpo_maxright_trainer.py``, ``SFT_DPO_MAXRIGHT_Trainer.fit``) L is always the loss of a
*training* batch (the initial stale values from the first batch of each train loader, the refresh every
``max_eval_steps`` from the current step's train batches, the stepped objective's value from its training
loss), and ``sft_opt`` / ``dpo_opt`` are the objective values of separately trained single-objective models
(``examples/scripts/run_sft_dpo_optim_*.sh``) whose evaluation runs with ``--eval_split dummy``: that split
does not exist, so ``xright/utils/utils.py:blending_datasets`` evaluates on the first 3 % of the *training*
data, as the mean of per-batch losses. f* and L therefore come from the same data with the same reduction.
An f* measured on held-out data is not comparable with L (a held-out loss is higher, so the gap of a
well-fitted objective goes negative and MAXRIGHT stops stepping on it). :func:`objective_values` measures
f on the training data with the running loss's reduction, and ``JointConfig.measure_f_star`` records it at
the end of each stage of a sequential run (the stage's single-objective optimum).

Defaults from the official scripts: β 0.1, lr 5e-5, AdamW betas (0.9, 0.95), weight decay 0, constant LR,
grad clip 1.0, LoRA r=α=16, eval every ``eval_steps``, MAXRIGHT refresh every 10 steps (``max_eval_steps``).
Deviations: the official code samples ALRIGHT objectives with numpy's global RNG and uses DeepSpeed FusedAdam;
here a ``torch.Generator`` seeded by ``config.seed`` and ``torch.optim.AdamW``. The official refresh counter
restarts every epoch (``step % max_eval_steps`` with the in-epoch step); here it counts the steps of the run.
The stopping rule (eps-close to f* or a reference Pareto point) is not implemented: runs last ``max_steps``.
For ``dpo_sft`` the official reference model is an SFT-on-chosen model (``train_sft_pref``); here it is the
model at the start (documented).
"""

from __future__ import annotations

import copy
import logging
import math
import resource
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["RECIPES", "JointConfig", "JointResult", "maxright_choice", "objective_values", "train_joint"]

logger = logging.getLogger("molearn.llm")

RECIPES = ("alright", "maxright", "mix", "sft_dpo", "dpo_sft")


@dataclass
class JointConfig:
    """One configuration for all five recipes.

    Attributes:
        recipe: ``"alright" | "maxright" | "mix" | "sft_dpo" | "dpo_sft"``.
        lambd: DPO weight λ ∈ [0, 1] (official ``--lambd``). For the sequential recipes it is only used to
            report the weighted objective; ValueError outside [0, 1].
        beta, label_smoothing, loss_type: DPO loss settings (``"sigmoid"`` or ``"ipo"``), see ``dpo_loss``.
        max_steps: total optimizer steps. Sequential recipes split them ``max_steps // 2`` first stage, the
            rest second stage, unless ``stage_steps=(n1, n2)`` is given.
        lr, batch_size, max_length, grad_clip: optimizer / batching (batch_size is per objective; SFT and
            DPO batches have the same size; sequences are truncated to ``max_length`` tokens, see
            ``_losses.tokenize_*`` for how over-long prompts are handled).
        maxright_refresh: MAXRIGHT recomputes both stale gaps every this many steps (official 10; 0 = never
            after the initial values, the official ``--max_eval_steps -1``).
        f_star_sft, f_star_dpo: optimal values of the separate objectives *on the training data* with the
            running loss's reduction (:func:`objective_values`; the official ``sft_opt`` / ``dpo_opt``), 0
            when unknown. A held-out (eval) loss is not comparable with MAXRIGHT's training-batch losses.
        measure_f_star: record, at the last step of the first stage, that stage's objective(s) on the
            training data (:func:`objective_values`) as ``train_sft`` / ``train_dpo`` in the history row (for
            sequential recipes: the single-objective value f* of the first stage; for the others, both at the
            end); costs one pass over the training set.
        eval_steps: evaluate both eval losses every this many steps (and at the end); 0 = only at the end.
        seed: seeds the objective sampler, data order and LoRA init.
        lora, lora_r, lora_alpha, target_modules: PEFT LoRA (default ``["q_proj", "v_proj"]``) or full
            fine-tuning with ``lora=False`` (then a frozen deep copy is the DPO reference).
        output_dir: Trainer output dir (a temporary one when None; nothing is saved).
        stage_steps: optional explicit (first stage, second stage) steps for the sequential recipes.
    """

    recipe: str
    lambd: float = 0.5
    beta: float = 0.1
    label_smoothing: float = 0.0
    loss_type: str = "sigmoid"
    max_steps: int = 100
    lr: float = 5e-5
    batch_size: int = 4
    max_length: int = 256
    grad_clip: float = 1.0
    maxright_refresh: int = 10
    f_star_sft: float = 0.0
    f_star_dpo: float = 0.0
    eval_steps: int = 10
    seed: int = 0
    lora: bool = True
    lora_r: int = 16
    lora_alpha: int = 16
    target_modules: list[str] | None = None
    output_dir: str | None = None
    stage_steps: tuple[int, int] | None = None
    measure_f_star: bool = False

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {RECIPES}, got {self.recipe!r}")
        lam = self.lambd
        if not (isinstance(lam, (int, float)) and math.isfinite(lam) and 0.0 <= lam <= 1.0):
            raise ValueError(f"lambd (the DPO weight λ) must be in [0, 1], got {self.lambd!r}")
        if self.loss_type not in ("sigmoid", "ipo"):
            raise ValueError(f"loss_type must be 'sigmoid' or 'ipo', got {self.loss_type!r}")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing must be in [0, 0.5), got {self.label_smoothing!r}")
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta!r}")
        for name in ("max_steps", "batch_size", "max_length"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if int(self.maxright_refresh) < 0:
            raise ValueError(f"maxright_refresh must be >= 0 (0 = never), got {self.maxright_refresh!r}")
        if self.eval_steps < 0:
            raise ValueError(f"eval_steps must be >= 0, got {self.eval_steps!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if self.stage_steps is not None and (len(self.stage_steps) != 2 or min(self.stage_steps) < 0):
            raise ValueError(f"stage_steps must be two non-negative ints, got {self.stage_steps!r}")

    def stages(self) -> tuple[int, int]:
        """Steps of the (first, second) stage of a sequential recipe."""
        if self.stage_steps is not None:
            return int(self.stage_steps[0]), int(self.stage_steps[1])
        return self.max_steps // 2, self.max_steps - self.max_steps // 2


@dataclass
class JointResult:
    """What ``train_joint`` returns.

    Attributes:
        recipe, lambd: from the config.
        history: one dict per optimizer step: ``step`` (1-based), ``objective`` (``"sft"``, ``"dpo"`` or
            ``"mix"``), ``loss_sft`` / ``loss_dpo`` (training losses computed at that step, when computed),
            and ``eval_sft`` / ``eval_dpo`` on evaluation steps; MAXRIGHT adds ``gap_sft`` / ``gap_dpo``.
        eval_sft, eval_dpo: final eval losses (train-set losses on one pass when no eval set was given).
        steps_per_objective: ``{"sft": n, "dpo": m}`` (Mix counts each step for both).
        seconds_per_step: mean wall time of an optimizer step (evaluation excluded).
        cpu_seconds_per_step: mean CPU time (``time.process_time``, all threads of the process) of an
            optimizer step (evaluation excluded); less sensitive than wall time to other load on the machine.
        peak_memory_bytes: CUDA max allocated when on GPU, else the process peak RSS.
        model: the trained model (a PEFT model with LoRA).
        skipped: records skipped because their prompt fills ``max_length`` (``{"sft": n, "preference": m}``).
    """

    recipe: str
    lambd: float
    history: list[dict[str, Any]] = field(default_factory=list)
    eval_sft: float = float("nan")
    eval_dpo: float = float("nan")
    steps_per_objective: dict[str, int] = field(default_factory=dict)
    seconds_per_step: float = float("nan")
    cpu_seconds_per_step: float = float("nan")
    peak_memory_bytes: int = 0
    model: Any = None
    skipped: dict[str, int] = field(default_factory=dict)


def _peak_rss() -> int:
    """Current resident set size in bytes (from /proc), else the process peak (ru_maxrss)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class _Stream:
    """Endless seeded stream of collated batches of one objective (reshuffled every pass)."""

    def __init__(self, examples: list, collate, batch_size: int, seed: int) -> None:
        self.examples, self.collate, self.batch_size = examples, collate, batch_size
        self.gen = torch.Generator().manual_seed(seed)
        self.order: list[int] = []

    def next(self):
        idx = []
        while len(idx) < self.batch_size:
            if not self.order:
                self.order = torch.randperm(len(self.examples), generator=self.gen).tolist()
            idx.append(self.order.pop())
        return self.collate([self.examples[i] for i in idx])


def _build_trainer_class():
    from transformers import Trainer, TrainerCallback

    from ._losses import dpo_loss_from_batch, sft_loss

    class JointTrainer(Trainer):
        """``transformers.Trainer`` whose ``compute_loss`` ignores the dummy step batch and picks
        the objective
        of the step (schedule per recipe); optimizer, clipping, constant LR and device handling are
        the Trainer's."""

        def __init__(self, *a, joint: dict[str, Any], **kw) -> None:
            super().__init__(*a, **kw)
            self.j = joint
            self.rng = torch.Generator().manual_seed(joint["seed"])
            self.gaps: dict[str, float] = {}
            self.pending: dict[str, Any] = {}
            self.local_step = 0

        # -- the two objectives -------------------------------------------------------------------------
        def _sft(self, model, batch):
            return sft_loss(model, batch)

        def _dpo(self, model, batch):
            c = self.j["config"]
            return dpo_loss_from_batch(model, batch, ref_model=self.j["ref_model"], beta=c.beta,
                                       label_smoothing=c.label_smoothing, loss_type=c.loss_type)

        def choose(self, model) -> tuple[str, Any, Any]:
            """(objective, sft batch or None, dpo batch or None) of this step; updates MAXRIGHT gaps."""
            c, mode = self.j["config"], self.j["mode"]
            lam = c.lambd
            if mode in ("sft", "dpo"):
                return mode, (self.j["sft"].next() if mode == "sft" else None), (
                    self.j["dpo"].next() if mode == "dpo" else None)
            if mode == "mix":
                return "mix", self.j["sft"].next(), self.j["dpo"].next()
            if mode == "alright":
                dpo = bool(torch.rand((), generator=self.rng).item() < lam)
                return ("dpo", None, self.j["dpo"].next()) if dpo else ("sft", self.j["sft"].next(), None)
            # maxright (official SFT_DPO_MAXRIGHT_Trainer.fit): both train batches drawn every step; both
            # gaps computed under no-grad on them at the first step and every `maxright_refresh` steps
            sb, db = self.j["sft"].next(), self.j["dpo"].next()
            first = not self.gaps
            if first or (c.maxright_refresh and self.local_step % c.maxright_refresh == 0):
                with torch.no_grad():
                    self.gaps = {"sft": (1 - lam) * (float(self._sft(model, sb)) - c.f_star_sft),
                                 "dpo": lam * (float(self._dpo(model, db)) - c.f_star_dpo)}
                self.pending["refreshed"] = True
                if first and min(self.gaps.values()) < 0:
                    logger.warning("MAXRIGHT: initial gap below 0 (%s): f* is above the training loss of "
                                   "the start model; was f* measured on the training data "
                                   "(objective_values)?", self.gaps)
            obj = maxright_choice(self.gaps["sft"], self.gaps["dpo"])
            return obj, sb, db

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            c = self.j["config"]
            obj, sb, db = self.choose(model)
            rec = self.pending
            if obj == "mix":
                ls, ld = self._sft(model, sb), self._dpo(model, db)
                loss = (1 - c.lambd) * ls + c.lambd * ld
                rec.update(loss_sft=float(ls.detach()), loss_dpo=float(ld.detach()))
            elif obj == "sft":
                loss = self._sft(model, sb)
                rec["loss_sft"] = float(loss.detach())
            else:
                loss = self._dpo(model, db)
                rec["loss_dpo"] = float(loss.detach())
            if self.j["mode"] == "maxright":  # stepped objective's gap ← its training loss
                w, f = (1 - c.lambd, c.f_star_sft) if obj == "sft" else (c.lambd, c.f_star_dpo)
                self.gaps[obj] = w * (float(loss.detach()) - f)
                rec.update(gap_sft=self.gaps["sft"], gap_dpo=self.gaps["dpo"])
            rec["objective"] = obj
            self.local_step += 1
            return (loss, None) if return_outputs else loss

    class StepLog(TrainerCallback):
        """Times each step, records the history row and evaluates both objectives every ``eval_steps``."""

        def __init__(self, owner: dict[str, Any]) -> None:
            self.owner = owner
            self.t0 = 0.0

        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()
            self.c0 = time.process_time()

        def on_step_end(self, args, state, control, model=None, **kw):
            o = self.owner
            o["times"].append(time.perf_counter() - self.t0)
            o["cpu"].append(time.process_time() - self.c0)
            o["mem"] = max(o["mem"], _memory_now())
            tr = o["trainer"]
            row = {"step": o["offset"] + state.global_step, **tr.pending}
            tr.pending = {}
            c = o["config"]
            last = state.global_step == state.max_steps and o["final_stage"]
            if (c.eval_steps and (o["offset"] + state.global_step) % c.eval_steps == 0) or last:
                row.update(o["evaluate"](tr.model))
            if c.measure_f_star and state.global_step == state.max_steps and o["offset"] == 0:
                row.update(o["f_star"](tr.model, tr.j["mode"], tr.j["ref_model"]))
            o["history"].append(row)

    return JointTrainer, StepLog


def maxright_choice(gap_sft: float, gap_dpo: float) -> str:
    """MAXRIGHT's pick: the objective with the larger weighted stale gap (ties → SFT, as ``np.argmax``)."""
    return "dpo" if gap_dpo > gap_sft else "sft"


def _mean_batch_losses(model, sft_tok: list, pref_tok: list, pad_id: int, config: JointConfig, ref_model,
                       batch_size: int) -> tuple[float, float]:
    from ._losses import collate_preference, collate_sft, dpo_loss_from_batch, sft_loss

    was_training = model.training
    model.eval()
    out = []
    with torch.no_grad():
        vals = [float(sft_loss(model, collate_sft(sft_tok[i:i + batch_size], pad_id)))
                for i in range(0, len(sft_tok), batch_size)]
        out.append(sum(vals) / len(vals) if vals else float("nan"))
        vals = [float(dpo_loss_from_batch(model, collate_preference(pref_tok[i:i + batch_size], pad_id,
                                                                    config.max_length),
                                          ref_model=ref_model, beta=config.beta,
                                          label_smoothing=config.label_smoothing, loss_type=config.loss_type))
                for i in range(0, len(pref_tok), batch_size)]
        out.append(sum(vals) / len(vals) if vals else float("nan"))
    if was_training:
        model.train()
    return out[0], out[1]


def objective_values(model, tokenizer, sft_data, pref_data, config: JointConfig, *, ref_model=None,
                     batch_size: int | None = None) -> tuple[float, float]:
    """(f_SFT, f_DPO) of ``model`` on the given (training) data with the reduction of MAXRIGHT's running loss.

    Each objective is the mean, over consecutive batches of ``batch_size`` (default ``config.batch_size``)
    records, of the batch loss the trainer steps on (``sft_loss``: token mean of the batch; DPO: mean over
    the batch's pairs), under no-grad in eval mode, as the official evaluation (``sft_evaluate`` /
    ``rlhf_evaluate`` of ``xright/trainer/sft_dpo_maxright_trainer.py``: ``loss_sum / times``). On the
    *training* data this is the quantity MAXRIGHT's f* must be (the official ``sft_opt`` / ``dpo_opt``
    are evaluated on a subset of the training data; see the module docstring). An empty data set gives NaN.

    Args:
        model: the model (a PEFT model's adapter-disabled base is the DPO reference when ``ref_model`` is
            None).
        tokenizer: its tokenizer; sft_data / pref_data: records as for :func:`train_joint` (None = skip).
        config: a ``JointConfig`` (``max_length``, ``beta``, loss settings, default batch size).
    """
    from ._losses import tokenize_all

    if not isinstance(config, JointConfig):
        raise TypeError(f"config must be a JointConfig, got {type(config).__name__}")
    bs = int(batch_size or config.batch_size)
    if bs < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    sft_tok = tokenize_all(sft_data, tokenizer, config.max_length, "sft")[0] if sft_data is not None else []
    pref_tok = (tokenize_all(pref_data, tokenizer, config.max_length, "preference")[0]
                if pref_data is not None else [])
    return _mean_batch_losses(model, sft_tok, pref_tok, int(tokenizer.pad_token_id), config, ref_model, bs)


def _memory_now() -> int:
    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    return _peak_rss()


def _evaluate(model, sft_eval: list, pref_eval: list, pad_id: int, config: JointConfig, ref_model) -> dict:
    """Eval losses over the whole eval sets: SFT token mean (Σ NLL / #tokens), DPO mean over pairs."""
    from ._losses import collate_preference, collate_sft, dpo_loss_from_batch, sft_loss

    was_training = model.training
    model.eval()
    bs = config.batch_size
    tot_nll = tot_tok = 0.0
    tot_dpo = n_pairs = 0.0
    with torch.no_grad():
        for i in range(0, len(sft_eval), bs):
            batch = collate_sft(sft_eval[i:i + bs], pad_id)
            n = float((batch["labels"][:, 1:] != -100).sum())
            tot_nll += float(sft_loss(model, batch)) * n
            tot_tok += n
        for i in range(0, len(pref_eval), bs):
            chunk = pref_eval[i:i + bs]
            batch = collate_preference(chunk, pad_id, config.max_length)
            tot_dpo += float(dpo_loss_from_batch(model, batch, ref_model=ref_model, beta=config.beta,
                                                 label_smoothing=config.label_smoothing,
                                                 loss_type=config.loss_type)) * len(chunk)
            n_pairs += len(chunk)
    if was_training:
        model.train()
    return {"eval_sft": tot_nll / max(tot_tok, 1.0), "eval_dpo": tot_dpo / max(n_pairs, 1.0)}


def _add_lora(model, config: JointConfig, seed: int):
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:  # pragma: no cover
        raise ImportError("LoRA needs peft: pip install 'molearn[llm]'") from exc
    torch.manual_seed(seed)
    targets = config.target_modules or ["q_proj", "v_proj"]
    return get_peft_model(model, LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                                            target_modules=targets, task_type="CAUSAL_LM"))


def train_joint(model, tokenizer, sft_train, pref_train, config: JointConfig, *, sft_eval=None,
                pref_eval=None, evaluate=None) -> JointResult:
    """Train ``model`` on SFT data and preference data with ``config.recipe``.

    Args:
        model: a causal LM (``transformers.PreTrainedModel``); wrapped with a fresh LoRA adapter when
            ``config.lora`` (the adapter-disabled base is then the DPO reference), otherwise trained in full
            with a frozen deep copy as the reference.
        tokenizer: its tokenizer, with a chat template (pad token set to eos when missing).
        sft_train: ``datasets.Dataset`` (or list of dicts) with a conversational ``messages`` column
            (last message = assistant response, the loss target) or ``prompt``/``completion`` fields.
        pref_train: ``datasets.Dataset`` (or list of dicts) with ``prompt``/``chosen``/``rejected`` strings.
        config: a ``JointConfig``.
        sft_eval, pref_eval: eval sets in the same formats (the training sets are used when None).
        evaluate: optional ``callable(model) -> dict`` replacing the built-in evaluation on evaluation steps
            (its items go into the history row; ``eval_sft`` / ``eval_dpo`` items give the final values).

    Bad records (missing fields, empty responses) raise ValueError naming the record; records whose prompt
    fills ``max_length`` are skipped, counted (``JointResult.skipped``) and logged.

    Returns:
        A ``JointResult``.
    """
    try:
        from transformers import TrainingArguments
    except ImportError as exc:  # pragma: no cover
        raise ImportError("molearn.llm needs transformers, trl and peft: pip install 'molearn[llm]'") from exc
    from ._losses import collate_preference, collate_sft, tokenize_all

    if not isinstance(config, JointConfig):
        raise TypeError(f"config must be a JointConfig, got {type(config).__name__}")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    pad_id = int(tokenizer.pad_token_id)
    sft_tr, skip_s = tokenize_all(sft_train, tokenizer, config.max_length, "sft")
    pref_tr, skip_p = tokenize_all(pref_train, tokenizer, config.max_length, "preference")
    sft_ev = (tokenize_all(sft_eval, tokenizer, config.max_length, "sft")[0]
              if sft_eval is not None else sft_tr)
    pref_ev = (tokenize_all(pref_eval, tokenizer, config.max_length, "preference")[0]
               if pref_eval is not None else pref_tr)

    def col_s(ex):
        return collate_sft(ex, pad_id)

    def col_p(ex):
        return collate_preference(ex, pad_id, config.max_length)

    if config.recipe in ("sft_dpo", "dpo_sft"):
        first, second = config.recipe.split("_")
        n1, n2 = config.stages()
        stages = [(first, n1), (second, n2)]
    else:
        stages = [(config.recipe, config.max_steps)]
    stages = [(m, n) for m, n in stages if n > 0]

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    owner: dict[str, Any] = {"times": [], "cpu": [], "mem": 0, "history": [], "config": config, "offset": 0}
    JointTrainer, StepLog = _build_trainer_class()
    streams = {"sft": _Stream(sft_tr, col_s, config.batch_size, config.seed + 1),
               "dpo": _Stream(pref_tr, col_p, config.batch_size, config.seed + 2)}
    ref_model = None
    if config.lora:
        model = _add_lora(model, config, config.seed)
    else:
        ref_model = _frozen_copy(model)
    out_dir = config.output_dir or tempfile.mkdtemp(prefix="molearn_joint_")
    for k, (mode, n_steps) in enumerate(stages):
        if k == 1 and mode == "dpo":  # SFT→DPO: the reference of the DPO stage is the model after SFT
            if config.lora:
                model = model.merge_and_unload()
                model = _add_lora(model, config, config.seed + 17)
            else:
                ref_model = _frozen_copy(model)
        args = TrainingArguments(
            output_dir=out_dir, max_steps=n_steps, per_device_train_batch_size=1, learning_rate=config.lr,
            adam_beta1=0.9, adam_beta2=0.95, weight_decay=0.0, lr_scheduler_type="constant", warmup_steps=0,
            max_grad_norm=config.grad_clip, optim="adamw_torch", logging_strategy="no", save_strategy="no",
            eval_strategy="no", report_to=[], seed=config.seed, remove_unused_columns=False,
            use_cpu=not torch.cuda.is_available(), disable_tqdm=True, dataloader_num_workers=0,
            gradient_accumulation_steps=1)
        dummy = _StepDataset(n_steps)
        joint = {"config": config, "mode": mode, "ref_model": ref_model, "sft": streams["sft"],
                 "dpo": streams["dpo"], "seed": config.seed + 1000 * k}
        trainer = JointTrainer(model=model, args=args, train_dataset=dummy, data_collator=_collate_steps,
                               joint=joint, callbacks=[StepLog(owner)])
        if ref_model is not None:
            ref_model.to(args.device)
        owner.update(trainer=trainer, final_stage=(k == len(stages) - 1),
                     evaluate=(evaluate if evaluate is not None else
                               lambda m, rm=ref_model: _evaluate(m, sft_ev, pref_ev, pad_id, config, rm)),
                     f_star=lambda m, md, rm: _stage_f_star(m, md, rm, sft_tr, pref_tr, pad_id, config))
        trainer.train()
        owner["offset"] += n_steps
        model = trainer.model
    final = {}
    for row in reversed(owner["history"]):
        if "eval_sft" in row:
            final = row
            break
    counts = {"sft": 0, "dpo": 0}
    for row in owner["history"]:
        if row.get("objective") == "mix":
            counts["sft"] += 1
            counts["dpo"] += 1
        elif row.get("objective") in counts:
            counts[row["objective"]] += 1
    times, cpu = owner["times"], owner["cpu"]
    if config.output_dir is None:
        import shutil

        shutil.rmtree(out_dir, ignore_errors=True)
    return JointResult(recipe=config.recipe, lambd=config.lambd, history=owner["history"],
                       eval_sft=float(final.get("eval_sft", float("nan"))),
                       eval_dpo=float(final.get("eval_dpo", float("nan"))), steps_per_objective=counts,
                       seconds_per_step=float(sum(times) / len(times)) if times else float("nan"),
                       cpu_seconds_per_step=float(sum(cpu) / len(cpu)) if cpu else float("nan"),
                       peak_memory_bytes=int(owner["mem"]), model=model,
                       skipped={"sft": skip_s.total, "preference": skip_p.total})


def _stage_f_star(model, mode: str, ref_model, sft_tr: list, pref_tr: list, pad_id: int,
                  config: JointConfig) -> dict[str, float]:
    """The stage's own objective(s) on the training data (``objective_values``' reduction)."""
    f_sft, f_dpo = _mean_batch_losses(model, sft_tr if mode in ("sft", "mix", "alright", "maxright") else [],
                                      pref_tr if mode != "sft" else [], pad_id, config, ref_model,
                                      config.batch_size)
    return {k: v for k, v in (("train_sft", f_sft), ("train_dpo", f_dpo)) if math.isfinite(v)}


def _frozen_copy(model):
    ref = copy.deepcopy(model)
    ref.eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


class _StepDataset(torch.utils.data.Dataset):
    """One dummy item per optimizer step: the Trainer drives the loop, the objectives draw their
    own batches."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, int]:
        return {"step": i}


def _collate_steps(items: list[dict[str, int]]) -> dict[str, torch.Tensor]:
    return {"step": torch.tensor([it["step"] for it in items])}
