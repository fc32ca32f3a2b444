"""The run store's single writer: tasks, evaluations, migrations and snapshots, in order.

In a run this recorder lives in a child process of the coordinator
(``evo_engine.store.writer_process``), so none of its threads shares the coordinator's GIL; the
coordinator's side there has the same interface. Tests and tools may use it directly.

The coordinator hands each item over at once (a list append under a lock) and does not
wait on disk; a writer thread flushes every ``flush_interval`` seconds, writing everything
handed over since the last flush as one append per table, so a finished evaluation is on
disk (in the page cache: it survives a kill -9) within about that long whatever the result
rate. Rows are written in the order they were handed over. A snapshot records the table
positions it matches when the writer reaches it (all rows handed over before it are written
by then, so a snapshot taken after N results always matches the first N rows of the log),
and is then encoded and written by a thread of its own (``_SnapshotWriter``): rows handed
over after it never wait for a snapshot's JSON encoding, compression or write, which take
hundreds of milliseconds for a large state. Only the newest snapshot waiting is written (a
newer one makes an older one that has not started moot).

Memory is bounded: when ``max_pending`` items wait (the disk is slower than the results),
handing over blocks until the writer has taken them (back-pressure on the coordinator).

``fsync`` says when written files are forced to stable storage (what survives a node crash
or power loss, not just a killed process): ``"never"`` (the operating system decides),
``"snapshots"`` (the default: every file written since the last snapshot — chunks, markers,
the arrays' ``zarr.json`` a resize rewrote, new columns and their directory entries, the
root's attributes —, then the snapshot,
then its pointer, so the newest snapshot and the rows it covers survive a node crash), or
``"always"`` (after every flush). The rows a snapshot covers are synced by the writer when it
reaches the snapshot, before it writes a later row into the same files.

When to snapshot is ``SnapshotPolicy``'s call: on a time interval, not per result.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evo_engine.search.engine import Evaluation, Migration
from evo_engine.search.messages import Task, jsonable
from evo_engine.space import Space
from evo_engine.store.runstore import RunStore, fsync_files

FSYNC_POLICIES = ("never", "snapshots", "always")
MAX_PENDING = 20_000
"""Items handed over and not yet taken by the writer before handing over blocks."""


def check_fsync(policy: str) -> None:
    """The one check of an ``fsync`` policy (the thread and the process recorder share it)."""
    if policy not in FSYNC_POLICIES:
        raise ValueError(f"fsync must be one of {FSYNC_POLICIES}, got {policy!r}")


class SnapshotPolicy:
    """When the coordinator takes a snapshot: every ``interval`` seconds (with a result since
    the last one), or after ``every`` results but never sooner than ``min_gap`` seconds after
    the previous one, or after ``max_replay`` results but never sooner than ``floor_gap``
    seconds. Snapshots only shorten the replay a resume does (results since the latest one
    are replayed from the log, about 0.1-0.3 ms each), so their rate is a cost, not a
    safety, setting: a time interval keeps it flat however fast results come, and
    ``max_replay`` bounds a resume's replay when results come faster than ``max_replay``
    per ``min_gap`` (a 10 s gap at 1,600 results/s left 16,000 to replay: 4.5 s)."""

    def __init__(self, every: int, interval: float = 30.0, min_gap: float = 10.0,
                 clock: Callable[[], float] = time.monotonic, max_replay: int = 5_000,
                 floor_gap: float = 2.0) -> None:
        self.every = every
        self.interval = interval
        self.min_gap = min_gap
        self.max_replay = max_replay
        self.floor_gap = floor_gap
        self.clock = clock
        self.since = 0
        self.last = clock()
        self.first = True
        """No snapshot yet: the first one comes after ``every`` results, gap or not."""

    def result(self) -> bool:
        """One more result; True when a snapshot is due now (and counted as taken)."""
        self.since += 1
        now = self.clock()
        waited = now - self.last
        if (waited >= self.interval
                or (self.since >= self.every and (self.first or waited >= self.min_gap))
                or (self.since >= self.max_replay and waited >= self.floor_gap)):
            self.since, self.last, self.first = 0, now, False
            return True
        return False


_DIRTY = "_files_to_sync"
"""Key of a snapshot job (never stored) listing the table files to sync before it."""


class _Snapshot:
    __slots__ = ("state",)

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state


class _Attrs:
    """Run attributes to set, in order with the rows: the root's attributes are written by
    the writer only (zarr rewrites the whole attribute document, so two writers would drop
    each other's keys)."""

    __slots__ = ("attrs",)

    def __init__(self, attrs: dict[str, Any]) -> None:
        self.attrs = attrs


class _SnapshotWriter:
    """Writes snapshots one at a time, newest first, on a thread of its own (or, without
    one, when ``run_pending`` is called); at most one waits while another is written, so
    memory stays bounded however often snapshots are handed over."""

    def __init__(self, write: Callable[[dict[str, Any]], None], background: bool) -> None:
        self._write = write
        self._waiting: dict[str, Any] | None = None
        self._busy = False
        self._closed = False
        self.error: BaseException | None = None
        self.superseded = 0
        """Snapshots dropped unwritten because a newer one came first."""
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._loop, name="evo-snapshots", daemon=True)
            self._thread.start()

    def hand(self, snapshot: dict[str, Any]) -> None:
        with self._cond:
            if self._waiting is not None:
                # Its files still get synced: the newer snapshot covers their rows too.
                self.superseded += 1
                snapshot[_DIRTY] = self._waiting.get(_DIRTY, []) + snapshot.get(_DIRTY, [])
            self._waiting = snapshot
            self._cond.notify_all()

    def _take(self) -> dict[str, Any] | None:
        with self._cond:
            job, self._waiting = self._waiting, None
            self._busy = job is not None
            return job

    def _done(self) -> None:
        with self._cond:
            self._busy = False
            self._cond.notify_all()

    def run_pending(self) -> None:
        """Write the waiting snapshot now, on the caller's thread (no thread of its own)."""
        job = self._take()
        try:
            if job is not None:
                self._write(job)
        finally:
            self._done()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._waiting is None and not self._closed:
                    self._cond.wait()
                if self._waiting is None:
                    return
            try:
                self.run_pending()
            except BaseException as exc:  # noqa: BLE001 - surfaced to the coordinator
                self.error = exc
                return

    def wait(self) -> None:
        """Until no snapshot is waiting or being written (or writing them failed)."""
        if self._thread is None:
            self.run_pending()
            return
        with self._cond:
            while ((self._waiting is not None or self._busy) and self.error is None
                   and self._thread.is_alive()):
                self._cond.wait(0.1)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        else:
            self.run_pending()


class HandOver:
    """The coordinator's side of a recorder: each call hands one item over, in order, and
    returns without waiting for the disk. ``Recorder`` writes the items from threads of this
    process; ``evo_engine.store.writer_process.RecorderProcess`` from a child process."""

    def put(self, item: Any) -> None:
        """Hand over one item (a task, an evaluation, a migration, or a snapshot or run
        attributes as made by ``snapshot`` and ``set_attrs``)."""
        raise NotImplementedError

    def record_task(self, task: Task) -> None:
        self.put(task)

    def record(self, ev: Evaluation) -> None:
        self.put(ev)

    def record_migrations(self, migrations: Sequence[Migration]) -> None:
        for m in migrations:
            self.put(m)

    def snapshot(self, engine_state: dict[str, Any]) -> None:
        """A snapshot of the engine as it is now (after every item handed over so far)."""
        self.put(_Snapshot(engine_state))

    def set_attrs(self, **attrs: Any) -> None:
        """Set run attributes, written after every item handed over so far."""
        self.put(_Attrs(attrs))


class Recorder(HandOver):
    """Turns tasks, evaluations, migrations and engine states into store writes."""

    def __init__(self, store: RunStore, space: Space, flush_interval: float = 0.25,
                 background: bool = True, on_snapshot: Callable[[str, int], None] | None = None,
                 fsync: str = "snapshots", max_pending: int = MAX_PENDING,
                 on_flush: Callable[[float, int, int], None] | None = None) -> None:
        check_fsync(fsync)
        self.store = store
        self.space = space
        self.flush_interval = flush_interval
        self.on_snapshot = on_snapshot
        self.on_flush = on_flush
        """Called after each write with (seconds, evaluation rows written, rows committed)."""
        self.fsync = fsync
        self.max_pending = max_pending
        self.blocked_seconds = 0.0
        """Time the coordinator spent waiting for the writer (back-pressure)."""
        if store.tasks is not None:
            # Stores written before exact replay lack the column; their rows read -1.
            store.tasks.add_column("told_before", "i8")
        self._items: list[Any] = []
        self._lock = threading.Lock()
        self._taken = threading.Condition(self._lock)
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._started = time.monotonic()
        self._error: BaseException | None = None
        self._snapshots = _SnapshotWriter(self._write_snapshot, background)
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._loop, name="evo-recorder", daemon=True)
            self._thread.start()

    # -- handing over (coordinator thread) -------------------------------------------------

    def put(self, item: Any) -> None:
        self._raise_if_failed()
        with self._lock:
            self._items.append(item)
            if len(self._items) < self.max_pending or self._thread is None:
                return
            # Back-pressure: the disk is behind; wait until the writer takes the queue.
            t0 = time.perf_counter()
            self._wake.set()
            while len(self._items) >= self.max_pending and self._error is None \
                    and self._thread.is_alive():
                self._taken.wait(0.1)
            self.blocked_seconds += time.perf_counter() - t0
        self._raise_if_failed()

    @property
    def committed(self) -> int:
        """Evaluation rows committed to the store so far."""
        return self.store.evaluations.committed

    @property
    def queued(self) -> int:
        """Items handed over and not yet taken by the writer."""
        return len(self._items)

    # -- writing (writer thread, or the caller of flush) ----------------------------------

    def _raise_if_failed(self) -> None:
        if self._error is None and self._snapshots.error is not None:
            self._error = self._snapshots.error
        if self._error is not None:
            raise RuntimeError(f"writing the run store failed: {self._error}") from self._error

    def _loop(self) -> None:
        while not self._closed:
            # A flush that took long (a slow disk) is followed by the next one at once, so
            # the rows waiting are at most about one flush interval plus one write old.
            self._wake.wait(max(0.0, self.flush_interval - (time.monotonic() - self._started)))
            self._wake.clear()
            try:
                self._write_pending()
            except BaseException as exc:  # noqa: BLE001 - surfaced to the coordinator
                self._error = exc
                return

    def flush(self) -> None:
        """Write everything handed over so far (snapshots included), now."""
        self._raise_if_failed()
        self._write_pending()
        self._snapshots.wait()
        self._raise_if_failed()

    def finish(self, status: str, stop_reason: str, trim: bool = False, **attrs: Any) -> None:
        """Write everything handed over, then mark the store (``RunStore.close``)."""
        self.close()
        self.store.close(status, stop_reason, trim=trim, **attrs)
        if self.fsync != "never":  # the status and a trim's resized arrays
            fsync_files(self.store.take_dirty())

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        self._raise_if_failed()
        self._write_pending()
        self._snapshots.close()
        self._raise_if_failed()

    @property
    def snapshots_superseded(self) -> int:
        """Snapshots never written because a newer one was handed over before they started."""
        return self._snapshots.superseded

    def _write_pending(self) -> None:
        with self._write_lock:
            self._started = time.monotonic()
            with self._lock:
                items, self._items = self._items, []
                self._taken.notify_all()
            t0, rows = time.perf_counter(), self.committed
            tasks: list[Task] = []
            evals: list[Evaluation] = []
            migrations: list[Migration] = []
            for item in items:
                if isinstance(item, _Snapshot):
                    self._write_rows(tasks, evals, migrations)
                    tasks, evals, migrations = [], [], []
                    self._snapshots.hand(self._positions(item.state))
                elif isinstance(item, _Attrs):
                    self._write_rows(tasks, evals, migrations)
                    tasks, evals, migrations = [], [], []
                    self.store.set_attrs(**item.attrs)
                elif isinstance(item, Evaluation):
                    evals.append(item)
                elif isinstance(item, Task):
                    tasks.append(item)
                elif isinstance(item, Migration):
                    migrations.append(item)
                else:
                    raise TypeError(f"the recorder cannot store {item!r}")
            self._write_rows(tasks, evals, migrations)
            if self.fsync == "always" and items:
                self._sync_tables()
            if self.on_flush is not None and items:
                committed = self.committed
                self.on_flush(time.perf_counter() - t0, committed - rows, committed)
        if self._thread is None:
            self._snapshots.run_pending()  # no threads: the snapshot after this flush's rows

    def _sync_tables(self) -> None:
        fsync_files(self.store.take_dirty())

    def _write_rows(self, tasks: list[Task], evals: list[Evaluation],
                    migrations: list[Migration]) -> None:
        # Tasks first: an evaluation's task row is always committed no later than its result.
        if tasks:
            self._write_tasks(tasks)
        if evals:
            # Curves before their evaluations: a crash between the two leaves curve rows of
            # uncommitted evaluations at the table's end, which --resume cuts off.
            self._write_curves(evals)
            self._write_evaluations(evals)
        if migrations:
            self._write_migrations(migrations)

    def _positions(self, engine_state: dict[str, Any]) -> dict[str, Any]:
        """The snapshot as stored: the state and the table positions it matches (writer
        thread, once every row handed over before the snapshot is written)."""
        st = self.store
        n = st.evaluations.committed
        if engine_state["n_finished"] != n:
            raise RuntimeError(
                f"snapshot after {engine_state['n_finished']} results but {n} rows in the log"
            )
        # The files holding the rows it covers (synced by the snapshot thread before the
        # snapshot is written: a later flush may have replaced one by then, with a file
        # holding those rows and more).
        dirty = self._dirty_files() if self.fsync != "never" else []
        return {"engine": engine_state, "log_position": n,
                "migrations_position": st.migrations.committed,
                "tasks_position": st.tasks.committed, _DIRTY: dirty}

    def _dirty_files(self) -> list[Path]:
        # Chunks and markers, and every metadata file a write changed: the arrays' zarr.json
        # a resize rewrote, new columns (their directories too) and the root's attributes.
        return self.store.take_dirty()

    def _write_snapshot(self, snapshot: dict[str, Any]) -> None:
        dirty = snapshot.pop(_DIRTY, [])
        if self.fsync != "never":
            # The rows the snapshot covers reach the disk before the snapshot names them.
            fsync_files(dirty)
        name = self.store.write_snapshot(snapshot, fsync=self.fsync != "never")
        if self.on_snapshot is not None:
            self.on_snapshot(name, snapshot["log_position"])

    @staticmethod
    def _parents(rows: Sequence[tuple[int, ...]]) -> np.ndarray:
        out = np.full((len(rows), 2), -1, dtype=np.int64)
        for i, p in enumerate(rows):
            out[i, : len(p[:2])] = p[:2]
        return out

    def _write_tasks(self, tasks: list[Task]) -> None:
        self.store.tasks.append({
            "uid": [t.uid for t in tasks],
            "island": [t.island for t in tasks],
            "seed": [t.seed for t in tasks],
            "operator": [t.operator for t in tasks],
            "parents": self._parents([t.parents for t in tasks]),
            "genome": np.stack([t.genome for t in tasks]),
            "info": [json.dumps(jsonable(t.info)) if t.info else "" for t in tasks],
            "reevaluation_of": [t.reevaluation_of for t in tasks],
            "told_before": [t.told_before for t in tasks],
            **self._pbt_columns(self.store.tasks, tasks),
        }, len(tasks))

    @staticmethod
    def _pbt_columns(table: Any, tasks: Sequence[Task]) -> dict[str, list[int]]:
        """PBT intervals' parent checkpoint and start step (``search/pbt.py``); created with the
        first PBT row, so runs without PBT keep their columns."""
        if "step" not in table.columns and all(t.step < 0 for t in tasks):
            return {}
        table.add_column("pbt_parent", "i8")
        table.add_column("step", "i8")
        return {"pbt_parent": [t.pbt_parent for t in tasks], "step": [t.step for t in tasks]}

    def _write_evaluations(self, evals: list[Evaluation]) -> None:
        n = len(evals)
        metric_names: list[str] = []
        for ev in evals:
            for k in ev.result.metrics:
                if k not in metric_names:
                    metric_names.append(k)
        self.store.ensure_metrics(metric_names)
        rows: dict[str, object] = {
            "uid": [ev.task.uid for ev in evals],
            "island": [ev.task.island for ev in evals],
            "state": [int(ev.state) for ev in evals],
            "fitness": [np.nan if ev.result.fitness is None or ev.error else ev.result.fitness
                        for ev in evals],
            "worker": [ev.result.worker for ev in evals],
            "t_start": [ev.result.t_start for ev in evals],
            "t_end": [ev.result.t_end for ev in evals],
            "seed": [ev.task.seed for ev in evals],
            "operator": [ev.task.operator for ev in evals],
            "error": [ev.error or "" for ev in evals],
            "accepted": [ev.accepted for ev in evals],
            "parents": self._parents([ev.task.parents for ev in evals]),
            "genome": np.stack([ev.task.genome for ev in evals]),
        }
        for name, p in self.space.items():
            # An inactive (conditional) parameter is absent from params: masked in the store.
            masked = "" if p.kind == "categorical" else np.nan
            rows[f"params/{name}"] = [ev.task.params.get(name, masked) for ev in evals]
        for m in metric_names:
            rows[f"metrics/{m}"] = [ev.result.metrics.get(m, np.nan) for ev in evals]
        batches = [ev.result.batch for ev in evals]
        if "batch" in self.store.evaluations.columns or any(b >= 0 for b in batches):
            # The uid of each row's batch (-1: not batched); created with the first batched
            # row, so runs that never batch keep their columns (and their write cost).
            self.store.evaluations.add_column("batch", "i8")
            rows["batch"] = batches
        sigmas = [ev.task.info.get("sigma") for ev in evals]
        if any(s is not None for s in sigmas):
            self.store.evaluations.add_column("sigma", "f8", (self.space.dim,))
            rows["sigma"] = np.stack([
                np.full(self.space.dim, np.nan) if s is None else np.asarray(s, dtype=np.float64)
                for s in sigmas
            ])
        rows.update(self._pbt_columns(self.store.evaluations, [ev.task for ev in evals]))
        self.store.evaluations.append(rows, n)

    def _write_curves(self, evals: list[Evaluation]) -> None:
        points = [(ev.task.uid, step, value) for ev in evals for step, value in ev.result.curve]
        if not points:
            return
        uid, step, value = zip(*points)
        self.store.require_curves().append({"uid": uid, "step": step, "value": value},
                                           len(points))

    def _write_migrations(self, migrations: list[Migration]) -> None:
        self.store.migrations.append({
            "uid": [m.uid for m in migrations],
            "origin": [m.origin for m in migrations],
            "destination": [m.destination for m in migrations],
            "accepted": [m.accepted for m in migrations],
            "at_eval": [m.at_eval for m in migrations],
        }, len(migrations))
