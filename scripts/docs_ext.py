"""Build-time helpers for the documentation site (mkdocs.yml loads this file twice).

1. As a griffe extension (``mkdocstrings`` → ``extensions``): molearn's docstrings are written in the Sphinx
   dialect (``:class:`Balancer```, ``:math:`w_i```, ``.. math::`` blocks, ``text::`` literal blocks), while
   mkdocstrings renders Markdown. :class:`SphinxToMarkdown` rewrites those constructs before rendering:
   roles become inline code, ``:math:`` becomes ``\\(…\\)``, ``.. math::`` becomes a ``\\[…\\]`` block and
   literal blocks become fenced code. The Google-style sections (``Args:``, ``Returns:``) are left to griffe.
2. As an mkdocs hook (``hooks``): ``pymdownx.arithmatex`` (generic mode) protects the LaTeX through Markdown;
   :func:`on_page_content` turns it into MathML with ``latex2mathml``, so formulas render in the browser with
   no JavaScript and nothing fetched from the internet, neither at build time nor when reading.
"""

from __future__ import annotations

import ast
import contextlib
import html
import logging
import re
from typing import Any

log = logging.getLogger("mkdocs.plugins.molearn_docs")

# ---------------------------------------------------------------------------------------------------------
# Sphinx dialect -> Markdown (docstrings)

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|data|mod|obj|exc|const):`(~?)([^`]+)`")
_MATH_ROLE = re.compile(r":math:`([^`]+)`")
_MATH_DIRECTIVE = re.compile(r"^(\s*)\.\. math::\s*(.*)$")
_LITERAL_INTRO = re.compile(r"^(\s*)(?!\.\. )(.*\S)::\s*$")
_PARAM_SECTION = re.compile(r"^(\s*)(?:Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments|"
                            r"Other Parameters):\s*$")
_GROUPED_PARAM = re.compile(r"^(\s*)(\**[A-Za-z_]\w*(?:\s*,\s*\**[A-Za-z_]\w*)+)(\s*(?:\([^)]*\))?:.*)$")


def _role(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    target = target.strip()
    if "<" in target and target.endswith(">"):  # :class:`text <target>`
        target = target.split("<", 1)[0].strip()
    if tilde:
        target = target.rsplit(".", 1)[-1]
    return f"`{target}`"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _indented_block(lines: list[str], start: int, base: int) -> tuple[list[str], int]:
    """The lines from ``start`` that are blank or indented deeper than ``base``, and the index after them."""
    end = start
    while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > base):
        end += 1
    while end > start and not lines[end - 1].strip():  # trailing blank lines belong to what follows
        end -= 1
    return lines[start:end], end


def split_grouped_params(lines: list[str]) -> list[str]:
    """``a, b: text`` in an ``Args:`` section → one entry per name with the same text (griffe's Google parser
    takes ``a, b`` for one unknown parameter)."""
    out: list[str] = []
    section: int | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        header = _PARAM_SECTION.match(line)
        if header:
            section = len(header.group(1))
        elif line.strip() and section is not None and _indent(line) <= section:
            section = None
        grouped = _GROUPED_PARAM.match(line) if section is not None else None
        if grouped:
            pad, names, rest = grouped.groups()
            item, i = _indented_block(lines, i + 1, len(pad))
            for name in names.split(","):
                out += [f"{pad}{name.strip()}{rest}", *item]
            continue
        out.append(line)
        i += 1
    return out


def sphinx_to_markdown(text: str) -> str:
    """Rewrite the Sphinx constructs of a docstring as Markdown (see the module docstring)."""
    lines = split_grouped_params(text.splitlines())
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        directive = _MATH_DIRECTIVE.match(line)
        if directive:
            pad, first = directive.groups()
            body, i = _indented_block(lines, i + 1, len(pad))
            formula = [first.strip()] if first.strip() else []
            formula += [b.strip() for b in body if b.strip()]
            out += ["", f"{pad}\\[", *(f"{pad}{f}" for f in formula), f"{pad}\\]", ""]
            continue
        literal = _LITERAL_INTRO.match(line)
        if literal and i + 1 < len(lines):
            pad, intro = literal.groups()
            body, j = _indented_block(lines, i + 1, len(pad))
            if any(b.strip() for b in body):
                code = list(body)
                while not code[0].strip():
                    code.pop(0)
                cut = min(_indent(b) for b in code if b.strip())
                out += [f"{pad}{intro}:", "", f"{pad}```text", *(f"{pad}{b[cut:]}" for b in code),
                        f"{pad}```", ""]
                i = j
                continue
        out.append(line)
        i += 1
    text = "\n".join(out)
    text = _MATH_ROLE.sub(lambda m: f"\\({m.group(1)}\\)", text)
    return _ROLE.sub(_role, text)


try:  # the griffe extension; only needed (and importable) where mkdocstrings is installed
    import griffe
except ImportError:  # pragma: no cover
    griffe = None  # type: ignore[assignment]

if griffe is not None:

    class SphinxToMarkdown(griffe.Extension):
        """Rewrites every loaded docstring with :func:`sphinx_to_markdown`, and makes the lazily exported
        names of a package visible to the static analysis (see :func:`add_lazy_exports`)."""

        def on_object(self, *, obj: Any, **kwargs: Any) -> None:
            if obj.docstring is not None and not obj.is_alias:
                obj.docstring.value = sphinx_to_markdown(obj.docstring.value)

        def on_package(self, *, pkg: Any, **kwargs: Any) -> None:
            stack = [pkg]
            while stack:
                module = stack.pop()
                add_lazy_exports(module)
                stack.extend(module.modules.values())

    def add_lazy_exports(module: Any) -> None:
        """Packages that import heavy dependencies on first use (``molearn.llm``, the Flower classes of
        ``molearn.federated``) resolve names in a module ``__getattr__``, which static analysis cannot follow.
        Each name of ``__all__`` or of a ``_LAZY = {name: ".submodule"}`` table that is not a member becomes
        an alias of the object of that name in the given submodule (or in the one submodule defining it)."""
        lazy: dict[str, str] = {}
        table = module.members.get("_LAZY")
        if table is not None and not table.is_alias and table.is_attribute:
            with contextlib.suppress(ValueError, SyntaxError):
                lazy = dict(ast.literal_eval(str(table.value)))
        exports = [str(n) for n in (module.exports or [])]
        names = exports + [n for n in lazy if n not in exports]
        for name in names:
            if name in module.members:
                continue
            if isinstance(lazy.get(name), str):
                target = f"{module.path}.{lazy[name].lstrip('.')}.{name}"
            else:
                found = [sub for sub in module.modules.values()
                         if name in sub.members and not sub.members[name].is_alias]
                if len(found) != 1:
                    continue
                target = f"{found[0].path}.{name}"
            module.set_member(name, griffe.Alias(name, target, parent=module))
        if lazy and module.exports is None:
            module.exports = list(lazy)


# ---------------------------------------------------------------------------------------------------------
# LaTeX -> MathML (rendered pages)

_INLINE = re.compile(r'<span class="arithmatex">\\\((.*?)\\\)</span>', re.DOTALL)
_BLOCK = re.compile(r'<div class="arithmatex">\\\[(.*?)\\\]</div>', re.DOTALL)


def _mathml(latex: str, display: str, where: str) -> str:
    from latex2mathml.converter import convert

    source = html.unescape(latex).strip()
    try:
        return convert(source, display=display)
    except Exception as exc:  # a formula that does not convert is an error in the docs
        log.warning("%s: cannot convert LaTeX %r to MathML: %s", where, source, exc)
        return f"<code>{html.escape(source)}</code>"


def on_page_content(content: str, page: Any, **kwargs: Any) -> str:
    """mkdocs hook: LaTeX wrapped by ``pymdownx.arithmatex`` (generic mode) → MathML."""
    where = page.file.src_uri
    content = _BLOCK.sub(lambda m: f'<div class="math">{_mathml(m.group(1), "block", where)}</div>', content)
    return _INLINE.sub(lambda m: _mathml(m.group(1), "inline", where), content)
