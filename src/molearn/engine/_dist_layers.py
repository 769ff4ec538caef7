"""The layer-wise Gramian across ranks (issue 16): the per-layer scheme of ``mode="gramian"`` under DDP.

Rank r holds ``N_r`` rows of a layer (input rows ``a_n``, output-gradients ``δ_i,n`` of its local mean
losses). The global loss is the mean of the ranks' losses, so its output-gradients are the local ones over
W, and the global Gramian of an activation-form layer needs the products of rows *across* ranks:

    G_ij = (1/W²) Σ_{r,s} Σ_{n∈r, m∈s} (⟨a_n, a_m⟩ + 1) ⟨δ_i,n, δ_j,m⟩

(``+ 1`` for a bias; a convolution's rows are its unfolded patches, an embedding's ``⟨a_n, a_m⟩`` is
``[idx_n = idx_m]``; a layer called several times adds the rows of every call). Every rank therefore
all-gathers each such layer's N_r×d_in rows A and K×N_r×d_out output-gradients (one all-gather per step
for all layers), forms the global Gramian of the layer on the union of the rows and adds it to the
Gramian of the directly differentiated parameters, which go through the Jacobian route of
:meth:`Collective.reduce_part <molearn.engine._dist.Collective.reduce_part>` (all-reduced, or
reduce-scattered where the backend's reduce-scatter is a ring one). The write ``Σ_i w_i δ_i`` of an
activation-form layer is local (the rank's rows) and is averaged with the step's other local writes in
one all-reduce (:meth:`Collective.flush`).

**The rule** (per layer and step, like the one-process cost rule of
:meth:`~molearn.engine._layers.Layer.activation_cheaper`, but on bytes): the activation form is used when
what it moves is below what the gradient form moves. Per rank, with ring algorithms and dropping the
common factor (W-1)/W, for a layer with p parameters, R = Σ_r N_r rows, K objectives:

* activation form: ``R·(d_in + K·d_out)`` gathered (= ``W·N_r·(d_in + K·d_out)`` with equal slices),
  plus ``2p`` for the all-reduce of its local write;
* gradient form: ``2·K·p`` (its K gradient rows all-reduced), or ``(K + 1)·p`` where the Jacobian is
  reduce-scattered and the update's slices all-gathered (``Collective.sharded``, NCCL),

each in its dtype's bytes. Since the ranks must agree on the plan before the backward passes, every step
first all-gathers the layers' row counts (L int64 numbers per rank, read on the host: one synchronisation
per step), which also lets the ranks hold different numbers of rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ._layers import MAX_ROWS, Call, Layer, _quadratic, external_uses
from ._strategy import (
    JacobianPart,
    LayerwiseGramian,
    LayerwisePart,
    Part,
    Request,
    _no_autocast,
    _Plan,
    gram_dtype,
    gramian_of,
)
from ._write import GradBuffer

if TYPE_CHECKING:
    from ._dist import Collective

__all__ = [
    "DistributedLayerwise",
    "activation_bytes",
    "gradient_bytes",
    "layer_widths",
    "reduce_layerwise",
    "uses_activation_form",
]


def layer_widths(layer: Layer) -> tuple[int, int]:
    """``(d_in, d_out)`` of a layer's rows: the input features (a convolution's unfolded patch, 1 for an
    embedding's index) and the output features."""
    m = layer.module
    if isinstance(m, nn.Linear):
        return m.in_features, m.out_features
    if isinstance(m, nn.Embedding):
        return 1, m.embedding_dim
    assert isinstance(m, (nn.Conv1d, nn.Conv2d))
    ksize = 1
    for s in m.kernel_size:
        ksize *= s
    return m.in_channels * ksize, m.out_channels


def activation_bytes(layer: Layer, rows: int, k: int, *, itemsize: int = 4, write_itemsize: int = 4) -> int:
    """Bytes of the activation form of a layer over ``rows`` global rows (ring traffic per rank over
    (W-1)/W): the gathered rows and output-gradients, and the all-reduce of its local write."""
    d_in, d_out = layer_widths(layer)
    return rows * (d_in + k * d_out) * itemsize + 2 * layer.numel * write_itemsize


def gradient_bytes(layer: Layer, k: int, *, sharded: bool, itemsize: int = 4) -> int:
    """Bytes of the gradient form of a layer (same units as :func:`activation_bytes`): its K gradient rows
    all-reduced, or reduce-scattered plus the update's slice all-gathered (``sharded``)."""
    p = layer.numel
    return ((k + 1) * p if sharded else 2 * k * p) * itemsize


def uses_activation_form(
    layer: Layer,
    rows: int,
    k: int,
    *,
    sharded: bool,
    gather_itemsize: int = 4,
    jacobian_itemsize: int = 4,
    write_itemsize: int = 4,
) -> bool:
    """The rule of ``activation_form="auto"`` across ranks: the activation form when its N×N matrix fits
    (``0 < rows ≤ MAX_ROWS``) and it moves fewer bytes than the gradient form."""
    if not 0 < rows <= MAX_ROWS:
        return False
    act = activation_bytes(layer, rows, k, itemsize=gather_itemsize, write_itemsize=write_itemsize)
    return act < gradient_bytes(layer, k, sharded=sharded, itemsize=jacobian_itemsize)


def _gatherable(layer: Layer, dtype: torch.dtype) -> bool:
    """An embedding's indices travel in the Gramian's dtype: exact up to 2^24 (float32) or 2^53."""
    m = layer.module
    if isinstance(m, nn.Embedding):
        return m.num_embeddings <= round(2 / torch.finfo(dtype).eps)
    return True


class RankLayerwisePart(LayerwisePart):
    """A rank's layer-wise part before the reduction: no Gramian yet, and every rank's row counts of the
    activation-form layers (``rows[r][j]``), agreed in :meth:`DistributedLayerwise._plan`."""

    def __init__(self, *args: Any, rows: list[list[int]]) -> None:
        super().__init__(*args)
        self.gramian = None
        self.rank_rows = rows


class DistributedLayerwise(LayerwiseGramian):
    """:class:`~molearn.engine.LayerwiseGramian` on one rank of a process group: the same passes, a plan
    that every rank shares (the rule of this module, from every rank's row counts) and no local Gramian
    (:func:`reduce_layerwise` forms the global one). Built by the Balancer under ``torch.distributed``."""

    def __init__(
        self,
        coll: Collective,
        objectives_per_pass: int | None = None,
        *,
        max_chunk_bytes: int = 2**30,
        activation_form: str = "auto",
    ) -> None:
        super().__init__(
            objectives_per_pass, max_chunk_bytes=max_chunk_bytes, activation_form=activation_form
        )
        self.coll = coll
        self._rows: list[list[int]] = []

    @classmethod
    def like(cls, strategy: LayerwiseGramian, coll: Collective) -> DistributedLayerwise:
        """The distributed twin of a (user-configured) :class:`LayerwiseGramian`."""
        if isinstance(strategy, DistributedLayerwise):
            strategy.coll = coll
            return strategy
        return cls(
            coll,
            strategy.objectives_per_pass,
            max_chunk_bytes=strategy.max_chunk_bytes,
            activation_form=strategy.activation_form,
        )

    def __repr__(self) -> str:
        return f"Distributed{super().__repr__()}"

    def _plan(self, req: Request, calls: list[list[Call]]) -> _Plan:
        rec = self.recorder
        act: list[int] = []
        self._rows = []
        if rec is not None and rec.layers and self.activation_form != "never":
            ref = req.shared[0]
            gd = gram_dtype(ref.dtype)
            cand = [i for i, layer in enumerate(rec.layers) if calls[i] and _gatherable(layer, gd)]
            if cand:
                signature = tuple(len(c) for c in calls)
                bad = rec.validated.get(signature)
                if bad is None:  # once per structure of the calls: a walk over the whole graph
                    bad = frozenset(external_uses([req.losses.grad_fn], rec.layers, calls))
                    rec.validated[signature] = bad
                cand = [i for i in cand if i not in bad]
            # every rank's rows per hooked layer (-1: not eligible there): the plan must be the same
            mine = [-1] * len(rec.layers)
            for i in cand:
                mine[i] = rec.layers[i].rows(calls[i])
            header = torch.tensor(mine, dtype=torch.int64)
            every = self.coll.all_gather_flat(header).view(self.coll.world, -1).tolist()  # sync: the plan
            always = self.activation_form == "always"
            k = req.k
            wr = torch.promote_types(ref.dtype, torch.float32).itemsize
            for i, layer in enumerate(rec.layers):
                counts = [row[i] for row in every]
                if min(counts) < 0:
                    continue
                total = sum(counts)
                if always:
                    ok = 0 < total <= MAX_ROWS
                else:
                    ok = uses_activation_form(
                        layer,
                        total,
                        k,
                        sharded=self.coll.sharded,
                        gather_itemsize=gd.itemsize,
                        jacobian_itemsize=ref.element_size(),
                        write_itemsize=wr,
                    )
                if ok:
                    act.append(i)
            self._rows = [[row[i] for i in act] for row in every]
            self.last_activation = [type(rec.layers[i].module).__name__ for i in act]
        elif rec is not None:
            self.last_activation = []
        covered = {id(p) for i in act for p in rec.layers[i].params} if rec is not None else set()
        direct_shared = [p for p in req.shared if id(p) not in covered]
        edges = [c.edge for i in act for c in calls[i]]
        return _Plan(act, [*direct_shared, *req.tasks], len(direct_shared), edges)

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
        """The rank's part without a local Gramian (:meth:`Collective.reduce_part` forms the global one)."""
        return RankLayerwisePart(
            req,
            layers,
            act_calls,
            deltas,
            plan.direct,
            plan.n_direct_shared,
            jac,
            blocks,
            torch.zeros(0),  # placeholder Gramian
            rows=self._rows,
        )


def _gramian_of_rows(layer: Layer, a: Tensor, delta: Tensor, dtype: torch.dtype) -> Tensor:
    """A layer's K×K ``⟨δ_i, (A Aᵀ + 1 1ᵀ) δ_j⟩`` from its rows (N×d_in, indices for an embedding) and
    output-gradients (K×N×d_out), summed over a convolution's groups."""
    m = layer.module
    k = delta.shape[0]
    if isinstance(m, nn.Embedding):
        if m.padding_idx is not None:
            delta = delta * (a != m.padding_idx).to(dtype)[None, :, None]
        return _quadratic(delta, (a[:, None] == a[None, :]).to(dtype))
    groups = m.groups if isinstance(m, (nn.Conv1d, nn.Conv2d)) else 1
    total = torch.zeros(k, k, dtype=dtype, device=delta.device)
    cin_g = a.shape[1] // groups
    cout_g = delta.shape[2] // groups
    for g in range(groups):
        dg = delta[:, :, g * cout_g : (g + 1) * cout_g] if groups > 1 else delta
        if layer.weight is not None:
            ag = a[:, g * cin_g : (g + 1) * cin_g] if groups > 1 else a
            gram = ag @ ag.T
            if layer.bias is not None:
                gram += 1.0
            total += _quadratic(dg, gram)
        else:  # bias only: its gradient is the column sum of δ
            s = dg.sum(1)
            total += s @ s.T
    return total


def _gathered_gramians(coll: Collective, part: RankLayerwisePart, dtype: torch.dtype) -> Tensor:
    """Σ over the activation-form layers of their global Gramians: one all-gather of every layer's rows and
    output-gradients (each rank's piece padded to the longest), then each layer on the union of the rows."""
    k = part.req.k
    pieces: list[Tensor] = []
    widths = [layer_widths(layer) for layer in part.layers]
    embedding = [isinstance(layer.module, nn.Embedding) for layer in part.layers]
    for layer, calls, deltas in zip(part.layers, part.calls, part.deltas, strict=True):
        a, delta = layer._rows_and_deltas(calls, deltas, dtype)
        pieces += [a.to(dtype).reshape(-1), delta.reshape(-1)]
    sizes = [
        sum(n * (d_in + k * d_out) for n, (d_in, d_out) in zip(rows, widths, strict=True))
        for rows in part.rank_rows
    ]
    longest = max(sizes)
    flat = torch.cat(pieces) if pieces else torch.zeros(0, dtype=dtype, device=part.req.losses.device)
    if flat.numel() < longest:
        flat = torch.cat([flat, flat.new_zeros(longest - flat.numel())])
    every = coll.all_gather_flat(flat).view(coll.world, longest)
    a_parts: list[list[Tensor]] = [[] for _ in part.layers]
    d_parts: list[list[Tensor]] = [[] for _ in part.layers]
    for r, rows in enumerate(part.rank_rows):
        offset = 0
        for j, (n, (d_in, d_out)) in enumerate(zip(rows, widths, strict=True)):
            a = every[r, offset : offset + n * d_in]
            offset += n * d_in
            d = every[r, offset : offset + k * n * d_out]
            offset += k * n * d_out
            a_parts[j].append(a.round().long() if embedding[j] else a.view(n, d_in))
            d_parts[j].append(d.view(k, n, d_out))
    total = torch.zeros(k, k, dtype=dtype, device=every.device)
    for j, layer in enumerate(part.layers):
        a = torch.cat(a_parts[j])
        d = torch.cat(d_parts[j], dim=1)
        total += _gramian_of_rows(layer, a, d, dtype)
    return total / (coll.world * coll.world)  # the global output-gradients are the local ones over W


class GlobalLayerwisePart(Part):
    """The global Gramian of a layer-wise part and its global write: the direct rows through the Jacobian
    route (all-reduced, or sharded), the activation-form layers' writes staged locally and averaged by
    :meth:`Collective.flush`."""

    def __init__(self, coll: Collective, local: RankLayerwisePart) -> None:
        from ._dist import ShardedJacobianPart

        req = local.req
        super().__init__(req)
        self.coll = coll
        self.local = local
        ref = req.shared[0]
        gd = gram_dtype(ref.dtype)
        device = req.losses.device
        k = req.k
        self.inner: Part | None = None
        with _no_autocast(device):  # the statistics in the Gramian's dtype, as in one process
            gramian = torch.zeros(k, k, dtype=gd, device=device)
            direct = local.direct
            ns = local.n_shared_direct
            if direct:
                jac = local.jac
                if jac is None:
                    assert local.blocks is not None
                    jac = torch.cat([b.reshape(k, -1) for b in local.blocks], dim=1)
                sub = Request(
                    losses=req.losses,
                    items=None,
                    shared=direct[:ns],
                    tasks=direct[ns:],
                    gramian=False,
                    jacobian=False,
                    selected=req.selected,
                    reached=req.reached,
                )
                rows = JacobianPart(sub, jac)
                if coll.sharded:
                    sharded = ShardedJacobianPart(coll, rows, gramian=ns > 0)
                    if ns > 0:
                        assert sharded.gramian is not None
                        gramian = gramian + sharded.gramian.to(gd)
                    self.inner = sharded
                else:
                    mean = JacobianPart(sub, coll.all_reduce_mean(jac))
                    if ns > 0:
                        gramian = gramian + gramian_of(mean.full_jac[:, : mean.n_shared])
                    self.inner = mean
            if local.layers:
                gramian = gramian + _gathered_gramians(coll, local, gd)
                coll.local.declare([p for layer in local.layers for p in layer.params])
        self.gramian = gramian
        self.jacobian = None

    def write(
        self,
        weights: Tensor | None,
        task_coeff: Tensor | None,
        *,
        retain_graph: bool,
        into: GradBuffer | None = None,
    ) -> None:
        if self.inner is not None:
            self.inner.write(weights, task_coeff, retain_graph=retain_graph, into=into)
        local = self.local
        if weights is None or not local.layers:
            return
        self.coll.local.used = True
        w = self.rows(weights)
        add = self.coll.local.buffer.add
        with _no_autocast(self.req.losses.device):
            for layer, calls, deltas in zip(local.layers, local.calls, local.deltas, strict=True):
                layer.write(calls, deltas, w, add)


def reduce_layerwise(coll: Collective, part: LayerwisePart) -> Part:
    """The global part of a rank's layer-wise part (see the module docstring)."""
    if not isinstance(part, RankLayerwisePart):
        raise NotImplementedError(
            "a LayerwiseGramian built for one process reached a reduction across ranks (issue 16): "
            "let the Balancer build it (mode='gramian' or a LayerwiseGramian passed as mode)"
        )
    return GlobalLayerwisePart(coll, part)
