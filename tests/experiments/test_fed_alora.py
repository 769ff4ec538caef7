"""Fed-ALoRA experiment on the tiny random model (--quick settings)."""

import json

import pytest
import torch

pytest.importorskip("peft")
pytest.importorskip("transformers")
pytest.importorskip("chatterbot_corpus")

from experiments import common

fed_alora = common.load("fed-alora")

TINY = dict(fed_alora.QUICK, rounds=2, local_steps=1, eval_size=2, train_sizes=(3, 2))

# tiny Llama: hidden 32, kv out 16, 2 layers, q_proj and v_proj adapted, fp32
Q_OUT, V_OUT, IN, LAYERS, F32 = 32, 16, 32, 2, 4


def _b_bytes(r):  # B of q_proj and v_proj, all layers
    return LAYERS * (Q_OUT + V_OUT) * r * F32


def _a_bytes(r):
    return LAYERS * 2 * r * IN * F32


@pytest.fixture(scope="module")
def quick_result():
    return fed_alora.run(fed_alora.Settings(**TINY, dropout=0.0))


def test_every_method_is_scored_the_same_two_ways(quick_result):
    res = quick_result
    got = {(r["method"], r["round"], r["kind"]) for r in res.losses}
    for m in fed_alora.METHODS:
        for rnd in (1, 2):
            assert {(m, rnd, k) for k in ("train", "personal", "global")} <= got
    assert {(r["method"], r["round"]) for r in res.losses if r["kind"] == "base"} == {("base", 0)}
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in res.losses)
    # same start and the same batches, no dropout, one local step: in round 1 the gradient of A is zero
    # (B = 0), so A does not move and both servers send (A0, mean B) -- the same round-2 start, hence the
    # same personalised adapters in rounds 1 and 2; in round 2 A moves, and the global models differ
    # (Fed-ALoRA keeps A0, FedAvg averages the trained A's)
    loss = {(r["method"], r["round"], r["client"], r["kind"]): r["loss"] for r in res.losses}
    for k in range(2):
        for rnd in (1, 2):
            pers = loss[("fed_alora", rnd, k, "personal")]
            assert pers == pytest.approx(loss[("fedavg_lora", rnd, k, "personal")], rel=1e-6)
        assert loss[("fed_alora", 1, k, "global")] == pytest.approx(loss[("fedavg_lora", 1, k, "global")])
    assert any(loss[("fed_alora", 2, k, "global")] != loss[("fedavg_lora", 2, k, "global")] for k in range(2))


def test_bytes_per_round_by_construction(quick_result):
    comm = {(c["method"], c["round"]): c for c in quick_result.comm}
    r, (r0, r1), r_int = 8, fed_alora.QUICK["het_ranks"], 16
    for rnd in (1, 2):
        fa = comm[("fed_alora", rnd)]
        assert fa["bytes_up"] == 2 * _b_bytes(r) == fa["bytes_down"]
        assert comm[("fedavg_lora", rnd)]["bytes_up"] == 2 * (_a_bytes(r) + _b_bytes(r))
        assert comm[("fedavg_lora", rnd)]["bytes_down"] == 2 * (_a_bytes(r) + _b_bytes(r))
        het_up = sum(_b_bytes(rk) + LAYERS * 2 * rk * r_int * F32 for rk in (r0, r1))  # B2 + B1
        assert comm[("fed_alora_het", rnd)]["bytes_up"] == het_up
        assert comm[("fed_alora_het", rnd)]["bytes_down"] == 2 * _b_bytes(r_int)  # B_base to each client
        het = sum(_a_bytes(rk) + _b_bytes(rk) for rk in (r0, r1))
        assert comm[("hetlora", rnd)]["bytes_up"] == het == comm[("hetlora", rnd)]["bytes_down"]


def test_timings_are_interleaved(quick_result):
    t = quick_result.timing
    assert {(x["round"], x["method"]) for x in t} == {(r, m) for r in (1, 2) for m in fed_alora.METHODS}
    firsts = [x["method"] for x in t if x["position"] == 0]
    assert len(set(firsts)) == 2  # a different method opens each round
    assert all(x["wall_s"] > 0 and x["cpu_s"] >= 0 for x in t)


def test_summary_and_outputs(quick_result, tmp_path):
    sm = fed_alora.summarise(quick_result)
    assert {(r["method"], r["kind"]) for r in sm["table"]} == {
        (m, k) for m in fed_alora.METHODS for k in fed_alora.KINDS
    }
    d = next(x for x in sm["diffs"] if x["method"] == "fed_alora" and x["kind"] == "personal")
    assert d["baseline"] == "fedavg_lora" and not d["separates"]  # one seed: no interval
    assert sm["comm"]["fed_alora"]["per_round"] < sm["comm"]["fedavg_lora"]["per_round"]
    paths = fed_alora.write_outputs(quick_result, tmp_path, plot=False).paths
    md = paths["results.md"].read_text()
    assert "| fed_alora | personal |" in md and "| hetlora | global |" in md
    assert "fed_alora / fedavg_lora" in md
    assert paths["results.csv"].read_text().startswith("seed,method,round,client,topic,kind,loss")
    assert paths["timing.csv"].read_text().startswith("seed,round,method,position,wall_s,cpu_s")


def test_mean_ci():
    m, h = fed_alora.mean_ci([1.0, 2.0, 3.0])
    assert m == 2.0 and h == pytest.approx(4.302653 * 1.0 / 3**0.5, rel=1e-5)


def test_zero_pad_average_and_truncation():
    a1, b1 = torch.ones(1, 3), torch.full((2, 1), 2.0)
    a2, b2 = torch.full((2, 3), 3.0), torch.full((2, 2), 4.0)
    s1 = {"x.lora_A.weight": a1, "x.lora_B.weight": b1}
    s2 = {"x.lora_A.weight": a2, "x.lora_B.weight": b2}
    out = fed_alora.zero_pad_average([s1, s2], [1, 3])
    assert torch.allclose(out["x.lora_A.weight"], torch.tensor([[0.25 + 2.25] * 3, [2.25] * 3]))
    assert torch.allclose(out["x.lora_B.weight"], torch.tensor([[0.5 + 3.0, 3.0]] * 2))
    cut = fed_alora.truncate_rank(out, 1)
    assert cut["x.lora_A.weight"].shape == (1, 3) and cut["x.lora_B.weight"].shape == (2, 1)
    with pytest.raises(ValueError, match="non-rank dimension"):
        fed_alora.zero_pad_average([s1, {"x.lora_A.weight": torch.ones(1, 4), "x.lora_B.weight": b1}], [1, 1])
    with pytest.raises(ValueError, match="weight"):
        fed_alora.zero_pad_average([s1, s2], [1])


def test_checkpoint_resumes_finished_seeds(tmp_path, monkeypatch):
    ck = tmp_path / "ck.json"
    s = fed_alora.Settings(**dict(TINY, rounds=1, methods=("fed_alora", "fedavg_lora")))
    first = fed_alora.run(s, checkpoint=ck)
    assert list(json.loads(ck.read_text())["seeds"]) == ["0"]

    def no_model(_settings):
        raise AssertionError("a finished seed was run again")

    monkeypatch.setattr(fed_alora, "_load_model", no_model)
    again = fed_alora.run(s, checkpoint=ck)
    assert again.losses == first.losses and again.comm == first.comm


def test_bad_input_clients():
    with pytest.raises(ValueError, match="empty training data"):
        fed_alora.run(fed_alora.Settings(**dict(TINY, train_sizes=(3, 0))))
    with pytest.raises(ValueError, match="unknown chatterbot topic"):
        fed_alora.run(fed_alora.Settings(**dict(TINY, topics=("ai", "nope"))))
    with pytest.raises(ValueError, match="train sizes"):
        fed_alora.run(fed_alora.Settings(**dict(TINY, train_sizes=(3,))))
    with pytest.raises(ValueError, match="heterogeneous ranks"):
        fed_alora.run(fed_alora.Settings(**dict(TINY, het_ranks=(4,))))


def test_cli_arguments_parse():
    p = fed_alora.build_parser()
    s = fed_alora.settings_from_args(
        p.parse_args(["--rounds", "2", "--train-sizes", "4,5", "--topics", "ai,food", "--het-ranks", "8,2",
                      "--seeds", "4", "--methods", "fed_alora,fedavg_lora"])
    )  # fmt: skip
    assert s.rounds == 2 and s.train_sizes == (4, 5) and s.topics == ("ai", "food") and s.het_ranks == (8, 2)
    assert s.seeds == (0, 1, 2, 3) and s.methods == ("fed_alora", "fedavg_lora")
    assert fed_alora.Settings(rounds=6, eval_every=0).eval_rounds() == [6]
    assert fed_alora.Settings(rounds=6, eval_every=4).eval_rounds() == [4, 6]
