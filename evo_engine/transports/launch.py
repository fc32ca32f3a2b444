"""Was this process started by mpiexec (or srun) as one of several ranks? Answered without MPI.

Importing mpi4py initialises MPI, which is slow and, outside a launcher, may start a singleton
MPI environment or fail on a login node. So the decision "MPI transport or local workers" is
made from the environment variables the common launchers set, and mpi4py is imported only
when there really are several ranks.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

# World-size variables, launcher by launcher: MPICH's Hydra, Intel MPI and srun with PMI-1/2
# set PMI_SIZE; Open MPI sets OMPI_COMM_WORLD_SIZE; MVAPICH2 sets MV2_COMM_WORLD_SIZE.
SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def mpi_world_size(environ: Mapping[str, str] | None = None) -> int:
    """Number of ranks in the MPI job that started this process; 1 when not under a launcher.

    ``srun --mpi=pmix`` sets no size variable of its own, only ``PMIX_RANK``; inside such a
    step Slurm's ``SLURM_STEP_NUM_TASKS`` is the world size. ``SLURM_NTASKS`` alone is not
    used: it is also set in a batch script that runs plain ``python``.
    """
    env = os.environ if environ is None else environ
    for name in SIZE_VARIABLES:
        size = _as_int(env.get(name))
        if size is not None:
            return size
    if "PMIX_RANK" in env:
        size = _as_int(env.get("SLURM_STEP_NUM_TASKS"))
        if size is not None:
            return size
    return 1


def launched_with_several_ranks(environ: Mapping[str, str] | None = None) -> bool:
    """True when the MPI transport should be used (more than one rank)."""
    return mpi_world_size(environ) > 1


RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK", "PMIX_RANK")


def srun_tasks_without_pmi(environ: Mapping[str, str] | None = None) -> int:
    """The tasks of the ``srun`` step this process is one of, when there are several and no
    process manager interface (``--mpi=pmix``/``pmi2``, or Slurm's ``MpiDefault``) told them
    they are ranks of one MPI job; else 0. Each such task would take itself for a whole run."""
    env = os.environ if environ is None else environ
    tasks = _as_int(env.get("SLURM_STEP_NUM_TASKS"))
    if tasks is None or tasks < 2 or "SLURM_STEP_ID" not in env:
        return 0
    if any(name in env for name in (*SIZE_VARIABLES, *RANK_VARIABLES)):
        return 0
    return tasks


def worker_rank(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the launcher says this process is a rank other than 0 (known before MPI starts)."""
    env = os.environ if environ is None else environ
    for name in RANK_VARIABLES:
        value = env.get(name, "").strip()
        if value.isdigit():
            return int(value) != 0
    return False


def usable_cores() -> int:
    """The cores this process may run on: its affinity mask (a Slurm allocation, a launcher's
    binding, ``taskset``), not the whole machine's, which ``os.cpu_count()`` counts."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # pragma: no cover - no affinity API (macOS)
        return max(os.cpu_count() or 1, 1)


def _as_int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        value = int(text.strip())
    except ValueError:
        return None
    return value if value >= 1 else None


EARLY_STOP_TIMEOUT = 20.0
"""Seconds ``MPI_Init`` may take on a rank that got a stop signal before it (``mpi_init_guard``)."""

_early = {"stop": False}
_sink: list[Any] = []


def note_early_stop() -> None:
    """A stop signal came before MPI started (evo_engine.job.startup's handlers say so)."""
    _early["stop"] = True


@contextlib.contextmanager
def mpi_init_guard(timeout: float = EARLY_STOP_TIMEOUT) -> Iterator[None]:
    """Around ``MPI_Init`` on every rank: after a stop signal that came before it, the rank
    does not wait in it for more than ``timeout`` s.

    Under mpiexec a stop is acted on by rank 0 once MPI is up (worker ranks only note it). But
    a signal in a job's first ~0.1 s can kill a rank still in Python's own start-up, before
    evo_engine's first line, while another rank has already noted it and goes on into
    ``MPI_Init``, where it would wait for the dead one forever (the launcher does not end the
    job then). No Python code runs there (mpi4py holds the GIL in ``MPI_Init``); faulthandler's
    watchdog is a C thread: it ends the process (exit 1) and the launcher ends the job.
    """
    armed = False
    if _early["stop"]:
        import faulthandler

        if not _sink:
            _sink.append(open(os.devnull, "w"))  # noqa: SIM115 - kept open for the C thread
        faulthandler.dump_traceback_later(timeout, exit=True, file=_sink[0])
        armed = True
    try:
        yield
    finally:
        if armed:
            import faulthandler

            faulthandler.cancel_dump_traceback_later()


__all__ = ["EARLY_STOP_TIMEOUT", "RANK_VARIABLES", "SIZE_VARIABLES",
           "launched_with_several_ranks", "mpi_init_guard", "mpi_world_size", "note_early_stop",
           "srun_tasks_without_pmi", "usable_cores", "worker_rank"]
