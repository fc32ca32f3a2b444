"""Search quality against peers: 32 simulated asynchronous workers on HPO-like landscapes.

A discrete-event simulation drives each optimizer through ask/tell: every worker asks for a
configuration, "trains" for a lognormal time scaled by the configuration's cost, and tells the
observed loss back; results arrive in completion order, not in the order they were asked. A
synchronous method may answer "nothing now" (its generation barrier), and its workers idle.
Durations and noise come from a stream of their own, the same for every method.

Reported per landscape and method: the regret (noise-free loss of the configuration the
method *reports* as best, minus the landscape's floor) after 100, 300 and 1000 evaluations,
median and quartiles over the seeds. evo_engine reports its incumbent (the best estimated
mean, ``Optimizer.best``); every peer reports its best observed value, as its user would read
it. On a noisy landscape the two differ: the best observed is the luckiest draw. Landscapes
come in two groups (``_landscapes.py``): ``tuning``, the ones the operators' constants were
chosen on, and ``reporting``, written afterwards and used for nothing but the verdict. Each
group holds one real table (``tabular.py``: every configuration of a grid trained with 3
seeds, an observation is one recorded seed), in two encodings: ordered levels as ``Int``
indices, and every parameter ``Categorical``. A method that has evaluated every configuration
of such a finite space ends its run there (the engine never evaluates one twice by
accident) and keeps what it reports for the later checkpoints. The verdict, at each
checkpoint: the default operator (``surrogate``) is best of the baselines (``BASELINES``:
Optuna's TPE with its defaults, which since Optuna 5 are multivariate with the constant
liar, as Optuna advises for parallel workers, so ``tpe`` and ``tpe-mv`` coincide there; the
classic independent TPE; Optuna's CMA-ES; random search; the previous default ES) on at
least two thirds of the reporting landscapes, and never worse than 1.25 × the best; a tie
is not a win. Prints a table, the verdict, then one JSON line (with Optuna's version).
``--noise-free`` runs the landscapes without their noise (a table: the mean of its seeds):
the check that noise handling costs the deterministic case nothing.

``surrogate-race`` is the default with intensification (``intensify=3``, docs/noise.md); the
race length 3 was set before any landscape was run (SMAC-like) and not tuned.

    nice python benchmarks/quality.py --evals 300      # 5 seeds, reporting landscapes
    nice python benchmarks/quality.py --landscapes all --methods surrogate,es,ga,tpe-mv

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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import code_version  # noqa: E402
from _landscapes import LANDSCAPES, REPORTING, TUNING, Landscape  # noqa: E402

from evo_engine.optimizer import Optimizer  # noqa: E402
from evo_engine.search.dedupe import SpaceExhausted  # noqa: E402
from evo_engine.search.operators import DESIGNS  # noqa: E402
from evo_engine.search.operators.base import reflect  # noqa: E402
from evo_engine.space import Categorical, Float, Space  # noqa: E402

CHECKPOINTS = (32, 100, 300, 1000)
VERDICT_AT = (100, 300, 1000)


def _race_of(handle: Any) -> int | None:
    """The engine's race seed index of a re-evaluation on a common seed (``Candidate.info``),
    None for anything else, a peer's trial included."""
    info = getattr(handle, "info", None)
    race = info.get("race") if isinstance(info, dict) else None
    return int(race) if race is not None else None


class AskTell(Protocol):
    """What the simulation needs from a method: ``ask`` may return None (a barrier)."""

    def ask(self) -> tuple[Any, dict[str, Any]] | None: ...

    def tell(self, handle: Any, value: float) -> None: ...


# -- our operators ---------------------------------------------------------------------------


class Ours:
    """evo_engine's Optimizer: the code path a user's own loop takes."""

    def __init__(self, space: Space, seed: int, operator: str, **kw: Any) -> None:
        self.opt = Optimizer(space, operator=operator, seed=seed, **kw)

    def ask(self) -> tuple[Any, dict[str, Any]] | None:
        try:
            cand = self.opt.ask()
        except SpaceExhausted:  # a finite space (a table) all evaluated: the run ends early
            return None
        return cand, cand.params

    def tell(self, handle: Any, value: float) -> None:
        self.opt.tell(handle, value)

    def reported(self) -> dict[str, Any] | None:
        """The incumbent: the best estimated mean (what a run prints as best)."""
        best = self.opt.best
        return None if best is None else dict(best.params)


class DesignOnly:
    """Evaluates the points of one initial design, nothing else: n points for n evaluations.

    What a space-filling design alone achieves, the yardstick of an early phase (issue 15).
    """

    def __init__(self, space: Space, seed: int, design: str, n: int = 1000) -> None:
        self.space = space
        self.points = DESIGNS[design](n, space.dim, np.random.default_rng(seed))
        self.next = 0

    def ask(self) -> tuple[Any, dict[str, Any]]:
        g = self.points[self.next]
        self.next += 1
        return self.next, self.space.decode(g)

    def tell(self, handle: Any, value: float) -> None:
        pass


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
            # Its defaults, as a user gets them: since Optuna 5 these are multivariate with
            # the constant liar (single objective), so "tpe" and "tpe-mv" sample alike there.
            s = optuna.samplers.TPESampler(seed=seed)
        elif sampler == "tpe-indep":
            # The classic independent TPE without the liar (Optuna 4's defaults).
            s = optuna.samplers.TPESampler(seed=seed, multivariate=False, constant_liar=False)
        elif sampler == "tpe-mv":
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


def _design_only(design: str) -> Callable[[Space, int], AskTell]:
    # 100 points: the designs are measured at 32 and 100 evaluations.
    return lambda s, seed: DesignOnly(s, seed, design, n=100)


METHODS: dict[str, Callable[[Space, int], AskTell]] = {
    **{f"design:{d}": _design_only(d) for d in DESIGNS},
    "es": lambda s, seed: Ours(s, seed, "es"),
    "es-self": lambda s, seed: Ours(s, seed, "es", operator_settings={"adaptation": "self"}),
    "ga": lambda s, seed: Ours(s, seed, "ga"),
    # As the scenarios run it: the first 32 workers all get design points.
    "surrogate": lambda s, seed: Ours(
        s, seed, "surrogate", initial_design="hypertiling", population_size=32
    ),
    "surrogate-race": lambda s, seed: Ours(
        s, seed, "surrogate", initial_design="hypertiling", population_size=32, intensify=3
    ),
    "surrogate-rsa_lhs": lambda s, seed: Ours(
        s, seed, "surrogate", initial_design="rsa_lhs", population_size=32
    ),
    "random": lambda s, seed: Ours(s, seed, "random"),
    "sync-es": lambda s, seed: SyncFixedES(s, seed),
    "tpe": lambda s, seed: OptunaMethod(s, seed, "tpe"),
    "tpe-mv": lambda s, seed: OptunaMethod(s, seed, "tpe-mv"),
    "tpe-indep": lambda s, seed: OptunaMethod(s, seed, "tpe-indep"),
    "cmaes": lambda s, seed: OptunaMethod(s, seed, "cmaes"),
}
DEFAULT = "surrogate"
"""The operator the verdict is checked for (what scenarios use at these budgets)."""
BASELINES = ("tpe", "tpe-mv", "tpe-indep", "cmaes", "random", "es")
"""Optuna's TPE and CMA-ES with their defaults, TPE as Optuna advises for parallel workers
(multivariate, constant liar: Optuna 5's default, so the same as "tpe" there), the classic
independent TPE, random search, and the previous default ES."""


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
    """Run one method on one landscape with ``workers`` asynchronous simulated workers.

    At each checkpoint the score is the noise-free loss of what the method reports as best
    (``reported()`` where it has one, else its best observed configuration).
    """
    t0 = time.perf_counter()
    if method.startswith("design:"):  # the n-point design for n evaluations, not a prefix
        opt: AskTell = DesignOnly(landscape.space, seed, method.split(":", 1)[1], n=evals)
    else:
        opt = METHODS[method](landscape.space, seed)
    # Durations and noise come from a stream of their own, the same for every method.
    world = np.random.default_rng([seed, 99])
    observe = landscape.observer(world)
    events: list[tuple[float, int, int, Any, dict[str, Any]]] = []
    idle: list[int] = list(range(workers))
    issued = done = 0
    seq = 0
    now = 0.0
    best_seen, best_true = math.inf, math.inf
    reported = getattr(opt, "reported", None)
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

    def score(n: int) -> None:
        """Record, as at ``n`` evaluations, the noise-free loss of what the method reports."""
        mine = reported() if reported is not None else None
        loss_at[n] = best_true if mine is None else landscape.loss(mine)
        wall_at[n] = now

    dispatch()
    while events:
        now, _, worker, handle, params = heapq.heappop(events)
        observed = observe(params, _race_of(handle))
        opt.tell(handle, observed)
        done += 1
        if observed < best_seen:
            best_seen, best_true = observed, landscape.loss(params)
        if done in CHECKPOINTS:
            score(done)
        idle.append(worker)
        dispatch()
    # A run that ended below its budget (every configuration of a finite space evaluated)
    # keeps what it reports at the end, as its user would.
    for n in CHECKPOINTS:
        if done < n <= evals:
            score(n)
    return RunResult(loss_at, wall_at, time.perf_counter() - t0)


def _job(args: tuple[str, str, int, int, bool]) -> tuple[str, str, int, RunResult]:
    name, method, seed, evals, noise_free = args
    if method.startswith("design:"):
        evals = min(evals, 100)
    landscape = LANDSCAPES[name]
    if noise_free:
        landscape = replace(landscape, noise=0.0)
    try:
        return name, method, seed, simulate(landscape, method, seed, evals)
    except ValueError as exc:  # a method that refuses the space (a design or baseline)
        print(f"{name} {method}: {exc}", file=sys.stderr)
        return name, method, seed, RunResult({}, {}, 0.0)


# -- reporting --------------------------------------------------------------------------------


def _regrets(runs: list[RunResult], n: int, floor: float) -> np.ndarray:
    return np.array([r.loss_at[n] - floor for r in runs if n in r.loss_at])


def _paired(ours: list[RunResult], theirs: list[RunResult], n: int) -> dict[str, int]:
    """Seed by seed (the runs of a method are in seed order): how often ``ours`` reported a
    better, a worse or an equal configuration at ``n`` evaluations than ``theirs``."""
    pairs = [(a.loss_at[n], b.loss_at[n]) for a, b in zip(ours, theirs, strict=True)
             if n in a.loss_at and n in b.loss_at]
    return {
        "wins": sum(a < b for a, b in pairs),
        "losses": sum(a > b for a, b in pairs),
        "ties": sum(a == b for a, b in pairs),
    }


def summarise(
    results: dict[str, dict[str, list[RunResult]]], evals: int, operator: str
) -> dict[str, Any]:
    """Median regret (and its quartiles) per landscape, method and checkpoint, and the verdict.

    Regret is the noise-free loss of the best-observed configuration minus the landscape's
    floor. The verdict is checked on the reporting landscapes only, at every checkpoint:
    ``operator``'s median regret must be the best of the baselines on at least two thirds
    of them and never above 1.25 × the best baseline's. Beside each verdict, the seed-by-seed
    count against that best baseline (``paired``): a median is one number of a few seeds.
    """
    checkpoints = [n for n in CHECKPOINTS if n <= evals]
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for name, by_method in results.items():
        floor = LANDSCAPES[name].floor
        table[name] = {}
        for m, runs in by_method.items():
            cell: dict[str, Any] = {"cpu_s": float(np.median([r.seconds for r in runs]))}
            for n in checkpoints:
                reg = _regrets(runs, n, floor)
                if reg.size == 0:
                    continue
                q1, med, q3 = np.percentile(reg, [25, 50, 75])
                cell[str(n)] = {"median": float(med), "q1": float(q1), "q3": float(q3)}
            table[name][m] = cell
    verdict: dict[str, Any] = {}
    for n in (n for n in checkpoints if n in VERDICT_AT):
        rows: dict[str, Any] = {}
        for name in results:
            if name not in REPORTING or str(n) not in table[name].get(operator, {}):
                continue
            base = {
                m: table[name][m][str(n)]["median"]
                for m in table[name]
                if m in BASELINES and str(n) in table[name][m]
            }
            if not base:
                continue
            best = min(base, key=base.__getitem__)
            ours = table[name][operator][str(n)]["median"]
            ratio = ours / base[best] if base[best] > 0 else (1.0 if ours <= 0 else math.inf)
            rows[name] = {
                "ours": ours,
                "best_baseline": best,
                "baseline": base[best],
                "ratio": ratio,
                "best": ours < base[best],  # a tie is not a win
                "tie": ours == base[best],
                "within_125": ratio <= 1.25,
                "paired": _paired(results[name][operator], results[name][best], n),
            }
        if rows:
            wins = sum(r["best"] for r in rows.values())
            verdict[str(n)] = {
                "landscapes": rows,
                "best_on": wins,
                "of": len(rows),
                "met": 3 * wins >= 2 * len(rows) and all(r["within_125"] for r in rows.values()),
            }
    return {"table": table, "verdict": {"operator": operator, "at": verdict}}


def print_table(summary: dict[str, Any], evals: int) -> None:
    checkpoints = [n for n in CHECKPOINTS if n <= evals]
    head = "".join(f"{'@' + str(n):>22}" for n in checkpoints)
    for name, by_method in summary["table"].items():
        ls = LANDSCAPES[name]
        role = "reporting" if name in REPORTING else "tuning"
        print(f"\n{name} [{role}]: {ls.description}")
        print(f"  {'method':<10}{head}{'cpu s':>8}   (median regret [q1, q3] over seeds)")
        for m, v in by_method.items():
            cells = "".join(
                f"{v[str(n)]['median']:>8.4f} [{v[str(n)]['q1']:.3f},{v[str(n)]['q3']:.3f}]"
                if str(n) in v
                else f"{'-':>22}"
                for n in checkpoints
            )
            print(f"  {m:<10}{cells}{v['cpu_s']:>8.1f}")
    op = summary["verdict"]["operator"]
    for n, v in summary["verdict"]["at"].items():
        print(f"\nverdict at {n} evaluations ({op} vs the best of {', '.join(BASELINES)};")
        print("  last column: seeds on which it reported a better/worse/equal configuration)")
        width = max(16, *(len(name) + 1 for name in v["landscapes"]))
        for name, r in v["landscapes"].items():
            tag = "best" if r["best"] else ("tie" if r.get("tie") else (
                "within 1.25x" if r["within_125"] else "MISSED"))
            pr = r["paired"]
            print(
                f"  {name:<{width}}{r['ours']:.4f} vs {r['best_baseline']} {r['baseline']:.4f}"
                f"  ratio {r['ratio']:.2f}  {tag:<12} {pr['wins']}/{pr['losses']}/{pr['ties']}"
            )
        print(f"  best on {v['best_on']}/{v['of']}; target met: {v['met']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--evals", type=int, default=1000)
    ap.add_argument(
        "--landscapes", default="reporting", help="reporting, tuning, all, or names (a,b,...)"
    )
    ap.add_argument("--methods", default=",".join((DEFAULT, *BASELINES)))
    ap.add_argument("--operator", default=DEFAULT, help="the method the verdict is checked for")
    ap.add_argument("--jobs", type=int, default=2, help="processes (the machine has 2 cores)")
    ap.add_argument("--noise-free", action="store_true",
                    help="observe every landscape without its noise (the deterministic check)")
    args = ap.parse_args(argv)
    groups = {"reporting": list(REPORTING), "tuning": list(TUNING), "all": list(LANDSCAPES)}
    names = groups.get(args.landscapes) or args.landscapes.split(",")
    methods = args.methods.split(",")
    unknown = [n for n in names if n not in LANDSCAPES] + [m for m in methods if m not in METHODS]
    if unknown:
        print(f"quality.py: unknown landscape or method {unknown}", file=sys.stderr)
        return 2
    code = code_version()  # before the runs: commits may land meanwhile
    jobs = [(n, m, s, args.evals, args.noise_free) for n in names for m in methods
            for s in range(args.seeds)]
    # Slow methods first, so the pool's last stragglers are short ones.
    jobs.sort(key=lambda j: not (j[1].startswith("tpe") or j[1] in ("cmaes", "surrogate")))
    results: dict[str, dict[str, list[RunResult]]] = {n: {m: [] for m in methods} for n in names}
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        done = sorted(pool.map(_job, jobs), key=lambda r: r[2])
    # Each method's runs in seed order: the verdict's seed-by-seed count pairs them by index.
    for name, method, _, res in done:
        results[name][method].append(res)
    summary = summarise(results, args.evals, args.operator)
    print_table(summary, args.evals)
    print(f"\n{len(jobs)} runs in {time.perf_counter() - t0:.0f} s; optuna {_optuna_version()}")
    summary.update(
        benchmark="quality",
        **code,
        optuna=_optuna_version(),
        python=sys.version.split()[0],
        numpy=np.__version__,
        noise_free=args.noise_free,
        command=" ".join(sys.argv),
        seeds=args.seeds,
        evals=args.evals,
        workers=32,
        reporting=[n for n in names if n in REPORTING],
        tuning=[n for n in names if n in TUNING],
    )
    print(json.dumps(summary, separators=(",", ":")))
    return 0


def _optuna_version() -> str | None:
    try:
        import optuna
    except ImportError:
        return None
    return str(optuna.__version__)


if __name__ == "__main__":
    raise SystemExit(main())
