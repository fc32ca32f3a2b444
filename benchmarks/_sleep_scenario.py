"""Benchmark scenario: an objective that sleeps a lognormal time drawn from the task seed.

Knobs (environment): BENCH_MEAN (seconds, default 0.2), BENCH_SIGMA (log-space σ, 0.5),
BENCH_EVALS (budget), BENCH_CHECKPOINT (results between snapshots), BENCH_DIM (parameters).
"""

import math
import os
import time

import numpy as np

from evo_engine import Float, Space
from evo_engine.scenario import Scenario


def duration(seed: int) -> float:
    mean = float(os.environ.get("BENCH_MEAN", "0.2"))
    sigma = float(os.environ.get("BENCH_SIGMA", "0.5"))
    # A lognormal with this mean: mu = log(mean) - sigma^2 / 2.
    return float(np.random.default_rng(seed).lognormal(math.log(mean) - sigma**2 / 2, sigma))


def sleeper(params, ctx):
    time.sleep(duration(ctx.seed))
    return sum((v - 0.5) ** 2 for v in params.values())


def make_scenario(preset):
    dim = int(os.environ.get("BENCH_DIM", "10"))
    return Scenario(
        name="bench_sleep",
        space=Space({f"x{i}": Float(0.0, 1.0) for i in range(dim)}),
        objective=sleeper,
        islands=4,
        population_size=16,
        operator="ga",
        max_evals=int(os.environ.get("BENCH_EVALS", "640")),
        checkpoint_every=int(os.environ.get("BENCH_CHECKPOINT", "50")),
        seed=0,
    )
