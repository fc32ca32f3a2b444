"""The transport contract shared by the inline, local-process and MPI transports.

A transport moves Tasks to workers and Results back; it knows nothing of evolution. The
coordinator loop (``evo_engine.job.coordinator``) is the same for every transport.

Intermediate reports (``ctx.report(step, value)`` in an objective) travel the same way when
the spec asks for them (``WorkerSpec.reports``): the worker sends ``(uid, step, value)`` and
waits for one yes/no; the transport answers inside ``poll`` with ``decide_report``, which
asks the coordinator's ``on_report``. One round trip per report, no other state.

A worker may be handed a *batch* (``submit_batch``): several tasks evaluated by one call of
the scenario's ``objective_batch``. It answers with one Result per member, all in the same
``poll``; the coordinator counts the worker busy until every member's Result is in.

Time limits (``WorkerSpec.eval_timeout_s``) are enforced by each transport as it can: the
local transport kills and replaces the worker process, the MPI transport marks the task and
ends the job resumably (a rank cannot be replaced), the inline transport interrupts the
objective with SIGALRM (Python code only; a call stuck inside a C extension is not reached).
"""

from __future__ import annotations

import heapq
import signal
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evo_engine.search.messages import Result, Task

STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1")
"""The signals that stop a run (``evo_engine.util.signals.SIGNALS``, which the transports may
not import): a worker leaves them to its coordinator; inline, they interrupt the objective."""


def stop_signals() -> set[signal.Signals]:
    """``STOP_SIGNALS`` as the signals this platform has."""
    return {getattr(signal, name) for name in STOP_SIGNALS if hasattr(signal, name)}


class WorkerStartError(RuntimeError):
    """A worker could not start (its scenario failed to load, say)."""


@dataclass(frozen=True)
class WorkerSpec:
    """How a worker finds its objective: a scenario file it loads itself, or a callable."""

    scenario_path: str | None = None
    preset: str = "cpu"
    scratch_root: str | None = None
    objective: Callable[..., Any] | None = None

    finalize: Callable[..., Any] | None = None
    reports: bool = False
    """Workers send ``ctx.report`` values to the coordinator and stop when it says so (a
    pruner needs them); off, a report only lands in the evaluation's curve."""
    objective_batch: Callable[..., Any] | None = None
    """With ``objective``: the batch objective (a scenario file brings its own)."""
    eval_timeout_s: float | None = None
    """Seconds one evaluation (or one batch call) may take before it is FAILED; None = no limit."""

    def load(self) -> tuple[Callable[..., Any], Callable[..., Any] | None]:
        """The objective and the scenario's optional ``finalize`` (test metrics of the best)."""
        objective, finalize, _ = self.load_all()
        return objective, finalize

    def load_all(self) -> tuple[Callable[..., Any], Callable[..., Any] | None,
                                Callable[..., Any] | None]:
        """The objective, the optional ``finalize`` and the optional ``objective_batch``."""
        if self.objective is not None:
            return self.objective, self.finalize, self.objective_batch
        if self.scenario_path is None:
            raise WorkerStartError("a WorkerSpec needs a scenario path or an objective")
        from evo_engine.scenario import load_scenario

        scenario = load_scenario(Path(self.scenario_path), self.preset)
        return scenario.objective, scenario.finalize, scenario.objective_batch

    @property
    def scratch(self) -> Path | None:
        return Path(self.scratch_root) if self.scratch_root else None


@dataclass(frozen=True)
class WorkerInfo:
    """What a worker tells the coordinator when it starts."""

    worker: int
    rank: int
    host: str
    device: str
    pid: int


class Deadlines:
    """When each busy worker's time limit runs out, earliest first (``eval_timeout_s``).

    A heap with lazy deletion: ``set`` and ``clear`` are O(log n) and O(1), ``earliest`` and
    ``expired`` pop only what is due or stale. The transports scanned a dict of every busy
    worker's deadline on every poll (285 µs a poll at 4,096 workers: the whole median cost
    of a result, issue 30). Stale entries (a worker's deadline cleared or set anew) leave
    when they reach the top, and the heap is rebuilt when they outnumber the live ones, so
    it holds O(busy workers) entries whatever the timeout.
    """

    def __init__(self) -> None:
        self._at: dict[int, float] = {}
        self._heap: list[tuple[float, int]] = []

    def __len__(self) -> int:
        return len(self._at)

    def __contains__(self, worker: int) -> bool:
        return worker in self._at

    def set(self, worker: int, at: float) -> None:
        self._at[worker] = at
        heapq.heappush(self._heap, (at, worker))
        if len(self._heap) > 2 * len(self._at) + 64:
            self._heap = [(t, w) for w, t in self._at.items()]
            heapq.heapify(self._heap)

    def clear(self, worker: int) -> None:
        self._at.pop(worker, None)

    def _drop_stale(self) -> None:
        heap, at = self._heap, self._at
        while heap and at.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)

    def earliest(self) -> float | None:
        """The first deadline still set, or None."""
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def expired(self, now: float) -> list[int]:
        """The workers whose deadline is at or before ``now``, earliest first (cleared)."""
        out: list[int] = []
        while True:
            self._drop_stale()
            if not self._heap or self._heap[0][0] > now:
                return out
            _, w = heapq.heappop(self._heap)
            del self._at[w]
            out.append(w)


ReportHandler = Callable[[int, int, float], bool]
"""``(uid, step, value) -> stop``: the coordinator's answer to an intermediate report."""


class Transport(ABC):
    """Moves tasks to ``n_workers`` persistent workers (ids 0..n-1) and results back."""

    n_workers: int
    on_report: ReportHandler | None = None
    """Set by the coordinator; called from ``poll`` (via ``decide_report``) for each report."""
    halt: str | None = None
    """Set by a transport that cannot go on (an MPI rank stuck past its time limit cannot be
    replaced): the coordinator then stops at once, resumably, with this as the reason."""

    def decide_report(self, uid: int, step: int, value: float) -> bool:
        """Whether the evaluation ``uid`` that reported should stop (go on without a handler)."""
        handler = self.on_report
        return bool(handler(uid, step, value)) if handler is not None else False

    @abstractmethod
    def start(self) -> list[WorkerInfo]:
        """Start the workers; return what each reported about itself."""

    @abstractmethod
    def submit(self, worker: int, task: Task) -> None:
        """Hand ``task`` to the idle ``worker``."""

    def submit_batch(self, worker: int, tasks: list[Task]) -> None:
        """Hand the idle ``worker`` several tasks to evaluate in one ``objective_batch`` call."""
        if len(tasks) == 1:
            self.submit(worker, tasks[0])
            return
        raise NotImplementedError(f"{type(self).__name__} does not take batches")

    @abstractmethod
    def poll(self, timeout: float) -> list[Result]:
        """Results that arrived, waiting up to ``timeout`` seconds for the first one.

        Reports that arrive meanwhile are answered at once with ``decide_report``."""

    @abstractmethod
    def close(self) -> None:
        """Tell every worker to stop and wait for them (workers finish their current task)."""

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
