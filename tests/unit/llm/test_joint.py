"""ALRIGHT / MAXRIGHT / Mix / sequential trainers: schedules and two-step runs on a tiny random Llama."""

from __future__ import annotations

import math

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


def test_objective_values_is_the_mean_running_batch_loss():
    """f* for MAXRIGHT: the mean of the training batch losses (the official ``loss_sum / times``), not the
    token mean over the whole set that the eval loss uses."""
    from molearn.llm import (
        collate_preference,
        collate_sft,
        dpo_loss_from_batch,
        objective_values,
        sft_loss,
        tokenize_all,
    )

    model, tok = tiny_model(), tiny_tokenizer()
    cfg = JointConfig(recipe="maxright", batch_size=2, max_length=32)
    f_sft, f_dpo = objective_values(model, tok, SFT, PREF, cfg, ref_model=_frozen(model))
    s, _ = tokenize_all(SFT, tok, 32, "sft")
    p, _ = tokenize_all(PREF, tok, 32, "preference")
    pad = tok.pad_token_id
    with torch.no_grad():
        b = [float(sft_loss(model, collate_sft(s[i:i + 2], pad))) for i in (0, 2)]
        ref = _frozen(model)
        d = [float(dpo_loss_from_batch(model, collate_preference(p[i:i + 2], pad, 32), ref_model=ref))
             for i in (0, 2)]
    assert f_sft == pytest.approx((b[0] + b[1]) / 2, rel=1e-6)
    assert f_dpo == pytest.approx(0.6931472, abs=1e-6) and d == pytest.approx([0.6931472] * 2, abs=1e-6)
    assert math.isnan(objective_values(model, tok, None, None, cfg)[0])


def _frozen(model):
    import copy

    ref = copy.deepcopy(model).eval()
    for q in ref.parameters():
        q.requires_grad_(False)
    return ref


def test_maxright_gap_is_zero_at_the_optimum_when_f_star_is_a_training_value():
    """Hand-checkable case: one batch = the whole training set (batch 4, 4 records), start model π₀ = the
    DPO reference. With f* = the training objective values of π₀ (objective_values) both initial gaps are
    exactly 0: s_SFT = (1−λ)(L_SFT(π₀) − f*_SFT) = 0 and s_DPO = λ(log 2 − log 2) = 0, a tie → SFT. With the
    old f* (an eval loss on held-out records) the SFT gap is not 0."""
    from molearn.llm import objective_values

    tok = tiny_tokenizer()
    cfg = dict(recipe="maxright", max_steps=1, batch_size=4, max_length=32, eval_steps=0, lora_r=4,
               lora_alpha=8, lr=1e-2, lambd=0.5)
    pi0 = tiny_model()
    f_sft, f_dpo = objective_values(pi0, tok, SFT, PREF, JointConfig(**cfg), ref_model=pi0)
    res = train_joint(tiny_model(), tok, SFT, PREF, JointConfig(**cfg, f_star_sft=f_sft, f_star_dpo=f_dpo))
    row = res.history[0]
    assert row["refreshed"] and row["objective"] == "sft"
    assert row["gap_dpo"] == pytest.approx(0.0, abs=1e-6)
    assert row["gap_sft"] == pytest.approx(0.0, abs=1e-5)  # stepped objective: (1−λ)(its loss − f*)
    assert row["loss_sft"] == pytest.approx(f_sft, rel=1e-5)
    # old behaviour: f* from held-out eval records (another answer distribution) → gap ≠ 0
    held_out = [{"messages": [{"role": "user", "content": "tell me a joke"},
                              {"role": "assistant", "content": "one two three four five six"}]}]
    f_eval = objective_values(tiny_model(), tok, held_out, None, JointConfig(**cfg))[0]
    old = train_joint(tiny_model(), tok, SFT, PREF, JointConfig(**cfg, f_star_sft=f_eval, f_star_dpo=f_dpo))
    assert abs(old.history[0]["gap_sft"]) > 1e-3


def test_measure_f_star_and_no_refresh():
    res = _run("dpo_sft", steps=4, measure_f_star=True)
    rows = {r["step"]: r for r in res.history}
    assert set(rows[2]) >= {"train_dpo"} and "train_sft" not in rows[2]  # end of the DPO stage
    assert not any("train_sft" in rows[k] or "train_dpo" in rows[k] for k in (1, 3, 4))  # first stage only
    assert res.cpu_seconds_per_step > 0
    res = _run("maxright", steps=4, maxright_refresh=0)  # official --max_eval_steps -1: initial values only
    assert [bool(r.get("refreshed")) for r in res.history] == [True, False, False, False]
    with pytest.raises(ValueError, match="maxright_refresh"):
        JointConfig(recipe="maxright", maxright_refresh=-1)
