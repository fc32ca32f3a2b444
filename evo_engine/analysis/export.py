"""CSV export of the evaluation log: one row per evaluation, one column per parameter and metric.

Columns, in order: ``uid, island, state, fitness, worker, t_start, t_end, duration_s, seed,
operator, accepted, parent1, parent2``, then one column per parameter (its name), one per
metric (its name; ``param_<name>`` / ``metric_<name>`` if it would collide with another
column), ``sigma_<param>`` when the run recorded ES step sizes, and ``error`` (the
last line of the error text, i.e. the exception of a traceback; empty unless failed). Floats are written at full precision
(``repr``), missing numbers (a failed evaluation's fitness, an inactive conditional
parameter) as empty cells. ``to_dataframe`` gives the same columns (``table``).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

from evo_engine.errors import InputError
from evo_engine.store.reader import STATE_NAMES, Run, ranked_rows

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


def _names(run: Run) -> tuple[list[str], list[str]]:
    """Column names of the parameters and metrics: their own names, or ``param_<name>`` /
    ``metric_<name>`` where a name would collide with another column."""
    taken = set(BASE_COLUMNS) | {"error"}
    params = []
    for p in run.param_names:
        params.append(f"param_{p}" if p in taken else p)
    taken |= set(params)
    metrics = [f"metric_{m}" if m in taken else m for m in run.metric_names]
    return params, metrics


def csv_columns(run: Run) -> list[str]:
    """The header of the CSV export of ``run``, which is also ``to_dataframe``'s columns."""
    params, metrics = _names(run)
    cols = list(BASE_COLUMNS) + params + metrics
    if run.has_sigma:
        cols += [f"sigma_{p}" for p in run.param_names]
    return [*cols, "error"]


def row_order(run: Run, top: int | None) -> np.ndarray:
    """All rows in log order, or the complete evaluations of the ``top`` best configurations
    (the ones ``analyze``'s table shows: the engine's ranking, ``ranked_rows``), best
    configuration first, each one's evaluations in uid order. Without repeats that is the
    ``top`` best evaluations, best first."""
    if top is None:
        return np.arange(run.n)
    return np.array([i for _, rows in ranked_rows(run)[:top] for i in rows], dtype=np.int64)


def table(run: Run, top: int | None = None) -> dict[str, np.ndarray]:
    """The evaluation log as the CSV shows it: ``csv_columns(run)`` → one array each.

    State as its name, ``duration_s`` = t_end - t_start, parents split in two, the error's
    last line; an inactive conditional parameter is NaN (numbers) or "" (categories).
    """
    ev = run.evaluations
    rows = row_order(run, top)
    parents = np.asarray(ev.get("parents", np.full((run.n, 2), -1)))
    t0 = np.asarray(ev["t_start"], dtype=float)[rows]
    t1 = np.asarray(ev["t_end"], dtype=float)[rows]
    out: dict[str, np.ndarray] = {
        "uid": ev["uid"][rows], "island": ev["island"][rows],
        "state": np.array([STATE_NAMES.get(int(x), "?") for x in ev["state"][rows]], dtype=object),
        "fitness": np.asarray(ev["fitness"], dtype=float)[rows], "worker": ev["worker"][rows],
        "t_start": t0, "t_end": t1, "duration_s": t1 - t0, "seed": ev["seed"][rows],
        "operator": ev["operator"][rows], "accepted": np.asarray(ev["accepted"], bool)[rows],
        "parent1": parents[rows, 0], "parent2": parents[rows, 1],
    }
    params, metrics = _names(run)
    for col, p in zip(params, run.param_names):
        values = ev[f"params/{p}"][rows]
        if run.space.get(p, {}).get("type") == "int" and values.dtype.kind == "f":
            # A conditional Int is stored as floats (NaN when inactive): whole numbers again.
            values = np.array([int(v) if np.isfinite(v) else np.nan for v in values],
                              dtype=object)
        out[col] = values
    for col, m in zip(metrics, run.metric_names):
        out[col] = np.asarray(ev[f"metrics/{m}"], dtype=float)[rows]
    if run.has_sigma:
        sigma = np.asarray(ev["sigma"], dtype=float)[rows]
        for j, p in enumerate(run.param_names):
            out[f"sigma_{p}"] = sigma[:, j]
    errors = ev["error"][rows] if "error" in ev else np.full(rows.size, "", dtype=object)
    out["error"] = np.array([str(e).strip().splitlines()[-1] if str(e).strip() else ""
                             for e in errors], dtype=object)
    return out


def write_csv(run: Run, path: str | Path, top: int | None = None) -> int:
    """Write the evaluation log of ``run`` to ``path``; returns the number of data rows.

    With ``top`` only the complete evaluations of the ``top`` best configurations are
    written, best first (``row_order``).
    """
    path = Path(path)
    data = table(run, top)
    header = csv_columns(run)
    n = len(data["uid"])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(header)
            for i in range(n):
                w.writerow([_cell(data[c][i]) for c in header])
    except OSError as exc:
        raise ExportError(f"cannot write the CSV file {path}: {exc.strerror or exc}") from None
    return n


__all__ = ["BASE_COLUMNS", "ExportError", "csv_columns", "table", "write_csv"]
