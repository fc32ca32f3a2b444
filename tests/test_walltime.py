"""The time limit's guess at the next evaluation: bounded memory, cheap per loop turn."""

from __future__ import annotations

import numpy as np
import pytest

from evo_engine.job import walltime
from evo_engine.job.walltime import REFRESH, WINDOW, Deadline


def test_expected_duration_is_the_90th_percentile_of_the_recent_window() -> None:
    d = Deadline(end=1000.0, margin=10.0, reason="max_time")
    assert d.expected_duration() == 0.0
    for s in range(1, 11):
        d.observe(float(s))
    assert d.expected_duration() == pytest.approx(np.quantile(np.arange(1, 11), 0.9))
    # Thousands of long evaluations, then a window of short ones: old ones are forgotten.
    for _ in range(5000):
        d.observe(100.0)
    for _ in range(WINDOW):
        d.observe(1.0)
    assert len(d._durations) == WINDOW
    assert d.expected_duration() == 1.0


def test_guess_refreshed_every_refresh_results_not_every_check(monkeypatch) -> None:
    calls = []
    real = np.quantile

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(walltime.np, "quantile", counting)
    d = Deadline(end=1e9, margin=1.0, reason="walltime")
    for _ in range(2 * REFRESH):
        d.observe(2.0)
    calls.clear()
    for i in range(10 * REFRESH):
        d.observe(5.0 if i >= 5 * REFRESH else 2.0)
        for _ in range(10):  # the loop checks on every turn
            assert d.check(0.0) is None
    assert len(calls) <= 11
    assert d.expected_duration() == 5.0


def test_check_stops_issuing_when_the_next_evaluation_cannot_finish() -> None:
    d = Deadline(end=100.0, margin=10.0, reason="max_time")
    d.observe(30.0)
    assert d.check(50.0) is None
    got = d.check(65.0)
    assert got is not None and not got.abort
    got = d.check(91.0)
    assert got is not None and got.abort
