"""Per-objective statistics and writing combined directions back into ``.grad``: the only hot path.

:mod:`~molearn.engine._strategy` holds one class per way of computing them (``Balancer(mode=...)``),
:mod:`~molearn.engine._layers` the per-layer Gramian, :mod:`~molearn.engine._auto` the rules of ``auto``,
:mod:`~molearn.engine._dist` the reductions across ranks under ``torch.distributed`` (docs/distributed.md).
"""

from ._auto import RULES, Situation, batched_passes, choose
from ._dist import Collective, detect, find_wrappers
from ._dist_layers import DistributedLayerwise
from ._grads import flat_jacobian, jacobian_batched, jacobian_loop
from ._layers import LayerRecorder, describe_modules, external_uses
from ._probe import Probe, perturbed
from ._strategy import (
    BatchedJacobian,
    ClosureJacobian,
    LayerwiseGramian,
    LoopJacobian,
    LossOnly,
    Part,
    Representation,
    Request,
    Strategy,
    gram_dtype,
    gramian_of,
)
from ._write import (
    GradBuffer,
    accumulate_flat,
    add_grad,
    all_finite,
    backward_weighted,
    leaves_from_nodes,
    objective_root,
    reachable_leaves,
)

__all__ = [
    "RULES",
    "BatchedJacobian",
    "ClosureJacobian",
    "Collective",
    "DistributedLayerwise",
    "GradBuffer",
    "LayerRecorder",
    "LayerwiseGramian",
    "LoopJacobian",
    "LossOnly",
    "Part",
    "Probe",
    "Representation",
    "Request",
    "Situation",
    "Strategy",
    "accumulate_flat",
    "add_grad",
    "all_finite",
    "backward_weighted",
    "batched_passes",
    "choose",
    "describe_modules",
    "detect",
    "external_uses",
    "find_wrappers",
    "flat_jacobian",
    "gram_dtype",
    "gramian_of",
    "jacobian_batched",
    "jacobian_loop",
    "leaves_from_nodes",
    "objective_root",
    "perturbed",
    "reachable_leaves",
]
