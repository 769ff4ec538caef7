"""Per-objective gradients and writing combined directions back into ``.grad``: the only hot path."""

from ._grads import flat_jacobian, gramian_blockwise, jacobian_batched, jacobian_loop
from ._probe import Probe, perturbed
from ._write import accumulate_flat, backward_weighted, leaves_from_nodes, objective_root, reachable_leaves

__all__ = [
    "Probe",
    "accumulate_flat",
    "backward_weighted",
    "flat_jacobian",
    "gramian_blockwise",
    "jacobian_batched",
    "jacobian_loop",
    "leaves_from_nodes",
    "objective_root",
    "perturbed",
    "reachable_leaves",
]
