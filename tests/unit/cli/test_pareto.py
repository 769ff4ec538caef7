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
    assert "pareto [" in out.err and "1/1" in out.err and "dtlz2 pbi" in out.err  # progress bar on stderr
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


def test_progress_bar_lines() -> None:
    import io

    from molearn._progress import Progress

    buf = io.StringIO()
    bar = Progress(4, "x", stream=buf, width=8)
    bar.advance("a")
    bar.advance("b")
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("x [##......] 1/4") and lines[0].endswith("a")
    assert lines[1].startswith("x [####....] 2/4") and "left" in lines[1]
    with pytest.raises(ValueError, match="total"):
        Progress(-1)


def test_dataset_option_dispatches_to_the_real_data_front(monkeypatch: pytest.MonkeyPatch) -> None:
    from molearn.bench import pareto_data

    seen: list[argparse.Namespace] = []
    monkeypatch.setattr(pareto_data, "run_cli", lambda ns: seen.append(ns) or 0)
    parser = argparse.ArgumentParser()
    pareto_cmd.add_arguments(parser)
    args = parser.parse_args(["--dataset", "multi-fashion", "--cond-epochs", "2", "--quick", "--out", "x"])
    assert pareto_cmd.run_cli(args) == 0
    (ns,) = seen
    assert ns.dataset == "multi-fashion" and ns.cond_epochs == 2 and ns.quick and ns.out == "x"
    assert ns.methods == ",".join(pareto_data.DEFAULT_METHODS) and ns.prefs == 5  # the data front's defaults
