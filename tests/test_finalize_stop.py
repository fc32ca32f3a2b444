"""A stop during ``finalize`` (the final retraining) ends the job as stopped, exit 3, and
``--resume`` runs finalize again (issue 30 item 2, issue 32 item 3)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zarr
from procs import finish

from evo_engine.cli.main import main

SCENARIO = Path(__file__).resolve().parent / "scenarios" / "slow_finalize.py"


def attrs(run_dir: Path) -> dict:
    return zarr.open_group(str(run_dir / "run.zarr"), mode="r").attrs.asdict()


def committed(run_dir: Path) -> int:
    return int(zarr.open_group(str(run_dir / "run.zarr"), mode="r")["evaluations"]
               .attrs["committed"])


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGUSR1", "SIGINT"])
def test_a_signal_during_an_inline_finalize_stops_and_resume_runs_it_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sig: str) -> None:
    run_dir, mark = tmp_path / "run", tmp_path / "mark"
    monkeypatch.setenv("FINALIZE_MARK", str(mark))
    monkeypatch.setenv("FINALIZE_SIGNAL", sig)
    monkeypatch.setenv("FINALIZE_SLEEP", "60")  # interrupted by the signal, never slept out
    args = [str(SCENARIO), "--workers", "0", "--run-dir", str(run_dir), "--quiet"]
    assert main(args) == 3
    a = attrs(run_dir)
    assert a["status"] == "stopped" and a["stop_reason"] == f"signal:{sig}"
    assert "final" not in a and committed(run_dir) == 8
    monkeypatch.delenv("FINALIZE_SIGNAL")
    monkeypatch.setenv("FINALIZE_SLEEP", "0")
    assert main([*args, "--resume"]) == 0
    a = attrs(run_dir)
    assert a["status"] == "finished" and committed(run_dir) == 8  # no evaluation added
    (final,) = a["final"]
    assert final["error"] is None and set(final["metrics"]) == {"test_loss"}
    assert mark.read_text() == "started\nstarted\n"  # finalize ran again from its start


def test_a_sigterm_during_a_local_finalize_stops_and_resume_runs_it_again(tmp_path: Path) -> None:
    run_dir, mark = tmp_path / "run", tmp_path / "mark"
    env = {**os.environ, "FINALIZE_MARK": str(mark), "FINALIZE_SLEEP": "600"}
    cmd = [sys.executable, "-m", "evo_engine", str(SCENARIO), "--workers", "1",
           "--run-dir", str(run_dir), "--quiet"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    end = time.monotonic() + 120
    while not mark.exists() and proc.poll() is None and time.monotonic() < end:
        time.sleep(0.05)
    assert mark.exists(), proc.communicate()
    proc.send_signal(signal.SIGTERM)
    # Well before finalize's 600 s sleep is out (finish fails the test past its timeout).
    done = finish(proc, 60)
    assert done.returncode == 3, done.stderr
    a = attrs(run_dir)
    assert a["status"] == "stopped" and a["stop_reason"] == "signal:SIGTERM"
    assert "final" not in a
    env["FINALIZE_SLEEP"] = "0"
    again = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 0, again.stderr
    a = attrs(run_dir)
    assert a["status"] == "finished" and committed(run_dir) == 8
    assert set(a["final"][0]["metrics"]) == {"test_loss"}
    assert mark.read_text() == "started\nstarted\n"
