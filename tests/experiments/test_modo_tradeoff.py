"""MoDo's three-way trade-off experiment on tiny fixture IDX files (never the Debian package)."""

from __future__ import annotations

import csv
import math
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pytest
import torch

from experiments import common
from molearn.compare import mean_ci
from molearn.datasets import FASHION_MNIST_FILES, write_idx

mt = common.load("modo-tradeoff")


def make_fixture(root: Path, n_train: int = 600, n_test: int = 200, side: int = 12, seed: int = 0) -> Path:
    """A learnable 10-class image set in the Fashion-MNIST file layout: one random binary template per
    class, random contrast, Gaussian pixel noise and 15 % random labels."""
    g = torch.Generator().manual_seed(seed)
    templates = (torch.rand(10, side, side, generator=g) > 0.5).float() * 200

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = (torch.arange(n) % 10)[torch.randperm(n, generator=g)]
        contrast = 0.5 + 0.5 * torch.rand(n, 1, 1, generator=g)
        x = templates[y] * contrast + 60 * torch.randn(n, side, side, generator=g)
        flip = torch.rand(n, generator=g) < 0.15
        y = torch.where(flip, torch.randint(0, 10, (n,), generator=g), y)
        return x.clamp(0, 255).to(torch.uint8), y.to(torch.uint8)

    for split, n in (("train", n_train), ("test", n_test)):
        x, y = sample(n)
        img, lab = FASHION_MNIST_FILES[split]
        write_idx(root / f"{img}.gz", x)
        write_idx(root / f"{lab}.gz", y)
    return root


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fixture(tmp_path_factory.mktemp("fmnist"))


@pytest.fixture(scope="module")
def result(data_root: Path) -> Any:
    # γ at its extremes (α = 0.1, T = 60) and T = 5 vs 60 (α = 0.1, γ = 0.01), two seeds
    settings = mt.Settings(
        gammas=(0.001, 1.0),
        lrs=(0.01, 0.1),
        ts=(5, 60),
        iterations=60,
        seeds=(0, 1),
        ca_every=5,
        root=str(data_root),
    )
    return mt.run(settings, jobs=1)


# ------------------------------------------------------------------------------------------ pieces
def test_factored_forward_and_full_gradients_match_autograd() -> None:
    torch.manual_seed(0)
    model = mt.ToyMLP(in_features=20, hidden=16).double()
    x = torch.randn(50, 20, dtype=torch.float64)
    y = torch.randint(0, 10, (50,))
    assert torch.allclose(model.forward_factored(x), model(x), atol=1e-12)
    jac, losses, acc = mt.full_gradients(model, x, y)
    params = list(model.parameters())
    ref = mt.objectives(model(x), y)
    assert torch.allclose(losses, ref.detach(), atol=1e-12)
    for k in range(3):
        g = torch.autograd.grad(ref[k], params, retain_graph=True)
        assert torch.allclose(jac[k], torch.cat([t.reshape(-1) for t in g]), atol=1e-12)
    assert float(acc) == pytest.approx(float((model(x).argmax(-1) == y).double().mean()))


def test_objectives_are_the_official_losses() -> None:
    z = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]], dtype=torch.float64)
    y = torch.tensor([0, 1])
    ce = -torch.log_softmax(z, -1)[torch.arange(2), y].mean()
    l1 = (z.softmax(-1) - torch.eye(3, dtype=z.dtype)[y]).abs().mean()
    # multi-class hinge: Σ_{j≠y} max(0, 1 - z_y + z_j) / C, mean over samples
    zz, yy = z.tolist(), y.tolist()
    per_sample = [
        sum(max(0.0, 1 - zz[i][yy[i]] + zz[i][j]) for j in range(3) if j != yy[i]) / 3 for i in range(2)
    ]
    hinge = torch.tensor(per_sample, dtype=torch.float64).mean()
    assert torch.allclose(mt.objectives(z, y), torch.stack([ce, l1, hinge]), atol=1e-12)


def test_pareto_stationarity_is_the_min_norm_element() -> None:
    jac = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]], dtype=torch.float64)
    ps, lam = mt.pareto_stationarity(jac)
    assert torch.allclose(lam, torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64), atol=1e-9)
    assert float(ps) == pytest.approx(math.sqrt(0.5), abs=1e-9)


def test_ci95_matches_student_t() -> None:
    stats = pytest.importorskip("scipy.stats")
    vals = [1.0, 2.0, 4.0, 7.0]
    mean, half, n = mean_ci(vals)
    sd = torch.tensor(vals, dtype=torch.float64).std().item()
    assert (mean, n) == (3.5, 4)
    assert half == pytest.approx(stats.t.ppf(0.975, 3) * sd / 2, rel=1e-3)
    assert math.isnan(mean_ci([math.nan])[0]) and math.isnan(mean_ci([1.0])[1])


def test_jobs_share_runs_across_sweeps() -> None:
    s = mt.Settings(
        gammas=(0.001, 0.01), lrs=(0.01, 0.1), ts=(10, 100), lr=0.1, gamma=0.01, iterations=50, seeds=(0, 1)
    )
    jobs = s.jobs()
    configs = {(j.lr, j.gamma): j.checkpoints for j in jobs}
    # (0.1, 0.01) is on all three sweeps: one run per seed with the union of the checkpoints
    assert configs == {(0.1, 0.001): (50,), (0.1, 0.01): (10, 50, 100), (0.01, 0.01): (50,)}
    assert len(jobs) == 6
    assert all(j.batch_size == 32 and j.kwargs["variant"] == "two" for j in jobs)


def test_ca_schedule_and_time_average() -> None:
    def schedule(total: int, every: int) -> list[int]:
        pts = [0]
        while (nxt := mt._next_ca(pts[-1], every)) < total:
            pts.append(nxt)
        return pts

    # a few early points, then every e iterations (the official code: every 50), the same for every run
    assert schedule(1000, 100) == [0, 1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, *range(100, 1000, 100)]
    assert schedule(100, 10) == [0, 1, 2, 3, 5, 7, *range(10, 100, 10)]
    assert schedule(1000, 1000)[-1] == 70
    # evenly spaced values: the plain mean; otherwise each value weighs the time it holds
    assert mt._time_average([(0, 1.0), (50, 3.0)], 100) == 2.0
    assert mt._time_average([(0, 1.0), (1, 3.0), (2, 5.0)], 10) == pytest.approx((1 + 3 + 5 * 8) / 10)
    assert mt._time_average([(0, 1.0), (5, 9.0)], 5) == 1.0  # values at or after t are not used


# ------------------------------------------------------------------------------------------ runs
def test_every_run_finishes_with_finite_errors(result: Any) -> None:
    assert len(result.records) == 8  # 4 (α, γ) settings x 2 seeds
    for r in result.records:
        assert r.error is None and r.sizes == (144, 500, 200)  # 600 images, 1/6 held out
        for c in r.checkpoints:
            assert math.isfinite(c.opt) and math.isfinite(c.pop) and math.isfinite(c.ca)
            assert c.gen == pytest.approx(c.pop - c.opt)
            assert sum(c.lambd) == pytest.approx(1.0) and min(c.lambd) >= 0


def test_same_seed_same_run(data_root: Path, result: Any) -> None:
    job = mt.Job(
        "modo", 0.1, 1.0, 0, (60,), ca_every=5, root=str(data_root), kwargs=mt.METHODS["modo"]["kwargs"]
    )
    again = mt.run_job(job).checkpoints[0]
    first = next(r for r in result.records if (r.lr, r.gamma, r.seed) == (0.1, 1.0, 0)).checkpoints[0]
    assert again.opt == first.opt and again.ca == first.ca


def test_larger_gamma_brings_the_update_closer_to_the_mgda_direction(result: Any) -> None:
    # The paper's conflict-avoidance side of the trade-off: with a larger step size γ on λ, MoDo's
    # weights track the min-norm (CA) weights. Measured on this fixture (T = 60, 5 seeds): CA distance
    # 0.27-0.30 at γ = 0.001 and below 0.015 at γ = 1 for every seed; asserted with a 3x margin.
    for seed in (0, 1):
        small = next(r for r in result.records if (r.lr, r.gamma, r.seed) == (0.1, 0.001, seed)).at(60)
        large = next(r for r in result.records if (r.lr, r.gamma, r.seed) == (0.1, 1.0, seed)).at(60)
        assert small is not None and large is not None
        assert large.ca < small.ca / 3


def test_optimisation_error_falls_with_t(result: Any) -> None:
    # Measured on this fixture (5 seeds): R_opt 0.08-0.10 after 5 iterations, 0.044-0.048 after 60 (α = 0.1).
    rows = {r["value"]: r for r in mt.summarise(result) if r["sweep"] == "T"}
    assert rows[60.0]["opt"] < 0.75 * rows[5.0]["opt"]


def test_outputs(result: Any, tmp_path: Path) -> None:
    paths = mt.write_outputs(result, tmp_path / "out").paths
    assert set(paths) == {"results.md", "results.csv", "runs.csv", "contrasts.csv", "tradeoff.png"}
    assert paths["tradeoff.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = paths["results.md"].read_text()
    assert md.split("\n")[2].startswith("**Claim**") and md.split("\n")[4].startswith("**Verdict**")
    for text in ("Sweep over γ", "Sweep over α", "Sweep over T", "CA distance", "|R_gen|", "500 training"):
        assert text in md
    assert "| gamma | 0.001 → 1 |" in md and "| T | 5 → 60 |" in md
    with open(paths["contrasts.csv"]) as fh:
        crows = list(csv.DictReader(fh))
    assert len(crows) == 3 * 5  # one step in each of the three sweeps, five metrics
    with open(paths["results.csv"]) as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["sweep"], float(r["value"])) for r in rows] == [
        ("gamma", 0.001),
        ("gamma", 1.0),
        ("lr", 0.01),
        ("lr", 0.1),
        ("T", 5.0),
        ("T", 60.0),
    ]
    summary = mt.summarise(result)
    for row, s in zip(rows, summary):
        assert int(row["seeds"]) == 2
        assert float(row["ca"]) == pytest.approx(s["ca"], rel=1e-5)
        assert float(row["abs_gen"]) >= 0
    with open(paths["runs.csv"]) as fh:
        runs = list(csv.DictReader(fh))
    assert len(runs) == 10  # 8 runs, the (0.1, 0.01) ones with two checkpoints


def test_cli_quick_on_fixture_data(
    data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--quick", "--data", str(data_root), "--out", str(tmp_path / "q"), "--jobs", "1", "--no-plot"]
    argv += ["--gammas", "1", "--lrs", "0.1", "--ts", "20", "-T", "20", "--seeds", "1"]
    assert mt.main(argv) == 0
    out = capsys.readouterr().out
    assert "Sweep over γ" in out and "| 1 |" in out
    assert (tmp_path / "q" / "results.csv").exists() and not (tmp_path / "q" / "tradeoff.png").exists()


def test_cli_missing_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert mt.main(["--quick", "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "apt-get install dataset-fashion-mnist" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ contrasts
def _record(lr: float, gamma: float, seed: int, points: dict[int, tuple[float, float, float]]) -> Any:
    """A run whose checkpoint t has (R_opt, R_gen, CA) = points[t] (the other fields filler)."""
    cps = [
        mt.Checkpoint(t, o, o + g, g, ca, 0.5, 0.5, (1.0, 1.0, 1.0), (1 / 3, 1 / 3, 1 / 3))
        for t, (o, g, ca) in sorted(points.items())
    ]
    return mt.RunRecord(lr, gamma, seed, cps, 1.0)


def test_contrasts_are_paired_and_verdicts_need_two_errors_moving_apart() -> None:
    settings = mt.Settings(gammas=(0.001, 0.1), lrs=(), ts=(10, 100), lr=0.1, gamma=0.01, iterations=100,
                           seeds=(0, 1, 2))  # fmt: skip
    records = []
    for seed in (0, 1, 2):
        shift = 0.05 * seed  # a large seed effect that the paired differences remove
        # T: R_opt falls by 0.02 and |R_gen| rises by 0.002 in every seed: a trade-off
        records.append(
            _record(0.1, 0.01, seed, {10: (0.1 + shift, 0.001, 1.0), 100: (0.08 + shift, 0.003, 0.5)})
        )
        # γ: only the CA distance moves (falls); R_opt and R_gen move by ± noise
        noise = (-1e-3, 0.0, 1e-3)[seed]
        records.append(_record(0.1, 0.001, seed, {100: (0.08 + shift, 0.003, 0.9)}))
        records.append(_record(0.1, 0.1, seed, {100: (0.08 + shift + noise, 0.003 - noise, 0.1)}))
    result = mt.TradeoffResult(settings, records, 1.0)
    rows = {(r["sweep"], r["metric"]): r for r in mt.contrasts(result)}
    assert rows[("T", "opt")]["diff"] == pytest.approx(-0.02) and rows[("T", "opt")]["separates"]
    assert rows[("T", "opt")]["ci95"] == pytest.approx(0.0, abs=1e-12)  # identical differences
    assert rows[("T", "abs_gen")]["diff"] == pytest.approx(0.002) and rows[("T", "abs_gen")]["separates"]
    assert rows[("gamma", "ca")]["diff"] == pytest.approx(-0.8) and rows[("gamma", "ca")]["separates"]
    assert not rows[("gamma", "opt")]["separates"] and not rows[("gamma", "abs_gen")]["separates"]
    verdict = mt.verdicts(result)
    assert verdict["T"].startswith("supported") and "R_opt" in verdict["T"] and "|R_gen|" in verdict["T"]
    assert verdict["gamma"].startswith("not resolved") and "CA distance falls" in verdict["gamma"]


def test_cache_resumes_without_rerunning(data_root: Path, tmp_path: Path) -> None:
    settings = mt.Settings(gammas=(1.0,), lrs=(), ts=(), iterations=8, seeds=(0, 1), ca_every=4,
                           root=str(data_root))  # fmt: skip
    first = mt.run(settings, cache=tmp_path / "cache")
    assert first.loaded == 0 and len(list((tmp_path / "cache").glob("*.json"))) == 2
    again = mt.run(settings, cache=tmp_path / "cache")
    assert again.loaded == 2
    assert [asdict(r) for r in again.records] == [asdict(r) for r in first.records]
    # a changed job (here: another T) is not served from the cache
    assert mt.run(replace(settings, iterations=6), cache=tmp_path / "cache").loaded == 0
