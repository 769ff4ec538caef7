"""Data parallelism under ``torch.distributed``: every rank ends a step with the update one process would
compute on the union of the ranks' batches (issue 16).

The ranks hold equal slices of a global batch and their losses are means, so the global loss of objective i
is the mean of the ranks' losses and its gradient row the mean of theirs: ``g_i = (1/W) Σ_r g_i^r``. The
coordinator (:class:`molearn.Balancer`) asks this module for three things per step:

* the **global losses** (one all-reduce of K numbers) for the method, so that loss-weighting methods compute
  the same weights on every rank;
* the **global per-objective statistics** (:func:`Collective.reduce_part`): the Gramian of the mean rows
  needs cross-rank products, not a sum of the local Gramians. Where the backend's reduce-scatter is a ring
  one (NCCL; ``Collective.sharded``), the local K×P Jacobian is reduce-scattered
  (each rank receives the mean rows over a 1/W slice of the columns), each rank forms the Gramian of its
  slice, one K×K all-reduce sums them; elsewhere (gloo, whose reduce-scatter moves an all-reduce's bytes),
  and for a method that needs the Jacobian itself, the Jacobian is all-reduced; the layer-wise Gramian's
  Linear/Conv/Embedding layers may all-gather their inputs and output-gradients instead, where that moves
  fewer bytes (:mod:`~molearn.engine._dist_layers`);
* a **global write**: the update of a weighted method is formed on the slices and all-gathered; what the
  ranks can only compute locally (a backward pass of ``Σ w_i L_i``) is staged, averaged with one all-reduce
  per step and then written.

The per-objective passes and every staged write use ``torch.autograd.grad``, which does not fire a
``DistributedDataParallel`` wrapper's gradient hooks: its all-reduce never runs on top of ours, and its
reducer expects nothing at the next forward pass. The one exception is deliberate: a loss-only write that
is not staged (the finite check is off) is a single backward through the DDP model, so that DDP's own
hooks average it exactly once (bucketed, overlapped with the backward pass) and molearn adds nothing.
Every collective is issued in the same order on every rank; nothing synchronises with the host (the
collectives are the only waits).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ._strategy import (
    BackwardPart,
    JacobianPart,
    LayerwisePart,
    Part,
    RepresentationPart,
    Strategy,
    gram_dtype,
    gramian_of,
)
from ._write import GradBuffer

__all__ = ["Collective", "LocalUpdates", "detect", "find_wrappers"]

ISSUE = "issue 16"


def _initialised() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _fsdp_types() -> tuple[type, ...]:
    """FSDP (``FullyShardedDataParallel``) and FSDP2 (``FSDPModule``) classes this torch has."""
    found: list[type] = []
    try:
        from torch.distributed import fsdp

        for name in ("FullyShardedDataParallel", "FSDPModule"):
            cls = getattr(fsdp, name, None)
            if isinstance(cls, type):
                found.append(cls)
    except ImportError:  # pragma: no cover - a torch built without distributed
        pass
    return tuple(found)


def _is_dtensor(p: Tensor) -> bool:
    """A parameter sharded by FSDP2 or tensor parallelism (a ``DTensor``)."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch < 2.5 keeps it private; by its class name then
        return type(p).__name__ == "DTensor"
    return isinstance(p, DTensor)


@dataclass
class Wrappers:
    """What :func:`find_wrappers` found: a DDP module (or None) and the FSDP wrappers' names."""

    ddp: torch.nn.Module | None = None
    fsdp: list[str] = field(default_factory=list)


def find_wrappers(roots: Sequence[torch.nn.Module], params: Sequence[Tensor], *, scan: bool) -> Wrappers:
    """The ``DistributedDataParallel`` and FSDP wrappers among ``roots`` (and their submodules); with
    ``scan`` and nothing found there, the live DDP/FSDP modules whose parameters include ``params[0]``
    (one pass over the garbage collector's objects, once, at construction)."""
    from torch.nn.parallel import DistributedDataParallel

    fsdp_types = _fsdp_types()
    out = Wrappers()
    if any(_is_dtensor(p) for p in params):
        out.fsdp.append("DTensor parameters (FSDP2 fully_shard or tensor parallelism)")
    for root in roots:
        for m in root.modules():
            if isinstance(m, DistributedDataParallel) and out.ddp is None:
                out.ddp = m
            elif fsdp_types and isinstance(m, fsdp_types):
                out.fsdp.append(type(m).__name__)
    if out.ddp is not None or out.fsdp or not scan or not params:
        return out
    first = params[0]
    wanted: tuple[type, ...] = (DistributedDataParallel, *fsdp_types)
    for obj in gc.get_objects():
        if (
            isinstance(obj, wanted)
            and isinstance(obj, torch.nn.Module)
            and any(q is first for q in obj.parameters())
        ):
            if isinstance(obj, DistributedDataParallel):
                out.ddp = obj
            else:
                out.fsdp.append(type(obj).__name__)
    return out


def detect(
    roots: Sequence[torch.nn.Module], params: Sequence[Tensor], distributed: bool | None
) -> Collective | None:
    """The collective a Balancer uses, or ``None`` (one process, or ``distributed=False``).

    ``distributed=None`` (default): on when ``torch.distributed`` is initialised with more than one
    process and a ``DistributedDataParallel`` module owns the shared parameters (over its process group);
    FSDP2 ``fully_shard`` modules: :mod:`._dist_fsdp` (over their mesh's group, on any number of processes);
    FSDP1, DTensor parameters without ``fully_shard``, ``DDP(static_graph=True)`` or a process group without
    any wrapper raise an error that names them. ``True``: on over the DDP's group, or the default group when
    the model is not wrapped (data parallelism by hand). ``False``: each rank balances its own batch."""
    if not _initialised():
        if distributed is True:
            raise RuntimeError(
                "distributed=True but torch.distributed is not initialised (call init_process_group first)"
            )
        return None
    import torch.distributed as dist

    if distributed is False:
        wrapped = find_wrappers(roots, params, scan=False)
        if wrapped.ddp is not None or wrapped.fsdp:
            raise ValueError(
                "distributed=False but the model is wrapped for data parallelism "
                f"({'DistributedDataParallel' if wrapped.ddp is not None else ', '.join(wrapped.fsdp)}): "
                "molearn's writes bypass the wrapper's gradient hooks, so the ranks would drift apart. "
                "Leave distributed at its default (None) for exact data parallelism, or do not wrap the model"
            )
        return None

    wrappers = find_wrappers(roots, params, scan=True)
    if wrappers.fsdp:  # FSDP2 (fully_shard): engine._dist_fsdp; FSDP1 and tensor parallelism: refused there
        from ._dist_fsdp import fsdp2_collective

        return fsdp2_collective(roots, params, wrappers.fsdp)
    ddp = wrappers.ddp
    group = None
    if ddp is not None:
        if getattr(ddp, "static_graph", False):
            raise NotImplementedError(
                "DistributedDataParallel(static_graph=True) is not supported by molearn: its first "
                "iteration schedules an all-reduce at the end of any backward pass, which molearn's "
                "per-objective passes would trigger. Use DistributedDataParallel(model) "
                "(static_graph=False, the default)"
            )
        group = getattr(ddp, "process_group", None)
    world = dist.get_world_size(group)
    if world <= 1:
        return None
    if ddp is None and distributed is None:
        raise RuntimeError(
            f"torch.distributed is initialised with {world} processes but the Balancer found no "
            "DistributedDataParallel module owning the shared parameters: wrap the model before building "
            "the Balancer and pass module=<the DDP-wrapped model> (ordinary data parallelism), "
            "distributed=True (the model is not wrapped and the ranks hold slices of one batch: molearn "
            "averages the update over the default group; do not average .grad yourself afterwards) or "
            "distributed=False (each rank trains on its own and balances its own losses)"
        )
    return Collective(group, world, dist.get_rank(group), ddp)


class _Log:
    """Bytes handed to collectives (what each call puts in; the network moves about twice that for an
    all-reduce and (W-1)/W of it for a reduce-scatter or an all-gather)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def add(self, op: str, t: Tensor) -> None:
        self.calls.append((op, t.numel() * t.element_size()))

    def total(self) -> int:
        return sum(n for _, n in self.calls)


class LocalUpdates:
    """The step's local contributions to ``.grad`` (a staged :class:`GradBuffer`), averaged over the ranks
    with one all-reduce in :meth:`Collective.flush`.

    The all-reduced buffer holds every parameter the step may write (zeros where a rank wrote nothing)
    and one indicator per parameter, so that the ranks agree on the layout even when a parameter is
    unreached on some of them, and a parameter unreached on every rank keeps its ``.grad``."""

    def __init__(self) -> None:
        self.buffer = GradBuffer(staged=True)
        self.params: dict[int, Tensor] = {}
        self.used = False  # a write was staged (decided alike on every rank, whatever it reached)

    def declare(self, params: Sequence[Tensor]) -> None:
        """Parameters the averaged write covers (in a fixed order, the same on every rank)."""
        for p in params:
            self.params.setdefault(id(p), p)

    def __bool__(self) -> bool:
        return self.used and bool(self.params)


class Collective:
    """One process group (a DDP module's, or the default one) and the reductions of a step.

    ``log`` records the bytes each collective was given in the last step (see :class:`_Log`)."""

    def __init__(self, group: Any, world: int, rank: int, ddp: torch.nn.Module | None = None) -> None:
        self.group = group
        self.world = world
        self.rank = rank
        self.ddp = ddp
        self.log = _Log()
        self.local = LocalUpdates()
        self._rng: torch.Generator | None = None
        self._ddp_ids: set[int] | None = None
        self.sharded = self._ring_reduce_scatter()

    def _ring_reduce_scatter(self) -> bool:
        """Whether the backend's reduce-scatter sends half an all-reduce's bytes (NCCL's ring does; gloo's is
        an all-reduce, measured in ``benchmarks/results/dist.md``). Only then is the sharded Jacobian
        (reduce-scatter K·P, all-gather P/W: (K + 1)/2× DDP's traffic) cheaper than all-reducing it (K×)."""
        import torch.distributed as dist

        return "nccl" in str(dist.get_backend(self.group)).lower()

    def __repr__(self) -> str:
        return f"Collective(world={self.world}, rank={self.rank}, ddp={self.ddp is not None})"

    #: whether the per-objective passes are the collective's own (FSDP2: through FSDP's hooks)
    own_passes = False

    def strategy_for(self, needs: Any, fixed: Strategy | None) -> Strategy | None:
        """The collective's own strategy for a method with these needs (``None``: the Balancer picks)."""
        return None

    def graph_leaves(self, leaves: list[Tensor]) -> list[Tensor]:
        """The parameters the Balancer writes behind the losses' graph leaves (FSDP2: the sharded ones)."""
        return leaves

    # ------------------------------------------------------------------ collectives
    def _comm(self, t: Tensor) -> Tensor:
        """``t`` where the group's backend wants it (NCCL: on the current GPU)."""
        import torch.distributed as dist

        backend = str(dist.get_backend(self.group)).lower()  # "nccl", "gloo", or "cpu:gloo,cuda:nccl"
        if backend == "nccl" and t.device.type != "cuda":
            return t.to(torch.device("cuda", torch.cuda.current_device()))
        return t

    def all_reduce_mean(self, t: Tensor) -> Tensor:
        """The mean over the ranks (a new tensor; SUM then division, which every backend supports)."""
        import torch.distributed as dist

        buf = self._comm(t.detach().clone())
        self.log.add("all_reduce", buf)
        dist.all_reduce(buf, group=self.group)
        return (buf / self.world).to(t.device)

    def all_reduce_sum(self, t: Tensor) -> Tensor:
        import torch.distributed as dist

        buf = self._comm(t.detach().clone())
        self.log.add("all_reduce", buf)
        dist.all_reduce(buf, group=self.group)
        return buf.to(t.device)

    def reduce_scatter_columns(self, jac: Tensor) -> tuple[Tensor, int]:
        """The mean over the ranks of the k×n matrix ``jac``, this rank's slice of its columns: ``(k×c
        slice, c)`` with ``c = ⌈n / W⌉`` (the last slices padded with zero columns)."""
        import torch.distributed as dist

        k, n = jac.shape
        c = -(-n // self.world)
        # rank r's block is columns [r·c, (r+1)·c) of every row: one (W, k, c) buffer, one copy of jac
        blocks = torch.empty(self.world, k, c, dtype=jac.dtype, device=jac.device)
        for r in range(self.world):
            lo, hi = min(r * c, n), min((r + 1) * c, n)
            blocks[r, :, : hi - lo] = jac[:, lo:hi].detach()
            blocks[r, :, hi - lo :] = 0
        send = self._comm(blocks.view(-1))
        out = torch.empty(k * c, dtype=send.dtype, device=send.device)
        self.log.add("reduce_scatter", send)
        # torch >= 2.10 names it reduce_scatter_single (the old name warns), torch 2.3 has the old one
        getattr(dist, "reduce_scatter_single", dist.reduce_scatter_tensor)(out, send, group=self.group)
        return (out / self.world).to(jac.device).view(k, c), c

    def all_gather_flat(self, piece: Tensor) -> Tensor:
        """The ranks' equal-length 1-D pieces, concatenated in rank order."""
        import torch.distributed as dist

        send = self._comm(piece.contiguous())
        out = torch.empty(send.numel() * self.world, dtype=send.dtype, device=send.device)
        self.log.add("all_gather", send)
        getattr(dist, "all_gather_single", dist.all_gather_into_tensor)(out, send, group=self.group)
        return out.to(piece.device)

    def broadcast_(self, t: Tensor) -> None:
        """Overwrite ``t`` with the group's first rank's value (in place)."""
        import torch.distributed as dist

        buf = self._comm(t)
        self.log.add("broadcast", buf)
        src = 0 if self.group is None else dist.get_global_rank(self.group, 0)
        dist.broadcast(buf, src=src, group=self.group)
        if buf is not t:
            t.copy_(buf.to(t.device))

    def ddp_reduces(self, req: Any) -> bool:
        """Whether a backward pass of this batch's losses lets the DDP module average every gradient it
        writes: a DDP module that synchronises this step (not inside ``no_sync()``) and reduces all the
        parameters of the write (none of them outside it or in its ``parameters_to_ignore``)."""
        ddp = self.ddp
        if ddp is None or not getattr(ddp, "require_backward_grad_sync", False):
            return False
        if self._ddp_ids is None:
            module = getattr(ddp, "module", None)
            ignore = getattr(ddp, "parameters_to_ignore", None)
            if not isinstance(module, torch.nn.Module) or ignore is None:
                self._ddp_ids = set()
            else:
                named = module.named_parameters()
                self._ddp_ids = {id(p) for n, p in named if n not in ignore and p.requires_grad}
        ids = self._ddp_ids
        return bool(ids) and all(id(p) in ids for p in [*req.shared, *req.tasks])

    def ranks_where(self, flag: bool) -> list[int]:
        """The ranks whose ``flag`` is true (one all-reduce of W numbers and a host read: for an error
        message, on a path every rank takes alike, e.g. after the global finite check failed)."""
        import torch.distributed as dist

        v = torch.zeros(self.world, dtype=torch.float64)
        v[self.rank] = float(flag)
        buf = self._comm(v)
        self.log.add("all_reduce", buf)
        dist.all_reduce(buf, group=self.group)
        return [r for r, x in enumerate(buf.cpu().tolist()) if x]  # sync: after a failed check

    def check_same(self, what: str, values: Sequence[int]) -> None:
        """Raise on every rank unless every rank has the same ``values`` (one all-reduce of their maxima and
        minima; a host read: call it once, not per step)."""
        import torch.distributed as dist

        v = torch.tensor(list(values), dtype=torch.float64)
        both = self._comm(torch.cat([v, -v]))
        self.log.add("all_reduce", both)
        dist.all_reduce(both, op=dist.ReduceOp.MAX, group=self.group)
        n = v.numel()
        high, low = both[:n].cpu(), -both[n:].cpu()
        if not torch.equal(high, low):
            raise RuntimeError(
                f"the ranks disagree on {what}: from {low.tolist()} to {high.tolist()} "  # sync: once
                "(every rank's losses must reach the same parameters; pass tasks= explicitly if some rank's "
                "first batch leaves a task head unused)"
            )

    # ------------------------------------------------------------------ randomness
    def sync_generators(self, generators: Sequence[torch.Generator]) -> None:
        """Give every rank the first rank's generator states, and seed the private generator from which
        :meth:`same_rng` draws (called once, before the first step)."""
        for g in generators:
            state = g.get_state()
            self.broadcast_(state)
            g.set_state(state)
        seed = torch.randint(0, 2**62, (1,), dtype=torch.int64)
        self.broadcast_(seed)
        self._rng = torch.Generator().manual_seed(int(seed[0]))  # sync: once, a CPU tensor

    @contextmanager
    def same_rng(self, device: torch.device) -> Iterator[None]:
        """Run a block with the global RNG (CPU, and ``device``'s if it is a GPU) seeded identically on
        every rank; the RNG state outside the block is left as it was."""
        assert self._rng is not None, "sync_generators() must run first"
        seed = int(torch.randint(0, 2**62, (1,), generator=self._rng)[0])  # sync: a CPU draw, no device
        gpu = device.type == "cuda"
        devices = [device.index if device.index is not None else torch.cuda.current_device()] if gpu else []
        with torch.random.fork_rng(devices=devices, device_type="cuda"):
            torch.random.default_generator.manual_seed(seed)
            if gpu:
                with torch.cuda.device(devices[0]):
                    torch.cuda.manual_seed(seed)
            yield

    # ------------------------------------------------------------------ per step
    def begin(self) -> None:
        """Start a step: forget the previous step's log and local contributions."""
        self.log = _Log()
        self.local = LocalUpdates()

    def reduce_part(self, part: Part, *, jacobian: bool, gramian: bool) -> Part:
        """The batch's part with global statistics and a global write (see the module docstring)."""
        if isinstance(part, LayerwisePart):  # the per-layer scheme: gathered rows (see _dist_layers)
            from ._dist_layers import reduce_layerwise

            return reduce_layerwise(self, part)
        if isinstance(part, JacobianPart):
            if jacobian or not self.sharded:  # the rows themselves, or a backend without a ring
                # reduce-scatter: every rank gets the mean Jacobian
                glob = JacobianPart(part.req, self.all_reduce_mean(part.full_jac))
                if gramian and glob.gramian is None:
                    glob.gramian = gramian_of(glob.full_jac[:, : glob.n_shared])
                return glob
            return ShardedJacobianPart(self, part, gramian=gramian)
        if isinstance(part, RepresentationPart):
            if jacobian:
                raise NotImplementedError(
                    "a method that needs the Jacobian (or returns a direction) in mode='representation' is "
                    f"not exact across ranks yet ({ISSUE}); use mode='auto', 'loop' or 'batched'"
                )
            # the ranks' features are disjoint rows of the global features: the global Gramian is the
            # sum of the local ones over W² (each local loss is 1/W of the global mean)
            avg = AveragedPart(self, part)
            g = part.gramian
            avg.gramian = None if g is None else self.all_reduce_sum(g) / (self.world * self.world)
            return avg
        if type(part) is BackwardPart:
            return AveragedPart(self, part)
        raise NotImplementedError(
            f"{type(part).__name__} (strategy of this step) is not exact across ranks yet ({ISSUE}); "
            "use mode='auto', 'loop' or 'batched'"
        )

    def flush(self, into: GradBuffer | None) -> None:
        """Average the step's local contributions over the ranks (one all-reduce) and hand them to
        ``into`` (staged for the finite check) or to ``.grad`` (``None``)."""
        local = self.local
        if not local:
            return
        params = list(local.params.values())
        index = {id(p): i for i, p in enumerate(params)}
        sums: list[Tensor | None] = [None] * len(params)
        buf = local.buffer
        for p, g in buf._grads:
            if g.is_sparse:
                raise NotImplementedError(
                    f"a sparse gradient (shape {tuple(p.shape)}) cannot be averaged across ranks by molearn "
                    f"yet ({ISSUE}); use a dense embedding (sparse=False)"
                )
            i = index[id(p)]
            prev = sums[i]
            sums[i] = g if prev is None else prev + g
        for plist, direction, only in buf._flat:
            offset = 0
            for p in plist:
                n = p.numel()
                if only is None or id(p) in only:
                    piece = direction[offset : offset + n].view_as(p)
                    i = index[id(p)]
                    prev = sums[i]
                    sums[i] = piece if prev is None else prev + piece
                offset += n
        ref = params[0]
        dtype = torch.promote_types(ref.dtype, torch.float32) if ref.is_floating_point() else torch.float32
        width = sum(p.numel() for p in params)
        flat = torch.zeros(width + len(params), dtype=dtype, device=ref.device)
        offset = 0
        for i, (p, got) in enumerate(zip(params, sums, strict=True)):
            n = p.numel()
            if got is not None:
                flat[offset : offset + n] = got.reshape(-1)
                flat[width + i] = 1.0
            offset += n
        total = self.all_reduce_sum(flat)
        total[:width] /= self.world
        # a parameter no rank reached keeps its .grad (as in one process); if this rank reached every
        # parameter, so did the union, and the indicators need not be read (a host sync)
        missing = any(got is None for got in sums)
        reached = (total[width:] > 0).tolist() if missing else [True] * len(params)  # sync: only then
        offset = 0
        sink = into if into is not None else GradBuffer(staged=False)
        for i, p in enumerate(params):
            n = p.numel()
            if reached[i]:
                sink.add(p, total[offset : offset + n].view_as(p).to(p.dtype))
            offset += n
        self.local = LocalUpdates()


class AveragedPart(Part):
    """A part whose write is local (a backward pass of ``Σ w_i L_i`` over the rank's graph): it stages the
    write in the step's :class:`LocalUpdates`, which :meth:`Collective.flush` averages over the ranks."""

    def __init__(self, coll: Collective, inner: Part) -> None:
        super().__init__(inner.req)
        self.coll = coll
        self.inner = inner
        self.gramian = inner.gramian
        self.jacobian = None
        coll.local.declare([*inner.req.shared, *inner.req.tasks])

    def write(
        self,
        weights: Tensor | None,
        task_coeff: Tensor | None,
        *,
        retain_graph: bool,
        into: GradBuffer | None = None,
    ) -> None:
        direct = into is None or not into.staged
        if direct and isinstance(self.inner, BackwardPart) and self.coll.ddp_reduces(self.req):
            # nothing to stage (the finite check is off): one backward through the DDP model, whose hooks
            # average the gradients exactly once, bucketed and overlapped with the backward pass
            self.inner.write(weights, task_coeff, retain_graph=retain_graph, into=None)
            return
        self.coll.local.used = True
        self.inner.write(weights, task_coeff, retain_graph=retain_graph, into=self.coll.local.buffer)

    def write_direction(
        self, direction: Tensor, *, retain_graph: bool, into: GradBuffer | None = None
    ) -> None:
        raise NotImplementedError(
            f"a direction cannot be written by {type(self.inner).__name__} across ranks yet ({ISSUE})"
        )


class ShardedJacobianPart(Part):
    """The global Gramian from column slices of the mean Jacobian, and the global update ``Jᵀw`` formed on
    the slices and all-gathered (no rank ever holds the global K×P Jacobian).

    Bytes given to collectives per batch: ``K·P'`` (reduce-scatter; ``P' = P`` rounded up to a multiple of
    W), ``K²`` (the Gramian's all-reduce) and ``P'/W`` (each rank's slice of the update, all-gathered),
    in the Jacobian's and the Gramian's dtypes."""

    def __init__(self, coll: Collective, local: JacobianPart, *, gramian: bool) -> None:
        super().__init__(local.req)
        self.coll = coll
        self.n_shared = local.n_shared
        self.width = local.full_jac.shape[1]
        self.slice, self.cols = coll.reduce_scatter_columns(local.full_jac)
        start = coll.rank * self.cols
        self.n_shared_here = max(0, min(self.n_shared - start, self.cols))
        if gramian:
            part_g = gramian_of(self.slice[:, : self.n_shared_here])
            self.gramian = coll.all_reduce_sum(part_g.to(gram_dtype(self.slice.dtype)))
        self.jacobian = None

    def write(
        self,
        weights: Tensor | None,
        task_coeff: Tensor | None,
        *,
        retain_graph: bool,
        into: GradBuffer | None = None,
    ) -> None:
        sink = into or GradBuffer(staged=False)
        s = self.slice
        ns = self.n_shared_here
        piece = torch.zeros(s.shape[1], dtype=s.dtype, device=s.device)
        if weights is not None and ns:
            piece[:ns] = self.rows(weights).to(s.dtype) @ s[:, :ns]
        tasks = task_coeff is not None and self.req.tasks
        if tasks and ns < s.shape[1]:
            assert task_coeff is not None
            piece[ns:] = self.rows(task_coeff).to(s.dtype) @ s[:, ns:]
        if weights is None and not tasks:
            return
        full = self.coll.all_gather_flat(piece)[: self.width]
        if weights is not None:
            sink.add_flat(self.req.shared, full[: self.n_shared])
        if tasks:
            sink.add_flat(self.req.tasks, full[self.n_shared :], only=self.req.reached)

    def write_direction(
        self, direction: Tensor, *, retain_graph: bool, into: GradBuffer | None = None
    ) -> None:
        raise TypeError("the sharded Jacobian has no full rows: a direction method gets the global Jacobian")
