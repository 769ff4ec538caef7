"""Aligned-MTL: align the principal components of the gradient matrix."""

from __future__ import annotations

from typing import ClassVar

from ..solvers import AlignedScale, aligned_mtl_weights
from ._base import Inputs, Method, Needs, Output, check_gramian


class AlignedMTL(Method):
    r"""Aligned-MTL (Senushkin et al., "Independent Component Alignment for Multi-Task Learning",
    CVPR 2023, https://arxiv.org/abs/2305.19000).

    .. math:: G = V\Lambda V^\top,\quad B = \sqrt{\sigma}\, V\Lambda^{-1/2}V^\top,\quad \alpha = B\mathbb 1,
        \quad d = \sum_i \alpha_i g_i

    keeping the eigenpairs with :math:`\lambda > \lambda_{max} K \epsilon` (:math:`\epsilon` of the
    Gramian's dtype). The update :math:`d = J^\top B \mathbb 1` has pairwise orthogonal components of
    equal norm :math:`\sqrt\sigma`. ``scale`` picks :math:`\sigma`: ``"min"`` (default; the smallest kept
    eigenvalue, as in LibMTL ``Aligned_MTL`` and the official SamsungLabs code), ``"median"`` (lower
    median) or ``"rmse"`` (mean), the official code's other options.

    Differences: LibMTL uses the deprecated ``torch.symeig`` and ``torch.finfo().eps`` (float32 eps);
    molearn uses ``torch.linalg.eigh`` in float64 with the eps of the input dtype (the same for the usual
    float32 Gramians), masks instead of truncating, and returns zero weights for a zero Gramian
    (TorchJD returns ``B = I`` there; the update is zero either way). TorchJD 0.18's ``AlignedMTL``
    multiplies :math:`B` by its preference vector, by default :math:`\mathbb 1/K`, so its weights are
    those of LibMTL/molearn divided by K. ``info["rank"]`` is the number of kept eigenpairs.
    """

    needs: ClassVar[Needs] = Needs(gramian=True)

    def __init__(self, scale: AlignedScale = "min") -> None:
        if scale not in ("min", "median", "rmse"):
            raise ValueError(f"scale must be 'min', 'median' or 'rmse', got {scale!r}")
        self.scale = scale

    def combine(self, inputs: Inputs) -> Output:
        g = check_gramian(inputs.gramian, "AlignedMTL")
        w, rank = aligned_mtl_weights(g, scale=self.scale)
        return Output(weights=w.to(inputs.losses.dtype), info={"rank": rank})
