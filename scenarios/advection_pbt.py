"""1D advection (β = 4) with population-based training: a schedule, not one setting.

Members train PDEBench's FNO or U-Net in intervals of a few epochs (``pbt.interval``); after
each interval a member in the worst quarter at its epoch copies the weights, optimizer and
StepLR state of a member in the best quarter (exploit) and perturbs its learning rate, weight
decay, StepLR step and γ and batch size (explore, log-aware). The architecture (``model`` and
its widths) is drawn once per member and never explored: an exploit copies it with the
weights, so the better architectures spread. See docs/pbt.md.

    python -m evo_engine scenarios/advection_pbt.py [--preset full]

"cpu" preset: 8 members x 30 epochs in intervals of 3 = 80 intervals, about the CPU of 8
trainings of ``advection_multi.py`` (about 50 s each for PDEBench's FNO); "full": 32 members x
500 epochs in intervals of 25. At the end the best interval's checkpoint is scored on the
test split (``finalize``: no retraining). Data as in ``advection_lr.py``.
"""

from __future__ import annotations

import functools
from pathlib import Path

from evo_engine.scenario import Scenario, load_scenario
from evo_engine.sciml.presets import advection_task
from evo_engine.sciml.training import (
    advection_checkpoint_metrics,
    prepare_advection,
    train_advection,
)

ARCHITECTURE = ("model", "init_features", "width", "modes")


def make_scenario(preset: str) -> Scenario:
    """PBT over the training hyperparameters for ``preset`` ("cpu" or "full")."""
    task = advection_task(preset)
    full = preset == "full"
    # advection_multi.py's space, one source: the architecture (ARCHITECTURE) is drawn once
    # per member and fixed, the rest explored.
    space = load_scenario(Path(__file__).with_name("advection_multi.py"), preset).space
    members, interval = (32, 25) if full else (8, 3)
    return Scenario(
        name="advection_pbt",
        space=space,
        objective=functools.partial(train_advection, task=task),
        prepare=functools.partial(prepare_advection, task),
        finalize=functools.partial(advection_checkpoint_metrics, task=task),
        population_size=members,
        initial_design="lhs",
        # The compute of members x task.epochs epochs (a member that exploits jumps to its
        # donor's epoch, so some train longer than task.epochs and others less).
        max_evals=members * task.epochs // interval,
        pbt=dict(interval=interval, quantile=0.25, explore="perturb", sigma=0.1,
                 fixed=ARCHITECTURE),
        seed=0,
        workers=None if full else 2,
    )
