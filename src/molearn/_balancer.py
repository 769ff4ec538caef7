"""The user-facing entry point: turn K losses into one balanced update of the model's ``.grad``."""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from .engine import (
    BatchedJacobian,
    ClosureJacobian,
    Collective,
    DistributedLayerwise,
    GradBuffer,
    LayerRecorder,
    LayerwiseGramian,
    LoopJacobian,
    LossOnly,
    Part,
    Probe,
    Representation,
    Request,
    Situation,
    Strategy,
    all_finite,
    choose,
    describe_modules,
    detect,
    leaves_from_nodes,
    objective_root,
    reachable_leaves,
)
from .methods._base import Inputs, Method, Output, TaskGrad

Mode = Literal["auto", "loop", "batched", "gramian", "representation"]
LossFn = Callable[[Any], "Tensor | Sequence[Tensor] | tuple[Any, Tensor]"]

__all__ = ["Balancer", "NonFiniteLossError", "StepInfo"]


Stage = Literal["loss", "gradient", "weights", "model"]


class NonFiniteLossError(FloatingPointError):
    """A step met a NaN or infinite value; the message names the objective(s) and the stage.

    ``stage``: ``"loss"`` (a loss, or a post-step loss), ``"gradient"`` (a per-objective gradient, seen in
    the Gramian, or the update about to be written to ``.grad``), ``"weights"`` (the method's output) or
    ``"model"`` (the trainer found the model's parameters or optimiser state non-finite at a checkpoint).
    ``objectives``: the indices named (for a non-finite update of a loss-only method, the objectives whose
    graph reaches every affected parameter: possibly all of them).
    """

    def __init__(self, message: str, *, stage: Stage = "loss", objectives: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.stage: Stage = stage
        self.objectives = list(objectives)


@dataclass
class _Problem:
    """What the finite check found (built after it failed, when synchronising no longer matters)."""

    stage: Stage
    objectives: list[int]
    message: str


@dataclass
class StepInfo:
    """Diagnostics of one step, as tensors on the model's device (nothing is synchronised).

    ``cosines`` are the pairwise cosines of the per-objective gradients (negative = conflict),
    ``grad_norms`` their norms; both are derived from the Gramian and absent for loss-only methods.
    ``info`` holds method-specific values such as the solver ``residual`` and its ``status``
    (:mod:`molearn.solvers` ``CONVERGED``/``ITERATION_LIMIT``/``INFEASIBLE``). ``reason``: why a step
    was skipped (the finite check's message, or a ``GradScaler`` overflow).
    """

    losses: Tensor
    weights: Tensor | None = None
    gramian: Tensor | None = None
    cosines: Tensor | None = None
    grad_norms: Tensor | None = None
    info: dict[str, Tensor] = field(default_factory=dict)
    skipped: bool = False
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values (this synchronises with the device; call it when logging)."""
        out: dict[str, Any] = {"skipped": self.skipped, "losses": self.losses.tolist()}
        if self.reason:
            out["reason"] = self.reason
        for name in ("weights", "cosines", "grad_norms"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value.tolist()
        out.update({k: v.tolist() for k, v in self.info.items()})
        return out


@dataclass
class _Prepared:
    """One batch, ready to combine: the method's inputs and the engine's part (what it computed, how it
    writes ``.grad``)."""

    inputs: Inputs
    part: Part
    losses: Tensor


def _as_loss_vector(
    losses: Tensor | Sequence[Tensor], *, need_grad: bool = True
) -> tuple[Tensor, list[Tensor] | None]:
    """The losses as a (K,) tensor, plus the individual scalars when they were given one by one (then
    each objective's backward pass runs through its own graph only); ``None`` for a (K,) tensor (the
    strategies that need scalars unbind it)."""
    items: list[Tensor] | None
    if isinstance(losses, Tensor):
        if losses.dim() != 1:
            raise ValueError(f"losses must be a 1-D tensor of K objectives, got shape {tuple(losses.shape)}")
        vec = losses
        items = None
    else:
        items = list(losses)
        for i, loss in enumerate(items):
            if not isinstance(loss, Tensor):
                raise TypeError(f"objective {i}: expected a tensor, got {type(loss).__name__}")
            if loss.numel() != 1:
                raise ValueError(
                    f"objective {i}: the loss must be a scalar, got shape {tuple(loss.shape)} "
                    "(reduce it, e.g. with .mean())"
                )
            if need_grad and not loss.requires_grad and any(x.requires_grad for x in items):
                raise ValueError(
                    f"objective {i}: the loss does not require grad (detached, or computed without the "
                    "model's parameters)"
                )
        if not items:
            raise ValueError("no losses were given")
        items = [loss.reshape(()) for loss in items]
        vec = torch.stack(items)
    if vec.shape[0] == 0:
        raise ValueError("no losses were given")
    if not vec.is_floating_point():
        raise TypeError(f"the losses must be floating-point tensors, got {vec.dtype}")
    if need_grad and not vec.requires_grad:
        raise ValueError("the losses do not require grad: compute them from the model's parameters")
    node = vec.grad_fn
    if need_grad and node is not None and type(node).__name__.startswith("StackBackward"):
        for i, (branch, _) in enumerate(node.next_functions):  # torch.stack of K scalars: one branch each
            if branch is None:
                raise ValueError(
                    f"objective {i}: the loss does not require grad (detached, or computed without the "
                    "model's parameters)"
                )
    return vec, items


def _check_parameters(shared: list[Tensor], tasks: list[Tensor] | None) -> None:
    """Every parameter a tensor that requires grad, listed once, and either shared or task-specific: a
    parameter given twice would receive its gradient twice (or, for a Gramian method, count twice in
    the Gramian)."""
    seen: dict[int, str] = {}
    for kind, params in (("shared", shared), ("task", tasks or [])):
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(f"{kind} parameter {i} is a {type(p).__name__}, not a tensor")
            label = f"{kind} parameter {i} (shape {tuple(p.shape)})"
            if not p.requires_grad:
                raise ValueError(f"{label} does not require grad")
            if id(p) in seen:
                raise ValueError(
                    f"{label} is the same tensor as {seen[id(p)]}: list each parameter once, "
                    "as shared or as task-specific"
                )
            seen[id(p)] = f"{kind} parameter {i}"


def _cosines(gramian: Tensor) -> tuple[Tensor, Tensor]:
    norms = gramian.diagonal().clamp_min(0).sqrt()
    denom = torch.outer(norms, norms)
    cos = torch.where(denom > 0, gramian / denom.clamp_min(torch.finfo(gramian.dtype).tiny), 0.0)
    return cos, norms


def _loss_scale(scaler: Any, like: Tensor) -> Tensor | None:
    """The GradScaler's current scale as a 0-dim tensor on the losses' device (no host sync), or None."""
    if scaler is None or not scaler.is_enabled():
        return None
    return scaler.scale(torch.ones((), dtype=torch.float32, device=like.device))


class Balancer:
    """Combine K objectives into one update of ``.grad``, using a :class:`~molearn.methods.Method`.

    Two ways of use (both write ``.grad``; the optimiser is yours):

    * drop-in, for single-batch methods: replace ``sum(losses).backward()`` by ``bal.backward(losses)``;
      methods that learn from the losses after the step (FAMO) also want ``bal.update(new_losses)``.
    * closure-driven, for every method: ``bal.step(loss_fn, batches, optimizer)`` draws as many
      independent batches as the method needs, computes the update, steps the optimiser and feeds
      post-step losses back to the method.

    Args:
        method: the balancing method.
        shared: the shared parameters (the trunk) that receive the combined direction: an
            ``nn.Module`` (its trainable parameters; its layers can then use the layer-wise Gramian) or an
            iterable of tensors.
        tasks: task-specific parameters (heads). ``None``: every other leaf the losses depend on,
            found from the first step's graph. They receive ``∇ Σ_i c_i L_i`` with ``c = 1``
            (``task_grad="own"``) or ``c = w`` (``"weighted"``); default: the method's official
            convention (:attr:`Method.task_grad`).
        mode: how per-objective gradients are computed when the method needs them (see docs/engine.md):
            ``"auto"`` (default: chosen from the device, K and the method's needs), ``"loop"`` (K backward
            passes, K×P Jacobian), ``"batched"`` (one batched backward, K×P Jacobian), ``"gramian"`` (the
            Gramian from per-layer quantities, never the K×P Jacobian of Linear/Conv/Embedding layers) or
            ``"representation"`` (gradients w.r.t. a shared feature tensor passed as ``features``, as in
            MGDA-UB); or a :class:`molearn.engine.Strategy` instance, e.g.
            ``LayerwiseGramian(objectives_per_pass=8)``.
        on_nonfinite: what a step with a NaN/Inf does, wherever it appears (a loss, a per-objective
            gradient, the method's weights, the update for ``.grad``): ``"raise"`` a
            :class:`NonFiniteLossError` naming the objective(s) and the stage, or ``"skip"`` the step (no
            gradient written, :attr:`skipped_steps` incremented, ``StepInfo.skipped`` and ``reason``).
            Either way nothing reaches ``.grad`` and the method's state is as before the step.
        check_finite: set to ``False`` to remove the one host synchronisation per step that the
            check costs (e.g. under CUDA-graph capture); NaNs then propagate.
        module: the model. Its layers that own shared parameters can use the layer-wise Gramian; methods
            that re-evaluate the losses at perturbed parameters (SAMO) run those passes in eval mode and
            keep BatchNorm running statistics unchanged.

        distributed: under ``torch.distributed`` (docs/distributed.md). ``None`` (default): detected —
            with an initialised process group of more than one process and a ``DistributedDataParallel``
            module, or FSDP2 ``fully_shard`` modules, owning the shared parameters (given as
            ``shared``/``module``, or found), every rank computes the update of the union of the ranks'
            batches; FSDP1, other DTensor parameters or a process group without a wrapper raise an error
            naming them. ``True``: the same over the default
            group for a model that is not wrapped (data parallelism by hand). ``False``: each rank
            balances its own batch (refused for a DDP/FSDP-wrapped model: the ranks would drift apart).

    Parameters are checked at construction: each a tensor that requires grad, listed once, shared or
    task-specific but not both (a repeated parameter would receive its gradient twice).

    With ``mode="gramian"`` (or ``"auto"`` for a Gramian method) and a module known, forward hooks record
    each layer's inputs; :meth:`close` (or ``with Balancer(...) as bal:``) removes them, as does dropping
    the Balancer.
    """

    def __init__(
        self,
        method: Method,
        shared: Iterable[Tensor] | torch.nn.Module,
        tasks: Iterable[Tensor] | None = None,
        *,
        mode: Mode | Strategy = "auto",
        task_grad: TaskGrad | None = None,
        on_nonfinite: Literal["raise", "skip"] = "raise",
        check_finite: bool = True,
        module: torch.nn.Module | None = None,
        distributed: bool | None = None,
    ) -> None:
        if not isinstance(method, Method):
            raise TypeError(f"method must be a molearn Method, got {type(method).__name__}")
        self.method = method
        roots: list[torch.nn.Module] = []
        self.shared: list[Tensor]
        if isinstance(shared, torch.nn.Module):
            roots.append(shared)
            self.shared = [p for p in shared.parameters() if p.requires_grad]
        else:
            self.shared = list(shared)
        if module is not None:
            roots.append(module)
        if not self.shared:
            raise ValueError("the list of shared parameters is empty")
        self._tasks = None if tasks is None else list(tasks)
        _check_parameters(self.shared, self._tasks)
        self._roots = roots
        self.mode: Mode | Strategy = mode
        self.module = module
        self.task_grad: TaskGrad = task_grad or method.task_grad
        if self.task_grad not in ("own", "weighted"):
            raise ValueError(f"task_grad must be 'own' or 'weighted', got {self.task_grad!r}")
        if on_nonfinite not in ("raise", "skip"):
            raise ValueError(f"on_nonfinite must be 'raise' or 'skip', got {on_nonfinite!r}")
        self.on_nonfinite = on_nonfinite
        self.check_finite = check_finite
        self.skipped_steps = 0
        self._pending: Tensor | None = None  # the losses of the last accepted step, for update()
        self._skipped_last = False
        self._optimizer: torch.optim.Optimizer | None = None  # the optimiser of the step() in progress
        self._fixed = self._validate(mode)
        self._dist: Collective | None = detect(roots, self.shared, distributed)
        self._dist_ready = False
        if self._dist is not None:
            self._check_distributed()
        self._dense, self._compiled = describe_modules(roots, self.shared) if roots else (False, False)
        self._strategies: dict[str, Strategy] = {}
        self._chosen: dict[tuple[int, Any, str], Strategy] = {}
        self._recorder: LayerRecorder | None = None
        gramian = self._fixed if isinstance(self._fixed, LayerwiseGramian) else None
        own = self._dist is not None and self._dist.own_passes  # FSDP2: its passes, no layer hooks
        if gramian is None and self._fixed is None and self._may_use_gramian() and not own:
            gramian = LayerwiseGramian() if self._dist is None else DistributedLayerwise(self._dist)
        if gramian is not None and method.needs.gradients:
            if roots:
                self._recorder = LayerRecorder(roots, self.shared)
                weakref.finalize(self, self._recorder.close)
            gramian.attach(self._recorder)
            self._strategies["gramian"] = gramian

    # ------------------------------------------------------------------ strategy
    def _validate(self, mode: Mode | Strategy) -> Strategy | None:
        """The fixed strategy of an explicit mode (``None`` for ``"auto"``), or an error naming the clash."""
        name = type(self.method).__name__
        needs = self.method.needs
        if isinstance(mode, Strategy):
            strategy: Strategy | None = mode
            label = repr(mode)
        elif mode in _MODES:
            factory = _MODES[mode]
            strategy = factory() if factory is not None else None
            label = f"mode={mode!r}"
        else:
            raise ValueError(
                f"unknown mode {mode!r}; known: {', '.join(_MODES)} or a molearn.engine.Strategy"
            )
        if strategy is None:
            return None
        if needs.jacobian and not strategy.forms_jacobian:
            raise ValueError(
                f"{name} needs the Jacobian; {label} never forms it "
                "(use 'loop', 'batched' or 'representation')"
            )
        if (needs.closure and isinstance(strategy, (Representation, LayerwiseGramian))) or (
            needs.batches > 1 and not strategy.multi_batch
        ):
            raise ValueError(
                f"{name} needs {'a closure' if needs.closure else 'independent batches'}; "
                "it runs in mode 'loop' or 'batched' only"
            )
        if needs.closure and isinstance(strategy, BatchedJacobian):
            raise ValueError(f"{name} computes its own gradients; use mode 'loop' or 'auto'")
        return strategy

    def _check_distributed(self) -> None:
        """Refuse, naming it, what is not exact across ranks yet (issue 16); a layer-wise Gramian becomes its
        distributed twin (``engine._dist_layers``: the per-layer scheme)."""
        name = type(self.method).__name__
        needs = self.method.needs
        assert self._dist is not None
        self._dist.strategy_for(needs, self._fixed)  # FSDP2's own passes refuse what they cannot run
        if needs.closure:
            raise NotImplementedError(
                f"{name} computes its own gradients at perturbed parameters (Needs.closure): not exact "
                "across ranks yet (issue 16); run it in one process, or pass distributed=False to balance "
                "each rank's batch on its own"
            )
        fixed = self._fixed
        if isinstance(fixed, LayerwiseGramian):  # the per-layer scheme across ranks (engine._dist_layers)
            assert self._dist is not None
            self._fixed = fixed = DistributedLayerwise.like(fixed, self._dist)
        if isinstance(fixed, Representation) and needs.jacobian:
            raise NotImplementedError(
                f"{name} needs the Jacobian: in mode='representation' that is not exact across ranks yet "
                "(issue 16); use mode='auto', 'loop' or 'batched'"
            )
        exact = (LoopJacobian, BatchedJacobian, Representation, LayerwiseGramian)
        if fixed is not None and not isinstance(fixed, exact):
            raise NotImplementedError(
                f"{fixed!r} is not exact across ranks (issue 16); use mode='auto', 'loop' or 'batched'"
            )

    def _method_generators(self) -> list[torch.Generator]:
        """The generators a method (and a method it wraps) holds, for the first rank to broadcast."""
        found: list[torch.Generator] = []
        stack: list[Any] = [self.method]
        seen: set[int] = set()
        while stack:
            obj = stack.pop()
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            for value in vars(obj).values():
                if isinstance(value, torch.Generator) and all(value is not g for g in found):
                    found.append(value)
                elif isinstance(value, Method):
                    stack.append(value)
        return found

    def _begin(self) -> None:
        """Start a step; across ranks, the first one gives every rank the first rank's generators."""
        if self._dist is None:
            return
        if not self._dist_ready:
            self._dist.sync_generators(self._method_generators())
            self._dist_ready = True
        self._dist.begin()

    def _same_rng(self) -> contextlib.AbstractContextManager[None]:
        """Across ranks: the global RNG seeded identically on every rank (a method's draws agree)."""
        if self._dist is None:
            return contextlib.nullcontext()
        return self._dist.same_rng(self.shared[0].device)

    @property
    def collective(self) -> Collective | None:
        """The process group the updates are averaged over (``None``: one process, or local balancing);
        ``collective.log`` lists the bytes given to each collective of the last step."""
        return self._dist

    def _may_use_gramian(self) -> bool:
        needs = self.method.needs
        return needs.gramian and not needs.jacobian and not needs.closure

    def _strategy(self, k: int) -> Strategy:
        """The strategy of this step (``auto``: chosen from the device, K and the method's needs)."""
        needs = self.method.needs
        key = (k, needs, self.shared[0].device.type)
        cached = self._chosen.get(key)
        if cached is not None:
            return cached
        self._chosen[key] = strategy = self._pick(k, needs)
        return strategy

    def _pick(self, k: int, needs: Any) -> Strategy:
        own = None if self._dist is None else self._dist.strategy_for(needs, self._fixed)
        if own is not None:  # FSDP2: one backward per objective through its hooks (engine._dist_fsdp)
            return own
        if needs.closure:
            name = "closure"
        elif not needs.gradients:
            name = "loss-only"
        elif self._fixed is not None:
            return self._fixed
        else:
            name = choose(
                Situation(
                    device=self.shared[0].device.type,
                    k=k,
                    gradients=needs.gradients,
                    # across ranks too: the layer-wise Gramian then picks, per layer and step, the form
                    # that moves fewer bytes (engine._dist_layers); the one-process choice is unchanged
                    jacobian=needs.jacobian,
                    batches=needs.batches,
                    closure=needs.closure,
                    compiled=self._compiled,
                    dense=self._dense,
                )
            )
        strategy = self._strategies.get(name)
        if strategy is None:
            made = _NAMED[name]()
            if self._dist is not None and isinstance(made, LayerwiseGramian):
                made = DistributedLayerwise.like(made, self._dist)
            strategy = self._strategies[name] = made
        return strategy

    def strategy_for(self, k: int) -> Strategy:
        """The strategy a step with K objectives uses (what ``mode="auto"`` resolves to)."""
        return self._strategy(k)

    def close(self) -> None:
        """Remove the forward hooks of the layer-wise Gramian (if any). Idempotent."""
        if self._recorder is not None:
            self._recorder.close()

    def __enter__(self) -> Balancer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ helpers
    def _task_params(self, losses: Tensor) -> list[Tensor]:
        if self._tasks is None:
            shared_ids = {id(p) for p in self.shared}
            leaves = reachable_leaves([losses])
            if self._dist is not None:  # FSDP2: the sharded parameters behind the graph's unsharded ones
                leaves = self._dist.graph_leaves(leaves)
            self._tasks = [t for t in leaves if id(t) not in shared_ids]
            if self._dist is not None:  # the ranks' reductions rely on one layout of the parameters
                sizes = [t.numel() for t in self._tasks]  # fixed-length summary: count, size, order
                summary = [len(sizes), sum(sizes), sum((i + 1) * n for i, n in enumerate(sizes))]
                self._dist.check_same("the task parameters (count, entries, layout)", summary)
        return self._tasks

    def _finish(self) -> None:
        for strategy in self._strategies.values():
            strategy.finish()
        if self._recorder is not None:
            self._recorder.clear()

    def _prepare(
        self,
        losses: Tensor,
        items: list[Tensor] | None,
        features: Tensor | None,
        selected: Tensor | None = None,
        refresh: Callable[[], Tensor] | None = None,
        scale: Tensor | None = None,
        retain_graph: bool = False,
    ) -> _Prepared:
        """Let the strategy compute the batch's statistics and build the method's inputs (nothing is
        checked here: the step's one finite check comes later, see :meth:`_complete`)."""
        k = losses.shape[0]
        tasks = self._task_params(losses)  # discovered from all K objectives' graph
        needs = self.method.needs
        scaled = losses if scale is None else losses * scale.to(losses.dtype)
        dist = self._dist
        # across ranks the method sees the global losses: the mean of the ranks' (equal slices, mean losses)
        seen = losses.detach() if dist is None else dist.all_reduce_mean(losses.detach())
        if k == 1:  # nothing to balance: the gradient passes through (see _combine)
            req = Request(scaled, None, self.shared, tasks, False, False)
            one = LossOnly().compute(req)
            if dist is not None:
                one = dist.reduce_part(one, jacobian=False, gramian=False)
            return _Prepared(Inputs(losses=seen), one, losses)
        reached: set[int] | None = None
        strategy = self._strategy(k)
        if items is None and (selected is not None or isinstance(strategy, ClosureJacobian)):
            items = list(losses.unbind())
        probe_items = items
        if selected is not None:
            assert items is not None
            chosen = selected.tolist()  # sync: indices chosen on the host
            reached = {id(t) for t in leaves_from_nodes([objective_root(items[i], i) for i in chosen])}
            items = [items[i] for i in chosen]
            selected = selected.to(losses.device)
        if scale is not None and items is not None:
            items = [it * scale.to(it.dtype) for it in items]
        req = Request(
            losses=scaled,
            items=items,
            shared=self.shared,
            tasks=tasks,
            # across ranks the local Jacobian's Gramian is never needed (the global one comes from slices)
            gramian=needs.gradients and (dist is None or isinstance(strategy, Representation)),
            jacobian=needs.jacobian and dist is None,
            features=features,
            selected=selected,
            reached=reached,
            retain_graph=retain_graph,
        )
        if isinstance(strategy, ClosureJacobian):
            if refresh is None:
                raise TypeError(f"{type(self.method).__name__} needs a closure: use Balancer.step")
            probe = Probe(
                refresh, losses, self.shared, tasks, self.module, items=probe_items, optimizer=self._optimizer
            )
            req.closure = lambda: self._closure_rows(probe, k, tasks, scale)
        part = strategy.compute(req)
        if dist is not None:
            part = dist.reduce_part(part, jacobian=needs.jacobian, gramian=needs.gradients)
        gramian = part.gramian
        jacobian = part.jacobian if needs.jacobian else None
        if scale is not None:
            gramian = None if gramian is None else gramian / (scale * scale).to(gramian.dtype)
            jacobian = None if jacobian is None else jacobian / scale.to(jacobian.dtype)
        inputs = Inputs(
            losses=seen,
            gramian=gramian if needs.gradients else None,
            jacobian=jacobian,
            selected=selected,
        )
        return _Prepared(inputs, part, losses)

    def _closure_rows(self, probe: Probe, k: int, tasks: list[Tensor], scale: Tensor | None) -> Tensor:
        jac = self.method.jacobian(probe)
        width = sum(p.numel() for p in self.shared) + sum(t.numel() for t in tasks)
        if jac.shape != (k, width):
            raise ValueError(
                f"{type(self.method).__name__}.jacobian returned shape {tuple(jac.shape)}, "
                f"expected ({k}, {width})"
            )
        return jac if scale is None else jac * scale.to(jac.dtype)  # the engine's rows are scaled

    def _task_coefficients(self, k: int, selected: Tensor | None, like: Tensor) -> Tensor:
        """``task_grad="own"``: 1 for every objective whose gradient was computed, 0 for the others."""
        ones = torch.ones(k, dtype=like.dtype, device=like.device)
        if selected is None:
            return ones
        return torch.zeros_like(ones).index_fill_(0, selected.to(like.device), 1.0)

    def _write(
        self,
        out: Output,
        parts: list[_Prepared],
        retain_graph: bool,
        scale: Tensor | None,
        into: GradBuffer | None = None,
    ) -> None:
        """Shared parameters get the combined direction, task parameters ``Σ c_i ∇L_i``; each batch's part
        writes its share (into ``.grad``, or staged in ``into`` until the finite check passes). With several
        batches the task parameters get the mean over the batches (``"own"``), as in LibMTL's MoDo."""
        last = parts[-1]
        k = last.losses.shape[0]
        name = type(self.method).__name__
        n = len(parts)
        if out.direction is not None:
            if not self.method.needs.jacobian:
                raise TypeError(f"{name} returned a direction without declaring Needs.jacobian")
            direction = out.direction if scale is None else out.direction * scale.to(out.direction.dtype)
            last.part.write_direction(direction, retain_graph=True, into=into)
            coeff = self._task_coefficients(k, last.inputs.selected, last.losses)
            for p in parts:
                p.part.write(None, coeff / n if n > 1 else coeff, retain_graph=retain_graph, into=into)
            if self._dist is not None:
                self._dist.flush(into)
            return
        if out.weights is None:
            raise TypeError(f"{name}.combine returned neither weights nor a direction")
        extra = out.extra_weights or []
        if len(extra) not in (0, n - 1):
            raise ValueError(f"{name} returned {len(extra)} extra weight vectors for {n - 1} extra batches")
        none: list[Tensor | None] = [None] * (n - 1)
        all_weights: list[Tensor | None] = [*(extra or none), out.weights]
        for w in all_weights:
            if w is not None and w.shape != (k,):
                raise ValueError(f"{name} returned weights of shape {tuple(w.shape)}, expected ({k},)")
        own: Tensor | None = None
        if self.task_grad == "own":
            own = self._task_coefficients(k, last.inputs.selected, out.weights)
            own = own if n == 1 else own / n
        for p, wb in zip(parts, all_weights, strict=True):
            p.part.write(wb, wb if own is None else own, retain_graph=retain_graph, into=into)
        if self._dist is not None:  # the local contributions, averaged over the ranks (one all-reduce)
            self._dist.flush(into)

    def _combine(self, inputs: Inputs) -> Output:
        """The method's output; with K = 1 the single gradient passes through unchanged (weight 1),
        whatever the method (some official formulas would rescale it, e.g. Nash-MTL to unit norm)."""
        if inputs.num_objectives == 1:
            return Output(weights=torch.ones_like(inputs.losses))
        with self._same_rng():
            return self.method.combine(inputs)

    def _info(self, inputs: Inputs, out: Output) -> StepInfo:
        info = StepInfo(losses=inputs.losses, weights=out.weights, info=dict(out.info))
        if inputs.gramian is not None:
            info.gramian = inputs.gramian
            info.cosines, info.grad_norms = _cosines(inputs.gramian)
        return info

    def _wants_features(self) -> bool:
        return isinstance(self._fixed, Representation)

    def _split(self, result: Any) -> tuple[Any, Tensor | None]:
        """``loss_fn`` returns the losses, or ``(losses, features)`` in representation mode."""
        if self._wants_features():
            if not (isinstance(result, tuple) and len(result) == 2):
                raise ValueError("in mode='representation', loss_fn must return (losses, features)")
            return result[0], result[1]
        return result, None

    def _check_features(self, features: Tensor | None) -> None:
        if self._wants_features() and features is None and self.method.needs.gradients:
            raise ValueError("mode='representation' needs the shared features: backward(losses, features=z)")

    # ------------------------------------------------------------------ the finite check
    def _snapshot(self) -> tuple[dict[str, Any], dict[str, Tensor]]:
        """The method's state (``state_dict`` returns copies) and its generators' states, to restore when
        the finite check rejects the step: the method's state only ever moves with accepted steps."""
        gens = {k: g.get_state() for k, g in vars(self.method).items() if isinstance(g, torch.Generator)}
        return self.method.state_dict(), gens

    def _snapshot_for(self, losses: Tensor) -> tuple[dict[str, Any], dict[str, Tensor]] | None:
        """A snapshot when the step may need undoing: the check is on and there is something to balance."""
        return self._snapshot() if self.check_finite and losses.shape[0] > 1 else None

    def _restore(self, snapshot: tuple[dict[str, Any], dict[str, Tensor]]) -> None:
        state, gens = snapshot
        self.method.load_state_dict(state)
        for k, g in gens.items():
            getattr(self.method, k).set_state(g)

    @staticmethod
    def _checked(parts: list[_Prepared], out: Output | None, into: GradBuffer | None) -> list[Tensor]:
        """Everything the step's finite check covers: the losses, the per-objective statistics (the Gramian's
        diagonal: a NaN/Inf gradient row makes its entry NaN/Inf), the method's output and the update."""
        tensors: list[Tensor] = []
        for p in parts:
            tensors.append(p.inputs.losses)  # the global losses across ranks: every rank decides alike
            if p.inputs.gramian is not None:
                tensors.append(p.inputs.gramian.diagonal())
        if out is not None:
            tensors.extend(
                t for t in (out.weights, out.direction, *(out.extra_weights or [])) if t is not None
            )
        if into is not None:
            tensors.extend(into.tensors())
        return tensors

    def _label(self, p: Tensor) -> str:
        """``shared parameter 3 'trunk.0.bias' (shape (16,))``: position, name (when known), shape."""
        for kind, params in (("shared", self.shared), ("task", self._tasks or [])):
            for i, q in enumerate(params):
                if q is p:
                    names = [n for r in self._roots for n, x in r.named_parameters() if x is p]
                    named = f" {names[0]!r}" if names else ""
                    return f"{kind} parameter {i}{named} (shape {tuple(p.shape)})"
        return f"a parameter of shape {tuple(p.shape)}"

    @staticmethod
    def _suspects(parts: list[_Prepared], bad: list[Tensor]) -> list[int]:
        """The objectives whose graph reaches every parameter with a non-finite update (the walk reads the
        graph's structure, which outlives the backward pass); all of them when that does not narrow it."""
        k = int(parts[-1].losses.shape[0])
        ids = {id(p) for p in bad}
        found: set[int] = set()
        for part in parts:
            items = part.part.req.items
            if items is None or len(items) != k:
                items = list(part.losses.unbind())
            for i, item in enumerate(items):
                reach = {id(t) for t in leaves_from_nodes([objective_root(item, i)])}
                if ids <= reach:
                    found.add(i)
        return sorted(found) if found else list(range(k))

    def _diagnose(
        self, parts: list[_Prepared], out: Output | None, into: GradBuffer | None
    ) -> _Problem | None:
        """After the check failed: the first stage with a NaN/Inf value and its objectives (syncs freely)."""
        multi = len(parts) > 1

        def where(b: int) -> str:
            return f" in batch {b}" if multi else ""

        for b, p in enumerate(parts):
            losses = p.inputs.losses
            bad = (~torch.isfinite(losses)).nonzero().flatten().tolist()  # sync: after a failed check
            if bad:
                vals = [float(losses[i]) for i in bad]
                ranks = ""
                if self._dist is not None:  # every rank is here alike (the check saw the global losses)
                    own = self._dist.ranks_where(not bool(torch.isfinite(p.losses.detach()).all()))
                    ranks = f" (from rank {', '.join(map(str, own))} of {self._dist.world})" if own else ""
                msg = f"non-finite loss for objective(s) {bad}{where(b)}: {vals}{ranks}"
                return _Problem("loss", bad, msg)
        for b, p in enumerate(parts):
            g = p.inputs.gramian
            if g is None:
                continue
            rows = (~torch.isfinite(g.diagonal())).nonzero().flatten().tolist()  # sync: as above
            if rows:
                sel = p.inputs.selected
                objs = rows if sel is None else [int(sel[r]) for r in rows]
                return _Problem(
                    "gradient",
                    objs,
                    f"non-finite gradient for objective(s) {objs}{where(b)} (their Gramian row is NaN/Inf)",
                )
        name = type(self.method).__name__
        if out is not None:
            for w in (out.weights, *(out.extra_weights or [])):
                if w is None:
                    continue
                bad = (~torch.isfinite(w)).nonzero().flatten().tolist()  # sync: as above
                if bad:
                    vals = [float(w[i]) for i in bad]
                    return _Problem(
                        "weights", bad, f"non-finite weights for objective(s) {bad} from {name}: {vals}"
                    )
            if out.direction is not None and not bool(torch.isfinite(out.direction).all()):  # sync: as above
                return _Problem("weights", [], f"{name} returned a non-finite direction")
        if into is not None:
            params = into.nonfinite()
            if params:
                objs = self._suspects(parts, params)
                narrowed = len(objs) == 1 or len(objs) < parts[-1].losses.shape[0]
                which = "objective(s)" if narrowed else "one or more of objective(s)"
                where_ = ", ".join(self._label(q) for q in params[:3]) + (" ..." if len(params) > 3 else "")
                return _Problem(
                    "gradient",
                    objs,
                    f"non-finite gradient for {which} {objs}: the update of {where_} is NaN/Inf",
                )
        return None

    def _reject(self, problem: _Problem, losses: Tensor, cause: BaseException | None = None) -> StepInfo:
        """``on_nonfinite="raise"``: the error; ``"skip"``: count it and report the step as skipped."""
        self._pending = None
        if self.on_nonfinite == "skip":
            self.skipped_steps += 1
            self._skipped_last = True
            return StepInfo(losses=losses.detach(), skipped=True, reason=problem.message)
        raise NonFiniteLossError(
            problem.message, stage=problem.stage, objectives=problem.objectives
        ) from cause

    def _complete(
        self,
        parts: list[_Prepared],
        retain_graph: bool,
        scale: Tensor | None,
        snapshot: tuple[dict[str, Any], dict[str, Tensor]] | None,
    ) -> tuple[StepInfo, str]:
        """Combine and write the step's batches: ``(info, "ok" | "nonfinite" | "overflow")``.

        With the check on, everything the step computed (losses, Gramian diagonal, the method's output and
        the update) is reduced on the device and read with one host synchronisation before anything reaches
        ``.grad``; a rejected step restores the method's state (taken before :meth:`Method.combine`). Under
        a ``GradScaler`` the check runs before the method instead, so that an overflowed Gramian never
        reaches it, and the update is left to the scaler. ``snapshot``: the method's state before the step
        (before :meth:`Method.select` drew from its generator), or ``None`` (check off, or K = 1)."""
        inputs = parts[-1].inputs
        inputs.extra = [p.inputs for p in parts[:-1]]
        k = inputs.num_objectives
        losses = parts[-1].losses
        self._pending = None
        self._skipped_last = False
        if not self.check_finite:
            out = self._combine(self._guarded(inputs, scale))
            self._write(out, parts if k > 1 else parts[-1:], retain_graph, scale)
            self._pending = inputs.losses
            return self._info(inputs, out), "ok"
        if scale is not None:
            device = losses.device
            if not bool(all_finite(self._checked(parts, None, None), device)):  # sync: the step's check
                if snapshot is not None:
                    self._restore(snapshot)
                problem = self._diagnose(parts, None, None)
                assert problem is not None
                if problem.stage == "loss":
                    return self._reject(problem, losses), "nonfinite"
                for p in parts:  # overflowed: the scaler sees the Inf/NaN and skips the optimiser step
                    self._overflow_write(p, retain_graph)
                if self._dist is not None:  # every rank's .grad gets the Inf/NaN: every scaler skips
                    self._dist.flush(None)
                why = "the scaled gradients overflowed"
                return StepInfo(losses=losses.detach(), skipped=True, reason=why), "overflow"
            out = self._combine(inputs)
            self._write(out, parts if k > 1 else parts[-1:], retain_graph, scale)
            self._pending = inputs.losses
            return self._info(inputs, out), "ok"
        into = GradBuffer(staged=True)
        try:
            result = self._combine(inputs)
            self._write(result, parts if k > 1 else parts[-1:], retain_graph, None, into)
        except Exception as exc:  # a method may fail on NaN inputs: report those instead
            if snapshot is not None:
                self._restore(snapshot)
            problem = self._diagnose(parts, None, None)
            if problem is None:
                raise
            return self._reject(problem, losses, exc), "nonfinite"
        if not bool(all_finite(self._checked(parts, result, into), losses.device)):  # sync: the step's check
            if snapshot is not None:
                self._restore(snapshot)
            problem = self._diagnose(parts, result, into)
            assert problem is not None, "the finite check failed but no stage holds a NaN/Inf"
            return self._reject(problem, losses), "nonfinite"
        into.commit()
        self._pending = inputs.losses
        return self._info(inputs, result), "ok"

    def _overflow_write(self, prepared: _Prepared, retain_graph: bool) -> None:
        """The scaled gradients overflowed: write them with unit weights (the scaler sees the Inf/NaN and
        skips the optimiser step) without asking the method (its state stays as it was)."""
        ones = torch.ones_like(prepared.inputs.losses)
        prepared.part.write(ones, ones, retain_graph=retain_graph)

    # ------------------------------------------------------------------ public API
    def backward(
        self,
        losses: Tensor | Sequence[Tensor],
        *,
        features: Tensor | None = None,
        retain_graph: bool = False,
        scaler: torch.amp.GradScaler | None = None,
    ) -> StepInfo:
        """Drop-in replacement for ``sum(losses).backward()`` (single-batch methods only).

        With a ``torch.amp.GradScaler`` (fp16 mixed precision) pass ``scaler=``: the losses are
        differentiated scaled, the method sees the unscaled Gramian/Jacobian, and ``.grad`` receives
        scaled gradients for ``scaler.step(optimizer)`` to unscale (and skip, after an overflow: the
        step then returns ``StepInfo.skipped`` without calling the method).
        """
        needs = self.method.needs
        if needs.batches > 1 or needs.closure:
            raise TypeError(
                f"{type(self.method).__name__} needs {needs.batches} independent batches"
                f"{' and a closure' if needs.closure else ''}: use Balancer.step(loss_fn, batches, optimizer)"
            )
        try:
            vec, items = _as_loss_vector(losses)
            self._check_features(features)
            self._begin()
            scale = _loss_scale(scaler, vec)
            snapshot = self._snapshot_for(vec)
            prepared = self._prepare(
                vec, items, features, self._select(vec), scale=scale, retain_graph=retain_graph
            )
            return self._complete([prepared], retain_graph, scale, snapshot)[0]
        finally:
            self._finish()

    @staticmethod
    def _guarded(inputs: Inputs, scale: Tensor | None) -> Inputs:
        """Under a scaler without the finite check: a non-finite Gramian reaches the method as the identity
        (no sync; the written gradients still carry the Inf/NaN, so the scaler skips the step)."""
        g = inputs.gramian
        if scale is None or g is None:
            return inputs
        ok = torch.isfinite(g).all()
        inputs.gramian = torch.where(ok, g, torch.eye(g.shape[0], dtype=g.dtype, device=g.device))
        return inputs

    def _select(self, losses: Tensor) -> Tensor | None:
        k = int(losses.shape[0])
        if k == 1:
            return None
        with self._same_rng():
            sel = self.method.select(k)
        if sel is None:
            return None
        sel = torch.as_tensor(sel, dtype=torch.long).flatten()
        if sel.numel() == 0 or int(sel.min()) < 0 or int(sel.max()) >= k:  # sync: host indices
            raise ValueError(
                f"{type(self.method).__name__}.select returned invalid objectives {sel.tolist()}"
            )
        return sel

    def update(self, losses_after: Tensor | Sequence[Tensor]) -> None:
        """Feed the losses re-computed on the same batch after the optimiser step (FAMO).

        After a step that was skipped (``on_nonfinite="skip"``) this does nothing: that step wrote no
        gradient, so there is nothing to learn from. With the check on, a non-finite post-step loss is
        handled like any other (raise, or skip the update): a second host synchronisation in the steps of
        methods that take post-step losses."""
        if self._pending is None:
            if self._skipped_last:
                return
            raise RuntimeError(
                "update() needs a completed backward()/step() first (none yet, or the last one failed)"
            )
        before = self._pending
        if isinstance(losses_after, Tensor):
            after = losses_after.detach().reshape(-1)
        else:
            after = torch.stack([torch.as_tensor(x).reshape(()) for x in losses_after]).detach()
        if after.shape != before.shape:
            raise ValueError(f"expected {before.shape[0]} losses, got {after.shape[0]}")
        if self._dist is not None:  # the method learns from the global losses, as in combine
            after = self._dist.all_reduce_mean(after.to(before.device))
        if self.check_finite and not bool(torch.isfinite(after).all()):  # sync: the post-step check
            self._pending = None
            bad = (~torch.isfinite(after)).nonzero().flatten().tolist()
            if self.on_nonfinite == "raise":
                raise NonFiniteLossError(
                    f"non-finite post-step loss for objective(s) {bad}", stage="loss", objectives=bad
                )
            self._skipped_last = True
            return
        self._pending = None  # one update per step
        if after.shape[0] > 1:
            with self._same_rng():
                self.method.after_step(before, after.to(before.dtype))

    def step(
        self,
        loss_fn: LossFn,
        batches: Iterator[Any] | Callable[[], Any],
        optimizer: torch.optim.Optimizer | None = None,
        *,
        zero_grad: bool = True,
        scaler: torch.amp.GradScaler | None = None,
    ) -> StepInfo:
        """One full step for any method: draw batches, combine, step the optimiser, post-step update.

        ``loss_fn(batch)`` returns the K losses (or ``(losses, features)`` in representation mode);
        ``batches`` is an iterator (``next`` is called once per independent batch the method needs) or a
        zero-argument callable returning a batch. With ``scaler=`` (fp16 ``GradScaler``) the gradients are
        written scaled and the step is ``scaler.step(optimizer); scaler.update()``. A step rejected by the
        finite check (``on_nonfinite="skip"``) writes nothing and does not step the optimiser.
        """
        needs = self.method.needs
        if isinstance(batches, Iterator):
            iterator = batches

            def draw() -> Any:
                return next(iterator)
        elif callable(batches):
            draw = batches
        else:
            raise TypeError("batches must be an iterator (e.g. iter(loader)) or a callable returning a batch")
        if optimizer is not None and zero_grad:
            optimizer.zero_grad(set_to_none=True)
        self._optimizer = optimizer
        try:
            info, batch, status = self._step(loss_fn, draw, needs, scaler)
        finally:
            self._optimizer = None
            self._finish()
        if status == "nonfinite":  # nothing written: the optimiser does not step
            return info
        if optimizer is not None:
            if scaler is not None:
                scaler.step(optimizer)  # skips the update after an overflow
                scaler.update()
            else:
                optimizer.step()
            if needs.after_step and status == "ok":
                with torch.no_grad():
                    after, _ = self._split(loss_fn(batch))
                self.update(after)
        return info

    def _step(
        self, loss_fn: LossFn, draw: Callable[[], Any], needs: Any, scaler: Any
    ) -> tuple[StepInfo, Any, str]:
        parts: list[_Prepared] = []
        selected: Tensor | None = None
        batch = None
        scale: Tensor | None = None
        snapshot = None
        self._begin()
        for b in range(needs.batches):
            batch = draw()
            losses, features = self._split(loss_fn(batch))
            vec, items = _as_loss_vector(losses)
            self._check_features(features)
            if b == 0:
                snapshot = self._snapshot_for(vec)
                selected = self._select(vec)
                scale = _loss_scale(scaler, vec)
            elif vec.shape != parts[0].losses.shape:
                raise ValueError(
                    f"batch {b} gave {vec.shape[0]} losses, batch 0 gave {parts[0].losses.shape[0]}"
                )

            def refresh(batch: Any = batch) -> Tensor:
                result = self._split(loss_fn(batch))[0]
                return _as_loss_vector(result, need_grad=torch.is_grad_enabled())[0]

            parts.append(
                self._prepare(vec, items, features, selected, refresh if needs.closure else None, scale)
            )
        info, status = self._complete(parts, retain_graph=False, scale=scale, snapshot=snapshot)
        return info, batch, status

    def state_dict(self) -> dict[str, Any]:
        return {"method": self.method.state_dict(), "skipped_steps": self.skipped_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; the method validates its own state (shapes, dtypes, finiteness)."""
        if not isinstance(state, Mapping):
            raise TypeError(f"a Balancer state must be a dict, got {type(state).__name__}")
        unknown = set(state) - {"method", "skipped_steps"}
        if unknown or "method" not in state:
            raise ValueError(
                f"a Balancer state holds 'method' and 'skipped_steps'; got keys {sorted(map(str, state))}"
            )
        skipped = state.get("skipped_steps", 0)
        if isinstance(skipped, Tensor):
            skipped = int(skipped)
        if not isinstance(skipped, int) or isinstance(skipped, bool) or skipped < 0:
            raise ValueError(f"skipped_steps must be a non-negative int, got {skipped!r}")
        self.method.load_state_dict(state["method"])
        self.skipped_steps = skipped


_MODES: dict[str, Callable[[], Strategy] | None] = {
    "auto": None,
    "loop": LoopJacobian,
    "batched": BatchedJacobian,
    "gramian": LayerwiseGramian,
    "representation": Representation,
}
_NAMED: dict[str, Callable[[], Strategy]] = {
    "loss-only": LossOnly,
    "closure": ClosureJacobian,
    "loop": LoopJacobian,
    "batched": BatchedJacobian,
    "gramian": LayerwiseGramian,
}
