"""The shared skeleton of the experiment scripts: options, parallel runs, outputs, exit statuses."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import pytest

from experiments import common

NAMES = sorted(p.parent.name for p in Path(common.__file__).parent.glob("*/run.py"))


def test_every_experiment_has_a_script() -> None:
    expected = ["toy", "stochastic-toy", "modo-tradeoff", "objective-sampling", "llm-joint", "fed-alora",
                "open-fl", "mimo", "pareto-data", "merging", "alignment"]  # fmt: skip
    assert sorted(expected) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_the_shared_options_mean_the_same_everywhere(name: str) -> None:
    parser = common.load(name).build_parser()
    by = {opt: a for a in parser._actions for opt in a.option_strings}
    assert all(a.help for a in parser._actions), [a.option_strings for a in parser._actions if not a.help]
    assert by["--out"].default == f"out/{name}" and "--no-plot" in by and "--quick" in by
    args = parser.parse_args(["--seeds", "3"] if "--seeds" in by else [])
    if "--seeds" in by:
        assert args.seeds == [0, 1, 2] and parser.parse_args(["--seeds", "0,3,7"]).seeds == [0, 3, 7]
    if "--jobs" in by:
        assert args.jobs >= 1
    if "--methods" in by:
        assert args.methods is None  # the script's default


def test_run_jobs_in_this_process_and_in_a_pool() -> None:
    log = io.StringIO()
    out = common.run_jobs(math.sqrt, [4.0, 9.0, 16.0], describe=lambda r: f"got {r:g}", log=log)
    assert out == [2.0, 3.0, 4.0]
    assert log.getvalue().splitlines() == ["[1/3] got 2", "[2/3] got 3", "[3/3] got 4"]
    log = io.StringIO()
    out = common.run_jobs(math.sqrt, [4.0, 9.0, 16.0], jobs=2, cost=lambda x: x, log=log)
    assert out == [2.0, 3.0, 4.0]  # in the order of the items, whatever the order of completion
    assert log.getvalue().splitlines()[-1] == "[3/3]"
    assert common.run_jobs(math.sqrt, [1.0], jobs=4) == [1.0]


def test_main_turns_bad_input_into_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    def build() -> object:
        p = common.parser("demo", "A demo.", seeds="2")
        p.add_argument("--x", type=int, default=0, help="x")
        return p

    def run(args: object) -> int:
        raise ValueError("no such thing")

    assert common.main("demo", build, run, ["--seeds", "a"]) == 2
    assert "error: argument --seeds" in capsys.readouterr().err
    assert common.main("demo", build, run, []) == 2
    assert capsys.readouterr().err == "demo: no such thing\n"
    assert common.main("demo", build, run, ["--help"]) == 0
    assert "--out OUT" in capsys.readouterr().out


def test_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = common.Outputs(tmp_path / "o")
    files.text("results.md", "# table\n")
    files.csv("a.csv", [{"k": "x", "v": 1.5}, {"k": "y", "v": 2}])
    files.csv("b.csv", [["x", 1]], ["k", "v"])
    with open(files.paths["a.csv"]) as fh:
        assert list(csv.DictReader(fh)) == [{"k": "x", "v": "1.5"}, {"k": "y", "v": "2"}]
    assert files.paths["b.csv"].read_text().splitlines() == ["k,v", "x,1"]
    assert files.done("demo", "# table") == 0
    out = capsys.readouterr()
    assert out.out == "# table\n" and out.err.startswith("demo: wrote ") and "b.csv" in out.err


def test_option_types() -> None:
    assert common.floats("0.1, 1") == (0.1, 1.0) and common.ints("4,5") == (4, 5)
    bad_inputs = (("a", common.floats), ("1.5", common.ints), ("", common.floats), ("0", common.positive_int))
    for bad, fn in bad_inputs:
        with pytest.raises(Exception, match="expected"):
            fn(bad)
