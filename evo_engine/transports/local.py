"""The local transport: persistent worker processes on this machine (the default without MPI).

Each worker is a spawned process that loads the objective once, keeps its cache across
evaluations, and talks to the coordinator over its own pipe. The coordinator waits on all
pipes at once, so whichever worker finishes first gets its next task first. A worker that
dies (killed, segfault, ``os._exit`` in the objective) turns its task — every member of its
batch — into a FAILED result "worker died while evaluating" and is started again; one that
runs past ``eval_timeout_s`` is killed, its tasks FAILED "timed out after N s", and replaced.
A replacement starts in the background: the FAILED result comes back at once, ``poll`` goes
on serving the other workers' results and reports while it loads its objective (a data set
onto a GPU may take minutes; the first version waited for it, up to ``start_timeout``,
inside ``poll``), and a task sent to it meanwhile waits in the transport until it says ready.
A replacement that cannot start raises ``WorkerStartError`` from ``poll``, as a first start
does from ``start``.

Messages on a pipe::

    coordinator → worker   Task | ("batch", [Task, ...]) | STOP | answer to a report (bool)
    worker → coordinator   ("ready", WorkerInfo) | ("fatal", str) | ("result", Result)
                           | ("results", [Result, ...]) (a batch)
                           | ("report", (uid, step, value)), then it waits for the answer
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import socket
import time
from collections.abc import Callable
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection, wait

from evo_engine.search.messages import EvalState, Result, Task
from evo_engine.transports.base import (
    Deadlines,
    Transport,
    WorkerInfo,
    WorkerSpec,
    WorkerStartError,
    stop_signals,
)
from evo_engine.transports.worker import WORKER_DIED, WorkerRuntime, select_device, timed_out_text

STOP = None


class _PipeReports:
    """A worker's side of intermediate reports: send one, wait for the coordinator's answer.

    The coordinator answers every report at once; a STOP (or a closed pipe) instead of an
    answer means the run is ending, so the evaluation stops and the worker exits after it.
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.closing = False

    def for_task(self, task: Task) -> Callable[[int, float], bool]:
        def report(step: int, value: float) -> bool:
            if self.closing:
                return True
            try:
                self.conn.send(("report", (task.uid, step, value)))
                answer = self.conn.recv()
            except (EOFError, OSError):
                answer = STOP
            if answer is STOP:
                self.closing = True
                return True
            return bool(answer)

        return report


def _worker_main(conn: Connection, worker: int, spec: WorkerSpec) -> None:
    """Worker loop: receive a task, run it, send the result; stop on STOP or a closed pipe."""
    # The coordinator owns the worker's lifetime: Ctrl-C and walltime signals go to it, and it
    # stops (or kills) its workers after writing its snapshot.
    for sig in stop_signals():
        signal.signal(sig, signal.SIG_IGN)
    # They were blocked from the fork on (``_spawn``); one that came meanwhile is dropped now.
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stop_signals())
    try:
        # Each worker owns one core's worth of intra-op threads unless the user says otherwise.
        if "OMP_NUM_THREADS" not in os.environ:
            try:
                import torch

                torch.set_num_threads(1)
            except ImportError:  # pragma: no cover
                pass
        objective, finalize, objective_batch = spec.load_all()
        device = select_device(worker)
        reports = _PipeReports(conn)
        runtime = WorkerRuntime(objective, worker, device, spec.scratch, preset=spec.preset,
                                finalize=finalize, objective_batch=objective_batch,
                                reporter_factory=reports.for_task if spec.reports else None,
                                split_on_oom=spec.eval_timeout_s is None)
    except BaseException as exc:  # noqa: BLE001 - reported to the coordinator, then exit
        conn.send(("fatal", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", WorkerInfo(worker, 0, socket.gethostname(), device, os.getpid())))
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            return
        if task is STOP:
            return
        try:
            if isinstance(task, tuple):  # ("batch", tasks)
                conn.send(("results", runtime.run_batch(task[1])))
            else:
                conn.send(("result", runtime.run(task)))
        except (BrokenPipeError, OSError, KeyboardInterrupt):
            return
        if reports.closing:
            return


def _reap(proc: mp.process.BaseProcess, timeout: float) -> bool:
    """Wait up to ``timeout`` s for ``proc`` to exit; whether it did. ``join`` waits on the
    process's sentinel, a pipe that a helper it forked keeps open after it exited."""
    end = time.monotonic() + timeout
    while proc.is_alive():
        if time.monotonic() >= end:
            return False
        time.sleep(0.002)
    return True


def _exit_fd(proc: mp.process.BaseProcess) -> int:
    """A descriptor that becomes readable when ``proc`` exits: a pidfd where the system has
    them. The process's sentinel is a pipe its children inherit, so it stays open as long as
    a helper the objective forked lives; it is used only where there are no pidfds."""
    try:
        return os.pidfd_open(proc.pid)  # type: ignore[arg-type]
    except (AttributeError, OSError):
        return proc.sentinel


class LocalTransport(Transport):
    """``n_workers`` spawned processes, one pipe each."""

    def __init__(self, spec: WorkerSpec, n_workers: int, start_timeout: float = 300.0,
                 stop_grace: float = 3.0) -> None:
        if n_workers < 1:
            raise ValueError(f"need at least one worker, got {n_workers}")
        self.spec = spec
        self.n_workers = n_workers
        self.start_timeout = start_timeout
        self.stop_grace = stop_grace
        self._ctx = mp.get_context("spawn")
        self._procs: list[mp.process.BaseProcess | None] = [None] * n_workers
        self._conns: list[Connection | None] = [None] * n_workers
        self._exits: list[int | None] = [None] * n_workers
        """worker -> a descriptor readable once its process has exited (``_exit_fd``)."""
        self._tasks: dict[int, list[Task]] = {}
        self._batched: dict[int, bool] = {}
        self._deadlines = Deadlines()
        """worker -> monotonic time its evaluation runs out (with ``eval_timeout_s`` only)."""
        self._starting = Deadlines()
        """Replacements not ready yet -> monotonic time they must be ready by."""
        self._outbox: dict[int, object] = {}
        """worker -> the message for a replacement still starting, sent when it is ready."""
        self._undelivered: dict[int, object] = {}
        """worker -> the message it died before receiving (sent again to its replacement)."""
        self._sent: dict[int, float] = {}
        """worker -> wall time its tasks were sent (the start of a FAILED result it never sent)."""
        self.restarts = 0

    def _spawn(self, worker: int) -> None:
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=_worker_main, args=(child, worker, self.spec), name=f"evo-worker-{worker}",
            daemon=True,
        )
        # A worker ignores stop signals from its first line on, but Python's start-up and the
        # objective's module come first: a Ctrl-C (sent to the whole process group) or a batch
        # system's SIGTERM killed it there. The child inherits the blocked mask across exec.
        block = getattr(signal, "pthread_sigmask", None)
        if block is not None:
            # (The start of multiprocessing's resource tracker unblocks SIGINT and SIGTERM:
            # it goes first, as the spawn would start it anyway.)
            resource_tracker.ensure_running()
        old = block(signal.SIG_BLOCK, stop_signals()) if block is not None else None
        try:
            proc.start()
            child.close()
            self._close_exit_fd(worker)
            self._procs[worker], self._conns[worker] = proc, parent
            self._exits[worker] = _exit_fd(proc)
        finally:
            # A stop that came meanwhile raises here (before the run loop), with the process
            # already in the tables that ``close`` stops.
            if block is not None and old is not None:
                block(signal.SIG_SETMASK, old)

    def _close_exit_fd(self, worker: int) -> None:
        fd, proc = self._exits[worker], self._procs[worker]
        self._exits[worker] = None
        if fd is not None and (proc is None or fd != proc.sentinel):
            os.close(fd)

    def _await_ready(self, worker: int) -> WorkerInfo:
        conn, exited = self._conns[worker], self._exits[worker]
        assert conn is not None and exited is not None
        # Its exit too: a helper it forked may hold its pipe open after it died.
        if not wait([conn, exited], self.start_timeout):
            raise WorkerStartError(f"worker {worker} did not start within {self.start_timeout:.0f} s")
        try:
            if not conn.poll(0):
                raise EOFError
            kind, payload = conn.recv()
        except EOFError as exc:
            raise WorkerStartError(f"worker {worker} exited while starting") from exc
        if kind == "fatal":
            raise WorkerStartError(f"worker {worker} could not load its objective: {payload}")
        return payload

    def start(self) -> list[WorkerInfo]:
        try:
            for w in range(self.n_workers):
                self._spawn(w)
            return [self._await_ready(w) for w in range(self.n_workers)]
        except BaseException:
            self.close()
            raise

    def submit(self, worker: int, task: Task) -> None:
        self._send(worker, [task], task, batched=False)

    def submit_batch(self, worker: int, tasks: list[Task]) -> None:
        self._send(worker, list(tasks), ("batch", list(tasks)), batched=True)

    def _send(self, worker: int, tasks: list[Task], message: object, batched: bool) -> None:
        self._tasks[worker] = tasks
        self._batched[worker] = batched
        if worker in self._starting:
            self._outbox[worker] = message  # sent (and timed) once the replacement is ready
            return
        self._deliver(worker, message)

    def _deliver(self, worker: int, message: object) -> None:
        conn = self._conns[worker]
        assert conn is not None
        self._sent[worker] = time.time()
        if self.spec.eval_timeout_s is not None:
            self._deadlines.set(worker, time.monotonic() + self.spec.eval_timeout_s)
        proc = self._procs[worker]
        try:
            if proc is not None and not proc.is_alive():
                raise BrokenPipeError
            conn.send(message)
        except (BrokenPipeError, OSError):
            # It died before this was sent (idle: the out-of-memory killer picks a big cache
            # busy or not): the tasks never started, so its replacement gets them, unfailed.
            self._undelivered[worker] = message

    def poll(self, timeout: float) -> list[Result]:
        # Reports are answered as they come and do not end the wait: only results do.
        deadline = time.monotonic() + timeout
        out: list[Result] = []
        while True:
            live = {c: w for w, c in enumerate(self._conns) if c is not None}
            # Each process's exit too: a helper the objective forked (a data loader, a pool)
            # inherits the pipe and keeps it open after the worker died, so its end of file
            # came only when the helper exited (never, for one that waits on its parent).
            procs = {fd: (w, self._procs[w]) for w, fd in enumerate(self._exits) if fd is not None}
            until = min(t for t in (deadline, self._deadlines.earliest(),
                                    self._starting.earliest()) if t is not None)
            ready = wait([*live, *procs], max(until - time.monotonic(), 0.0))
            for conn in ready:
                if isinstance(conn, int):  # an exit: handled after every message
                    continue
                w = live[conn]  # type: ignore[index]
                try:
                    kind, payload = conn.recv()  # type: ignore[union-attr]
                except (EOFError, OSError):
                    if w in self._starting:
                        raise WorkerStartError(f"worker {w} exited while starting again") from None
                    out.extend(self._replace(w, WORKER_DIED))
                    continue
                if kind == "report":
                    self._answer(conn, payload)  # type: ignore[arg-type]
                elif kind in ("result", "results"):
                    self._tasks.pop(w, None)
                    self._deadlines.clear(w)
                    out.extend([payload] if kind == "result" else payload)
                elif kind == "ready":
                    self._started(w)
                elif kind == "fatal":
                    raise WorkerStartError(f"worker {w} could not load its objective when "
                                           f"started again: {payload}")
            for exited in ready:
                if not isinstance(exited, int):
                    continue
                w, proc = procs[exited]
                conn = self._conns[w]
                if self._procs[w] is not proc or conn is None or conn.poll(0):
                    continue  # replaced already, or a last message (or EOF) to read first
                if w in self._starting:
                    raise WorkerStartError(f"worker {w} exited while starting again")
                out.extend(self._replace(w, WORKER_DIED))
            late = self._starting.expired(time.monotonic())
            if late:
                raise WorkerStartError(f"worker {late[0]} did not start again within "
                                       f"{self.start_timeout:.0f} s")
            out.extend(self._expire())
            if out or not ready or time.monotonic() >= deadline:
                return out

    def _expire(self) -> list[Result]:
        """Kill and replace every worker whose evaluation ran past ``eval_timeout_s``."""
        out: list[Result] = []
        for w in self._deadlines.expired(time.monotonic()):
            proc = self._procs[w]
            if proc is not None and proc.is_alive():
                proc.kill()
            assert self.spec.eval_timeout_s is not None
            out.extend(self._replace(w, timed_out_text(self.spec.eval_timeout_s), died=False))
        return out

    def _answer(self, conn: Connection, report: tuple[int, int, float]) -> None:
        stop = self.decide_report(*report)
        try:
            conn.send(stop)
        except (BrokenPipeError, OSError):
            pass  # the death is noticed (and the task failed) by the next poll

    def _started(self, worker: int) -> None:
        """A replacement said ready: what was sent to it meanwhile goes now."""
        self._starting.clear(worker)
        message = self._outbox.pop(worker, None)
        if message is not None:
            self._deliver(worker, message)

    def _replace(self, worker: int, error: str, died: bool = True) -> list[Result]:
        """Start ``worker`` again, in the background; its tasks in hand become FAILED results
        with ``error`` at once."""
        proc, conn = self._procs[worker], self._conns[worker]
        code = None
        if proc is not None and died:
            _reap(proc, 5.0)  # it has exited (EOF): a moment at most, for its exit code
            code = proc.exitcode
        # One killed for its time limit is not waited for: a process stuck in the kernel (a
        # GPU driver, a hung file system) can take seconds to go, and every other worker's
        # results would wait with it. multiprocessing reaps it when the next worker starts.
        if conn is not None:
            conn.close()
        self._conns[worker] = None
        self._deadlines.clear(worker)
        self.restarts += 1
        self._spawn(worker)
        self._starting.set(worker, time.monotonic() + self.start_timeout)
        unsent = self._undelivered.pop(worker, None)
        if unsent is not None:  # it died before it got them: they wait for the replacement
            self._outbox[worker] = unsent
            self._sent.pop(worker, None)
            return []
        tasks = self._tasks.pop(worker, [])
        batched = self._batched.pop(worker, False)
        if died:
            error = f"{error} (worker {worker}, pid {proc.pid if proc else '?'}, exit code {code})"
        t_start, t_end = self._sent.pop(worker, 0.0), time.time()
        return [
            Result(uid=t.uid, worker=worker, fitness=None, state=EvalState.FAILED, error=error,
                   batch=tasks[0].uid if batched else -1, t_start=t_start or t_end, t_end=t_end)
            for t in tasks
        ]

    def close(self) -> None:
        for conn in self._conns:
            if conn is not None:
                try:
                    conn.send(STOP)
                except (BrokenPipeError, OSError):
                    pass
        # Idle workers exit at once; one still inside an evaluation (a stop by signal) is
        # killed after a short grace: its task is pending in the snapshot and runs again.
        deadline = time.monotonic() + self.stop_grace
        for proc in self._procs:
            if proc is not None and not _reap(proc, max(deadline - time.monotonic(), 0.0)):
                proc.kill()
                _reap(proc, 5.0)
        for conn in self._conns:
            if conn is not None:
                conn.close()
        for w in range(self.n_workers):
            self._close_exit_fd(w)
        self._procs = [None] * self.n_workers
        self._conns = [None] * self.n_workers
