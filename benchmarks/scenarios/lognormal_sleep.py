"""Benchmark scenario: each evaluation sleeps a lognormal time drawn from its task seed.

Used by ``benchmarks/utilization.py``. The duration is a pure function of the task seed, and
the seed of evaluation ``uid`` is a pure function of the run seed and ``uid``, so an
asynchronous and a ``--sync`` run draw the same durations in the same order. Settings come
from the environment (mpiexec passes it to every rank): ``EVO_BENCH_MEAN_SECONDS`` (1.0),
``EVO_BENCH_SIGMA`` (0.5, in log space), ``EVO_BENCH_ISLANDS`` (1) and
``EVO_BENCH_POPULATION`` (32).
"""

import math
import os
import time

import numpy as np

from evo_engine import Float, Space
from evo_engine.scenario import Scenario

MEAN = float(os.environ.get("EVO_BENCH_MEAN_SECONDS", "1.0"))
SIGMA = float(os.environ.get("EVO_BENCH_SIGMA", "0.5"))


def drawn_duration(seed: int, mean: float = MEAN, sigma: float = SIGMA) -> float:
    """The evaluation time for a task seed: lognormal with the given mean and log-space σ."""
    mu = math.log(mean) - sigma**2 / 2  # so that E[duration] = mean
    return float(np.random.default_rng(seed).lognormal(mu, sigma))


def fitness(params: dict) -> float:
    return (params["x"] - 0.3) ** 2 + (params["y"] - 0.7) ** 2


def objective(params, ctx):
    time.sleep(drawn_duration(ctx.seed))
    return fitness(params)


def make_scenario(preset):
    return Scenario(
        name="lognormal_sleep",
        space=Space(x=Float(0, 1), y=Float(0, 1)),
        objective=objective,
        islands=int(os.environ.get("EVO_BENCH_ISLANDS", "1")),
        population_size=int(os.environ.get("EVO_BENCH_POPULATION", "32")),
        max_evals=320,
        seed=0,
    )
