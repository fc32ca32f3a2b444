"""Measure the cpu advection preset: per-epoch curves, seed-to-seed spread, ranking, CPU cost.

Trains every (variant, configuration, seed) once, single-threaded, ``--jobs`` at a time, and
records per training: the validation fitness of every epoch (the curve), the fitness the
objective returns (``fitness``: the variant's reduction of the curve), the final and the
minimum epoch's fitness, the best epoch, the CPU seconds of the training (``process_time``),
and the final model's fitness on a HOLDOUT set: ``--holdout`` trajectories of the same recipe
drawn with another seed (2023), never seen by training or validation, so a configuration's
true quality is measured on far more trajectories than the 20-40 of a test split.

A variant is the cpu preset (``evo_engine.sciml.presets.advection_task("cpu")``) with some
fields changed (``VARIANTS``); a configuration is a set of hyperparameters (``CONFIGS``;
"default" is the preset's own defaults). Per (variant, configuration) the summary gives mean
and sample std over seeds of the returned fitness and the holdout fitness, how many seeds have
their best epoch before the last, and the mean CPU seconds.

    python benchmarks/cpu_preset.py --variants preset --seeds 3 --jobs 2
    python benchmarks/cpu_preset.py --variants preset,nx64 --configs default,lr3e-3 --out rows.jsonl
    python benchmarks/cpu_preset.py --configs default --seeds 4 --seed0 11 --stack 4 --jobs 1

Every finished training is appended to ``--out`` as one JSON line (so an interrupted run keeps
what it measured; ``--resume`` skips the trainings already there); the summary is printed to
stderr as a table and to stdout as one final JSON line. Not a test; not a timing benchmark
either (CPU seconds of a loaded machine vary by tens of percent).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import torch

from evo_engine.context import Context
from evo_engine.sciml.advection import ensure_dataset
from evo_engine.sciml.batched import train_advection_batch
from evo_engine.sciml.data import inspect_advection_file, read_advection, strides_for
from evo_engine.sciml.metrics import advection_fitness
from evo_engine.sciml.presets import advection_task
from evo_engine.sciml.training import AdvectionTask, evaluate, fit

HOLDOUT_SEED = 2023  # the recipe's own seed is 2022: the holdout shares no trajectory with it


def _preset(defaults: dict[str, Any] | None = None, recipe: dict[str, Any] | None = None,
            **changes: Any) -> Callable[[], AdvectionTask]:
    """The cpu preset with ``changes`` to the task, its ``defaults`` and its ``recipe``."""
    def make() -> AdvectionTask:
        task = advection_task("cpu")
        new_recipe = dataclasses.replace(task.recipe, **(recipe or {}))
        if "samples" in changes:
            new_recipe = dataclasses.replace(new_recipe, samples=changes["samples"])
        return dataclasses.replace(task, recipe=new_recipe,
                                   defaults={**task.defaults, **(defaults or {})}, **changes)

    return make


VARIANTS: dict[str, Callable[[], AdvectionTask]] = {
    "preset": _preset(),
    "smoke": _preset(samples=30, nx=32, epochs=3, fitness_last=2, recipe={"nx": 128}),
    # the preset with a sixth fewer epochs (the fallback if make run needs the time)
    "e25": _preset(epochs=25, defaults={"scheduler_step": 5}),
    # the preset before issue 23: 11 of 31 frames trained, StepLR every 4 of 20 epochs
    "old": _preset(nx=128, t_train=21, epochs=20, fitness_last=3,
                   defaults={"batch_size": 8, "scheduler_step": 4}),
    "t41-nx128-e15": _preset(nx=128, t_train=None, epochs=15, fitness_last=3,
                             defaults={"batch_size": 8, "scheduler_step": 3}),
    "t41-nx64-e15": _preset(nx=64, t_train=None, epochs=15, fitness_last=3,
                            defaults={"batch_size": 8, "scheduler_step": 3}),
    "t41-nx64-e20-b16": _preset(nx=64, t_train=None, epochs=20, fitness_last=3,
                                defaults={"batch_size": 16, "scheduler_step": 4}),
    "t41-nx64-e10-s400": _preset(nx=64, t_train=None, epochs=10, fitness_last=2, samples=400,
                                 defaults={"batch_size": 8, "scheduler_step": 2}),
    "t41-nx128-e10-s400": _preset(nx=128, t_train=None, epochs=10, fitness_last=2, samples=400,
                                  defaults={"batch_size": 8, "scheduler_step": 2}),
}

CONFIGS: dict[str, dict[str, Any]] = {
    "default": {},
    "lr3e-3": {"lr": 3e-3},
    "lr3e-4": {"lr": 3e-4},
    "const-lr": {"scheduler_gamma": 1.0},  # issue 23's finding on the old preset
    "lr3e-3-w32": {"lr": 3e-3, "width": 32},
    "lr3e-3-w32-m16": {"lr": 3e-3, "width": 32, "modes": 16},
}

_CACHE: dict = {}


def _init_worker() -> None:
    torch.set_num_threads(1)


def _holdout(task: AdvectionTask, samples: int) -> dict[str, Any]:
    recipe = dataclasses.replace(task.recipe, seed=HOLDOUT_SEED, samples=samples)
    path = ensure_dataset(recipe)
    data = read_advection(path, "all", **strides_for(inspect_advection_file(path), task.nx,
                                                      task.nt))
    return {"u": torch.from_numpy(data.u), "grid": torch.from_numpy(data.x)}


def train_one(variant: str, config: str, seed: int, holdout: int) -> dict[str, Any]:
    """One training of ``config`` on ``variant`` with ``seed``; its row."""
    task = VARIANTS[variant]()
    ctx = Context.standalone(seed, _CACHE)
    cpu = time.process_time()
    result = fit(CONFIGS[config], ctx, task)
    cpu = time.process_time() - cpu
    record = result["record"]
    curve = [value for _, value in ctx.curve]
    row: dict[str, Any] = {
        "variant": variant, "config": config, "seed": seed,
        "fitness": record["fitness"], "final": curve[-1] if curve else math.nan,
        "min": min(curve) if curve else math.nan, "best_epoch": int(record["best_epoch"]) + 1,
        "epochs": task.epochs, "curve": curve, "cpu_s": cpu,
        "val_nrmse": record.get("val_nrmse", math.nan),
    }
    if holdout:
        key = ("holdout", variant, holdout)
        if key not in _CACHE:
            _CACHE[key] = _holdout(task, holdout)
        data = _CACHE[key]
        metrics = evaluate(result["model"], data["u"], data["grid"], task)
        row["holdout"] = advection_fitness(metrics)
        row["holdout_nrmse"] = metrics["nrmse"]
    return row


def train_stack(variant: str, config: str, seeds: list[int]) -> list[dict[str, Any]]:
    """``config`` on ``variant`` with every seed of ``seeds`` as one stack (batched training).

    Each row's ``cpu_s`` is the stack's CPU seconds divided by its members: what one training
    costs when it shares a stack. No holdout (the batched trainer returns no models).
    """
    task = VARIANTS[variant]()
    ctxs = [Context.standalone(seed, _CACHE) for seed in seeds]
    cpu = time.process_time()
    records = train_advection_batch([CONFIGS[config]] * len(seeds), ctxs, task)
    cpu = (time.process_time() - cpu) / len(seeds)
    rows = []
    for seed, ctx, record in zip(seeds, ctxs, records, strict=True):
        if isinstance(record, BaseException):
            raise record
        curve = [value for _, value in ctx.curve]
        rows.append({
            "variant": variant, "config": config, "seed": seed, "stack": len(seeds),
            "fitness": record["fitness"], "final": curve[-1] if curve else math.nan,
            "min": min(curve) if curve else math.nan,
            "best_epoch": int(record["best_epoch"]) + 1, "epochs": task.epochs, "curve": curve,
            "cpu_s": cpu, "val_nrmse": record.get("val_nrmse", math.nan),
        })
    return rows


def _stats(values: list[float]) -> dict[str, float]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return {"mean": math.nan, "std": math.nan}
    std = statistics.stdev(finite) if len(finite) > 1 else math.nan
    return {"mean": statistics.fmean(finite), "std": std, "n": len(finite)}


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per variant and configuration: fitness and holdout over seeds, convergence, CPU."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["variant"], row["config"]), []).append(row)
    out: dict[str, Any] = {}
    for (variant, config), members in sorted(groups.items()):
        out.setdefault(variant, {})[config] = {
            "fitness": _stats([r["fitness"] for r in members]),
            "final": _stats([r["final"] for r in members]),
            "min": _stats([r["min"] for r in members]),
            "holdout": _stats([r.get("holdout", math.nan) for r in members]),
            "best_epoch_before_last": sum(r["best_epoch"] < r["epochs"] for r in members),
            "seeds": len(members),
            "cpu_s": statistics.fmean(r["cpu_s"] for r in members),
            "mean_curve": [statistics.fmean(c) for c in zip(*(r["curve"] for r in members),
                                                            strict=False)],
        }
    return out


def _print_table(summary: dict[str, Any]) -> None:
    print(f"{'variant':22} {'config':16} {'fitness':>16} {'holdout':>16} {'before':>6} {'cpu':>6}",
          file=sys.stderr)
    for variant, configs in summary.items():
        for config, s in configs.items():
            f, h = s["fitness"], s["holdout"]
            print(f"{variant:22} {config:16} {f['mean']:.4f} ± {f['std']:.4f} "
                  f"{h['mean']:.4f} ± {h['std']:.4f} {s['best_epoch_before_last']:>3}/"
                  f"{s['seeds']:<2} {s['cpu_s']:6.1f}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default="preset")
    parser.add_argument("--configs", default="default,lr3e-3")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--seed0", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--holdout", type=int, default=200,
                        help="holdout trajectories (0: none)")
    parser.add_argument("--stack", type=int, default=1,
                        help="train the seeds of a configuration K at a time as one stack "
                             "(batched; no holdout)")
    parser.add_argument("--out", type=Path, default=None, help="append each row here (JSONL)")
    parser.add_argument("--resume", action="store_true", help="skip rows already in --out")
    args = parser.parse_args(argv)
    variants, configs = args.variants.split(","), args.configs.split(",")
    unknown = [v for v in variants if v not in VARIANTS] + [c for c in configs if c not in CONFIGS]
    if unknown:
        print(f"unknown variant or configuration: {unknown}; variants {list(VARIANTS)}, "
              f"configurations {list(CONFIGS)}", file=sys.stderr)
        return 2
    rows: list[dict[str, Any]] = []
    if args.resume and args.out and args.out.exists():
        rows = [json.loads(line) for line in args.out.read_text().splitlines() if line.strip()]
    done = {(r["variant"], r["config"], r["seed"]) for r in rows}
    for v in variants:  # generate the data once, before the workers start (GPU if there is one)
        task = VARIANTS[v]()
        ensure_dataset(task.recipe)
        if args.holdout:
            ensure_dataset(dataclasses.replace(task.recipe, seed=HOLDOUT_SEED,
                                               samples=args.holdout))
    seeds = [args.seed0 + s for s in range(args.seeds)]
    todo = [(v, c, [s for s in seeds if (v, c, s) not in done]) for v in variants for c in configs]
    if args.stack < 1:
        print("--stack must be >= 1", file=sys.stderr)
        return 2
    # spawn: the parent may have used CUDA to generate the data, and a forked child cannot
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_worker) as pool:
        futures = []
        for v, c, left in todo:
            if args.stack == 1:
                futures += [pool.submit(train_one, v, c, s, args.holdout) for s in left]
            else:
                futures += [pool.submit(train_stack, v, c, left[i:i + args.stack])
                            for i in range(0, len(left), args.stack)]
        for future in as_completed(futures):
            result = future.result()
            for row in result if isinstance(result, list) else [result]:
                rows.append(row)
                print(f"{row['variant']} {row['config']} seed {row['seed']}: fitness "
                      f"{row['fitness']:.4f} holdout {row.get('holdout', math.nan):.4f} best "
                      f"epoch {row['best_epoch']}/{row['epochs']} cpu {row['cpu_s']:.0f}s",
                      file=sys.stderr, flush=True)
                if args.out:
                    with args.out.open("a") as f:
                        f.write(json.dumps(row) + "\n")
    summary = summarise(rows)
    _print_table(summary)
    print(json.dumps({"torch": torch.__version__, "summary": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
