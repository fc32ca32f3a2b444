"""A cheap two-objective check: accuracy against cost on a mixed space, with a memory limit.

"error" falls as the model grows (``width`` and ``layers``) and with a learning rate near
3e-4; "cost" (seconds) grows with the model. "gpu_mem_gb" grows with width and batch size and
must stay at or below 40: larger configurations are recorded infeasible, not failed. The front
runs from small, cheap, less accurate models to large, accurate, costly ones.
"""

from __future__ import annotations

import math
import random
import time

from evo_engine import Categorical, Float, Int, Space
from evo_engine.scenario import Scenario


def accuracy_vs_cost(params: dict, ctx) -> dict:
    rng = random.Random(ctx.seed)
    time.sleep(rng.uniform(0.002, 0.01))
    size = params["width"] * params["layers"]
    lr_term = 0.05 * (math.log10(params["lr"]) - math.log10(3e-4)) ** 2
    error = 1.0 / math.sqrt(size) + lr_term + (0.02 if params["norm"] == "none" else 0.0)
    cost = 0.01 * size * (1.2 if params["norm"] == "batch" else 1.0)
    mem = 0.002 * params["width"] * params["batch"]
    return {"error": error, "cost": cost, "gpu_mem_gb": mem}


def make_scenario(preset: str) -> Scenario:
    return Scenario(
        name="sphere_moo",
        space=Space(
            lr=Float(1e-5, 1e-1, log=True),
            width=Int(8, 512, log=True),
            layers=Int(1, 8),
            batch=Int(8, 256, log=True),
            norm=Categorical(["none", "batch", "layer"]),
        ),
        objective=accuracy_vs_cost,
        objectives=[("error", "min"), ("cost", "min")],
        constraints={"gpu_mem_gb": ("<=", 40)},
        islands=2,
        population_size=12,
        operator="ga",
        max_evals=200,
        seed=0,
        workers=2,
    )
