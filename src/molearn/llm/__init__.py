"""Language-model post-training with several objectives: SFT and DPO losses, joint SFT+DPO trainers
(ALRIGHT, MAXRIGHT, Mix, sequential baselines) on transformers/TRL/PEFT, offline data and models.

Needs the ``[llm]`` extra (``pip install molearn[llm]``); nothing here is imported by the core.
"""

# Lazy exports: importing molearn.llm does not import transformers/trl/peft.
_LAZY = {
    "JointConfig": "._joint",
    "JointResult": "._joint",
    "RECIPES": "._joint",
    "train_joint": "._joint",
    "sft_loss": "._losses",
    "dpo_loss": "._losses",
    "sequence_logps": "._losses",
    "tokenize_sft": "._losses",
    "tokenize_preference": "._losses",
    "tokenize_all": "._losses",
    "collate_sft": "._losses",
    "collate_preference": "._losses",
    "dpo_loss_from_batch": "._losses",
    "load_model": "._data",
    "smollm2_path": "._data",
    "load_chatterbot_conversations": "._data",
    "sft_dataset": "._data",
    "preference_dataset": "._data",
    "split_by_question": "._data",
    "validate_preference_rows": "._data",
    "validate_sft_rows": "._data",
    "SkipReport": "._data",
    "ALoraConfig": "._alora",
    "ALoRALinear": "._alora",
    "alora_param_count": "._alora",
    "load_alora": "._alora",
    "BalancedTrainer": "._balance",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
