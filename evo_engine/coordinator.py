"""The coordinator loop shared by every transport.

*Send while there is work and an idle worker; wait for any result; tell the engine; answer
the idle worker at once.* When nothing happens the wait backs off (from 50 µs up to a few
ms) so an idle coordinator costs no core. The loop owns the clock; the engine does not.

Intermediate reports are decided here too, by one function for every transport
(``Coordinator.decide_report``, handed to the transport as its ``on_report``): the engine's
pruner says whether the evaluation goes on, and the transport carries the answer back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from evo_engine.actors.base import Transport
from evo_engine.engine import Engine, Evaluation, TellOutcome
from evo_engine.records import EvalState, Task


@dataclass
class Progress:
    """Counters the progress line and the final summary show."""

    budget: int
    finished: int = 0
    complete: int = 0
    failed: int = 0
    pruned: int = 0
    running: int = 0
    best: float | None = None
    busy_seconds: float = 0.0
    started: float = field(default_factory=time.time)

    def utilization(self, workers: int, now: float) -> float:
        wall = max(now - self.started, 1e-9)
        return min(self.busy_seconds / (workers * wall), 1.0)


@dataclass(frozen=True)
class StopRequest:
    """Why to stop issuing work, and whether to abandon the tasks in flight.

    ``abort=False`` drains: tasks in flight are awaited (a time limit that leaves room for
    them). ``abort=True`` stops at once (a walltime signal): tasks in flight stay in the
    engine's in-flight table, which a snapshot records as pending for ``--resume``.
    """

    reason: str
    abort: bool = False


StopCheck = Callable[[], StopRequest | None]


class Coordinator:
    """Drives an Engine over a Transport until the budget is spent or a stop is requested."""

    def __init__(
        self,
        engine: Engine,
        transport: Transport,
        *,
        on_evaluation: Callable[[Evaluation], None] | None = None,
        on_task: Callable[[Task], None] | None = None,
        on_tick: Callable[[Progress], None] | None = None,
        stop_check: StopCheck | None = None,
        log: Any = None,
        clock: Callable[[], float] = time.time,
        max_backoff: float = 0.005,
    ) -> None:
        self.engine = engine
        self.transport = transport
        self.on_evaluation = on_evaluation
        self.on_task = on_task
        self.on_tick = on_tick
        self.stop_check = stop_check
        self.log = log
        self.clock = clock
        self.max_backoff = max_backoff
        self.progress = Progress(budget=engine.max_evals, started=clock())
        self.stop: StopRequest | None = None
        self.busy: dict[int, Task] = {}
        self.idle: set[int] | None = None
        self.refused = False
        """The engine refused the last ask; only a result can change its answer."""
        self.last_send: dict[int, float] = {}
        transport.on_report = self.decide_report

    def decide_report(self, uid: int, step: int, value: float) -> bool:
        """A worker's evaluation ``uid`` reported ``value`` after ``step`` steps: stop it?"""
        stop = self.engine.report(uid, step, value)
        if stop and self.log:
            self.log.debug("eval_stop_decided", uid=uid, step=step, value=value)
        return stop

    def _dispatch(self) -> None:
        # Only idle workers are asked, and a refusal ends the round until the next result: the
        # engine refuses every worker alike (budget spent, stopping, the sync barrier). Asking
        # every worker on every turn of the loop was the coordinator's largest cost with
        # thousands of workers (benchmarks/utilization.py --simulate).
        if self.idle is None:
            self.idle = set(range(self.transport.n_workers)) - set(self.busy)
        if self.refused or not self.idle:
            return
        # The lowest idle worker first, the rest sorted only if it got a task: under the sync
        # barrier most results leave thousands of workers idle and the engine refusing.
        first = min(self.idle)
        for w in (first, *sorted(self.idle - {first})):
            task = self.engine.ask(w)
            if task is None:
                self.refused = True
                return
            self.idle.discard(w)
            self.busy[w] = task
            if self.on_task:
                self.on_task(task)
            self.transport.submit(w, task)

    def run(self) -> str:
        """Run to the end; returns 'finished' or the reason of the StopRequest that ended it."""
        backoff = 50e-6
        eng = self.engine
        while True:
            if self.stop_check is not None and (self.stop is None or not self.stop.abort):
                request = self.stop_check()
                if request is not None and (self.stop is None or request.abort):
                    self.stop = request
                    eng.stop_issuing()
                    if self.log:
                        self.log.info("stop_requested", reason=request.reason, abort=request.abort,
                                      in_flight=len(eng.in_flight))
            if self.stop is not None and self.stop.abort:
                break
            self._dispatch()
            self.progress.running = len(self.busy)
            if eng.done:
                break
            results = self.transport.poll(backoff)
            if not results:
                backoff = min(backoff * 2, self.max_backoff)
                if self.on_tick:
                    self.on_tick(self.progress)
                continue
            backoff = 50e-6
            self.refused = False
            for r in results:
                self.busy.pop(r.worker, None)
                if self.idle is not None:
                    self.idle.add(r.worker)
                outcome, ev = eng.tell(r)
                if ev is None:
                    if self.log:
                        self.log.warning("result_ignored", uid=r.uid, worker=r.worker,
                                         outcome=outcome.value)
                    continue
                self._count(ev)
            if self.on_tick:
                self.on_tick(self.progress)
        if self.stop is None or (not self.stop.abort and eng.n_finished >= eng.max_evals):
            return "finished"
        return self.stop.reason

    def _count(self, ev: Evaluation) -> None:
        p = self.progress
        p.finished += 1
        p.busy_seconds += max(ev.result.t_end - ev.result.t_start, 0.0)
        if ev.state is EvalState.COMPLETE:
            p.complete += 1
            assert ev.result.fitness is not None
            if p.best is None or ev.result.fitness < p.best:
                p.best = ev.result.fitness
        elif ev.state is EvalState.PRUNED:
            p.pruned += 1
        else:
            p.failed += 1
        if self.log:
            if ev.state is EvalState.COMPLETE:
                self.log.debug("eval_completed", uid=ev.task.uid, island=ev.task.island,
                               worker=ev.result.worker, fitness=ev.result.fitness)
            elif ev.state is EvalState.PRUNED:
                step, value = ev.result.curve[-1] if ev.result.curve else (None, None)
                self.log.info("eval_pruned", uid=ev.task.uid, island=ev.task.island,
                              worker=ev.result.worker, step=step, value=value)
            else:
                self.log.warning("eval_failed", uid=ev.task.uid, island=ev.task.island,
                                 worker=ev.result.worker, state=ev.state.name,
                                 error=(ev.error or "").splitlines()[0] if ev.error else "")
        if self.on_evaluation:
            self.on_evaluation(ev)


__all__ = ["Coordinator", "Progress", "StopCheck", "StopRequest", "TellOutcome"]
