"""Wall time and worker utilization: the one definition the live line, the final summary and
``analyze`` all use.

* **start-up**: from the job's start (before the scenario's ``prepare``) to the first
  evaluation's start: data preparation and worker start-up, when no worker can be busy.
* **evaluating**: from the first evaluation's start to the last one's end (or *now*, live),
  less the pauses between the jobs of a resumed run.
* **wall** = start-up + evaluating.
* **busy**: the evaluations' durations added up (a batch's members share one stretch of their
  worker's time, counted once); live, the work in flight counts up to *now*.
* **warm-up** (estimated): what each worker's *first* evaluation took beyond the median of
  its next ``WARMUP_WINDOW`` (31) complete ones: one-time costs such as loading a data set
  onto a GPU, which would otherwise count as useful work. The window is the *first* 31, not
  all of them: a median over every duration of every worker, recomputed by the live line up
  to 5 times a second, cost 0.8 s a call after a million results and kept every duration
  (issue 30). 31 evaluations already say what a worker's usual evaluation takes, a fixed
  window keeps each worker's warm-up fixed once it is full (so the live line recomputes only
  the workers still filling theirs), and ``analyze`` (evaluations in start order) takes the
  same 31.
* **utilization** = (busy - warm-up) / (workers x evaluating).

``TimingMeter`` takes evaluations one at a time (the coordinator, live) and ``timing_of`` takes
a store's columns (``analyze``); both end in ``TimingMeter.result``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field

WARMUP_WINDOW = 31
"""Complete evaluations after a worker's first whose median is its usual duration."""


@dataclass(frozen=True)
class Timing:
    startup_s: float
    evaluating_s: float
    busy_s: float
    warmup_s: float
    workers: int
    between_jobs_s: float = 0.0

    @property
    def wall_s(self) -> float:
        return self.startup_s + self.evaluating_s

    @property
    def utilization(self) -> float | None:
        if self.workers <= 0 or self.evaluating_s <= 0:
            return None
        return min(max(self.busy_s - self.warmup_s, 0.0) / (self.workers * self.evaluating_s), 1.0)


@dataclass
class TimingMeter:
    """Accumulates evaluations' (worker, start, end, complete) and gives their ``Timing``."""

    workers: int
    job_start: float | None = None
    first_start: float | None = None
    last_end: float | None = None
    busy_s: float = 0.0
    between_jobs_s: float = 0.0
    _first: dict[int, tuple[float, float]] = field(default_factory=dict)
    _later: dict[int, list[float]] = field(default_factory=dict)
    """Per worker, its first ``WARMUP_WINDOW`` complete evaluations after the first."""
    _warm: dict[int, float] = field(default_factory=dict)
    """Per worker, its warm-up as last computed."""
    _dirty: set[int] = field(default_factory=set)
    """Workers whose warm-up changed since ``warmup_s`` last computed it."""

    def observe(self, worker: int, t_start: float, t_end: float, complete: bool = True) -> None:
        if not (math.isfinite(t_start) and math.isfinite(t_end)) or t_end < t_start or t_start <= 0:
            return
        d = t_end - t_start
        self.busy_s += d
        self.first_start = t_start if self.first_start is None else min(self.first_start, t_start)
        self.last_end = t_end if self.last_end is None else max(self.last_end, t_end)
        first = self._first.get(worker)
        if first is None or t_start < first[0]:
            if first is not None and complete:
                self._keep(worker, first[1])
            self._first[worker] = (t_start, d)
            self._dirty.add(worker)
        elif complete:
            self._keep(worker, d)

    def _keep(self, worker: int, d: float) -> None:
        later = self._later.setdefault(worker, [])
        if len(later) < WARMUP_WINDOW:  # a full window is final: O(1) from then on
            later.append(d)
            self._dirty.add(worker)

    def warmup_s(self) -> float:
        for w in self._dirty:
            later = self._later.get(w)
            d = self._first[w][1]
            self._warm[w] = max(d - statistics.median(later), 0.0) if later else 0.0
        self._dirty.clear()
        return sum(self._warm.values())

    def result(self, now: float | None = None, in_flight: Iterable[float] = ()) -> Timing:
        """The timing so far; ``now`` (live) extends the evaluating span to the present and
        counts the work in flight (``in_flight``: when each running evaluation started) as
        busy up to ``now``, so a live "util" is not just the finished evaluations'."""
        running = [s for s in in_flight if now is not None and math.isfinite(s) and s <= now]
        busy = self.busy_s + sum(now - s for s in running) if now is not None else self.busy_s
        first = min([*running, *([self.first_start] if self.first_start is not None else [])],
                    default=None)
        if first is None:
            startup = (now - self.job_start) if now is not None and self.job_start else 0.0
            return Timing(max(startup, 0.0), 0.0, 0.0, 0.0, self.workers)
        end = max(now, self.last_end or 0.0) if now is not None else (self.last_end or 0.0)
        start = self.job_start if self.job_start is not None else first
        startup = max(first - start, 0.0)
        evaluating = max(end - first - self.between_jobs_s, 0.0)
        return Timing(startup, evaluating, busy, self.warmup_s(), self.workers,
                      self.between_jobs_s)


def timing_of(workers: int, worker: Iterable[int], t_start: Iterable[float],
              t_end: Iterable[float], complete: Iterable[bool], job_start: float | None,
              between_jobs_s: float = 0.0) -> Timing:
    """The ``Timing`` of recorded evaluations (columns of the evaluation log)."""
    meter = TimingMeter(workers, job_start=job_start, between_jobs_s=between_jobs_s)
    rows = sorted(zip(t_start, t_end, worker, complete))
    for s, e, w, c in rows:
        meter.observe(int(w), float(s), float(e), bool(c))
    return meter.result()


def fmt_seconds(seconds: float) -> str:
    """1.2 s, 42 s, 3 min 05 s, 2 h 04 min: short and exact enough for a summary."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def describe(t: Timing) -> str:
    """The one-line account the final summary and ``analyze`` print."""
    util = "unknown" if t.utilization is None else f"{100 * t.utilization:.0f}%"
    warm = f", of which warm-up {fmt_seconds(t.warmup_s)}" if t.warmup_s >= 0.05 * max(t.busy_s, 1e-9) and t.warmup_s >= 0.5 else ""
    pause = f", {fmt_seconds(t.between_jobs_s)} between jobs left out" if t.between_jobs_s > 0 else ""
    return (f"wall time {fmt_seconds(t.wall_s)} (start-up {fmt_seconds(t.startup_s)}, evaluating "
            f"{fmt_seconds(t.evaluating_s)}{pause}); {t.workers} worker(s), utilization {util} "
            f"(busy {fmt_seconds(t.busy_s)}{warm})")


__all__ = ["WARMUP_WINDOW", "Timing", "TimingMeter", "describe", "fmt_seconds", "timing_of"]
