"""The local transport's worker processes: deaths, helpers that outlive them, lost sends."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest

from evo_engine.search.messages import EvalState, Result, Task
from evo_engine.transports.base import WorkerSpec, WorkerStartError
from evo_engine.transports.local import LocalTransport


def _task(uid: int, mode: str = "ok", x: float = 1.0, **extra: object) -> Task:
    return Task(uid=uid, island=0, genome=(0.0,), params={"x": x, "mode": mode, **extra},
                seed=uid)


def objective(params: dict, ctx: object) -> float:
    """Spawned workers import this module to find it (pickled by reference)."""
    if params["mode"] == "die_leaving_helper":
        # A helper the objective forked (a data loader, a pool) inherits the worker's pipe
        # and lives on after the worker is killed (out of memory, a segfault).
        pid = os.fork()
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        with open(params["helper_pid"], "w") as fh:
            fh.write(str(pid))
        os.kill(os.getpid(), signal.SIGKILL)
    return float(params["x"])


def _kill_helper(pid_file: Path) -> None:
    """Kill the helper process a test objective forked (its pid in ``pid_file``), if any."""
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def _results(tr: LocalTransport, n: int, within: float) -> list[Result]:
    out: list[Result] = []
    end = time.monotonic() + within
    while len(out) < n and time.monotonic() < end:
        out.extend(tr.poll(0.05))
    return out


@pytest.mark.slow
def test_a_dead_worker_is_noticed_while_a_helper_it_forked_holds_its_pipe(
        tmp_path: Path) -> None:
    # The death was noticed only when the pipe closed, i.e. when the helper exited (30 s
    # here; never, for a helper that waits on its dead parent): the task stayed RUNNING and
    # the worker served nothing meanwhile.
    helper = tmp_path / "helper.pid"
    tr = LocalTransport(WorkerSpec(objective=objective), 2)
    try:
        tr.start()
        tr.submit(0, _task(0, "die_leaving_helper", helper_pid=str(helper)))
        tr.submit(1, _task(1, x=2.0))
        t0 = time.monotonic()
        got = {r.uid: r for r in _results(tr, 2, within=10)}
        assert sorted(got) == [0, 1], f"worker 0's death was not noticed: {sorted(got)}"
        # (Nor may reaping it wait on a pipe the helper holds: the coordinator waited 5 s.)
        assert time.monotonic() - t0 < 3.0
        assert got[0].state is EvalState.FAILED and "worker died" in (got[0].error or "")
        assert (got[1].state, got[1].fitness) == (EvalState.COMPLETE, 2.0)
        tr.submit(0, _task(2, x=3.0))  # the replacement serves the next task
        [after] = _results(tr, 1, within=30)
        assert (after.uid, after.worker, after.fitness) == (2, 0, 3.0)
    finally:
        tr.close()
        _kill_helper(helper)


@pytest.mark.slow
def test_a_worker_that_dies_while_loading_leaving_a_helper_fails_the_start_at_once(
        tmp_path: Path) -> None:
    helper = tmp_path / "helper.pid"
    scenario = tmp_path / "forks_then_dies.py"
    scenario.write_text(
        "import os, time\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    time.sleep(30)\n"
        "    os._exit(0)\n"
        f"open({str(helper)!r}, 'w').write(str(pid))\n"
        "os._exit(1)\n")
    tr = LocalTransport(WorkerSpec(scenario_path=str(scenario)), 1, start_timeout=60)
    t0 = time.monotonic()
    try:
        with pytest.raises(WorkerStartError, match="exited while starting"):
            tr.start()
        assert time.monotonic() - t0 < 20, "the start waited for the helper, not the worker"
    finally:
        tr.close()
        _kill_helper(helper)


@pytest.mark.slow
def test_a_task_sent_to_a_worker_that_died_idle_is_run_by_its_replacement() -> None:
    # The worker died between tasks (the out-of-memory killer picks the process with the
    # largest cache, busy or not). The task sent to it never started, so it is not the
    # task's fault: it used to come back FAILED "worker died while evaluating".
    tr = LocalTransport(WorkerSpec(objective=objective), 1)
    try:
        [info] = tr.start()
        os.kill(info.pid, signal.SIGKILL)
        proc = tr._procs[0]  # noqa: SLF001
        assert proc is not None
        proc.join(5)
        tr.submit(0, _task(7, x=4.0))
        [r] = _results(tr, 1, within=30)
        assert (r.uid, r.state, r.fitness) == (7, EvalState.COMPLETE, 4.0), r.error
        assert tr.restarts == 1
    finally:
        tr.close()


@pytest.mark.slow
@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_a_stop_signal_while_a_worker_process_boots_does_not_kill_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, signame: str) -> None:
    # Ctrl-C reaches the whole process group, a batch system's SIGTERM every process of the
    # job. A worker ignores both (the coordinator stops it), but only from its first line:
    # before that, in Python's start-up and while its objective's module loads, the signal
    # killed it (a KeyboardInterrupt traceback on the terminal, or a replacement worker that
    # "exited while starting again").
    (tmp_path / "slow_import_objective.py").write_text(
        "import time\ntime.sleep(3)\n\ndef objective(params, ctx):\n    return 1.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import slow_import_objective  # noqa: PLC0415 - a module made for this test

    tr = LocalTransport(WorkerSpec(objective=slow_import_objective.objective), 1,
                        start_timeout=30)
    try:
        tr._spawn(0)  # noqa: SLF001 - start one process, then signal it while it boots
        proc = tr._procs[0]  # noqa: SLF001
        assert proc is not None and proc.pid is not None
        time.sleep(1.0)
        os.kill(proc.pid, getattr(signal, signame))
        info = tr._await_ready(0)  # noqa: SLF001
        assert info.pid == proc.pid
    finally:
        tr.close()
