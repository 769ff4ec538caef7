"""Server-side aggregation rules for federated (LoRA) fine-tuning, as plain functions on state dicts.

* :func:`fedavg` -- FedAvg (McMahan et al., AISTATS 2017): ``θ = Σ_k w_k θ_k`` with ``w_k = n_k / Σ_j n_j``
  (``n_k`` = local data size of client ``k``), for every tensor of the state dict.
* :func:`fedavg_lora_b` -- Fed-ALoRA, homogeneous ranks (Ban & Ji, "ALoRA / Fed-ALoRA: asymmetric multi-LoRA",
  arXiv 2509.25414, 2025; official code OptMN-Lab/ALoRA ``federated_fine_tuning/homoneneous``):
  clients train a standard LoRA ``(A, B)`` but only the ``B`` matrices are sent and averaged, weighted by
  local data size; every ``A`` stays on its client.
* :func:`aggregate_heterogeneous` -- Fed-ALoRA with heterogeneous client ranks (same paper,
  ``heterogeneous/``):
  client ``k`` has the adapter ``s_k (B_base + B2_k B1_k) M_k A_k`` (``B2_k``: out×r_k, ``B1_k``: r_k×r_int),
  and the server computes ``B_base ← B_base + Σ_k w_k B2_k B1_k`` (``recover_delta`` + ``update_base`` in the
  official code).  Equivalently, ``B_base'`` is the weighted mean of the clients' *effective* shared matrices
  ``B_base + B2_k B1_k`` (out×r_int, the same shape for every rank), i.e. :func:`fedavg_lora_b`
  applied to them.

All functions are pure torch, never modify their inputs, and return new tensors (float tensors are
accumulated in at least float32, then cast back to the input dtype).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

__all__ = [
    "aggregate_heterogeneous",
    "fedavg",
    "fedavg_lora_b",
    "is_lora_b",
    "normalize_weights",
]


def is_lora_b(key: str) -> bool:
    """Default predicate for a LoRA ``B`` (up-projection) tensor: PEFT names them
    ``...lora_B.<adapter>.weight``.

    The heterogeneous factors ``lora_B1``/``lora_B2`` and the buffer ``lora_B_base`` are *not* matched.
    """
    return ".lora_B." in key or key.startswith("lora_B.") or key.endswith(".lora_B") or key == "lora_B"


def normalize_weights(weights: Sequence[float], n_clients: int) -> list[float]:
    """Check client weights (e.g. local data sizes) and return ``w_k / Σ_j w_j``.

    Raises ValueError for an empty client list, a length mismatch, negative / non-finite weights or
    a zero total.
    """
    if n_clients == 0:
        raise ValueError("aggregation needs at least one client state, got an empty list")
    w = [float(x) for x in weights]
    if len(w) != n_clients:
        raise ValueError(f"got {n_clients} client states but {len(w)} weights")
    for i, x in enumerate(w):
        if not math.isfinite(x) or x < 0:
            raise ValueError(f"client weight {i} must be finite and >= 0 (a local data size), got {x}")
    total = sum(w)
    if total <= 0:
        raise ValueError("the client weights sum to zero (every client has empty data?); cannot average")
    return [x / total for x in w]


def _weighted_mean(tensors: Sequence[Tensor], w: Sequence[float], key: str) -> Tensor:
    first = tensors[0]
    for i, t in enumerate(tensors):
        if not isinstance(t, Tensor):
            raise TypeError(f"client {i}: entry {key!r} is {type(t).__name__}, expected a torch.Tensor")
        if t.shape != first.shape:
            raise ValueError(
                f"shape mismatch for {key!r}: client 0 has {tuple(first.shape)}, client {i} has "
                f"{tuple(t.shape)}"
            )
    if not (first.is_floating_point() or first.is_complex()):
        # integer / bool buffers (e.g. counters) cannot be averaged: they must agree
        for i, t in enumerate(tensors[1:], start=1):
            if not torch.equal(t, first):
                raise ValueError(f"non-float entry {key!r} differs between client 0 and client {i}")
        return first.clone()
    acc_dtype = torch.promote_types(first.dtype, torch.float32)
    acc = torch.zeros(first.shape, dtype=acc_dtype, device=first.device)
    for t, wk in zip(tensors, w):
        acc.add_(t.detach().to(device=first.device, dtype=acc_dtype), alpha=wk)
    return acc.to(first.dtype)


def _check_same_keys(states: Sequence[Mapping[str, Tensor]], keys: Sequence[str]) -> None:
    ref = set(keys)
    for i, s in enumerate(states):
        ks = set(s.keys())
        if ks != ref:
            missing, extra = sorted(ref - ks), sorted(ks - ref)
            raise ValueError(
                f"client {i} state dict keys differ from client 0: missing {missing[:5]}, "
                f"unexpected {extra[:5]}"
            )


def fedavg(states: Sequence[Mapping[str, Tensor]], weights: Sequence[float]) -> dict[str, Tensor]:
    """FedAvg: ``Σ_k w_k θ_k`` over every key, weights normalised to sum to one (data sizes are fine).

    Every client must hold the same keys with the same shapes; non-float tensors must be identical.
    """
    states = list(states)
    w = normalize_weights(weights, len(states))
    keys = list(states[0].keys())
    _check_same_keys(states, keys)
    return {k: _weighted_mean([s[k] for s in states], w, k) for k in keys}


def fedavg_lora_b(
    states: Sequence[Mapping[str, Tensor]],
    weights: Sequence[float],
    *,
    is_b: Callable[[str], bool] = is_lora_b,
) -> dict[str, Tensor]:
    """Fed-ALoRA (homogeneous): weighted mean of the LoRA ``B`` matrices only; ``A`` stays local.

    ``states`` may be full client state dicts or only their ``B`` entries (what a client sends up); the result
    holds only the keys selected by ``is_b`` -- load it into each client with
    ``load_state_dict(strict=False)``
    so every client keeps its own ``A``.  Raises ValueError if no key matches ``is_b`` or the ``B``
    keys/shapes
    differ between clients.
    """
    states = list(states)
    w = normalize_weights(weights, len(states))
    b_keys = [k for k in states[0] if is_b(k)]
    if not b_keys:
        raise ValueError(
            "no LoRA B entry found in the client state (keys matching is_b, e.g. '...lora_B.default.weight')"
        )
    for i, s in enumerate(states):
        ks = [k for k in s if is_b(k)]
        if set(ks) != set(b_keys):
            diff = sorted(set(ks) ^ set(b_keys))[:5]
            raise ValueError(f"client {i} sends LoRA B keys that differ from client 0's: {diff}")
    return {k: _weighted_mean([s[k] for s in states], w, k) for k in b_keys}


def _base_key(b1_key: str) -> str:
    return b1_key.replace("lora_B1", "lora_B_base")


def aggregate_heterogeneous(
    states: Sequence[Mapping[str, Tensor]],
    weights: Sequence[float],
    base: Mapping[str, Tensor],
) -> dict[str, Tensor]:
    """Fed-ALoRA with heterogeneous ranks: ``B_base ← B_base + Σ_k w_k B2_k B1_k`` for every adapted layer.

    ``states[k]`` holds client ``k``'s factors under keys containing ``lora_B1`` (r_k×r_int) and ``lora_B2``
    (out×r_k) (other keys are ignored); ``base`` holds the current ``B_base`` (out×r_int) under the
    same key with
    ``lora_B1`` replaced by ``lora_B_base`` (the naming of :class:`molearn.federated.HeteroLoRALinear`, and of
    PEFT-style ``lora_B1.<adapter>.weight`` keys alike).  Ranks ``r_k`` may differ between clients;
    they must not
    exceed the layer's output size.  Returns the new ``B_base`` entries (keys as in ``base``).
    """
    states = list(states)
    w = normalize_weights(weights, len(states))
    b1_keys = sorted(k for k in states[0] if "lora_B1" in k)
    if not b1_keys:
        raise ValueError(
            "no 'lora_B1' entry found in client 0's state: not a heterogeneous-rank Fed-ALoRA adapter"
        )
    out: dict[str, Tensor] = {}
    for i, s in enumerate(states):
        ks = sorted(k for k in s if "lora_B1" in k)
        if ks != b1_keys:
            diff = sorted(set(ks) ^ set(b1_keys))[:5]
            raise ValueError(f"client {i} has lora_B1 keys that differ from client 0's: {diff}")
    for k1 in b1_keys:
        k2 = k1.replace("lora_B1", "lora_B2")
        kb = _base_key(k1)
        if kb not in base:
            raise ValueError(f"base state has no entry {kb!r} (the B_base for {k1!r})")
        b = base[kb]
        if b.dim() != 2:
            raise ValueError(f"{kb!r} must be a matrix (out × r_int), got shape {tuple(b.shape)}")
        out_f, r_int = b.shape
        deltas = []
        for i, s in enumerate(states):
            if k2 not in s:
                raise ValueError(f"client {i} has {k1!r} but no {k2!r}")
            b1, b2 = s[k1], s[k2]
            if b1.dim() != 2 or b2.dim() != 2:
                raise ValueError(f"client {i}: {k1!r}/{k2!r} must be matrices")
            r = b2.shape[1]
            if b2.shape[0] != out_f or b1.shape != (r, r_int):
                raise ValueError(
                    f"client {i}: B2 {tuple(b2.shape)} @ B1 {tuple(b1.shape)} does not give B_base's shape "
                    f"{(out_f, r_int)} for {kb!r} (expected B2: out×r, B1: r×r_int)"
                )
            if r > out_f:
                raise ValueError(
                    f"client {i}: rank {r} is larger than the layer's output size {out_f} for {kb!r}"
                )
            acc_dtype = torch.promote_types(b.dtype, torch.float32)
            deltas.append(b2.detach().to(b.device, acc_dtype) @ b1.detach().to(b.device, acc_dtype))
        avg = _weighted_mean(deltas, w, kb)
        out[kb] = (b.detach().to(avg.dtype) + avg).to(b.dtype)
    return out
