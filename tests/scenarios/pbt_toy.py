"""Test scenario: population-based training of a one-number "model" with checkpoints.

The "weights" w start at 0 and each step of training moves them towards 1 by a fraction that
the learning rate sets (too high overshoots); fitness = (w - 1)^2. Each interval loads
``ctx.checkpoint_load`` (a JSON file) and saves ``ctx.checkpoint_save`` atomically, as a real
trainer does. The saved state names the interval that wrote it, so the metric ``loaded`` says
whose checkpoint an interval really started from (-1: fresh weights), and ``rank`` which MPI
rank ran it. Environment knobs: PBT_EVALS (budget), PBT_SLEEP (seconds per interval),
PBT_NO_SAVE=1 (the objective forgets to save: every interval FAILED).
"""

import json
import os
import time

from evo_engine import Float, Int, Space
from evo_engine.context import CheckpointMissing
from evo_engine.scenario import Scenario


def train(params, ctx):
    time.sleep(float(os.environ.get("PBT_SLEEP", "0")))
    w, loaded = 0.0, -1
    if ctx.checkpoint_load is not None:
        if not ctx.checkpoint_load.exists():
            raise CheckpointMissing(f"{ctx.checkpoint_load} does not exist")
        state = json.loads(ctx.checkpoint_load.read_text())
        assert state["step"] == ctx.start_step, (state, ctx.start_step)
        w, loaded = state["w"], state["uid"]
    rate = min(params["lr"] * 10 * params["k"], 1.9)
    for _ in range(ctx.start_step, ctx.stop_step):
        w += rate * (1.0 - w)
    if os.environ.get("PBT_NO_SAVE") != "1":
        ctx.checkpoint_save.parent.mkdir(parents=True, exist_ok=True)
        tmp = ctx.checkpoint_save.with_suffix(".tmp")
        tmp.write_text(json.dumps({"w": w, "step": ctx.stop_step, "uid": ctx.uid}))
        os.replace(tmp, ctx.checkpoint_save)
    return {"fitness": (w - 1.0) ** 2, "w": w, "loaded": loaded, "rank": ctx.rank}


def make_scenario(preset):
    return Scenario(
        name="pbt_toy",
        space=Space(lr=Float(1e-3, 1e-1, log=True), k=Int(1, 3)),
        objective=train,
        islands=2,
        population_size=4,
        max_evals=int(os.environ.get("PBT_EVALS", "40")),
        checkpoint_every=5,
        migration_interval=2,
        seed=3,
        pbt=dict(interval=2, quantile=0.25, explore="perturb", fixed=("k",)),
    )
