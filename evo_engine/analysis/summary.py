"""The terminal summary of a run: where it stands, how busy the workers were, what is best.

``summarize(run, top)`` computes a ``Summary`` from the store alone; ``format_summary``
renders it as the text ``python -m evo_engine analyze RUN_DIR`` prints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evo_engine.search.estimate import (
    PESSIMISM,
    UNMEASURED,
    Estimate,
    describe_best,
    describe_luckiest,
    luckiest,
    pooled_noise,
    resolution_note,
    unmeasured_note,
)
from evo_engine.search.messages import EvalState
from evo_engine.store.reader import STATE_NAMES, Run, is_pbt, ranked_rows, run_estimates
from evo_engine.util import terminal
from evo_engine.util.timing import Timing, timing_of
from evo_engine.util.timing import describe as describe_timing


@dataclass
class IslandBest:
    """The best complete evaluation of one island (or of the whole run when island is None)."""

    island: int | None
    uid: int
    fitness: float
    evaluations: int
    """Evaluations recorded on the island (the run's best: its configuration's complete ones)."""
    n: int = 1
    """Complete evaluations of the configuration behind ``fitness`` (its mean when > 1)."""


@dataclass
class Summary:
    """What the summary says about a run; every number comes from the run store."""

    scenario: str
    status: str
    stop_reason: str
    budget: int | None
    recorded: int
    counts: dict[str, int]
    in_flight: int | None
    wall_seconds: float
    jobs: int
    between_jobs_seconds: float
    busy_seconds: float
    workers: int
    utilization: float | None
    islands: int
    sync: bool
    best: IslandBest | None
    best_per_island: list[IslandBest]
    top: list[dict[str, Any]]
    final: list[dict[str, Any]] = field(default_factory=list)
    first_error: tuple[int, str] | None = None
    """(uid, first line of its error) of the first failed evaluation, when one failed."""
    finalize_seconds: float | None = None
    """How long the final retraining (``finalize``) took, when the run recorded it."""
    timing: Timing | None = None
    """Start-up, evaluating span, busy and warm-up time (``evo_engine.util.timing``)."""
    best_estimate: Estimate | None = None
    """The incumbent as the engine ranks it (``search.estimate``): best mean, count, spread."""
    luckiest: str | None = None
    """The luckiest single draw, labelled as such (None when it is the incumbent's only one)."""
    noise: str | None = None
    """The seed noise beside the top configurations' spread, or that it was not measured
    (nothing evaluated twice); None for a single configuration."""
    pessimistic: bool = False
    """The ranking adds a standard error to each mean (``search.estimate.rank_estimates``:
    repeats measured a seed noise above 0), so the top table's means need not be in order."""
    pbt: bool = False
    """A population-based training: its evaluations are intervals, each ranked on its own."""
    damaged: bool = False
    """The store is damaged: the numbers cover only the rows before the damage."""

    @property
    def status_line(self) -> str:
        if self.status == "finished":
            return "finished"
        if self.status == "stopped":
            return f"stopped ({self.stop_reason or 'no reason recorded'}); resumable with --resume"
        if self.status == "failed":
            return f"failed ({self.stop_reason or 'no reason recorded'})"
        if self.status == "running":
            return ("running (still in progress, or killed before it could record a stop; "
                    "a killed run continues with --resume)")
        return self.status or "unknown"


def _scalar(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _param(run: Run, name: str, v: Any) -> Any:
    """A stored parameter value as the user wrote it: None when inactive (masked), an int
    for an Int (a conditional Int is stored as a float column)."""
    v = _scalar(v)
    if v == "" or (isinstance(v, float) and math.isnan(v)):
        return None
    if run.space.get(name, {}).get("type") == "int":
        return int(v)
    return v


def top_rows(run: Run, n: int) -> list[dict[str, Any]]:
    """The ``n`` best configurations by estimated mean (the engine's ranking,
    ``search.estimate``), best first: fitness = the mean over its complete evaluations,
    ``evaluations`` and ``std`` beside it, params and metrics of its first evaluation."""
    ranked, first = run_estimates(run)
    return [_row(run, first[e.key], e) for e in ranked[:n]]


def _row(run: Run, i: int, e: Estimate) -> dict[str, Any]:
    ev = run.evaluations
    return {
        "uid": int(ev["uid"][i]), "island": int(ev["island"][i]),
        "fitness": e.mean, "evaluations": e.n, "std": e.std,
        "params": {p: _param(run, p, ev[f"params/{p}"][i]) for p in run.param_names
                   if f"params/{p}" in ev},
        "metrics": {m: float(ev[f"metrics/{m}"][i]) for m in run.metric_names},
    }


def _best(ranked: list[tuple[Estimate, list[int]]], island_col: np.ndarray,
          k: int) -> IslandBest | None:
    """Island ``k``'s best: the best-ranked configuration (``ranked_rows``, the engine's
    ranking) with a complete evaluation on it; its estimate, not its luckiest draw."""
    for e, rows in ranked:
        if any(island_col[i] == k for i in rows):
            return IslandBest(k, e.uid, e.mean, int((island_col == k).sum()), e.n)
    return None


def active_span(t_start: np.ndarray, t_end: np.ndarray, jobs: int = 1) -> tuple[float, float]:
    """(seconds from the first start to the last end, seconds of that between jobs).

    A resumed run has ``jobs`` > 1 and a pause between its jobs when nothing ran; the
    ``jobs - 1`` longest stretches with no evaluation in progress are taken as those pauses,
    so that utilization counts only the time the run had workers.
    """
    if t_start.size == 0:
        return 0.0, 0.0
    order = np.argsort(t_start, kind="stable")
    starts, ends = t_start[order], np.maximum.accumulate(t_end[order])
    gaps = starts[1:] - ends[:-1]
    gaps = np.sort(gaps[gaps > 0])[::-1]
    between = float(gaps[: max(jobs - 1, 0)].sum())
    return float(ends[-1] - starts[0]), between


def first_of_batch(ev: dict[str, np.ndarray]) -> np.ndarray:
    """Rows that count a worker's busy time: the members of a batch share one stretch of it."""
    uid, batch = ev.get("uid"), ev.get("batch")
    if uid is None or batch is None:
        return np.ones(0 if uid is None else uid.size, dtype=bool)
    return (batch < 0) | (batch == uid)


def summarize(run: Run, top: int = 10) -> Summary:
    """Compute the summary of ``run`` with its ``top`` best individuals."""
    ev = run.evaluations
    state = ev.get("state", np.zeros(0, dtype=np.int8))
    counts = {name: int((state == code).sum()) for code, name in STATE_NAMES.items()}
    n = run.n
    t_start = ev.get("t_start", np.zeros(0))
    t_end = ev.get("t_end", np.zeros(0))
    timed = np.isfinite(t_start) & np.isfinite(t_end) & (t_end >= t_start) & (t_start > 0)
    workers = run.n_workers
    # One definition with the live line and the run's own summary (evo_engine.util.timing):
    # start-up apart, pauses between the jobs of a resumed run left out, warm-up apart.
    jobs = int(run.attrs.get("jobs", 1) or 1)
    _, between = active_span(t_start[timed], t_end[timed], jobs)
    complete = state == int(EvalState.COMPLETE)
    # A batch's members share one stretch of their worker's time: count it once.
    once = timed & first_of_batch(ev)
    timing = timing_of(workers, ev.get("worker", np.zeros(n, dtype=int))[once],
                       t_start[once], t_end[once], complete[once], run.t0, between)
    busy, wall, util = timing.busy_s, timing.wall_s, timing.utilization
    # The evaluation log holds finished evaluations only; in flight = issued (task log) but
    # not finished. A store without a task log can only say so for a finished run: none.
    pending = run.in_flight_uids
    in_flight: int | None = None
    if pending is not None:
        in_flight = int(pending.size)
    elif run.attrs.get("status") == "finished":
        in_flight = 0
    islands_attr = run.attrs.get("islands")
    island_col = ev.get("island", np.zeros(0, dtype=int))
    n_islands = int(islands_attr) if isinstance(islands_attr, int) else (
        int(island_col.max()) + 1 if n else 0)
    ranked_configs = ranked_rows(run)
    per_island = []
    for k in range(n_islands):
        b = _best(ranked_configs, island_col, k)
        if b is not None:
            per_island.append(b)
    budget = run.attrs.get("max_evals")
    first_error = None
    failed_rows = np.flatnonzero(state == int(EvalState.FAILED))
    if failed_rows.size and "error" in ev:
        i = int(failed_rows[0])
        lines = [ln.strip() for ln in str(ev["error"][i]).splitlines() if ln.strip()]
        # A worker's text starts with the exception's own line; a bare traceback ends with it.
        why = lines[-1] if lines and lines[0].startswith("Traceback") else (lines or [""])[0]
        first_error = (int(ev["uid"][i]), why or "(no error text recorded)")
    finalize_s = run.attrs.get("finalize_s")
    ranked = [e for e, _ in ranked_configs]
    est = ranked[0] if ranked else None
    lucky = luckiest(ranked)
    return Summary(
        scenario=str(run.attrs.get("scenario", "?")),
        status=str(run.attrs.get("status", "")),
        stop_reason=str(run.attrs.get("stop_reason", "") or ""),
        budget=int(budget) if isinstance(budget, int) else None,
        recorded=n,
        counts=counts,
        in_flight=in_flight,
        wall_seconds=wall,
        jobs=jobs,
        between_jobs_seconds=between,
        busy_seconds=busy,
        workers=workers,
        utilization=util,
        islands=n_islands,
        sync=bool(run.attrs.get("sync", False)),
        best=IslandBest(None, est.uid, est.mean, est.n, est.n) if est is not None else None,
        best_per_island=per_island,
        top=top_rows(run, top),
        final=list(run.attrs.get("final") or []),
        first_error=first_error,
        damaged=bool(run.damage),
        finalize_seconds=float(finalize_s) if isinstance(finalize_s, (int, float)) else None,
        timing=timing,
        best_estimate=est,
        luckiest=describe_luckiest(est, lucky) if est and lucky else None,
        noise=_noise_note(run, ranked),
        pessimistic=(pooled_noise(ranked) or (0.0, 0))[0] > 0,
        pbt=is_pbt(run),
    )


def _noise_note(run: Run, ranked: list[Estimate]) -> str | None:
    """``resolution_note``; where nothing was repeated, what ``unmeasured_note`` says for the
    run's stored search settings (the same words as the end of the run)."""
    note = resolution_note(ranked, 10)
    if note != UNMEASURED:
        return note
    settings = dict(run.attrs.get("fingerprint_description") or {})
    # What the log and the attributes show, for a store written without the description.
    settings["pbt"] = settings.get("pbt") or is_pbt(run)
    settings["sync"] = settings.get("sync") or bool(run.attrs.get("sync", False))
    return unmeasured_note(settings)


def fmt_value(v: Any) -> str:
    """A parameter or metric value, short: 6 significant digits for floats, "-" when inactive."""
    if v is None:
        return "-"
    if isinstance(v, (float, np.floating)):
        return "nan" if math.isnan(v) else f"{v:.6g}"
    return str(v)


def fmt_duration(seconds: float) -> str:
    """A duration for people: "12.3 s", "4 min 05 s", "2 h 07 min"."""
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{max(seconds, 0.0):.1f} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def format_summary(s: Summary, run_dir: str = "", width: int | None = None) -> str:
    """The summary as terminal text (plain ASCII columns, no colour), ``width`` columns wide.

    ``width`` defaults to the terminal's (``evo_engine.util.terminal.width``). Prose is wrapped; the
    top table always shows rank, uid, island, fitness and the parameters, and as many metric
    columns as fit (the line under it says how many were left out and where to find them).
    """
    cols = terminal.width() if width is None else width
    lines = terminal.wrap(
        f"run {run_dir} (scenario {s.scenario}{', synchronous baseline' if s.sync else ''})", cols)
    lines += terminal.wrap(f"status: {s.status_line}", cols)
    budget = f"/{s.budget}" if s.budget else ""
    c = s.counts
    others = ", ".join(f"{c[k]} {k.lower()}" for k in ("PRUNED",) if c.get(k))
    in_flight = "unknown" if s.in_flight is None else str(s.in_flight)
    unit = "intervals" if s.pbt else "evaluations"  # a PBT run's tasks (docs/pbt.md)
    lines += terminal.wrap(
        f"{unit}: {s.recorded}{budget} recorded: {c.get('COMPLETE', 0)} complete, "
        f"{c.get('FAILED', 0)} failed{', ' + others if others else ''}; in flight: {in_flight}",
        cols)
    if s.recorded == 0:
        lines.append("nothing before the damage can be read: nothing to rank" if s.damaged else
                     "no evaluations recorded yet: nothing to rank (the run may still be starting)")
        return "\n".join(lines)
    jobs = f" in {s.jobs} jobs" if s.jobs > 1 else ""
    if s.timing is not None:
        lines += terminal.wrap(f"{describe_timing(s.timing)}{jobs}", cols)
    if s.finalize_seconds is not None:
        lines += terminal.wrap(f"finalize (final retraining) took "
                               f"{fmt_duration(s.finalize_seconds)} after the evaluations", cols)
    if s.best is None:
        lines.append("best: none (no evaluation completed)")
    else:
        if s.best_estimate is not None:
            lines += terminal.wrap(describe_best(s.best_estimate), cols)
        for text in (s.luckiest, s.noise):
            if text:
                lines += terminal.wrap(text, cols)
        if len(s.best_per_island) > 1 or s.islands > 1:
            for b in s.best_per_island:
                mean = f"mean of {b.n}; " if b.n > 1 else ""
                lines += terminal.wrap(f"  island {b.island}: best {b.fitness:.6g} ({mean}uid "
                                       f"{b.uid}, {b.evaluations} {unit})", cols)
    if s.top:
        params = list(s.top[0]["params"])
        metrics = list(s.top[0]["metrics"])
        # Count and spread only where something was evaluated twice (a deterministic run's
        # table is as it always was).
        spread = any(t.get("evaluations", 1) > 1 for t in s.top)
        extra = ["evals", "std"] if spread else []
        header = ["rank", "uid", "island", "fitness", *extra, *params, *metrics]
        rows = [[str(r + 1), str(t["uid"]), str(t["island"]), f"{t['fitness']:.6g}",
                 *([str(t["evaluations"]), fmt_value(t["std"])] if spread else []),
                 *(fmt_value(t["params"][p]) for p in params),
                 *(fmt_value(t["metrics"][m]) for m in metrics)] for r, t in enumerate(s.top)]
        lines.append("")
        what = (f"configurations by mean fitness + {PESSIMISM:g} standard error (seed noise / "
                "sqrt(evals)), as the engine ranks them; fitness = their mean"
                if spread and s.pessimistic
                else "configurations by mean fitness over their evaluations" if spread
                else "intervals, each ranked on its own; lower fitness is better" if s.pbt
                else "lower fitness is better")
        lines += terminal.wrap(f"top {len(s.top)} ({what}):", cols)
        keep = 4 + len(extra) + len(params)
        table, hidden = terminal.table(header, rows, keep=keep, cols=cols)
        if max(len(line) for line in table) > cols:
            # Even rank, uid, island, fitness, the counts and the parameters are wider than
            # the terminal: one wrapped record per individual instead of a table.
            table = terminal.records(header[:keep], [r[:keep] for r in rows], cols, lead=4)
            hidden = len(metrics)
        lines += table
        if hidden:
            lines += terminal.wrap(
                f"  ({hidden} of {len(metrics)} metric columns left out at {cols} columns: "
                "`--csv FILE` exports them all; a wider terminal or COLUMNS=N shows more)",
                cols, indent="   ")
    for f in s.final:
        lines.append("")
        if f.get("error"):
            lines += terminal.wrap(f"final test of uid {f.get('uid')} failed: "
                                   f"{str(f['error']).splitlines()[0]}", cols)
        else:
            shown = [f"{k} = {fmt_value(float(v))}"
                     for k, v in sorted((f.get("metrics") or {}).items())]
            lines += terminal.wrap_items(f"final test metrics of uid {f.get('uid')}:",
                                         shown or ["none"], cols)
    if c.get("FAILED"):
        lines.append("")
        lines += terminal.wrap(f"{c['FAILED']} failed evaluation(s); the first (uid "
                               f"{s.first_error[0]}): {s.first_error[1]}" if s.first_error else
                               f"{c['FAILED']} failed evaluation(s)", cols)
        lines += terminal.wrap("(every error text is in the `error` column: --csv exports it)",
                               cols)
    return "\n".join(lines)


def _reached(run: Run, target: float) -> tuple[int, float] | None:
    """(evaluations, seconds of evaluating time) when ``run`` first had fitness <= target.

    Evaluating time is best_so_far.png's: from the first evaluation's start (start-up
    excluded), the pauses between jobs cut out. None when ``run`` never reached it."""
    from evo_engine.analysis.timeline import evaluating_time

    hit = np.flatnonzero(run.complete & (run.fitness <= target))
    if not hit.size:
        return None
    t_end, _ = evaluating_time(run)
    # Time to target is the earliest finish among the hits (rows are in arrival order).
    return int(hit[0]) + 1, float(np.nanmin(t_end[hit]))


def compare_with_baseline(run: Run, baseline: Run, name: str) -> str:
    """One paragraph: the baseline's best, and when this run reached it (time to target)."""
    mode = "synchronous" if baseline.attrs.get("sync") else "asynchronous"
    if not baseline.complete.any():
        return f"baseline {name} ({mode}): no evaluation completed"
    i = int(np.flatnonzero(baseline.complete)[np.argmin(baseline.fitness[baseline.complete])])
    target = float(baseline.fitness[i])
    own = _reached(baseline, target) or (i + 1, 0.0)  # a run always reaches its own best
    text = (f"baseline {name} ({mode}): best {target:.6g} after {own[0]} evaluations, "
            f"{fmt_duration(own[1])}; ")
    mine = _reached(run, target)
    if mine is None:
        return text + "this run never reached it"
    return text + (f"this run reached it after {mine[0]} evaluations, {fmt_duration(mine[1])} "
                   "(times from each run's first evaluation, start-up excluded)")


__all__ = ["IslandBest", "Summary", "compare_with_baseline", "format_summary", "summarize",
           "top_rows"]
