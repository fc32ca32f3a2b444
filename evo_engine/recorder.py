"""The run store's single writer: tasks, evaluations, migrations and snapshots, in order.

The coordinator hands each item over at once (a list append under a lock) and never waits
on disk; a writer thread flushes every ``flush_interval`` seconds, so a finished evaluation
is durable within about that long. Items are written in the order they were handed over,
and a snapshot is written only after every row handed over before it, so a snapshot taken
after N results always matches the first N rows of the evaluation log.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from evo_engine.engine import Evaluation, Migration
from evo_engine.records import Task, jsonable
from evo_engine.space import Space
from evo_engine.store import RunStore


class _Snapshot:
    __slots__ = ("state",)

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state


class Recorder:
    """Turns tasks, evaluations, migrations and engine states into store writes."""

    def __init__(self, store: RunStore, space: Space, flush_interval: float = 0.5,
                 background: bool = True, on_snapshot: Callable[[str, int], None] | None = None
                 ) -> None:
        self.store = store
        self.space = space
        self.flush_interval = flush_interval
        self.on_snapshot = on_snapshot
        if store.tasks is not None:
            # Stores written before exact replay lack the column; their rows read -1.
            store.tasks.add_column("told_before", "i8")
        self._items: list[Any] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._loop, name="evo-recorder", daemon=True)
            self._thread.start()

    # -- handing over (coordinator thread) -------------------------------------------------

    def _put(self, item: Any) -> None:
        self._raise_if_failed()
        with self._lock:
            self._items.append(item)

    def record_task(self, task: Task) -> None:
        self._put(task)

    def record(self, ev: Evaluation) -> None:
        self._put(ev)

    def record_migrations(self, migrations: Sequence[Migration]) -> None:
        for m in migrations:
            self._put(m)

    def snapshot(self, engine_state: dict[str, Any]) -> None:
        """Queue a snapshot of the engine as it is now (after every item handed over so far)."""
        self._put(_Snapshot(engine_state))

    # -- writing (writer thread, or the caller of flush) ----------------------------------

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"writing the run store failed: {self._error}") from self._error

    def _loop(self) -> None:
        while not self._closed:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            try:
                self._write_pending()
            except BaseException as exc:  # noqa: BLE001 - surfaced to the coordinator
                self._error = exc
                return

    def flush(self) -> None:
        """Write everything handed over so far, now."""
        self._raise_if_failed()
        self._write_pending()

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        self.flush()

    def _write_pending(self) -> None:
        with self._write_lock:
            with self._lock:
                items, self._items = self._items, []
            tasks: list[Task] = []
            evals: list[Evaluation] = []
            migrations: list[Migration] = []
            for item in items:
                if isinstance(item, _Snapshot):
                    self._write_rows(tasks, evals, migrations)
                    tasks, evals, migrations = [], [], []
                    self._write_snapshot(item.state)
                elif isinstance(item, Evaluation):
                    evals.append(item)
                elif isinstance(item, Task):
                    tasks.append(item)
                elif isinstance(item, Migration):
                    migrations.append(item)
                else:
                    raise TypeError(f"the recorder cannot store {item!r}")
            self._write_rows(tasks, evals, migrations)

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

    def _write_snapshot(self, engine_state: dict[str, Any]) -> None:
        st = self.store
        n = st.evaluations.committed
        if engine_state["n_finished"] != n:
            raise RuntimeError(
                f"snapshot after {engine_state['n_finished']} results but {n} rows in the log"
            )
        name = st.write_snapshot({
            "engine": engine_state, "log_position": n,
            "migrations_position": st.migrations.committed,
            "tasks_position": st.tasks.committed,
        })
        if self.on_snapshot is not None:
            self.on_snapshot(name, n)

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
        }, len(tasks))

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
