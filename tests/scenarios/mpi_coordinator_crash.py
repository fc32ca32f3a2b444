"""Test scenario whose ``prepare`` (run on rank 0 only) fails with an unexpected error."""

from evo_engine import Float, Space
from evo_engine.scenario import Scenario


def prepare():
    raise RuntimeError("coordinator crashed on purpose")


def make_scenario(preset):
    return Scenario(name="mpi_coordinator_crash", space=Space(x=Float(0, 1)),
                    objective=lambda params, ctx: params["x"], prepare=prepare, max_evals=10)
