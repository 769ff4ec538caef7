"""SFT and DPO losses against TRL 1.16's own trainers on the same batch (tiny random Llama)."""

from __future__ import annotations

import copy
import math

import pytest

pytest.importorskip("trl")
pytest.importorskip("peft")

import torch

from molearn.llm._losses import (
    collate_preference,
    collate_sft,
    dpo_loss,
    dpo_loss_from_batch,
    sft_loss,
    tokenize_all,
    tokenize_preference,
    tokenize_sft,
)

from ._tiny import PREF, SFT, tiny_model, tiny_tokenizer


def _args(cls, tmp_path, **kw):
    return cls(output_dir=str(tmp_path), use_cpu=True, report_to=[], per_device_train_batch_size=4,
               dataset_num_proc=None, **kw)


def test_sft_loss_matches_trl(tmp_path):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    tok, model = tiny_tokenizer(), tiny_model()
    rows = [{"prompt": r["messages"][:1], "completion": r["messages"][1:]} for r in SFT]
    trainer = SFTTrainer(model=model, args=_args(SFTConfig, tmp_path, max_length=64),
                         train_dataset=Dataset.from_list(rows), processing_class=tok)
    ds = trainer.train_dataset
    trl_batch = trainer.data_collator([{k: ds[i][k] for k in ("input_ids", "labels")} for i in range(4)])
    with torch.no_grad():
        ref = trainer.compute_loss(trainer.model, dict(trl_batch)).item()

    ours = [tokenize_sft(r, tok, 64) for r in SFT]
    assert [o["input_ids"] for o in ours] == [ds[i]["input_ids"] for i in range(4)]
    assert [o["labels"] for o in ours] == [ds[i]["labels"] for i in range(4)]
    with torch.no_grad():
        mine = sft_loss(model, collate_sft(ours, tok.pad_token_id)).item()
    assert mine == pytest.approx(ref, abs=1e-5)
    assert mine > 1.0  # a random model: loss near log(vocab)


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
@pytest.mark.parametrize("use_lora", [False, True])
def test_dpo_loss_matches_trl(tmp_path, loss_type, use_lora):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    tok = tiny_tokenizer()
    policy, ref_model = tiny_model(seed=1), tiny_model(seed=2)
    if use_lora:
        from peft import LoraConfig, get_peft_model

        policy = get_peft_model(ref_model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
        trl_ref, my_ref = None, None
    else:
        trl_ref, my_ref = copy.deepcopy(ref_model), ref_model
    rows = [{"prompt": [{"role": "user", "content": r["prompt"]}],
             "chosen": [{"role": "assistant", "content": r["chosen"]}],
             "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in PREF]
    cfg = _args(DPOConfig, tmp_path, beta=0.3, loss_type=[loss_type], max_length=64)
    trainer = DPOTrainer(model=policy, ref_model=trl_ref, args=cfg, train_dataset=Dataset.from_list(rows),
                         processing_class=tok)
    if use_lora:
        # TRL copies an existing adapter as its "ref" adapter (here zero, i.e. the base model), so perturb the
        # trained adapter only now: TRL's reference = base = ours (adapters disabled).
        with torch.no_grad():
            g = torch.Generator().manual_seed(0)
            for n, p in policy.named_parameters():
                if "lora_B.default" in n:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    ds = trainer.train_dataset
    keys = ("prompt_ids", "chosen_ids", "rejected_ids")
    trl_batch = trainer.data_collator([{k: ds[i][k] for k in keys} for i in range(4)])
    with torch.no_grad():
        ref = trainer.compute_loss(trainer.model, dict(trl_batch)).item()

    if not use_lora:  # TRL's ref model: its patched forward is what TRL scores with (see the report)
        my_ref = trainer.ref_model
    ours = [tokenize_preference(r, tok, 64) for r in PREF]  # plain strings, wrapped as a chat
    assert [[o[k] for k in keys] for o in ours] == [[ds[i][k] for k in keys] for i in range(4)]
    with torch.no_grad():
        mine = dpo_loss_from_batch(policy, collate_preference(ours, tok.pad_token_id, 64), ref_model=my_ref,
                                   beta=0.3, loss_type=loss_type).item()
    assert mine == pytest.approx(ref, abs=1e-5)
    if loss_type == "sigmoid":
        assert abs(mine - math.log(2)) > 1e-4  # policy differs from the reference


def test_dpo_label_smoothing_formula():
    pc, pr = torch.tensor([-3.0, -5.0]), torch.tensor([-4.0, -2.0])
    rc, rr = torch.tensor([-3.5, -4.0]), torch.tensor([-3.0, -3.0])
    eps, beta = 0.2, 0.5
    d = (pc - rc) - (pr - rr)
    want = (-(1 - eps) * torch.nn.functional.logsigmoid(beta * d)
            - eps * torch.nn.functional.logsigmoid(-beta * d)).mean()
    got = dpo_loss(pc, pr, rc, rr, beta=beta, label_smoothing=eps)
    assert got.item() == pytest.approx(want.item(), abs=1e-7)
    assert dpo_loss(pc, pr, rc, rr, beta=beta).item() != pytest.approx(got.item(), abs=1e-3)


def test_bad_records():
    tok = tiny_tokenizer()
    with pytest.raises(ValueError, match="missing field"):
        tokenize_preference({"prompt": "hi", "chosen": "yes"}, tok, 64)
    with pytest.raises(ValueError, match="empty 'rejected'"):
        tokenize_preference({"prompt": "hi", "chosen": "yes", "rejected": "  "}, tok, 64)
    with pytest.raises(ValueError, match="empty response"):
        tokenize_sft({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]},
                     tok, 64)
    with pytest.raises(ValueError, match="last message"):
        tokenize_sft({"messages": [{"role": "user", "content": "hi"}]}, tok, 64)
    long = {"prompt": " ".join(["hello"] * 40), "chosen": "yes", "rejected": "no"}
    kept, skipped = tokenize_all([long, *PREF], tok, 16, "preference")
    assert skipped.reasons == {"prompt_too_long": 1} and len(kept) == 4
    with pytest.raises(ValueError, match="no usable record"):
        tokenize_all([long], tok, 16, "preference")
