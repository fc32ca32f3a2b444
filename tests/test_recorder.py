"""The writer: snapshots on a time interval, bounded memory, and the fsync policies."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from evo_engine.search.engine import Engine, EngineConfig
from evo_engine.search.messages import Result
from evo_engine.space import Float, Space
from evo_engine.store.replay import rebuild_engine
from evo_engine.store.runstore import RunStore
from evo_engine.store.writer import Recorder, SnapshotPolicy

SPACE = Space(x=Float(0.0, 1.0), y=Float(0.0, 1.0))


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_snapshots_follow_results_but_never_more_often_than_the_gap() -> None:
    clock = FakeClock()
    p = SnapshotPolicy(every=5, interval=30.0, min_gap=10.0, clock=clock)
    due = [p.result() for _ in range(5)]
    assert due == [False] * 4 + [True]  # the first one after `every` results
    # A thousand fast results within the gap: no snapshot.
    assert not any(p.result() for _ in range(1000))
    clock.now += 10.0
    assert p.result()  # `every` passed long ago and the gap is over
    clock.now += 29.0
    assert not p.result()  # fewer than `every` results, interval not reached
    clock.now += 1.0
    assert p.result()  # the interval: one result since the last snapshot is enough


def test_fast_results_snapshot_after_max_replay_results_but_not_sooner_than_the_floor() -> None:
    clock = FakeClock()
    p = SnapshotPolicy(every=5, interval=30.0, min_gap=10.0, clock=clock, max_replay=100,
                       floor_gap=2.0)
    assert [p.result() for _ in range(5)][-1]  # the first one
    clock.now += 1.0
    assert not any(p.result() for _ in range(500))  # within the floor: however many
    clock.now += 1.0
    assert p.result()  # 501 results to replay and the floor is over
    clock.now += 2.5
    assert not any(p.result() for _ in range(99))
    assert p.result()  # the 100th result since the last snapshot


def _store_and_engine(tmp_path: Path) -> tuple[RunStore, Engine]:
    store = RunStore.create(tmp_path, attrs={"scenario": "t"}, param_kinds=SPACE.column_kinds(),
                            dim=SPACE.dim)
    return store, Engine(SPACE, EngineConfig(max_evals=10_000, population_size=4, seed=0))


def _one(engine: Engine, i: int):
    task = engine.ask(0)
    _, ev = engine.tell(Result(uid=task.uid, worker=0, fitness=float(i), t_start=i, t_end=i + 1))
    return task, ev


def test_a_slow_disk_blocks_the_coordinator_instead_of_growing_the_queue(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, engine = _store_and_engine(tmp_path)
    rec = Recorder(store, SPACE, flush_interval=0.01, max_pending=8)
    real = type(store.evaluations).append
    longest = []

    def slow(table, rows, n):
        longest.append(len(rec._items))
        time.sleep(0.05)
        real(table, rows, n)

    monkeypatch.setattr(type(store.evaluations), "append", slow)
    for i in range(60):
        task, ev = _one(engine, i)
        rec.record_task(task)
        rec.record(ev)
        assert len(rec._items) < 8
    rec.close()
    assert rec.blocked_seconds > 0
    got = RunStore.open(tmp_path).evaluations.read("fitness")
    assert got.tolist() == [float(i) for i in range(60)]


@pytest.mark.real_fsync
@pytest.mark.parametrize("policy", ["never", "snapshots", "always"])
def test_fsync_policies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy: str) -> None:
    store, engine = _store_and_engine(tmp_path)
    synced: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    rec = Recorder(store, SPACE, background=False, fsync=policy)
    for i in range(3):
        task, ev = _one(engine, i)
        rec.record_task(task)
        rec.record(ev)
    rec.flush()
    root = str(tmp_path / "run.zarr")
    chunk = f"{root}/evaluations/fitness/c/0"
    assert (chunk in synced) == (policy == "always")
    synced.clear()
    rec.snapshot(engine.get_state())
    rec.flush()
    if policy == "never":
        assert synced == []
    else:
        # The rows, then the snapshot, then the pointer that names it.
        pointer = synced.index(f"{root}/snapshots/zarr.json")
        snap = synced.index(f"{root}/snapshots/s00000001/c/0")
        assert snap < pointer
        if policy == "snapshots":
            assert synced.index(f"{root}/evaluations/zarr.json") < snap
    rec.close()
    assert RunStore.open(tmp_path).latest_snapshot()["log_position"] == 3


def test_unknown_fsync_policy_is_refused(tmp_path: Path) -> None:
    store, _ = _store_and_engine(tmp_path)
    with pytest.raises(ValueError, match="fsync"):
        Recorder(store, SPACE, background=False, fsync="sometimes")


def _block_snapshot_writes(
        monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event, list[int]]:
    """Snapshot writes wait for ``release``; ``started`` is set when the first one begins, and
    each written snapshot's ``log_position`` is appended to the list."""
    started, release = threading.Event(), threading.Event()
    real = RunStore.write_snapshot
    written: list[int] = []

    def slow_snapshot(self, state, fsync=False):
        started.set()
        assert release.wait(30)
        written.append(state["log_position"])
        return real(self, state, fsync)

    monkeypatch.setattr(RunStore, "write_snapshot", slow_snapshot)
    return started, release, written


def test_rows_after_a_snapshot_do_not_wait_for_it_to_be_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, engine = _store_and_engine(tmp_path)
    rec = Recorder(store, SPACE, flush_interval=0.01)
    started, release, _ = _block_snapshot_writes(monkeypatch)
    warnings: list[str] = []
    for i in range(5):
        task, ev = _one(engine, i)
        rec.record_task(task)
        rec.record(ev)
    rec.snapshot(engine.get_state())
    assert started.wait(30)
    for i in range(5, 12):
        task, ev = _one(engine, i)
        rec.record_task(task)
        rec.record(ev)
    deadline = time.monotonic() + 30
    while store.evaluations.committed < 12 and time.monotonic() < deadline:
        time.sleep(0.01)
    # All rows are on disk while the snapshot before them is still being written.
    assert store.evaluations.committed == 12 and not release.is_set()
    assert RunStore.open(tmp_path).latest_snapshot() is None
    # A kill now (rows written, their snapshot not): a resume replays all twelve results.
    killed = tmp_path / "killed"
    shutil.copytree(tmp_path / "run.zarr", killed / "run.zarr")
    rebuilt, _ = rebuild_engine(RunStore.open(killed), SPACE, engine.config, warnings.append)
    assert rebuilt.n_finished == 12 and not rebuilt.in_flight and warnings == []
    assert rebuilt.get_state() == engine.get_state()
    release.set()
    rec.close()
    reopened = RunStore.open(tmp_path)
    assert reopened.evaluations.read("fitness").tolist() == [float(i) for i in range(12)]
    snap = reopened.latest_snapshot()
    assert snap["log_position"] == 5 and snap["tasks_position"] == 5
    assert snap["engine"]["n_finished"] == 5


def test_a_snapshot_waiting_behind_a_slow_one_is_replaced_by_a_newer_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, engine = _store_and_engine(tmp_path)
    rec = Recorder(store, SPACE, flush_interval=0.01)
    started, release, written = _block_snapshot_writes(monkeypatch)
    for i in range(9):
        task, ev = _one(engine, i)
        rec.record_task(task)
        rec.record(ev)
        if i in (2, 5, 8):
            rec.snapshot(engine.get_state())
            if i == 2:
                assert started.wait(30)
            else:  # wait until the writer has handed it over
                deadline = time.monotonic() + 30
                while store.evaluations.committed < i + 1 and time.monotonic() < deadline:
                    time.sleep(0.01)
                time.sleep(0.05)
    release.set()
    rec.close()
    assert written == [3, 9] and rec.snapshots_superseded == 1
    assert RunStore.open(tmp_path).latest_snapshot()["engine"]["n_finished"] == 9


def test_a_failing_snapshot_write_reaches_the_coordinator(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, engine = _store_and_engine(tmp_path)
    rec = Recorder(store, SPACE, flush_interval=0.01)

    def broken(self, state, fsync=False):
        raise OSError("disk full")

    monkeypatch.setattr(RunStore, "write_snapshot", broken)
    task, ev = _one(engine, 0)
    rec.record_task(task)
    rec.record(ev)
    rec.snapshot(engine.get_state())
    with pytest.raises(RuntimeError, match="disk full"):
        rec.flush()
    with pytest.raises(RuntimeError, match="disk full"):
        rec.close()


def test_every_row_holds_its_own_task_and_result(tmp_path: Path) -> None:
    """Each column of a row belongs to that row's uid, with several rows per flush written
    out of uid order: a column shifted by one row within a flush is caught on every row."""
    import numpy as np

    from evo_engine.space import Categorical, Int

    space = Space(lr=Float(1e-4, 1e-1, log=True), n=Int(1, 6), act=Categorical(["a", "b"]))
    store = RunStore.create(tmp_path, attrs={"scenario": "t"},
                            param_kinds=space.column_kinds(), dim=space.dim)
    # Self-adaptation: every offspring draws its own σ vector, so rows differ in each column.
    engine = Engine(space, EngineConfig(max_evals=10_000, islands=2, population_size=3,
                                        operator="es", operator_settings={"adaptation": "self"},
                                        seed=1))
    rec = Recorder(store, space, background=False)
    tasks, results = {}, {}
    for _ in range(4):  # four flushes
        batch = [engine.ask(i % 2) for i in range(6)]
        for t in batch:
            tasks[t.uid] = t
            rec.record_task(t)
        for k, t in enumerate(reversed(batch)):  # results arrive out of uid order
            result = Result(uid=t.uid, worker=k % 3, fitness=t.uid / 7,
                            metrics={"mse": t.uid / 3}, t_start=t.uid, t_end=t.uid + 0.5)
            _, ev = engine.tell(result)
            assert ev is not None
            results[t.uid] = (result, ev)
            rec.record(ev)
        rec.flush()
    rec.close()
    assert len({t.seed for t in tasks.values()}) == len(tasks), "seeds must tell rows apart"
    st = RunStore.open(tmp_path)
    ev_cols = {c: st.evaluations.read(c) for c in (
        "uid", "seed", "island", "genome", "operator", "parents", "worker", "fitness",
        "t_end", "accepted", "metrics/mse", "params/lr", "params/n", "params/act", "sigma")}
    assert sorted(ev_cols["uid"].tolist()) == sorted(tasks)
    for row, uid in enumerate(ev_cols["uid"].tolist()):
        task, (result, ev) = tasks[uid], results[uid]
        assert ev_cols["seed"][row] == task.seed, f"row {row} (uid {uid}) has another's seed"
        assert ev_cols["island"][row] == task.island
        assert np.array_equal(ev_cols["genome"][row], task.genome)
        assert ev_cols["operator"][row] == task.operator
        assert [p for p in ev_cols["parents"][row].tolist() if p >= 0] == list(task.parents[:2])
        assert ev_cols["worker"][row] == result.worker
        assert ev_cols["fitness"][row] == result.fitness
        assert ev_cols["t_end"][row] == result.t_end
        assert ev_cols["accepted"][row] == ev.accepted
        assert ev_cols["metrics/mse"][row] == result.metrics["mse"]
        for name in ("lr", "n", "act"):
            assert ev_cols[f"params/{name}"][row] == task.params[name]
        sigma = task.info.get("sigma")
        if sigma is None:
            assert np.isnan(ev_cols["sigma"][row]).all()
        else:
            assert np.array_equal(ev_cols["sigma"][row], sigma), f"row {row}: another's σ"
    t_cols = {c: st.tasks.read(c) for c in ("uid", "seed", "island", "genome", "told_before")}
    assert sorted(t_cols["uid"].tolist()) == sorted(tasks)
    for row, uid in enumerate(t_cols["uid"].tolist()):
        task = tasks[uid]
        assert t_cols["seed"][row] == task.seed, f"task row {row} (uid {uid}) has another's seed"
        assert t_cols["island"][row] == task.island
        assert np.array_equal(t_cols["genome"][row], task.genome)
        assert t_cols["told_before"][row] == task.told_before
