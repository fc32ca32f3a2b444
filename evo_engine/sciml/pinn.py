"""Objective that fits a physics-informed network to one advection trajectory (PDEBench's setup).

Per trajectory (PDEBench trains one PINN per sample): an MLP u(x, t) is fitted on
x ∈ [0, 1], t ∈ [0, T] to the residual u_t + β u_x = 0, to the initial condition at the ``nx``
cell centres (the data points) and to periodicity u(0, t) = u(1, t), with equal weights (the
loss is the sum of the three mean squares, DeepXDE's default in PDEBench), trained with Adam
(PDEBench's choice), L-BFGS or energy natural gradient descent (:mod:`evo_engine.sciml.engd`)
for ``iterations`` steps or ``seconds`` (if set), whichever ends first. A wall-clock budget is
the fair one when the optimizer is searched: an ENGD step costs as much as hundreds of Adam steps.

Two point layouts (``PinnTask.points``):

- ``"pdebench"`` (the full preset): DeepXDE's ``TimePDE(num_domain=1000, num_boundary=1000,
  num_initial=5000)`` with its default Hammersley sampling: ``num_domain`` points of a 2D
  Hammersley set in the space-time box, ``num_boundary`` points on x ∈ {0, 1} (side drawn at
  random, as DeepXDE does) at van der Corput times, ``num_initial`` points at t = 0 at van der
  Corput positions; the PDE residual is taken on **all** of them (about 7,000 points, as
  DeepXDE's ``train_x_all``), the periodic condition on the boundary points' times, the initial
  condition on the ``nx`` data points.
- ``"random"`` (the cpu preset): ``num_domain`` uniform random interior points carry the
  residual, ``num_boundary`` random times the periodic condition; no extra initial points.

Targets and score (``PinnTask.solver``, ``score_frames``): PDEBench's targets are its FV data
(``"fv"``: :func:`~evo_engine.sciml.solvers.finite_volume_solution`, MUSCL, CFL 0.4, on the
``nx`` grid, the full preset) — the cpu preset uses the exact shift u0((x − βt) mod 1)
(``"exact"``). PDEBench scores the last 20 stored frames (t = 1.81 … 2.00 at 1024 × 201;
``score_frames=20``, the full preset); ``score_frames=None`` scores the whole grid except t = 0.

Initial conditions come from PDEBench's recipe (:mod:`evo_engine.sciml.initial_conditions`),
drawn with a fixed seed (``ic_modes`` is the recipe's number of modes, 4 in PDEBench; fewer
modes give smoother, easier trajectories), so no data file is needed. Of the
``2·trajectories`` drawn, the first half is the test set and the second half the validation set.
Fitness: the validation relative L2 error ‖u_pinn − u‖₂ / ‖u‖₂ on the scored frames, averaged over
the validation trajectories. Lower is better. The record also holds PDEBench's metrics
(:mod:`evo_engine.sciml.metrics`) on the same frames, clean and in PDEBench's published
convention (``*_pdebench``: every scored frame, one batch).

Like PDEBench, the score is that of the final network: PDEBench's
``ModelCheckpoint(save_better_only=True, period=5000)`` only writes checkpoint files, and its
``model.predict`` uses the weights as they are after the last iteration.

Remaining differences from PDEBench's PINN, even under the full preset:

- the trajectories are our own draws of its recipe (seed 2022, test then validation), not the
  file's samples −1 … −9, and every trajectory is scored (PDEBench reports only the metrics of
  its last loop iteration, sample −9, a bug);
- the Hammersley points are a Hammersley set (van der Corput base 2 × a regular grid), not
  point-for-point DeepXDE's (skopt's skip and column order are not reproduced), and the boundary
  sides come from our seeded generator;
- the network is ours (:class:`~evo_engine.sciml.models.PINN`, Glorot-normal like DeepXDE), trained
  in float32 by torch's Adam with a seeded initialisation;
- the FV targets are computed on the ``nx`` grid directly (PDEBench's file has the same grid
  at 1024 × 201, so under the full preset they agree).

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

from evo_engine.sciml.engd import TRAINING_DEFAULTS, Budget, advection_terms, check_settings, train
from evo_engine.sciml.initial_conditions import cell_centres, sample_initial_conditions
from evo_engine.sciml.metrics import PDEBENCH_SUFFIX, advection_metrics
from evo_engine.sciml.models import PINN
from evo_engine.sciml.runtime import EvaluationContext, cached, seed_everything
from evo_engine.sciml.solvers import exact_solution, finite_volume_solution

POINT_LAYOUTS = ("random", "pdebench")
TARGET_SOLVERS = ("exact", "fv")

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
    num_initial: int = 5000
    """Extra residual points at t = 0 (``points="pdebench"`` only; DeepXDE's ``num_initial``)."""
    points: str = "random"
    """"random" or "pdebench" (Hammersley, residual on every point): see the module doc."""
    solver: str = "exact"
    """Targets: "exact" shift or "fv" (PDEBench's finite-volume data)."""
    score_frames: int | None = None
    """Score the last ``score_frames`` frames (PDEBench: 20 of 201); None: all after t = 0."""
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
        if self.points not in POINT_LAYOUTS or self.solver not in TARGET_SOLVERS:
            raise ValueError(
                f"points must be one of {POINT_LAYOUTS} and solver one of {TARGET_SOLVERS}; "
                f"got {self.points!r}, {self.solver!r}"
            )
        if self.score_frames is not None and not 1 <= self.score_frames < self.nt:
            raise ValueError(f"score_frames must be in [1, nt) or None, got {self.score_frames}")
        if self.dtype not in ("auto", "float32", "float64"):
            raise ValueError(f"dtype must be 'auto', 'float32' or 'float64', got {self.dtype!r}")
        Budget(self.iterations, self.seconds, self.report_every, self.clock)  # checks them

    def torch_dtype(self, optimizer: str) -> torch.dtype:
        """The precision a run with ``optimizer`` trains in."""
        if self.dtype == "auto":
            return torch.float64 if optimizer == "engd" else torch.float32
        return getattr(torch, self.dtype)


def _trajectories(task: PinnTask, split: str) -> dict[str, np.ndarray]:
    """Initial values and targets of one split: u0 ``[k, nx]``, u ``[k, nt, nx]`` (all frames)."""
    initial = sample_initial_conditions(
        2 * task.trajectories, task.nx, seed=task.ic_seed, modes=task.ic_modes
    )
    k = task.trajectories
    chosen = initial[:k] if split == "test" else initial[k:]
    x = cell_centres(task.nx)
    t = np.linspace(0.0, task.final_time, task.nt)
    u0 = chosen(x)
    if task.solver == "fv":
        u0_32 = torch.as_tensor(u0, dtype=torch.float32)
        u = finite_volume_solution(u0_32, task.beta, t).double().numpy()
    else:
        u = exact_solution(chosen, x, t, task.beta)
    return {"x": x, "t": t, "u0": u0, "u": u}


def scored_frames(task: PinnTask) -> slice:
    """The frames a PINN is scored on: the last ``score_frames``, or all after t = 0."""
    return slice(task.nt - task.score_frames, None) if task.score_frames else slice(1, None)


def radical_inverse(i: np.ndarray, base: int = 2) -> np.ndarray:
    """The van der Corput radical inverse of the non-negative integers ``i`` in ``base``."""
    i = np.asarray(i, dtype=np.int64).copy()
    out = np.zeros(i.shape)
    scale = 1.0 / base
    while np.any(i > 0):
        out += (i % base) * scale
        i //= base
        scale /= base
    return out


def hammersley(n: int) -> np.ndarray:
    """A 2D Hammersley set of ``n`` points in (0, 1)²: (van der Corput base 2 of i, i/(n + 1))."""
    i = np.arange(1, n + 1)
    return np.stack((radical_inverse(i), i / (n + 1)), axis=1)


def training_points(task: PinnTask, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Residual points ``[n, 2]`` (x, t) and the periodic condition's times ``[k, 1]``."""
    T = task.final_time
    if task.points == "random":
        collocation = torch.rand(task.num_domain, 2, generator=generator, dtype=torch.float64)
        collocation[:, 1] *= T
        times = T * torch.rand(task.num_boundary, 1, generator=generator, dtype=torch.float64)
        return {"collocation": collocation, "boundary_times": times}
    domain = hammersley(task.num_domain) * np.array([1.0, T])
    times = T * radical_inverse(np.arange(1, task.num_boundary + 1))
    sides = torch.randint(0, 2, (task.num_boundary,), generator=generator).numpy()
    boundary = np.stack((sides.astype(np.float64), times), axis=1)
    positions = radical_inverse(np.arange(1, task.num_initial + 1))
    initial = np.stack((positions, np.zeros_like(positions)), axis=1)
    return {
        "collocation": torch.from_numpy(np.concatenate((domain, boundary, initial))),
        "boundary_times": torch.from_numpy(times[:, None]),
    }


def _grid_points(x: np.ndarray, t: np.ndarray, device: str) -> torch.Tensor:
    tt, xx = np.meshgrid(t, x, indexing="ij")
    points = np.stack((xx.ravel(), tt.ravel()), axis=1)
    return torch.tensor(points, dtype=torch.float64, device=device)


def _relative_l2(model: torch.nn.Module, points: torch.Tensor, exact: np.ndarray) -> dict:
    """Relative L2 error on the scored frames and PDEBench's metrics there, in both conventions.

    ``points`` are the scored frames' grid points and ``exact`` their values ``[frames, nx]``.
    """
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        pred = model(points.to(dtype)).reshape(exact.shape).double().cpu().numpy()
    err = pred - exact
    p, y = torch.from_numpy(pred)[None], torch.from_numpy(exact)[None]
    # A PINN is given no frame: every scored frame counts (initial_step 0) in the clean metrics;
    # PDEBench's published convention averages over the same frames in one batch.
    clean = advection_metrics(p, y, initial_step=0)
    published = advection_metrics(p, y, initial_step=0, convention="pdebench")
    return {
        "rel_l2": float(np.linalg.norm(err) / np.linalg.norm(exact)),
        **clean,
        **{name + PDEBENCH_SUFFIX: value for name, value in published.items()},
    }


def fit_trajectory(
    params: Mapping[str, Any],
    ctx: EvaluationContext,
    task: PinnTask,
    u0: np.ndarray,
    x: np.ndarray,
    score: Any = None,
    step_offset: int = 0,
) -> tuple[torch.nn.Module, dict[str, float]]:
    """Fit a PINN to the trajectory starting from ``u0`` (values at ``x``).

    Returns the model and the training statistics of :func:`evo_engine.sciml.engd.train`.
    ``score()`` (optional) returns the value to report; it is reported every
    ``task.report_every`` iterations and at the end, at step ``step_offset + iteration``, and
    training ends early when ``ctx.should_stop()``.
    """
    p = check_settings({**task.defaults, **params})
    device = str(ctx.device)
    dtype = task.torch_dtype(p["optimizer"])
    generator = seed_everything(int(ctx.seed))
    model = PINN(**_model_kwargs(task, params)).to(device=device, dtype=dtype)
    points = training_points(task, generator)
    collocation, boundary_times = points["collocation"], points["boundary_times"]
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
            ctx.report(step_offset + iteration, score(model))
        return ctx.should_stop()

    budget = Budget(task.iterations, task.seconds, task.report_every, task.clock)
    stats = train(model, terms, p, budget, on_report)
    return model, stats


def _evaluate_split(
    params: Mapping[str, Any], ctx: EvaluationContext, task: PinnTask, split: str
) -> dict[str, float]:
    key = ("pinn", task.beta, task.trajectories, task.ic_seed, task.ic_modes, task.nx, task.nt)
    key = (*key, task.final_time, task.solver)
    data = cached(ctx, (*key, split), lambda: _trajectories(task, split))
    frames = scored_frames(task)
    points = _grid_points(data["x"], data["t"][frames], str(ctx.device))
    results: list[dict[str, float]] = []
    done_iterations = 0
    for k in range(len(data["u0"])):
        exact = data["u"][k][frames]
        finished = [r["rel_l2"] for r in results]

        # What a pruner sees: steps that count on over the trajectories (one PINN each), and
        # the fitness so far, the mean over the finished trajectories and this one's current
        # error, so the last report is the fitness.
        def score(model: torch.nn.Module, exact: np.ndarray = exact,
                  finished: list[float] = finished) -> float:
            return float(np.mean([*finished, _relative_l2(model, points, exact)["rel_l2"]]))

        model, stats = fit_trajectory(
            params, ctx, task, data["u0"][k], data["x"], score if split == "val" else None,
            step_offset=done_iterations,
        )
        done_iterations += int(stats["iterations"])
        results.append({**_relative_l2(model, points, exact), **stats})
        if ctx.should_stop():  # stopped (pruned): the trajectories still to come do not train
            break
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
