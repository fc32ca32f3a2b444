"""A 2D Poisson PINN with a known solution, the test bed of the PINN training methods.

−Δu = f on the unit square with u = 0 on its boundary and f = 2π² sin(πx) sin(πy), so that
u = sin(πx) sin(πy) (the first example of Müller & Zeinhofer's ENGD paper). The loss is the
equal-weight sum of the mean squared PDE residual Δu + f at the cell centres of an n × n grid
and the mean squared boundary value at m equally spaced points per side. Fitness: the relative
L2 error ‖u_pinn − u‖₂ / ‖u‖₂ on a uniform evaluation grid including the boundary. Lower is
better. The collocation points are fixed, so a run depends on ``ctx.seed`` only through the
network's initial weights.

Hyperparameters (``params``; missing ones from ``PoissonTask.defaults``): the network's
``width``, ``depth``, ``activation`` and the training method's settings (``optimizer`` and the
others of :data:`evo_engine.sciml.engd.TRAINING_DEFAULTS`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from evo_engine.sciml.engd import (
    TRAINING_DEFAULTS,
    Budget,
    Params,
    ResidualTerm,
    check_settings,
    mlp_jet,
    mlp_value,
    parameters_of,
    train,
)
from evo_engine.sciml.models import PINN
from evo_engine.sciml.runtime import EvaluationContext, seed_everything

POISSON_DEFAULTS: dict[str, Any] = {
    **TRAINING_DEFAULTS,
    "width": 32,
    "depth": 1,
    "activation": "tanh",
}
"""A shallow tanh network of width 32, as in the ENGD paper's Poisson example."""


@dataclass(frozen=True)
class PoissonTask:
    """Collocation, evaluation grid and budget of the Poisson objective."""

    interior: int = 30
    """Interior collocation points per side (n² in all)."""
    boundary: int = 30
    """Boundary points per side (4m in all)."""
    evaluation: int = 101
    """Evaluation grid points per side, boundary included."""
    iterations: int = 100_000
    seconds: float | None = None
    clock: str = "wall"
    report_every: int = 100
    dtype: str = "float64"
    defaults: Mapping[str, Any] = field(default_factory=lambda: dict(POISSON_DEFAULTS))

    def __post_init__(self) -> None:
        if self.interior < 1 or self.boundary < 1 or self.evaluation < 2:
            raise ValueError("need interior, boundary >= 1 and evaluation >= 2")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")

    def budget(self) -> Budget:
        return Budget(self.iterations, self.seconds, self.report_every, self.clock)


def exact_solution(points: torch.Tensor) -> torch.Tensor:
    """u(x, y) = sin(πx) sin(πy) at ``points`` ``[n, 2]``."""
    return torch.sin(math.pi * points[:, 0]) * torch.sin(math.pi * points[:, 1])


def source(points: torch.Tensor) -> torch.Tensor:
    """f = −Δu = 2π² sin(πx) sin(πy)."""
    return 2 * math.pi**2 * exact_solution(points)


def collocation_points(task: PoissonTask, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Interior cell centres ``[n², 2]`` and boundary points ``[4m, 2]`` (corners once)."""
    centres = (torch.arange(task.interior, dtype=dtype) + 0.5) / task.interior
    interior = torch.cartesian_prod(centres, centres)
    s = torch.arange(task.boundary, dtype=dtype) / task.boundary
    zeros, ones = torch.zeros_like(s), torch.ones_like(s)
    boundary = torch.cat(
        [
            torch.stack((s, zeros), 1),
            torch.stack((ones, s), 1),
            torch.stack((1 - s, ones), 1),
            torch.stack((zeros, 1 - s), 1),
        ]
    )
    return interior, boundary


def poisson_terms(
    model: nn.Module, interior: torch.Tensor, boundary: torch.Tensor
) -> list[ResidualTerm]:
    """The residual terms Δu + f at ``interior`` and u at ``boundary``, weight 1 each."""
    axes = torch.eye(2, dtype=interior.dtype, device=interior.device)

    def pde(params: Params, xy: torch.Tensor) -> torch.Tensor:
        second = mlp_jet(model, params, xy, axes, order=2)[2]
        assert second is not None  # order 2
        return second.sum(-1) + source(xy)

    def value(params: Params, xy: torch.Tensor) -> torch.Tensor:
        return mlp_value(model, params, xy)

    return [ResidualTerm("pde", pde, interior), ResidualTerm("boundary", value, boundary)]


def relative_l2(model: nn.Module, task: PoissonTask) -> dict[str, float]:
    """Relative L2 and max error of ``model`` against the exact solution on the evaluation grid."""
    param = next(model.parameters())
    g = torch.linspace(0.0, 1.0, task.evaluation, dtype=param.dtype, device=param.device)
    points = torch.cartesian_prod(g, g)
    with torch.no_grad():
        err = model(points).squeeze(-1).double() - exact_solution(points).double()
        exact_norm = exact_solution(points).double().norm()
    return {"rel_l2": float(err.norm() / exact_norm), "max_error": float(err.abs().max())}


def train_poisson(
    params: Mapping[str, Any], ctx: EvaluationContext, task: PoissonTask
) -> dict[str, float]:
    """Objective: train a PINN on the Poisson problem; fitness = relative L2 error.

    Use as ``functools.partial(train_poisson, task=PoissonTask(...))``. The error is reported
    every ``task.report_every`` iterations; ``ctx.should_stop()`` ends training early.
    """
    p = check_settings({**task.defaults, **params})
    dtype = getattr(torch, task.dtype)
    device = str(ctx.device)
    seed_everything(int(ctx.seed))
    model = PINN(width=int(p["width"]), depth=int(p["depth"]), activation=str(p["activation"]))
    model = model.to(device=device, dtype=dtype)
    interior, boundary = (t.to(device) for t in collocation_points(task, dtype))
    terms = poisson_terms(model, interior, boundary)

    def on_report(iteration: int) -> bool:
        ctx.report(iteration, relative_l2(model, task)["rel_l2"])
        return ctx.should_stop()

    stats = train(model, terms, p, task.budget(), on_report)
    scores = relative_l2(model, task)
    n_params = sum(t.numel() for t in parameters_of(model).values())
    return {"fitness": scores["rel_l2"], **scores, **stats, "n_params": float(n_params)}
