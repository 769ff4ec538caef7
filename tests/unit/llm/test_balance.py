"""BalancedTrainer: molearn methods on two LM losses of a tiny LoRA Llama through transformers.Trainer."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")

from molearn import NonFiniteLossError
from molearn.llm import BalancedTrainer
from molearn.methods import FAMO, MGDA, Inputs, MoDo

from ._tiny import tiny_model


def _lora_model():
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
                     task_type="CAUSAL_LM")
    return get_peft_model(tiny_model(), cfg)


class _Pairs(torch.utils.data.Dataset):
    """Items with two token sequences: task 0 (``a``) and task 1 (``b``), from disjoint vocabulary halves."""

    def __init__(self, n: int = 8, length: int = 8) -> None:
        g = torch.Generator().manual_seed(1)
        self.a = torch.randint(6, 25, (n, length), generator=g)
        self.b = torch.randint(25, 45, (n, length), generator=g)

    def __len__(self) -> int:
        return len(self.a)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"a": self.a[i], "b": self.b[i]}


def _collate(items):
    return {k: torch.stack([it[k] for it in items]) for k in ("a", "b")}


def two_losses(model, inputs):
    return [model(input_ids=inputs["a"], labels=inputs["a"]).loss,
            model(input_ids=inputs["b"], labels=inputs["b"]).loss]


def _args(tmp_path, **kw):
    from transformers import TrainingArguments

    base = dict(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=2, learning_rate=1e-2,
                logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True,
                remove_unused_columns=False, lr_scheduler_type="constant", seed=0)
    base.update(kw)
    return TrainingArguments(**base)


def _train_logs(trainer):
    return [row for row in trainer.state.log_history if "weight_0" in row]


def test_mgda_weights_match_independent_gramian_and_only_lora_moves(tmp_path):
    from transformers import TrainerCallback

    model = _lora_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    lora = [n for n, p in model.named_parameters() if p.requires_grad]
    assert lora and all("lora_" in n for n in lora)
    snapshots, batches = [], []

    class Snap(TrainerCallback):
        def on_step_begin(self, args, state, control, model=None, **kw):
            snapshots.append({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})

    def loss_fn(m, inputs):
        batches.append({k: v.clone() for k, v in inputs.items()})
        return two_losses(m, inputs)

    trainer = BalancedTrainer(model=model, args=_args(tmp_path), train_dataset=_Pairs(),
                              data_collator=_collate, method="mgda", loss_fn=loss_fn, callbacks=[Snap()])
    trainer.train()
    logs = _train_logs(trainer)
    assert len(logs) == 2 and len(snapshots) == 2 and len(batches) == 2

    params = dict(model.named_parameters())
    after = {n: p.detach().clone() for n, p in params.items()}
    for step, row in enumerate(logs):
        w = torch.tensor([row["weight_0"], row["weight_1"]])
        assert (w >= -1e-6).all() and abs(float(w.sum()) - 1) < 1e-5  # on the simplex
        # the same step recomputed here: per-loss LoRA gradients → Gramian → MGDA
        with torch.no_grad():
            for n, v in snapshots[step].items():
                params[n].copy_(v)
        losses = two_losses(model, batches[step])
        trainable = [params[n] for n in lora]
        rows = [torch.cat([g.flatten() for g in torch.autograd.grad(loss, trainable)]) for loss in losses]
        jac = torch.stack(rows).double()
        ref = MGDA().combine(Inputs(losses=torch.stack(losses).detach(), gramian=jac @ jac.T)).weights
        torch.testing.assert_close(w, ref.float(), atol=2e-4, rtol=0)
        assert row["loss_0"] == pytest.approx(float(losses[0].detach()), abs=1e-5)
        weighted = float(w[0] * losses[0].detach() + w[1] * losses[1].detach())
        assert row["loss"] == pytest.approx(weighted, rel=1e-3, abs=1e-4)
        assert -1.0 <= row["cos_0_1"] <= 1.0

    for n, p in after.items():
        if n in lora:
            assert not torch.equal(p, before[n]), f"LoRA parameter {n} did not change"
        else:
            assert torch.equal(p, before[n]), f"frozen parameter {n} changed"
            assert params[n].grad is None


def test_famo_runs_and_gets_post_step_update(tmp_path):
    model = _lora_model()
    famo = FAMO()
    trainer = BalancedTrainer(model=model, args=_args(tmp_path, max_steps=3), train_dataset=_Pairs(),
                              data_collator=_collate, method=famo, loss_fn=two_losses)
    trainer.train()
    logs = _train_logs(trainer)
    assert len(logs) == 3
    for row in logs:
        w = torch.tensor([row["weight_0"], row["weight_1"]])
        assert (w > 0).all() and abs(float(w.sum()) - 1) < 1e-5
    assert int(famo.state_dict()["t"]) == 3  # one post-step update per optimizer step
    assert logs[-1]["weight_0"] != logs[0]["weight_0"]  # the learned logits moved the weights


def test_bad_configurations_raise(tmp_path):
    data = {"train_dataset": _Pairs(), "data_collator": _collate, "loss_fn": two_losses}
    with pytest.raises(ValueError, match="gradient_accumulation_steps=2"):
        BalancedTrainer(model=_lora_model(), args=_args(tmp_path, gradient_accumulation_steps=2),
                        method="mgda", **data)
    with pytest.raises(TypeError, match="independent batches"):
        BalancedTrainer(model=_lora_model(), args=_args(tmp_path), method=MoDo(), **data)
    args = _args(tmp_path)
    args.fp16 = True
    with pytest.raises(ValueError, match="fp16"):
        BalancedTrainer(model=_lora_model(), args=args, method="mgda", **data)
    with pytest.raises(TypeError, match="method_kwargs"):
        BalancedTrainer(model=_lora_model(), args=_args(tmp_path), method=MGDA(),
                        method_kwargs={"scale": 2.0}, **data)


def test_gradient_accumulation_with_loss_only_method(tmp_path):
    model = _lora_model()
    trainer = BalancedTrainer(model=model, args=_args(tmp_path, gradient_accumulation_steps=2, max_steps=1),
                              train_dataset=_Pairs(), data_collator=_collate, method="ew", loss_fn=two_losses)
    trainer.train()
    (row,) = _train_logs(trainer)
    assert row["weight_0"] == 1.0 and row["weight_1"] == 1.0
    # the logged loss is the mean over the two micro-batches of L_0 + L_1; the per-loss logs are means too
    assert row["loss"] == pytest.approx(row["loss_0"] + row["loss_1"], rel=1e-4)


def test_nan_loss_raises_naming_the_objective(tmp_path):
    def bad(model, inputs):
        a, b = two_losses(model, inputs)
        return [a, b * float("nan")]

    trainer = BalancedTrainer(model=_lora_model(), args=_args(tmp_path), train_dataset=_Pairs(),
                              data_collator=_collate, method="mgda", loss_fn=bad)
    with pytest.raises(NonFiniteLossError, match=r"objective\(s\) \[1\]"):
        trainer.train()
