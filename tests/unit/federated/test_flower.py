"""Flower strategy/client classes: aggregate_fit equals molearn's aggregation rules; a few rounds in
Flower's own (Ray) simulation equal the in-process open-FL engine."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("flwr")
np = pytest.importorskip("numpy")

from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays  # noqa: E402

from molearn.federated._aggregate import aggregate_heterogeneous, fedavg, fedavg_lora_b  # noqa: E402
from molearn.federated._flower import (  # noqa: E402
    MolearnStrategy,
    OpenFLClient,
    StateDictClient,
    aggregation_rule,
)
from molearn.federated._open_fl import (  # noqa: E402
    StaticPopulation,
    random_quadratic_clients,
    simulate_open_fl,
)


def _res(state: dict[str, torch.Tensor], n: int) -> tuple[None, FitRes]:
    arrays = [v.numpy() for v in state.values()]
    return None, FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays), n, {"keys": "\n".join(state)})


def _state(strategy: MolearnStrategy, params) -> dict[str, torch.Tensor]:
    return {
        k: torch.from_numpy(a) for k, a in zip(strategy.state, parameters_to_ndarrays(params), strict=True)
    }


def test_aggregate_fit_fedavg_and_lora_b_match_the_plain_functions():
    g = torch.Generator().manual_seed(0)
    states = [
        {
            "l.lora_A.default.weight": torch.randn(2, 5, generator=g),
            "l.lora_B.default.weight": torch.randn(4, 2, generator=g),
        }
        for _ in range(3)
    ]
    sizes = [10, 30, 5]
    strat = MolearnStrategy(states[0], "fedavg")
    params, metrics = strat.aggregate_fit(1, [_res(s, n) for s, n in zip(states, sizes, strict=True)], [])
    expect = fedavg(states, sizes)
    got = _state(strat, params)
    assert metrics["clients"] == 3 and set(got) == set(expect)
    for k in expect:
        assert torch.allclose(got[k], expect[k]) and torch.allclose(strat.state[k], expect[k])
    b_only = {k: v for k, v in states[0].items() if "lora_B" in k}
    strat = MolearnStrategy(b_only, "lora_b")
    params, _ = strat.aggregate_fit(1, [_res(s, n) for s, n in zip(states, sizes, strict=True)], [])
    expect = fedavg_lora_b(states, sizes)
    assert list(strat.state) == ["l.lora_B.default.weight"]
    assert torch.allclose(_state(strat, params)["l.lora_B.default.weight"], expect["l.lora_B.default.weight"])


def test_aggregate_fit_heterogeneous_ranks_folds_into_base():
    g = torch.Generator().manual_seed(1)
    base = {"l.lora_B_base.weight": torch.randn(6, 3, generator=g)}
    states = [
        {
            "l.lora_B1.weight": torch.randn(r, 3, generator=g),
            "l.lora_B2.weight": torch.randn(6, r, generator=g),
        }
        for r in (1, 2, 4)
    ]
    strat = MolearnStrategy(base, "heterogeneous")
    params, _ = strat.aggregate_fit(2, [_res(s, n) for s, n in zip(states, (1, 2, 3), strict=True)], [])
    expect = aggregate_heterogeneous(states, [1, 2, 3], base)
    assert torch.allclose(_state(strat, params)["l.lora_B_base.weight"], expect["l.lora_B_base.weight"])
    delta = sum(
        w * s["l.lora_B2.weight"] @ s["l.lora_B1.weight"] for w, s in zip((1, 2, 3), states, strict=True)
    )
    assert torch.allclose(
        strat.state["l.lora_B_base.weight"], base["l.lora_B_base.weight"] + delta / 6, atol=1e-6
    )


def test_strategy_and_client_errors():
    with pytest.raises(ValueError, match="aggregate must be"):
        aggregation_rule("median")
    with pytest.raises(ValueError, match="at least one tensor"):
        MolearnStrategy({})
    strat = MolearnStrategy({"x": torch.zeros(2)})
    bad = FitRes(Status(Code.OK, ""), ndarrays_to_parameters([np.zeros(2)]), 1, {})
    with pytest.raises(ValueError, match="missing the 'keys' entry"):
        strat.aggregate_fit(1, [(None, bad)], [])
    assert strat.aggregate_fit(1, [], []) == (None, {})
    client = StateDictClient(lambda: {"x": torch.zeros(2)}, lambda s: None, lambda c: 0)
    with pytest.raises(ValueError, match="number of local examples"):
        client.fit([np.zeros(2)], {"keys": "x"})
    with pytest.raises(ValueError, match="out of range"):
        OpenFLClient(random_quadratic_clients(3, 2), 3)


def test_open_fl_client_rounds_equal_the_in_process_engine_without_ray():
    obj = random_quadratic_clients(3, 4, condition_number=5.0, seed=0)
    clients = [OpenFLClient(obj, i, local_steps=3, lr=0.05) for i in range(3)]
    strat = MolearnStrategy({"x": torch.zeros(4, dtype=torch.float64)})
    params = strat.initialize_parameters(None)
    for rnd in range(1, 5):
        arrays = parameters_to_ndarrays(params)
        results = []
        for c in clients:
            out, n, metrics = c.fit(arrays, {"keys": "x"})
            results.append((None, FitRes(Status(Code.OK, ""), ndarrays_to_parameters(out), n, metrics)))
        params, _ = strat.aggregate_fit(rnd, results, [])
    trace = simulate_open_fl(obj, StaticPopulation(), rounds=4, local_steps=3, lr=0.05)
    assert torch.allclose(strat.state["x"], trace.final_model, atol=1e-12)


@pytest.mark.slow
def test_flower_simulation_equals_in_process_engine():
    pytest.importorskip("ray")
    from flwr.server import ServerConfig
    from flwr.simulation import start_simulation

    obj = random_quadratic_clients(3, 4, condition_number=5.0, seed=0)

    def client_fn(context):
        return OpenFLClient(obj, int(context.node_config["partition-id"]), local_steps=2, lr=0.05).to_client()

    strat = MolearnStrategy(
        {"x": torch.zeros(4, dtype=torch.float64)}, min_fit_clients=3, min_available_clients=3
    )
    start_simulation(
        client_fn=client_fn,
        num_clients=3,
        config=ServerConfig(num_rounds=3),
        strategy=strat,
        client_resources={"num_cpus": 1},
        ray_init_args={"num_cpus": 2, "include_dashboard": False, "log_to_driver": False},
    )
    trace = simulate_open_fl(obj, StaticPopulation(), rounds=3, local_steps=2, lr=0.05)
    assert torch.allclose(strat.state["x"], trace.final_model, atol=1e-12)
