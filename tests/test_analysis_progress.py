"""The live progress line (terminal) and the periodic JSON progress lines (batch jobs)."""

from __future__ import annotations

import io
import json

from evo_engine.coordinator import Progress
from evo_engine.progress import ProgressReporter, eta_seconds, format_line


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def progress() -> Progress:
    return Progress(budget=10, finished=4, complete=3, failed=1, running=2, best=0.25,
                    busy_seconds=6.0, started=100.0)


def test_the_line_shows_budget_running_failed_best_utilization_and_eta() -> None:
    line = format_line(progress(), workers=2, now=108.0)
    assert line == ("evals 4/10 | running 2 | failed 1 | best 0.25 | util 38% | "
                    "elapsed 0:00:08 | eta 0:00:12")
    assert eta_seconds(Progress(budget=5, started=0.0), 1.0) is None
    assert eta_seconds(Progress(budget=5, finished=5, started=0.0), 1.0) == 0.0


def test_a_terminal_gets_one_redrawn_line() -> None:
    out = FakeTerminal()
    reporter = ProgressReporter(2, stream=out, done_before=0)
    reporter(progress())
    reporter.finish(progress())
    text = out.getvalue()
    assert text.startswith("\r\x1b[2Kevals 4/10") and text.endswith("\n")
    assert "{" not in text


def test_a_batch_job_gets_periodic_json_lines_only() -> None:
    out = io.StringIO()
    reporter = ProgressReporter(2, stream=out, period=0.0, done_before=0)
    reporter(progress())
    reporter.finish(progress())
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["event"] == "progress" and event["finished"] == 4 and event["budget"] == 10
    assert event["failed"] == 1 and event["running"] == 2 and event["eta_s"] is not None


def test_quiet_prints_nothing() -> None:
    out = FakeTerminal()
    reporter = ProgressReporter(2, stream=out, quiet=True)
    reporter(progress())
    reporter.finish(progress())
    assert out.getvalue() == ""


def test_the_eta_of_a_resumed_run_uses_this_jobs_rate_only() -> None:
    p = Progress(budget=100, finished=60, started=0.0)  # 50 of them from the previous job
    assert eta_seconds(p, now=10.0, done_before=50) == 40.0
    out = io.StringIO()
    reporter = ProgressReporter(2, stream=out, period=0.0)
    reporter(Progress(budget=100, finished=50, started=0.0))  # first tick: nothing new yet
    reporter(p)
    assert json.loads(out.getvalue().splitlines()[-1])["eta_s"] is not None
