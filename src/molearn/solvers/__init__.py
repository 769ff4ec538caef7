"""The K×K subproblems of multi-objective methods, in pure torch, batched, float64 inside, sync-free.

Two public submodules serve the methods as well: :mod:`.consts` (small constants created once per device) and
:mod:`.linalg` (eigen-decomposition and square solves without a host check off the CPU)."""

from ._alpha_fair import (
    alpha_fair,
    alpha_fair_residual,
    alpha_fair_sgd,
    alpha_fair_with_residual,
    alpha_fair_with_status,
)
from ._cagrad import cagrad_dual, cagrad_weights
from ._closed_form import (
    AlignedScale,
    aligned_mtl_weights,
    config_weights,
    gradvac_weights,
    imtl_g_weights,
    pcgrad_weights,
    psd_pinv,
    random_orders,
)
from ._dual_cone import DualConeSolver, kkt_residual_dual_cone, project_dual_cone, project_dual_cone_residual
from ._min_norm import kkt_residual_min_norm, min_norm, min_norm_frank_wolfe
from ._simplex import project_simplex
from ._status import (
    CONVERGED,
    INFEASIBLE,
    ITERATION_LIMIT,
    KKT_TOL,
    STATUS_NAMES,
    status_from_residual,
    status_name,
)

__all__ = [
    "CONVERGED",
    "INFEASIBLE",
    "ITERATION_LIMIT",
    "KKT_TOL",
    "STATUS_NAMES",
    "AlignedScale",
    "DualConeSolver",
    "aligned_mtl_weights",
    "alpha_fair",
    "alpha_fair_residual",
    "alpha_fair_sgd",
    "alpha_fair_with_residual",
    "alpha_fair_with_status",
    "cagrad_dual",
    "cagrad_weights",
    "config_weights",
    "gradvac_weights",
    "imtl_g_weights",
    "kkt_residual_dual_cone",
    "kkt_residual_min_norm",
    "min_norm",
    "min_norm_frank_wolfe",
    "pcgrad_weights",
    "project_dual_cone",
    "project_dual_cone_residual",
    "project_simplex",
    "psd_pinv",
    "random_orders",
    "status_from_residual",
    "status_name",
]
