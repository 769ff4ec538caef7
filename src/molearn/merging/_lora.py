r"""LoRA adapters as task vectors.

A LoRA adapter (Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022,
`arXiv:2106.09685 <https://arxiv.org/abs/2106.09685>`_) fine-tunes a weight :math:`W_0` to
:math:`W_0 + s\,BA` with :math:`A \in \mathbb{R}^{r \times n}`, :math:`B \in \mathbb{R}^{m \times r}` and
the scale :math:`s = \alpha / r` (:math:`\alpha / \sqrt{r}` with rsLoRA). Its task vector is therefore the
dense :math:`\Delta W = s\,BA` of each adapted weight, not the pair :math:`(A, B)`: a linear combination
of the factors, :math:`(\sum_i c_i B_i)(\sum_i c_i A_i)`, has cross terms :math:`c_i c_j B_i A_j` that
belong to no adapter. :func:`lora_task_vector` turns an adapter state dict into that dense task vector,
keyed by the base model's own weight names, so K adapters of one base are merged with
:func:`molearn.merging.merge` (or searched with :func:`molearn.merging.map_front`) like any K fine-tunes:

.. code-block:: python

    taus = [load_lora_task_vector(folder) for folder in adapter_folders]
    base = {name: model.state_dict()[name] for name in taus[0]}
    merged = merge(base, taus, [0.5, 0.5])      # the adapted weights, the base's names
    model.load_state_dict(merged, strict=False)  # the other weights stay the base's

The key layout is PEFT's (``<prefix><module>.lora_A.weight`` and ``.lora_B.weight``, as
``get_peft_model_state_dict`` returns and ``save_pretrained`` writes); ``fan_in_fan_out`` adapters
(GPT-2's ``Conv1D``) give :math:`(BA)^\top`. DoRA and per-module ``alpha_pattern`` are not supported (a
``ValueError`` says so); a ``rank_pattern`` needs nothing, as :math:`r` is read from the shapes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ._vectors import StateDict, _check_state_dict

__all__ = ["load_lora_task_vector", "lora_task_vector"]

_A, _B = ".lora_A.weight", ".lora_B.weight"


def lora_task_vector(
    adapter: Mapping[str, Tensor],
    *,
    lora_alpha: float,
    use_rslora: bool = False,
    fan_in_fan_out: bool = False,
    prefix: str = "base_model.model.",
    dtype: torch.dtype | None = None,
) -> StateDict:
    r"""The dense task vector :math:`s\,B A` of every adapted weight of a LoRA adapter state dict.

    Args:
        adapter: the adapter's state dict, PEFT layout (``{module}.lora_A.weight`` and
            ``{module}.lora_B.weight``; other entries, e.g. a trained ``modules_to_save`` head, raise, since
            they are not low-rank).
        lora_alpha: :math:`\alpha` of the adapter's config; :math:`s = \alpha / r` (``use_rslora``:
            :math:`\alpha / \sqrt{r}`), :math:`r` read from each pair's shapes.
        fan_in_fan_out: the adapted layers store :math:`W^\top` (``Conv1D``): return :math:`(s BA)^\top`.
        prefix: stripped from the module names (PEFT's ``"base_model.model."``), so that the keys are the base
            model's (``"model.layers.0.self_attn.q_proj.weight"``).
        dtype: the task vector's dtype (default: the adapter's).

    Returns:
        ``{"<module>.weight": s B A}``, one entry per adapted weight.

    Raises:
        ValueError: an entry that is not a LoRA factor, a factor without its partner, mismatched ranks, or a
            non-finite entry (the message names the module).
    """
    adapter = _check_state_dict(adapter, "adapter")
    if not (isinstance(lora_alpha, (int, float)) and math.isfinite(lora_alpha) and lora_alpha > 0):
        raise ValueError(f"lora_alpha must be a positive number, got {lora_alpha!r}")
    modules: dict[str, dict[str, Tensor]] = {}
    for key, value in adapter.items():
        for suffix, part in ((_A, "A"), (_B, "B")):
            if key.endswith(suffix):
                modules.setdefault(key[: -len(suffix)], {})[part] = value
                break
        else:
            raise ValueError(f"adapter entry {key!r} is not a LoRA factor (*{_A} or *{_B}); adapters with "
                             "modules_to_save, DoRA magnitudes or biases are not task vectors of this kind")
    out: StateDict = {}
    for module, parts in modules.items():
        if set(parts) != {"A", "B"}:
            missing = ({"A", "B"} - set(parts)).pop()
            raise ValueError(f"adapter module {module!r} has no lora_{missing} factor")
        a, b = parts["A"].detach(), parts["B"].detach()
        if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1]:
            raise ValueError(f"adapter module {module!r}: lora_A {tuple(a.shape)} and lora_B "
                             f"{tuple(b.shape)} are not a rank-r pair (A: r x in, B: out x r)")
        if not (bool(torch.isfinite(a).all()) and bool(torch.isfinite(b).all())):
            raise ValueError(f"adapter module {module!r} has a non-finite entry")
        r = a.shape[0]
        scale = lora_alpha / (math.sqrt(r) if use_rslora else r)
        work = torch.promote_types(a.dtype, torch.float32)
        delta = (b.to(work) @ a.to(work)) * scale
        if fan_in_fan_out:
            delta = delta.T.contiguous()
        name = module[len(prefix):] if prefix and module.startswith(prefix) else module
        out[name + ".weight"] = delta.to(dtype or a.dtype)
    return out


def load_lora_task_vector(folder: str | Path, *, prefix: str = "base_model.model.",
                          dtype: torch.dtype | None = None) -> StateDict:
    """:func:`lora_task_vector` of an adapter saved by PEFT's ``save_pretrained``: ``adapter_config.json``
    (``lora_alpha``, ``use_rslora``, ``fan_in_fan_out``) and ``adapter_model.safetensors`` (or
    ``adapter_model.bin``, read with ``torch.load(weights_only=True)``). ``FileNotFoundError`` names the
    missing file; ``ValueError`` an unsupported config (DoRA, ``alpha_pattern``, a non-LoRA adapter)."""
    folder = Path(folder)
    config_path = folder / "adapter_config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"no adapter_config.json in {folder}")
    config: dict[str, Any] = json.loads(config_path.read_text())
    if config.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"{config_path}: peft_type {config.get('peft_type')!r} is not LORA")
    if config.get("use_dora"):
        raise ValueError(f"{config_path}: DoRA adapters are not supported (their update is not s B A)")
    if config.get("alpha_pattern"):
        raise ValueError(f"{config_path}: a per-module alpha_pattern is not supported")
    if "lora_alpha" not in config:
        raise ValueError(f"{config_path} has no lora_alpha")
    safetensors, binary = folder / "adapter_model.safetensors", folder / "adapter_model.bin"
    if safetensors.is_file():
        try:
            from safetensors.torch import load_file
        except ImportError as exc:  # pragma: no cover - safetensors comes with transformers
            raise ImportError("reading .safetensors adapters needs safetensors: "
                              "pip install safetensors") from exc
        weights = load_file(str(safetensors))
    elif binary.is_file():
        weights = torch.load(binary, map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(f"no adapter_model.safetensors or adapter_model.bin in {folder}")
    return lora_task_vector(weights, lora_alpha=float(config["lora_alpha"]),
                            use_rslora=bool(config.get("use_rslora", False)),
                            fan_in_fan_out=bool(config.get("fan_in_fan_out", False)), prefix=prefix,
                            dtype=dtype)
