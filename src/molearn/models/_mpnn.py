"""The message-passing network of the QM9 multi-task benchmark, in plain torch (no PyTorch Geometric).

The model of Nash-MTL (Navon et al., ICML 2022, ``experiments/quantum_chemistry/models.py``), reused by
FAMO (Liu et al., NeurIPS 2023) and later QM9 multi-task papers; it is PyG's ``examples/qm9_nn_conv.py``
(Gilmer et al., "Neural Message Passing for Quantum Chemistry", ICML 2017) with one linear head per target:

- ``lin0``: ``Linear(node_dim, 64)`` → ReLU;
- 3 iterations of an edge-conditioned convolution :class:`NNConv` (Gilmer et al.'s edge network;
  Simonovsky & Komodakis, CVPR 2017) with mean aggregation, whose per-edge 64×64 weight matrix is
  ``Linear(edge_dim, 128) → ReLU → Linear(128, 64·64)`` of the edge features, → ReLU, then one step of a
  ``GRU(64, 64)`` (the same conv and GRU weights every iteration);
- :class:`Set2Set` pooling (Vinyals et al., ICLR 2016), 3 processing steps → 128;
- ``lin1``: ``Linear(128, 64)`` → ReLU: the shared representation;
- one ``Linear(64, 1)`` head per target.

Shared parameters are ``lin0``, the conv (edge network, root weight, bias), the GRU, Set2Set's LSTM and
``lin1``; task-specific are the heads: the split of Nash-MTL's ``shared_parameters`` /
``task_specific_parameters``. The edge network runs once per forward pass, its output reused by the three
iterations (PyG runs it in every call of the conv), and the per-edge 64×64 matrices are never formed
(:class:`NNConv`): the same function and gradients, a CPU training step about 5× faster.

Graphs are batched as PyG does: concatenated node features, ``edge_index`` (2, E) with node indices offset
per graph (messages flow from ``edge_index[0]`` to ``edge_index[1]``) and ``batch`` (N,), the graph of
each node. Layer equivalence with PyG's ``NNConv`` / ``Set2Set`` on copied weights is tested when PyG is
installed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MPNN", "EdgePlan", "NNConv", "Set2Set", "scatter_mean", "segment_softmax"]


def scatter_mean(src: Tensor, index: Tensor, size: int) -> Tensor:
    """Row means of ``src`` (E, C) grouped by ``index`` (E,) into ``size`` rows; empty groups are 0
    (PyG's ``aggr="mean"``)."""
    out = src.new_zeros(size, src.shape[1]).index_add_(0, index, src)
    count = torch.bincount(index, minlength=size).clamp_(min=1).to(src.dtype)
    return out / count.unsqueeze(1)


def segment_softmax(scores: Tensor, index: Tensor, size: int) -> Tensor:
    """Softmax of ``scores`` (N,) within each group of ``index`` (N,), ``size`` groups (PyG's
    ``utils.softmax``: the group maximum, taken without gradient, is subtracted first; 1e-16 guards the
    sum)."""
    top = scores.new_full((size,), float("-inf"))
    top = top.scatter_reduce(0, index, scores.detach(), reduce="amax", include_self=True)
    e = (scores - top[index]).exp()
    total = e.new_zeros(size).index_add_(0, index, e) + 1e-16
    return e / total[index]


class EdgePlan(NamedTuple):
    """What :meth:`NNConv.prepare` computes once per graph batch and every application reuses: the edge
    network's hidden features (factorised path) or full weights, and the edges grouped by source node."""

    features: Tensor  # (E, hidden) before the edge network's last Linear, or (E, in, out) weights
    factorised: bool
    order: Tensor  # edges sorted by source node
    source: Tensor  # their source nodes
    slot: Tensor  # their position among the edges of that source
    width: int  # the most edges of one source


class NNConv(nn.Module):
    """Edge-conditioned convolution ``x'_i = W_root x_i + b + aggr_{j→i} x_j W(e_ji)`` where ``W(e)`` =
    ``edge_net(e)`` reshaped to (in, out) — Gilmer et al.'s edge network (ICML 2017), PyG's ``NNConv``.

    When ``edge_net`` is an ``nn.Sequential`` ending in an ``nn.Linear`` (the QM9 model), the per-edge
    matrices are never formed: with ``h_e`` the input of that last layer (weight ``A``, bias ``c``),
    ``x_j W(e) = (x_j ⊗ h_e) A + x_j c``, computed as ``U_j h_e + V_j`` with ``U_j = x_j A`` (out×hidden per
    node) and ``V_j = x_j c``, the edges grouped by source node. The same function and gradients as
    forming ``W(e)``, without its E·in·out values (150M for a QM9 batch of 120 molecules): per
    application N·in·out·hidden + E·out·hidden multiply-adds instead of E·in·out·hidden (for that batch
    1.5 instead of 20 G).

    Args:
        in_channels, out_channels: node feature sizes.
        edge_net: maps edge features (E, F) to (E, in·out).
        aggr: ``"mean"`` (the QM9 model) or ``"add"``.
    """

    def __init__(self, in_channels: int, out_channels: int, edge_net: nn.Module, aggr: str = "mean") -> None:
        super().__init__()
        if aggr not in ("mean", "add"):
            raise ValueError(f"aggr must be 'mean' or 'add', got {aggr!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.nn = edge_net
        self.aggr = aggr
        # the root weight: uniform(±1/sqrt(in)) as torch.nn.Linear (and PyG); the bias starts at 0 (PyG)
        self.lin = nn.Linear(in_channels, out_channels, bias=False)
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def _last(self) -> nn.Linear | None:
        net = self.nn
        if isinstance(net, nn.Sequential) and len(net) > 0 and isinstance(net[-1], nn.Linear):
            last = net[-1]
            if last.out_features == self.in_channels * self.out_channels:
                return last
        return None

    def prepare(self, edge_index: Tensor, edge_attr: Tensor) -> EdgePlan:
        """The edge network's output and the source grouping for this graph batch; pass it to
        :meth:`forward` when the layer is applied several times to the same graph (the QM9 model: 3)."""
        last = self._last()
        if last is not None:
            features, factorised = self.nn[:-1](edge_attr), True  # type: ignore[index]
        else:
            features = self.nn(edge_attr).view(-1, self.in_channels, self.out_channels)
            factorised = False
        src = edge_index[0]
        order = torch.argsort(src, stable=True)
        source = src[order]
        counts = torch.bincount(source, minlength=1)
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(source.numel(), device=src.device) - starts[source]
        width = int(counts.max()) if counts.numel() else 0
        return EdgePlan(features, factorised, order, source, slot, width)

    def messages(self, x: Tensor, plan: EdgePlan) -> Tensor:
        """``x_j W(e)`` for every edge (E, out), in the original edge order."""
        if not plan.factorised:
            src = torch.empty_like(plan.source)
            src[plan.order] = plan.source
            return torch.bmm(x[src].unsqueeze(1), plan.features).squeeze(1)
        last = self._last()
        assert last is not None
        hidden = plan.features.shape[1]
        # U_j[b, c] = sum_a x_j[a] A[a*out + b, c];  V_j = x_j c
        u = (x @ last.weight.view(self.in_channels, self.out_channels * hidden)).view(
            -1, self.out_channels, hidden
        )
        padded = plan.features.new_zeros(x.shape[0], plan.width, hidden)
        padded = padded.index_put((plan.source, plan.slot), plan.features[plan.order])
        grouped = torch.bmm(padded, u.transpose(1, 2))[plan.source, plan.slot]
        if last.bias is not None:
            grouped = grouped + (x @ last.bias.view(self.in_channels, self.out_channels))[plan.source]
        out = torch.empty_like(grouped)
        return out.index_put((plan.order,), grouped)

    def forward(
        self, x: Tensor, edge_index: Tensor, edge_attr: Tensor | None = None, plan: EdgePlan | None = None
    ) -> Tensor:
        if plan is None:
            if edge_attr is None:
                raise ValueError("NNConv needs edge_attr or a plan from prepare()")
            plan = self.prepare(edge_index, edge_attr)
        messages = self.messages(x, plan)
        dst = edge_index[1]
        if self.aggr == "mean":
            out = scatter_mean(messages, dst, x.shape[0])
        else:
            out = x.new_zeros(x.shape[0], self.out_channels).index_add_(0, dst, messages)
        return out + self.lin(x) + self.bias


class Set2Set(nn.Module):
    """Set2Set pooling (Vinyals et al., "Order Matters", ICLR 2016): ``steps`` rounds of an LSTM query
    attending over each graph's nodes; output ``[q, r]`` of size 2·channels per graph (PyG's
    ``Set2Set``)."""

    def __init__(self, channels: int, processing_steps: int) -> None:
        super().__init__()
        self.channels = channels
        self.processing_steps = processing_steps
        self.lstm = nn.LSTM(2 * channels, channels)

    def forward(self, x: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        h = (x.new_zeros(1, num_graphs, self.channels), x.new_zeros(1, num_graphs, self.channels))
        q_star = x.new_zeros(num_graphs, 2 * self.channels)
        for _ in range(self.processing_steps):
            q, h = self.lstm(q_star.unsqueeze(0), h)
            q = q.view(num_graphs, self.channels)
            a = segment_softmax((x * q[batch]).sum(-1), batch, num_graphs)
            r = x.new_zeros(num_graphs, self.channels).index_add_(0, batch, a.unsqueeze(1) * x)
            q_star = torch.cat([q, r], dim=-1)
        return q_star


class MPNN(nn.Module):
    """The Nash-MTL / FAMO QM9 network (module docstring): ``forward(x, edge_index, edge_attr, batch,
    num_graphs)`` → (num_graphs, tasks) predictions.

    Args:
        node_dim: node feature size (PyG's QM9 features: 11; :mod:`molearn.datasets` QM9 graphs: 7).
        edge_dim: edge feature size (PyG bond one-hot + distance: 5; molearn's QM9 graphs: 2).
        tasks: number of targets (one linear head each).
        dim: hidden size (64).
        iterations: message-passing iterations (3).
        processing_steps: Set2Set steps (3).
        edge_hidden: hidden size of the edge network (128).
    """

    def __init__(
        self,
        node_dim: int = 7,
        edge_dim: int = 2,
        tasks: int = 11,
        dim: int = 64,
        iterations: int = 3,
        processing_steps: int = 3,
        edge_hidden: int = 128,
    ) -> None:
        super().__init__()
        if tasks < 1 or iterations < 1:
            raise ValueError(f"tasks and iterations must be >= 1, got {tasks} and {iterations}")
        self.dim = dim
        self.iterations = iterations
        self.lin0 = nn.Linear(node_dim, dim)
        edge_net = nn.Sequential(
            nn.Linear(edge_dim, edge_hidden), nn.ReLU(), nn.Linear(edge_hidden, dim * dim)
        )
        self.conv = NNConv(dim, dim, edge_net, aggr="mean")
        self.gru = nn.GRU(dim, dim)
        self.set2set = Set2Set(dim, processing_steps=processing_steps)
        self.lin1 = nn.Linear(2 * dim, dim)
        self.heads = nn.ModuleList(nn.Linear(dim, 1) for _ in range(tasks))

    def representation(
        self, x: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor, num_graphs: int | None = None
    ) -> Tensor:
        """The shared features (num_graphs, dim) that the heads read."""
        if num_graphs is None:
            num_graphs = int(batch.max()) + 1 if batch.numel() else 0
        out = F.relu(self.lin0(x))
        h = out.unsqueeze(0)
        plan = self.conv.prepare(edge_index, edge_attr)
        for _ in range(self.iterations):
            m = F.relu(self.conv(out, edge_index, plan=plan))
            out, h = self.gru(m.unsqueeze(0), h)
            out = out.squeeze(0)
        return F.relu(self.lin1(self.set2set(out, batch, num_graphs)))

    def forward(
        self, x: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor, num_graphs: int | None = None
    ) -> Tensor:
        z = self.representation(x, edge_index, edge_attr, batch, num_graphs)
        return torch.cat([head(z) for head in self.heads], dim=1)

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        for module in (self.lin0, self.conv, self.gru, self.set2set, self.lin1):
            yield from module.parameters()

    def task_parameters(self) -> Iterator[nn.Parameter]:
        return self.heads.parameters()
