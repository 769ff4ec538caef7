"""CelebA from fixture releases in the three accepted layouts: text files parsed by hand-checked rules,
images resized as torchvision's Resize((64, 64)) does to a PIL image, the decoded-image cache."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from molearn.datasets import (
    CELEBA_ATTRIBUTES,
    ENV_CACHE,
    ENV_CELEBA_DIR,
    CelebADataset,
    DatasetError,
    DatasetNotFoundError,
    celeba_files,
    read_celeba_attributes,
    read_celeba_partition,
)
from molearn.datasets import _celeba as mc

from ..._vision import write_celeba_fixture

PIL = pytest.importorskip("PIL.Image")


def _expected(path: Path) -> np.ndarray:
    """torchvision Resize((64, 64)) + ToTensor on the PIL image: Pillow bilinear, / 255, CHW."""
    with PIL.open(path) as img:
        small = img.convert("RGB").resize((64, 64), PIL.BILINEAR)
    return np.moveaxis(np.asarray(small, dtype=np.float32) / 255.0, -1, 0)


@pytest.mark.parametrize("layout", ["torchvision", "flat", "original"])
def test_splits_labels_and_images(tmp_path: Path, layout: str) -> None:
    files, labels = write_celeba_fixture(tmp_path, layout=layout)
    img_dir, attr, _ = celeba_files(tmp_path)
    assert (img_dir / files[0]).is_file() and attr.name == "list_attr_celeba.txt"
    train, val, test = (CelebADataset(tmp_path, s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (4, 2, 2)  # partition codes 0 0 0 0 1 1 2 2
    assert val.files == files[4:6] and test.files == files[6:]
    image, y = test[1]
    assert y.dtype == torch.float32 and y.shape == (40,)
    np.testing.assert_array_equal(y.numpy(), (labels[7] == 1).astype(np.float32))  # -1 -> 0, 1 -> 1
    assert image.dtype == torch.float32 and tuple(image.shape) == (3, 64, 64)
    np.testing.assert_allclose(image.numpy(), _expected(img_dir / files[7]), atol=1e-7)
    assert train.attributes == list(CELEBA_ATTRIBUTES)
    train.check_attributes()
    assert len(CelebADataset(tmp_path, "train", limit=3)) == 3
    assert tuple(CelebADataset(tmp_path, "val", image_size=32)[0][0].shape) == (3, 32, 32)


def test_text_files_by_hand(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("2\nA B C \n000001.jpg -1  1  1\n000002.jpg  1 -1 -1\n")
    names, files, labels = read_celeba_attributes(tmp_path / "a.txt")
    assert names == ["A", "B", "C"] and files == ["000001.jpg", "000002.jpg"]
    assert labels.tolist() == [[0, 1, 1], [1, 0, 0]] and labels.dtype == torch.uint8
    (tmp_path / "p.txt").write_text("000001.jpg 0\n000002.jpg 2\n")
    assert read_celeba_partition(tmp_path / "p.txt") == {"000001.jpg": 0, "000002.jpg": 2}
    (tmp_path / "bad.txt").write_text("2\nA B C\n000001.jpg -1  1\n000002.jpg  1 -1 -1\n")
    with pytest.raises(DatasetError, match="line 3"):
        read_celeba_attributes(tmp_path / "bad.txt")
    (tmp_path / "count.txt").write_text("3\nA\n000001.jpg 1\n")
    with pytest.raises(DatasetError, match="announces 3 images"):
        read_celeba_attributes(tmp_path / "count.txt")
    (tmp_path / "p2.txt").write_text("000001.jpg 4\n")
    with pytest.raises(DatasetError, match="line 1"):
        read_celeba_partition(tmp_path / "p2.txt")


def test_cache_serves_the_same_items(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_celeba_fixture(tmp_path / "data")
    monkeypatch.setenv(ENV_CACHE, str(tmp_path / "cache"))
    monkeypatch.setenv(ENV_CELEBA_DIR, str(tmp_path / "data"))
    plain = CelebADataset(split="train")
    cached = CelebADataset(split="train", cache=True)
    assert len(list((tmp_path / "cache" / "celeba").glob("train-64px-4-*.pt"))) == 1
    for i in range(len(plain)):
        assert torch.equal(plain[i][0], cached[i][0]) and torch.equal(plain[i][1], cached[i][1])
    last = plain[3][0]

    def no_decoding(self: object, index: int) -> torch.Tensor:
        raise AssertionError("the cache should have been read")

    monkeypatch.setattr(mc.CelebADataset, "_decode", no_decoding)
    again = CelebADataset(split="train", cache=True)
    assert torch.equal(again[3][0], last)


def test_missing_files_and_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_CELEBA_DIR, raising=False)
    with pytest.raises(DatasetNotFoundError, match=rf"\${ENV_CELEBA_DIR}.*list_eval_partition"):
        CelebADataset()
    tmp_path.joinpath("empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="does not hold"):
        CelebADataset(tmp_path / "empty")
    files, _ = write_celeba_fixture(tmp_path / "data", layout="flat")
    (tmp_path / "data" / "img_align_celeba" / files[0]).unlink()
    with pytest.raises(DatasetNotFoundError, match=f"{files[0]} is missing"):
        CelebADataset(tmp_path / "data")[0]
    with pytest.raises(ValueError, match="split"):
        CelebADataset(tmp_path / "data", "dev")
    (tmp_path / "data" / "list_eval_partition.txt").write_text("000002.jpg 0\n")
    with pytest.raises(DatasetError, match="have no partition"):
        CelebADataset(tmp_path / "data")


def test_missing_pillow_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_celeba_fixture(tmp_path)
    ds = CelebADataset(tmp_path, "test")
    monkeypatch.setitem(sys.modules, "PIL", None)  # import PIL now fails
    with pytest.raises(ImportError, match=r"molearn\[vision\]"):
        ds[0]


def test_other_attribute_lists_are_refused_by_the_check(tmp_path: Path) -> None:
    (tmp_path / "img_align_celeba").mkdir()
    (tmp_path / "list_attr_celeba.txt").write_text("1\nSmiling Young\n000001.jpg 1 -1\n")
    (tmp_path / "list_eval_partition.txt").write_text("000001.jpg 0\n")
    ds = CelebADataset(tmp_path)
    assert ds.attributes == ["Smiling", "Young"] and ds.labels.tolist() == [[1.0, 0.0]]
    with pytest.raises(DatasetError, match="expected the 40"):
        ds.check_attributes()
