"""What every table of a run store holds: its columns, their dtypes, shapes and chunking.

One definition serves both ends: ``RunStore.create`` makes the columns from it, and the check
on opening (``RunStore.open``) compares every array's metadata with it, so an array whose
``zarr.json`` was deleted, garbled or replaced is damage found before anything is written,
not a ``KeyError`` halfway through a resume or a column that ``analyze`` silently leaves out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

CHUNK = 4096
"""Rows per chunk of every column (the store has always used this)."""
STR = "str"
"""A text column (numpy's StringDType as zarr 3 reads it)."""

Columns = dict[str, tuple[str, tuple[int, ...]]]
"""column name → (dtype, shape of one row)."""


def evaluation_columns(param_kinds: Mapping[str, str], dim: int) -> Columns:
    columns: Columns = {
        "uid": ("i8", ()), "island": ("i4", ()), "state": ("i1", ()), "fitness": ("f8", ()),
        "worker": ("i4", ()), "t_start": ("f8", ()), "t_end": ("f8", ()), "seed": ("i8", ()),
        "operator": (STR, ()), "error": (STR, ()), "accepted": ("bool", ()),
        "parents": ("i8", (2,)), "genome": ("f8", (dim,)),
    }
    for name, kind in param_kinds.items():
        columns[f"params/{name}"] = (params_dtype(kind), ())
    return columns


MIGRATION_COLUMNS: Columns = {
    "uid": ("i8", ()), "origin": ("i4", ()), "destination": ("i4", ()),
    "accepted": ("bool", ()), "at_eval": ("i8", ()),
}
CURVE_COLUMNS: Columns = {"uid": ("i8", ()), "step": ("i8", ()), "value": ("f8", ())}


def task_columns(dim: int) -> Columns:
    return {
        "uid": ("i8", ()), "island": ("i4", ()), "seed": ("i8", ()), "operator": (STR, ()),
        "parents": ("i8", (2,)), "genome": ("f8", (dim,)), "info": (STR, ()),
        "reevaluation_of": ("i8", ()), "told_before": ("i8", ()),
    }


def params_dtype(kind: str) -> str:
    return {"float": "f8", "int": "i8", "categorical": STR}[kind]


@dataclass(frozen=True)
class Spec:
    """What one column's metadata must say: one of ``dtypes``, rows of shape ``tail``."""

    dtypes: tuple[str, ...]
    tail: tuple[int, ...] = ()

    def mismatch(self, arr: Any) -> str | None:
        """Why ``arr`` (a zarr array) is not such a column, or None."""
        want = "(rows" + "".join(f", {n}" for n in self.tail) + ")"
        if len(arr.shape) != 1 + len(self.tail) or tuple(arr.shape[1:]) != self.tail:
            return f"has shape {tuple(arr.shape)}, not {want}"
        if not any(_is_dtype(arr.dtype, d) for d in self.dtypes):
            return f"holds {arr.dtype}, not {' or '.join(_name(d) for d in self.dtypes)}"
        chunks = (CHUNK, *self.tail)
        if tuple(arr.chunks) != chunks:
            return f"is chunked {tuple(arr.chunks)}, not {chunks}"
        return None


def _is_dtype(dtype: Any, want: str) -> bool:
    if want == STR:
        return np.dtype(dtype).kind in "TUO"
    return np.dtype(dtype) == np.dtype(want)


def _name(want: str) -> str:
    return "text" if want == STR else str(np.dtype(want))


def _specs(columns: Columns) -> dict[str, Spec]:
    return {c: Spec((d,), tail) for c, (d, tail) in columns.items()}


@dataclass(frozen=True)
class Schema:
    """A table's expected columns: ``required`` ones must be there; ``optional`` ones (created
    on first use, or missing from stores of older versions) are checked when present."""

    required: dict[str, Spec]
    optional: dict[str, Spec]


PBT_COLUMNS: dict[str, Spec] = {"pbt_parent": Spec(("i8",)), "step": Spec(("i8",))}
"""Optional task and evaluation columns of population-based training (``search/pbt.py``)."""


def expected(attrs: Mapping[str, Any]) -> tuple[dict[str, Schema], list[str]]:
    """Each table's schema as the run's attributes define it, and what is wrong with those
    attributes themselves (then the columns they define are not checked)."""
    problems: list[str] = []
    names = attrs.get("param_names")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        problems.append(f"run.zarr/zarr.json: param_names is {names!r}, not a list of names")
        names = None
    metrics = attrs.get("metric_names", [])
    if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics):
        problems.append(f"run.zarr/zarr.json: metric_names is {metrics!r}, not a list of names")
        metrics = []
    space = attrs.get("space")
    space = space if isinstance(space, Mapping) else {}
    ev: dict[str, Spec] = {}
    tasks: dict[str, Spec] = {}
    optional_ev: dict[str, Spec] = {"batch": Spec(("i8",)), **PBT_COLUMNS}
    if names is not None:
        dim = len(names)
        ev = _specs(evaluation_columns({}, dim))
        for n in names:
            ev[f"params/{n}"] = _param_spec(space.get(n))
        tasks = _specs(task_columns(dim))
        optional_ev["sigma"] = Spec(("f8",), (dim,))
    ev.update({f"metrics/{m}": Spec(("f8",)) for m in metrics})
    # Stores written before exact replay have no told_before; the writer adds it.
    optional_tasks = {"told_before": tasks.pop("told_before")} if tasks else {}
    optional_tasks.update(PBT_COLUMNS)
    return {
        "evaluations": Schema(ev, optional_ev),
        "migrations": Schema(_specs(MIGRATION_COLUMNS), {}),
        "tasks": Schema(tasks, optional_tasks),
        "curves": Schema(_specs(CURVE_COLUMNS), {}),
    }, problems


def _param_spec(described: Any) -> Spec:
    """A parameter column's dtype from the run's space description (``Space.describe``): a
    conditional int is stored as float (inactive = NaN). Without one, any parameter dtype."""
    kind = described.get("type") if isinstance(described, Mapping) else None
    if kind == "int" and "when" in described:
        kind = "float"
    if kind in ("float", "int", "categorical"):
        return Spec((params_dtype(kind),))
    return Spec(("f8", "i8", STR))


__all__ = ["CHUNK", "CURVE_COLUMNS", "MIGRATION_COLUMNS", "PBT_COLUMNS", "STR", "Schema", "Spec",
           "evaluation_columns", "expected", "params_dtype", "task_columns"]
