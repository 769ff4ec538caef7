"""Office-31 (Saenko et al., ECCV 2010) and Office-Home (Venkateswara et al., CVPR 2017): object
classification in 3 / 4 image domains, one task per domain (multi-input: each task has its own images),
the protocol of LibMTL (Lin & Zhang, JMLR 2023, ``examples/office``).

Read from the user's copy in the releases' layouts::

    <root>/amazon/images/<class>/*.jpg     Office-31 (dslr, webcam the same; 31 classes; images/ optional)
    <root>/Art/<class>/*.jpg               Office-Home (Clipart, Product, Real_World or "Real World"; 65)

**Split**: LibMTL's lists (``examples/office/data_txt``) cut every class of every domain into
⌊0.6 n⌋ training, ⌊0.2 n⌋ validation and the remaining test images, in a random order; this module
does the same with a permutation seeded by :data:`OFFICE_SPLIT_SEED` (the same for every run), or reads
LibMTL's own lists (``split_lists=`` their ``data_txt/office-31`` folder: ``<domain>_<split>.txt`` with
lines ``<domain>/images/<class>/<file> <label>``) to reproduce their exact split. Classes are numbered
in sorted order of the folder names (LibMTL's lists number them in their own order, which they carry).

**Images**: resized to 224×224 (Pillow bilinear, torchvision ``Resize``), scaled to [0, 1] and normalised
with the ImageNet mean and standard deviation, as LibMTL does; no augmentation.

:class:`MultiInputLoader` batches such a split for training: one batch of every domain per step; an
epoch has as many steps as the largest domain has batches, the smaller domains starting over (LibMTL's
``_process_data``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ._celeba import load_rgb
from ._dense import DatasetNotFoundError, resolve_root
from ._multi import DatasetError

__all__ = [
    "ENV_OFFICE31_DIR",
    "ENV_OFFICE_HOME_DIR",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "OFFICE_DATASETS",
    "OFFICE_SPLIT_SEED",
    "MultiInputLoader",
    "OfficeDomain",
    "OfficeSplit",
    "load_office",
    "office_domain_dir",
    "office_split",
    "read_office_list",
]

ENV_OFFICE31_DIR = "MOLEARN_OFFICE31_DIR"
ENV_OFFICE_HOME_DIR = "MOLEARN_OFFICE_HOME_DIR"
OFFICE_SPLIT_SEED = 0
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
#: name -> (domains, classes, environment variable, layout)
OFFICE_DATASETS: dict[str, tuple[tuple[str, ...], int, str, str]] = {
    "office31": (
        ("amazon", "dslr", "webcam"),
        31,
        ENV_OFFICE31_DIR,
        "<root>/{amazon,dslr,webcam}/[images/]<class>/*.jpg (the Office-31 release)",
    ),
    "office_home": (
        ("Art", "Clipart", "Product", "Real_World"),
        65,
        ENV_OFFICE_HOME_DIR,
        "<root>/{Art,Clipart,Product,Real_World or 'Real World'}/<class>/*.jpg (the Office-Home release)",
    ),
}
SPLITS = ("train", "val", "test")


def _info(dataset: str) -> tuple[tuple[str, ...], int, str, str]:
    if dataset not in OFFICE_DATASETS:
        raise ValueError(f"unknown Office data set {dataset!r}; valid: {', '.join(OFFICE_DATASETS)}")
    return OFFICE_DATASETS[dataset]


def office_domain_dir(root: Path, domain: str) -> Path:
    """The folder of ``domain``'s class folders: ``<root>/<domain>/images`` or ``<root>/<domain>``
    (``Real_World`` also as ``Real World``)."""
    names = [domain, domain.replace("_", " ")] if "_" in domain else [domain]
    for name in names:
        for d in (root / name / "images", root / name):
            if d.is_dir():
                return d
    raise DatasetNotFoundError(f"Office: no folder {root / domain} (nor {root / domain}/images)")


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def office_split(
    domain_dir: Path, seed: int = OFFICE_SPLIT_SEED
) -> tuple[list[str], dict[str, list[tuple[Path, int]]]]:
    """``(classes, {split: [(file, label)]})`` of one domain folder: classes numbered in sorted order, each
    class's sorted files permuted (a generator seeded with ``seed``, drawn class by class) and cut into
    ⌊0.6 n⌋ train, ⌊0.2 n⌋ val and the rest test (LibMTL's proportions)."""
    classes = sorted(d.name for d in domain_dir.iterdir() if d.is_dir())
    if not classes:
        raise DatasetNotFoundError(f"Office: no class folders in {domain_dir}")
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, list[tuple[Path, int]]] = {s: [] for s in SPLITS}
    for label, name in enumerate(classes):
        files = _images(domain_dir / name)
        order = torch.randperm(len(files), generator=gen).tolist()
        n_train, n_val = math.floor(0.6 * len(files)), math.floor(0.2 * len(files))
        picked = [files[i] for i in order]
        out["train"] += [(f, label) for f in picked[:n_train]]
        out["val"] += [(f, label) for f in picked[n_train : n_train + n_val]]
        out["test"] += [(f, label) for f in picked[n_train + n_val :]]
    for split in SPLITS:  # interleave the classes (the "first n" of a split is then a random subset)
        items = out[split]
        perm = torch.randperm(len(items), generator=gen).tolist()
        out[split] = [items[i] for i in perm]
    return classes, out


def _resolve(root: Path, rel: str) -> Path:
    """A path of LibMTL's lists under ``root``, accepting 'Real World' for 'Real_World' and folders
    without ``images/``."""
    parts = rel.strip().split("/")
    tries = [parts]
    if parts and parts[0] == "Real_World":
        tries.append(["Real World", *parts[1:]])
    for p in list(tries):
        if len(p) > 2 and p[1] == "images":
            tries.append([p[0], *p[2:]])
    for p in tries:
        path = root.joinpath(*p)
        if path.is_file():
            return path
    raise DatasetNotFoundError(f"Office: {root / rel} (from the split list) is missing")


def read_office_list(path: Path, root: Path) -> list[tuple[Path, int]]:
    """The ``(file, label)`` pairs of one of LibMTL's split lists (lines ``<relative path> <label>``)."""
    out = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        rel, _, label = line.rstrip().rpartition(" ")
        if not rel or not label.lstrip("-").isdigit():
            raise DatasetError(f"{path}, line {n}: expected '<path> <label>', got {line[:80]!r}")
        out.append((_resolve(root, rel), int(label)))
    return out


class OfficeDomain(torch.utils.data.Dataset[tuple[Tensor, Tensor]]):
    """The images of one domain and split: items ``(image (3, S, S) float32, normalised; label int64)``."""

    def __init__(self, name: str, items: Sequence[tuple[Path, int]], image_size: int = 224) -> None:
        self.name = name
        self.items = list(items)
        self.size = (int(image_size), int(image_size))
        self._mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        path, label = self.items[index]
        image = load_rgb(path, self.size).to(torch.float32) / 255.0
        return (image - self._mean) / self._std, torch.tensor(label, dtype=torch.int64)


class OfficeSplit:
    """One split of an Office data set: a data set per domain (``domains``, in task order).

    ``len`` is the number of images of all domains; item ``i`` is ``(domain index, image, label)``,
    counting through the domains in order (for fingerprints and inspection; training batches come from
    :class:`MultiInputLoader`)."""

    def __init__(self, domains: Sequence[OfficeDomain], classes: int) -> None:
        self.domains = list(domains)
        self.classes = classes

    def __len__(self) -> int:
        return sum(len(d) for d in self.domains)

    def __getitem__(self, index: int) -> tuple[int, Tensor, Tensor]:
        if index < 0:
            index += len(self)
        for k, d in enumerate(self.domains):
            if 0 <= index < len(d):
                image, label = d[index]
                return k, image, label
            index -= len(d)
        raise IndexError("OfficeSplit index out of range")

    def limit(self, size: int | None) -> OfficeSplit:
        """At most ``size`` images in all: each domain keeps its first ``max(1, size·n_d // N)``."""
        total = len(self)
        if size is None or size >= total:
            return self
        kept = [
            OfficeDomain(d.name, d.items[: max(1, size * len(d) // total)], d.size[0]) for d in self.domains
        ]
        return OfficeSplit(kept, self.classes)


def load_office(
    dataset: str,
    split: str,
    root: str | os.PathLike[str] | None = None,
    *,
    seed: int = OFFICE_SPLIT_SEED,
    split_lists: str | os.PathLike[str] | None = None,
    image_size: int = 224,
    size: int | None = None,
) -> OfficeSplit:
    """``split`` (``"train"``, ``"val"``, ``"test"``) of ``dataset`` (``"office31"`` or ``"office_home"``)
    from ``root`` (default: ``$MOLEARN_OFFICE31_DIR`` / ``$MOLEARN_OFFICE_HOME_DIR``), split by
    :func:`office_split` or read from LibMTL's lists in ``split_lists``; ``size`` limits the images
    (:meth:`OfficeSplit.limit`)."""
    domains, classes, env, layout = _info(dataset)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    base = resolve_root(root, env, dataset, layout)
    parts = []
    for domain in domains:
        if split_lists is not None:
            lst = Path(split_lists) / f"{domain}_{split}.txt"
            if not lst.is_file():
                raise DatasetNotFoundError(f"{dataset}: split list {lst} is missing")
            items = read_office_list(lst, base)
        else:
            names, splits = office_split(office_domain_dir(base, domain), seed)
            if len(names) > classes:
                raise DatasetError(
                    f"{dataset}: domain {domain} has {len(names)} class folders, the data set {classes}"
                )
            items = splits[split]
        bad = [lab for _, lab in items if not 0 <= lab < classes]
        if bad:
            raise DatasetError(f"{dataset}: domain {domain} has labels {bad[:3]} outside 0..{classes - 1}")
        if not items:
            raise DatasetNotFoundError(f"{dataset}: domain {domain} has no {split} images")
        parts.append(OfficeDomain(domain.lower(), items, image_size))
    return OfficeSplit(parts, classes).limit(size)


class MultiInputLoader:
    """Batches of a multi-input split (one data set per task): each step yields a tuple with one batch
    ``(inputs, targets)`` per domain.

    Training (``shuffle=True``, LibMTL's protocol): an epoch has ``max_d ⌊n_d / batch_size⌋`` steps
    (``drop_last``; a domain smaller than one batch gives one short batch); a domain that runs out
    starts over in a new random order. The orders come from ``generator`` (set by molearn's trainer per
    pass; otherwise drawn from the global torch RNG). Evaluation (``shuffle=False``): every image once,
    in order; a domain already exhausted gives ``None`` in the remaining steps.
    """

    def __init__(self, split: OfficeSplit | Sequence[Any], batch_size: int, shuffle: bool) -> None:
        self.datasets = list(split.domains if isinstance(split, OfficeSplit) else split)
        if not self.datasets or any(len(d) == 0 for d in self.datasets):
            raise ValueError("a multi-input split needs at least one image per domain")
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.generator: torch.Generator | None = None

    def _batches(self, n: int) -> int:
        if self.shuffle:
            return max(1, n // self.batch_size)
        return math.ceil(n / self.batch_size)

    def __len__(self) -> int:
        return max(self._batches(len(d)) for d in self.datasets)

    def _loader(self, dataset: Any, gen: torch.Generator | None) -> torch.utils.data.DataLoader[Any]:
        drop = self.shuffle and len(dataset) >= self.batch_size
        return torch.utils.data.DataLoader(
            dataset, batch_size=self.batch_size, shuffle=self.shuffle, drop_last=drop, generator=gen
        )

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        steps = len(self)
        if not self.shuffle:
            iters: list[Iterator[Any] | None] = [iter(self._loader(d, None)) for d in self.datasets]
            for _ in range(steps):
                batch = []
                for k, it in enumerate(iters):
                    item = next(it, None) if it is not None else None
                    if item is None:
                        iters[k] = None
                    batch.append(item)
                yield tuple(batch)
            return
        seeds = torch.randint(2**62, (len(self.datasets),), generator=self.generator).tolist()
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        loaders = [self._loader(d, g) for d, g in zip(self.datasets, gens)]
        its = [iter(ld) for ld in loaders]
        for _ in range(steps):
            batch = []
            for k, ld in enumerate(loaders):
                item = next(its[k], None)
                if item is None:
                    its[k] = iter(ld)
                    item = next(its[k])
                batch.append(item)
            yield tuple(batch)
