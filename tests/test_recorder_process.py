"""The store's writer in a process of its own: the same store as the thread recorder writes,
errors and back-pressure reach the coordinator, and the child outlives a killed coordinator
only to keep what it was handed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from evo_engine.search.engine import Engine, EngineConfig, Migration
from evo_engine.search.messages import EvalState, Result
from evo_engine.space import Categorical, Float, Int, Space
from evo_engine.store.rundir import RunDirError, RunLock
from evo_engine.store.runstore import RunStore
from evo_engine.store.writer import Recorder
from evo_engine.store.writer_process import RecorderProcess, start_recorder

SPACE = Space(lr=Float(1e-4, 1e-1, log=True), layers=Int(1, 6),
              act=Categorical(choices=["relu", "gelu", "silu"]))
REPO = Path(__file__).resolve().parent.parent


def _store(run_dir: Path) -> RunStore:
    return RunStore.create(run_dir, attrs={"scenario": "t", "max_evals": 10_000},
                           param_kinds=SPACE.column_kinds(), dim=SPACE.dim)


def _engine() -> Engine:
    return Engine(SPACE, EngineConfig(max_evals=10_000, islands=2, population_size=4,
                                      operator="es", seed=3))


def _feed(rec, engine: Engine, n: int, start: int = 0) -> None:
    """n results finishing out of uid order, with metrics, curves, failures and a
    migration, and a snapshot half way."""
    tasks = [engine.ask(i % 2) for i in range(n)]
    for t in tasks:
        rec.record_task(t)
    order = list(range(n))[::-1] if start % 2 == 0 else list(range(n))
    for k, j in enumerate(order):
        t = tasks[j]
        i = start + k
        failed = i % 7 == 3
        _, ev = engine.tell(Result(
            uid=t.uid, worker=i % 3, fitness=None if failed else 0.5 + i / 1000,
            metrics={"mse": i / 10, **({"late": 1.5} if i >= 5 else {})},
            error="ValueError: bad" if failed else None,
            state=EvalState.FAILED if failed else EvalState.COMPLETE,
            t_start=100.0 + i, t_end=101.5 + i, curve=((1, 2.0 + i), (3, 1.0 + i))))
        rec.record(ev)
        if k == n // 2:
            rec.snapshot(engine.get_state())
    rec.record_migrations([Migration(uid=tasks[0].uid, origin=0, destination=1, accepted=True,
                                     at_eval=start + n)])


def _tables(run_dir: Path) -> dict[str, np.ndarray]:
    store = RunStore.open(run_dir)
    out: dict[str, np.ndarray] = {}
    for name in ("evaluations", "tasks", "curves", "migrations"):
        table = getattr(store, name)
        for col in table.columns:
            out[f"{name}/{col}"] = table.read(col)
    return out


def test_the_process_writes_the_store_the_thread_recorder_writes(tmp_path: Path) -> None:
    stores = {}
    for kind in ("thread", "process"):
        run_dir = tmp_path / kind
        store = _store(run_dir)
        engine = _engine()
        rec = (Recorder(store, SPACE, flush_interval=0.01) if kind == "thread"
               else RecorderProcess(store, SPACE, flush_interval=0.01))
        _feed(rec, engine, 40)
        rec.set_attrs(workers=3)
        _feed(rec, engine, 30, start=40)
        rec.finish("finished", "budget", trim=True, final=[{"uid": 1, "metrics": {"a": 2.0}}])
        stores[kind] = run_dir
    a, b = _tables(stores["thread"]), _tables(stores["process"])
    assert sorted(a) == sorted(b)
    assert len(a["evaluations/uid"]) == 70 and len(a["curves/uid"]) == 140
    for col in a:
        assert a[col].dtype == b[col].dtype, col
        assert a[col].shape == b[col].shape, col
        if a[col].dtype.kind == "f":
            np.testing.assert_array_equal(a[col], b[col], err_msg=col)
        else:
            assert a[col].tolist() == b[col].tolist(), col
    sa, sb = (RunStore.open(stores[k]) for k in ("thread", "process"))
    assert sa.latest_snapshot() == sb.latest_snapshot()
    assert sb.latest_snapshot()["log_position"] == 40 + 30 // 2 + 1
    attrs = sb.attrs
    # set_attrs goes through the writer: ensure_metrics' metric_names (written by the child
    # when "late" first appeared) and the coordinator's workers both survive.
    assert attrs["workers"] == 3 and attrs["metric_names"] == ["mse", "late"]
    assert attrs["status"] == "finished" and attrs["stop_reason"] == "budget"
    assert attrs["final"] == [{"uid": 1, "metrics": {"a": 2.0}}]


def test_flush_returns_once_the_rows_are_in_the_store(tmp_path: Path) -> None:
    store = _store(tmp_path)
    flushed: list[tuple[float, int, int]] = []
    snaps: list[tuple[str, int]] = []
    rec = RecorderProcess(store, SPACE, flush_interval=10.0, send_interval=10.0,
                          on_flush=lambda s, rows, n: flushed.append((s, rows, n)),
                          on_snapshot=lambda name, n: snaps.append((name, n)))
    engine = _engine()
    _feed(rec, engine, 12)
    rec.flush()
    assert RunStore.open(tmp_path, mode="r").evaluations.committed == 12
    assert rec.committed == 12 and flushed[-1][2] == 12 and sum(f[1] for f in flushed) == 12
    assert snaps == [("s00000001", 7)]
    rec.close()
    assert RunStore.open(tmp_path).attrs["status"] == "running"  # close leaves it alone


def test_an_error_in_the_child_reaches_the_coordinator(tmp_path: Path) -> None:
    store = _store(tmp_path)
    rec = RecorderProcess(store, SPACE)
    engine = _engine()
    task = engine.ask(0)
    rec.set_attrs(tags={"a", "b"})  # pickles, but zarr cannot write a set as JSON
    with pytest.raises(RuntimeError, match="writing the run store failed: TypeError: .*set"):
        rec.flush()
    with pytest.raises(RuntimeError, match="writing the run store failed"):
        rec.record_task(task)
    with pytest.raises(RuntimeError, match="writing the run store failed"):
        rec.close()


def test_a_child_that_dies_is_reported(tmp_path: Path) -> None:
    rec = RecorderProcess(_store(tmp_path), SPACE)
    os.kill(rec.pid, signal.SIGKILL)
    with pytest.raises(RuntimeError, match="exited unexpectedly .*-9"):
        for _ in range(200):
            rec.flush()
            time.sleep(0.01)
    with pytest.raises(RuntimeError, match="exited unexpectedly"):
        rec.close()


def test_the_child_ignores_the_signals_that_reach_a_whole_job(tmp_path: Path) -> None:
    store = _store(tmp_path)
    rec = RecorderProcess(store, SPACE)
    engine = _engine()
    _feed(rec, engine, 10)
    rec.flush()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP):
        os.kill(rec.pid, sig)
    _feed(rec, engine, 10, start=10)
    rec.finish("stopped", "signal:SIGTERM")
    assert RunStore.open(tmp_path).evaluations.committed == 20
    assert RunStore.open(tmp_path).attrs["stop_reason"] == "signal:SIGTERM"


def test_a_stopped_child_blocks_the_coordinator_instead_of_growing_its_memory(
        tmp_path: Path) -> None:
    store = _store(tmp_path)
    rec = RecorderProcess(store, SPACE, max_pending=50, send_interval=0.005)
    engine = _engine()
    tasks = [engine.ask(0) for _ in range(3000)]
    os.kill(rec.pid, signal.SIGSTOP)
    peak = [0]

    def hand_over() -> None:
        for t in tasks:
            rec.record_task(t)
            peak[0] = max(peak[0], rec.queued)

    try:
        th = threading.Thread(target=hand_over)
        th.start()
        th.join(3.0)
        assert th.is_alive(), "3,000 tasks fit through a stopped child: no back-pressure"
        assert peak[0] <= 50
    finally:
        os.kill(rec.pid, signal.SIGCONT)
    th.join(60)
    assert not th.is_alive()
    rec.close()
    assert rec.blocked_seconds > 0.5
    assert RunStore.open(tmp_path).tasks.read("uid").tolist() == [t.uid for t in tasks]


def test_the_child_keeps_the_run_locked_while_it_lives(tmp_path: Path) -> None:
    run_dir = tmp_path / "r"
    lock = RunLock(run_dir)
    lock.acquire()
    lock.claim()
    rec = RecorderProcess(_store(run_dir), SPACE, keep_fds=lock.fds())
    lock._fh.close()  # the coordinator's own handle gone (as when it is killed)
    lock._fh = None
    other = RunLock(run_dir)
    with pytest.raises(RunDirError, match="in use"):
        other.acquire(writer_grace=0.0)  # this process (named in the lock) still runs
    rec.close()
    other.acquire(writer_grace=0.0)
    other.release()


KILLED = textwrap.dedent("""
    import os, signal, sys, time
    sys.path.insert(0, {tests!r})
    from test_recorder_process import SPACE, _engine, _feed, _store
    from evo_engine.store.writer_process import RecorderProcess
    from evo_engine.store.rundir import RunLock
    from pathlib import Path
    run_dir = Path({run_dir!r})
    lock = RunLock(run_dir)
    lock.acquire()
    lock.claim()
    rec = RecorderProcess(_store(run_dir), SPACE, flush_interval=30.0, keep_fds=lock.fds())
    _feed(rec, _engine(), 25)
    time.sleep(0.5)  # the sender has sent them; the child has written none (30 s interval)
    Path({pid_file!r}).write_text(str(rec.pid))
    os.kill(rec.pid, signal.SIGSTOP)  # the writer is slow: it still has everything to write
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_a_killed_coordinators_writer_keeps_what_it_was_handed_then_frees_the_run(
        tmp_path: Path) -> None:
    run_dir, pid_file = tmp_path / "r", tmp_path / "writer.pid"
    script = KILLED.format(tests=str(REPO / "tests"), run_dir=str(run_dir),
                           pid_file=str(pid_file))
    # Not capturing its output: the writer inherits it and would keep a capture open.
    proc = subprocess.run([sys.executable, "-c", script], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == -signal.SIGKILL
    writer = int(pid_file.read_text())
    try:
        # The coordinator is gone, its (stopped) writer is not: the run stays locked ...
        with pytest.raises(RunDirError, match="still locked after 0.3 s; the lock names pid "
                                              ".*which has ended: its store writer"):
            RunLock(run_dir).acquire(writer_grace=0.3)
        # ... and a start waits for the writer instead of refusing the run.
        got: list[object] = []

        def start() -> None:
            lock = RunLock(run_dir)
            try:
                lock.acquire(writer_grace=60.0)
                got.append(lock)
            except RunDirError as exc:
                got.append(exc)

        waiting = threading.Thread(target=start)
        waiting.start()
        time.sleep(0.5)
        assert got == [], "the start did not wait for the writer"
    finally:
        os.kill(writer, signal.SIGCONT)
    waiting.join(60)
    assert len(got) == 1 and isinstance(got[0], RunLock), got
    got[0].release()
    store = RunStore.open(run_dir)
    assert store.evaluations.committed == 25
    assert sorted(store.evaluations.read("uid").tolist()) == list(range(25))
    assert store.latest_snapshot()["log_position"] == 13
    assert store.attrs["status"] == "running"  # a crash, for --resume


def test_a_zombie_coordinator_counts_as_ended(tmp_path: Path) -> None:
    from evo_engine.store.rundir import _process_runs

    child = subprocess.Popen(["true"])
    deadline = time.time() + 10
    while time.time() < deadline and _process_runs(child.pid):
        time.sleep(0.01)  # it exits, and nobody reaps it yet: a zombie
    assert not _process_runs(child.pid)
    assert os.path.exists(f"/proc/{child.pid}")  # still there, not reaped
    lock = RunLock(tmp_path)
    host = socket.gethostname()
    cases = {
        f"pid {child.pid} on {host}": True,  # the zombie: a start waits for its writer
        f"pid {os.getpid()} on {host}": False,  # alive
        f"pid {child.pid} on other-{host}": False,  # cannot tell: refuse at once
        f"pid {10 ** 20} on {host}": False,  # a damaged lock file
        "": False,
    }
    for text, gone in cases.items():
        lock.path.write_text(text)
        assert lock._holder_gone() is gone, text
    child.wait()
    assert _process_runs(os.getpid())


@pytest.mark.timeout(120)
def test_an_item_that_cannot_be_pickled_fails_the_run_instead_of_hanging_it(
        tmp_path: Path) -> None:
    store = _store(tmp_path)
    rec = RecorderProcess(store, SPACE)
    engine = _engine()
    _feed(rec, engine, 5)
    rec.set_attrs(bad=threading.Lock())
    with pytest.raises(RuntimeError, match="cannot be sent to the writer .*TypeError"):
        rec.flush()
    with pytest.raises(RuntimeError, match="cannot be sent to the writer"):
        rec.finish("finished", "budget")
    assert rec._proc.poll() is not None  # the child ended


@pytest.mark.timeout(120)
def test_a_failing_callback_fails_the_run_and_the_child_still_finishes(tmp_path: Path) -> None:
    store = _store(tmp_path)

    def on_flush(seconds: float, rows: int, committed: int) -> None:
        raise OSError(28, "No space left on device")

    rec = RecorderProcess(store, SPACE, on_flush=on_flush)
    engine = _engine()
    _feed(rec, engine, 5)
    with pytest.raises(RuntimeError, match=r"on_flush failed \(OSError: .*No space left"):
        rec.flush()
    with pytest.raises(RuntimeError, match="on_flush failed"):
        rec.close()
    assert rec._proc.poll() == 0
    assert RunStore.open(tmp_path).evaluations.committed == 5


def test_start_recorder_falls_back_to_a_thread_when_no_process_starts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    warned: list[str] = []
    rec = start_recorder(_store(tmp_path), SPACE, warned.append, fsync="never",
                         keep_fds=(), send_interval=0.01)
    assert isinstance(rec, Recorder) and rec.fsync == "never"
    assert len(warned) == 1 and "writer process" in warned[0] and "thread" in warned[0]
    rec.close()


@pytest.mark.parametrize("exits", ["before_the_message", "after_the_message"])
def test_a_child_that_cannot_start_is_found_before_anything_is_handed_over(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exits: str) -> None:
    """An interpreter that cannot import evo_engine: the run falls back to the thread.

    The child's exit and the coordinator's start-up message race in a real start; each order
    is forced here. Exiting first leaves the message in the pipe's buffer with nobody to read
    it, and the clean-up must still say why the child did not start (not "Broken pipe")."""
    import evo_engine.store.writer_process as rp

    # The shebang runs: sh no-python -c BOOTSTRAP DATA_FD BACK_FD PATH...
    script = "#!/bin/sh\nexit 5\n" if exits == "before_the_message" else (
        '#!/bin/sh\ndd bs=8 count=1 if="/dev/fd/$3" >/dev/null 2>&1\nexit 5\n')  # reads the header
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
    (tmp_path / "no-python").write_text(script)
    (tmp_path / "no-python").chmod(0o755)
    handshake = rp.RecorderProcess._handshake

    def after_the_child_exited(self: RecorderProcess, config: dict) -> None:
        if exits == "before_the_message":
            # Wait for the exit without reaping it: the exit status stays to be read.
            os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
        handshake(self, config)

    monkeypatch.setattr(rp.RecorderProcess, "_handshake", after_the_child_exited)
    warned: list[str] = []
    store = _store(tmp_path / "r")
    rec = start_recorder(store, SPACE, warned.append)
    assert isinstance(rec, Recorder)
    assert warned == ["the store's writer process did not start (exit status 5); the store "
                      "is written by a thread of the coordinator instead (it then shares the "
                      "coordinator's CPU time at high result rates)"]
    engine = _engine()
    _feed(rec, engine, 6)
    rec.finish("finished", "budget")
    assert sorted(RunStore.open(tmp_path / "r").evaluations.read("uid").tolist()) == list(range(6))


def test_a_child_that_never_answers_is_given_up_and_killed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import evo_engine.store.writer_process as rp

    (tmp_path / "hung-python").write_text("#!/bin/sh\necho $$ > \"$0.pid\"\nexec sleep 60\n")
    (tmp_path / "hung-python").chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "hung-python"))
    monkeypatch.setattr(rp, "START_TIMEOUT", 1.0)
    t0 = time.monotonic()
    with pytest.raises(OSError, match=r"did not start \(no answer within 1 s\)"):
        RecorderProcess(_store(tmp_path / "r"), SPACE)
    assert time.monotonic() - t0 < 30
    pid = int((tmp_path / "hung-python.pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped: it cannot write the store later


def test_the_child_imports_what_the_coordinator_imports_whatever_the_directory_holds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A current directory with its own evo_engine and json, and a Path on sys.path."""
    here = tmp_path / "cwd"
    (here / "evo_engine").mkdir(parents=True)
    (here / "evo_engine" / "__init__.py").write_text("raise ImportError('the wrong evo_engine')\n")
    (here / "json.py").write_text("raise ImportError('the wrong json')\n")
    monkeypatch.chdir(here)
    monkeypatch.setattr(sys, "path", [*sys.path, tmp_path / "elsewhere"])
    monkeypatch.delenv("PYTHONPATH", raising=False)
    warned: list[str] = []
    rec = start_recorder(_store(tmp_path / "r"), SPACE, warned.append)
    assert isinstance(rec, RecorderProcess), warned
    _feed(rec, _engine(), 4)
    rec.finish("finished", "budget")
    assert RunStore.open(tmp_path / "r").evaluations.committed == 4


def test_a_stop_while_the_threads_start_leaves_no_child_or_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from evo_engine.job import startup

    children: list[subprocess.Popen] = []
    real_popen, real_start = subprocess.Popen, threading.Thread.start

    def popen(*a, **k):
        children.append(real_popen(*a, **k))
        return children[-1]

    def start(thread: threading.Thread) -> None:
        if thread.name == "evo-recorder-send":
            raise startup.StopBeforeStart("SIGTERM")  # the reader has started
        real_start(thread)

    monkeypatch.setattr(subprocess, "Popen", popen)
    monkeypatch.setattr(threading.Thread, "start", start)
    before = {t.name for t in threading.enumerate()}
    with pytest.raises(startup.StopBeforeStart):
        RecorderProcess(_store(tmp_path), SPACE)
    assert len(children) == 1 and children[0].poll() is not None  # killed and reaped
    deadline = time.time() + 10
    while time.time() < deadline and "evo-recorder-back" in {
            t.name for t in threading.enumerate()} - before:
        time.sleep(0.01)
    assert "evo-recorder-back" not in {t.name for t in threading.enumerate()} - before


def test_an_unknown_fsync_policy_is_refused_before_a_child_starts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[object] = []
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: started.append(a))
    with pytest.raises(ValueError, match="fsync"):
        RecorderProcess(_store(tmp_path), SPACE, fsync="sometimes")
    assert started == []


QUICK = REPO / "tests" / "scenarios" / "quick.py"


def _main(run_dir: Path, *args: str) -> int:
    from evo_engine.cli.main import main
    from evo_engine.job.log import configure

    try:
        return main([str(QUICK), "--run-dir", str(run_dir), "--quiet", *args])
    finally:
        configure(None)


def test_a_run_writes_its_attributes_through_the_writer_process(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import evo_engine.job.run as run_module

    started: list[object] = []
    real = run_module.start_recorder

    def spy(*args, **kwargs):
        rec = real(*args, **kwargs)
        started.append(rec)
        return rec

    monkeypatch.setattr(run_module, "start_recorder", spy)
    monkeypatch.setenv("QUICK_EVALS", "12")
    assert _main(tmp_path / "r", "--workers", "2") == 0
    assert len(started) == 1 and isinstance(started[0], RecorderProcess)
    attrs = RunStore.open(tmp_path / "r").attrs
    # workers (set by the coordinator) and metric_names (by the writer, on the first
    # metric) both survive: one writer rewrites the root's attributes.
    assert attrs["workers"] == 2 and attrs["metric_names"] == ["noise"]
    assert attrs["status"] == "finished" and attrs["stop_reason"] == "finished"


def test_without_a_lock_the_run_writes_from_a_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing would keep a resumed job away from a writer that outlived its coordinator."""
    import errno
    import fcntl

    def no_flock(fh: object, op: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    spawned: list[object] = []
    real_popen = subprocess.Popen

    def popen(args, *a, **k):
        spawned.append(args)
        return real_popen(args, *a, **k)

    monkeypatch.setattr(subprocess, "Popen", popen)
    monkeypatch.setenv("QUICK_EVALS", "6")
    assert _main(tmp_path / "r", "--workers", "0") == 0
    assert spawned == []
    assert sorted(RunStore.open(tmp_path / "r").evaluations.read("uid").tolist()) == list(range(6))


def test_a_stop_while_the_writer_starts_marks_the_run_stopped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import evo_engine.job.run as run_module
    from evo_engine.job import startup

    def stopped(*args, **kwargs):
        raise startup.StopBeforeStart("SIGTERM")

    monkeypatch.setattr(run_module, "start_recorder", stopped)
    monkeypatch.setenv("QUICK_EVALS", "6")
    assert _main(tmp_path / "r", "--workers", "0") == 3
    attrs = RunStore.open(tmp_path / "r").attrs
    assert attrs["status"] == "stopped" and attrs["stop_reason"] == "signal:SIGTERM"


def test_the_writer_starts_with_vfork_and_exec_so_mpi_is_never_forked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Under mpiexec the writer starts after MPI_Init. A fork() of an MPI process copies
    # memory the network may have pinned (Open MPI warns, verbs can corrupt); CPython's
    # subprocess uses vfork + exec instead, sharing no copied page, unless one of these
    # arguments is given (a preexec_fn, a user or group change, a umask).
    calls: list[dict] = []
    real = subprocess.Popen

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr("evo_engine.store.writer_process.subprocess.Popen", spy)
    rec = RecorderProcess(_store(tmp_path / "run"), SPACE, flush_interval=0.01)
    rec.finish("finished", "budget")
    assert len(calls) == 1
    forking = {"preexec_fn", "user", "group", "extra_groups", "umask"}
    assert not {k for k, v in calls[0].items() if k in forking and v not in (None, -1)}
    assert getattr(subprocess, "_USE_VFORK", True)
