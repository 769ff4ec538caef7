"""Language-model post-training with several objectives: SFT and DPO losses, joint SFT+DPO trainers
(ALRIGHT, MAXRIGHT, Mix, sequential baselines) on transformers/TRL/PEFT, offline data and models;
multi-objective alignment (K DPO-style losses, RPO, rewards, constructed and user preference data,
:func:`train_alignment` with any molearn method).

Needs the ``[llm]`` extra (``pip install molearn[llm]``); nothing here is imported by the core.
"""

# Lazy exports: importing molearn.llm does not import transformers/trl/peft.
_LAZY = {
    "JointConfig": "._joint",
    "JointResult": "._joint",
    "RECIPES": "._joint",
    "train_joint": "._joint",
    "objective_values": "._joint",
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
    "DONT_KNOW": "._data",
    "ALoraConfig": "._alora",
    "ALoRALinear": "._alora",
    "alora_param_count": "._alora",
    "load_alora": "._alora",
    "BalancedTrainer": "._balance",
    "AlignConfig": "._align",
    "AlignResult": "._align",
    "train_alignment": "._align",
    "multi_preference_losses": "._align",
    "rpo_loss": "._align",
    "tokenize_multi": "._align",
    "collate_multi": "._align",
    "evaluate_alignment": "._align",
    "multi_objective_preferences": "._align_data",
    "multi_objective_from_files": "._align_data",
    "load_preference_file": "._align_data",
    "check_preference_rows": "._align_data",
    "response_candidates": "._align_data",
    "conflict_counts": "._align_data",
    "correctness_reward": "._rewards",
    "conciseness_reward": "._rewards",
    "format_reward": "._rewards",
    "normalize_answer": "._rewards",
    "MiniLMSimilarity": "._rewards",
    "reward_functions": "._rewards",
    "minilm_path": "._rewards",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
