"""Several objectives: the Pareto front of a run as a table, a CSV and plots.

A run with ``objectives`` stores each objective as a metric column (``metrics/<name>``, as
the objective returned it) and, with constraints, ``metrics/constraint_violation`` (0 =
feasible). The front is the set of complete, feasible evaluations that no other complete,
feasible evaluation dominates; its knee (``search.pareto.knee``: nearest the ideal point once
each objective is scaled to [0, 1] over the front) is starred. ``finalize`` retrains the knee
of the *populations'* front first, which a run's history can outgrow (a point that left the
populations, a tie): the store records what it ran (``final``), and the table names it
where it is not the knee shown.
Hypervolume is measured in the objectives' own units (maximised ones negated) against a
reference point 10 % of each objective's range beyond the worst feasible value of the run,
so the curve over evaluations ends at the run's final hypervolume.
"""

from __future__ import annotations

import csv
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from evo_engine.analysis.plots import time_unit
from evo_engine.errors import InputError
from evo_engine.search.pareto import (
    VIOLATION,
    Objectives,
    front_mask,
    hypervolume,
    knee,
    parse_objectives,
)
from evo_engine.store.reader import Run


def objectives_of(run: Run) -> Objectives | None:
    """The run's objectives and constraints as its scenario declared them, or None."""
    desc = run.attrs.get("fingerprint_description") or {}
    objs = desc.get("objectives") or []
    if not objs:
        return None
    return parse_objectives([tuple(o) for o in objs],
                            {n: (op, b) for n, op, b in desc.get("constraints", [])})


def _matrix(run: Run, spec: Objectives) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(raw values per row, violation per row, mask of rows usable: complete, all values)."""
    n = run.n
    raw = np.column_stack([np.asarray(run.evaluations.get(f"metrics/{m}", np.full(n, np.nan)),
                                      dtype=float) for m in spec.names]).reshape(n, spec.m)
    cv = np.asarray(run.evaluations.get(f"metrics/{VIOLATION}", np.zeros(n)), dtype=float)
    cv = np.where(np.isfinite(cv), cv, np.inf)
    ok = run.complete & np.all(np.isfinite(raw), axis=1)
    return raw, cv, ok


def _minimised(spec: Objectives, raw: np.ndarray) -> np.ndarray:
    sign = np.array([-1.0 if s == "max" else 1.0 for s in spec.senses])
    return raw * sign


def front_rows(run: Run) -> tuple[Objectives, np.ndarray, int] | None:
    """(objectives, row indices of the front sorted by the first objective, the knee's row),
    or None for a single-objective run or one without a feasible complete evaluation."""
    spec = objectives_of(run)
    if spec is None:
        return None
    raw, cv, ok = _matrix(run, spec)
    rows = np.flatnonzero(ok & (cv <= 0))
    if rows.size == 0:
        return None
    F = _minimised(spec, raw[rows])
    on = rows[front_mask(F)]
    # One row per distinct point (a configuration evaluated twice keeps its first row), but
    # finalize's pick for its point where it shares one: the uid the run named stays shown.
    picked = finalized_uid(run)
    uids = np.asarray(run.evaluations["uid"])
    on = on[np.argsort(uids[on] != picked, kind="stable")] if picked is not None else on
    _, first = np.unique(_minimised(spec, raw[on]), axis=0, return_index=True)
    on = np.sort(on[first])
    on = on[np.argsort(raw[on, 0], kind="stable")]
    return spec, on, int(on[knee(_minimised(spec, raw[on]))])


def finalized_uid(run: Run) -> int | None:
    """The uid ``finalize`` ran first (the knee of the populations' front at the end), if
    the run recorded one."""
    final = run.attrs.get("final") or []
    first = final[0] if final and isinstance(final[0], dict) else {}
    return int(first["uid"]) if "uid" in first else None


def front_table(run: Run) -> dict[str, list[Any]]:
    """The front as columns: uid, each objective, knee (1 on the knee), each parameter."""
    found = front_rows(run)
    if found is None:
        return {}
    spec, rows, k = found
    ev = run.evaluations
    table: dict[str, list[Any]] = {"uid": [int(ev["uid"][i]) for i in rows]}
    for m in spec.names:
        table[m] = [float(ev[f"metrics/{m}"][i]) for i in rows]
    table["knee"] = [int(i == k) for i in rows]
    for p in run.param_names:
        col = ev.get(f"params/{p}")
        if col is not None:
            table[p] = [v.item() if hasattr(v, "item") else v for v in col[rows]]
    return table


def format_front(run: Run, limit: int = 20, width: int = 10_000) -> str:
    """The front as a terminal table (at most ``limit`` rows; parameter columns as many as
    fit in ``width`` characters), or "" without objectives."""
    spec = objectives_of(run)
    if spec is None:
        return ""
    table = front_table(run)
    cons = ", ".join(f"{n} {op} {b:g}" for n, op, b in spec.constraints)
    head = ("Pareto front (" + ", ".join(f"{n} {s}" for n, s in zip(spec.names, spec.senses))
            + (f"; subject to {cons}" if cons else "") + ")")
    if not table:
        return head + ": no complete feasible evaluation yet"
    raw, cv, ok = _matrix(run, spec)
    n = len(table["uid"])
    knee_uid = table["uid"][table["knee"].index(1)]
    picked = finalized_uid(run)
    said = ("* = knee (finalize's pick)" if picked in (None, knee_uid) else
            f"* = knee; finalize ran uid {picked} first (the knee of the populations' front)")
    lines = [f"{head}: {n} of {int(ok.sum())} complete evaluations "
             f"({int((ok & (cv > 0)).sum())} infeasible); {said}"]
    cols = ["uid", *spec.names, *run.param_names]
    rows = [[("*" if table["knee"][r] else "") + str(table["uid"][r])]
            + [f"{table[c][r]:.4g}" for c in spec.names]
            + [_fmt(table.get(p, [""] * n)[r]) for p in run.param_names] for r in range(n)]
    shown = rows[:limit]
    widths = [max(len(c), *(len(r[i]) for r in shown)) for i, c in enumerate(cols)]
    fit, used = 0, -2
    for w in widths:
        if used + 2 + w > width and fit > spec.m:
            break
        used += 2 + w
        fit += 1
    lines.append("  ".join(c.rjust(w) for c, w in zip(cols[:fit], widths)))
    lines += ["  ".join(v.rjust(w) for v, w in zip(r[:fit], widths)) for r in shown]
    if fit < len(cols):
        lines.append(f"({len(cols) - fit} parameter columns left out at {width} columns: "
                     "--front FILE writes them all)")
    if n > limit:
        lines.append(f"... {n - limit} more (--front FILE writes them all)")
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "-" if v != v else f"{v:.4g}"  # NaN: a conditional parameter, inactive
    return str(v)


def write_front_csv(run: Run, path: str | Path) -> int:
    """Write the front as CSV; returns its rows. A run without objectives is an InputError."""
    if objectives_of(run) is None:
        raise InputError(f"{run.path} has one objective: there is no Pareto front to write "
                         "(--csv writes the evaluations)")
    table = front_table(run)
    path = Path(path)
    try:
        with path.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(list(table) or ["uid"])
            for r in range(len(table.get("uid", []))):
                w.writerow([table[c][r] for c in table])
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
    return len(table.get("uid", []))


def hypervolume_curve(run: Run) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(evaluations finished, compute seconds so far, hypervolume so far) in log order, for
    2 or 3 objectives with a feasible evaluation; else None (see the module docstring)."""
    spec = objectives_of(run)
    if spec is None or spec.m > 3:
        return None
    raw, cv, ok = _matrix(run, spec)
    good = ok & (cv <= 0)
    if not good.any():
        return None
    F = _minimised(spec, raw)
    lo, hi = F[good].min(axis=0), F[good].max(axis=0)
    ref = hi + 0.1 * np.where(hi > lo, hi - lo, np.maximum(np.abs(hi), 1.0))
    ev = run.evaluations
    secs = np.nan_to_num(np.asarray(ev["t_end"], float) - np.asarray(ev["t_start"], float))
    hv = np.zeros(run.n)
    pts = np.zeros((0, spec.m))  # the non-dominated set so far: HV is recomputed only
    last = 0.0  # when it changes, over it alone (not over every evaluation so far)
    for i in range(run.n):
        if good[i] and not np.any(np.all(pts <= F[i], axis=1)):
            keep = ~(np.all(F[i] <= pts, axis=1) & np.any(F[i] < pts, axis=1))
            pts = np.vstack([pts[keep], F[i]])
            last = hypervolume(pts, ref)
        hv[i] = last
    return np.arange(1, run.n + 1), np.cumsum(np.maximum(secs, 0.0)), hv


def plot_pareto(run: Run) -> Figure | None:
    """Every complete evaluation in objective space, the front joined, the knee starred;
    three objectives as three pairwise panels. None with one objective (a constraint needs
    ``objectives=["name"]``): there is no plane to draw, and the front is its best point."""
    found = front_rows(run)
    if found is None or found[0].m < 2:
        return None
    spec, on, k = found
    raw, cv, ok = _matrix(run, spec)
    uids = [int(u) for u in run.evaluations["uid"]]
    pairs = [(0, 1)] if spec.m == 2 else [(i, j) for i in range(spec.m)
                                          for j in range(i + 1, spec.m)][:6]
    fig = Figure(figsize=(5.2 * len(pairs) if len(pairs) < 4 else 15.6,
                          4.6 if len(pairs) < 4 else 9.2), layout="constrained")
    cols = min(len(pairs), 3)
    axes = fig.subplots((len(pairs) + cols - 1) // cols, cols, squeeze=False).ravel()
    feas = ok & (cv <= 0)
    for ax, (i, j) in zip(axes, pairs):
        ax.scatter(raw[feas, i], raw[feas, j], s=10, c="0.65", label="feasible")
        bad = ok & (cv > 0)
        if bad.any():
            ax.scatter(raw[bad, i], raw[bad, j], s=14, marker="x", c="tab:red",
                       label="infeasible")
        if spec.m == 2:
            order = on[np.argsort(raw[on, i])]
            ax.step(raw[order, i], raw[order, j], where="post", c="tab:blue", lw=1.2)
        ax.scatter(raw[on, i], raw[on, j], s=22, c="tab:blue", label="front", zorder=3)
        ax.scatter([raw[k, i]], [raw[k, j]], s=180, marker="*", c="gold", edgecolors="k",
                   label="knee" if finalized_uid(run) not in (None, uids[k]) else
                   "knee (finalize)", zorder=4)
        ax.set_xlabel(f"{spec.names[i]} ({spec.senses[i]})")
        ax.set_ylabel(f"{spec.names[j]} ({spec.senses[j]})")
        for name, axis in ((spec.names[i], "x"), (spec.names[j], "y")):
            v = raw[feas, spec.names.index(name)]
            if v.size and v.min() > 0 and v.max() / v.min() > 30:
                getattr(ax, f"set_{axis}scale")("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, framealpha=0.85)
    for ax in axes[len(pairs):]:
        ax.set_visible(False)
    title = (f"Pareto front — {run.attrs.get('scenario', '?')} ({run.path.name}, {run.n} "
             f"evaluations, {len(on)} on the front)")
    fig.suptitle(textwrap.fill(title, max(int(fig.get_figwidth() * 10.5), 30)), fontsize=11)
    return fig


def plot_hypervolume(run: Run) -> Figure | None:
    """Hypervolume of the feasible evaluations so far, against evaluations and compute."""
    curve = hypervolume_curve(run)
    if curve is None:
        return None
    n, secs, hv = curve
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    a, b = fig.subplots(1, 2)
    a.plot(n, hv, c="tab:blue")
    a.set_xlabel("evaluations finished")
    a.set_ylabel("hypervolume (higher is better)")
    scale, unit = time_unit(float(secs[-1]))
    b.plot(secs / scale, hv, c="tab:blue")
    b.set_xlabel(f"compute: evaluation time summed over workers ({unit})")
    for ax in (a, b):
        ax.grid(alpha=0.3)
    fig.suptitle(f"Hypervolume so far — {run.attrs.get('scenario', '?')} ({run.path.name}; "
                 "reference: 10 % beyond the run's worst feasible values)", fontsize=11)
    return fig


__all__ = ["finalized_uid", "format_front", "front_rows", "front_table", "hypervolume_curve", "objectives_of",
           "plot_hypervolume", "plot_pareto", "write_front_csv"]
