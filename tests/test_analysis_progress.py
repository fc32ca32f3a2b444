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
    reporter.finish(progress())  # one last line: the log ends with the counts reached
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[0] == lines[1]
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


def _ev(uid: int, worker: int, t0: float, t1: float, batch: int = -1):
    from types import SimpleNamespace

    from evo_engine.search.messages import EvalState

    return SimpleNamespace(task=SimpleNamespace(uid=uid), state=EvalState.COMPLETE,
                           result=SimpleNamespace(worker=worker, t_start=t0, t_end=t1, batch=batch))


def test_live_utilization_counts_work_in_flight() -> None:
    # Two workers busy since 100 with nothing finished yet: 100%, not "unknown" or 0%.
    from evo_engine.util.timing import TimingMeter

    p = Progress(budget=10, running=2, started=100.0, busy_since={0: 100.0, 1: 100.0})
    meter = TimingMeter(2, job_start=98.0)
    line = format_line(p, workers=2, now=108.0, meter=meter, done_before=0)
    assert "util 100%" in line, line
    # One finished evaluation (100-104 on worker 0), worker 1 still busy since 100: busy
    # 4 + 8 of 2 x 8 s = 75%; counting only what finished would say 25%.
    meter.observe(0, 100.0, 104.0)
    p = Progress(budget=10, finished=1, complete=1, running=1, started=100.0,
                 busy_since={1: 100.0})
    assert "util 75%" in format_line(p, workers=2, now=108.0, meter=meter, done_before=0)


def test_a_batch_counts_its_workers_time_once() -> None:
    # 4 members of one batch (uid 10-13, batch 10) shared 100-110 on worker 0.
    reporter = ProgressReporter(1, stream=io.StringIO(), mode="none", job_start=100.0)
    for uid in range(10, 14):
        reporter.observe(_ev(uid, 0, 100.0, 110.0, batch=10))
    reporter.observe(_ev(14, 0, 110.0, 120.0))  # alone: batch -1
    t = reporter.meter.result()
    assert t.busy_s == 20.0 and t.utilization == 1.0  # per member: 50 s busy in 20 s


def test_json_mode_shows_phases_at_once_and_the_first_result() -> None:
    out = io.StringIO()
    reporter = ProgressReporter(0, stream=out, period=3600.0, job_start=0.0)
    assert reporter.mode == "json", "auto on a pipe (no MPI launch): JSON lines"
    with reporter.stage("prepare", "preparing data"):
        pass
    reporter.set_workers(2, done_before=0)
    reporter(Progress(budget=10, started=0.0))  # no result yet: nothing (period not over)
    reporter(Progress(budget=10, finished=1, complete=1, best=0.5, started=0.0))
    reporter(Progress(budget=10, finished=2, complete=2, best=0.5, started=0.0))  # in period
    reporter.finish(Progress(budget=10, finished=10, complete=10, best=0.1, started=0.0))
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(e["event"], e.get("phase"), e.get("state"), e.get("finished")) for e in events] == [
        ("phase", "prepare", "started", None), ("phase", "prepare", "finished", None),
        ("progress", None, None, 1), ("progress", None, None, 10)]


def test_a_long_stage_beats_and_a_failed_one_says_so() -> None:
    import time

    import pytest

    out = io.StringIO()
    reporter = ProgressReporter(0, stream=out, period=0.05, mode="json", job_start=time.time())
    with pytest.raises(RuntimeError), reporter.stage("finalize", "finalize (uid 3)", uid=3):
        time.sleep(0.3)
        raise RuntimeError("boom")
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert events[0] == {**events[0], "phase": "finalize", "state": "started", "uid": 3}
    assert any(e["state"] == "running" for e in events[1:-1])
    assert events[-1]["state"] == "stopped" and events[-1]["seconds"] >= 0.3
    assert reporter.stages["finalize"] >= 0.3


def test_progress_modes_are_chosen_explicitly() -> None:
    term = FakeTerminal()
    assert ProgressReporter(1, stream=term, mode="json").mode == "json"
    assert ProgressReporter(1, stream=io.StringIO(), mode="line").tty
    assert ProgressReporter(1, stream=term).mode == "line"
    quiet = ProgressReporter(1, stream=io.StringIO(), mode="none")
    quiet.phase("preparing data")
    quiet(progress())
    assert quiet.stream.getvalue() == ""


def test_rank_0_of_an_mpi_job_draws_the_line_on_its_launchers_terminal(
        tmp_path, monkeypatch) -> None:
    # Under mpiexec, rank 0's stderr is the launcher's pipe: isatty cannot tell. The terminal
    # is found as the launcher's stderr (here a file standing in for /dev/pts/N).
    from evo_engine.job import progress as progress_module

    fake_tty = tmp_path / "pts"
    fake_tty.write_text("")
    monkeypatch.setattr(progress_module, "_ancestor_terminals", lambda: [str(fake_tty)])
    monkeypatch.setenv("PMI_SIZE", "3")
    monkeypatch.setenv("PMI_RANK", "0")
    mode, stream = progress_module.choose("auto", io.StringIO())
    assert mode == "line" and stream.name == str(fake_tty)
    stream.close()
    monkeypatch.setenv("PMI_RANK", "1")  # a worker rank never draws
    assert progress_module.choose("auto", io.StringIO())[0] == "json"
    monkeypatch.setenv("PMI_RANK", "0")
    monkeypatch.setattr(progress_module, "_ancestor_terminals", lambda: [])  # a batch job
    assert progress_module.choose("auto", io.StringIO())[0] == "json"
    monkeypatch.delenv("PMI_SIZE")
    monkeypatch.delenv("PMI_RANK")
    monkeypatch.setattr(progress_module, "_ancestor_terminals", lambda: [str(fake_tty)])
    assert progress_module.choose("auto", io.StringIO())[0] == "json", "no MPI: stderr decides"


def test_warmup_reference_is_a_bounded_window_of_each_workers_first_evaluations() -> None:
    # The live line recomputed a median over every duration of every worker (0.8 s a call
    # after a million results) and the meter kept them all (issue 30, items 4-5): the
    # reference is now the median of the first WARMUP_WINDOW complete ones after the first.
    from evo_engine.util.timing import WARMUP_WINDOW, TimingMeter

    meter = TimingMeter(1, job_start=0.0)
    meter.observe(0, 1.0, 11.0)  # first: 10 s (8 of them loading)
    t = 11.0
    for i in range(5000):
        d = 2.0 if i < WARMUP_WINDOW else 9.0  # later ones slower: not the reference
        meter.observe(0, t, t + d)
        t += d
    assert meter.warmup_s() == 8.0
    assert len(meter._later[0]) == WARMUP_WINDOW  # noqa: SLF001 - the bound itself
    # Recomputed only for workers whose window changed; a second worker fills its own.
    meter.observe(1, 1.0, 4.0)
    meter.observe(1, 4.0, 5.0)
    assert meter.warmup_s() == 8.0 + 2.0


def test_a_json_line_says_how_many_evaluations_its_best_is_the_mean_of() -> None:
    """With races the live best is a mean (the line says "(mean of 3)"); a batch log's JSON
    line gave the bare number, read as one draw."""
    out = io.StringIO()
    reporter = ProgressReporter(2, stream=out, period=0.0, done_before=0, mode="json")
    p = progress()
    p.best, p.best_n = 0.25, 3
    reporter(p)
    event = json.loads(out.getvalue().splitlines()[-1])
    assert event["best"] == 0.25 and event.get("best_evaluations") == 3, event
    assert "(mean of 3)" in format_line(p, workers=2, now=108.0)
