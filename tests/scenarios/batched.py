"""Test scenario: a numpy-only batched objective, so transports and batching test without torch.

Each member's fitness is a deterministic function of its parameters; its ``noise`` metric is
the first draw of ``numpy.random.default_rng(ctx.seed)``, which lets a test check that every
member got its own seed. Steps are "epochs": each live member reports after each one (ASHA
may drop it: it then gets ``StopEvaluation()`` at its index while the others go on).

Environment knobs (all optional):
BATCHED_BATCH (scenario batch, default 2) · BATCHED_EVALS (budget, 24) · BATCHED_KEY=1
(batch_key = the ``arch`` parameter) · BATCHED_ASHA=1 (pruner asha, 4 steps) ·
BATCHED_SLEEP (seconds per step, 0.005) · BATCHED_RAISE_BELOW (members with x below it raise) ·
BATCHED_NAN_ABOVE (members with x above it return NaN) · BATCHED_DIE_UID (the worker process
``os._exit(9)``s while evaluating that uid) · BATCHED_HANG_UID (that uid sleeps an hour) ·
BATCHED_EXIT_UID (that uid raises SystemExit(7)) · BATCHED_DIE_AFTER_ROWS (the dying uid first
waits, up to 60 s, until the run store holds that many evaluations, so a loaded machine cannot
end the job before anything was written) · BATCHED_TIMEOUT (eval_timeout_s) ·
BATCHED_WORKERS (local workers, 2) · BATCHED_LOG (a file each call appends its uids to).
"""

import json
import os
import time
from pathlib import Path

import numpy as np

from evo_engine import Categorical, Float, Space
from evo_engine.context import StopEvaluation
from evo_engine.scenario import Scenario

STEPS = 4


def _env_float(name, default=None):
    text = os.environ.get(name)
    return float(text) if text else default


def _target(params):
    return (params["x"] - 0.3) ** 2 + (0.05 if params["arch"] == "b" else 0.0)


def _wait_for_rows(ctx, rows):
    """Wait (at most 60 s) until the run's store has committed ``rows`` evaluations."""
    marker = Path(ctx.scratch_dir).parent.parent / "run.zarr" / "evaluations" / "zarr.json"
    deadline = time.monotonic() + 60
    while rows > 0 and time.monotonic() < deadline:
        try:
            if json.loads(marker.read_text())["attributes"]["committed"] >= rows:
                return
        except (OSError, ValueError, KeyError):
            pass  # not written yet, or replaced mid-read
        time.sleep(0.05)


def objective_batch(params_list, ctxs):
    uids = [c.uid for c in ctxs]
    log = os.environ.get("BATCHED_LOG")
    if log:
        with open(log, "a") as fh:
            fh.write(" ".join(map(str, uids)) + "\n")
    for uid_name, action in (("BATCHED_DIE_UID", "die"), ("BATCHED_HANG_UID", "hang"),
                             ("BATCHED_EXIT_UID", "exit")):
        marked = os.environ.get(uid_name)
        if marked and int(marked) in uids:
            if action == "die":
                _wait_for_rows(ctxs[0], int(os.environ.get("BATCHED_DIE_AFTER_ROWS", "0")))
                os._exit(9)
            if action == "hang":
                time.sleep(3600)
            raise SystemExit(7)
    raise_below = _env_float("BATCHED_RAISE_BELOW", -1.0)
    nan_above = _env_float("BATCHED_NAN_ABOVE", 2.0)
    sleep = _env_float("BATCHED_SLEEP", 0.005)
    out = [None] * len(params_list)
    live = []
    for i, p in enumerate(params_list):
        if p["x"] < raise_below:
            out[i] = RuntimeError(f"member {ctxs[i].uid} exploded")
        else:
            live.append(i)
    for step in range(1, STEPS + 1):
        time.sleep(sleep)
        for i in list(live):
            value = _target(params_list[i]) * (1 + 1 / step)
            ctxs[i].report(step, value)
            if ctxs[i].should_stop():
                out[i] = StopEvaluation()
                live.remove(i)
    archs = {p["arch"] for p in params_list}
    for i in live:
        p, ctx = params_list[i], ctxs[i]
        fitness = float("nan") if p["x"] > nan_above else _target(p)
        ctx.cache["calls"] = ctx.cache.get("calls", 0) + 1
        out[i] = {"fitness": fitness, "noise": float(np.random.default_rng(ctx.seed).random()),
                  "batch_size": float(len(params_list)), "archs": float(len(archs)),
                  "member_seed": float(ctx.seed % 1_000_000)}
    return out


def objective(params, ctx):
    value = objective_batch([params], [ctx])[0]
    if isinstance(value, BaseException):
        raise value
    return value


def arch_key(params):
    return params["arch"]


def make_scenario(preset):
    asha = os.environ.get("BATCHED_ASHA") == "1"
    return Scenario(
        name="batched",
        space=Space(x=Float(0.0, 1.0), arch=Categorical(["a", "b"])),
        objective=objective,
        objective_batch=objective_batch,
        batch_key=arch_key if os.environ.get("BATCHED_KEY") == "1" else None,
        batch=int(os.environ.get("BATCHED_BATCH", "2")),
        population_size=4,
        max_evals=int(os.environ.get("BATCHED_EVALS", "24")),
        checkpoint_every=4,
        workers=int(os.environ.get("BATCHED_WORKERS", "2")),
        pruner="asha" if asha else "none",
        eta=2,
        min_steps=1,
        max_steps=STEPS,
        eval_timeout_s=_env_float("BATCHED_TIMEOUT"),
        seed=3,
    )
