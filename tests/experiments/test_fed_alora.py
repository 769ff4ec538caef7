"""Fed-ALoRA experiment on the tiny random model (--quick settings)."""

import pytest

pytest.importorskip("peft")
pytest.importorskip("transformers")
pytest.importorskip("chatterbot_corpus")

from experiments import common

fed_alora = common.load("fed-alora")

TINY = dict(fed_alora.QUICK, rounds=1, local_steps=1, eval_size=2, train_sizes=(3, 2))


def test_quick_run_counts_bytes_and_writes_outputs(tmp_path):
    res = fed_alora.run(fed_alora.Settings(**TINY))
    rows = fed_alora.summarise(res)
    assert {(r["method"], r["round"]) for r in rows} == {(m, k) for m in fed_alora.METHODS for k in (0, 1)}
    by = {(r["method"], r["round"]): r for r in rows}
    # same start for both methods
    assert by[("fed_alora", 0)]["mean_eval_loss"] == by[("fedavg_lora", 0)]["mean_eval_loss"]
    # tiny Llama: hidden 32, kv out 16, r 8, 2 layers, fp32; B = 32*8 + 16*8, A = 2 * 8*32 per layer
    b_bytes = 2 * (32 * 8 + 16 * 8) * 4
    a_bytes = 2 * (2 * 8 * 32) * 4
    assert by[("fed_alora", 1)]["bytes_up"] == 2 * b_bytes == by[("fed_alora", 1)]["bytes_down"]
    assert by[("fedavg_lora", 1)]["bytes_up"] == 2 * (a_bytes + b_bytes)
    paths = fed_alora.write_outputs(res, tmp_path, plot=False).paths
    assert "| fed_alora | 1 |" in paths["results.md"].read_text()
    assert paths["results.csv"].read_text().startswith("method,round,mean_eval_loss,client0_loss")


def test_bad_input_clients():
    with pytest.raises(ValueError, match="empty training data"):
        fed_alora.run(fed_alora.Settings(**dict(TINY, train_sizes=(3, 0))))
    with pytest.raises(ValueError, match="unknown chatterbot topic"):
        fed_alora.run(fed_alora.Settings(**dict(TINY, topics=("ai", "nope"))))
    with pytest.raises(ValueError, match="train sizes"):
        fed_alora.run(fed_alora.Settings(**dict(TINY, train_sizes=(3,))))


def test_cli_arguments_parse():
    p = fed_alora.build_parser()
    s = fed_alora.settings_from_args(
        p.parse_args(["--rounds", "2", "--train-sizes", "4,5", "--topics", "ai,food"])
    )
    assert s.rounds == 2 and s.train_sizes == (4, 5) and s.topics == ("ai", "food")
