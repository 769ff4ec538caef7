"""The user-facing entry point: turn K losses into one balanced update of the model's ``.grad``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from .engine import (
    Probe,
    accumulate_flat,
    backward_weighted,
    flat_jacobian,
    gramian_blockwise,
    jacobian_batched,
    jacobian_loop,
    leaves_from_nodes,
    objective_root,
    reachable_leaves,
)
from .methods._base import Inputs, Method, Output, TaskGrad

Mode = Literal["auto", "loop", "batched", "gramian", "representation"]
LossFn = Callable[[Any], "Tensor | Sequence[Tensor] | tuple[Any, Tensor]"]

__all__ = ["Balancer", "NonFiniteLossError", "StepInfo"]


class NonFiniteLossError(FloatingPointError):
    """A loss (or the Gramian) was NaN or infinite; the message names the objective."""


@dataclass
class StepInfo:
    """Diagnostics of one step, as tensors on the model's device (nothing is synchronised).

    ``cosines`` are the pairwise cosines of the per-objective gradients (negative = conflict),
    ``grad_norms`` their norms; both are derived from the Gramian and absent for loss-only methods.
    ``info`` holds method-specific values such as the solver ``residual``.
    """

    losses: Tensor
    weights: Tensor | None = None
    gramian: Tensor | None = None
    cosines: Tensor | None = None
    grad_norms: Tensor | None = None
    info: dict[str, Tensor] = field(default_factory=dict)
    skipped: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values (this synchronises with the device; call it when logging)."""
        out: dict[str, Any] = {"skipped": self.skipped, "losses": self.losses.tolist()}
        for name in ("weights", "cosines", "grad_norms"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value.tolist()
        out.update({k: v.tolist() for k, v in self.info.items()})
        return out


@dataclass
class _Prepared:
    """One batch, ready to combine: the method's inputs, the losses (with graph), the Jacobian as the
    engine computed it (rows: the selected objectives; columns: shared then task parameters in loop,
    batched and closure modes) and what was differentiated."""

    inputs: Inputs
    losses: Tensor
    jac: Tensor | None
    diff_inputs: list[Tensor]
    reached: set[int] | None = None  # with a selection: ids of the task parameters the selected reach


def _as_loss_vector(
    losses: Tensor | Sequence[Tensor], *, need_grad: bool = True
) -> tuple[Tensor, list[Tensor]]:
    """The losses as a (K,) tensor, plus the individual scalars (differentiated one by one in loop mode,
    so that one objective's backward pass never runs through the others' graphs)."""
    if isinstance(losses, Tensor):
        if losses.dim() != 1:
            raise ValueError(f"losses must be a 1-D tensor of K objectives, got shape {tuple(losses.shape)}")
        vec = losses
        items = list(vec.unbind())
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
        if not items:
            raise ValueError("no losses were given")
        items = [loss.reshape(()) for loss in items]
        vec = torch.stack(items)
    if vec.shape[0] == 0:
        raise ValueError("no losses were given")
    if need_grad and not vec.requires_grad:
        raise ValueError("the losses do not require grad: compute them from the model's parameters")
    return vec, items


def _cosines(gramian: Tensor) -> tuple[Tensor, Tensor]:
    norms = gramian.diagonal().clamp_min(0).sqrt()
    denom = torch.outer(norms, norms)
    cos = torch.where(denom > 0, gramian / denom.clamp_min(torch.finfo(gramian.dtype).tiny), 0.0)
    return cos, norms


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
        shared: the shared parameters (the trunk). They receive the combined direction.
        tasks: task-specific parameters (heads). ``None``: every other leaf the losses depend on,
            found from the first step's graph. They receive ``∇ Σ_i c_i L_i`` with ``c = 1``
            (``task_grad="own"``) or ``c = w`` (``"weighted"``); default: the method's official
            convention (:attr:`Method.task_grad`).
        mode: how per-objective gradients are computed when the method needs them: ``"loop"`` (K
            backward passes), ``"batched"`` (one batched vector-Jacobian product), ``"gramian"`` (the
            K×K Gramian accumulated block by block, never holding the K×P Jacobian) or
            ``"representation"`` (gradients w.r.t. a shared feature tensor passed as ``features``, as in
            MGDA-UB). ``"auto"`` is ``"loop"``: on the CPU it is as fast as the batched modes and its
            peak memory (the K×P Jacobian, activations once) is the lowest for convolutional nets; prefer
            ``"gramian"`` when K×P does not fit, ``"batched"``/``"gramian"`` on a GPU (see docs/engine.md).
        on_nonfinite: ``"raise"`` a :class:`NonFiniteLossError` naming the objective, or ``"skip"``
            the step (no gradient written, :attr:`skipped_steps` incremented, ``StepInfo.skipped``).
        check_finite: set to ``False`` to remove the one host synchronisation per step that the
            check costs (e.g. under CUDA-graph capture); NaNs then propagate.
        module: the model. Methods that re-evaluate the losses at perturbed parameters (SAMO) need
            it to run those passes in eval mode and to keep BatchNorm running statistics unchanged.
    """

    def __init__(
        self,
        method: Method,
        shared: Iterable[Tensor],
        tasks: Iterable[Tensor] | None = None,
        *,
        mode: Mode = "auto",
        task_grad: TaskGrad | None = None,
        on_nonfinite: Literal["raise", "skip"] = "raise",
        check_finite: bool = True,
        module: torch.nn.Module | None = None,
    ) -> None:
        if not isinstance(method, Method):
            raise TypeError(f"method must be a molearn Method, got {type(method).__name__}")
        self.method = method
        self.shared = list(shared)
        if not self.shared:
            raise ValueError("the list of shared parameters is empty")
        for i, p in enumerate(self.shared):
            if not isinstance(p, Tensor):
                raise TypeError(f"shared parameter {i} is a {type(p).__name__}, not a tensor")
            if not p.requires_grad:
                raise ValueError(f"shared parameter {i} (shape {tuple(p.shape)}) does not require grad")
        self._n_shared = sum(p.numel() for p in self.shared)
        self._tasks = None if tasks is None else list(tasks)
        if mode not in ("auto", "loop", "batched", "gramian", "representation"):
            raise ValueError(f"unknown mode {mode!r}")
        needs = method.needs
        if needs.jacobian and mode == "gramian":
            raise ValueError(
                f"{type(method).__name__} needs the Jacobian; mode='gramian' never forms it "
                "(use 'loop', 'batched' or 'representation')"
            )
        if (needs.batches > 1 or needs.closure) and mode in ("gramian", "representation"):
            raise ValueError(
                f"{type(method).__name__} needs {'a closure' if needs.closure else 'independent batches'}; "
                "it runs in mode 'loop' or 'batched' only"
            )
        if needs.closure and mode == "batched":
            raise ValueError(f"{type(method).__name__} computes its own gradients; use mode 'loop' or 'auto'")
        self.mode: Mode = mode
        self.module = module
        self.task_grad: TaskGrad = task_grad or method.task_grad
        if self.task_grad not in ("own", "weighted"):
            raise ValueError(f"task_grad must be 'own' or 'weighted', got {self.task_grad!r}")
        if on_nonfinite not in ("raise", "skip"):
            raise ValueError(f"on_nonfinite must be 'raise' or 'skip', got {on_nonfinite!r}")
        self.on_nonfinite = on_nonfinite
        self.check_finite = check_finite
        self.skipped_steps = 0
        self._last_losses: Tensor | None = None

    # ------------------------------------------------------------------ helpers
    def _resolved_mode(self) -> str:
        if self.mode != "auto":
            return self.mode
        return "loop"

    def _task_params(self, losses: Tensor) -> list[Tensor]:
        if self._tasks is None:
            shared_ids = {id(p) for p in self.shared}
            self._tasks = [t for t in reachable_leaves([losses]) if id(t) not in shared_ids]
        return self._tasks

    def _finite(self, losses: Tensor, what: str = "loss") -> bool:
        if not self.check_finite:
            return True
        bad = ~torch.isfinite(losses.detach())
        if not bool(bad.any()):
            return True
        if self.on_nonfinite == "skip":
            self.skipped_steps += 1
            return False
        idx = bad.nonzero().flatten().tolist()
        if what == "loss":
            vals = [float(losses.detach()[i]) for i in idx]
            raise NonFiniteLossError(f"non-finite loss for objective(s) {idx}: {vals}")
        raise NonFiniteLossError(f"non-finite gradient for objective(s) {idx} (their Gramian row is NaN/Inf)")

    def _gradients(
        self, losses: Tensor, items: list[Tensor], features: Tensor | None
    ) -> tuple[Tensor | None, Tensor | None, list[Tensor]]:
        """Return (gramian, jacobian, inputs differentiated) as the method's needs and the mode ask."""
        needs = self.method.needs
        mode = self._resolved_mode()
        if mode == "representation":
            if features is None:
                raise ValueError(
                    "mode='representation' needs the shared features: backward(losses, features=z)"
                )
            inputs = [features]
        else:
            inputs = self.shared
        if not needs.gradients:
            return None, None, inputs
        if mode == "gramian":
            return gramian_blockwise(losses, inputs), None, inputs
        if mode == "representation":
            jac = flat_jacobian(jacobian_batched(losses, inputs))
        else:
            # the task-specific parameters ride along in the same passes (their columns follow the shared
            # ones), so no extra backward through the heads is needed afterwards
            every = [*inputs, *self._task_params(losses)]
            if mode == "batched":
                jac = flat_jacobian(jacobian_batched(losses, every))
            else:
                jac = jacobian_loop(items, every, flat=True)
                assert isinstance(jac, Tensor)
        js = jac[:, : self._n_shared] if mode != "representation" else jac
        jg = js.to(torch.float64 if js.dtype == torch.float64 else torch.float32)
        return jg @ jg.T, jac, inputs

    def _inputs(
        self,
        losses: Tensor,
        items: list[Tensor],
        features: Tensor | None,
        selected: Tensor | None = None,
        refresh: Callable[[], Tensor] | None = None,
    ) -> _Prepared | None:
        if not self._finite(losses):
            return None
        if losses.shape[0] == 1:  # nothing to balance: the gradient passes through (see _combine)
            return _Prepared(Inputs(losses=losses.detach()), losses, None, self.shared)
        tasks = self._task_params(losses)  # discovered from all K objectives' graph
        needs = self.method.needs
        reached: set[int] | None = None
        if needs.closure:
            if refresh is None:
                raise TypeError(f"{type(self.method).__name__} needs a closure: use Balancer.step")
            probe = Probe(refresh, losses, self.shared, tasks, self.module, items=items)
            jac = self.method.jacobian(probe)
            width = self._n_shared + sum(t.numel() for t in tasks)
            if jac.shape != (losses.shape[0], width):
                raise ValueError(
                    f"{type(self.method).__name__}.jacobian returned shape {tuple(jac.shape)}, "
                    f"expected ({losses.shape[0]}, {width})"
                )
            js = jac[:, : self._n_shared]
            gramian: Tensor | None = js @ js.T
            diff_inputs = self.shared
        else:
            if selected is not None:
                losses_g = losses[selected.to(losses.device)]
                chosen = selected.tolist()  # sync: indices chosen on the host
                roots = [objective_root(items[i], i) for i in chosen]
                reached = {id(t) for t in leaves_from_nodes(roots)}
                items = [items[i] for i in chosen]
            else:
                losses_g = losses
            gramian, jac, diff_inputs = self._gradients(losses_g, items, features)
        if gramian is not None and not self._finite(gramian.diagonal(), what="gradient"):
            return None
        inputs = Inputs(
            losses=losses.detach(),
            gramian=gramian if needs.gradients else None,
            jacobian=self._shared_columns(jac) if needs.jacobian and jac is not None else None,
            selected=selected,
        )
        return _Prepared(inputs, losses, jac, diff_inputs, reached)

    def _shared_columns(self, jac: Tensor) -> Tensor:
        return jac if self._resolved_mode() == "representation" else jac[:, : self._n_shared]

    def _task_coefficients(self, k: int, selected: Tensor | None, like: Tensor) -> Tensor:
        """``task_grad="own"``: 1 for every objective whose gradient was computed, 0 for the others."""
        ones = torch.ones(k, dtype=like.dtype, device=like.device)
        if selected is None:
            return ones
        return torch.zeros_like(ones).index_fill_(0, selected.to(like.device), 1.0)

    def _apply(self, out: Output, parts: list[_Prepared], retain_graph: bool) -> None:
        """Write the update: shared parameters get the combined direction, task parameters ``Σ c_i ∇L_i``.

        ``parts`` are the independent batches, the last one drawn last. With several batches the task
        parameters get the mean over the batches (``"own"``), as in LibMTL's MoDo.
        """
        last = parts[-1]
        losses, jac, diff_inputs = last.losses, last.jac, last.diff_inputs
        selected = last.inputs.selected
        tasks = self._task_params(losses)
        k = losses.shape[0]
        mode = self._resolved_mode()
        # in loop/batched mode (and for closure methods) the Jacobian already holds the task columns
        with_tasks = mode in ("loop", "batched")
        name = type(self.method).__name__
        if out.direction is not None:
            if not self.method.needs.jacobian:
                raise TypeError(f"{name} returned a direction without declaring Needs.jacobian")
            if mode == "representation":
                feat = diff_inputs[0]
                torch.autograd.backward(
                    feat, out.direction.view_as(feat).to(feat.dtype), inputs=self.shared, retain_graph=True
                )
            else:
                accumulate_flat(self.shared, out.direction)
            coeff = self._task_coefficients(k, selected, losses)
            if jac is not None and with_tasks:
                rows = coeff if selected is None else coeff[selected.to(coeff.device)]
                self._accumulate_tasks(
                    tasks, [rows.to(p.jac.dtype) @ p.jac[:, self._n_shared :] for p in parts], last.reached
                )
            else:
                backward_weighted(losses, coeff, self._reached(tasks, last), retain_graph=retain_graph)
            return
        if out.weights is None:
            raise TypeError(f"{name}.combine returned neither weights nor a direction")
        extra = out.extra_weights or []
        if len(extra) not in (0, len(parts) - 1):
            raise ValueError(
                f"{name} returned {len(extra)} extra weight vectors for {len(parts) - 1} extra batches"
            )
        all_weights: list[Tensor | None] = [*(extra or [None] * (len(parts) - 1)), out.weights]
        for w in all_weights:
            if w is not None and w.shape != (k,):
                raise ValueError(f"{name} returned weights of shape {tuple(w.shape)}, expected ({k},)")
        w = out.weights
        own = self.task_grad == "own"
        if jac is not None and with_tasks:
            idx = None if selected is None else selected.to(w.device)
            shared_dir = None
            task_dirs = []
            coeff = self._task_coefficients(k, selected, w)
            for part, wb in zip(parts, all_weights, strict=True):
                assert part.jac is not None
                if wb is not None:
                    rows = wb if idx is None else wb[idx]
                    d = rows.to(part.jac.dtype) @ part.jac[:, : self._n_shared]
                    shared_dir = d if shared_dir is None else shared_dir + d
                c = coeff if own else wb
                if c is not None:
                    rows = c if idx is None else c[idx]
                    task_dirs.append(rows.to(part.jac.dtype) @ part.jac[:, self._n_shared :])
            assert shared_dir is not None
            accumulate_flat(self.shared, shared_dir)
            if own:
                self._accumulate_tasks(tasks, task_dirs, last.reached)
            elif task_dirs:
                accumulate_flat(tasks, torch.stack(task_dirs).sum(0), only=last.reached)
        elif own and tasks:
            backward_weighted(losses, w, self.shared, retain_graph=True)
            coeff = self._task_coefficients(k, selected, w)
            backward_weighted(losses, coeff, self._reached(tasks, last), retain_graph=retain_graph)
        else:
            backward_weighted(losses, w, [*self.shared, *tasks], retain_graph=retain_graph)

    @staticmethod
    def _accumulate_tasks(tasks: list[Tensor], per_batch: list[Tensor], only: set[int] | None = None) -> None:
        if not tasks or not per_batch:
            return
        total = per_batch[0] if len(per_batch) == 1 else torch.stack(per_batch).mean(0)
        accumulate_flat(tasks, total, only=only)

    @staticmethod
    def _reached(tasks: list[Tensor], part: _Prepared) -> list[Tensor]:
        """The task parameters that get a gradient: with a selection, only those the selected reach."""
        return tasks if part.reached is None else [t for t in tasks if id(t) in part.reached]

    def _combine(self, inputs: Inputs) -> Output:
        """The method's output; with K = 1 the single gradient passes through unchanged (weight 1),
        whatever the method (some official formulas would rescale it, e.g. Nash-MTL to unit norm)."""
        if inputs.num_objectives == 1:
            return Output(weights=torch.ones_like(inputs.losses))
        return self.method.combine(inputs)

    def _info(self, inputs: Inputs, out: Output) -> StepInfo:
        info = StepInfo(losses=inputs.losses, weights=out.weights, info=dict(out.info))
        if inputs.gramian is not None:
            info.gramian = inputs.gramian
            info.cosines, info.grad_norms = _cosines(inputs.gramian)
        return info

    def _split(self, result: Any) -> tuple[Any, Tensor | None]:
        """``loss_fn`` returns the losses, or ``(losses, features)`` in representation mode."""
        if self._resolved_mode() == "representation":
            if not (isinstance(result, tuple) and len(result) == 2):
                raise ValueError("in mode='representation', loss_fn must return (losses, features)")
            return result[0], result[1]
        return result, None

    # ------------------------------------------------------------------ public API
    def backward(
        self, losses: Tensor | Sequence[Tensor], *, features: Tensor | None = None, retain_graph: bool = False
    ) -> StepInfo:
        """Drop-in replacement for ``sum(losses).backward()`` (single-batch methods only)."""
        needs = self.method.needs
        if needs.batches > 1 or needs.closure:
            raise TypeError(
                f"{type(self.method).__name__} needs {needs.batches} independent batches"
                f"{' and a closure' if needs.closure else ''}: use Balancer.step(loss_fn, batches, optimizer)"
            )
        vec, items = _as_loss_vector(losses)
        prepared = self._inputs(vec, items, features, self._select(vec))
        if prepared is None:
            return StepInfo(losses=vec.detach(), skipped=True)
        out = self._combine(prepared.inputs)
        self._apply(out, [prepared], retain_graph)
        self._last_losses = prepared.inputs.losses
        return self._info(prepared.inputs, out)

    def _select(self, losses: Tensor) -> Tensor | None:
        k = int(losses.shape[0])
        if k == 1:
            return None
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
        """Feed the losses re-computed on the same batch after the optimiser step (FAMO)."""
        if self._last_losses is None:
            raise RuntimeError("update() called before any backward()/step()")
        if isinstance(losses_after, Tensor):
            after = losses_after.detach().reshape(-1)
        else:
            after = torch.stack([torch.as_tensor(x).reshape(()) for x in losses_after]).detach()
        if after.shape != self._last_losses.shape:
            raise ValueError(f"expected {self._last_losses.shape[0]} losses, got {after.shape[0]}")
        if self.check_finite and not bool(torch.isfinite(after).all()):
            if self.on_nonfinite == "raise":
                bad = (~torch.isfinite(after)).nonzero().flatten().tolist()
                raise NonFiniteLossError(f"non-finite post-step loss for objective(s) {bad}")
            return
        if after.shape[0] > 1:
            self.method.after_step(self._last_losses, after.to(self._last_losses.dtype))

    def step(
        self,
        loss_fn: LossFn,
        batches: Iterator[Any] | Callable[[], Any],
        optimizer: torch.optim.Optimizer | None = None,
        *,
        zero_grad: bool = True,
    ) -> StepInfo:
        """One full step for any method: draw batches, combine, step the optimiser, post-step update.

        ``loss_fn(batch)`` returns the K losses (or ``(losses, features)`` in representation mode);
        ``batches`` is an iterator (``next`` is called once per independent batch the method needs) or a
        zero-argument callable returning a batch.
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
        parts: list[_Prepared] = []
        selected: Tensor | None = None
        batch = None
        for b in range(needs.batches):
            batch = draw()
            losses, features = self._split(loss_fn(batch))
            vec, items = _as_loss_vector(losses)
            if b == 0:
                selected = self._select(vec)
            elif vec.shape != parts[0].losses.shape:
                raise ValueError(
                    f"batch {b} gave {vec.shape[0]} losses, batch 0 gave {parts[0].losses.shape[0]}"
                )

            def refresh(batch: Any = batch) -> Tensor:
                result = self._split(loss_fn(batch))[0]
                return _as_loss_vector(result, need_grad=torch.is_grad_enabled())[0]

            prepared = self._inputs(vec, items, features, selected, refresh if needs.closure else None)
            if prepared is None:
                return StepInfo(losses=vec.detach(), skipped=True)
            parts.append(prepared)
        inputs = parts[-1].inputs
        inputs.extra = [p.inputs for p in parts[:-1]]
        out = self._combine(inputs)
        if inputs.num_objectives == 1:
            parts = parts[-1:]
        self._apply(out, parts, retain_graph=False)
        self._last_losses = inputs.losses
        if optimizer is not None:
            optimizer.step()
            if needs.after_step:
                with torch.no_grad():
                    after, _ = self._split(loss_fn(batch))
                self.update(after)
        return self._info(inputs, out)

    def state_dict(self) -> dict[str, Any]:
        return {"method": self.method.state_dict(), "skipped_steps": self.skipped_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.method.load_state_dict(state["method"])
        self.skipped_steps = int(state.get("skipped_steps", 0))
