"""The MPI transport: rank 0 coordinates, ranks 1..N-1 are persistent worker actors.

This is the only module that imports mpi4py, and only when ``mpiexec`` started more than one
rank (see ``evo_engine.transports.launch``). The shape follows ``mpi4py.futures``:

* a worker rank waits for its start message (how to load the scenario), then loops
  *receive → stop on the sentinel → run the task → send the result*; an objective's
  exception comes back as a FAILED result carrying the traceback and the rank/host;
* rank 0 runs the ordinary coordinator loop with ``MPITransport``: hand a task to an idle
  worker, take any result that arrived, back off briefly when nothing happened;
* nothing spins while idle: MPICH's blocking receive busy-polls a core, so every wait here is
  a non-blocking probe, repeated for 0.5 ms (yielding the core when the node has more ranks
  than cores), then with a growing sleep (20 µs to 1 ms);
* rank 0 never waits on one rank: everything it sends (START, tasks, batches, DECISION,
  STOP) goes out with ``isend`` and the request, holding the pickled message, is kept until a
  later poll sees it complete (``_Crew``); a blocking send above the eager limit returns only
  when that rank has received, and meanwhile every other rank's result and report waited.
  Workers send with blocking ``send``: they have nothing else to do;
* shutdown is a handshake: rank 0 sends every worker the stop sentinel and waits for each
  one's goodbye, so every rank leaves ``MPI_Finalize`` with nothing in flight and exits 0.
  A worker that cannot say goodbye in time (stuck in a long evaluation after a walltime
  signal) and any uncaught error on rank 0 end the job with ``MPI_Abort`` rather than a hang.

Messages (all pickled, all between rank 0 and one worker)::

    rank 0 → worker   START WorkerSpec | TASK task tuple (or a list of them: a batch)
                      | STOP None | DECISION bool
    worker → rank 0   READY WorkerInfo | FATAL str | RESULT result tuple (a list for a batch)
                      | BYE rank | REPORT (uid, step, value)

A rank cannot be replaced inside a running job. So an evaluation that runs past
``eval_timeout_s`` is marked FAILED ("timed out after N s") on rank 0, which then ends the job
as a walltime stop would (store closed, exit code 3, the stuck rank aborted), and ``--resume``
goes on without that task. A worker rank that *dies* (a segfault, ``os._exit`` in the
objective, the out-of-memory killer) is the launcher's business: it tears the job down with
its own exit code; the store stays consistent (it is crash-safe at any instant) and
``--resume`` continues, counting the dead rank's tasks as in flight at a crash.

An intermediate report (``ctx.report`` when the spec asks for reports) is one round trip: the
worker sends REPORT and waits for the DECISION (True = stop) that rank 0 sends from its poll
loop, or right after handing out a task, as soon as it sees the report; a STOP in its place
means the job is ending. One long ask (the surrogate's, 20-100 ms) still delays the reports
that arrive during it: rank 0 runs one thread.

The store's writer process starts after ``MPI_Init``, with ``subprocess.Popen``: ``vfork`` +
``exec`` on Linux, so no page of rank 0 (none that the network pinned) is copied, and the
child never initialises MPI (docs/mpi-slurm.md).

Tasks and results travel as plain tuples: pickling the dataclasses (a numpy genome, an enum)
costs ten times more, and at thousands of evaluations per second rank 0 feels it. A worker
gets only what the objective's ``ctx`` needs; the genome and lineage stay on rank 0.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import signal
import socket
import stat
import sys
import termios
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from evo_engine.errors import InputError
from evo_engine.search.messages import EvalState, Result, Task, frozen_genome
from evo_engine.transports.base import (
    Deadlines,
    Transport,
    WorkerInfo,
    WorkerSpec,
    WorkerStartError,
    stop_signals,
)
from evo_engine.transports.launch import mpi_init_guard, usable_cores
from evo_engine.transports.worker import (
    FINALIZE,
    WorkerRuntime,
    select_device,
    timed_out_text,
)

if TYPE_CHECKING:  # pragma: no cover
    from mpi4py.MPI import Comm

COORDINATOR = 0
TAG_START, TAG_TASK, TAG_STOP, TAG_DECISION = 1, 2, 3, 4
TAG_READY, TAG_FATAL, TAG_RESULT, TAG_BYE, TAG_REPORT = 11, 12, 13, 14, 15
STOP = None
EXIT_INTERNAL, EXIT_BAD_INPUT, EXIT_STOPPED = 1, 2, 3


def _mpi() -> Any:
    """The ``mpi4py.MPI`` module, imported (and MPI initialised) on first use."""
    import mpi4py

    # Only the main thread calls MPI (the callback and writer-sender threads never call MPI; the store is written by a child process), and the
    # lower thread level spares MPICH its per-call global lock.
    mpi4py.rc.thread_level = "funneled"
    from mpi4py import MPI

    return MPI


_yield_core = getattr(os, "sched_yield", lambda: time.sleep(0))


class Backoff:
    """Idle waiting that costs no core for long: poll for a moment, then sleep longer and longer.

    Right after a message goes out the answer usually follows within microseconds, so for
    the first ``spin`` seconds a wait just polls again; after that it sleeps ``first``
    seconds, doubling up to ``most``, so a long idle wait costs about ``1 / most`` wake-ups
    per second. With ``share=True`` (more ranks than cores, as on a laptop) each early poll
    also yields the core, so a waiting worker does not take it from the coordinator.
    """

    def __init__(self, spin: float = 500e-6, first: float = 20e-6, most: float = 1e-3,
                 share: bool = False) -> None:
        self.spin, self.first, self.most, self.share = spin, first, most, share
        self.reset()

    def reset(self) -> None:
        """Expect an answer soon: start again with the quick polls."""
        self.spin_until = time.perf_counter() + self.spin
        self.delay = self.first

    def wait(self, limit: float = float("inf")) -> None:
        """One idle step, never longer than ``limit`` seconds."""
        if time.perf_counter() < self.spin_until:
            if self.share:
                _yield_core()
            return
        time.sleep(max(min(self.delay, limit), 0.0))
        self.delay = min(self.delay * 2, self.most)


# -- the wire format of tasks and results ---------------------------------------------------

_NO_GENOME = frozen_genome([])
_STATES = {int(s): s for s in EvalState}


def task_message(task: Task) -> tuple[Any, ...]:
    """What a worker needs of a task: uid, island, params, seed, operator; for a PBT interval
    also the checkpoint it starts from, its start step and its length in steps (the worker
    makes the context's checkpoint paths and steps from them, ``worker.WorkerRuntime``)."""
    msg = (task.uid, task.island, task.params, task.seed, task.operator)
    if task.step < 0:
        return msg
    return (*msg, task.pbt_parent, task.step, int(task.info.get("interval", 1)))


def task_from_message(msg: tuple[Any, ...]) -> Task:
    uid, island, params, seed, operator, *pbt = msg
    interval: dict[str, Any] = {}
    if pbt:  # a PBT interval (task_message)
        pbt_parent, step, length = pbt
        interval = {"info": {"interval": length}, "pbt_parent": pbt_parent, "step": step}
    return Task(uid=uid, island=island, genome=_NO_GENOME, params=params, seed=seed,
                operator=operator, **interval)


def result_message(r: Result) -> tuple[Any, ...]:
    """Every field of a Result, the state as a plain int; batch and gpu only when set."""
    msg = (r.uid, r.worker, r.fitness, r.metrics, r.error, r.t_start, r.t_end, int(r.state),
           r.curve)
    if r.batch == -1 and r.gpu is None:
        return msg
    return (*msg, r.batch, r.gpu)


def result_from_message(msg: tuple[Any, ...]) -> Result:
    uid, worker, fitness, metrics, error, t_start, t_end, state, curve = msg[:9]
    batch, gpu = msg[9:] if len(msg) > 9 else (-1, None)
    return Result(uid=uid, worker=worker, fitness=fitness, metrics=metrics, error=error,
                  t_start=t_start, t_end=t_end, state=_STATES[state], curve=curve, batch=batch,
                  gpu=gpu)


# -- node-local rank and device binding --------------------------------------------------


def node_local_rank(comm: Comm) -> tuple[int, int]:
    """This rank's index among the ranks sharing its node, and how many share it.

    A shared-memory split of the communicator, not ``rank % n``: launchers place ranks in
    blocks, round robin or by hand, and only the split knows. Collective over ``comm``.
    """
    MPI = _mpi()
    node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
    try:
        return node.Get_rank(), node.Get_size()
    finally:
        node.Free()


def bind_device(local_rank: int) -> str:
    """``cuda:<local_rank % gpus_on_node>`` when the node has GPUs, else ``cpu``."""
    # Importing torch costs seconds of CPU per rank; on a node without a GPU driver there is
    # nothing to find, unless the scenario imported torch already (then asking is free).
    if "torch" not in sys.modules and not _gpu_driver_present():
        return "cpu"
    return select_device(local_rank)


def _gpu_driver_present() -> bool:
    return Path("/proc/driver/nvidia/gpus").is_dir() or Path("/dev/kfd").exists()


def _cores() -> tuple[int, bool]:
    """Cores this rank may use, and whether the launcher bound it to them (fewer than all)."""
    mine = usable_cores()
    return mine, mine < (os.cpu_count() or mine)


def oversubscribed(local_size: int) -> bool:
    """More ranks on this node than cores for them (a laptop, a test): waiting must yield."""
    cores, bound = _cores()
    return not bound and local_size > cores


def share_cores(local_size: int) -> None:
    """Default OMP_NUM_THREADS so the ranks of one node do not oversubscribe its cores."""
    if "OMP_NUM_THREADS" in os.environ:
        return
    cores, bound = _cores()
    # A launcher that binds ranks to cores already gave this rank its share.
    threads = cores if bound else cores // max(local_size, 1)
    os.environ["OMP_NUM_THREADS"] = str(max(threads, 1))


# -- the worker rank ---------------------------------------------------------------------


def worker_main(comm: Comm, local_rank: int, local_size: int) -> int:
    """A worker rank's whole life: start, run tasks until the stop sentinel, say goodbye."""
    _leave_signals_to_the_coordinator()
    MPI = _mpi()
    rank = comm.Get_rank()
    backoff = Backoff(share=oversubscribed(local_size))
    status = MPI.Status()
    runtime: WorkerRuntime | None = None
    reports = _Reports(comm, MPI.ANY_TAG, status, backoff)
    while True:
        tag, payload = _receive_from_coordinator(comm, MPI.ANY_TAG, status, backoff)
        if tag == TAG_STOP:
            break
        if tag == TAG_START:
            runtime = _start_runtime(comm, payload, rank, local_rank, local_size, reports)
        elif isinstance(payload, list):  # a batch
            tasks = [task_from_message(m) for m in payload]
            results = (runtime.run_batch(tasks) if runtime is not None
                       else [_not_started(t, rank) for t in tasks])
            comm.send([result_message(r) for r in results], dest=COORDINATOR, tag=TAG_RESULT)
            if reports.closing:  # a member's report read the STOP: no other one will come
                break
        else:
            task = task_from_message(payload)
            result = runtime.run(task) if runtime is not None else _not_started(task, rank)
            comm.send(result_message(result), dest=COORDINATOR, tag=TAG_RESULT)
            if reports.closing:  # the STOP came while the evaluation waited for a decision
                break
    # Where this process runs: rank 0 leaves after it (leave_last).
    comm.send((rank, socket.gethostname(), os.getpid()), dest=COORDINATOR, tag=TAG_BYE)
    return 0


def _receive_from_coordinator(comm: Comm, any_tag: int, status: Any,
                              backoff: Backoff) -> tuple[int, Any]:
    backoff.reset()
    while True:
        msg = comm.improbe(COORDINATOR, any_tag, status)
        if msg is not None:
            return status.Get_tag(), msg.recv()
        backoff.wait()


class _Reports:
    """A worker rank's side of intermediate reports: send REPORT, wait for the DECISION."""

    def __init__(self, comm: Comm, any_tag: int, status: Any, backoff: Backoff) -> None:
        self.comm, self.any_tag, self.status, self.backoff = comm, any_tag, status, backoff
        self.closing = False

    def for_task(self, task: Task) -> Callable[[int, float], bool]:
        def report(step: int, value: float) -> bool:
            if self.closing:
                return True
            self.comm.send((task.uid, step, value), dest=COORDINATOR, tag=TAG_REPORT)
            tag, stop = _receive_from_coordinator(self.comm, self.any_tag, self.status,
                                                  self.backoff)
            if tag == TAG_STOP:
                self.closing = True
                return True
            return bool(stop)

        return report


def _start_runtime(comm: Comm, spec: WorkerSpec, rank: int, local_rank: int,
                   local_size: int, reports: _Reports) -> WorkerRuntime | None:
    """Load the scenario (this rank does it itself) and report READY, or FATAL with the reason."""
    host = socket.gethostname()
    try:
        share_cores(local_size)
        objective, finalize, objective_batch = spec.load_all()
        device = bind_device(local_rank)
        runtime = WorkerRuntime(objective, rank - 1, device, spec.scratch, rank=rank,
                                preset=spec.preset, finalize=finalize,
                                objective_batch=objective_batch,
                                reporter_factory=reports.for_task if spec.reports else None,
                                split_on_oom=spec.eval_timeout_s is None)
    except Exception as exc:  # noqa: BLE001 - reported to rank 0, which decides
        comm.send(f"{type(exc).__name__}: {exc} (rank {rank} on {host})", dest=COORDINATOR,
                  tag=TAG_FATAL)
        return None
    comm.send(WorkerInfo(rank - 1, rank, host, device, os.getpid()), dest=COORDINATOR,
              tag=TAG_READY)
    return runtime


def _not_started(task: Task, rank: int) -> Result:
    return Result(uid=task.uid, worker=rank - 1, fitness=None, state=EvalState.FAILED,
                  error=f"worker rank {rank} could not load its objective")


def _leave_signals_to_the_coordinator() -> None:
    # mpiexec forwards Ctrl-C and the batch system's SIGTERM to every rank. Rank 0 turns them
    # into a stop and then stops the workers; a worker that died of the signal mid-task would
    # instead make the launcher tear the job down before rank 0 has closed the run store.
    _ignore_stop_signals()


def _ignore_stop_signals() -> None:
    for sig in stop_signals():
        signal.signal(sig, signal.SIG_IGN)


# -- rank 0 ------------------------------------------------------------------------------


class _Crew:
    """Rank 0's record of the worker ranks: told to stop, gone (said goodbye), and the sends
    still in flight to them."""

    def __init__(self, size: int) -> None:
        self.ranks = range(1, size)
        self.stopped: set[int] = set()
        self.gone: set[int] = set()
        self.processes: dict[int, tuple[str, int]] = {}
        self.stuck: set[int] = set()
        """Ranks whose evaluation ran past ``eval_timeout_s``: not saying goodbye is expected of
        them, and aborting them is no error of the run's (``_finish``)."""
        """rank -> (host, pid) of the workers that said goodbye with them (``leave_last``)."""
        self.deadline: float | None = None
        """When waiting for goodbyes ends; set by the first stop, so later calls do not wait anew."""
        self.sends: list[Any] = []
        """Requests of the non-blocking sends not yet seen complete. Each keeps its pickled
        message alive until MPI is done with it; a request dropped while active would free
        the buffer under MPI's feet."""
        self._request = _mpi().Request
        self.check_at = max(size, 1) + 16
        """Requests are tested once this many are held, not on every poll: one ``Testall``
        per ``check_at`` sends (any MPI call, a probe included, moves them along)."""
        self.bound = 4 * max(size, 1) + 64
        """More requests than this in flight and ``send`` first waits for some to complete:
        each worker holds at most a task, a decision and the stop, so this is never reached
        unless a rank stopped receiving."""

    @property
    def missing(self) -> list[int]:
        return [r for r in self.ranks if r not in self.gone]

    def send(self, comm: Comm, obj: Any, rank: int, tag: int) -> None:
        """Send without waiting for ``rank`` to receive (``isend``, as mpi4py.futures does).

        A standard-mode ``send`` above the eager limit (a large batch or spec; lower
        limits under UCX or verbs) returns only once ``rank`` has received: rank 0 would
        wait on one rank while every other rank's result and report waited on it."""
        sends = self.sends
        sends.append(comm.isend(obj, dest=rank, tag=tag))
        if len(sends) >= self.check_at:
            self.progress()
            if len(sends) > self.bound:
                _wait_sends(sends, time.monotonic() + 1e9, len(sends) - self.bound // 2)

    def progress(self) -> None:
        """Let go of the sends that completed (the usual case: all of them, in one call)."""
        sends = self.sends
        if not sends:
            return
        request = self._request
        if request.Testall(sends):
            sends.clear()
        elif request.Testsome(sends):
            sends[:] = [r for r in sends if r]


def _wait_sends(sends: list[Any], deadline: float, keep: int = 0) -> bool:
    """Wait until at most ``keep`` sends are in flight or ``deadline`` (monotonic) passes."""
    request = _mpi().Request
    backoff = Backoff()
    while len(sends) > keep:
        if request.Testall(sends):
            sends.clear()
            return True
        if request.Testsome(sends):
            sends[:] = [r for r in sends if r]
            backoff.reset()
            continue
        if time.monotonic() >= deadline:
            return False
        backoff.wait(deadline - time.monotonic())
    return True


_crew: _Crew | None = None


def _crew_of(comm: Comm) -> _Crew:
    global _crew
    if _crew is None:
        _crew = _Crew(comm.Get_size())
    return _crew


def stop_workers(comm: Comm, timeout: float) -> list[int]:
    """Send every worker the stop sentinel (once) and wait for goodbyes up to ``timeout`` s
    after the first call.

    Results still arriving are dropped: the run is over, and the engine keeps their tasks in
    its in-flight table for ``--resume``. Then waits, within the same time, for every send
    still in flight (none may be left when MPI is finalized). Returns the ranks that did not
    say goodbye.
    """
    MPI = _mpi()
    crew = _crew_of(comm)
    for r in crew.ranks:
        if r not in crew.stopped:
            crew.send(comm, STOP, r, TAG_STOP)
            crew.stopped.add(r)
    if crew.deadline is None:
        crew.deadline = time.monotonic() + timeout
    deadline = crew.deadline
    status = MPI.Status()
    backoff = Backoff()
    while crew.missing and time.monotonic() < deadline:
        crew.progress()
        msg = comm.improbe(MPI.ANY_SOURCE, MPI.ANY_TAG, status)
        if msg is None:
            backoff.wait(deadline - time.monotonic())
            continue
        payload = msg.recv()
        if status.Get_tag() == TAG_BYE:
            crew.gone.add(status.Get_source())
            if isinstance(payload, tuple) and len(payload) == 3:
                crew.processes[status.Get_source()] = (str(payload[1]), int(payload[2]))
        backoff.reset()
    # A rank that said goodbye received everything sent to it before the stop; the sends to
    # ranks still missing may never complete (the job is then aborted, which ends them).
    _wait_sends(crew.sends, deadline)
    return crew.missing


class MPITransport(Transport):
    """Rank 0's side of the MPI transport: worker ``w`` is rank ``w + 1`` of COMM_WORLD."""

    def __init__(self, spec: WorkerSpec, start_timeout: float = 600.0,
                 drain_timeout: float = 10.0) -> None:
        MPI = _mpi()
        self.comm = MPI.COMM_WORLD
        if self.comm.Get_rank() != COORDINATOR:
            raise RuntimeError("MPITransport belongs on rank 0; other ranks run worker_main")
        self.n_workers = self.comm.Get_size() - 1
        if self.n_workers < 1:
            raise ValueError("the MPI transport needs at least two ranks (one coordinator, "
                             "one worker)")
        self.spec = spec
        self.start_timeout = start_timeout
        self.drain_timeout = drain_timeout
        self._status = MPI.Status()
        self._any_source, self._any_tag = MPI.ANY_SOURCE, MPI.ANY_TAG
        self._crew = _crew_of(self.comm)
        self._reports = spec.reports
        # Oversubscribed (more ranks than cores), rank 0's quick polls yield the core: a
        # coordinator spinning for its results took the core from the workers that make them
        # (poll was 163 us of rank 0's 387 us CPU per evaluation, 4 workers on 2 cores).
        self._backoff = Backoff(share=oversubscribed(_ranks_on_node))
        self._held: dict[int, tuple[list[Task], bool, float]] = {}
        """worker -> the tasks it holds, kept only when there is a time limit to enforce."""
        self._deadlines = Deadlines()
        self._timeout = spec.eval_timeout_s

    def start(self) -> list[WorkerInfo]:
        """Send each worker rank the spec; wait until every one has loaded the scenario."""
        for r in range(1, self.n_workers + 1):
            self._crew.send(self.comm, self.spec, r, TAG_START)
        try:
            return self._await_ready()
        except BaseException:
            self.close()
            raise

    def _await_ready(self) -> list[WorkerInfo]:
        infos: dict[int, WorkerInfo] = {}
        fatal: dict[int, str] = {}
        deadline = time.monotonic() + self.start_timeout
        backoff = Backoff(most=0.01)
        while len(infos) + len(fatal) < self.n_workers:
            if time.monotonic() >= deadline:
                silent = [r for r in range(1, self.n_workers + 1) if r - 1 not in infos
                          and r not in fatal]
                raise WorkerStartError(
                    f"{len(silent)} worker rank(s) did not start within "
                    f"{self.start_timeout:.0f} s (ranks {_ranks_text(silent)})"
                )
            self._crew.progress()
            msg = self.comm.improbe(self._any_source, self._any_tag, self._status)
            if msg is None:
                backoff.wait()
                continue
            payload, tag, source = msg.recv(), self._status.Get_tag(), self._status.Get_source()
            if tag == TAG_READY:
                infos[payload.worker] = payload
            elif tag == TAG_FATAL:
                fatal[source] = payload
        if fatal:
            first = fatal[min(fatal)]
            raise WorkerStartError(
                f"{len(fatal)} of {self.n_workers} worker ranks could not load the objective "
                f"(ranks {_ranks_text(sorted(fatal))}); the first said: {first}"
            )
        return [infos[w] for w in sorted(infos)]

    def submit(self, worker: int, task: Task) -> None:
        if self._timeout is not None:
            self._watch(worker, [task], False)
        self._crew.send(self.comm, task_message(task), worker + 1, TAG_TASK)
        if self._reports:  # between two asks (a surrogate's takes 20-100 ms): answer reports
            self._answer_reports()

    def submit_batch(self, worker: int, tasks: list[Task]) -> None:
        self._watch(worker, tasks, True)
        self._crew.send(self.comm, [task_message(t) for t in tasks], worker + 1, TAG_TASK)
        if self._reports:
            self._answer_reports()

    def _watch(self, worker: int, tasks: list[Task], batched: bool) -> None:
        if self._timeout is not None:
            self._held[worker] = (list(tasks), batched, time.time())
            self._deadlines.set(worker, time.perf_counter() + self._timeout)

    def poll(self, timeout: float) -> list[Result]:
        # The back-off carries over between calls: it is reset by a result, not by a call,
        # so a coordinator whose workers are all busy for an hour sleeps instead of polling.
        deadline = time.perf_counter() + timeout
        while True:
            results = self._received()
            if self._deadlines:
                results.extend(self._expired())
            if results:
                self._backoff.reset()
                return results
            left = deadline - time.perf_counter()
            if left <= 0:
                return results
            self._backoff.wait(left)

    def _received(self) -> list[Result]:
        if self._reports:
            self._answer_reports()
        out: list[Result] = []
        while True:
            msg = self.comm.improbe(self._any_source, TAG_RESULT, self._status)
            if msg is None:
                return out
            payload = msg.recv()
            if self._deadlines:
                worker = self._status.Get_source() - 1
                self._deadlines.clear(worker)
                self._held.pop(worker, None)
            if isinstance(payload, list):
                out.extend(result_from_message(m) for m in payload)
            else:
                out.append(result_from_message(payload))

    def _expired(self) -> list[Result]:
        """FAILED results for the tasks of every rank past its time limit; the job then ends."""
        out: list[Result] = []
        for w in self._deadlines.expired(time.perf_counter()):
            tasks, batched, sent = self._held.pop(w, ([], False, 0.0))
            limit = self._timeout or 0.0
            self._crew.stuck.add(w + 1)
            # A finalize past its limit ends a finished run: no --resume has anything to do.
            why = ("" if tasks and tasks[0].operator == FINALIZE else "; the job ends so that "
                   "the rank can be replaced: continue with --resume")
            out.extend(Result(uid=t.uid, worker=w, fitness=None, state=EvalState.FAILED,
                              error=f"{timed_out_text(limit)} (rank {w + 1}{why})",
                              batch=tasks[0].uid if batched else -1, t_start=sent,
                              t_end=time.time())
                       for t in tasks)
            self.halt = self.halt or f"eval_timeout:rank {w + 1}"
        return out

    def _answer_reports(self) -> None:
        """Send each waiting worker its DECISION at once: it holds its training until then."""
        while True:
            msg = self.comm.improbe(self._any_source, TAG_REPORT, self._status)
            if msg is None:
                return
            source = self._status.Get_source()
            uid, step, value = msg.recv()
            self._crew.send(self.comm, self.decide_report(uid, step, value), source,
                            TAG_DECISION)

    def close(self) -> None:
        """Stop every worker; ranks still busy after ``drain_timeout`` s are left to run_rank."""
        stop_workers(self.comm, self.drain_timeout)


def _ranks_text(ranks: list[int], shown: int = 8) -> str:
    text = ", ".join(str(r) for r in ranks[:shown])
    return text + (", …" if len(ranks) > shown else "")


# -- every rank ----------------------------------------------------------------------------

_coordinating = False
_ranks_on_node = 1
"""Ranks sharing rank 0's node (set by ``run_rank``): more than its cores and rank 0's own
waits yield the core too."""


def coordinating() -> bool:
    """True on rank 0 inside ``run_rank``: the CLI's run is then the coordinator's run."""
    return _coordinating


def run_rank(coordinate: Callable[[], int], drain_timeout: float = 10.0) -> int:
    """Run this rank's part of an MPI job; ``coordinate()`` is rank 0's run (an exit code).

    Worker ranks serve until rank 0 stops them and return 0. On rank 0, bad input
    (an InputError, exit code 2) first stops the workers, then propagates to the CLI; any
    other exception prints its traceback and aborts the whole job with code 1, because a
    coordinator that is gone would otherwise leave every worker waiting forever.
    """
    # A worker rank ignores stop signals from its first line on (evo_engine.job.startup):
    # rank 0, which gets them too, stops it once MPI is up, so no rank leaves (or dies of the
    # signal) while the others wait for it in MPI_Init.
    with mpi_init_guard():  # after an early stop: never wait there for a rank it killed
        MPI = _mpi()
        comm = MPI.COMM_WORLD
        local_rank, local_size = node_local_rank(comm)
    global _ranks_on_node
    _ranks_on_node = local_size
    # At exit CPython puts the default action back for every signal with a Python handler
    # (the CLI's, restored after the run), and mpi4py's MPI_Finalize runs after that: a rank
    # waiting there for the others (a worker that said goodbye while another still drains)
    # died of a second stop signal (exit 15, the store left "running"). The run's stop is
    # already being acted on by then; from the exit handlers on, a stop signal is ignored.
    atexit.register(_ignore_stop_signals)
    if comm.Get_rank() != COORDINATOR:
        return _guarded(comm, lambda: worker_main(comm, local_rank, local_size))
    global _coordinating
    _coordinating = True
    try:
        code = coordinate()
    except (InputError, KeyboardInterrupt, SystemExit) as exc:
        bad_input = isinstance(exc, InputError)
        # A stop (a signal before the run loop: KeyboardInterrupt) that cannot stop every
        # worker in time still ends the job as stopped, resumable.
        _finish(comm, drain_timeout, EXIT_BAD_INPUT if bad_input else
                EXIT_STOPPED if isinstance(exc, KeyboardInterrupt) else EXIT_INTERNAL,
                f"evo_engine: error: {exc}" if bad_input else None)
        raise
    except BaseException:
        traceback.print_exc()
        print("evo_engine: internal error (a bug in evo_engine); please report it with the "
              "traceback above; aborting the MPI job", file=sys.stderr, flush=True)
        _abort(comm, EXIT_INTERNAL)
    _finish(comm, drain_timeout, code or EXIT_INTERNAL, None, finished=code == 0)
    return code


LEAVE_GRACE = 0.5
"""Seconds rank 0 waits after ``MPI_Finalize`` for worker ranks it cannot see (on another
node) to exit before it exits non-zero itself."""
LEAVE_TIMEOUT = 5.0
"""At most this long for the worker processes on rank 0's node to be gone."""


def leave_last(timeout: float = LEAVE_TIMEOUT) -> None:
    """On rank 0, about to exit non-zero (3 or 2) after its workers said goodbye: finalize MPI,
    then wait until the worker processes have exited. MPICH's launcher kills every rank still
    running when one exits non-zero, and the job's exit code is then that kill's (9, with a
    "BAD TERMINATION" banner), not rank 0's: a race the ordinary exit usually won by its
    slower clean-up and an ``os._exit`` after a stop lost about one time in three. Workers
    on this node are waited for by pid (bounded by ``timeout``), others for ``LEAVE_GRACE``."""
    MPI = sys.modules.get("mpi4py.MPI")
    if MPI is None or not MPI.Is_initialized() or MPI.Is_finalized():
        return
    crew = _crew
    MPI.Finalize()
    if crew is None:
        return
    host = socket.gethostname()
    pids = {pid for h, pid in crew.processes.values() if h == host}
    elsewhere = len(crew.processes) > len(pids)
    end = time.monotonic() + timeout
    while pids and time.monotonic() < end:
        pids = {pid for pid in pids if _running(pid)}
        if pids:
            time.sleep(0.01)
    if elsewhere:
        time.sleep(LEAVE_GRACE)


def _running(pid: int) -> bool:
    """Whether process ``pid`` still runs. An exited worker stays a zombie until the launcher's
    proxy reaps it (Hydra's does so only at the end), and its exit status is fixed by then."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rpartition(b")")[2].split()[0] not in (b"Z", b"X")
    except FileNotFoundError:
        return False
    except (OSError, IndexError):  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except OSError:
            return True
        return True


def _finish(comm: Comm, timeout: float, abort_code: int, message: str | None,
            finished: bool = False) -> None:
    """Stop the workers; if some never say goodbye, abort the job rather than hang in Finalize.

    A run that ``finished`` (code 0) while the only ranks missing are stuck past
    ``eval_timeout_s`` (a finalize that timed out: FAILED and recorded, as with local workers)
    is aborted with code 0: those ranks are expected to be missing, no internal error."""
    missing = stop_workers(comm, timeout)
    if not missing:
        return
    if finished and set(missing) <= _crew_of(comm).stuck:
        abort_code = 0
    if message:
        print(message, file=sys.stderr)
    print(f"evo_engine: {len(missing)} worker rank(s) still busy after {timeout:.0f} s "
          f"(ranks {_ranks_text(missing)}); aborting the MPI job", file=sys.stderr, flush=True)
    _abort(comm, abort_code)


def _abort(comm: Comm, code: int) -> NoReturn:
    """End every rank of the job now. MPI_Abort may return before the launcher's kill lands,
    so this process leaves at once instead of running on (into a second error report).

    What this rank wrote last (the traceback, the reason) is first left to the launcher: its
    proxy reads a rank's output from a pipe and drops what it has not read when the abort
    kills the job, which lost the whole report about one time in twenty (MPICH, 2 cores)."""
    let_the_launcher_read()
    comm.Abort(code)
    os._exit(code)


DRAIN_TIMEOUT = 2.0
"""At most this long for the launcher to read what this rank wrote before it aborts the job."""


def let_the_launcher_read(timeout: float = DRAIN_TIMEOUT, fds: tuple[int, ...] = (1, 2)) -> None:
    """Flush stdout and stderr, then wait until whatever reads them (the MPI launcher's proxy,
    through a pipe) has read every byte of ``fds``, for at most ``timeout`` seconds. Output that goes
    to a file or a terminal is not waited for: nothing there is lost to a kill."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    end = time.monotonic() + timeout
    for fd in fds:
        while unread_bytes(fd) and time.monotonic() < end:
            time.sleep(0.005)


def unread_bytes(fd: int) -> int:
    """Bytes written to pipe ``fd`` that its reader has not read yet; 0 when ``fd`` is not a
    pipe or the platform cannot tell."""
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return 0
        buf = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    except (OSError, ValueError):
        return 0
    return int.from_bytes(buf, sys.byteorder, signed=True)


def _guarded(comm: Comm, body: Callable[[], int]) -> int:
    """Run a worker rank; an error outside the objective (MPI, pickling) aborts the job."""
    try:
        return body()
    except BaseException:
        host = socket.gethostname()
        print(f"evo_engine: worker rank {comm.Get_rank()} on {host} failed outside its "
              "objective; aborting the MPI job", file=sys.stderr)
        traceback.print_exc()
        sys.stderr.flush()
        _abort(comm, EXIT_INTERNAL)


__all__ = ["Backoff", "MPITransport", "bind_device", "coordinating", "leave_last",
           "let_the_launcher_read", "node_local_rank", "result_from_message", "result_message",
           "run_rank", "share_cores", "stop_workers", "task_from_message", "task_message",
           "unread_bytes", "worker_main"]
