"""Test scenario: the 5th evaluation kills its worker, and the file no longer loads after that.

The objective writes ``$DIES_MARKER`` and ends its own process; with ``DIES_BREAK=1`` a worker
started again loads this file, finds the marker and fails, so the local transport cannot
replace the worker (as when a module or a GPU went away mid-run). Without ``DIES_BREAK`` the
file loads and the evaluation runs normally: the run resumes.
"""

import os
from pathlib import Path

from evo_engine import Float, Space
from evo_engine.scenario import Scenario

MARKER = Path(os.environ.get("DIES_MARKER", "dies.marker"))
if MARKER.exists() and os.environ.get("DIES_BREAK") == "1":
    raise RuntimeError("the environment this scenario needs is gone (simulated)")


def objective(params, ctx):
    if ctx.uid == 4 and not MARKER.exists():
        MARKER.write_text("died")
        os._exit(9)
    return (params["x"] - 0.5) ** 2


def make_scenario(preset):
    return Scenario(name="dies", space=Space(x=Float(0, 1)), objective=objective,
                    population_size=4, max_evals=12, checkpoint_every=2)
