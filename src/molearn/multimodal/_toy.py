"""A synthetic two-modality toy: class-conditional Gaussians, one informative modality and one weak one."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["two_gaussian_modalities"]


def two_gaussian_modalities(
    n: int,
    *,
    num_classes: int = 4,
    dims: tuple[int, int] = (16, 16),
    separation: tuple[float, float] = (3.0, 1.0),
    seed: int = 0,
    names: tuple[str, str] = ("strong", "weak"),
) -> tuple[dict[str, Tensor], Tensor]:
    """``n`` samples: label y uniform over ``num_classes``; modality j is ``separation[j] · μ_{j,y} + ε``
    with unit-norm class means μ (drawn once from ``seed``) and ε ~ N(0, I). The first modality (larger
    separation) is learnt much faster than the second: the imbalance the balancing methods address.
    The class means depend on ``seed`` only, so two calls with the same seed and different ``n`` are
    draws from one distribution only if you split one call; use one call and slice for train/test.
    """
    if n < 1 or num_classes < 2:
        raise ValueError(f"need n >= 1 and num_classes >= 2, got n={n}, num_classes={num_classes}")
    if len(dims) != 2 or len(separation) != 2 or len(names) != 2:
        raise ValueError("dims, separation and names must each have two entries (two modalities)")
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(num_classes, (n,), generator=g)
    out: dict[str, Tensor] = {}
    for name, d, sep in zip(names, dims, separation, strict=True):
        means = torch.randn(num_classes, d, generator=g)
        means = means / means.norm(dim=1, keepdim=True)
        out[name] = sep * means[labels] + torch.randn(n, d, generator=g)
    return out, labels
