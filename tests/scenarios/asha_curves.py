"""Test scenario for early stopping: synthetic learning curves reported step by step, ASHA on.

The curve of a configuration falls towards ``final = (x - 0.3)² + 0.1`` as
``final + 0.5 / step``, so the rung values rank configurations as their final values do.
Each step sleeps ``ASHA_SLEEP`` seconds (default 0.002); the objective reports every step and
stops when told to. Knobs: ASHA_EVALS (budget), ASHA_CHECKPOINT (snapshot interval).
"""

import os
import time

from evo_engine import Float, Space
from evo_engine.scenario import Scenario

STEPS = 9


def curve_value(x, step):
    final = (x - 0.3) ** 2 + 0.1
    return final + 0.5 / step


def objective(params, ctx):
    sleep = float(os.environ.get("ASHA_SLEEP", "0.002"))
    value = 1.0
    for step in range(1, STEPS + 1):
        time.sleep(sleep)
        value = curve_value(params["x"], step)
        ctx.report(step, value)
        if ctx.should_stop():
            break
    return {"fitness": value, "steps": float(step), "rank": float(ctx.rank)}


def make_scenario(preset):
    return Scenario(
        name="asha_curves",
        space=Space(x=Float(0.0, 1.0)),
        objective=objective,
        fitness_name="synthetic curve value",
        islands=2,
        population_size=4,
        operator="ga",
        max_evals=int(os.environ.get("ASHA_EVALS", "40")),
        checkpoint_every=int(os.environ.get("ASHA_CHECKPOINT", "10")),
        migration_interval=4,
        seed=3,
        workers=2,
        pruner="asha",
        eta=3,
        min_steps=1,
        max_steps=STEPS,
    )
