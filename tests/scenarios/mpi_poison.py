"""Test scenario: one configuration kills its MPI rank (and so the whole job) every time.

The objective ``os._exit(9)``s for the task with uid ``$POISON_UID`` (default 3: the 4th
task, a point of the initial design, so every job re-creates it with the same parameters
whatever the order of results). It waits ``$POISON_DELAY`` seconds first (default 0.2, less
than the recorder's 0.5 s flush interval) so that the other worker's quick tasks come back
and only the poison task is in flight when MPICH tears the job down.

``$LONG_UID`` (default none) names a healthy task that sleeps ``$LONG_S`` seconds (default
3): started beside the poison task, it is in flight at the first crash too.
"""

import os
import time

from evo_engine import Float, Space
from evo_engine.scenario import Scenario


def objective(params, ctx):
    if ctx.uid == int(os.environ.get("LONG_UID", "-1")):
        time.sleep(float(os.environ.get("LONG_S", "3")))
    if ctx.uid == int(os.environ.get("POISON_UID", "3")):
        time.sleep(float(os.environ.get("POISON_DELAY", "0.2")))
        os._exit(9)
    return (params["x"] - 0.5) ** 2


def make_scenario(preset):
    return Scenario(name="mpi_poison", space=Space(x=Float(0, 1)), objective=objective,
                    population_size=4, max_evals=6, checkpoint_every=2)
