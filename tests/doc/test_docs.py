"""Every ```python block of README.md and of the Markdown files under docs/ runs on its own.

Each block is executed in a fresh namespace, in a temporary working directory, so a block that relies on
names, imports or files of an earlier block fails. A block that is not meant to run carries a marker on the
line right above its fence (an HTML comment, invisible on GitHub and on the documentation site):

    <!-- docs-test: skip (why it cannot run here) -->   never run (a reason is required)
    <!-- docs-test: slow -->                            run only with ``pytest --runslow``

Keep such exceptions rare. Code that is not Python goes in a fence with its own language (```bash, ```text).
"""

from __future__ import annotations

import ast
import re
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
PYTHON = {"python", "py", "python3"}
FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<what>skip|slow)\b\s*(?P<why>.*?)\s*-->\s*$")
# A block that is a user's module (``<!-- tutorial: name.py -->`` above it) runs as that module is imported,
# ``__name__ == "name"``: its ``if __name__ == "__main__":`` part is the long run the docs describe.
MODULE = re.compile(r"^\s*<!--\s*tutorial:\s*(?P<file>[\w.]+)\.py\s*-->\s*$")

# Files whose python blocks are known not to run, with the reason. Their blocks are xfail(strict=True): once
# they run (or the file goes), the entry must go.
KNOWN_BROKEN: dict[str, str] = {}


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    marker: str | None  # "skip" or "slow"
    reason: str
    module: str = "__main__"  # the __name__ the block runs under

    @property
    def file(self) -> str:
        return self.path.relative_to(ROOT).as_posix()

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, with the docs-test marker above each (if any)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence, info = opening["fence"], opening["info"].strip()
        lang = info.split()[0].strip("{}.").lower() if info else ""
        end = i + 1
        while end < len(lines) and not (lines[end].strip().startswith(fence[0] * len(fence))
                                        and not lines[end].strip().strip(fence[0])):
            end += 1
        indent = len(opening["indent"])
        body = [line[indent:] if line[:indent].isspace() else line for line in lines[i + 1:end]]
        above = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        marker = MARKER.match(above)
        module = MODULE.match(above)
        name = module["file"] if module else "__main__"
        out.append(Block(path, i + 1, lang, "\n".join(body) + "\n", marker["what"] if marker else None,
                         marker["why"].strip(" ()") if marker else "", name))
        i = end + 1
    return out


ALL = [b for path in FILES for b in blocks(path)]
RUNNABLE = [b for b in ALL if b.lang in PYTHON]


def _param(block: Block):
    marks = []
    if block.marker == "skip":
        marks.append(pytest.mark.skip(reason=f"docs-test: skip ({block.reason})"))
    elif block.marker == "slow":
        marks.append(pytest.mark.slow)
    if block.file in KNOWN_BROKEN:
        marks.append(pytest.mark.xfail(reason=KNOWN_BROKEN[block.file], strict=True))
    return pytest.param(block, id=block.id, marks=marks)


@pytest.mark.parametrize("block", [_param(b) for b in RUNNABLE])
def test_python_block_runs_alone(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": block.module}
    error = ""
    try:
        exec(compile(block.code, block.id, "exec"), namespace)
    except Exception as exc:  # the failure message is the point
        error = "".join(traceback.format_exception(exc))
    assert not error, f"{block.id}: the python block fails when run on its own:\n{error}\n{block.code}"


def test_markers_are_well_formed() -> None:
    problems = []
    for block in ALL:
        if block.marker and block.lang not in PYTHON:
            problems.append(f"{block.id}: docs-test marker above a ```{block.lang or '(no language)'} block")
        if block.marker == "skip" and not block.reason:
            problems.append(f"{block.id}: a skip needs a reason: <!-- docs-test: skip (why) -->")
    stale = sorted(set(KNOWN_BROKEN) - {b.file for b in RUNNABLE})
    problems += [f"KNOWN_BROKEN names {key}, which has no python block any more: remove it" for key in stale]
    assert not problems, "\n".join(problems)


def test_python_is_labelled_python() -> None:
    """A fence without a language that holds Python would escape the test: it must say ```python."""
    unlabelled = []
    for block in ALL:
        if block.lang or not block.code.strip():
            continue
        try:
            tree = ast.parse(block.code)
        except SyntaxError:
            continue
        if any(isinstance(node, (ast.Import, ast.ImportFrom)) for node in tree.body):
            unlabelled.append(block.id)
    assert not unlabelled, f"python code in fences without a language (use ```python): {unlabelled}"


def test_readme_has_runnable_examples() -> None:
    readme = [b for b in RUNNABLE if b.path.name == "README.md" and b.path.parent == ROOT]
    assert len([b for b in readme if b.marker is None]) >= 3, "README.md should show runnable usage examples"
