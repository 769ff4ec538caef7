"""ALoRA as a PEFT custom LoRA module on a tiny random LlamaForCausalLM."""

import pytest

pytest.importorskip("peft")
pytest.importorskip("transformers")

import torch
from peft import get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from molearn.llm._alora import ALoraConfig, ALoRALinear, alora_param_count, load_alora

CFG = dict(
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=97,
)


def _model(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**CFG)).eval()


def _ids():
    return torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(3))


def _randomise_b(pm, everything: bool = False):
    for m in pm.modules():
        if isinstance(m, ALoRALinear):
            torch.nn.init.normal_(m.lora_B["default"].weight, std=0.5)
            if everything:  # A and router too, so a round trip cannot pass by a coincident re-initialisation
                torch.nn.init.normal_(m.lora_A["default"].weight, std=0.3)
                torch.nn.init.normal_(m.lora_router["default"].weight, std=0.3)


def test_output_equals_frozen_model_at_init_and_only_adapter_trains():
    base = _model()
    ids = _ids()
    with torch.no_grad():
        ref = base(ids).logits
    pm = get_peft_model(base, ALoraConfig(r=4, lora_num=3, target_modules=["q_proj", "v_proj", "down_proj"]))
    pm.eval()
    with torch.no_grad():
        torch.testing.assert_close(pm(ids).logits, ref, rtol=0, atol=0)
    trainable = {n for n, p in pm.named_parameters() if p.requires_grad}
    assert trainable and all(("lora_A" in n or "lora_B" in n or "lora_router" in n) for n in trainable)
    # the adapter changes the output once B != 0
    _randomise_b(pm)
    with torch.no_grad():
        assert (pm(ids).logits - ref).abs().max() > 1e-3


def test_layer_matches_formula_and_router_sums_to_one():
    pm = get_peft_model(_model(), ALoraConfig(r=4, lora_num=3, lora_alpha=12, target_modules=["q_proj"]))
    pm.eval()
    layer = pm.base_model.model.model.layers[0].self_attn.q_proj
    assert isinstance(layer, ALoRALinear)
    _randomise_b(pm)
    x = torch.randn(2, 5, 32)
    g = layer.router_weights(x)
    assert g.shape == (2, 5, 3)
    torch.testing.assert_close(g.sum(-1), torch.ones(2, 5))
    assert (g > 0).all()
    A = layer.lora_A["default"].weight  # (N, r, in)
    B = layer.lora_B["default"].weight
    R = layer.lora_router["default"].weight
    gate = torch.softmax(x @ R.T, -1)
    ref = layer.base_layer(x) + (12 / 4) * sum(gate[..., i : i + 1] * (x @ A[i].T @ B.T) for i in range(3))
    with torch.no_grad():
        torch.testing.assert_close(layer(x), ref)
    assert layer.scaling["default"] == 3.0


def test_parameter_count_formula():
    pm = get_peft_model(_model(), ALoraConfig(r=4, lora_num=3, target_modules=["q_proj", "down_proj"]))
    n = sum(p.numel() for p in pm.parameters() if p.requires_grad)
    per_layer = alora_param_count(32, 32, 4, 3) + alora_param_count(48, 32, 4, 3)
    assert n == 2 * per_layer == 2 * ((3 * 4 * 32 + 4 * 32 + 3 * 32) + (3 * 4 * 48 + 4 * 32 + 3 * 48))


def test_save_load_round_trip(tmp_path):
    pm = get_peft_model(_model(), ALoraConfig(r=4, lora_num=2, target_modules=["q_proj", "v_proj"]))
    _randomise_b(pm, everything=True)
    pm.eval()
    ids = _ids()
    with torch.no_grad():
        y = pm(ids).logits
    pm.save_pretrained(tmp_path)
    loaded = load_alora(_model(), str(tmp_path))  # same base weights (seed 0), fresh adapter init replaced
    loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, y, rtol=0, atol=0)
    layer = loaded.base_model.model.model.layers[1].self_attn.v_proj
    assert isinstance(layer, ALoRALinear) and layer.lora_num["default"] == 2


def test_bad_input():
    with pytest.raises(ValueError, match="lora_num"):
        ALoraConfig(lora_num=0, target_modules=["q_proj"])
    with pytest.raises(ValueError, match="larger than the layer"):
        get_peft_model(_model(), ALoraConfig(r=64, target_modules=["q_proj"]))
    with pytest.raises(ValueError, match="not found"):
        get_peft_model(_model(), ALoraConfig(r=4, target_modules=["no_such_proj"]))
    with pytest.raises(TypeError, match=r"nn\.Linear"):
        get_peft_model(_model(), ALoraConfig(r=4, target_modules=["embed_tokens"]))
    pm = get_peft_model(_model(), ALoraConfig(r=4, target_modules=["q_proj"]))
    with pytest.raises(NotImplementedError, match="router"):
        pm.merge_and_unload()
