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


def test_run_exits_with_the_status_of_main(monkeypatch) -> None:
    """``molearn.cli.run`` (the console script) exits with what ``main`` returned; with no process group it
    leaves through ``sys.exit`` (the interpreter's ordinary teardown)."""
    import pytest

    for code in (0, 2):
        monkeypatch.setattr(cli, "main", lambda code=code: code)
        with pytest.raises(SystemExit) as exit_info:
            cli.run()
        assert exit_info.value.code == code
