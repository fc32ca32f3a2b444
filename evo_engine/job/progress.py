"""The live progress line on a terminal, and JSON progress lines in batch jobs.

``--progress line|json|none`` chooses (``auto``, the default: the line when stderr is a
terminal, or when rank 0 of an ``mpiexec`` job has one, since the launcher pipes stderr; JSON
lines otherwise, e.g. in a SLURM ``.out``). In JSON mode every phase (data preparation, worker
start, the job's evaluations, ``finalize``) prints a line when it starts and when it ends, a
long phase one every ``period`` seconds meanwhile, and progress lines come at the first result
and then every ``period`` seconds, so a batch log shows at once what the run is doing.

The terminal line always fits the terminal's width (``shutil.get_terminal_size``): fields are
dropped, least important first, until it does, so it never wraps and ``\\r`` + erase-line
redraws it in place. Before the first result it shows the phase the run is in (preparing
data, starting workers, waiting for the first results). Elapsed time and utilization come from
``evo_engine.util.timing``, the definition the final summary and ``analyze`` share.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, TextIO

from evo_engine.job.coordinator import Progress
from evo_engine.util import terminal
from evo_engine.util.timing import TimingMeter

ERASE = "\r\x1b[2K"
MODES = ("auto", "line", "json", "none")


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
                done_before: int = 0, phase: str | None = None,
                in_flight: tuple[float, ...] = ()) -> list[tuple[int, str]]:
    """The progress line's fields with their priorities (0 = shown always).

    ``in_flight``: when each evaluation still running started; utilization counts them."""
    timing = (meter or TimingMeter(workers, job_start=p.started)).result(now, in_flight)
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
                phase: str | None = None, in_flight: tuple[float, ...] | None = None) -> str:
    busy = tuple(p.busy_since.values()) if in_flight is None else in_flight
    return fit(line_fields(p, meter, workers, now, done_before, phase, busy), width)


def terminal_width(stream: TextIO) -> int:
    """The width of the terminal ``stream`` draws on (``COLUMNS`` first, as everywhere)."""
    if "COLUMNS" not in os.environ:
        with contextlib.suppress(AttributeError, OSError, ValueError):
            columns = os.get_terminal_size(stream.fileno()).columns
            if columns > 0:  # a pseudo-terminal without a size says 0
                return columns
    return terminal.width()


def mpi_rank0_terminal() -> TextIO | None:
    """The terminal rank 0 of an ``mpiexec`` job was started from, opened for the live line,
    or None (another rank, no MPI launch, or no terminal: a batch job, stderr redirected).

    The launcher forwards stderr through a pipe and may start the ranks in a session of their
    own, so neither ``isatty`` nor ``/dev/tty`` can tell; the terminal is found as the stderr
    of the launcher, an ancestor of this process (Linux ``/proc``)."""
    from evo_engine.job.startup import _rank_other_than_0
    from evo_engine.transports.launch import launched_with_several_ranks

    if not launched_with_several_ranks() or _rank_other_than_0():
        return None
    for device in _ancestor_terminals():
        try:
            return open(device, "w", encoding="utf-8")  # noqa: SIM115 - lives for the run
        except OSError:
            continue
    return None


def _ancestor_terminals(levels: int = 6) -> list[str]:
    """Terminal devices that the stderr of this process's first ancestors write to."""
    found = []
    pid = os.getppid()
    for _ in range(levels):
        if pid <= 1:
            break
        try:
            target = os.readlink(f"/proc/{pid}/fd/2")
            if target.startswith(("/dev/pts/", "/dev/tty")):
                found.append(target)
                break
            with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
                pid = int(fh.read().rsplit(")", 1)[1].split()[1])  # field 4: the parent
        except (OSError, ValueError, IndexError):
            break
    return found


def choose(mode: str, stream: TextIO) -> tuple[str, TextIO]:
    """``(line|json|none, stream)`` for ``--progress mode`` with ``stream`` as stderr."""
    if mode not in MODES:
        raise ValueError(f"progress mode must be one of {MODES}, got {mode!r}")
    if mode != "auto":
        return mode, stream
    if hasattr(stream, "isatty") and stream.isatty():
        return "line", stream
    tty = mpi_rank0_terminal()
    return ("line", tty) if tty is not None else ("json", stream)


class ProgressReporter:
    """Redraws one line on a terminal (at most 5×/s), or prints JSON lines (``mode``).

    ``done_before``: evaluations a resumed run finished in earlier jobs, left out of the
    ETA's rate; by default, whatever is finished at the first tick (before any result).
    ``observe(evaluation)`` feeds the timing (``evo_engine.util.timing``); ``phase(text)`` shows
    what the run is doing before its first result; ``stage(name)`` wraps a phase that has an
    end (data preparation, worker start, finalize) and says how long it took.
    """

    def __init__(self, workers: int, stream: TextIO | None = None, quiet: bool = False,
                 period: float = 60.0, done_before: int | None = None,
                 job_start: float | None = None, mode: str = "auto") -> None:
        self.workers = workers
        self.mode, self.stream = choose("none" if quiet else mode, stream or sys.stderr)
        self.quiet = self.mode == "none"
        self.tty = self.mode == "line"
        self.period = period if not self.tty else 0.2
        # After the first result, a JSON line every period (the first result's at once).
        self._last = 0.0 if self.tty else time.time()
        self._shown_result = False
        self._drawn = False
        self._done_before = done_before
        self.meter = TimingMeter(workers, job_start=job_start)
        self._phase: str | None = "waiting for the first results"
        self._lock = threading.Lock()
        self.stages: dict[str, float] = {}
        """Seconds each finished stage took (``stage``), by name."""

    def set_workers(self, workers: int, done_before: int | None = None) -> None:
        """The worker count, known once the transport has started (and a resumed run's count
        of evaluations finished by earlier jobs)."""
        self.workers = workers
        self.meter.workers = workers
        self._phase = "waiting for the first results"
        if done_before is not None:
            self._done_before = done_before

    def observe(self, ev: Any) -> None:
        """A finished evaluation (``engine.Evaluation``): its time counts towards the timing.

        A batch's members share one stretch of their worker's time: only its first member
        (``batch == uid``) counts it, as ``analyze`` does."""
        r = ev.result
        batch = int(getattr(r, "batch", -1))
        if batch >= 0 and batch != int(ev.task.uid):
            return
        self.meter.observe(int(r.worker), float(r.t_start), float(r.t_end),
                           ev.state.name == "COMPLETE")

    def _emit(self, event: dict[str, Any]) -> None:
        with self._lock:
            self.stream.write(json.dumps(event) + "\n")
            self.stream.flush()

    def _draw(self, text: str) -> None:
        with self._lock:
            self.stream.write(ERASE + text)
            self.stream.flush()
            self._drawn = True

    def _elapsed(self) -> float:
        start = self.meter.job_start
        return round(time.time() - start, 1) if start else 0.0

    def phase(self, text: str, name: str | None = None, **fields: Any) -> None:
        """Show ``text`` (e.g. "preparing data") until the first result; drawn at once, or
        one JSON ``phase`` line in batch mode (``name``, the phase's stable name, and
        ``fields`` go into it)."""
        self._phase = text
        if self.mode == "json":
            self._emit({"event": "phase", "phase": name or text, "state": "started",
                        "text": text, "elapsed_s": self._elapsed(), **fields})
        elif self.tty:
            self._draw(fit([(0, text + " …")], terminal_width(self.stream)))

    @contextlib.contextmanager
    def stage(self, name: str, text: str | None = None, heartbeat: bool = True,
              **fields: Any) -> Iterator[None]:
        """A phase with an end: started, every ``period`` s while it lasts (a heartbeat from
        a thread, so a data set generated for 20 minutes shows it is alive; none for the
        evaluations, which have their own progress lines), and finished with its seconds (in
        ``stages[name]``), also when it raises."""
        label = text or name
        self.phase(label, name, **fields)
        start = time.time()
        done = threading.Event()

        def beat() -> None:
            every = 1.0 if self.tty else self.period
            while not done.wait(every):
                took = time.time() - start
                if self.mode == "json":
                    self._emit({"event": "phase", "phase": name, "state": "running",
                                "seconds": round(took, 1), "elapsed_s": self._elapsed()})
                elif self.tty:
                    self._draw(fit([(0, f"{label} … {_hms(took)}")], terminal_width(self.stream)))

        thread = None
        if heartbeat and not self.quiet:
            thread = threading.Thread(target=beat, name=f"progress-{name}", daemon=True)
            thread.start()
        ok = False
        try:
            yield
            ok = True
        finally:
            done.set()
            if thread is not None:
                thread.join()
            took = time.time() - start
            self.stages[name] = took
            if self.mode == "json":
                self._emit({"event": "phase", "phase": name,
                            "state": "finished" if ok else "stopped", "seconds": round(took, 1),
                            "elapsed_s": self._elapsed()})

    def __call__(self, p: Progress) -> None:
        now = time.time()
        if self._done_before is None:
            # The first tick comes before this job's first result: what is finished by then
            # was finished by earlier jobs of a resumed run.
            self._done_before = p.finished
        if self.quiet:
            return
        first_result = not self._shown_result and p.finished > self._done_before
        if now - self._last < self.period and not (first_result and not self.tty):
            return
        self._last = now
        in_flight = tuple(p.busy_since.values())
        if self.tty:
            self._draw(format_line(
                p, self.workers, now, self._done_before, terminal_width(self.stream),
                self.meter, self._phase, in_flight))
            return
        self._shown_result = self._shown_result or first_result
        left = eta_seconds(p, now, self._done_before)
        t = self.meter.result(now, in_flight)
        util = t.utilization
        self._emit({
            "event": "progress", "finished": p.finished, "budget": p.budget,
            "running": p.running, "failed": p.failed, "pruned": p.pruned, "best": p.best,
            # The line's "(mean of N)": with races the best is a mean, not one draw.
            "best_evaluations": None if p.best is None else p.best_n,
            "utilization": None if util is None else round(util, 4),
            "elapsed_s": round(t.wall_s, 1), "startup_s": round(t.startup_s, 1),
            "eta_s": None if left is None else round(left, 1),
        })

    def finish(self, p: Progress) -> None:
        """Erase the live line (the final summary says the rest); in JSON mode, one last
        progress line, so a batch log ends with the counts the job reached."""
        if self.mode == "json":
            self._last = 0.0
            self.period, period = 0.0, self.period
            self(p)
            self.period = period
        elif self.tty and self._drawn:
            self._draw("")
