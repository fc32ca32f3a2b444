"""A CNN on scikit-learn's real 8×8 handwritten digits: layers, channels, activation, dropout, lr.

The activation is a categorical with a tree of choices (rectifiers / smooth / saturating), so the
search can move between related activations. Fitness: the validation error rate (a fraction;
lower is better) of the best epoch; test error of the best configuration at the end. The data
ship with scikit-learn: nothing is downloaded.

    python -m evo_engine scenarios/digits_cnn.py [--preset full]

Presets: "cpu" = 15 epochs (a few seconds per evaluation, 64 evaluations); "full" = 60 epochs.
"""

from __future__ import annotations

import functools

from evo_engine import Categorical, Float, Int, Space
from evo_engine.scenario import Scenario
from evo_engine.sciml.digits import ACTIVATION_TREE, digits_test_metrics, train_digits
from evo_engine.sciml.presets import digits_task


def make_scenario(preset: str) -> Scenario:
    """The CNN search for ``preset`` ("cpu" or "full")."""
    task = digits_task(preset)
    full = preset == "full"
    return Scenario(
        name="digits_cnn",
        space=Space(
            layers=Int(1, 4),
            # Channels double per layer: 32 × 8 at the fourth layer keeps a cpu evaluation short.
            channels=Int(8, 128, log=True) if full else Int(4, 32, log=True),
            activation=Categorical(tree=ACTIVATION_TREE),
            dropout=Float(0.0, 0.5),
            lr=Float(1e-4, 1e-1, log=True),
        ),
        objective=functools.partial(train_digits, task=task),
        fitness_name="validation error rate",
        finalize=functools.partial(digits_test_metrics, task=task),
        # Budgets of 32-512 evaluations: the GP surrogate with a hypertiling design is best of
        # {TPE, CMA-ES, random, ES} on 4 of 5 reporting landscapes at 100 evaluations and 5 of
        # 5 at 300 (benchmarks/quality.py, issue 15; README). One island, so its model learns
        # from every result; the design as large as the first wave of workers.
        islands=1,
        population_size=32 if full else 8,
        operator="surrogate",
        initial_design="hypertiling",
        max_evals=256 if full else 64,
        intensify=3,  # noisy trainings: a new best races the incumbent (docs/noise.md)
        seed=0,
        workers=None if full else 2,
        migration_interval=8 if full else 4,
    )
