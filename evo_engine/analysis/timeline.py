"""What the plots put on their axes: the fitness's name, aligned time, compute, pruned values.

- ``fitness_label(run)``: the scenario's ``fitness_name`` (e.g. "validation nRMSE"), recorded
  in the run's attributes, else "fitness".
- ``evaluating_time(run)``: seconds since the run's first evaluation *started*, with the
  pauses between the jobs of a resumed run cut out. Start-up (data preparation, workers
  starting) is therefore excluded, so two runs compare on the time they spent evaluating; the
  cut pauses are returned as ``JobBreak`` s so a plot can mark where (and how long) they were.
- ``compute_per_evaluation(run, unit)``: what each evaluation cost, in steps trained (the
  largest step it reported with ``ctx.report``, e.g. epochs) or in worker-seconds (its
  duration; a batch's members share theirs). Under pruning this, not the evaluation count,
  is the budget that matters.
- ``last_reported(run)``: each evaluation's last reported value and its step, the only value
  a pruned evaluation has.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evo_engine.store.reader import Run


def fitness_label(run: Run) -> str:
    """The name of what fitness measures, e.g. "validation nRMSE"; "fitness" when not given."""
    name = run.attrs.get("fitness_name")
    return name if isinstance(name, str) and name.strip() else "fitness"


@dataclass(frozen=True)
class JobBreak:
    """The pause between two jobs of a resumed run, as ``evaluating_time`` cuts it out."""

    job: int
    """The job that starts after the pause (2 for the first resume)."""
    at: float
    """Where the pause was cut, in seconds of evaluating time."""
    seconds: float
    """How long nothing was evaluated (the pause and the next job's start-up)."""
    after_evaluations: int
    """Evaluations finished before the pause."""


def _timed(run: Run) -> np.ndarray:
    ev = run.evaluations
    t0, t1 = ev.get("t_start", np.zeros(0)), ev.get("t_end", np.zeros(0))
    return np.isfinite(t0) & np.isfinite(t1) & (t0 > 0) & (t1 >= t0)


def job_pauses(run: Run) -> list[tuple[float, float]]:
    """(start, end) in Unix seconds of each stretch between two jobs when nothing ran.

    A run records when each job started (``job_starts``); the pause before job k is the
    stretch from the last evaluation end before that start to the first evaluation start
    after it. A run from before that record has only its ``jobs`` count: the ``jobs - 1``
    longest stretches with no evaluation in progress are taken (as utilization does)."""
    ok = _timed(run)
    if not ok.any():
        return []
    t0, t1 = run.evaluations["t_start"][ok], run.evaluations["t_end"][ok]
    starts = run.attrs.get("job_starts")
    out: list[tuple[float, float]] = []
    if isinstance(starts, list) and len(starts) > 1:
        for s in sorted(float(x) for x in starts[1:]):
            before, after = t1[t1 <= s], t0[t0 >= s]
            if before.size and after.size:
                out.append((float(before.max()), float(after.min())))
        return out
    jobs = int(run.attrs.get("jobs", 1) or 1)
    if jobs < 2:
        return []
    order = np.argsort(t0, kind="stable")
    s, e = t0[order], np.maximum.accumulate(t1[order])
    gap = s[1:] - e[:-1]
    pick = np.argsort(gap)[::-1][: jobs - 1]
    return sorted((float(e[i]), float(s[i + 1])) for i in pick if gap[i] > 0)


def evaluating_time(run: Run, t: np.ndarray | None = None) -> tuple[np.ndarray, list[JobBreak]]:
    """Times ``t`` (default: each evaluation's end) as seconds of evaluating time.

    0 is the start of the run's first evaluation; the pauses between jobs are cut out. NaN
    where no time was recorded."""
    ev = run.evaluations
    t = np.asarray(ev.get("t_end", np.zeros(0)) if t is None else t, dtype=float)
    ok = _timed(run)
    if not ok.any():
        return np.full(t.shape, np.nan), []
    origin = float(ev["t_start"][ok].min())
    pauses = job_pauses(run)
    x = np.where((t > 0) & np.isfinite(t), t - origin, np.nan)
    breaks: list[JobBreak] = []
    cut = 0.0
    t_end = ev["t_end"]
    for k, (a, b) in enumerate(pauses):
        length = b - a
        breaks.append(JobBreak(job=k + 2, at=a - origin - cut, seconds=length,
                               after_evaluations=int((ok & (t_end <= a)).sum())))
        x = np.where(np.isfinite(x) & (t >= b), x - length, x)
        cut += length
    return x, breaks


def steps_per_evaluation(run: Run) -> np.ndarray:
    """Per evaluation row: the largest step it reported (NaN when it reported none).

    A complete evaluation without reports in a run that has a pruner counts its
    ``max_steps`` (it trained all of them)."""
    ev = run.evaluations
    uid = ev.get("uid", np.zeros(0, dtype=np.int64))
    out = np.full(uid.size, np.nan)
    c = run.curves
    if c and c.get("uid", np.zeros(0)).size:
        order = np.lexsort((c["step"], c["uid"]))
        u, s = c["uid"][order], c["step"][order]
        last = np.r_[np.flatnonzero(np.diff(u)), u.size - 1]
        steps = dict(zip(u[last].tolist(), s[last].astype(float).tolist()))
        out = np.array([steps.get(int(k), np.nan) for k in uid], dtype=float)
    pruner = (run.attrs.get("fingerprint_description") or {}).get("pruner") or {}
    if pruner.get("max_steps"):
        out = np.where(np.isnan(out) & run.complete, float(pruner["max_steps"]), out)
    return out


def worker_seconds(run: Run) -> np.ndarray:
    """Per evaluation row: its duration, a batch's shared by its members (0 when untimed)."""
    ev = run.evaluations
    d = np.where(_timed(run), ev.get("t_end", np.zeros(0)) - ev.get("t_start", np.zeros(0)), 0.0)
    batch = ev.get("batch")
    if batch is not None and batch.size:
        ids, counts = np.unique(batch[batch >= 0], return_counts=True)
        size = dict(zip(ids.tolist(), counts.tolist()))
        d = d / np.array([size.get(int(b), 1) if b >= 0 else 1 for b in batch], dtype=float)
    return d


def has_pruning(run: Run) -> bool:
    pruner = (run.attrs.get("fingerprint_description") or {}).get("pruner") or {}
    return bool(pruner.get("name", "asha") not in ("none", None) and pruner.get("max_steps"))


def compute_unit(runs: list[Run]) -> str:
    """"steps" when every run's evaluations reported their steps, else "worker-seconds"."""
    for r in runs:
        steps = steps_per_evaluation(r)
        counted = run_counted(r)
        if not counted.any() or np.isnan(steps[counted]).any():
            return "worker-seconds"
    return "steps"


def run_counted(run: Run) -> np.ndarray:
    """Rows that cost compute: complete and pruned evaluations (failures may have none)."""
    from evo_engine.search.messages import EvalState

    state = run.evaluations.get("state", np.zeros(0, dtype=np.int8))
    return (state == int(EvalState.COMPLETE)) | (state == int(EvalState.PRUNED))


def compute_per_evaluation(run: Run, unit: str) -> np.ndarray:
    """Per evaluation row, what it cost in ``unit`` ("steps" or "worker-seconds")."""
    if unit == "steps":
        return np.nan_to_num(steps_per_evaluation(run), nan=0.0)
    return worker_seconds(run)


COMPUTE_LABEL = {
    "steps": "compute: steps trained, summed over evaluations (ctx.report steps, e.g. epochs)",
    "worker-seconds": "compute: worker-seconds, summed over evaluations",
}


def last_reported(run: Run) -> tuple[np.ndarray, np.ndarray]:
    """Per evaluation row: (its last reported value, that value's step); NaN where none."""
    uid = run.evaluations.get("uid", np.zeros(0, dtype=np.int64))
    value, step = np.full(uid.size, np.nan), np.full(uid.size, np.nan)
    c = run.curves
    if not c or c.get("uid", np.zeros(0)).size == 0:
        return value, step
    order = np.lexsort((c["step"], c["uid"]))
    u, s, v = c["uid"][order], c["step"][order], c["value"][order]
    last = np.r_[np.flatnonzero(np.diff(u)), u.size - 1]
    by_uid = {int(a): (float(b), float(d)) for a, b, d in zip(u[last], v[last], s[last])}
    for i, k in enumerate(uid.tolist()):
        if int(k) in by_uid:
            value[i], step[i] = by_uid[int(k)]
    return value, step


__all__ = ["COMPUTE_LABEL", "JobBreak", "compute_per_evaluation", "compute_unit",
           "evaluating_time", "fitness_label", "has_pruning", "job_pauses", "last_reported",
           "steps_per_evaluation", "worker_seconds"]
