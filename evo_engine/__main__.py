"""``python -m evo_engine``: see evo_engine.cli.main."""

import sys

# Before anything slow is imported: a stop signal from here on exits 3, not 143.
from evo_engine.job import startup

startup.install(command_line=True)

try:
    from evo_engine.cli.main import main
except BaseException as exc:
    stop = startup.interruption(exc)
    if stop is None:
        raise
    if startup.message(stop):
        print(startup.message(stop), file=sys.stderr)
    sys.exit(3)

code = main()
mpi = sys.modules.get("evo_engine.transports.mpi")
if code != 0 and mpi is not None and mpi.coordinating():
    # Rank 0 of an MPI job leaves after its workers: MPICH's launcher kills the ranks still
    # running when one exits non-zero, and the job's code would then be that kill's, not ours.
    mpi.leave_last()
if code == 3 and startup.stopped_early():
    # Every finally has run and the log is line-buffered: nothing is left to clean up, and
    # the exit handlers of a zarr call the signal interrupted would only print noise.
    import os

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
sys.exit(code)
