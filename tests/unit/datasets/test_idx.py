"""IDX reader/writer and the Fashion-MNIST loader, on tiny fixture files (never the Debian package)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import pytest
import torch

from molearn.datasets import (
    DEBIAN_FASHION_MNIST,
    ENV_FASHION_MNIST,
    FASHION_MNIST_FILES,
    IDXError,
    fashion_mnist_root,
    load_fashion_mnist,
    read_idx,
    write_idx,
)


def _fixture(root: Path, n_train: int = 12, n_test: int = 5, side: int = 28, gz: bool = True) -> None:
    g = torch.Generator().manual_seed(0)
    suffix = ".gz" if gz else ""
    for split, n in (("train", n_train), ("test", n_test)):
        img, lab = FASHION_MNIST_FILES[split]
        write_idx(
            root / f"{img}{suffix}", torch.randint(0, 256, (n, side, side), generator=g, dtype=torch.uint8)
        )
        write_idx(root / f"{lab}{suffix}", torch.arange(n, dtype=torch.uint8) % 10)


# ------------------------------------------------------------------------------------------ IDX format
@pytest.mark.parametrize(
    "dtype", [torch.uint8, torch.int8, torch.int16, torch.int32, torch.float32, torch.float64]
)
@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
def test_round_trip(tmp_path: Path, dtype: torch.dtype, name: str) -> None:
    g = torch.Generator().manual_seed(1)
    a = (torch.randn(3, 4, 5, generator=g) * 100).to(dtype)
    back = read_idx(write_idx(tmp_path / name, a))
    assert back.dtype == dtype and back.shape == a.shape
    assert torch.equal(back, a)


def test_bytes_are_the_published_format(tmp_path: Path) -> None:
    # the header of a labels file: magic 0x00000801, then the count, big-endian; then the raw bytes
    path = write_idx(tmp_path / "labels", torch.tensor([7, 2, 1], dtype=torch.uint8))
    assert path.read_bytes() == bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1])
    # multi-byte values are big-endian
    path = write_idx(tmp_path / "ints", torch.tensor([258], dtype=torch.int32))
    assert path.read_bytes() == bytes([0, 0, 0x0C, 1, 0, 0, 0, 1, 0, 0, 1, 2])
    # and gzip-compressed files hold the same bytes
    gz = write_idx(tmp_path / "labels.gz", torch.tensor([7, 2, 1], dtype=torch.uint8))
    assert gzip.decompress(gz.read_bytes()) == bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1])


def test_reads_a_hand_made_file(tmp_path: Path) -> None:
    raw = bytes([0, 0, 8, 3]) + struct.pack(">3I", 2, 2, 3) + bytes(range(12))
    (tmp_path / "x.idx").write_bytes(raw)
    x = read_idx(tmp_path / "x.idx")
    assert x.shape == (2, 2, 3) and x.dtype == torch.uint8
    assert x.flatten().tolist() == list(range(12))


def _write(path: Path, raw: bytes, gz: bool = False) -> Path:
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


GOOD = bytes([0, 0, 8, 2]) + struct.pack(">2I", 2, 3) + bytes(6)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "truncated header"),
        (bytes([0, 0, 8]), "truncated header"),
        (bytes([1, 2, 8, 1]) + struct.pack(">I", 1) + bytes(1), "bad magic number"),
        (bytes([0, 0, 0x07, 1]) + struct.pack(">I", 1) + bytes(1), "unknown IDX type code"),
        (bytes([0, 0, 8, 0]), "bad number of dimensions"),
        (bytes([0, 0, 8, 3]) + struct.pack(">2I", 2, 3), "truncated header"),
        (GOOD[:-1], "truncated data"),
        (GOOD + bytes(2), "trailing bytes"),
        (bytes([0, 0, 0x0C, 1]) + struct.pack(">I", 2) + bytes(7), "truncated data"),
    ],
)
@pytest.mark.parametrize("gz", [False, True])
def test_corrupt_files_raise_naming_the_file(tmp_path: Path, raw: bytes, message: str, gz: bool) -> None:
    path = _write(tmp_path / ("bad.idx.gz" if gz else "bad.idx"), raw, gz)
    with pytest.raises(IDXError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_good_reference_is_readable(tmp_path: Path) -> None:
    assert read_idx(_write(tmp_path / "good.idx", GOOD)).shape == (2, 3)


def test_broken_gzip_streams(tmp_path: Path) -> None:
    whole = gzip.compress(GOOD)
    truncated = _write(tmp_path / "cut.idx.gz", whole[: len(whole) // 2])
    with pytest.raises(IDXError, match="gzip"):
        read_idx(truncated)
    plain = _write(tmp_path / "plain.idx.gz", GOOD)  # not compressed although named .gz
    with pytest.raises(IDXError, match="gzip"):
        read_idx(plain)
    gz_unnamed = _write(tmp_path / "packed.idx", whole)  # compressed but not named .gz
    with pytest.raises(IDXError, match="bad magic number"):
        read_idx(gz_unnamed)


def test_missing_file_and_bad_writes(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope"):
        read_idx(tmp_path / "nope.idx")
    with pytest.raises(TypeError, match="IDX cannot store"):
        write_idx(tmp_path / "b.idx", torch.zeros(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="1 to"):
        write_idx(tmp_path / "s.idx", torch.tensor(3, dtype=torch.uint8))


# ------------------------------------------------------------------------------------------ loader
@pytest.mark.parametrize("gz", [True, False])
def test_load_fashion_mnist_from_root(tmp_path: Path, gz: bool) -> None:
    _fixture(tmp_path, gz=gz)
    x, y = load_fashion_mnist(tmp_path, "train")
    assert x.shape == (12, 28, 28) and x.dtype == torch.uint8
    assert y.dtype == torch.int64 and y.tolist() == [i % 10 for i in range(12)]
    xt, yt = load_fashion_mnist(str(tmp_path), split="test")
    assert xt.shape == (5, 28, 28) and yt.shape == (5,)
    expected = read_idx(tmp_path / ("train-images-idx3-ubyte" + (".gz" if gz else "")))
    assert torch.equal(x, expected)


def test_root_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_FASHION_MNIST, raising=False)
    assert fashion_mnist_root() == DEBIAN_FASHION_MNIST
    monkeypatch.setenv(ENV_FASHION_MNIST, str(tmp_path))
    assert fashion_mnist_root() == tmp_path
    assert fashion_mnist_root(tmp_path / "other") == tmp_path / "other"  # the argument wins
    _fixture(tmp_path)
    x, _ = load_fashion_mnist(split="test")  # found through the environment variable
    assert x.shape == (5, 28, 28)


def test_missing_data_names_the_path_and_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError) as info:
        load_fashion_mnist(empty)
    msg = str(info.value)
    assert str(empty) in msg and "apt-get install dataset-fashion-mnist" in msg and "root" in msg
    monkeypatch.setenv(ENV_FASHION_MNIST, str(empty))
    with pytest.raises(FileNotFoundError, match=ENV_FASHION_MNIST):
        load_fashion_mnist()


def test_loader_validates_the_pair(tmp_path: Path) -> None:
    _fixture(tmp_path)
    img, lab = FASHION_MNIST_FILES["train"]
    write_idx(tmp_path / f"{lab}.gz", torch.zeros(11, dtype=torch.uint8))  # one label short
    with pytest.raises(IDXError, match="12 images but"):
        load_fashion_mnist(tmp_path)
    write_idx(tmp_path / f"{lab}.gz", torch.full((12,), 10, dtype=torch.uint8))
    with pytest.raises(IDXError, match="out of range"):
        load_fashion_mnist(tmp_path)
    write_idx(tmp_path / f"{img}.gz", torch.zeros(12, 28, 28, dtype=torch.int16))
    with pytest.raises(IDXError, match="uint8 images"):
        load_fashion_mnist(tmp_path)
    with pytest.raises(ValueError, match="split"):
        load_fashion_mnist(tmp_path, "valid")
