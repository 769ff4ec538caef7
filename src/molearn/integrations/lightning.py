"""A ``LightningModule`` that balances K losses with a molearn method (manual optimisation).

Subclass :class:`BalancedModule` instead of ``LightningModule``: define ``objectives(batch, batch_idx)``
(the K losses of the batch) and ``configure_optimizers`` (one optimiser); the training step is
``zero_grad``, :meth:`molearn.Balancer.backward` on the K losses, ``optimizer.step()`` (and the method's
post-step update, FAMO). Under Lightning's DDP strategy (``strategy="ddp"``, ``"ddp_spawn"``, torchrun)
the Balancer finds the strategy's ``DistributedDataParallel`` wrapper and every rank writes the update of the
union of the ranks' batches (docs/distributed.md); Lightning's own gradient all-reduce does not run (the
backward is molearn's, not ``manual_backward``).

Needs ``lightning`` (``pip install 'molearn[lightning]'``); ``pytorch_lightning`` is used when ``lightning``
is not installed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from .._balancer import Balancer, StepInfo
from ..methods import Method, get

HINT = "molearn.integrations.lightning needs Lightning: pip install 'molearn[lightning]' (or lightning)"

try:
    import lightning.pytorch as pl
except ImportError:  # pragma: no cover - the older package name
    try:
        import pytorch_lightning as pl  # type: ignore[no-redef]
    except ImportError as err:
        raise ImportError(HINT) from err

__all__ = ["BalancedModule"]


class BalancedModule(pl.LightningModule):
    """A ``LightningModule`` whose training step balances K losses with ``method``.

    Args:
        method: a :class:`molearn.methods.Method` or a registry name (``"mgda"``), built with
            ``method_kwargs``.
        method_kwargs: keyword arguments of the method when ``method`` is a name.
        balancer_kwargs: keyword arguments of :class:`molearn.Balancer` (``mode``, ``on_nonfinite``,
            ``check_finite``, ...); ``shared``, ``tasks`` and ``module`` are set here.

    Override:
        ``objectives(batch, batch_idx)``: the K losses (a sequence of scalars or a (K,) tensor), means over
        the batch (under DDP the global loss is the mean of the ranks').
        ``shared_parameters()``: the shared parameters (default: all trainable parameters); the task
        parameters are found by the Balancer.
        ``configure_optimizers``: one optimiser (schedulers are stepped by the user, as in any manual
        optimisation: ``self.lr_schedulers().step()`` in ``on_train_epoch_end``).

    Logged each step (``self.log``, on the progress bar off): ``loss_i`` and ``weight_i``. Refused: methods
    that draw several batches per step (MoDo, SDMGrad: use :meth:`molearn.Balancer.step` in an own loop),
    ``precision="16-mixed"`` (Lightning's GradScaler scales only ``manual_backward``; use bf16 or 32) and
    strategies other than one device or DDP (FSDP, DeepSpeed). :attr:`last_info` holds the last
    :class:`molearn.StepInfo`; the method's state is saved in Lightning checkpoints (``on_save_checkpoint``)
    and restored from them.
    """

    def __init__(
        self,
        method: Method | str,
        *,
        method_kwargs: Mapping[str, Any] | None = None,
        balancer_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(method, str):
            method = get(method, **dict(method_kwargs or {}))
        elif not isinstance(method, Method):
            raise TypeError(f"method must be a molearn Method or a method name, got {type(method).__name__}")
        elif method_kwargs:
            raise TypeError("method_kwargs are only used with a method name; the method is already built")
        if method.needs.batches > 1:
            raise TypeError(
                f"{type(method).__name__} needs {method.needs.batches} independent batches per step; "
                "BalancedModule gets one batch per training step: use molearn.Balancer.step in an own loop"
            )
        bk = dict(balancer_kwargs or {})
        reserved = {"shared", "tasks", "module"} & set(bk)
        if reserved:
            raise ValueError(f"balancer_kwargs may not set {sorted(reserved)}: BalancedModule sets them")
        self.automatic_optimization = False
        self.method = method
        self._balancer_kwargs = bk
        self.balancer: Balancer | None = None
        self.last_info: StepInfo | None = None
        self._pending_method_state: dict[str, Any] | None = None

    # ------------------------------------------------------------------ what the user defines
    def objectives(self, batch: Any, batch_idx: int) -> Sequence[Tensor] | Tensor:
        """The K losses of ``batch`` (override)."""
        raise NotImplementedError("BalancedModule subclasses define objectives(batch, batch_idx)")

    def shared_parameters(self) -> Iterable[Tensor]:
        """The shared parameters (default: every trainable parameter)."""
        return [p for p in self.parameters() if p.requires_grad]

    # ------------------------------------------------------------------ the step
    def _build_balancer(self) -> Balancer:
        trainer = self.trainer
        strategy = trainer.strategy
        name = type(strategy).__name__
        if "DDP" not in name and "SingleDevice" not in name:
            raise ValueError(
                f"BalancedModule supports one device and Lightning's DDP strategies, not {name} (FSDP and "
                "DeepSpeed own the backward pass)"
            )
        if str(trainer.precision).startswith("16"):
            raise ValueError(
                f"BalancedModule does not support precision={trainer.precision!r}: Lightning's GradScaler "
                "scales only manual_backward; use precision='bf16-mixed' or 32"
            )
        wrapper = strategy.model if isinstance(strategy.model, torch.nn.Module) else self
        bal = Balancer(self.method, self.shared_parameters(), module=wrapper, **self._balancer_kwargs)
        if self._pending_method_state is not None:
            bal.load_state_dict(self._pending_method_state)
            self._pending_method_state = None
        return bal

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        """``zero_grad``, the balanced backward of ``objectives(batch, batch_idx)``, ``step``; returns the
        detached ``Σ w_i L_i`` (``Σ L_i`` for methods that return a direction)."""
        if self.balancer is None:
            self.balancer = self._build_balancer()
        opt = self.optimizers()
        if isinstance(opt, list):
            raise ValueError("BalancedModule steps one optimiser; configure_optimizers returned several")
        opt.zero_grad()
        losses = self.objectives(batch, batch_idx)
        ddp = self.balancer.collective.ddp if self.balancer.collective is not None else None
        # inside Lightning's DDP forward the reducer was not prepared for a backward (manual_backward
        # prepares it): molearn then averages the update itself, never through DDP's hooks
        sync = getattr(ddp, "require_backward_grad_sync", None)
        if sync is not None:
            ddp.require_backward_grad_sync = False  # type: ignore[union-attr]
        try:
            info = self.balancer.backward(losses)
        finally:
            if sync is not None:
                ddp.require_backward_grad_sync = sync  # type: ignore[union-attr]
        self.last_info = info
        if not info.skipped:
            opt.step()
            if self.method.needs.after_step:
                with torch.no_grad():
                    self.balancer.update(self.objectives(batch, batch_idx))
        values = info.losses.detach().float()
        logged = {f"loss_{i}": v for i, v in enumerate(values)}
        if info.weights is not None:
            logged.update({f"weight_{i}": w for i, w in enumerate(info.weights.detach().float())})
        self.log_dict(logged, prog_bar=False, on_step=True, on_epoch=False)
        if info.weights is not None:
            return (info.weights.detach().to(values.dtype) * values).sum()
        return values.sum()

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.balancer is not None:
            checkpoint["molearn_balancer"] = self.balancer.state_dict()
        elif self._pending_method_state is not None:
            checkpoint["molearn_balancer"] = self._pending_method_state

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("molearn_balancer")
        if state is None:
            return
        if self.balancer is not None:
            self.balancer.load_state_dict(state)
        else:  # the Balancer is built at the first training step, after the strategy wrapped the model
            self._pending_method_state = dict(state)
