"""Test scenario: a fast deterministic objective that leaves a completion marker per evaluation.

The marker (``scratch/uid-N/done`` holding the wall time the objective finished) lets the
kill -9 tests check that a finished evaluation became durable within about a second.
Environment knobs: QUICK_SLEEP (seconds per evaluation), QUICK_EVALS (budget),
QUICK_LOAD_DELAY (seconds a worker process takes to load the scenario: a slow worker start).
"""

import os
import random
import time

from evo_engine import Categorical, Float, Int, Space
from evo_engine.scenario import Scenario


def quick(params, ctx):
    rng = random.Random(ctx.seed)
    time.sleep(float(os.environ.get("QUICK_SLEEP", "0.01")) * rng.uniform(0.5, 1.5))
    fitness = (params["x"] - 0.2) ** 2 + 0.01 * abs(params["n"] - 3) + (params["c"] != "b") * 0.1
    # Written then renamed: a kill -9 never leaves a half-written marker behind.
    tmp = ctx.scratch_dir / "done.tmp"
    tmp.write_text(repr(time.time()))
    tmp.replace(ctx.scratch_dir / "done")
    return {"fitness": fitness, "noise": rng.random()}


def make_scenario(preset):
    import multiprocessing

    if multiprocessing.parent_process() is not None:  # a local worker loading its objective
        time.sleep(float(os.environ.get("QUICK_LOAD_DELAY", "0")))
    return Scenario(
        name="quick",
        space=Space(x=Float(1e-3, 1.0, log=True), n=Int(1, 6), c=Categorical(["a", "b", "c"])),
        objective=quick,
        islands=2,
        population_size=4,
        operator=os.environ.get("QUICK_OPERATOR", "ga"),
        max_evals=int(os.environ.get("QUICK_EVALS", "120")),
        checkpoint_every=int(os.environ.get("QUICK_CHECKPOINT", "10")),
        migration_interval=4,
        seed=5,
    )
