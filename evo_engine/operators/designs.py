"""Initial designs: where an island's first individuals come from.

A design is ``design(n, dim, rng) -> (n, dim)`` points of [0, 1]^dim, drawn only from ``rng``
so the same seed gives the same points. Space-filling designs (LHS, Sobol, RSA) spread the
first, most expensive-to-waste evaluations over the cube instead of letting them clump.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

Design = Callable[[int, int, np.random.Generator], np.ndarray]
"""``design(n, dim, rng) -> (n, dim) array`` of points in [0, 1]^dim."""


def random_design(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """Independent uniform points."""
    return rng.random((n, dim))


def latin_hypercube(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """One point in each of n equal strata per dimension, strata paired at random."""
    return (rng.permuted(np.tile(np.arange(n), (dim, 1)), axis=1).T + rng.random((n, dim))) / n


def sobol(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """The first n points of a scrambled Sobol sequence (Owen scrambling seeded from ``rng``)."""
    # Imported here: torch is heavy and only this design needs it.
    import torch
    from torch.quasirandom import SobolEngine

    seed = int(rng.integers(0, 2**31 - 1))
    if n <= 0:
        return np.zeros((0, dim))
    engine = SobolEngine(dimension=dim, scramble=True, seed=seed)
    points = engine.draw(n, dtype=torch.float64).numpy()
    # Scrambled Sobol points lie in [0, 1); keep the contract's closed cube explicit anyway.
    return np.clip(points.astype(np.float64), 0.0, 1.0)


def default_min_distance(n: int, dim: int) -> float:
    """A spacing that n points reach easily: their disks cover half of what RSA can jam.

    Random sequential addition of equal disks stops ("jams") at a covered fraction that falls
    with dimension, about 0.75, 0.55, 0.38, 0.26, 0.17, 0.11 for d = 1..6 (≈ 0.75·0.68^(d−1));
    aiming at half of it leaves room to place every point with few rejections.
    """
    coverage = 0.5 * 0.75 * 0.68 ** (dim - 1)
    unit_ball = math.pi ** (dim / 2) / math.gamma(dim / 2 + 1)
    radius = (coverage / (max(n, 1) * unit_ball)) ** (1.0 / dim)
    return min(2.0 * radius, math.sqrt(dim))


def random_sequential_addition(
    n: int,
    dim: int,
    rng: np.random.Generator,
    min_distance: float | None = None,
    tries_per_point: int = 200,
) -> np.ndarray:
    """Uniform points added one by one, each at least ``min_distance`` from all earlier ones.

    When ``tries_per_point`` candidates in a row are all too close (the cube is full at this
    spacing), the spacing shrinks by 10% and the search goes on, so the design always
    returns n points.
    """
    if n <= 0:
        return np.zeros((0, dim))
    r = default_min_distance(n, dim) if min_distance is None else float(min_distance)
    points = np.empty((n, dim))
    count = 0
    misses = 0
    while count < n:
        cand = rng.random(dim)
        if count == 0 or np.min(np.linalg.norm(points[:count] - cand, axis=1)) >= r:
            points[count] = cand
            count += 1
            misses = 0
            continue
        misses += 1
        if misses >= tries_per_point:
            r *= 0.9
            misses = 0
    return points


DESIGNS: dict[str, Design] = {
    "random": random_design,
    "lhs": latin_hypercube,
    "sobol": sobol,
    "rsa": random_sequential_addition,
}
