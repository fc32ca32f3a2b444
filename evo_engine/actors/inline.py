"""The inline transport: every worker runs in this process (tests, debugging, -n 1).

An intermediate report is decided by a direct call: there is nothing to wait for.
"""

from __future__ import annotations

import os
import socket
from collections import deque
from collections.abc import Callable
from functools import partial

from evo_engine.actors.base import Transport, WorkerInfo, WorkerSpec
from evo_engine.actors.runtime import WorkerRuntime, select_device
from evo_engine.records import Result, Task


class InlineTransport(Transport):
    """Runs each submitted task when polled, one at a time, in the calling process."""

    def __init__(self, spec: WorkerSpec, n_workers: int = 1) -> None:
        self.spec = spec
        self.n_workers = n_workers
        self._queue: deque[tuple[int, Task]] = deque()
        self._runtimes: list[WorkerRuntime] = []

    def start(self) -> list[WorkerInfo]:
        objective, finalize = self.spec.load()
        device = select_device(0)
        self._runtimes = [
            WorkerRuntime(objective, w, device, self.spec.scratch, preset=self.spec.preset,
                          finalize=finalize, reporter_factory=self._reporter)
            for w in range(self.n_workers)
        ]
        return [WorkerInfo(w, 0, socket.gethostname(), device, os.getpid()) for w in range(self.n_workers)]

    def _reporter(self, task: Task) -> Callable[[int, float], bool]:
        return partial(self.decide_report, task.uid)

    def submit(self, worker: int, task: Task) -> None:
        self._queue.append((worker, task))

    def poll(self, timeout: float) -> list[Result]:
        if not self._queue:
            return []
        worker, task = self._queue.popleft()
        return [self._runtimes[worker].run(task)]

    def close(self) -> None:
        self._queue.clear()
