"""Solver outcomes as device tensors: what a residual alone cannot say (a fallback is not a solution).

Every iterative solver of :mod:`molearn.solvers` runs a fixed number of iterations (no host sync), so it
cannot stop early or raise; instead it reports, beside its residual, a status code (an int64 tensor of
the batch shape) that a caller reads whenever it synchronises anyway (logging, ``StepInfo.to_dict``).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "CONVERGED",
    "INFEASIBLE",
    "ITERATION_LIMIT",
    "KKT_TOL",
    "STATUS_NAMES",
    "status_from_residual",
    "status_name",
]

#: the residual is within the solver's tolerance: the returned weights solve the problem
CONVERGED = 0
#: the iterations ran out above the tolerance (a solvable problem that needs more, or an ill-posed one)
ITERATION_LIMIT = 1
#: the problem has no solution (e.g. Nash-MTL/FairGrad on Pareto-stationary gradients); the weights are
#: the documented fallback
INFEASIBLE = 2
STATUS_NAMES = ("converged", "iteration limit", "infeasible")
#: the scale-free KKT residual below which the QP solvers' answers count as converged
KKT_TOL = 1e-6


def status_from_residual(residual: Tensor, tol: float, infeasible: Tensor | None = None) -> Tensor:
    """``CONVERGED`` where ``residual ≤ tol``, ``INFEASIBLE`` where ``infeasible`` holds, otherwise
    ``ITERATION_LIMIT`` (a NaN residual never counts as converged). No host sync."""
    code = torch.where(residual <= tol, CONVERGED, ITERATION_LIMIT)
    if infeasible is not None:
        code = torch.where(infeasible, INFEASIBLE, code)
    return code


def status_name(code: int | Tensor) -> str:
    """``"converged"``, ``"iteration limit"`` or ``"infeasible"`` (a tensor code is read: a sync)."""
    value = int(code)  # sync: reading a code for a message or a log
    if not 0 <= value < len(STATUS_NAMES):
        raise ValueError(f"unknown solver status {value}")
    return STATUS_NAMES[value]
