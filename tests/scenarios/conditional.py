"""A mixed space with conditional parameters: ``width``/``modes`` only for "fno", ``depth`` for "unet".

The objective fails loudly if it ever receives a parameter that is inactive for its model.
"""

from __future__ import annotations

from evo_engine import Categorical, Float, Int, Space
from evo_engine.scenario import Scenario


def objective(params: dict, ctx) -> float:
    fno = params["model"] == "fno"
    if fno != ("width" in params and "modes" in params) or fno == ("depth" in params):
        raise AssertionError(f"inactive parameters leaked into {params}")
    base = (params["x"] - 0.3) ** 2
    if fno:
        return base + 0.01 * abs(params["width"] - 20) + 0.02 * abs(params["modes"] - 6)
    return base + 0.1 + 0.05 * abs(params["depth"] - 3)


def make_scenario(preset: str) -> Scenario:
    return Scenario(
        name="conditional",
        space=Space(
            model=Categorical(["unet", "fno"]),
            x=Float(0.0, 1.0),
            depth=Int(1, 5, when=("model", "unet")),
            width=Int(8, 48, when=("model", "fno")),
            modes=Int(2, 12, when=("model", "fno")),
        ),
        objective=objective,
        islands=2,
        population_size=6,
        max_evals=30,
        seed=0,
    )
