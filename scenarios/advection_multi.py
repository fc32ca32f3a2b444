"""1D advection (β = 4): choose the model (U-Net or FNO) and tune its training, jointly.

Searches the architecture (``model``; ``init_features`` for the U-Net, ``width`` and ``modes``
for the FNO — the other model's parameters are ignored), the optimiser (learning rate, weight
decay), the StepLR schedule (step size, γ) and the batch size. Fitness: the mean of validation
RMSE, nRMSE, bRMSE and cRMSE (lower is better); test metrics of the best at the end.

    python -m evo_engine scenarios/advection_multi.py [--preset full]

Presets (``evo_engine.sciml.presets``): "cpu" = 200 FV trajectories read at 128 × 41, 20 epochs
(about 20–60 s of CPU per evaluation, 40 evaluations); "full" = 10,000 FV trajectories of
PDEBench's recipe read at 256 × 41, 500 epochs. Data as in ``advection_lr.py`` (``EVO_ENGINE_DATA_DIR``,
``EVO_ENGINE_ADVECTION_FILE``).
"""

from __future__ import annotations

import functools

from evo_engine import Categorical, Float, Int, Space
from evo_engine.scenario import Scenario
from evo_engine.sciml.presets import advection_task
from evo_engine.sciml.training import advection_test_metrics, prepare_advection, train_advection


def make_scenario(preset: str) -> Scenario:
    """The joint model/optimiser search for ``preset`` ("cpu" or "full")."""
    task = advection_task(preset)
    full = preset == "full"
    space = Space(
        model=Categorical(["unet", "fno"]),
        lr=Float(1e-4, 1e-1, log=True),
        weight_decay=Float(1e-7, 1e-2, log=True),
        scheduler_step=Int(10, 500, log=True) if full else Int(1, task.epochs),
        scheduler_gamma=Float(0.1, 1.0),
        batch_size=Int(10, 200, log=True) if full else Int(8, 64, log=True),
        # Capped on the cpu preset so that one evaluation stays well under a minute.
        init_features=Int(8, 64, log=True) if full else Int(4, 16, log=True),
        width=Int(8, 128, log=True) if full else Int(8, 48, log=True),
        modes=Int(4, 32),
    )
    return Scenario(
        name="advection_multi",
        space=space,
        objective=functools.partial(train_advection, task=task),
        prepare=functools.partial(prepare_advection, task),
        finalize=functools.partial(advection_test_metrics, task=task),
        islands=2,
        population_size=16 if full else 8,
        operator="ga",
        max_evals=512 if full else 40,
        seed=0,
        workers=None if full else 2,
        migration_interval=8 if full else 4,
    )
