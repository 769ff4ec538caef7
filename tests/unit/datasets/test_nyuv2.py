"""NYUv2 in MTAN's preprocessed NumPy layout (fixture files written with numpy.save), the NumPy-free .npy
reader, and the training augmentation of Nash-MTL / FAMO."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from molearn.datasets import (
    ENV_NYUV2_DIR,
    DatasetNotFoundError,
    NpyError,
    NYUv2Dataset,
    random_scale_crop,
    read_npy,
)

from ..._vision import write_dense_fixture


# ------------------------------------------------------------------------------------------ .npy
@pytest.mark.parametrize(
    "dtype", [np.float32, np.float64, np.float16, np.int64, np.int32, np.int16, np.int8, np.uint8, np.bool_]
)
def test_read_npy_matches_numpy(tmp_path: Path, dtype: type) -> None:
    arr = (np.arange(24).reshape(2, 3, 4) % 7 - 2).astype(dtype)
    np.save(tmp_path / "a.npy", arr)
    got = read_npy(tmp_path / "a.npy")
    assert tuple(got.shape) == arr.shape
    assert got.numpy().dtype == arr.dtype
    np.testing.assert_array_equal(got.numpy(), arr)


def test_read_npy_fortran_order_versions_and_scalars(tmp_path: Path) -> None:
    arr = np.asfortranarray(np.random.default_rng(0).random((3, 5, 2)))
    np.save(tmp_path / "f.npy", arr)
    np.testing.assert_array_equal(read_npy(tmp_path / "f.npy").numpy(), arr)
    with open(tmp_path / "v2.npy", "wb") as fh:
        np.lib.format.write_array(fh, np.arange(6, dtype=np.float32).reshape(2, 3), version=(2, 0))
    np.testing.assert_array_equal(read_npy(tmp_path / "v2.npy").numpy(), np.arange(6).reshape(2, 3))
    np.save(tmp_path / "s.npy", np.float64(2.5))
    assert read_npy(tmp_path / "s.npy").item() == 2.5
    np.save(tmp_path / "e.npy", np.zeros((0, 3), np.float32))
    assert tuple(read_npy(tmp_path / "e.npy").shape) == (0, 3)


def test_read_npy_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    (tmp_path / "bad.npy").write_bytes(b"not numpy at all")
    with pytest.raises(NpyError, match="bad magic"):
        read_npy(tmp_path / "bad.npy")
    np.save(tmp_path / "big.npy", np.arange(4, dtype=">f4"))
    with pytest.raises(NpyError, match="unsupported dtype"):
        read_npy(tmp_path / "big.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(NpyError, match="unsupported dtype"):
        read_npy(tmp_path / "obj.npy")
    np.save(tmp_path / "cut.npy", np.arange(100, dtype=np.float32))
    raw = (tmp_path / "cut.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(raw[:-8])
    with pytest.raises(NpyError, match="truncated"):
        read_npy(tmp_path / "cut.npy")


# ------------------------------------------------------------------------------------------ NYUv2
def test_items_are_the_files_channels_first(tmp_path: Path) -> None:
    written = write_dense_fixture(tmp_path, "nyuv2", n_train=3, n_test=2, size=(32, 64))
    train = NYUv2Dataset(tmp_path, "train")
    test = NYUv2Dataset(tmp_path, "test")
    assert len(train) == 3 and len(test) == 2
    assert len(NYUv2Dataset(tmp_path, "train", limit=2)) == 2
    image, targets = test[1]
    ref = written["val"][1]
    assert image.dtype == torch.float32 and tuple(image.shape) == (3, 32, 64)
    np.testing.assert_array_equal(image.numpy(), np.moveaxis(ref["image"], -1, 0))
    assert set(targets) == {"segmentation", "depth", "normal"}
    seg = targets["segmentation"]
    assert seg.dtype == torch.int64 and tuple(seg.shape) == (32, 64)
    np.testing.assert_array_equal(seg.numpy(), ref["label"].astype(np.int64))
    assert int(seg.min()) == -1
    np.testing.assert_array_equal(targets["depth"].numpy(), np.moveaxis(ref["depth"], -1, 0))
    np.testing.assert_array_equal(targets["normal"].numpy(), np.moveaxis(ref["normal"], -1, 0))
    batch = next(iter(torch.utils.data.DataLoader(train, batch_size=2)))
    assert tuple(batch[0].shape) == (2, 3, 32, 64) and tuple(batch[1]["depth"].shape) == (2, 1, 32, 64)


def test_float64_labels_and_depth_without_channel(tmp_path: Path) -> None:
    written = write_dense_fixture(tmp_path, "nyuv2", n_train=1, n_test=1)
    item = written["train"][0]
    np.save(tmp_path / "train" / "label" / "0.npy", item["label"].astype(np.float64))
    np.save(tmp_path / "train" / "depth" / "0.npy", item["depth"][..., 0].astype(np.float64))
    _, targets = NYUv2Dataset(tmp_path)[0]
    np.testing.assert_array_equal(targets["segmentation"].numpy(), item["label"].astype(np.int64))
    assert tuple(targets["depth"].shape) == (1, 32, 32) and targets["depth"].dtype == torch.float32


def test_root_from_the_environment_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_NYUV2_DIR, raising=False)
    layout = r"train,val.*image,label,depth,normal"
    with pytest.raises(DatasetNotFoundError, match=rf"\${ENV_NYUV2_DIR}.*{layout}"):
        NYUv2Dataset()
    with pytest.raises(DatasetNotFoundError, match="is not a folder"):
        NYUv2Dataset(tmp_path / "nowhere")
    write_dense_fixture(tmp_path, "nyuv2", n_train=2, n_test=1)
    monkeypatch.setenv(ENV_NYUV2_DIR, str(tmp_path))
    assert len(NYUv2Dataset(split="test")) == 1
    (tmp_path / "train" / "normal" / "1.npy").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"1\.npy is missing"):
        NYUv2Dataset()[1]
    np.save(tmp_path / "train" / "label" / "0.npy", np.zeros((16, 16), np.float32))
    with pytest.raises(NpyError, match=r"expected \(32, 32\)"):
        NYUv2Dataset()[0]
    with pytest.raises(ValueError, match="split"):
        NYUv2Dataset(split="val")


# ------------------------------------------------------------------------------------------ augmentation
def _draws(seed: int, h: int, w: int, ch: int, cw: int, scales: int) -> tuple[int, int, int, bool]:
    """The random numbers random_scale_crop draws, in its order."""
    torch.manual_seed(seed)
    s = int(torch.randint(scales, ()).item())
    i = int(torch.randint(h - ch + 1, ()).item())
    j = int(torch.randint(w - cw + 1, ()).item())
    return s, i, j, bool(torch.rand(()) < 0.5)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_scale_crop_by_hand(seed: int) -> None:
    h, w = 4, 6
    image = torch.arange(3 * h * w, dtype=torch.float32).reshape(3, h, w)
    label = torch.arange(h * w).reshape(h, w) % 5 - 1
    depth = torch.full((1, h, w), 3.0)
    normal = torch.zeros(3, h, w)
    normal[0], normal[2] = 0.6, 0.8
    _, i, j, flip = _draws(seed, h, w, 2, 3, 1)
    torch.manual_seed(seed)
    targets = {"segmentation": label, "depth": depth, "normal": normal}
    img2, t2 = random_scale_crop(image, targets, scales=(2.0,))
    # nearest resize of the 2×3 crop to 4×6: output (y, x) reads crop (y // 2, x // 2)
    rows = torch.arange(h) // 2 + i
    cols = torch.arange(w) // 2 + j
    exp_label = label[rows][:, cols]
    if flip:
        exp_label = exp_label.flip(-1)
    assert torch.equal(t2["segmentation"], exp_label) and t2["segmentation"].dtype == label.dtype
    assert torch.equal(t2["depth"], torch.full((1, h, w), 1.5))  # depth / scale
    assert torch.allclose(t2["normal"][0], torch.full((h, w), -0.6 if flip else 0.6))
    assert torch.allclose(t2["normal"][2], torch.full((h, w), 0.8))
    # the image is resized bilinearly with aligned corners: its corners are the crop's corners
    crop = image[:, i : i + 2, j : j + 3]
    corners = img2[:, [0, 0, -1, -1], [0, -1, 0, -1]]
    exp = crop[:, [0, 0, -1, -1], [0, -1, 0, -1]]
    if flip:
        exp = crop[:, [0, 0, -1, -1], [-1, 0, -1, 0]]
    assert torch.allclose(corners, exp)


def test_scale_one_is_identity_or_flip() -> None:
    image = torch.rand(3, 4, 4)
    label = torch.randint(-1, 3, (4, 4))
    seen = set()
    for seed in range(8):
        _, _, _, flip = _draws(seed, 4, 4, 4, 4, 1)
        torch.manual_seed(seed)
        out, t = random_scale_crop(image, {"segmentation": label}, scales=(1.0,))
        assert torch.allclose(out, image.flip(-1) if flip else image)
        assert torch.equal(t["segmentation"], label.flip(-1) if flip else label)
        seen.add(flip)
    assert seen == {True, False}


def test_dataset_augment_changes_items_reproducibly(tmp_path: Path) -> None:
    write_dense_fixture(tmp_path, "nyuv2", n_train=1, n_test=1)
    ds = NYUv2Dataset(tmp_path, augment=True)
    torch.manual_seed(5)
    a = ds[0]
    torch.manual_seed(5)
    b = ds[0]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1]["depth"], b[1]["depth"])
    plain = NYUv2Dataset(tmp_path)[0]
    assert tuple(a[0].shape) == tuple(plain[0].shape)
