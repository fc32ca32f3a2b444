"""The verdict on the real task: the engine's default vs random search, Optuna TPE and PDEBench's
default configuration, over several independent searches, scored on TEST data.

Arms (per scenario, ``advection_lr`` and/or ``advection_multi``):

- ``engine``: the scenario's own operator, population, design and settings, intensification
  included (what ``python -m evo_engine run`` does), through ``Optimizer``; its pick is its
  incumbent (the best estimated mean, docs/noise.md);
- ``random``: random search in the same space and budget, uniform from its first evaluation
  (not the engine's design); its pick is its best observed;
- ``tpe``: Optuna's TPE as a user running it in parallel would configure it (multivariate,
  constant liar), its version recorded; its pick is ``study.best_trial``;
- ``default``: PDEBench's default configuration (no search).

Search k of every arm has the search seed k + 1: its initial design, its sampler and its
trainings' seeds differ from search k' of the same arm (``--searches N`` runs k = 0..N-1;
``--first-seed F`` runs search seeds F..F+N-1, new searches for a verdict on seeds no tuning
has seen, in the same folders ``search{k}``).
Each search's pick is retrained with ``--seeds`` fresh seeds (never a search's) and scored on
the TEST split, which no search sees. Reported per arm: median and quartiles of the mean test
fitness over searches, and paired wins of the engine against each arm (search k vs search k;
a tie is a tie). Never best-of-N.

Resumable: every search has its own directory under ``--out`` (optimizer state, or Optuna
journal and pickled sampler, the evaluations told, and ``final.json`` once its pick was
retrained); run the same command again after a stop and finished searches are skipped, a
stopped one continues, also from a copy of ``--out`` on another machine. Each search lists
the commits it ran on (``commits``, from its ``commits.txt``) and the verdict all of them.

    nice python benchmarks/advection.py --scenarios lr --searches 5       # cpu preset
    nice python benchmarks/advection.py --scenarios lr --searches 1 --evals 2 --epochs 1  # smoke

Prints progress to stderr and one final JSON line to stdout (commit, versions, machine,
command, cost per arm). Not a test.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import os
import pickle
import platform
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import code_version  # noqa: E402

from evo_engine.context import Context  # noqa: E402
from evo_engine.optimizer import Optimizer
from evo_engine.scenario import Scenario, load_scenario
from evo_engine.sciml.batched import train_advection_batch
from evo_engine.sciml.presets import advection_task
from evo_engine.sciml.training import (
    AdvectionTask,
    TrainingDiverged,
    advection_test_metrics,
    prepare_advection,
    train_advection,
)
from evo_engine.space import Categorical, Float, Space

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "scenarios"
FINAL_SEEDS_FROM = 900_000
"""Retraining seeds: the same for every arm (paired), disjoint from every search's seeds."""
ARMS = ("engine", "random", "tpe")
_CACHE: dict = {}  # one per worker process: the data set is read once


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _search_eval(params_list: list[dict], seeds: list[int],
                 task: AdvectionTask) -> list[tuple[float, float]]:
    """Train a batch of parameter sets (one at a time, or as one stack when there are several:
    ``train_advection_batch``, what ``--batch K`` makes a worker do); per member its fitness (NaN
    for a failed training) and its share of the CPU seconds."""
    t0 = time.process_time()
    ctxs = [Context.standalone(seed, _CACHE) for seed in seeds]
    if len(params_list) == 1:
        try:
            records: list[Any] = [train_advection(params_list[0], ctxs[0], task)]
        except Exception as exc:  # noqa: BLE001 - a failed training is a failed evaluation
            records = [exc]
    else:
        records = train_advection_batch(params_list, ctxs, task)
    share = (time.process_time() - t0) / len(params_list)
    out = []
    for rec in records:
        if isinstance(rec, BaseException):
            print(f"  a training failed: {rec!r}", file=sys.stderr)
            out.append((math.nan, share))
        else:
            out.append((float(rec["fitness"]), share))
    return out


def _final_eval(params: dict, seed: int, task: AdvectionTask) -> dict[str, Any]:
    """One retraining of a pick, scored on TEST; ``{"diverged": why}`` if it diverged."""
    try:
        return advection_test_metrics(params, Context.standalone(seed, _CACHE), task)
    except TrainingDiverged as exc:
        return {"diverged": str(exc)}


def _training_seed(search: int, n: int) -> int:
    """A search's n-th training seed (searches never share one; retraining seeds are apart)."""
    return 1000 + 10_000 * search + n


# -- one search, resumable ---------------------------------------------------------------------


class EngineSearch:
    """evo_engine's Optimizer with the scenario's settings; state in ``opt.json`` (none kept
    with ``folder=None``: the recorded-table replay, ``advection_table.py``)."""

    def __init__(self, scenario: Scenario, operator: str, seed: int,
                 folder: Path | None) -> None:
        self.path = None if folder is None else folder / "opt.json"
        if self.path is not None and self.path.exists():
            self.opt = Optimizer.load(self.path, space=scenario.space)
            return
        own = operator == scenario.operator
        self.opt = Optimizer(
            scenario.space, operator=operator, seed=seed,
            population_size=scenario.population_size, islands=scenario.islands,
            # random search samples uniformly from the first evaluation, as its users run it
            # (not the engine's space-filling design: that would share the engine's first points)
            initial_design=scenario.initial_design if own else "random",
            operator_settings=dict(scenario.operator_settings) if own else {},
            migration_interval=scenario.migration_interval, migrants=scenario.migrants,
            repeats=scenario.repeats if own else 0, intensify=scenario.intensify if own else 0,
        )

    @property
    def told(self) -> int:
        return self.opt.n_told

    def ask(self, search: int) -> tuple[Any, dict, int]:
        cand = self.opt.ask()
        # The engine's own seed: it depends on the search seed, and races share theirs.
        return cand, dict(cand.params), cand.seed

    def tell(self, handle: Any, value: float) -> None:
        self.opt.tell(handle, value)
        if self.path is not None:
            self.opt.save(self.path)

    def pick(self) -> dict | None:
        best = self.opt.best
        return None if best is None else dict(best.params)


class TPESearch:
    """Optuna TPE, multivariate with the constant liar; an Optuna journal file per search (in
    memory with ``folder=None``)."""

    def __init__(self, space: Space, seed: int, folder: Path | None) -> None:
        import optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        optuna.logging.set_verbosity(optuna.logging.ERROR)
        sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)
        self.dists = _optuna_distributions(space)
        self.sampler_file = None if folder is None else folder / "sampler.pkl"
        if folder is None:
            self.abandoned_file = None
            self.study = optuna.create_study(sampler=sampler)
            return
        # The journal holds the trials but not the sampler's random state: a sampler made
        # afresh with the seed would draw its first points again. Resume the pickled one (how
        # Optuna resumes a sampler); a journal written before it was kept gets a seed drawn
        # from its length in trials, so at least it does not replay.
        if self.sampler_file.exists():
            sampler = pickle.loads(self.sampler_file.read_bytes())
        storage = JournalStorage(JournalFileBackend(str(folder / "optuna.journal")))
        self.study = optuna.create_study(study_name="search", storage=storage, sampler=sampler,
                                         load_if_exists=True)
        if not self.sampler_file.exists() and (n := len(self.study.get_trials(deepcopy=False))):
            again = int(np.random.SeedSequence([seed, n]).generate_state(1)[0])
            self.study.sampler = optuna.samplers.TPESampler(seed=again, multivariate=True,
                                                            constant_liar=True)
        # Trials running when the benchmark stopped never finished: fail them, and do not
        # count them against the budget (the engine's arm re-issues its own the same way).
        self.abandoned_file = folder / "abandoned.json"
        abandoned = self._abandoned()
        for t in self.study.get_trials(deepcopy=False):
            if t.state == optuna.trial.TrialState.RUNNING:
                self.study.tell(t.number, state=optuna.trial.TrialState.FAIL)
                abandoned.append(t.number)
        self.abandoned_file.write_text(json.dumps(abandoned))

    @property
    def told(self) -> int:
        import optuna

        done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)
        skip = set(self._abandoned())
        return sum(t.state in done and t.number not in skip
                   for t in self.study.get_trials(deepcopy=False))

    def _abandoned(self) -> list[int]:
        f = self.abandoned_file
        return [int(n) for n in json.loads(f.read_text())] if f is not None and f.exists() else []

    def ask(self, search: int) -> tuple[Any, dict, int]:
        trial = self.study.ask(self.dists)
        if self.sampler_file is not None:  # its random state moved: keep it for a resume
            tmp = self.sampler_file.with_name(self.sampler_file.name + ".tmp")
            tmp.write_bytes(pickle.dumps(self.study.sampler))
            os.replace(tmp, self.sampler_file)
        return trial, dict(trial.params), _training_seed(search, trial.number)

    def tell(self, handle: Any, value: float) -> None:
        import optuna

        if math.isfinite(value):
            self.study.tell(handle, value)
        else:
            self.study.tell(handle, state=optuna.trial.TrialState.FAIL)

    def pick(self) -> dict | None:
        try:
            return dict(self.study.best_trial.params)
        except ValueError:
            return None


def _optuna_distributions(space: Space) -> dict[str, Any]:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, Any] = {}
    for name, p in space.items():
        if isinstance(p, Categorical):
            out[name] = CategoricalDistribution(list(p.choices))
        elif isinstance(p, Float):
            out[name] = FloatDistribution(p.lo, p.hi, log=p.log)
        else:
            out[name] = IntDistribution(int(p.lo), int(p.hi), log=p.log)
    return out


def run_search(method: Any, evals: int, search: int, pool: ProcessPoolExecutor, jobs: int,
               batch: int, task: AdvectionTask, label: str, log: Path) -> dict[str, Any]:
    """Run (or continue) one search to ``evals`` evaluations; its pick and its CPU cost.

    ``jobs`` batches at a time, each of up to ``batch`` candidates asked one after another
    (the engine and TPE's constant liar see the others pending), as ``jobs`` workers with
    ``--batch`` run them."""
    running: dict[Future, list[tuple[Any, dict, int]]] = {}
    cpu = 0.0

    def pending() -> int:
        return sum(len(b) for b in running.values())

    while method.told + pending() < evals or running:
        while method.told + pending() < evals and len(running) < jobs:
            n = min(batch, evals - method.told - pending())
            asked = [method.ask(search) for _ in range(n)]
            fut = pool.submit(_search_eval, [a[1] for a in asked], [a[2] for a in asked], task)
            running[fut] = asked
        finished, _ = wait(running, return_when=FIRST_COMPLETED)
        for fut in finished:
            asked = running.pop(fut)
            try:
                values = fut.result()
            except Exception as exc:  # noqa: BLE001 - a failed worker fails its batch
                print(f"  {label}: a training failed: {exc}", file=sys.stderr)
                values = [(math.nan, 0.0)] * len(asked)
            for (handle, params, seed), (fitness, seconds) in zip(asked, values, strict=True):
                cpu += seconds
                method.tell(handle, fitness)
                with log.open("a") as f:
                    f.write(json.dumps({"params": params, "seed": seed, "fitness": fitness,
                                        "cpu_s": round(seconds, 2)}) + "\n")
                print(f"  {label} {method.told}/{evals}: {fitness:.4f}", file=sys.stderr)
    pick = method.pick()
    if pick is None:
        raise RuntimeError(f"every evaluation of {label} failed")
    return {"params": pick, "search_cpu_s_this_job": round(cpu, 1)}


def score_on_test(params: dict, seeds: list[int], pool: Any,
                  task: AdvectionTask) -> dict[str, Any]:
    """Retrain ``params`` with each seed; test fitness mean ± std and test nRMSE.

    A retraining that diverges is left out of the mean and counted (``retrainings_diverged``,
    as ``advection_table.py`` counts a pick's diverged trainings); a pick whose every
    retraining diverged scores inf, worse than any (its user has no model). A pick near the
    cliff (lr ≈ 0.02) can train with one seed and diverge with another: TPE's search 12 did."""
    records = list(pool.map(_final_eval, [params] * len(seeds), seeds, [task] * len(seeds)))
    ok = [r for r in records if "diverged" not in r]
    fitness = [r["test_fitness"] for r in ok]
    return {
        "test_fitness": float(np.mean(fitness)) if fitness else math.inf,
        "test_fitness_std": float(np.std(fitness, ddof=1)) if len(fitness) > 1 else math.nan,
        "test_fitness_per_seed": [None if "diverged" in r else round(r["test_fitness"], 6)
                                  for r in records],
        "retrainings_diverged": len(records) - len(ok),
        "test_nrmse": float(np.mean([r["test_nrmse"] for r in ok])) if ok else math.inf,
        "val_fitness": float(np.mean([r["fitness"] for r in ok])) if ok else math.inf,
    }


def _jobs_on(folder: Path, origin: dict[str, Any]) -> list[str]:
    """Every commit a job ran this search's folder with (this job's appended once), in order:
    a search stopped and continued by a later job (another session, another machine: copy
    ``--out`` there) may have run on several; "+dirty" marks uncommitted changes."""
    log = folder / "commits.txt"
    seen = log.read_text().split() if log.exists() else []
    if not seen and any(p.name != "commits.txt" for p in folder.iterdir()):
        seen = ["unrecorded"]  # begun by a job from before the list was kept
    mine = (origin["commit"] or "unknown") + ("+dirty" if origin["dirty"] else "")
    if not seen or seen[-1] != mine:
        seen.append(mine)
        log.write_text("".join(c + "\n" for c in seen))
    return seen


def _cached(path: Path, make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``make()``'s result, computed once: written atomically to ``path``, read back after."""
    if path.exists():
        return json.loads(path.read_text())
    out = make()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(out, default=float))
    os.replace(tmp, path)
    return out


# -- the verdict -------------------------------------------------------------------------------


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """25th, 50th and 75th percentiles (numpy's linear rule) where a search scored inf.

    ``np.percentile`` gives NaN where a quartile falls exactly on the value below an inf
    (x + 0 * inf): an inf is ranked as the largest finite float instead, and a quartile that
    interpolates towards it is inf."""
    v = np.asarray(values, dtype=float)
    finite = v[np.isfinite(v)]
    top = float(finite.max()) if finite.size else -math.inf
    q = np.percentile(np.where(np.isposinf(v), np.finfo(float).max, v), [25, 50, 75])
    q1, med, q3 = (math.inf if x > top else float(x) for x in q)
    return q1, med, q3


def summarize(arm: list[dict[str, Any]]) -> dict[str, Any]:
    values = [a["test_fitness"] for a in arm]
    q1, med, q3 = quartiles(values)
    return {"searches": len(values), "median": float(med), "q1": float(q1), "q3": float(q3),
            "per_search": [round(v, 6) for v in values]}


def paired(engine: list[dict], other: list[dict]) -> dict[str, int]:
    """Search k against search k: engine wins, losses, ties (equal test fitness)."""
    pairs = list(zip([a["test_fitness"] for a in engine], [b["test_fitness"] for b in other]))
    return {"wins": sum(a < b for a, b in pairs), "losses": sum(a > b for a, b in pairs),
            "ties": sum(a == b for a, b in pairs), "pairs": len(pairs)}


def provenance(argv: list[str]) -> dict[str, Any]:
    def version(mod: str) -> str | None:
        try:
            return str(__import__(mod).__version__)
        except ImportError:
            return None

    return {
        **code_version(ROOT), "command": " ".join([sys.executable, sys.argv[0], *argv]),
        "versions": {m: version(m) for m in ("evo_engine", "torch", "numpy", "optuna")},
        "python": platform.python_version(),
        "machine": {"node": platform.node(), "processor": platform.machine(),
                    "cpus": os.cpu_count(), "load_1min": os.getloadavg()[0]},
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=("cpu", "full"), default="cpu")
    parser.add_argument("--scenarios", default="lr,multi", help="comma list of lr, multi")
    parser.add_argument("--arms", default=",".join(ARMS), help="comma list of engine, random, tpe")
    parser.add_argument("--searches", type=int, default=5, help="independent searches per arm")
    parser.add_argument("--first-seed", type=int, default=1,
                        help="the first search seed (seeds FIRST..FIRST+searches-1): new "
                             "seeds for a verdict on searches no tuning has seen")
    parser.add_argument("--evals", type=int, help="evaluations per search (default: the scenario's)")
    parser.add_argument("--seeds", type=int, default=3, help="retraining seeds per pick (>= 2)")
    parser.add_argument("--jobs", type=int, default=2, help="trainings (or batches) at a time")
    parser.add_argument("--batch", type=int,
                        help="candidates a job trains as one stack (default: the scenario's "
                             "batch, as make run's workers do; 1 = one at a time)")
    parser.add_argument("--epochs", type=int, help="override the preset's epochs (smoke runs)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "advection_bench",
                        help="one directory per search under it; rerun to continue")
    args = parser.parse_args(argv)
    names = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if not names or any(n not in ("lr", "multi") for n in names):
        parser.error(f"--scenarios takes a comma list of lr and multi, got {args.scenarios!r}")
    if not arms or any(a not in ARMS for a in arms):
        parser.error(f"--arms takes a comma list of {', '.join(ARMS)}, got {args.arms!r}")
    if args.seeds < 2 or args.searches < 1 or args.jobs < 1 or (
            args.batch is not None and args.batch < 1) or (
            args.evals is not None and args.evals < 1) or (args.epochs is not None
                                                          and args.epochs < 1) or (
            args.first_seed < 1):
        parser.error("need --seeds >= 2, --searches >= 1, --jobs >= 1, --batch >= 1, "
                     "--evals >= 1, --epochs >= 1, --first-seed >= 1")
    start = time.perf_counter()
    origin = provenance(argv)  # the code that runs: commits may land while the job does
    task = advection_task(args.preset)
    if args.epochs is not None:
        step = max(1, round(task.defaults["scheduler_step"] * args.epochs / task.epochs))
        task = dataclasses.replace(task, epochs=args.epochs,
                                   fitness_last=min(task.fitness_last, args.epochs),
                                   defaults={**task.defaults, "scheduler_step": step})
    # A directory belongs to one setting: refuse to mix runs of another preset or length.
    setting = {"preset": args.preset, "epochs": task.epochs, "seeds": args.seeds,
               "evals": args.evals, "batch": args.batch}
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = args.out / "setting.json"
    if stamp.exists() and json.loads(stamp.read_text()) != setting:
        print(f"advection.py: {args.out} holds searches of another setting "
              f"({stamp.read_text().strip()}); give another --out", file=sys.stderr)
        return 2
    stamp.write_text(json.dumps(setting))
    prepare_advection(task)  # generate the data once, before the workers race for it
    seeds = list(range(FINAL_SEEDS_FROM, FINAL_SEEDS_FROM + args.seeds))
    results: dict[str, Any] = {}
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.jobs, mp_context=context, initializer=_init_worker) as pool:
        t0 = time.perf_counter()
        default = _cached(args.out / "default.json", lambda: {
            "params": dict(task.defaults), **score_on_test({}, seeds, pool, task)})
        print(f"default: {default['test_fitness']:.4f}", file=sys.stderr)
        results["default"] = {**default, "wall_s_this_job": round(time.perf_counter() - t0, 1)}
        for name in names:
            scenario = load_scenario(SCENARIOS / f"advection_{name}.py", args.preset)
            evals = args.evals or scenario.max_evals
            batch = args.batch or scenario.batch
            per_arm: dict[str, list[dict[str, Any]]] = {}
            for k in range(args.first_seed - 1, args.first_seed - 1 + args.searches):
                for arm in arms:
                    folder = args.out / name / arm / f"search{k}"
                    folder.mkdir(parents=True, exist_ok=True)
                    label = f"{arm}_{name}#{k}"

                    def one(arm: str = arm, folder: Path = folder, k: int = k,
                            label: str = label, scenario: Scenario = scenario,
                            evals: int = evals, batch: int = batch) -> dict[str, Any]:
                        t1 = time.perf_counter()
                        worked = _jobs_on(folder, origin)
                        if arm == "tpe":
                            method: Any = TPESearch(scenario.space, k + 1, folder)
                        else:
                            op = scenario.operator if arm == "engine" else "random"
                            method = EngineSearch(scenario, op, k + 1, folder)
                        found = run_search(method, evals, k, pool, args.jobs, batch, task,
                                           label, folder / "evaluations.jsonl")
                        scored = score_on_test(found["params"], seeds, pool, task)
                        return {**found, **scored, "evals": evals, "batch": batch,
                                "search_seed": k + 1,
                                "wall_s": round(time.perf_counter() - t1, 1),
                                # a search stopped and continued may span commits
                                "commits": worked}

                    rec = _cached(folder / "final.json", one)
                    print(f"{label}: test {rec['test_fitness']:.4f}", file=sys.stderr)
                    per_arm.setdefault(arm, []).append(rec)
            verdict: dict[str, Any] = {
                "arms": {a: summarize(v) for a, v in per_arm.items()},
                "default": default["test_fitness"],
            }
            if "engine" in per_arm:
                eng = per_arm["engine"]
                verdict["paired_engine_vs"] = {a: paired(eng, v) for a, v in per_arm.items()
                                               if a != "engine"}
                med = verdict["arms"]["engine"]["median"]
                verdict["engine_median_to_default"] = med / default["test_fitness"]
            # the code each search ran (a verdict continued over several jobs may span commits)
            verdict["commits"] = sorted({c for v in per_arm.values() for r in v
                                         for c in (r.get("commits") or [r.get("commit") or "unrecorded"])})
            verdict["cost_wall_s_per_search"] = {
                a: float(np.median([r["wall_s"] for r in v])) for a, v in per_arm.items()}
            results[name] = verdict
    out = {
        "benchmark": "advection", "preset": args.preset, "epochs": task.epochs,
        "split_scored": "test", "retrain_seeds": args.seeds, "searches": args.searches,
        "first_search_seed": args.first_seed,
        "results": results, "seconds_this_job": round(time.perf_counter() - start, 1),
        **origin,
    }
    print(json.dumps(out, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
