"""Helpers every SciML objective shares: seeding, the worker's device and its data cache."""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import torch

T = TypeVar("T")


class EvaluationContext(Protocol):
    """The part of the engine's per-evaluation context (``evo_engine.context.Context``) used here."""

    device: str
    seed: int
    cache: dict
    scratch_dir: Path

    def report(self, step: int, value: float) -> None: ...

    def should_stop(self) -> bool: ...


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch from ``seed``; return a CPU generator for data shuffling."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def cached(ctx: Any, key: Hashable, factory: Callable[[], T]) -> T:
    """Return ``ctx.cache[key]``, building it with ``factory()`` the first time in this worker."""
    cache = ctx.cache
    if key not in cache:
        cache[key] = factory()
    return cache[key]
