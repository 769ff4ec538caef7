"""Test problems: objective values vs pymoo, true fronts vs pymoo / closed forms, gradients, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from molearn.pareto._problems import (
    DTLZ7,
    VLMOP1,
    VLMOP2,
    ZDT1,
    Problem,
    problem,
    problem_names,
)

pymoo_problems = pytest.importorskip("pymoo.problems")

ALL = [
    "zdt1",
    "zdt2",
    "zdt3",
    "zdt4",
    "zdt6",
    "dtlz1",
    "dtlz2",
    "dtlz3",
    "dtlz4",
    "dtlz7",
    "vlmop1",
    "vlmop2",
]
PYMOO = [n for n in ALL if not n.startswith("vlmop")]  # pymoo has no VLMOP problems


def _zdt3_pieces() -> list[tuple[float, float]]:
    """The x_1 ranges of ZDT3's front, recomputed with scipy (ends: local minima of f_2; starts: where f_2
    first falls below the previous piece's end value)."""
    from scipy.optimize import brentq

    def z(t: float) -> float:
        return 1 - np.sqrt(t) - t * np.sin(10 * np.pi * t)

    def dz(t: float) -> float:
        return -0.5 / np.sqrt(t) - np.sin(10 * np.pi * t) - 10 * np.pi * t * np.cos(10 * np.pi * t)

    ends = [brentq(dz, e - 0.01, e + 0.01, xtol=1e-16) for e in (0.083, 0.258, 0.454, 0.653, 0.852)]
    brackets = [(0.15, 0.2), (0.35, 0.42), (0.55, 0.63), (0.75, 0.83)]
    starts = [0.0]
    for e, (lo, hi) in zip(ends, brackets):
        v = z(e)
        starts.append(brentq(lambda t, v=v: z(t) - v, lo, hi, xtol=1e-16))
    return list(zip(starts, ends))


ZDT3_PIECES = _zdt3_pieces()


def _random_x(p: Problem, n: int, seed: int, margin: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    u = margin + (1.0 - 2.0 * margin) * torch.rand(n, p.n_var, generator=g, dtype=torch.float64)
    return p.lower + u * (p.upper - p.lower)


def _pymoo(name: str, p: Problem):  # type: ignore[no-untyped-def]
    if name.startswith("dtlz"):
        return pymoo_problems.get_problem(name, n_var=p.n_var, n_obj=p.n_obj)
    return pymoo_problems.get_problem(name, n_var=p.n_var)


def _hausdorff(a: torch.Tensor, b: torch.Tensor) -> float:
    d = torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")  # exact, not via a @ b.T
    return max(d.min(dim=1).values.max().item(), d.min(dim=0).values.max().item())


def _on_front(name: str, f: torch.Tensor) -> torch.Tensor:
    """Closed-form residual of the points ``f`` w.r.t. the true front of ``name``, per point."""
    f1, last = f[:, 0], f[:, -1]
    if name in ("zdt1", "zdt4"):
        return (last - (1 - f1.clamp_min(0).sqrt())).abs() + (f1.clamp(0, 1) - f1).abs()
    if name == "zdt2":
        return (last - (1 - f1**2)).abs() + (f1.clamp(0, 1) - f1).abs()
    if name == "zdt6":
        return (last - (1 - f1**2)).abs() + (f1.clamp(0.2807753188, 1) - f1).abs()
    if name == "zdt3":
        gap = torch.stack([(f1.clamp(lo, hi) - f1).abs() for lo, hi in ZDT3_PIECES]).min(dim=0).values
        return (last - (1 - f1.clamp_min(0).sqrt() - f1 * torch.sin(10 * math.pi * f1))).abs() + gap
    if name == "dtlz1":
        return (f.sum(dim=1) - 0.5).abs() + (-f).clamp_min(0).sum(dim=1)
    if name in ("dtlz2", "dtlz3", "dtlz4"):
        return (f.norm(dim=1) - 1).abs() + (-f).clamp_min(0).sum(dim=1)
    raise AssertionError(name)


# ----------------------------------------------------------------------------------------------------------
# objective values
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", PYMOO)
def test_evaluate_matches_pymoo(name: str) -> None:
    p = problem(name)
    x = _random_x(p, 64, seed=1)
    expected = torch.from_numpy(_pymoo(name, p).evaluate(x.numpy()))
    torch.testing.assert_close(p.evaluate(x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["dtlz1", "dtlz2", "dtlz3", "dtlz4", "dtlz7"])
@pytest.mark.parametrize("n_obj", [2, 5])
def test_dtlz_other_objective_counts_match_pymoo(name: str, n_obj: int) -> None:
    p = problem(name, n_obj=n_obj, n_var=n_obj + 4)
    x = _random_x(p, 32, seed=2)
    expected = torch.from_numpy(_pymoo(name, p).evaluate(x.numpy()))
    torch.testing.assert_close(p.evaluate(x), expected, rtol=1e-12, atol=1e-12)


def test_vlmop_values() -> None:
    p1 = VLMOP1()
    torch.testing.assert_close(
        p1.evaluate(torch.tensor([[1.0], [3.0], [-2.0]], dtype=torch.float64)),
        torch.tensor([[1.0, 1.0], [9.0, 1.0], [4.0, 16.0]], dtype=torch.float64),
    )
    p2 = VLMOP2()
    c = 1 / math.sqrt(2)
    torch.testing.assert_close(
        p2.evaluate(torch.tensor([[c, c], [-c, -c], [0.0, 0.0]], dtype=torch.float64)),
        torch.tensor(
            [[0.0, 1 - math.exp(-4)], [1 - math.exp(-4), 0.0], [1 - math.exp(-1), 1 - math.exp(-1)]],
            dtype=torch.float64,
        ),
        rtol=0, atol=1e-15,
    )  # fmt: skip
    x = _random_x(VLMOP2(n_var=5), 16, seed=3).numpy()
    ref = np.stack(
        [1 - np.exp(-((x - 1 / np.sqrt(5)) ** 2).sum(1)), 1 - np.exp(-((x + 1 / np.sqrt(5)) ** 2).sum(1))], 1
    )
    torch.testing.assert_close(
        VLMOP2(n_var=5).evaluate(torch.from_numpy(x)), torch.from_numpy(ref), rtol=1e-12, atol=1e-14
    )


@pytest.mark.parametrize("name", ALL)
def test_evaluate_shapes_dtypes_and_no_bound_check(name: str) -> None:
    p = problem(name)
    x = _random_x(p, 5, seed=4)
    f = p.evaluate(x)
    assert f.shape == (5, p.n_obj)
    single = p.evaluate(x[2])
    assert single.shape == (p.n_obj,)
    torch.testing.assert_close(single, f[2], rtol=0, atol=0)
    f32 = p.evaluate(x.float())
    assert f32.dtype == torch.float32
    torch.testing.assert_close(f32.double(), f, rtol=1e-4, atol=1e-4)
    assert p.evaluate(x[:0]).shape == (0, p.n_obj)
    # bounds are not checked: a point outside the box is evaluated by the formula
    outside = p.upper + 0.5
    assert p.evaluate(outside).shape == (p.n_obj,)


# ----------------------------------------------------------------------------------------------------------
# gradients
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_gradients_finite_and_correct_at_interior_points(name: str) -> None:
    p = problem(name)
    x = _random_x(p, 8, seed=5, margin=0.05).requires_grad_(True)
    jac = torch.autograd.functional.jacobian(lambda z: p.evaluate(z).sum(dim=0), x)  # (n_obj, N, n_var)
    assert torch.isfinite(jac).all()
    assert (jac.abs().sum(dim=(1, 2)) > 0).all()  # every objective depends on x
    xs = x[:2].detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(p.evaluate, (xs,), eps=1e-7, atol=1e-5, rtol=1e-4)


# ----------------------------------------------------------------------------------------------------------
# true fronts and Pareto sets
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [n for n in PYMOO if n != "dtlz7"])
def test_front_matches_pymoo_front(name: str) -> None:
    p = problem(name)
    ref = torch.from_numpy(_pymoo(name, p).pareto_front()).to(torch.float64)
    ours = p.pareto_front(ref.shape[0])  # same lattice / grid size as pymoo
    assert ours.shape == ref.shape
    assert _hausdorff(ours, ref) < 1e-6
    assert _on_front(name, ref).max() < 1e-6  # pymoo's points satisfy our closed form
    assert _on_front(name, p.pareto_front(37)).max() < 1e-12  # and so do ours at any n


@pytest.mark.parametrize("name", ["dtlz1", "dtlz2", "dtlz4"])
def test_dtlz_two_objective_front_matches_pymoo(name: str) -> None:
    p = problem(name, n_obj=2)
    ref = torch.from_numpy(_pymoo(name, p).pareto_front()).to(torch.float64)
    assert _hausdorff(p.pareto_front(ref.shape[0]), ref) < 1e-12


def _non_dominated_1d(t: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
    """Mask of points non-dominated in (t, f2) for t sorted increasingly."""
    prev_min = torch.cat([f2.new_tensor([math.inf]), torch.cummin(f2, dim=0).values[:-1]])
    return f2 < prev_min


def test_dtlz7_front_pieces_by_brute_force() -> None:
    # pymoo's DTLZ7 front is downloaded (3 objectives) or unfiltered random samples (2): brute force instead
    p = DTLZ7(n_obj=2)
    x = torch.zeros(200_001, p.n_var, dtype=torch.float64)
    x[:, 0] = torch.linspace(0, 1, 200_001, dtype=torch.float64)
    f = p.evaluate(x)
    kept = f[_non_dominated_1d(f[:, 0], f[:, 1])]
    ours = p.pareto_front(400)
    # same f_1 sets (grid spacing 5e-6): ours lie on the brute-force front, which lies in our two pieces
    assert (ours[:, None, 0] - kept[None, :, 0]).abs().min(dim=1).values.max() < 1e-5
    lo_gap = (kept[:, 0] - 0.25141183608891715).clamp_min(0) * (0.6316265307000614 - kept[:, 0]).clamp_min(0)
    assert kept[:, 0].max() < 0.8594008566447239 + 1e-5 and lo_gap.max() < 1e-10
    assert kept[:, 0].max() > 0.8594008566447239 - 1e-5
    last = 2 * p.n_obj - (ours[:, :-1] * (1 + torch.sin(3 * math.pi * ours[:, :-1]))).sum(dim=1)
    torch.testing.assert_close(ours[:, -1], last, rtol=0, atol=1e-12)


def test_dtlz7_three_objective_front_not_dominated_by_samples() -> None:
    p = DTLZ7()
    front = p.pareto_front(400)
    assert front.shape == (400, 3)
    g = torch.Generator().manual_seed(6)
    x = torch.zeros(20_000, p.n_var, dtype=torch.float64)
    x[:, :2] = torch.rand(20_000, 2, generator=g, dtype=torch.float64)
    cand = p.evaluate(x)  # all points with g = 1, a superset of the front
    dominated = (
        (cand[None] <= front[:, None] + 1e-12).all(-1) & (cand[None] < front[:, None] - 1e-9).any(-1)
    ).any(1)
    assert not dominated.any()
    # and the gap between the pieces is dominated: f_1 = 0.45 is beaten by f_1 = 0.25141
    gap = p.evaluate(torch.tensor([0.45, 0.3] + [0.0] * (p.n_var - 2), dtype=torch.float64))
    best = p.evaluate(torch.tensor([0.2514118361, 0.3] + [0.0] * (p.n_var - 2), dtype=torch.float64))
    assert (best <= gap).all() and (best < gap).any()


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("n", [1, 2, 7, 50])
def test_pareto_set_evaluates_onto_front(name: str, n: int) -> None:
    p = problem(name)
    xs = p.pareto_set(n)
    front = p.pareto_front(n)
    assert xs.shape == (n, p.n_var) and front.shape == (n, p.n_obj)
    assert xs.dtype == front.dtype == torch.float64
    assert ((xs >= p.lower) & (xs <= p.upper)).all()
    torch.testing.assert_close(p.evaluate(xs), front, rtol=0, atol=1e-12)
    # no front point strongly dominates another
    dom = (front[None] < front[:, None] - 1e-9).all(-1)
    assert not dom.any()


@pytest.mark.parametrize("name", ALL)
def test_ideal_and_nadir_are_front_extremes(name: str) -> None:
    p = problem(name)
    n = {"dtlz1": 136, "dtlz2": 136, "dtlz3": 136, "dtlz4": 136, "dtlz7": 400}.get(name, 1000)
    front = p.pareto_front(n)
    assert p.ideal is not None and p.nadir is not None
    torch.testing.assert_close(front.min(dim=0).values, p.ideal, rtol=0, atol=1e-12)
    torch.testing.assert_close(front.max(dim=0).values, p.nadir, rtol=0, atol=1e-12)


def test_vlmop_fronts_closed_form() -> None:
    f = VLMOP1().pareto_front(101)
    torch.testing.assert_close(f[:, 1], (f[:, 0].sqrt() - 2) ** 2, rtol=0, atol=1e-12)
    assert f[0].tolist() == [0.0, 4.0] and f[-1].tolist() == [4.0, 0.0]
    p = VLMOP2()
    s = p.pareto_set(11)
    assert torch.equal(s[:, 0], s[:, 1])
    assert s.abs().max().item() == pytest.approx(1 / math.sqrt(2), abs=1e-15)
    # the front is the image of the set and is non-dominated: f_1 increases while f_2 decreases
    f2 = p.pareto_front(11)
    assert (f2[1:, 0] > f2[:-1, 0]).all() and (f2[1:, 1] < f2[:-1, 1]).all()


def test_front_dtype_device_and_exact_grids() -> None:
    f = ZDT1().pareto_front(100, dtype=torch.float32)
    assert f.dtype == torch.float32 and f.shape == (100, 2)
    torch.testing.assert_close(ZDT1().pareto_front(11)[:, 0], torch.linspace(0, 1, 11, dtype=torch.float64))
    # DTLZ1 with a full lattice size is the whole Das-Dennis lattice (H = 12 for 91 points)
    lattice = problem("dtlz1").pareto_front(91) * 2 * 12
    torch.testing.assert_close(lattice, lattice.round(), rtol=0, atol=1e-9)
    assert torch.unique(lattice.round(), dim=0).shape[0] == 91


# ----------------------------------------------------------------------------------------------------------
# errors and registry
# ----------------------------------------------------------------------------------------------------------
def test_bad_inputs_are_clear_errors() -> None:
    p = problem("zdt1")
    with pytest.raises(ValueError, match=r"shape \(30,\) or \(N, 30\), got \(29,\)"):
        p.evaluate(torch.zeros(29, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"got \(4, 31\)"):
        p.evaluate(torch.zeros(4, 31))
    with pytest.raises(ValueError, match="got"):
        p.evaluate(torch.zeros(2, 3, 30))
    with pytest.raises(ValueError, match="got"):
        p.evaluate(torch.tensor(0.5))
    with pytest.raises(TypeError, match="floating-point"):
        p.evaluate(torch.zeros(30, dtype=torch.long))
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        p.evaluate([0.0] * 30)  # type: ignore[arg-type]
    for bad in (0, -3, True, 2.5):
        with pytest.raises(ValueError, match="positive int"):
            p.pareto_front(bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="positive int"):
            p.pareto_set(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_var >= 2"):
        problem("zdt2", n_var=1)
    with pytest.raises(ValueError, match="n_var >= n_obj"):
        problem("dtlz2", n_obj=5, n_var=4)
    with pytest.raises(ValueError, match="n_obj >= 2"):
        problem("dtlz7", n_obj=1)
    with pytest.raises(ValueError, match="alpha > 0"):
        problem("dtlz4", alpha=0)
    with pytest.raises(ValueError, match=r"Pareto set \[0, 2\]"):
        VLMOP1(bounds=(0.5, 4.0))


def test_registry_defaults_and_errors() -> None:
    assert problem_names() == ALL
    expected = {"zdt1": (30, 2), "zdt2": (30, 2), "zdt3": (30, 2), "zdt4": (10, 2), "zdt6": (10, 2),
                "dtlz1": (7, 3), "dtlz2": (12, 3), "dtlz3": (12, 3), "dtlz4": (12, 3), "dtlz7": (22, 3),
                "vlmop1": (1, 2), "vlmop2": (2, 2)}  # fmt: skip
    for name, (n_var, n_obj) in expected.items():
        p = problem(name)
        assert (p.n_var, p.n_obj) == (n_var, n_obj), name
        assert p.lower.shape == p.upper.shape == (n_var,)
        assert (p.lower < p.upper).all()
    assert problem("dtlz4").alpha == 100.0  # type: ignore[attr-defined]
    assert problem("DTLZ2", n_obj=5).n_var == 14
    assert problem("dtlz7", n_obj=4).k == 20  # type: ignore[attr-defined]
    z4 = problem("zdt4")
    assert z4.lower[0] == 0 and z4.upper[0] == 1 and (z4.lower[1:] == -5).all() and (z4.upper[1:] == 5).all()
    v2 = problem("vlmop2")
    assert (v2.lower == -2).all() and (v2.upper == 2).all()
    with pytest.raises(ValueError, match="unknown problem 'zdt5'") as err:
        problem("zdt5")
    for name in ALL:
        assert name in str(err.value)
    with pytest.raises(TypeError):
        problem("zdt1", n_obj=3)
