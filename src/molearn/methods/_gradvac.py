"""GradVac: Gradient Vaccine, align task gradients to adaptive cosine-similarity targets."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from ..solvers import gradvac_weights, random_orders
from ._base import Inputs, Method, Needs, Output, check_gramian, state_vector


class GradVac(Method):
    r"""Gradient Vaccine (Wang, Tsvetkov, Firat, Cao, "Gradient Vaccine: Investigating and Improving
    Multi-task Optimization in Massively Multilingual Models", ICLR 2021, https://arxiv.org/abs/2010.05874).

    For each task i and the other tasks j in a random order, with :math:`\phi_{ij} = \cos(g_i^{PC}, g_j)`
    and the EMA target :math:`\hat\phi_{ij}` (initialised to 0):

    .. math::
        \text{if } \phi_{ij} < \hat\phi_{ij}:\quad g_i^{PC} \leftarrow g_i^{PC}
        + \frac{\|g_i^{PC}\| (\hat\phi_{ij}\sqrt{1-\phi_{ij}^2} - \phi_{ij}\sqrt{1-\hat\phi_{ij}^2})}
        {\|g_j\|\sqrt{1-\hat\phi_{ij}^2}}\,g_j,
        \qquad \hat\phi_{ij} \leftarrow (1-\beta)\hat\phi_{ij} + \beta\phi_{ij},

    and :math:`d = \sum_i g_i^{PC}`. The target update uses the cosine measured before the correction
    (as LibMTL and TorchJD). Everything is computed from the Gramian
    (:func:`molearn.solvers.gradvac_weights`), all i at once, one visited task per step.

    ``beta`` defaults to 0.5 (LibMTL ``GradVac_beta``, TorchJD). ``group="whole"`` (LibMTL group type 0,
    whole model) is the only grouping: LibMTL's per-layer / per-matrix groupings (types 1 and 2) keep one
    target per parameter group and need per-group inner products, which the K×K Gramian does not hold.
    ``generator`` draws one ``randperm(K-1)`` over the other tasks per task, as LibMTL's shuffle and
    consuming the generator like TorchJD 0.18's ``GradVacWeighting`` (equal seeds, equal orders).
    On a GPU, give a generator on the Gramian's device (or None): a CPU one costs a host-to-device copy.
    LibMTL/TorchJD add ``eps=1e-8`` to the denominators; molearn divides exactly and treats a zero norm as
    cosine 0 / no correction, so the method is invariant to the scale of the gradients.

    State: the K×K targets (float64, created on the first call on the Gramian's device, then updated in
    place; recreated, i.e. reset, if K or the device changes), in ``state_dict()["targets"]``.
    """

    needs: ClassVar[Needs] = Needs(gramian=True)

    def __init__(
        self, beta: float = 0.5, group: Literal["whole"] = "whole", generator: torch.Generator | None = None
    ) -> None:
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {beta!r}")
        if group != "whole":
            raise ValueError(
                f"group={group!r} is not supported: only the whole-model grouping is expressible with the "
                "Gramian (LibMTL's per-layer groupings need per-group inner products)"
            )
        self.beta = beta
        self.group = group
        self.generator = generator
        self._targets: Tensor | None = None

    def combine(self, inputs: Inputs) -> Output:
        g = check_gramian(inputs.gramian, "GradVac")
        k = g.shape[-1]
        if self._targets is None or self._targets.shape != (k, k) or self._targets.device != g.device:
            self._targets = torch.zeros(k, k, dtype=torch.float64, device=g.device)
        order = random_orders(k, generator=self.generator, device=g.device, full=False)
        c, targets = gradvac_weights(g, self._targets, order, self.beta)
        self._targets.copy_(targets)  # in place: the state stays the same tensor (CUDA-graph friendly)
        return Output(weights=c.sum(-2).to(inputs.losses.dtype))

    def state_dict(self) -> dict[str, Any]:
        return {} if self._targets is None else {"targets": self._targets.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unknown = set(state) - {"targets"}
        if unknown:
            raise ValueError(f"GradVac got unknown state keys {sorted(unknown)}")
        targets = state_vector("GradVac", state, "targets", ndim=2)
        if targets is not None and targets.shape[0] != targets.shape[1]:
            raise ValueError(f"GradVac state 'targets': expected a K×K matrix, got {tuple(targets.shape)}")
        self._targets = None if targets is None else targets.detach().to(torch.float64).clone()

    def reset(self) -> None:
        self._targets = None
