"""The per-layer (activation) scheme of ``mode="gramian"`` across ranks (issue 16), on the CPU with gloo.

A trunk with a Conv2d, a Linear and a Linear called twice, K = 3 linear heads, DDP, every rank an equal
slice of a fixed global batch of 12, 3 steps of the unchanged loop: the parameters must equal one process's
on the union batch (≤ 1e-6) and be identical on every rank, with ``activation_form="always"`` (every hooked
layer gathers its rows) and ``mode="auto"`` (the byte rule picks per layer); the bytes of the collectives
must follow the formulas of docs/distributed.md.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from torch import nn

import molearn
from molearn import methods as M
from molearn.engine import LayerwiseGramian
from molearn.engine._dist_layers import DistributedLayerwise

from . import _worker

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed with gloo is needed"
)

K = 3
N = 12  # the global batch: equal slices for 1, 2 and 3 ranks
STEPS = 3
TOL = 1e-6
C_IN, C_OUT, SIDE, HIDDEN = 2, 3, 4, 6
VOCAB, TOKENS = 7, 5


class Trunk(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(C_IN, C_OUT, 3, padding=1)
        self.lin = nn.Linear(C_OUT * SIDE * SIDE, HIDDEN)
        self.twice = nn.Linear(HIDDEN, HIDDEN)  # called twice per forward pass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.conv(x)).flatten(1)
        z = torch.tanh(self.lin(h))
        return torch.tanh(self.twice(torch.tanh(self.twice(z))))


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = Trunk()
        self.heads = nn.ModuleList(nn.Linear(HIDDEN, 1) for _ in range(K))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        z = self.trunk(x)
        return [h(z).squeeze(-1) for h in self.heads]


class TokenTrunk(nn.Module):
    """An embedding with a padding index and a Conv1d over the tokens (the other activation-form layers)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 4, padding_idx=0)
        self.conv = nn.Conv1d(4, 3, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(self.emb(tokens).transpose(1, 2))).flatten(1)  # (B, 3·(T-1))


class TokenNet(Net):
    def __init__(self) -> None:
        nn.Module.__init__(self)
        self.trunk = TokenTrunk()
        self.heads = nn.ModuleList(nn.Linear(3 * (TOKENS - 1), 1) for _ in range(K))


METHODS = {
    "mgda": lambda r: M.MGDA(),
    "upgrad": lambda r: M.UPGrad(),
    "pcgrad": lambda r: M.PCGrad(generator=torch.Generator().manual_seed(200 + r)),  # rank 0's state wins
}


def _mode(form: str) -> Any:
    return {"always": LayerwiseGramian(activation_form="always"), "auto": "auto", "loop": "loop"}[form]


def train(
    name: str,
    form: str,
    *,
    rank: int = 0,
    world: int = 1,
    rows: list[int] | None = None,
    sharded: bool | None = None,
    tokens: bool = False,
) -> dict[str, Any]:
    """``STEPS`` steps on this rank's slice (``rows``: every rank's number of samples, equal by default;
    ``sharded``: force the Jacobian scheme of the directly differentiated parameters; ``tokens``: the
    Embedding + Conv1d model)."""
    torch.manual_seed(0)
    net = TokenNet() if tokens else Net()
    wrapped = nn.parallel.DistributedDataParallel(net) if world > 1 else net
    bal = molearn.Balancer(METHODS[name](rank), shared=net.trunk, module=wrapped, mode=_mode(form))
    if sharded is not None and bal.collective is not None:
        bal.collective.sharded = sharded
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(N, C_IN, SIDE, SIDE, generator=g), torch.randn(N, K, generator=g)
    if tokens:  # token 0 is the padding index
        x = torch.randint(0, VOCAB, (N, TOKENS), generator=g)
    counts = rows or [N // world] * world
    start = sum(counts[:rank])
    x, y = x[start : start + counts[rank]], y[start : start + counts[rank]]
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(STEPS):
        opt.zero_grad()
        bal.backward([((o - y[:, i]) ** 2).mean() for i, o in enumerate(wrapped(x))])
        opt.step()
    strategy = bal.strategy_for(K)
    return {
        "params": torch.cat([p.detach().flatten() for p in net.parameters()]),
        "state": bal.method.state_dict(),
        "log": list(bal.collective.log.calls) if bal.collective is not None else [],
        "strategy": type(strategy).__name__,
        "activation": list(getattr(strategy, "last_activation", [])),
    }


def worker(rank: int, world: int, port: int, outdir: str, plan: list[str]) -> None:
    torch.set_num_threads(1)
    results: dict[str, Any] = {}
    try:
        dist.init_process_group(
            "gloo",
            init_method=f"tcp://127.0.0.1:{port}",
            rank=rank,
            world_size=world,
            timeout=_worker.TIMEOUT,
        )
        for item in plan:
            if item.startswith("@uneven-"):  # 8 and 4 samples: the mean of the ranks' means
                results[item] = train("mgda", item[8:], rank=rank, world=world, rows=[8, 4])
            elif item.startswith("@tokens-"):  # Embedding (padding index) and Conv1d
                results[item] = train("upgrad", item[8:], rank=rank, world=world, tokens=True)
            elif item.startswith("@sharded-"):  # the direct rows reduce-scattered, as on NCCL
                results[item] = train("mgda", item[9:], rank=rank, world=world, sharded=True)
            else:
                name, form = item.split("/")
                results[item] = train(name, form, rank=rank, world=world)
        dist.barrier()
    except Exception:
        results["crash"] = traceback.format_exc()
    torch.save(results, Path(outdir) / f"rank{rank}.pt")
    _worker.shutdown()


def launch(world: int, plan: list[str], tmp: Path, timeout: float = 120.0) -> list[dict[str, Any]]:
    results = _worker.spawn(worker, world, tmp, plan, timeout)
    for r, res in enumerate(results):
        assert "crash" not in res, f"rank {r}:\n{res['crash']}"
    return results


PLAN = [f"{m}/{f}" for m in METHODS for f in ("always", "auto")]
SHARDED = ["@sharded-always", "@sharded-auto", "@tokens-always"]
#: three ranks: every method and both forms, not every pair (a process group of 3 costs seconds on 2 cores)
PLAN3 = ["mgda/always", "upgrad/auto", "pcgrad/always", "@sharded-auto"]


def _reference(item: str) -> torch.Tensor:
    """One process on the union batch."""
    if item.startswith("@sharded-"):
        return train("mgda", item[9:])["params"]
    if item.startswith("@tokens-"):
        return train("upgrad", item[8:], tokens=True)["params"]
    name, form = item.split("/")
    return train(name, form)["params"]


def _check_exact(results: list[dict[str, Any]], plan: list[str], world: int) -> None:
    for item in plan:
        ranks = [r[item] for r in results]
        ref = _reference(item)
        for r, got in enumerate(ranks):
            between = float((got["params"] - ranks[0]["params"]).abs().max())
            assert between == 0.0, f"{item}: rank {r} differs from rank 0 by {between:.2e}"
            assert _same(got["state"], ranks[0]["state"]), f"{item}: method state differs on rank {r}"
        diff = float((ranks[0]["params"] - ref).abs().max())
        assert diff < TOL, f"{item} ({world} ranks): {diff:.2e} from the single-process run on the union"


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and bool((a == b).all())
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return launch(2, [*PLAN, *SHARDED, "@uneven-always", "@uneven-loop"], tmp_path_factory.mktemp("two"))


def test_two_ranks_equal_the_union_batch(two: list[dict[str, Any]]) -> None:
    _check_exact(two, [*PLAN, *SHARDED], 2)


def test_three_ranks_equal_the_union_batch(tmp_path: Path) -> None:
    _check_exact(launch(3, PLAN3, tmp_path), PLAN3, 3)


def test_uneven_slices_equal_the_gradient_scheme(two: list[dict[str, Any]]) -> None:
    """8 and 4 samples: the per-layer scheme (padded gather) gives what the Jacobian scheme gives."""
    layer, grad = two[0]["@uneven-always"], two[0]["@uneven-loop"]
    assert torch.equal(layer["params"], two[1]["@uneven-always"]["params"])
    assert float((layer["params"] - grad["params"]).abs().max()) < TOL
    assert layer["activation"] == ["Conv2d", "Linear", "Linear"]


# the model's sizes: rows and widths of each hooked layer (conv, lin, twice) and their parameters
CONV_P = C_OUT * C_IN * 9 + C_OUT  # 57
LIN_P = C_OUT * SIDE * SIDE * HIDDEN + HIDDEN  # 294
TWICE_P = HIDDEN * HIDDEN + HIDDEN  # 42
HEADS_P = K * (HIDDEN + 1)  # 21, task parameters: always differentiated directly


def _local_rows(n: int) -> dict[str, tuple[int, int, int]]:
    """(rows, d_in, d_out) per layer on a rank with n samples."""
    return {
        "conv": (n * SIDE * SIDE, C_IN * 9, C_OUT),
        "lin": (n, C_OUT * SIDE * SIDE, HIDDEN),
        "twice": (2 * n, HIDDEN, HIDDEN),
    }


def test_auto_rule_by_hand() -> None:
    """W = 2, 6 samples per rank, K = 3, gloo (all-reduced Jacobian), float32: per layer, gathered
    R·(d_in + K·d_out) plus 2p (the write's all-reduce) against 2·K·p, in 4-byte numbers."""
    from molearn.engine._dist_layers import uses_activation_form
    from molearn.engine._layers import Layer

    net = Net()
    t = net.trunk
    # conv: 192·(18 + 9) + 2·57 = 5298 > 2·3·57 = 342 -> gradient form
    # lin: 12·(48 + 18) + 2·294 = 1380 < 2·3·294 = 1764 -> activation form
    # twice: 24·(6 + 18) + 2·42 = 660 > 2·3·42 = 252 -> gradient form
    expect = {"conv": False, "lin": True, "twice": False}
    for name, m in (("conv", t.conv), ("lin", t.lin), ("twice", t.twice)):
        layer = Layer(m, m.weight, m.bias)
        rows = 2 * _local_rows(6)[name][0]
        assert uses_activation_form(layer, rows, K, sharded=False) is expect[name], name
    # reduce-scattered (NCCL): lin 1380 against (K + 1)·p = 1176: the gradient form wins there
    lin = Layer(t.lin, t.lin.weight, t.lin.bias)
    assert not uses_activation_form(lin, 12, K, sharded=True)
    assert uses_activation_form(lin, 4, K, sharded=True)  # 4·66 + 588 = 852 < 1176


def test_auto_uses_the_per_layer_scheme(two: list[dict[str, Any]]) -> None:
    for m in METHODS:
        got = two[0][f"{m}/auto"]
        assert got["strategy"] == DistributedLayerwise.__name__
        assert got["activation"] == ["Linear"], got["activation"]  # lin only (test_auto_rule_by_hand)
        assert two[0][f"{m}/always"]["activation"] == ["Conv2d", "Linear", "Linear"]


def test_bytes_follow_the_formula(two: list[dict[str, Any]]) -> None:
    """Per step: the losses (4K), the row counts (8 per hooked layer), the direct rows all-reduced
    (4·K·P_direct), one all-gather of the activation-form layers' rows and output-gradients
    (4·Σ N_r·(d_in + K·d_out)) and the all-reduce of their local writes (4·(p + tensors))."""
    rows = _local_rows(N // 2)

    def gathered(names: list[str]) -> int:
        return 4 * sum(n * (d_in + K * d_out) for n, d_in, d_out in (rows[x] for x in names))

    always = two[0]["mgda/always"]["log"]
    assert always == [
        ("all_reduce", 4 * K),
        ("all_gather", 8 * 3),
        ("all_reduce", 4 * K * HEADS_P),
        ("all_gather", gathered(["conv", "lin", "twice"])),  # 4·(96·27 + 6·66 + 12·24) = 13104
        ("all_reduce", 4 * (CONV_P + LIN_P + TWICE_P + 6)),
    ]
    assert gathered(["conv", "lin", "twice"]) == 13104
    auto = two[0]["mgda/auto"]["log"]
    assert auto == [
        ("all_reduce", 4 * K),
        ("all_gather", 8 * 3),
        ("all_reduce", 4 * K * (CONV_P + TWICE_P + HEADS_P)),
        ("all_gather", gathered(["lin"])),
        ("all_reduce", 4 * (LIN_P + 2)),
    ]


def test_bytes_with_the_sharded_jacobian(two: list[dict[str, Any]]) -> None:
    """Forced reduce-scatter (NCCL's scheme): under "auto" no layer gathers ((K + 1)·p is the bar: lin's
    1380 numbers exceed 4·294 = 1176); every parameter's rows are reduce-scattered, the K×K Gramian
    all-reduced and the update's slice all-gathered; under "always" only the heads' rows are sharded (they
    hold no shared column: no Gramian all-reduce)."""
    width = CONV_P + LIN_P + TWICE_P + HEADS_P
    cols = -(-width // 2)
    assert two[0]["@sharded-auto"]["activation"] == []
    assert two[0]["@sharded-auto"]["log"] == [
        ("all_reduce", 4 * K),
        ("all_gather", 8 * 3),
        ("reduce_scatter", 4 * K * cols * 2),
        ("all_reduce", 4 * K * K),
        ("all_gather", 4 * cols),
    ]
    heads = -(-HEADS_P // 2)
    log = two[0]["@sharded-always"]["log"]
    assert log[:3] == [("all_reduce", 4 * K), ("all_gather", 8 * 3), ("reduce_scatter", 4 * K * heads * 2)]
    assert [op for op, _ in log[3:]] == ["all_gather", "all_gather", "all_reduce"]  # rows; update; write
    assert log[4] == ("all_gather", 4 * heads)


def test_embedding_and_conv1d_gather(two: list[dict[str, Any]]) -> None:
    assert two[0]["@tokens-always"]["activation"] == ["Embedding", "Conv1d"]
