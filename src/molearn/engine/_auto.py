"""``mode="auto"``: which strategy serves a method, from the device, K and what the method needs.

The rules are data (:data:`RULES`), so that ``docs/engine.md`` prints the same table the code follows.
Each rule says whether it was **measured** (``benchmarks/results/step.md``, CPU) or is a **hypothesis**
taken from the GPU figures of issue 13 that awaits a GPU measurement.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RULES", "Situation", "choose"]


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


# (condition, strategy, objectives per pass, evidence)
RULES: list[tuple[str, str, str, str]] = [
    ("method needs no gradients (EW, UW, DWA, FAMO, ...)", "loss-only", "–", "measured (CPU)"),
    ("method computes its own gradients (`Needs.closure`, SAMO)", "closure", "–", "by construction"),
    ("method needs the Jacobian or several batches, CPU", "loop", "1", "measured (CPU)"),
    (
        "method needs the Jacobian or several batches, GPU, K ≥ 10, not compiled",
        "batched",
        "K",
        "GPU hypothesis",
    ),
    ("method needs the Jacobian or several batches, GPU, K < 10 or compiled", "loop", "1", "GPU hypothesis"),
    ("method needs the Gramian only, CPU", "gramian", "1", "measured (CPU)"),
    (
        "method needs the Gramian only, GPU, K ≥ 10, not compiled",
        "gramian",
        "K (memory-chunked)",
        "GPU hypothesis",
    ),
    ("method needs the Gramian only, GPU, K < 10 or compiled", "gramian", "1", "GPU hypothesis"),
]

BATCHED_MIN_K = 10


def choose(s: Situation) -> str:
    """The strategy name for a situation (``"loss-only"``, ``"closure"``, ``"loop"``, ``"batched"`` or
    ``"gramian"``; the layer-wise Gramian picks its objectives per pass by the same device/K rule)."""
    if s.closure:
        return "closure"
    if not s.gradients:
        return "loss-only"
    if s.jacobian or s.batches > 1:
        if s.device != "cpu" and s.k >= BATCHED_MIN_K and not s.compiled:
            return "batched"
        return "loop"
    return "gramian"
