"""Real-data Pareto front experiment on tiny fixture data in the real Fashion-MNIST format: fronts, the
shared reference point, outputs, bad input."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from experiments import common
from molearn.datasets import ENV_CACHE, ENV_FASHION_MNIST
from molearn.pareto import Hypervolume

from .._fashion import write_fake_fashion

pareto_data = common.load("pareto-data")
TINY = pareto_data.Settings(n_train=64, n_test=32, epochs=1, cond_epochs=2, batch_size=32, eval_batch=32)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # tiny LeNets: intra-op threads only add contention on a loaded machine
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_fake_fashion(tmp_path / "fashion")
    monkeypatch.setenv(ENV_FASHION_MNIST, str(folder))
    monkeypatch.setenv(ENV_CACHE, str(tmp_path / "cache"))


def test_run_fronts_and_reference(tmp_path: Path) -> None:
    res = pareto_data.run(
        "multi-fashion", ["ls", "epo"], cond_methods=["ls"], settings=TINY, n_prefs=3, n_eval_prefs=11, jobs=1
    )
    assert res.dataset == "multi_fashion"
    labels = [f.label for f in res.fronts]
    assert labels == ["sweep-ls", "sweep-epo", "cond-film-ls", "cond-input-ls"]
    for f in res.fronts:
        n = 3 if f.kind == "sweep" else 11
        assert f.losses.shape == (n, 2) and f.accs.shape == (n, 2) and f.prefs.shape == (n, 2)
        assert bool(torch.isfinite(f.losses).all()) and bool(((f.accs >= 0) & (f.accs <= 1)).all())
        assert bool((f.prefs[1:, 0] > f.prefs[:-1, 0]).all())  # sorted by p_left
        assert f.seconds > 0
    allpts = torch.cat([f.losses for f in res.fronts])
    assert torch.allclose(res.ref, 1.1 * allpts.max(0).values)  # one data-derived reference for all
    for f in res.fronts:
        assert f.hv == pytest.approx(Hypervolume(res.ref).do(f.losses)) and f.hv > 0
    best = max(f.hv for f in res.fronts if f.kind == "sweep")
    assert max(f.hv_vs_best_sweep for f in res.fronts if f.kind == "sweep") == pytest.approx(1.0)
    assert res.fronts[2].hv_vs_best_sweep == pytest.approx(res.fronts[2].hv / best)
    # the conditioned model really depends on the preference
    cond = res.fronts[2].losses
    assert float((cond[0] - cond[-1]).abs().max()) > 0

    paths = pareto_data.write_outputs(res, tmp_path / "out", plot=True).paths.values()
    names = {p.name for p in paths}
    assert names == {"results.md", "results.csv", "points.csv", "front.png"}
    assert (tmp_path / "out" / "front.png").stat().st_size > 1000
    with (tmp_path / "out" / "points.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 + 3 + 11 + 11
    assert {r["front"] for r in rows} == set(labels)
    with (tmp_path / "out" / "results.csv").open(newline="") as fh:
        table = {r["front"]: r for r in csv.DictReader(fh)}
    assert math.isclose(float(table["sweep-epo"]["hv"]), res.fronts[1].hv, rel_tol=1e-9)
    md = (tmp_path / "out" / "results.md").read_text()
    assert "reference point" in md and "cond-film-ls" in md


def _cli(tmp_path: Path, jobs: int) -> int:
    return pareto_data.main(
        ["--quick", "--methods", "tchebycheff", "--conditioning", "film", "--cond-methods", "ls",
         "--prefs", "2", "--eval-prefs", "3", "--n-train", "32", "--jobs", str(jobs), "--no-plot",
         "--out", str(tmp_path / "o")]
    )  # fmt: skip


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(tmp_path, 1) == 0
    out = capsys.readouterr()
    assert "sweep-tchebycheff" in out.out and "cond-film-ls" in out.out
    assert "[3/3]" in out.err  # progress lines
    assert not (tmp_path / "o" / "front.png").exists()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dataset": "cifar"}, "unknown dataset"),
        ({"methods": ["famo"]}, "does not take a preference"),
        ({"methods": ["nosuch"]}, "unknown method"),
        ({"conditioning": ["hyper"]}, "unknown conditioning"),
        ({"n_prefs": 1}, "at least 2"),
        ({"settings": "huge"}, "unknown settings"),
        ({"methods": [], "conditioning": []}, "nothing to run"),
    ],
)
def test_bad_input(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        pareto_data.run(**{"settings": TINY, "jobs": 1, **kwargs})


@pytest.mark.slow
def test_cli_process_pool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # two spawned workers (each imports torch: slow on a loaded machine)
    assert _cli(tmp_path, 2) == 0
    out = capsys.readouterr()
    assert "sweep-tchebycheff" in out.out and "cond-film-ls" in out.out and "[3/3]" in out.err
    rows = list(csv.DictReader((tmp_path / "o" / "points.csv").open(newline="")))
    assert len(rows) == 2 + 3
