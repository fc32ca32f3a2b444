"""Population-based training runs: the best member's lineage and hyperparameter schedule.

A PBT run's evaluations are intervals (``search/pbt.py``): each starts at ``step`` from the
checkpoint of ``pbt_parent``. Following ``pbt_parent`` back from the best interval gives the
lineage of the weights that scored best, across members (an exploit jumps to the member it
copied); the parameters of each interval along it are the *schedule* that produced them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from evo_engine.analysis.plots import DPI, _title
from evo_engine.search.messages import EvalState
from evo_engine.store.reader import Run, is_pbt

EXPLOIT = "pbt:exploit"


def interval_length(run: Run) -> int:
    """The interval length the run is configured with now (``--resume --force`` may have
    changed it: an interval's own end is ``interval_stops``)."""
    described = run.attrs.get("fingerprint_description", {}).get("pbt", {})
    return int(described.get("interval", 1)) if isinstance(described, dict) else 1


def interval_stops(run: Run) -> np.ndarray:
    """Per row, the step its interval trained to: its start plus the length it was issued
    with (the task log's, ``Run.intervals``: ``--resume --force`` may have changed the
    configured one since); where the task log does not say, the start of an interval that
    went on from its checkpoint, else ``interval_length``."""
    ev = run.evaluations
    step = np.asarray(ev["step"], dtype=np.int64)
    stop = step + interval_length(run)
    parent = np.asarray(ev["pbt_parent"], dtype=np.int64)
    has_parent = parent >= 0
    if has_parent.any():  # each parent's first child in the log: where it began
        parents, first = np.unique(parent[has_parent], return_index=True)
        starts = step[has_parent][first]
        uid = np.asarray(ev["uid"], dtype=np.int64)
        at = np.searchsorted(parents, uid)
        found = (at < parents.size) & (parents[np.minimum(at, parents.size - 1)] == uid)
        stop[found] = starts[at[found]]
    if run.intervals is not None:
        known = run.intervals >= 0
        stop[known] = step[known] + run.intervals[known]
    return stop


@dataclass(frozen=True)
class Interval:
    """One interval on a lineage."""

    uid: int
    step: int
    stop: int
    operator: str
    fitness: float
    params: dict[str, Any]


def best_lineage(run: Run) -> list[Interval]:
    """The intervals behind the best complete interval's weights, first one first."""
    if not is_pbt(run) or not run.complete.any():
        return []
    ev = run.evaluations
    row_of = {int(u): i for i, u in enumerate(ev["uid"])}
    fitness = np.where(run.complete, run.fitness, np.inf)
    stops = interval_stops(run)
    # Among equal scores the one trained longest (the end of its lineage, not a midpoint).
    row: int | None = int(np.lexsort((-stops, fitness))[0])
    chain: list[Interval] = []
    while row is not None:
        step = int(ev["step"][row])
        chain.append(Interval(
            uid=int(ev["uid"][row]), step=step, stop=int(stops[row]),
            operator=str(ev["operator"][row]),
            fitness=float(ev["fitness"][row]),
            params={n: _value(ev, n, row) for n in run.param_names},
        ))
        parent = int(ev["pbt_parent"][row])
        row = row_of.get(parent) if parent >= 0 else None
    return chain[::-1]


def _value(ev: dict[str, np.ndarray], name: str, row: int) -> Any:
    v = ev[f"params/{name}"][row]
    return v.item() if isinstance(v, np.generic) else v


def format_pbt(run: Run, limit: int = 20) -> str:
    """The PBT summary for ``analyze``: counts, then the best member's lineage as a table."""
    if not is_pbt(run):
        return ""
    ev = run.evaluations
    ops = ev["operator"].astype(str)
    state = ev["state"]
    exploits = int(np.sum(ops == EXPLOIT))
    failed = int(np.sum(state == int(EvalState.FAILED)))
    lines = [f"population-based training: {run.n} intervals of {interval_length(run)} steps, "
             f"{exploits} exploits, {failed} failed",
             "(the tables above rank each interval on its own: one that continues a member "
             "with the same hyperparameters trains on from other weights, so it is no repeat)"]
    chain = best_lineage(run)
    if not chain:
        return "\n".join(lines)
    best = chain[-1]
    lines.append(f"best member: uid {best.uid} after {best.stop} steps, fitness {best.fitness:.6g}; "
                 f"its lineage ({len(chain)} intervals, "
                 f"{sum(c.operator == EXPLOIT for c in chain)} exploits):")
    names = run.param_names
    header = ["steps", "uid", "decision", "fitness", *names]
    rows = [[f"{c.step}-{c.stop}", str(c.uid), c.operator.removeprefix("pbt:"),
             f"{c.fitness:.6g}", *(_fmt(c.params[n]) for n in names)] for c in chain]
    if len(rows) > limit:
        rows = rows[: limit // 2] + [["..."] * len(header)] + rows[-(limit // 2):]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, ["-" * w for w in widths], *rows]:
        lines.append("  " + "  ".join(v.rjust(w) for v, w in zip(r, widths)))
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "" if not np.isfinite(v) else f"{v:.6g}"
    return str(v)


def plot_pbt_schedule(run: Run) -> Figure | None:
    """Each hyperparameter of the best lineage against training step (exploits marked), and
    every interval's fitness against its step for the population, the lineage on top."""
    chain = best_lineage(run)
    if not chain:
        return None
    # Explored parameters active on the lineage get a panel; the fixed ones (architecture,
    # copied with the weights) and inactive ones are named in the title instead.
    fixed = set(run.attrs.get("fingerprint_description", {}).get("pbt", {}).get("fixed", []))
    names = [n for n in run.param_names if n not in fixed
             and any(_fmt(c.params[n]) != "" for c in chain)]
    kept = [f"{n}={_fmt(chain[-1].params[n])}" for n in run.param_names
            if n in fixed and _fmt(chain[-1].params[n]) != ""]
    fig = Figure(figsize=(7.5, 1.6 * (len(names) + 1) + 0.6), dpi=DPI, layout="constrained")
    axes = fig.subplots(len(names) + 1, 1, sharex=True, squeeze=False)[:, 0]
    exploits = [c.step for c in chain if c.operator == EXPLOIT]
    for ax, name in zip(axes, names):
        xs, ys = [], []
        for c in chain:
            v = c.params[name]
            xs += [c.step, c.stop]
            ys += [v, v]
        if run.is_categorical(name):
            choices = list(run.space[name].get("choices", sorted({str(y) for y in ys})))
            ax.set_yticks(range(len(choices)), [str(c) for c in choices])
            ys = [choices.index(y) if y in choices else np.nan for y in ys]
        ax.plot(xs, ys, color="C0", lw=1.8)
        if run.is_log(name):
            ax.set_yscale("log")
        for x in exploits:
            ax.axvline(x, color="C3", ls="--", lw=0.9)
        ax.set_ylabel(name)
    ax = axes[-1]
    ok = run.complete
    ax.scatter(interval_stops(run)[ok], run.fitness[ok], s=8, color="0.6",
               label="every interval (population)")
    ax.plot([c.stop for c in chain], [c.fitness for c in chain], "o-", color="C0", ms=3,
            label="best lineage")
    ex = [c for c in chain if c.operator == EXPLOIT]
    ax.scatter([c.stop for c in ex], [c.fitness for c in ex], marker="v", s=40, color="C3",
               zorder=3, label="after an exploit")
    for x in exploits:
        ax.axvline(x, color="C3", ls="--", lw=0.9)
    finite = run.fitness[ok]
    if finite.size and np.all(finite > 0) and finite.max() / finite.min() > 100:
        ax.set_yscale("log")
    ax.set_ylabel("fitness")
    ax.set_xlabel("training step (dashed: exploits on the best lineage)")
    ax.legend(fontsize=7, loc="upper right")
    _title(fig, run, f"PBT: schedule of the best member (uid {chain[-1].uid})"
           + (f"; fixed: {', '.join(kept)}" if kept else ""))
    return fig


__all__ = ["best_lineage", "format_pbt", "is_pbt", "plot_pbt_schedule"]
