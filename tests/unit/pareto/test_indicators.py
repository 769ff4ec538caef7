"""Quality indicators: torch vs moocore vs pymoo, hand-computed values, known fronts, bad input."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch

from molearn.pareto import _indicators as ind
from molearn.pareto._indicators import GD, IGD, GDPlus, Hypervolume, IGDPlus, Spacing, Spread

pymoo_hv = pytest.importorskip("pymoo.indicators.hv")
from pymoo.indicators.gd import GD as PymooGD  # noqa: E402, N811
from pymoo.indicators.gd_plus import GDPlus as PymooGDPlus  # noqa: E402
from pymoo.indicators.igd import IGD as PymooIGD  # noqa: E402, N811
from pymoo.indicators.igd_plus import IGDPlus as PymooIGDPlus  # noqa: E402
from pymoo.indicators.spacing import SpacingIndicator as PymooSpacing  # noqa: E402

TOL = 1e-9


def messy_front(seed: int, n: int, m: int) -> np.ndarray:
    """A front in [0, 1.3]^m: non-dominated points on a curved front, dominated points, exact duplicates,
    ties in single coordinates, and points beyond the reference point (1.1, ..., 1.1)."""
    rng = np.random.default_rng(seed)
    w = rng.dirichlet(np.ones(m), size=n)
    front = w**0.7  # non-dominated, curved
    dominated = front[: n // 3] + rng.uniform(0.0, 0.2, size=(n // 3, m))
    beyond = rng.uniform(0.0, 1.3, size=(n // 5, m))
    beyond[:, 0] = rng.uniform(1.1, 1.3, size=n // 5)  # beyond the reference in f1
    dup = front[: n // 6].copy()
    tie = front[n // 6 : n // 3].copy()
    tie[:, -1] = front[0, -1]  # shared coordinate values
    on_ref = front[:3].copy()
    on_ref[:, 1] = 1.1  # on the reference boundary: no volume
    F = np.concatenate([front, dominated, beyond, dup, tie, on_ref])
    return F[rng.permutation(len(F))]


def reference_front(seed: int, r: int, m: int) -> np.ndarray:
    rng = np.random.default_rng(1000 + seed)
    w = rng.dirichlet(np.ones(m), size=r)
    return w / np.linalg.norm(w, axis=1, keepdims=True)


# ---------------------------------------------------------------- hand-computed values


def test_hypervolume_hand_computed_2d_3d() -> None:
    for backend in ("torch", "moocore"):
        hv2 = Hypervolume([2.0, 2.0], backend=backend)
        assert hv2.do([[0.0, 1.0], [1.0, 0.0]]) == pytest.approx(3.0, abs=TOL)
        hv3 = Hypervolume([2.0, 2.0, 2.0], backend=backend)
        # boxes 2*2*1 and 1*1*2 overlapping in [1,2]^2 x [1,2]: 4 + 2 - 1
        assert hv3.do([[0.0, 0.0, 1.0], [1.0, 1.0, 0.0]]) == pytest.approx(5.0, abs=TOL)
        box = Hypervolume([1.0, 2.0, 3.0], backend=backend)
        assert box.do([[0.0, 0.0, 0.0]]) == pytest.approx(6.0, abs=TOL)
    assert Hypervolume([3.0], backend="torch").do([[1.0], [0.5], [4.0]]) == pytest.approx(2.5, abs=TOL)


def test_distance_indicators_hand_computed() -> None:
    # moocore's documented example (Ishibuchi et al. 2015)
    dat = [[3.5, 5.5], [3.6, 4.1], [4.1, 3.2], [5.5, 1.5]]
    ref = [[1, 6], [2, 5], [3, 4], [4, 3], [5, 2], [6, 1]]
    for backend in ("torch", "moocore"):
        assert IGD(ref, backend=backend).do(dat) == pytest.approx(1.0627908666722465, abs=TOL)
        assert IGDPlus(ref, backend=backend).do(dat) == pytest.approx(0.9855036468106652, abs=TOL)
        # GD of one point (3, 4) against {(0, 0), (3, 0)}: distance 4; GD+ of (1, 1) against {(2, 0)}: 1
        assert GD([[0.0, 0.0], [3.0, 0.0]], backend=backend).do([[3.0, 4.0]]) == pytest.approx(4.0, abs=TOL)
        assert GDPlus([[2.0, 0.0]], backend=backend).do([[1.0, 1.0]]) == pytest.approx(1.0, abs=TOL)
        # IGD+ is Pareto compliant where IGD is not (Example 4 of Ishibuchi et al.)
        z = [[10, 0], [6, 1], [2, 2], [1, 6], [0, 10]]
        a, b = [[4, 2], [3, 3], [2, 4]], [[8, 2], [4, 4], [2, 8]]
        assert IGD(z, backend=backend).do(a) > IGD(z, backend=backend).do(b)
        assert IGDPlus(z, backend=backend).do(a) < IGDPlus(z, backend=backend).do(b)


def test_spacing_and_spread_hand_computed() -> None:
    x = torch.linspace(0, 1, 11, dtype=torch.float64)
    even = torch.stack([x, 1 - x], dim=1)
    assert Spacing().do(even) == pytest.approx(0.0, abs=TOL)
    assert Spread(even).do(even) == pytest.approx(0.0, abs=TOL)
    assert Spread([[0.0, 1.0], [1.0, 0.0]]).do(even) == pytest.approx(0.0, abs=TOL)  # extremes only
    # L1 nearest-neighbour distances 1, 1, 3 -> mean 5/3, S = sqrt((2*(2/3)^2 + (4/3)^2) / 2)
    pts = [[0.0, 4.0], [0.5, 3.5], [2.0, 2.0]]
    assert Spacing().do(pts) == pytest.approx(math.sqrt((2 * (2 / 3) ** 2 + (4 / 3) ** 2) / 2), abs=TOL)
    # Spread: gaps 1 and 3 (mean 2), d_f = 1 from (0, 5), d_l = 2 from (4, 0): (1 + 2 + 1 + 1) / (1 + 2 + 4)
    F = [[0.0, 4.0], [0.6, 3.2], [2.4, 0.8]]
    ext = [[0.0, 5.0], [3.0, 2.0], [4.0, 0.0]]  # (3, 2) is not an extreme
    g1, g2 = 1.0, 3.0
    d_f, d_l = 1.0, math.hypot(1.6, 0.8)
    expected = (d_f + d_l + abs(g1 - 2) + abs(g2 - 2)) / (d_f + d_l + 2 * 2)
    assert Spread(ext).do(F) == pytest.approx(expected, abs=TOL)
    # unsorted input gives the same value
    assert Spread(ext).do(F[::-1]) == pytest.approx(expected, abs=TOL)


# ---------------------------------------------------------------- torch vs moocore vs pymoo


@pytest.mark.parametrize("m", [2, 3])
@pytest.mark.parametrize("seed", range(4))
def test_hypervolume_torch_matches_moocore_and_pymoo(m: int, seed: int) -> None:
    F = messy_front(seed, 60 if m == 2 else 40, m)
    ref = np.full(m, 1.1)
    t = Hypervolume(ref, backend="torch").do(torch.from_numpy(F))
    c = Hypervolume(ref, backend="moocore").do(F)
    p = pymoo_hv.HV(ref_point=ref).do(F)
    assert t > 0.1
    assert abs(t - c) < TOL and abs(t - p) < TOL
    # the points beyond the reference contribute nothing; nor do dominated points and duplicates
    inside = F[(ref > F).all(axis=1)]
    assert len(inside) < len(F)
    assert abs(Hypervolume(ref, backend="torch").do(inside) - t) < TOL


@pytest.mark.parametrize("m", [2, 3])
@pytest.mark.parametrize("seed", range(4))
def test_distance_indicators_torch_match_moocore_and_pymoo(m: int, seed: int) -> None:
    F = messy_front(seed, 50, m)
    Z = reference_front(seed, 70, m)
    pairs = [(IGD, PymooIGD), (IGDPlus, PymooIGDPlus), (GD, PymooGD), (GDPlus, PymooGDPlus)]
    for ours, theirs in pairs:
        t = ours(Z, backend="torch").do(torch.from_numpy(F))
        c = ours(Z, backend="moocore").do(F)
        p = float(theirs(Z).do(F))
        assert t > 1e-5, ours.__name__
        assert abs(t - c) < TOL and abs(t - p) < TOL, (ours.__name__, t, c, p)


def test_spacing_matches_pymoo_up_to_schott_normalisation() -> None:
    for seed in range(3):
        F = messy_front(seed, 40, 3)
        n = len(F)
        ours = Spacing().do(F)
        assert ours > 0
        assert abs(ours * math.sqrt((n - 1) / n) - float(PymooSpacing().do(F))) < TOL


def test_hypervolume_many_objectives_needs_moocore() -> None:
    rng = np.random.default_rng(0)
    F = rng.uniform(size=(20, 4))
    assert Hypervolume(np.ones(4) * 1.5, backend="moocore").do(F) == pytest.approx(
        float(pymoo_hv.HV(ref_point=np.ones(4) * 1.5).do(F)), abs=TOL
    )
    with pytest.raises(ValueError, match="M <= 3"):
        Hypervolume(np.ones(4), backend="torch")


def test_auto_backend_and_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Hypervolume([1.0, 1.0]).backend == "moocore"  # installed in the test environment
    monkeypatch.setitem(sys.modules, "moocore", None)  # makes `import moocore` fail
    assert Hypervolume([1.0, 1.0]).backend == "torch"
    assert IGD([[0.0, 1.0]]).backend == "torch"
    with pytest.raises(ImportError, match=r"molearn\[pareto\]"):
        Hypervolume([1.0, 1.0], backend="moocore")
    with pytest.raises(ValueError, match="backend"):
        GD([[0.0, 1.0]], backend="numpy")  # type: ignore[arg-type]


# ---------------------------------------------------------------- known fronts


def test_zdt1_true_front_hypervolume() -> None:
    # HV of f2 = 1 - sqrt(f1), f1 in [0, 1], ref (1.1, 1.1): 1.1^2 - int_0^1 (1 - sqrt x) dx = 1.21 - 1/3
    exact = 1.21 - 1.0 / 3.0
    f1 = torch.linspace(0, 1, 10_000, dtype=torch.float64)
    F = torch.stack([f1, 1 - f1.sqrt()], dim=1)
    for backend in ("torch", "moocore"):
        hv = Hypervolume([1.1, 1.1], backend=backend).do(F)
        assert hv < exact and exact - hv < 1e-3
    assert IGD(F, backend="torch").do(F) == 0.0 and GD(F, backend="torch").do(F) == 0.0


def test_sphere_front_3d_hypervolume() -> None:
    # DTLZ2 front (unit sphere octant), ref (1, 1, 1): 1 - pi/6 from below as the grid gets finer
    g = torch.linspace(0, math.pi / 2, 60, dtype=torch.float64)
    a, b = torch.meshgrid(g, g, indexing="ij")
    F = torch.stack([a.cos() * b.cos(), a.cos() * b.sin(), a.sin()], dim=-1).reshape(-1, 3)
    t = Hypervolume([1.0, 1.0, 1.0], clip=True, backend="torch").do(F)
    c = Hypervolume([1.0, 1.0, 1.0], clip=True, backend="moocore").do(F.numpy())
    assert abs(t - c) < TOL
    assert 0 < (1 - math.pi / 6) - t < 0.05


def test_float32_tensor_and_list_inputs() -> None:
    F = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float32)
    assert Hypervolume(torch.tensor([2.0, 2.0]), backend="torch")(F) == pytest.approx(3.0, abs=TOL)
    assert isinstance(IGD([[0.0, 1.0]], backend="torch").do(F.tolist()), float)
    # Python floats are read as float64, not rounded through float32
    assert GD([[0.0, 0.0]], backend="torch").do([[0.1, 0.0]]) == 0.1


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("backend", ["torch", "moocore"])
def test_bad_fronts_are_clear_errors(backend: str) -> None:
    hv = Hypervolume([2.0, 2.0], backend=backend)  # type: ignore[arg-type]
    igd = IGD([[0.0, 1.0], [1.0, 0.0]], backend=backend)  # type: ignore[arg-type]
    for indicator in (hv, igd):
        with pytest.raises(ValueError, match="M = 3"):
            indicator.do([[0.0, 1.0, 2.0]])
        with pytest.raises(ValueError, match="finite"):
            indicator.do([[0.0, float("nan")]])
        with pytest.raises(ValueError, match="finite"):
            indicator.do([[0.0, float("inf")]])
        with pytest.raises(ValueError, match="empty"):
            indicator.do(torch.empty(0, 2))
        with pytest.raises(ValueError, match=r"\(N, M\)"):
            indicator.do([0.0, 1.0])
        with pytest.raises(TypeError):
            indicator.do("front")
    with pytest.raises(ValueError, match="at least 2"):
        Spacing().do([[0.0, 1.0]])
    with pytest.raises(ValueError, match="at least 2"):
        Spread([[0.0, 1.0], [1.0, 0.0]]).do([[0.0, 1.0]])


def test_bad_references_are_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"shape \(M,\)"):
        Hypervolume([[2.0, 2.0]])
    with pytest.raises(ValueError, match=r"shape \(M,\)"):
        Hypervolume([])
    with pytest.raises(ValueError, match="finite"):
        Hypervolume([2.0, float("nan")])
    with pytest.raises(ValueError, match="empty"):
        IGD(np.zeros((0, 2)))
    with pytest.raises(ValueError, match="finite"):
        GDPlus([[0.0, float("inf")]])
    with pytest.raises(ValueError, match="M = 2"):
        Spread([[0.0, 1.0, 2.0]])


@pytest.mark.parametrize("backend", ["torch", "moocore"])
def test_reference_point_dominated_by_no_point(backend: str) -> None:
    F = [[0.0, 3.0], [3.0, 0.0], [2.0, 2.0]]  # none is strictly better than (2, 2) in both objectives
    with pytest.raises(ValueError, match="reference point"):
        Hypervolume([2.0, 2.0], backend=backend).do(F)  # type: ignore[arg-type]
    assert Hypervolume([2.0, 2.0], clip=True, backend=backend).do(F) == 0.0  # type: ignore[arg-type]
    # one point inside is enough; the others contribute nothing
    assert Hypervolume([2.0, 2.0], backend=backend).do([*F, [1.0, 1.5]]) == pytest.approx(0.5, abs=TOL)  # type: ignore[arg-type]


def test_chunked_torch_paths_match_unchunked(monkeypatch: pytest.MonkeyPatch) -> None:
    F = messy_front(7, 40, 3)
    Z = reference_front(7, 30, 3)
    full = [Hypervolume(np.full(3, 1.1), backend="torch").do(F)] + [
        cls(Z, backend="torch").do(F) for cls in (IGD, IGDPlus, GD, GDPlus)
    ]
    monkeypatch.setattr(ind, "_CHUNK_ELEMENTS", 50)
    small = [Hypervolume(np.full(3, 1.1), backend="torch").do(F)] + [
        cls(Z, backend="torch").do(F) for cls in (IGD, IGDPlus, GD, GDPlus)
    ]
    assert np.allclose(full, small, rtol=0, atol=TOL)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_torch_backend_on_cuda_matches_cpu() -> None:
    F = torch.from_numpy(messy_front(3, 60, 3))
    Z = reference_front(3, 40, 3)
    for make in (
        lambda: Hypervolume(np.full(3, 1.1), backend="torch"),
        lambda: IGD(Z, backend="torch"),
        lambda: IGDPlus(Z, backend="torch"),
        lambda: GD(Z, backend="torch"),
        lambda: GDPlus(Z, backend="torch"),
        lambda: Spacing(),
    ):
        assert abs(make().do(F.cuda()) - make().do(F)) < TOL
    F2 = F[:, :2]
    assert abs(Spread(F2).do(F2.cuda()) - Spread(F2).do(F2)) < TOL
