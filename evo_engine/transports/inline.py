"""The inline transport: every worker runs in this process (tests, debugging, ``--workers 0``).

An intermediate report is decided by a direct call: there is nothing to wait for.

Because the objective runs on the coordinator's own thread, a stop signal (SIGTERM, SIGINT,
SIGUSR1) that arrives during an evaluation would otherwise wait for the evaluation to end.
While an objective runs, each of those signals that has a Python handler (the run's stop
flag) first calls that handler and then interrupts the objective: the task is abandoned, not
recorded, so the stop snapshot lists it as pending and ``--resume`` runs it again.

A time limit (``eval_timeout_s``) is a SIGALRM timer that raises into the objective: it ends
Python code and interruptible waits (``time.sleep``, most I/O), but not a call stuck inside a C
extension that never returns to the interpreter; use local workers for such objectives.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterator
from functools import partial
from types import FrameType
from typing import Any

from evo_engine.search.messages import EvalState, Result, Task
from evo_engine.transports.base import Transport, WorkerInfo, WorkerSpec, stop_signals
from evo_engine.transports.worker import (
    FINALIZE,
    EvaluationInterrupted,
    EvaluationTimedOut,
    WorkerRuntime,
    select_device,
    timed_out_text,
)

KEYBOARD_INTERRUPT = "KeyboardInterrupt"


@contextlib.contextmanager
def interruptible(timeout: float | None) -> Iterator[None]:
    """Let stop signals (and a ``timeout`` s alarm) raise into the code run inside."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old: dict[int, Any] = {}

    def stop(signum: int, frame: FrameType | None) -> None:
        try:
            old[signum](signum, frame)  # the run's own handler records why it stops
        except KeyboardInterrupt:
            # Python's default SIGINT handler (no run around us): Ctrl-C must still reach
            # the caller, not be mistaken for the objective's own KeyboardInterrupt.
            raise EvaluationInterrupted(KEYBOARD_INTERRUPT) from None
        raise EvaluationInterrupted(signal.Signals(signum).name)

    for sig in stop_signals():
        if callable(signal.getsignal(sig)):
            old[sig] = signal.signal(sig, stop)
    alarm = timeout is not None and hasattr(signal, "setitimer")
    if alarm:
        assert timeout is not None

        def expired(signum: int, frame: FrameType | None) -> None:
            raise EvaluationTimedOut(timeout)

        old_alarm = signal.signal(signal.SIGALRM, expired)
        signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        yield
    finally:
        if alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old_alarm)
        for sig, handler in old.items():
            signal.signal(sig, handler)


class InlineTransport(Transport):
    """Runs each submitted task (or batch) when polled, one at a time, in the calling process."""

    def __init__(self, spec: WorkerSpec, n_workers: int = 1) -> None:
        self.spec = spec
        self.n_workers = n_workers
        self._queue: deque[tuple[int, list[Task], bool]] = deque()
        self._runtimes: list[WorkerRuntime] = []

    def start(self) -> list[WorkerInfo]:
        objective, finalize, objective_batch = self.spec.load_all()
        device = select_device(0)
        self._runtimes = [
            WorkerRuntime(objective, w, device, self.spec.scratch, preset=self.spec.preset,
                          finalize=finalize, reporter_factory=self._reporter,
                          objective_batch=objective_batch,
                          split_on_oom=self.spec.eval_timeout_s is None)
            for w in range(self.n_workers)
        ]
        return [WorkerInfo(w, 0, socket.gethostname(), device, os.getpid()) for w in range(self.n_workers)]

    def _reporter(self, task: Task) -> Callable[[int, float], bool]:
        return partial(self.decide_report, task.uid)

    def submit(self, worker: int, task: Task) -> None:
        self._queue.append((worker, [task], False))

    def submit_batch(self, worker: int, tasks: list[Task]) -> None:
        self._queue.append((worker, list(tasks), True))

    def poll(self, timeout: float) -> list[Result]:
        if not self._queue:
            return []
        worker, tasks, batched = self._queue.popleft()
        runtime = self._runtimes[worker]
        try:
            with interruptible(self.spec.eval_timeout_s):
                return runtime.run_batch(tasks) if batched else [runtime.run(tasks[0])]
        except EvaluationInterrupted as exc:
            if exc.args == (KEYBOARD_INTERRUPT,):
                raise KeyboardInterrupt from None
            if tasks[0].operator == FINALIZE:  # the run is over; its caller waits for an answer
                return [Result(uid=tasks[0].uid, worker=worker, fitness=None,
                               state=EvalState.FAILED, error=f"interrupted by {exc.args[0]}")]
            # The run is stopping: these tasks stay in flight and are issued again on resume.
            return []
        except EvaluationTimedOut as exc:  # the alarm rang just after the objective returned
            return [Result(uid=t.uid, worker=worker, fitness=None, state=EvalState.FAILED,
                           error=timed_out_text(exc.seconds),
                           batch=tasks[0].uid if batched else -1) for t in tasks]

    def close(self) -> None:
        self._queue.clear()
