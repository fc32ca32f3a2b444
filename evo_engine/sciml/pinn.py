"""Objective that fits a physics-informed network to one advection trajectory, as PDEBench does.

Per trajectory (PDEBench trains one PINN per sample): an MLP u(x, t) is fitted on
x ∈ [0, 1], t ∈ [0, T] to the residual u_t + β u_x = 0 at ``num_domain`` random collocation
points, to the initial condition at the ``nx`` cell centres and to periodicity u(0, t) = u(1, t)
at ``num_boundary`` random times, with equal weights (DeepXDE's setup in PDEBench), trained
with Adam (PDEBench's choice), L-BFGS or energy natural gradient descent
(:mod:`evo_engine.sciml.engd`) for ``iterations`` steps or ``seconds`` (if set), whichever ends
first. A wall-clock budget is the fair one when the optimizer is searched: an ENGD step costs as
much as hundreds of Adam steps.

Initial conditions come from PDEBench's recipe (:mod:`evo_engine.sciml.initial_conditions`),
drawn with a fixed seed (``ic_modes`` is the recipe's number of modes, 4 in PDEBench; fewer
modes give smoother, easier trajectories), so the exact solution u0((x − βt) mod 1) is known everywhere and no data
file is needed. Of the ``2·trajectories`` drawn, the first half is the test set and the second
half the validation set (test first, as in the advection splits). Fitness: the validation
relative L2 error ‖u_pinn − u_exact‖₂ / ‖u_exact‖₂ on the nt × nx grid of the whole domain,
averaged over the validation trajectories. Lower is better. The record also holds PDEBench's
metrics (:mod:`evo_engine.sciml.metrics`) on the same grid, over the frames after t = 0.

Hyperparameters (``params``; missing ones from ``PinnTask.defaults``, PDEBench's): ``width``,
``depth``, ``activation``, ``optimizer`` ("adam", "lbfgs", "engd") and each method's settings:
``lr`` (Adam's), ``lbfgs_lr``, ``lbfgs_history``, ``lbfgs_line_search``, ``engd_damping``,
``engd_step`` ("line_search" or "fixed"), ``engd_lr`` (the fixed step). The settings of the
methods not chosen are ignored.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from evo_engine.models import PINN
from evo_engine.sciml.engd import TRAINING_DEFAULTS, Budget, advection_terms, check_settings, train
from evo_engine.sciml.initial_conditions import cell_centres, sample_initial_conditions
from evo_engine.sciml.metrics import advection_metrics
from evo_engine.sciml.runtime import EvaluationContext, cached, seed_everything
from evo_engine.sciml.solvers import exact_solution

PINN_DEFAULTS: dict[str, Any] = {
    **TRAINING_DEFAULTS,
    "optimizer": "adam",
    "lr": 1e-3,
    "width": 40,
    "depth": 6,
    "activation": "tanh",
}
"""PDEBench's ``config_pinn_pde1d.yaml`` (Adam 1e-3, an MLP of 6 hidden layers of 40, tanh) and
the other training methods' default settings."""


@dataclass(frozen=True)
class PinnTask:
    """What the PINN objective fits and how long (PDEBench: 15,000 iterations, β = 4)."""

    beta: float = 4.0
    trajectories: int = 1
    ic_seed: int = 2022
    ic_modes: int = 4
    nx: int = 256
    nt: int = 41
    final_time: float = 2.0
    iterations: int = 15_000
    num_domain: int = 1000
    num_boundary: int = 1000
    report_every: int = 500
    seconds: float | None = None
    """Wall-clock (or CPU, see ``clock``) budget per trajectory; None: iterations only."""
    clock: str = "wall"
    dtype: str = "auto"
    """"float32", "float64" or "auto": float32 for Adam and L-BFGS (PDEBench), float64 for ENGD."""
    defaults: Mapping[str, Any] = field(default_factory=lambda: dict(PINN_DEFAULTS))

    def __post_init__(self) -> None:
        if self.trajectories < 1 or self.iterations < 1 or self.nx < 2 or self.nt < 2:
            raise ValueError("need trajectories, iterations >= 1 and nx, nt >= 2")
        if self.dtype not in ("auto", "float32", "float64"):
            raise ValueError(f"dtype must be 'auto', 'float32' or 'float64', got {self.dtype!r}")
        Budget(self.iterations, self.seconds, self.report_every, self.clock)  # checks them

    def torch_dtype(self, optimizer: str) -> torch.dtype:
        """The precision a run with ``optimizer`` trains in."""
        if self.dtype == "auto":
            return torch.float64 if optimizer == "engd" else torch.float32
        return getattr(torch, self.dtype)


def _trajectories(task: PinnTask, split: str) -> dict[str, np.ndarray]:
    """Initial values and exact solutions of one split: u0 ``[k, nx]``, u ``[k, nt, nx]``."""
    initial = sample_initial_conditions(
        2 * task.trajectories, task.nx, seed=task.ic_seed, modes=task.ic_modes
    )
    k = task.trajectories
    chosen = initial[:k] if split == "test" else initial[k:]
    x = cell_centres(task.nx)
    t = np.linspace(0.0, task.final_time, task.nt)
    return {"x": x, "t": t, "u0": chosen(x), "u": exact_solution(chosen, x, t, task.beta)}


def _grid_points(x: np.ndarray, t: np.ndarray, device: str) -> torch.Tensor:
    tt, xx = np.meshgrid(t, x, indexing="ij")
    points = np.stack((xx.ravel(), tt.ravel()), axis=1)
    return torch.tensor(points, dtype=torch.float64, device=device)


def _relative_l2(model: torch.nn.Module, points: torch.Tensor, exact: np.ndarray) -> dict:
    """Relative L2 error on the whole grid, and PDEBench's metrics over the frames after t = 0."""
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        pred = model(points.to(dtype)).reshape(exact.shape).double().cpu().numpy()
    err = pred - exact
    pdebench = advection_metrics(
        torch.from_numpy(pred)[None], torch.from_numpy(exact)[None], initial_step=1
    )
    return {"rel_l2": float(np.linalg.norm(err) / np.linalg.norm(exact)), **pdebench}


def fit_trajectory(
    params: Mapping[str, Any],
    ctx: EvaluationContext,
    task: PinnTask,
    u0: np.ndarray,
    x: np.ndarray,
    score: Any = None,
) -> tuple[torch.nn.Module, dict[str, float]]:
    """Fit a PINN to the trajectory starting from ``u0`` (values at ``x``).

    Returns the model and the training statistics of :func:`evo_engine.sciml.engd.train`.
    ``score()`` (optional) returns the current validation error; it is reported every
    ``task.report_every`` iterations and at the end, and training ends early when
    ``ctx.should_stop()``.
    """
    p = check_settings({**task.defaults, **params})
    device = str(ctx.device)
    dtype = task.torch_dtype(p["optimizer"])
    generator = seed_everything(int(ctx.seed))
    model = PINN(**_model_kwargs(task, params)).to(device=device, dtype=dtype)
    collocation = torch.rand(task.num_domain, 2, generator=generator)
    collocation[:, 1] *= task.final_time
    boundary_times = task.final_time * torch.rand(task.num_boundary, 1, generator=generator)
    initial_points = torch.tensor(np.stack((x, np.zeros_like(x)), 1))
    initial_values = torch.tensor(u0).reshape(-1, 1)
    collocation, boundary_times, initial_points, initial_values = (
        v.to(device=device, dtype=dtype)
        for v in (collocation, boundary_times, initial_points, initial_values)
    )
    terms = advection_terms(
        model, task.beta, collocation, initial_points, initial_values, boundary_times
    )

    def on_report(iteration: int) -> bool:
        if score is not None:
            ctx.report(iteration, score(model))
        return ctx.should_stop()

    budget = Budget(task.iterations, task.seconds, task.report_every, task.clock)
    stats = train(model, terms, p, budget, on_report)
    return model, stats


def _evaluate_split(
    params: Mapping[str, Any], ctx: EvaluationContext, task: PinnTask, split: str
) -> dict[str, float]:
    key = ("pinn", task.beta, task.trajectories, task.ic_seed, task.ic_modes, task.nx, task.nt)
    key = (*key, task.final_time)
    data = cached(ctx, (*key, split), lambda: _trajectories(task, split))
    points = _grid_points(data["x"], data["t"], str(ctx.device))
    results = []
    for k in range(len(data["u0"])):
        exact = data["u"][k]

        def score(model: torch.nn.Module, exact: np.ndarray = exact) -> float:
            return _relative_l2(model, points, exact)["rel_l2"]

        model, stats = fit_trajectory(
            params, ctx, task, data["u0"][k], data["x"], score if split == "val" else None
        )
        results.append({**_relative_l2(model, points, exact), **stats})
    return {f"{split}_{name}": float(np.mean([r[name] for r in results])) for name in results[0]}


def train_pinn(
    params: Mapping[str, Any], ctx: EvaluationContext, task: PinnTask
) -> dict[str, float]:
    """Objective: fit a PINN per validation trajectory; fitness = mean validation relative L2.

    Use as ``functools.partial(train_pinn, task=PinnTask(...))``.
    """
    start = time.perf_counter()
    record = _evaluate_split(params, ctx, task, "val")
    n_params = sum(t.numel() for t in PINN(**_model_kwargs(task, params)).parameters())
    return {
        "fitness": record["val_rel_l2"],
        **record,
        "n_params": float(n_params),
        "train_seconds": time.perf_counter() - start,
    }


def pinn_test_metrics(
    params: Mapping[str, Any], ctx: EvaluationContext, task: PinnTask
) -> dict[str, float]:
    """Validation record plus ``test_rel_l2``, ``test_rmse``, ``test_max_error`` (test ICs)."""
    return {**train_pinn(params, ctx, task), **_evaluate_split(params, ctx, task, "test")}


def _model_kwargs(task: PinnTask, params: Mapping[str, Any]) -> dict[str, Any]:
    p = {**task.defaults, **params}
    return {"width": int(p["width"]), "depth": int(p["depth"]), "activation": str(p["activation"])}
