"""COSMOS: linear scalarisation with a cosine-similarity penalty (the loss of COSMOS)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from ._base import Inputs, Method, Needs, Output, TaskGrad
from ._preference import PrefLike, check_pref, resolve_pref


class COSMOS(Method):
    r"""The scalarisation of COSMOS (Ruchte & Grabocka, "Scalable Pareto Front Approximation for Deep
    Multi-Objective Learning", ICDM 2021, `arXiv:2103.13392 <https://arxiv.org/abs/2103.13392>`_;
    official code ruchtem/cosmos, ``COSMOSMethod.step``; LibMOON ``cosmos``).

    .. math:: \mathcal L = \sum_i p_i L_i - \mu \cos(L, p),\qquad
              w = \frac{\partial \mathcal L}{\partial L}
                = p - \frac{\mu}{\|L\|\,\|p\|}\Big(p - \frac{L^\top p}{\|L\|^2} L\Big)

    COSMOS proper conditions the *model* on the preference (``p`` appended to the input, a fresh
    Dirichlet sample per batch; see :mod:`molearn.pareto`); this class is only its loss, for one
    fixed ``pref``. The weights are exactly what back-propagating the official ``loss_total`` gives
    to each loss (``task_grad="weighted"``). They can be negative: the penalty pulls the loss vector
    towards the ray of ``p`` (losses ∝ p).

    ``pref``: non-negative, positive sum, normalised to sum 1 (the official code draws it from a
    Dirichlet and normalises the test rays to sum 1), default uniform. ``mu`` (the official ``lamda``):
    2.0, the official method default (Multi-MNIST/Fashion; its per-dataset settings range from 0.01 on
    the fairness data sets to 8). LibMOON's ``cosmos`` differs: it scales the linear term by
    :math:`p/\|p\|_2` instead of :math:`p/\|p\|_1` and uses ``coeff=10``; molearn follows the official
    code. At :math:`L = 0` the cosine is undefined and its gradient is taken as 0 (weights ``p``; torch's
    ``cosine_similarity`` would return a huge, ``eps``-dependent value). K = 1: :math:`\cos = \pm 1` is
    constant, so the weight is exactly 1.
    """

    needs: ClassVar[Needs] = Needs()
    task_grad: ClassVar[TaskGrad] = "weighted"

    def __init__(self, pref: PrefLike = None, mu: float = 2.0) -> None:
        if not mu >= 0 or mu == float("inf"):
            raise ValueError(f"COSMOS: mu must be finite and >= 0, got {mu}")
        self.pref = check_pref(pref, "COSMOS")
        self.mu = float(mu)

    def combine(self, inputs: Inputs) -> Output:
        losses = inputs.losses.detach()
        k = inputs.num_objectives
        x = losses.to(torch.float64)
        p = resolve_pref(self.pref, k, "COSMOS", x)
        w, cos = cosmos_weights(x.unsqueeze(0), p.unsqueeze(0), self.mu)
        return Output(weights=w[0].to(losses.dtype), info={"cos": cos[0]})

    @staticmethod
    def combine_many(methods: Sequence[Method], losses: Tensor, gramian: Tensor | None) -> Tensor | None:
        """Weights (N, K) of N COSMOS instances (one per row of ``losses`` (N, K)) in one call, equal to
        :meth:`combine` row by row; ``None`` if their ``mu`` differ."""
        if not methods or not all(type(m) is COSMOS for m in methods):
            return None
        ms = [m for m in methods if isinstance(m, COSMOS)]
        if len({m.mu for m in ms}) != 1:
            return None
        k = losses.shape[1]
        prefs = torch.stack([resolve_pref(m.pref, k, "COSMOS", losses) for m in ms])
        return cosmos_weights(losses.detach().to(torch.float64), prefs, ms[0].mu)[0].to(losses.dtype)


def cosmos_weights(losses: Tensor, pref: Tensor, mu: float) -> tuple[Tensor, Tensor]:
    """:class:`COSMOS` weights (N, K) and cosines (N,) for ``losses`` and ``pref`` (N, K), float64."""
    tiny = torch.finfo(torch.float64).tiny
    norm_l = losses.norm(dim=1, keepdim=True)
    safe = norm_l.clamp_min(tiny)
    unit_p = pref / pref.norm(dim=1, keepdim=True)
    cos = (losses * unit_p).sum(1, keepdim=True) / safe
    grad_cos = (unit_p - cos * losses / safe) / safe
    grad_cos = torch.where(norm_l > 0, grad_cos, torch.zeros_like(grad_cos))
    return pref - mu * grad_cos, cos.squeeze(1)
