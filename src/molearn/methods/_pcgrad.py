"""PCGrad: project each task gradient off the gradients it conflicts with."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch

from ..solvers import pcgrad_weights, random_orders
from ._base import Inputs, Method, Needs, Output, check_gramian


class PCGrad(Method):
    r"""PCGrad, "gradient surgery" (Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020,
    https://arxiv.org/abs/2001.06782).

    For each task i, visit the other tasks j in a random order and, when they conflict,

    .. math:: g_i^{PC} \leftarrow g_i^{PC} - \frac{\min(g_i^{PC\top} g_j, 0)}{\|g_j\|^2}\, g_j,
        \qquad d = \textstyle\sum_i g_i^{PC} \ \text{(sum) or}\ \frac1K\sum_i g_i^{PC} \ \text{(mean)}.

    Each :math:`g_i^{PC}` is kept as coefficients over the raw gradients, so all inner products come from
    the Gramian (:func:`molearn.solvers.pcgrad_weights`); the K-1 projection steps run for all i at once.
    ``reduction``: ``"sum"`` (default; Nash-MTL/FairGrad code, LibMTL, TorchJD) or ``"mean"``
    (CAGrad/SDMGrad code). ``generator`` draws the orders: one ``randperm(K)`` per task with i itself
    skipped, consuming the generator like TorchJD 0.18's ``PCGradWeighting`` (equal seeds, equal orders).
    On a GPU, give a generator on the Gramian's device (or None): a CPU one costs a host-to-device copy.

    Differences: the official TensorFlow code and LibMTL shuffle the whole task list including i itself
    (projecting :math:`g_i^{PC}` against its own original :math:`g_i`, which only acts in the rare case
    where the partly projected gradient conflicts with it); molearn, the spec and TorchJD skip j = i.
    The CAGrad/Nash vectorised code divides by :math:`(\|g_j\|+10^{-8})^2`; molearn projects exactly and
    never projects against a zero gradient (scale-invariant). With K = 2 the order is deterministic.
    """

    needs: ClassVar[Needs] = Needs(gramian=True)

    def __init__(
        self, reduction: Literal["sum", "mean"] = "sum", generator: torch.Generator | None = None
    ) -> None:
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        self.reduction = reduction
        self.generator = generator

    def combine(self, inputs: Inputs) -> Output:
        g = check_gramian(inputs.gramian, "PCGrad")
        k = g.shape[-1]
        order = random_orders(k, generator=self.generator, device=g.device, full=True)
        w = pcgrad_weights(g, order).sum(-2)
        if self.reduction == "mean":
            w = w / k
        return Output(weights=w.to(inputs.losses.dtype))
