"""Everything is checked before the first run: each bad input exits with status 2 and one line naming it,
and nothing is trained (no runs folder). The checks themselves (types, signatures, did-you-mean)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from molearn import cli
from molearn.compare import ConfigError, check_method, check_methods, load_config

REF = "tests.unit.compare._tiny:bench"


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOLEARN_CACHE", str(tmp_path / "cache"))


def _run(tmp_path: Path, capsys: pytest.CaptureFixture[str], *argv: str, config: object = None) -> str:
    args = ["compare", "--benchmark", REF, "--out", str(tmp_path / "out"), "--jobs", "0", "--no-plot", *argv]
    if config is not None:
        suffix = ".yaml" if isinstance(config, str) else ".json"
        path = tmp_path / f"cfg{suffix}"
        path.write_text(config if isinstance(config, str) else json.dumps(config))
        args += ["--config", str(path)]
    capsys.readouterr()
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("molearn compare: error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "out" / "runs").exists()  # nothing was trained
    return err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--epochs", "0"], "--epochs must be a positive integer, got 0"),
        (["--epochs", "1.5"], "--epochs must be a positive integer, got '1.5'"),
        (["--batch-size", "-3"], "--batch-size must be a positive integer"),
        (["--lr", "fast"], "--lr must be a number, got 'fast'"),
        (["--lr", "0"], "--lr must be a positive number"),
        (["--methods", "mgda,pcgard"], "unknown method 'pcgard' (did you mean 'pcgrad'?)"),
        (["--methods", "nash-mt"], "(did you mean 'nashmtl'?)"),
        (["--seeds", "0,0"], "seeds must be distinct"),
        (["--seeds", "x"], "seeds must be a count"),
        (["--schedule", "ful"], "has no schedule 'ful'"),
        (["--full"], "has no schedule 'full'; it has: default, quick"),
        (["--device", "cuda:7"], "cuda:7"),
        (["--device", "tpu"], "is not a torch device"),
        (["--jobs", "-1"], "--jobs must be an integer >= 0"),
        (["--threads", "0"], "--threads must be a positive integer"),
    ],
)
def test_bad_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    assert needle in _run(tmp_path, capsys, *argv)


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ({"epochs": 3}, "unknown key 'epochs'"),
        ({"method": ["ew"]}, "unknown key 'method' (did you mean 'methods'?)"),
        ({"schedule": {"epochs": 1.5}}, "schedule.epochs must be a positive integer, got 1.5"),
        ({"schedule": {"epochs": 2.0}}, "schedule.epochs must be a positive integer, got 2.0"),
        ({"schedule": {"lr": "x"}}, "schedule.lr must be a number, got 'x'"),
        ({"schedule": {"lr": -1}}, "lr must be a positive number"),
        ({"schedule": {"epoch": 2}}, "unknown key 'epoch' (did you mean 'epochs'?)"),
        ({"schedule": {"optimizer": "adma"}}, "unknown optimizer 'adma' (did you mean 'adam'?)"),
        ({"schedule": {"scheduler": "multistep", "scheduler_kwargs": {"milestone": [1]}}}, "milestone"),
        ({"schedule": {"optimizer": "adam", "momentum": 0.9}}, "momentum applies to sgd and rmsprop"),
        ({"methods": {"cagrad": {"c": "x"}}}, "methods.cagrad.c must be float, got 'x' (str)"),
        ({"methods": {"cagrad": {"cc": 0.4}}}, "CAGrad has no argument 'cc' (did you mean 'c'?)"),
        (
            {"methods": {"mgda": {"solver": "exakt"}}},
            "methods.mgda.solver must be Literal['exact', 'frank_wolfe']",
        ),
        ({"methods": {"cagrad": {"c": -1.0}}}, "CAGrad(c=-1.0) fails"),
        ({"methods": ["ew", 3]}, "a method is a name"),
        ({"methods": {"famo": 0.1}}, "must be a mapping"),
        ({"seeds": [0, "a"]}, "seeds must be a count"),
        ({"seeds": True}, "seeds must be a count"),
        ({"device": 3}, "device must be a device name"),
        ("methods: [ew\n", "not valid YAML"),
        ("- ew\n", "a config is a mapping"),
    ],
)
def test_bad_configs(tmp_path: Path, capsys: pytest.CaptureFixture[str], config: object, needle: str) -> None:
    assert needle in _run(tmp_path, capsys, config=config)


def test_benchmark_from_the_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"benchmark": "cifar", "seeds": 1}))
    capsys.readouterr()
    assert cli.main(["compare", "--config", str(path), "--out", str(tmp_path / "o"), "--no-plot"]) == 2
    assert "unknown benchmark 'cifar'; built-in: multi_fashion, multi_mnist" in capsys.readouterr().err


def test_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert cli.main(["compare", "--config", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "cannot read the config" in capsys.readouterr().err


def test_method_checks_accept_what_the_signature_allows() -> None:
    assert check_method("CAGrad", {"c": 0.4}) == ("cagrad", {"c": 0.4})
    assert check_method("cagrad", {"c": "1e-1"})[1] == {"c": 0.1}  # YAML reads 1e-1 as text
    assert check_method("cagrad", {"scale": "K"})[1] == {"scale": "K"}  # float | Literal['K']
    assert check_method("famo", {"min_losses": [0.0, 0.0]})[1] == {"min_losses": [0.0, 0.0]}
    with pytest.raises(ConfigError, match="min_losses must be"):
        check_method("famo", {"min_losses": ["a"]})
    with pytest.raises(ConfigError, match=r"ew.reduction must be Literal\['sum', 'mean'\]"):
        check_method("ew", {"reduction": "max"})
    # benchmark defaults under the given arguments, in order, names normalised
    out = check_methods(
        ["Nash-MTL", {"cagrad": {"c": 0.2}}], {"cagrad": {"c": 0.4}, "sdmgrad": {"lamda": 0.5}}
    )
    assert out == {"nashmtl": {}, "cagrad": {"c": 0.2}}
    with pytest.raises(ConfigError, match="given twice"):
        check_methods("mgda,MGDA")


def test_yaml_and_json_configs_read_the_same(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    y = tmp_path / "c.yaml"
    y.write_text(
        "benchmark: multi_mnist\nmethods:\n  cagrad: {c: 0.4}\nseeds: 2\nschedule: {base: quick, lr: 1e-3}\n"
    )
    j = tmp_path / "c.json"
    j.write_text(json.dumps(load_config(y)))
    assert load_config(y) == load_config(j)
    assert load_config(y)["schedule"]["lr"] == "1e-3"  # YAML text, accepted as a number by the schedule check
