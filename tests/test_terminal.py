"""Printed summaries fit the terminal: wrapped prose, whole items, tables cut at metric columns."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from evo_engine.analysis import load_run
from evo_engine.analysis.summary import format_summary, summarize
from evo_engine.util import terminal
from tests.test_analysis import build_run

WORDS = st.text(alphabet="abcdefgh=._0123456789", min_size=1, max_size=18)


@given(st.lists(st.tuples(WORDS, WORDS), min_size=1, max_size=30), st.integers(30, 120))
def test_wrap_items_keeps_every_item_whole_and_in_order(pairs, cols) -> None:
    items = [f"{k} = {v}" for k, v in pairs]
    lines = terminal.wrap_items("final metrics of uid 7:", items, cols)
    # A line is within the width, or holds one item that is wider on its own.
    assert all(len(line) <= cols or line.strip().rstrip(",") in items for line in lines), lines
    text = " ".join(line.strip() for line in lines)
    assert text == "final metrics of uid 7: " + ", ".join(items)
    # Broken only between items: each continuation line starts with a whole item.
    for line in lines[1:]:
        assert any(line.strip().startswith(item) for item in items)


@given(st.lists(st.lists(st.integers(0, 10**9), min_size=6, max_size=6), min_size=1, max_size=5),
       st.integers(40, 120))
def test_table_keeps_the_first_columns_and_fits_the_rest(values, cols) -> None:
    header = ["rank", "uid", "fitness", "alpha_metric", "b", "gamma_metric_long"]
    rows = [[str(v) for v in row] for row in values]
    lines, hidden = terminal.table(header, rows, keep=3, cols=cols)
    widths = [max(len(h), *(len(r[j]) for r in rows)) for j, h in enumerate(header)]
    shown = [h for h in header if h in lines[0].split()]
    assert shown[:3] == header[:3] and len(shown) == len(header) - hidden
    if sum(w + 2 for w in widths[:3]) <= cols:
        assert all(len(line) <= cols for line in lines)
    # A left-out column is one that would not have fitted after the ones before it.
    used = sum(widths[j] + 2 for j, h in enumerate(header) if h in shown)
    for j, h in enumerate(header):
        if h not in shown:
            assert used + widths[j] + 2 > cols
    # Every row's cells are its own values, right-aligned under their header.
    for line, row in zip(lines[2:], rows):
        cells = line.split()
        assert cells == [row[header.index(h)] for h in shown]


def test_summary_fits_80_columns_and_says_what_it_left_out(tmp_path: Path) -> None:
    build_run(tmp_path)
    s = summarize(load_run(tmp_path), top=5)
    narrow = format_summary(s, "runs/a-rather-long-run-directory-name", 60)
    assert all(len(line) <= 60 for line in narrow.splitlines()), narrow
    header = next(line for line in narrow.splitlines() if line.strip().startswith("rank"))
    assert header.split() == ["rank", "uid", "island", "fitness", "lr", "width", "act"]
    assert "2 of 2 metric columns left out at 60 columns" in " ".join(narrow.split())
    wide = format_summary(s, str(tmp_path), 200)
    header = next(line for line in wide.splitlines() if line.strip().startswith("rank"))
    assert set(header.split()[7:]) == {"train_loss", "val_loss"}
    assert "left out" not in wide


PROSE = st.lists(st.sampled_from(
    ["wall", "time", "12", "s", "(start-up", "3.5", "utilization", "94%", "busy", "10", "min",
     "workers", "evaluations", "/a/rather/long/path/to/a/run/directory/run.zarr", "and", "of"]),
    min_size=1, max_size=40)


@given(PROSE, st.integers(20, 140))
def test_wrap_fits_and_keeps_figures_with_their_words(words, cols) -> None:
    text = " ".join(words)
    lines = terminal.wrap(text, cols)
    assert all(len(line) <= cols for line in lines), lines
    # Nothing lost or reordered (a path wider than the line is cut, not dropped).
    assert "".join("".join(line.split()) for line in lines) == "".join(text.split())
    # "utilization" never ends a line when its figure follows.
    for line, nxt in zip(lines, lines[1:]):
        if line.endswith("utilization"):
            assert not nxt.strip()[:1].isdigit(), (line, nxt)


def test_the_timing_line_keeps_utilization_with_its_figure() -> None:
    from evo_engine.util.timing import Timing, describe

    text = describe(Timing(startup_s=13.0, evaluating_s=316.0, busy_s=632.0, warmup_s=0.0,
                           workers=2))
    for cols in range(40, 130):
        lines = terminal.wrap(text, cols)
        assert any("utilization 100%" in line for line in lines), (cols, lines)
        assert all(len(line) <= cols for line in lines)


def test_a_summary_wider_than_the_terminal_becomes_records(tmp_path: Path) -> None:
    build_run(tmp_path)
    s = summarize(load_run(tmp_path), top=3)
    text = format_summary(s, "r", 30)  # rank, uid, island, fitness and 3 parameters: > 30
    assert all(len(line) <= 30 for line in text.splitlines()), text
    assert "rank 1 uid" in text and "lr=" in text
