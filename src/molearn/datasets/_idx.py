"""Real datasets read from disk, without downloading anything: Fashion-MNIST from its IDX files.

**IDX format** (LeCun's MNIST format, also used by Fashion-MNIST): a 4-byte magic number
``0x00 0x00 <type> <ndim>``, then ``ndim`` big-endian unsigned 32-bit dimension sizes, then the data in
row-major order, big-endian. Type codes: ``0x08`` uint8, ``0x09`` int8, ``0x0B`` int16, ``0x0C`` int32,
``0x0D`` float32, ``0x0E`` float64. Files ending in ``.gz`` are gzip-compressed.
:func:`read_idx` validates the header, the sizes and the length of the payload and raises
:class:`IDXError` (a ``ValueError``) naming the file for anything corrupt or truncated; :func:`write_idx`
writes the same format (tests use it to build tiny fixture files).

**Fashion-MNIST** (Xiao, Rasul & Vollgraf 2017, Zalando, MIT licence): 60,000 training and 10,000 test
images of 28×28 grey levels, 10 classes. :func:`load_fashion_mnist` finds the files in ``root``, else in
``$MOLEARN_FASHION_MNIST``, else in ``/usr/share/datasets/fashion-mnist/`` where the Debian/Ubuntu
package ``dataset-fashion-mnist`` installs them (``apt-get install dataset-fashion-mnist``).

Pure Python + torch (``struct``, ``gzip``, ``torch.frombuffer``): numpy is not needed.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import torch
from torch import Tensor

__all__ = [
    "DEBIAN_FASHION_MNIST",
    "ENV_FASHION_MNIST",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_FILES",
    "IDXError",
    "fashion_mnist_root",
    "load_fashion_mnist",
    "read_idx",
    "write_idx",
]

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
ENV_FASHION_MNIST = "MOLEARN_FASHION_MNIST"
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

#: IDX type code -> (torch dtype, bytes per element)
_CODES: dict[int, tuple[torch.dtype, int]] = {
    0x08: (torch.uint8, 1),
    0x09: (torch.int8, 1),
    0x0B: (torch.int16, 2),
    0x0C: (torch.int32, 4),
    0x0D: (torch.float32, 4),
    0x0E: (torch.float64, 8),
}
_DTYPES = {dtype: code for code, (dtype, _) in _CODES.items()}
_MAX_NDIM = 16


class IDXError(ValueError):
    """An IDX file is corrupt, truncated or not an IDX file at all (the message names the file)."""


def _read_bytes(path: Path) -> bytes:
    if path.suffix == ".gz":
        try:
            with gzip.open(path, "rb") as fh:
                return fh.read()
        except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
            raise IDXError(f"{path}: not a readable gzip file ({type(exc).__name__}: {exc})") from exc
    return path.read_bytes()


def _swap(data: Tensor, itemsize: int, dtype: torch.dtype) -> Tensor:
    """Big-endian bytes -> native values of ``dtype``."""
    raw = data.view(-1, itemsize)
    if struct.pack("=H", 1) != struct.pack(">H", 1):  # little-endian host: reverse each element's bytes
        raw = raw.flip(-1)
    return raw.contiguous().view(dtype).reshape(-1)


def read_idx(path: str | os.PathLike[str]) -> Tensor:
    """Read an IDX file (gzip-compressed if the name ends in ``.gz``) into a tensor of its shape and type.

    Raises ``FileNotFoundError`` when the file is missing and :class:`IDXError` when it is corrupt: bad
    gzip stream, bad magic number, unknown type code, header or payload shorter than announced, or
    trailing bytes after the payload.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"IDX file not found: {p}")
    buf = _read_bytes(p)
    if len(buf) < 4:
        raise IDXError(
            f"{p}: truncated header ({len(buf)} bytes, an IDX file starts with a 4-byte magic number)"
        )
    zero0, zero1, code, ndim = buf[0], buf[1], buf[2], buf[3]
    if zero0 != 0 or zero1 != 0:
        raise IDXError(
            f"{p}: bad magic number 0x{buf[:4].hex()} (an IDX file starts with two zero bytes); "
            "is it gzip-compressed without a .gz name, or not an IDX file?"
        )
    if code not in _CODES:
        raise IDXError(
            f"{p}: unknown IDX type code 0x{code:02x} (known: {', '.join(f'0x{c:02x}' for c in _CODES)})"
        )
    if ndim == 0 or ndim > _MAX_NDIM:
        raise IDXError(
            f"{p}: bad number of dimensions {ndim} in the magic number (expected 1 to {_MAX_NDIM})"
        )
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise IDXError(f"{p}: truncated header ({len(buf)} bytes, {header} needed for {ndim} dimensions)")
    dims = struct.unpack(f">{ndim}I", buf[4:header])
    dtype, itemsize = _CODES[code]
    count = 1
    for d in dims:
        count *= d
    expected = header + count * itemsize
    if len(buf) < expected:
        raise IDXError(
            f"{p}: truncated data: shape {tuple(dims)} of {dtype} needs {count * itemsize} bytes after the "
            f"header, the file has {len(buf) - header}"
        )
    if len(buf) > expected:
        raise IDXError(
            f"{p}: {len(buf) - expected} unexpected trailing bytes after the data of shape {tuple(dims)}"
        )
    if count == 0:
        return torch.empty(dims, dtype=dtype)
    data = torch.frombuffer(bytearray(buf[header:]), dtype=torch.uint8)
    if itemsize > 1:
        return _swap(data, itemsize, dtype).reshape(dims)
    return data.view(dtype).reshape(dims)


def write_idx(path: str | os.PathLike[str], array: Tensor) -> Path:
    """Write ``array`` (a tensor of a type listed in the module docstring) as an IDX file.

    Gzip-compressed when the name ends in ``.gz``. Returns the path. ``read_idx(write_idx(p, a))`` equals
    ``a`` in shape, type and values.
    """
    t = torch.as_tensor(array).detach().cpu().contiguous()
    if t.dtype not in _DTYPES:
        raise TypeError(f"IDX cannot store {t.dtype}; use one of {', '.join(map(str, _DTYPES))}")
    if t.dim() == 0 or t.dim() > _MAX_NDIM:
        raise ValueError(f"IDX stores 1 to {_MAX_NDIM} dimensions, got a tensor of shape {tuple(t.shape)}")
    code = _DTYPES[t.dtype]
    itemsize = _CODES[code][1]
    header = bytes([0, 0, code, t.dim()]) + struct.pack(f">{t.dim()}I", *t.shape)
    raw = t.reshape(-1).view(torch.uint8)
    if itemsize > 1 and struct.pack("=H", 1) != struct.pack(">H", 1):
        raw = raw.view(-1, itemsize).flip(-1).reshape(-1)
    payload = header + _tensor_bytes(raw.contiguous())
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.suffix == ".gz":
        with gzip.open(p, "wb") as fh:
            fh.write(payload)
    else:
        p.write_bytes(payload)
    return p


def _tensor_bytes(raw: Tensor) -> bytes:
    """The bytes of a contiguous uint8 tensor, without numpy."""
    out = bytearray(raw.numel())
    torch.frombuffer(out, dtype=torch.uint8).copy_(raw)
    return bytes(out)


def fashion_mnist_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The folder read by :func:`load_fashion_mnist`: ``root``, else ``$MOLEARN_FASHION_MNIST``, else the
    Debian package's ``/usr/share/datasets/fashion-mnist``."""
    if root is not None:
        return Path(root)
    env = os.environ.get(ENV_FASHION_MNIST)
    if env:
        return Path(env)
    return DEBIAN_FASHION_MNIST


def _find(folder: Path, stem: str, how: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(
        f"Fashion-MNIST file {stem}.gz not found in {folder} ({how}). Install the data with "
        f"`apt-get install dataset-fashion-mnist` (Debian/Ubuntu; it puts the files in "
        f"{DEBIAN_FASHION_MNIST}), or pass root=/folder/with/the/idx/files (or set ${ENV_FASHION_MNIST})."
    )


def load_fashion_mnist(
    root: str | os.PathLike[str] | None = None, split: str = "train"
) -> tuple[Tensor, Tensor]:
    """Fashion-MNIST ``split`` (``"train"``: 60,000 images, ``"test"``: 10,000) as ``(images, labels)``.

    ``images`` is a uint8 tensor (N, 28, 28) of grey levels 0..255 (divide by 255 for [0, 1]), ``labels``
    an int64 tensor (N,) of classes 0..9 (names in :data:`FASHION_MNIST_CLASSES`). The files
    (``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``) are looked up in ``root``, else in
    ``$MOLEARN_FASHION_MNIST``, else in ``/usr/share/datasets/fashion-mnist`` (Debian package
    ``dataset-fashion-mnist``); a ``FileNotFoundError`` names the folder and the fix when they are missing.
    """
    if split not in FASHION_MNIST_FILES:
        raise ValueError(f"split must be one of {sorted(FASHION_MNIST_FILES)}, got {split!r}")
    folder = fashion_mnist_root(root)
    if root is not None:
        how = "the root argument"
    elif os.environ.get(ENV_FASHION_MNIST):
        how = f"from ${ENV_FASHION_MNIST}"
    else:
        how = "the default location"
    img_stem, lab_stem = FASHION_MNIST_FILES[split]
    img_path = _find(folder, img_stem, how)
    lab_path = _find(folder, lab_stem, how)
    images = read_idx(img_path)
    labels = read_idx(lab_path)
    if images.dtype != torch.uint8 or images.dim() != 3:
        raise IDXError(
            f"{img_path}: expected uint8 images of shape (N, H, W), got {images.dtype} {tuple(images.shape)}"
        )
    if labels.dtype != torch.uint8 or labels.dim() != 1:
        raise IDXError(
            f"{lab_path}: expected uint8 labels of shape (N,), got {labels.dtype} {tuple(labels.shape)}"
        )
    if images.shape[0] != labels.shape[0]:
        raise IDXError(f"{img_path} has {images.shape[0]} images but {lab_path} has {labels.shape[0]} labels")
    if labels.numel() and int(labels.max()) >= len(FASHION_MNIST_CLASSES):
        raise IDXError(
            f"{lab_path}: label {int(labels.max())} out of range 0..{len(FASHION_MNIST_CLASSES) - 1}"
        )
    return images, labels.to(torch.int64)
