"""A physics-informed network for 1D advection: tune the training method and the network.

One PINN per trajectory (as PDEBench trains them) on u_t + β u_x = 0 with periodic boundaries;
fitness: the validation relative L2 error against the targets (lower is better; PDEBench's
metrics on the same frames are recorded too, clean and as ``*_pdebench``); test trajectories are
scored for the best at the end. Under "full" the protocol is PDEBench's (FV targets, residual on
1,000 + 1,000 + 5,000 Hammersley points, initial condition at the 1,024 data points, last 20
frames scored); the differences that remain are listed in ``evo_engine.sciml.pinn``.

The training method is a hyperparameter: ``optimizer`` ∈ {adam, lbfgs, engd} (energy natural
gradient, :mod:`evo_engine.sciml.engd`), each with its own settings: ``lr`` for Adam;
``lbfgs_lr``, ``lbfgs_history``, ``lbfgs_line_search`` for L-BFGS; ``engd_damping``,
``engd_step`` (grid line search or fixed) and ``engd_lr`` (the fixed step) for ENGD. Every
method trains for the same wall time per trajectory (cpu: 10 s, full: 15 minutes or PDEBench's
15,000 iterations, whichever ends first), since one ENGD step costs as much as hundreds of Adam
steps. Fitness therefore depends a little on the machine's load.

This scenario declares no conditional parameters (``when=``, which the engine supports: see
``advection_multi.py``): every parameter is sampled in every configuration, and the objective ignores the settings of the methods not chosen (``engd_damping`` when
``optimizer`` is adam). Those inactive genes drift neutrally under selection, are still recorded
in the store, and become active again if a later mutation switches the optimizer back.

    python -m evo_engine scenarios/advection_pinn.py [--preset full]

Presets (``evo_engine.sciml.presets``): "cpu" = β 1, smooth two-mode initial conditions, exact
targets on the whole grid after t = 0, 10 s per evaluation, 40 evaluations; "full" = PDEBench's β 4, full
recipe and protocol, three trajectories.
Needs no data file.
"""

from __future__ import annotations

import dataclasses
import functools

from evo_engine import Categorical, Float, Int, Space
from evo_engine.scenario import Scenario
from evo_engine.sciml.digits import ACTIVATION_TREE
from evo_engine.sciml.pinn import pinn_test_metrics, train_pinn
from evo_engine.sciml.presets import pinn_task


def make_scenario(preset: str) -> Scenario:
    """The PINN search for ``preset`` ("cpu" or "full")."""
    full = preset == "full"
    task = pinn_task(preset)
    if full:
        task = dataclasses.replace(task, seconds=900.0)
    else:
        task = dataclasses.replace(task, seconds=10.0, iterations=1_000_000)
    return Scenario(
        name="advection_pinn",
        space=Space(
            optimizer=Categorical(["adam", "lbfgs", "engd"]),
            lr=Float(1e-4, 3e-2, log=True),
            lbfgs_lr=Float(1e-2, 1.0, log=True),
            lbfgs_history=Int(5, 100, log=True),
            lbfgs_line_search=Categorical(["strong_wolfe", "none"]),
            engd_damping=Float(1e-10, 1e-2, log=True),
            engd_step=Categorical(["line_search", "fixed"]),
            engd_lr=Float(1e-2, 1.0, log=True),
            width=Int(8, 128, log=True) if full else Int(8, 64, log=True),
            depth=Int(2, 8),
            activation=Categorical(tree=ACTIVATION_TREE),
        ),
        objective=functools.partial(train_pinn, task=task),
        fitness_name="validation relative L2 error",
        finalize=functools.partial(pinn_test_metrics, task=task),
        # Budgets of 32-512 evaluations: the GP surrogate with a hypertiling design is best of
        # {TPE, CMA-ES, random, ES} on 4 of 5 reporting landscapes at 100 evaluations and 5 of
        # 5 at 300 (benchmarks/quality.py, issue 15; README). One island, so its model learns
        # from every result; the design as large as the first wave of workers.
        islands=1,
        population_size=32 if full else 8,
        operator="surrogate",
        initial_design="hypertiling",
        max_evals=256 if full else 40,
        intensify=3,  # noisy trainings: a new best races the incumbent (docs/noise.md)
        seed=0,
        workers=None if full else 2,
        migration_interval=8 if full else 4,
    )
