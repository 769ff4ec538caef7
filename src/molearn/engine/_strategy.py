"""Engine strategies: how the per-objective statistics of one batch are computed and how ``.grad`` is written.

A :class:`Strategy` turns a :class:`Request` (the K losses of one batch, the parameters, what the method
needs) into a :class:`Part`: the batch's Gramian (and Jacobian, for the strategies that form it) plus
what it takes to write ``Σ_i w_i ∇L_i`` into ``.grad`` afterwards. :class:`molearn.Balancer` picks one
strategy per step (``mode=``; ``"auto"`` asks :func:`choose`) and only coordinates.

| strategy | ``mode`` | per-objective statistics | write |
|---|---|---|---|
| :class:`LossOnly` | (methods without gradients) | none | one backward of ``Σ w_i L_i`` |
| :class:`LoopJacobian` | ``"loop"`` | K backward passes → K×P Jacobian | ``Jᵀw`` |
| :class:`BatchedJacobian` | ``"batched"`` | one batched backward → K×P Jacobian | ``Jᵀw`` |
| :class:`LayerwiseGramian` | ``"gramian"`` | K output-gradients per layer → Gramian | per layer, from them |
| :class:`Representation` | ``"representation"`` | Jacobian w.r.t. shared features | one backward |
| :class:`ClosureJacobian` | (``Needs.closure``) | the method's own rows (``Probe``) | ``Jᵀw`` |

Nothing here synchronises with the device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ._auto import Situation, batched_passes
from ._grads import jacobian_batched, jacobian_loop
from ._layers import Call, Layer, LayerRecorder, external_uses
from ._write import GradBuffer, backward_weighted

__all__ = [
    "BatchedJacobian",
    "ClosureJacobian",
    "JacobianPart",
    "LayerwiseGramian",
    "LayerwisePart",
    "LoopJacobian",
    "LossOnly",
    "Part",
    "Representation",
    "Request",
    "Strategy",
    "gram_dtype",
    "gramian_of",
]


def gram_dtype(dtype: torch.dtype) -> torch.dtype:
    """Gramians accumulate in float32, or float64 for float64 parameters."""
    return torch.float64 if dtype == torch.float64 else torch.float32


_BLOCK = 16384


def gramian_of(jac: Tensor) -> Tensor:
    """``J Jᵀ`` of a k×P matrix in its Gramian dtype. On the CPU a short, very wide J is cut into column
    blocks multiplied as one batch (one GEMM with an inner dimension of millions runs at a fraction of the
    speed: measured 2-3× on 10 × 2.4M)."""
    j = jac if jac.dtype == gram_dtype(jac.dtype) else jac.to(gram_dtype(jac.dtype))
    k, p = j.shape
    if j.device.type != "cpu" or k > 32 or p < 4 * _BLOCK or j.stride(1) != 1:
        return j @ j.T
    nb = p // _BLOCK
    blocks = j[:, : nb * _BLOCK].unflatten(1, (nb, _BLOCK)).transpose(0, 1)  # (nb, k, block)
    g = torch.bmm(blocks, blocks.transpose(1, 2)).sum(0)
    tail = j[:, nb * _BLOCK :]
    return g + tail @ tail.T


@dataclass
class Request:
    """One batch, as the coordinator hands it to a strategy.

    ``losses`` are the K losses (1-D, with their graph) and ``items`` the k scalars to differentiate: all K,
    or the ``selected`` ones (indices among the K, on the losses' device); under a ``GradScaler`` both are
    already multiplied by the loss scale. ``reached``: with a selection, the ids of the task parameters
    that the selected objectives reach (the others get no gradient). ``closure`` computes the rows of a
    method that differentiates itself (``Needs.closure``).
    """

    losses: Tensor
    items: list[Tensor] | None
    shared: list[Tensor]
    tasks: list[Tensor]
    gramian: bool
    jacobian: bool
    features: Tensor | None = None
    selected: Tensor | None = None
    reached: set[int] | None = None
    closure: Callable[[], Tensor] | None = None
    retain_graph: bool = False

    def objectives(self) -> Tensor:
        """The (k,) losses to differentiate (a new graph node when there is a selection)."""
        return self.losses if self.selected is None else self.losses[self.selected]

    def scalars(self) -> list[Tensor]:
        """The k scalars to differentiate one by one (unbound from the losses if not given)."""
        if self.items is None:
            self.items = list(self.objectives().unbind())
        return self.items

    @property
    def k(self) -> int:
        """The number of objectives to differentiate."""
        if self.items is not None:
            return len(self.items)
        return int(self.losses.shape[0]) if self.selected is None else int(self.selected.shape[0])


class Part:
    """What a strategy computed for one batch: ``gramian`` (k×k), ``jacobian`` (k×P_shared, when formed)
    and how to write into ``.grad``. Weight vectors passed to the writers have all K entries."""

    gramian: Tensor | None = None
    jacobian: Tensor | None = None

    def __init__(self, req: Request) -> None:
        self.req = req

    def rows(self, v: Tensor) -> Tensor:
        sel = self.req.selected
        return v if sel is None else v[sel.to(v.device)]

    def tasks_reached(self) -> list[Tensor]:
        reached = self.req.reached
        tasks = self.req.tasks
        return tasks if reached is None else [t for t in tasks if id(t) in reached]

    def write(
        self,
        weights: Tensor | None,
        task_coeff: Tensor | None,
        *,
        retain_graph: bool,
        into: GradBuffer | None = None,
    ) -> None:
        """Add ``Σ_i weights_i ∇_shared L_i`` and ``Σ_i task_coeff_i ∇_tasks L_i`` (either may be None) to
        ``.grad``, or stage them in ``into`` (the Balancer's finite check commits them)."""
        raise NotImplementedError

    def write_direction(
        self, direction: Tensor, *, retain_graph: bool, into: GradBuffer | None = None
    ) -> None:
        """Add a direction (Jacobian methods) to the shared parameters (or stage it in ``into``)."""
        raise TypeError(f"{type(self).__name__} forms no Jacobian: it cannot write a direction")


_DIRECT = GradBuffer(staged=False)


def _grads_into(
    into: GradBuffer, losses: Tensor, weights: Tensor, inputs: list[Tensor], *, retain_graph: bool
) -> None:
    """Stage ``∇ Σ_i w_i L_i`` w.r.t. ``inputs`` (one pass, ``.grad`` untouched; unreached: nothing)."""
    if not inputs:
        return
    w = weights if weights.dtype == losses.dtype else weights.to(losses.dtype)
    total = torch.dot(w.detach(), losses)
    grads = torch.autograd.grad(total, inputs, retain_graph=retain_graph, allow_unused=True)
    for p, g in zip(inputs, grads, strict=True):
        if g is not None:
            into.add(p, g)


class BackwardPart(Part):
    """Writes through backward passes of ``Σ_i c_i L_i`` over the batch's graph (all K losses: weights are
    zero outside a selection)."""

    def write(
        self,
        weights: Tensor | None,
        task_coeff: Tensor | None,
        *,
        retain_graph: bool,
        into: GradBuffer | None = None,
    ) -> None:
        losses = self.req.losses
        shared, tasks = self.req.shared, self.tasks_reached()
        staged = into is not None and into.staged

        def run(w: Tensor, params: list[Tensor], retain: bool) -> None:
            if staged:
                assert into is not None
                _grads_into(into, losses, w, params, retain_graph=retain)
            else:  # straight into .grad (one backward, with the parameters' hooks)
                backward_weighted(losses, w, params, retain_graph=retain)

        if weights is not None and task_coeff is weights:
            run(weights, [*shared, *tasks], retain_graph)
            return
        two = task_coeff is not None and bool(tasks)
        if weights is not None:
            run(weights, list(shared), retain_graph or two)
        if two:
            assert task_coeff is not None
            run(task_coeff, list(tasks), retain_graph)


class RepresentationPart(BackwardPart):
    def __init__(self, req: Request, jac: Tensor, gramian: Tensor) -> None:
        super().__init__(req)
        self.jacobian = jac
        self.gramian = gramian

    def write_direction(
        self, direction: Tensor, *, retain_graph: bool, into: GradBuffer | None = None
    ) -> None:
        feat = self.req.features
        assert feat is not None
        cotangent = direction.view_as(feat).to(feat.dtype)
        if into is None or not into.staged:
            torch.autograd.backward(feat, cotangent, inputs=self.req.shared, retain_graph=retain_graph)
            return
        grads = torch.autograd.grad(
            feat, self.req.shared, cotangent, retain_graph=retain_graph, allow_unused=True
        )
        for p, g in zip(self.req.shared, grads, strict=True):
            if g is not None:
                into.add(p, g)


class JacobianPart(Part):
    """The k×(P_shared + P_tasks) Jacobian of the batch; writes are products with it (no backward)."""

    def __init__(self, req: Request, jac: Tensor) -> None:
        super().__init__(req)
        self.full_jac = jac
        self.n_shared = sum(p.numel() for p in req.shared)
        js = jac[:, : self.n_shared]
        self.jacobian = js
        if req.gramian or req.jacobian:
            self.gramian = gramian_of(js)

    def write(
        self,
        weights: Tensor | None,
        task_coeff: Tensor | None,
        *,
        retain_graph: bool,
        into: GradBuffer | None = None,
    ) -> None:
        sink = into or _DIRECT
        jac = self.full_jac
        if weights is not None:
            sink.add_flat(self.req.shared, self.rows(weights).to(jac.dtype) @ jac[:, : self.n_shared])
        if task_coeff is not None and self.req.tasks:
            only = self.req.reached
            sink.add_flat(
                self.req.tasks, self.rows(task_coeff).to(jac.dtype) @ jac[:, self.n_shared :], only=only
            )

    def write_direction(
        self, direction: Tensor, *, retain_graph: bool, into: GradBuffer | None = None
    ) -> None:
        (into or _DIRECT).add_flat(self.req.shared, direction)


class Strategy:
    """How per-objective statistics are computed and ``.grad`` is written (one instance per Balancer).

    Class attributes say what a strategy can serve: ``forms_jacobian`` (methods with ``Needs.jacobian``
    and direction outputs), ``multi_batch`` (``Needs.batches > 1``).
    """

    name = "?"
    forms_jacobian = False
    multi_batch = True
    wants_features = False

    def compute(self, req: Request) -> Part:
        raise NotImplementedError

    def finish(self) -> None:
        """Called after each step (written or not): drop what the step kept."""

    def close(self) -> None:
        """Remove hooks, if any."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class LossOnly(Strategy):
    """No per-objective gradients: the method weighs the losses; one backward writes ``.grad``."""

    name = "loss-only"

    def compute(self, req: Request) -> Part:
        return BackwardPart(req)


class LoopJacobian(Strategy):
    """K backward passes (one per objective, through its own graph only) into one preallocated K×P
    Jacobian over the shared and task parameters; the write is ``Jᵀw`` (no further backward)."""

    name = "loop"
    forms_jacobian = True

    def compute(self, req: Request) -> Part:
        every = [*req.shared, *req.tasks]
        jac = jacobian_loop(req.scalars(), every, flat=True, retain_graph=req.retain_graph)
        assert isinstance(jac, Tensor)
        return JacobianPart(req, jac)


class BatchedJacobian(Strategy):
    """One batched vector-Jacobian product (``is_grads_batched``) with the K unit cotangents."""

    name = "batched"
    forms_jacobian = True

    def compute(self, req: Request) -> Part:
        every = [*req.shared, *req.tasks]
        blocks = jacobian_batched(req.objectives(), every, retain_graph=req.retain_graph)
        k = req.k
        return JacobianPart(req, torch.cat([b.reshape(k, -1) for b in blocks], dim=1))


class ClosureJacobian(Strategy):
    """The method computes the k×(P_shared + P_tasks) rows itself through a ``Probe`` (SAMO)."""

    name = "closure"
    forms_jacobian = True

    def compute(self, req: Request) -> Part:
        assert req.closure is not None
        return JacobianPart(req, req.closure())


class Representation(Strategy):
    """Gradients w.r.t. a shared feature tensor ``z`` (MGDA-UB); the write is one backward."""

    name = "representation"
    forms_jacobian = True
    multi_batch = False
    wants_features = True

    def compute(self, req: Request) -> Part:
        feat = req.features
        if feat is None:
            raise ValueError("mode='representation' needs the shared features: backward(losses, features=z)")
        k = req.k
        jac = jacobian_batched(req.objectives(), [feat], retain_graph=True)[0].reshape(k, -1)
        jg = jac.to(gram_dtype(jac.dtype))
        return RepresentationPart(req, jac, jg @ jg.T)


# ---------------------------------------------------------------------------------------------- layerwise
@dataclass
class _Plan:
    """Which layers use the activation form this step, and what is differentiated directly."""

    act: list[int]
    direct: list[Tensor]  # shared parameters in gradient form, then the task parameters
    n_direct_shared: int
    edges: list[Any] = field(default_factory=list)


class LayerwisePart(Part):
    """The Gramian from per-layer quantities, and what it came from (kept for the write): the activation-form
    layers' output-gradients, and the gradient rows of the directly differentiated parameters, either as one
    flat k×width matrix (``jac``) or one k×numel block per parameter (``blocks``, a single batched pass)."""

    def __init__(
        self,
        req: Request,
        layers: list[Layer],
        calls: list[list[Call]],
        deltas: list[list[Tensor]],
        direct: list[Tensor],
        n_shared_direct: int,
        jac: Tensor | None,
        blocks: list[Tensor] | None,
        gramian: Tensor,
    ) -> None:
        super().__init__(req)
        self.layers = layers
        self.calls = calls
        self.deltas = deltas
        self.direct = direct
        self.n_shared_direct = n_shared_direct
        self.jac = jac
        self.blocks = blocks
        self.gramian = gramian

    def _rows_times(self, v: Tensor, params: slice, sink: GradBuffer, only: set[int] | None = None) -> None:
        """Add ``vᵀ J`` to the ``.grad`` of the directly differentiated parameters in ``params``."""
        direct = self.direct[params]
        if not direct:
            return
        if self.jac is not None:
            start = sum(p.numel() for p in self.direct[: params.start])
            stop = start + sum(p.numel() for p in direct)
            sink.add_flat(direct, v.to(self.jac.dtype) @ self.jac[:, start:stop], only=only)
            return
        assert self.blocks is not None
        for p, b in zip(direct, self.blocks[params], strict=True):
            if only is None or id(p) in only:
                sink.add(p, (v.to(b.dtype) @ b).view_as(p))

    def write(
        self,
        weights: Tensor | None,
        task_coeff: Tensor | None,
        *,
        retain_graph: bool,
        into: GradBuffer | None = None,
    ) -> None:
        sink = into or _DIRECT
        ns = self.n_shared_direct
        with _no_autocast(self.req.losses.device):
            if weights is not None:
                w = self.rows(weights)
                self._rows_times(w, slice(0, ns), sink)
                for layer, calls, deltas in zip(self.layers, self.calls, self.deltas, strict=True):
                    layer.write(calls, deltas, w, sink.add)
            if task_coeff is not None and self.req.tasks:
                self._rows_times(
                    self.rows(task_coeff), slice(ns, len(self.direct)), sink, only=self.req.reached
                )


def _or_zeros(g: Tensor | None, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    return torch.zeros(shape, dtype=dtype, device=device) if g is None else g


def _no_autocast(device: torch.device) -> Any:
    return torch.autocast(device.type, enabled=False)


class LayerwiseGramian(Strategy):
    """The Gramian ``J Jᵀ`` from per-layer quantities, never the K×P Jacobian of the layers that can avoid it.

    Forward hooks (:class:`~molearn.engine._layers.LayerRecorder`) keep, for every call of a Linear,
    Conv1d/2d or Embedding layer whose parameters are all shared, its input and the gradient edge of its
    output. Per step, each such layer uses the activation form (its K output-gradients δ and the N×N
    matrix ``A Aᵀ``: no weight gradient is ever computed) where that costs less than its K gradients;
    every other shared parameter, and the task parameters, is differentiated directly in the same
    backward passes (the gradient form: a K×p block). Passes: one per objective (``objectives_per_pass
    = 1``, through that objective's graph only) or batched over chunks of objectives
    (``is_grads_batched``). The write needs no further backward: ``Σ w_i δ_i`` gives each activation-form
    layer its gradient, ``Jᵀw`` the others.

    Args:
        objectives_per_pass: objectives per backward pass; ``None``: by the rule of ``auto``
            (:func:`~molearn.engine.batched_passes`: all K for dense trunks, in chunks of at most
            ``max_chunk_bytes`` of output-gradients and gradient rows; one per pass otherwise).
        max_chunk_bytes: the memory a batched pass may give to its K-fold buffers.
        activation_form: ``"auto"`` (by cost), ``"always"`` (wherever it applies exactly) or ``"never"``
            (every parameter differentiated directly: the loop Jacobian's Gramian).

    ``last_activation`` lists the modules that used the activation form in the last step,
    ``last_per_pass`` its objectives per backward pass.
    """

    name = "gramian"

    def __init__(
        self,
        objectives_per_pass: int | None = None,
        *,
        max_chunk_bytes: int = 2**30,
        activation_form: str = "auto",
    ) -> None:
        if activation_form not in ("auto", "always", "never"):
            raise ValueError(f"activation_form must be 'auto', 'always' or 'never', got {activation_form!r}")
        if objectives_per_pass is not None and objectives_per_pass < 1:
            raise ValueError(f"objectives_per_pass must be at least 1, got {objectives_per_pass}")
        self.objectives_per_pass = objectives_per_pass
        self.max_chunk_bytes = int(max_chunk_bytes)
        self.activation_form = activation_form
        self.recorder: LayerRecorder | None = None
        self.last_activation: list[str] = []
        self.last_per_pass = 0
        self._batched_failed = False
        self._batched_ok = False

    def __repr__(self) -> str:
        return (
            f"LayerwiseGramian(objectives_per_pass={self.objectives_per_pass}, "
            f"activation_form={self.activation_form})"
        )

    def attach(self, recorder: LayerRecorder | None) -> None:
        self.recorder = recorder

    def finish(self) -> None:
        if self.recorder is not None:
            self.recorder.clear()

    def close(self) -> None:
        if self.recorder is not None:
            self.recorder.close()

    # ------------------------------------------------------------------ planning
    def _plan(self, req: Request, calls: list[list[Call]]) -> _Plan:
        rec = self.recorder
        k = req.k
        act: list[int] = []
        if rec is not None and self.activation_form != "never":
            always = self.activation_form == "always"
            act = [
                i
                for i, layer in enumerate(rec.layers)
                if calls[i] and (layer.fits(calls[i]) if always else layer.activation_cheaper(calls[i], k))
            ]
            if act:
                signature = tuple(len(c) for c in calls)
                bad = rec.validated.get(signature)
                if bad is None:  # once per structure of the calls: a walk over the whole graph
                    bad = frozenset(external_uses([req.losses.grad_fn], rec.layers, calls))
                    rec.validated[signature] = bad
                act = [i for i in act if i not in bad]
            self.last_activation = [type(rec.layers[i].module).__name__ for i in act]
        covered = {id(p) for i in act for p in rec.layers[i].params} if rec is not None else set()
        direct_shared = [p for p in req.shared if id(p) not in covered]
        edges = [c.edge for i in act for c in calls[i]]
        return _Plan(act, [*direct_shared, *req.tasks], len(direct_shared), edges)

    def _per_pass(self, req: Request, plan: _Plan, calls: list[list[Call]], device: torch.device) -> int:
        k = req.k
        rec = self.recorder
        if self.objectives_per_pass is not None:
            chosen = self.objectives_per_pass
        else:
            situation = Situation(
                device=device.type,
                k=k,
                gradients=True,
                jacobian=False,
                batches=1,
                closure=False,
                # a hooked layer that recorded nothing may sit inside a compiled module
                compiled=rec is None or rec.compiled or any(not c for c in calls) or self._batched_failed,
                dense=rec is not None and rec.dense,
            )
            chosen = k if batched_passes(situation) else 1
        if chosen == 1:
            return 1
        itemsize = req.shared[0].element_size()
        per_objective = sum(p.numel() for p in plan.direct) * itemsize
        if rec is not None:
            per_objective += sum(rec.layers[i].output_numel(calls[i]) for i in plan.act) * itemsize
        if per_objective > 0:
            chosen = min(chosen, max(1, self.max_chunk_bytes // per_objective))
        return max(1, min(chosen, k))

    # ------------------------------------------------------------------ passes
    def compute(self, req: Request) -> Part:
        rec = self.recorder
        calls = rec.take() if rec is not None else []
        plan = self._plan(req, calls)
        k = req.k
        device = req.losses.device
        act_calls = [calls[i] for i in plan.act]
        ref = req.shared[0]
        inputs: list[Any] = [*plan.edges, *plan.direct]
        n_edges = len(plan.edges)
        per_pass = self._per_pass(req, plan, calls, device) if inputs else 1
        self.last_per_pass = min(per_pass, k)
        jac: Tensor | None = None
        blocks: list[Tensor] | None = None
        deltas: list[list[Tensor]] = []
        grads = self._single_pass(req, inputs) if per_pass > 1 and k <= per_pass else None
        if grads is not None:  # one batched pass: keep autograd's results as they are (no copy)
            it = iter(grads[:n_edges])
            deltas = [[_or_zeros(next(it), (k, *c.shape), c.dtype, device) for c in cs] for cs in act_calls]
            blocks = [
                _or_zeros(g, (k, p.numel()), ref.dtype, device).reshape(k, -1)
                for p, g in zip(plan.direct, grads[n_edges:], strict=True)
            ]
        else:
            width = sum(p.numel() for p in plan.direct)
            jac = torch.empty(k, width, dtype=ref.dtype, device=device)
            deltas = [
                [torch.empty((k, *c.shape), dtype=c.dtype, device=device) for c in cs] for cs in act_calls
            ]
            flat_deltas = [d for ds in deltas for d in ds]
            if inputs and per_pass > 1:
                self._batched(req, inputs, n_edges, per_pass, jac, flat_deltas)
            elif inputs:
                self._loop(req, inputs, n_edges, jac, flat_deltas)
        layers = [rec.layers[i] for i in plan.act] if rec is not None else []
        return self._part(req, plan, layers, act_calls, deltas, jac, blocks)

    def _part(
        self,
        req: Request,
        plan: _Plan,
        layers: list[Layer],
        act_calls: list[list[Call]],
        deltas: list[list[Tensor]],
        jac: Tensor | None,
        blocks: list[Tensor] | None,
    ) -> Part:
        """The batch's part from the passes' results: here with the local Gramian (the distributed
        strategy forms a global one instead)."""
        k = req.k
        device = req.losses.device
        gd = gram_dtype(req.shared[0].dtype)
        ns = plan.n_direct_shared
        with _no_autocast(device):
            if jac is not None:
                gramian = gramian_of(jac[:, : sum(p.numel() for p in plan.direct[:ns])])
            else:
                assert blocks is not None
                gramian = torch.zeros(k, k, dtype=gd, device=device)
                for b in blocks[:ns]:
                    gramian = gramian + gramian_of(b)
            for layer, cs, ds in zip(layers, act_calls, deltas, strict=True):
                gramian = gramian + layer.gramian(cs, ds, gd)
        return LayerwisePart(req, layers, act_calls, deltas, plan.direct, ns, jac, blocks, gramian)

    def _single_pass(self, req: Request, inputs: list[Any]) -> tuple[Tensor | None, ...] | None:
        """All k objectives in one batched pass; ``None`` if it cannot run (then one pass per objective).

        The first batched pass keeps the graph, so that a failure can fall back to one pass per
        objective; once one has run, the graph is freed by the pass as usual (its activations would
        otherwise live until the caller drops the losses)."""
        losses = req.objectives()
        eye = torch.eye(losses.shape[0], dtype=losses.dtype, device=losses.device)
        probing = not self._batched_ok
        try:
            grads = torch.autograd.grad(
                losses,
                inputs,
                grad_outputs=eye,
                is_grads_batched=True,
                retain_graph=req.retain_graph or probing,
                allow_unused=True,
            )
        except RuntimeError as exc:
            # e.g. a compiled module the recorder did not see: its backward cannot be batched
            self._batched_failed = True
            if not probing:
                raise RuntimeError(
                    "the batched backward pass failed (a torch.compile'd model?); use "
                    "LayerwiseGramian(objectives_per_pass=1) or mode='loop'"
                ) from exc
            return None
        self._batched_ok = True
        return grads

    @staticmethod
    def _store(
        grads: Sequence[Tensor | None],
        rows: slice | int,
        n_edges: int,
        jac: Tensor,
        deltas: list[Tensor],
        direct: Sequence[Any],
    ) -> None:
        """Copy one pass's results: output-gradients into their buffers, gradient rows into the Jacobian
        block (one ``cat`` into the preallocated rows; unreached inputs give zeros)."""
        for d, g in zip(deltas, grads[:n_edges], strict=True):
            if g is None:
                d[rows] = 0
            else:
                d[rows] = g
        if not direct:
            return
        target = jac[rows]
        lead = target.shape[:-1]
        flat = [
            (
                torch.zeros(*lead, p.numel(), dtype=jac.dtype, device=jac.device)
                if g is None
                else g.reshape(*lead, -1)
            )
            for p, g in zip(direct, grads[n_edges:], strict=True)
        ]
        torch.cat(flat, dim=-1, out=target)

    def _loop(self, req: Request, inputs: list[Any], n_edges: int, jac: Tensor, deltas: list[Tensor]) -> None:
        items = req.scalars()
        k = len(items)
        for i in range(k):
            grads = torch.autograd.grad(
                items[i],
                inputs,
                retain_graph=req.retain_graph or i < k - 1,
                allow_unused=True,
            )
            self._store(grads, i, n_edges, jac, deltas, inputs[n_edges:])

    def _batched(
        self, req: Request, inputs: list[Any], n_edges: int, per_pass: int, jac: Tensor, deltas: list[Tensor]
    ) -> None:
        losses = req.objectives()
        k = losses.shape[0]
        eye = torch.eye(k, dtype=losses.dtype, device=losses.device)
        for start in range(0, k, per_pass):
            stop = min(k, start + per_pass)
            retain = req.retain_graph or stop < k
            try:
                grads = torch.autograd.grad(
                    losses,
                    inputs,
                    grad_outputs=eye[start:stop],
                    is_grads_batched=True,
                    retain_graph=retain,
                    allow_unused=True,
                )
            except RuntimeError as exc:
                # e.g. a compiled module the recorder did not see: its backward cannot be batched
                self._batched_failed = True
                if start > 0 or not retain:
                    raise RuntimeError(
                        "the batched backward pass failed (a torch.compile'd model?); use "
                        "LayerwiseGramian(objectives_per_pass=1) or mode='loop'"
                    ) from exc
                self._loop(req, inputs, n_edges, jac, deltas)
                return
            self._store(grads, slice(start, stop), n_edges, jac, deltas, inputs[n_edges:])
