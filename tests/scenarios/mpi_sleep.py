"""Test scenario for the MPI transport: short sleeps, planned failures, two islands that migrate.

Every ninth evaluation (by uid) raises, so failures are deterministic. The metrics tell the
test which rank ran an evaluation, on which device, and how often that worker's persistent
cache had been used before. ``EVO_TEST_SLEEP`` scales the sleep (seconds, default 0.005).
"""

import os
import random
import time

from evo_engine import Float, Space
from evo_engine.scenario import Scenario

SLEEP = float(os.environ.get("EVO_TEST_SLEEP", "0.005"))


def objective(params, ctx):
    ctx.cache["calls"] = ctx.cache.get("calls", 0) + 1
    time.sleep(SLEEP * random.Random(ctx.seed).uniform(0.5, 1.5))
    if ctx.uid % 9 == 4:
        raise RuntimeError(f"planned failure of uid {ctx.uid}")
    return {
        "fitness": (params["x"] - 0.3) ** 2 + (params["y"] - 0.7) ** 2,
        "rank": ctx.rank,
        "on_cpu": float(ctx.device == "cpu"),
        "worker_calls": ctx.cache["calls"],
    }


def make_scenario(preset):
    return Scenario(
        name="mpi_sleep",
        space=Space(x=Float(0, 1), y=Float(0, 1)),
        objective=objective,
        islands=2,
        population_size=4,
        migration_interval=3,
        migrants=1,
        max_evals=60,
        seed=1,
        workers=2,
    )
