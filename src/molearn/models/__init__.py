"""Multi-task architectures. Each model says which parameters the tasks share (``shared_parameters()``,
what the methods balance) and which are task-specific (``task_parameters()``); see docs/architectures.md."""

from ._common import MultiTaskModule
from ._lenet import (
    MultiLeNet,
)
from ._moe import CGC, PLE, DSelectK, MMoE, smooth_step
from ._mpnn import MPNN, EdgePlan, NNConv, Set2Set
from ._mtan import MTAN
from ._resnet import CelebANet, ResNet18, ResNet18MultiHead
from ._segnet import SegNet, SegNetMTAN, is_normal_task
from ._sharing import CrossStitch, HardSharing

__all__ = [
    "CGC",
    "MPNN",
    "MTAN",
    "PLE",
    "CelebANet",
    "CrossStitch",
    "DSelectK",
    "EdgePlan",
    "HardSharing",
    "MMoE",
    "MultiLeNet",
    "MultiTaskModule",
    "NNConv",
    "ResNet18",
    "ResNet18MultiHead",
    "SegNet",
    "SegNetMTAN",
    "Set2Set",
    "is_normal_task",
    "smooth_step",
]
