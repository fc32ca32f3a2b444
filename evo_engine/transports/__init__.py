"""How tasks reach workers: inline (in-process), local processes, MPI ranks, and the worker
loop they share. ``mpi.py`` is the only module that imports mpi4py."""
