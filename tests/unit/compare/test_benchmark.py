"""The benchmark protocol end to end: a user's own Benchmark through ``molearn compare --benchmark
module:object`` (in this process and as a subprocess), given baselines with a plateau LR scheduler, one data
set per task, and the one-line errors of a broken benchmark."""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from molearn import cli
from molearn.compare import Benchmark, BenchmarkError, Metric, load_benchmark

from . import _tiny

ROOT = Path(__file__).resolve().parents[3]
REF = "tests.unit.compare._tiny"


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOLEARN_CACHE", str(tmp_path / "cache"))


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as fh:
        return {(r["method"], r["seed"]): r for r in csv.DictReader(fh)}  # type: ignore[misc]


def _compare(tmp_path: Path, *argv: str) -> int:
    return cli.main(["compare", "--out", str(tmp_path / "out"), "--jobs", "0", "--no-plot", *argv])


def test_own_benchmark_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _compare(tmp_path, "--benchmark", f"{REF}:bench", "--seeds", "2") == 0
    out = tmp_path / "out"
    rows = _rows(out / "runs.csv")
    assert {m for m, _ in rows} == {"EW", "MGDA"}  # the benchmark's own default methods
    for r in rows.values():
        assert r["error"] == ""
        assert math.isfinite(float(r["delta_m"])) and math.isfinite(float(r["last_delta_m"]))
        assert 1 <= int(r["epoch"]) <= int(r["epochs"]) == 4
        assert float(r["metric:mae_a"]) > 0 and float(r["last:mae_b"]) > 0
    report = (out / "report.md").read_text()
    assert "# molearn compare: tiny" in report
    assert "mae_a (a, ↓)" in report  # the metric's direction is stated
    assert "best validation Δm%" in report
    assert len(list((tmp_path / "cache" / "compare-stl").glob("*.json"))) == 4  # 2 tasks × 2 seeds
    saved = json.loads((out / "config.json").read_text())
    assert saved["benchmark"] == f"{REF}:bench" and saved["methods"] == {"ew": {}, "mgda": {}}
    text = capsys.readouterr().out
    assert "| rank | method |" in text and "report:" in text


def test_factory_of_no_arguments_is_accepted() -> None:
    assert load_benchmark(f"{REF}:make_bench").name == "tiny-factory"


def test_given_baselines_and_plateau_scheduler(tmp_path: Path) -> None:
    assert _compare(tmp_path, "--benchmark", f"{REF}:plateau", "--seeds", "1", "--methods", "ew") == 0
    report = (tmp_path / "out" / "report.md").read_text()
    assert "given single-task values mae_a 1, mae_b 1" in report
    assert "ReduceLROnPlateau(factor=0.5, patience=0)" in report
    assert not (tmp_path / "cache" / "compare-stl").exists()  # no single-task runs with given baselines
    with open(tmp_path / "out" / "runs" / "ew-seed0" / "epochs.csv", newline="") as fh:
        epochs = list(csv.DictReader(fh))
    assert len(epochs) == 4 and all("val_loss" in e for e in epochs)
    lrs = [float(e["lr"]) for e in epochs]
    assert lrs[0] == 1e-2 and all(b <= a for a, b in itertools.pairwise(lrs))


def test_one_data_set_per_task(tmp_path: Path) -> None:
    assert _compare(tmp_path, "--benchmark", f"{REF}:multi_input", "--seeds", "1", "--methods", "pcgrad") == 0
    rows = _rows(tmp_path / "out" / "runs.csv")
    assert set(rows) == {("EW", "0"), ("PCGrad", "0")}
    assert all(r["error"] == "" and math.isfinite(float(r["delta_m"])) for r in rows.values())


def test_subprocess_with_the_module_path(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    proc = subprocess.run(
        [sys.executable, "-m", "molearn", "compare", "--benchmark", f"{REF}:bench", "--quick", "--seeds", "1",
         "--jobs", "0", "--no-plot", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "report:" in proc.stdout and (tmp_path / "out" / "report.md").is_file()


@pytest.mark.parametrize(
    ("ref", "needle"),
    [
        ("no_such_module_xyz:bench", "cannot import module 'no_such_module_xyz'"),
        (f"{REF}:bnech", "has no attribute 'bnech' (did you mean 'bench'?)"),
        (f"{REF}:not_a_benchmark", "is a int, not a molearn.compare.Benchmark"),
        (f"{REF}", "unknown benchmark"),
        ("multi_fashon", "(did you mean 'multi_fashion'?)"),
        (f"{REF}:no_shared", "has no shared_parameters() method"),
        (f"{REF}:three_losses", "loss_fn returned (3,) losses; the benchmark has 2 tasks"),
        (f"{REF}:bad_metric", "missing ['mae_b'], undeclared ['mae_c']"),
    ],
)
def test_broken_benchmarks_exit_2_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ref: str, needle: str
) -> None:
    assert _compare(tmp_path, "--benchmark", ref, "--seeds", "1") == 2
    err = capsys.readouterr().err
    assert needle in err, err
    assert err.count("\n") == 1 and err.startswith("molearn compare: error: ")
    assert not (tmp_path / "out" / "runs").exists()


def test_validate_names_the_problem() -> None:
    ok = _tiny.bench
    with pytest.raises(BenchmarkError, match="names task 'c'"):
        Benchmark(**{**_fields(ok), "metrics": [Metric("mae_a", "c")]}).validate()
    with pytest.raises(BenchmarkError, match="exactly one of score_fn"):
        Benchmark(**{**_fields(ok), "meter": lambda: None}).validate()
    with pytest.raises(BenchmarkError, match=r"task\(s\) \['b'\] have no metric"):
        Benchmark(**{**_fields(ok), "metrics": [Metric("mae_a", "a", False)]}).validate()
    with pytest.raises(BenchmarkError, match="baselines lack"):
        Benchmark(**{**_fields(ok), "baselines": {"mae_a": 1.0}}).validate()
    with pytest.raises(BenchmarkError, match="epochs must be a positive integer"):
        Benchmark(**{**_fields(ok), "schedule": _tiny.Schedule(epochs=0)}).validate()


def _fields(b: Benchmark) -> dict[str, object]:
    import dataclasses

    return {f.name: getattr(b, f.name) for f in dataclasses.fields(b) if f.init}


def test_compare_from_python(tmp_path: Path) -> None:
    from molearn.compare import ConfigError, compare

    result = compare(
        _tiny.bench, methods="famo", seeds=[3], schedule="quick", out=tmp_path / "py", plot=False
    )
    assert result.report == tmp_path / "py" / "report.md" and result.report.is_file()
    assert [r.method for r in result.records] == ["EW", "FAMO"] and not result.failed
    assert set(result.baselines) == {"mae_a", "mae_b"}
    with pytest.raises(ConfigError, match="did you mean 'famo'"):
        compare(_tiny.bench, methods="fam", out=tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_options_have_help_and_list_works(capsys: pytest.CaptureFixture[str]) -> None:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["compare"]  # type: ignore[union-attr]
    for action in sub._actions:
        assert action.help, f"{action.option_strings} has no help text"
    assert cli.main(["compare", "--list"]) == 0
    out = capsys.readouterr().out
    assert "multi_fashion" in out and "nashmtl" in out


def test_same_seed_same_numbers(tmp_path: Path) -> None:
    """A run is a function of its seed: the same seed gives the same metrics."""
    from molearn.compare import compare

    a = compare(_tiny.bench, methods="ew", seeds=1, schedule="quick", out=tmp_path / "a", plot=False)
    b = compare(_tiny.bench, methods="ew", seeds=1, schedule="quick", out=tmp_path / "b", plot=False)
    assert a.records[0].metrics == b.records[0].metrics
    assert a.records[0].last_metrics == b.records[0].last_metrics
