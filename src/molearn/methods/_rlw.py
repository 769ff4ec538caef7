"""RLW: random loss weighting."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import Tensor

from ._base import Inputs, Method, Needs, Output, TaskGrad

Distribution = Literal["softmax_normal", "softmax_uniform", "dirichlet", "bernoulli", "one_hot"]
_DISTRIBUTIONS = ("softmax_normal", "softmax_uniform", "dirichlet", "bernoulli", "one_hot")


class RLW(Method):
    r"""Random Loss Weighting (Lin, Ye, Xu, Shi, Zhang, Kwok, "Reasonable Effectiveness of Random
    Weighting: A Litmus Test for Multi-Task Learning", TMLR 2022,
    `arXiv:2111.10603 <https://arxiv.org/abs/2111.10603>`_).

    .. math:: w = \mathrm{scale} \cdot \mathrm{softmax}(\varepsilon), \qquad
              \varepsilon \sim \mathcal N(0, I_K) \text{ drawn at every step}

    ``distribution``: ``"softmax_normal"`` (default; paper and LibMTL ``dist='Normal'``),
    ``"softmax_uniform"`` (softmax of U(0,1)ᴷ), ``"dirichlet"`` (a Dirichlet(1) sample, i.e. uniform
    on the simplex; LibMTL additionally applies a softmax to it, molearn does not), ``"bernoulli"``
    (0/1 weights, uniform over the non-zero vectors, as LibMTL's resampling until non-zero; exact for
    K ≤ 62) and ``"one_hot"`` (one random objective per step, LibMTL ``constrained_Bernoulli``).

    ``scale``: the paper, LibMTL and TorchJD (``Random``) use weights summing to 1 (``scale=1``,
    default); some re-implementations multiply by K (``scale="K"``). The draw uses the losses'
    dtype and device and ``generator`` if given (it must live on the losses' device), otherwise the
    global RNG. One backward pass (``task_grad="weighted"``). K = 1: the weight is ``scale``.
    """

    needs: ClassVar[Needs] = Needs()
    task_grad: ClassVar[TaskGrad] = "weighted"

    def __init__(
        self,
        distribution: Distribution = "softmax_normal",
        generator: torch.Generator | None = None,
        scale: float | Literal["K"] = 1.0,
    ) -> None:
        if distribution not in _DISTRIBUTIONS:
            raise ValueError(f"unknown distribution {distribution!r}; expected one of {_DISTRIBUTIONS}")
        if scale != "K" and not (isinstance(scale, int | float) and scale > 0):
            raise ValueError(f"scale must be a positive number or 'K', got {scale!r}")
        self.distribution = distribution
        self.generator = generator
        self.scale = scale

    def sample(self, k: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        """Draw one weight vector (before ``scale``)."""
        gen = self.generator
        if self.distribution == "softmax_normal":
            return torch.softmax(torch.randn(k, generator=gen, dtype=dtype, device=device), dim=0)
        if self.distribution == "softmax_uniform":
            return torch.softmax(torch.rand(k, generator=gen, dtype=dtype, device=device), dim=0)
        if self.distribution == "dirichlet":
            # Dirichlet(1, ..., 1) = normalised Exp(1) variables; 1 - U lies in (0, 1], so no log(0).
            u = torch.rand(k, generator=gen, dtype=torch.float64, device=device)
            e = -torch.log1p(-u)
            return (e / e.sum().clamp_min(torch.finfo(torch.float64).tiny)).to(dtype)
        if self.distribution == "one_hot":
            idx = torch.randint(0, k, (1,), generator=gen, device=device)
            return torch.zeros(k, dtype=dtype, device=device).scatter_(0, idx, 1.0)
        # bernoulli, conditioned on not all zero: the bits of an integer uniform in [1, 2^K - 1]
        if k <= 62:
            n = torch.randint(1, 2**k, (1,), generator=gen, device=device)
            bits = torch.arange(k, device=device)
            return ((n >> bits) & 1).to(dtype)
        probs = torch.full((k,), 0.5, dtype=dtype, device=device)
        return torch.bernoulli(probs, generator=gen)  # all-zero has probability 2^-K < 1e-18

    def combine(self, inputs: Inputs) -> Output:
        losses = inputs.losses
        k = inputs.num_objectives
        w = self.sample(k, losses.dtype, losses.device)
        scale = float(k) if self.scale == "K" else float(self.scale)
        return Output(weights=w * scale)
