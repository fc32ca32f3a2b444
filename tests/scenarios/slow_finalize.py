"""Test scenario: a quick search whose ``finalize`` can be made slow, to stop it midway.

``finalize`` appends a line to ``$FINALIZE_MARK`` (when set) as it starts, then, if
``$FINALIZE_SIGNAL`` names a signal, sends it to its own process (an inline run stopping
itself), and sleeps ``$FINALIZE_SLEEP`` seconds (default 0) before returning its metric.
"""

import os
import signal
import time

from evo_engine import Float, Space
from evo_engine.scenario import Scenario


def objective(params, ctx):
    return (params["x"] - 0.3) ** 2


def finalize(params, ctx):
    mark = os.environ.get("FINALIZE_MARK")
    if mark:
        with open(mark, "a") as f:
            f.write("started\n")
    name = os.environ.get("FINALIZE_SIGNAL")
    if name:
        os.kill(os.getpid(), getattr(signal, name))
    time.sleep(float(os.environ.get("FINALIZE_SLEEP", "0")))
    return {"test_loss": (params["x"] - 0.3) ** 2}


def make_scenario(preset):
    return Scenario(name="slow_finalize", space=Space(x=Float(0, 1)), objective=objective,
                    finalize=finalize, population_size=4, max_evals=8, seed=3)
