"""The QM9 message-passing network: NNConv by hand and against explicit per-edge weights, the grouped
softmax, Set2Set per graph, invariances, the parameter split; equal to PyTorch Geometric's layers and to
Nash-MTL's network on copied weights when PyG is installed."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from molearn.models import MPNN, NNConv, Set2Set
from molearn.models._mpnn import scatter_mean, segment_softmax

HAS_PYG = importlib.util.find_spec("torch_geometric") is not None


def _graph(seed: int = 0, nodes: int = 9, edges: int = 30, feat: int = 4) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(nodes, feat, generator=g, dtype=torch.float64)
    ei = torch.randint(0, nodes, (2, edges), generator=g)  # unsorted, repeated edges, self loops
    ea = torch.randn(edges, 3, generator=g, dtype=torch.float64)
    return x, ei, ea


def _batch(seed: int = 0, sizes: tuple[int, ...] = (3, 5, 4)) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    parts, off = [], 0
    for s in sizes:
        r = torch.arange(s).repeat_interleave(s)
        c = torch.arange(s).repeat(s)
        parts.append(torch.stack([r[r != c], c[r != c]]) + off)
        off += s
    ei = torch.cat(parts, 1)
    x = torch.randn(n, 7, generator=g)
    ea = torch.rand(ei.shape[1], 2, generator=g)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return x, ei, ea, batch


def test_nnconv_by_hand() -> None:
    # in = out = 1; W(e) = 2 relu(e) + 1, root weight 3, bias 0.5; edges 0->2 (e=1), 1->2 (e=-1), 2->0 (e=2)
    net = nn.Sequential(nn.Linear(1, 1), nn.ReLU(), nn.Linear(1, 1))
    conv = NNConv(1, 1, net, aggr="mean")
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[0].bias.zero_()
        net[2].weight.fill_(2.0)
        net[2].bias.fill_(1.0)
        conv.lin.weight.fill_(3.0)
        conv.bias.fill_(0.5)
    x = torch.tensor([[1.0], [2.0], [4.0]])
    ei = torch.tensor([[0, 1, 2], [2, 2, 0]])
    e = torch.tensor([[1.0], [-1.0], [2.0]])
    out = conv(x, ei, e)
    # node 0: message 4·(2·2+1) = 20 -> 20 + 3 + 0.5; node 1: no message -> 6.5;
    # node 2: mean(1·3, 2·1) = 2.5 -> 2.5 + 12 + 0.5
    assert out.squeeze(1).tolist() == [23.5, 6.5, 15.0]
    conv.aggr = "add"
    assert conv(x, ei, e)[2].item() == 5.0 + 12.5


def test_factorised_messages_equal_explicit_weights() -> None:
    x, ei, ea = _graph()
    net = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 4 * 5)).double()
    conv = NNConv(4, 5, net).double()
    plan = conv.prepare(ei, ea)
    assert plan.factorised
    weight = net(ea).view(-1, 4, 5)
    explicit = torch.bmm(x[ei[0]].unsqueeze(1), weight).squeeze(1)
    torch.testing.assert_close(conv.messages(x, plan), explicit)
    expected = scatter_mean(explicit, ei[1], 9) + x @ conv.lin.weight.T + conv.bias
    torch.testing.assert_close(conv(x, ei, ea), expected)
    # an edge network that does not end in a Linear forms the weights; same result
    other = NNConv(4, 5, nn.Sequential(net, nn.Identity())).double()
    other.load_state_dict({k.replace("nn.", "nn.0.", 1): v for k, v in conv.state_dict().items()})
    assert not other.prepare(ei, ea).factorised
    torch.testing.assert_close(other(x, ei, ea), conv(x, ei, ea))


def test_segment_softmax_and_set2set_per_graph() -> None:
    scores = torch.tensor([1.0, 2.0, 3.0, 100.0, 101.0])
    index = torch.tensor([0, 0, 1, 2, 2])
    got = segment_softmax(scores, index, 4)
    want = torch.cat([torch.softmax(scores[:2], 0), torch.ones(1), torch.softmax(scores[3:], 0)])
    torch.testing.assert_close(got, want)
    torch.manual_seed(0)
    pool = Set2Set(6, processing_steps=3)
    x = torch.randn(7, 6)
    batch = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    both = pool(x, batch, 2)
    assert both.shape == (2, 12)
    torch.testing.assert_close(both[0], pool(x[:3], torch.zeros(3, dtype=torch.long), 1)[0])
    torch.testing.assert_close(both[1], pool(x[3:], torch.zeros(4, dtype=torch.long), 1)[0])


def test_mpnn_invariances_and_parameter_split() -> None:
    torch.manual_seed(0)
    model = MPNN(node_dim=7, edge_dim=2, tasks=11)
    x, ei, ea, batch = _batch()
    out = model(x, ei, ea, batch, 3)
    assert out.shape == (3, 11)
    torch.testing.assert_close(model(x, ei, ea, batch), out)  # num_graphs from the batch vector
    # renumber the atoms of the second molecule (3..7): same predictions
    perm = torch.tensor([0, 1, 2, 7, 5, 3, 6, 4, 8, 9, 10, 11])
    inverse = torch.argsort(perm)
    torch.testing.assert_close(model(x[perm], inverse[ei], ea, batch[perm], 3), out, atol=1e-5, rtol=1e-5)
    shared = {id(p) for p in model.shared_parameters()}
    heads = {id(p) for p in model.task_parameters()}
    assert not shared & heads and shared | heads == {id(p) for p in model.parameters()}
    assert heads == {id(p) for p in model.heads.parameters()} and len(list(model.task_parameters())) == 22
    # each head reads the shared representation only
    out[:, 4].sum().backward()
    assert model.heads[4].weight.grad.abs().sum() > 0 and model.heads[3].weight.grad.abs().sum() == 0
    with pytest.raises(ValueError, match="tasks"):
        MPNN(tasks=0)


@pytest.mark.skipif(not HAS_PYG, reason="torch_geometric is not installed")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # PyG's use of torch.jit.script
def test_layers_equal_pyg() -> None:
    from torch_geometric.nn import NNConv as PygNNConv
    from torch_geometric.nn import Set2Set as PygSet2Set

    x, ei, ea = _graph(seed=1)
    torch.manual_seed(1)
    theirs = PygNNConv(4, 5, nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 20)), aggr="mean")
    nn.init.normal_(theirs.bias)  # PyG starts it at 0: make the copy matter
    theirs = theirs.double()
    ours = NNConv(4, 5, nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 20))).double()
    ours.load_state_dict(theirs.state_dict())
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_theirs, out_ours = theirs(xa, ei, ea), ours(xb, ei, ea)
    torch.testing.assert_close(out_ours, out_theirs)
    (out_theirs**2).sum().backward()
    (out_ours**2).sum().backward()
    torch.testing.assert_close(xb.grad, xa.grad)
    for (name, p), q in zip(theirs.named_parameters(), ours.parameters()):
        torch.testing.assert_close(q.grad, p.grad, msg=name)

    pool_theirs = PygSet2Set(6, processing_steps=3).double()
    pool_ours = Set2Set(6, processing_steps=3).double()
    pool_ours.load_state_dict(pool_theirs.state_dict())
    h = torch.randn(9, 6, dtype=torch.float64)
    batch = torch.tensor([0, 0, 1, 1, 1, 1, 2, 2, 2])
    torch.testing.assert_close(pool_ours(h, batch, 3), pool_theirs(h, batch))


@pytest.mark.skipif(not HAS_PYG, reason="torch_geometric is not installed")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # PyG's use of torch.jit.script
def test_network_equals_nash_mtl_net_on_copied_weights() -> None:
    from torch_geometric.nn import NNConv as PygNNConv
    from torch_geometric.nn import Set2Set as PygSet2Set

    class NashNet(nn.Module):  # Nash-MTL experiments/quantum_chemistry/models.py, with PyG's layers
        def __init__(self, tasks: int, features: int, edge_features: int, dim: int = 64) -> None:
            super().__init__()
            self.lin0 = nn.Linear(features, dim)
            edge_net = nn.Sequential(nn.Linear(edge_features, 128), nn.ReLU(), nn.Linear(128, dim * dim))
            self.conv = PygNNConv(dim, dim, edge_net, aggr="mean")
            self.gru = nn.GRU(dim, dim)
            self.set2set = PygSet2Set(dim, processing_steps=3)
            self.lin1 = nn.Linear(2 * dim, dim)
            self.heads = nn.ModuleList(nn.Linear(dim, 1) for _ in range(tasks))

        def forward(self, x, edge_index, edge_attr, batch):  # type: ignore[no-untyped-def]
            out = F.relu(self.lin0(x))
            h = out.unsqueeze(0)
            for _ in range(3):
                m = F.relu(self.conv(out, edge_index, edge_attr))
                out, h = self.gru(m.unsqueeze(0), h)
                out = out.squeeze(0)
            features = F.relu(self.lin1(self.set2set(out, batch)))
            return torch.cat([head(features) for head in self.heads], dim=1)

    torch.manual_seed(2)
    theirs = NashNet(11, 7, 2).double()
    ours = MPNN(node_dim=7, edge_dim=2, tasks=11).double()
    ours.load_state_dict(theirs.state_dict())
    x, ei, ea, batch = (t.double() if t.is_floating_point() else t for t in _batch(seed=2))
    out_theirs, out_ours = theirs(x, ei, ea, batch), ours(x, ei, ea, batch, 3)
    torch.testing.assert_close(out_ours, out_theirs)
    out_theirs.square().sum().backward()
    out_ours.square().sum().backward()
    for (name, p), q in zip(theirs.named_parameters(), ours.parameters()):
        torch.testing.assert_close(q.grad, p.grad, msg=name)
