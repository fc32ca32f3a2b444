"""Initial designs: where an island's first individuals come from."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Design = Callable[[int, int, np.random.Generator], np.ndarray]
"""``design(n, dim, rng) -> (n, dim) array`` of points in [0, 1]^dim."""


def random_design(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    return rng.random((n, dim))


def latin_hypercube(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """One point in each of n equal strata per dimension, strata paired at random."""
    u = (rng.permuted(np.tile(np.arange(n), (dim, 1)), axis=1).T + rng.random((n, dim))) / n
    return u


DESIGNS: dict[str, Design] = {"random": random_design, "lhs": latin_hypercube}
