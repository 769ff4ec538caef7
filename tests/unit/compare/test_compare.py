"""``molearn compare`` on the built-in Multi-Fashion benchmark, end to end on tiny fixture data: report
content, STL cache reuse, config errors, a diverging run reported as failed (exit status 1)."""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import pytest
import torch

from molearn.compare import _run as compare
from molearn.datasets import ENV_CACHE, ENV_FASHION_MNIST
from molearn.models import MultiLeNet

from ..._fashion import write_fake_fashion


@pytest.fixture(autouse=True)
def _data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_fake_fashion(tmp_path / "fashion")
    monkeypatch.setenv(ENV_FASHION_MNIST, str(folder))
    monkeypatch.setenv(ENV_CACHE, str(tmp_path / "cache"))


def _args(tmp_path: Path, *argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    compare.add_arguments(parser)
    args = parser.parse_args(["--quick", "--out", str(tmp_path / "out"), "--no-plot", *argv])
    args.command_line = "molearn compare " + " ".join(argv)
    return args


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_model_shapes() -> None:
    model = MultiLeNet()
    out = model(torch.zeros(3, 1, 36, 36))
    assert [tuple(o.shape) for o in out] == [(3, 10), (3, 10)]
    shared = {id(p) for p in model.shared_parameters()}
    heads = {id(p) for p in model.task_parameters()}
    assert shared and heads and not shared & heads
    assert shared | heads == {id(p) for p in model.parameters()}


def test_end_to_end_and_stl_cache(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # worker processes (spawn): every run in its own process, peak memory measured
    rc = compare.run_cli(_args(tmp_path, "--methods", "mgda,famo", "--seeds", "1", "--jobs", "2"))
    assert rc == 0
    out = tmp_path / "out"
    report = (out / "report.md").read_text()
    for name in (
        "EW",
        "MGDA",
        "FAMO",
        "Δm%",
        "time/step ÷ EW",
        "peak mem ÷ EW",
        "quick schedule**: not the published protocol",
        "best validation Δm%",
        "molearn compare --methods mgda,famo",
        "| torch |",
    ):
        assert name in report
    rows = {r["method"]: r for r in _rows(out / "runs.csv")}
    assert set(rows) == {"EW", "MGDA", "FAMO"}  # EW added as the cost reference
    for r in rows.values():
        assert math.isfinite(float(r["delta_m"])) and r["error"] == ""
        assert math.isfinite(float(r["metric:acc_left"]))
        assert float(r["time_per_step"]) > 0
        assert float(r["peak_memory"]) >= 0
    assert float(rows["EW"]["time_ratio"]) == 1.0
    assert float(rows["EW"]["memory_ratio"]) in (1.0,) or math.isnan(float(rows["EW"]["memory_ratio"]))
    assert (out / "runs" / "mgda-seed0" / "checkpoint.pt").is_file()
    assert (out / "runs" / "ew-seed0" / "steps.csv").is_file()
    cached = sorted((tmp_path / "cache" / "compare-stl").glob("*.json"))
    assert len(cached) == 2  # one per task
    stl_metrics = [json.loads(p.read_text())["history"][-1]["test"] for p in cached]  # per-epoch scores

    # second call, in this process: the STL baselines come from the cache, Δm uses them
    capsys.readouterr()
    rc = compare.run_cli(_args(tmp_path, "--methods", "ew", "--seeds", "1", "--jobs", "0"))
    assert rc == 0
    text = capsys.readouterr().out
    assert "2 STL runs cached, 1 runs to do" in text
    assert "STL" not in text.split("runs to do", 1)[1]  # no STL run was trained again
    new = {r["method"]: r for r in _rows(out / "runs.csv")}
    assert set(new) == {"EW"}
    left = next(m["acc_left"] for m in stl_metrics if "acc_left" in m)
    assert "reused from the cache" in (out / "report.md").read_text()
    assert math.isfinite(float(new["EW"]["delta_m"])) and left >= 0
    assert math.isnan(float(new["EW"]["peak_memory"]))  # in-process on CPU: not measured


def test_nonfinite_run_is_reported_and_others_continue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def hook(spec: compare.RunSpec, losses: torch.Tensor) -> torch.Tensor:
        if spec.method == "mgda":
            return losses * torch.tensor([1.0, float("nan")])
        return losses

    monkeypatch.setattr(compare, "_LOSS_HOOK", hook)
    rc = compare.run_cli(_args(tmp_path, "--methods", "mgda", "--seeds", "1", "--jobs", "0"))
    assert rc == 1  # a failed run makes the exit status non-zero ...
    assert "1 run(s) failed: MGDA seed 0" in capsys.readouterr().err  # ... and is named
    rows = {r["method"]: r for r in _rows(tmp_path / "out" / "runs.csv")}
    assert "step 1 " in rows["MGDA"]["error"] and "objective(s) [1]" in rows["MGDA"]["error"]
    assert math.isnan(float(rows["MGDA"]["delta_m"]))
    assert rows["EW"]["error"] == "" and math.isfinite(float(rows["EW"]["delta_m"]))
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Runs stopped early" in report and "MGDA, seed 0" in report


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ({"methods": ["ew"], "learning_rate": 1}, "'learning_rate'"),
        ({"methods": ["ew", "nosuchmethod"]}, "mgda"),
        ({"benchmark": "cifar"}, "multi_fashion"),
        ({"schedule": {"epochs": 1, "warmup": 3}}, "'warmup'"),
        ({"schedule": "slow"}, "quick"),
        ({"methods": ["rep_mtl"]}, "RepMTL.regularized(losses, features)"),  # needs the user's own loop
    ],
)
def test_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], config: dict, needle: str) -> None:
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(config))
    parser = argparse.ArgumentParser()
    compare.add_arguments(parser)
    args = parser.parse_args(["--config", str(path), "--out", str(tmp_path / "out")])
    assert compare.run_cli(args) == 2
    err = capsys.readouterr().err
    assert "error" in err and needle in err
    assert not (tmp_path / "out").exists()


def test_flag_errors_and_config_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert compare.run_cli(_args(tmp_path, "--methods", "ew,bogus")) == 2
    err = capsys.readouterr().err
    assert "unknown method 'bogus'" in err and "cagrad" in err
    assert compare.run_cli(_args(tmp_path, "--benchmark", "svhn")) == 2
    assert "multi_fashion_mnist" in capsys.readouterr().err

    path = tmp_path / "cfg.json"
    path.write_text(
        json.dumps(
            {
                "methods": {"cagrad": {"c": 0.2}, "mgda": {}},
                "seeds": [3, 4],
                "benchmark": "multi_fashion",
                "schedule": {"base": "quick", "epochs": 2},
            }
        )
    )
    parser = argparse.ArgumentParser()
    compare.add_arguments(parser)
    cfg, opts = compare.resolve_config(parser.parse_args(["--config", str(path), "--seeds", "7,8"]))
    assert list(cfg.methods) == ["ew", "cagrad", "mgda"] and cfg.methods["cagrad"] == {"c": 0.2}
    assert cfg.seeds == [7, 8]  # the flag wins over the config
    assert cfg.schedule.epochs == 2 and cfg.schedule.train_size == 128  # the quick schedule, changed
    assert opts == {"jobs": 2, "threads": None, "out": "out/compare"}
    cfg, _ = compare.resolve_config(parser.parse_args(["--seeds", "2"]))
    assert cfg.seeds == [0, 1] and cfg.methods["cagrad"] == {"c": 0.4}  # the benchmark's method_kwargs
    assert cfg.schedule_name == "default" and cfg.schedule.train_size == 24_000
