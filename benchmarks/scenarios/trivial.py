"""Benchmark scenario: an objective that returns at once, so only the engine's overhead shows.

Used by ``benchmarks/throughput.py``. ``EVO_BENCH_OPERATOR`` (``ga``), ``EVO_BENCH_ISLANDS`` (1)
and ``EVO_BENCH_POPULATION`` (16) shape the search.
"""

import os

from evo_engine import Float, Space
from evo_engine.scenario import Scenario


def objective(params, ctx):
    return (params["x"] - 0.3) ** 2 + (params["y"] - 0.7) ** 2


def make_scenario(preset):
    return Scenario(
        name="trivial",
        space=Space(x=Float(0, 1), y=Float(0, 1)),
        objective=objective,
        operator=os.environ.get("EVO_BENCH_OPERATOR", "ga"),
        islands=int(os.environ.get("EVO_BENCH_ISLANDS", "1")),
        population_size=int(os.environ.get("EVO_BENCH_POPULATION", "16")),
        max_evals=1000,
        seed=0,
        # At thousands of evaluations per second a snapshot every 50 results would be most of
        # the work; one every few thousand is still one every second or so.
        checkpoint_every=int(os.environ.get("EVO_BENCH_CHECKPOINT_EVERY", "5000")),
    )
