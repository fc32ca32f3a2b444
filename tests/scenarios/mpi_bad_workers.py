"""Test scenario that loads on rank 0 but raises on every other MPI rank (a worker-side error)."""

import os

from evo_engine import Float, Space
from evo_engine.scenario import Scenario

if os.environ.get("PMI_RANK", "0") != "0":
    raise FileNotFoundError("training data missing on this node (planned)")


def make_scenario(preset):
    return Scenario(name="mpi_bad_workers", space=Space(x=Float(0, 1)),
                    objective=lambda params, ctx: params["x"], max_evals=10)
