"""Training layer: a small trainer for multi-objective models on top of :class:`molearn.Balancer`.

:class:`Trainer` runs the balancing methods exactly as a user's loop would, logs every step and epoch to
CSV (and optionally TensorBoard), shows a progress line, and checkpoints so that a killed run resumes
bit-for-bit.
"""

from ._checkpoint import atomic_save
from ._data import BatchStream
from ._log import CsvLog, Progress
from ._trainer import Trainer

__all__ = ["BatchStream", "CsvLog", "Progress", "Trainer", "atomic_save"]
