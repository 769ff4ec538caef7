"""The docstring rewriting of the documentation build (scripts/docs_ext.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[2] / "scripts" / "docs_ext.py"
spec = importlib.util.spec_from_file_location("docs_ext", PATH)
docs_ext = importlib.util.module_from_spec(spec)
spec.loader.exec_module(docs_ext)


def test_roles_become_inline_code() -> None:
    text = "Uses :class:`molearn.Balancer`, :func:`~molearn.methods.get` and :meth:`Balancer.step <x.y>`."
    assert docs_ext.sphinx_to_markdown(text) == "Uses `molearn.Balancer`, `get` and `Balancer.step`."


def test_math_role_and_directive() -> None:
    text = ("Weights :math:`w_i \\ge 0` solve\n\n"
            ".. math:: \\min_w \\|w^\\top G\\|\n    \\text{s.t. } w \\in \\Delta\n\nDone.")
    out = docs_ext.sphinx_to_markdown(text)
    assert "\\(w_i \\ge 0\\)" in out
    assert "\\[\n\\min_w \\|w^\\top G\\|\n\\text{s.t. } w \\in \\Delta\n\\]" in out
    assert out.rstrip().endswith("Done.")


def test_literal_block_becomes_fenced_code() -> None:
    text = "For a layer::\n\n    y = W0 x + B A x\n\nthen more."
    out = docs_ext.sphinx_to_markdown(text)
    assert "For a layer:\n\n```text\ny = W0 x + B A x\n```" in out
    assert out.rstrip().endswith("then more.")


def test_grouped_parameters_are_split() -> None:
    text = ("Args:\n    n: a count.\n    lower, upper: the box,\n        two tensors.\n"
            "    *args, **kwargs: passed on.\n\nReturns:\n    lower, upper: not parameters.")
    lines = docs_ext.sphinx_to_markdown(text).splitlines()
    assert lines[:9] == ["Args:", "    n: a count.", "    lower: the box,", "        two tensors.",
                         "    upper: the box,", "        two tensors.", "    *args: passed on.",
                         "    **kwargs: passed on.", ""]
    assert lines[-1] == "    lower, upper: not parameters."  # outside Args, left alone


def test_mathml_hook() -> None:
    pytest.importorskip("latex2mathml")

    class Page:
        class file:  # noqa: N801 - mimics mkdocs' page.file.src_uri
            src_uri = "x.md"

    html = ('<p>a <span class="arithmatex">\\(x &lt; y\\)</span></p>'
            '<div class="arithmatex">\\[\\frac{1}{2}\\]</div>')
    out = docs_ext.on_page_content(html, page=Page)
    assert '<math xmlns="http://www.w3.org/1998/Math/MathML" display="inline">' in out
    assert 'display="block"' in out and "<mfrac>" in out and "arithmatex" not in out
