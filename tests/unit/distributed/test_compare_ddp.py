"""``molearn compare`` under ``torchrun`` (issue 16, item 3): 2 gloo processes split the independent runs
(method × seed and the single-task baselines), rank 0 gathers them and writes the one report.

The tiny regression benchmark of the compare tests (2 tasks, EW and MGDA, 2 seeds, 2 epochs). The Python
function and then the command line run in the same launch (the second takes its baselines from rank 0's
cache); both must give the numbers of the one-process comparison.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist

from molearn.datasets import ENV_CACHE

from . import _compare_launched as cl
from .test_launchers import ROOT, _env, _run, torchrun

# the command line needs the cli extra (tqdm): absent from the test-core environments of test-versions.sh
pytest.importorskip("tqdm")

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed with gloo is needed"
)


def _same(a: Any, b: Any) -> bool:
    """Equal, NaN equal to NaN, floats to 1e-9 relative (the same seeds give the same runs)."""
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@pytest.fixture(scope="module")
def launched(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]], str]:
    tmp = tmp_path_factory.mktemp("compare-ddp")
    env = _env()
    env[ENV_CACHE] = str(tmp / "cache")
    argv = torchrun(2, "-m", "tests.unit.distributed._compare_launched", str(tmp))
    done = _run(argv, ROOT, env)
    ranks = [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    for r, res in enumerate(ranks):
        assert "crash" not in res, f"rank {r}:\n{res['crash']}"
    return tmp, ranks, done.stdout


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("compare-one")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ENV_CACHE, str(tmp / "cache"))
        return cl.records(cl.function(tmp / "out"))


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_every_rank_returns_the_one_process_numbers(
    launched: tuple[Path, list[dict[str, Any]], str], one_process: list[dict[str, Any]]
) -> None:
    _, ranks, _ = launched
    assert len(one_process) == 2 * cl.SEEDS + 1  # EW and MGDA × 2 seeds, and the baselines
    for r, res in enumerate(ranks):
        assert _same(res["function"], one_process), f"rank {r}: other numbers than one process"


def test_the_runs_were_split_and_rank_zero_wrote_one_report(
    launched: tuple[Path, list[dict[str, Any]], str],
) -> None:
    tmp, ranks, stdout = launched
    assert [res["function-report"] for res in ranks] == [True, False]  # rank 1 has no report
    assert [res["cli-rc"] for res in ranks] == [0, 0]
    # the function's 8 runs (4 STL, 4 methods): 4 on each rank; the command's 4 method runs: 2 on each
    assert stdout.count("rank 0: [4/4]") == stdout.count("rank 1: [4/4]") == 1
    assert stdout.count("rank 0: [2/2]") == stdout.count("rank 1: [2/2]") == 1
    assert "4 STL runs cached, 4 runs to do, split over 2 processes" in stdout  # rank 0's cache, sent
    assert stdout.count("report: ") == 1  # the command line: rank 0 prints
    for kind in ("function", "cli"):
        out = tmp / kind
        assert sorted(p.name for p in out.iterdir()) == ["config.json", "report.md", "runs", "runs.csv"]
        assert "Runs split over 2 processes" in (out / "report.md").read_text()
    assert len(list((tmp / "cache" / "compare-stl").glob("*.json"))) == 2 * cl.SEEDS  # rank 0 wrote them


def test_the_report_has_the_one_process_numbers(
    launched: tuple[Path, list[dict[str, Any]], str], one_process: list[dict[str, Any]]
) -> None:
    tmp, _, _ = launched
    want = {(r["method"], r["seed"]): r for r in one_process if "method" in r}
    for kind in ("function", "cli"):
        rows = _rows(tmp / kind / "runs.csv")
        assert len(rows) == len(want)
        for row in rows:
            ref = want[(row["method"], int(row["seed"]))]
            assert _same(float(row["delta_m"]), ref["delta_m"]), (kind, row["method"], row["seed"])
            for name, value in ref["metrics"].items():
                assert _same(float(row[f"metric:{name}"]), value), (kind, row["method"], name)
