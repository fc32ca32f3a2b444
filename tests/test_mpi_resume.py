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
def _rank_pids(tag: str) -> list[int]:
    """The ranks of the job started with EVO_TEST_TAG=tag (found by their environment)."""
    pids = []
    for env in Path("/proc").glob("[0-9]*/environ"):
        try:
            text = env.read_bytes().split(b"\0")
        except OSError:
            continue
        if f"EVO_TEST_TAG={tag}".encode() in text and any(v.startswith(b"PMI_RANK=") for v in text):
            pids.append(int(env.parent.name))
    return pids


def _maps(tag: str) -> list[str]:
    out = []
    for pid in _rank_pids(tag):
        try:
            out.append(Path(f"/proc/{pid}/maps").read_text())
        except OSError:
            pass
    return out


def _all_ranks_loaded(tag: str, ranks: int, library: str, proc) -> bool:
    """Until each of ``ranks`` ranks has ``library`` mapped: numpy = our imports under way
    (Python's own start-up, which no handler of ours covers, is over); libmpi = MPI starting."""
    import time

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        maps = _maps(tag)
        if len(maps) == ranks and all(library in m for m in maps):
            return True
        time.sleep(0.002)
    return False


@needs_mpiexec
@pytest.mark.slow
@pytest.mark.parametrize(("sig", "phase"), [
    (signal.SIGINT, "numpy"), (signal.SIGTERM, "numpy"), (signal.SIGUSR1, "libmpi"),
    (signal.SIGTERM, "after_1.0")], ids=["int-importing", "term-importing", "usr1-mpi-init",
                                         "term-at-1s"])
def test_a_stop_signal_while_an_mpi_job_starts_exits_3_in_one_line(
        tmp_path: Path, sig: int, phase: str) -> None:
    """A stop signal to mpiexec in a job's first seconds (it forwards SIGINT, SIGTERM and
    SIGUSR1 to every rank) while the ranks import numpy, while they start MPI (C code, where
    no Python handler runs), or a second in: the job exits 3, rank 0 says so in one line, no
    rank prints a traceback, dies of the signal or hangs, and nothing is damaged: the same
    command (with --resume once a store exists) finishes the run. (Before: exit 15 or 10, a
    worker rank ended by the signal's default action, or 11 when that hit MPI's start.)"""
    import time

    run_dir = tmp_path / "run"
    args = (str(SCENARIOS / "mpi_sleep.py"), "--run-dir", str(run_dir), "--quiet")
    tag = str(tmp_path)
    t0 = time.monotonic()
    proc = start_mpirun(3, *args, cwd=tmp_path, EVO_TEST_TAG=tag)
    if phase.startswith("after_"):
        time.sleep(max(0.0, float(phase.removeprefix("after_")) - (time.monotonic() - t0)))
    elif not _all_ranks_loaded(tag, 3, phase, proc):
        finish(proc)
        pytest.skip(f"the ranks never had {phase} loaded while starting (already done?)")
    proc.send_signal(sig)  # what a terminal's Ctrl-C, scancel or a walltime signal does
    sent = time.monotonic()
    done = finish(proc)
    took = time.monotonic() - sent
    for text in (done.stderr, done.stdout):
        for bad in ("Traceback", "KeyboardInterrupt", "Fatal Python error", "BAD TERMINATION"):
            assert bad not in text, f"{bad} on {sig!r}:\n{done.stderr}\n{done.stdout}"
    name = signal.Signals(sig).name
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert done.returncode == 3, (done.returncode, done.stderr, done.stdout)
    assert len(lines) == 1 and lines[0].startswith(f"evo_engine: stopped by {name}"), done.stderr
    assert took < 15, f"{took:.1f} s from the signal to the end of the job"
    if (run_dir / "run.zarr").exists():
        assert store_attrs(run_dir)["status"] == "stopped"
    # Nothing was damaged: the same command (with --resume once a store exists) goes on.
    again = [*args, *(["--resume"] if (run_dir / "run.zarr").exists() else [])]
    r = finish(start_mpirun(2, *again, cwd=tmp_path, EVO_TEST_SLEEP="0.001"))
    assert r.returncode == 0, r.stderr
    uids = sorted(evaluations(run_dir)["uid"].tolist())
    assert uids == list(range(60)), uids


FINALIZE_PAST_ITS_LIMIT = '''
import time
from evo_engine import Float, Space
from evo_engine.scenario import Scenario


def objective(params, ctx):
    return (params["x"] - 0.3) ** 2


def finalize(params, ctx):
    time.sleep(60)
    return {"test_loss": 0.0}


def make_scenario(preset):
    return Scenario(name="finalize_timeout", space=Space(x=Float(0, 1)), objective=objective,
                    finalize=finalize, population_size=4, max_evals=6, seed=3,
                    eval_timeout_s=1.0)
'''


@needs_mpiexec
def test_a_finalize_past_eval_timeout_ends_a_finished_mpi_run_with_0(tmp_path: Path) -> None:
    """A finalize that runs past eval_timeout_s is FAILED and the run finishes (as with local
    workers); the rank still in it is aborted, but with the run's code, not 1 (an internal
    error), and the error does not send the user to a --resume that has nothing to do."""
    scenario = tmp_path / "finalize_timeout.py"
    scenario.write_text(FINALIZE_PAST_ITS_LIMIT)
    run_dir = tmp_path / "run"
    done = finish(start_mpirun(2, str(scenario), "--run-dir", str(run_dir), "--quiet",
                               cwd=tmp_path))
    attrs = store_attrs(run_dir)
    assert attrs["status"] == "finished"
    assert "timed out after 1 s" in attrs["final"][0]["error"]
    assert "--resume" not in attrs["final"][0]["error"]
    assert done.returncode == 0, done.stderr


ONE_SLOW_WORKER = '''
import time
from evo_engine import Float, Space
from evo_engine.scenario import Scenario


def objective(params, ctx):
    time.sleep(4.0 if ctx.worker == 1 else 0.02)
    return (params["x"] - 0.3) ** 2


def make_scenario(preset):
    return Scenario(name="one_slow_worker", space=Space(x=Float(0, 1)), objective=objective,
                    population_size=4, max_evals=400, seed=3)
'''


@needs_mpiexec
def test_a_second_stop_signal_while_ranks_finalize_mpi_still_exits_3(tmp_path: Path) -> None:
    """A walltime signal twice (Slurm's TERM, then the KILL warning's, or a second scancel):
    worker rank 1 said goodbye after the first and waits in MPI_Finalize while rank 2
    finishes its evaluation. Python resets its handlers to the default at exit, so the
    second signal killed that rank (exit 15, the store left "running") instead of it
    staying ignored until the job ended with 3."""
    import time

    scenario = tmp_path / "one_slow_worker.py"
    scenario.write_text(ONE_SLOW_WORKER)
    run_dir = tmp_path / "run"
    proc = start_mpirun(3, str(scenario), "--run-dir", str(run_dir), "--quiet", cwd=tmp_path)
    wait_for_rows(run_dir, 4, proc)
    proc.send_signal(signal.SIGTERM)
    time.sleep(1.0)  # rank 1 is in MPI_Finalize, rank 2 still in its 4 s evaluation
    proc.send_signal(signal.SIGTERM)
    done = finish(proc)
    assert done.returncode == 3, done.stderr
    assert "BAD TERMINATION" not in done.stdout + done.stderr
    assert store_attrs(run_dir)["status"] == "stopped"
