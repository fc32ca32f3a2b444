"""Objective that trains a small CNN on scikit-learn's real 8×8 handwritten digits.

The data (1,797 images of 10 classes, shipped inside scikit-learn, so nothing is downloaded) are
scaled to [0, 1] and shuffled once with a fixed seed; test = the first 20%, validation = the
next 20%, training = the rest. Fitness: the validation error rate (1 − accuracy, a fraction) of
the epoch with the lowest validation error; the validation cross-entropy is recorded too.
Lower is better.

Hyperparameters (``params``; missing ones from ``DigitsTask.defaults``): ``layers``,
``channels``, ``activation`` (see :data:`evo_engine.sciml.models.ACTIVATIONS`), ``dropout``, ``lr``,
``weight_decay``, ``batch_size``.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from evo_engine.sciml.checkpoint import (
    apply_hyperparameters,
    load_checkpoint,
    pbt_interval,
    restore,
    save_checkpoint,
)
from evo_engine.sciml.models import CNN
from evo_engine.sciml.runtime import EvaluationContext, cached, seed_everything

DIGITS_DEFAULTS: dict[str, Any] = {
    "layers": 2,
    "channels": 16,
    "activation": "relu",
    "dropout": 0.0,
    "lr": 1e-3,
    "weight_decay": 0.0,
    "batch_size": 64,
}

ACTIVATION_TREE: dict[str, list[str]] = {
    "rectifiers": ["relu", "leaky_relu", "elu", "selu"],
    "smooth": ["gelu", "silu"],
    "saturating": ["tanh", "sigmoid"],
}
"""Activations grouped by family, for a ``Categorical(tree=...)`` search parameter."""


@dataclass(frozen=True)
class DigitsTask:
    """How long the digits objective trains and its default hyperparameters."""

    epochs: int = 30
    split_seed: int = 0
    defaults: Mapping[str, Any] = field(default_factory=lambda: dict(DIGITS_DEFAULTS))


def load_digits_splits(split_seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The digits as ``{split: (images [n, 1, 8, 8] float32 in [0, 1], labels [n] int64)}``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, np.newaxis]
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(split_seed).permutation(len(labels))
    fifth = len(labels) // 5
    bounds = {"test": (0, fifth), "val": (fifth, 2 * fifth), "train": (2 * fifth, len(labels))}
    return {name: (images[order[a:b]], labels[order[a:b]]) for name, (a, b) in bounds.items()}


def _tensors(
    ctx: EvaluationContext, task: DigitsTask
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    def build() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        splits = load_digits_splits(task.split_seed)
        return {
            name: (torch.from_numpy(x).to(ctx.device), torch.from_numpy(y).to(ctx.device))
            for name, (x, y) in splits.items()
        }

    return cached(ctx, ("digits", task.split_seed, str(ctx.device)), build)


@torch.no_grad()
def _score(model: CNN, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    model.eval()
    logits = model(images)
    accuracy = float((logits.argmax(1) == labels).float().mean())
    return {
        "error": 1.0 - accuracy,
        "accuracy": accuracy,
        "loss": float(F.cross_entropy(logits, labels)),
    }


def _fit(
    params: Mapping[str, Any], ctx: EvaluationContext, task: DigitsTask
) -> tuple[CNN, dict[str, Any]]:
    p = {**task.defaults, **params}
    generator = seed_everything(int(ctx.seed))
    data = _tensors(ctx, task)
    x_train, y_train = data["train"]
    model = CNN(
        channels=int(p["channels"]),
        layers=int(p["layers"]),
        activation=str(p["activation"]),
        dropout=float(p["dropout"]),
    ).to(ctx.device)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=float(p["lr"]), weight_decay=float(p["weight_decay"])
    )
    first_epoch, stop_epoch, pbt = pbt_interval(ctx, task.epochs)
    if pbt:  # one interval of a population-based training (evo_engine.sciml.checkpoint)
        if ctx.checkpoint_load is not None:
            restore(load_checkpoint(ctx.checkpoint_load), model, optimizer, None)
        apply_hyperparameters(optimizer, None, p, first_epoch)
    batch_size = max(1, int(p["batch_size"]))
    best: dict[str, Any] = {"error": math.inf, "epoch": 0, "state": None, "scores": None}
    start = time.perf_counter()
    train_loss, epochs_run = math.nan, first_epoch
    for epoch in range(first_epoch, stop_epoch):
        epochs_run = epoch + 1
        model.train()
        order = torch.randperm(len(y_train), generator=generator).to(y_train.device)
        losses = []
        for index in order.split(batch_size):
            loss = F.cross_entropy(model(x_train[index]), y_train[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        train_loss = float(np.mean(losses))
        scores = _score(model, *data["val"])
        ctx.report(epoch + 1, scores["error"])  # step = epochs completed
        if scores["error"] < best["error"] or pbt:  # PBT scores and keeps the final weights
            best.update(error=scores["error"], epoch=epoch + 1, scores=scores)  # 1-based, as reports
            best["state"] = None if pbt else copy.deepcopy(model.state_dict())
        if not math.isfinite(train_loss) or ctx.should_stop():
            break
    if pbt:
        save_checkpoint(ctx.checkpoint_save, model, optimizer, None, epochs_run, p)
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    record = {
        "fitness": best["error"],
        **{f"val_{k}": v for k, v in best["scores"].items()},
        "best_epoch": float(best["epoch"]),
        "train_loss": train_loss,
        "n_params": float(sum(t.numel() for t in model.parameters())),
        "train_seconds": time.perf_counter() - start,
    }
    return model, record


def train_digits(
    params: Mapping[str, Any], ctx: EvaluationContext, task: DigitsTask
) -> dict[str, float]:
    """Objective: fitness = validation error rate of the best epoch; all scores recorded.

    Use as ``functools.partial(train_digits, task=DigitsTask(...))``.
    """
    return _fit(params, ctx, task)[1]


def digits_test_metrics(
    params: Mapping[str, Any], ctx: EvaluationContext, task: DigitsTask
) -> dict[str, float]:
    """Validation record plus ``test_error``, ``test_accuracy`` and ``test_loss``."""
    model, record = _fit(params, ctx, task)
    test = _score(model, *_tensors(ctx, task)["test"])
    return {**record, **{f"test_{k}": v for k, v in test.items()}}
