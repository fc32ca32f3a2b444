"""PINN training methods at equal wall time: Adam, L-BFGS and ENGD, each with its tuned settings.

Two problems with known solutions:

- poisson: −Δu = 2π² sin(πx) sin(πy) on the unit square, u = 0 on the boundary
  (:mod:`evo_engine.sciml.poisson`: 30 × 30 interior and 120 boundary collocation points, a
  shallow tanh network of width 32, 129 parameters);
- advection: u_t + β u_x = 0 with periodic boundaries, β = 0.5 by default, the advection_pinn
  cpu preset's trajectory (two-mode initial condition, 500 + 128 + 200 collocation points,
  t ∈ [0, 2]) with a 3 × 20 tanh network (921 parameters).

For each problem and method, evo_engine's ask/tell optimizer (ES) searches the method's own
settings — the advection_pinn scenario's ranges: Adam ``lr``; L-BFGS ``lbfgs_lr``,
``lbfgs_history``, ``lbfgs_line_search``; ENGD ``engd_damping``, ``engd_step``, ``engd_lr`` —
with ``--evals`` evaluations, every one a training run of ``--seconds`` (the same for all
methods; float64 throughout). The best settings are then retrained with ``--repeats`` fresh
seeds (network initialisations); ``*_l2`` is the mean relative L2 error against the exact
solution over those runs (poisson: on a 101 × 101 grid; advection: on the 41 × 128 space-time
grid). Target: ``engd_l2`` at least 10× below ``adam_l2`` on Poisson.

    nice python benchmarks/pinn_optimizers.py            # about 15 min on 2 cores
    nice python benchmarks/pinn_optimizers.py --evals 4 --repeats 1 --seconds 5 5

Runs ``--jobs`` trainings at a time, one thread each; on a machine shared with other jobs,
``--clock cpu`` budgets CPU time instead of wall time. Prints a table and the progress to
stderr and one final JSON line to stdout. Not a test.
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

from evo_engine import Space
from evo_engine.context import Context
from evo_engine.optimizer import Optimizer
from evo_engine.scenario import load_scenario
from evo_engine.sciml.pinn import PinnTask, train_pinn
from evo_engine.sciml.poisson import PoissonTask, train_poisson
from evo_engine.sciml.presets import pinn_task

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
METHODS: dict[str, tuple[str, ...]] = {
    "adam": ("lr",),
    "lbfgs": ("lbfgs_lr", "lbfgs_history", "lbfgs_line_search"),
    "engd": ("engd_damping", "engd_step", "engd_lr"),
}
"""Each method's own settings: the part of the advection_pinn space its search explores."""
ARCHITECTURES = {
    "poisson": {"width": 32, "depth": 1, "activation": "tanh"},
    "advection": {"width": 20, "depth": 3, "activation": "tanh"},
}
_CACHE: dict = {}


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def make_tasks(args: argparse.Namespace) -> dict[str, Any]:
    poisson_seconds, advection_seconds = args.seconds
    poisson = PoissonTask(
        seconds=poisson_seconds, clock=args.clock, iterations=10**9, report_every=10**9
    )
    advection = dataclasses.replace(
        pinn_task("cpu"),
        beta=args.beta,
        seconds=advection_seconds,
        clock=args.clock,
        iterations=10**9,
        report_every=10**9,
        dtype="float64",
    )
    return {"poisson": poisson, "advection": advection}


def evaluate(problem: str, task: Any, params: dict, seed: int) -> dict[str, float]:
    """One training run; the record has ``l2`` (relative L2 error) and ``iterations``."""
    params = {**ARCHITECTURES[problem], **params}
    if isinstance(task, PoissonTask):
        out = train_poisson(params, Context.standalone(seed, _CACHE), task)
        return {"l2": out["rel_l2"], "iterations": out["iterations"]}
    assert isinstance(task, PinnTask)
    out = train_pinn(params, Context.standalone(seed, _CACHE), task)
    return {"l2": out["val_rel_l2"], "iterations": out["val_iterations"]}


def _fitness(record: dict[str, float]) -> float:
    # Search on log10 of the error: the errors span orders of magnitude.
    l2 = record["l2"]
    return math.log10(l2) if l2 > 0 and math.isfinite(l2) else math.nan


def search(
    problem: str,
    method: str,
    space: Space,
    task: Any,
    evals: int,
    pool: ProcessPoolExecutor,
    jobs: int,
) -> tuple[dict, float]:
    """``evals`` evaluations of ES over the method's settings; the best settings and error."""
    opt = Optimizer(space, operator="es", seed=0)
    fixed = {"optimizer": method}
    running: dict[Future, Any] = {}
    asked = done = 0
    while done < evals:
        while asked < evals and len(running) < jobs:
            cand = opt.ask()
            params = {**fixed, **cand.params}
            running[pool.submit(evaluate, problem, task, params, 1000 + cand.uid)] = cand
            asked += 1
        finished, _ = wait(running, return_when=FIRST_COMPLETED)
        for fut in finished:
            cand = running.pop(fut)
            try:
                record = fut.result()
            except Exception as exc:  # noqa: BLE001 - a failed training is a failed evaluation
                print(f"  evaluation {cand.uid} failed: {exc}", file=sys.stderr)
                record = {"l2": math.nan, "iterations": 0.0}
            opt.tell(cand, _fitness(record))
            done += 1
            settings = ", ".join(f"{k}={_short(v)}" for k, v in cand.params.items())
            print(
                f"  {problem} {method} {done}/{evals}: l2 {record['l2']:.3e} after "
                f"{record['iterations']:.0f} iterations ({settings})",
                file=sys.stderr,
            )
    if opt.best is None:
        return {"optimizer": method}, math.nan
    return {**fixed, **opt.best.params}, 10**opt.best.fitness


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evals", type=int, default=8, help="evaluations per search")
    parser.add_argument("--repeats", type=int, default=2, help="seeds for the final runs")
    parser.add_argument(
        "--seconds",
        type=float,
        nargs=2,
        default=(20.0, 30.0),
        metavar=("POISSON", "ADVECTION"),
        help="training budget of every run, per problem",
    )
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    parser.add_argument("--beta", type=float, default=0.5, help="advection speed")
    parser.add_argument("--jobs", type=int, default=2, help="trainings at a time")
    parser.add_argument("--problems", nargs="+", default=["poisson", "advection"])
    args = parser.parse_args(argv)
    start = time.perf_counter()
    tasks = make_tasks(args)
    scenario_space = load_scenario(SCENARIOS / "advection_pinn.py", "cpu").space
    context = multiprocessing.get_context("spawn")
    results: dict[str, dict[str, Any]] = {}
    with ProcessPoolExecutor(args.jobs, mp_context=context, initializer=_init_worker) as pool:
        for problem in args.problems:
            task = tasks[problem]
            results[problem] = {}
            for method, keys in METHODS.items():
                space = Space({k: scenario_space[k] for k in keys})
                params, search_l2 = search(
                    problem, method, space, task, args.evals, pool, args.jobs
                )
                seeds = list(range(args.repeats))
                records = list(
                    pool.map(
                        evaluate,
                        [problem] * len(seeds),
                        [task] * len(seeds),
                        [params] * len(seeds),
                        seeds,
                    )
                )
                l2 = [r["l2"] for r in records]
                results[problem][method] = {
                    "l2": float(np.mean(l2)),
                    "l2_per_seed": [float(v) for v in l2],
                    "iterations": float(np.mean([r["iterations"] for r in records])),
                    "search_l2": search_l2,
                    "params": params,
                }
                print(f"{problem} {method}: l2 {np.mean(l2):.3e} {params}", file=sys.stderr)
    _print_table(results)
    summary: dict[str, Any] = {"benchmark": "pinn_optimizers"}
    for problem, by_method in results.items():
        summary[problem] = {f"{m}_l2": r["l2"] for m, r in by_method.items()}
        summary[problem].update({f"{m}_iterations": r["iterations"] for m, r in by_method.items()})
        summary[problem].update({f"{m}_params": r["params"] for m, r in by_method.items()})
    if "poisson" in results:
        poisson = results["poisson"]
        summary.update({f"{m}_l2": poisson[m]["l2"] for m in METHODS})
        summary["adam_over_engd"] = poisson["adam"]["l2"] / poisson["engd"]["l2"]
        summary["target_met"] = bool(poisson["engd"]["l2"] * 10 <= poisson["adam"]["l2"])
    summary.update(
        seconds_per_run=dict(zip(("poisson", "advection"), args.seconds, strict=True)),
        clock=args.clock,
        beta=args.beta,
        evals_per_search=args.evals,
        repeats=args.repeats,
        seconds=round(time.perf_counter() - start, 1),
    )
    print(json.dumps(summary, default=float))
    return 0


def _print_table(results: dict[str, dict[str, Any]]) -> None:
    lines = [
        f"{'problem':<10} {'method':<6} {'rel L2 (mean)':>14} {'per seed':>24} "
        f"{'iterations':>10}  settings"
    ]
    for problem, by_method in results.items():
        for method, r in by_method.items():
            per_seed = " ".join(f"{v:.2e}" for v in r["l2_per_seed"])
            settings = ", ".join(
                f"{k}={_short(v)}" for k, v in r["params"].items() if k != "optimizer"
            )
            lines.append(
                f"{problem:<10} {method:<6} {r['l2']:>14.3e} {per_seed:>24} "
                f"{r['iterations']:>10.0f}  {settings}"
            )
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    sys.exit(main())
