"""The live progress line on a terminal, and periodic JSON progress lines in batch jobs.

The terminal line always fits the terminal's width (``shutil.get_terminal_size``): fields are
dropped, least important first, until it does, so it never wraps and ``\\r`` + erase-line
redraws it in place. Before the first result it shows the phase the run is in (preparing
data, starting workers, waiting for the first results). Elapsed time and utilization come from
``evo_engine.util.timing``, the definition the final summary and ``analyze`` share.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

from evo_engine.job.coordinator import Progress
from evo_engine.util import terminal
from evo_engine.util.timing import TimingMeter

ERASE = "\r\x1b[2K"


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


def fit(fields: list[tuple[int, str]], width: int, sep: str = " | ") -> str:
    """Join ``(priority, text)`` fields in their order, dropping the highest priority numbers
    (least important) until the line is shorter than ``width`` (the last column stays free,
    or some terminals wrap); a lone field too long is cut with an ellipsis."""
    kept = list(fields)
    while len(kept) > 1 and len(sep.join(t for _, t in kept)) >= width:
        worst = max(range(len(kept)), key=lambda i: (kept[i][0], i))
        kept.pop(worst)
    line = sep.join(t for _, t in kept)
    if len(line) >= width:
        line = line[: max(width - 2, 0)] + "…"
    return line


def line_fields(p: Progress, meter: TimingMeter | None, workers: int, now: float,
                done_before: int = 0, phase: str | None = None) -> list[tuple[int, str]]:
    """The progress line's fields with their priorities (0 = shown always)."""
    timing = (meter or TimingMeter(workers, job_start=p.started)).result(now)
    left = eta_seconds(p, now, done_before)
    fields = [(0, f"evals {p.finished}/{p.budget}")]
    if phase and p.finished == done_before:
        fields.append((1, phase))
    best = "-" if p.best is None else f"{p.best:.6g}"
    if p.best is not None and p.best_n > 1:
        best += f" (mean of {p.best_n})"
    fields.append((1, f"best {best}"))
    fields.append((2, f"eta {'?' if left is None else _hms(left)}"))
    fields.append((4, f"running {p.running}"))
    if p.failed:
        fields.append((3, f"failed {p.failed}"))
    if p.pruned:
        fields.append((5, f"pruned {p.pruned}"))
    util = timing.utilization
    if util is not None:
        fields.append((6, f"util {100 * util:.0f}%"))
    fields.append((7, f"elapsed {_hms(timing.wall_s)}"))
    return fields


def format_line(p: Progress, workers: int, now: float, done_before: int = 0,
                width: int = 200, meter: TimingMeter | None = None,
                phase: str | None = None) -> str:
    return fit(line_fields(p, meter, workers, now, done_before, phase), width)


def terminal_width(stream: TextIO) -> int:
    return terminal.width()


class ProgressReporter:
    """Redraws one line on a terminal (at most 5×/s); on a pipe prints JSON every ``period`` s.

    ``done_before``: evaluations a resumed run finished in earlier jobs, left out of the
    ETA's rate; by default, whatever is finished at the first tick (before any result).
    ``observe(evaluation)`` feeds the timing (``evo_engine.util.timing``); ``phase(text)`` shows
    what the run is doing before its first result.
    """

    def __init__(self, workers: int, stream: TextIO | None = None, quiet: bool = False,
                 period: float = 60.0, done_before: int | None = None,
                 job_start: float | None = None) -> None:
        self.workers = workers
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.period = period if not self.tty else 0.2
        # The first JSON line in a batch job comes one period in, not at time zero.
        self._last = 0.0 if self.tty else time.time()
        self._drawn = False
        self._done_before = done_before
        self.meter = TimingMeter(workers, job_start=job_start)
        self._phase: str | None = "waiting for the first results"

    def set_workers(self, workers: int, done_before: int | None = None) -> None:
        """The worker count, known once the transport has started (and a resumed run's count
        of evaluations finished by earlier jobs)."""
        self.workers = workers
        self.meter.workers = workers
        self._phase = "waiting for the first results"
        if done_before is not None:
            self._done_before = done_before

    def observe(self, ev: Any) -> None:
        """A finished evaluation (``engine.Evaluation``): its time counts towards the timing."""
        r = ev.result
        self.meter.observe(int(r.worker), float(r.t_start), float(r.t_end),
                           ev.state.name == "COMPLETE")

    def phase(self, text: str) -> None:
        """Show ``text`` (e.g. "preparing data") until the first result; drawn at once."""
        self._phase = text
        if self.quiet or not self.tty:
            return
        self.stream.write(ERASE + fit([(0, text + " …")], terminal_width(self.stream)))
        self.stream.flush()
        self._drawn = True

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
            self.stream.write(ERASE + format_line(
                p, self.workers, now, self._done_before, terminal_width(self.stream), self.meter,
                self._phase))
            self._drawn = True
        else:
            left = eta_seconds(p, now, self._done_before)
            t = self.meter.result(now)
            util = t.utilization
            self.stream.write(json.dumps({
                "event": "progress", "finished": p.finished, "budget": p.budget,
                "running": p.running, "failed": p.failed, "pruned": p.pruned, "best": p.best,
                "utilization": None if util is None else round(util, 4),
                "elapsed_s": round(t.wall_s, 1), "startup_s": round(t.startup_s, 1),
                "eta_s": None if left is None else round(left, 1),
            }) + "\n")
        self.stream.flush()

    def finish(self, p: Progress) -> None:
        """Erase the live line (the final summary says the rest); nothing on a pipe."""
        if self.quiet or not self.tty:
            return
        if self._drawn:
            self.stream.write(ERASE)
            self.stream.flush()
