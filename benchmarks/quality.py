"""Search quality against peers: 32 simulated asynchronous workers on HPO-like landscapes.

A discrete-event simulation drives each optimizer through ask/tell: every worker asks for a
configuration, "trains" for a lognormal time scaled by the configuration's cost, and tells the
observed loss back; results arrive in completion order, not in the order they were asked. A
synchronous method may answer "nothing now" (its generation barrier), and its workers idle.

Reported per landscape and method: the noise-free loss of the best-observed configuration after
100, 300 and 1000 evaluations (median over seeds) and the simulated wall time to 1000, in units
of a unit-cost evaluation's median duration (costlier configurations take longer). Baselines:
random search, a synchronous fixed-σ ES (what learning-to-learn does), Optuna's TPE and CMA-ES
samplers. Prints a table, then one JSON line.

    nice python benchmarks/quality.py                  # 5 seeds, all landscapes, 2 processes
    nice python benchmarks/quality.py --seeds 2 --landscapes lr_decay --methods es,tpe

Optuna and cmaes (which its CMA-ES sampler needs) are benchmark-only extras
(``pip install optuna cmaes``); evo_engine never imports them.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import sys
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _landscapes import LANDSCAPES, Landscape  # noqa: E402

from evo_engine.operators.base import reflect  # noqa: E402
from evo_engine.optimizer import Optimizer  # noqa: E402
from evo_engine.space import Categorical, Float, Space  # noqa: E402

CHECKPOINTS = (100, 300, 1000)


class AskTell(Protocol):
    """What the simulation needs from a method: ``ask`` may return None (a barrier)."""

    def ask(self) -> tuple[Any, dict[str, Any]] | None: ...

    def tell(self, handle: Any, value: float) -> None: ...


# -- our operators ---------------------------------------------------------------------------


class Ours:
    """evo_engine's Optimizer: the code path a user's own loop takes."""

    def __init__(self, space: Space, seed: int, operator: str, **kw: Any) -> None:
        self.opt = Optimizer(space, operator=operator, seed=seed, **kw)

    def ask(self) -> tuple[Any, dict[str, Any]]:
        cand = self.opt.ask()
        return cand, cand.params

    def tell(self, handle: Any, value: float) -> None:
        self.opt.tell(handle, value)


# -- learning-to-learn's ES: synchronous, fixed σ, from the middle of the box -------------------


class SyncFixedES:
    """OpenAI-style ES as learning-to-learn runs it: a generation of mirrored perturbations of
    fixed σ around a mean, rank-shaped gradient step, a barrier between generations.

    It works in the same unit-cube encoding as ours (a kindness: L2L works in raw parameter
    units, where one σ must serve every parameter's scale).
    """

    def __init__(
        self, space: Space, seed: int, pop: int = 32, sigma: float = 0.1, lr: float = 0.1
    ) -> None:
        self.space, self.pop, self.sigma, self.lr = space, pop, sigma, lr
        self.rng = np.random.default_rng(seed)
        self.mean = np.full(space.dim, 0.5)
        self._new_generation()

    def _new_generation(self) -> None:
        half = self.rng.normal(size=(self.pop // 2, self.space.dim))
        self.eps = np.concatenate([half, -half])
        self.values = np.full(self.pop, np.nan)
        self.issued = 0

    def ask(self) -> tuple[Any, dict[str, Any]] | None:
        if self.issued == self.pop:
            return None  # the barrier: wait for the whole generation
        i = self.issued
        self.issued += 1
        return i, self.space.decode(reflect(self.mean + self.sigma * self.eps[i]))

    def tell(self, handle: Any, value: float) -> None:
        self.values[handle] = value
        if np.isnan(self.values).any():
            return
        ranks = np.argsort(np.argsort(self.values))  # 0 = best
        utility = 0.5 - ranks / (self.pop - 1)  # centred ranks, best +0.5
        grad = utility @ self.eps / (self.pop * self.sigma)
        self.mean = reflect(self.mean + self.lr * grad)
        self._new_generation()


# -- optuna -----------------------------------------------------------------------------------


class OptunaMethod:
    """An Optuna study used through its own ask/tell interface, many trials running at once."""

    def __init__(self, space: Space, seed: int, sampler: str) -> None:
        import optuna
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        optuna.logging.set_verbosity(optuna.logging.ERROR)
        warnings.filterwarnings("ignore", module="optuna")
        if sampler == "tpe":
            # Optuna's advice for parallel workers: multivariate TPE with the constant liar.
            s = optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)
        else:
            s = optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
        self.study = optuna.create_study(sampler=s)
        self.dists: dict[str, Any] = {}
        for name, p in space.items():
            if isinstance(p, Categorical):
                self.dists[name] = CategoricalDistribution(list(p.choices))
            elif isinstance(p, Float):
                self.dists[name] = FloatDistribution(p.lo, p.hi, log=p.log)
            else:
                self.dists[name] = IntDistribution(int(p.lo), int(p.hi), log=p.log)

    def ask(self) -> tuple[Any, dict[str, Any]]:
        trial = self.study.ask(self.dists)
        return trial, dict(trial.params)

    def tell(self, handle: Any, value: float) -> None:
        self.study.tell(handle, value)


METHODS: dict[str, Callable[[Space, int], AskTell]] = {
    "es": lambda s, seed: Ours(s, seed, "es"),
    "es-self": lambda s, seed: Ours(s, seed, "es", operator_settings={"adaptation": "self"}),
    "ga": lambda s, seed: Ours(s, seed, "ga"),
    "random": lambda s, seed: Ours(s, seed, "random"),
    "sync-es": lambda s, seed: SyncFixedES(s, seed),
    "tpe": lambda s, seed: OptunaMethod(s, seed, "tpe"),
    "cmaes": lambda s, seed: OptunaMethod(s, seed, "cmaes"),
}
OURS = ("es", "es-self", "ga")
BASELINES = ("random", "sync-es", "tpe", "cmaes")


# -- the simulation ---------------------------------------------------------------------------


@dataclass
class RunResult:
    loss_at: dict[int, float]
    """Noise-free loss of the best-observed configuration after n evaluations."""
    wall_at: dict[int, float]
    seconds: float


def simulate(
    landscape: Landscape, method: str, seed: int, evals: int = 1000, workers: int = 32
) -> RunResult:
    """Run one method on one landscape with ``workers`` asynchronous simulated workers."""
    t0 = time.perf_counter()
    opt = METHODS[method](landscape.space, seed)
    # Durations and noise come from a stream of their own, the same for every method.
    world = np.random.default_rng([seed, 99])
    events: list[tuple[float, int, int, Any, dict[str, Any]]] = []
    idle: list[int] = list(range(workers))
    issued = done = 0
    seq = 0
    now = 0.0
    best_seen, best_true = math.inf, math.inf
    loss_at: dict[int, float] = {}
    wall_at: dict[int, float] = {}

    def dispatch() -> None:
        nonlocal issued, seq
        while idle and issued < evals:
            asked = opt.ask()
            if asked is None:
                return
            handle, params = asked
            worker = idle.pop()
            duration = float(world.lognormal(0.0, 0.5)) * landscape.cost(params)
            heapq.heappush(events, (now + duration, seq, worker, handle, params))
            seq += 1
            issued += 1

    dispatch()
    while events:
        now, _, worker, handle, params = heapq.heappop(events)
        observed = landscape.observe(params, world)
        opt.tell(handle, observed)
        done += 1
        if observed < best_seen:
            best_seen, best_true = observed, landscape.loss(params)
        if done in CHECKPOINTS:
            loss_at[done], wall_at[done] = best_true, now
        idle.append(worker)
        dispatch()
    return RunResult(loss_at, wall_at, time.perf_counter() - t0)


def _job(args: tuple[str, str, int, int]) -> tuple[str, str, int, RunResult]:
    name, method, seed, evals = args
    return name, method, seed, simulate(LANDSCAPES[name], method, seed, evals)


# -- reporting --------------------------------------------------------------------------------


def _median(runs: list[RunResult], key: str, n: int) -> float:
    return float(np.median([getattr(r, key)[n] for r in runs if n in getattr(r, key)]))


def summarise(
    results: dict[str, dict[str, list[RunResult]]], evals: int, operator: str
) -> dict[str, Any]:
    """Medians per landscape and method, and whether ``operator`` meets the issue's target."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    target: dict[str, Any] = {}
    checkpoints = [n for n in CHECKPOINTS if n <= evals]
    last = checkpoints[-1]
    for name, by_method in results.items():
        table[name] = {
            m: {
                **{str(n): _median(runs, "loss_at", n) for n in checkpoints},
                "wall": _median(runs, "wall_at", last),
                "cpu_s": float(np.median([r.seconds for r in runs])),
            }
            for m, runs in by_method.items()
        }
        baselines = {m: v[str(last)] for m, v in table[name].items() if m in BASELINES}
        if operator in table[name] and baselines:
            best_name = min(baselines, key=baselines.__getitem__)
            ours, theirs = table[name][operator][str(last)], baselines[best_name]
            target[name] = {
                "ours": ours,
                "best_baseline": best_name,
                "baseline": theirs,
                "ratio": ours / theirs,
                "within_10pct": ours <= 1.1 * theirs,
                "strictly_better": ours < theirs,
            }
    if target:
        better = sum(t["strictly_better"] for t in target.values())
        target_met = all(t["within_10pct"] for t in target.values()) and 2 * better >= len(target)
    else:
        better, target_met = 0, False
    return {
        "table": table,
        "target": {
            "operator": operator,
            "at": last,
            "landscapes": target,
            "strictly_better": better,
            "met": target_met,
        },
    }


def print_table(summary: dict[str, Any], evals: int) -> None:
    checkpoints = [n for n in CHECKPOINTS if n <= evals]
    head = "".join(f"{'@' + str(n):>10}" for n in checkpoints)
    for name, by_method in summary["table"].items():
        print(f"\n{name}: {LANDSCAPES[name].description} (floor {LANDSCAPES[name].floor})")
        print(f"  {'method':<9}{head}{'wall':>9}{'cpu s':>8}")
        for m, v in by_method.items():
            cells = "".join(f"{v[str(n)]:>10.4f}" for n in checkpoints)
            print(f"  {m:<9}{cells}{v['wall']:>9.1f}{v['cpu_s']:>8.1f}")
    t = summary["target"]
    print(f"\ntarget ({t['operator']} at {t['at']} evals vs the best baseline):")
    for name, v in t["landscapes"].items():
        verdict = (
            "better" if v["strictly_better"] else ("within 10%" if v["within_10pct"] else "MISSED")
        )
        print(
            f"  {name:<16}{v['ours']:.4f} vs {v['best_baseline']} {v['baseline']:.4f}"
            f"  ratio {v['ratio']:.3f}  {verdict}"
        )
    print(f"  strictly better on {t['strictly_better']}/{len(t['landscapes'])}; met: {t['met']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--evals", type=int, default=1000)
    ap.add_argument("--landscapes", default=",".join(LANDSCAPES))
    ap.add_argument("--methods", default=",".join((*OURS, *BASELINES)))
    ap.add_argument("--operator", default="es", help="our operator the target is checked for")
    ap.add_argument("--jobs", type=int, default=2, help="processes (the machine has 2 cores)")
    args = ap.parse_args(argv)
    names = args.landscapes.split(",")
    methods = args.methods.split(",")
    jobs = [(n, m, s, args.evals) for n in names for m in methods for s in range(args.seeds)]
    # Slow methods first, so the pool's last stragglers are short ones.
    jobs.sort(key=lambda j: j[1] not in ("tpe", "cmaes"))
    results: dict[str, dict[str, list[RunResult]]] = {n: {m: [] for m in methods} for n in names}
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for name, method, _, res in pool.map(_job, jobs):
            results[name][method].append(res)
    summary = summarise(results, args.evals, args.operator)
    print_table(summary, args.evals)
    print(f"\n{len(jobs)} runs in {time.perf_counter() - t0:.0f} s")
    summary.update(
        benchmark="quality",
        seeds=args.seeds,
        evals=args.evals,
        workers=32,
        wall_unit="median duration of a unit-cost evaluation",
    )
    print(json.dumps(summary, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
