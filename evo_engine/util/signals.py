"""The signals that stop a run gracefully: a walltime warning, a preemption, Ctrl-C.

Standard library only: the start-up handlers (``evo_engine.job.startup``) and the store's
writer process (``evo_engine.store.writer_process``) both need the names before anything slow
is imported.
"""

SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1")
