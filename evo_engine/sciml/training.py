"""Objectives that train PDEBench's U-Net or FNO on 1D advection and score them with its metrics.

Training follows PDEBench's autoregressive recipe: the model sees the first ``initial_step`` (10)
frames and predicts the next one, its own output is fed back through a sliding window up to the
last frame. The FNO is trained with the loss summed over the full rollout (gradients through all
steps); the U-Net with the "pushforward" trick: the first steps run without gradients and only the
last ``unroll_step`` (20) steps contribute to the loss. Adam with weight decay (L2) and a StepLR
schedule; MSE losses reshaped with the actual batch size; evaluation in eval mode.

After every epoch the model is rolled out on the validation split and the fitness — the mean of
validation RMSE, nRMSE, bRMSE and cRMSE (:func:`~evo_engine.sciml.metrics.advection_fitness`) — is
reported (step = epochs completed). What the training returns depends on
``AdvectionTask.fitness_last``: None keeps the best epoch's weights and scores the minimum over
epochs, as PDEBench keeps its best checkpoint (it selects by rollout MSE on its test split; we
select by the fitness on validation); k keeps the final weights and scores the mean of the last
k epochs' validation fitness (:func:`reduce_curve`), which a search can trust more: the minimum
of a noisy curve is a second winner's curse on top of the seed's, and favours configurations
whose curves jitter most.
Deliberate differences from PDEBench: evaluation always in eval mode, exact batch sizes, metrics
averaged over the predicted frames only (see :mod:`evo_engine.sciml.metrics`), seeded runs.

Hyperparameters (``params`` keys, any missing one taken from ``AdvectionTask.defaults``, which
are PDEBench's): ``model`` ("unet" | "fno"), ``lr``, ``weight_decay``, ``scheduler_step``,
``scheduler_gamma``, ``batch_size``, ``init_features`` and ``unet_depth`` (U-Net), ``modes``,
``width`` and ``fno_layers`` (FNO), ``activation`` (None: the model's own, tanh / gelu).

The data file is, in this order: ``AdvectionTask.data_file``; the file named by the environment
variable ``EVO_ENGINE_ADVECTION_FILE`` (e.g. PDEBench's ``1D_Advection_Sols_beta4.0.hdf5``, strided
to the task's nx × nt); or the task's generated recipe, cached by
:func:`~evo_engine.sciml.advection.ensure_dataset`.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from evo_engine.sciml.advection import AdvectionRecipe, ensure_dataset
from evo_engine.sciml.checkpoint import (
    apply_hyperparameters,
    load_checkpoint,
    pbt_interval,
    restore,
    save_checkpoint,
)
from evo_engine.sciml.data import inspect_advection_file, read_advection, strides_for
from evo_engine.sciml.metrics import RecordedMetrics, advection_fitness
from evo_engine.sciml.models import FNO1d, UNet1d
from evo_engine.sciml.runtime import EvaluationContext, cached, seed_everything

ADVECTION_FILE_ENV = "EVO_ENGINE_ADVECTION_FILE"

PDEBENCH_DEFAULTS: dict[str, Any] = {
    "model": "unet",
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "scheduler_step": 100,
    "scheduler_gamma": 0.5,
    "batch_size": 50,
    "init_features": 32,
    "unet_depth": 4,
    "modes": 12,
    "width": 20,
    "fno_layers": 4,
    "activation": None,
}
"""PDEBench's ``config_Adv.yaml`` hyperparameters for the U-Net and the FNO."""

EXPLOSION = 1e6
"""An epoch whose mean training loss exceeds this multiple of the training's first mini-batch
loss has diverged: the weights have left any basin the validation could rank (a batched
training at lr 0.0763 reached fitness 3.8e26 and was recorded as COMPLETE)."""


class TrainingDiverged(RuntimeError):
    """The training loss became non-finite or exploded before any epoch could be kept: the
    evaluation is FAILED with this message (single and batched trainings alike)."""


def divergence(train_loss: float, first_loss: float, epoch: int) -> str | None:
    """Why the training diverged in ``epoch`` (1-based), or None while it has not.

    One rule for ``fit`` and the batched trainer: a non-finite epoch loss, or one above
    ``EXPLOSION`` times the first mini-batch's loss."""
    if not math.isfinite(train_loss):
        return f"training diverged in epoch {epoch}: the training loss is {train_loss}"
    if math.isfinite(first_loss) and first_loss > 0 and train_loss > EXPLOSION * first_loss:
        return (f"training diverged in epoch {epoch}: the training loss {train_loss:.3g} is over "
                f"{EXPLOSION:g} times its first mini-batch's {first_loss:.3g}")
    return None


COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class AdvectionTask:
    """What an advection objective trains on and for how long (hyperparameters come as params).

    ``nx``, ``nt`` and ``samples`` are what the model sees; the file is strided to them
    (PDEBench: 1024 × 201 read as 256 × 41). ``samples=None`` uses every sample of the file.
    ``t_train`` (PDEBench's knob; None = all nt frames) trains on the first ``t_train`` frames
    only, which makes an epoch cheaper; evaluation always rolls out to the last frame.

    Launch-overhead switches, off by default because they change the numerics: ``bf16`` runs
    the models' forward passes under bfloat16 autocast (losses, metrics and weights stay fp32);
    ``compile`` wraps the one-frame step in ``torch.compile`` with ``compile_mode`` (e.g.
    ``"reduce-overhead"``: CUDA graphs on a GPU; None: inductor's default).

    ``fitness_last``: None scores the best epoch and keeps its weights (PDEBench's checkpoint);
    k scores the mean validation fitness of the last k epochs and keeps the final weights.
    """

    recipe: AdvectionRecipe = field(default_factory=AdvectionRecipe)
    data_file: str | None = None
    nx: int = 256
    nt: int = 41
    samples: int | None = None
    epochs: int = 500
    initial_step: int = 10
    unroll_step: int = 20
    t_train: int | None = None
    eval_batch_size: int = 50
    defaults: Mapping[str, Any] = field(default_factory=lambda: dict(PDEBENCH_DEFAULTS))
    bf16: bool = False
    compile: bool = False
    compile_mode: str | None = None
    fitness_last: int | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.initial_step < 1 or self.nt <= self.initial_step:
            raise ValueError("need epochs >= 1 and 1 <= initial_step < nt")
        if self.fitness_last is not None and self.fitness_last < 1:
            # more than epochs is allowed (every epoch): benchmarks shorten a preset's training
            raise ValueError(f"need fitness_last >= 1 (or None), got {self.fitness_last}")
        if self.t_train is not None and self.t_train <= self.initial_step:
            raise ValueError("need t_train > initial_step")
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode must be one of {COMPILE_MODES}, got {self.compile_mode!r}")

    def resolve_file(self, device: str | None = None) -> Path:
        """The data file to train on (explicit, environment, or generated and cached); a file
        still to generate is solved on ``device`` (None: the default, the first GPU if any)."""
        if self.data_file:
            return Path(self.data_file)
        if os.environ.get(ADVECTION_FILE_ENV):
            return Path(os.environ[ADVECTION_FILE_ENV])
        return ensure_dataset(self.recipe, device=device)


def prepare_advection(task: AdvectionTask) -> Path:
    """Make sure the task's data exist and fit it (a scenario's ``prepare``); returns the file.

    Generates the recipe's file if needed; a given file is checked for its layout and for
    strides to the task's nx × nt, so a bad file stops the run before any worker starts.
    """
    path = task.resolve_file()
    strides_for(inspect_advection_file(path), task.nx, task.nt, task.samples)
    return path


def _load_split(task: AdvectionTask, path: Path, split: str, device: str) -> dict[str, Any]:
    info = inspect_advection_file(path)
    data = read_advection(path, split, **strides_for(info, task.nx, task.nt, task.samples))
    return {
        "u": torch.from_numpy(data.u).to(device),
        "grid": torch.from_numpy(data.x).to(device),
        "beta": data.beta,
    }


def load_split(task: AdvectionTask, split: str, ctx: EvaluationContext) -> dict[str, Any]:
    """One split as tensors on ``ctx.device``, read once per worker and kept in ``ctx.cache``."""
    path = task.resolve_file(str(ctx.device)).resolve()  # its own GPU, not every worker's cuda:0
    stat = path.stat() if path.exists() else None
    key = (
        "advection",
        str(path),
        stat and stat.st_mtime_ns,
        task.nx,
        task.nt,
        task.samples,
        split,
        str(ctx.device),
    )
    return cached(ctx, key, lambda: _load_split(task, path, split, str(ctx.device)))


def build_model(params: Mapping[str, Any], initial_step: int = 10) -> nn.Module:
    """Instantiate the U-Net or FNO described by complete ``params`` (see the module doc)."""
    kind = params["model"]
    activation = params.get("activation")
    if kind == "unet":
        return UNet1d(
            in_channels=initial_step,
            out_channels=1,
            init_features=int(params["init_features"]),
            depth=int(params["unet_depth"]),
            activation=activation or "tanh",
        )
    if kind == "fno":
        return FNO1d(
            num_channels=1,
            modes=int(params["modes"]),
            width=int(params["width"]),
            initial_step=initial_step,
            n_layers=int(params["fno_layers"]),
            activation=activation or "gelu",
        )
    raise ValueError(f"unknown model {kind!r}; choose 'unet' or 'fno'")


def precision_context(task: AdvectionTask, device: torch.device | str) -> Any:
    """bfloat16 autocast on ``device`` when ``task.bf16``, else a context that does nothing."""
    if not task.bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


COMPILE_BACKEND = "inductor"
"""``torch.compile``'s backend for ``AdvectionTask.compile`` (tests use "eager": tracing only)."""


def compile_step(fn: Any, mode: str | None) -> Any:
    """``torch.compile(fn)`` with ``mode`` (inductor) on :data:`COMPILE_BACKEND`."""
    if COMPILE_BACKEND != "inductor":
        return torch.compile(fn, backend=COMPILE_BACKEND)
    return torch.compile(fn, mode=mode)


def step_boundary(task: AdvectionTask) -> None:
    """Tell CUDA graphs (compile mode "reduce-overhead") that a new iteration starts here.

    Called before each training batch and each evaluation chunk, so the graphs' output
    buffers of the previous iteration may be reused while those of this one stay valid.
    """
    if task.compile:
        torch.compiler.cudagraph_mark_step_begin()


def _base(model: nn.Module) -> nn.Module:
    """The model itself, also when ``torch.compile`` wrapped it."""
    return getattr(model, "_orig_mod", model)


def _next_frame(model: nn.Module, window: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    frame = model(window, grid) if isinstance(_base(model), FNO1d) else model(window)
    return frame.float()  # a no-op in fp32; under bf16 autocast the window stays fp32


@torch.no_grad()
def rollout(
    model: nn.Module, trajectories: torch.Tensor, initial_step: int, grid: torch.Tensor,
    task: AdvectionTask | None = None,
) -> torch.Tensor:
    """Predict ``[b, nt, nx]`` autoregressively from the first ``initial_step`` true frames."""
    window = trajectories[:, :initial_step]
    frames = [window]
    for _ in range(initial_step, trajectories.shape[1]):
        with contextlib.nullcontext() if task is None else precision_context(
            task, trajectories.device
        ):
            frame = _next_frame(model, window, grid)
        frames.append(frame)
        window = torch.cat((window[:, 1:], frame), dim=1)
    return torch.cat(frames, dim=1)


def evaluate(
    model: nn.Module, trajectories: torch.Tensor, grid: torch.Tensor, task: AdvectionTask
) -> dict[str, float]:
    """PDEBench's metrics of a full rollout of ``model`` on ``trajectories``, in eval mode.

    Clean metrics (``nrmse``) and PDEBench's published convention (``nrmse_pdebench``), over
    batches of ``task.eval_batch_size`` (50, PDEBench's) trajectories.
    """
    model.eval()
    acc = RecordedMetrics(task.initial_step)
    for batch in trajectories.split(task.eval_batch_size):
        step_boundary(task)
        acc.update(rollout(model, batch, task.initial_step, grid, task), batch)
    return acc.compute()


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train: torch.Tensor,
    grid: torch.Tensor,
    batch_size: int,
    task: AdvectionTask,
    generator: torch.Generator,
    first_loss: list[float] | None = None,
) -> float:
    """One epoch of autoregressive training; returns the mean rollout loss per batch.

    An empty ``first_loss`` list receives the first mini-batch's loss (the divergence
    guard's reference)."""
    model.train()
    nt = min(task.t_train or train.shape[1], train.shape[1])
    s = task.initial_step
    # Pushforward for the U-Net: no gradients through the early steps (PDEBench's PF-20).
    grad_from = max(s, nt - task.unroll_step) if isinstance(_base(model), UNet1d) else s
    total, batches = 0.0, 0
    order = torch.randperm(train.shape[0], generator=generator).to(train.device)
    for index in order.split(batch_size):
        yy = train[index]
        b = yy.shape[0]
        step_boundary(task)
        window = yy[:, :s]
        loss = yy.new_zeros(())
        for t in range(s, nt):
            if t < grad_from:
                with torch.no_grad(), precision_context(task, yy.device):
                    frame = _next_frame(model, window, grid)
            else:
                with precision_context(task, yy.device):
                    frame = _next_frame(model, window, grid)
                loss = loss + F.mse_loss(frame.reshape(b, -1), yy[:, t].reshape(b, -1))
            window = torch.cat((window[:, 1:], frame), dim=1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach())
        if first_loss is not None and not first_loss:
            first_loss.append(total)
        batches += 1
    return total / max(batches, 1)


def reduce_curve(curve: Sequence[float], fitness_last: int | None) -> float:
    """The fitness of a training from its per-epoch validation fitness ``curve``.

    None: the minimum (the best epoch, NaN if no epoch was finite); k: the mean of the last k
    epochs (fewer if the training stopped sooner), NaN if any of them is not finite.
    """
    if not curve:
        return math.nan
    if fitness_last is None:
        finite = [v for v in curve if math.isfinite(v)]
        return min(finite) if finite else math.nan
    tail = curve[-fitness_last:]
    return sum(tail) / len(tail) if all(math.isfinite(v) for v in tail) else math.nan


def training_fitness(curve: Sequence[float], fitness_last: int | None,
                     kept: Mapping[str, float]) -> float:
    """An evaluation's fitness: ``reduce_curve`` of its per-epoch validation curve, or the
    ``kept`` weights' own score when no epoch ran (a PBT interval that trained nothing).

    A non-finite epoch among the last ``fitness_last`` leaves it NaN, so the evaluation fails
    (docs/sciml-task.md); it is not scored by its final epoch alone."""
    return reduce_curve(curve, fitness_last) if curve else advection_fitness(kept)


def _prefixed(prefix: str, metrics: Mapping[str, float]) -> dict[str, float]:
    return {f"{prefix}_{name}": value for name, value in metrics.items()}


def fit(params: Mapping[str, Any], ctx: EvaluationContext, task: AdvectionTask) -> dict[str, Any]:
    """Train with ``params``; return the kept model (best or final epoch) and its record."""
    p = {**task.defaults, **params}
    generator = seed_everything(int(ctx.seed))
    train = load_split(task, "train", ctx)
    val = load_split(task, "val", ctx)
    model = build_model(p, task.initial_step).to(ctx.device)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=float(p["lr"]), weight_decay=float(p["weight_decay"])
    )
    scheduler = torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=max(1, int(p["scheduler_step"])), gamma=float(p["scheduler_gamma"])
    )
    first_epoch, stop_epoch, pbt = pbt_interval(ctx, task.epochs)
    if pbt:  # one interval of a population-based training (evo_engine.sciml.checkpoint)
        if ctx.checkpoint_load is not None:
            restore(load_checkpoint(ctx.checkpoint_load), model, optimizer, scheduler)
        apply_hyperparameters(optimizer, scheduler, p, first_epoch)
    batch_size = max(1, int(p["batch_size"]))
    net = compile_step(model, task.compile_mode) if task.compile else model
    # PBT continues from the final weights, so it scores them: the mean of the interval's
    # last fitness_last epochs (the last epoch when fitness_last is None).
    fitness_last = task.fitness_last if task.fitness_last is not None or not pbt else 1
    keep_best = fitness_last is None
    curve: list[float] = []
    best: dict[str, Any] = {"fitness": math.inf, "epoch": 0, "state": None, "metrics": None}
    last_metrics: dict[str, float] | None = None
    start = time.perf_counter()
    epochs_run, train_loss = 0, math.nan
    first_loss: list[float] = []
    for epoch in range(first_epoch, stop_epoch):
        train_loss = train_epoch(
            net, optimizer, train["u"], train["grid"], batch_size, task, generator, first_loss
        )
        scheduler.step()
        epochs_run = epoch + 1
        diverged = divergence(train_loss, first_loss[0] if first_loss else math.nan,
                              epochs_run - first_epoch)
        if diverged is not None:
            # Scored on its final weights (fitness_last), a diverged training has nothing to
            # score; with a best-epoch checkpoint it keeps the best epoch so far, if any.
            if not keep_best or best["state"] is None:
                raise TrainingDiverged(diverged)
            break  # further epochs cannot recover
        metrics = evaluate(net, val["u"], val["grid"], task)
        fitness = advection_fitness(metrics)
        curve.append(fitness)
        last_metrics = metrics
        ctx.report(epoch + 1, fitness)  # step = epochs completed, as pruner rungs count them
        if math.isfinite(fitness) and fitness < best["fitness"]:
            # 1-based like the reports' steps: the number of epochs behind the kept weights.
            best.update(fitness=fitness, epoch=epoch + 1, metrics=metrics)
            if keep_best:
                best["state"] = copy.deepcopy(model.state_dict())
        if ctx.should_stop():
            break
    if keep_best and best["state"] is not None:
        model.load_state_dict(best["state"])
        metrics = best["metrics"]
    elif keep_best or last_metrics is None:
        metrics = evaluate(model, val["u"], val["grid"], task)  # the final weights, as they are
    else:
        metrics = last_metrics
    if pbt:
        save_checkpoint(ctx.checkpoint_save, model, optimizer, scheduler, epochs_run, p)
    fitness = training_fitness(curve, fitness_last, metrics)
    record: dict[str, Any] = {
        "fitness": float(fitness),
        **_prefixed("val", metrics),
        "val_fitness": float(fitness),
        "val_fitness_final": float(curve[-1]) if curve else math.nan,
        "best_epoch": float(best["epoch"]),
        "epochs_run": float(epochs_run),
        "train_loss": float(train_loss),
        "n_params": float(sum(t.numel() for t in model.parameters())),
        "train_seconds": time.perf_counter() - start,
    }
    return {"model": model, "record": record}


def train_advection(
    params: Mapping[str, Any], ctx: EvaluationContext, task: AdvectionTask
) -> dict[str, float]:
    """Objective: train on the training split, return the validation fitness and all metrics.

    Use as ``functools.partial(train_advection, task=AdvectionTask(...))``. Lower is better.
    """
    return fit(params, ctx, task)["record"]


def advection_test_metrics(
    params: Mapping[str, Any], ctx: EvaluationContext, task: AdvectionTask
) -> dict[str, float]:
    """Train exactly as :func:`train_advection` would, then also score the TEST split.

    Returns the validation record plus ``test_rmse``, ``test_nrmse``, ... and ``test_fitness``;
    meant for the best individuals at the end of a run (the optimiser never sees these).
    """
    result = fit(params, ctx, task)
    return {**result["record"], **score_test(result["model"], task, ctx)}


def score_test(model: nn.Module, task: AdvectionTask, ctx: EvaluationContext) -> dict[str, float]:
    """``model``'s TEST metrics (``test_rmse``, ``test_nrmse``, ...) and ``test_fitness``: what
    every end-of-run scorer adds to a record, single or batched training alike."""
    split = load_split(task, "test", ctx)
    metrics = evaluate(model, split["u"], split["grid"], task)
    return {**_prefixed("test", metrics), "test_fitness": advection_fitness(metrics)}


def advection_checkpoint_metrics(
    params: Mapping[str, Any], ctx: Any, task: AdvectionTask
) -> dict[str, float]:
    """``finalize`` for population-based training: score the best interval's own weights.

    A PBT result is a checkpoint trained under a schedule, not one setting to train again:
    this loads the checkpoint the run kept for the best interval (``ctx.uid``) and scores it
    on the validation and the test split, without training.
    """
    from evo_engine.context import checkpoint_file

    p = {**task.defaults, **params}
    model = build_model(p, task.initial_step).to(ctx.device)
    state = load_checkpoint(checkpoint_file(ctx.scratch_root, ctx.uid))
    model.load_state_dict(state["model"])
    val_split = load_split(task, "val", ctx)
    val = evaluate(model, val_split["u"], val_split["grid"], task)
    return {
        "fitness": advection_fitness(val),
        **_prefixed("val", val),
        **score_test(model, task, ctx),
        "epochs_run": float(state["step"]),
    }

