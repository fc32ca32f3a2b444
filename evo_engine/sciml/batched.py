"""Train K advection models at once on one device: the batched twin of ``train_advection``.

:func:`train_advection_batch` takes K parameter sets and K evaluation contexts and returns, per
member, what :func:`~evo_engine.sciml.training.train_advection` would return for it with the
same context (same seed): the same initial weights (each member is built right after seeding
with its own seed, as a single training builds it), its own shuffling generator and so its own
mini-batches, its own learning rate, weight decay and StepLR schedule, and its own BatchNorm
running statistics (evaluation in eval mode matches a single training's). The members share
the forward and backward passes: their parameters are stacked (:mod:`~evo_engine.sciml.stacked`)
and the model runs under ``vmap``, so a GPU does one launch where K single trainings would do K.

Members are grouped by :func:`advection_batch_key` (model kind, architecture, activation and
batch size: what fixes the shapes); groups are trained one after another. After every epoch each
member reports its validation fitness through its own ``ctx.report``; a member whose training
loss became NaN/inf or exploded (diverged, ``training.divergence``) or whose ``ctx.should_stop()``
is true (pruned) leaves the stack, the others go on. A diverged member returns what a single
training gives (the record of its best epoch so far, or ``TrainingDiverged``); a pruned one returns ``StopEvaluation()``; a member whose parameters are
invalid returns the exception, and an exception while a group trains is returned for each
member of that group. Results are equal to single trainings up to floating-point rounding
(vmap batches the convolutions as grouped convolutions); ``tests/test_sciml_batched.py`` states
the tolerance.
"""

from __future__ import annotations

import math
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.nn import functional as F

from evo_engine.context import StopEvaluation
from evo_engine.sciml import training
from evo_engine.sciml.metrics import RecordedMetrics, advection_fitness
from evo_engine.sciml.models import UNet1d
from evo_engine.sciml.runtime import EvaluationContext, seed_everything
from evo_engine.sciml.stacked import StackedModels
from evo_engine.sciml.training import (
    PDEBENCH_DEFAULTS,
    AdvectionTask,
    build_model,
    compile_step,
    evaluate,
    load_split,
    precision_context,
    step_boundary,
    training_fitness,
)

ARCHITECTURE_KEYS = {
    "unet": ("init_features", "unet_depth"),
    "fno": ("modes", "width", "fno_layers"),
}


def advection_batch_key(
    params: Mapping[str, Any], defaults: Mapping[str, Any] | None = None
) -> Hashable:
    """What members must share to train in one stack: model, architecture, activation, batch size.

    Parameters of the other model kind are ignored (a U-Net member batches with U-Nets whatever
    its ``width``). Missing parameters take ``defaults`` (PDEBench's when None); within one run
    the defaults are fixed, so any defaults group the same members together.
    """
    p = {**(PDEBENCH_DEFAULTS if defaults is None else defaults), **params}
    kind = p["model"]
    if kind not in ARCHITECTURE_KEYS:
        raise ValueError(f"unknown model {kind!r}; choose 'unet' or 'fno'")
    architecture = tuple(int(p[name]) for name in ARCHITECTURE_KEYS[kind])
    return (kind, architecture, p.get("activation"), max(1, int(p["batch_size"])))


@dataclass
class _Member:
    """One member's hyperparameters, generator and running record while its group trains."""

    index: int
    params: dict[str, Any]
    ctx: EvaluationContext
    generator: torch.Generator = field(default_factory=torch.Generator)
    lr: float = 0.0
    weight_decay: float = 0.0
    step_size: int = 1
    gamma: float = 1.0
    epochs_run: int = 0
    train_loss: float = math.nan
    best_fitness: float = math.inf
    best_epoch: int = 0
    """Epochs behind the kept weights (1-based, like the reports' steps); 0 = none kept."""
    first_loss: float = math.nan
    """The first mini-batch's loss: the divergence guard's reference (``training.divergence``)."""
    best_metrics: dict[str, float] | None = None
    best_state: dict[str, torch.Tensor] | None = None
    curve: list[float] = field(default_factory=list)
    last_metrics: dict[str, float] | None = None
    outcome: str = ""  # "", "diverged", "pruned", "done"
    diverged: str = ""
    """Why it diverged (``training.divergence``), when it did."""


def _rollout_stack(
    step: Callable[..., torch.Tensor], stack: StackedModels, batch: torch.Tensor,
    grid: torch.Tensor, task: AdvectionTask,
) -> torch.Tensor:
    """Roll every member out on the same trajectories ``[b, nt, nx]``; returns ``[K, b, nt, nx]``."""
    s = task.initial_step
    params = stack.parameters()
    window = batch[:, :s].expand(stack.size, *batch[:, :s].shape)
    frames = [window]
    for _ in range(s, batch.shape[1]):
        frame = step(params, stack.buffers, window, grid).float()
        frames.append(frame)
        window = torch.cat((window[:, :, 1:], frame), dim=2)
    return torch.cat(frames, dim=2)


@torch.no_grad()
def _evaluate_stack(
    step: Callable[..., torch.Tensor], stack: StackedModels, val: dict[str, Any],
    task: AdvectionTask,
) -> list[dict[str, float]]:
    """Each member's metrics (clean and PDEBench's convention) on the validation split, in eval mode."""
    stack.train(False)
    accumulators = [RecordedMetrics(task.initial_step) for _ in range(stack.size)]
    for batch in val["u"].split(task.eval_batch_size):
        step_boundary(task)
        with precision_context(task, batch.device):
            predictions = _rollout_stack(step, stack, batch, val["grid"], task)
        for acc, prediction in zip(accumulators, predictions, strict=True):
            acc.update(prediction, batch)
    return [acc.compute() for acc in accumulators]


def _train_epoch_stack(
    step: Callable[..., torch.Tensor], stack: StackedModels, members: Sequence[_Member],
    train: torch.Tensor, grid: torch.Tensor, batch_size: int, task: AdvectionTask,
    unet: bool,
) -> list[float]:
    """One epoch for every member (own shuffling, own Adam); returns each mean batch loss."""
    stack.train(True)
    nt = min(task.t_train or train.shape[1], train.shape[1])
    s = task.initial_step
    grad_from = max(s, nt - task.unroll_step) if unet else s
    orders = torch.stack([torch.randperm(train.shape[0], generator=m.generator) for m in members])
    orders = orders.to(train.device)
    total = torch.zeros(len(members), dtype=torch.float64, device=train.device)
    batches = 0
    lrs = [m.lr for m in members]
    decays = [m.weight_decay for m in members]
    for index in orders.split(batch_size, dim=1):
        yy = train[index]  # [K, b, nt, nx]: every member its own samples
        k, b = index.shape
        step_boundary(task)
        params = stack.parameters()
        window = yy[:, :, :s]
        loss = yy.new_zeros(k)
        for t in range(s, nt):
            with precision_context(task, yy.device):
                if t < grad_from:
                    with torch.no_grad():
                        frame = step(params, stack.buffers, window, grid)
                else:
                    frame = step(params, stack.buffers, window, grid)
            frame = frame.float()
            if t >= grad_from:
                loss = loss + _member_mse(frame.reshape(k, b, -1), yy[:, :, t].reshape(k, b, -1))
            window = torch.cat((window[:, :, 1:], frame), dim=2)
        loss.sum().backward()  # members' parameters are disjoint: each gets its own gradient
        stack.adam_step(lrs, decays)
        total += loss.detach().double()
        if batches == 0:
            for m, first in zip(members, total.tolist(), strict=True):
                if math.isnan(m.first_loss):
                    m.first_loss = first
        batches += 1
    return (total / max(batches, 1)).tolist()


_member_mse = torch.vmap(F.mse_loss)


def _finish(member: _Member, stack: StackedModels, row: int, val: dict[str, Any],
            task: AdvectionTask, device: str, start: float, test: bool) -> dict[str, float]:
    """The record ``train_advection`` returns, for a member leaving the stack at ``row``; with
    ``test`` also the TEST metrics ``advection_test_metrics`` adds, of the same kept weights."""
    keep_best = task.fitness_last is None
    # A diverged member gets here only with a best epoch kept (``_leave``), as in fit().
    if keep_best and member.best_state is not None:
        metrics = member.best_metrics or {}
    elif keep_best or member.last_metrics is None:
        # the final weights, as they are (fit() scores them the same way)
        model = stack.member_model(row, None, device)
        metrics = evaluate(model, val["u"], val["grid"], task)
    else:
        metrics = member.last_metrics
    fitness = training_fitness(member.curve, task.fitness_last, metrics)
    record = {
        "fitness": float(fitness),
        **{f"val_{name}": value for name, value in metrics.items()},
        "val_fitness": float(fitness),
        "val_fitness_final": float(member.curve[-1]) if member.curve else math.nan,
        "best_epoch": float(member.best_epoch),
        "epochs_run": float(member.epochs_run),
        "train_loss": float(member.train_loss),
        "n_params": float(stack.n_params),
        "train_seconds": time.perf_counter() - start,
    }
    if test:
        # the weights fit() keeps: the best epoch's where one is kept, else the final ones
        kept = member.best_state if keep_best else None
        record.update(training.score_test(stack.member_model(row, kept, device), task,
                                          member.ctx))
    return record


def _train_group(members: list[_Member], task: AdvectionTask, results: list[Any],
                 key: Hashable, test: bool) -> None:
    """Train one group of same-shaped members together; write each result at its index."""
    start = time.perf_counter()
    ctx = members[0].ctx
    device = str(ctx.device)
    train = load_split(task, "train", ctx)
    val = load_split(task, "val", ctx)
    models = []
    for m in members:
        p = m.params
        m.generator = seed_everything(int(m.ctx.seed))  # then build, exactly as fit() does
        models.append(build_model(p, task.initial_step).to(device))
        m.lr, m.weight_decay = float(p["lr"]), float(p["weight_decay"])
        m.step_size, m.gamma = max(1, int(p["scheduler_step"])), float(p["scheduler_gamma"])
    unet = isinstance(models[0], UNet1d)
    stack = StackedModels(models)
    del models
    step = _step_function(stack, task, unet, key)
    batch_size = max(1, int(members[0].params["batch_size"]))
    active = list(members)
    for epoch in range(task.epochs):
        losses = _train_epoch_stack(step, stack, active, train["u"], train["grid"], batch_size,
                                    task, unet)
        for m, loss in zip(active, losses, strict=True):
            # StepLR after every epoch: lr × γ when the epoch count reaches a multiple of the step
            if (epoch + 1) % m.step_size == 0:
                m.lr *= m.gamma
            m.epochs_run, m.train_loss = epoch + 1, loss
            why = training.divergence(loss, m.first_loss, epoch + 1)
            if why is not None:
                # as fit(): no report; the best epoch so far is kept, or the member FAILED
                m.outcome, m.diverged = "diverged", why
        active = _leave(active, stack, results, val, task, device, start, test)
        if not active:
            break
        for row, metrics in enumerate(_evaluate_stack(step, stack, val, task)):
            m = active[row]
            fitness = advection_fitness(metrics)
            m.curve.append(fitness)
            m.last_metrics = metrics
            m.ctx.report(epoch + 1, fitness)  # step = epochs completed, as fit() reports
            if math.isfinite(fitness) and fitness < m.best_fitness:
                m.best_fitness, m.best_epoch, m.best_metrics = fitness, epoch + 1, metrics
                if task.fitness_last is None:  # only the best-epoch selection needs its weights
                    m.best_state = stack.member_state(row)
            if m.ctx.should_stop():
                m.outcome = "pruned"
            elif epoch + 1 == task.epochs:
                m.outcome = "done"
        active = _leave(active, stack, results, val, task, device, start, test)
        if not active:
            break


def _leave(active: list[_Member], stack: StackedModels, results: list[Any],
           val: dict[str, Any], task: AdvectionTask, device: str, start: float,
           test: bool) -> list[_Member]:
    """Write the results of members that are over and drop them from the stack; the rest."""
    keep = [row for row, m in enumerate(active) if not m.outcome]
    if len(keep) == len(active):
        return active
    for row, m in enumerate(active):
        if m.outcome == "pruned":
            results[m.index] = StopEvaluation()
        elif m.diverged and m.best_state is None:
            results[m.index] = training.TrainingDiverged(m.diverged)
        elif m.outcome:
            results[m.index] = _finish(m, stack, row, val, task, device, start, test)
    if keep:
        stack.keep(keep)
    return [active[row] for row in keep]


_STEPS: OrderedDict[Hashable, tuple[torch.nn.Module, Callable[..., torch.Tensor]]] = OrderedDict()
"""Compiled steps by architecture, so a worker compiles once per architecture, not per call;
the ``STEPS_KEPT`` most recently used."""
STEPS_KEPT = 32
"""Compiled steps a worker keeps. A search over widths, modes and depths meets hundreds of
architectures, and each compiled step holds its graph and template for the worker's life;
one evicted and met again is compiled again."""


def _step_function(stack: StackedModels, task: AdvectionTask, unet: bool,
                   key: Hashable) -> Callable[..., torch.Tensor]:
    """``step(params, buffers, windows, grid)``: every member's next frame, compiled if asked.

    A compiled step is kept per architecture and device (``torch.compile`` guards on the
    template module, so a fresh template per call would recompile every time and fall back to
    eager after ``torch._dynamo.config.cache_size_limit`` recompilations); the stack then uses
    the kept template, which has the same structure.
    """
    cache_key = (key, task.initial_step, str(stack.flat.device), task.compile_mode,
                 training.COMPILE_BACKEND)
    if task.compile and cache_key in _STEPS:
        _STEPS.move_to_end(cache_key)
        stack.template, step = _STEPS[cache_key]
        return step
    if unet:
        mapped = stack.forward_fn((0,))

        def step(params: dict, buffers: dict, window: torch.Tensor,
                 grid: torch.Tensor) -> torch.Tensor:
            return mapped(params, buffers, window)
    else:
        step = stack.forward_fn((0, None))  # FNO1d(x, grid): the grid is shared
    if task.compile:
        step = compile_step(step, task.compile_mode)
        _STEPS[cache_key] = (stack.template, step)
        while len(_STEPS) > STEPS_KEPT:
            _STEPS.popitem(last=False)
    return step


def train_advection_batch(
    params_list: Sequence[Mapping[str, Any]],
    ctxs: Sequence[EvaluationContext],
    task: AdvectionTask,
    test: bool = False,
) -> list[Any]:
    """Batch objective: train every member, return its record or its exception, in order.

    Use as ``functools.partial(train_advection_batch, task=AdvectionTask(...))``. Members are
    grouped by :func:`advection_batch_key`; see the module doc for what each member gets.
    ``test=True`` adds each member's TEST metrics, as
    :func:`~evo_engine.sciml.training.advection_test_metrics` does for one training (the
    recorded table of ``benchmarks/scenarios/advection_lr_table.py``).
    """
    if len(params_list) != len(ctxs):
        raise ValueError(f"got {len(params_list)} parameter sets for {len(ctxs)} contexts")
    results: list[Any] = [None] * len(params_list)
    groups: dict[Hashable, list[_Member]] = {}
    for i, (params, ctx) in enumerate(zip(params_list, ctxs, strict=True)):
        p = {**task.defaults, **params}
        try:
            key = advection_batch_key(p, task.defaults)
        except (ValueError, TypeError, KeyError) as exc:
            results[i] = exc
            continue
        groups.setdefault(key, []).append(_Member(i, p, ctx))
    for key, members in groups.items():
        try:
            _train_group(members, task, results, key, test)
        except Exception as exc:  # noqa: BLE001 - the group fails, other groups still train
            # Its frames hold the group's stack (on the GPU): let it go before the next
            # group trains, or that one can run out of memory too.
            traceback.clear_frames(exc.__traceback__)
            for m in members:
                if results[m.index] is None:
                    results[m.index] = exc
    return results
