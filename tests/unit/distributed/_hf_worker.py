"""What each process runs in the BalancedTrainer test under DDP (as ``torchrun`` would start it: the
environment variables set, ``transformers.Trainer`` initialises the gloo group and wraps the model in DDP).

A tiny random Llama (``tests/unit/llm/_tiny.py``), two language-model losses on token sequences from
disjoint halves of the vocabulary, 8 items, 2 items per process per step, 3 steps of SGD.
"""

from __future__ import annotations

import os
import traceback
from pathlib import Path
from typing import Any

import torch

from . import _worker

STEPS = 3
ITEMS = 8


class Pairs(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    def __init__(self, n: int = ITEMS, length: int = 6) -> None:
        g = torch.Generator().manual_seed(1)
        self.a = torch.randint(6, 25, (n, length), generator=g)
        self.b = torch.randint(25, 45, (n, length), generator=g)

    def __len__(self) -> int:
        return len(self.a)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"a": self.a[i], "b": self.b[i]}


def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([it[k] for it in items]) for k in ("a", "b")}


def two_losses(model: Any, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    return [
        model(input_ids=inputs["a"], labels=inputs["a"]).loss,
        model(input_ids=inputs["b"], labels=inputs["b"]).loss,
    ]


def train(method: str, out: Path, batch: int, launched: bool = False) -> dict[str, Any]:
    """``STEPS`` steps of BalancedTrainer (``batch`` items per process and step); ``launched``: the
    process group comes from the environment (gloo; only then: a backend makes accelerate expect a group).
    ``method`` is a name, or ``"name:unchecked"`` for ``check_finite=False`` (a loss-only method's write is
    then one backward through the DDP model, averaged by DDP's hooks)."""
    name, _, variant = method.partition(":")
    balancer_kwargs = {"check_finite": False} if variant == "unchecked" else {}
    ddp = {"ddp_backend": "gloo", "ddp_timeout": 60} if launched else {}
    from transformers import TrainingArguments

    from molearn.llm import BalancedTrainer

    from ..llm._tiny import tiny_model

    args = TrainingArguments(
        output_dir=str(out),
        max_steps=STEPS,
        per_device_train_batch_size=batch,
        learning_rate=0.1,
        optim="sgd",  # AdamW's first step turns float noise in near-zero gradients into ±lr
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        remove_unused_columns=False,
        lr_scheduler_type="constant",
        seed=0,
        dataloader_drop_last=True,
        **ddp,
    )
    trainer = BalancedTrainer(
        model=tiny_model(),
        args=args,
        train_dataset=Pairs(),
        data_collator=collate,
        method=name,
        balancer_kwargs=balancer_kwargs,
        loss_fn=two_losses,
    )
    trainer.train()
    bal = trainer.balancer
    return {
        "params": torch.cat([p.detach().flatten() for p in trainer.model.parameters()]),
        "state": trainer.method.state_dict(),
        "weights": [
            (row["weight_0"], row["weight_1"]) for row in trainer.state.log_history if "weight_0" in row
        ],
        "wrapped": type(trainer.model_wrapped).__name__,
        "distributed": bal is not None and bal.collective is not None,
    }


def run(rank: int, world: int, port: int, outdir: str, methods: list[str]) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    out = Path(outdir)
    results: dict[str, Any] = {}
    try:
        for method in methods:
            results[method] = train(method, out / method, batch=2, launched=True)
    except Exception:
        results["crash"] = traceback.format_exc()
    torch.save(results, out / f"rank{rank}.pt")
    _worker.shutdown()
