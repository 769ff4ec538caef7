"""QM9 (Ramakrishnan et al., Sci. Data 2014): 130,831 small organic molecules, read offline from the CSV
files of the PyPI package ``qm9pack`` and turned into the 11-target graph regression of Nash-MTL (Navon et
al., ICML 2022) and FAMO (Liu et al., NeurIPS 2023).

**Source**: ``qm9pack`` 1.0.3 (MIT, by a QM9 author) ships ``qm9pack/data/qm9_part{1,2,3}.csv``, one row
per molecule (the 133,885 of QM9 less the 3,054 that failed the consistency check: the set PyTorch
Geometric keeps), sorted by GDB index. Columns used: ``Index``, ``N_atoms``, ``Elements`` (``['C','H']``),
``XYZ_Ang`` (``[[x,y,z],...]`` in Å) and the properties below. The folder is, in this order: the ``root``
argument, ``$MOLEARN_QM9_DIR``, the installed ``qm9pack`` (found with ``importlib.util.find_spec``, not
imported: its ``get_data`` needs ``pkg_resources``). Install: ``pip install 'molearn[qm9]'``.

**Targets** (PyG ``QM9`` indices 0, 1, 2, 3, 5, 6, 12, 13, 14, 15, 11, in PyG's units): ``mu`` (D),
``alpha`` (a0³), ``homo``, ``lumo``, ``zpve`` (Hartree × :data:`HARTREE_TO_EV` → eV), ``r2`` (a0²),
``U0_atom``, ``U_atom``, ``H_atom``, ``G_atom`` (atomisation energies in eV: the total energy in eV minus
the sum of the atoms' reference energies :data:`ATOMREF_EV`, PyG's ``atomrefs`` table for targets 7-10,
i.e. QM9's ``atomref`` file converted to eV) and ``cv`` (cal/mol K). PyG takes the atomisation energies
from MoleculeNet's CSV in kcal/mol (× 0.04336414): the two agree to about 1e-6 relative.

**Graphs**: nodes are atoms; edges are all ordered pairs of distinct atoms of a molecule (Nash-MTL's
``Complete`` transform), made when batching. PyG's node features need RDKit and the SDF bond orders; what
the coordinates determine is kept, in PyG's order (7 features): the one-hot atom type H, C, N, O, F, the
atomic number and the number of bonded hydrogens. PyG's aromatic / sp / sp2 / sp3 flags are left out
(bond-order and aromaticity perception; PyG's own come from ``sanitize=False`` molecules, where RDKit
leaves many hybridisations unspecified, pyg-team/pytorch_geometric#2163). Edge features (2): bonded or
not, then the distance in Å (as ``T.Distance(norm=False)``), in place of PyG's bond-type one-hot and
distance. Two atoms are bonded when their distance is at most :data:`BOND_TOLERANCE` × the sum of their
covalent radii (:data:`COVALENT_RADII`, Cordero et al., Dalton Trans. 2008): on the 130,831 molecules this
gives 37.30 bonds (directed) per molecule, PyG's 37.3, and neighbour counts H 1, C 2-4, N 1-3, O 1-2, F 1
for all atoms but one hydrogen (none), one carbon (5) and 208 of 132,498 nitrogens (4); 1.2 gives 3,399
five-neighbour carbons.

**Split** (:func:`qm9_split`): a permutation of the molecules seeded with :data:`QM9_SPLIT_SEED`; its
first 10,000 are the test set, the next 10,000 validation, the other 110,831 training (Nash-MTL's slicing
of ``QM9(...).shuffle()``, whose permutation changes with the run's seed; here it is fixed). With fewer
than 100,000 molecules (a test fixture) each of test and val has ``n // 10``. **Normalisation**: targets
are standardised with the mean and (unbiased) standard deviation of the training split (Nash-MTL's code
takes them over all molecules: ``train_dataset.data`` is the whole in-memory data set).

**Cache**: the parsed molecules are saved with ``torch.save`` (tensors only, read back with
``weights_only=True``) under ``cache_dir()/qm9/``, named by a fingerprint of the CSV files (path, size,
modification time) and of the build parameters; a file that does not load or does not check out is
rebuilt with a warning.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ._multi import DatasetError, cache_dir

__all__ = [
    "ATOMREF_EV",
    "BOND_TOLERANCE",
    "COVALENT_RADII",
    "ENV_QM9_DIR",
    "HARTREE_TO_EV",
    "QM9_ELEMENTS",
    "QM9_PYG_INDEX",
    "QM9_SPLIT_SEED",
    "QM9_TARGETS",
    "QM9_UNITS",
    "QM9Batch",
    "QM9Dataset",
    "QM9Graph",
    "QM9NotFoundError",
    "QM9Table",
    "build_qm9",
    "collate_qm9",
    "complete_edges",
    "load_qm9",
    "load_qm9_splits",
    "qm9_files",
    "qm9_source_dir",
    "qm9_split",
    "read_qm9_csv",
]

ENV_QM9_DIR = "MOLEARN_QM9_DIR"
#: the 11 targets, in the order of Nash-MTL / FAMO / LibMTL
QM9_TARGETS = ("mu", "alpha", "homo", "lumo", "r2", "zpve", "U0_atom", "U_atom", "H_atom", "G_atom", "cv")
#: their indices in PyTorch Geometric's ``QM9.y``
QM9_PYG_INDEX = (0, 1, 2, 3, 5, 6, 12, 13, 14, 15, 11)
QM9_UNITS = {
    "mu": "D", "alpha": "a0^3", "homo": "eV", "lumo": "eV", "r2": "a0^2", "zpve": "eV", "U0_atom": "eV",
    "U_atom": "eV", "H_atom": "eV", "G_atom": "eV", "cv": "cal/(mol K)",
}  # fmt: skip
#: Hartree in eV (CODATA 2018; PyG ``qm9.py`` ``HAR2EV``)
HARTREE_TO_EV = 27.211386246
QM9_ELEMENTS = ("H", "C", "N", "O", "F")
_ATOMIC_NUMBER = (1, 6, 7, 8, 9)
#: atomic reference energies in eV for H, C, N, O, F: PyG ``qm9.py`` ``atomrefs`` of targets 7 (U0),
#: 8 (U), 9 (H), 10 (G) = QM9's ``atomref`` values (Ramakrishnan et al. 2014) in Hartree × HAR2EV
ATOMREF_EV: dict[str, tuple[float, float, float, float, float]] = {
    "U0": (-13.61312172, -1029.86312267, -1485.30251237, -2042.61123593, -2713.48485589),
    "U": (-13.5745904, -1029.82456413, -1485.26398105, -2042.5727046, -2713.44632457),
    "H": (-13.54887564, -1029.79887659, -1485.2382935, -2042.54701705, -2713.42063702),
    "G": (-13.90303183, -1030.25891228, -1485.71166277, -2043.01812778, -2713.88796536),
}
#: single-bond covalent radii in Å of H, C (sp3), N, O, F (Cordero et al., Dalton Trans. 2008)
COVALENT_RADII = (0.31, 0.76, 0.71, 0.66, 0.57)
#: two atoms are bonded when their distance is at most this factor × the sum of their covalent radii
BOND_TOLERANCE = 1.15
QM9_SPLIT_SEED = 0
_SPLIT_SIZE = 10_000
_FORMAT = 1
QM9_NODE_FEATURES = ("is_H", "is_C", "is_N", "is_O", "is_F", "atomic_number", "num_hs")
QM9_EDGE_FEATURES = ("bonded", "distance")
# CSV column -> how the target is made from it
_PROPERTY_COLUMNS = (
    "Dipole_debye", "Polarizability_bohr3", "HOMO_au", "LUMO_au", "R2_bohr2", "ZPVE_au",
    "InternalEnergy_0K_au", "InternalEnergy_298K_au", "Enthalphy_298K_au", "GibbsFreeEnergy_298K_au",
    "Heatcapacity_Cv_cal_mol_K",
)  # fmt: skip
_COLUMNS = ("Index", "N_atoms", "Elements", "XYZ_Ang", *_PROPERTY_COLUMNS)
_INSTALL = "pip install 'molearn[qm9]'"


class QM9NotFoundError(ImportError):
    """The QM9 CSV files are nowhere (no ``root``, no ``$MOLEARN_QM9_DIR``, ``qm9pack`` not installed)."""


# ------------------------------------------------------------------------------------------ source
def qm9_source_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding ``qm9_part*.csv``: ``root``, else ``$MOLEARN_QM9_DIR``, else the installed
    ``qm9pack``'s ``data`` folder. Raises :class:`QM9NotFoundError` naming the install command."""
    for given, what in ((root, "root"), (os.environ.get(ENV_QM9_DIR) or None, f"${ENV_QM9_DIR}")):
        if given is not None:
            path = Path(given)
            if not path.is_dir():
                raise FileNotFoundError(f"{what} = {path} is not a folder (expected qm9pack's qm9_part*.csv)")
            return path
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise QM9NotFoundError(
            f"QM9 needs the data of the PyPI package qm9pack: `{_INSTALL}` (a 104 MB wheel), or set "
            f"${ENV_QM9_DIR} to a folder holding its qm9_part*.csv files"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def qm9_files(root: str | os.PathLike[str] | None = None) -> list[Path]:
    """The CSV parts ``qm9_part*.csv`` of the source folder, sorted (FileNotFoundError when none)."""
    folder = qm9_source_dir(root)
    files = sorted(p for p in folder.glob("qm9_part*.csv") if p.is_file())
    if not files:
        raise FileNotFoundError(f"no qm9_part*.csv in {folder}")
    return files


def _floats(text: str) -> list[float]:
    # "[[0.5,0.,1.],[...]]" (numbers such as "0." are not JSON) -> flat list of floats
    body = text.replace("[", "").replace("]", "").strip()
    return [float(v) for v in body.split(",")] if body else []


def read_qm9_csv(path: str | os.PathLike[str]) -> dict[str, Any]:
    """One qm9pack CSV as ``{"index": [...], "elements": [[...]], "xyz": [[...]], "props": [[11 floats]]}``
    (properties in the file's units, in the order of the CSV columns used). Raises :class:`DatasetError`
    naming the file and line of a malformed row."""
    path = Path(path)
    csv.field_size_limit(1 << 30)
    out: dict[str, Any] = {"index": [], "elements": [], "xyz": [], "props": []}
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise DatasetError(f"{path}: empty file (expected qm9pack's CSV header)") from None
        missing = [c for c in _COLUMNS if c not in header]
        if missing:
            raise DatasetError(f"{path}: not a qm9pack CSV, columns {missing} are missing")
        col = {c: header.index(c) for c in _COLUMNS}
        for line, row in enumerate(reader, start=2):
            try:
                n = int(row[col["N_atoms"]])
                elements = [e.strip().strip("'\"") for e in row[col["Elements"]].strip("[]").split(",")]
                xyz = _floats(row[col["XYZ_Ang"]])
                props = [float(row[col[c]]) for c in _PROPERTY_COLUMNS]
                index = int(row[col["Index"]])
            except (ValueError, IndexError) as err:
                raise DatasetError(f"{path}, line {line}: malformed row ({err})") from None
            if len(elements) != n or len(xyz) != 3 * n:
                raise DatasetError(
                    f"{path}, line {line}: N_atoms = {n} but {len(elements)} elements and {len(xyz)} "
                    "coordinates"
                )
            bad = [e for e in elements if e not in QM9_ELEMENTS]
            if bad:
                raise DatasetError(f"{path}, line {line}: unknown element(s) {bad}; QM9 has H, C, N, O, F")
            out["index"].append(index)
            out["elements"].append(elements)
            out["xyz"].append(xyz)
            out["props"].append(props)
    return out


# ------------------------------------------------------------------------------------------ graphs
_TEMPLATES: dict[int, Tensor] = {}


def _template(n: int) -> Tensor:
    """All ordered pairs (i, j), i != j, of n atoms, row-major (Nash-MTL's ``Complete``)."""
    if n not in _TEMPLATES:
        row = torch.arange(n).repeat_interleave(n)
        col = torch.arange(n).repeat(n)
        keep = row != col
        _TEMPLATES[n] = torch.stack([row[keep], col[keep]])
    return _TEMPLATES[n]


def complete_edges(counts: Sequence[int]) -> Tensor:
    """The (2, Σ n(n-1)) edge index of the complete graphs (no self loops) of molecules with ``counts``
    atoms, batched (node indices offset by the atoms of the molecules before)."""
    parts, offset = [], 0
    for n in counts:
        parts.append(_template(int(n)) + offset)
        offset += int(n)
    return torch.cat(parts, dim=1) if parts else torch.zeros(2, 0, dtype=torch.long)


def _edge_attributes(types: Tensor, pos: Tensor, edge_index: Tensor) -> Tensor:
    """(E, 2): bonded (covalent-radius criterion) and distance in Å."""
    src, dst = edge_index[0], edge_index[1]
    dist = (pos[dst] - pos[src]).norm(dim=-1)
    radii = torch.tensor(COVALENT_RADII, dtype=pos.dtype)
    bonded = dist <= BOND_TOLERANCE * (radii[types[src]] + radii[types[dst]])
    return torch.stack([bonded.to(pos.dtype), dist], dim=1)


def _node_features(types: Tensor, ptr: Tensor, pos: Tensor, chunk: int = 4096) -> Tensor:
    """(A, 7): one-hot H, C, N, O, F, atomic number, number of bonded hydrogens."""
    num_hs = torch.zeros(types.shape[0], dtype=pos.dtype)
    counts = (ptr[1:] - ptr[:-1]).tolist()
    for start in range(0, len(counts), chunk):
        lo, hi = int(ptr[start]), int(ptr[min(start + chunk, len(counts))])
        ei = complete_edges(counts[start : start + chunk])
        t = types[lo:hi]
        attr = _edge_attributes(t, pos[lo:hi], ei)
        h_bond = attr[:, 0] * (t[ei[0]] == 0).to(pos.dtype)  # a bond from a hydrogen
        num_hs[lo:hi].index_add_(0, ei[1], h_bond)
    onehot = torch.nn.functional.one_hot(types, len(QM9_ELEMENTS)).to(pos.dtype)
    z = torch.tensor(_ATOMIC_NUMBER, dtype=pos.dtype)[types]
    return torch.cat([onehot, z.unsqueeze(1), num_hs.unsqueeze(1)], dim=1)


# ------------------------------------------------------------------------------------------ table
@dataclass(frozen=True)
class QM9Table:
    """All molecules: ``types`` (A,) element index 0..4 (H, C, N, O, F), ``pos`` (A, 3) Å, ``x`` (A, 7)
    node features, ``ptr`` (M+1,) atom offsets, ``y`` (M, 11) float64 targets in PyG's units,
    ``index`` (M,) GDB index."""

    types: Tensor
    pos: Tensor
    x: Tensor
    ptr: Tensor
    y: Tensor
    index: Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def check(self) -> QM9Table:
        """Raise ValueError when the tensors are inconsistent (a damaged cache)."""
        m, a = int(self.y.shape[0]), int(self.types.shape[0])
        if self.types.dtype != torch.long or self.types.dim() != 1:
            raise ValueError("types must be a 1-D int64 tensor")
        if self.ptr.dtype != torch.long or tuple(self.ptr.shape) != (m + 1,):
            raise ValueError("ptr must be int64 of shape (M+1,)")
        if int(self.ptr[0]) != 0 or int(self.ptr[-1]) != a or bool((self.ptr[1:] <= self.ptr[:-1]).any()):
            raise ValueError("ptr is not an increasing offset table of the atoms")
        if tuple(self.pos.shape) != (a, 3) or tuple(self.x.shape) != (a, len(QM9_NODE_FEATURES)):
            raise ValueError("pos / x have the wrong shape")
        if tuple(self.y.shape) != (m, len(QM9_TARGETS)) or self.y.dtype != torch.float64:
            raise ValueError("y must be float64 of shape (M, 11)")
        if tuple(self.index.shape) != (m,):
            raise ValueError("index has the wrong shape")
        if a and (int(self.types.min()) < 0 or int(self.types.max()) >= len(QM9_ELEMENTS)):
            raise ValueError("element types outside 0..4")
        for name in ("pos", "x", "y"):
            if not bool(torch.isfinite(getattr(self, name)).all()):
                raise ValueError(f"{name} has non-finite values")
        return self


def _targets(elements: list[str], props: list[float]) -> list[float]:
    """The 11 targets in PyG's units from one row's properties (qm9pack's units)."""
    mu, alpha, homo, lumo, r2, zpve, u0, u, h, g, cv = props
    types = [QM9_ELEMENTS.index(e) for e in elements]

    def atomisation(total_hartree: float, ref: str) -> float:
        return total_hartree * HARTREE_TO_EV - sum(ATOMREF_EV[ref][t] for t in types)

    return [
        mu, alpha, homo * HARTREE_TO_EV, lumo * HARTREE_TO_EV, r2, zpve * HARTREE_TO_EV,
        atomisation(u0, "U0"), atomisation(u, "U"), atomisation(h, "H"), atomisation(g, "G"), cv,
    ]  # fmt: skip


def build_qm9(root: str | os.PathLike[str] | None = None) -> QM9Table:
    """Parse the qm9pack CSVs into a :class:`QM9Table` (no cache; see :func:`load_qm9`)."""
    types: list[int] = []
    pos: list[float] = []
    counts: list[int] = []
    ys: list[list[float]] = []
    index: list[int] = []
    for path in qm9_files(root):
        part = read_qm9_csv(path)
        for elements, xyz, props, idx in zip(part["elements"], part["xyz"], part["props"], part["index"]):
            types.extend(QM9_ELEMENTS.index(e) for e in elements)
            pos.extend(xyz)
            counts.append(len(elements))
            ys.append(_targets(elements, props))
            index.append(idx)
    if not counts:
        raise DatasetError(f"the QM9 CSV files under {qm9_source_dir(root)} hold no molecules")
    t = torch.tensor(types, dtype=torch.long)
    p = torch.tensor(pos, dtype=torch.float64).view(-1, 3).to(torch.float32)
    ptr = torch.zeros(len(counts) + 1, dtype=torch.long)
    ptr[1:] = torch.cumsum(torch.tensor(counts, dtype=torch.long), 0)
    x = _node_features(t, ptr, p)
    table = QM9Table(t, p, x, ptr, torch.tensor(ys, dtype=torch.float64), torch.tensor(index))
    return table.check()


def _build_params() -> dict[str, Any]:
    return {
        "format": _FORMAT,
        "hartree_to_ev": HARTREE_TO_EV,
        "atomref_ev": {k: list(v) for k, v in ATOMREF_EV.items()},
        "radii": list(COVALENT_RADII),
        "tolerance": BOND_TOLERANCE,
        "node_features": list(QM9_NODE_FEATURES),
        "targets": list(QM9_TARGETS),
    }


def _fingerprint(files: Sequence[Path]) -> str:
    h = hashlib.sha256(json.dumps(_build_params(), sort_keys=True).encode())
    for p in files:
        st = p.stat()
        h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _from_cache(obj: Any, fingerprint: str) -> QM9Table:
    if not isinstance(obj, dict) or obj.get("format") != _FORMAT or obj.get("fingerprint") != fingerprint:
        raise ValueError("not a molearn QM9 cache file of these sources and parameters")
    fields = ("types", "pos", "x", "ptr", "y", "index")
    if not all(isinstance(obj.get(f), Tensor) for f in fields):
        raise ValueError("tensors are missing")
    return QM9Table(**{f: obj[f] for f in fields}).check()


_LOADED: dict[tuple[str, str], QM9Table] = {}


def load_qm9(root: str | os.PathLike[str] | None = None, cache: bool = True) -> QM9Table:
    """All QM9 molecules as a :class:`QM9Table`: from the cache ``cache_dir()/qm9/qm9-<fingerprint>.pt``
    when it is there and sound, else parsed from the CSVs (:func:`build_qm9`) and cached. Kept in memory
    for the process."""
    files = qm9_files(root)
    fp = _fingerprint(files)
    key = (str(files[0].parent.resolve()), fp)
    if key in _LOADED:
        return _LOADED[key]
    path = cache_dir() / "qm9" / f"qm9-{fp}.pt"
    table: QM9Table | None = None
    if cache and path.is_file():
        try:
            table = _from_cache(torch.load(path, map_location="cpu", weights_only=True), fp)
        except Exception as exc:  # any unreadable or inconsistent cache file is rebuilt
            warnings.warn(f"{path}: corrupt QM9 cache ({exc}); rebuilding it", stacklevel=2)
    if table is None:
        table = build_qm9(files[0].parent)
        if cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + f".{os.getpid()}.part")
            torch.save({"format": _FORMAT, "fingerprint": fp, **table.__dict__}, tmp)
            os.replace(tmp, path)
    _LOADED[key] = table
    return table


def qm9_split(num: int, seed: int = QM9_SPLIT_SEED) -> dict[str, Tensor]:
    """Row indices of the ``"test"``, ``"val"`` and ``"train"`` splits of ``num`` molecules: a permutation
    seeded with ``seed``, sliced test / val / train (10,000 / 10,000 / rest; ``num // 10`` each for test and
    val when ``num`` < 100,000)."""
    size = _SPLIT_SIZE if num >= 10 * _SPLIT_SIZE else num // 10
    perm = torch.randperm(num, generator=torch.Generator().manual_seed(seed))
    return {"test": perm[:size], "val": perm[size : 2 * size], "train": perm[2 * size :]}


# ------------------------------------------------------------------------------------------ dataset
class QM9Graph(NamedTuple):
    """One molecule: node features (n, 7), element types (n,), positions (n, 3), normalised targets (11,)."""

    x: Tensor
    types: Tensor
    pos: Tensor
    y: Tensor


class QM9Batch(NamedTuple):
    """Molecules batched as PyG does: ``x`` (N, 7), complete-graph ``edge_index`` (2, E) with offset node
    indices, ``edge_attr`` (E, 2) bonded / distance, ``batch`` (N,) molecule of each atom, ``y`` (B, 11)
    normalised targets, ``std`` (11,) the normalisation scales (MAE in the original units =
    ``|prediction − y| · std``), ``num_graphs`` B."""

    x: Tensor
    edge_index: Tensor
    edge_attr: Tensor
    batch: Tensor
    y: Tensor
    std: Tensor
    num_graphs: int


def collate_qm9(items: Sequence[QM9Graph], std: Tensor | None = None) -> QM9Batch:
    """Batch molecules (concatenated node features, offset complete-graph edges, a batch vector)."""
    if not items:
        raise ValueError("cannot batch zero molecules")
    counts = [int(g.x.shape[0]) for g in items]
    types = torch.cat([g.types for g in items])
    pos = torch.cat([g.pos for g in items])
    edge_index = complete_edges(counts)
    edge_attr = _edge_attributes(types, pos, edge_index)
    batch = torch.repeat_interleave(torch.arange(len(items)), torch.tensor(counts))
    y = torch.stack([g.y for g in items])
    std = torch.ones(y.shape[1], dtype=y.dtype) if std is None else std
    return QM9Batch(torch.cat([g.x for g in items]), edge_index, edge_attr, batch, y, std, len(items))


class QM9Dataset(Dataset[QM9Graph]):
    """The molecules ``rows`` of a :class:`QM9Table`, targets standardised with ``mean`` / ``std`` (11,);
    :meth:`collate` batches them (give it as the DataLoader's ``collate_fn``)."""

    def __init__(self, table: QM9Table, rows: Tensor, mean: Tensor, std: Tensor) -> None:
        self.table = table
        self.rows = rows.to(torch.long)
        self.mean = mean.to(torch.float64)
        self.std = std.to(torch.float64)
        self._y = ((table.y[self.rows] - self.mean) / self.std).to(torch.float32)
        self._std32 = self.std.to(torch.float32)

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def __getitem__(self, i: int) -> QM9Graph:
        r = int(self.rows[i])
        lo, hi = int(self.table.ptr[r]), int(self.table.ptr[r + 1])
        t = self.table
        return QM9Graph(t.x[lo:hi], t.types[lo:hi], t.pos[lo:hi], self._y[i])

    def collate(self, items: Sequence[QM9Graph]) -> QM9Batch:
        return collate_qm9(items, self._std32)

    def targets(self) -> Tensor:
        """The targets of these molecules in the original (PyG) units, (n, 11) float64."""
        return self.table.y[self.rows]


def load_qm9_splits(
    root: str | os.PathLike[str] | None = None, seed: int = QM9_SPLIT_SEED, cache: bool = True
) -> dict[str, QM9Dataset]:
    """``{"train", "val", "test"}`` :class:`QM9Dataset` s of :func:`qm9_split`, standardised with the
    training split's mean and unbiased standard deviation."""
    table = load_qm9(root, cache=cache)
    rows = qm9_split(len(table), seed)
    train_y = table.y[rows["train"]]
    mean, std = train_y.mean(0), train_y.std(0)
    if len(rows["train"]) < 2 or not bool((std > 0).all()):
        raise DatasetError("the QM9 training split is too small to standardise the targets")
    return {split: QM9Dataset(table, r, mean, std) for split, r in rows.items()}
