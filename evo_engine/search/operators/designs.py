"""Initial designs: where an island's first individuals come from.

A design is ``design(n, dim, rng) -> (n, dim)`` points of [0, 1]^dim, drawn only from ``rng``
so the same seed gives the same points. Space-filling designs (LHS, Sobol, RSA) spread the
first, most expensive-to-waste evaluations over the cube instead of letting them clump (LHS
and Sobol come from ``scipy.stats.qmc``);
``rsa_lhs`` combines RSA's spacing with LHS's strata, ``hypertiling`` takes the vertices of an
aperiodic Penrose-like tiling (``hypertiling.py``), and ``grid`` is the baseline they beat.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from evo_engine.search.operators.hypertiling import hypertiling

Design = Callable[[int, int, np.random.Generator], np.ndarray]
"""``design(n, dim, rng) -> (n, dim) array`` of points in [0, 1]^dim."""


def _qmc() -> Any:
    """``scipy.stats.qmc``, imported when a design first needs it: ``scipy.stats`` takes
    about 0.7 CPU-seconds to import, paid by every process that imports the engine (the
    coordinator, the store's writer process) whether or not its run uses LHS or Sobol."""
    from scipy.stats import qmc

    return qmc


def random_design(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """Independent uniform points."""
    return rng.random((n, dim))


def latin_hypercube(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """One point in each of n equal strata per dimension, strata paired at random
    (``scipy.stats.qmc.LatinHypercube``)."""
    if n <= 0:
        return np.zeros((0, dim))
    return _in_cube(_qmc().LatinHypercube(dim, rng=rng).random(n))


def latin_hypercube_cd(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """A Latin hypercube whose columns are then permuted to lower its centered discrepancy
    (``scipy.stats.qmc.LatinHypercube(optimization="random-cd")``): still one point per
    stratum, about 40% lower discrepancy than ``lhs`` at 16-50 points in 3-8 dimensions, at
    a cost of about a second per island for a population of a few hundred."""
    if n <= 0:
        return np.zeros((0, dim))
    return _in_cube(_qmc().LatinHypercube(dim, optimization="random-cd", rng=rng).random(n))


def sobol(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """The first n points of a scrambled Sobol sequence (``scipy.stats.qmc.Sobol``; its
    scrambling is drawn from ``rng``)."""
    if n <= 0:
        return np.zeros((0, dim))
    engine = _qmc().Sobol(dim, scramble=True, rng=rng)
    with warnings.catch_warnings():
        # A population is rarely a power of 2; the first n points are still the most even
        # prefix of the sequence, which is what an initial design wants.
        warnings.filterwarnings("ignore", message=".*balance properties.*", category=UserWarning)
        return _in_cube(engine.random(n))


def _in_cube(points: np.ndarray) -> np.ndarray:
    # The designs' points lie in [0, 1); keep the contract's closed cube explicit anyway.
    return np.clip(np.asarray(points, dtype=np.float64), 0.0, 1.0)


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


def _add_sequentially(
    n: int,
    dim: int,
    r: float,
    tries_per_point: int,
    candidate: Callable[[], tuple[np.ndarray, Any]],
    taken: Callable[[Any], None] | None = None,
) -> np.ndarray:
    """The loop random sequential addition shares: keep a candidate at least ``r`` from every
    earlier point; after ``tries_per_point`` misses in a row shrink ``r`` by 10%, so n points
    always come out. ``candidate()`` returns a point and a token handed to ``taken`` when the
    point is kept."""
    points = np.empty((n, dim))
    count = misses = 0
    while count < n:
        cand, token = candidate()
        if count == 0 or np.min(np.linalg.norm(points[:count] - cand, axis=1)) >= r:
            points[count] = cand
            count += 1
            misses = 0
            if taken is not None:
                taken(token)
            continue
        misses += 1
        if misses >= tries_per_point:
            r *= 0.9
            misses = 0
    return points


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
    return _add_sequentially(n, dim, r, tries_per_point, lambda: (rng.random(dim), None))


def grid(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """n distinct cell centres of the regular grid with k = ⌈n^(1/d)⌉ levels per axis.

    The baseline the space-filling designs are measured against. When n is not a full k^d
    grid, the n cells are drawn from it without replacement (by the seed's generator).
    """
    if n <= 0:
        return np.zeros((0, dim))
    k = max(1, math.ceil(round(n ** (1.0 / dim), 9)))
    while k**dim < n:
        k += 1
    if k**dim <= 10**7:
        cells = rng.choice(k**dim, size=n, replace=False) if k**dim > n else np.arange(n)
        idx = np.stack(np.unravel_index(np.sort(cells), (k,) * dim), axis=1)
    else:  # too many cells to enumerate: distinct random multi-indices by rejection
        seen: set[tuple[int, ...]] = set()
        rows = []
        while len(rows) < n:
            cell = tuple(int(c) for c in rng.integers(k, size=dim))
            if cell not in seen:
                seen.add(cell)
                rows.append(cell)
        idx = np.array(rows)
    return (idx + 0.5) / k


def rsa_lhs(
    n: int,
    dim: int,
    rng: np.random.Generator,
    min_distance: float | None = None,
    tries_per_point: int = 200,
) -> np.ndarray:
    """A Latin hypercube built by random sequential addition: one point per stratum and axis
    (LHS's one-dimensional spread), each new point at least ``min_distance`` from the earlier
    ones (RSA's spacing in the full space). A candidate takes a random unused stratum on every
    axis; the spacing shrinks by 10% after ``tries_per_point`` misses in a row, so n points
    always come out.
    """
    if n <= 0:
        return np.zeros((0, dim))
    r = default_min_distance(n, dim) if min_distance is None else float(min_distance)
    free = [list(range(n)) for _ in range(dim)]

    def candidate() -> tuple[np.ndarray, np.ndarray]:
        pick = (rng.random(dim) * len(free[0])).astype(np.int64)
        return (np.array([free[a][pick[a]] for a in range(dim)]) + rng.random(dim)) / n, pick

    def taken(pick: np.ndarray) -> None:
        for a in range(dim):
            free[a].pop(int(pick[a]))

    return _add_sequentially(n, dim, r, tries_per_point, candidate, taken)


DESIGNS: dict[str, Design] = {
    "random": random_design,
    "grid": grid,
    "lhs": latin_hypercube,
    "lhs_cd": latin_hypercube_cd,
    "sobol": sobol,
    "rsa": random_sequential_addition,
    "rsa_lhs": rsa_lhs,
    "hypertiling": hypertiling,
}
