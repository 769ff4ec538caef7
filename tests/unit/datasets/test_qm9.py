"""QM9 from qm9pack's CSVs: parsing, units and atomisation energies checked by hand, graph features,
batching, the split and normalisation, the cache (reuse, corrupt file, changed sources), the error without
qm9pack (fixture files in qm9pack's format; the real files when installed, first rows only)."""

from __future__ import annotations

import importlib.util
import math
import sys
import warnings
from pathlib import Path

import pytest
import torch

from molearn.datasets import (
    ENV_CACHE,
    ENV_QM9_DIR,
    HARTREE_TO_EV,
    QM9_TARGETS,
    DatasetError,
    QM9NotFoundError,
    build_qm9,
    collate_qm9,
    complete_edges,
    load_qm9,
    load_qm9_splits,
    qm9_source_dir,
    qm9_split,
    read_qm9_csv,
)
from molearn.datasets import _qm9 as mq

from ..._qm9 import HEADER, REAL_ROWS, write_qm9_fixture

KCALMOL_TO_EV = 0.04336414  # PyG qm9.py KCALMOL2EV
# MoleculeNet's gdb9.sdf.csv, methane (gdb_1): u0_atom, u298_atom, h298_atom, g298_atom in kcal/mol
METHANE_ATOMISATION_KCAL = (-395.9995939, -398.6432898, -401.0146469, -372.4717719)


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_CACHE, str(tmp_path / "cache"))
    monkeypatch.delenv(ENV_QM9_DIR, raising=False)
    monkeypatch.setattr(mq, "_LOADED", {})


@pytest.fixture
def qm9_dir(tmp_path: Path) -> Path:
    return write_qm9_fixture(tmp_path / "qm9")


def test_methane_targets_by_hand(qm9_dir: Path) -> None:
    table = build_qm9(qm9_dir)
    assert len(table) == 30 and table.index[:5].tolist() == [1, 2, 3, 6, 8]
    y = dict(zip(QM9_TARGETS, table.y[0].tolist()))
    # qm9pack row 1: mu 0 D, alpha 13.21 a0^3, HOMO -0.3877 Ha, LUMO 0.1171 Ha, R2 35.3641 a0^2,
    # ZPVE 0.044749 Ha, U0 -40.47893 Ha, U -40.476062, H -40.475117, G -40.498597, Cv 6.469
    assert y["mu"] == 0.0 and y["alpha"] == 13.21 and y["r2"] == 35.3641 and y["cv"] == 6.469
    assert y["homo"] == pytest.approx(-0.3877 * 27.211386246, abs=1e-9)
    assert y["homo"] == pytest.approx(-10.54985, abs=1e-5)
    assert y["lumo"] == pytest.approx(0.1171 * 27.211386246, abs=1e-9)
    assert y["zpve"] == pytest.approx(1.21768, abs=1e-5)
    # U0_atom = U0 (eV) - (E_C + 4 E_H), PyG's atom reference energies for target 7
    assert y["U0_atom"] == pytest.approx(-40.47893 * HARTREE_TO_EV - (-1029.86312267 + 4 * -13.61312172))
    assert y["U0_atom"] == pytest.approx(-17.17219, abs=1e-5)
    assert y["G_atom"] == pytest.approx(-40.498597 * HARTREE_TO_EV - (-1030.25891228 + 4 * -13.90303183))
    # and PyG's own numbers (MoleculeNet kcal/mol × KCALMOL2EV) within the two conversions' difference
    ours = [y[t] for t in ("U0_atom", "U_atom", "H_atom", "G_atom")]
    for value, kcal in zip(ours, METHANE_ATOMISATION_KCAL):
        assert value == pytest.approx(kcal * KCALMOL_TO_EV, abs=1e-4)


def test_node_features_and_split_of_molecules(qm9_dir: Path) -> None:
    table = build_qm9(qm9_dir)
    assert table.ptr[:6].tolist() == [0, 5, 9, 12, 16, 22]
    methane = table.x[0:5]
    assert methane[0].tolist() == [0, 1, 0, 0, 0, 6, 4]  # carbon with 4 hydrogens
    assert methane[1:].tolist() == [[1, 0, 0, 0, 0, 1, 0]] * 4
    water = table.x[9:12]
    assert water[0].tolist() == [0, 0, 0, 1, 0, 8, 2]
    methanol = table.x[16:22]  # C, O, H, H, H, H: the carbon holds 3 hydrogens, the oxygen 1
    assert methanol[:2, 6].tolist() == [3, 1] and methanol[:2, :5].argmax(1).tolist() == [1, 3]
    assert table.types[:5].tolist() == [1, 0, 0, 0, 0]


def test_complete_edges() -> None:
    expected = [[0, 1, 2, 2, 3, 3, 4, 4], [1, 0, 3, 4, 2, 4, 2, 3]]
    assert complete_edges([2, 3]).tolist() == expected
    assert complete_edges([1]).shape == (2, 0)


def test_collate_water_and_ammonia(qm9_dir: Path) -> None:
    splits = load_qm9_splits(qm9_dir)
    ds = splits["train"]
    table = ds.table
    # molecules 2 (water) and 1 (ammonia) by row, batched in this order
    rows = torch.tensor([2, 1])
    sub = mq.QM9Dataset(table, rows, ds.mean, ds.std)
    b = sub.collate([sub[0], sub[1]])
    assert b.num_graphs == 2 and b.batch.tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert b.x.shape == (7, 7) and b.edge_index.shape == (2, 6 + 12)
    assert b.edge_index[:, 6:8].tolist() == [[3, 3], [4, 5]]  # offset by the 3 atoms of water
    # water: O-H 0.96211 Å (bonded: <= 1.15 (0.66 + 0.31)), H...H 1.51336 Å (not bonded)
    o_h1, h1_h2 = b.edge_attr[0], b.edge_attr[3]
    assert b.edge_index[:, 0].tolist() == [0, 1] and b.edge_index[:, 3].tolist() == [1, 2]
    assert o_h1[0] == 1 and o_h1[1].item() == pytest.approx(0.9621068, abs=1e-5)
    assert h1_h2[0] == 0 and h1_h2[1].item() == pytest.approx(1.5133579, abs=1e-5)
    expected_y = (table.y[rows] - ds.mean) / ds.std
    torch.testing.assert_close(b.y, expected_y.float())
    torch.testing.assert_close(b.std, ds.std.float())
    assert collate_qm9([sub[0]]).std.tolist() == [1.0] * 11


def test_split_and_normalisation(qm9_dir: Path) -> None:
    rows = qm9_split(30)
    assert [len(rows[s]) for s in ("test", "val", "train")] == [3, 3, 24]
    assert sorted(torch.cat(list(rows.values())).tolist()) == list(range(30))
    assert torch.equal(rows["test"], qm9_split(30)["test"])  # fixed seed
    assert not torch.equal(qm9_split(30, seed=1)["train"], rows["train"])
    big = qm9_split(130_831)
    assert [len(big[s]) for s in ("test", "val", "train")] == [10_000, 10_000, 110_831]
    splits = load_qm9_splits(qm9_dir)
    assert {s: len(d) for s, d in splits.items()} == {"test": 3, "val": 3, "train": 24}
    train_y = torch.stack([splits["train"][i].y for i in range(24)]).double()
    torch.testing.assert_close(train_y.mean(0), torch.zeros(11, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(train_y.std(0), torch.ones(11, dtype=torch.float64), atol=1e-5, rtol=0)
    assert torch.equal(splits["test"].std, splits["train"].std)  # every split uses the training statistics


def test_env_var_and_missing_qm9pack(qm9_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_QM9_DIR, str(qm9_dir))
    assert qm9_source_dir() == qm9_dir and len(load_qm9()) == 30
    monkeypatch.delenv(ENV_QM9_DIR)
    monkeypatch.setitem(sys.modules, "qm9pack", None)  # find_spec then reports it absent
    with pytest.raises(QM9NotFoundError, match=r"pip install 'molearn\[qm9\]'"):
        qm9_source_dir()
    with pytest.raises(ImportError, match="qm9pack"):
        load_qm9()
    with pytest.raises(FileNotFoundError, match="not a folder"):
        qm9_source_dir(qm9_dir / "nothing")


def test_malformed_files(tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    part = folder / "qm9_part1.csv"
    part.write_text(HEADER + "\n" + REAL_ROWS[0].replace(",5,", ",6,", 1) + "\n")
    with pytest.raises(DatasetError, match=r"line 2: N_atoms = 6 but 5 elements"):
        read_qm9_csv(part)
    part.write_text(HEADER + "\n" + REAL_ROWS[0].replace("'C'", "'Cl'") + "\n")
    with pytest.raises(DatasetError, match="unknown element"):
        read_qm9_csv(part)
    part.write_text(HEADER.replace("XYZ_Ang", "xyz") + "\n")
    with pytest.raises(DatasetError, match="XYZ_Ang"):
        read_qm9_csv(part)
    with pytest.raises(FileNotFoundError, match="qm9_part"):
        load_qm9(tmp_path)


def test_cache_reuse_corrupt_and_changed_sources(
    qm9_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = load_qm9(qm9_dir)
    files = list((tmp_path / "cache" / "qm9").glob("qm9-*.pt"))
    assert len(files) == 1
    monkeypatch.setattr(mq, "_LOADED", {})
    build = mq.build_qm9
    monkeypatch.setattr(mq, "build_qm9", lambda root=None: pytest.fail("the cache was not used"))
    again = load_qm9(qm9_dir)
    assert all(torch.equal(getattr(again, f), getattr(first, f)) for f in ("y", "x", "ptr", "pos"))
    monkeypatch.setattr(mq, "build_qm9", build)
    # a truncated file is detected and rebuilt
    monkeypatch.setattr(mq, "_LOADED", {})
    files[0].write_bytes(files[0].read_bytes()[:1000])
    with pytest.warns(UserWarning, match="corrupt QM9 cache"):
        rebuilt = load_qm9(qm9_dir)
    assert torch.equal(rebuilt.y, first.y)
    assert torch.load(files[0], weights_only=True)["fingerprint"] in files[0].name
    # a readable file whose tensors are inconsistent too
    monkeypatch.setattr(mq, "_LOADED", {})
    state = torch.load(files[0], weights_only=True)
    state["ptr"] = state["ptr"][:-1]
    torch.save(state, files[0])
    with pytest.warns(UserWarning, match="ptr"):
        load_qm9(qm9_dir)
    # changed sources: another fingerprint, another file
    monkeypatch.setattr(mq, "_LOADED", {})
    write_qm9_fixture(qm9_dir, n=32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_qm9(qm9_dir)) == 32
    assert len(list((tmp_path / "cache" / "qm9").glob("qm9-*.pt"))) == 2


@pytest.mark.skipif(importlib.util.find_spec("qm9pack") is None, reason="qm9pack is not installed")
def test_real_qm9pack_rows(tmp_path: Path) -> None:
    # the first rows of the installed qm9pack's first file, as they are
    real = qm9_source_dir() / "qm9_part1.csv"
    with real.open() as fh:
        head = [next(fh) for _ in range(41)]
    folder = tmp_path / "real"
    folder.mkdir()
    (folder / "qm9_part1.csv").write_text("".join(head))
    table = build_qm9(folder)
    assert len(table) == 40 and table.index[:3].tolist() == [1, 2, 3]
    assert table.y[0, 6].item() == pytest.approx(METHANE_ATOMISATION_KCAL[0] * KCALMOL_TO_EV, abs=1e-4)
    assert table.x[0].tolist() == [0, 1, 0, 0, 0, 6, 4]
    assert math.isclose(float(table.pos[0, 1]), 1.0858041578, abs_tol=1e-6)
