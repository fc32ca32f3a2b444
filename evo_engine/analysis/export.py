"""CSV export of the evaluation log: one row per evaluation, one column per parameter and metric.

Columns, in order: ``uid, island, state, fitness, worker, t_start, t_end, duration_s, seed,
operator, accepted, parent1, parent2``, then one column per parameter (its name), one per
metric (its name), ``sigma_<param>`` when the run recorded ES step sizes, and ``error`` (the
last line of the error text, i.e. the exception of a traceback; empty unless failed). Floats are written at full precision
(``repr``), missing numbers (a failed evaluation's fitness) as empty cells.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

from evo_engine.analysis.history import STATE_NAMES, Run
from evo_engine.errors import InputError

BASE_COLUMNS = ("uid", "island", "state", "fitness", "worker", "t_start", "t_end", "duration_s",
                "seed", "operator", "accepted", "parent1", "parent2")


class ExportError(InputError):
    """The CSV file cannot be written where the user asked."""


def _cell(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    return v


def csv_columns(run: Run) -> list[str]:
    """The header of the CSV export of ``run`` (parameter and metric names are used as is)."""
    cols = list(BASE_COLUMNS) + run.param_names + run.metric_names
    if run.has_sigma:
        cols += [f"sigma_{p}" for p in run.param_names]
    return [*cols, "error"]


def row_order(run: Run, top: int | None) -> np.ndarray:
    """All rows in log order, or the ``top`` best complete evaluations, best first."""
    if top is None:
        return np.arange(run.n)
    idx = np.flatnonzero(run.complete)
    return idx[np.argsort(run.fitness[idx], kind="stable")][:top]


def write_csv(run: Run, path: str | Path, top: int | None = None) -> int:
    """Write the evaluation log of ``run`` to ``path``; returns the number of data rows.

    With ``top`` only the ``top`` best complete evaluations are written, best first.
    """
    path = Path(path)
    ev = run.evaluations
    header = csv_columns(run)
    parents = ev.get("parents", np.full((run.n, 2), -1))
    sigma = ev.get("sigma") if run.has_sigma else None
    rows = row_order(run, top)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(header)
            for i in rows:
                t0, t1 = float(ev["t_start"][i]), float(ev["t_end"][i])
                row: list[Any] = [
                    ev["uid"][i], ev["island"][i], STATE_NAMES.get(int(ev["state"][i]), "?"),
                    ev["fitness"][i], ev["worker"][i], t0, t1, t1 - t0, ev["seed"][i],
                    ev["operator"][i], bool(ev["accepted"][i]), parents[i, 0], parents[i, 1],
                ]
                row += [ev[f"params/{p}"][i] for p in run.param_names]
                row += [ev[f"metrics/{m}"][i] for m in run.metric_names]
                if sigma is not None:
                    row += list(sigma[i])
                error = str(ev["error"][i]) if "error" in ev else ""
                row.append(error.strip().splitlines()[-1] if error.strip() else "")
                w.writerow([_cell(v) for v in row])
    except OSError as exc:
        raise ExportError(f"cannot write the CSV file {path}: {exc.strerror or exc}") from None
    return len(rows)


__all__ = ["BASE_COLUMNS", "ExportError", "csv_columns", "write_csv"]
