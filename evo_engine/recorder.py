"""Batches finished evaluations into the run store, off the coordinator's hot path.

The coordinator hands over each finished evaluation at once (a list append under a lock);
a writer thread flushes the batch every ``flush_interval`` seconds, so a finished
evaluation is durable within about that long while the coordinator never waits on disk.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from evo_engine.engine import Evaluation, Migration
from evo_engine.space import Space
from evo_engine.store import RunStore


class Recorder:
    """Turns Evaluations and Migrations into store rows and writes them in batches."""

    def __init__(self, store: RunStore, space: Space, flush_interval: float = 0.5,
                 background: bool = True) -> None:
        self.store = store
        self.space = space
        self.flush_interval = flush_interval
        self._evals: list[Evaluation] = []
        self._migrations: list[Migration] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._loop, name="evo-recorder", daemon=True)
            self._thread.start()

    def record(self, ev: Evaluation) -> None:
        self._raise_if_failed()
        with self._lock:
            self._evals.append(ev)

    def record_migrations(self, migrations: Sequence[Migration]) -> None:
        if migrations:
            with self._lock:
                self._migrations.extend(migrations)

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
        """Write everything handed over so far, now (at stops and checkpoints)."""
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
                evals, self._evals = self._evals, []
                migrations, self._migrations = self._migrations, []
            if evals:
                self._write_evaluations(evals)
            if migrations:
                self._write_migrations(migrations)

    def _write_evaluations(self, evals: list[Evaluation]) -> None:
        n = len(evals)
        metric_names: list[str] = []
        for ev in evals:
            for k in ev.result.metrics:
                if k not in metric_names:
                    metric_names.append(k)
        self.store.ensure_metrics(metric_names)
        parents = np.full((n, 2), -1, dtype=np.int64)
        for i, ev in enumerate(evals):
            p = ev.task.parents[:2]
            parents[i, : len(p)] = p
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
            "parents": parents,
            "genome": np.stack([ev.task.genome for ev in evals]),
        }
        for name in self.space.names:
            rows[f"params/{name}"] = [ev.task.params[name] for ev in evals]
        for m in metric_names:
            rows[f"metrics/{m}"] = [ev.result.metrics.get(m, np.nan) for ev in evals]
        self.store.evaluations.append(rows, n)

    def _write_migrations(self, migrations: list[Migration]) -> None:
        self.store.migrations.append({
            "uid": [m.uid for m in migrations],
            "origin": [m.origin for m in migrations],
            "destination": [m.destination for m in migrations],
            "accepted": [m.accepted for m in migrations],
            "at_eval": [m.at_eval for m in migrations],
        }, len(migrations))
