"""Published results of the field's standard benchmarks, to print beside molearn's measured ones.

Every row is a number read from a named source (paper, table) with the protocol it was obtained under, so a
reader knows what it is comparable to. Conventions:

- ``method`` is molearn's method name (:func:`molearn.methods.registry`; linear scalarisation / "LS" /
  "joint training" is ``ew``, the scale-invariant baseline "SI" (Σ log ℓ) is ``loglosses``), or
  :data:`STL` for the single-task baselines the source's Δm is computed against.
- ``metric`` is ``"delta_m"`` (Δm%, molearn's sign: **lower is better**, as in Nash-MTL and FAMO) or the
  name of one of the benchmark's metrics.
- ``value`` is the number as printed. ``unit="%"`` marks a percentage of a metric molearn reports as a
  fraction (accuracies, mIoU): the report multiplies the measured value by 100 before printing it beside.
  ``spread`` is the ± printed beside the value (the sources report standard errors or deviations over 3
  seeds; see ``note``).
- DB-MTL (Lin et al.) reports Δp, the same average with the opposite sign (higher is better); for Office-31
  / Office-Home (one metric per task) and QM9 (one per task) their per-task average equals the per-metric
  one, so ``value = -Δp`` exactly; the row's ``note`` says so.

Sources read (their text, tables and appendices): Navon et al., ICML 2022 (Nash-MTL; Tables 1-3, 6,
Appendix B); Liu et al., NeurIPS 2023 (FAMO; Tables 1-3, 5-7; CelebA protocol from the official code
``Cranial-XIX/FAMO`` ``experiments/celeba``); Phan et al., ICCV 2025 (Table 1, Multi-X with ResNet-18); Lin
et al., DB-MTL, arXiv:2308.12029 v3 (Tables 3-4). SDMGrad's and FairGrad's rows on NYUv2 / Cityscapes /
CelebA are as **quoted** by Qin et al. (NTKMTL, Tables 1-2): their own papers' tables were not reachable,
which each row's ``note`` says.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "BENCHMARK_NAMES",
    "PUBLISHED",
    "STL",
    "Published",
    "published",
    "published_benchmarks",
]

#: the method name of a single-task baseline row (not a molearn method: the reference of Δm)
STL = "stl"
#: the built-in benchmark names a published row may name
BENCHMARK_NAMES = (
    "multi_fashion",
    "multi_mnist",
    "multi_fashion_mnist",
    "qm9",
    "nyuv2",
    "cityscapes",
    "celeba",
    "office31",
    "office_home",
)
DELTA_M = "delta_m"


@dataclass(frozen=True)
class Published:
    """One published number: ``value`` of ``metric`` for ``method`` on ``benchmark``, read from
    ``source`` / ``table``, obtained under ``protocol`` (see the module docstring for the conventions)."""

    benchmark: str
    method: str
    metric: str
    value: float
    source: str
    table: str
    protocol: str
    spread: float | None = None
    unit: str = ""
    note: str = ""

    @property
    def label(self) -> str:
        """Short citation for a table cell: the source up to its colon, and the table."""
        return f"{self.source.split(':', 1)[0]}, {self.table}"


# ------------------------------------------------------------------------------------------------ sources
NASH = "Navon et al., ICML 2022: Multi-Task Learning as a Bargaining Game (Nash-MTL)"
FAMO = "Liu et al., NeurIPS 2023: FAMO: Fast Adaptive Multitask Optimization"
NTK = (
    "Qin et al., 2025: NTKMTL: Mitigating Task Imbalance in Multi-Task Learning from Neural Tangent Kernel "
    "Perspective"
)
PHAN = (
    "Phan et al., ICCV 2025: Beyond Losses Reweighting: Empowering Multi-Task Learning via the "
    "Generalization Perspective"
)
DBMTL = "Lin et al., arXiv 2308.12029 v3 (2025): Dual-Balancing for Multi-Task Learning (DB-MTL)"

QM9_PROTOCOL = (
    "Nash-MTL QM9: MPNN (Gilmer et al.) of the PyTorch Geometric example, 11 targets standardised, "
    "110k/10k/10k split, 300 epochs, batch 120, lr searched in {1e-3, 5e-4, 1e-4}, ReduceLROnPlateau and "
    "early stopping on validation Δm, 3 seeds"
)
DBMTL_QM9_PROTOCOL = (
    "DB-MTL's run of the Nash-MTL QM9 setup: MPNN, batch 128, 300 epochs, Adam lr 1e-3, ReduceLROnPlateau on "
    "validation Δp, its own single-task baselines (not Nash-MTL's), 3 seeds"
)
SCENE_PROTOCOL = (
    "MTAN on SegNet (STL: one SegNet per task), 200 epochs, Adam lr 1e-4 halved after 100 epochs, batch 2 "
    "(NYUv2) / 8 (Cityscapes, 128×256, 7 classes), data augmentation, test metrics averaged over the last "
    "10 epochs, 3 seeds"
)
CELEBA_PROTOCOL = (
    "FAMO CelebA: 40 binary attributes, 64×64 images, per-attribute F1, 15 epochs, batch 256, Adam lr 3e-4, "
    "test at the epoch of best mean validation F1 (official code experiments/celeba), 3 seeds"
)
MULTI_PROTOCOL = (
    "ResNet-18 backbone (the Multi-MNIST setup of Sener & Koltun 2018), not the Pareto-MTL LeNet; Task 1 "
    "(top-left item) and Task 2 (bottom-right item) test accuracy in %"
)
OFFICE_PROTOCOL = (
    "ResNet-18 pretrained on ImageNet (shared) + one linear head per domain, 224×224 inputs, 60/20/20 "
    "split, 100 epochs, batch 64, Adam lr 1e-4, weight decay 1e-5, 3 seeds"
)

_QUOTED = "as quoted by NTKMTL; the original paper's table was not read"
_SIGN = "DB-MTL prints Δp = -Δm (higher is better); sign flipped"


# ------------------------------------------------------------------------------------------------ tables
def _rows(
    benchmark: str,
    metrics: tuple[str, ...],
    table: Mapping[str, tuple[float, ...]],
    *,
    source: str,
    label: str,
    protocol: str,
    units: tuple[str, ...] | None = None,
    notes: Mapping[str, str] | None = None,
) -> list[Published]:
    """Rows of one printed table: ``table`` maps a method to its values in the order of ``metrics``."""
    out = []
    for method, values in table.items():
        if len(values) != len(metrics):
            raise ValueError(f"{benchmark} {method}: {len(values)} values for {len(metrics)} metrics")
        for i, (metric, value) in enumerate(zip(metrics, values)):
            unit = units[i] if units is not None else ""
            out.append(
                Published(
                    benchmark,
                    method,
                    metric,
                    value,
                    source,
                    label,
                    protocol,
                    unit=unit,
                    note=(notes or {}).get(method, ""),
                )
            )
    return out


def _dm(
    benchmark: str,
    table: Mapping[str, tuple[float, float | None]],
    *,
    source: str,
    label: str,
    protocol: str,
    note: str = "",
) -> list[Published]:
    """Δm% rows: ``table`` maps a method to (Δm%, the ± printed beside it or None)."""
    return [
        Published(benchmark, m, DELTA_M, v, source, label, protocol, spread=s, note=note)
        for m, (v, s) in table.items()
    ]


#: QM9 metric names of :mod:`molearn.compare._qm9` (per-target MAE; energies in meV as Nash-MTL prints them)
QM9_METRICS = tuple(
    f"mae_{t}"
    for t in ("mu", "alpha", "homo", "lumo", "r2", "zpve", "U0_atom", "U_atom", "H_atom", "G_atom", "cv")
)
#: NYUv2 metric names (segmentation mIoU and pixel accuracy, depth absolute / relative error, surface
#: normal mean / median angle error and fraction within 11.25°, 22.5°, 30°)
NYUV2_METRICS = (
    "miou",
    "pix_acc",
    "abs_err",
    "rel_err",
    "mean_angle",
    "median_angle",
    "within_11_25",
    "within_22_5",
    "within_30",
)
NYUV2_UNITS = ("%", "%", "", "", "", "", "%", "%", "%")
CITYSCAPES_METRICS = ("miou", "pix_acc", "abs_err", "rel_err")
CITYSCAPES_UNITS = ("%", "%", "", "")
MULTI_METRICS = ("acc_left", "acc_right")
OFFICE31_METRICS = ("acc_amazon", "acc_dslr", "acc_webcam")
OFFICE_HOME_METRICS = ("acc_art", "acc_clipart", "acc_product", "acc_real_world")


def _qm9() -> list[Published]:
    t6 = "Table 6"
    rows = _rows(
        "qm9",
        QM9_METRICS,
        {
            STL: (0.067, 0.181, 60.57, 53.91, 0.502, 4.53, 58.8, 64.2, 63.8, 66.2, 0.072),
            "ew": (0.106, 0.325, 73.57, 89.67, 5.19, 14.06, 143.4, 144.2, 144.6, 140.3, 0.128),
            "loglosses": (0.309, 0.345, 149.8, 135.7, 1.00, 4.50, 55.3, 55.75, 55.82, 55.27, 0.112),
            "rlw": (0.113, 0.340, 76.95, 92.76, 5.86, 15.46, 156.3, 157.1, 157.6, 153.0, 0.137),
            "dwa": (0.107, 0.325, 74.06, 90.61, 5.09, 13.99, 142.3, 143.0, 143.4, 139.3, 0.125),
            "uw": (0.386, 0.425, 166.2, 155.8, 1.06, 4.99, 66.4, 66.78, 66.80, 66.24, 0.122),
            "mgda": (0.217, 0.368, 126.8, 104.6, 3.22, 5.69, 88.37, 89.4, 89.32, 88.01, 0.120),
            "pcgrad": (0.106, 0.293, 75.85, 88.33, 3.94, 9.15, 116.36, 116.8, 117.2, 114.5, 0.110),
            "cagrad": (0.118, 0.321, 83.51, 94.81, 3.21, 6.93, 113.99, 114.3, 114.5, 112.3, 0.116),
            "imtlg": (0.136, 0.287, 98.31, 93.96, 1.75, 5.69, 101.4, 102.4, 102.0, 100.1, 0.096),
            "nashmtl": (0.102, 0.248, 82.95, 81.89, 2.42, 5.38, 74.5, 75.02, 75.10, 74.16, 0.093),
        },
        source=NASH,
        label=t6,
        protocol=QM9_PROTOCOL,
    )
    rows += _dm(
        "qm9",
        {
            "ew": (177.6, 3.4),
            "loglosses": (77.8, 9.2),
            "rlw": (203.8, 3.4),
            "dwa": (175.3, 6.3),
            "uw": (108.0, 22.5),
            "mgda": (120.5, 2.0),
            "pcgrad": (125.7, 10.3),
            "cagrad": (112.8, 4.0),
            "imtlg": (77.2, 9.3),
            "nashmtl": (62.0, 1.4),
        },
        source=NASH,
        label="Table 1",
        protocol=QM9_PROTOCOL,
        note="IMTL-G on feature-level gradients (as its authors propose); ± as printed, over 3 seeds",
    )
    rows += _rows(
        "qm9",
        QM9_METRICS,
        {"famo": (0.15, 0.30, 94.0, 95.2, 1.63, 4.95, 70.82, 71.2, 71.2, 70.3, 0.10)},
        source=FAMO,
        label="Table 2",
        protocol=QM9_PROTOCOL + " (FAMO γ = 0.001)",
    )
    rows += _dm(
        "qm9",
        {"famo": (58.5, 3.26)},
        source=FAMO,
        label="Table 2 (± from Table 6)",
        protocol=QM9_PROTOCOL + " (FAMO γ = 0.001)",
        note="± is the standard error over 3 seeds",
    )
    rows += _dm(
        "qm9",
        {
            "gls": (81.16, 15.5),
            "imtll": (77.06, 11.1),
            "gradnorm": (227.5, 1.85),
            "graddrop": (191.4, 9.62),
            "gradvac": (150.7, 7.41),
            "moco": (1314.0, 65.2),
            "alignedmtl": (80.58, 4.18),
            "dbmtl": (58.10, 3.89),
        },
        source=DBMTL,
        label="Table 3",
        protocol=DBMTL_QM9_PROTOCOL,
        note=_SIGN,
    )
    return rows


_NYU_NASH = {
    STL: (38.30, 63.76, 0.6754, 0.2780, 25.01, 19.21, 30.14, 57.20, 69.15),
    "ew": (39.29, 65.33, 0.5493, 0.2263, 28.15, 23.96, 22.09, 47.50, 61.08),
    "loglosses": (38.45, 64.27, 0.5354, 0.2201, 27.60, 23.37, 22.53, 48.57, 62.32),
    "rlw": (37.17, 63.77, 0.5759, 0.2410, 28.27, 24.18, 22.26, 47.05, 60.62),
    "dwa": (39.11, 65.31, 0.5510, 0.2285, 27.61, 23.18, 24.17, 50.18, 62.39),
    "uw": (36.87, 63.17, 0.5446, 0.2260, 27.04, 22.61, 23.54, 49.05, 63.65),
    "mgda": (30.47, 59.90, 0.6070, 0.2555, 24.88, 19.45, 29.18, 56.88, 69.36),
    "pcgrad": (38.06, 64.64, 0.5550, 0.2325, 27.41, 22.80, 23.86, 49.83, 63.14),
    "graddrop": (39.39, 65.12, 0.5455, 0.2279, 27.48, 22.96, 23.38, 49.44, 62.87),
    "cagrad": (39.79, 65.49, 0.5486, 0.2250, 26.31, 21.58, 25.61, 52.36, 65.58),
    "imtlg": (39.35, 65.60, 0.5426, 0.2256, 26.02, 21.19, 26.2, 53.13, 66.24),
    "nashmtl": (40.13, 65.93, 0.5261, 0.2171, 25.26, 20.08, 28.4, 55.47, 68.15),
}
_NYU_NASH_DM = {
    "ew": 5.59,
    "loglosses": 4.39,
    "rlw": 7.78,
    "dwa": 3.57,
    "uw": 4.05,
    "mgda": 1.38,
    "pcgrad": 3.97,
    "graddrop": 3.58,
    "cagrad": 0.20,
    "imtlg": -0.76,
    "nashmtl": -4.04,
}
_CITY_NASH = {
    STL: (74.01, 93.16, 0.0125, 27.77),
    "ew": (75.18, 93.49, 0.0155, 46.77),
    "loglosses": (70.95, 91.73, 0.0161, 33.83),
    "rlw": (74.57, 93.41, 0.0158, 47.79),
    "dwa": (75.24, 93.52, 0.0160, 44.37),
    "uw": (72.02, 92.85, 0.0140, 30.13),
    "mgda": (68.84, 91.54, 0.0309, 33.50),
    "pcgrad": (75.13, 93.48, 0.0154, 42.07),
    "graddrop": (75.27, 93.53, 0.0157, 47.54),
    "cagrad": (75.16, 93.48, 0.0141, 37.60),
    "imtlg": (75.33, 93.49, 0.0135, 38.41),
    "nashmtl": (75.41, 93.66, 0.0129, 35.02),
}
_CITY_NASH_DM = {
    "ew": 22.60,
    "loglosses": 14.11,
    "rlw": 24.38,
    "dwa": 21.45,
    "uw": 5.89,
    "mgda": 44.14,
    "pcgrad": 18.29,
    "graddrop": 23.73,
    "cagrad": 11.64,
    "imtlg": 11.10,
    "nashmtl": 6.82,
}


def _scene() -> list[Published]:
    rows = _rows(
        "nyuv2",
        NYUV2_METRICS,
        _NYU_NASH,
        source=NASH,
        label="Table 2",
        protocol=SCENE_PROTOCOL,
        units=NYUV2_UNITS,
    )
    rows += _dm(
        "nyuv2",
        {m: (v, None) for m, v in _NYU_NASH_DM.items()},
        source=NASH,
        label="Table 2",
        protocol=SCENE_PROTOCOL,
    )
    famo_scene = SCENE_PROTOCOL + " (FAMO γ = 0.001 on NYUv2, 0.01 on Cityscapes)"
    rows += _rows(
        "nyuv2",
        NYUV2_METRICS,
        {"famo": (38.88, 64.90, 0.5474, 0.2194, 25.06, 19.57, 29.21, 56.61, 68.98)},
        source=FAMO,
        label="Table 1",
        protocol=famo_scene,
        units=NYUV2_UNITS,
    )
    rows += _dm(
        "nyuv2",
        {"famo": (-4.10, 0.39)},
        source=FAMO,
        label="Table 1 (± from Table 5)",
        protocol=famo_scene,
        note="± is the standard error over 3 seeds",
    )
    quoted = {
        "sdmgrad": (40.47, 65.90, 0.5225, 0.2084, 25.07, 19.99, 28.54, 55.74, 68.53),
        "fairgrad": (39.74, 66.01, 0.5377, 0.2236, 24.84, 19.60, 29.26, 56.58, 69.16),
    }
    notes = {
        "sdmgrad": f"SDMGrad (Xiao et al., NeurIPS 2023) {_QUOTED}",
        "fairgrad": f"FairGrad (Ban & Ji, ICML 2024) {_QUOTED}",
    }
    rows += _rows(
        "nyuv2",
        NYUV2_METRICS,
        quoted,
        source=NTK,
        label="Table 1",
        protocol=SCENE_PROTOCOL,
        units=NYUV2_UNITS,
        notes=notes,
    )
    for method, dm in (("sdmgrad", -4.84), ("fairgrad", -4.66)):
        rows += _dm(
            "nyuv2",
            {method: (dm, None)},
            source=NTK,
            label="Table 1",
            protocol=SCENE_PROTOCOL,
            note=notes[method],
        )

    rows += _rows(
        "cityscapes",
        CITYSCAPES_METRICS,
        _CITY_NASH,
        source=NASH,
        label="Table 3",
        protocol=SCENE_PROTOCOL,
        units=CITYSCAPES_UNITS,
    )
    rows += _dm(
        "cityscapes",
        {m: (v, None) for m, v in _CITY_NASH_DM.items()},
        source=NASH,
        label="Table 3",
        protocol=SCENE_PROTOCOL,
    )
    rows += _rows(
        "cityscapes",
        CITYSCAPES_METRICS,
        {"famo": (74.54, 93.29, 0.0145, 32.59)},
        source=FAMO,
        label="Table 3",
        protocol=famo_scene,
        units=CITYSCAPES_UNITS,
    )
    rows += _dm(
        "cityscapes",
        {"famo": (8.13, 1.98)},
        source=FAMO,
        label="Table 3 (± from Table 7)",
        protocol=famo_scene,
        note="± is the standard error over 3 seeds",
    )
    rows += _dm(
        "cityscapes",
        {"fairgrad": (5.18, None)},
        source=NTK,
        label="Table 2",
        protocol=SCENE_PROTOCOL,
        note=f"FairGrad (Ban & Ji, ICML 2024) {_QUOTED}",
    )
    return rows


def _celeba() -> list[Published]:
    table = {
        "ew": 4.15,
        "loglosses": 7.20,
        "rlw": 1.46,
        "dwa": 3.20,
        "uw": 3.23,
        "mgda": 14.85,
        "pcgrad": 3.17,
        "graddrop": 3.29,
        "cagrad": 2.48,
        "imtlg": 0.84,
        "nashmtl": 2.84,
        "famo": 1.21,
    }
    note = (
        "the first CelebA column of FAMO's Table 3 (its header reads MR, but Table 7 gives FAMO's CelebA Δm% "
        "as 1.21 and the other column averages 6.5, the mean rank of 12 methods)"
    )
    rows = _dm(
        "celeba",
        {m: (v, 0.24 if m == "famo" else None) for m, v in table.items()},
        source=FAMO,
        label="Table 3",
        protocol=CELEBA_PROTOCOL,
        note=note,
    )
    rows += _dm(
        "celeba",
        {"fairgrad": (0.37, None)},
        source=NTK,
        label="Table 2",
        protocol=CELEBA_PROTOCOL,
        note=f"FairGrad (Ban & Ji, ICML 2024) {_QUOTED}",
    )
    return rows


_MULTI = {
    # method: (Multi-Fashion T1, T2, Multi-MNIST T1, T2, Multi-Fashion+MNIST T1, T2) with their ±
    STL: ((87.10, 0.09), (86.20, 0.06), (95.33, 0.08), (94.16, 0.04), (98.40, 0.02), (89.42, 0.03)),
    "mgda": ((86.76, 0.09), (85.78, 0.36), (95.62, 0.02), (94.49, 0.10), (97.24, 0.04), (88.19, 0.13)),
    "pcgrad": ((86.93, 0.17), (86.20, 0.14), (95.71, 0.03), (94.41, 0.02), (97.12, 0.16), (88.45, 0.08)),
    "cagrad": ((86.99, 0.17), (86.04, 0.15), (95.62, 0.05), (94.39, 0.04), (97.19, 0.06), (88.18, 0.14)),
    "imtlg": ((87.35, 0.22), (86.45, 0.09), (95.93, 0.09), (94.63, 0.13), (97.47, 0.06), (88.46, 0.11)),
    "nashmtl": ((86.91, 0.09), (86.17, 0.03), (95.54, 0.00), (94.49, 0.09), (97.00, 0.18), (88.39, 0.16)),
    "fairgrad": ((86.85, 0.15), (86.17, 0.07), (95.55, 0.15), (94.29, 0.09), (97.02, 0.06), (88.37, 0.16)),
}


def _multi() -> list[Published]:
    rows = []
    for i, bench in enumerate(("multi_fashion", "multi_mnist", "multi_fashion_mnist")):
        for method, cells in _MULTI.items():
            for j, metric in enumerate(MULTI_METRICS):
                value, spread = cells[2 * i + j]
                note = (
                    "the paper's 'IMTL' (its NYUv2 row equals Nash-MTL's IMTL-G)" if method == "imtlg" else ""
                )
                rows.append(
                    Published(
                        bench,
                        method,
                        metric,
                        value,
                        PHAN,
                        "Table 1",
                        MULTI_PROTOCOL,
                        spread=spread,
                        unit="%",
                        note=note,
                    )
                )
    return rows


_OFFICE = {
    # method: (Amazon, DSLR, Webcam, Δp(Office-31), ±, Art, Clipart, Product, Real, Δp(Office-Home), ±)
    STL: (86.61, 95.63, 96.85, None, None, 65.59, 79.60, 90.47, 80.00, None, None),
    "ew": (83.53, 97.27, 96.85, -0.61, 0.67, 65.34, 78.04, 89.80, 79.50, -0.92, 0.59),
    "gls": (82.84, 95.62, 96.29, -1.63, 0.61, 64.51, 76.85, 89.83, 79.56, -1.58, 0.46),
    "rlw": (83.82, 96.99, 96.85, -0.59, 0.95, 64.96, 78.19, 89.48, 80.11, -0.92, 0.14),
    "uw": (83.82, 97.27, 96.67, -0.56, 0.90, 65.97, 77.65, 89.41, 79.28, -0.98, 0.46),
    "dwa": (83.87, 96.99, 96.48, -0.70, 0.62, 65.27, 77.64, 89.05, 79.56, -1.26, 0.49),
    "imtll": (84.04, 96.99, 96.48, -0.63, 0.58, 65.90, 77.28, 89.37, 79.38, -1.10, 0.61),
    "mgda": (85.47, 95.90, 97.03, -0.27, 0.15, 64.19, 77.60, 89.58, 79.31, -1.61, 0.34),
    "gradnorm": (83.58, 97.26, 96.85, -0.59, 0.94, 66.28, 77.86, 88.66, 79.60, -0.90, 0.93),
    "pcgrad": (83.59, 96.99, 96.85, -0.68, 0.57, 66.35, 77.18, 88.95, 79.50, -1.04, 0.32),
    "graddrop": (84.33, 96.99, 96.30, -0.59, 0.46, 63.57, 77.86, 89.23, 79.35, -1.86, 0.24),
    "gradvac": (83.76, 97.27, 96.67, -0.58, 0.78, 65.21, 77.43, 89.23, 78.95, -1.49, 0.28),
    "imtlg": (83.41, 96.72, 96.48, -0.97, 0.95, 64.70, 77.17, 89.61, 79.45, -1.10, 0.61),
    "cagrad": (83.65, 95.63, 96.85, -1.14, 0.85, 64.01, 77.50, 89.65, 79.53, -1.50, 0.29),
    "nashmtl": (85.01, 97.54, 97.41, 0.24, 0.89, 66.29, 78.76, 90.04, 80.11, -0.08, 0.69),
    "moco": (84.33, 97.54, 98.33, None, None, 63.38, 79.41, 90.25, 78.70, None, None),
    "alignedmtl": (83.36, 96.45, 97.04, -0.90, 0.48, 64.33, 76.96, 89.87, 79.93, -1.50, 0.89),
    "dbmtl": (85.12, 98.63, 98.51, 1.05, 0.20, 67.42, 77.89, 90.43, 80.07, 0.17, 0.44),
}


#: rows of DB-MTL's Table 4 whose printed Δp does not follow from their printed accuracies
_OFFICE_INCONSISTENT = {
    ("office_home", "imtlg"): "the accuracies give Δm% 1.51; the printed Δp (and its ±) repeat IMTL-L's row",
    ("office_home", "cagrad"): "the accuracies give Δm% 1.64 (average 77.67, printed 77.73)",
}


def _office() -> list[Published]:
    rows = []
    for method, v in _OFFICE.items():
        note = (
            "MoCo's numbers are taken by DB-MTL from the MoCo paper (no Δp given)" if method == "moco" else ""
        )
        for bench, metrics, accs, dp, spread in (
            ("office31", OFFICE31_METRICS, v[0:3], v[3], v[4]),
            ("office_home", OFFICE_HOME_METRICS, v[5:9], v[9], v[10]),
        ):
            rows += [
                Published(bench, method, m, a, DBMTL, "Table 4", OFFICE_PROTOCOL, unit="%", note=note)
                for m, a in zip(metrics, accs)
            ]
            if dp is not None:
                bad = _OFFICE_INCONSISTENT.get((bench, method))
                rows.append(
                    Published(
                        bench,
                        method,
                        DELTA_M,
                        -dp,
                        DBMTL,
                        "Table 4",
                        OFFICE_PROTOCOL,
                        spread=spread,
                        note=_SIGN + (f"; inconsistent in the source: {bad}" if bad else ""),
                    )
                )
    return rows


#: every published row, grouped by benchmark
PUBLISHED: tuple[Published, ...] = tuple(_multi() + _qm9() + _scene() + _celeba() + _office())


def published(benchmark: str) -> list[Published]:
    """The published rows of ``benchmark`` (a built-in name, e.g. ``"qm9"``); empty for any other name."""
    return [p for p in PUBLISHED if p.benchmark == benchmark]


def published_benchmarks() -> list[str]:
    """The benchmark names that have published rows, in :data:`BENCHMARK_NAMES` order."""
    have = {p.benchmark for p in PUBLISHED}
    return [b for b in BENCHMARK_NAMES if b in have]
