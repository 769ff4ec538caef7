"""``mode="auto"``: which strategy serves a method, from the device, K and what the method needs.

The rules are data (:data:`RULES`), so that ``docs/engine.md`` prints the same table the code follows.
Each rule says whether it was **measured** (``benchmarks/results/step.md``, CPU) or is a **hypothesis**
taken from the GPU figures of issue 13 that awaits a GPU measurement.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RULES", "Situation", "batched_passes", "choose"]


@dataclass(frozen=True)
class Situation:
    """What ``auto`` looks at (all known on the host, nothing synchronises)."""

    device: str  # "cpu", "cuda", ...
    k: int
    gradients: bool  # Needs.gramian or Needs.jacobian
    jacobian: bool
    batches: int
    closure: bool
    compiled: bool = False
    dense: bool = False  # every module owning shared parameters is a Linear/Embedding/norm layer (known)


# (condition, strategy, objectives per pass, evidence)
RULES: list[tuple[str, str, str, str]] = [
    ("method needs no gradients (EW, UW, DWA, FAMO, ...)", "loss-only", "–", "measured (CPU)"),
    ("method computes its own gradients (`Needs.closure`, SAMO)", "closure", "–", "by construction"),
    (
        "method needs the Jacobian or several batches, dense trunk, not compiled",
        "batched",
        "K",
        "measured (CPU); GPU hypothesis",
    ),
    (
        "method needs the Jacobian or several batches, otherwise",
        "loop",
        "1",
        "measured (CPU); GPU hypothesis",
    ),
    (
        "method needs the Gramian only, dense trunk, not compiled",
        "gramian",
        "K (memory-chunked)",
        "measured (CPU); GPU hypothesis",
    ),
    (
        "method needs the Gramian only, otherwise (convolutions, RNNs, unknown modules, compiled)",
        "gramian",
        "1",
        "measured (CPU); GPU hypothesis",
    ),
]


def batched_passes(s: Situation) -> bool:
    """Whether the K objectives go through one batched backward (``is_grads_batched``) rather than K.

    Measured on the CPU: the batched pass is faster on dense trunks (Linear layers) and about twice as
    slow on convolutional ones (and holds K copies of the activation gradients). On the GPU the issue's
    figures point the same way (wide MLP: batched ahead from K = 3; ResNet-18: loop ≈ batched at a
    fraction of the memory): a hypothesis until measured. A compiled model's backward cannot be batched.
    """
    return s.dense and not s.compiled


def choose(s: Situation) -> str:
    """The strategy name for a situation (``"loss-only"``, ``"closure"``, ``"loop"``, ``"batched"`` or
    ``"gramian"``; the layer-wise Gramian batches its passes by :func:`batched_passes` too)."""
    if s.closure:
        return "closure"
    if not s.gradients:
        return "loss-only"
    if s.jacobian or s.batches > 1:
        return "batched" if batched_passes(s) else "loop"
    return "gramian"
