"""Hypervolume on problems with known fronts: evo_engine's Pareto search vs Optuna's NSGA-II and MOTPE.

Problems (all minimised): ZDT1, ZDT2, ZDT3 (10 variables), DTLZ2 with 3 objectives in 4 and
8 variables, and ZDT1-mixed (4 floats, 4 integers on a 0..20 grid, one categorical that shifts
g by 0, 0.5 or 1). Each method runs sequentially (one evaluation at a time, as a user's
ask/tell loop does) for 300 evaluations; the hypervolume of every feasible evaluation so far is
taken at 100 and 300, against a fixed reference point that every possible point dominates
(ZDT: (1.1, 11); DTLZ2: 1.1·(1 + k/4) per objective, k = variables − 2), so every
evaluation counts. Seeds 0..S−1; median and quartiles per (problem, budget, method).

Constants (evo_engine's operator and population size) are chosen on the TUNING problems
(``--tune``: the best median hypervolume at 300, summed over the TUNING problems, normalised
per problem) and reported on the disjoint REPORTING problems; the tuning numbers are printed
too, marked as such. Optuna's samplers run with their defaults, as users run them (NSGA-II's
population 50; TPESampler's multi-objective mode is MOTPE).

    nice -n 10 python benchmarks/multiobjective.py              # reporting set, tuned constants
    nice -n 10 python benchmarks/multiobjective.py --tune       # the tuning grid first

Needs optuna (5.1.0 measured); prints one JSON line last.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evo_engine import Optimizer  # noqa: E402
from evo_engine.search.pareto import hypervolume  # noqa: E402
from evo_engine.space import Categorical, Float, Int, Space  # noqa: E402

BUDGETS = (100, 300)
TUNING = ("zdt1", "dtlz2_4")
REPORTING = ("zdt2", "zdt3", "dtlz2_8", "zdt1_mixed")
GRID = [("ga", 16), ("ga", 32), ("es", 16), ("surrogate", 16)]
TUNED = ("surrogate", 16)
"""Chosen by ``--tune`` on TUNING (2026-12-06; see docs/benchmarks/multiobjective.txt)."""


# -- problems ---------------------------------------------------------------------------------


def _zdt_g(x: np.ndarray) -> float:
    return 1.0 + 9.0 * float(np.mean(x[1:]))


def zdt1(x: np.ndarray) -> tuple[float, ...]:
    g = _zdt_g(x)
    return float(x[0]), g * (1.0 - math.sqrt(x[0] / g))


def zdt2(x: np.ndarray) -> tuple[float, ...]:
    g = _zdt_g(x)
    return float(x[0]), g * (1.0 - (x[0] / g) ** 2)


def zdt3(x: np.ndarray) -> tuple[float, ...]:
    g = _zdt_g(x)
    f1 = float(x[0])
    return f1, g * (1.0 - math.sqrt(f1 / g) - f1 / g * math.sin(10 * math.pi * f1))


def dtlz2(x: np.ndarray) -> tuple[float, ...]:
    g = float(np.sum((x[2:] - 0.5) ** 2))
    a, b = x[0] * math.pi / 2, x[1] * math.pi / 2
    return ((1 + g) * math.cos(a) * math.cos(b), (1 + g) * math.cos(a) * math.sin(b),
            (1 + g) * math.sin(a))


SHIFT = {"a": 0.0, "b": 0.5, "c": 1.0}


def zdt1_mixed(p: dict[str, Any]) -> tuple[float, ...]:
    x = np.array([p[f"x{i}"] for i in range(4)] + [p[f"n{i}"] / 20 for i in range(4)])
    g = _zdt_g(x) + SHIFT[p["c"]]
    return float(x[0]), g * (1.0 - math.sqrt(x[0] / g))


def _floats(d: int) -> dict[str, Any]:
    return {f"x{i}": Float(0.0, 1.0) for i in range(d)}


PROBLEMS: dict[str, tuple[dict[str, Any], Callable[[dict[str, Any]], tuple[float, ...]], list[float]]] = {
    "zdt1": (_floats(10), lambda p: zdt1(np.array([p[f"x{i}"] for i in range(10)])), [1.1, 11.0]),
    "zdt2": (_floats(10), lambda p: zdt2(np.array([p[f"x{i}"] for i in range(10)])), [1.1, 11.0]),
    "zdt3": (_floats(10), lambda p: zdt3(np.array([p[f"x{i}"] for i in range(10)])), [1.1, 11.0]),
    "dtlz2_4": (_floats(4), lambda p: dtlz2(np.array([p[f"x{i}"] for i in range(4)])),
                [1.1 * 1.5] * 3),
    "dtlz2_8": (_floats(8), lambda p: dtlz2(np.array([p[f"x{i}"] for i in range(8)])),
                [1.1 * 2.5] * 3),
    "zdt1_mixed": ({**_floats(4), **{f"n{i}": Int(0, 20) for i in range(4)},
                    "c": Categorical(["a", "b", "c"])}, zdt1_mixed, [1.1, 12.0]),
}


# -- methods ----------------------------------------------------------------------------------


def run_evo(problem: str, seed: int, operator: str, population: int) -> list[tuple[float, ...]]:
    params, fn, _ = PROBLEMS[problem]
    space = Space(**params)
    m = len(PROBLEMS[problem][2])
    names = [f"f{k}" for k in range(m)]
    opt = Optimizer(space, operator=operator, seed=seed, population_size=population,
                    objectives=names)
    out = []
    for _ in range(BUDGETS[-1]):
        cand = opt.ask()
        f = fn(cand.params)
        opt.tell(cand, dict(zip(names, f)))
        out.append(f)
    return out


def run_optuna(problem: str, seed: int, sampler: str) -> list[tuple[float, ...]]:
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore")
    params, fn, ref = PROBLEMS[problem]
    dists = {}
    for name, p in params.items():
        if p.kind == "float":
            dists[name] = FloatDistribution(p.lo, p.hi)
        elif p.kind == "int":
            dists[name] = IntDistribution(p.lo, p.hi)
        else:
            dists[name] = CategoricalDistribution(list(p.choices))
    s = (optuna.samplers.NSGAIISampler(seed=seed) if sampler == "nsga2"
         else optuna.samplers.TPESampler(seed=seed))
    study = optuna.create_study(directions=["minimize"] * len(ref), sampler=s)
    out = []
    for _ in range(BUDGETS[-1]):
        trial = study.ask(dists)
        f = fn(trial.params)
        study.tell(trial, list(f))
        out.append(f)
    return out


def _job(args: tuple[str, str, int]) -> tuple[str, str, int, list[float], float]:
    problem, method, seed = args
    t0 = time.process_time()
    if method.startswith("evo:"):
        _, op, pop = method.split(":")
        F = run_evo(problem, seed, op, int(pop))
    else:
        F = run_optuna(problem, seed, method)
    ref = PROBLEMS[problem][2]
    arr = np.array(F)
    hv = [hypervolume(arr[:b], ref) for b in BUDGETS]
    return problem, method, seed, hv, time.process_time() - t0


def run_all(problems: tuple[str, ...], methods: list[str], seeds: int,
            jobs: int) -> dict[str, dict[str, dict[str, list[float]]]]:
    todo = [(p, m, s) for p in problems for m in methods for s in range(seeds)]
    out: dict[str, dict[str, dict[str, list[float]]]] = {}
    cpu: dict[str, float] = {}
    with ProcessPoolExecutor(jobs) as pool:
        for problem, method, _seed, hv, secs in pool.map(_job, todo):
            for b, v in zip(BUDGETS, hv):
                out.setdefault(problem, {}).setdefault(str(b), {}).setdefault(method, []).append(v)
            cpu[method] = cpu.get(method, 0.0) + secs
    print("CPU seconds per method: " + ", ".join(f"{k} {v:.0f}" for k, v in cpu.items()))
    return out


def quartiles(v: list[float]) -> list[float]:
    return [round(float(q), 4) for q in np.percentile(v, [25, 50, 75])]


def table(results: dict[str, dict[str, dict[str, list[float]]]], label: str) -> dict[str, Any]:
    """Print median [q1, q3] per (problem, budget, method); return the summary with verdicts."""
    summary: dict[str, Any] = {}
    wins = within = pairs = 0
    for problem, by_budget in results.items():
        for b, by_method in by_budget.items():
            stats = {m: quartiles(v) for m, v in by_method.items()}
            ours = [m for m in stats if m.startswith("evo:")]
            peers = [m for m in stats if not m.startswith("evo:")]
            line = f"{label:9s} {problem:11s} {b:>4s}  " + "  ".join(
                f"{m} {s[1]:.4f} [{s[0]:.4f}, {s[2]:.4f}]" for m, s in stats.items())
            verdict = None
            if len(ours) == 1 and peers:  # the tuning grid has several: no verdict there
                us = stats[ours[0]][1]
                best_peer = max(stats[m][1] for m in peers)
                pairs += 1
                if us > best_peer:
                    wins += 1
                    verdict = "best"
                elif us >= 0.95 * best_peer:
                    within += 1
                    verdict = "within 5%"
                else:
                    verdict = f"{100 * (1 - us / best_peer):.1f}% behind"
                line += f"  -> {verdict}"
            print(line)
            summary[f"{problem}@{b}"] = {"stats": stats, "verdict": verdict}
    return {"pairs": summary, "wins": wins, "within_5pct": within, "n_pairs": pairs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--tune", action="store_true", help="run the tuning grid on TUNING first")
    ap.add_argument("--problems", nargs="*", help="only these (default: the REPORTING set)")
    args = ap.parse_args(argv)
    import optuna

    print(f"optuna {optuna.__version__}, numpy {np.__version__}, seeds {args.seeds}")
    t0 = time.perf_counter()
    out: dict[str, Any] = {"benchmark": "multiobjective", "optuna": optuna.__version__,
                           "seeds": args.seeds, "budgets": list(BUDGETS)}
    tuned = TUNED
    if args.tune:
        methods = [f"evo:{op}:{pop}" for op, pop in GRID] + ["nsga2", "motpe"]
        res = run_all(TUNING, methods, args.seeds, args.jobs)
        out["tuning"] = table(res, "TUNING")
        score = {}
        for op, pop in GRID:
            m = f"evo:{op}:{pop}"
            score[(op, pop)] = sum(
                float(np.median(res[p]["300"][m])) / max(float(np.median(res[p]["300"][k]))
                                                         for k in methods)
                for p in TUNING)
        tuned = max(score, key=lambda k: score[k])
        print(f"tuned on {TUNING}: {tuned[0]} population {tuned[1]} "
              f"(scores {', '.join(f'{k[0]}:{k[1]} {v:.4f}' for k, v in score.items())})")
    problems = tuple(args.problems) if args.problems else REPORTING
    methods = [f"evo:{tuned[0]}:{tuned[1]}", "nsga2", "motpe"]
    res = run_all(problems, methods, args.seeds, args.jobs)
    out["constants"] = {"operator": tuned[0], "population_size": tuned[1],
                        "tuned_on": list(TUNING)}
    out["reporting"] = table(res, "REPORTING")
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
