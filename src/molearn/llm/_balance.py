"""Any molearn balancing method on K language-model losses, inside ``transformers.Trainer``.

:class:`BalancedTrainer` replaces the Trainer's single-loss backward by a :class:`molearn.Balancer` step:
the user's ``loss_fn(model, inputs)`` gives K losses on the batch, the method (MGDA, CAGrad, FAMO, ...)
combines them and writes ``.grad`` on the *trainable* parameters only (the LoRA adapters when the model is a
PEFT model; frozen weights never get a gradient). Everything after the backward is the Trainer's own:
gradient clipping, optimizer, scheduler, logging, checkpoints of model and optimizer.

Limits, decided here (each raises a clear error at construction):

* methods that draw several independent batches per step (MoDo, SDMGrad) need
  :meth:`molearn.Balancer.step` in an own loop; closure methods (SAMO) work (they re-evaluate ``loss_fn``
  on the step's batch);
* ``gradient_accumulation_steps > 1`` only with loss-only methods without a post-step update (EW, RLW, DWA,
  UW, STCH, ...): each micro-batch is balanced on its own and ``Σ w_i L_i / steps`` accumulates. Methods
  that need per-objective gradients (their Gramian would be a micro-batch's, not the step's) and FAMO (its
  update needs the losses of the step's batch after the step) are rejected;
* ``fp16`` (its GradScaler scales only the Trainer's own backward) is rejected: use ``bf16`` or fp32;
* DeepSpeed, FSDP or ``DataParallel`` (gradient reduction runs in hooks of the Trainer's single backward)
  are rejected. Several processes under DistributedDataParallel (``torchrun``, ``accelerate launch``) are
  exact: the Trainer wraps the model in DDP, the Balancer (built at the first step from the wrapped model)
  detects it and every rank writes the update of the union of the ranks' batches (docs/distributed.md);
  the Trainer's own backward, with DDP's all-reduce, is not called;
* gradient checkpointing only with ``gradient_checkpointing_kwargs={"use_reentrant": False}`` (re-entrant
  checkpointing does not support the ``inputs=`` / ``autograd.grad`` passes the Balancer makes).

Methods that learn from the post-step losses (FAMO) get them from a callback right after the optimizer
step: the K losses of the same batch recomputed under ``no_grad`` (one extra forward, as in the official FAMO
code). The method's state is not saved in Trainer checkpoints (``trainer.balancer.state_dict()`` holds it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from .. import Balancer, StepInfo
from ..methods import Method, get

__all__ = ["BalancedTrainer"]

LossFn = Callable[[Any, Any], "Sequence[Tensor] | Tensor"]

try:
    from transformers import Trainer, TrainerCallback
except ImportError as exc:  # pragma: no cover
    raise ImportError("BalancedTrainer needs transformers: pip install 'molearn[llm]'") from exc


class _AfterStep(TrainerCallback):
    """Feeds the post-step losses of the step's batch to methods that want them (FAMO)."""

    def __init__(self, owner: BalancedTrainer) -> None:
        self.owner = owner

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.owner._after_step()


class BalancedTrainer(Trainer):
    """``transformers.Trainer`` whose training step balances K losses with a molearn method.

    Args:
        method: a :class:`molearn.methods.Method` or a method name for :func:`molearn.methods.get`
            (``"mgda"``, ``"famo"``, ...), constructed with ``method_kwargs``.
        loss_fn: ``loss_fn(model, inputs)`` → the K losses of the batch (a sequence of scalars or a (K,)
            tensor), computed from ``model`` so that they carry the graph. ``inputs`` is the collated batch
            after the Trainer moved it to the device (set ``remove_unused_columns=False`` when its keys are
            not arguments of the model's ``forward``).
        method_kwargs: keyword arguments of the method when ``method`` is a name.
        balancer_kwargs: keyword arguments of :class:`molearn.Balancer` (``mode``, ``on_nonfinite``,
            ``task_grad``, ``check_finite``); ``shared`` (the trainable parameters), ``tasks`` (none) and
            ``module`` are set here.
        *args, **kwargs: those of ``transformers.Trainer`` (``model``, ``args``, ``train_dataset``,
            ``data_collator``, ``callbacks``, ...).

    Logging: at the Trainer's logging steps (``logging_steps``) the log gets ``loss_i`` and ``weight_i``
    (means over the steps since the last log) and, for methods that compute per-objective gradients and
    K ≤ 4, ``cos_i_j`` (the gradients' cosines; negative = conflict). The logged ``loss`` is the Trainer's
    usual running mean of the returned step loss ``Σ w_i L_i`` (``Σ L_i`` for methods that return a direction
    instead of weights). :attr:`last_info` holds the last step's :class:`molearn.StepInfo`.

    Evaluation (``trainer.evaluate()``) is the Trainer's own (the model's loss on the eval batches).
    Non-finite losses raise :class:`molearn.NonFiniteLossError` naming the objective (or skip the step
    with ``balancer_kwargs={"on_nonfinite": "skip"}``).
    """

    def __init__(self, *args: Any, method: Method | str, loss_fn: LossFn,
                 method_kwargs: Mapping[str, Any] | None = None,
                 balancer_kwargs: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        if isinstance(method, str):
            method = get(method, **dict(method_kwargs or {}))
        elif not isinstance(method, Method):
            raise TypeError(f"method must be a molearn Method or a method name, got {type(method).__name__}")
        elif method_kwargs:
            raise TypeError("method_kwargs are only used with a method name; the method is already built")
        if not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable as loss_fn(model, inputs), "
                            f"got {type(loss_fn).__name__}")
        bk = dict(balancer_kwargs or {})
        reserved = {"shared", "tasks", "module"} & set(bk)
        if reserved:
            raise ValueError(f"balancer_kwargs may not set {sorted(reserved)}: BalancedTrainer sets them")
        targs = kwargs.get("args", args[1] if len(args) > 1 else None)
        if targs is not None and getattr(targs, "fp16", False):
            raise ValueError("BalancedTrainer does not support fp16: its GradScaler scales only the "
                             "Trainer's own backward pass; use bf16=True or fp32")
        needs = method.needs
        name = type(method).__name__
        if needs.batches > 1:
            raise TypeError(f"{name} needs {needs.batches} independent batches per step; BalancedTrainer "
                            "gets one batch per step from the Trainer: use molearn.Balancer.step in an "
                            "own loop")
        super().__init__(*args, **kwargs)
        a = self.args
        ga = int(a.gradient_accumulation_steps)
        if ga > 1 and (needs.gradients or needs.after_step or needs.closure):
            why = "a post-step loss update" if needs.after_step and not needs.gradients else \
                "per-objective gradients of the whole step"
            raise ValueError(f"gradient_accumulation_steps={ga} is not supported with {name}, which needs "
                             f"{why}; use gradient_accumulation_steps=1 with a larger batch")
        if getattr(self, "is_deepspeed_enabled", False) or getattr(self, "is_fsdp_enabled", False):
            raise ValueError("BalancedTrainer does not support DeepSpeed or FSDP "
                             "(they own the backward pass)")
        if a.n_gpu > 1:
            raise ValueError(f"BalancedTrainer does not support DataParallel (n_gpu={a.n_gpu} in one "
                             "process): its gradient reduction runs in the Trainer's single backward pass. "
                             "Launch one process per GPU (torchrun or accelerate launch): DDP is supported")
        if a.world_size > 1:
            from transformers.training_args import ParallelMode

            if a.parallel_mode != ParallelMode.DISTRIBUTED:
                raise ValueError(f"BalancedTrainer supports several processes under DistributedDataParallel "
                                 f"(torchrun, accelerate launch) only, not {a.parallel_mode.value!r}")
        if a.gradient_checkpointing and (a.gradient_checkpointing_kwargs or {}).get("use_reentrant", True):
            raise ValueError("gradient checkpointing needs gradient_checkpointing_kwargs="
                             "{'use_reentrant': False} with BalancedTrainer (re-entrant checkpointing breaks "
                             "per-objective backward passes)")
        self.method = method
        self.loss_fn = loss_fn
        self._balancer_kwargs = bk
        self.balancer: Balancer | None = None
        self.last_info: StepInfo | None = None
        self._pending: Any = None  # the last step's batch, for the post-step update
        self._sums: dict[str, Tensor] = {}
        self._count = 0
        self.add_callback(_AfterStep(self))

    # ------------------------------------------------------------------ step
    def _build_balancer(self, model: torch.nn.Module) -> Balancer:
        trainable = [p for p in model.parameters() if p.requires_grad]
        if not trainable:
            raise ValueError("the model has no trainable parameter (requires_grad=True) to balance")
        return Balancer(self.method, trainable, [], module=model, **self._balancer_kwargs)

    def training_step(self, model: torch.nn.Module, inputs: dict[str, Any],
                      num_items_in_batch: Tensor | int | None = None) -> Tensor:
        """Forward, balanced backward into ``.grad``; returns the detached ``Σ w_i L_i`` (over the
        accumulation steps); the Trainer then clips, steps the optimizer and the scheduler."""
        model.train()
        if hasattr(self.optimizer, "train") and callable(self.optimizer.train):
            self.optimizer.train()
        inputs = self._prepare_inputs(inputs)
        if self.balancer is None:
            self.balancer = self._build_balancer(model)
        with self.compute_loss_context_manager():
            info = self.balancer.step(lambda batch: self.loss_fn(model, batch), lambda: inputs)
        self.last_info = info
        self._pending = None if info.skipped else inputs
        losses = info.losses
        loss = (info.weights.to(losses.dtype) * losses).sum() if info.weights is not None else losses.sum()
        if not info.skipped:  # a skipped step's NaN loss is filtered by the Trainer (logging_nan_inf_filter)
            self._record(info)
        return loss.detach() / self.current_gradient_accumulation_steps

    def _after_step(self) -> None:
        """Post-step losses on the step's batch → ``Balancer.update`` (methods with ``Needs.after_step``)."""
        batch, self._pending = self._pending, None
        if batch is None or self.balancer is None or not self.method.needs.after_step:
            return
        with torch.no_grad(), self.compute_loss_context_manager():
            after = self.loss_fn(self.model, batch)
        if not isinstance(after, Tensor):
            after = torch.stack([torch.as_tensor(x).reshape(()) for x in after])
        self.balancer.update(after.detach().float())

    # ------------------------------------------------------------------ logging
    def _record(self, info: StepInfo) -> None:
        # running sums stay tensors; they are read on the host only when the Trainer logs
        values = {f"loss_{i}": v for i, v in enumerate(info.losses.detach().float())}
        if info.weights is not None:
            values.update({f"weight_{i}": v for i, v in enumerate(info.weights.detach().float())})
        k = int(info.losses.shape[0])
        if info.cosines is not None and k <= 4:
            cos = info.cosines.detach().float()
            values.update({f"cos_{i}_{j}": cos[i, j] for i in range(k) for j in range(i + 1, k)})
        for key, v in values.items():
            self._sums[key] = self._sums[key] + v if key in self._sums else v.clone()
        self._count += 1

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """Adds the means of ``loss_i``, ``weight_i`` (and ``cos_i_j``) since the last training log."""
        if "loss" in logs and self._count:
            logs = {**logs, **{key: float(v) / self._count for key, v in self._sums.items()}}
            self._sums, self._count = {}, 0
        super().log(logs, *args, **kwargs)
