"""Text for a terminal of a given width: the width itself, wrapped prose, tables that fit.

One place for the rule every printed summary follows (``run``'s closing lines, ``analyze``):
nothing is wider than the terminal (``shutil.get_terminal_size``, which honours ``COLUMNS``;
80 when it cannot tell, e.g. on a pipe).
"""

from __future__ import annotations

import shutil
import textwrap

DEFAULT_WIDTH = 80


def width() -> int:
    """The terminal's width in characters (``COLUMNS`` first; 80 when unknown)."""
    return shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns


def wrap(text: str, cols: int, indent: str = "    ") -> list[str]:
    """``text`` broken at spaces into lines of at most ``cols`` characters (never mid-word)."""
    return textwrap.wrap(text, max(cols, 20), subsequent_indent=indent,
                         break_long_words=False, break_on_hyphens=False) or [""]


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


__all__ = ["DEFAULT_WIDTH", "table", "width", "wrap", "wrap_items"]
