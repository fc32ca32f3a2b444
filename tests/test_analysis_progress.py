"""The live progress line (terminal) and the periodic JSON progress lines (batch jobs)."""

from __future__ import annotations

import io
import json

from evo_engine.job.coordinator import Progress
from evo_engine.job.progress import ProgressReporter, eta_seconds, format_line


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def progress() -> Progress:
    return Progress(budget=10, finished=4, complete=3, failed=1, running=2, best=0.25,
                    busy_seconds=6.0, started=100.0)


def test_the_line_shows_budget_running_failed_best_utilization_and_eta() -> None:
    from evo_engine.util.timing import TimingMeter

    meter = TimingMeter(2, job_start=98.0)
    meter.observe(0, 100.0, 103.0)
    meter.observe(1, 100.0, 103.0)  # 6 s busy of 2 x 8 s evaluating by now=108
    line = format_line(progress(), workers=2, now=108.0, meter=meter)
    assert line == ("evals 4/10 | best 0.25 | eta 0:00:12 | running 2 | failed 1 | util 38% | "
                    "elapsed 0:00:10")
    assert eta_seconds(Progress(budget=5, started=0.0), 1.0) is None
    assert eta_seconds(Progress(budget=5, finished=5, started=0.0), 1.0) == 0.0


def test_the_line_never_reaches_the_terminal_width() -> None:
    p = Progress(budget=100000, finished=12345, complete=12000, failed=300, pruned=45,
                 running=1024, best=-1.23456789e-12, started=0.0)
    full = format_line(p, workers=1024, now=5000.0, width=1000)
    assert "pruned 45" in full and "elapsed" in full
    for width in (20, 40, 60, 80, 120):
        line = format_line(p, workers=1024, now=5000.0, width=width)
        assert len(line) < width, (width, line)
        assert line.startswith("evals 12345/100000")
    # Least important first: elapsed and util go before best and the eta.
    mid = format_line(p, workers=1024, now=5000.0, width=60)
    assert "best" in mid and "eta" in mid and "elapsed" not in mid
    assert format_line(p, 1024, 5000.0, width=10).endswith("…")


def test_a_phase_shows_until_the_first_result() -> None:
    out = FakeTerminal()
    reporter = ProgressReporter(0, stream=out, job_start=0.0)
    reporter.phase("preparing data")
    assert out.getvalue() == "\r\x1b[2Kpreparing data …"
    reporter.set_workers(2, done_before=0)
    reporter(Progress(budget=10, started=0.0))
    assert "waiting for the first results" in out.getvalue().rsplit("\r", 1)[-1]


def test_a_terminal_gets_one_redrawn_line() -> None:
    out = FakeTerminal()
    reporter = ProgressReporter(2, stream=out, done_before=0)
    reporter(progress())
    reporter.finish(progress())
    text = out.getvalue()
    assert text.startswith("\r\x1b[2Kevals 4/10") and text.endswith("\r\x1b[2K")
    assert "{" not in text and "\n" not in text


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


def test_one_timing_definition_startup_and_warmup_apart() -> None:
    from evo_engine.util.timing import TimingMeter, timing_of

    # Job starts at 0; data + workers until 10; each worker's first evaluation carries 5 s
    # of one-time loading on top of its usual 2 s.
    rows = [(0, 10.0, 17.0), (1, 10.0, 17.0), (0, 17.0, 19.0), (1, 17.0, 19.0),
            (0, 19.0, 21.0), (1, 19.0, 21.0)]
    meter = TimingMeter(2, job_start=0.0)
    for w, s, e in rows:
        meter.observe(w, s, e)
    t = meter.result()
    assert (t.startup_s, t.evaluating_s, t.busy_s, t.warmup_s) == (10.0, 11.0, 22.0, 10.0)
    assert t.wall_s == 21.0 and t.utilization == 12.0 / 22.0
    again = timing_of(2, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
                      [True] * 6, job_start=0.0)
    assert again == t, "live and offline give the same numbers"
    live = meter.result(now=31.0)
    assert live.evaluating_s == 21.0 and live.startup_s == 10.0
