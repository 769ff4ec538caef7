"""CelebA (Liu, Luo, Wang & Tang, ICCV 2015): 202,599 aligned face images with 40 binary attributes, the
40-task benchmark of MGDA-UB (Sener & Koltun, NeurIPS 2018) and FAMO (Liu et al., NeurIPS 2023).

Read from the user's copy in the release's layout, as torchvision (``<root>/celeba/...``) or the original
Google Drive folders (``Img/``, ``Anno/``, ``Eval/``) keep it::

    <root>/[celeba/]img_align_celeba/000001.jpg ... 202599.jpg   (178×218 JPEGs; or Img/img_align_celeba/)
    <root>/[celeba/]list_attr_celeba.txt       (or Anno/list_attr_celeba.txt)
    <root>/[celeba/]list_eval_partition.txt    (or Eval/list_eval_partition.txt)

``list_attr_celeba.txt``: the image count, the 40 attribute names, then ``<file> ±1 ... ±1`` per image
(1 -> 1, -1 -> 0, as FAMO's loader). ``list_eval_partition.txt``: ``<file> 0|1|2`` = train (162,770) /
val (19,867) / test (19,962). Images are resized to 64×64 as FAMO does (torchvision ``Resize((64, 64))``
on the PIL image: Pillow's bilinear filter) and scaled to [0, 1], without normalisation. JPEG decoding needs
Pillow (``pip install 'molearn[vision]'``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ._dense import DatasetNotFoundError, resolve_root
from ._multi import DatasetError, cache_dir

__all__ = [
    "CELEBA_ATTRIBUTES",
    "CELEBA_LAYOUT",
    "CELEBA_SPLITS",
    "ENV_CELEBA_DIR",
    "CelebADataset",
    "celeba_files",
    "load_rgb",
    "read_celeba_attributes",
    "read_celeba_partition",
]

ENV_CELEBA_DIR = "MOLEARN_CELEBA_DIR"
CELEBA_LAYOUT = (
    "<root>/[celeba/]img_align_celeba/*.jpg, <root>/[celeba/]list_attr_celeba.txt and "
    "<root>/[celeba/]list_eval_partition.txt (torchvision's layout; the release's Img/, Anno/, Eval/ "
    "folders are accepted too)"
)
#: the 40 attributes in the order of ``list_attr_celeba.txt``
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips",
    "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby",
    "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male",
    "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose",
    "Receding_Hairline", "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair",
    "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)  # fmt: skip
#: split name -> the code of ``list_eval_partition.txt``
CELEBA_SPLITS = {"train": 0, "val": 1, "test": 2}


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise ImportError(
            "reading JPEG images needs Pillow: pip install 'molearn[vision]' (or pip install pillow)"
        ) from None
    return Image


def load_rgb(path: str | os.PathLike[str], size: tuple[int, int] | None = None) -> Tensor:
    """An image file as a (3, H, W) uint8 tensor, converted to RGB and, with ``size = (H, W)``, resized
    with Pillow's bilinear filter (what torchvision's ``Resize`` does to a PIL image)."""
    image_mod = _pil()
    with image_mod.open(path) as img:
        rgb = img.convert("RGB")
        if size is not None and rgb.size != (size[1], size[0]):
            rgb = rgb.resize((size[1], size[0]), image_mod.BILINEAR)
        w, h = rgb.size
        raw = rgb.tobytes()
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8).reshape(h, w, 3).permute(2, 0, 1).contiguous()


def _first(base: Path, names: Sequence[str], dirs: bool = False) -> Path | None:
    for name in names:
        p = base / name
        if p.is_dir() if dirs else p.is_file():
            return p
    return None


def celeba_files(root: str | os.PathLike[str] | None = None) -> tuple[Path, Path, Path]:
    """``(image folder, list_attr_celeba.txt, list_eval_partition.txt)`` under ``root`` (or
    ``$MOLEARN_CELEBA_DIR``) in any of the accepted layouts; raises :class:`DatasetNotFoundError` naming the
    layout otherwise."""
    base = resolve_root(root, ENV_CELEBA_DIR, "CelebA", CELEBA_LAYOUT)
    for b in (base, base / "celeba", base / "CelebA"):
        images = _first(b, ("img_align_celeba", "Img/img_align_celeba"), dirs=True)
        attrs = _first(b, ("list_attr_celeba.txt", "Anno/list_attr_celeba.txt"))
        parts = _first(b, ("list_eval_partition.txt", "Eval/list_eval_partition.txt"))
        if images is not None and attrs is not None and parts is not None:
            if (images / "img_align_celeba").is_dir():  # the Kaggle zip nests the folder
                images = images / "img_align_celeba"
            return images, attrs, parts
    raise DatasetNotFoundError(f"CelebA: {base} does not hold {CELEBA_LAYOUT}")


def read_celeba_attributes(path: str | os.PathLike[str]) -> tuple[list[str], list[str], Tensor]:
    """``(attribute names, file names, labels)`` of ``list_attr_celeba.txt``; labels an (N, K) uint8
    tensor of 0/1 (1 where the file says 1). Raises :class:`DatasetError` naming the line of a malformed
    file."""
    path = Path(path)
    lines = path.read_text().splitlines()
    if len(lines) < 2:
        raise DatasetError(f"{path}: expected a count line and an attribute-name line")
    try:
        count = int(lines[0].strip())
    except ValueError:
        raise DatasetError(f"{path}, line 1: expected the image count, got {lines[0][:60]!r}") from None
    names = lines[1].split()
    files: list[str] = []
    values: list[list[int]] = []
    for n, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != len(names) + 1 or any(v not in ("1", "-1") for v in parts[1:]):
            raise DatasetError(
                f"{path}, line {n}: expected a file name and {len(names)} values of 1 / -1, got {line[:80]!r}"
            )
        files.append(parts[0])
        values.append([1 if v == "1" else 0 for v in parts[1:]])
    if len(files) != count:
        raise DatasetError(f"{path}: line 1 announces {count} images, the file lists {len(files)}")
    labels = torch.tensor(values, dtype=torch.uint8).reshape(len(files), len(names))
    return names, files, labels


def read_celeba_partition(path: str | os.PathLike[str]) -> dict[str, int]:
    """``{file name: 0 (train) | 1 (val) | 2 (test)}`` of ``list_eval_partition.txt``."""
    path = Path(path)
    out: dict[str, int] = {}
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise DatasetError(f"{path}, line {n}: expected '<file> 0|1|2', got {line[:80]!r}")
        out[parts[0]] = int(parts[1])
    return out


def _stat_key(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        st = p.stat()
        h.update(f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


class CelebADataset(torch.utils.data.Dataset[tuple[Tensor, Tensor]]):
    """One split of CelebA: items ``(image, labels)``, image (3, S, S) float32 in [0, 1], labels (40,)
    float32 of 0/1 in the order of :attr:`attributes`.

    Args:
        root: the folder holding the release (module docstring), default ``$MOLEARN_CELEBA_DIR``.
        split: ``"train"``, ``"val"`` or ``"test"`` (the official partition).
        image_size: S (FAMO: 64).
        limit: the first ``limit`` images of the split only.
        cache: decode the split's images once into a uint8 tensor file under
            ``$MOLEARN_CACHE/celeba/`` (3·S² bytes per image: 2 GB for the 64×64 training split) and
            serve them from memory; keyed by the text files' size and modification time, the split,
            S and the number of images. Without it every item is decoded from its JPEG.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        split: str = "train",
        *,
        image_size: int = 64,
        limit: int | None = None,
        cache: bool = False,
    ) -> None:
        if split not in CELEBA_SPLITS:
            raise ValueError(f"split must be one of {', '.join(CELEBA_SPLITS)}, got {split!r}")
        self.image_dir, attr_file, part_file = celeba_files(root)
        names, files, labels = read_celeba_attributes(attr_file)
        partition = read_celeba_partition(part_file)
        missing = [f for f in files if f not in partition]
        if missing:
            raise DatasetError(f"{part_file}: {len(missing)} images have no partition, e.g. {missing[0]}")
        code = CELEBA_SPLITS[split]
        rows = [i for i, f in enumerate(files) if partition[f] == code][:limit]
        self.attributes: list[str] = names
        self.files = [files[i] for i in rows]
        self.labels = labels[rows].to(torch.float32) if rows else torch.zeros(0, len(names))
        self.split = split
        self.size = (int(image_size), int(image_size))
        self.images: Tensor | None = None
        if cache:
            key = _stat_key(attr_file, part_file)
            name = f"{split}-{image_size}px-{len(self.files)}-{key}.pt"
            self.images = self._cached(cache_dir() / "celeba" / name)

    def _cached(self, path: Path) -> Tensor:
        if path.is_file():
            try:
                images = torch.load(path, weights_only=True)
                if isinstance(images, Tensor) and images.shape == (len(self.files), 3, *self.size):
                    return images
            except Exception:  # a damaged cache file is rebuilt
                pass
        images = torch.empty(len(self.files), 3, *self.size, dtype=torch.uint8)
        for i in range(len(self.files)):
            images[i] = self._decode(i)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.part")
        torch.save(images, tmp)
        os.replace(tmp, path)
        return images

    def _decode(self, index: int) -> Tensor:
        path = self.image_dir / self.files[index]
        if not path.is_file():
            raise DatasetNotFoundError(f"CelebA: {path} is missing (listed in list_attr_celeba.txt)")
        return load_rgb(path, self.size)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        raw = self.images[index] if self.images is not None else self._decode(index)
        return raw.to(torch.float32) / 255.0, self.labels[index]

    def check_attributes(self, expected: Sequence[str] = CELEBA_ATTRIBUTES) -> None:
        """Raise :class:`DatasetError` unless the file's attributes are ``expected`` in that order."""
        if list(self.attributes) != list(expected):
            raise DatasetError(
                f"CelebA: list_attr_celeba.txt names {len(self.attributes)} attributes "
                f"{self.attributes[:3]}..., expected the 40 of the release in order"
            )
