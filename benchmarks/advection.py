"""PDEBench's default hyperparameters versus the engine's search and random search, on TEST data.

Every training runs for the preset's epochs (see ``evo_engine.sciml.presets``). Arms, each
scored the same way:

- ``default``: PDEBench's configuration at the preset's epochs (its StepLR step scaled from
  100 of 500 epochs to the preset's length, batch size scaled to the preset's data);
- ``engine_<scenario>``: ONE search with the scenario's own space, operator, islands and seed
  (``advection_lr``: the learning rate; ``advection_multi``: model, lr, weight decay, schedule,
  batch size, widths), ``--evals`` evaluations, selected by its validation fitness;
- ``random_<scenario>``: random search in the same space with the same budget and selection.

The configuration each arm picks is then retrained with ``--seeds`` fresh seeds (never the
search's seeds) and scored on the TEST split, which no search ever sees (the search only reads
validation). Reported per arm: the mean test fitness (mean of RMSE, nRMSE, bRMSE, cRMSE), its
seed-to-seed standard deviation, the mean test nRMSE in the clean and in PDEBench's published
convention. Targets: an engine arm's test fitness ≤ 0.8 × the default's, and below its random
arm's by more than the seed spread (the larger of the two standard deviations).

    nice python benchmarks/advection.py                        # cpu preset, both scenarios
    nice python benchmarks/advection.py --scenarios lr --evals 16

Prints progress to stderr and one final JSON line to stdout. Not a test.
"""

from __future__ import annotations

import argparse
import dataclasses
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
from evo_engine.sciml.presets import advection_task
from evo_engine.sciml.training import (
    AdvectionTask,
    advection_test_metrics,
    prepare_advection,
    train_advection,
)

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
FINAL_SEEDS_FROM = 900_000  # retraining seeds, disjoint from the searches' 1000 + uid
_CACHE: dict = {}  # one per worker process: the data set is read once


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _search_eval(params: dict, seed: int, task: AdvectionTask) -> float:
    return float(train_advection(params, Context.standalone(seed, _CACHE), task)["fitness"])


def _final_eval(params: dict, seed: int, task: AdvectionTask) -> dict[str, float]:
    return advection_test_metrics(params, Context.standalone(seed, _CACHE), task)


def search(
    scenario: Scenario,
    operator: str,
    evals: int,
    pool: ProcessPoolExecutor,
    jobs: int,
    task: AdvectionTask,
) -> tuple[dict, float]:
    """One search of ``evals`` evaluations in the scenario's space; best params and fitness."""
    opt = Optimizer(
        scenario.space,
        operator=operator,
        seed=scenario.seed,
        population_size=scenario.population_size,
        islands=scenario.islands,
        initial_design=scenario.initial_design,
        operator_settings=dict(scenario.operator_settings) if operator == scenario.operator else {},
        migration_interval=scenario.migration_interval,
        migrants=scenario.migrants,
    )
    running: dict[Future, Any] = {}
    asked = done = 0
    label = f"{operator}_{scenario.name}"
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
            print(f"  {label} {done}/{evals}: {fitness:.4f} (best {best:.4f})", file=sys.stderr)
    if opt.best is None:
        raise RuntimeError(f"every evaluation of {label} failed")
    return dict(opt.best.params), float(opt.best.fitness)


def score_on_test(
    params: dict, seeds: list[int], pool: ProcessPoolExecutor, task: AdvectionTask
) -> dict[str, Any]:
    """Retrain ``params`` with each seed; test fitness mean ± std and test nRMSE (both ways)."""
    records = list(pool.map(_final_eval, [params] * len(seeds), seeds, [task] * len(seeds)))
    fitness = [r["test_fitness"] for r in records]
    return {
        "test_fitness": float(np.mean(fitness)),
        "test_fitness_std": float(np.std(fitness, ddof=1)) if len(fitness) > 1 else math.nan,
        "test_fitness_per_seed": [round(f, 6) for f in fitness],
        "test_nrmse": float(np.mean([r["test_nrmse"] for r in records])),
        "test_nrmse_pdebench": float(np.mean([r["test_nrmse_pdebench"] for r in records])),
        "val_fitness": float(np.mean([r["fitness"] for r in records])),
    }


def verdict(arms: dict[str, dict], scenario: str) -> dict[str, Any]:
    """The targets for one scenario: engine vs default (≤ 0.8×) and vs random (> seed spread)."""
    engine, random_, default = arms[f"engine_{scenario}"], arms[f"random_{scenario}"], arms["default"]
    spread = max(engine["test_fitness_std"], random_["test_fitness_std"])
    ratio = engine["test_fitness"] / default["test_fitness"]
    margin = random_["test_fitness"] - engine["test_fitness"]
    return {
        "ratio_to_default": ratio,
        "beats_default_by_20pct": bool(ratio <= 0.8),
        "margin_over_random": margin,
        "seed_spread": spread,
        "beats_random_beyond_spread": bool(margin > spread),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=("cpu", "full"), default="cpu")
    parser.add_argument("--scenarios", default="lr,multi", help="comma list of lr, multi")
    parser.add_argument("--evals", type=int, help="evaluations per search (default: the scenario's)")
    parser.add_argument("--seeds", type=int, default=3, help="retraining seeds per arm (>= 2)")
    parser.add_argument("--jobs", type=int, default=2, help="trainings at a time")
    parser.add_argument(
        "--epochs", type=int, help="override the preset's epochs (the default's StepLR scaled)"
    )
    args = parser.parse_args(argv)
    names = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if not names or any(n not in ("lr", "multi") for n in names):
        parser.error(f"--scenarios takes a comma list of lr and multi, got {args.scenarios!r}")
    if args.seeds < 2 or (args.evals is not None and args.evals < 1) or args.jobs < 1:
        parser.error("need --seeds >= 2, --evals >= 1 and --jobs >= 1")
    if args.epochs is not None and args.epochs < 1:
        parser.error("need --epochs >= 1")
    start = time.perf_counter()
    task = advection_task(args.preset)
    if args.epochs is not None:
        step = max(1, round(task.defaults["scheduler_step"] * args.epochs / task.epochs))
        defaults = {**task.defaults, "scheduler_step": step}
        task = dataclasses.replace(task, epochs=args.epochs, defaults=defaults)
    prepare_advection(task)  # generate the data once, before the workers race for it
    seeds = list(range(FINAL_SEEDS_FROM, FINAL_SEEDS_FROM + args.seeds))
    arms: dict[str, dict] = {}
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.jobs, mp_context=context, initializer=_init_worker) as pool:
        print("default configuration", file=sys.stderr)
        arms["default"] = {"params": dict(task.defaults), **score_on_test({}, seeds, pool, task)}
        print(f"default: {json.dumps(arms['default'])}", file=sys.stderr)
        for name in names:
            scenario = load_scenario(SCENARIOS / f"advection_{name}.py", args.preset)
            evals = args.evals or scenario.max_evals
            for operator, arm in ((scenario.operator, "engine"), ("random", "random")):
                params, found = search(scenario, operator, evals, pool, args.jobs, task)
                arms[f"{arm}_{name}"] = {
                    "operator": operator,
                    "evals": evals,
                    "search_val_fitness": found,
                    "params": params,
                    **score_on_test(params, seeds, pool, task),
                }
                print(f"{arm}_{name}: {json.dumps(arms[f'{arm}_{name}'])}", file=sys.stderr)
    result = {
        "benchmark": "advection",
        "preset": args.preset,
        "epochs": task.epochs,
        "split_scored": "test",
        "seeds": args.seeds,
        "arms": arms,
        "verdicts": {name: verdict(arms, name) for name in names},
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(result, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
