"""NYUv2 and Cityscapes in the preprocessed NumPy layout of MTAN (Liu, Johns & Davison, CVPR 2019, github
lorenmt/mtan ``im2im_pred/create_dataset.py``), read by LibMTL, Nash-MTL, FAMO and CAGrad alike::

    <root>/train/image/<i>.npy     (H, W, 3) float, values in [0, 1]
    <root>/train/label/<i>.npy     (H, W) float, class 0..12, -1 = ignored          (NYUv2)
    <root>/train/label_7/<i>.npy   (H, W) float, class 0..6, -1 = ignored           (Cityscapes; label_19)
    <root>/train/depth/<i>.npy     (H, W, 1) float, 0 = missing
    <root>/train/normal/<i>.npy    (H, W, 3) float, unit normals, 0 = missing       (NYUv2)
    <root>/val/...                 the same; the protocols use it as the test split

NYUv2: 795 training and 654 test images of 288×384 (Silberman et al., ECCV 2012). Cityscapes: 2,975 and
500 images of 128×256 (Cordts et al., CVPR 2016). The ``.npy`` files are read without NumPy
(:func:`read_npy`), one item at a time. :func:`random_scale_crop` is the training augmentation of
Nash-MTL / FAMO / LibMTL (from MTAN issue #34): a random crop of scale 1, 1.2 or 1.5 resized back,
depth divided by the scale, and a horizontal flip with probability 1/2 (normals' x negated).
"""

from __future__ import annotations

import ast
import os
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "CITYSCAPES_LAYOUT",
    "ENV_CITYSCAPES_DIR",
    "ENV_NYUV2_DIR",
    "NYUV2_CLASSES",
    "NYUV2_LAYOUT",
    "CityscapesDataset",
    "DatasetNotFoundError",
    "DenseDataset",
    "NYUv2Dataset",
    "NpyError",
    "random_scale_crop",
    "read_npy",
    "resolve_root",
]

ENV_NYUV2_DIR = "MOLEARN_NYUV2_DIR"
ENV_CITYSCAPES_DIR = "MOLEARN_CITYSCAPES_DIR"
NYUV2_CLASSES = 13
NYUV2_LAYOUT = (
    "<root>/{train,val}/{image,label,depth,normal}/<i>.npy (the preprocessed NYUv2 of MTAN / LibMTL / "
    "Nash-MTL: image (288, 384, 3), label (288, 384) with -1 = ignored, depth (288, 384, 1), "
    "normal (288, 384, 3))"
)
CITYSCAPES_LAYOUT = (
    "<root>/{train,val}/{image,label_7,depth}/<i>.npy (the preprocessed Cityscapes of MTAN / LibMTL / "
    "FAMO: image (128, 256, 3), label_7 (128, 256) with -1 = ignored, depth (128, 256, 1); label_19 for "
    "19 classes, LibMTL's label/ accepted for 7)"
)
#: our split name -> the release's folder (the protocols train on train/ and test on val/)
SPLIT_FOLDERS = {"train": "train", "test": "val"}
SCALES = (1.0, 1.2, 1.5)


class DatasetNotFoundError(FileNotFoundError):
    """A data set's folder is not given or lacks the expected files; the message names the environment
    variable to set and the layout expected."""


class NpyError(ValueError):
    """A ``.npy`` file is malformed or of an unsupported type; the message names the file."""


def resolve_root(root: str | os.PathLike[str] | None, env: str, name: str, layout: str) -> Path:
    """``root``, else ``$env``; raises :class:`DatasetNotFoundError` naming both and the layout."""
    given = root if root is not None else (os.environ.get(env) or None)
    if given is None:
        raise DatasetNotFoundError(
            f"{name}: no data folder given; pass root=... or set ${env} to your copy, laid out as {layout}. "
            "molearn cannot download it."
        )
    path = Path(given).expanduser()
    if not path.is_dir():
        src = "root" if root is not None else f"${env}"
        raise DatasetNotFoundError(f"{name}: {src} = {str(path)!r} is not a folder; expected {layout}")
    return path


# ------------------------------------------------------------------------------------------------ npy
_DTYPES = {
    "f2": torch.float16, "f4": torch.float32, "f8": torch.float64,
    "i1": torch.int8, "i2": torch.int16, "i4": torch.int32, "i8": torch.int64,
    "u1": torch.uint8, "b1": torch.bool,
}  # fmt: skip


def read_npy(path: str | os.PathLike[str]) -> Tensor:
    """The array of a NumPy ``.npy`` file (format versions 1-3) as a tensor, without NumPy.

    Little-endian (or byte-order-free) booleans, integers of 8-64 bits and floats of 16-64 bits; C or
    Fortran order. Raises :class:`NpyError` naming the file for anything else (pickled objects,
    big-endian data, a truncated file)."""
    path = Path(path)
    data = path.read_bytes()
    if data[:6] != b"\x93NUMPY" or len(data) < 10:
        raise NpyError(f"{path}: not a .npy file (bad magic)")
    major = data[6]
    if major == 1:
        (hlen,), start = struct.unpack("<H", data[8:10]), 10
    elif major in (2, 3):
        (hlen,), start = struct.unpack("<I", data[8:12]), 12
    else:
        raise NpyError(f"{path}: unsupported .npy format version {major}")
    try:
        header = ast.literal_eval(data[start : start + hlen].decode("latin1" if major < 3 else "utf8"))
        descr, fortran, shape = header["descr"], bool(header["fortran_order"]), tuple(header["shape"])
    except (ValueError, SyntaxError, KeyError, TypeError) as err:
        raise NpyError(f"{path}: unreadable .npy header ({err})") from None
    if not isinstance(descr, str) or descr[0] not in "<|=" or descr[1:] not in _DTYPES:
        raise NpyError(f"{path}: unsupported dtype {descr!r} (little-endian bool, int, uint8 or float)")
    dtype = _DTYPES[descr[1:]]
    count = 1
    for d in shape:
        count *= int(d)
    body = data[start + hlen :]
    nbytes = count * torch.empty((), dtype=dtype).element_size()
    if len(body) < nbytes:
        raise NpyError(f"{path}: truncated ({len(body)} data bytes, {nbytes} expected for {shape} {descr})")
    if count == 0:
        return torch.empty(shape, dtype=dtype)
    flat = torch.frombuffer(bytearray(body[:nbytes]), dtype=dtype)
    if fortran:
        return flat.reshape(shape[::-1]).permute(*reversed(range(len(shape)))).contiguous()
    return flat.reshape(shape)


# ------------------------------------------------------------------------------------------------ data
def _chw(x: Tensor, channels: int, path: Path) -> Tensor:
    """(H, W, C) or (H, W) for one channel -> (C, H, W) float32."""
    if x.dim() == 2 and channels == 1:
        x = x.unsqueeze(-1)
    if x.dim() != 3 or x.shape[-1] != channels:
        raise NpyError(f"{path}: expected (H, W, {channels}), got {tuple(x.shape)}")
    return x.permute(2, 0, 1).to(torch.float32).contiguous()


class DenseDataset(torch.utils.data.Dataset[tuple[Tensor, dict[str, Tensor]]]):
    """One split of a preprocessed dense-prediction release (the module docstring's layout).

    Items are ``(image, targets)``: ``image`` (3, H, W) float32, ``targets`` a dict with
    ``"segmentation"`` (H, W) int64 (−1 = ignored), ``"depth"`` (1, H, W) float32 and, when the release
    has it, ``"normal"`` (3, H, W) float32. Images are indexed by the integer stems of
    ``image/*.npy``; every other folder must hold the same stems.

    Args:
        root: the release's folder (holding ``train/`` and ``val/``).
        split: ``"train"`` (folder ``train/``) or ``"test"`` (folder ``val/``, the protocols' test set).
        label_dir: the segmentation folder (``label``, ``label_7``, ``label_19``).
        normals: whether to read ``normal/``.
        augment: apply :func:`random_scale_crop` to every item (training augmentation, global torch RNG).
        limit: use the first ``limit`` images only.
    """

    name = "dense"
    env = ""
    layout = ""

    def __init__(
        self,
        root: str | os.PathLike[str] | None,
        split: str = "train",
        *,
        label_dir: str = "label",
        normals: bool = True,
        augment: bool = False,
        limit: int | None = None,
    ) -> None:
        if split not in SPLIT_FOLDERS:
            raise ValueError(f"split must be 'train' or 'test' (the release's val/ folder), got {split!r}")
        self.root = resolve_root(root, self.env, self.name, self.layout)
        self.split = split
        self.folder = self.root / SPLIT_FOLDERS[split]
        self.parts = {"image": "image", "segmentation": label_dir, "depth": "depth"}
        if normals:
            self.parts["normal"] = "normal"
        for part in self.parts.values():
            if not (self.folder / part).is_dir():
                raise DatasetNotFoundError(
                    f"{self.name}: {self.folder / part} is missing; expected {self.layout}"
                )
        stems = []
        for p in (self.folder / "image").glob("*.npy"):
            try:
                stems.append(int(p.stem))
            except ValueError:
                continue
        if not stems:
            raise DatasetNotFoundError(f"{self.name}: no <i>.npy images in {self.folder / 'image'}")
        self.indices = sorted(stems)[:limit] if limit is not None else sorted(stems)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.indices)

    def _read(self, part: str, i: int) -> tuple[Tensor, Path]:
        path = self.folder / self.parts[part] / f"{i}.npy"
        if not path.is_file():
            raise DatasetNotFoundError(f"{self.name}: {path} is missing (image {i} has no {part})")
        return read_npy(path), path

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        i = self.indices[index]
        raw, path = self._read("image", i)
        image = _chw(raw, 3, path)
        h, w = image.shape[-2:]
        label, lpath = self._read("segmentation", i)
        if label.dim() == 3 and label.shape[-1] == 1:
            label = label[..., 0]
        if tuple(label.shape) != (h, w):
            raise NpyError(f"{lpath}: expected ({h}, {w}) like its image, got {tuple(label.shape)}")
        targets = {"segmentation": label.to(torch.int64)}
        for part, channels in (("depth", 1), ("normal", 3)):
            if part in self.parts:
                raw, path = self._read(part, i)
                t = _chw(raw, channels, path)
                if tuple(t.shape[-2:]) != (h, w):
                    raise NpyError(f"{path}: expected ({h}, {w}, {channels}), got {tuple(raw.shape)}")
                targets[part] = t
        if self.augment:
            image, targets = random_scale_crop(image, targets)
        return image, targets


class NYUv2Dataset(DenseDataset):
    """NYUv2 (13-class segmentation, depth, surface normals) from ``root`` or ``$MOLEARN_NYUV2_DIR``;
    see :class:`DenseDataset`."""

    name = "NYUv2"
    env = ENV_NYUV2_DIR
    layout = NYUV2_LAYOUT

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        split: str = "train",
        *,
        augment: bool = False,
        limit: int | None = None,
    ) -> None:
        super().__init__(root, split, label_dir="label", normals=True, augment=augment, limit=limit)


class CityscapesDataset(DenseDataset):
    """Cityscapes (7- or 19-class segmentation, depth) from ``root`` or ``$MOLEARN_CITYSCAPES_DIR``; the
    labels come from ``label_7/`` (``classes=7``; LibMTL's renamed ``label/`` is read when ``label_7/``
    is absent) or ``label_19/``. See :class:`DenseDataset`."""

    name = "Cityscapes"
    env = ENV_CITYSCAPES_DIR
    layout = CITYSCAPES_LAYOUT

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        split: str = "train",
        *,
        classes: int = 7,
        augment: bool = False,
        limit: int | None = None,
    ) -> None:
        if classes not in (7, 19):
            raise ValueError(f"Cityscapes has 7- and 19-class labels, got classes={classes}")
        label_dir = f"label_{classes}"
        base = resolve_root(root, self.env, self.name, self.layout)
        folder = base / SPLIT_FOLDERS.get(split, "train")
        if classes == 7 and not (folder / label_dir).is_dir() and (folder / "label").is_dir():
            label_dir = "label"
        self.classes = classes
        super().__init__(base, split, label_dir=label_dir, normals=False, augment=augment, limit=limit)


# ------------------------------------------------------------------------------------------------ augment
def random_scale_crop(
    image: Tensor,
    targets: Mapping[str, Tensor],
    scales: Sequence[float] = SCALES,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The training augmentation of Nash-MTL / FAMO / LibMTL on one item (random numbers from
    ``generator``, default torch's global one).

    A scale ``s`` drawn from ``scales``; a crop of ``int(H/s)`` × ``int(W/s)`` at a uniform position,
    resized back to H × W (bilinear with aligned corners for the image and normals, nearest for labels
    and depth); depth divided by ``s`` (a closer camera); then, with probability 1/2, a horizontal flip
    of everything with the normals' x component negated."""
    h, w = image.shape[-2:]
    g = generator
    s = float(scales[int(torch.randint(len(scales), (), generator=g).item())])
    ch, cw = int(h / s), int(w / s)
    i = int(torch.randint(h - ch + 1, (), generator=g).item())
    j = int(torch.randint(w - cw + 1, (), generator=g).item())

    def resize(x: Tensor, mode: str) -> Tensor:
        crop = x[None, :, i : i + ch, j : j + cw].to(torch.float32)
        if mode == "bilinear":
            return F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=True)[0]
        return F.interpolate(crop, size=(h, w), mode="nearest")[0]

    out_image = resize(image, "bilinear")
    out: dict[str, Tensor] = {}
    for key, t in targets.items():
        if key == "segmentation":
            out[key] = resize(t[None], "nearest")[0].to(t.dtype)
        elif key == "depth":
            out[key] = resize(t, "nearest") / s
        elif key == "normal":
            out[key] = resize(t, "bilinear")
        else:
            out[key] = t
    if bool(torch.rand((), generator=g) < 0.5):
        out_image = out_image.flip(-1)
        out = {k: v.flip(-1) for k, v in out.items()}
        if "normal" in out:
            out["normal"] = out["normal"].clone()
            out["normal"][0] = -out["normal"][0]
    return out_image, out
