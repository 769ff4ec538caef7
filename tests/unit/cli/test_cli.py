"""The ``molearn`` command line (tiny runs into a temporary folder)."""

from __future__ import annotations

from molearn import cli


def test_no_command_prints_help(capsys) -> None:
    assert cli.main([]) == 2
    err = capsys.readouterr().err
    assert "compare" in err and "usage: molearn" in err


def test_every_command_has_a_subparser() -> None:
    parser = cli.build_parser()
    for cmd in cli.COMMANDS:
        args = parser.parse_args([cmd.name])
        assert args._run is cmd.run
