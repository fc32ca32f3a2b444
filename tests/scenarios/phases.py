"""Test scenario: every phase a batch log should show, each long enough to be seen.

``prepare`` (data preparation) and ``finalize`` (the final retraining of the best) sleep
PHASES_SLEEP seconds each; ``finalize`` returns a dozen metrics (a compact summary shows a few
and writes the rest to RUN_DIR/final_metrics.csv).
"""

import os
import time

from evo_engine import Float, Space
from evo_engine.scenario import Scenario


def _pause() -> None:
    time.sleep(float(os.environ.get("PHASES_SLEEP", "0.3")))


def objective(params, ctx):
    return {"fitness": (params["x"] - 0.3) ** 2}


def final_test(params, ctx):
    _pause()
    metrics = {f"test_metric_{i:02d}": float(i) for i in range(10)}
    return {"test_fitness": (params["x"] - 0.3) ** 2, "test_rmse": 0.5, **metrics}


def make_scenario(preset):
    return Scenario(
        name="phases",
        space=Space(x=Float(0.0, 1.0)),
        objective=objective,
        prepare=_pause,
        finalize=final_test,
        islands=1,
        population_size=4,
        operator="ga",
        max_evals=12,
        seed=0,
        workers=1,
    )
