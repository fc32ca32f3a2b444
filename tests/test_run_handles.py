"""A run in a long-lived Python process (a notebook, the Optimizer API, the tests) leaves no
file open behind it, whichever way it ends: each run's log, lock and store are its own."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from evo_engine.cli.main import main

SCENARIO = Path(__file__).resolve().parent / "scenarios" / "slow_finalize.py"


def open_files() -> dict[int, str]:
    """This process's file descriptors and what each points to (/proc/self/fd)."""
    out = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the listing's own descriptor, closed by now
            pass
    return out


def events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
def test_runs_in_one_process_close_their_files_whichever_way_they_end(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Before, the log of the last run (log.jsonl, opened "for the run") stayed open until
    the next run or the process's end: a ResourceWarning at exit, one handle per notebook."""

    def run(name: str, *extra: str) -> int:
        return main([str(SCENARIO), "--workers", "0", "--run-dir", str(tmp_path / name),
                     "--quiet", *extra])

    def left_open() -> list[str]:
        return sorted(p for p in open_files().values() if p.startswith(str(tmp_path)))

    assert run("done") == 0
    assert left_open() == []
    # The first run starts what a process keeps (the store's event loop): counted from here.
    base = open_files()
    done = events(tmp_path / "done")
    assert done[-1]["event"] == "run_finished" and done[-1]["reason"] == "finished"
    assert "finalize_finished" in [e["event"] for e in done]
    # Stopped (exit 3) in finalize: its last events are written before the log is closed.
    monkeypatch.setenv("FINALIZE_SIGNAL", "SIGTERM")
    assert run("stopped") == 3
    monkeypatch.delenv("FINALIZE_SIGNAL")
    assert left_open() == []
    stopped = [e["event"] for e in events(tmp_path / "stopped")
               if e["event"] != "snapshot_written"]  # (the writer's, as it flushes)
    assert stopped[-2:] == ["finalize_stopped", "run_finished"], stopped
    assert events(tmp_path / "stopped")[-1]["reason"] == "signal:SIGTERM"
    # Refused (exit 2) before anything is written, and failed (exit 1) in the middle.
    assert run("done", "--resume", "--max-evals", "4") == 2
    assert left_open() == []

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("finalize blew up")

    monkeypatch.setattr("evo_engine.job.run.run_finalize", broken)
    assert run("failed") == 1
    assert "finalize blew up" in capsys.readouterr().err
    assert left_open() == []
    # The failure's stop snapshot, reported by the writer as it shuts down, is logged too.
    failed = [e["event"] for e in events(tmp_path / "failed")]
    assert failed[-2:] == ["finalize_started", "snapshot_written"], failed
    # No run wrote into another's log, and nothing was left open by any of them.
    assert events(tmp_path / "done") == done
    assert len(open_files()) == len(base), (base, open_files())


def test_an_event_after_the_run_closed_its_log_is_dropped_not_raised(tmp_path: Path) -> None:
    """A logger bound during the run (a thread winding down) outlives the closed file."""
    from evo_engine.job import log

    path = tmp_path / "log.jsonl"
    bound = log.configure(path, rank=0)
    bound.info("run_finished", reason="finished")
    log.close()
    bound.info("late_event")  # before: ValueError (I/O operation on closed file)
    assert [json.loads(line)["event"] for line in path.read_text().splitlines()] == ["run_finished"]
