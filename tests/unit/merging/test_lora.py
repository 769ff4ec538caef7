"""molearn.merging's LoRA task vectors: s·B·A under the base model's names, checked against PEFT."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch import nn

from molearn.merging import load_lora_task_vector, lora_task_vector, merge


def _adapter(r: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"base_model.model.fc.lora_A.weight": torch.randn(r, 5, generator=g),
            "base_model.model.fc.lora_B.weight": torch.randn(3, r, generator=g)}


def test_scale_and_names() -> None:
    ad = _adapter(r=2)
    a, b = ad["base_model.model.fc.lora_A.weight"], ad["base_model.model.fc.lora_B.weight"]
    tv = lora_task_vector(ad, lora_alpha=8)
    assert list(tv) == ["fc.weight"]
    torch.testing.assert_close(tv["fc.weight"], 4.0 * b @ a)  # alpha / r = 8 / 2
    rs = lora_task_vector(ad, lora_alpha=8, use_rslora=True)
    torch.testing.assert_close(rs["fc.weight"], 8 / math.sqrt(2) * b @ a)
    tr = lora_task_vector(ad, lora_alpha=8, fan_in_fan_out=True)
    torch.testing.assert_close(tr["fc.weight"], (4.0 * b @ a).T)
    kept = lora_task_vector(ad, lora_alpha=8, prefix="")
    assert list(kept) == ["base_model.model.fc.weight"]


def test_merge_is_linear_in_the_dense_updates() -> None:
    """Merging the dense task vectors is the weighted sum of s B_i A_i (no cross terms B_i A_j)."""
    base = {"fc.weight": torch.randn(3, 5)}
    taus = [lora_task_vector(_adapter(seed=i), lora_alpha=2) for i in range(3)]
    c = [0.2, 0.5, 0.3]
    expect = base["fc.weight"] + sum(ci * t["fc.weight"] for ci, t in zip(c, taus))
    torch.testing.assert_close(merge(base, taus, c)["fc.weight"], expect)


@pytest.mark.parametrize(
    ("adapter", "match"),
    [
        ({"m.lora_A.weight": torch.ones(2, 4)}, "no lora_B"),
        ({"m.lora_A.weight": torch.ones(2, 4), "m.lora_B.weight": torch.ones(3, 5)}, "rank-r pair"),
        ({"m.lora_A.weight": torch.ones(2, 4), "m.lora_B.weight": torch.ones(3, 2),
          "head.weight": torch.ones(1)}, "not a LoRA factor"),
        ({"m.lora_A.weight": torch.full((2, 4), float("nan")), "m.lora_B.weight": torch.ones(3, 2)},
         "non-finite"),
    ],
)
def test_bad_adapters(adapter: dict[str, torch.Tensor], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        lora_task_vector(adapter, lora_alpha=1)


def test_bad_alpha() -> None:
    with pytest.raises(ValueError, match="lora_alpha"):
        lora_task_vector(_adapter(), lora_alpha=0)


def test_folder_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(FileNotFoundError, match=r"adapter_config\.json"):
        load_lora_task_vector(tmp_path)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "lora_alpha": 4}))
    with pytest.raises(FileNotFoundError, match="adapter_model"):
        load_lora_task_vector(tmp_path)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "lora_alpha": 4,
                                                              "use_dora": True}))
    with pytest.raises(ValueError, match="DoRA"):
        load_lora_task_vector(tmp_path)


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q = nn.Linear(6, 6)
        self.v = nn.Linear(6, 4)
        self.out = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.v(torch.tanh(self.q(x))))


@pytest.mark.parametrize("rslora", [False, True])
def test_against_peft_saved_adapters(tmp_path, rslora: bool) -> None:  # type: ignore[no-untyped-def]
    """A PEFT adapter saved with save_pretrained, loaded back as a task vector and merged at c = e_i into
    the base, gives PEFT's adapted model's outputs; c = (1/2, 1/2) halves both updates."""
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    net = _Net()
    base_sd = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(7, 6)
    folders, outputs = [], []
    for i in range(2):
        cfg = peft.LoraConfig(r=2 + i, lora_alpha=6, target_modules=["q", "v"], lora_dropout=0.0,
                              use_rslora=rslora)
        model = peft.get_peft_model(copy.deepcopy(net), cfg)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_" in name:
                    p.normal_(0, 0.3)
        folder = tmp_path / f"adapter{i}"
        model.save_pretrained(str(folder))
        folders.append(folder)
        with torch.no_grad():
            outputs.append(model(x))
    taus = [load_lora_task_vector(f) for f in folders]
    assert sorted(taus[0]) == ["q.weight", "v.weight"]
    base = {k: base_sd[k] for k in taus[0]}
    for i in range(2):
        net.load_state_dict(merge(base, taus, [float(i == 0), float(i == 1)]), strict=False)
        with torch.no_grad():
            torch.testing.assert_close(net(x), outputs[i], rtol=1e-5, atol=1e-5)
    half = merge(base, taus, [0.5, 0.5])
    for k in base:
        torch.testing.assert_close(half[k], base[k] + 0.5 * (taus[0][k] + taus[1][k]))
