"""MoDo: multi-objective gradient with double sampling (one projected step on λ per iteration)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from ..solvers import project_simplex
from ._base import Inputs, Method, Needs, Output, check_jacobian, state_tensor

Variant = Literal["three", "two"]


class MoDo(Method):
    r"""MoDo (Chen, Fernando, Ying, Chen, "Three-Way Trade-Off in Multi-Objective Learning: Optimization,
    Generalization and Conflict-Avoidance", NeurIPS 2023 / JMLR 2024, https://arxiv.org/abs/2305.20057).

    Independent mini-batches give independent Jacobians :math:`G_1, G_2, \dots`; since
    :math:`\mathbb E[G_1 G_2^\top] = \bar G \bar G^\top`, one projected step on the MGDA weights λ (state,
    initialised to :math:`\mathbb 1/K`) uses an unbiased estimate of the gradient of
    :math:`\tfrac12\|\bar G^\top\lambda\|^2 + \tfrac\rho2\|\lambda\|^2`:

    .. math:: \lambda \leftarrow \Pi_\Delta\big(\lambda - \gamma\,(G_1 G_2^\top \lambda + \rho\lambda)\big)

    (:math:`\Pi_\Delta` = :func:`molearn.solvers.project_simplex`), then the model moves along a
    combination with the **updated** λ (both official codes update λ first):

    - ``variant="three"`` (paper, median-research-group/LibMTL ``weighting/MoDo.py``; ``Needs.batches``
      3): :math:`G_1, G_2` are the two batches drawn first (``inputs.extra``), the direction is
      :math:`G_3^\top\lambda` on the last one. LibMTL defaults γ = 1e-3 (``MoDo_gamma``), ρ = 0.1.
    - ``variant="two"`` (the authors' heshandevaka/Trade-Off-MOL: ``Toy/moo.py``, ``Toy-MNIST/toy.py``,
      ``LibMTL/LibMTL/weighting/MoDo.py``; ``Needs.batches`` 2, used there with half-size batches,
      ``batch_size // 2``): :math:`G_1` is the first batch, :math:`G_2` the last, the direction is
      :math:`\tfrac12 (G_1 + G_2)^\top\lambda` (``average=True``, the toys) or the unhalved
      :math:`(G_1 + G_2)^\top\lambda` (``average=False``, its LibMTL fork, "averaging via lr"). Its
      defaults are γ = ρ = 0.1 (Toy-MNIST, the fork's ``config.py``); its NYUv2 script uses γ = 1e-3.
      ``Toy-MNIST/toy_fast_3sample.py`` (3 batches, direction averaged over all three) is not provided.

    Task-specific parameters get the mean over the batches of :math:`\sum_i \nabla L_i` (the engine's
    rule), as in LibMTL, which divides the heads' gradients accumulated over its 3 backward passes by 3;
    the Trade-Off-MOL LibMTL fork sums them over its 2 batches (no division). The official
    ``_projection2simplex`` (a sort-and-scan loop) and molearn's sort-based projection compute the same
    exact projection. The fork's ``modo_gn`` gradient normalisation is commented out in its code and
    not provided.

    Everything is a K-vector operation or the product :math:`G_1 (G_2^\top\lambda)` (two K×P
    matrix-vector products, no K×K cross Gramian), so the method is permutation-equivariant; with K = 1,
    λ = 1 and the update is the gradient (``average=False``: twice the gradient).

    Cost per step: ``Needs.batches`` (3 or 2) forward passes and 3K (2K) backward passes for the
    per-objective gradients (the Jacobians of all batches are needed). State: λ (K, float64), recreated
    uniform when K changes; ``state_dict()`` holds ``lambd``. ``info["lambda"]`` is λ after the step.
    """

    def __init__(
        self, gamma: float = 1e-3, rho: float = 0.1, variant: Variant = "three", average: bool = True
    ) -> None:
        if variant not in ("three", "two"):
            raise ValueError(f"variant must be 'three' or 'two', got {variant!r}")
        if not gamma >= 0:
            raise ValueError(f"gamma must be non-negative, got {gamma!r}")
        if not rho >= 0:
            raise ValueError(f"rho must be non-negative, got {rho!r}")
        self.gamma = float(gamma)
        self.rho = float(rho)
        self.variant = variant
        self.average = bool(average)
        self._lambd: Tensor | None = None

    @property  # type: ignore[override]
    def needs(self) -> Needs:  # type: ignore[override]
        return Needs(jacobian=True, batches=3 if self.variant == "three" else 2)

    def combine(self, inputs: Inputs) -> Output:
        batches = self.needs.batches
        if len(inputs.extra) != batches - 1:
            raise ValueError(
                f"MoDo(variant={self.variant!r}) needs {batches} independent batches "
                f"(got {len(inputs.extra) + 1}): use Balancer.step"
            )
        jacs = [check_jacobian(b.jacobian, "MoDo") for b in [*inputs.extra, inputs]]
        g1, g2 = jacs[0], jacs[1]
        k = g1.shape[0]
        if self._lambd is None or self._lambd.shape != (k,) or self._lambd.device != g1.device:
            self._lambd = torch.full((k,), 1.0 / k, dtype=torch.float64, device=g1.device)
        lambd = self._lambd
        # G1 (G2ᵀ λ): two matrix-vector products in the Jacobians' dtype
        cross = (g1 @ (lambd.to(g2.dtype) @ g2)).to(torch.float64)
        lambd = project_simplex(lambd - self.gamma * (cross + self.rho * lambd))
        self._lambd.copy_(lambd)  # in place: the state stays the same tensor (CUDA-graph friendly)
        dtype = inputs.losses.dtype
        if self.variant == "three":
            return Output(weights=lambd.to(dtype), info={"lambda": lambd})
        w = (0.5 * lambd if self.average else lambd).to(dtype)
        return Output(weights=w, extra_weights=[w.clone()], info={"lambda": lambd})

    def state_dict(self) -> dict[str, Any]:
        return {} if self._lambd is None else {"lambd": self._lambd.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unknown = set(state) - {"lambd"}
        if unknown:
            raise ValueError(f"MoDo got unknown state keys {sorted(unknown)}")
        if not state:
            self.reset()
            return
        self._lambd = state_tensor("MoDo", state, "lambd", ndim=1).detach().to(torch.float64).clone()

    def reset(self) -> None:
        self._lambd = None
