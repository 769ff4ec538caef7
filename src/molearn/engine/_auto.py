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
    ("method needs the Jacobian or several batches, CPU", "loop", "1", "measured (CPU)"),
    (
        "method needs the Jacobian or several batches, GPU, dense trunk, K ≥ 10, not compiled",
        "batched",
        "K",
        "GPU hypothesis (issue 13's H200 figures)",
    ),
    ("method needs the Jacobian or several batches, GPU, otherwise", "loop", "1", "GPU hypothesis"),
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

BATCHED_JACOBIAN_MIN_K = 10


def batched_passes(s: Situation) -> bool:
    """Whether the layer-wise Gramian sends the K objectives through one batched backward
    (``is_grads_batched``) rather than K.

    Measured on the CPU: the batched pass is faster on dense trunks (MLP, wide MLP) at about the same
    memory, and on convolutional trunks 1.3-1.5× slower (small conv net) or 1.4× faster at 3× the memory
    (reduced ResNet-18): convolutions keep one pass per objective. On the GPU the issue's figures point
    the same way: a hypothesis until measured. A compiled model's backward cannot be batched.
    """
    return s.dense and not s.compiled


def choose(s: Situation) -> str:
    """The strategy name for a situation (``"loss-only"``, ``"closure"``, ``"loop"``, ``"batched"`` or
    ``"gramian"``; the layer-wise Gramian batches its passes by :func:`batched_passes`).

    Jacobian methods hold the K×P Jacobian whatever the strategy; the batched one adds K copies of the
    activation gradients. On the CPU it was slower or at most 1.2× faster (measured): loop. On the GPU,
    issue 13 measured the batched Jacobian 2-4× faster on the wide MLP from K = 10 and equal on ResNet-18.
    """
    if s.closure:
        return "closure"
    if not s.gradients:
        return "loss-only"
    if s.jacobian or s.batches > 1:
        gpu_batched = s.device != "cpu" and s.dense and not s.compiled and s.k >= BATCHED_JACOBIAN_MIN_K
        return "batched" if gpu_batched else "loop"
    return "gramian"
