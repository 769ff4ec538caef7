"""Multi-task architectures: a shared trunk and task-specific heads.
"""

from ._lenet import (
    MultiLeNet,
)

__all__ = [
    "MultiLeNet",
]
