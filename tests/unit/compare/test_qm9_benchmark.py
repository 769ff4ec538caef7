"""The built-in ``qm9`` benchmark on fixture files in qm9pack's format: registration and schedules, the
losses and metrics against hand computations, and ``molearn compare --benchmark qm9 --quick`` end to end."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import pytest
import torch

from molearn.compare import _benchmark as benchmark_module
from molearn.compare import _run as compare
from molearn.compare import builtin_benchmarks, load_benchmark
from molearn.compare._qm9 import MEV_TARGETS, NASH_MTL_STL, qm9_benchmark
from molearn.datasets import ENV_CACHE, ENV_QM9_DIR, QM9_TARGETS
from molearn.datasets import _qm9 as mq

from ..._qm9 import write_qm9_fixture


@pytest.fixture(autouse=True)
def _data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_QM9_DIR, str(write_qm9_fixture(tmp_path / "qm9")))
    monkeypatch.setenv(ENV_CACHE, str(tmp_path / "cache"))
    monkeypatch.setattr(mq, "_LOADED", {})
    monkeypatch.setattr(benchmark_module, "_BUILTIN_CACHE", {})  # no data built in another test


def _args(out: Path, *argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    compare.add_arguments(parser)
    args = parser.parse_args(
        ["--benchmark", "qm9", "--quick", "--jobs", "0", "--no-plot", "--out", str(out), *argv]
    )
    args.command_line = "molearn compare --benchmark qm9 --quick"
    return args


def test_registered_with_the_published_schedule() -> None:
    assert "qm9" in builtin_benchmarks()
    bm = load_benchmark("qm9")
    assert tuple(bm.tasks) == QM9_TARGETS
    full = bm.named_schedules()["full"]
    assert (full.epochs, full.batch_size, full.optimizer, full.lr) == (300, 120, "adam", 1e-3)
    assert full.scheduler == "plateau"
    assert dict(full.scheduler_kwargs) == {
        "factor": 0.7, "patience": 5, "min_lr": 1e-5, "monitor": "delta_m_published"
    }  # fmt: skip
    assert full.train_size is None and full.eval_size is None
    assert bm.schedule.batch_size == 120 and bm.schedule.lr == 1e-3
    weights = {m.name: m.weight for m in bm.metrics}
    assert weights.pop("delta_m_published") == 0 and set(weights.values()) == {1.0}
    assert not any(m.higher_is_better for m in bm.metrics)


def test_losses_and_metrics_by_hand() -> None:
    bm = qm9_benchmark()
    ds = bm.dataset("test")
    assert len(ds) == 3 and len(bm.dataset("train")) == 24 and len(bm.dataset("train", 5)) == 5
    batch = next(iter(bm.make_loader(ds, 3, False)))
    torch.manual_seed(0)
    model = bm.model()
    pred = model(batch.x, batch.edge_index, batch.edge_attr, batch.batch, batch.num_graphs).detach()
    losses = bm.loss_fn(model, batch)
    assert losses.shape == (11,)
    torch.testing.assert_close(losses.detach(), ((pred - batch.y) ** 2).mean(0))
    scores = bm.score_fn(model, batch)  # type: ignore[misc]
    # MAE in the original units: targets back on their scale, prediction likewise; meV for the energies
    raw_pred = pred.double() * ds.std + ds.mean
    raw_err = (raw_pred - ds.targets()).abs()
    for k, t in enumerate(QM9_TARGETS):
        scale = 1000.0 if t in MEV_TARGETS else 1.0
        torch.testing.assert_close(scores[f"mae_{t}"], raw_err[:, k] * scale, rtol=1e-5, atol=1e-6)
    # delta_m_published averaged over molecules is Δm% of the 11 MAEs against Nash-MTL's numbers
    maes = {t: float(scores[f"mae_{t}"].detach().mean()) for t in QM9_TARGETS}
    dm = 100 * sum((maes[t] - NASH_MTL_STL[t]) / NASH_MTL_STL[t] for t in QM9_TARGETS) / 11
    assert float(scores["delta_m_published"].detach().mean()) == pytest.approx(dm, rel=1e-9)


def test_quick_compare_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert compare.run_cli(_args(out, "--methods", "ew,mgda", "--seeds", "1")) == 0
    report = (out / "report.md").read_text()
    assert "qm9" in report and "mae_U0_atom" in report and "MGDA" in report
    # the published Δm% of the FAMO paper (Table 2) beside the measured one, with the run's schedule
    published = report.split("## Published results", 1)[1]
    assert "58.5" in published and "177.6" in published and "quick" in published
    with (out / "runs.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["method"] for r in rows} == {"EW", "MGDA"}
    assert all(not r.get("error") for r in rows) and all(r["steps"] == "1" for r in rows)


def test_without_qm9pack_the_command_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(ENV_QM9_DIR)
    monkeypatch.setitem(sys.modules, "qm9pack", None)  # importlib.util.find_spec then reports it absent
    assert compare.run_cli(_args(tmp_path / "out", "--methods", "ew", "--seeds", "1")) == 2
    assert "pip install 'molearn[qm9]'" in capsys.readouterr().err
