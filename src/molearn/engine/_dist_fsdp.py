"""FSDP2 (``fully_shard``): every rank ends a step with the update one process computes on the union of the
ranks' batches, without ever holding a full gradient row (issue 16).

Under FSDP2 each parameter is a ``DTensor`` whose rank-local shard is a block of rows (``Shard(0)``); during
the forward and backward passes FSDP all-gathers the full ("unsharded") parameters, and after a backward
pass it reduce-scatters their gradients: the rank's ``.grad`` shard is then the mean over the ranks of the
gradient, i.e. the shard of the global gradient. That is the sharded-Jacobian scheme of
:class:`~molearn.engine._dist.ShardedJacobianPart` done by FSDP itself:

* **rows** (:class:`ShardRows`): one backward pass per objective through FSDP's hooks (``retain_graph``
  between them) leaves the rank's shard of the global gradient row of objective i in ``.grad``; it is
  moved into a local k×S matrix (S: the rank's shard entries) and ``.grad`` is restored afterwards;
* **Gramian**: each rank forms the Gramian of its shard's rows, one K×K all-reduce sums them;
* **write**: ``Σ w_i g_i`` on the rank's own shard goes into its own ``.grad`` (no all-gather);
* **Jacobian methods** (a direction): the rows' shards are all-gathered into the global K×P matrix in the
  parameters' natural layout (one process's column order, so that random draws per entry agree); each
  rank writes its rows of the direction;
* **loss-only methods**: one backward of ``Σ w_i L_i`` through FSDP's hooks, FSDP's own reduce-scatter.

With the finite check on, the update is staged (``.grad`` untouched until the check passes) and one
all-reduce of one number tells every rank whether some rank's shard of the update is NaN/Inf, so that every
rank accepts or rejects the step alike. The graph's leaves are FSDP's unsharded parameters; they are mapped
to the sharded ones the optimiser holds (:meth:`FSDP2Collective.graph_leaves`).
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import Tensor

from ._dist import ISSUE, Collective
from ._strategy import (
    BackwardPart,
    BatchedJacobian,
    LoopJacobian,
    Part,
    Representation,
    RepresentationPart,
    Request,
    Strategy,
    gram_dtype,
    gramian_of,
)
from ._write import GradBuffer, add_grad, all_finite

__all__ = ["FSDP2Collective", "ShardRows", "fsdp2_collective"]


def _api() -> tuple[type, type]:
    """``(FSDPModule, DTensor)``, or an error on a torch without the public FSDP2 (before 2.6)."""
    try:
        from torch.distributed.fsdp import FSDPModule
        from torch.distributed.tensor import DTensor
    except ImportError as exc:
        raise NotImplementedError(
            f"molearn supports FSDP2 (fully_shard) from torch 2.6, where it is public in "
            f"torch.distributed.fsdp; this torch is {torch.__version__} ({ISSUE}). Upgrade torch, or wrap "
            "the model in DistributedDataParallel"
        ) from exc
    return FSDPModule, DTensor


def _modules(roots: Sequence[torch.nn.Module], params: Sequence[Tensor], fsdp: type) -> list[Any]:
    """The ``fully_shard`` modules among ``roots``, or (none there) the live ones owning ``params[0]``."""
    found = [m for r in roots for m in r.modules() if isinstance(m, fsdp)]
    if found or not params:
        return found
    first = params[0]
    return [
        obj
        for obj in gc.get_objects()
        if isinstance(obj, fsdp)
        and isinstance(obj, torch.nn.Module)
        and any(q is first for q in obj.parameters())
    ]


def fsdp2_collective(
    roots: Sequence[torch.nn.Module], params: Sequence[Tensor], found: Sequence[str]
) -> FSDP2Collective:
    """The collective of a model sharded with ``fully_shard`` (over its mesh's process group), or an error
    naming what is not supported: FSDP1, tensor parallelism, 2-D meshes (HSDP), CPU offload."""
    import torch.distributed as dist

    if "FullyShardedDataParallel" in found:
        raise NotImplementedError(
            "molearn found FullyShardedDataParallel (FSDP1, flat parameters): not supported "
            f"({ISSUE}); shard the model with FSDP2 instead (torch.distributed.fsdp.fully_shard), or wrap "
            "it in DistributedDataParallel"
        )
    fsdp, dtensor = _api()
    modules = _modules(roots, params, fsdp)
    if not modules:
        raise NotImplementedError(
            "molearn found DTensor parameters that no fully_shard module manages (tensor parallelism?): "
            f"not supported ({ISSUE}); shard the model with fully_shard, or pass module=<the model>"
        )
    meshes = [cast(Any, p).device_mesh for p in params if isinstance(p, dtensor)]
    if not meshes:
        raise NotImplementedError(
            "molearn found fully_shard modules but the shared parameters are not sharded by them: build the "
            "Balancer after fully_shard(model), from the model's parameters"
        )
    mesh = meshes[0]
    if mesh.ndim != 1:
        raise NotImplementedError(
            f"fully_shard over a {mesh.ndim}-D mesh (HSDP: replicate and shard) is not supported by molearn "
            f"yet ({ISSUE}); use a 1-D mesh"
        )
    group = mesh.get_group()
    coll = FSDP2Collective(group, dist.get_world_size(group), dist.get_rank(group), modules, mesh)
    coll.check_options()
    return coll


class _ShardGrad:
    """Stands for a sharded parameter in a :class:`GradBuffer`: the buffer (and the finite check) sees the
    rank's plain local shard of the update; committing it writes the DTensor ``.grad``."""

    def __init__(self, param: Any, like: Tensor) -> None:
        self.param = param
        self.dtype = param.dtype
        self.shape = param.shape
        self._stride = like.stride()

    def stride(self) -> tuple[int, ...]:
        return self._stride

    @property
    def grad(self) -> Tensor | None:
        g = self.param.grad
        return None if g is None else g.to_local()  # the DTensor's own local tensor: add_ writes it

    @grad.setter
    def grad(self, g: Tensor) -> None:
        from torch.distributed.tensor import DTensor

        p = self.param
        p.grad = DTensor.from_local(
            g, p.device_mesh, p.placements, run_check=False, shape=p.shape, stride=p.stride()
        )


class _Sink:
    """The marker a staged step adds to the buffer: NaN when some rank's shard of the update is not finite
    (so that every rank's check fails alike); committing it writes nothing."""

    dtype = torch.float32
    shape = ("the update's shard on another rank",)

    def stride(self) -> tuple[int, ...]:
        return (1,)

    @property
    def grad(self) -> None:
        return None

    @grad.setter
    def grad(self, g: Tensor) -> None:
        pass


class FSDP2Collective(Collective):
    """The process group of a ``fully_shard`` mesh; the per-objective rows come from FSDP's own
    reduce-scatter (see the module docstring). ``log`` records molearn's collectives only, not FSDP's
    all-gathers and reduce-scatters inside the backward passes (docs/distributed.md counts both)."""

    own_passes = True

    def __init__(self, group: Any, world: int, rank: int, modules: list[Any], mesh: Any) -> None:
        super().__init__(group, world, rank, None)
        self.sharded = True  # the rows are FSDP's shards whatever the backend
        self.modules = modules
        self.mesh = mesh
        self._fsdp_params: dict[int, Any] | None = None
        self._complete = False
        self._staged: dict[int, tuple[Tensor, Tensor]] = {}
        self._rows = ShardRows(self)

    def __repr__(self) -> str:
        return f"FSDP2Collective(world={self.world}, rank={self.rank})"

    # ------------------------------------------------------------------ FSDP's state
    def _states(self) -> list[Any]:
        """Every FSDP state of the model (after the first forward pass: the root's whole tree)."""
        states: list[Any] = []
        for m in self.modules:
            state = m._get_fsdp_state()
            ctx = getattr(state, "_state_ctx", None)
            for s in [state, *(getattr(ctx, "all_states", None) or [])]:
                if all(s is not t for t in states):
                    states.append(s)
        return states

    def _groups(self) -> list[Any]:
        groups: list[Any] = []
        for state in self._states():
            for g in getattr(state, "_fsdp_param_groups", None) or []:
                if all(g is not h for h in groups):
                    groups.append(g)
        return groups

    def check_options(self) -> None:
        """Refuse, naming them, the FSDP2 options under which FSDP's reduced gradient is not the global mean
        gradient's shard, or that molearn does not run."""
        for g in self._groups():
            if getattr(g, "gradient_divide_factor", None) is not None:
                raise NotImplementedError(
                    "fully_shard with set_gradient_divide_factor(...) is not supported by molearn: the rows "
                    "must be FSDP's mean gradients over the ranks"
                )
            if not getattr(g, "reduce_grads", True):
                raise NotImplementedError(
                    "fully_shard with set_requires_gradient_sync(False) (gradient accumulation without "
                    "reduce-scatter) is not supported by molearn: every objective's row is FSDP's "
                    "reduce-scattered gradient; keep the gradient sync on while calling Balancer.backward"
                )
            for fp in getattr(g, "fsdp_params", []):
                if getattr(fp, "offload_to_cpu", False):
                    raise NotImplementedError(
                        f"fully_shard(offload_policy=CPUOffloadPolicy()) is not supported by molearn yet "
                        f"({ISSUE}); use the default OffloadPolicy()"
                    )

    def _by_id(self) -> dict[int, Any]:
        """FSDP's parameter records by the ids of both their sharded and unsharded parameters (rebuilt
        until every unsharded parameter exists: FSDP creates them at their first all-gather)."""
        if self._fsdp_params is None or not self._complete:
            table: dict[int, Any] = {}
            complete = True
            for g in self._groups():
                for fp in g.fsdp_params:
                    table[id(fp.sharded_param)] = fp
                    u = getattr(fp, "_unsharded_param", None)
                    if u is None:
                        complete = False
                    else:
                        table[id(u)] = fp
            self._fsdp_params, self._complete = table, complete
        return self._fsdp_params

    def graph_leaves(self, leaves: list[Tensor]) -> list[Tensor]:
        """The sharded parameters (what the optimiser holds) behind the graph's leaves (FSDP's unsharded
        parameters), in the same order."""
        table = self._by_id()
        out: list[Tensor] = []
        for t in leaves:
            fp = table.get(id(t))
            if fp is None:
                raise NotImplementedError(
                    f"the losses reach a trainable tensor of shape {tuple(t.shape)} that no fully_shard "
                    "manages: under FSDP2 molearn needs every shared and task parameter sharded by "
                    "fully_shard (shard the module that owns it, or pass tasks= explicitly)"
                )
            out.append(fp.sharded_param)
        return out

    def unsharded(self, params: Sequence[Tensor]) -> list[Tensor]:
        """FSDP's unsharded parameters (the graph's leaves) of sharded ``params`` that a forward pass
        reached; an error names a parameter that no fully_shard manages."""
        table = self._by_id()
        out: list[Tensor] = []
        for p in params:
            fp = table.get(id(p))
            if fp is None or fp.sharded_param is not p:
                raise NotImplementedError(
                    f"a parameter of shape {tuple(p.shape)} is not sharded by fully_shard: under FSDP2 "
                    "molearn needs every shared and task parameter sharded (the parameters as they are "
                    "after fully_shard, outside the forward pass)"
                )
            u = getattr(fp, "_unsharded_param", None)
            if u is not None:
                out.append(u)
        return out

    def strategy_for(self, needs: Any, fixed: Strategy | None) -> Strategy | None:
        """The per-objective passes through FSDP's hooks for every gradient method (``mode`` 'auto', 'loop'
        or 'batched'); ``mode='representation'`` keeps its strategy; loss-only methods: ``None``."""
        if fixed is not None and not isinstance(fixed, (LoopJacobian, BatchedJacobian, Representation)):
            raise NotImplementedError(
                f"{fixed!r} is not supported under FSDP2 ({ISSUE}: its rows come from FSDP's per-objective "
                "reduce-scatter); use mode='auto', 'loop' or 'batched'"
            )
        if isinstance(fixed, Representation) or not needs.gradients:
            return None
        return self._rows

    # ------------------------------------------------------------------ per step
    def begin(self) -> None:
        super().begin()
        self._staged = {}
        self.check_options()

    def stage(self, p: Tensor, g: Tensor) -> None:
        """Add ``g`` (the local shard of an update of ``p``, global already) to the step's update."""
        prev = self._staged.get(id(p))
        self._staged[id(p)] = (p, g if prev is None else prev[1] + g)

    def stage_flat(self, params: Sequence[Tensor], flat: Tensor, only: set[int] | None = None) -> None:
        """Stage the pieces of a flat vector over the local shards of ``params``."""
        offset = 0
        for p in params:
            local = _local(p)
            n = local.numel()
            if only is None or id(p) in only:
                self.stage(p, flat[offset : offset + n].view(local.shape).to(p.dtype))
            offset += n

    def backward(self, total: Tensor, params: list[Tensor], *, retain_graph: bool, direct: bool) -> None:
        """One backward of ``total`` through FSDP's hooks into ``params``: FSDP reduce-scatters the mean
        gradient into their ``.grad`` shards (``direct``), or the shards are staged and ``.grad`` restored."""
        inputs = self.unsharded(params)
        if not inputs:
            return
        if direct:  # FSDP accumulates into the sharded .grad itself
            torch.autograd.backward(total, inputs=inputs, retain_graph=retain_graph)
            return
        saved = [p.grad for p in params]
        try:
            for p in params:
                p.grad = None
            torch.autograd.backward(total, inputs=inputs, retain_graph=retain_graph)
            for p in params:
                g = p.grad
                if g is not None:
                    self.stage(p, _local(g))
        finally:
            for p, s in zip(params, saved, strict=True):
                p.grad = s

    def reduce_part(self, part: Part, *, jacobian: bool, gramian: bool) -> Part:
        """The batch's part with global statistics (see the module docstring)."""
        if isinstance(part, ShardRowsPart):
            part.reduce(gramian=gramian, jacobian=jacobian)
            return part
        if isinstance(part, RepresentationPart):
            if jacobian:
                raise NotImplementedError(
                    "a method that needs the Jacobian (or returns a direction) in mode='representation' is "
                    f"not exact across ranks yet ({ISSUE}); use mode='auto', 'loop' or 'batched'"
                )
            out = ShardBackwardPart(self, part)
            g = part.gramian  # disjoint rows of the global features: the sum of the local Gramians / W²
            out.gramian = None if g is None else self.all_reduce_sum(g) / (self.world * self.world)
            return out
        if type(part) is BackwardPart:
            return ShardBackwardPart(self, part)
        raise NotImplementedError(
            f"{type(part).__name__} (strategy of this step) is not supported under FSDP2 ({ISSUE}); "
            "use mode='auto', 'loop' or 'batched'"
        )

    def flush(self, into: GradBuffer | None) -> None:
        """Hand the step's update shards to ``into`` (staged: with the marker that makes every rank's check
        agree, one all-reduce of one number) or add them to the sharded ``.grad``."""
        staged = list(self._staged.values())
        self._staged = {}
        if not staged:
            return
        if into is not None and into.staged:
            ok = all_finite([g for _, g in staged], staged[0][1].device)
            bad = self.all_reduce_sum((~ok).to(torch.float32).reshape(1))
            into.add(cast(Tensor, _Sink()), torch.where(bad > 0, float("nan"), 0.0))
            for p, g in staged:
                into.add(cast(Tensor, _ShardGrad(p, g)), g)
            return
        for p, g in staged:
            add_grad(cast(Tensor, _ShardGrad(p, g)), g)

    # ------------------------------------------------------------------ the Jacobian's layout
    def _rows_of(self, p: Tensor, rank: int) -> int:
        """Rows of ``p`` held by ``rank`` under ``Shard(0)`` (``torch.chunk``'s split: ⌈d/W⌉ per rank)."""
        d = p.shape[0]
        c = -(-d // self.world)
        return max(0, min(c, d - rank * c))

    def _check_rows(self, params: Sequence[Tensor]) -> None:
        from torch.distributed.tensor import Shard

        for p in params:
            placements = tuple(cast(Any, p).placements)
            local = _local(p)
            if (
                placements != (Shard(0),)
                or p.dim() == 0
                or local.numel() != self._rows_of(p, self.rank) * (p.numel() // max(1, p.shape[0]))
            ):
                raise NotImplementedError(
                    f"a parameter of shape {tuple(p.shape)} sharded as {placements}: a method that reads the "
                    "Jacobian needs fully_shard's default Shard(0) placement (no shard_placement_fn)"
                )

    def gather_rows(self, rows: Tensor, params: Sequence[Tensor]) -> Tensor:
        """The global k×P rows of ``params`` in their natural layout, from every rank's k×S shard rows
        (one all-gather, padded to the largest shard)."""
        self._check_rows(params)
        k = rows.shape[0]
        rest = [p.numel() // p.shape[0] for p in params]
        sizes = [
            [self._rows_of(p, r) * e for p, e in zip(params, rest, strict=True)] for r in range(self.world)
        ]
        width = max(sum(s) for s in sizes)
        send = torch.zeros(k, width, dtype=rows.dtype, device=rows.device)
        send[:, : rows.shape[1]] = rows
        blocks = self.all_gather_flat(send.reshape(-1)).view(self.world, k, width)
        starts = [[sum(s[:j]) for j in range(len(params))] for s in sizes]
        cols = [
            blocks[r, :, starts[r][j] : starts[r][j] + sizes[r][j]]
            for j in range(len(params))
            for r in range(self.world)
        ]
        return torch.cat(cols, dim=1)

    def local_columns(self, params: Sequence[Tensor], direction: Tensor) -> Tensor:
        """This rank's entries of a flat vector over ``params`` in their natural layout."""
        self._check_rows(params)
        pieces: list[Tensor] = []
        offset = 0
        for p in params:
            e = p.numel() // p.shape[0]
            start = offset + self.rank * (-(-p.shape[0] // self.world)) * e
            pieces.append(direction[start : start + self._rows_of(p, self.rank) * e])
            offset += p.numel()
        return torch.cat(pieces)


def _local(p: Tensor) -> Tensor:
    """The rank's shard of a DTensor parameter (a plain tensor)."""
    return cast(Any, p).to_local()


class ShardRowsPart(Part):
    """The rank's k×S shard rows of the global gradients (shared parameters first); the Gramian is the
    all-reduced sum of the shards' Gramians, the write ``Σ w_i g_i`` stays on the shard."""

    def __init__(self, coll: FSDP2Collective, req: Request, local: Tensor, n_shared: int) -> None:
        super().__init__(req)
        self.coll = coll
        self.local = local
        self.n_shared = n_shared

    def reduce(self, *, gramian: bool, jacobian: bool) -> None:
        shared = self.local[:, : self.n_shared]
        if gramian or jacobian:
            self.gramian = self.coll.all_reduce_sum(gramian_of(shared).to(gram_dtype(shared.dtype)))
        if jacobian:
            self.jacobian = self.coll.gather_rows(shared, self.req.shared)

    def write(
        self,
        weights: Tensor | None,
        task_coeff: Tensor | None,
        *,
        retain_graph: bool,
        into: GradBuffer | None = None,
    ) -> None:
        rows, ns = self.local, self.n_shared
        if weights is not None:
            self.coll.stage_flat(self.req.shared, self.rows(weights).to(rows.dtype) @ rows[:, :ns])
        if task_coeff is not None and self.req.tasks:
            upd = self.rows(task_coeff).to(rows.dtype) @ rows[:, ns:]
            self.coll.stage_flat(self.req.tasks, upd, only=self.req.reached)

    def write_direction(
        self, direction: Tensor, *, retain_graph: bool, into: GradBuffer | None = None
    ) -> None:
        self.coll.stage_flat(self.req.shared, self.coll.local_columns(self.req.shared, direction))


class ShardBackwardPart(Part):
    """Writes through backward passes of ``Σ_i c_i L_i`` through FSDP's hooks (FSDP's reduce-scatter
    averages them): straight into ``.grad`` when nothing is staged, else staged shards."""

    def __init__(self, coll: FSDP2Collective, inner: Part) -> None:
        super().__init__(inner.req)
        self.coll = coll
        self.gramian = inner.gramian
        self.jacobian = None

    def write(
        self,
        weights: Tensor | None,
        task_coeff: Tensor | None,
        *,
        retain_graph: bool,
        into: GradBuffer | None = None,
    ) -> None:
        losses = self.req.losses
        shared, tasks = list(self.req.shared), self.tasks_reached()
        passes: list[tuple[Tensor, list[Tensor]]] = []
        if weights is not None and task_coeff is weights:
            passes.append((weights, [*shared, *tasks]))
        else:
            if weights is not None:
                passes.append((weights, shared))
            if task_coeff is not None and tasks:
                passes.append((task_coeff, tasks))
        direct = into is None or not into.staged
        for j, (w, params) in enumerate(passes):
            total = torch.dot(w.detach().to(losses.dtype), losses)
            retain = retain_graph or j < len(passes) - 1
            self.coll.backward(total, params, retain_graph=retain, direct=direct)

    def write_direction(
        self, direction: Tensor, *, retain_graph: bool, into: GradBuffer | None = None
    ) -> None:
        raise NotImplementedError(f"a direction cannot be written by a backward pass under FSDP2 ({ISSUE})")


class ShardRows(Strategy):
    """One backward pass per objective through FSDP's hooks: after each, FSDP's reduce-scatter leaves the
    rank's shard of the objective's global gradient in ``.grad``, copied into a k×S matrix (``.grad`` is
    restored afterwards). Exact: the same reduce-scatter as FSDP's own training step, per objective."""

    name = "fsdp2-rows"
    forms_jacobian = True

    def __init__(self, coll: FSDP2Collective) -> None:
        self.coll = coll

    def compute(self, req: Request) -> Part:
        coll = self.coll
        params = [*req.shared, *req.tasks]
        inputs = coll.unsharded(params)
        items = req.scalars()
        k = len(items)
        locals_ = [_local(p) for p in params]
        width = sum(t.numel() for t in locals_)
        n_shared = sum(t.numel() for t in locals_[: len(req.shared)])
        rows = torch.zeros(k, width, dtype=params[0].dtype, device=locals_[0].device)
        saved = [p.grad for p in params]
        try:
            for p in params:
                p.grad = None
            for i, item in enumerate(items):
                retain = req.retain_graph or i < k - 1
                torch.autograd.backward(item, inputs=inputs, retain_graph=retain)
                offset = 0
                for p, t in zip(params, locals_, strict=True):
                    n = t.numel()
                    g = p.grad
                    if g is not None:
                        rows[i, offset : offset + n] = _local(g).reshape(-1)
                        p.grad = None
                    offset += n
        finally:
            for p, s in zip(params, saved, strict=True):
                p.grad = s
        return ShardRowsPart(coll, req, rows, n_shared)
