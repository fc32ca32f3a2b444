"""PDEBench's default hyperparameters versus tuned ones on 1D advection, at equal budget.

Every evaluation trains for the preset's epochs (cpu: 4 epochs of a small U-Net/FNO on 160
trajectories at 128 × 41; see ``evo_engine.sciml.presets``). Three candidates:

- default: PDEBench's hyperparameters (lr 1e-3, weight decay 1e-4, StepLR γ 0.5, U-Net; batch
  size and step size scaled to the preset);
- tuned_lr: the best learning rate the ``advection_lr`` scenario's search finds;
- tuned_multi: the best configuration of the ``advection_multi`` search (model, lr, weight decay,
  schedule, batch size, width, modes), with the same number of evaluations as advection_lr.

The searches use the scenarios' own spaces and settings through ``evo_engine.Optimizer``
(ask/tell), ``--jobs`` evaluations at a time. The search minimum is optimistic (the best of many
noisy draws), so each candidate is then retrained with ``--repeats`` fresh seeds and scored on
validation and test; the reported ``*_fitness`` values are those means (validation fitness:
mean of RMSE, nRMSE, bRMSE, cRMSE). Target: tuned fitness ≤ 0.8 × default.

    nice python benchmarks/advection.py                 # cpu preset, 10-20 min on 2 cores
    nice python benchmarks/advection.py --evals 16 --repeats 2

Prints progress to stderr and one final JSON line to stdout. Not a test.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np

from evo_engine.context import Context
from evo_engine.optimizer import Optimizer
from evo_engine.scenario import Scenario, load_scenario
from evo_engine.sciml.metrics import METRIC_NAMES
from evo_engine.sciml.presets import advection_task
from evo_engine.sciml.training import (
    AdvectionTask,
    advection_test_metrics,
    prepare_advection,
    train_advection,
)

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
_CACHE: dict = {}  # one per worker process: the data set is read once


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _search_eval(params: dict, seed: int, task: AdvectionTask) -> float:
    return float(train_advection(params, Context.standalone(seed, _CACHE), task)["fitness"])


def _final_eval(params: dict, seed: int, task: AdvectionTask) -> dict[str, float]:
    return advection_test_metrics(params, Context.standalone(seed, _CACHE), task)


def search(
    scenario: Scenario, evals: int, pool: ProcessPoolExecutor, jobs: int, task: AdvectionTask
) -> tuple[dict, float]:
    """Run ``evals`` evaluations of the scenario's search; return the best params and fitness."""
    opt = Optimizer(
        scenario.space,
        operator=scenario.operator,
        seed=scenario.seed,
        population_size=scenario.population_size,
        islands=scenario.islands,
        initial_design=scenario.initial_design,
        operator_settings=dict(scenario.operator_settings),
        migration_interval=scenario.migration_interval,
        migrants=scenario.migrants,
    )
    running: dict[Future, Any] = {}
    asked = done = 0
    while done < evals:
        while asked < evals and len(running) < jobs:
            cand = opt.ask()
            running[pool.submit(_search_eval, cand.params, 1000 + cand.uid, task)] = cand
            asked += 1
        finished, _ = wait(running, return_when=FIRST_COMPLETED)
        for fut in finished:
            cand = running.pop(fut)
            try:
                fitness = fut.result()
            except Exception as exc:  # noqa: BLE001 - a failed training is a failed evaluation
                print(f"  evaluation {cand.uid} failed: {exc}", file=sys.stderr)
                fitness = math.nan
            opt.tell(cand, fitness)
            done += 1
            best = opt.best.fitness if opt.best else math.nan
            print(
                f"  {scenario.name} {done}/{evals}: fitness {fitness:.4f} (best {best:.4f})",
                file=sys.stderr,
            )
    assert opt.best is not None
    return dict(opt.best.params), float(opt.best.fitness)


def rescore(
    params: dict, seeds: list[int], pool: ProcessPoolExecutor, task: AdvectionTask
) -> dict[str, Any]:
    """Retrain ``params`` with each seed; mean validation fitness and test metrics."""
    records = list(pool.map(_final_eval, [params] * len(seeds), seeds, [task] * len(seeds)))
    test_keys = [f"test_{m}" for m in METRIC_NAMES] + ["test_fitness"]
    return {
        "fitness": float(np.mean([r["fitness"] for r in records])),
        "fitness_per_seed": [round(r["fitness"], 6) for r in records],
        "test": {k: float(np.mean([r[k] for r in records])) for k in test_keys},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=("cpu", "full"), default="cpu")
    parser.add_argument(
        "--evals", type=int, help="evaluations per search (default: advection_lr's)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="seeds for the final rescoring")
    parser.add_argument("--jobs", type=int, default=2, help="evaluations at a time")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    task = advection_task(args.preset)
    prepare_advection(task)  # generate the data once, before the workers race for it
    lr_scenario = load_scenario(SCENARIOS / "advection_lr.py", args.preset)
    multi_scenario = load_scenario(SCENARIOS / "advection_multi.py", args.preset)
    evals = args.evals or lr_scenario.max_evals
    seeds = list(range(args.repeats))
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.jobs, mp_context=context, initializer=_init_worker) as pool:
        print("default hyperparameters", file=sys.stderr)
        default = rescore({}, seeds, pool, task)
        lr_params, lr_search = search(lr_scenario, evals, pool, args.jobs, task)
        tuned_lr = rescore(lr_params, seeds, pool, task)
        multi_params, multi_search = search(multi_scenario, evals, pool, args.jobs, task)
        tuned_multi = rescore(multi_params, seeds, pool, task)
    best = min(tuned_lr["fitness"], tuned_multi["fitness"])
    result = {
        "benchmark": "advection",
        "preset": args.preset,
        "evals_per_search": evals,
        "repeats": args.repeats,
        "default_fitness": default["fitness"],
        "tuned_lr_fitness": tuned_lr["fitness"],
        "tuned_multi_fitness": tuned_multi["fitness"],
        "tuned_lr_search_fitness": lr_search,
        "tuned_multi_search_fitness": multi_search,
        "ratio_lr": tuned_lr["fitness"] / default["fitness"],
        "ratio_multi": tuned_multi["fitness"] / default["fitness"],
        "target_met": best <= 0.8 * default["fitness"],
        "default_params": dict(task.defaults),
        "tuned_lr_params": lr_params,
        "tuned_multi_params": multi_params,
        "default_fitness_per_seed": default["fitness_per_seed"],
        "tuned_lr_fitness_per_seed": tuned_lr["fitness_per_seed"],
        "tuned_multi_fitness_per_seed": tuned_multi["fitness_per_seed"],
        "default_test": default["test"],
        "tuned_lr_test": tuned_lr["test"],
        "tuned_multi_test": tuned_multi["test"],
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(result, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
