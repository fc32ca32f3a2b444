"""1D advection (β = 4): choose the model (U-Net or FNO) and tune its training, jointly.

Searches the architecture (``model``; ``init_features`` for the U-Net, ``width`` and ``modes``
for the FNO: conditional parameters, active only for their model, so a U-Net is never printed
or plotted with an FNO's ``modes``), the optimiser (learning rate, weight
decay), the StepLR schedule (step size, γ) and the batch size. Fitness: the mean of validation
RMSE, nRMSE, bRMSE and cRMSE (lower is better); test metrics of the best at the end.

    python -m evo_engine scenarios/advection_multi.py [--preset full]

Presets (``evo_engine.sciml.presets``, ``docs/sciml-task.md``): "cpu" = 200 FV trajectories
read at 128 × 41, 30 epochs, fitness = the mean of the last 3 epochs (about 50 s of CPU per
evaluation for PDEBench's FNO, 57 s at width 32; 40 evaluations). Configurations rarely share a
stack here (model, widths and batch size all vary), so evaluation is one at a time (``--batch
K`` still batches the ones that match). "full" = 10,000 FV trajectories of
PDEBench's recipe read at 256 × 41, 500 epochs. Data as in ``advection_lr.py`` (``EVO_ENGINE_DATA_DIR``,
``EVO_ENGINE_ADVECTION_FILE``).
"""

from __future__ import annotations

import functools
from collections.abc import Hashable
from typing import Any

from evo_engine import Categorical, Float, Int, Space
from evo_engine.context import Context
from evo_engine.scenario import Scenario
from evo_engine.sciml.batched import advection_batch_key, train_advection_batch
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
        # Capped on the cpu preset so that one evaluation stays well under a minute. Each
        # architecture's own parameters are active only when that model is chosen.
        init_features=Int(8, 64, log=True, when=("model", "unet")) if full
        else Int(4, 16, log=True, when=("model", "unet")),
        width=Int(8, 128, log=True, when=("model", "fno")) if full
        else Int(8, 48, log=True, when=("model", "fno")),
        modes=Int(4, 32, when=("model", "fno")),
    )
    return Scenario(
        name="advection_multi",
        space=space,
        objective=functools.partial(train_advection, task=task),
        fitness_name="validation fitness (mean of RMSE, nRMSE, bRMSE, cRMSE)",
        prepare=functools.partial(prepare_advection, task),
        finalize=functools.partial(advection_test_metrics, task=task),
        # Budgets of 40-512 evaluations: the GP surrogate with a hypertiling design (handing
        # over to the ES when the model stops paying) is best of {TPE, CMA-ES, random, ES} on
        # 4 of 5 reporting landscapes at 100 evaluations, 5 of 5 at 300 and 4 of 5 at 1,000
        # (benchmarks/quality.py, 5 seeds, issue 15; README). One island, so its model learns
        # from every result; the design as large as the first wave of workers.
        islands=1,
        population_size=32 if full else 8,
        operator="surrogate",
        initial_design="hypertiling",
        max_evals=512 if full else 40,
        intensify=3,  # noisy trainings: a new best races the incumbent (docs/noise.md)
        seed=0,
        workers=None if full else 2,
        migration_interval=8 if full else 4,
    )


def objective_batch(params_list: list[dict], ctxs: list[Context]) -> list[Any]:
    """Train several members at once on the worker's device (``--batch K``); one result each."""
    return train_advection_batch(params_list, ctxs, advection_task(ctxs[0].preset))


def batch_key(params: dict) -> Hashable:
    """Members with equal keys (model, architecture, batch size) share one stack."""
    return advection_batch_key(params)
