"""The CAGrad 2-D toy: formulas, Pareto set, and the outcomes the papers report (short, time-scaled runs).

Short runs use the runner's time scaling (see ``experiments/toy/run.py``): ``k`` times the paper's Adam lr,
``1/k`` of its steps and betas ``(0.9^k, 0.999^k)``, a coarser discretisation of the same Adam path.
Checked against the paper's schedule (k = 1: 35k steps at lr 1e-3) with an independent closed-form
implementation: for k in 1, 5, 10, 20, 35 Adam on the summed loss stays stuck above x2 = 0 from (9, 9)
and reaches the set from the other starts; MGDA from (9, -1) ends at f1's minimum end for every k up
to 250 (k = 1: (6.995, -8.434)). The CAGrad and Nash-MTL cases use k = 175 (200 steps) with a looser
tolerance for the lr-0.175 oscillation; their end points agree with k = 5 and k = 10 runs.
"""

from __future__ import annotations

import csv
import math

import pytest
import torch

from experiments import common
from molearn.methods import registry

toy = common.load("toy")
Job = toy.Job

EW_OPTIMUM_X1 = -63 / 11  # argmin over x1 of 0.1 f1 + f2 on the set: -0.1 (7 - x1) + (x1 + 7) = 0


def _hand(x1: float, x2: float) -> tuple[float, float]:
    t = math.tanh(-x2)
    f1_log = math.log(max(abs(0.5 * (-x1 - 7) - t), 5e-6)) + 6
    f2_log = math.log(max(abs(0.5 * (-x1 + 3) + t + 2), 5e-6)) + 6
    c1 = max(math.tanh(0.5 * x2), 0.0)
    c2 = max(math.tanh(-0.5 * x2), 0.0)
    f1_sq = ((-x1 + 7) ** 2 + 0.1 * (-x2 - 8) ** 2) / 10 - 20
    f2_sq = ((-x1 - 7) ** 2 + 0.1 * (-x2 - 8) ** 2) / 10 - 20
    return c1 * f1_log + c2 * f1_sq, c1 * f2_log + c2 * f2_sq


def _hand_grad(x1: float, x2: float) -> tuple[tuple[float, float], tuple[float, float]]:
    """Derivatives of the formulas, by hand (valid away from the clamp and from x2 = 0)."""
    sech2 = 1 - math.tanh(x2) ** 2
    h = math.tanh(0.5 * x2)
    c1, c2 = max(h, 0.0), max(-h, 0.0)
    dc1 = 0.5 * (1 - h * h) if x2 > 0 else 0.0
    dc2 = -0.5 * (1 - h * h) if x2 < 0 else 0.0
    u1 = -0.5 * x1 - 3.5 + math.tanh(x2)
    u2 = -0.5 * x1 + 3.5 - math.tanh(x2)
    l1, l2 = math.log(abs(u1)) + 6, math.log(abs(u2)) + 6
    s1 = ((7 - x1) ** 2 + 0.1 * (x2 + 8) ** 2) / 10 - 20
    s2 = ((x1 + 7) ** 2 + 0.1 * (x2 + 8) ** 2) / 10 - 20
    g1 = (c1 * (-0.5 / u1) - c2 * (7 - x1) / 5, dc1 * l1 + c1 * sech2 / u1 + dc2 * s1 + c2 * 0.02 * (x2 + 8))
    g2 = (c1 * (-0.5 / u2) + c2 * (x1 + 7) / 5, dc1 * l2 - c1 * sech2 / u2 + dc2 * s2 + c2 * 0.02 * (x2 + 8))
    return g1, g2


POINTS = [(-8.5, 7.5), (9.0, 9.0), (0.5, 2.0), (-7.5, -0.5), (9.0, -1.0), (3.0, -8.0), (-2.0, -8.3552)]


@pytest.mark.parametrize("point", POINTS)
def test_losses_match_the_formulas(point: tuple[float, float]) -> None:
    x = torch.tensor(point, dtype=torch.float64)
    f1, f2 = _hand(*point)
    want = torch.tensor([f1, f2], dtype=torch.float64)
    torch.testing.assert_close(toy.losses(x), want, rtol=1e-12, atol=1e-12)
    scaled = want * torch.tensor([0.1, 1.0], dtype=torch.float64)
    torch.testing.assert_close(toy.losses(x, scale=0.1), scaled, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("point", POINTS)
def test_gradients_match_hand_derivatives(point: tuple[float, float]) -> None:
    x = torch.tensor(point, dtype=torch.float64, requires_grad=True)
    f = toy.losses(x)
    g1 = torch.autograd.grad(f[0], x, retain_graph=True)[0]
    g2 = torch.autograd.grad(f[1], x)[0]
    h1, h2 = _hand_grad(*point)
    torch.testing.assert_close(g1, torch.tensor(h1, dtype=torch.float64), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g2, torch.tensor(h2, dtype=torch.float64), rtol=1e-10, atol=1e-12)


def test_losses_are_batched_and_zero_at_the_origin() -> None:
    pts = torch.tensor([*POINTS, (0.0, 0.0)], dtype=torch.float64)
    out = toy.losses(pts, 0.1)
    assert out.shape == (len(POINTS) + 1, 2)
    for i, p in enumerate(POINTS):
        torch.testing.assert_close(out[i], toy.losses(torch.tensor(p, dtype=torch.float64), 0.1))
    assert out[-1].tolist() == [0.0, 0.0]  # c1 = c2 = 0 on x2 = 0


def _grads_on(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_(True)
    f = toy.losses(x)
    g1 = torch.autograd.grad(f[..., 0].sum(), x, retain_graph=True)[0]
    g2 = torch.autograd.grad(f[..., 1].sum(), x)[0]
    return g1, g2


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))


def test_pareto_set_value() -> None:
    assert abs(float(toy.pareto_x2(0.0)) - (-8.3552)) < 2e-4  # the papers' line
    assert abs(float(toy.pareto_x2(0.0)) - toy.PARETO_X2) < 1e-5
    for end in (-7.0, 7.0):
        assert abs(float(toy.pareto_x2(end)) - (-8.43446)) < 1e-4
    x1 = torch.tensor([-6.5, -5.0, -2.0, 0.0, 2.0, 5.0, 6.5], dtype=torch.float64)
    on = torch.stack([x1, toy.pareto_x2(x1)], -1)
    g1, g2 = _grads_on(on)
    assert (_cos(g1, g2) + 1).abs().max() < 1e-9  # anti-parallel: Pareto-stationary
    for shift in (-0.1, 0.1):
        g1, g2 = _grads_on(on + torch.tensor([0.0, shift], dtype=torch.float64))
        assert (_cos(g1, g2) + 1).min() > 1e-6  # a common descent direction exists off the set
    # the ends are the individual minima: f1's gradient vanishes at x1 = 7, f2's at x1 = -7
    g1, _ = _grads_on(torch.tensor([7.0, float(toy.pareto_x2(7.0))], dtype=torch.float64))
    _, g2 = _grads_on(torch.tensor([-7.0, float(toy.pareto_x2(-7.0))], dtype=torch.float64))
    assert g1.norm() < 1e-9 and g2.norm() < 1e-9


@pytest.mark.parametrize("x1", [-5.0, 0.0, 3.0, 6.5])
def test_pareto_x2_agrees_with_a_grid_search(x1: float) -> None:
    x2 = torch.linspace(-9.0, -8.0, 10001, dtype=torch.float64)
    pts = torch.stack([torch.full_like(x2, x1), x2], -1)
    g1, g2 = _grads_on(pts)
    best = x2[_cos(g1, g2).argmin()]
    assert abs(float(best - toy.pareto_x2(x1))) <= 2e-4


def test_pareto_distance() -> None:
    y7 = float(toy.pareto_x2(7.0))
    pts = torch.tensor([[0.0, toy.PARETO_X2], [8.0, y7], [-9.0, y7 + 0.5], [0.0, 0.0]], dtype=torch.float64)
    d = toy.pareto_distance(pts)
    want = torch.tensor([0.0, 1.0, 2.5, -toy.PARETO_X2], dtype=torch.float64)
    torch.testing.assert_close(d, want, atol=1e-5, rtol=0)


def test_noise_changes_gradients_not_values() -> None:
    x = torch.tensor([1.0, -3.0], dtype=torch.float64, requires_grad=True)
    z = torch.tensor([[0.3, -0.2], [0.1, 0.4]], dtype=torch.float64)
    clean = toy.losses(x, 0.1)
    noisy = toy.noisy_losses(x, 0.1, z)
    torch.testing.assert_close(noisy, clean)
    for i in range(2):
        g_clean = torch.autograd.grad(clean[i], x, retain_graph=True)[0]
        g_noisy = torch.autograd.grad(noisy[i], x, retain_graph=True)[0]
        torch.testing.assert_close(g_noisy, g_clean + z[i])


# ----------------------------------------------------------------------------------- outcomes
def _job(method: str, start: tuple[float, float], k: float, *, tol: float = 0.05) -> Job:
    v = toy.VARIANTS["nash"]
    kwargs, _ = common.method_kwargs(method, v.method_kwargs.get(method, {}))
    return Job(
        method=method,
        kwargs=kwargs,
        start_index=0,
        start=start,
        scale=v.scale,
        lr=v.lr * k,
        iterations=round(v.iterations / k),
        noise=v.noise,
        betas=(0.9**k, 0.999**k),
        record_every=10,
        tol=tol,
    )


def test_ew_stays_stuck_from_9_9_and_reaches_its_optimum_from_the_origin() -> None:
    # FAMO README: "ADAM fails in 1 out of 5 runs to reach the Pareto front"; it is the (9, 9) start.
    stuck = toy.run_job(_job("ew", (9.0, 9.0), 35))
    assert stuck.error is None
    assert not stuck.reached and stuck.end[1] > 0 and stuck.outcome.startswith("not reached")
    ok = toy.run_job(_job("ew", (0.0, 0.0), 35))
    assert ok.reached and abs(ok.end[0] - EW_OPTIMUM_X1) < 0.1
    assert ok.settled_at is not None and 0 < ok.settled_at <= 1000


def test_mgda_ends_at_f1s_minimum_from_the_right() -> None:
    # Nash-MTL, Fig. 1: MGDA follows the smaller gradient (0.1 f1) once the two conflict, so from the
    # right-hand starts it stops at the f1 end of the Pareto set (paper schedule: (6.995, -8.434)).
    r = toy.run_job(_job("mgda", (9.0, -1.0), 35))
    assert r.error is None
    assert r.reached and r.end[0] > 6.5 and r.outcome == "Pareto set, at f1's minimum"


def test_famo_reaches_the_set_where_ew_does_not_and_stays_balanced() -> None:
    # FAMO README/paper: FAMO reaches the Pareto front from all 5 starts, decreasing both losses evenly.
    r = toy.run_job(_job("famo", (9.0, 9.0), 35))
    assert r.error is None
    assert r.reached and abs(r.end[0]) < 3.0


def _require(method: str) -> None:
    if method not in registry():
        pytest.skip(f"{method} is not registered yet")


def test_cagrad_follows_the_larger_gradient() -> None:
    # Nash-MTL, Fig. 1: CAGrad (c = 0.4) is driven by f2's larger gradient and converges to the
    # average-loss optimum on the f2 side (x1 = -63/11). (From (9, 9) it stays in the flat region for
    # the paper's 35k steps, like EW; from (9, -1) it crosses the whole set to f2's side.)
    _require("cagrad")
    r = toy.run_job(_job("cagrad", (9.0, -1.0), 175, tol=0.2))
    assert r.error is None
    assert r.reached and abs(r.end[0] - EW_OPTIMUM_X1) < 0.3


def test_nashmtl_reaches_the_set() -> None:
    # Nash-MTL, Fig. 1: Nash-MTL reaches the Pareto front from every start.
    _require("nashmtl")
    r = toy.run_job(_job("nashmtl", (9.0, 9.0), 175, tol=0.25))
    assert r.error is None
    assert r.reached


# ----------------------------------------------------------------------------------- runner and outputs
def test_resolve_methods() -> None:
    found, missing = toy.resolve_methods(None)
    assert "ew" in found and "mgda" in found
    assert set(found) | set(missing) == set(toy.DEFAULT_METHODS)
    assert toy.resolve_methods(["all"])[0] == sorted(registry())
    assert toy.resolve_methods(["EW", "Ew", "mgda"]) == (["ew", "mgda"], [])
    with pytest.raises(KeyError, match="unknown method 'nope'"):
        toy.resolve_methods(["ew", "nope"])


def test_auto_time_scale_picks_the_finest_that_fits() -> None:
    assert toy._makespan([3.0, 3.0, 2.0, 2.0, 2.0], 2) == 7.0  # longest first: 3+2+2 | 3+2
    per_step = {"a": 1e-3, "b": 2e-3}  # 5 starts x 10000 steps: 150 s in all, 80 s on 2 workers at k = 1
    assert toy.auto_time_scale(per_step, 5, 10_000, 2, budget=100) == (1.0, 80.0)
    assert toy.auto_time_scale(per_step, 5, 10_000, 2, budget=20) == (5.0, 16.0)
    assert toy.auto_time_scale(per_step, 5, 10_000, 2, budget=1e-6)[0] == toy.TIME_SCALES[-1]
    assert toy.auto_time_scale(per_step, 5, 10_000, 2, budget=1e-6, max_scale=5)[0] == 5.0
    for v in toy.VARIANTS.values():
        assert v.max_time_scale in toy.TIME_SCALES


def test_run_writes_the_table_csv_and_plot(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    logged: list[str] = []

    class Log:
        def write(self, s: str) -> None:
            logged.append(s)

        def flush(self) -> None:
            pass

    result = toy.run(
        "sdmgrad",
        ["ew", "mgda"],
        iterations=12,
        overrides={"ew": {"reduction": "mean"}},
        log=Log(),  # type: ignore[arg-type]
    )
    assert result.iterations == 12 and result.lr == toy.VARIANTS["sdmgrad"].lr
    order = [(r.method, r.start_index) for r in result.results]
    assert order == [(m, i) for m in ("ew", "mgda") for i in range(3)]
    assert all(r.steps[-1] == 12 and len(r.points) == len(r.steps) for r in result.results)
    assert result.kwargs["ew"] == {"reduction": "mean"}
    assert any("[6/6]" in line for line in logged)
    paths = toy.write_outputs(result, tmp_path / "out").paths
    md = paths["results.md"].read_text()
    assert md.count("| EW | (") == 3 and md.count("| MGDA | (") == 3
    assert "| EW | 0/3 |" in md
    with open(paths["results.csv"]) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 and rows[0]["method"] == "EW" and rows[0]["reached"] == "no"
    assert float(rows[0]["start_x1"]) == -8.5
    assert paths["trajectories.png"].stat().st_size > 10_000


def test_a_failing_method_becomes_an_error_row() -> None:
    # the bad option is only detected when the method is constructed: construction is tried first
    with pytest.raises(ValueError, match="no method could be constructed"):
        toy.run("nash", ["ew"], iterations=2, overrides={"ew": {"reduction": "bogus"}})
    bad = toy.Job("ew", {}, 0, (float("nan"), 0.0), 0.1, 1e-3, 3)
    r = toy.run_job(bad)
    assert r.error is not None and not r.reached and r.outcome.startswith("error")


# ----------------------------------------------------------------------------------- command line
def test_toy_writes_the_files(tmp_path, capsys) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "toy"
    rc = toy.main(["--out", str(out), "--methods", "ew,famo", "--iterations", "15", "--jobs", "1"])
    assert rc == 0
    assert {p.name for p in out.iterdir()} == {"results.md", "results.csv", "trajectories.png"}
    captured = capsys.readouterr()
    assert "| EW | (-8.5, 7.5) |" in captured.out  # the table is printed
    assert "[10/10]" in captured.err and "wrote" in captured.err  # progress lines on stderr
    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["method"] for r in rows] == ["EW"] * 5 + ["FAMO"] * 5
    assert (out / "results.md").read_text().startswith("# CAGrad 2-D toy, variant `nash`")


def test_toy_in_worker_processes_without_plot(tmp_path, capsys) -> None:
    out = tmp_path / "toy"
    argv = ["--out", str(out), "--methods", "ew", "--variant", "cagrad", "--time-scale", "10000"]
    rc = toy.main([*argv, "--jobs", "2"])
    assert rc == 0
    captured = capsys.readouterr()
    assert "2 process(es)" in captured.err and "10 Adam steps" in captured.err  # 100k steps / 10000
    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["start"]) for r in rows] == [0, 1, 2]
    assert (out / "trajectories.png").exists()


def test_toy_no_plot_and_method_options(tmp_path, capsys) -> None:
    out = tmp_path / "toy"
    argv = ["--out", str(out), "--methods", "ew", "--iterations", "3", "--jobs", "1", "--no-plot"]
    assert toy.main([*argv, "--set", "ew.reduction='mean'"]) == 0
    assert not (out / "trajectories.png").exists()
    assert "EW {'reduction': 'mean'}" in (out / "results.md").read_text()
    capsys.readouterr()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--methods", "nope"], "unknown method 'nope'"),
        (["--set", "reduction=mean"], "--set expects METHOD.OPTION=VALUE"),
        (["--paper", "--time-scale", "5"], "--paper and --time-scale disagree"),
    ],
)
def test_toy_bad_arguments(tmp_path, capsys, argv: list[str], message: str) -> None:
    rc = toy.main(["--out", str(tmp_path / "x"), "--iterations", "2", "--jobs", "1", *argv])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_time_scale_must_be_positive(capsys) -> None:
    assert toy.main(["--time-scale", "0"]) == 2  # argparse refuses it
    assert "expected a number > 0 or 'auto'" in capsys.readouterr().err
