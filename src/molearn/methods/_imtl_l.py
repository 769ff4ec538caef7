"""IMTL-L: the loss-balance half of Impartial Multi-Task Learning (Liu et al., ICLR 2021)."""

from __future__ import annotations

import torch
from torch import Tensor

from ._uw import _LearnedLogScale


class IMTLL(_LearnedLogScale):
    r"""IMTL-L (Liu et al., "Towards Impartial Multi-task Learning", ICLR 2021,
    https://openreview.net/forum?id=IMPnRXEWpvr): learned loss scales.

    .. math:: \mathcal L = \sum_i \big(e^{s_i} L_i - s_i\big), \qquad w_i = e^{s_i}, \qquad
              \partial_{s_i}\mathcal L = e^{s_i} L_i - 1

    Loss-only (one backward of :math:`\sum_i w_i L_i`, ``task_grad="weighted"``). Each call returns the
    weights of the current :math:`s` (initialised to 0, as LibMTL and TorchJD), then takes one Adam step
    on :math:`s` with the gradient above. LibMTL trains :math:`s` with the model's optimiser and learning
    rate; molearn exposes the rate as ``lr`` (default 0.025, the value the Nash-MTL code uses for the
    learned parameters of UW, to which IMTL-L is equivalent up to :math:`s \to -s` and a factor 2).
    The fixed point :math:`s_i = -\log L_i` gives :math:`w_i L_i = 1` (the paper's scale invariance).

    The full IMTL of the paper (and LibMTL's ``IMTL``) feeds the scaled losses :math:`e^{s_i}L_i` to
    IMTL-G; this class is only the loss part. K = 1: a positive multiple of the gradient.
    """

    def _weights(self, s: Tensor) -> Tensor:
        return torch.exp(s)

    def _grad(self, s: Tensor, losses: Tensor) -> Tensor:
        return torch.exp(s) * losses - 1.0
