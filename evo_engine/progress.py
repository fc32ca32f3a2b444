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


def format_line(p: Progress, workers: int, now: float) -> str:
    elapsed = now - p.started
    done = p.finished
    eta = "?"
    if done > 0 and p.budget > done:
        eta = _hms(elapsed / done * (p.budget - done))
    elif p.budget <= done:
        eta = "0:00:00"
    best = "-" if p.best is None else f"{p.best:.6g}"
    return (
        f"evals {done}/{p.budget} | running {p.running} | failed {p.failed} | best {best} | "
        f"util {100 * p.utilization(workers, now):.0f}% | elapsed {_hms(elapsed)} | eta {eta}"
    )


class ProgressReporter:
    """Redraws one line on a terminal (at most 5×/s); on a pipe prints JSON every ``period`` s."""

    def __init__(self, workers: int, stream: TextIO | None = None, quiet: bool = False,
                 period: float = 60.0) -> None:
        self.workers = workers
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.period = period if not self.tty else 0.2
        # The first JSON line in a batch job comes one period in, not at time zero.
        self._last = 0.0 if self.tty else time.time()
        self._drawn = False

    def __call__(self, p: Progress) -> None:
        now = time.time()
        if self.quiet or now - self._last < self.period:
            return
        self._last = now
        if self.tty:
            self.stream.write("\r\x1b[2K" + format_line(p, self.workers, now))
            self._drawn = True
        else:
            self.stream.write(json.dumps({
                "event": "progress", "finished": p.finished, "budget": p.budget,
                "running": p.running, "failed": p.failed, "best": p.best,
                "utilization": round(p.utilization(self.workers, now), 4),
                "elapsed_s": round(now - p.started, 1),
            }) + "\n")
        self.stream.flush()

    def finish(self, p: Progress) -> None:
        if self.quiet:
            return
        if self.tty:
            self.stream.write("\r\x1b[2K" + format_line(p, self.workers, time.time()) + "\n")
            self.stream.flush()
