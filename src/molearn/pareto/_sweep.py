r"""Preference sweep: one decision vector per preference, all trained at once.

:func:`preference_sweep` places ``n_prefs`` preferences uniformly on the simplex (2 objectives: evenly
spaced; 3 or more: the Das–Dennis lattice), builds one preference-conditioned method per preference and
trains one decision vector per preference with Adam, projected back into the problem's box after each step.

**Shared work.** Row :math:`i` of the ``(n_prefs, n_var)`` tensor ``X`` is preference :math:`i`'s decision
vector, and the problem maps rows independently: :math:`F_{i\cdot}` depends on :math:`X_{i\cdot}` only.
Hence the gradient of :math:`\sum_i F_{ij}` w.r.t. ``X`` has, in row :math:`i`, exactly
:math:`\nabla_{x_i} F_{ij}` — K backward passes (one per objective) give all ``n_prefs`` per-row Jacobians
:math:`J_i \in \mathbb R^{K \times n_{var}}` at once, instead of ``n_prefs × K`` passes. Each row's method
then gets the same :class:`~molearn.methods.Inputs` a ``Balancer(method, shared=[x_i])`` would build
(losses :math:`F_{i\cdot}`, Gramian :math:`J_i J_i^\top`, Jacobian where declared) and its update
:math:`J_i^\top w_i` (or its direction) is written into row :math:`i` of ``X.grad``. Adam acts element-wise,
so one Adam on ``X`` is exactly ``n_prefs`` independent Adams: the result equals ``n_prefs`` separate
Balancer runs (checked in the tests), at the cost of one batched forward and K backward passes per step.
Where the method class offers ``combine_many(methods, losses (N, K), gramian (N, K, K) or None)`` (EPO,
PMGDA: their LPs are solved by vertex enumeration; COSMOS), all N weight vectors come from one batched
call instead of N ``combine`` calls; it returns ``None`` when the instances cannot share a solve (different
hyper-parameters), and the per-preference loop is used.

The learning rate follows a cosine schedule from ``lr`` down to ``lr * lr_min_factor`` so that methods with
non-smooth weights (Tchebycheff's one-hot) settle on their point. The box is shrunk by
``margin * (upper - lower)`` because some problems have infinite derivatives on it (ZDT1 at
:math:`x_1 = 0`: :math:`\sqrt{f_1}`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .. import methods as _methods
from ..methods import Inputs, Method
from ._problems import Problem, das_dennis
from ._problems import problem as _problem

__all__ = ["SweepResult", "make_preference_method", "preference_sweep", "uniform_preferences"]

#: per-method settings for the sweep (a method name's keyword arguments besides ``pref``).
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "stch": {"variant": "plain", "mu": 0.01},
}
_LINEAR = ("ls", "linear", "fixed")


def uniform_preferences(n_obj: int, n: int, *, boundary: float = 1e-3) -> Tensor:
    """Uniform preferences on the simplex, shape (N, n_obj), float64, rows summing to 1.

    Two objectives: ``n`` evenly spaced vectors ``(t, 1 - t)``. More: the Das–Dennis lattice with the
    largest number of divisions ``H`` whose size :math:`\\binom{H + m - 1}{m - 1}` is at most ``n`` (so
    ``N <= n``; at least the m vertices). The vectors are pulled into the interior,
    ``(1 - m·boundary) p + boundary``, so that methods which divide by the preference (EPO, modified
    Tchebycheff, STCH) accept them and the end points stay (nearly) Pareto optimal rather than weakly.
    """
    if n_obj < 2:
        raise ValueError(f"a preference sweep needs at least 2 objectives, got {n_obj}")
    if n < 2:
        raise ValueError(f"a preference sweep needs at least 2 preferences, got {n}")
    if not 0 <= boundary * n_obj < 1:
        raise ValueError(f"boundary must be in [0, 1/n_obj), got {boundary}")
    if n_obj == 2:
        t = torch.linspace(0.0, 1.0, n, dtype=torch.float64)
        p = torch.stack([t, 1 - t], dim=1)
    else:
        h = 1
        while math.comb(h + 1 + n_obj - 1, n_obj - 1) <= n:
            h += 1
        p = das_dennis(n_obj, h)
    return (1 - n_obj * boundary) * p + boundary


def make_preference_method(name: str, pref: Tensor, **kwargs: Any) -> Method:
    """The method ``name`` conditioned on ``pref``: ``"ls"``/``"linear"``/``"fixed"`` is linear
    scalarisation (:class:`~molearn.methods.Fixed` with the preference as weights); any other name goes to
    :func:`molearn.methods.get` with ``pref=pref`` and the :data:`METHOD_DEFAULTS` for that name, overridden
    by ``kwargs``."""
    key = name.lower().replace("-", "").replace("_", "")
    if key in _LINEAR:
        return _methods.Fixed(weights=pref)
    return _methods.get(name, pref=pref, **{**METHOD_DEFAULTS.get(key, {}), **kwargs})


@dataclass
class SweepResult:
    """Outcome of :func:`preference_sweep`: the final objective values ``F`` (N, n_obj), decision vectors
    ``X`` (N, n_var), the preferences (N, n_obj), and ``n_evals`` — function evaluations, counted per
    decision vector (one batched forward per step plus the final one: ``N * (steps + 1)``)."""

    F: Tensor
    X: Tensor
    prefs: Tensor
    n_evals: int
    method: str


def preference_sweep(
    problem: Problem | str,
    method_name: str,
    n_prefs: int,
    *,
    steps: int = 500,
    lr: float = 0.01,
    seed: int = 0,
    lr_min_factor: float = 0.01,
    margin: float = 1e-9,
    boundary: float = 1e-3,
    prefs: Tensor | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    method_kwargs: dict[str, Any] | None = None,
    batched: bool = True,
) -> SweepResult:
    """Train one decision vector per preference with ``method_name`` (see the module docstring).

    Args:
        problem: a :class:`Problem` or a name for :func:`molearn.pareto.problem`.
        method_name: ``"ls"`` (linear scalarisation) or a preference-conditioned method name
            (``"tchebycheff"``, ``"modifiedtchebycheff"``, ``"pbi"``, ``"epo"``, ``"stch"``, ...).
        n_prefs: requested number of preferences (:func:`uniform_preferences`; 3+ objectives may give fewer).
        steps: Adam steps; lr: initial learning rate (cosine-annealed to ``lr * lr_min_factor``).
        seed: the start points are uniform in the box, drawn from a generator with this seed.
        prefs: explicit preferences (N, n_obj) instead of the uniform ones.
        method_kwargs: extra keyword arguments for every method instance.
        batched: use the method class's ``combine_many`` (all preferences in one solve) where it has
            one; ``False`` calls ``combine`` once per preference (same result, for checking).
    """
    prob = _problem(problem) if isinstance(problem, str) else problem
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    m = prob.n_obj
    P = uniform_preferences(m, n_prefs, boundary=boundary) if prefs is None else torch.as_tensor(prefs)
    P = P.to(torch.float64)
    if P.dim() != 2 or P.shape[1] != m:
        raise ValueError(f"prefs must have shape (N, {m}), got {tuple(P.shape)}")
    n = P.shape[0]
    meths = [make_preference_method(method_name, P[i], **(method_kwargs or {})) for i in range(n)]
    needs = meths[0].needs
    # a method class may solve all N rows at once (``combine_many``: EPO, PMGDA); it returns None when
    # the instances cannot share one solve, and the loop below then calls each ``combine``
    many = getattr(type(meths[0]), "combine_many", None) if batched else None
    if needs.batches > 1 or needs.closure or needs.after_step:
        raise ValueError(
            f"{type(meths[0]).__name__} needs independent batches, a closure or post-step losses; "
            "the deterministic preference sweep supports single-evaluation methods only"
        )

    lo = prob.lower.to(dtype=dtype, device=device)
    hi = prob.upper.to(dtype=dtype, device=device)
    lo, hi = lo + margin * (hi - lo), hi - margin * (hi - lo)
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(n, prob.n_var, generator=gen, dtype=torch.float64).to(dtype=dtype, device=device)
    X = (lo + u * (hi - lo)).requires_grad_(True)
    opt = torch.optim.Adam([X], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1), eta_min=lr * lr_min_factor)

    for _ in range(steps):
        F = prob.evaluate(X)
        # row i of grad(F[:, j].sum(), X) is ∇_{x_i} F_ij: rows are independent (module docstring)
        J = torch.stack(
            [torch.autograd.grad(F[:, j].sum(), X, retain_graph=j < m - 1)[0] for j in range(m)], dim=1
        )  # (n, m, n_var)
        G = J @ J.transpose(1, 2) if needs.gradients else None
        Fd = F.detach()
        W = many(meths, Fd, G) if many is not None else None
        if W is not None:  # all N preferences' weights in one batched solve
            update = (W.to(dtype).unsqueeze(1) @ J).squeeze(1)
        else:
            rows = []
            for i, meth in enumerate(meths):
                inp = Inputs(
                    losses=Fd[i],
                    gramian=G[i] if G is not None else None,
                    jacobian=J[i] if needs.jacobian else None,
                )
                out = meth.combine(inp)
                if out.direction is not None:
                    rows.append(out.direction.to(dtype))
                else:
                    assert out.weights is not None
                    rows.append(out.weights.to(dtype) @ J[i])
            update = torch.stack(rows)
        opt.zero_grad(set_to_none=True)
        X.grad = update
        opt.step()
        sched.step()
        with torch.no_grad():
            X.copy_(torch.maximum(torch.minimum(X, hi), lo))

    with torch.no_grad():
        F = prob.evaluate(X)
    return SweepResult(F=F.detach(), X=X.detach(), prefs=P, n_evals=n * (steps + 1), method=method_name)
