"""Costs per result and memory that must not grow with the run or the worker count (issue 30,
items 4 and 5): each structure is checked directly, never by timing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from evo_engine.search.messages import EvalState, Task
from evo_engine.transports.base import Deadlines


def test_deadlines_come_out_earliest_first_and_cleared_ones_never() -> None:
    d = Deadlines()
    for w, at in [(0, 5.0), (1, 3.0), (2, 9.0), (3, 3.0)]:
        d.set(w, at)
    d.clear(3)
    d.set(0, 7.0)  # a new task on worker 0: its old deadline no longer counts
    assert d.earliest() == 3.0 and len(d) == 3 and 3 not in d
    assert d.expired(2.9) == []
    assert d.expired(7.0) == [1, 0]
    assert d.earliest() == 9.0 and d.expired(100.0) == [2] and d.earliest() is None
    assert not d


def test_deadlines_hold_what_is_busy_not_every_task_ever_sent() -> None:
    # Each task sets a deadline and its result clears it long before it is due: the lazily
    # deleted entries must not pile up over a run (a timeout of hours, a million tasks).
    d = Deadlines()
    for i in range(64 * 1500):
        d.set(i % 64, 1e9 + i)
        if i % 64 == 63:
            for w in range(64):
                d.clear(w)
    assert len(d) == 0 and len(d._heap) <= 2 * 64 + 64  # noqa: SLF001 - the bound itself


@pytest.mark.slow
def test_a_dying_local_worker_does_not_hold_up_the_others(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # Its replacement loads for seconds (a data set onto a GPU: minutes); poll used to wait
    # for it, so the other workers' results and reports, and stop signals, waited too.
    import slow_restart

    from evo_engine.transports.base import WorkerSpec
    from evo_engine.transports.local import LocalTransport

    mark = tmp_path / "slow"
    monkeypatch.setenv("EVO_TEST_SLOW_START", str(mark))
    monkeypatch.setenv("EVO_TEST_SLOW_START_S", "4")

    def task(uid: int, x: float) -> Task:
        return Task(uid=uid, island=0, genome=(0.0,), params={"x": x}, seed=uid)

    def results(tr: LocalTransport, n: int) -> list:
        out: list = []
        end = time.monotonic() + 60
        while len(out) < n and time.monotonic() < end:
            out.extend(tr.poll(0.05))
        return out

    tr = LocalTransport(WorkerSpec(objective=slow_restart.objective), 2)
    try:
        tr.start()
        mark.touch()
        tr.submit(0, task(0, -1.0))
        [died] = results(tr, 1)
        assert died.uid == 0 and died.state is EvalState.FAILED
        tr.submit(1, task(1, 2.0))
        [other] = results(tr, 1)
        assert (other.uid, other.fitness) == (1, 2.0)
        assert 0 in tr._starting, "worker 1 was served while worker 0 was still loading"  # noqa: SLF001
        tr.submit(0, task(2, 3.0))  # waits in the transport until the replacement is ready
        [late] = results(tr, 1)
        assert (late.uid, late.worker, late.fitness) == (2, 0, 3.0) and tr.restarts == 1
    finally:
        tr.close()


def test_a_worker_killed_for_its_time_limit_is_not_waited_for(monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    # The coordinator waited up to 5 s for the killed process to go (one stuck in the kernel,
    # on a GPU driver or a hung file system, takes that long) while every other worker's
    # results waited; only its exit code was wanted, and a timed-out result does not show it.
    import slow_restart

    from evo_engine.transports import local
    from evo_engine.transports.base import WorkerSpec
    from evo_engine.transports.local import LocalTransport

    waited: list[float] = []
    reap = local._reap  # noqa: SLF001

    def slow_reap(proc, timeout: float) -> bool:  # a process the kernel takes 3 s to free
        waited.append(timeout)
        time.sleep(3.0)
        return True

    tr = LocalTransport(WorkerSpec(objective=slow_restart.objective, eval_timeout_s=0.5), 1)
    try:
        tr.start()
        monkeypatch.setattr(local, "_reap", slow_reap)
        tr.submit(0, Task(uid=0, island=0, genome=(0.0,), params={"x": float("inf")}, seed=0))
        out: list = []
        end = time.monotonic() + 30
        while not out and time.monotonic() < end:
            out.extend(tr.poll(0.05))
        assert [r.state for r in out] == [EvalState.FAILED] and "timed out" in out[0].error
        assert waited == []  # no wait at all (a timed assertion would flake on a busy CI)
    finally:
        monkeypatch.setattr(local, "_reap", reap)
        tr.close()
