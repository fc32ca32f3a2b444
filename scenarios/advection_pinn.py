"""A physics-informed network for 1D advection: tune learning rate, width, depth, activation.

One PINN per trajectory (as PDEBench trains them) on u_t + β u_x = 0 with periodic boundaries;
fitness: the validation relative L2 error against the exact solution u0(x − βt) on the whole
space-time grid (lower is better); test trajectories are scored for the best at the end.

    python -m evo_engine scenarios/advection_pinn.py [--preset full]

Presets (``evo_engine.sciml.presets``): "cpu" = β 1, smooth two-mode initial conditions,
1,000 iterations (about 10 s per evaluation, 40 evaluations); "full" = PDEBench's β 4, full
recipe, 15,000 iterations, three trajectories. Needs no data file.
"""

from __future__ import annotations

import functools

from evo_engine import Categorical, Float, Int, Space
from evo_engine.scenario import Scenario
from evo_engine.sciml.digits import ACTIVATION_TREE
from evo_engine.sciml.pinn import pinn_test_metrics, train_pinn
from evo_engine.sciml.presets import pinn_task


def make_scenario(preset: str) -> Scenario:
    """The PINN search for ``preset`` ("cpu" or "full")."""
    task = pinn_task(preset)
    full = preset == "full"
    return Scenario(
        name="advection_pinn",
        space=Space(
            lr=Float(1e-4, 3e-2, log=True),
            width=Int(8, 128, log=True) if full else Int(8, 64, log=True),
            depth=Int(2, 8),
            activation=Categorical(tree=ACTIVATION_TREE),
        ),
        objective=functools.partial(train_pinn, task=task),
        finalize=functools.partial(pinn_test_metrics, task=task),
        islands=2,
        population_size=16 if full else 8,
        operator="ga",
        max_evals=256 if full else 40,
        seed=0,
        workers=None if full else 2,
        migration_interval=8 if full else 4,
    )
