"""Tchebycheff and modified Tchebycheff scalarisation."""

from __future__ import annotations

from typing import ClassVar

import torch

from ._base import Inputs, Method, Needs, Output, TaskGrad
from ._preference import PrefLike, argmax_onehot, check_ideal, check_pref, resolve_ideal, resolve_pref


class Tchebycheff(Method):
    r"""Tchebycheff scalarisation :math:`\min_\theta \max_i p_i (L_i - z_i)` (Miettinen, *Nonlinear
    Multiobjective Optimization*, 1999; MOEA/D, Zhang & Li, IEEE TEVC 2007; LibMOON ``tche``).

    .. math:: i^\star = \arg\max_i p_i (L_i - z_i), \qquad w = e_{i^\star}

    The update is the gradient of the objective that is worst relative to the preference. ``pref``
    :math:`p` (tensor or sequence, default ``None`` = uniform :math:`1/K` resolved at the first
    :meth:`combine`) must be non-negative with a positive sum and is normalised to sum 1 (the argmax
    does not depend on its scale); a wrong length raises :class:`ValueError` at :meth:`combine`.
    ``ideal`` :math:`z`: scalar or K-vector, default 0.

    Weight: LibMOON's ``tche`` returns :math:`L_{i^\star}` itself, so its gradient is the one-hot
    :math:`e_{i^\star}` (molearn's choice); the textbook :math:`\max_i p_i(L_i - z_i)` has gradient
    :math:`p_{i^\star} e_{i^\star}`, the same direction scaled by :math:`p_{i^\star}`. Exact ties share the
    weight equally (a subgradient; keeps the method permutation-equivariant). Loss-only, one backward of
    :math:`\sum_i w_i L_i` (``task_grad="weighted"``). K = 1: weight 1, the gradient itself.
    Linear scalarisation is :class:`~molearn.methods.Fixed`.
    """

    needs: ClassVar[Needs] = Needs()
    task_grad: ClassVar[TaskGrad] = "weighted"
    _divide: ClassVar[bool] = False

    def __init__(self, pref: PrefLike = None, ideal: PrefLike = 0.0) -> None:
        name = type(self).__name__
        self.pref = check_pref(pref, name, positive=self._divide)
        self.ideal = check_ideal(ideal, name)

    def _score(self, f: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return p * f

    def combine(self, inputs: Inputs) -> Output:
        losses = inputs.losses.detach()
        k = inputs.num_objectives
        name = type(self).__name__
        x = losses.to(torch.float64)
        p = resolve_pref(self.pref, k, name, x)
        z = resolve_ideal(self.ideal, k, name, x)
        w = argmax_onehot(self._score(x - z, p))
        return Output(weights=w.to(losses.dtype))


class ModifiedTchebycheff(Tchebycheff):
    r"""Modified Tchebycheff scalarisation :math:`\min_\theta \max_i (L_i - z_i)/p_i` (Ma, Zhang, Tian,
    Yang, Zhu, "On Tchebycheff Decomposition Approaches for Multiobjective Evolutionary Optimization",
    IEEE TEVC 2017; LibMOON ``mtche`` = ``tche`` with weights :math:`1/p`).

    .. math:: i^\star = \arg\max_i \frac{L_i - z_i}{p_i}, \qquad w = e_{i^\star}

    With this form the minimiser on a convex front lies on the ray :math:`L - z \propto p`. ``pref``
    entries must be positive (the method divides by them); otherwise as :class:`Tchebycheff` (normalised
    to sum 1, uniform default, one-hot weight as LibMOON's ``tche`` returns :math:`L_{i^\star}`, ties
    shared, ``task_grad="weighted"``, K = 1 exact).
    """

    _divide: ClassVar[bool] = True

    def _score(self, f: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return f / p
