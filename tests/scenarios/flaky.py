"""Test scenario: an objective that fails in every way a real one can (for robustness tests)."""

from evo_engine import Categorical, Float, Space
from evo_engine.scenario import Scenario


def flaky(params, ctx):
    ctx.cache["calls"] = ctx.cache.get("calls", 0) + 1
    mode = params["mode"]
    if mode == "raise":
        raise RuntimeError("objective exploded")
    if mode == "nan":
        return float("nan")
    if mode == "oom":
        raise MemoryError("CUDA out of memory (simulated)")
    return {"fitness": (params["x"] - 0.3) ** 2, "worker_calls": ctx.cache["calls"]}


def make_scenario(preset):
    return Scenario(
        name="flaky",
        space=Space(x=Float(0, 1), mode=Categorical(["ok", "ok2", "ok3", "raise", "nan", "oom"])),
        objective=lambda p, ctx: flaky({**p, "mode": "ok" if p["mode"].startswith("ok") else p["mode"]}, ctx),
        population_size=4,
        max_evals=40,
        workers=2,
    )
