"""A recorded table of the cpu advection task: 200 learning rates × 3 training seeds (issue 24).

What FCNet/HPOBench tables are for their problems: real trainings of ``advection_lr``'s task,
recorded once, so that a search can be replayed against them many times in minutes
(``benchmarks/advection_table.py``: 50 searches per method where the live verdict affords 5).

Built by the engine itself, as an ordinary resumable run: one island whose initial design is a
Latin hypercube of 200 learning rates over ``advection_lr``'s space (log 1e-5 .. 1e-1), and a
budget of exactly those 200 evaluations (no operator step follows). One evaluation trains its
learning rate with 3 seeds (``REPLICATES``) as one stack and records, per replicate, the
validation fitness a search sees (the cpu preset's: the mean of the last 3 epochs) and the TEST
fitness of the weights a training keeps (the final ones), which no search sees; the
evaluation's fitness is the mean of the validation fitnesses. Every training has a seed of
its own (``replicate_seed``): no common seeds across learning rates. Each worker trains the
replicates of 4 learning rates (``batch`` 4) as one stack of 12, about 1.3x the trainings per
CPU-second of stacks of 4 (1.07 against 1.39 CPU-s per member and epoch, measured 2026-12-07 on
one core of the 2-core VM, 3 epochs).

    python -m evo_engine benchmarks/scenarios/advection_lr_table.py \\
        --run-dir runs/advection_lr_table     # hours on 2 cores; add --resume to continue
    python -m evo_engine analyze runs/advection_lr_table --csv table.csv

A replicate whose training diverged is recorded as NaN; an evaluation all of whose replicates
diverged fails (its learning rate stays in the log, FAILED).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import numpy as np

from evo_engine import Float, Space
from evo_engine.context import Context
from evo_engine.scenario import Scenario
from evo_engine.sciml.batched import train_advection_batch
from evo_engine.sciml.presets import advection_task
from evo_engine.sciml.training import AdvectionTask, TrainingDiverged, prepare_advection

REPLICATES = 3
CONFIGURATIONS = 200


def replicate_seed(seed: int, j: int) -> int:
    """Replicate ``j``'s training seed for an evaluation with seed ``seed``: independent draws
    (``numpy.random.SeedSequence``), so no two evaluations or replicates share a training seed."""
    return int(np.random.SeedSequence([int(seed), j]).generate_state(1)[0])


def _row(records: list[Any], seeds: list[int]) -> dict[str, float]:
    """One evaluation's record: the mean validation fitness and every replicate's values."""
    row: dict[str, float] = {}
    val, ok = [], 0
    for j, (rec, seed) in enumerate(zip(records, seeds, strict=True)):
        good = isinstance(rec, dict) and math.isfinite(rec.get("fitness", math.nan))
        ok += good
        row[f"seed_r{j}"] = float(seed)
        row[f"val_fitness_r{j}"] = float(rec["fitness"]) if good else math.nan
        row[f"test_fitness_r{j}"] = float(rec["test_fitness"]) if good else math.nan
        row[f"test_nrmse_r{j}"] = float(rec["test_nrmse"]) if good else math.nan
        if good:
            val.append(float(rec["fitness"]))
    if not val:
        errors = [r for r in records if isinstance(r, BaseException)]
        raise errors[0] if errors else TrainingDiverged("every replicate diverged")
    tests = [row[f"test_fitness_r{j}"] for j in range(len(seeds))]
    return {
        "fitness": float(np.mean(val)),
        "test_fitness": float(np.mean([t for t in tests if math.isfinite(t)])),
        "replicates_ok": float(ok),
        **row,
    }


def train_replicates_batch(params_list: list[dict], ctxs: list[Context],
                           task: AdvectionTask) -> list[Any]:
    """Every configuration × ``REPLICATES`` seeds as one stack; one row per configuration."""
    members, member_ctxs, seeds = [], [], []
    for params, ctx in zip(params_list, ctxs, strict=True):
        for j in range(REPLICATES):
            s = replicate_seed(ctx.seed, j)
            members.append(params)
            # the replicates do not report a curve: the run's curve is the evaluation's
            member_ctxs.append(dataclasses.replace(ctx, seed=s, _reporter=None, curve=[]))
            seeds.append(s)
    records = train_advection_batch(members, member_ctxs, task, test=True)
    out: list[Any] = []
    for i in range(len(params_list)):
        part = slice(i * REPLICATES, (i + 1) * REPLICATES)
        try:
            out.append(_row(records[part], seeds[part]))
        except Exception as exc:  # noqa: BLE001 - this configuration failed, not the batch
            out.append(exc)
    return out


def train_replicates(params: dict, ctx: Context, task: AdvectionTask) -> dict[str, float]:
    """One configuration's ``REPLICATES`` trainings (the objective without ``--batch``)."""
    out = train_replicates_batch([params], [ctx], task)[0]
    if isinstance(out, BaseException):
        raise out
    return out


def make_scenario(preset: str) -> Scenario:
    if preset != "cpu":
        raise ValueError("the recorded table is of the cpu task (preset cpu)")
    task = advection_task(preset)
    return Scenario(
        name="advection_lr_table",
        space=Space(lr=Float(1e-5, 1e-1, log=True)),  # advection_lr's space
        objective=functools.partial(train_replicates, task=task),
        fitness_name="mean validation fitness over 3 training seeds",
        prepare=functools.partial(prepare_advection, task),
        islands=1,
        population_size=CONFIGURATIONS,
        operator="random",
        initial_design="lhs",
        max_evals=CONFIGURATIONS,
        seed=0,
        workers=2,
        batch=4,
    )


def objective_batch(params_list: list[dict], ctxs: list[Context]) -> list[Any]:
    return train_replicates_batch(params_list, ctxs, advection_task(ctxs[0].preset))
