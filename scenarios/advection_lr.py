"""PDEBench's default model on 1D advection (β = 4): tune the learning rate on a log scale.

The experiment of the learning-to-learn study of PDEBench (L2L, evolution strategies on the
U-Net's learning rate), with the fitness it used: the mean of validation RMSE, nRMSE, bRMSE and
cRMSE (lower is better). Every other hyperparameter is PDEBench's default (Adam, weight decay
1e-4, StepLR γ 0.5); test metrics of the best configuration are computed at the end. Every
evaluation records PDEBench's metrics twice: clean (``val_nrmse``) and in the convention of its
published tables (``val_nrmse_pdebench``, see ``evo_engine.sciml.metrics``).

    python -m evo_engine scenarios/advection_lr.py                  # cpu preset without a GPU
    python -m evo_engine scenarios/advection_lr.py --preset full    # PDEBench scale

Presets (see ``evo_engine.sciml.presets``; measurements in ``docs/sciml-task.md``): "cpu"
trains PDEBench's FNO (modes 12, width 20) for 30 epochs on 200 FV trajectories read at
nx 128 × nt 41, fitness = the mean of the last 3 epochs; one training is about 50 s of CPU on
one core, and each of the 2 workers trains 4 learning rates as one stack (``batch`` 4: 33 CPU-s
per member, 1.6× measured under load, 2.2× in issue 23 on one idle core), so the 24 evaluations
and the final retraining cost about 3 × 135 + 50 ≈ 455 s of wall time on two cores, plus
about 100 s to generate the data once: ``make run`` about 9.3 minutes, an estimate from CPU
seconds measured on a loaded machine (an end-to-end run of 4 evaluations: 187 CPU-s). The default reaches a validation
fitness of 0.061 ± 0.005 over 11 seeds, lr 3e-3 0.051 ± 0.003: two single trainings order
these two rightly about 19 times in 20, nearer learning rates less often (issue 24). "full"
trains PDEBench's U-Net (the L2L study's model) for 500 epochs on 10,000 FV trajectories read
at 256 × 41, keeping its best epoch as PDEBench does.

Data: generated on first use and cached in ``$EVO_ENGINE_DATA_DIR`` (default ``./data``); set
``EVO_ENGINE_ADVECTION_FILE`` to a real PDEBench file (``1D_Advection_Sols_beta4.0.hdf5``) to
train on it instead.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable
from typing import Any

from evo_engine import Float, Space
from evo_engine.context import Context
from evo_engine.scenario import Scenario
from evo_engine.sciml.batched import advection_batch_key, train_advection_batch
from evo_engine.sciml.presets import advection_task
from evo_engine.sciml.training import advection_test_metrics, prepare_advection, train_advection


def make_scenario(preset: str) -> Scenario:
    """The learning-rate search for ``preset`` ("cpu" or "full")."""
    task = advection_task(preset)
    full = preset == "full"
    return Scenario(
        name="advection_lr",
        space=Space(lr=Float(1e-5, 1e-1, log=True)),
        objective=functools.partial(train_advection, task=task),
        fitness_name="validation fitness (mean of RMSE, nRMSE, bRMSE, cRMSE)",
        prepare=functools.partial(prepare_advection, task),
        finalize=functools.partial(advection_test_metrics, task=task),
        # 24 (cpu) or 256 (full) evaluations of a 1-D space: a GP surrogate places a learning
        # rate's optimum from a handful of results, where the GA spends 32 on a design and a
        # few mutations (quality.py's 2-D lr_decay at 100 evaluations, median of 3 seeds:
        # regret 0.0018 against TPE 0.024, CMA-ES 0.027, random 0.078, ES 0.11, GA 0.16).
        # One island, so its model learns from every result; a hypertiling design as large as
        # the first wave.
        islands=1,
        population_size=32 if full else 8,
        operator="surrogate",
        initial_design="hypertiling",
        max_evals=256 if full else 24,  # cpu: make run stays under 10 minutes on 2 cores
        intensify=3,  # noisy trainings: a new best races the incumbent (docs/noise.md)
        seed=0,
        workers=None if full else 2,
        # cpu: each worker trains 4 learning rates as one stack (objective_batch), about 2x
        # the trainings per CPU-second of one at a time (presets.py); --batch 1 turns it off
        batch=1 if full else 4,
        migration_interval=8 if full else 4,
    )


def objective_batch(params_list: list[dict], ctxs: list[Context]) -> list[Any]:
    """Train several members at once on the worker's device (``--batch K``); one result each."""
    return train_advection_batch(params_list, ctxs, advection_task(ctxs[0].preset))


def batch_key(params: dict) -> Hashable:
    """Members with equal keys (model, architecture, batch size) share one stack."""
    return advection_batch_key(params)
