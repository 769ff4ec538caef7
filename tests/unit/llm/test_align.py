"""K DPO-style losses in one forward, RPO, and train_alignment end to end on a tiny LoRA Llama."""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("trl")

from molearn.llm import (
    AlignConfig,
    collate_multi,
    collate_preference,
    dpo_loss_from_batch,
    multi_preference_losses,
    rpo_loss,
    sequence_logps,
    tokenize_multi,
    train_alignment,
)
from molearn.methods import registry

from ._tiny import tiny_model, tiny_tokenizer

OBJ = ("helpful", "short", "polite")
PAIRS = {
    "helpful": [("what is the capital of france", "paris", "no"),
                ("why is the sky blue", "because light scatters", "maybe"),
                ("how are you", "fine thanks", "bad")],
    "short": [("what is the capital of france", "no", "the capital of france is paris"),
              ("why is the sky blue", "maybe", "because light scatters"),
              ("how are you", "fine", "fine thanks how are you")],
    "polite": [("what is the capital of france", "thanks paris", "paris"),
               ("why is the sky blue", "good because light scatters", "no"),
               ("how are you", "fine thanks", "bad")],
}
ROWS = [{"pairs": {o: dict(zip(("prompt", "chosen", "rejected"), PAIRS[o][i], strict=True)) for o in OBJ}}
        for i in range(3)]


def _lora(seed: int = 0):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
                     task_type="CAUSAL_LM")
    model = get_peft_model(tiny_model(), cfg)
    # move the adapters away from zero so that policy and reference differ
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return model


def test_k_losses_in_one_forward_match_separate_dpo() -> None:
    tok, model = tiny_tokenizer(), _lora()
    toks = tokenize_multi(ROWS, OBJ, tok, max_length=64)
    batch = collate_multi(toks, OBJ, tok.pad_token_id)
    assert batch["num_objectives"] == 3 and batch["input_ids"].shape[0] == 2 * 3 * len(ROWS)
    calls = []
    hook = model.get_base_model().model.register_forward_hook(lambda *a: calls.append(1))
    losses = multi_preference_losses(model, batch, beta=0.3)
    hook.remove()
    assert len(calls) == 2  # one policy forward, one reference forward for all K objectives
    assert losses.shape == (3,) and losses.requires_grad
    for k, o in enumerate(OBJ):
        one = collate_preference([t[o] for t in toks], tok.pad_token_id)
        torch.testing.assert_close(losses[k], dpo_loss_from_batch(model, one, beta=0.3), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(losses[0], losses[1])


def test_rpo_by_hand() -> None:
    pc, pr = torch.tensor([-3.0, -5.0]), torch.tensor([-4.0, -2.0])
    rc, rr = torch.tensor([-3.5, -5.0]), torch.tensor([-4.0, -2.5])
    lengths = torch.tensor([3.0, 5.0])
    beta = 0.5
    delta = torch.tensor([0.5, -0.5])
    dpo = -torch.nn.functional.logsigmoid(beta * delta)
    # official alignment-handbook form: losses -= policy_chosen_logps * beta * eta (eta 0.005 by default)
    want_sum = (dpo - 0.005 * beta * pc).mean()
    torch.testing.assert_close(rpo_loss(pc, pr, rc, rr, beta=beta), want_sum)
    # official OpenRLHF form: + eta * mean over sequences of the token-mean NLL (eta 0.2 by default)
    want_mean = dpo.mean() + 0.2 * (-(pc / lengths)).mean()
    torch.testing.assert_close(rpo_loss(pc, pr, rc, rr, beta=beta, normalization="mean",
                                        chosen_lengths=lengths), want_mean)
    torch.testing.assert_close(rpo_loss(pc, pr, rc, rr, beta=beta, eta=0.0), dpo.mean())
    with pytest.raises(ValueError, match="chosen_lengths"):
        rpo_loss(pc, pr, rc, rr, normalization="mean")
    with pytest.raises(ValueError, match="'sum' or 'mean'"):
        rpo_loss(pc, pr, rc, rr, normalization="token")


def test_multi_rpo_adds_the_sft_term_per_objective() -> None:
    tok, model = tiny_tokenizer(), _lora()
    batch = collate_multi(tokenize_multi(ROWS, OBJ, tok, 64), OBJ, tok.pad_token_id)
    dpo = multi_preference_losses(model, batch, beta=0.2)
    rpo = multi_preference_losses(model, batch, beta=0.2, loss="rpo", rpo_eta=0.1)
    chosen, _, _ = sequence_logps(model, batch)
    sft = (-0.2 * chosen.reshape(3, -1)).mean(dim=1)
    torch.testing.assert_close(rpo, dpo + 0.1 * sft, rtol=1e-5, atol=1e-6)


def test_tokenize_multi_errors() -> None:
    tok = tiny_tokenizer()
    with pytest.raises(ValueError, match="no pair for objective"):
        tokenize_multi(ROWS, ("helpful", "other"), tok, 64)
    with pytest.raises(ValueError, match="'pairs' mapping"):
        tokenize_multi([{"prompt": "a"}], OBJ, tok, 64)


def _run(method: str, **kw):
    cfg = AlignConfig(objectives=OBJ, method=method, max_steps=2, batch_size=2, max_length=64,
                      learning_rate=1e-2, **kw)
    return train_alignment(cfg, model=tiny_model(), tokenizer=tiny_tokenizer(), train_rows=ROWS,
                           eval_rows=ROWS[:2], keep_model=True)


@pytest.mark.parametrize("method", ["ew", "mgda", "cagrad", "famo", "dynamicrewardweighting", "upgrad"])
def test_train_alignment_each_method(method: str) -> None:
    (res,) = _run(method)
    assert res.steps == 2 and res.preference is None and res.objectives == OBJ
    logs = [h for h in res.log if "loss_0" in h]
    assert len(logs) == 2
    for h in logs:
        assert all(math.isfinite(h[f"loss_{k}"]) for k in range(3))
        assert all(f"weight_{k}" in h for k in range(3)) or method == "upgrad"
    assert set(res.eval_before) == set(res.eval_after) == set(OBJ)
    assert all(0.0 <= v["accuracy"] <= 1.0 for v in res.eval_after.values())
    # before training the LoRA policy equals the reference: every DPO loss is log 2
    assert all(v["loss"] == pytest.approx(math.log(2), abs=1e-6) for v in res.eval_before.values())
    lora_b = [p for n, p in res.model.named_parameters() if "lora_B" in n]
    assert any(float(p.detach().abs().sum()) > 0 for p in lora_b)  # the adapters moved
    assert res.to_dict()["method"] == method and "model" not in res.to_dict()


def test_linear_scalarisation_sweep_and_rpo() -> None:
    results = _run("linear", preferences=[[1.0, 0.0, 0.0], [0.2, 0.3, 0.5]], loss="rpo")
    assert [r.preference for r in results] == [[1.0, 0.0, 0.0], [0.2, 0.3, 0.5]]
    for r, w in zip(results, ([1.0, 0.0, 0.0], [0.2, 0.3, 0.5]), strict=True):
        h = next(h for h in r.log if "weight_0" in h)
        assert [h[f"weight_{k}"] for k in range(3)] == pytest.approx(w)
    # a sweep from molearn.pareto's grid; a bare count names that function
    from molearn.pareto import uniform_preferences

    grid = uniform_preferences(3, 10)
    vectors = AlignConfig(objectives=OBJ, method="linear", preferences=grid).preference_vectors()
    assert torch.equal(torch.stack(vectors), grid)
    with pytest.raises(TypeError, match=r"uniform_preferences\(3, 10\)"):
        AlignConfig(objectives=OBJ, method="linear", preferences=10)


def test_every_single_batch_method_builds_from_the_config() -> None:
    from molearn.llm._align import _method

    built = 0
    for name, cls in registry().items():
        if name == "fixed":  # needs its weights: method="linear" with preferences
            continue
        method = _method(AlignConfig(objectives=OBJ, method=name), None)
        assert type(method) is cls
        built += method.needs.batches == 1  # BalancedTrainer takes the single-batch ones
    assert built >= 35


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="distinct"):
        AlignConfig(objectives=("a", "a"))
    with pytest.raises(ValueError, match="'dpo' or 'rpo'"):
        AlignConfig(loss="ipo")
    with pytest.raises(ValueError, match="needs preferences"):
        AlignConfig(method="linear")
    with pytest.raises(ValueError, match="do not match"):
        AlignConfig(objectives=("a", "b"), data={"a": "x.jsonl"})
    with pytest.raises(ValueError, match="3 entries"):
        AlignConfig(objectives=OBJ, method="linear", preferences=[[1.0, 0.0]]).preference_vectors()
    with pytest.raises(ValueError, match="both model and tokenizer"):
        train_alignment(AlignConfig(), model=tiny_model())


def test_one_config_on_constructed_data_with_generation_rewards() -> None:
    pytest.importorskip("chatterbot_corpus")
    cfg = AlignConfig(method="mgda", n_train=6, n_eval=3, max_steps=1, batch_size=2, max_length=96,
                      generate_eval=2, max_new_tokens=3)
    (res,) = train_alignment(cfg, model=tiny_model(), tokenizer=tiny_tokenizer())
    assert res.steps == 1 and res.objectives == ("correctness", "conciseness", "format")
    for o in res.objectives:
        assert {"loss", "accuracy", "reward"} <= set(res.eval_after[o])
        assert 0.0 <= res.eval_after[o]["reward"] <= 1.0


def test_files_in_the_config(tmp_path) -> None:
    import json

    paths = {}
    for o in OBJ:
        paths[o] = tmp_path / f"{o}.jsonl"
        paths[o].write_text("\n".join(json.dumps(dict(zip(("prompt", "chosen", "rejected"), p, strict=True)))
                                      for p in PAIRS[o]))
    cfg = AlignConfig(objectives=OBJ, method="ew", data={o: str(p) for o, p in paths.items()},
                      eval_data={o: str(p) for o, p in paths.items()}, max_steps=1, batch_size=3,
                      max_length=64)
    (res,) = train_alignment(cfg, model=tiny_model(), tokenizer=tiny_tokenizer())
    assert res.steps == 1 and set(res.eval_after) == set(OBJ)
