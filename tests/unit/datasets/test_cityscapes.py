"""Cityscapes in MTAN's preprocessed NumPy layout: label_7 / label_19 / LibMTL's renamed label/."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from molearn.datasets import ENV_CITYSCAPES_DIR, CityscapesDataset, DatasetNotFoundError

from ..._vision import write_dense_fixture


def test_items_and_label_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written = write_dense_fixture(tmp_path, "cityscapes", n_train=2, n_test=3, size=(32, 64))
    monkeypatch.setenv(ENV_CITYSCAPES_DIR, str(tmp_path))
    ds = CityscapesDataset(split="test")
    assert len(ds) == 3 and len(CityscapesDataset()) == 2
    image, targets = ds[2]
    ref = written["val"][2]
    assert set(targets) == {"segmentation", "depth"}
    np.testing.assert_array_equal(image.numpy(), np.moveaxis(ref["image"], -1, 0))
    np.testing.assert_array_equal(targets["segmentation"].numpy(), ref["label_7"].astype(np.int64))
    np.testing.assert_array_equal(targets["depth"].numpy(), np.moveaxis(ref["depth"], -1, 0))
    _, t19 = CityscapesDataset(split="test", classes=19)[2]
    np.testing.assert_array_equal(t19["segmentation"].numpy(), ref["label_19"].astype(np.int64))
    # LibMTL renames label_7 to label
    shutil.move(tmp_path / "val" / "label_7", tmp_path / "val" / "label")
    _, t = CityscapesDataset(split="test")[2]
    np.testing.assert_array_equal(t["segmentation"].numpy(), ref["label_7"].astype(np.int64))
    with pytest.raises(ValueError, match="7- and 19-class"):
        CityscapesDataset(classes=13)


def test_missing_root_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_CITYSCAPES_DIR, raising=False)
    with pytest.raises(DatasetNotFoundError, match=rf"\${ENV_CITYSCAPES_DIR}.*label_7"):
        CityscapesDataset()
    (tmp_path / "train" / "image").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match="label_7 is missing"):
        CityscapesDataset(tmp_path)
