"""The live progress line on a terminal, and periodic JSON progress lines in batch jobs."""

from __future__ import annotations

import json
import sys
import time
from typing import TextIO

from evo_engine.coordinator import Progress


def _hms(seconds: float) -> str:
    s = int(max(seconds, 0))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def eta_seconds(p: Progress, now: float, done_before: int = 0) -> float | None:
    """Seconds until the budget is spent at this job's rate so far; None before a result.

    ``done_before`` is how many evaluations a resumed run had finished before this job
    started: they count towards the budget but not towards this job's rate.
    """
    done = p.finished
    if p.budget <= done:
        return 0.0
    if done - done_before <= 0:
        return None
    return (now - p.started) / (done - done_before) * (p.budget - done)


def format_line(p: Progress, workers: int, now: float, done_before: int = 0) -> str:
    elapsed = now - p.started
    done = p.finished
    left = eta_seconds(p, now, done_before)
    eta = "?" if left is None else _hms(left)
    best = "-" if p.best is None else f"{p.best:.6g}"
    pruned = f" | pruned {p.pruned}" if p.pruned else ""
    return (
        f"evals {done}/{p.budget} | running {p.running} | failed {p.failed}{pruned} | best {best} | "
        f"util {100 * p.utilization(workers, now):.0f}% | elapsed {_hms(elapsed)} | eta {eta}"
    )


class ProgressReporter:
    """Redraws one line on a terminal (at most 5×/s); on a pipe prints JSON every ``period`` s.

    ``done_before``: evaluations a resumed run finished in earlier jobs, left out of the
    ETA's rate; by default, whatever is finished at the first tick (before any result).
    """

    def __init__(self, workers: int, stream: TextIO | None = None, quiet: bool = False,
                 period: float = 60.0, done_before: int | None = None) -> None:
        self.workers = workers
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.period = period if not self.tty else 0.2
        # The first JSON line in a batch job comes one period in, not at time zero.
        self._last = 0.0 if self.tty else time.time()
        self._drawn = False
        self._done_before = done_before

    def __call__(self, p: Progress) -> None:
        now = time.time()
        if self._done_before is None:
            # The first tick comes before this job's first result: what is finished by then
            # was finished by earlier jobs of a resumed run.
            self._done_before = p.finished
        if self.quiet or now - self._last < self.period:
            return
        self._last = now
        if self.tty:
            self.stream.write("\r\x1b[2K" + format_line(p, self.workers, now, self._done_before))
            self._drawn = True
        else:
            left = eta_seconds(p, now, self._done_before)
            self.stream.write(json.dumps({
                "event": "progress", "finished": p.finished, "budget": p.budget,
                "running": p.running, "failed": p.failed, "pruned": p.pruned, "best": p.best,
                "utilization": round(p.utilization(self.workers, now), 4),
                "elapsed_s": round(now - p.started, 1),
                "eta_s": None if left is None else round(left, 1),
            }) + "\n")
        self.stream.flush()

    def finish(self, p: Progress) -> None:
        if self.quiet:
            return
        if self.tty:
            line = format_line(p, self.workers, time.time(), self._done_before or 0)
            self.stream.write("\r\x1b[2K" + line + "\n")
            self.stream.flush()
