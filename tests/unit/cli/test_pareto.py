"""``molearn pareto``: tiny sweeps, the NSGA-II comparison and the output files."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import pytest

from molearn.cli import _pareto as pareto_cmd


def _read(path: Path) -> list[dict[str, str]]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_run_and_outputs(tmp_path: Path) -> None:
    pytest.importorskip("pymoo")
    res = pareto_cmd.run(["zdt1"], ["tchebycheff", "ls"], 10, steps=150, lr=0.05, nsga2=True)
    assert [r.method for r in res.rows] == ["tchebycheff", "ls", "nsga2"]
    tch, _, ns = res.rows
    assert tch.evals == ns.evals == 10 * 151  # same budget for NSGA-II (pop 10, 151 generations)
    assert tch.hv_ratio > 0.9 and tch.igd < 0.05  # measured 0.93 / 0.034
    assert ns.vs_nsga2 == pytest.approx(1.0)
    assert tch.vs_nsga2 == pytest.approx(tch.hv / ns.hv)
    assert tch.vs_nsga2 > 1.0  # gradients beat NSGA-II at ~1.5k evaluations on 30 variables
    paths = pareto_cmd.write_outputs(res, tmp_path, plot=True)
    assert {p.name for p in paths} == {"results.md", "results.csv", "points.csv", "front.png"}
    assert (tmp_path / "front.png").stat().st_size > 5000
    rows = list(_read(tmp_path / "results.csv"))
    assert [r["method"] for r in rows] == ["tchebycheff", "ls", "nsga2"]
    assert float(rows[0]["hv_ratio"]) == pytest.approx(tch.hv_ratio)
    pts = list(_read(tmp_path / "points.csv"))
    assert len([p for p in pts if p["method"] == "tchebycheff"]) == 10
    md = (tmp_path / "results.md").read_text()
    assert "| zdt1 | tchebycheff | 10 |" in md and "hv_ratio" in md


def test_cli_three_objectives(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    pareto_cmd.add_arguments(parser)
    args = parser.parse_args(
        [
            "--problem",
            "dtlz2",
            "--methods",
            "pbi",
            "--prefs",
            "15",
            "--steps",
            "100",
            "--lr",
            "0.05",
            "--no-nsga2",
            "--no-plot",
            "--out",
            str(tmp_path),
        ]
    )
    assert pareto_cmd.run_cli(args) == 0
    out = capsys.readouterr()
    assert "pareto [1/1] dtlz2 pbi seed 0" in out.err  # off a terminal: one progress line per item
    assert "| dtlz2 | pbi | 15 |" in out.out
    assert not (tmp_path / "front.png").exists()
    row = _read(tmp_path / "results.csv")[0]
    assert row["vs_nsga2"] == "nan" and float(row["hv_ratio"]) > 0.6  # 15 rays: at most ~0.8
    pts = list(_read(tmp_path / "points.csv"))
    assert len(pts) == 15 and set(pts[0]) == {"problem", "method", "f1", "f2", "f3"}


def test_psl_rows_share_the_sweep_budget_and_get_nsga2() -> None:
    pytest.importorskip("pymoo")
    res = pareto_cmd.run(["zdt1"], ["tchebycheff", "psl-tchebycheff"], 10, steps=150, lr=0.05, nsga2=True)
    assert [r.method for r in res.rows] == ["tchebycheff", "psl-tchebycheff", "nsga2"]
    sweep, psl, ns = res.rows
    assert psl.F.shape == (10, 2)
    assert psl.evals == sweep.evals == ns.evals == 10 * 151  # 150 PSL steps x 10 prefs + 10 evaluations
    assert psl.vs_nsga2 == pytest.approx(psl.hv / ns.hv)
    assert psl.hv_ratio > 0.5
    other = pareto_cmd.run(["zdt1"], ["psl-tchebycheff"], 10, steps=100, psl_steps=50, nsga2=True)
    assert [r.method for r in other.rows] == ["psl-tchebycheff", "nsga2@510"]
    assert other.rows[0].evals == other.rows[1].evals == 510  # NSGA-II: population 10, 51 generations


def test_progress_bar_is_tqdm_and_silent_off_a_terminal() -> None:
    from molearn._progress import progress_bar

    bar = progress_bar(3, "x")
    assert type(bar).__module__.startswith("tqdm")
    assert bar.disable  # pytest's stderr is not a terminal: per-item lines instead
    bar.close()


def test_seeds_and_method_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    pareto_cmd.add_arguments(parser)
    base = [
        "--problem",
        "zdt1",
        "--prefs",
        "4",
        "--steps",
        "20",
        "--no-nsga2",
        "--no-plot",
        "--out",
        str(tmp_path),
    ]
    args = parser.parse_args([*base, "--methods", "ls", "--seeds", "2"])
    assert pareto_cmd.run_cli(args) == 0
    rows = _read(tmp_path / "results.csv")
    assert [(r["method"], r["seed"]) for r in rows] == [("ls", "0"), ("ls", "1")]
    assert "seeds 0, 1" in (tmp_path / "results.md").read_text()
    capsys.readouterr()
    for argv, needle in (
        (["--methods", "tchebychef"], "unknown method 'tchebychef' (did you mean 'tchebycheff'?)"),
        (["--methods", "mgda"], "cannot run a preference sweep"),
        (["--problem", "zdt9"], "unknown problem 'zdt9'"),
        (["--seeds", "0,0"], "--seeds"),
        (["--prefs", "1"], "--prefs must be a positive integer >= 2"),
        (["--lr", "0"], "--lr must be a positive number"),
    ):
        args = parser.parse_args([*base, *argv])
        assert pareto_cmd.run_cli(args) == 2
        err = capsys.readouterr().err
        assert needle in err and err.startswith("molearn pareto: error: "), err


def test_defaults_follow_the_conventions() -> None:
    parser = argparse.ArgumentParser()
    pareto_cmd.add_arguments(parser)
    args = parser.parse_args([])
    assert args.out == "out/pareto" and args.seeds == "1"
    assert "--dataset" not in parser.format_help()  # real-data fronts are an experiment now
    for action in parser._actions:
        assert action.help, f"{action.option_strings} has no help text"
