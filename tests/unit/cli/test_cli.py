"""The ``molearn`` command line (tiny runs into a temporary folder)."""

from __future__ import annotations

import csv

import pytest

from molearn import cli


def test_toy_writes_the_files(tmp_path, capsys) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "toy"
    rc = cli.main(["toy", "--out", str(out), "--methods", "ew,famo", "--iterations", "15", "--jobs", "1"])
    assert rc == 0
    assert {p.name for p in out.iterdir()} == {"endpoints.md", "endpoints.csv", "trajectories.png"}
    captured = capsys.readouterr()
    assert "| EW | (-8.5, 7.5) |" in captured.out  # the table is printed
    assert "[ 10/10]" in captured.err and "wrote" in captured.err  # progress lines on stderr
    with open(out / "endpoints.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["method"] for r in rows] == ["EW"] * 5 + ["FAMO"] * 5
    assert (out / "endpoints.md").read_text().startswith("# CAGrad 2-D toy, variant `nash`")


def test_toy_in_worker_processes_without_plot(tmp_path, capsys) -> None:
    out = tmp_path / "toy"
    argv = ["toy", "--out", str(out), "--methods", "ew", "--variant", "cagrad", "--time-scale", "10000"]
    rc = cli.main([*argv, "--jobs", "2"])
    assert rc == 0
    captured = capsys.readouterr()
    assert "2 process(es)" in captured.err and "10 Adam steps" in captured.err  # 100k steps / 10000
    with open(out / "endpoints.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["start"]) for r in rows] == [0, 1, 2]
    assert (out / "trajectories.png").exists()


def test_toy_no_plot_and_method_options(tmp_path, capsys) -> None:
    out = tmp_path / "toy"
    argv = ["toy", "--out", str(out), "--methods", "ew", "--iterations", "3", "--jobs", "1", "--no-plot"]
    assert cli.main([*argv, "--set", "ew.reduction='mean'"]) == 0
    assert not (out / "trajectories.png").exists()
    assert "EW {'reduction': 'mean'}" in (out / "endpoints.md").read_text()
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
    rc = cli.main(["toy", "--out", str(tmp_path / "x"), "--iterations", "2", "--jobs", "1", *argv])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_time_scale_must_be_positive(capsys) -> None:
    with pytest.raises(SystemExit):
        cli.main(["toy", "--time-scale", "0"])
    assert "expected a number > 0 or 'auto'" in capsys.readouterr().err


def test_no_command_prints_help(capsys) -> None:
    assert cli.main([]) == 2
    err = capsys.readouterr().err
    assert "toy" in err and "usage: molearn" in err


def test_every_command_has_a_subparser() -> None:
    parser = cli.build_parser()
    for cmd in cli.COMMANDS:
        args = parser.parse_args([cmd.name])
        assert args._run is cmd.run
