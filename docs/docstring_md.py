"""gradtx's docstrings as Markdown: the reStructuredText habits they keep, rewritten.

The docstrings are written for ``help()`` and for doctest: a paragraph that ends in
``::`` introduces an indented literal block, and examples are bare ``>>>`` runs. In
Markdown the ``::`` stays on the page and every ``>>>`` opens three nested block
quotes. ``to_markdown`` turns both into fenced code blocks (``text`` and ``pycon``) and,
on request, reST section underlines into ``#`` headings.

Used twice: by ``gen_pages.py`` for the module docstrings it writes into pages, and by
mkdocstrings, as a Griffe extension (``extensions: [docs/docstring_md.py]`` in
mkdocs.yml), for every docstring it renders.
"""

from __future__ import annotations

import re
from typing import Any, Optional

_UNDERLINE = re.compile(r"^\s*([-=~^])\1{2,}\s*$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _fence(block: list[str], indent: int, language: Optional[str] = None) -> list[str]:
    """``block`` (lines indented at least ``indent``) as a fenced block at ``indent``."""
    while block and not block[-1].strip():
        block.pop()
    while block and not block[0].strip():
        block.pop(0)
    depth = min((_indent(b) for b in block if b.strip()), default=indent)
    if language is None:
        language = "pycon" if block and block[0].lstrip().startswith(">>>") else "text"
    pad = " " * indent
    return [f"{pad}```{language}", *[pad + b[depth:] if b.strip() else "" for b in block], f"{pad}```"]


def to_markdown(text: str, heading_level: Optional[int] = None) -> str:
    """``text`` (a cleaned docstring) with literal blocks and doctests fenced; with
    ``heading_level``, an underlined title becomes a heading of that level."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if heading_level and stripped and _UNDERLINE.match(nxt) and len(nxt.strip()) >= len(stripped) - 1:
            out += [f"{'#' * heading_level} {stripped}", ""]
            i += 2
            continue
        if stripped.startswith(">>>"):
            block = []
            while i < len(lines) and lines[i].strip():
                block.append(lines[i])
                i += 1
            out += _fence(block, _indent(line), "pycon")
            continue
        if stripped.endswith("::"):
            base = _indent(line)
            text_part = line.rstrip()[:-2].rstrip()
            if text_part.strip():
                out.append(text_part + ":")
            i += 1
            block = []
            while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > base):
                block.append(lines[i])
                i += 1
            if any(b.strip() for b in block):
                out += ["", *_fence(block, base), ""]
            continue
        out.append(line)
        i += 1
    return "\n".join(out).strip("\n") + "\n"


def first_paragraph(text: str) -> str:
    """The docstring's first paragraph, on one line (a primitive's formula)."""
    return " ".join(line.strip() for line in text.strip().split("\n\n")[0].splitlines())


try:
    import griffe
except ImportError:  # the generator needs only to_markdown
    griffe = None

if griffe is not None:

    class DocstringMarkdown(griffe.Extension):
        """Rewrite every docstring Griffe loads (see the module docstring)."""

        def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
            if obj.docstring is not None:
                obj.docstring.value = to_markdown(obj.docstring.value).rstrip("\n")
