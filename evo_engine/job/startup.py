"""Stop signals before the run loop: from the first line of ``python -m evo_engine`` on.

Importing torch, loading the scenario, preparing data and starting workers take seconds. A
SIGTERM, SIGINT or SIGUSR1 in that time (a walltime signal, a preempted job, Ctrl-C) must not
kill the process with 143 and leave half-made files: until the run loop installs its own
handler (``evo_engine.job.run.StopFlag``), these signals raise ``StopBeforeStart`` wherever the
main thread is, every ``finally`` runs, and the command exits 3. Everything written before the
loop is safe to abandon at any instant (the store is created under a temporary name and
renamed into place), so the same command, with ``--resume`` when ``RUN_DIR/run.zarr``
exists, continues or starts the run.

Under ``mpiexec`` (which forwards SIGINT, SIGTERM and SIGUSR1 to every rank) rank 0 alone
acts on a stop, and only once MPI is up: a rank that left before MPI started would leave the
others waiting in ``MPI_Init`` forever, and one that died of the signal would make the launcher
end the job with the signal's number (15, 10) instead of 3. So from the first line on, worker
ranks ignore the stop signals (rank 0 stops them with its ordinary STOP message), and rank 0
only records a stop until its MPI has started (``mpi_started``, about a second: the imports
and ``MPI_Init``); then it raises, the workers are stopped, and the job exits 3.

Only the standard library (and the launcher variables of evo_engine.transports.launch) is
imported here: this module runs before anything slow.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType
from typing import Any

from evo_engine.util.signals import SIGNALS

_state = {"raising": False, "stopped": False, "command_line": False, "deferred": False,
          "clean": False, "raised": False}


class StopBeforeStart(KeyboardInterrupt):  # noqa: N818 - an interruption, like its base
    """A stop signal arrived before the run loop began: exit 3, nothing recorded is lost."""

    def __init__(self, signame: str) -> None:
        super().__init__(signame)
        self.signame = signame


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    if _state["raising"]:
        if _state["deferred"]:  # rank 0 of an MPI job before its MPI started: mpi_started raises
            _state["stopped"] = _state["stopped"] or signal.Signals(signum).name
            _noted(signum, frame)
            return
        _state["stopped"] = signal.Signals(signum).name
        _state["raised"] = True  # inside whatever code ran: it may come out as another error
        if _state.get("command_line"):
            _quiet_aftermath()
        raise StopBeforeStart(signal.Signals(signum).name)


SIGNAL_SHAPED = (ImportError, SystemError)
"""What a stop signal raised inside C code can come out as: an extension module's failed
import (numpy: "PyCapsule_Import could not import module datetime") or a C function that
returned an error without setting one. Other errors after a stop are bugs, reported as such."""


def interruption(exc: BaseException) -> StopBeforeStart | None:
    """The stop behind ``exc``: itself, one in its chain, or, once a stop signal has been
    raised inside running code, an error of a kind the signal itself can cause
    (``SIGNAL_SHAPED``), anywhere in the chain. Any other error is not turned into a stop
    (exit 3 would hide a bug), nor is any error after a stop that was only recorded (rank 0
    of an MPI job before its MPI started: nothing was interrupted)."""
    seen: set[int] = set()
    shaped = False
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, StopBeforeStart):
            return cur
        shaped = shaped or isinstance(cur, SIGNAL_SHAPED)
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    if _state["raised"] and shaped:
        return StopBeforeStart(str(_state["stopped"]))
    return None


def _quiet_aftermath() -> None:
    """Silence what the interruption itself leaves behind in a process about to exit 3.

    A signal can land inside a library's half-built object (zarr's event loop, a coroutine not
    yet awaited); when it is collected, Python prints an "Exception ignored" traceback or a
    RuntimeWarning that would read like a crash after the clean exit-3 message.
    """
    import sys
    import warnings

    sys.unraisablehook = lambda unraisable: None
    warnings.simplefilter("ignore")


def stopped_early() -> bool:
    """Whether a stop signal interrupted the start (``python -m evo_engine`` then leaves
    without the interpreter's exit handlers: an interrupted zarr call can leave its event
    loop in a state whose clean-up would print a traceback after the exit-3 message). Not
    when rank 0 of an MPI job raised its stop at the clean point ``mpi_started``: it ends
    the ordinary way, after its worker ranks (MPICH's launcher kills the ranks still running
    when one exits non-zero, and the job's code is then theirs: 9)."""
    return bool(_state["stopped"]) and not _state["clean"]


def _rank_other_than_0() -> bool:
    # The launchers' rank variables say which rank this is before mpi4py is imported.
    from evo_engine.transports.launch import worker_rank

    return worker_rank()


def _several_ranks() -> bool:
    from evo_engine.transports.launch import launched_with_several_ranks

    return launched_with_several_ranks()


def _noted(signum: int, frame: FrameType | None) -> None:
    """A worker rank before it serves: the stop is rank 0's to act on; noted only so that this
    rank does not wait in MPI_Init for a rank the signal killed (``mpi_init_guard``)."""
    from evo_engine.transports.launch import note_early_stop

    note_early_stop()


def install(command_line: bool = False) -> dict[int, Any]:
    """Make stop signals raise ``StopBeforeStart`` (idempotent; the first thing the CLI does).

    Under ``mpiexec`` (module docstring): a worker rank ignores them until it serves and from
    then on (``evo_engine.transports.mpi.worker_main``): rank 0 stops it. Rank 0 records a stop
    until ``mpi_started`` and raises it there. After a stop, no rank waits in ``MPI_Init`` for
    more than ``EARLY_STOP_TIMEOUT`` s (a rank that died of the signal before this line ran;
    ``evo_engine.transports.launch.mpi_init_guard``). A Python handler on a worker rank would be of no
    use: it runs only once the rank returns from C, which a rank waiting in ``MPI_Init`` does
    only when rank 0 is there too; and leaving (or dying) before rank 0 has stopped the others
    is what made the job exit 15 or 10, or hang.
    """
    previous: dict[int, Any] = {}
    if _rank_other_than_0():
        for name in SIGNALS:
            sig = getattr(signal, name, None)
            if sig is not None:
                previous[sig] = signal.signal(sig, _noted)
        return previous
    if not (_state["raising"] and _state["deferred"]):
        # A new start forgets an old stop; a stop recorded before MPI started is kept (the
        # CLI installs again, after its imports, what __main__ installed first).
        _state["stopped"] = False
        _state["clean"] = False
        _state["raised"] = False
        _state["deferred"] = _several_ranks()
    _state["raising"] = True
    if command_line:
        _state["command_line"] = True  # python -m evo_engine: the process ends with the run
    for name in SIGNALS:
        sig = getattr(signal, name, None)
        if sig is not None:
            previous[sig] = signal.signal(sig, _raise_stop)
    return previous


def mpi_started() -> None:
    """Rank 0's MPI is up (or there is no MPI): a stop recorded meanwhile is raised now, and
    from here on a stop signal raises at once. Rank 0 then stops the worker ranks with its
    ordinary STOP message (``evo_engine.transports.mpi.run_rank``) and the job exits 3."""
    if not _state["deferred"]:
        return
    _state["deferred"] = False
    if _state["raising"] and _state["stopped"]:
        # Raised here, at a clean point: nothing was interrupted, so the process ends the
        # ordinary way (stopped_early). A second signal while the workers are being stopped
        # must not interrupt that: it is only recorded.
        _state["raising"] = False
        _state["clean"] = True
        raise StopBeforeStart(str(_state["stopped"]))


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Stop signals wait until the block ends (blocked in this thread and in the threads and
    processes it starts meanwhile, which keep them blocked): an object the block makes is
    bound to its name before a signal can interrupt (the store's writer, whose process must
    be stopped with the run). Where signals cannot be blocked, nothing changes. A long wait
    inside the block must let them through itself and clean up when one raises (the writer's
    start does: ``store/writer_process._readable_unless_stopped``), so none is held for
    more than the few milliseconds between the waits."""
    block = getattr(signal, "pthread_sigmask", None)
    if block is None:
        yield
        return
    wanted = {getattr(signal, name) for name in SIGNALS if hasattr(signal, name)}
    old = block(signal.SIG_BLOCK, wanted)
    try:
        yield
    finally:
        block(signal.SIG_SETMASK, old)


def restore(previous: dict[int, Any]) -> None:
    """Put back the handlers ``install`` replaced (for callers of the CLI in a process)."""
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def started() -> None:
    """The run loop's own handler is taking over: a signal no longer raises from here on.

    Called once the workers are up; whatever handler is restored later (after the run) only
    records the signal, since the run has by then written everything and is ending anyway.
    """
    _state["raising"] = False
    _state["deferred"] = False


def message(stop: StopBeforeStart) -> str:
    """What to tell the user (said once per job: empty on MPI ranks other than 0)."""
    if _rank_other_than_0():
        return ""
    return (f"evo_engine: stopped by {stop.signame} before the run got going; nothing recorded "
            "was lost: run the same command again (with --resume when RUN_DIR/run.zarr exists)")


__all__ = ["SIGNALS", "StopBeforeStart", "held", "install", "interruption", "message",
           "mpi_started", "restore", "started"]
