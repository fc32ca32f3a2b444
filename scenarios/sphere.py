"""A cheap synthetic objective on a mixed space: the quick end-to-end check of a setup.

Fitness is a shifted sphere in the natural coordinates of each parameter (log10 for the
learning rate) plus a penalty per activation; each evaluation sleeps a random short time
so that asynchrony is visible. The optimum is lr = 3e-4, layers = 4, activation = "gelu".
"""

from __future__ import annotations

import math
import random
import time

from evo_engine import Categorical, Float, Int, Space
from evo_engine.scenario import Scenario

ACTIVATION_PENALTY = {"relu": 0.3, "leaky_relu": 0.25, "elu": 0.2, "selu": 0.35,
                      "gelu": 0.0, "silu": 0.05, "tanh": 0.6, "sigmoid": 0.9}


def sphere(params: dict, ctx) -> dict:
    rng = random.Random(ctx.seed)
    time.sleep(rng.uniform(0.005, 0.05))
    lr_term = (math.log10(params["lr"]) - math.log10(3e-4)) ** 2
    layers_term = 0.1 * (params["layers"] - 4) ** 2
    act_term = ACTIVATION_PENALTY[params["activation"]]
    return {"fitness": lr_term + layers_term + act_term,
            "lr_term": lr_term, "layers_term": layers_term}


def make_scenario(preset: str) -> Scenario:
    return Scenario(
        name="sphere",
        space=Space(
            lr=Float(1e-6, 1e-1, log=True),
            layers=Int(1, 12),
            activation=Categorical(tree={
                "rectifiers": ["relu", "leaky_relu", "elu", "selu"],
                "smooth": ["gelu", "silu"],
                "saturating": ["tanh", "sigmoid"],
            }),
        ),
        objective=sphere,
        fitness_name="sphere objective (dimensionless)",
        islands=2,
        population_size=8,
        operator="ga",
        max_evals=200,
        seed=0,
        workers=2,
    )
