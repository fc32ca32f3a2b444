"""Population-based training against the engine's default search and random search, at equal
total training epochs, scored on TEST data (issue 27, item 5).

Space: ``advection_multi``'s minus the architecture choices a checkpoint cannot inherit (the
model is the cpu preset's FNO): learning rate, weight decay, StepLR step and γ, batch size.

Arms, each run ``--searches`` times with search seeds 1, 2, ... (every arm gets the same
training-epoch budget: ``members x epochs``):

- ``pbt``: ``members`` members, intervals of ``--interval`` epochs, ``members x epochs /
  interval`` intervals (``Scenario.pbt`` defaults: quantile 0.25, explore "perturb"). Its pick
  is the best interval's *schedule* (its lineage, ``evo_engine.analysis.pbt``), replayed from
  scratch with fresh seeds, interval by interval through checkpoints, then scored on test;
  ``pbt_own`` is the kept checkpoint of that best interval scored on test as it is (no
  retraining; not a pick comparable with the others, shown for information);
- ``engine``: ``advection_multi``'s own search (surrogate, hypertiling design, intensify 3),
  ``members`` trainings of ``epochs`` epochs; its pick is its incumbent;
- ``random``: random search, ``members`` trainings; its pick is its best observed.

Every pick is retrained ``--retrain`` times with fresh seeds (never a search's) and scored on
the test split. Evaluations run one at a time in this process (the comparison is about what a
budget of epochs buys, not about throughput). Prints progress to stderr and one final JSON line
(commit, versions, machine, load, arguments, per-arm test fitness, medians, epochs, CPU time).

    nice python benchmarks/pbt.py                                  # the full comparison
    nice python benchmarks/pbt.py --members 4 --epochs 6 --interval 2 --searches 3 --retrain 1
                                                                   # a reduced run

Not a test.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evo_engine import Float, Int, Space
from evo_engine.context import Context, checkpoint_file
from evo_engine.sciml.presets import advection_task
from evo_engine.sciml.training import (
    AdvectionTask,
    advection_checkpoint_metrics,
    advection_test_metrics,
    prepare_advection,
    train_advection,
)
from evo_engine.search.engine import Engine, EngineConfig, task_seed
from evo_engine.search.messages import EvalState, Result, Task
from evo_engine.search.pbt import PBTConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import code_version  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def space(epochs: int) -> Space:
    return Space(
        lr=Float(1e-4, 1e-1, log=True),
        weight_decay=Float(1e-7, 1e-2, log=True),
        scheduler_step=Int(1, epochs),
        scheduler_gamma=Float(0.1, 1.0),
        batch_size=Int(8, 64, log=True),
    )


def say(text: str) -> None:
    print(f"[pbt-bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _score(record: dict[str, Any]) -> float:
    f = float(record.get("fitness", np.nan))
    return f if np.isfinite(f) else np.nan


def drive(engine: Engine, evaluate: Any) -> dict[int, Task]:
    """Ask, evaluate and tell one task at a time until the engine is done; the tasks by uid."""
    tasks: dict[int, Task] = {}
    while not engine.done:
        task = engine.ask()
        if task is None:
            break
        tasks[task.uid] = task
        try:
            fitness, epochs = evaluate(task)
            engine.tell(Result(uid=task.uid, worker=0, fitness=fitness, metrics={"epochs": epochs}))
        except Exception as exc:  # noqa: BLE001 - a failed training is a FAILED evaluation
            engine.tell(Result(uid=task.uid, worker=0, fitness=None, state=EvalState.FAILED,
                               error=f"{type(exc).__name__}: {exc}"))
    return tasks


def run_search(arm: str, search: int, sp: Space, task: AdvectionTask, args: argparse.Namespace,
               cache: dict, scratch: Path) -> dict[str, Any]:
    """One search of ``arm``; returns its pick (params or schedule) and the epochs it trained."""
    members, epochs = args.members, args.epochs
    spent = [0]
    if arm == "pbt":
        cfg = EngineConfig(max_evals=members * epochs // args.interval, population_size=members,
                           initial_design="lhs", seed=search,
                           pbt=PBTConfig(interval=args.interval))
    elif arm == "engine":
        cfg = EngineConfig(max_evals=members, population_size=members, operator="surrogate",
                           initial_design="hypertiling", seed=search, intensify=3)
    else:
        cfg = EngineConfig(max_evals=members, population_size=members, operator="random",
                           seed=search)
    engine = Engine(sp, cfg)

    def evaluate(t: Task) -> tuple[float, float]:
        ctx = Context.standalone(seed=t.seed, cache=cache)
        if t.step >= 0:
            ctx.scratch_root = scratch
            ctx.start_step, ctx.stop_step = t.step, t.step + args.interval
            ctx.checkpoint_load = checkpoint_file(scratch, t.pbt_parent) if t.pbt_parent >= 0 \
                else None
            ctx.checkpoint_save = checkpoint_file(scratch, t.uid)
        record = train_advection(t.params, ctx, task)
        trained = record["epochs_run"] - (t.step if t.step >= 0 else 0)
        spent[0] += int(trained)
        return _score(record), trained

    tasks = drive(engine, evaluate)
    best = engine.best
    if best is None:
        return {"pick": None, "epochs": spent[0]}
    if arm != "pbt":
        return {"pick": dict(tasks[best.uid].params), "epochs": spent[0],
                "search_fitness": best.fitness}
    chain = []
    uid = best.uid
    while uid >= 0:
        t = tasks[uid]
        chain.append({"step": t.step, "stop": t.step + args.interval, "params": dict(t.params),
                      "operator": t.operator})
        uid = t.pbt_parent
    chain.reverse()
    own = advection_checkpoint_metrics(tasks[best.uid].params,
                                       dataclasses.replace(Context.standalone(0, cache),
                                                           uid=best.uid, scratch_root=scratch),
                                       task)
    return {"pick": chain, "epochs": spent[0], "search_fitness": best.fitness,
            "own_test_fitness": own["test_fitness"],
            "exploits": sum(c["operator"] == "pbt:exploit" for c in chain)}


def retrain(arm: str, pick: Any, seed: int, task: AdvectionTask, cache: dict,
            interval: int) -> float:
    """Test fitness of ``pick`` trained from scratch with ``seed`` (a schedule: replayed)."""
    if arm != "pbt":
        return float(advection_test_metrics(pick, Context.standalone(seed, cache), task)
                     ["test_fitness"])
    with tempfile.TemporaryDirectory(prefix="pbt-replay-") as tmp:
        root = Path(tmp)
        parent = -1
        for i, c in enumerate(pick):
            ctx = Context.standalone(seed=task_seed(seed, i), cache=cache)
            ctx.start_step, ctx.stop_step = c["step"], c["stop"]
            ctx.checkpoint_load = checkpoint_file(root, parent) if parent >= 0 else None
            ctx.checkpoint_save = checkpoint_file(root, i)
            train_advection(c["params"], ctx, task)
            parent = i
        final = dataclasses.replace(Context.standalone(seed, cache), uid=parent, scratch_root=root)
        return float(advection_checkpoint_metrics(pick[-1]["params"], final, task)["test_fitness"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=8, help="PBT members = trainings of the others")
    ap.add_argument("--epochs", type=int, default=None, help="epochs of one training (cpu: 30)")
    ap.add_argument("--interval", type=int, default=3, help="PBT epochs per interval")
    ap.add_argument("--searches", type=int, default=3, help="searches per arm (seeds 1..N)")
    ap.add_argument("--retrain", type=int, default=2, help="fresh-seed retrainings of each pick")
    ap.add_argument("--arms", default="pbt,engine,random")
    ap.add_argument("--out", type=Path, default=None, help="write the JSON line here too")
    args = ap.parse_args()
    code = code_version(ROOT)  # before the runs: commits may land meanwhile
    torch.set_num_threads(1)
    base = advection_task("cpu")
    args.epochs = args.epochs or base.epochs
    if args.epochs % args.interval:
        sys.exit("benchmark: --epochs must be a multiple of --interval (equal epoch budgets)")
    task = dataclasses.replace(base, epochs=args.epochs)
    prepare_advection(task)
    sp = space(args.epochs)
    cache: dict = {}
    arms = args.arms.split(",")
    t_cpu = time.process_time()
    t_wall = time.perf_counter()
    results: dict[str, dict[str, Any]] = {a: {"test": [], "epochs": [], "search": []} for a in arms}
    if "pbt" in arms:
        results["pbt_own"] = {"test": []}
        results["pbt"]["exploits_on_lineage"] = []
    for search in range(1, args.searches + 1):
        for arm in arms:
            with tempfile.TemporaryDirectory(prefix=f"pbt-bench-{arm}-") as tmp:
                out = run_search(arm, search, sp, task, args, cache, Path(tmp))
            if out["pick"] is None:
                say(f"{arm} search {search}: no pick (every training failed)")
                results[arm]["test"].append(None)
                continue
            seeds = [10_000 * search + 100 + r for r in range(args.retrain)]
            tests = [retrain(arm, out["pick"], s, task, cache, args.interval) for s in seeds]
            mean = float(np.nanmean(tests))
            results[arm]["test"].append(mean)
            results[arm]["epochs"].append(out["epochs"])
            results[arm]["search"].append(out.get("search_fitness"))
            if arm == "pbt":
                results["pbt_own"]["test"].append(out["own_test_fitness"])
                results["pbt"]["exploits_on_lineage"].append(out["exploits"])
            say(f"{arm} search {search}: {out['epochs']} epochs, test fitness {mean:.4g} "
                f"(retrained x{args.retrain})")
    for r in results.values():
        vals = [v for v in r["test"] if v is not None and np.isfinite(v)]
        r["median_test"] = float(np.median(vals)) if vals else None
    medians = {a: results[a]["median_test"] for a in arms}
    line = {
        "benchmark": "pbt",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **code,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "load_1min": os.getloadavg()[0]},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "numpy": np.__version__},
        "command": " ".join(sys.argv),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "epochs_per_search": args.members * args.epochs,
        "arms": results,
        "pbt_best": (medians.get("pbt") is not None
                     and all(medians[a] is not None and medians["pbt"] < medians[a]
                             for a in arms if a != "pbt")),
        "cpu_seconds": round(time.process_time() - t_cpu, 1),
        "wall_seconds": round(time.perf_counter() - t_wall, 1),
    }
    text = json.dumps(line)
    if args.out is not None:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
