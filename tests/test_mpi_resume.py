"""Walltime signals under a real mpiexec, then --resume with a different number of ranks."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from test_mpi import (
    SCENARIOS,
    evaluations,
    finish,
    needs_mpiexec,
    start_mpirun,
    store_attrs,
    wait_for_event,
)

pytestmark = pytest.mark.mpi


def wait_for_rows(run_dir: Path, rows: int, proc) -> None:
    import time

    import zarr

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            table = zarr.open_group(str(run_dir / "run.zarr"), mode="r")["evaluations"]
            if int(table.attrs["committed"]) >= rows:
                return
        except Exception:  # noqa: BLE001 - the store may not exist yet
            pass
        time.sleep(0.1)


@needs_mpiexec
@pytest.mark.parametrize(("sig", "ranks", "resume_ranks"),
                         [(signal.SIGUSR1, 3, 5), (signal.SIGTERM, 4, 2)])
def test_signal_then_resume_with_another_rank_count(tmp_path: Path, sig: int, ranks: int,
                                                    resume_ranks: int) -> None:
    run_dir = tmp_path / "run"
    args = (str(SCENARIOS / "mpi_sleep.py"), "--run-dir", str(run_dir), "--quiet")
    proc = start_mpirun(ranks, *args, cwd=tmp_path, EVO_TEST_SLEEP="0.15")
    wait_for_event(run_dir, "run_started", proc)
    wait_for_rows(run_dir, 6, proc)
    proc.send_signal(sig)  # SLURM's --signal=USR1@300 or its walltime TERM, via mpiexec
    done = finish(proc)
    assert done.returncode == 3, done.stderr
    attrs = store_attrs(run_dir)
    assert attrs["status"] == "stopped" and attrs["stop_reason"] == f"signal:{sig.name}"
    before = evaluations(run_dir)["uid"].tolist()
    assert 0 < len(before) < 60
    # resume_ranks == 2 is a single worker: the run goes on with fewer ranks than it had.
    resumed = finish(start_mpirun(resume_ranks, *args, "--resume", cwd=tmp_path,
                                  EVO_TEST_SLEEP="0.005"))
    assert resumed.returncode == 0, resumed.stderr
    after = evaluations(run_dir)
    uids = after["uid"].tolist()
    assert len(uids) == 60 and len(set(uids)) == 60, "budget exact, each uid once"
    assert uids[: len(before)] == before, "nothing recorded before the stop was lost or moved"
    assert set(after["worker"][len(before):].tolist()) == set(range(resume_ranks - 1))
    assert store_attrs(run_dir)["jobs"] == 2


@needs_mpiexec
def test_sigterm_during_an_mpi_finalize_stops_with_3_and_resume_runs_it_again(
        tmp_path: Path) -> None:
    """The worker rank busy with finalize is left to the drain timeout, then the job is
    aborted with rank 0's code 3; the store says stopped and --resume runs finalize again."""
    import time

    scenario = str(Path(__file__).resolve().parent / "scenarios" / "slow_finalize.py")
    run_dir, mark = tmp_path / "run", tmp_path / "mark"
    args = (scenario, "--run-dir", str(run_dir), "--quiet")
    proc = start_mpirun(2, *args, cwd=tmp_path, FINALIZE_MARK=str(mark), FINALIZE_SLEEP="600")
    deadline = time.monotonic() + 120
    while not mark.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert mark.exists(), proc.communicate()
    proc.send_signal(signal.SIGTERM)  # to mpiexec, which forwards it to every rank
    done = finish(proc)  # long before finalize's 600 s (finish fails the test past TIMEOUT)
    assert done.returncode == 3, done.stderr
    attrs = store_attrs(run_dir)
    assert attrs["status"] == "stopped" and attrs["stop_reason"] == "signal:SIGTERM"
    assert "final" not in attrs
    again = finish(start_mpirun(2, *args, "--resume", cwd=tmp_path, FINALIZE_MARK=str(mark),
                                FINALIZE_SLEEP="0"))
    assert again.returncode == 0, again.stderr
    attrs = store_attrs(run_dir)
    assert attrs["status"] == "finished" and set(attrs["final"][0]["metrics"]) == {"test_loss"}
    assert mark.read_text() == "started\nstarted\n"
