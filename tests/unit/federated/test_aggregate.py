"""Aggregation rules of Fed-ALoRA / FedAvg on hand-built state dicts, and the heterogeneous-rank adapter."""

import pytest
import torch
from torch import nn

from molearn.federated._aggregate import aggregate_heterogeneous, fedavg, fedavg_lora_b, is_lora_b
from molearn.federated._hetero_lora import (
    HeteroLoRALinear,
    hetero_lora_upload,
    inject_hetero_lora,
    load_hetero_base,
)


def _lora_state(a: float, b: float) -> dict:
    return {
        "l.lora_A.default.weight": torch.full((2, 3), a),
        "l.lora_B.default.weight": torch.full((4, 2), b),
        "l.base_layer.weight": torch.full((4, 3), a + b),
    }


def test_fedavg_is_weighted_mean_by_data_size():
    s1, s2 = _lora_state(1.0, 2.0), _lora_state(3.0, 6.0)
    out = fedavg([s1, s2], [10, 30])  # weights 0.25 / 0.75
    assert torch.equal(out["l.lora_A.default.weight"], torch.full((2, 3), 2.5))
    assert torch.equal(out["l.lora_B.default.weight"], torch.full((4, 2), 5.0))
    assert torch.equal(out["l.base_layer.weight"], torch.full((4, 3), 7.5))
    assert s1["l.lora_A.default.weight"][0, 0] == 1.0  # inputs untouched


def test_fedavg_random_matches_manual_sum_and_keeps_dtype():
    g = torch.Generator().manual_seed(0)
    states = [
        {"w": torch.randn(5, 3, generator=g, dtype=torch.float64), "n": torch.tensor(7)} for _ in range(3)
    ]
    w = [1.0, 2.0, 5.0]
    out = fedavg(states, w)
    ref = sum(wi / 8.0 * s["w"] for wi, s in zip(w, states))
    torch.testing.assert_close(out["w"], ref, rtol=0, atol=1e-12)
    assert out["w"].dtype == torch.float64 and out["n"].item() == 7


def test_b_only_averaging_leaves_a_local():
    s1, s2 = _lora_state(1.0, 2.0), _lora_state(3.0, 6.0)
    out = fedavg_lora_b([s1, s2], [1, 1])
    assert set(out) == {"l.lora_B.default.weight"}
    assert torch.equal(out["l.lora_B.default.weight"], torch.full((4, 2), 4.0))
    # loading the aggregate into a client keeps its own A
    client = dict(s1)
    client.update(out)
    assert torch.equal(client["l.lora_A.default.weight"], torch.full((2, 3), 1.0))
    assert (
        is_lora_b("x.lora_B.default.weight") and not is_lora_b("x.lora_B1") and not is_lora_b("x.lora_B_base")
    )


def _hetero_state(b2: torch.Tensor, b1: torch.Tensor) -> dict:
    return {"m.q.lora_B2": b2, "m.q.lora_B1": b1, "m.q.lora_A": torch.randn(b2.shape[1], 5)}


def test_heterogeneous_is_base_plus_weighted_mean_of_products_any_ranks():
    g = torch.Generator().manual_seed(1)
    out_f, r_int, ranks, w = 6, 3, [4, 2, 1], [3.0, 1.0, 4.0]
    states = [
        _hetero_state(torch.randn(out_f, r, generator=g), torch.randn(r, r_int, generator=g)) for r in ranks
    ]
    base = {"m.q.lora_B_base": torch.randn(out_f, r_int, generator=g)}
    new = aggregate_heterogeneous(states, w, base)
    ref = base["m.q.lora_B_base"] + sum(
        wi / 8.0 * s["m.q.lora_B2"] @ s["m.q.lora_B1"] for wi, s in zip(w, states)
    )
    torch.testing.assert_close(new["m.q.lora_B_base"], ref)
    # equivalently: B-only FedAvg of the clients' effective shared matrices B_base + B2 B1
    eff = [
        {"m.q.lora_B.default.weight": base["m.q.lora_B_base"] + s["m.q.lora_B2"] @ s["m.q.lora_B1"]}
        for s in states
    ]
    torch.testing.assert_close(new["m.q.lora_B_base"], fedavg_lora_b(eff, w)["m.q.lora_B.default.weight"])


def test_heterogeneous_with_equal_ranks_reduces_to_homogeneous_b_averaging():
    # r_k = r_int, B1 = M = I and B_base = 0: the client adapter is s·B2·A, a plain LoRA (A, B =
    # B2), and the new
    # B_base equals Fed-ALoRA's homogeneous B-only average of the B2's.
    g = torch.Generator().manual_seed(2)
    r = 3
    b2s = [torch.randn(6, r, generator=g) for _ in range(3)]
    w = [2, 5, 1]
    states = [_hetero_state(b2, torch.eye(r)) for b2 in b2s]
    new = aggregate_heterogeneous(states, w, {"m.q.lora_B_base": torch.zeros(6, r)})
    homo = fedavg_lora_b([{"q.lora_B.default.weight": b} for b in b2s], w)
    torch.testing.assert_close(new["m.q.lora_B_base"], homo["q.lora_B.default.weight"])
    # equal ranks with a common B1: the product of the averaged B2 with B1
    b1 = torch.randn(r, 2, generator=g)
    states = [_hetero_state(b2, b1) for b2 in b2s]
    new = aggregate_heterogeneous(states, w, {"m.q.lora_B_base": torch.zeros(6, 2)})
    torch.testing.assert_close(new["m.q.lora_B_base"], homo["q.lora_B.default.weight"] @ b1)


def test_hetero_layer_matches_formula_and_is_identity_at_init():
    torch.manual_seed(0)
    lin = nn.Linear(8, 6)
    layer = HeteroLoRALinear(lin, r=4, r_int=3, dropout=0.0)
    x = torch.randn(2, 5, 8)
    torch.testing.assert_close(layer(x), lin(x))  # B2 = 0 and B_base = 0
    nn.init.normal_(layer.lora_B2)
    layer.lora_B_base.normal_()
    delta = layer.scaling * (layer.lora_B_base + layer.lora_B2 @ layer.lora_B1) @ layer.lora_M @ layer.lora_A
    torch.testing.assert_close(layer(x), lin(x) + x @ delta.T)
    assert layer.scaling == 2.0  # alpha = 2r by default
    assert not lin.weight.requires_grad and "lora_B_base" in dict(layer.named_buffers())


def test_hetero_round_trip_through_server():
    torch.manual_seed(0)
    clients = []
    for r in (4, 2):
        m = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 6))
        names = inject_hetero_lora(m, ["0", "2"], r=r, r_int=2, dropout=0.0)
        assert names == ["0", "2"]
        for mod in m.modules():
            if isinstance(mod, HeteroLoRALinear):
                nn.init.normal_(mod.lora_B2)
        clients.append(m)
    ups = [hetero_lora_upload(m) for m in clients]
    base = {k: v for k, v in clients[0].state_dict().items() if "lora_B_base" in k}
    new = aggregate_heterogeneous(ups, [1, 1], base)
    assert set(new) == {"0.lora_B_base", "2.lora_B_base"}
    for m in clients:
        load_hetero_base(m, new)
        torch.testing.assert_close(m[2].lora_B_base, new["2.lora_B_base"])
        assert torch.count_nonzero(m[2].lora_B2) == 0  # local factors restarted


# ---- bad input -----------------------------------------------------------------------------------


def test_bad_input_errors():
    s = _lora_state(1.0, 2.0)
    with pytest.raises(ValueError, match="empty"):
        fedavg([], [])
    with pytest.raises(ValueError, match="sum to zero"):
        fedavg([s, s], [0, 0])
    with pytest.raises(ValueError, match="weights"):
        fedavg([s, s], [1])
    with pytest.raises(ValueError, match=">= 0"):
        fedavg([s, s], [1, -1])
    with pytest.raises(ValueError, match="keys differ"):
        fedavg([s, {"x": torch.zeros(1)}], [1, 1])
    bad = dict(s, **{"l.lora_B.default.weight": torch.zeros(4, 3)})
    with pytest.raises(ValueError, match="shape mismatch"):
        fedavg_lora_b([s, bad], [1, 1])
    with pytest.raises(ValueError, match="no LoRA B"):
        fedavg_lora_b([{"a": torch.zeros(1)}], [1])
    with pytest.raises(ValueError, match="empty"):
        aggregate_heterogeneous([], [], {})


def test_heterogeneous_bad_input_errors():
    base = {"m.q.lora_B_base": torch.zeros(3, 2)}
    with pytest.raises(ValueError, match="larger than the layer"):
        aggregate_heterogeneous([_hetero_state(torch.zeros(3, 5), torch.zeros(5, 2))], [1], base)
    with pytest.raises(ValueError, match="does not give B_base's shape"):
        aggregate_heterogeneous([_hetero_state(torch.zeros(3, 2), torch.zeros(2, 4))], [1], base)
    with pytest.raises(ValueError, match="no entry"):
        aggregate_heterogeneous([_hetero_state(torch.zeros(3, 2), torch.zeros(2, 2))], [1], {})
    with pytest.raises(ValueError, match="sum to zero"):
        aggregate_heterogeneous([_hetero_state(torch.zeros(3, 2), torch.zeros(2, 2))], [0], base)
    with pytest.raises(ValueError, match="larger than the layer"):
        HeteroLoRALinear(nn.Linear(4, 3), r=8)
    with pytest.raises(ValueError, match="positive integer"):
        HeteroLoRALinear(nn.Linear(4, 3), r=0, r_int=2)
    with pytest.raises(ValueError, match="not found"):
        inject_hetero_lora(nn.Sequential(nn.Linear(4, 4)), ["q_proj"], r=2, r_int=2)
    m = nn.Sequential(nn.Linear(4, 4))
    inject_hetero_lora(m, ["0"], r=2, r_int=2)
    with pytest.raises(ValueError, match="shape mismatch"):
        load_hetero_base(m, {"0.lora_B_base": torch.zeros(3, 3)})
