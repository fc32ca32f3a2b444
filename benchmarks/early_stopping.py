"""Early stopping: best fitness against training steps spent, with and without ASHA.

A discrete-event simulation of 32 asynchronous workers drives the real Engine (islands, GA or
ES, and the ASHA pruner) through the same calls the coordinator makes: ``ask`` when a worker
is idle, ``report`` at every rung a training reaches, ``tell`` when it ends (complete, or
pruned with its curve). Nothing sleeps: a training "step" (an epoch) takes a simulated time
that depends on the configuration, so results arrive out of order as on a cluster.

The learning curves are synthetic, of this benchmark's making, shaped like validation loss
over epochs: for configuration p, ``v(t) = final(p) + (1 - final(p)) · τ(p) / (τ(p) + t)``
plus observation noise. ``final(p)`` is a loss with a floor (0.05) that saturates at 1 far
from the good region (learning rate × batch size interact, as do width and depth); ``τ(p)``,
the epochs to cover half the way, shrinks with a larger learning rate and grows with the batch
size and depth. So fast-but-worse and slow-but-better configurations cross: a high learning
rate leads after 3 epochs and loses by 81, the bias ASHA is known for, present on purpose. The
objective a complete training reports is ``v(81)``.

Both runs get the same seeds and the same budget of training steps (``--evals`` complete
trainings' worth without pruning). Reported per seed and as medians over the seeds:

* ``steps_to_target_*``: steps spent (over all workers, partial trainings included) until the
  best complete fitness first reaches the target, which is the final best of the run without
  pruning (the quality it needs its whole budget for); inf if never within the budget;
* ``speedup``: steps_to_target_without / steps_to_target_with (ratio of the medians);
* ``final_best_*``: the best complete fitness when the budget is spent.

The speedup flatters an operator that is slow without pruning (its own final best is an easy
target): ``--target F`` also reports the steps to one fitness target, the same for every
seed and operator, so that operators can be compared at equal quality.

The same comparison then runs on the digits CNN at small scale: ``--digits N`` real
validation-error curves (15 epochs) of N Sobol points of ``scenarios/digits_cnn.py``'s space,
trained once and cached in the data directory; a proposed configuration gets the curve of the
nearest trained one. The headline fields of the JSON line are the synthetic curves with the
first of ``--operators``; every (problem, operator) pair is in it too.

    nice .venv/bin/python benchmarks/early_stopping.py            # 10 seeds, es and ga, eta 3
    nice .venv/bin/python benchmarks/early_stopping.py --seeds 3 --operators ga --digits 0
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from evo_engine.search.engine import Engine, EngineConfig
from evo_engine.search.messages import EvalState, Result, Task
from evo_engine.search.pruning import ASHAConfig
from evo_engine.space import Float, Int, Space

WORKERS = 32
MAX_STEPS = 81
FLOOR = 0.05
NOISE = 0.01
"""Standard deviation of the noise on every reported value (validation noise)."""

SPACE = Space(
    lr=Float(1e-5, 1e-1, log=True),
    weight_decay=Float(1e-7, 1e-2, log=True),
    width=Int(8, 256, log=True),
    depth=Int(1, 8),
    batch=Int(8, 256, log=True),
)


# -- the synthetic learning curves ---------------------------------------------------------------


def final_loss(p: dict) -> float:
    """What a configuration would reach with unlimited epochs (floor 0.05, saturating at 1)."""
    lr_star = -3.0 + 0.5 * math.log10(p["batch"] / 32)  # square-root batch scaling
    capacity = math.log2(p["width"]) + 0.5 * p["depth"]
    q = (
        ((math.log10(p["lr"]) - lr_star) / 1.0) ** 2
        + ((math.log10(p["weight_decay"]) + 4.5) / 2.0) ** 2
        + ((capacity - 8.5) / 2.0) ** 2
        + 0.3 * ((math.log2(p["batch"]) - 5.0) / 2.0) ** 2
    )
    return FLOOR + (1.0 - FLOOR) * (1.0 - math.exp(-q))


def half_way_epochs(p: dict) -> float:
    """τ: epochs to cover half the way from the untrained loss (1) to ``final_loss``."""
    tau = (4.0 * 10 ** (0.5 * (-3.0 - math.log10(p["lr"])))
           * (p["batch"] / 32) ** 0.5 * (1.0 + 0.1 * (p["depth"] - 1)))
    return min(max(tau, 0.3), 400.0)


def epoch_time(p: dict) -> float:
    """Simulated seconds per epoch: bigger networks and smaller batches take longer."""
    return (p["width"] / 64) ** 0.5 * (p["depth"] / 4) ** 0.5 * (32 / p["batch"]) ** 0.3


@dataclass(frozen=True)
class Problem:
    """A search space and the learning curve each configuration would report."""

    name: str
    space: Space
    max_steps: int
    curve: Callable[[Task, int], tuple[np.ndarray, float]]
    """``(task, run_seed) -> (values after 1..max_steps steps, seconds per step)``."""
    fitness: Callable[[np.ndarray], float]
    """The complete evaluation's fitness from its whole curve."""
    islands: int = 4
    population_size: int = 16


def synthetic_curve(task: Task, run_seed: int) -> tuple[np.ndarray, float]:
    p = task.params
    rng = np.random.default_rng([run_seed, task.uid, 7])
    final, tau = final_loss(p), half_way_epochs(p)
    t = np.arange(1, MAX_STEPS + 1)
    values = final + (1.0 - final) * tau / (tau + t) + NOISE * rng.normal(size=t.size)
    return values, epoch_time(p) * float(rng.lognormal(0.0, 0.2))


SYNTHETIC = Problem("synthetic", SPACE, MAX_STEPS, synthetic_curve, lambda v: float(v[-1]))


@dataclass
class Training:
    """One simulated training: its curve and its step duration."""

    task: Task
    worker: int
    start: float
    epoch: float
    values: np.ndarray  # values[t - 1] = reported value after t steps
    max_steps: int

    def steps_by(self, now: float) -> float:
        return min((now - self.start) / self.epoch, self.max_steps)


# -- the simulation ----------------------------------------------------------------------------


@dataclass
class Run:
    """What one simulated run produced: best-so-far against steps spent, and counts."""

    trace: list[tuple[float, float]] = field(default_factory=list)  # (steps spent, best)
    steps: float = 0.0
    complete: int = 0
    pruned: int = 0
    wall: float = 0.0

    @property
    def final_best(self) -> float:
        return self.trace[-1][1] if self.trace else math.inf

    def steps_to(self, target: float) -> float:
        return next((s for s, b in self.trace if b <= target), math.inf)


def simulate(problem: Problem, seed: int, budget_steps: float, operator: str,
             pruning: ASHAConfig | None, max_evals: int) -> Run:
    """Run 32 asynchronous workers until ``budget_steps`` training steps are spent."""
    top = problem.max_steps
    engine = Engine(problem.space, EngineConfig(
        max_evals=max_evals, islands=problem.islands, population_size=problem.population_size,
        operator=operator,
        initial_design="sobol", seed=seed, migration_interval=8, pruning=pruning,
    ))
    rungs = pruning.rungs if pruning else []
    events: list[tuple[float, int, int, int]] = []  # (time, uid, worker, step)
    running: dict[int, Training] = {}
    run, done_steps, best = Run(), 0.0, math.inf

    def spent(now: float) -> float:
        return done_steps + sum(tr.steps_by(now) for tr in running.values())

    def start(worker: int, now: float) -> None:
        task = engine.ask(worker)
        if task is None:
            return
        values, epoch = problem.curve(task, seed)
        tr = Training(task, worker, now, epoch, values, top)
        running[task.uid] = tr
        schedule(tr, 0)

    def schedule(tr: Training, after: int) -> None:
        # Between rungs nothing is decided, so only rung steps and the end are events.
        step = next((r for r in rungs if r > after), top)
        heapq.heappush(events, (tr.start + step * tr.epoch, tr.task.uid, tr.worker, step))

    for w in range(WORKERS):
        start(w, 0.0)
    now = 0.0
    while events:
        now, uid, worker, step = heapq.heappop(events)
        if spent(now) >= budget_steps:
            break
        tr = running[uid]
        value = float(tr.values[step - 1])
        if step < top and not engine.report(uid, step, value):
            schedule(tr, step)
            continue
        del running[uid]
        done_steps += step
        curve = tuple((r, float(tr.values[r - 1])) for r in (*rungs, top) if r <= step)
        if step < top:
            engine.tell(Result(uid=uid, worker=worker, fitness=None, state=EvalState.PRUNED,
                               error="pruned", curve=curve, t_start=tr.start, t_end=now))
            run.pruned += 1
        else:
            fitness = problem.fitness(tr.values)
            engine.tell(Result(uid=uid, worker=worker, fitness=fitness, curve=curve,
                               t_start=tr.start, t_end=now))
            run.complete += 1
            if fitness < best:
                best = fitness
                run.trace.append((spent(now), best))
        start(worker, now)
    run.steps, run.wall = min(spent(now), budget_steps), now
    return run


# -- the digits CNN at small scale: a table of real learning curves --------------------------------

DIGITS_EPOCHS = 15
REPO = Path(__file__).resolve().parent.parent


class _CurveContext:
    """What ``train_digits`` needs of a ctx; keeps every reported value."""

    def __init__(self) -> None:
        self.seed, self.device, self.cache = 0, "cpu", {}
        self.values: list[float] = []

    def report(self, step: int, value: float) -> None:
        self.values.append(float(value))

    def should_stop(self) -> bool:
        return False


def digits_problem(configs: int, epochs: int = DIGITS_EPOCHS) -> Problem:
    """Real validation-error curves of ``configs`` Sobol points of the digits_cnn space.

    Trained once (one thread, a few seconds each) and cached in the data directory. A proposed
    configuration gets the curve of the nearest trained one in the unit cube (a tabular
    benchmark), so the pruner decides on real learning curves.
    """
    import torch

    from evo_engine.scenario import load_scenario
    from evo_engine.sciml.advection import data_dir
    from evo_engine.sciml.digits import DigitsTask, train_digits
    from evo_engine.search.operators.designs import sobol

    space = load_scenario(REPO / "scenarios" / "digits_cnn.py", "cpu").space
    path = data_dir() / f"digits_curves_{configs}x{epochs}.npz"
    if path.exists():
        table = np.load(path)
        genomes, curves, seconds = table["genomes"], table["curves"], table["seconds"]
    else:
        torch.set_num_threads(1)
        genomes = sobol(configs, space.dim, np.random.default_rng(0))
        curves, seconds = np.ones((configs, epochs)), np.ones(configs)
        for i, g in enumerate(genomes):
            ctx, t0 = _CurveContext(), time.perf_counter()
            train_digits(space.decode(g), ctx, DigitsTask(epochs=epochs))
            got = np.asarray(ctx.values)  # a diverged training stops early: keep its last value
            curves[i, : got.size], curves[i, got.size:] = got, got[-1] if got.size else 1.0
            seconds[i] = (time.perf_counter() - t0) / max(got.size, 1)
            print(f"  digits table {i + 1}/{configs}: best error {curves[i].min():.3f}",
                  flush=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, genomes=genomes, curves=curves, seconds=seconds)

    def curve(task: Task, run_seed: int) -> tuple[np.ndarray, float]:
        i = int(np.argmin(((genomes - np.asarray(task.genome)) ** 2).sum(axis=1)))
        return curves[i], float(seconds[i])

    # The digits_cnn scenario's own islands and population (its cpu preset).
    return Problem(f"digits_cnn_table{configs}", space, epochs, curve, lambda v: float(v.min()),
                   islands=2, population_size=8)


# -- the report ----------------------------------------------------------------------------------


def compare(problem: Problem, operator: str, seeds: int, evals: int, asha: ASHAConfig,
            fixed_target: float | None = None) -> dict[str, object]:
    """Both runs for every seed; a table on stdout; the medians over seeds."""
    budget = float(evals * problem.max_steps)
    print(f"\n{problem.name}, {operator}: {WORKERS} asynchronous workers, budget {budget:.0f} "
          f"steps ({evals} complete trainings of {problem.max_steps}); ASHA eta {asha.eta}, "
          f"rungs {asha.rungs}")
    print(f"{'seed':>4} {'target':>8} {'steps w/o':>10} {'steps ASHA':>10} {'speedup':>8} "
          f"{'best w/o':>9} {'best ASHA':>9} {'complete':>9} {'pruned':>7} {'pruned %':>8}")
    rows = []
    for seed in range(seeds):
        without = simulate(problem, seed, budget, operator, None, evals)
        with_ = simulate(problem, seed, budget, operator, asha, 10**7)
        target = without.final_best
        row = {"steps_without": without.steps_to(target), "steps_with": with_.steps_to(target),
               "best_without": without.final_best, "best_with": with_.final_best}
        if fixed_target is not None:
            row["fixed_without"] = without.steps_to(fixed_target)
            row["fixed_with"] = with_.steps_to(fixed_target)
        rows.append(row)
        pruned_share = 1.0 - with_.complete * problem.max_steps / with_.steps
        print(f"{seed:>4} {target:>8.4f} {row['steps_without']:>10.0f} "
              f"{row['steps_with']:>10.0f} {row['steps_without'] / row['steps_with']:>8.2f} "
              f"{row['best_without']:>9.4f} {row['best_with']:>9.4f} {with_.complete:>9} "
              f"{with_.pruned:>7} {100 * pruned_share:>7.0f}%"
              + (f"   to {fixed_target}: {row['fixed_without']:.0f} w/o, {row['fixed_with']:.0f}"
                 " ASHA" if fixed_target is not None else ""))

    def med(key: str) -> float:
        return float(np.median([r[key] for r in rows]))

    out = {
        "steps_to_target_without": round(med("steps_without"), 1),
        "steps_to_target_with": round(med("steps_with"), 1),
        "speedup": round(med("steps_without") / med("steps_with"), 2),
        "final_best_without": round(med("best_without"), 5),
        "final_best_with": round(med("best_with"), 5),
        "final_best_ratio": round(med("best_with") / med("best_without"), 4),
        "seeds_reaching_target": sum(math.isfinite(r["steps_with"]) for r in rows),
        "budget_steps": budget,
        "rungs": asha.rungs,
    }
    print(f"median over {seeds} seeds: steps to target {out['steps_to_target_without']:.0f} "
          f"without, {out['steps_to_target_with']:.0f} with ASHA (speedup {out['speedup']}); "
          f"final best {out['final_best_without']:.4f} without, {out['final_best_with']:.4f} "
          f"with (ratio {out['final_best_ratio']})")
    if fixed_target is not None:
        out["fixed_target"] = fixed_target
        out["steps_to_fixed_target_without"] = round(med("fixed_without"), 1)
        out["steps_to_fixed_target_with"] = round(med("fixed_with"), 1)
        out["seeds_reaching_fixed_target_with"] = sum(
            math.isfinite(r["fixed_with"]) for r in rows)
        print(f"to the common target {fixed_target}: {out['steps_to_fixed_target_without']:.0f} "
              f"steps without, {out['steps_to_fixed_target_with']:.0f} with ASHA (medians; "
              f"{out['seeds_reaching_fixed_target_with']}/{seeds} seeds reach it with ASHA)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--evals", type=int, default=1024,
                    help="budget in complete trainings' worth of steps (default 1024 × 81)")
    ap.add_argument("--operators", default="es,ga",
                    help="comma-separated; the first one gives the headline fields")
    ap.add_argument("--eta", type=int, default=3)
    ap.add_argument("--min-steps", type=int, default=1)
    ap.add_argument("--digits", type=int, default=128, metavar="N",
                    help="also run on a table of N real digits CNN curves (0: skip)")
    ap.add_argument("--digits-evals", type=int, default=256)
    ap.add_argument("--target", type=float, default=None,
                    help="also report steps to this one fitness target for every seed and "
                         "operator, to compare operators on equal terms")
    args = ap.parse_args()

    t0 = time.perf_counter()
    operators = [o for o in args.operators.split(",") if o]
    asha = ASHAConfig(eta=args.eta, min_steps=args.min_steps, max_steps=MAX_STEPS)
    results = {op: compare(SYNTHETIC, op, args.seeds, args.evals, asha, args.target)
               for op in operators}
    digits: dict[str, object] = {}
    if args.digits:
        problem = digits_problem(args.digits)
        small = ASHAConfig(eta=args.eta, min_steps=args.min_steps, max_steps=problem.max_steps)
        digits = {op: compare(problem, op, args.seeds, args.digits_evals, small)
                  for op in operators}
    head = results[operators[0]]
    summary = {
        "benchmark": "early_stopping", "curves": "synthetic", "workers": WORKERS,
        "operator": operators[0], "seeds": args.seeds, "eta": asha.eta, "max_steps": MAX_STEPS,
        "target": args.target,
        **{k: head[k] for k in ("steps_to_target_without", "steps_to_target_with", "speedup",
                                "final_best_without", "final_best_with", "final_best_ratio")},
        "synthetic": results,
        "digits_cnn": digits,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
