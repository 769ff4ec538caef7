"""Tiny random Llama + word-level tokenizer with a chat template, for fast LLM tests (no download)."""

from __future__ import annotations

WORDS = ["hello", "hi", "how", "are", "you", "fine", "thanks", "what", "is", "the", "capital",
         "of", "france", "paris", "tell", "me", "a", "joke", "no", "why", "sky", "blue", "because",
         "light", "scatters", "good", "bad", "maybe", "yes", "cat", "dog", "red", "green", "one",
         "two", "three", "four", "five", "six"]
TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)
SPECIAL = ["<pad>", "<unk>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>"]


def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIAL + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                   eos_token="<|end|>")
    fast.chat_template = TEMPLATE
    return fast


def tiny_model(seed: int = 0, vocab_size: int | None = None):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size or len(SPECIAL) + len(WORDS), hidden_size=32,
                      intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                      max_position_embeddings=128, pad_token_id=0, eos_token_id=2, bos_token_id=None)
    return LlamaForCausalLM(cfg)


SFT = [
    {"messages": [{"role": "user", "content": "hello how are you"},
                  {"role": "assistant", "content": "fine thanks"}]},
    {"messages": [{"role": "user", "content": "what is the capital of france"},
                  {"role": "assistant", "content": "paris"}]},
    {"messages": [{"role": "user", "content": "tell me a joke"},
                  {"role": "assistant", "content": "no"}]},
    {"messages": [{"role": "user", "content": "why is the sky blue"},
                  {"role": "assistant", "content": "because light scatters"}]},
]
PREF = [
    {"prompt": "hello how are you", "chosen": "fine thanks", "rejected": "red green"},
    {"prompt": "what is the capital of france", "chosen": "paris", "rejected": "one two three"},
    {"prompt": "tell me a joke", "chosen": "why", "rejected": "no"},
    {"prompt": "why is the sky blue", "chosen": "because light scatters", "rejected": "cat dog"},
]
