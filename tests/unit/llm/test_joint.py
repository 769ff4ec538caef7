"""ALRIGHT / MAXRIGHT / Mix / sequential trainers: schedules and two-step runs on a tiny random Llama."""

from __future__ import annotations

import pytest

pytest.importorskip("trl")
pytest.importorskip("peft")

import torch

from molearn.llm import JointConfig, train_joint
from molearn.llm._joint import maxright_choice

from ._tiny import PREF, SFT, tiny_model, tiny_tokenizer


def _run(recipe, steps=2, lora=True, **kw):
    cfg = JointConfig(recipe=recipe, max_steps=steps, batch_size=2, max_length=32, eval_steps=0, lora=lora,
                      lora_r=4, lora_alpha=8, lr=1e-2, **kw)
    return train_joint(tiny_model(), tiny_tokenizer(), SFT, PREF, cfg)


def test_lambda_outside_unit_interval_rejected():
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="lambd"):
            JointConfig(recipe="alright", lambd=bad)
    with pytest.raises(ValueError, match="recipe"):
        JointConfig(recipe="nope")


@pytest.mark.parametrize(("recipe", "lora"), [("alright", True), ("maxright", True), ("mix", True),
                                              ("sft_dpo", True), ("dpo_sft", True), ("alright", False),
                                              ("sft_dpo", False)])
def test_two_step_run(recipe, lora):
    base = tiny_model()
    before = {n: p.detach().clone() for n, p in base.named_parameters()}
    cfg = JointConfig(recipe=recipe, max_steps=2, batch_size=2, max_length=32, eval_steps=1, lora=lora,
                      lora_r=4, lora_alpha=8, lr=1e-2)
    res = train_joint(base, tiny_tokenizer(), SFT, PREF, cfg)
    assert [r["step"] for r in res.history] == [1, 2]
    assert all("eval_sft" in r and "eval_dpo" in r for r in res.history)
    assert torch.isfinite(torch.tensor([res.eval_sft, res.eval_dpo])).all()
    assert res.seconds_per_step > 0 and res.peak_memory_bytes > 0
    assert sum(res.steps_per_objective.values()) == (4 if recipe == "mix" else 2)
    if lora:
        lora_params = [p for n, p in res.model.named_parameters() if "lora_" in n]
        assert lora_params and all(p.requires_grad for p in lora_params)
    else:
        moved = any(not torch.equal(before[n], p) for n, p in res.model.named_parameters())
        assert moved


def test_sequential_stage_switch():
    res = _run("sft_dpo", steps=5, stage_steps=(2, 3))
    assert [r["objective"] for r in res.history] == ["sft", "sft", "dpo", "dpo", "dpo"]
    res = _run("dpo_sft", steps=3)
    assert [r["objective"] for r in res.history] == ["dpo", "sft", "sft"]


def test_alright_frequencies_and_seed():
    a = _run("alright", steps=8, lambd=0.5, seed=3)
    b = _run("alright", steps=8, lambd=0.5, seed=3)
    seq = [r["objective"] for r in a.history]
    assert seq == [r["objective"] for r in b.history]  # seeded
    g = torch.Generator().manual_seed(3)
    want = ["dpo" if torch.rand((), generator=g).item() < 0.5 else "sft" for _ in range(8)]
    assert seq == want
    assert all(("loss_sft" in r) != ("loss_dpo" in r) for r in a.history)  # one objective per step
    assert {r["objective"] for r in _run("alright", steps=3, lambd=1.0).history} == {"dpo"}


def test_maxright_choice_and_refresh():
    assert maxright_choice(0.3, 0.2) == "sft" and maxright_choice(0.2, 0.3) == "dpo"
    assert maxright_choice(0.5, 0.5) == "sft"
    # f*_SFT huge → the SFT gap is very negative and DPO is picked until its gap would drop below it
    res = _run("maxright", steps=5, lambd=0.5, f_star_sft=100.0, maxright_refresh=3)
    assert [r["objective"] for r in res.history] == ["dpo"] * 5
    assert [bool(r.get("refreshed")) for r in res.history] == [True, False, False, True, False]
    for r in res.history:  # the stepped objective's gap comes from its training loss
        assert r["gap_dpo"] == pytest.approx(0.5 * r["loss_dpo"])
    res = _run("maxright", steps=3, lambd=0.5, f_star_dpo=100.0)
    assert [r["objective"] for r in res.history] == ["sft"] * 3


def test_mix_uses_both_each_step():
    res = _run("mix", steps=2)
    assert all(r["objective"] == "mix" and "loss_sft" in r and "loss_dpo" in r for r in res.history)
