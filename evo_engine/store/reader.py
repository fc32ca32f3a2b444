"""A run store read into plain numpy arrays, read-only: analysis, warm starts and users all
see a run through ``load_run``.

Everything here reads only rows below each table's ``committed`` counter, so it works on a
run that is still writing, and opens the store read-only, so it never touches a run's data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evo_engine.search.estimate import Estimate, rank_estimates, summarize_groups
from evo_engine.search.keys import config_key, interval_key
from evo_engine.search.messages import EvalState
from evo_engine.store.runstore import RunStore, Table

STATE_NAMES = {int(s): s.name for s in EvalState}
"""State codes of ``evaluations/state`` and their names (PENDING, RUNNING, COMPLETE, ...)."""


FIRST_COLUMNS = ("uid", "island", "state", "fitness", "worker", "t_start", "t_end", "seed",
                 "operator", "accepted", "parents", "origin", "destination", "at_eval")


def _column_order(columns: list[str], param_names: list[str]) -> list[str]:
    """Identity and outcome first, then params in the space's order, metrics, the rest."""
    params = [f"params/{p}" for p in param_names if f"params/{p}" in columns]
    head = [c for c in FIRST_COLUMNS if c in columns] + params
    metrics = sorted(c for c in columns if c.startswith("metrics/"))
    rest = sorted(c for c in columns if c not in head and c not in metrics and c != "error")
    return head + metrics + rest + (["error"] if "error" in columns else [])


def _read_table(table: Table, param_names: list[str]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for col in _column_order(table.columns, param_names):
        arr = np.asarray(table.read(col))
        # zarr 3 returns numpy's variable-width StringDType; object arrays of str are what
        # pandas, csv and older numpy code all understand.
        if arr.dtype.kind in "TU":
            arr = arr.astype(object)
        out[col] = arr
    return out


@dataclass
class Run:
    """One run as analysis sees it: the run attributes and both logs as numpy arrays."""

    path: Path
    attrs: dict[str, Any]
    evaluations: dict[str, np.ndarray]
    migrations: dict[str, np.ndarray] = field(default_factory=dict)
    issued_uids: np.ndarray | None = None
    """uids of every task issued (from the store's task log), when the store has one."""
    damage: list[str] = field(default_factory=list)
    """What the store's checks found damaged; the tables hold only the rows before it."""
    curves: dict[str, np.ndarray] = field(default_factory=dict)
    """Intermediate reports (``ctx.report``): ``uid``, ``step``, ``value`` columns; empty when
    the run's objective reported none."""
    intervals: np.ndarray | None = None
    """PBT runs: per evaluation row, the length its interval was issued with (the task log's
    ``info["interval"]``; -1 where the log does not say). None for other runs, or when the
    task log cannot be read."""

    @property
    def in_flight_uids(self) -> np.ndarray | None:
        """uids issued but not (yet) recorded as finished, or None when the store cannot say.

        A finished run has none: tasks a resume with a smaller budget held back (they were in
        flight when an earlier job stopped) are queued for a later extension, not running."""
        if self.issued_uids is None:
            return None
        if self.attrs.get("status") == "finished":
            return np.zeros(0, dtype=np.int64)
        return np.setdiff1d(self.issued_uids, self.evaluations.get("uid", np.zeros(0, int)))

    @property
    def n(self) -> int:
        """Number of recorded (committed) evaluations."""
        return len(self.evaluations.get("uid", ()))

    @property
    def param_names(self) -> list[str]:
        return list(self.attrs.get("param_names", []))

    @property
    def metric_names(self) -> list[str]:
        return [m for m in self.attrs.get("metric_names", []) if f"metrics/{m}" in self.evaluations]

    @property
    def space(self) -> dict[str, dict[str, Any]]:
        """Per parameter: {"type": "float"|"int"|"categorical", "lo", "hi", "log" | "choices"}."""
        return dict(self.attrs.get("space", {}))

    def is_log(self, name: str) -> bool:
        return bool(self.space.get(name, {}).get("log", False))

    def is_categorical(self, name: str) -> bool:
        return self.space.get(name, {}).get("type") == "categorical"

    @property
    def complete(self) -> np.ndarray:
        """Boolean mask of evaluations that finished with a fitness."""
        state = self.evaluations.get("state", np.zeros(0, dtype=np.int8))
        return (state == int(EvalState.COMPLETE)) & np.isfinite(self.fitness)

    @property
    def fitness(self) -> np.ndarray:
        return np.asarray(self.evaluations.get("fitness", np.zeros(0)), dtype=float)

    @property
    def t0(self) -> float:
        """The run's time origin: its creation time, else its first evaluation's start."""
        created = self.attrs.get("created")
        starts = self.evaluations.get("t_start", np.zeros(0))
        finite = starts[np.isfinite(starts) & (starts > 0)]
        first = float(finite.min()) if finite.size else 0.0
        if isinstance(created, (int, float)) and created > 0:
            return min(float(created), first) if finite.size else float(created)
        return first

    @property
    def n_workers(self) -> int:
        """Workers of the run: the ``workers`` attribute when recorded, else those seen working."""
        recorded = self.attrs.get("workers")
        if isinstance(recorded, int) and recorded > 0:
            return recorded
        w = self.evaluations.get("worker", np.zeros(0, dtype=int))
        return int(np.unique(w[w >= 0]).size)

    @property
    def has_sigma(self) -> bool:
        s = self.evaluations.get("sigma")
        return s is not None and s.ndim == 2 and bool(np.isfinite(s).any())


def load_run(run_dir: str | Path) -> Run:
    """Open ``run_dir`` read-only and load its attributes and logs.

    Raises ``evo_engine.store.runstore.StoreError`` (an ``InputError``) with a one-line reason when
    ``run_dir`` holds no run store, an incomplete one, or one written by a newer evo_engine.
    A damaged store is read as far as it is intact: ``Run.damage`` says what is not.
    """
    store = RunStore.open(Path(run_dir), mode="r")
    # Read ``committed`` of the task log before the evaluation log: a task is always written
    # before its evaluation, so every finished uid is then among the issued ones.
    tasks = getattr(store, "tasks", None)
    # A damaged task log cannot say what is in flight ("unknown", not a wrong count).
    sound = tasks is not None and "uid" in tasks.columns and not tasks.problems
    issued = np.asarray(tasks.read("uid")) if sound else None
    attrs = store.attrs
    names = list(attrs.get("param_names", []))
    run = Run(
        path=Path(run_dir),
        attrs=attrs,
        evaluations=_read_table(store.evaluations, names),
        migrations=_read_table(store.migrations, names),
    )
    if issued is not None:
        run.issued_uids = issued
        if is_pbt(run) and "info" in tasks.columns:
            run.intervals = _interval_lengths(issued, tasks.read("info"), run.evaluations["uid"])
    run.damage = list(store.damage)
    curves = getattr(store, "curves", None)
    if curves is not None:
        run.curves = {c: np.asarray(curves.read(c)) for c in ("uid", "step", "value")}
        # Rows past the evaluations read above belong to evaluations not committed yet.
        keep = np.isin(run.curves["uid"], run.evaluations.get("uid", np.zeros(0, int)))
        run.curves = {c: a[keep] for c, a in run.curves.items()}
    return run




def _interval_lengths(task_uid: np.ndarray, info: np.ndarray, uid: np.ndarray) -> np.ndarray:
    """Per evaluation uid, its task's ``info["interval"]`` (-1 where it has none)."""
    length: dict[int, int] = {}
    for u, text in zip(task_uid.tolist(), info.tolist()):
        found = _INTERVAL.search(text) if text else None  # info is json.dumps of a dict
        if found is not None:
            length[u] = int(found.group(1))
    return np.fromiter((length.get(u, -1) for u in uid.tolist()), dtype=np.int64,
                       count=len(uid))


_INTERVAL = re.compile(r'"interval":\s*(\d+)')


def is_pbt(run: Run) -> bool:
    """Whether ``run`` is a population-based training (its log has PBT intervals)."""
    step = run.evaluations.get("step")
    return step is not None and bool(np.any(step >= 0))


def configuration_rows(run: Run) -> dict[str, list[int]]:
    """Row indices of the evaluation log per configuration (``config_key``), in log order.

    In a population-based training every interval is a configuration of its own, keyed by
    ``interval_key`` as the engine keys it: an interval that continues a member with unchanged
    hyperparameters trains on from other weights, so it is no repeat of the member's earlier
    intervals, and a mean over them would describe no model."""
    ev = run.evaluations
    cols = [(p, ev[f"params/{p}"]) for p in run.param_names if f"params/{p}" in ev]
    uid = ev.get("uid") if is_pbt(run) else None
    groups: dict[str, list[int]] = {}
    for i in range(run.n):
        key = config_key({p: c[i] for p, c in cols})
        groups.setdefault(key if uid is None else interval_key(key, int(uid[i])), []).append(i)
    return groups


def run_estimates(run: Run) -> tuple[list[Estimate], dict[str, int]]:
    """Every configuration with a complete evaluation, ranked as the engine ranks them
    (``search.estimate.rank_estimates``: the incumbent first), and each one's first log row."""
    if run.n == 0:  # nothing recorded, or a damaged table read as no rows
        return [], {}
    uid, complete, fitness = run.evaluations["uid"], run.complete, run.fitness
    groups = configuration_rows(run)
    rows = [(k, int(uid[i]), float(fitness[i])) for k, idx in groups.items() for i in idx
            if complete[i]]
    first = {k: min(idx, key=lambda i: int(uid[i])) for k, idx in groups.items()}
    return rank_estimates(summarize_groups(rows).values()), first


def ranked_rows(run: Run) -> list[tuple[Estimate, list[int]]]:
    """``run_estimates``' configurations in their rank, each with the log rows of its complete
    evaluations (uid order): the rows behind its estimate. Whatever analysis calls "best"
    (the top table, each island's best, the star in the plots, ``--csv --top``) reads it."""
    if run.n == 0:
        return []
    uid, complete = run.evaluations["uid"], run.complete
    groups = configuration_rows(run)
    ranked, _ = run_estimates(run)
    return [(e, sorted((i for i in groups[e.key] if complete[i]), key=lambda i: int(uid[i])))
            for e in ranked]


__all__ = ["FIRST_COLUMNS", "STATE_NAMES", "Run", "configuration_rows", "is_pbt", "load_run",
           "ranked_rows", "run_estimates"]
