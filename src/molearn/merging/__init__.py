r"""Model merging: one model from K fine-tuned variants of a base model, and Pareto fronts of merges.

Fine-tuning a base model :math:`\theta_0` on K tasks gives K models :math:`\theta_i`; **model merging**
combines them into one model without further training, through their *task vectors*
:math:`\tau_i = \theta_i - \theta_0`. The merges are points :math:`\theta_0 + \sum_i c_i \tau_i` of the
task vectors' span (or, for TIES, a per-entry rewrite of the :math:`\tau_i`), and the choice of :math:`c`
trades the tasks off against each other: a multi-objective problem whose Pareto front :func:`map_front`
approximates.

Everything works on plain state dicts (``{name: Tensor}``): any ``nn.Module``'s ``state_dict()`` and LoRA
adapter state dicts alike. Integer buffers (``num_batches_tracked``) are copied from the base.

- :func:`task_vectors`, :func:`merge`: :math:`\tau_i`, and :math:`\theta_0 + \sum_i c_i \tau_i`;
- :func:`task_arithmetic`: :math:`\theta_0 + \lambda \sum_i \tau_i` (Ilharco et al., ICLR 2023);
- :func:`ties`: trim, elect sign, disjoint mean (Yadav et al., NeurIPS 2023);
- :func:`frank_wolfe_merge`: FW-Merging, Frank-Wolfe over the hull of the fine-tuned models, driven by the
  gradient of the summed task losses (Chen et al., ICCV 2025);
- :func:`map_front`: MAP, quadratic surrogates of the metrics in :math:`c` and their amortised Pareto front
  (Li et al., arXiv:2406.07529);
- :func:`grid_search`: the baseline, the metrics on a regular grid of :math:`c` at a given budget;
- :func:`lora_task_vector`, :func:`load_lora_task_vector`: a LoRA adapter's dense task vector
  :math:`s\,BA` under the base model's weight names, so K adapters of one base merge like K fine-tunes.

Example::

    import torch
    from molearn.merging import merge, task_arithmetic, task_vectors, ties

    base = torch.nn.Linear(4, 2).state_dict()
    tuned = [{k: v + 0.1 * torch.randn_like(v) for k, v in base.items()} for _ in range(3)]
    taus = task_vectors(base, tuned)
    merged = task_arithmetic(base, taus, scale=0.3)  # theta_0 + 0.3 * sum(tau_i)
    trimmed = ties(base, taus, density=0.2)           # TIES-Merging
    first = merge(base, taus, [1.0, 0.0, 0.0])        # gives back tuned[0]
"""

from ._grid import GridResult, grid_points, grid_search
from ._lora import load_lora_task_vector, lora_task_vector
from ._map import MapResult, QuadraticSurrogate, fit_quadratic, map_front, n_quadratic_terms
from ._methods import MergeResult, frank_wolfe_merge, task_arithmetic, ties
from ._vectors import StateDict, merge, task_vectors

__all__ = [
    "GridResult",
    "MapResult",
    "MergeResult",
    "QuadraticSurrogate",
    "StateDict",
    "fit_quadratic",
    "frank_wolfe_merge",
    "grid_points",
    "grid_search",
    "load_lora_task_vector",
    "lora_task_vector",
    "map_front",
    "merge",
    "n_quadratic_terms",
    "task_arithmetic",
    "task_vectors",
    "ties",
]
