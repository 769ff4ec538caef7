r"""Task vectors: the difference between a fine-tuned model and its base, and merges in their span.

A **task vector** (Ilharco et al., "Editing Models with Task Arithmetic", ICLR 2023,
`arXiv:2212.04089 <https://arxiv.org/abs/2212.04089>`_) is :math:`\tau_i = \theta_i - \theta_0`, the
fine-tuned weights :math:`\theta_i` minus the base (pre-trained) weights :math:`\theta_0`, entry by entry of
a state dict. Every merge of this package is a point of the span

.. math:: \theta(c) = \theta_0 + \sum_{i=1}^K c_i\,\tau_i ,

with :math:`c = e_i` giving back the fine-tuned model :math:`\theta_i`, or a per-entry rewrite of the
:math:`\tau_i` (TIES) added to :math:`\theta_0`.

State dicts are plain ``{name: Tensor}`` mappings (``model.state_dict()``, a LoRA adapter's state dict,
...). Only floating-point (and complex) tensors are merged; the others (integer buffers such as BatchNorm's
``num_batches_tracked``, boolean masks) are copied from the base. A task vector therefore holds the floating
entries only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["StateDict", "merge", "task_vectors"]

#: a state dict: parameter (or buffer) name -> tensor.
StateDict = dict[str, Tensor]


def _mergeable(t: Tensor) -> bool:
    """Floating-point and complex tensors are merged; integer and boolean ones are copied from the base."""
    return t.is_floating_point() or t.is_complex()


def _check_state_dict(sd: Any, what: str) -> Mapping[str, Tensor]:
    if not isinstance(sd, Mapping):
        kind = type(sd).__name__
        raise TypeError(f"{what} must be a state dict (a mapping of names to tensors), got {kind}")
    if not sd:
        raise ValueError(f"{what} is an empty state dict")
    for key, value in sd.items():
        if not isinstance(key, str):
            raise TypeError(f"{what} has a key {key!r} of type {type(key).__name__}; keys must be str")
        if not isinstance(value, Tensor):
            raise TypeError(f"{what}[{key!r}] must be a tensor, got {type(value).__name__}")
    return sd


def _check_sequence(seq: Any, what: str) -> list[Any]:
    if isinstance(seq, (Mapping, Tensor, str)) or not isinstance(seq, Sequence):
        raise TypeError(f"{what} must be a sequence (list or tuple) of state dicts, got {type(seq).__name__}")
    if len(seq) == 0:
        raise ValueError(f"{what} is empty: at least one model is needed")
    return list(seq)


def _check_same_layout(
    ref: Mapping[str, Tensor], other: Mapping[str, Tensor], keys: Sequence[str], what: str, i: int
) -> None:
    """``other`` has exactly ``keys`` (a missing or an extra key raises), with ``ref``'s shapes, dtypes and
    devices; the error names the key and the model index ``i``."""
    missing = [k for k in keys if k not in other]
    if missing:
        raise ValueError(f"{what} {i} lacks the key {missing[0]!r} of the base ({len(missing)} missing)")
    wanted = set(keys)
    extra = [k for k in other if k not in wanted]
    if extra:
        raise ValueError(f"{what} {i} has the key {extra[0]!r}, which the base lacks ({len(extra)} extra)")
    for k in keys:
        a, b = ref[k], other[k]
        if a.shape != b.shape:
            raise ValueError(
                f"{what} {i}: {k!r} has shape {tuple(b.shape)}, the base has {tuple(a.shape)}"
            )
        if a.dtype != b.dtype:
            raise ValueError(f"{what} {i}: {k!r} has dtype {b.dtype}, the base has {a.dtype}")
        if a.device != b.device:
            raise ValueError(f"{what} {i}: {k!r} is on {b.device}, the base is on {a.device}")


def _merged_keys(base: Mapping[str, Tensor]) -> list[str]:
    return [k for k, v in base.items() if _mergeable(v)]


def task_vectors(base: Mapping[str, Tensor], finetuned: Sequence[Mapping[str, Tensor]]) -> list[StateDict]:
    r"""The task vectors :math:`\tau_i = \theta_i - \theta_0` of K fine-tuned state dicts.

    Args:
        base: the base state dict :math:`\theta_0`.
        finetuned: K state dicts :math:`\theta_1, \dots, \theta_K` with exactly the base's keys, shapes,
            dtypes and devices.

    Returns:
        K dicts holding the floating-point (and complex) entries of the base only, detached; integer and
        boolean entries (``num_batches_tracked``, ...) are not merged (:func:`merge` copies them from the
        base).

    Raises:
        ValueError: a missing or an extra key, or a shape, dtype or device mismatch (the message names the key
            and the model's index), or an empty input.
        TypeError: an argument that is not a state dict (or a sequence of them).
    """
    base = _check_state_dict(base, "base")
    models = _check_sequence(finetuned, "finetuned")
    keys = list(base)
    floating = _merged_keys(base)
    out = []
    for i, sd in enumerate(models):
        sd = _check_state_dict(sd, f"finetuned[{i}]")
        _check_same_layout(base, sd, keys, "fine-tuned model", i)
        out.append({k: sd[k].detach() - base[k].detach() for k in floating})
    return out


def as_coefficients(coefficients: Any, k: int, what: str = "coefficients") -> Tensor:
    """``coefficients`` as a finite float64 CPU tensor of shape (k,) (a sequence, a tensor or a scalar, which
    is broadcast); ``ValueError`` on a wrong length or a non-finite entry, ``TypeError`` on non-numbers."""
    if isinstance(coefficients, Tensor):
        c = coefficients.detach()
        if c.is_complex() or c.dtype == torch.bool:
            raise TypeError(f"{what} must be real numbers, got dtype {c.dtype}")
        c = c.to(device="cpu", dtype=torch.float64)
    else:
        try:
            c = torch.as_tensor(coefficients, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(f"{what} must be a number, a sequence of numbers or a tensor, got "
                            f"{type(coefficients).__name__}") from exc
    if c.dim() == 0:
        c = c.expand(k).clone()
    if c.dim() != 1 or c.numel() != k:
        raise ValueError(f"{what} must have shape ({k},) (one per task vector), got {tuple(c.shape)}")
    if not bool(torch.isfinite(c).all()):
        raise ValueError(f"{what} must be finite, got {c.tolist()}")
    return c


def check_vectors(base: Mapping[str, Tensor], vectors: Any) -> tuple[list[Mapping[str, Tensor]], list[str]]:
    """Validate ``vectors`` against ``base`` (the layout :func:`task_vectors` returns); the floating keys."""
    base = _check_state_dict(base, "base")
    vecs = _check_sequence(vectors, "vectors")
    floating = _merged_keys(base)
    if not floating:
        raise ValueError("base has no floating-point tensor: there is nothing to merge")
    for i, v in enumerate(vecs):
        v = _check_state_dict(v, f"vectors[{i}]")
        _check_same_layout(base, v, floating, "task vector", i)
    return vecs, floating


def _accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half-precision entries are summed in float32 (complex32 in complex64) and cast back."""
    return torch.promote_types(dtype, torch.float32)


def combine(
    base: Mapping[str, Tensor],
    vectors: Sequence[Mapping[str, Tensor]],
    c: Sequence[float],
    floating: list[str],
) -> StateDict:
    """:math:`\\theta_0 + \\sum_i c_i \\tau_i` on validated inputs; the other entries cloned from the base."""
    out: StateDict = {}
    for key, value in base.items():
        value = value.detach()
        if key not in floating:
            out[key] = value.clone()
            continue
        acc = value.to(_accumulate_dtype(value.dtype), copy=True)
        for ci, v in zip(c, vectors):
            if ci != 0.0:
                acc.add_(v[key].detach().to(acc.dtype), alpha=ci)
        out[key] = acc.to(value.dtype)
    return out


def merge(
    base: Mapping[str, Tensor], vectors: Sequence[Mapping[str, Tensor]], coefficients: Any
) -> StateDict:
    r"""The point :math:`\theta_0 + \sum_{i=1}^K c_i \tau_i` of the task vectors' span.

    Args:
        base: the base state dict :math:`\theta_0`.
        vectors: K task vectors (from :func:`task_vectors`: the base's floating keys, shapes, dtypes).
        coefficients: :math:`c`, a length-K sequence or tensor (or one number for all), finite.

    Returns:
        A new state dict with every key of the base: the merged floating entries (summed in at least float32
        and cast back to their dtype) and copies of the other entries. ``coefficients = e_i`` gives back
        :math:`\theta_i` bit for bit whenever :math:`\theta_i - \theta_0` was exact, which holds where
        :math:`\theta_i` is within a factor 2 of :math:`\theta_0` (Sterbenz), as after fine-tuning;
        elsewhere up to the rounding of that subtraction.
    """
    vecs, floating = check_vectors(base, vectors)
    c = as_coefficients(coefficients, len(vecs))
    return combine(base, vecs, c.tolist(), floating)
