"""The built-in vision benchmarks: ``nyuv2``, ``cityscapes``, ``celeba``, ``office31`` and ``office_home``.

Each reads the user's copy of the data (``root=`` or an environment variable, see
:mod:`molearn.datasets`) and follows a published protocol; ``full`` is that protocol, ``default`` a
shorter one for a GPU, ``quick`` a smoke run. docs/benchmarks.md lists the sources and the differences.

- ``nyuv2`` / ``cityscapes``: the protocol of Nash-MTL (Navon et al., ICML 2022, ``experiments/nyuv2``)
  and FAMO (Liu et al., NeurIPS 2023, ``experiments/{nyuv2,cityscapes}``), after MTAN (Liu, Johns &
  Davison, CVPR 2019): SegNet-MTAN, cross-entropy (−1 ignored), L1 on valid depth, 1 − cosine on valid
  normals; Adam lr 1e-4, 200 epochs, StepLR(100, ×0.5), batch 2 (NYUv2) / 8 (Cityscapes), training
  augmentation (random scale-crop and flip), the release's ``val/`` as test split, no validation split.
  Metrics as in :mod:`molearn.metrics` (mIoU and pixel accuracy over the split, depth errors, normal
  angle statistics), each weight 1 in Δm; ``delta_m_published`` (weight 0) is Δm% against the
  single-task numbers of CAGrad that Nash-MTL and FAMO compute Δm against.
- ``celeba``: FAMO's CelebA protocol (``experiments/celeba``): 40 binary attributes, 64×64 images, FAMO's
  CNN (:class:`~molearn.models.CelebANet`), binary cross-entropy per attribute, Adam lr 3e-4, 15 epochs,
  batch 256, the official train / val / test partition; metric: per-attribute F1 (weight 1), accuracy
  reported (weight 0).
- ``office31`` / ``office_home``: LibMTL's protocol (``examples/office``): one task per domain, each with
  its own images, a ResNet-18 trunk and a linear head per domain, cross-entropy, 224×224 ImageNet-normalised
  inputs, 60/20/20 split per class, Adam lr 1e-4 weight decay 1e-5, batch 64 per domain, 100 epochs;
  metric: test accuracy per domain.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._benchmark import Benchmark, Metric, Schedule

__all__ = [
    "CITYSCAPES_STL_PUBLISHED",
    "NYUV2_STL_PUBLISHED",
    "VISION_BENCHMARKS",
    "celeba_benchmark",
    "cityscapes_benchmark",
    "depth_loss",
    "normal_loss",
    "nyuv2_benchmark",
    "office_benchmark",
    "segmentation_loss",
]

NYUV2_TASKS = ("segmentation", "depth", "normal")
CITYSCAPES_TASKS = ("segmentation", "depth")
_SEG = ("miou", "pix_acc")
_DEPTH = ("abs_err", "rel_err")
_NORMAL = ("mean_angle", "median_angle", "within_11_25", "within_22_5", "within_30")
_HIGHER = {"miou", "pix_acc", "within_11_25", "within_22_5", "within_30"}
_PUBLISHED_DM = "delta_m_published"

#: the single-task values of CAGrad (Liu et al., NeurIPS 2021) that Nash-MTL and FAMO compute their NYUv2
#: Δm against (``experiments/nyuv2/utils.py`` ``BASE``; fractions, angles in degrees)
NYUV2_STL_PUBLISHED: dict[str, float] = {
    "miou": 0.3830, "pix_acc": 0.6376, "abs_err": 0.6754, "rel_err": 0.2780, "mean_angle": 25.01,
    "median_angle": 19.21, "within_11_25": 0.3014, "within_22_5": 0.5720, "within_30": 0.6915,
}  # fmt: skip
#: the same for Cityscapes (FAMO ``experiments/cityscapes/utils.py`` ``BASE``)
CITYSCAPES_STL_PUBLISHED: dict[str, float] = {
    "miou": 0.7401, "pix_acc": 0.9316, "abs_err": 0.0125, "rel_err": 27.77,
}  # fmt: skip


# ------------------------------------------------------------------------------------------------ losses
def segmentation_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Pixel-wise cross-entropy, −1 ignored (MTAN's ``nll_loss`` on ``log_softmax``)."""
    return F.cross_entropy(logits, target, ignore_index=-1)


def _mask(target: Tensor) -> Tensor:
    return (target.sum(dim=1, keepdim=True) != 0).to(target.dtype)


def depth_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error over the valid pixels (target ≠ 0), MTAN's depth loss (0 without any)."""
    mask = _mask(target)
    return ((pred - target).abs() * mask).sum() / mask.sum().clamp_min(1.0)


def normal_loss(pred: Tensor, target: Tensor) -> Tensor:
    """1 − the mean cosine of predicted and true normals over the valid pixels (target summed over the
    channels ≠ 0), MTAN's normal loss; ``pred`` is unit length (the model normalises it)."""
    mask = _mask(target)
    return 1.0 - (pred * target * mask).sum() / mask.sum().clamp_min(1.0)


_DENSE_LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "segmentation": segmentation_loss,
    "depth": depth_loss,
    "normal": normal_loss,
}


class _DenseLosses:
    def __init__(self, tasks: Sequence[str]) -> None:
        self.tasks = tuple(tasks)

    def __call__(self, model: nn.Module, batch: Any) -> Tensor:
        x, y = batch
        out = model(x)
        return torch.stack([_DENSE_LOSSES[t](o, y[t]) for t, o in zip(self.tasks, out)])


class _PublishedDelta:
    """``delta_m_published``: Δm% of the computed metrics against published single-task values."""

    def __init__(self, base: Mapping[str, float]) -> None:
        self.base = dict(base)

    def __call__(self, values: Mapping[str, float]) -> dict[str, float]:
        from ..metrics import delta_m

        try:
            dm = delta_m({k: values[k] for k in self.base}, self.base, {k: k in _HIGHER for k in self.base})
        except ValueError:  # a NaN metric (an empty split)
            dm = float("nan")
        return {_PUBLISHED_DM: dm}


class _DenseMeter:
    def __init__(self, classes: int, normals: bool, base: Mapping[str, float]) -> None:
        self.classes, self.normals, self.base = classes, normals, dict(base)

    def __call__(self) -> Any:
        from ..metrics import DepthMeter, MeterGroup, NormalMeter, SegmentationMeter

        meters: list[Any] = [
            SegmentationMeter(self.classes, output=0, target="segmentation"),
            DepthMeter(output=1, target="depth"),
        ]
        if self.normals:
            meters.append(NormalMeter(output=2, target="normal"))
        return MeterGroup(meters, extra=_PublishedDelta(self.base))


class _SegNetModel:
    def __init__(self, task_channels: Mapping[str, int], filters: Sequence[int] | None) -> None:
        self.task_channels = dict(task_channels)
        self.filters = None if filters is None else tuple(filters)

    def __call__(self) -> nn.Module:
        from ..models import SegNetMTAN

        # shared_attention: every parameter but the heads is balanced, as Nash-MTL's and FAMO's
        # SegNetMtan.shared_parameters()
        if self.filters is None:
            return SegNetMTAN(self.task_channels, shared_attention=True)
        return SegNetMTAN(self.task_channels, filters=self.filters, shared_attention=True)


class _AugmentCollate:
    """Collate of training batches with :func:`~molearn.datasets.random_scale_crop` applied per item,
    drawing from ``generator``."""

    def __init__(self) -> None:
        self.generator: torch.Generator | None = None

    def __call__(self, items: Sequence[Any]) -> Any:
        from ..datasets import random_scale_crop

        augmented = [random_scale_crop(x, y, generator=self.generator) for x, y in items]
        return torch.utils.data.default_collate(augmented)


class _AugmentingLoader(torch.utils.data.DataLoader[Any]):
    """A DataLoader whose every pass augments from a generator seeded by the loader's own ``generator``
    (which molearn's trainer sets per pass): a pass is reproduced exactly, also when a resumed run skips
    the batches it had already drawn (the global RNG is not touched)."""

    def __iter__(self) -> Any:
        collate = self.collate_fn
        assert isinstance(collate, _AugmentCollate)
        seed = int(torch.randint(2**62, (), generator=self.generator).item())
        collate.generator = torch.Generator().manual_seed(seed)
        return super().__iter__()


class _DenseLoader:
    """Training batches augmented in the loader (not the data set), so that the data set's items, and the
    fingerprint that keys the single-task cache, stay fixed."""

    def __init__(self, augment: bool) -> None:
        self.augment = augment

    def __call__(self, data: Any, batch_size: int, shuffle: bool) -> torch.utils.data.DataLoader[Any]:
        if shuffle and self.augment:
            return _AugmentingLoader(data, batch_size=batch_size, shuffle=True, collate_fn=_AugmentCollate())
        return torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=shuffle)


class _DenseData:
    def __init__(self, kind: str, root: str | None) -> None:
        self.kind, self.root = kind, root

    def __call__(self, split: str, size: int | None = None) -> Any:
        if split == "val":
            return None  # the protocols have no validation split
        from ..datasets import CityscapesDataset, NYUv2Dataset

        if self.kind == "nyuv2":
            return NYUv2Dataset(self.root, split, limit=size)
        return CityscapesDataset(self.root, split, classes=7, limit=size)


def _dense_metrics(tasks: Sequence[str]) -> list[Metric]:
    groups = {"segmentation": _SEG, "depth": _DEPTH, "normal": _NORMAL}
    labels = {
        "miou": "mIoU", "pix_acc": "pixel accuracy", "abs_err": "depth abs. error",
        "rel_err": "depth rel. error", "mean_angle": "mean angle error (°)",
        "median_angle": "median angle error (°)", "within_11_25": "angles < 11.25°",
        "within_22_5": "angles < 22.5°", "within_30": "angles < 30°",
    }  # fmt: skip
    out = [Metric(m, t, m in _HIGHER, label=labels[m]) for t in tasks for m in groups[t]]
    out.append(Metric(_PUBLISHED_DM, tasks[0], False, weight=0.0, label="Δm% vs CAGrad's published STL"))
    return out


def _scene_schedules(batch: int, eval_batch: int, quick_n: int) -> tuple[Schedule, dict[str, Schedule]]:
    step = {"step_size": 100, "gamma": 0.5}
    full = Schedule(epochs=200, batch_size=batch, optimizer="adam", lr=1e-4, scheduler="step",
                    scheduler_kwargs=step, eval_batch_size=eval_batch)  # fmt: skip
    default = Schedule(epochs=20, batch_size=batch, optimizer="adam", lr=1e-4, scheduler="step",
                       scheduler_kwargs={**step, "step_size": 10}, eval_batch_size=eval_batch)  # fmt: skip
    quick = Schedule(epochs=1, batch_size=batch, optimizer="adam", lr=1e-4, train_size=quick_n,
                     eval_size=quick_n, eval_batch_size=eval_batch)  # fmt: skip
    return default, {"full": full, "quick": quick}


def nyuv2_benchmark(
    root: str | None = None, *, augment: bool = True, filters: Sequence[int] | None = None
) -> Benchmark:
    """``nyuv2``: 13-class segmentation, depth and surface normals on NYUv2 with SegNet-MTAN (module
    docstring); ``root`` default ``$MOLEARN_NYUV2_DIR``; ``augment``: the training augmentation of
    Nash-MTL / FAMO (their default); ``filters``: SegNet's channel widths (default the published
    ``(64, 128, 256, 512, 512)``; narrower ones make a smoke run cheap, not the benchmark)."""
    from ..datasets import NYUV2_CLASSES

    default, schedules = _scene_schedules(batch=2, eval_batch=8, quick_n=8)
    return Benchmark(
        name="nyuv2",
        tasks=NYUV2_TASKS,
        data=_DenseData("nyuv2", root),
        model=_SegNetModel({"segmentation": NYUV2_CLASSES, "depth": 1, "normal": 3}, filters),
        loss_fn=_DenseLosses(NYUV2_TASKS),
        metrics=_dense_metrics(NYUV2_TASKS),
        meter=_DenseMeter(NYUV2_CLASSES, True, NYUV2_STL_PUBLISHED),
        schedule=default,
        schedules=schedules,
        method_kwargs={"famo": {"gamma": 1e-3}, "cagrad": {"c": 0.4}},
        loader=_DenseLoader(augment),
        description=(
            "nyuv2: NYUv2 (795 training, 654 test images of 288×384; the preprocessed release of MTAN) — "
            "13-class segmentation, depth and surface normals with SegNet-MTAN (Liu et al., CVPR 2019), "
            "cross-entropy / masked L1 / masked 1 − cosine, the protocol of Nash-MTL and FAMO (Adam lr "
            "1e-4, StepLR ×0.5, batch 2, random scale-crop and flip); test metrics over the whole split: "
            "mIoU, pixel accuracy, absolute / relative depth error, mean / median angle error and the "
            "fractions within 11.25°, 22.5°, 30°. No validation split: the last epoch is reported."
        ),
    )


def cityscapes_benchmark(
    root: str | None = None, *, augment: bool = True, filters: Sequence[int] | None = None
) -> Benchmark:
    """``cityscapes``: 7-class segmentation and depth on Cityscapes (128×256) with SegNet-MTAN, FAMO's
    protocol (module docstring); ``root`` default ``$MOLEARN_CITYSCAPES_DIR``; ``augment`` and
    ``filters`` as in :func:`nyuv2_benchmark`."""
    default, schedules = _scene_schedules(batch=8, eval_batch=32, quick_n=16)
    return Benchmark(
        name="cityscapes",
        tasks=CITYSCAPES_TASKS,
        data=_DenseData("cityscapes", root),
        model=_SegNetModel({"segmentation": 7, "depth": 1}, filters),
        loss_fn=_DenseLosses(CITYSCAPES_TASKS),
        metrics=_dense_metrics(CITYSCAPES_TASKS),
        meter=_DenseMeter(7, False, CITYSCAPES_STL_PUBLISHED),
        schedule=default,
        schedules=schedules,
        method_kwargs={"famo": {"gamma": 1e-2}, "cagrad": {"c": 0.4}},
        loader=_DenseLoader(augment),
        description=(
            "cityscapes: Cityscapes (2,975 training, 500 test images of 128×256; the preprocessed release "
            "of MTAN, label_7) — 7-class segmentation and depth with SegNet-MTAN, cross-entropy / masked "
            "L1, FAMO's protocol (Adam lr 1e-4, StepLR ×0.5, batch 8, random scale-crop and flip); test "
            "mIoU, pixel accuracy, absolute / relative depth error. No validation split: the last epoch "
            "is reported."
        ),
    )


# ------------------------------------------------------------------------------------------------ CelebA
def _celeba_losses(model: nn.Module, batch: Any) -> Tensor:
    x, y = batch
    out = model(x)
    return torch.stack(
        [F.binary_cross_entropy_with_logits(z.reshape(-1), y[:, k]) for k, z in enumerate(out)]
    )


class _CelebAMeter:
    def __call__(self) -> Any:
        from ..datasets import CELEBA_ATTRIBUTES
        from ..metrics import MultiLabelMeter

        return MultiLabelMeter(CELEBA_ATTRIBUTES, metrics=("f1", "acc"))


def _celeba_model() -> nn.Module:
    from ..datasets import CELEBA_ATTRIBUTES
    from ..models import CelebANet

    return CelebANet(tasks=len(CELEBA_ATTRIBUTES))


class _CelebAData:
    def __init__(self, root: str | None, cache: bool, image_size: int) -> None:
        self.root, self.cache, self.image_size = root, cache, image_size

    def __call__(self, split: str, size: int | None = None) -> Any:
        from ..datasets import CelebADataset

        ds = CelebADataset(self.root, split, image_size=self.image_size, limit=size, cache=self.cache)
        ds.check_attributes()
        return ds


def celeba_benchmark(root: str | None = None, *, cache: bool = True, image_size: int = 64) -> Benchmark:
    """``celeba``: 40 binary attributes of CelebA with FAMO's network and protocol (module docstring);
    ``root`` default ``$MOLEARN_CELEBA_DIR``; ``cache``: decode each split's JPEGs once into
    ``$MOLEARN_CACHE/celeba/`` (see :class:`~molearn.datasets.CelebADataset`); ``image_size``: FAMO's 64
    (smaller for a cheap smoke run)."""
    from ..datasets import CELEBA_ATTRIBUTES

    metrics = [Metric(f"f1_{a}", a, True, label=f"{a} F1") for a in CELEBA_ATTRIBUTES]
    metrics += [Metric(f"acc_{a}", a, True, weight=0.0, label=f"{a} accuracy") for a in CELEBA_ATTRIBUTES]
    full = Schedule(epochs=15, batch_size=256, optimizer="adam", lr=3e-4, eval_batch_size=512)
    default = Schedule(epochs=3, batch_size=256, optimizer="adam", lr=3e-4, train_size=25_600,
                       eval_size=5_000, eval_batch_size=512)  # fmt: skip
    return Benchmark(
        name="celeba",
        tasks=CELEBA_ATTRIBUTES,
        data=_CelebAData(root, cache, image_size),
        model=_celeba_model,
        loss_fn=_celeba_losses,
        metrics=metrics,
        meter=_CelebAMeter(),
        schedule=default,
        schedules={"full": full},
        methods=("ew", "mgda", "famo"),
        method_kwargs={"famo": {"gamma": 1e-3}},
        description=(
            "celeba: CelebA (162,770 / 19,867 / 19,962 aligned faces, the official partition) resized to "
            "64×64 — 40 binary attributes with FAMO's CNN (7 convolutions, 2 linear layers, one logit per "
            "attribute), binary cross-entropy, FAMO's protocol (Adam lr 3e-4, batch 256); per-attribute F1 "
            "(Δm) and accuracy (reported), the epoch of best validation Δm."
        ),
    )


# ------------------------------------------------------------------------------------------------ Office
def _office_losses(model: nn.Module, batch: Sequence[Any]) -> Tensor:
    return torch.stack([F.cross_entropy(model(x, task=k), y) for k, (x, y) in enumerate(batch)])


class _OfficeScores:
    def __init__(self, domains: Sequence[str]) -> None:
        self.domains = [d.lower() for d in domains]

    def __call__(self, model: nn.Module, batch: Sequence[Any]) -> dict[str, Tensor]:
        out = {}
        for k, (name, b) in enumerate(zip(self.domains, batch)):
            if b is None:  # this domain's test images are used up
                continue
            x, y = b
            out[f"acc_{name}"] = (model(x, task=k).argmax(1) == y).to(torch.float32)
        return out


class _OfficeModel:
    def __init__(self, tasks: int, classes: int) -> None:
        self.tasks, self.classes = tasks, classes

    def __call__(self) -> nn.Module:
        from ..models import ResNet18MultiHead

        return ResNet18MultiHead([self.classes] * self.tasks)


class _OfficeData:
    def __init__(self, dataset: str, root: str | None, split_lists: str | None, image_size: int) -> None:
        self.dataset, self.root, self.split_lists, self.image_size = dataset, root, split_lists, image_size

    def __call__(self, split: str, size: int | None = None) -> Any:
        from ..datasets import load_office

        return load_office(
            self.dataset,
            split,
            self.root,
            split_lists=self.split_lists,
            image_size=self.image_size,
            size=size,
        )


def _office_loader(data: Any, batch_size: int, shuffle: bool) -> Any:
    from ..datasets import MultiInputLoader

    return MultiInputLoader(data, batch_size, shuffle)


def office_benchmark(
    dataset: str, root: str | None = None, *, split_lists: str | None = None, image_size: int = 224
) -> Benchmark:
    """``office31`` / ``office_home`` (module docstring); ``root`` default ``$MOLEARN_OFFICE31_DIR`` /
    ``$MOLEARN_OFFICE_HOME_DIR``; ``split_lists``: LibMTL's ``data_txt/<data set>`` folder for their exact
    split (default: molearn's seeded split in the same proportions); ``image_size``: LibMTL's 224 (smaller
    for a cheap smoke run)."""
    from ..datasets import OFFICE_DATASETS

    if dataset not in OFFICE_DATASETS:
        raise ValueError(f"unknown Office data set {dataset!r}; valid: {', '.join(OFFICE_DATASETS)}")
    domains, classes, _, _ = OFFICE_DATASETS[dataset]
    tasks = tuple(d.lower() for d in domains)
    full = Schedule(epochs=100, batch_size=64, optimizer="adam", lr=1e-4, weight_decay=1e-5,
                    eval_batch_size=64)  # fmt: skip
    default = Schedule(epochs=10, batch_size=64, optimizer="adam", lr=1e-4, weight_decay=1e-5,
                       eval_batch_size=64)  # fmt: skip
    title = {
        "office31": "Office-31 (Amazon, DSLR, Webcam; 4,110 images, 31 classes)",
        "office_home": "Office-Home (Art, Clipart, Product, Real World; 15,500 images, 65 classes)",
    }
    return Benchmark(
        name=dataset,
        tasks=tasks,
        data=_OfficeData(dataset, root, split_lists, image_size),
        model=_OfficeModel(len(tasks), classes),
        loss_fn=_office_losses,
        metrics=[Metric(f"acc_{t}", t, True, label=f"{t} accuracy") for t in tasks],
        score_fn=_OfficeScores(tasks),
        schedule=default,
        schedules={"full": full},
        loader=_office_loader,
        description=(
            f"{dataset}: {title[dataset]}, one classification task per domain with its own images "
            "(multi-input), LibMTL's protocol: ResNet-18 trunk (random initialisation; LibMTL starts from "
            "ImageNet weights) and a linear head per domain, 224×224 ImageNet-normalised inputs, "
            "cross-entropy, Adam lr 1e-4 weight decay 1e-5, batch 64 per domain; 60/20/20 split per class "
            "(seed 0), test accuracy per domain at the epoch of best validation Δm."
        ),
    )


VISION_BENCHMARKS: dict[str, Callable[[], Benchmark]] = {
    "nyuv2": nyuv2_benchmark,
    "cityscapes": cityscapes_benchmark,
    "celeba": celeba_benchmark,
    "office31": partial(office_benchmark, "office31"),
    "office_home": partial(office_benchmark, "office_home"),
}
