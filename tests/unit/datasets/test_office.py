"""Office-31 / Office-Home from fixture class folders of JPEGs: LibMTL's 60/20/20 split per class, both
folder layouts, LibMTL's split lists, ImageNet normalisation and the multi-input loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from molearn.datasets import (
    ENV_OFFICE31_DIR,
    ENV_OFFICE_HOME_DIR,
    IMAGENET_MEAN,
    IMAGENET_STD,
    DatasetNotFoundError,
    MultiInputLoader,
    OfficeDomain,
    load_office,
    office_domain_dir,
    office_split,
)

from ..._vision import write_office_fixture

PIL = pytest.importorskip("PIL.Image")


def test_split_per_class_is_floor_60_20_and_the_rest(tmp_path: Path) -> None:
    written = write_office_fixture(tmp_path, ("amazon",), classes=("a", "b", "c"), per_class=(5, 7, 13))
    classes, split = office_split(office_domain_dir(tmp_path, "amazon"))
    assert classes == ["a", "b", "c"]
    # n = 5: 3 / 1 / 1; n = 7: 4 / 1 / 2; n = 13: 7 / 2 / 4, not rounded (7.8, 2.6) (LibMTL: back_pack, 92
    # images -> 55 / 18 / 19)
    for label, (n_tr, n_va, n_te) in enumerate([(3, 1, 1), (4, 1, 2), (7, 2, 4)]):
        counts = [sum(1 for _, y in split[s] if y == label) for s in ("train", "val", "test")]
        assert counts == [n_tr, n_va, n_te]
    files = [f for s in ("train", "val", "test") for f, _ in split[s]]
    assert sorted(files) == sorted(f for fs in written["amazon"].values() for f in fs)  # a partition
    for s in ("train", "val", "test"):
        for f, y in split[s]:
            assert f.parent.name == classes[y]
    again = office_split(office_domain_dir(tmp_path, "amazon"))[1]
    other = office_split(office_domain_dir(tmp_path, "amazon"), seed=1)[1]
    assert again == split and other["train"] != split["train"]


def test_load_both_layouts_and_normalisation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_office_fixture(tmp_path / "with", images_dir=True)
    write_office_fixture(tmp_path / "without", images_dir=False)
    a = load_office("office31", "test", tmp_path / "with")
    monkeypatch.setenv(ENV_OFFICE31_DIR, str(tmp_path / "without"))
    b = load_office("office31", "test")
    assert [d.name for d in a.domains] == ["amazon", "dslr", "webcam"] and a.classes == 31
    assert len(a) == len(b) == 3 * (1 + 2 + 1)
    assert [(p.name, y) for p, y in a.domains[1].items] == [(p.name, y) for p, y in b.domains[1].items]
    k, image, label = a[5]
    assert k == 1 and label.dtype == torch.int64 and tuple(image.shape) == (3, 224, 224)
    path, y = a.domains[1].items[1]
    assert int(label) == y
    with PIL.open(path) as img:
        ref = np.asarray(img.convert("RGB").resize((224, 224), PIL.BILINEAR), dtype=np.float32) / 255.0
    mean, std = np.array(IMAGENET_MEAN)[:, None, None], np.array(IMAGENET_STD)[:, None, None]
    ref = (np.moveaxis(ref, -1, 0) - mean) / std
    np.testing.assert_allclose(image.numpy(), ref, atol=1e-5)
    small = load_office("office31", "train", tmp_path / "with", image_size=32)
    assert tuple(small.domains[0][0][0].shape) == (3, 32, 32)
    assert len(small) == 3 * (3 + 4 + 3)
    limited = small.limit(12)  # each domain keeps 12 * 10 // 30 = 4
    assert [len(d) for d in limited.domains] == [4, 4, 4]
    assert limited.domains[0].items == small.domains[0].items[:4]


def test_office_home_real_world_and_libmtl_lists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    domains = ("Art", "Clipart", "Product", "Real World")
    classes = ("Alarm_Clock", "Bike")
    written = write_office_fixture(
        tmp_path / "oh", domains, classes=classes, per_class=(5, 5), images_dir=False
    )
    monkeypatch.setenv(ENV_OFFICE_HOME_DIR, str(tmp_path / "oh"))
    val = load_office("office_home", "val")
    assert [d.name for d in val.domains] == ["art", "clipart", "product", "real_world"] and val.classes == 65
    assert [len(d) for d in val.domains] == [2, 2, 2, 2]
    # LibMTL's lists name the folder Real_World and carry their own labels
    lists = tmp_path / "data_txt"
    lists.mkdir()
    for d in ("Art", "Clipart", "Product", "Real_World"):
        bike = written[d.replace("_", " ")]["Bike"]
        (lists / f"{d}_test.txt").write_text(f"{d}/Bike/{bike[0].name} 17\n{d}/Bike/{bike[1].name} 17\n")
    test = load_office("office_home", "test", split_lists=lists)
    assert [len(d) for d in test.domains] == [2, 2, 2, 2]
    assert test.domains[3].items[0] == (written["Real World"]["Bike"][0], 17)
    with pytest.raises(DatasetNotFoundError, match=r"Art_train\.txt"):
        load_office("office_home", "train", split_lists=lists)


def test_libmtl_list_paths_with_images_folder_on_a_copy_without(tmp_path: Path) -> None:
    written = write_office_fixture(tmp_path, images_dir=False)
    lists = tmp_path / "lists"
    lists.mkdir()
    for d in ("amazon", "dslr", "webcam"):
        f = written[d]["bike"][3]
        (lists / f"{d}_val.txt").write_text(f"{d}/images/bike/{f.name} 5\n")
    val = load_office("office31", "val", tmp_path, split_lists=lists)
    assert val.domains[2].items == [(written["webcam"]["bike"][3], 5)]
    (lists / "amazon_val.txt").write_text("amazon/images/bike/nothing.jpg 5\n")
    with pytest.raises(DatasetNotFoundError, match=r"nothing\.jpg"):
        load_office("office31", "val", tmp_path, split_lists=lists)


def test_errors_name_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_OFFICE31_DIR, raising=False)
    with pytest.raises(DatasetNotFoundError, match=rf"\${ENV_OFFICE31_DIR}.*amazon,dslr,webcam"):
        load_office("office31", "train")
    write_office_fixture(tmp_path, ("amazon", "dslr"))
    with pytest.raises(DatasetNotFoundError, match="webcam"):
        load_office("office31", "train", tmp_path)
    with pytest.raises(ValueError, match="unknown Office"):
        load_office("office10", "train", tmp_path)


# ------------------------------------------------------------------------------------------ loader
class _Items(torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor]]):
    def __init__(self, n: int, offset: int) -> None:
        self.n, self.offset = n, offset

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tensor([float(self.offset + i)]), torch.tensor(self.offset + i)


def test_training_batches_cycle_the_smaller_domains() -> None:
    data = [_Items(10, 0), _Items(4, 100), _Items(2, 200)]
    loader = MultiInputLoader(data, batch_size=3, shuffle=True)
    assert len(loader) == 3  # max(10 // 3, 4 // 3, 1 short batch of 2)
    loader.generator = torch.Generator().manual_seed(7)
    steps = list(loader)
    assert len(steps) == 3 and all(len(s) == 3 for s in steps)
    first = torch.cat([s[0][1] for s in steps])
    assert len(set(first.tolist())) == 9 and all(0 <= v < 10 for v in first.tolist())  # drop_last
    second = [s[1][1] for s in steps]
    assert all(len(b) == 3 for b in second)  # 4 images: one full batch per pass, then a new pass
    assert all(set(b.tolist()) <= set(range(100, 104)) for b in second)
    third = [sorted(s[2][1].tolist()) for s in steps]
    assert third == [[200, 201]] * 3  # smaller than a batch: one short batch, repeated
    loader.generator = torch.Generator().manual_seed(7)
    again = list(loader)
    assert all(torch.equal(a[k][1], b[k][1]) for a, b in zip(steps, again) for k in range(3))


def test_evaluation_batches_visit_every_item_once() -> None:
    data = [_Items(5, 0), _Items(2, 100)]
    loader = MultiInputLoader(data, batch_size=2, shuffle=False)
    assert len(loader) == 3
    steps = list(loader)
    assert [s[0][1].tolist() for s in steps] == [[0, 1], [2, 3], [4]]
    assert steps[0][1][1].tolist() == [100, 101] and steps[1][1] is None and steps[2][1] is None
    with pytest.raises(ValueError, match="at least one image"):
        MultiInputLoader([_Items(0, 0)], 2, False)


def test_office_domain_items(tmp_path: Path) -> None:
    written = write_office_fixture(tmp_path, ("amazon",), classes=("a",), per_class=(1,))
    dom = OfficeDomain("amazon", [(written["amazon"]["a"][0], 3)], image_size=16)
    image, label = dom[0]
    assert tuple(image.shape) == (3, 16, 16) and int(label) == 3 and len(dom) == 1
