"""The tutorial of docs/compare.md runs as written: the user's file (Yeast, real data shipped in the PyPI
package `river`) through ``molearn compare --config yeast.yaml`` in a fresh process, from the file's own
folder."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DOC = ROOT / "docs" / "compare.md"


def _block(marker: str, lang: str) -> str:
    text = DOC.read_text()
    m = re.search(rf"<!-- tutorial: {re.escape(marker)} -->\n```{lang}\n(.*?)```", text, re.DOTALL)
    assert m, f"docs/compare.md lacks the {marker} block"
    return m.group(1)


def _code_lines(code: str) -> int:
    """Lines of user code: not blank, not comments, not imports."""
    return sum(
        1
        for line in code.splitlines()
        if line.strip() and not line.strip().startswith(("#", "import ", "from "))
    )


def test_the_tutorial_is_short() -> None:
    code = _block("yeast_bench.py", "python")
    assert _code_lines(code.split('if __name__ == "__main__"')[0]) <= 36  # ~30 lines of user code


def test_tutorial_runs_from_its_folder(tmp_path: Path) -> None:
    pytest.importorskip("river")
    pytest.importorskip("yaml")
    (tmp_path / "yeast_bench.py").write_text(_block("yeast_bench.py", "python"))
    (tmp_path / "yeast.yaml").write_text(_block("yeast.yaml", "yaml"))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "MOLEARN_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "molearn", "compare", "--config", "yeast.yaml", "--quick", "--seeds", "1",
           "--methods", "ew,famo", "--jobs", "0", "--threads", "1", "--no-plot", "--out", "out"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "# molearn compare: yeast" in report
    assert "## Per-metric test results" in report and "| acc_f14 |" in report
    assert "best validation Δm%" in report
    assert (
        len(list((tmp_path / "cache" / "compare-stl").glob("*.json"))) == 14
    )  # one single-task run per task


def test_tutorial_config_is_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("river")
    pytest.importorskip("yaml")
    from molearn.compare import resolve_config

    (tmp_path / "yeast_bench.py").write_text(_block("yeast_bench.py", "python"))
    (tmp_path / "yeast.yaml").write_text(_block("yeast.yaml", "yaml"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    fields = ("benchmark", "methods", "seeds", "schedule", "full", "quick", "epochs", "batch_size", "lr",
              "device", "jobs", "threads", "out")  # fmt: skip
    args = argparse.Namespace(config="yeast.yaml", **dict.fromkeys(fields))
    cfg, opts = resolve_config(args)
    assert cfg.benchmark.name == "yeast" and len(cfg.benchmark.tasks) == 14
    assert cfg.methods == {
        "ew": {},
        "famo": {"gamma": 1e-3},
        "pcgrad": {},
        "nashmtl": {},
        "cagrad": {"c": 0.4},
    }
    assert cfg.seeds == [0, 1, 2] and cfg.schedule.epochs == 20 and cfg.schedule.lr == 1e-3
    assert opts == {"jobs": 2, "threads": 1, "out": "out/compare-yeast"}
