"""The coordinator loop shared by every transport.

*Send while there is work and an idle worker; wait for any result; tell the engine; answer
the idle worker at once.* When nothing happens the wait backs off (from 50 µs up to a few
ms) so an idle coordinator costs no core. The loop owns the clock; the engine does not.

Intermediate reports are decided here too, by one function for every transport
(``Coordinator.decide_report``, handed to the transport as its ``on_report``): the engine's
pruner says whether the evaluation goes on, and the transport carries the answer back.

**Batches** (``batch > 1``) are made here, not in the engine: for an idle worker the
coordinator asks the engine up to ``batch`` times, each answer an ordinary task with its own
uid and seed (logged by ``on_task`` as it is created). With a ``batch_key(params)``, a task
whose key differs from the batch's first member is *held* in a FIFO and goes first to the
next idle worker, together with the held tasks that share its key; asking stops at
``batch`` members, when the engine refuses, or when a batch's worth of tasks is held. Held
tasks are already in the engine's in-flight table, so a stop or crash re-issues them like
any task in flight. The worker is busy until every member's Result is in.

**Suspects** (tasks in flight when an earlier job crashed, ``suspects``) go out one at a
time: the engine hands them out first as always (so its in-flight table, which new tasks
depend on, is the one ``--resume`` replay rebuilds), but the coordinator sends a suspect only
while no other suspect is out; the others wait in ``waiting`` (in the engine's in-flight
table, not sent, not journaled). A task that kills the job is then the only suspect in flight
at its next crash, and the poison rule (``store/replay.py``) fails it alone, not the healthy
tasks that ran beside it the first time. One at a time rather than bisection: each crash is a
job restart (minutes in a queue), and one at a time finds the killer with exactly one more
crash, while other workers keep running new tasks beside the one suspect.
"""

from __future__ import annotations

import gc
import heapq
import sys
import time
from collections import deque
from collections.abc import Callable, Collection, Hashable
from dataclasses import dataclass, field
from typing import Any

from evo_engine.errors import InputError
from evo_engine.search.engine import Engine, Evaluation, TellOutcome
from evo_engine.search.messages import EvalState, Task
from evo_engine.transports.base import Transport

BatchKey = Callable[[dict[str, Any]], Hashable]

SWITCH_INTERVAL = 0.0005
"""Seconds another Python thread may hold the GIL while the coordinator waits for it, set
for the duration of ``Coordinator.run`` (Python's default is 0.005). The recorder's writer
and zarr's I/O threads run Python code too; each time the coordinator needed the GIL back it
waited up to the whole interval, and those waits, not the coordinator's own work, made the
slow results of ``benchmarks/checkpoint.py --scale``."""

FREEZE_GC = True
"""Move every object alive when ``Coordinator.run`` starts (modules, the scenario, zarr,
pydantic, the engine) out of the garbage collector's sight for the run (``gc.freeze``;
``gc.unfreeze`` after). A full collection otherwise walks all of them: 45–75 ms in which no
Python thread runs, several times per 100,000 results."""


@dataclass
class Progress:
    """Counters the progress line and the final summary show."""

    budget: int
    finished: int = 0
    complete: int = 0
    failed: int = 0
    pruned: int = 0
    running: int = 0
    """Evaluations running (batch members each count)."""
    best: float | None = None
    """The incumbent's estimated mean (``Engine.best``), not the luckiest single draw."""
    best_n: int = 1
    """Complete evaluations behind ``best``."""
    busy_seconds: float = 0.0
    started: float = field(default_factory=time.time)
    busy_since: dict[int, float] = field(default_factory=dict)
    """worker -> when it was given the work it is doing now: the live utilization counts
    work in flight, not only finished evaluations."""

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
        on_send: Callable[[list[Task]], None] | None = None,
        on_tick: Callable[[Progress], None] | None = None,
        stop_check: StopCheck | None = None,
        log: Any = None,
        clock: Callable[[], float] = time.time,
        max_backoff: float = 0.005,
        batch: int = 1,
        batch_key: BatchKey | None = None,
        suspects: Collection[int] = (),
    ) -> None:
        if batch < 1:
            raise ValueError(f"batch must be at least 1, got {batch}")
        self.engine = engine
        self.transport = transport
        self.on_evaluation = on_evaluation
        self.on_task = on_task
        self.on_send = on_send
        """Called with the tasks about to go to a worker (after ``on_task``; the journal)."""
        self.on_tick = on_tick
        self.stop_check = stop_check
        self.log = log
        self.clock = clock
        self.max_backoff = max_backoff
        self.progress = Progress(budget=engine.max_evals, started=clock())
        self.stop: StopRequest | None = None
        self.batch = batch
        self.batch_key = batch_key
        self.held: deque[Task] = deque()
        """Tasks asked for but not yet given to a worker (a different batch_key)."""
        self.busy: dict[int, set[int]] = {}
        """worker -> uids of the tasks it holds and has not answered yet."""
        self.running = 0
        self.idle: list[int] | None = None
        """Idle workers as a min-heap: the lowest is asked first, in O(log n) a worker."""
        self.refused = False
        """The engine refused the last ask; only a result can change its answer."""
        self.last_send: dict[int, float] = {}
        self.suspects = set(suspects)
        """uids in flight at an earlier job's crash, not finished yet: sent one at a time."""
        self.suspect_out: set[int] = set()
        """Suspects handed to a worker (or to a batch being made) and not answered yet."""
        self.waiting: deque[Task] = deque()
        """Suspects asked for and held back until no other suspect is out."""
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
            self.idle = sorted(set(range(self.transport.n_workers)) - set(self.busy))
        if self.waiting and not self.suspect_out and self.idle and self.stop is None:
            self._send_waiting_suspect()  # (a drain starts nothing: they wait for --resume)
        if (self.refused and not self.held) or not self.idle:
            return
        # Lowest idle worker first, popped off a heap: under the sync barrier most results
        # leave thousands of workers idle and the engine refusing, so nothing here may cost
        # more than the workers actually served.
        idle = self.idle
        while idle:
            w = idle[0]
            if self.batch == 1:
                task = self._ask(w)
                if task is None:
                    self.refused = True
                    return
                heapq.heappop(idle)
                self.busy[w] = {task.uid}
                self.progress.busy_since[w] = self.clock()
                self.running += 1
                if self.on_task:
                    self.on_task(task)
                if self.on_send:
                    self.on_send([task])
                self.transport.submit(w, task)
                continue
            tasks = self._make_batch(w)
            if not tasks:
                return
            heapq.heappop(idle)
            self.busy[w] = {t.uid for t in tasks}
            self.progress.busy_since[w] = self.clock()
            self.running += len(tasks)
            if self.on_send:
                self.on_send(tasks)
            self.transport.submit_batch(w, tasks)

    def _send_waiting_suspect(self) -> None:
        """The next held-back suspect to the lowest idle worker, alone (its row is logged)."""
        task = self.waiting.popleft()
        w = heapq.heappop(self.idle) if self.idle else 0
        self.suspect_out.add(task.uid)
        self.busy[w] = {task.uid}
        self.running += 1
        if self.on_send:
            self.on_send([task])
        if self.batch == 1:
            self.transport.submit(w, task)
        else:
            self.transport.submit_batch(w, [task])

    def _ask(self, worker: int) -> Task | None:
        while True:
            task = self.engine.ask(worker)
            if self.engine.poisoned_issued:  # rare: tasks the resume's poison rule fails at issue
                for ev in self.engine.drain_poisoned():
                    if self.on_task:
                        self.on_task(ev.task)
                    self._count(ev)
            if task is None or task.uid not in self.suspects:
                return task
            if not self.suspect_out:
                self.suspect_out.add(task.uid)
                return task
            # Another suspect is out: this one waits (issued and logged, not yet sent), and
            # the worker is asked for again (the next suspect, or a new task).
            if self.on_task:
                self.on_task(task)
            self.waiting.append(task)

    def _key(self, task: Task) -> Hashable:
        if self.batch_key is None:
            return None
        try:
            return self.batch_key(dict(task.params))
        except Exception as exc:  # noqa: BLE001 - the scenario's code: the user's error
            raise InputError(
                f"the scenario's batch_key raised {type(exc).__name__}: {exc} (for parameters "
                f"{dict(task.params)!r})"
            ) from None

    def _make_batch(self, worker: int) -> list[Task]:
        """Up to ``batch`` tasks that may share a batch: held ones first, then new ones."""
        members: list[Task] = []
        key: Hashable = None
        if self.held:
            members.append(self.held.popleft())
            key = self._key(members[0])
            if self.held and self.batch > 1:
                rest: deque[Task] = deque()
                for t in self.held:
                    if len(members) < self.batch and self._key(t) == key:
                        members.append(t)
                    else:
                        rest.append(t)
                self.held = rest
        while len(members) < self.batch and not self.refused and len(self.held) < self.batch:
            task = self._ask(worker)
            if task is None:
                self.refused = True
                break
            if self.on_task:
                self.on_task(task)
            if not members:
                members.append(task)
                key = self._key(task)
            elif self.batch_key is None or self._key(task) == key:
                members.append(task)
            else:
                self.held.append(task)
        return members

    def run(self) -> str:
        """Run to the end; returns 'finished' or the reason of the StopRequest that ended it."""
        previous = sys.getswitchinterval()
        sys.setswitchinterval(min(previous, SWITCH_INTERVAL))
        if FREEZE_GC:
            gc.freeze()
        try:
            return self._run()
        finally:
            if FREEZE_GC:
                gc.unfreeze()
            sys.setswitchinterval(previous)

    def _run(self) -> str:
        backoff = 50e-6
        eng = self.engine
        while True:
            if self.transport.halt is not None and (self.stop is None or not self.stop.abort):
                self.stop = StopRequest(self.transport.halt, abort=True)
                eng.stop_issuing()
                if self.log:
                    self.log.warning("stop_requested", reason=self.stop.reason, abort=True,
                                     in_flight=len(eng.in_flight))
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
            self.progress.running = self.running
            if eng.done or (self.stop is not None and self.running == 0 and self.waiting):
                break  # (only held-back suspects left under a drain: pending for --resume)
            results = self.transport.poll(backoff)
            if not results:
                backoff = min(backoff * 2, self.max_backoff)
                if self.on_tick:
                    self.on_tick(self.progress)
                continue
            backoff = 50e-6
            self.refused = False
            for r in results:
                if r.uid in self.suspect_out:
                    self.suspect_out.discard(r.uid)
                    self.suspects.discard(r.uid)
                held = self.busy.get(r.worker)
                if held is not None and r.uid in held:
                    held.discard(r.uid)
                    self.running -= 1
                    if not held:
                        del self.busy[r.worker]
                        self.progress.busy_since.pop(r.worker, None)
                        if self.idle is not None:
                            heapq.heappush(self.idle, r.worker)
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
        first_of_batch = ev.result.batch in (-1, ev.task.uid)
        if first_of_batch:  # a batch's members share one stretch of the worker's time
            p.busy_seconds += max(ev.result.t_end - ev.result.t_start, 0.0)
            if self.log and ev.result.gpu is not None:
                self.log.info("worker_gpu", worker=ev.result.worker, uid=ev.task.uid,
                              batch=ev.result.batch, gpu_busy_percent=round(ev.result.gpu[0], 1),
                              gpu_memory_mib=round(ev.result.gpu[1], 1))
        # Re-evaluations move it too: read it after every result (the estimate, not
        # engine.best, which builds an Individual each time).
        best = self.engine.best_estimate
        if best is not None:
            p.best, p.best_n = best.mean, int(best.n)
        if ev.state is EvalState.COMPLETE:
            p.complete += 1
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
