"""PNG plots of a run, drawn from the store alone with matplotlib's Agg renderer.

``make_plots(run, out_dir, baseline=None)`` writes every plot that applies to the run and
returns their paths. Each ``plot_*`` function returns a matplotlib ``Figure`` (or None when the
run has nothing for it, e.g. no ES islands for the σ plot), so tests and notebooks can use
them one by one. Figures are built without pyplot: no global state, no display needed.

Conventions that keep the plots readable at a glance: fitness is "lower is better" and goes
on a log axis when it is positive and spans more than a decade and a half; wall time is shown
in s, min or h depending on the run's length; a parameter declared ``log=True`` is drawn on a
log axis; islands keep one colour across every plot.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter
from matplotlib.transforms import blended_transform_factory

from evo_engine.analysis.summary import active_span, first_of_batch, fmt_duration, summarize
from evo_engine.analysis.timeline import (
    COMPUTE_LABEL,
    JobBreak,
    compute_per_evaluation,
    compute_unit,
    evaluating_time,
    fitness_label,
    has_pruning,
    job_pauses,
    last_reported,
    worker_seconds,
)
from evo_engine.errors import InputError
from evo_engine.search.messages import EvalState
from evo_engine.store.reader import Run, ranked_rows

DPI = 150
FORMATS = ("png", "svg", "pdf")


class PlotError(InputError):
    """The plots cannot be written where the user asked."""


class Skip(Exception):  # noqa: N818 - not an error: the run has nothing for this plot
    """Raised inside a plot function: the plot is not drawn, for the reason given."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _skippable(fn: Callable[..., Figure]) -> Callable[..., Figure | None]:
    """``plot_x(run)`` returns None when the run has nothing for it; ``plot_x.draw(run)``
    raises ``Skip`` with the reason instead (``make_plots`` prints it)."""
    import functools

    @functools.wraps(fn)
    def plot(*args: object, **kwargs: object) -> Figure | None:
        try:
            return fn(*args, **kwargs)
        except Skip:
            return None

    plot.draw = fn  # type: ignore[attr-defined]
    return plot


# ---------------------------------------------------------------- helpers


def island_colour(k: int, n: int) -> tuple[float, float, float, float]:
    """One stable colour per island (tab10 up to ten islands, then a continuous map)."""
    if n <= 10:
        return colormaps["tab10"](k % 10)
    return colormaps["turbo"](k / max(n - 1, 1))


def time_unit(span_seconds: float) -> tuple[float, str]:
    """(divisor, unit) so that a run's wall-clock span reads in s, min or h."""
    if span_seconds < 120:
        return 1.0, "s"
    if span_seconds < 2 * 3600:
        return 60.0, "min"
    return 3600.0, "h"


def _fitness_axis(ax: Axes, values: np.ndarray, label: str) -> None:
    """Log scale when fitness is positive and spans more than a decade and a half; a long
    label (a metric's full name) wrapped so it never runs off the figure."""
    v = values[np.isfinite(values)]
    if v.size and v.min() > 0 and v.max() / v.min() > 30:
        ax.set_yscale("log")
        label += " (log scale)"
    ax.set_ylabel(textwrap.fill(label, 42))


def best_so_far(fitness: np.ndarray) -> np.ndarray:
    """Running minimum of ``fitness`` treating NaN (failed) as no improvement; NaN before any."""
    f = np.where(np.isfinite(fitness), fitness, np.inf)
    out = np.minimum.accumulate(f) if f.size else f
    return np.where(np.isfinite(out), out, np.nan)


def _islands(run: Run) -> int:
    n = run.attrs.get("islands")
    if isinstance(n, int) and n > 0:
        return n
    isl = run.evaluations.get("island", np.zeros(0, dtype=int))
    return int(isl.max()) + 1 if isl.size else 1


def _n_islands_seen(run: Run) -> int:
    return int(np.unique(run.evaluations["island"]).size)


def _mode(run: Run) -> str:
    return "synchronous" if run.attrs.get("sync") else "asynchronous"


def _rel_time(run: Run, t: np.ndarray) -> np.ndarray:
    """Seconds since the run started; NaN where no time was recorded (a worker that died)."""
    t = np.asarray(t, dtype=float)
    return np.where(t > 0, t - run.t0, np.nan)


def param_values(run: Run, name: str) -> tuple[np.ndarray, list[str] | None]:
    """A parameter as numbers to plot, and the category labels when it is categorical.

    An inactive (conditional) parameter is NaN, so it is left out of every plot."""
    raw = run.evaluations[f"params/{name}"]
    if not run.is_categorical(name):
        return np.asarray(raw, dtype=float), None
    choices = [str(c) for c in run.space.get(name, {}).get("choices", [])]
    for v in raw:
        if str(v) not in choices and str(v) != "":
            choices.append(str(v))
    index = {c: float(i) for i, c in enumerate(choices)}
    return np.array([index.get(str(v), np.nan) for v in raw], dtype=float), choices


_param_values = param_values


def _is_int(run: Run, name: str) -> bool:
    return run.space.get(name, {}).get("type") == "int"


def _param_axis(ax: Axes, run: Run, name: str, labels: list[str] | None, axis: str = "y") -> None:
    set_label = ax.set_ylabel if axis == "y" else ax.set_xlabel
    if labels is not None:
        ticks = ax.set_yticks if axis == "y" else ax.set_xticks
        ticks(range(len(labels)), labels, fontsize=8)
        if axis == "x":
            ax.tick_params(axis="x", labelrotation=30)
        set_label(f"{name} (categorical)")
        return
    target = ax.yaxis if axis == "y" else ax.xaxis
    if run.is_log(name):
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
        set_label(f"{name} (log scale)")
        if _is_int(run, name):
            # Plain whole numbers on a log axis (8, 16, 32), not 10^1 and fractional minors.
            target.set_major_locator(LogLocator(base=2))
            target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0f}"))
            target.set_minor_formatter(NullFormatter())
    else:
        set_label(name)
        if _is_int(run, name):
            target.set_major_locator(MaxNLocator(integer=True))
    spec = run.space.get(name, {})
    if "lo" in spec and "hi" in spec:
        # The whole declared range, so "stuck at a bound" is visible.
        (ax.set_ylim if axis == "y" else ax.set_xlim)(*_padded(spec["lo"], spec["hi"],
                                                             run.is_log(name)))


def incumbent_row(run: Run) -> tuple[int, int, float] | None:
    """(log row of its first complete evaluation, uid, estimated fitness) of the configuration
    the engine ranks best (``ranked_rows``: the summary's "best", a mean where it was
    evaluated several times), or None when nothing completed. The plots' star marks it."""
    ranked = ranked_rows(run)
    if not ranked:
        return None
    e, rows = ranked[0]
    return rows[0], e.uid, e.mean


def _latest(t: np.ndarray) -> float:
    """The largest recorded time (0 when none is), for choosing the time unit."""
    finite = t[np.isfinite(t)]
    return float(finite.max()) if finite.size else 0.0


def _padded(lo: float, hi: float, log: bool) -> tuple[float, float]:
    if log and lo > 0:
        f = (hi / lo) ** 0.04
        return lo / f, hi * f
    pad = 0.04 * (hi - lo)
    return lo - pad, hi + pad


def _failed_marks(ax: Axes, x: np.ndarray, label: bool = True, pruned: bool = False) -> None:
    """Failed (red) or pruned (grey) evaluations as crosses in a strip above the data.

    Neither has a comparable fitness: a failure has none, a pruned evaluation only a partial one.
    """
    if not x.size:
        return
    # Grow the y range by a strip at the top, so the crosses never sit on a data point.
    ax.autoscale_view()
    lo, hi = ax.get_ylim()
    if ax.get_yscale() == "log":
        ax.set_ylim(lo, hi * (hi / lo) ** 0.1)
    else:
        ax.set_ylim(lo, hi + 0.1 * (hi - lo))
    trans = blended_transform_factory(ax.transData, ax.transAxes)
    what, colour, y = ("pruned", "0.45", 0.93) if pruned else ("failed", "red", 0.97)
    ax.scatter(x, np.full(x.size, y), transform=trans, marker="x", s=18, color=colour,
               linewidths=1, label=f"{what} ({x.size})" if label else None, zorder=3)


def _title(fig: Figure, run: Run, what: str) -> None:
    text = (f"{what} — {run.attrs.get('scenario', '?')} ({run.path.name}, {_mode(run)}, "
            f"{run.n} evaluations)")
    # Wrapped to the figure's width (about 11 characters per inch at 11 pt), never clipped.
    fig.suptitle(textwrap.fill(text, max(int(fig.get_figwidth() * 10.5), 30)), fontsize=11)


def _legend(ax: Axes, **kw: object) -> None:
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=8, framealpha=0.85, **kw)


# ---------------------------------------------------------------- plots


def _mark_breaks(ax: Axes, xs: list[tuple[float, JobBreak]], label: bool) -> None:
    """A dotted line where each resumed job began, with how long nothing ran before it."""
    trans = blended_transform_factory(ax.transData, ax.transAxes)
    for x, b in xs:
        ax.axvline(x, color="0.35", ls=(0, (1, 2)), lw=1.1, zorder=1, gid="job-boundary",
                   label="job boundary (resume; pause cut out)" if label else None)
        label = False
        ax.text(x, 0.02, f" job {b.job} after a {fmt_duration(b.seconds)} pause ",
                transform=trans, fontsize=7, color="0.25", va="bottom", ha="right",
                rotation=90, bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8,
                                   "pad": 0.5}, zorder=4)




@_skippable
def plot_best_so_far(run: Run, baseline: Run | None = None) -> Figure:
    """Best fitness so far versus evaluations (compute when pruning) and evaluating time.

    Both runs are aligned on their first evaluation's start (start-up excluded); the pauses
    between the jobs of a resumed run are cut out and marked."""
    if not run.complete.any():
        raise Skip("no evaluation completed")
    ev = run.evaluations
    n_isl = _islands(run)
    fig = Figure(figsize=(13, 4.8), dpi=DPI, layout="constrained")
    ax_n, ax_t = fig.subplots(1, 2, sharey=True)
    runs: list[tuple[Run, str, dict[str, object]]] = [
        (run, f"overall ({'sync' if run.attrs.get('sync') else 'async'})",
         {"color": "black", "lw": 2.2})]
    if baseline is not None and baseline.complete.any():
        mode = "sync" if baseline.attrs.get("sync") else "async"
        runs.append((baseline, f"baseline {baseline.path.name} ({mode})",
                     {"color": "0.45", "lw": 2.0, "ls": "--"}))
    pruned = any(has_pruning(r) for r, _, _ in runs)
    unit = compute_unit([r for r, _, _ in runs]) if pruned else None

    unit_h = unit == "worker-seconds" and max(
        float(worker_seconds(r).sum()) for r, _, _ in runs) > 3 * 3600

    def x_count(r: Run) -> np.ndarray:
        """Evaluations finished, or compute spent, after each row (rows in finish order)."""
        if unit is None:
            return np.arange(1, r.n + 1, dtype=float)
        return np.cumsum(compute_per_evaluation(r, unit)) / (3600.0 if unit_h else 1.0)

    timed = {id(r): evaluating_time(r) for r, _, _ in runs}
    span = max(_latest(timed[id(r)][0]) for r, _, _ in runs)
    div, tunit = time_unit(span)
    xc, (t_end, breaks) = x_count(run), timed[id(run)]
    if _n_islands_seen(run) > 1:
        for k in range(n_isl):
            mask = ev["island"] == k
            if not (mask & run.complete).any():
                continue
            c = island_colour(k, n_isl)
            f = run.fitness[mask]
            ax_n.step(xc[mask], best_so_far(f), where="post", color=c, lw=1.2,
                      alpha=0.9, zorder=3, label=f"island {k}")
            order = np.argsort(t_end[mask], kind="stable")
            ax_t.step(t_end[mask][order] / div, best_so_far(f[order]), where="post", color=c,
                      lw=1.2, alpha=0.9, zorder=3)
    for r, label, style in runs:
        f = r.fitness
        ax_n.step(x_count(r), best_so_far(f), where="post", label=label, **style)
        t = timed[id(r)][0]
        order = np.argsort(t, kind="stable")
        ax_t.step(t[order] / div, best_so_far(f[order]), where="post", **style)
    _fitness_axis(ax_n, np.concatenate([r.fitness for r, _, _ in runs]),
                  f"best {fitness_label(run)} so far")
    if breaks:
        _mark_breaks(ax_n, [(float(xc[b.after_evaluations - 1]) if b.after_evaluations else
                             0.0, b) for b in breaks], label=True)
        _mark_breaks(ax_t, [(b.at / div, b) for b in breaks], label=False)
    if unit is None:
        ax_n.set_xlabel("evaluations finished (count)")
        ax_n.set_title("versus evaluations")
    else:
        label = COMPUTE_LABEL[unit]
        if unit_h:
            label = label.replace("worker-seconds", "worker-hours")
        ax_n.set_xlabel(label, fontsize=9)
        ax_n.set_title("versus compute (pruning on: an evaluation's cost varies)")
    ax_t.set_xlabel(f"evaluating time ({tunit}): from the first evaluation's start, "
                    "start-up excluded", fontsize=9)
    ax_t.set_title("versus evaluating time")
    ax_t.tick_params(labelleft=True)
    for ax in (ax_n, ax_t):
        ax.grid(alpha=0.3)
        ax.set_xlim(left=0)
    _legend(ax_n, loc="upper right")
    _title(fig, run, "Best fitness so far (lower is better)")
    return fig


@_skippable
def plot_fitness_over_time(run: Run) -> Figure:
    """Every evaluation's fitness at the moment it finished, coloured by island.

    A pruned evaluation has no final fitness: it is drawn at its last reported value (at the
    step where it was stopped) as a hollow grey triangle. A failed one has no value at all:
    a red cross in a strip above the data."""
    if run.n == 0:
        raise Skip("no evaluation recorded")
    ev = run.evaluations
    n_isl = _islands(run)
    t, breaks = evaluating_time(run)
    div, unit = time_unit(_latest(t))
    fig = Figure(figsize=(11, 5), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    ok = run.complete
    for k in range(n_isl):
        m = ok & (ev["island"] == k)
        if m.any():
            ax.scatter(t[m] / div, run.fitness[m], s=12, alpha=0.7, color=island_colour(k, n_isl),
                       label=f"island {k}", edgecolors="none")
    pruned = ev["state"] == int(EvalState.PRUNED)
    last, _ = last_reported(run)
    shown = pruned & np.isfinite(last)
    if shown.any():
        ax.scatter(t[shown] / div, last[shown], s=20, marker="v", facecolors="none",
                   edgecolors="0.4", linewidths=0.8, zorder=2,
                   label=f"pruned ({int(shown.sum())}): last reported value")
    order = np.argsort(t, kind="stable")
    ax.step(t[order] / div, best_so_far(run.fitness[order]), where="post", color="black", lw=1.5,
            label="best so far (complete only)")
    _fitness_axis(ax, np.concatenate([run.fitness[ok], last[shown]]),
                  fitness_label(run))
    _failed_marks(ax, t[~ok & ~pruned] / div)
    _failed_marks(ax, t[pruned & ~shown] / div, pruned=True)
    if breaks:
        _mark_breaks(ax, [(b.at / div, b) for b in breaks], label=True)
    ax.set_xlabel(f"evaluating time ({unit}) at the end of each evaluation: from the first "
                  "evaluation's start, start-up excluded")
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    _legend(ax, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _title(fig, run, "Fitness of every evaluation (lower is better)")
    return fig


@_skippable
def plot_parameters(run: Run) -> Figure:
    """Each hyperparameter's value over the run, coloured by island, with the best marked.

    The legend takes the grid's spare cell when the number of parameters is odd, else a row
    below the panels: inside the figure, never over the data, never an empty panel."""
    names = [p for p in run.param_names if f"params/{p}" in run.evaluations]
    if run.n == 0:
        raise Skip("no evaluation recorded")
    if not names:
        raise Skip("the run recorded no parameter values")
    ev = run.evaluations
    n_isl = _islands(run)
    ncols = 1 if len(names) == 1 else 2
    nrows = -(-len(names) // ncols)
    spare = nrows * ncols > len(names)
    fig = Figure(figsize=(6.5 * ncols, 3.2 * nrows + (0.6 if spare else 1.1)), dpi=DPI,
                 layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    x = np.arange(1, run.n + 1)
    ok = run.complete
    inc = incumbent_row(run)
    best = None if inc is None else inc[0]
    for ax, name in zip(axes, names):
        y, labels = _param_values(run, name)
        jitter = 0.0
        if labels is not None:
            # Spread categorical dots a little so thousands of them do not hide each other.
            jitter = np.random.default_rng(0).uniform(-0.15, 0.15, run.n)
        for k in range(n_isl):
            m = ok & (ev["island"] == k)
            if m.any():
                ax.scatter(x[m], (y + jitter)[m], s=9, alpha=0.6, color=island_colour(k, n_isl),
                           edgecolors="none", label=f"island {k}")
        pruned = ev["state"] == int(EvalState.PRUNED)
        for mask, colour, what in ((~ok & ~pruned, "red", "failed"), (pruned, "0.45", "pruned")):
            if mask.any():
                ax.scatter(x[mask], (y + jitter)[mask], s=16, marker="x", color=colour,
                           linewidths=0.8, label=what)
        if best is not None:
            ax.axhline(y[best], color="black", lw=0.8, ls=":")
            ax.scatter([x[best]], [y[best]], s=160, marker="*", color="gold", edgecolors="black",
                       zorder=5, label=f"best (uid {inc[1]})")
        _param_axis(ax, run, name, labels)
        ax.set_xlabel("evaluations finished (count)")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    if spare:
        for ax in axes[len(names):]:
            ax.axis("off")
        axes[len(names)].legend(handles, labels, loc="center", fontsize=9, frameon=False)
    else:
        fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 6),
                   fontsize=8, frameon=False)
    _title(fig, run, "Hyperparameters over the run")
    return fig


@_skippable
def plot_sigma(run: Run) -> Figure:
    """The ES step size σ of each parameter over the run, one panel per ES island."""
    if not run.has_sigma:
        raise Skip("no ES island recorded a step size σ (it applies to the ES operator)")
    ev = run.evaluations
    sigma = np.asarray(ev["sigma"], dtype=float)
    names = run.param_names if len(run.param_names) == sigma.shape[1] else [
        f"gene {j}" for j in range(sigma.shape[1])]
    has = np.isfinite(sigma).any(axis=1)
    islands = [int(k) for k in np.unique(ev["island"][has])]
    fig = Figure(figsize=(11, 3.4 * len(islands) + 0.6), dpi=DPI, layout="constrained")
    axes = np.atleast_1d(fig.subplots(len(islands), 1, squeeze=False)).ravel()
    x = np.arange(1, run.n + 1)
    colours = colormaps["tab10" if len(names) <= 10 else "turbo"]
    for ax, k in zip(axes, islands):
        m = has & (ev["island"] == k)
        for j, name in enumerate(names):
            c = colours(j % 10) if len(names) <= 10 else colours(j / max(len(names) - 1, 1))
            ax.plot(x[m], sigma[m, j], marker=".", ms=3, lw=1, color=c, label=name)
        ax.set_yscale("log")
        ax.set_ylabel("σ (unit-cube units, log scale)")
        ax.set_title(f"island {k}", fontsize=10)
        ax.set_xlabel("evaluations finished")
        ax.grid(alpha=0.3, which="both")
        _legend(ax, loc="upper right", ncol=2 if len(names) > 4 else 1)
    _title(fig, run, "ES step size σ per parameter")
    return fig


def worker_usage(run: Run) -> dict[int, tuple[float, float]]:
    """Per worker: (busy seconds, busy fraction of the run's active time).

    Active time runs from the first start to the last end, less the pauses between the jobs
    of a resumed run (see ``active_span``).
    """
    ev = run.evaluations
    t0, t1 = ev["t_start"], ev["t_end"]
    ok = np.isfinite(t0) & np.isfinite(t1) & (t0 > 0) & (t1 >= t0) & (ev["worker"] >= 0)
    if not ok.any():
        return {}
    full, between = active_span(t0[ok], t1[ok], int(run.attrs.get("jobs", 1) or 1))
    span = (full - between) or 1e-9
    out = {}
    once = first_of_batch(ev) if "batch" in ev else np.ones(ok.size, dtype=bool)
    for w in np.unique(ev["worker"][ok]):
        m = ok & (ev["worker"] == w) & once  # a batch's members share one stretch of time
        busy = float((t1[m] - t0[m]).sum())
        out[int(w)] = (busy, min(busy / span, 1.0))
    return out


@_skippable
def plot_workers(run: Run) -> Figure:
    """A Gantt chart: one row per worker, one bar per evaluation, idle gaps left grey."""
    usage = worker_usage(run)
    if not usage:
        raise Skip("no evaluation has a recorded worker and start and end times")
    ev = run.evaluations
    n_isl = _islands(run)
    t_start, t_end = _rel_time(run, ev["t_start"]), _rel_time(run, ev["t_end"])
    ok = np.isfinite(t_start) & np.isfinite(t_end) & (t_end >= t_start) & (ev["worker"] >= 0)
    lo, hi = float(t_start[ok].min()), float(t_end[ok].max())
    div, unit = time_unit(hi)
    start = min(0.0, lo)
    workers = sorted(usage)
    pauses = job_pauses(run)
    fig = Figure(figsize=(13, min(1.6 + 0.38 * len(workers), 14)), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    failed = ev["state"] != int(EvalState.COMPLETE)
    pruned = ev["state"] == int(EvalState.PRUNED)
    # Each evaluation its own bar with an edge, so back-to-back ones stay countable.
    bar = {"edgecolor": "0.2", "linewidth": 0.4, "zorder": 2}
    for row, w in enumerate(workers):
        # Before the first evaluation (data preparation, worker start-up): idle too, hatched.
        if lo > start:
            ax.broken_barh([(start / div, (lo - start) / div)], (row - 0.4, 0.8),
                           facecolor="0.97", edgecolor="0.75", hatch="///", linewidth=0, zorder=1)
        ax.broken_barh([(lo / div, (hi - lo) / div)], (row - 0.4, 0.8), color="0.9", zorder=1)
        if pauses:  # between the jobs of a resumed run: no workers, so not idle either
            ax.broken_barh([((a - run.t0) / div, (b - a) / div) for a, b in pauses],
                           (row - 0.4, 0.8), facecolor="white", edgecolor="0.6",
                           hatch="\\\\", linewidth=0, zorder=1.5)
        m = ok & (ev["worker"] == w)
        for k in range(n_isl):
            mk = m & (ev["island"] == k) & ~failed
            if mk.any():
                ax.broken_barh(list(zip(t_start[mk] / div, (t_end[mk] - t_start[mk]) / div)),
                               (row - 0.4, 0.8), facecolor=island_colour(k, n_isl), **bar)
        for mf, colour in ((m & failed & ~pruned, "red"), (m & pruned, "0.55")):
            if mf.any():
                ax.broken_barh(list(zip(t_start[mf] / div, (t_end[mf] - t_start[mf]) / div)),
                               (row - 0.4, 0.8), facecolor=colour, **bar)
    ax.set_yticks(range(len(workers)),
                  [f"worker {w} ({100 * usage[w][1]:.0f}% busy)" for w in workers], fontsize=8)
    ax.set_ylim(len(workers) - 0.5, -0.5)
    ax.set_xlabel(f"wall time since run start ({unit})")
    handles = [Patch(color=island_colour(k, n_isl), label=f"island {k}") for k in range(n_isl)
               if (ev["island"] == k).any()]
    if (failed & ~pruned).any():
        handles.append(Patch(color="red", label="failed evaluation"))
    if pruned.any():
        handles.append(Patch(color="0.55", label="pruned (stopped early)"))
    handles.append(Patch(color="0.9", label="idle"))
    if pauses:
        handles.append(Patch(facecolor="white", edgecolor="0.6", hatch="\\\\",
                             label="between jobs (resume; not counted)"))
    if lo > start:
        handles.append(Patch(facecolor="0.97", edgecolor="0.75", hatch="///",
                             label=f"start-up ({lo - start:.3g} s: data, workers)"))
    ax.set_xlim(start / div, hi / div)
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    jobs = int(run.attrs.get("jobs", 1) or 1)
    util = summarize(run, top=0).utilization  # the one definition (evo_engine.util.timing)
    note = f" ({jobs} jobs; the pauses between them are not counted)" if jobs > 1 else ""
    shown = "unknown" if util is None else f"{100 * util:.0f}%"
    _title(fig, run, f"Worker timeline: {shown} utilization{note}")
    return fig


def fitness_percentile(f: np.ndarray) -> np.ndarray:
    """Each fitness's rank as a percentile, 0 = best: the one colour scale for fitness."""
    return 100.0 * np.argsort(np.argsort(f, kind="stable")) / max(f.size - 1, 1)


FITNESS_CMAP = "viridis_r"
"""Fitness percentile colours (yellow = best, purple = worst) wherever points are coloured
by fitness; the colour bar has the best at the top."""


def fitness_colorbar(fig: Figure, mappable: object, ax: object, label: str) -> None:
    cb = fig.colorbar(mappable, ax=ax, label=label, shrink=0.9)
    cb.ax.invert_yaxis()


@_skippable
def plot_influence(run: Run, imp: object = None) -> Figure:
    """Fitness against the two most important parameters, and the two against each other.

    "Most important" is the one importance measure (``analysis.importance``: permutation
    importance of a random forest); there is no second ranking. Not drawn when that measure
    is not given (too few evaluations, or a forest that explains nothing). Every panel colours
    points by fitness rank (percentile, yellow = best)."""
    from evo_engine.analysis.importance import NoImportance, importance

    imp = importance(run) if imp is None else imp
    if isinstance(imp, NoImportance):
        raise Skip(f"it shows the most important parameters, and there is no importance: "
                   f"{imp.reason}")
    order = np.argsort(-imp.mean, kind="stable")
    scores = {imp.names[i]: float(imp.mean[i]) for i in order}
    top = list(scores)[:2]
    ok = run.complete
    # The pair panel needs evaluations where both are active (not two exclusive branches).
    both = len(top) == 2 and int(np.sum(np.isfinite(param_values(run, top[0])[0][ok])
                                        & np.isfinite(param_values(run, top[1])[0][ok]))) >= 3
    panels = len(top) + (1 if both else 0)
    fig = Figure(figsize=(5.0 * panels + 1.2, 4.8), dpi=DPI, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, panels)).ravel()
    rng = np.random.default_rng(0)
    f = run.fitness[ok]
    pct = fitness_percentile(f)
    plotted: dict[str, np.ndarray] = {}
    # The incumbent (the summary's best), at its estimated fitness: a mean where raced.
    inc = incumbent_row(run)
    assert inc is not None  # importance needs complete evaluations
    best, best_f = int(np.flatnonzero(np.flatnonzero(ok) == inc[0])[0]), inc[2]
    sc = None
    for ax, name in zip(axes, top):
        x, labels = param_values(run, name)
        x = x[ok] + (rng.uniform(-0.15, 0.15, int(ok.sum())) if labels is not None else 0.0)
        plotted[name] = x
        sc = ax.scatter(x, f, c=pct, cmap=FITNESS_CMAP, vmin=0, vmax=100, s=14, alpha=0.8,
                        edgecolors="none")
        if np.isfinite(x[best]):  # the best may have this parameter inactive
            ax.scatter([x[best]], [best_f], s=180, marker="*", color="gold",
                       edgecolors="black", zorder=5, label="best")
        _param_axis(ax, run, name, labels, axis="x")
        _fitness_axis(ax, f, fitness_label(run))
        active = int(np.isfinite(x).sum())
        ax.set_title(f"{name}: importance {100 * scores[name]:.0f} %"
                     + (f" ({active} where active)" if active < f.size else ""), fontsize=10)
        ax.grid(alpha=0.3)
        _legend(ax, loc="best")
    if panels == 3:
        ax = axes[2]
        a, b = top
        sc = ax.scatter(plotted[a], plotted[b], c=pct, cmap=FITNESS_CMAP, vmin=0, vmax=100,
                        s=14, alpha=0.8, edgecolors="none")
        ax.scatter([plotted[a][best]], [plotted[b][best]], s=180, marker="*", color="gold",
                   edgecolors="black", zorder=5)
        _param_axis(ax, run, a, param_values(run, a)[1], axis="x")
        _param_axis(ax, run, b, param_values(run, b)[1], axis="y")
        ax.set_title(f"{a} × {b}", fontsize=10)
        ax.grid(alpha=0.3)
    if sc is not None:
        fitness_colorbar(fig, sc, list(axes), "fitness rank (percentile, 0 = best)")
    _title(fig, run, "Fitness against the two most important parameters (importance: share "
           "of the permutation importance, as in importance.png)")
    return fig


@_skippable
def plot_migrations(run: Run) -> Figure:
    """When each migrant arrived where, and whether its destination island accepted it."""
    mig = run.migrations
    if not mig or mig.get("uid", np.zeros(0)).size == 0:
        raise Skip("no migrant was sent (one island, or no migration interval reached)")
    n_isl = _islands(run)
    fig = Figure(figsize=(11, 1.6 + 0.45 * n_isl), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    acc = mig["accepted"].astype(bool)
    for k in range(n_isl):
        m = mig["origin"] == k
        if not m.any():
            continue
        c = island_colour(k, n_isl)
        ax.scatter(mig["at_eval"][m & acc], mig["destination"][m & acc], color=c, s=40,
                   marker="o", label=f"from island {k}")
        ax.scatter(mig["at_eval"][m & ~acc], mig["destination"][m & ~acc], facecolors="none",
                   edgecolors=c, s=40, marker="o")
    ax.set_yticks(range(n_isl), [f"island {k}" for k in range(n_isl)], fontsize=8)
    ax.set_ylim(n_isl - 0.5, -0.5)
    ax.set_ylabel("destination")
    ax.set_xlabel("evaluations finished when the migrant was sent")
    ax.grid(alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    handles += [Line2D([], [], marker="o", ls="", color="0.3", label="accepted"),
                Line2D([], [], marker="o", ls="", mfc="none", color="0.3", label="rejected")]
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _title(fig, run, f"Migrations: {int(acc.sum())} of {acc.size} accepted")
    return fig


PLOTS: dict[str, Callable[[Run], Figure | None]] = {
    "fitness_over_time": plot_fitness_over_time,
    "parameters": plot_parameters,
    "influence": plot_influence,
    "sigma": plot_sigma,
    "workers": plot_workers,
    "migrations": plot_migrations,
}
"""Plot name → function; ``best_so_far`` (which takes a baseline) is drawn first."""


def make_plots(run: Run, out_dir: str | Path, baseline: Run | None = None,
               fmt: str = "png", dpi: int = DPI,
               on_skip: Callable[[str, str], None] | None = None) -> list[Path]:
    """Write every plot that applies to ``run`` as ``out_dir/<name>.<fmt>``; returns the paths.

    ``fmt`` is png (``dpi`` dots per inch), svg or pdf (vector: for a paper). Each plot not
    drawn is passed to ``on_skip(name, reason)`` (``analyze`` prints it).
    """
    from evo_engine.analysis.figures import (
        plot_importance,
        plot_learning_curves,
        plot_parallel_coordinates,
    )
    from evo_engine.analysis.importance import importance

    if fmt not in FORMATS:
        raise PlotError(f"unknown plot format {fmt!r}; choose from {', '.join(FORMATS)}")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PlotError(f"cannot create the plot directory {out}: {exc.strerror or exc}") from None
    imp = importance(run)  # once: importance.png and influence.png share it
    draws: list[tuple[str, Callable[[], Figure]]] = [
        ("best_so_far", lambda: plot_best_so_far.draw(run, baseline))]
    draws += [(name, (lambda fn=fn: fn.draw(run))) for name, fn in PLOTS.items()
              if name != "influence"]
    draws += [("influence", lambda: plot_influence.draw(run, imp)),
              ("learning_curves", lambda: plot_learning_curves.draw(run)),
              ("parallel_coordinates", lambda: plot_parallel_coordinates.draw(run)),
              ("importance", lambda: plot_importance.draw(run, imp))]
    from evo_engine.analysis.front import plot_hypervolume, plot_pareto

    draws += [("pareto", lambda: plot_pareto(run)), ("hypervolume", lambda: plot_hypervolume(run))]
    from evo_engine.analysis.pbt import plot_pbt_schedule

    draws += [("pbt_schedule", lambda: plot_pbt_schedule(run))]
    written = []
    for name, draw in draws:
        try:
            fig = draw()
        except Skip as skip:
            if on_skip is not None:
                on_skip(name, skip.reason)
            continue
        if fig is None:  # a plot that does not apply to this run (the front of one objective)
            continue
        path = out / f"{name}.{fmt}"
        try:
            fig.savefig(path, dpi=dpi, metadata={"Software": None} if fmt == "png" else None)
        except OSError as exc:
            raise PlotError(f"cannot write {path}: {exc.strerror or exc}") from None
        written.append(path)
    return written


__all__ = ["PLOTS", "PlotError", "Skip", "best_so_far", "make_plots", "worker_usage"]
