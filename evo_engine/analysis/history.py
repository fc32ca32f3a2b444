"""Read a run store into plain numpy arrays: the one way analysis (and users) see a run.

``load_history(run_dir)`` is the documented helper: one numpy array per column of the
evaluation log, rows in the order the coordinator recorded them (the order results came
back, so row ``i`` is "the (i+1)-th finished evaluation"). ``to_dataframe`` turns that into
a pandas DataFrame when pandas is installed (it is not a dependency of evo_engine).

Everything here reads only rows below each table's ``committed`` counter, so it works on a
run that is still writing, and opens the store read-only, so it never touches a run's data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evo_engine.records import EvalState
from evo_engine.store import RunStore, Table

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

    @property
    def in_flight_uids(self) -> np.ndarray | None:
        """uids issued but not (yet) recorded as finished, or None when the store cannot say."""
        if self.issued_uids is None:
            return None
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

    Raises ``evo_engine.store.StoreError`` (an ``InputError``) with a one-line reason when
    ``run_dir`` holds no run store, an incomplete one, or one written by a newer evo_engine.
    A damaged store is read as far as it is intact: ``Run.damage`` says what is not.
    """
    store = RunStore.open(Path(run_dir), mode="r")
    # Read ``committed`` of the task log before the evaluation log: a task is always written
    # before its evaluation, so every finished uid is then among the issued ones.
    tasks = getattr(store, "tasks", None)
    issued = np.asarray(tasks.read("uid")) if tasks is not None and "uid" in tasks.columns else None
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
    run.damage = list(store.damage)
    curves = getattr(store, "curves", None)
    if curves is not None:
        run.curves = {c: np.asarray(curves.read(c)) for c in ("uid", "step", "value")}
        # Rows past the evaluations read above belong to evaluations not committed yet.
        keep = np.isin(run.curves["uid"], run.evaluations.get("uid", np.zeros(0, int)))
        run.curves = {c: a[keep] for c, a in run.curves.items()}
    return run


def load_history(run_dir: str | Path) -> dict[str, np.ndarray]:
    """The evaluation log of a run as a dict of numpy arrays, one entry per store column.

    Keys (all arrays have the same length, one row per recorded evaluation):
    ``uid``, ``island``, ``state`` (see ``STATE_NAMES``: 2 = COMPLETE, 3 = FAILED),
    ``fitness`` (NaN unless complete; lower is better), ``worker``, ``t_start`` and ``t_end``
    (Unix seconds), ``seed``, ``operator`` and ``error`` (str), ``accepted`` (bool: entered
    its island's population), ``parents`` (n, 2; -1 = none), ``genome`` (n, d; the unit-cube
    encoding), ``params/<name>`` (decoded values), ``metrics/<name>`` and, when the run
    recorded it, ``sigma`` (n, d; the ES step sizes per parameter, NaN for other operators).

    Example::

        from evo_engine.analysis import load_history
        h = load_history("runs/sphere")
        ok = h["state"] == 2
        best = h["fitness"][ok].argmin()
        print(h["params/lr"][ok][best])
    """
    return load_run(run_dir).evaluations


def to_dataframe(source: str | Path | Mapping[str, np.ndarray],
                 param_names: list[str] | None = None) -> Any:
    """The evaluation log as a pandas DataFrame, with exactly the CSV export's columns.

    ``source`` is a run directory, a ``Run`` or a dict from ``load_history``. Columns (as in
    ``analyze --csv``): ``uid, island, state`` (names: COMPLETE, FAILED, ...), ``fitness,
    worker, t_start, t_end, duration_s, seed, operator, accepted, parent1, parent2``, one per
    parameter and metric (their names), ``sigma_<param>`` when recorded, ``error`` (last
    line). pandas comes with the ``analysis`` extra: ``pip install evo-engine[analysis]``.
    """
    try:
        import pandas as pd
    except ImportError:
        raise ImportError(
            "to_dataframe needs pandas, which evo_engine does not install by default: "
            "`pip install pandas` (or evo-engine[analysis]), or use load_history() for the "
            "same data as numpy arrays"
        ) from None
    from evo_engine.analysis.export import csv_columns, table

    if isinstance(source, Run):
        run = source
    elif isinstance(source, (str, Path)):
        run = load_run(source)
    else:
        history = dict(source)
        # load_history lists params/<name> in the space's order, which is the genome's.
        names = param_names or [k[len("params/"):] for k in history if k.startswith("params/")]
        metrics = [k[len("metrics/"):] for k in history if k.startswith("metrics/")]
        run = Run(path=Path("."), attrs={"param_names": names, "metric_names": metrics},
                  evaluations=history)
    data = table(run)
    return pd.DataFrame({c: data[c] for c in csv_columns(run)})
