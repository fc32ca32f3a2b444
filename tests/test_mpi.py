"""End-to-end runs under a real ``mpiexec`` (the venv's MPICH), oversubscribed on purpose.

Every run has a hard timeout: a rank that hangs (in a receive, in ``MPI_Finalize``) turns into
a failure instead of a stuck test suite, and the whole process group is killed.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import procs
import pytest
import zarr

from evo_engine.search.messages import EvalState, Result, Task, frozen_genome
from evo_engine.transports.launch import mpi_world_size, srun_tasks_without_pmi
from evo_engine.transports.mpi import (
    let_the_launcher_read,
    result_from_message,
    result_message,
    task_from_message,
    task_message,
    unread_bytes,
)

pytestmark = pytest.mark.mpi

MPIEXEC = Path(sys.executable).parent / "mpiexec"
SCENARIOS = Path(__file__).resolve().parent / "scenarios"
TIMEOUT = 120
BUDGET = 60  # tests/scenarios/mpi_sleep.py

needs_mpiexec = pytest.mark.skipif(not MPIEXEC.exists(), reason=f"no mpiexec at {MPIEXEC}")


def start_mpirun(ranks: int, *args: str, cwd: Path, **environ: str) -> subprocess.Popen[str]:
    """Start ``mpiexec -n ranks python -m evo_engine ARGS`` in its own process group."""
    env = dict(os.environ, **environ)
    env["PATH"] = f"{MPIEXEC.parent}{os.pathsep}{env.get('PATH', '')}"
    cmd = [str(MPIEXEC), "-n", str(ranks), sys.executable, "-m", "evo_engine", *args]
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(proc: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    """Wait for mpiexec; a hang past TIMEOUT kills the process group and fails the test."""
    return procs.finish(proc, TIMEOUT)


def mpirun(ranks: int, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return finish(start_mpirun(ranks, *args, cwd=cwd))


def wait_for_event(run_dir: Path, event: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + TIMEOUT
    log = run_dir / "log.jsonl"
    while time.monotonic() < deadline and proc.poll() is None:
        if log.exists() and f'"{event}"' in log.read_text():
            return
        time.sleep(0.1)
    finish(proc)
    pytest.fail(f"no {event} event in {log}")


def store_attrs(run_dir: Path) -> dict:
    return zarr.open_group(str(run_dir / "run.zarr"), mode="r").attrs.asdict()


def evaluations(run_dir: Path) -> dict[str, np.ndarray]:
    table = zarr.open_group(str(run_dir / "run.zarr"), mode="r")["evaluations"]
    n = int(table.attrs["committed"])
    return {name: np.asarray(table[name][:n]) for name in
            ("uid", "worker", "state", "error", "metrics/rank", "metrics/on_cpu",
             "metrics/worker_calls")}


def migrations(run_dir: Path) -> dict[str, np.ndarray]:
    table = zarr.open_group(str(run_dir / "run.zarr"), mode="r")["migrations"]
    n = int(table.attrs["committed"])
    return {name: np.asarray(table[name][:n]) for name in ("uid", "origin", "destination")}


# -- without mpiexec -------------------------------------------------------------------------


@pytest.mark.parametrize(("environ", "size"), [
    ({}, 1),
    ({"PMI_SIZE": "5", "PMI_RANK": "0"}, 5),
    ({"OMPI_COMM_WORLD_SIZE": "3"}, 3),
    ({"MV2_COMM_WORLD_SIZE": "2"}, 2),
    ({"PMIX_RANK": "0", "SLURM_STEP_NUM_TASKS": "4"}, 4),
    ({"SLURM_NTASKS": "8"}, 1),  # a batch script running plain python is not an MPI launch
    ({"PMI_SIZE": "junk"}, 1),
])
def test_launch_is_detected_from_the_environment(environ: dict[str, str], size: int) -> None:
    assert mpi_world_size(environ) == size


@pytest.mark.parametrize(("environ", "tasks"), [
    ({"SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "32"}, 32),  # srun without --mpi
    ({"SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "1"}, 0),  # srun -n 1: one run, fine
    ({"SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "4", "PMIX_RANK": "2"}, 0),  # --mpi=pmix
    ({"SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "4", "PMI_SIZE": "4", "PMI_RANK": "1"}, 0),
    ({"SLURM_NTASKS": "8"}, 0),  # the batch script itself
    ({"SLURM_STEP_NUM_TASKS": "4", "OMPI_COMM_WORLD_SIZE": "4"}, 0),  # mpiexec in a step
])
def test_srun_tasks_without_a_process_manager_interface_are_found(
        environ: dict[str, str], tasks: int) -> None:
    assert srun_tasks_without_pmi(environ) == tasks


def test_srun_without_pmi_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    # `srun -n 32 python -m evo_engine ...` on a cluster whose Slurm has MpiDefault=none:
    # no task sees a PMI, so each took itself for a single run: one became the run, the
    # other 31 failed on its lock one by one ("in use by pid ..."), or, on separate
    # directories, 32 runs started. Each task now says what is missing, exit 2.
    env = {**os.environ, "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "32"}
    for name in ("PMI_SIZE", "PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE"):
        env.pop(name, None)
    r = subprocess.run([sys.executable, "-m", "evo_engine", str(SCENARIOS.parent.parent / "scenarios/sphere.py"),
                        "--workers", "0", "--run-dir", str(tmp_path / "r")], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "srun" in r.stderr and "--mpi=pmix" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "r").exists()


def test_tasks_and_results_survive_the_wire_format() -> None:
    task = Task(uid=7, island=1, genome=frozen_genome([0.2, 0.4]), params={"x": 0.2}, seed=99,
                operator="ga", parents=(1, 2))
    got = task_from_message(pickle.loads(pickle.dumps(task_message(task))))
    assert (got.uid, got.island, got.params, got.seed, got.operator) == (7, 1, {"x": 0.2}, 99, "ga")
    assert (got.step, got.pbt_parent) == (-1, -1)  # not a PBT interval
    # A PBT interval: the worker builds its checkpoint paths and steps from these.
    interval = Task(uid=9, island=0, genome=frozen_genome([0.1]), params={"x": 0.1}, seed=5,
                    operator="pbt:exploit", info={"member": 2, "interval": 3, "donor": 1},
                    pbt_parent=4, step=6)
    got = task_from_message(pickle.loads(pickle.dumps(task_message(interval))))
    assert (got.uid, got.pbt_parent, got.step, got.info) == (9, 4, 6, {"interval": 3})
    result = Result(uid=7, worker=3, fitness=None, metrics={"m": 1.0}, error="boom",
                    t_start=1.0, t_end=2.0, state=EvalState.FAILED, curve=((1, 0.5),))
    back = result_from_message(pickle.loads(pickle.dumps(result_message(result))))
    assert back.state is EvalState.FAILED
    assert (back.uid, back.worker, back.fitness, back.metrics, back.error, back.curve) == (
        7, 3, None, {"m": 1.0}, "boom", ((1, 0.5),))


# -- under mpiexec -----------------------------------------------------------------------------


@needs_mpiexec
def test_one_rank_falls_back_to_local_workers(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = mpirun(1, str(SCENARIOS / "mpi_sleep.py"), "--workers", "2", "--run-dir",
                  str(run_dir), "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    ev = evaluations(run_dir)
    assert ev["uid"].size == BUDGET
    assert set(ev["worker"].tolist()) == {0, 1}
    assert set(ev["metrics/rank"][ev["state"] == EvalState.COMPLETE].tolist()) == {0.0}


@needs_mpiexec
@pytest.mark.parametrize("ranks", [3, 5])
def test_mpi_run_records_the_budget_on_every_worker_rank(tmp_path: Path, ranks: int) -> None:
    run_dir = tmp_path / "run"
    proc = mpirun(ranks, str(SCENARIOS / "mpi_sleep.py"), "--run-dir", str(run_dir), "--quiet",
                  cwd=tmp_path)
    # mpiexec's exit code is 0 only if every rank exited 0.
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr

    ev = evaluations(run_dir)
    assert ev["uid"].size == BUDGET
    assert sorted(ev["uid"].tolist()) == list(range(BUDGET))  # no uid lost, none twice
    workers = ranks - 1
    assert set(ev["worker"].tolist()) == set(range(workers))  # every worker rank did work

    complete = ev["state"] == EvalState.COMPLETE
    # Worker w is rank w + 1, and the objective saw a CPU device through ctx.
    assert np.array_equal(ev["metrics/rank"][complete], ev["worker"][complete] + 1.0)
    assert np.all(ev["metrics/on_cpu"][complete] == 1.0)
    # The per-worker cache persists across evaluations.
    assert ev["metrics/worker_calls"][complete].max() > 1

    # Planned failures (uid % 9 == 4) are recorded with the remote traceback; the run went on.
    failed = ev["state"] == EvalState.FAILED
    assert sorted(ev["uid"][failed].tolist()) == [u for u in range(BUDGET) if u % 9 == 4]
    for text in ev["error"][failed]:
        assert "planned failure" in text and "rank" in text and "Traceback" in text
    assert complete.sum() == BUDGET - failed.sum()

    mig = migrations(run_dir)
    assert mig["uid"].size > 0
    assert np.all(mig["origin"] != mig["destination"])
    assert set(mig["origin"].tolist()) == {0, 1}

    started = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()
               if '"worker_started"' in line]
    assert sorted(e["worker"] for e in started) == list(range(workers))
    assert all(e["device"] == "cpu" for e in started)
    assert sorted(e["worker_rank"] for e in started) == list(range(1, workers + 1))
    assert all(e["rank"] == 0 for e in started), "the coordinator's bound rank is not overwritten"


@needs_mpiexec
@pytest.mark.parametrize(("scenario", "prepare", "needle"), [
    ("does_not_exist.py", None, "does not exist"),
    ("mpi_sleep.py", "non-empty", "is not empty"),
    ("mpi_bad_workers.py", None, "could not load the objective"),
])
def test_bad_input_exits_2_on_every_rank_without_hanging(
    tmp_path: Path, scenario: str, prepare: str | None, needle: str
) -> None:
    run_dir = tmp_path / "run"
    if prepare == "non-empty":
        run_dir.mkdir()
        (run_dir / "notes.txt").write_text("mine")
    proc = mpirun(3, str(SCENARIOS / scenario), "--run-dir", str(run_dir), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr
    if prepare == "non-empty":
        assert [p.name for p in run_dir.iterdir() if p.name != ".lock"] == ["notes.txt"]


@needs_mpiexec
def test_an_error_on_the_coordinator_aborts_the_job(tmp_path: Path) -> None:
    proc = mpirun(3, str(SCENARIOS / "mpi_coordinator_crash.py"), "--run-dir",
                  str(tmp_path / "run"), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "coordinator crashed on purpose" in proc.stderr
    assert "aborting the MPI job" in proc.stderr


@needs_mpiexec
def test_a_walltime_signal_stops_every_rank_with_code_3(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = start_mpirun(3, str(SCENARIOS / "mpi_sleep.py"), "--run-dir", str(run_dir),
                        "--quiet", cwd=tmp_path, EVO_TEST_SLEEP="0.2")
    wait_for_event(run_dir, "run_started", proc)
    proc.send_signal(signal.SIGTERM)  # mpiexec forwards it to every rank, as Slurm does
    done = finish(proc)
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    attrs = store_attrs(run_dir)
    assert (attrs["status"], attrs["stop_reason"]) == ("stopped", "signal:SIGTERM")


@needs_mpiexec
def test_workers_stuck_in_long_evaluations_are_aborted_after_the_store_is_closed(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "run"
    proc = start_mpirun(3, str(SCENARIOS / "mpi_sleep.py"), "--run-dir", str(run_dir),
                        "--quiet", cwd=tmp_path, EVO_TEST_SLEEP="60")
    wait_for_event(run_dir, "run_started", proc)
    proc.send_signal(signal.SIGTERM)
    done = finish(proc)  # the 30-90 s evaluations are not waited for
    assert done.returncode == 3, done.stderr
    assert "still busy" in done.stderr and "aborting the MPI job" in done.stderr
    assert store_attrs(run_dir)["status"] == "stopped"


@needs_mpiexec
def test_a_worker_that_does_not_receive_never_holds_up_rank_0(tmp_path: Path) -> None:
    # tests/mpi_stall.py: a 2 MiB batch (far above the eager limit) goes to a rank that does
    # not receive until rank 0 has answered another worker's report and taken its result.
    # A blocking send would keep rank 0 inside submit_batch until that rank gives up (20 s).
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    env["PATH"] = f"{MPIEXEC.parent}{os.pathsep}{env.get('PATH', '')}"
    script = Path(__file__).resolve().parent / "mpi_stall.py"
    proc = subprocess.Popen([str(MPIEXEC), "-n", "3", sys.executable, str(script),
                             str(tmp_path / "flag")], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    out = finish(proc)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    # The late rank gives up after 20 s; an answer within 10 s (a loaded machine included)
    # can only come from a rank 0 that went on while the batch waited.
    assert got["submit_batch_s"] < 10, got
    assert got["quick_round_trip_s"] < 10, got
    assert got["reports"] == [[1, 1, 0.5]]
    assert got["uids"] == [1, 10, 11, 12, 13]
    assert got["sizes"] == [0] + [(2 << 20) // 4] * 4  # the batch arrived whole


def test_an_abort_waits_until_the_launcher_has_read_the_report(tmp_path: Path) -> None:
    """The launcher's proxy drops a rank's unread output when the abort kills the job: the
    report must be read before MPI_Abort; a pipe nobody reads bounds the wait, and a file
    (where nothing is lost) is not waited for."""
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, b"Traceback: coordinator crashed\n")
        assert unread_bytes(write_fd) == 31
        reader = threading.Timer(0.3, lambda: os.read(read_fd, 100))
        reader.start()
        started = time.monotonic()
        let_the_launcher_read(timeout=5.0, fds=(write_fd,))
        waited = time.monotonic() - started
        reader.join()
        assert 0.25 < waited < 4.0
        assert unread_bytes(write_fd) == 0
        os.write(write_fd, b"x")
        started = time.monotonic()
        let_the_launcher_read(timeout=0.2, fds=(write_fd,))
        assert time.monotonic() - started >= 0.19
        assert unread_bytes(write_fd) == 1
    finally:
        os.close(read_fd)
        os.close(write_fd)
    with open(tmp_path / "log", "wb") as fh:
        fh.write(b"unread?")
        fh.flush()
        started = time.monotonic()
        let_the_launcher_read(timeout=2.0, fds=(fh.fileno(),))
        assert time.monotonic() - started < 0.5
        assert unread_bytes(fh.fileno()) == 0


@needs_mpiexec
def test_a_stop_read_by_a_batch_member_report_ends_that_rank_at_once(tmp_path: Path) -> None:
    # A worker rank evaluating a batch whose members report (ASHA) reads the STOP in place of
    # a DECISION. It must then say goodbye after sending the batch's results, as it does after
    # a single task; waiting for another STOP left rank 0 to abort it after the 10 s drain.
    run_dir = tmp_path / "run"
    proc = start_mpirun(3, str(SCENARIOS / "batched.py"), "--run-dir", str(run_dir),
                        "--progress", "none", cwd=tmp_path, BATCHED_ASHA="1",
                        BATCHED_SLEEP="0.3", BATCHED_EVALS="40")
    wait_for_event(run_dir, "run_started", proc)
    time.sleep(1.0)  # every worker rank is inside a batch, between two reports
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    done = finish(proc)
    took = time.monotonic() - signalled
    assert done.returncode == 3, done.stderr
    assert "still busy" not in done.stderr, done.stderr
    assert took < 8, took
    assert store_attrs(run_dir)["status"] == "stopped"
