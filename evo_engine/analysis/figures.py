"""Plots for a paper: learning curves, parallel coordinates and hyperparameter importance.

Like ``plots.py`` each function takes a ``Run`` and returns a matplotlib ``Figure`` or None
(nothing to draw), built without pyplot. Fitness colours are one scale everywhere: the
fitness rank as a percentile, yellow = best (``plots.FITNESS_CMAP``).
"""

from __future__ import annotations

import textwrap

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from evo_engine.analysis.importance import DEFINITION, MIN_R2, NoImportance, importance
from evo_engine.analysis.plots import (
    DPI,
    FITNESS_CMAP,
    Skip,
    _fitness_axis,
    _skippable,
    _title,
    fitness_colorbar,
    fitness_percentile,
    param_values,
)
from evo_engine.analysis.timeline import fitness_label, last_reported
from evo_engine.search.messages import EvalState
from evo_engine.store.reader import Run


@_skippable
def plot_learning_curves(run: Run) -> Figure:
    """Every evaluation's intermediate reports against its steps (``ctx.report``).

    Complete evaluations are coloured by their final fitness rank; pruned ones are grey with
    a cross where they were stopped; the ASHA rungs, when the run had them, are dotted lines.
    """
    c = run.curves
    if not c or c.get("uid", np.zeros(0)).size == 0:
        raise Skip("the objective reported no intermediate values (ctx.report)")
    ev = run.evaluations
    state = dict(zip(ev["uid"].tolist(), ev["state"].tolist()))
    ok_uids = ev["uid"][run.complete].tolist()
    pct = dict(zip(ok_uids, fitness_percentile(run.fitness[run.complete]).tolist()))
    cmap = colormaps[FITNESS_CMAP]
    fig = Figure(figsize=(9, 5.2), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    order = np.lexsort((c["step"], c["uid"]))
    uid, step, value = c["uid"][order], c["step"][order], c["value"][order]
    cuts = np.flatnonzero(np.diff(uid)) + 1
    n_pruned = n_complete = 0
    # Pruned first, then complete ones worst to best, so the best curves are drawn on top.
    groups = list(zip(np.split(uid, cuts), np.split(step, cuts), np.split(value, cuts)))
    groups.sort(key=lambda g: (state.get(int(g[0][0])) != int(EvalState.PRUNED),
                               -pct.get(int(g[0][0]), 101.0)))
    for u, s, v in groups:
        u0 = int(u[0])
        st = state.get(u0)
        if st == int(EvalState.PRUNED):
            n_pruned += 1
            ax.plot(s, v, color="0.6", lw=0.8, alpha=0.6, zorder=1)
            ax.scatter([s[-1]], [v[-1]], marker="x", s=18, color="0.35", linewidths=0.9,
                       zorder=2)
        elif u0 in pct:
            n_complete += 1
            ax.plot(s, v, color=cmap(pct[u0] / 100.0), lw=1.1, alpha=0.9, zorder=3)
    pruner = (run.attrs.get("fingerprint_description") or {}).get("pruner") or {}
    rungs = []
    if pruner.get("min_steps") and pruner.get("eta") and pruner.get("max_steps"):
        r = int(pruner["min_steps"])
        while r < int(pruner["max_steps"]):
            if r >= int(pruner.get("grace_steps", 0)):  # none below the grace period
                rungs.append(r)
            r *= int(pruner["eta"])
    for r in rungs:
        ax.axvline(r, color="0.3", ls=":", lw=0.9, zorder=0)
    _fitness_axis(ax, value, f"{fitness_label(run)}, as reported at each step")
    ax.set_xlabel("step reported by the objective (ctx.report, e.g. epochs trained)")
    ax.grid(alpha=0.3)
    sm = colormaps[FITNESS_CMAP]
    fitness_colorbar(fig, _mappable(sm), ax, "final fitness rank (percentile, 0 = best)")
    handles = [Line2D([], [], color=cmap(0.1), label=f"complete ({n_complete})")]
    if n_pruned:
        handles.append(Line2D([], [], color="0.6", marker="x", mec="0.35",
                              label=f"pruned ({n_pruned}), × = stopped"))
    if rungs:
        handles.append(Line2D([], [], color="0.3", ls=":", label="ASHA rungs"))
    ax.legend(handles=handles, fontsize=8, loc="upper right")
    ax.xaxis.get_major_locator().set_params(integer=True)
    _title(fig, run, "Learning curves (lower is better)")
    return fig


def _mappable(cmap):  # noqa: ANN001, ANN202 - a colorbar for a scale drawn by hand
    from matplotlib.cm import ScalarMappable

    return ScalarMappable(norm=Normalize(0, 100), cmap=cmap)


def _unit_column(run: Run, name: str) -> tuple[np.ndarray, list[str], list[float]]:
    """A parameter mapped to [0, 1] as its axis shows it, with tick labels and positions."""
    v, labels = param_values(run, name)
    spec = run.space.get(name, {})
    if labels is not None:
        k = max(len(labels) - 1, 1)
        return v / k, labels, [i / k for i in range(len(labels))]
    if "lo" in spec and "hi" in spec:
        lo, hi = float(spec["lo"]), float(spec["hi"])
    elif np.isfinite(v).any():
        lo, hi = float(np.nanmin(v)), float(np.nanmax(v))
    else:
        lo, hi = 0.0, 1.0
    log = run.is_log(name) and lo > 0
    f = np.log10 if log else (lambda a: a)
    a, b = f(lo), f(hi)
    with np.errstate(invalid="ignore", divide="ignore"):
        u = (f(v) - a) / ((b - a) or 1.0)
    fmt = "{:.0f}" if spec.get("type") == "int" else "{:.3g}"
    return u, [fmt.format(lo), fmt.format(hi)], [0.0, 1.0]


INACTIVE_Y = -0.12
"""Where parallel coordinates draw an inactive conditional parameter (below the range)."""


@_skippable
def plot_parallel_coordinates(run: Run, highlight: int = 10) -> Figure:
    """One vertical axis per parameter (its declared range; log where declared) and fitness;
    one line per complete evaluation, coloured by fitness rank, the ``highlight`` best bold.

    A pruned evaluation is a thin grey dashed line that ends at its last reported value on
    the fitness axis (a hollow triangle there: a value at an earlier step, not a final
    fitness). An inactive conditional parameter is drawn at "inactive", below its axis's
    range, so every line still reaches the fitness axis; a parameter inactive in every
    evaluation drawn gets no axis."""
    names = [p for p in run.param_names if f"params/{p}" in run.evaluations]
    ok = run.complete
    last, _ = last_reported(run)
    pruned = (run.evaluations["state"] == int(EvalState.PRUNED)) & np.isfinite(last)
    if not names:
        raise Skip("the run recorded no parameter values")
    if ok.sum() < 2:
        raise Skip(f"{int(ok.sum())} complete evaluation(s): fewer than 2 lines to compare")
    drawn = ok | pruned
    cols, ticks, shown = [], [], []
    for name in names:
        u, labels, pos = _unit_column(run, name)
        u = u[drawn]
        inactive = ~np.isfinite(u)
        if inactive.all():
            continue
        if inactive.any():
            u = np.where(inactive, INACTIVE_Y, u)
            labels, pos = [*labels, "inactive"], [*pos, INACTIVE_Y]
        cols.append(u)
        ticks.append((labels, pos))
        shown.append(name)
    names = shown
    f = np.where(ok, run.fitness, last)[drawn]
    uids = run.evaluations["uid"][drawn]
    is_pruned = pruned[drawn]
    pct = np.full(f.size, np.nan)
    pct[~is_pruned] = fitness_percentile(f[~is_pruned])
    log = bool(f.min() > 0 and f.max() / f.min() > 30)
    g = np.log10(f) if log else f
    span = (g.max() - g.min()) or 1.0
    cols.append((g - g.min()) / span)
    ticks.append(([f"{f.min():.3g}", f"{f.max():.3g}"], [0.0, 1.0]))
    label = fitness_label(run)
    axes_names = [*names, label + (" (log)" if log else "")]
    y = np.column_stack(cols)
    x = np.arange(len(axes_names))
    cmap = colormaps[FITNESS_CMAP]
    fig = Figure(figsize=(max(1.25 * len(axes_names) + 2.5, 7), 5.2), dpi=DPI,
                 layout="constrained")
    ax = fig.subplots()
    for i in np.flatnonzero(is_pruned):
        ax.plot(x, y[i], color="0.55", lw=0.6, ls=(0, (3, 2)), alpha=0.35, zorder=1,
                gid=f"pruned uid {int(uids[i])}")
    if is_pruned.any():
        ax.scatter(np.full(int(is_pruned.sum()), x[-1]), y[is_pruned, -1], marker="v", s=18,
                   facecolors="none", edgecolors="0.4", linewidths=0.7, zorder=2)
    complete = np.flatnonzero(~is_pruned)
    order = complete[np.argsort(-pct[complete])]  # worst first, best drawn on top
    best = set(order[-highlight:].tolist())
    for i in order:
        bold = i in best
        ax.plot(x, y[i], color=cmap(pct[i] / 100.0), lw=1.8 if bold else 0.7,
                alpha=0.95 if bold else 0.35, zorder=3 if bold else 2)
    for j, (labels, pos) in enumerate(ticks):
        ax.axvline(j, color="0.25", lw=0.8, zorder=1)
        for lab, p in zip(labels, pos):
            ax.text(j + 0.04, p, lab, fontsize=7, va="center", ha="left", color="0.15",
                    bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.7, "pad": 0.5},
                    zorder=4)
    ax.set_xticks(x, axes_names, rotation=20, ha="right", fontsize=9)
    ax.set_yticks([])
    ax.set_xlim(-0.2, len(axes_names) - 0.6)
    ax.set_ylim(INACTIVE_Y - 0.04 if (y < 0).any() else -0.04, 1.04)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    fitness_colorbar(fig, _mappable(cmap), ax, "fitness rank (percentile, 0 = best)")
    n_ok, n_pr = int(ok.sum()), int(is_pruned.sum())
    if n_pr:
        ax.legend(handles=[Line2D([], [], color="0.55", ls=(0, (3, 2)), marker="v", mfc="none",
                                  mec="0.4", label=f"pruned ({n_pr}): at its last reported "
                                                   "value")],
                  fontsize=8, loc="upper left", bbox_to_anchor=(0.0, -0.12), frameon=False)
    _title(fig, run, f"Parallel coordinates of {n_ok} complete evaluations (the "
                     f"{min(highlight, n_ok)} best bold)"
                     + (f" and {n_pr} pruned ones (grey, dashed)" if n_pr else ""))
    return fig


@_skippable
def plot_importance(run: Run, imp: object = None) -> Figure:
    """The one importance measure (``analysis.importance``), or a Skip saying why there is
    none: a random forest that explains nothing on held-out evaluations gives no bars."""
    imp = importance(run) if imp is None else imp
    if isinstance(imp, NoImportance):
        raise Skip(imp.reason)
    if len(imp.names) == 1:
        raise Skip(f"the run has one parameter ({imp.names[0]}): it has all the importance "
                   f"there is (influence.png shows fitness against it)")
    order = np.argsort(imp.mean)
    fig = Figure(figsize=(8, 1.6 + 0.42 * len(imp.names)), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(order))
    ax.barh(y, 100 * imp.mean[order], xerr=100 * imp.std[order], color="tab:blue",
            edgecolor="0.2", linewidth=0.5, error_kw={"ecolor": "0.2", "capsize": 3, "lw": 1},
            alpha=0.85)
    ax.set_yticks(y, [imp.names[i] for i in order])
    ax.axvline(0, color="0.3", lw=0.8)
    ax.set_xlim(0, 105)
    ax.set_xlabel(textwrap.fill("importance (%): " + DEFINITION + "; bars add up to 100 %, "
                                "error bar ± 1 std over the folds", 95), fontsize=8.5)
    ax.grid(alpha=0.3, axis="x")
    _title(fig, run, f"Hyperparameter importance for {fitness_label(run)}: a random forest "
                     f"explains cross-validated R² = {imp.cv_r2:.2f} of its ranks ({imp.n} "
                     f"complete evaluations; no bars below R² {MIN_R2})")
    return fig


__all__ = ["plot_importance", "plot_learning_curves", "plot_parallel_coordinates"]
