"""Text for a terminal of a given width: the width itself, wrapped prose, tables that fit.

One place for the rule every printed summary follows (``run``'s closing lines, ``analyze``):
nothing is wider than the terminal (``shutil.get_terminal_size``, which honours ``COLUMNS``;
80 when it cannot tell, e.g. on a pipe).
"""

from __future__ import annotations

import re
import shutil
import textwrap

DEFAULT_WIDTH = 80


def width() -> int:
    """The terminal's width in characters (``COLUMNS`` first; 80 when unknown)."""
    return shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns


_GLUE = "\x1f"
"""Stands for a space that must not become a line break while ``wrap`` works."""
_KEEP_TOGETHER = re.compile(
    r"(?<=[A-Za-z:]) (?=[-(]?\d)|(?<=\d) (?=(?:%|s|ms|min|h|complete|failed|pruned"
    r"|evaluations?|workers?|jobs?|columns?)\b)")
"""A word and the number after it ("utilization 94%", "busy 10 min"), and a number and its
unit or noun ("32 s", "4 failed"): a break there reads as two unrelated fragments. Only
these nouns, so that a record's "uid 54 island 0 fitness 0.1" does not become one word."""


def wrap(text: str, cols: int, indent: str = "    ") -> list[str]:
    """``text`` broken at spaces into lines of at most ``cols`` characters (``cols`` >= 20).

    A word and its number, and a number and its unit, stay on one line; a single word
    longer than a line (a path) is cut, so that no line is wider than the terminal."""
    glued = _KEEP_TOGETHER.sub(_GLUE, text)
    lines = textwrap.wrap(glued, max(cols, 20), subsequent_indent=indent,
                          break_long_words=True, break_on_hyphens=False)
    return [line.replace(_GLUE, " ") for line in lines] or [""]


def wrap_items(head: str, items: list[str], cols: int, indent: str = "    ") -> list[str]:
    """``head`` then ``items`` joined by ", ", broken between items only (an item stays whole)."""
    lines, line = [], head
    for i, item in enumerate(items):
        piece = item + ("," if i < len(items) - 1 else "")
        if line.strip() and len(line) + 1 + len(piece) > cols and line != indent:
            lines.append(line)
            line = indent + piece
        else:
            line = f"{line} {piece}" if line and not line.endswith(" ") else line + piece
    lines.append(line)
    return lines


def table(header: list[str], rows: list[list[str]], keep: int | None = None,
          cols: int | None = None, indent: str = "  ") -> tuple[list[str], int]:
    """Right-aligned columns; the first ``keep`` always shown, later ones while they fit ``cols``.

    Without ``cols`` every column is shown. Returns the lines and how many columns were left
    out for lack of width.
    """
    widths = [max(len(h), *(len(r[j]) for r in rows)) for j, h in enumerate(header)]
    keep = len(header) if keep is None or cols is None else keep
    shown, used = [], len(indent) - 2
    for j, w in enumerate(widths):
        if j >= keep and used + 2 + w > (cols or 0):
            continue  # a narrower column further right may still fit
        shown.append(j)
        used += 2 + w

    def line(cells: list[str]) -> str:
        return indent + "  ".join(cells[j].rjust(widths[j]) for j in shown)

    out = [line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]
    return out, len(header) - len(shown)


def records(header: list[str], rows: list[list[str]], cols: int, lead: int = 1,
            indent: str = "  ") -> list[str]:
    """The rows of a table too wide for ``cols`` as wrapped records, one per row: the first
    ``lead`` cells as its title, the rest as ``name=value`` items (never cut mid-item)."""
    out = []
    for row in rows:
        title = wrap(indent + " ".join(f"{h} {c}" for h, c in zip(header[:lead], row[:lead]))
                     + ":", cols, indent + "    ")
        items = [f"{h}={c}" for h, c in zip(header[lead:], row[lead:])]
        out += title[:-1] + wrap_items(title[-1], items, cols, indent + "    ")
    return out


__all__ = ["DEFAULT_WIDTH", "records", "table", "width", "wrap", "wrap_items"]
