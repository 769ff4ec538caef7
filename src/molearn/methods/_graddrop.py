"""GradDrop: gradient sign dropout (Chen et al., NeurIPS 2020)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch

from ..solvers.consts import on_device
from ._base import Inputs, Method, Needs, Output, check_jacobian


class GradDrop(Method):
    r"""Gradient sign dropout (Chen et al., "Just Pick a Sign: Optimizing Deep Multitask Models with
    Gradient Sign Dropout", NeurIPS 2020, arXiv:2010.06808), elementwise on the K×P Jacobian:

    .. math:: \mathcal P = \tfrac12\Big(1 + \frac{\sum_i g_i}{\sum_i |g_i|}\Big),
              \quad U \sim \mathcal U(0,1)^P,
              \quad M_i = [\mathcal P > U][g_i > 0] + [\mathcal P < U][g_i < 0],
              \quad d = \sum_i \big(\ell_i + (1-\ell_i) M_i\big) \odot g_i

    (one :math:`U` per coordinate, shared by the tasks). ``leak`` :math:`\ell` is a float or one value per
    objective (default 0, LibMTL ``--leak``). Reduction: **sum** over the tasks — the FairGrad code
    averages and then multiplies by K when writing the gradient, LibMTL and TorchJD sum. Coordinates where
    every gradient is 0 give :math:`\mathcal P = \tfrac12` and contribute 0 (the FairGrad code and LibMTL
    add 1e-8 / 1e-7 to the denominator, TorchJD gets a NaN :math:`\mathcal P` there; molearn guards the
    division, which differs from the codes only for coordinates of magnitude ~1e-8).

    Randomness: ``generator`` (a :class:`torch.Generator`; :math:`U` is drawn on its device and moved, so
    on a GPU give a generator on that GPU to avoid a host-to-device copy) for reproducible runs; ``None``
    uses the global RNG of the Jacobian's device. K = 1 passes the gradient
    through (up to coordinates where :math:`U` is exactly 0). The paper applies GradDrop to gradients at
    a shared activation layer: use ``Balancer(mode="representation")``; molearn computes
    :math:`\mathcal P` per element of the (batch × feature) representation, as the FairGrad code does per
    parameter, whereas LibMTL first sums the per-sample gradients times the sign of the input over the batch
    (the paper's batch-separated variant), which is not reproduced.
    """

    needs: ClassVar[Needs] = Needs(jacobian=True)

    def __init__(self, leak: float | Sequence[float] = 0.0, generator: torch.Generator | None = None) -> None:
        self.leak = leak
        self.generator = generator

    def combine(self, inputs: Inputs) -> Output:
        jac = check_jacobian(inputs.jacobian, "GradDrop")
        k, p = jac.shape
        if isinstance(self.leak, (int, float)):
            leak = torch.full((k, 1), float(self.leak), dtype=jac.dtype, device=jac.device)
        else:
            if len(self.leak) != k:
                raise ValueError(f"GradDrop got {len(self.leak)} leak values for {k} objectives")
            leak = on_device(tuple(map(float, self.leak)), jac.device, jac.dtype).unsqueeze(1)
        total = jac.sum(0)
        mass = jac.abs().sum(0)
        purity = 0.5 * (1.0 + total / torch.where(mass > 0, mass, torch.ones_like(mass)))
        if self.generator is None:
            u = torch.rand(p, dtype=jac.dtype, device=jac.device)
        else:
            gen = self.generator
            u = torch.rand(p, dtype=jac.dtype, device=gen.device, generator=gen).to(jac.device)
        keep = ((purity > u) & (jac > 0)) | ((purity < u) & (jac < 0))
        mask = leak + (1.0 - leak) * keep.to(jac.dtype)
        nonzero = (jac != 0).sum().clamp_min(1)
        kept = keep.sum().to(jac.dtype) / nonzero.to(jac.dtype)  # fraction of non-zero entries kept
        return Output(direction=(mask * jac).sum(0), info={"kept_fraction": kept})
