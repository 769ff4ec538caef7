"""ALoRA -- asymmetric multi-LoRA with a token-level router, as a PEFT (0.21) LoRA custom module.

Paper: Ban & Ji, "ALoRA / Fed-ALoRA: asymmetric multi-LoRA for multi-task and federated fine-tuning",
arXiv 2509.25414 (2025); official code OptMN-Lab/ALoRA (``multi_task_fine_tuning/*/peft/.../tuners/lora.py``).

For a frozen linear layer ``W0`` (in → out) and a token ``x``::

    y = W0 x + s · Σ_{i=1..N} r_i(x) · B A_i dropout(x),        r(x) = softmax(R x),   s = α / r

* ``A_i``: Linear(in → r, no bias), ``N`` of them, kaiming-uniform (a = √5);
* ``B``: one *shared* Linear(r → out, no bias), initialised to zeros (so the model is unchanged at init);
* ``R``: the router, Linear(in → N, no bias), kaiming-uniform (a = √5), applied to the token
  *without* dropout;
* dropout is drawn independently for each branch, as in the official code.

Defaults (official ``run_*.sh`` scripts): ``N = lora_num = 3``, ``r = 8``, ``α = 16``, dropout 0.05.

PEFT integration: :class:`ALoraConfig` is a :class:`peft.LoraConfig` with one more field (``lora_num``) that
registers :class:`ALoRALinear` through PEFT's custom-module mechanism (``LoraConfig._register_custom_module``,
experimental in PEFT 0.21). ``get_peft_model(model, ALoraConfig(...))`` then replaces every targeted
``nn.Linear``; the adapter saves with ``PeftModel.save_pretrained`` like any LoRA adapter (its
config is stored
as ``peft_type = "LORA"`` plus ``lora_num``) and is loaded back with :func:`load_alora` (plain
``PeftModel.from_pretrained`` would rebuild an ordinary LoRA config and drop the ALoRA layers).
Merging into ``W0`` is impossible (the router depends on the input) and raises.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

import torch
from torch import nn

try:
    from peft import LoraConfig, PeftModel
    from peft.tuners.lora import LoraLayer
    from peft.tuners.tuners_utils import BaseTunerLayer
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("ALoRA needs PEFT: pip install 'molearn[llm]'") from exc

__all__ = ["ALoRALinear", "ALoraConfig", "alora_param_count", "load_alora"]


def alora_param_count(in_features: int, out_features: int, r: int, lora_num: int) -> int:
    """Trainable parameters ALoRA adds to one ``in → out`` linear layer: ``N·r·in + r·out + N·in``."""
    return lora_num * r * in_features + r * out_features + lora_num * in_features


class _MultiA(nn.Module):
    """The ``N`` down-projections ``A_i`` (in → r) stored as one ``weight`` of shape ``(N, r, in)``."""

    def __init__(self, n: int, in_features: int, r: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, r, in_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(..., N, in)`` (one, possibly dropped-out, copy per branch) → ``(..., N, r)``."""
        return torch.einsum("...ni,nri->...nr", x, self.weight)


class ALoRALinear(nn.Module, LoraLayer):
    """ALoRA adapter around a frozen ``nn.Linear`` (see the module docstring for the formula).

    Per adapter name: ``lora_A[name].weight`` stacks the ``N`` matrices ``A_i`` (shape ``(N, r, in)``),
    ``lora_B[name]`` is the shared Linear(r → out), ``lora_router[name]`` the Linear(in → N) router.
    """

    adapter_layer_names = ("lora_A", "lora_B", "lora_router")
    other_param_names = (*LoraLayer.other_param_names, "lora_num")

    def __init__(
        self,
        base_layer: nn.Module,
        adapter_name: str,
        config: LoraConfig,
        r: int,
        lora_alpha: int,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        base = base_layer.get_base_layer() if isinstance(base_layer, BaseTunerLayer) else base_layer
        if not isinstance(base, nn.Linear):
            raise TypeError(f"ALoRA adapts nn.Linear layers only; the target is {type(base).__name__}")
        LoraLayer.__init__(self, base_layer)
        self.lora_router = nn.ModuleDict({})
        self.lora_num: dict[str, int] = {}
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, r, lora_alpha=lora_alpha, config=config)

    def update_layer(
        self, adapter_name: str, r: int, lora_alpha: float, config: LoraConfig, **kwargs: Any
    ) -> None:
        n = int(getattr(config, "lora_num", 3))
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            raise ValueError(f"ALoRA rank r must be a positive integer, got {r!r}")
        if r > min(self.in_features, self.out_features):
            raise ValueError(
                f"ALoRA rank r={r} is larger than the layer ({self.in_features} → {self.out_features}); "
                f"use r <= {min(self.in_features, self.out_features)}"
            )
        if n < 1:
            raise ValueError(f"lora_num (number of A matrices) must be >= 1, got {n}")
        self.r[adapter_name] = r
        self.lora_alpha[adapter_name] = lora_alpha
        self.lora_num[adapter_name] = n
        self.scaling[adapter_name] = lora_alpha / r
        self.use_rslora[adapter_name] = False
        self.lora_bias[adapter_name] = False
        p = float(config.lora_dropout)
        self.lora_dropout[adapter_name] = nn.Dropout(p) if p > 0 else nn.Identity()
        self.lora_A[adapter_name] = _MultiA(n, self.in_features, r)
        self.lora_B[adapter_name] = nn.Linear(r, self.out_features, bias=False)
        self.lora_router[adapter_name] = nn.Linear(self.in_features, n, bias=False)
        self.reset_alora_parameters(adapter_name)
        weight = self.get_base_layer().weight
        self.to(weight.device, dtype=weight.dtype if weight.dtype.is_floating_point else None)
        self.set_adapter(self.active_adapters)

    def reset_alora_parameters(self, adapter_name: str) -> None:
        """A_i and R kaiming-uniform (a = √5), B zeros (official ``reset_parameters``)."""
        w = self.lora_A[adapter_name].weight
        with torch.no_grad():
            for i in range(w.shape[0]):  # per matrix: fan_in = in_features, as for nn.Linear(in, r)
                nn.init.kaiming_uniform_(w[i], a=math.sqrt(5))
        nn.init.kaiming_uniform_(self.lora_router[adapter_name].weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B[adapter_name].weight)

    def router_weights(self, x: torch.Tensor, adapter_name: str = "default") -> torch.Tensor:
        """Token-level routing weights ``softmax(R x)`` (shape ``x.shape[:-1] + (N,)``, rows sum to one)."""
        router = self.lora_router[adapter_name]
        return torch.softmax(router(x.to(router.weight.dtype)), dim=-1)

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        raise NotImplementedError(
            "an ALoRA adapter cannot be merged into W0: its router depends on the input"
        )

    def unmerge(self) -> None:
        return None

    def get_delta_weight(self, adapter: str) -> torch.Tensor:
        raise NotImplementedError("ALoRA has no input-independent delta weight (token-level router)")

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        result = self.base_layer(x, *args, **kwargs)
        if self.disable_adapters:
            return result
        out_dtype = result.dtype
        for name in self.active_adapters:
            if name not in self.lora_A:
                continue
            b = self.lora_B[name]
            xc = x.to(b.weight.dtype)
            gate = self.router_weights(xc, name)
            n = gate.shape[-1]
            # independent dropout mask per branch (official code calls dropout once per A_i)
            xs = self.lora_dropout[name](xc.unsqueeze(-2).expand(*xc.shape[:-1], n, xc.shape[-1]))
            mixed = (gate.unsqueeze(-1) * self.lora_A[name](xs)).sum(dim=-2)  # Σ_i r_i(x) A_i x
            result = result + (b(mixed) * self.scaling[name]).to(out_dtype)
        return result

    def __repr__(self) -> str:
        return "alora." + super().__repr__()


@dataclasses.dataclass
class ALoraConfig(LoraConfig):
    """``peft.LoraConfig`` for ALoRA: ``lora_num`` A matrices per layer, defaults r=8, α=16, dropout 0.05.

    Every targeted module must be an ``nn.Linear`` (TypeError otherwise); a target name that matches nothing
    raises PEFT's ValueError.
    """

    lora_num: int = dataclasses.field(default=3, metadata={"help": "number N of A matrices (ALoRA)"})
    lora_alpha: int = dataclasses.field(default=16, metadata={"help": "LoRA alpha; scaling s = alpha / r"})
    lora_dropout: float = dataclasses.field(default=0.05, metadata={"help": "dropout on the adapter input"})

    def __post_init__(self) -> None:
        if isinstance(self.lora_num, bool) or not isinstance(self.lora_num, int) or self.lora_num < 1:
            raise ValueError(
                f"lora_num (number of A matrices) must be an integer >= 1, got {self.lora_num!r}"
            )
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise ValueError(f"ALoRA rank r must be a positive integer, got {self.r!r}")
        if not 0.0 <= float(self.lora_dropout) < 1.0:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        super().__post_init__()
        # every target goes through ALoRALinear, which rejects non-Linear layers with a clear error
        self._register_custom_module({nn.Module: ALoRALinear})

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str, subfolder: str | None = None, **kwargs: Any
    ) -> ALoraConfig:
        """Read ``adapter_config.json`` written by ``save_pretrained`` of an ALoRA adapter (local folder)."""
        folder = os.path.join(pretrained_model_name_or_path, subfolder or "")
        path = os.path.join(folder, "adapter_config.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no adapter_config.json in {folder!r}")
        with open(path) as f:
            data = json.load(f)
        if "lora_num" not in data:
            raise ValueError(f"{path} is not an ALoRA adapter config (no 'lora_num' key)")
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        data = {k: v for k, v in data.items() if k in names}
        data.update(kwargs)
        return cls(**data)


def load_alora(
    model: nn.Module, path: str, *, adapter_name: str = "default", is_trainable: bool = False, **kwargs: Any
) -> PeftModel:
    """Load an ALoRA adapter saved with ``PeftModel.save_pretrained`` onto ``model`` (a fresh base model)."""
    config = ALoraConfig.from_pretrained(path)
    config.inference_mode = not is_trainable
    return PeftModel.from_pretrained(
        model, path, adapter_name=adapter_name, is_trainable=is_trainable, config=config, **kwargs
    )
