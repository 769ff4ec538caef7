"""molearn: multi-objective learning for PyTorch."""

from . import engine, methods, solvers
from ._balancer import Balancer, NonFiniteLossError, StepInfo

__all__ = ["Balancer", "NonFiniteLossError", "StepInfo", "engine", "methods", "solvers"]
__version__ = "0.1.0"
