"""The K×K subproblems of multi-objective methods, in pure torch, batched, float64 inside, sync-free."""

from ._min_norm import min_norm
from ._simplex import project_simplex

__all__ = ["min_norm", "project_simplex"]
