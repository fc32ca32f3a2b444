"""No crash window: a run stopped or killed at any instant of its first seconds continues.

Each case starts a run, sends SIGTERM or SIGKILL after a delay inside the start-up (imports,
scenario, run directory, store, worker start, first evaluations), then runs the same command
again, with ``--resume`` when ``run.zarr`` exists (as the SLURM script does), and checks
that the run finishes its whole budget with every uid once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

REPO = Path(__file__).resolve().parent.parent
QUICK = REPO / "tests" / "scenarios" / "quick.py"
BUDGET = 24


def evo_cmd(*args: object) -> list[str]:
    return [sys.executable, "-m", "evo_engine", *map(str, args)]


def committed_uids(run_dir: Path) -> np.ndarray:
    z = zarr.open(str(run_dir / "run.zarr"), mode="r")
    return z["evaluations/uid"][: z["evaluations"].attrs["committed"]]


def _when(run_dir: Path, trigger: str, t0: float, timeout: float = 180) -> None:
    """Wait for a moment of the start: a delay, or a file of the run directory appearing."""
    if trigger.startswith("after_"):
        time.sleep(max(float(trigger.removeprefix("after_")) - (time.time() - t0), 0.0))
        return
    end = time.time() + timeout
    while time.time() < end:
        if trigger == "creating" and run_dir.is_dir() and any(
                p.name.startswith(".run.zarr.creating-") for p in run_dir.iterdir()):
            return
        if trigger == "first_row" and (run_dir / "run.zarr").exists():
            try:
                if len(committed_uids(run_dir)):
                    return
            except Exception:  # noqa: BLE001 - being written
                pass
        elif trigger in (".lock", "log.jsonl", "run.zarr") and (run_dir / trigger).exists():
            return
        time.sleep(0.002)
    raise AssertionError(f"the run never reached {trigger}")


# Delays from the start, and the moments the run directory gains its files (the lock, the
# log, the store under its temporary name, the store, the first recorded result).
TRIGGERS = ("after_0.05", "after_0.3", "after_0.8", "after_1.5", ".lock", "log.jsonl",
            "creating", "run.zarr", "first_row")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["term", "kill"])
@pytest.mark.parametrize("trigger", TRIGGERS)
def test_stop_at_any_instant_of_the_start_then_continue(tmp_path: Path, sig: int,
                                                        trigger: str) -> None:
    env = {**os.environ, "QUICK_EVALS": str(BUDGET), "QUICK_SLEEP": "0.15",
           "QUICK_CHECKPOINT": "5"}
    run_dir = tmp_path / "run"
    base = [QUICK, "--workers", 1, "--run-dir", run_dir, "--quiet"]
    t0 = time.time()
    proc = subprocess.Popen(evo_cmd(*base), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _when(run_dir, trigger, t0)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    if sig == signal.SIGTERM:
        # Exit 3, or killed before Python reached evo_engine's first line: then nothing exists.
        if proc.returncode == -signal.SIGTERM:
            assert trigger.startswith("after_") and not run_dir.exists(), \
                "SIGTERM killed the process after evo_engine had started"
        else:
            assert proc.returncode == 3, (proc.returncode, err)
            assert "Traceback" not in err
    else:
        assert proc.returncode == -signal.SIGKILL
    again = base + (["--resume"] if (run_dir / "run.zarr").exists() else [])
    env["QUICK_SLEEP"] = "0.01"
    r = subprocess.run(evo_cmd(*again), env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, (again, r.stderr)
    uids = committed_uids(run_dir).tolist()
    assert sorted(uids) == list(range(BUDGET)), "the continued run lost or repeated evaluations"
    z = zarr.open(str(run_dir / "run.zarr"), mode="r")
    assert z.attrs["status"] == "finished"
    leftovers = [p.name for p in run_dir.iterdir() if p.name.startswith((".run.zarr.", ".trash-"))]
    assert not leftovers


def test_sigterm_while_workers_start_exits_3_and_resume_finishes(tmp_path: Path) -> None:
    """A stop during the (slow) worker start: the store exists, is marked stopped, resumes."""
    env = {**os.environ, "QUICK_EVALS": "12", "QUICK_SLEEP": "0.01", "QUICK_LOAD_DELAY": "30"}
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(evo_cmd(QUICK, "--workers", 1, "--run-dir", run_dir, "--quiet"),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    end = time.time() + 60
    while time.time() < end and not (run_dir / "run.zarr").exists():
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    assert "stopped by SIGTERM before the run got going" in err
    z = zarr.open(str(run_dir / "run.zarr"), mode="r")
    assert z.attrs["status"] == "stopped" and z.attrs["stop_reason"] == "signal:SIGTERM"
    env["QUICK_LOAD_DELAY"] = "0"
    r = subprocess.run(evo_cmd(QUICK, "--workers", 1, "--run-dir", run_dir, "--quiet",
                               "--resume"), env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert sorted(committed_uids(run_dir).tolist()) == list(range(12))


def test_leftovers_of_a_never_started_run_are_taken_as_new(tmp_path: Path) -> None:
    """A .lock, a log.jsonl and a half-made store under its temporary name: a plain start
    (and --resume) begins the run instead of refusing the directory."""
    env = {**os.environ, "QUICK_EVALS": "6"}
    for resume in (False, True):
        run_dir = tmp_path / f"run{int(resume)}"
        run_dir.mkdir()
        (run_dir / ".lock").write_text("pid 1 on elsewhere")
        (run_dir / "log.jsonl").write_text("")
        (run_dir / ".run.zarr.creating-12345").mkdir()
        (run_dir / ".run.zarr.creating-12345" / "zarr.json").write_text("{")
        args = [QUICK, "--workers", 0, "--run-dir", run_dir, "--quiet"]
        r = subprocess.run(evo_cmd(*args, *(["--resume"] if resume else [])), env=env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert sorted(committed_uids(run_dir).tolist()) == list(range(6))
        assert not (run_dir / ".run.zarr.creating-12345").exists()


def test_a_store_with_nothing_recorded_is_taken_as_new(tmp_path: Path) -> None:
    from evo_engine.scenario import load_scenario
    from evo_engine.store.runstore import RunStore

    scenario = load_scenario(QUICK)
    for resume in (False, True):
        run_dir = tmp_path / f"run{int(resume)}"
        RunStore.create(run_dir, attrs={"max_evals": 6},
                        param_kinds={n: p.kind for n, p in scenario.space.items()},
                        dim=scenario.space.dim)
        args = [QUICK, "--workers", 0, "--run-dir", run_dir]
        r = subprocess.run(evo_cmd(*args, *(["--resume"] if resume else [])),
                           env={**os.environ, "QUICK_EVALS": "6"}, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert "had recorded nothing yet" in r.stderr
        assert sorted(committed_uids(run_dir).tolist()) == list(range(6))


@pytest.mark.mpi
@pytest.mark.parametrize("trigger", ["after_0.5", ".lock", "run.zarr"])
def test_mpi_job_stopped_while_starting_exits_3_and_continues(tmp_path: Path,
                                                               trigger: str) -> None:
    from test_mpi import MPIEXEC, finish, start_mpirun

    if not MPIEXEC.exists():
        pytest.skip(f"no mpiexec at {MPIEXEC}")
    run_dir = tmp_path / "run"
    args = [str(QUICK), "--run-dir", str(run_dir), "--quiet"]
    t0 = time.time()
    proc = start_mpirun(3, *args, cwd=tmp_path, QUICK_EVALS="20", QUICK_SLEEP="0.1")
    _when(run_dir, trigger, t0)
    proc.send_signal(signal.SIGTERM)  # to mpiexec, which forwards it to every rank
    r = finish(proc)  # the job ends (no rank left waiting)
    # 3, said once by rank 0: no worker rank dies of the signal (before: 15 or 143) and rank 0
    # does not leave before its workers (before: 9 or 137 when MPICH's launcher killed them).
    assert r.returncode == 3, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    assert "BAD TERMINATION" not in r.stdout + r.stderr, r.stdout
    assert r.stderr.count("stopped by SIGTERM") == 1, "said once, by rank 0"
    if (run_dir / "run.zarr").exists():
        attrs = zarr.open_group(str(run_dir / "run.zarr"), mode="r").attrs.asdict()
        assert attrs["status"] in ("stopped", "running") and attrs["jobs"] == 1
        assert len(committed_uids(run_dir)) < 20  # stopped, not run to its end
    again = args + (["--resume"] if (run_dir / "run.zarr").exists() else [])
    r = finish(start_mpirun(3, *again, cwd=tmp_path, QUICK_EVALS="20", QUICK_SLEEP="0.01"))
    assert r.returncode == 0, r.stderr
    assert sorted(committed_uids(run_dir).tolist()) == list(range(20))


def test_a_stop_that_lands_in_an_extension_modules_import_still_exits_3() -> None:
    """numpy turns any failure of its C import (here, the stop signal raised inside it) into
    an ImportError of its own: after a stop, that is the stop, not a crash with a traceback."""
    from evo_engine.job import startup

    previous = startup.install()
    try:
        try:
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(1.0)  # the handler raises here
            except startup.StopBeforeStart:
                # What a C extension does: its own error, the stop not even in the chain.
                raise ImportError("PyCapsule_Import could not import module \"datetime\"") from None
        except ImportError as exc:
            stop = startup.interruption(exc)
        assert isinstance(stop, startup.StopBeforeStart) and stop.signame == "SIGTERM"
    finally:
        startup.restore(previous)
    startup.install()  # a new start forgets the old stop
    try:
        assert startup.interruption(ImportError("no module named torch")) is None
    finally:
        startup.restore(previous)
        startup.started()


def test_the_command_exits_3_when_a_stop_comes_out_as_another_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    import evo_engine.job.run as run_module
    from evo_engine.cli.main import main
    from evo_engine.job import startup

    def execute(opts, print_fn=print):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1.0)
        except startup.StopBeforeStart:
            raise ImportError("PyCapsule_Import could not import module \"datetime\"") from None
        raise AssertionError("the signal did not interrupt")

    monkeypatch.setattr(run_module, "execute", execute)
    assert main([str(QUICK), "--run-dir", str(tmp_path / "r")]) == 3
    err = capsys.readouterr().err
    assert "stopped by SIGTERM before the run got going" in err
    assert "Traceback" not in err and "internal error" not in err


def test_a_stop_while_the_writer_process_starts_is_not_held_until_it_is_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer's start is awaited (up to START_TIMEOUT) with stop signals deliverable: a
    SIGTERM while a slow child starts interrupts the wait and the child is killed, instead of
    the signal waiting until the writer is up (before: up to 120 s)."""
    import threading

    from evo_engine.job import startup
    from evo_engine.space import Float, Space
    from evo_engine.store import writer_process
    from evo_engine.store.runstore import RunStore

    up = tmp_path / "child_got_past_its_slow_start"
    slow = f"import time; time.sleep(20); open({str(up)!r}, 'w'); " + writer_process._BOOTSTRAP
    monkeypatch.setattr(writer_process, "_BOOTSTRAP", slow)
    space = Space(x=Float(0.0, 1.0))
    store = RunStore.create(tmp_path, attrs={"max_evals": 4}, dim=1, param_kinds={"x": "float"})
    previous = startup.install()
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM))
    recorder = None
    try:
        timer.start()
        with pytest.raises(startup.StopBeforeStart), startup.held():
            recorder = writer_process.RecorderProcess(store, space)
    finally:
        timer.cancel()
        startup.restore(previous)
        startup.started()
        if recorder is not None:
            recorder.close()
    assert recorder is None  # interrupted inside the start, not after the child was up
    assert not up.exists()  # and the child was killed while it started, not awaited


def test_a_real_error_after_a_stop_signal_is_still_an_internal_error() -> None:
    """Only what a signal can cause (the stop itself, an extension's failed import) becomes
    exit 3; any other error after a stop is a bug and must say so."""
    from evo_engine.job import startup

    previous = startup.install()
    try:
        with pytest.raises(startup.StopBeforeStart):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1.0)
        assert startup.interruption(ValueError("a real bug")) is None
        assert startup.interruption(KeyError("column")) is None
        assert isinstance(startup.interruption(ImportError("numpy")), startup.StopBeforeStart)
    finally:
        startup.restore(previous)
        startup.started()


def test_rank_0_of_an_mpi_job_keeps_a_stop_until_its_mpi_is_up(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Under mpiexec rank 0 only records a stop signal until ``mpi_started`` (a rank leaving
    before MPI starts leaves the others waiting in MPI_Init), raises it there, and a real
    error meanwhile stays an error: nothing was interrupted, so an ImportError is no stop."""
    from evo_engine.job import startup
    from evo_engine.transports import launch

    monkeypatch.setenv("PMI_SIZE", "3")
    monkeypatch.setenv("PMI_RANK", "0")
    monkeypatch.setitem(launch._early, "stop", False)
    previous = startup.install()
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.05)  # the handler ran (and raised nothing)
        startup.install()  # the CLI installs again after its imports: the stop is kept
        assert startup.interruption(ImportError("no module named torch")) is None
        with pytest.raises(startup.StopBeforeStart) as stop:
            startup.mpi_started()
        assert stop.value.signame == "SIGUSR1"
        assert not startup.stopped_early()  # raised at a clean point: an ordinary exit 3
        os.kill(os.getpid(), signal.SIGTERM)  # a second signal while stopping the workers
        time.sleep(0.05)  # is only recorded: nothing raised here
    finally:
        startup.restore(previous)
        startup.started()


def test_a_worker_rank_ignores_stop_signals_from_its_first_line(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker rank leaves the stop to rank 0 (nothing raised, no exit), but notes it: then
    it does not wait in MPI_Init for more than EARLY_STOP_TIMEOUT s (a rank the signal
    killed in Python's own start-up would never come)."""
    from evo_engine.job import startup
    from evo_engine.transports import launch

    monkeypatch.setenv("PMI_SIZE", "3")
    monkeypatch.setenv("PMI_RANK", "2")
    monkeypatch.setitem(launch._early, "stop", False)
    previous = startup.install()
    try:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            os.kill(os.getpid(), sig)
        time.sleep(0.05)  # the handlers ran and raised nothing
        assert launch._early["stop"]
    finally:
        startup.restore(previous)
    import faulthandler

    calls: list[tuple] = []
    monkeypatch.setattr(faulthandler, "dump_traceback_later",
                        lambda *a, **k: calls.append((a, k)))
    monkeypatch.setattr(faulthandler, "cancel_dump_traceback_later",
                        lambda: calls.append(("cancel",)))
    with launch.mpi_init_guard(7.0):
        pass
    assert calls[0][0] == (7.0,) and calls[0][1]["exit"] is True and calls[1] == ("cancel",)
