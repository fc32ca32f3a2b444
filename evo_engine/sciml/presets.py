"""Problem sizes of the SciML scenarios: "cpu" (minutes on a laptop) and "full" (PDEBench scale).

Shared by the scenario files and the benchmark so that "the default hyperparameters" and "the
budget of one evaluation" mean the same thing everywhere.

advection, cpu: 200 generated samples (test 20, validation 20, training 160) of nx 128 × nt 41
(about 4 MB), a U-Net with 8 initial features and 3 levels (PDEBench: 32 and 4), 4 epochs that
train on the first 21 frames (``t_train``) and evaluate the full 41, batch size 16 and a StepLR
step of 1 epoch (PDEBench's 50 and 100 of 500 epochs, scaled). One evaluation is about 10 s on
one core.

advection, full: PDEBench's data set (10,000 samples of 1024 × 201, 8.2 GB, read at 256 × 41),
PDEBench's models and hyperparameters, 500 epochs.

pinn, cpu: β = 1, initial conditions from the recipe's two lowest modes, 500 collocation
points, 1,000 iterations (``advection_pinn`` replaces the cap by 10 s of training per
trajectory, so Adam, L-BFGS and ENGD are compared at equal time). pinn, full: β = 4, the full recipe, PDEBench's 15,000
iterations, 1,000 collocation and 1,000 boundary points, three trajectories per split.

digits: 15 epochs (cpu, a few seconds) or 60 (full).
"""

from __future__ import annotations

from typing import Any

from evo_engine.sciml.advection import AdvectionRecipe
from evo_engine.sciml.digits import DigitsTask
from evo_engine.sciml.pinn import PinnTask
from evo_engine.sciml.training import PDEBENCH_DEFAULTS, AdvectionTask

PRESETS = ("cpu", "full")


def _check(preset: str) -> None:
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")


def advection_task(preset: str, beta: float = 4.0) -> AdvectionTask:
    """The U-Net/FNO training task of a preset (PDEBench's β = 4 by default)."""
    _check(preset)
    if preset == "full":
        return AdvectionTask(recipe=AdvectionRecipe(beta=beta), nx=256, nt=41, epochs=500)
    defaults: dict[str, Any] = {
        **PDEBENCH_DEFAULTS,
        "init_features": 8,
        "unet_depth": 3,
        "batch_size": 16,
        "scheduler_step": 1,
    }
    return AdvectionTask(
        recipe=AdvectionRecipe(beta=beta, samples=200, nx=128, nt=41),
        nx=128,
        nt=41,
        samples=200,  # a PDEBench file given instead is thinned to every 50th trajectory
        epochs=4,
        t_train=21,
        defaults=defaults,
    )


def pinn_task(preset: str) -> PinnTask:
    """The PINN task of a preset (full: PDEBench's β = 4, 15,000 iterations)."""
    _check(preset)
    if preset == "full":
        return PinnTask(beta=4.0, trajectories=3, nx=1024, nt=201, iterations=15_000)
    # Two of the recipe's four modes: with all four a PINN needs thousands of iterations to
    # leave the trivial (constant) solution, so every configuration would score the same.
    return PinnTask(
        beta=1.0,
        ic_modes=2,
        trajectories=1,
        nx=128,
        nt=41,
        iterations=1000,
        num_domain=500,
        num_boundary=200,
        report_every=250,
    )


def digits_task(preset: str) -> DigitsTask:
    """The digits task of a preset."""
    _check(preset)
    return DigitsTask(epochs=60 if preset == "full" else 15)
