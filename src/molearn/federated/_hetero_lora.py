"""Fed-ALoRA client adapter for heterogeneous ranks (pure torch).

Paper: Ban & Ji, arXiv 2509.25414 (2025); official code OptMN-Lab/ALoRA
``federated_fine_tuning/heterogeneous``
(``peft/tuners/lora/layer.py``). For a frozen ``W0`` (in → out), client ``k`` with rank ``r_k``::

    y = W0 x + s · (B_base + B2 B1) M A dropout(x),      s = α / r_k

* ``A``: r×in, ``M``: r_int×r, ``B1``: r×r_int -- kaiming-uniform (a = √5); ``B2``: out×r -- zeros;
* ``B_base``: out×r_int, a frozen *buffer* shared by all clients (zeros at round 0);
* the server replaces ``B_base`` by ``B_base + Σ_k w_k B2_k B1_k``
  (:func:`molearn.federated.aggregate_heterogeneous`), so clients of any rank share one out×r_int matrix.

Defaults from the official ``heterogeneous/main.py``: ``r_int = 16``, ``α = 2 r``, dropout 0.05.
In the official
loop each client is rebuilt every round (fresh ``A, M, B1`` and ``B2 = 0``) and only ``B_base`` carries over;
:meth:`HeteroLoRALinear.reset_local` does that re-initialisation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

__all__ = ["HeteroLoRALinear", "hetero_lora_upload", "inject_hetero_lora", "load_hetero_base"]


class HeteroLoRALinear(nn.Module):
    """``W0 x + s (B_base + B2 B1) M A dropout(x)`` around a frozen ``nn.Linear`` (see the module
    docstring)."""

    def __init__(
        self, base: nn.Linear, r: int, r_int: int = 16, alpha: float | None = None, dropout: float = 0.05
    ) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"HeteroLoRALinear wraps an nn.Linear, got {type(base).__name__}")
        for name, v in (("r", r), ("r_int", r_int)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        n_in, n_out = base.in_features, base.out_features
        if r > min(n_in, n_out):
            raise ValueError(
                f"rank r={r} is larger than the layer ({n_in} → {n_out}); use r <= {min(n_in, n_out)}"
            )
        if r_int > n_out:
            raise ValueError(f"inner size r_int={r_int} is larger than the layer's output size {n_out}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.r, self.r_int = r, r_int
        self.alpha = float(2 * r if alpha is None else alpha)
        self.scaling = self.alpha / r
        kw = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(r, n_in, **kw))
        self.lora_M = nn.Parameter(torch.empty(r_int, r, **kw))
        self.lora_B1 = nn.Parameter(torch.empty(r, r_int, **kw))
        self.lora_B2 = nn.Parameter(torch.empty(n_out, r, **kw))
        self.register_buffer("lora_B_base", torch.zeros(n_out, r_int, **kw))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.reset_local()

    def reset_local(self) -> None:
        """Re-initialise the client factors: ``A, M, B1`` kaiming-uniform (a = √5), ``B2 = 0``;
        keeps ``B_base``."""
        for p in (self.lora_A, self.lora_M, self.lora_B1):
            nn.init.kaiming_uniform_(p, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B2)

    def shared_b(self) -> Tensor:
        """The effective shared matrix ``B_base + B2 B1`` (out × r_int)."""
        return self.lora_B_base + self.lora_B2 @ self.lora_B1

    def delta_weight(self) -> Tensor:
        """``s (B_base + B2 B1) M A`` (out × in)."""
        return self.scaling * (self.shared_b() @ self.lora_M @ self.lora_A)

    def forward(self, x: Tensor) -> Tensor:
        h = self.dropout(x) @ self.lora_A.T @ self.lora_M.T  # (..., r_int)
        return self.base(x) + self.scaling * (h @ self.shared_b().T)

    def extra_repr(self) -> str:
        return f"r={self.r}, r_int={self.r_int}, alpha={self.alpha:g}"


def inject_hetero_lora(
    model: nn.Module,
    target_modules: Sequence[str],
    r: int,
    r_int: int = 16,
    alpha: float | None = None,
    dropout: float = 0.05,
) -> list[str]:
    """Replace every ``nn.Linear`` whose name ends with one of ``target_modules`` by a
    :class:`HeteroLoRALinear`.

    Freezes all other parameters of ``model``. Returns the replaced module names; raises ValueError
    if none match.
    """
    if isinstance(target_modules, str) or not target_modules:
        raise ValueError("target_modules must be a non-empty list of module-name suffixes, e.g. ['q_proj']")
    hits = [
        (name, mod)
        for name, mod in model.named_modules()
        if isinstance(mod, nn.Linear) and any(name == t or name.endswith("." + t) for t in target_modules)
    ]
    if not hits:
        raise ValueError(
            f"target modules {list(target_modules)} not found among the model's nn.Linear layers"
        )
    for p in model.parameters():
        p.requires_grad_(False)
    for name, mod in hits:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, HeteroLoRALinear(mod, r, r_int=r_int, alpha=alpha, dropout=dropout))
    return [n for n, _ in hits]


def hetero_lora_upload(model: nn.Module) -> dict[str, Tensor]:
    """What a client sends up: its ``lora_B1`` and ``lora_B2`` tensors (detached copies)."""
    out = {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_B1" in k or "lora_B2" in k}
    if not out:
        raise ValueError("model has no HeteroLoRALinear layer (no lora_B1/lora_B2 entries)")
    return out


def load_hetero_base(model: nn.Module, base: Mapping[str, Tensor], *, reset_local: bool = True) -> None:
    """Install the server's ``B_base`` entries into ``model`` (shapes checked) and, by default,
    re-initialise the
    client factors (the official round structure)."""
    buffers = dict(model.named_buffers())
    for k, v in base.items():
        if k not in buffers:
            raise ValueError(f"model has no buffer {k!r}")
        if buffers[k].shape != v.shape:
            raise ValueError(
                f"shape mismatch for {k!r}: model {tuple(buffers[k].shape)}, given {tuple(v.shape)}"
            )
        with torch.no_grad():
            buffers[k].copy_(v)
    if reset_local:
        for m in model.modules():
            if isinstance(m, HeteroLoRALinear):
                m.reset_local()
