"""Auto-Lambda: task weights meta-learnt by a one-step look-ahead on a validation batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal, Protocol

import torch
from torch import Tensor

from ._adam import Adam
from ._base import Inputs, Method, Needs, Output, TaskGrad

Hessian = Literal["finite_difference", "exact"]


class _Probe(Protocol):  # the part of molearn.engine.Probe that Auto-Lambda uses
    losses: Tensor
    params: list[Tensor]
    optimizer: torch.optim.Optimizer | None

    @property
    def num_objectives(self) -> int: ...

    def losses_at(self, offset: Tensor | None) -> Tensor: ...

    def gradient_at(self, i: int, offset: Tensor | None) -> Tensor: ...


class AutoLambda(Method):
    r"""Auto-λ (Liu, James, Davison & Johns, "Auto-Lambda: Disentangling Dynamic Task Relationships", TMLR
    2022, https://arxiv.org/abs/2202.03091; official code lorenmt/auto-lambda, ``auto_lambda.py``).

    The task weights λ (not normalised, initialised to ``init``) are trained so that one SGD step on
    :math:`\sum_i\lambda_i L_i^{\mathrm{tr}}` lowers the validation loss of the primary tasks P:

    .. math::
        \theta' = \theta - \alpha\big(\mu\,m + \textstyle\nabla_\theta\sum_i\lambda_iL_i^{\mathrm{tr}}(\theta)
                  + \omega\theta\big),\qquad
        d = \nabla_{\theta'}\textstyle\sum_{j\in P}L_j^{\mathrm{val}}(\theta'),

        \nabla_\lambda L^{\mathrm{val}}(\theta') = -\alpha\,\nabla_\theta L_i^{\mathrm{tr}}(\theta)^\top d
        \approx -\alpha\,\frac{L_i^{\mathrm{tr}}(\theta+\epsilon d) - L_i^{\mathrm{tr}}(\theta-\epsilon d)}
        {2\epsilon},\qquad \epsilon = \frac{0.01}{\|d\|}

    (α the model's learning rate, μ m its SGD momentum buffer, ω its weight decay: the official virtual
    step). One Adam step on λ with that gradient (lr ``meta_lr``), then the model's update is
    :math:`\sum_i\lambda_i\nabla L_i^{\mathrm{tr}}` with the **updated** λ, on the same training batch.

    Official defaults: ``init=0.1``, ``meta_lr=1e-4`` (``trainer_dense.py`` and the README for NYUv2; 3e-5
    for CityScapes, 3e-4 in ``trainer_cifar.py``), λ updated at every step, all tasks primary in
    multi-task learning (``primary`` lists the primary tasks for auxiliary learning), finite differences with
    :math:`\epsilon = 0.01/\|d\|` (``fd_scale``). ``hessian="exact"`` uses the product
    :math:`J^{\mathrm{tr}}d` itself (the rows are computed anyway, below): no extra passes, the limit of the
    finite difference.

    **Design.** Auto-λ needs a second batch and losses at parameters the model never takes, so it declares
    ``Needs(closure=True, batches=2)`` and runs in :meth:`molearn.Balancer.step` with no change to the
    engine: the first batch drawn is the validation batch, the second the training batch. The official
    multi-task trainers draw the "validation" batch from a second shuffle of the training set, which is what
    drawing both from the training loader does (``molearn.train.Trainer``, ``molearn compare``); for a real
    validation split pass an iterator that alternates validation and training batches. :meth:`jacobian` is
    called once per batch, in that order: for the validation batch it keeps the engine's
    :class:`~molearn.engine.Probe` and returns zero rows (the batch's update weight is 0); for the training
    batch it computes the K per-objective gradients at θ from the step's own graph, the look-ahead
    gradient d (one perturbed pass per primary task on the validation batch) and the two finite-difference
    losses, and keeps the meta-gradient; :meth:`combine` takes the Adam step and returns the new λ, so a
    step rejected by the Balancer's finite check restores λ with the rest of the state. :meth:`select`
    (called once per step before any pass) marks a new step.

    The learning rate α comes from ``optimizer`` (its first parameter group's current ``lr``, ``momentum``
    and ``weight_decay`` and the momentum buffers, read at every step as the official code does) or from
    ``lr`` (then no momentum or weight decay in the virtual step); without either, from the optimiser
    passed to :meth:`molearn.Balancer.step` (as ``molearn.train.Trainer`` and ``molearn compare`` do).

    Differences from the official code: the look-ahead passes keep BatchNorm running statistics
    (``Balancer(module=model)``), the official virtual and finite-difference passes update them; with
    ``module=`` the two finite-difference passes run in eval mode (``Probe.losses_at``; official: train
    mode; ``hessian="exact"`` avoids the difference); the engine's own forward pass of the validation batch
    is unused (in train mode it still updates the BatchNorm statistics once). Cost per step: 2 F (engine),
    one F/B per primary task (look-ahead), 2 no-grad F (finite differences) and K B (per-objective rows at
    θ); the official code: 4 F/B and 1 F/B for the update. ``task_grad="weighted"`` (heads get
    :math:`\lambda_i\nabla L_i`, as the official backward of :math:`\sum_i\lambda_i L_i`). With K = 1 the
    Balancer passes the gradient through and λ is not trained. State: λ and its Adam moments;
    ``info["lambda"]`` is λ after the step.
    """

    needs: ClassVar[Needs] = Needs(gramian=True, batches=2, closure=True)
    task_grad: ClassVar[TaskGrad] = "weighted"

    def __init__(
        self,
        init: float = 0.1,
        meta_lr: float = 1e-4,
        lr: float | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        primary: Sequence[int] | None = None,
        hessian: Hessian = "finite_difference",
        fd_scale: float = 0.01,
    ) -> None:
        if not meta_lr >= 0:
            raise ValueError(f"meta_lr must be non-negative, got {meta_lr}")
        if lr is not None and not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if hessian not in ("finite_difference", "exact"):
            raise ValueError(f"hessian must be 'finite_difference' or 'exact', got {hessian!r}")
        if not fd_scale > 0:
            raise ValueError(f"fd_scale must be positive, got {fd_scale}")
        if primary is not None:
            primary = [int(i) for i in primary]
            if not primary or len(set(primary)) != len(primary) or min(primary) < 0:
                raise ValueError(f"primary must list distinct non-negative task indices, got {primary}")
        self.init = float(init)
        self.meta_lr = float(meta_lr)
        self.lr = lr
        self.primary = primary
        self.hessian = hessian
        self.fd_scale = float(fd_scale)
        self._optimizer = optimizer
        self.reset()

    @property
    def optimizer(self) -> torch.optim.Optimizer | None:
        """The model's optimiser the virtual step reads (``None``: plain SGD with ``lr``)."""
        return self._optimizer

    @property
    def weights(self) -> Tensor | None:
        """λ (``None`` before the first step)."""
        return self._adam.param

    def reset(self) -> None:
        self._adam = Adam(self.meta_lr)
        self._val: _Probe | None = None
        self._pending: Tensor | None = None

    # --- the look-ahead (engine closure) -----------------------------------------------------------

    def select(self, num_objectives: int) -> Tensor | None:
        self._val = None  # a new step: forget what an interrupted one kept
        self._pending = None
        return None

    def jacobian(self, probe: _Probe) -> Tensor:
        width = sum(p.numel() for p in probe.params)
        k = probe.num_objectives
        if self._val is None:  # the validation batch (drawn first): its rows get weight 0
            self._val = probe
            ref = probe.params[0]
            return torch.zeros(k, width, dtype=ref.dtype, device=ref.device)
        val, self._val = self._val, None
        rows = _rows(probe)
        lam = self._ensure(k, rows.device)
        primary = self._primary(k)
        alpha, offset = self._virtual_step(probe.params, lam.to(rows.dtype) @ rows, probe.optimizer)
        d = torch.stack([val.gradient_at(j, offset) for j in primary]).sum(0)
        if self.hessian == "exact":
            slope = rows @ d
        else:
            eps = self.fd_scale / d.norm().clamp_min(torch.finfo(d.dtype).tiny)
            slope = (probe.losses_at(eps * d) - probe.losses_at(-eps * d)) / (2 * eps)
        self._pending = (-alpha * slope).to(torch.float64)
        return rows

    def _virtual_step(
        self, params: list[Tensor], grad: Tensor, stepping: torch.optim.Optimizer | None
    ) -> tuple[Any, Tensor]:
        """α and the flat offset θ' − θ of the official virtual step."""
        opt = self._optimizer
        if opt is None and self.lr is None:
            opt = stepping
        if opt is None:
            if self.lr is None:
                raise ValueError(
                    "AutoLambda needs the model's learning rate for its look-ahead step: "
                    "AutoLambda(lr=...), AutoLambda(optimizer=optimizer), or pass the optimizer to "
                    "Balancer.step"
                )
            return self.lr, -self.lr * grad
        group = opt.param_groups[0]
        alpha = group["lr"]
        step = grad.clone()
        momentum = group.get("momentum", 0.0)
        if momentum:
            bufs = [opt.state.get(p, {}).get("momentum_buffer") for p in params]
            step += momentum * _flat([torch.zeros_like(p) if b is None else b for p, b in zip(params, bufs)])
        decay = group.get("weight_decay", 0.0)
        if decay:
            step += decay * _flat([p.detach() for p in params])
        return alpha, -alpha * step

    def _primary(self, k: int) -> list[int]:
        if self.primary is None:
            return list(range(k))
        if max(self.primary) >= k:
            raise ValueError(f"primary tasks {self.primary} out of range for {k} objectives")
        return self.primary

    def _ensure(self, k: int, device: torch.device) -> Tensor:
        if self._adam.param is None:
            return self._adam.init(torch.full((k,), self.init, dtype=torch.float64, device=device))
        if self._adam.param.shape != (k,):
            raise ValueError(
                f"AutoLambda was used with {self._adam.param.shape[0]} objectives and now received {k}; "
                "call reset() before changing the number of objectives"
            )
        return self._adam.to(device)

    # --- Method API --------------------------------------------------------------------------------

    def combine(self, inputs: Inputs) -> Output:
        losses = inputs.losses
        lam = self._ensure(inputs.num_objectives, losses.device)
        pending, self._pending = self._pending, None
        if pending is not None:
            lam = self._adam.step(pending.to(lam.device))
        w = lam.to(losses.dtype)
        extra = [torch.zeros_like(w) for _ in inputs.extra] if inputs.extra else None
        return Output(weights=w, extra_weights=extra, info={"lambda": lam.clone()})

    def state_dict(self) -> dict[str, Any]:
        return self._adam.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unknown = set(state) - {"param", "m", "v", "t"}
        if unknown:
            raise ValueError(f"AutoLambda got unknown state keys {sorted(unknown)}")
        if state:
            missing = {"param", "m", "v", "t"} - set(state)
            if missing:
                raise ValueError(f"AutoLambda state lacks {sorted(missing)}")
            shape = torch.as_tensor(state["param"]).shape
            if len(shape) != 1 or any(torch.as_tensor(state[n]).shape != shape for n in ("m", "v")):
                raise ValueError("AutoLambda state: 'param', 'm' and 'v' must be 1-D of the same length")
        self._adam.load_state_dict(state)
        self._val = None
        self._pending = None


def _flat(tensors: Sequence[Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _rows(probe: _Probe) -> Tensor:
    """The K per-objective gradients at θ (flat over ``probe.params``), from the step's own graph."""
    params = probe.params
    k = probe.num_objectives
    out = []
    for i in range(k):
        grads = torch.autograd.grad(probe.losses[i], params, retain_graph=i < k - 1, allow_unused=True)
        out.append(_flat([torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]))
    return torch.stack(out)
