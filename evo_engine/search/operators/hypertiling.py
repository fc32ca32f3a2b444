"""Hypertiling: vertices of an aperiodic, Penrose-like tiling of R^d as an initial design.

De Bruijn's multigrid construction, generalised from the plane to d dimensions. Take N = d + 3
families of parallel hyperplanes ``{x : x·e_j + γ_j = k}``, k ∈ Z, with normals ``e_j`` that
are the first d rows of the N-point real Fourier basis (for d = 2 the five directions at 72°
of the Penrose pentagrid) and random shifts ``γ_j`` (the seed's). Every point where d
hyperplanes of d different families meet is one tile (a rhombohedron); its lowest vertex is
``Σ_j K_j e_j`` with ``K_j`` the integer index of the cell of family j the point lies in
(``⌈x·e_j + γ_j⌉``, and the meeting hyperplanes' own k for the d families that meet). The
tiling never repeats, yet every vertex has neighbours at a few fixed distances, so the points
are neither clumped (as random points are) nor aligned on axes (as a grid's are).

The design enumerates the intersections in a box of x-space sized so that about ``n``
to 2n tiles fall in it, maps the vertices affinely onto [0, 1]^d, and keeps n of them by
farthest-point selection from a vertex the seed's generator picks (so the n kept vertices
are the tiling's, spread over the whole box).

Above ``MAX_DIM`` parameters enumerating the intersections costs too much (seconds at d = 7,
minutes at d = 10), so the parameters are split into blocks of at most ``MAX_DIM`` and each
block gets a tiling of its own; the blocks' points are paired at random, as LHS pairs its
strata, so every block's projection is a tiling's vertex set. The work grows like
C(d + 3, d) × (intersections per family subset), which is why the blocks stay small.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

MAX_DIM = 6
"""Largest tiling enumerated whole; more parameters are split into blocks (see ``hypertiling``)."""


def directions(dim: int, families: int) -> np.ndarray:
    """(families, dim) normals: the first dim rows of the real Fourier basis on ``families``
    points, columns normalised (for dim 2 and 5 families: the Penrose pentagrid)."""
    j = np.arange(families)
    rows = []
    freq = 1
    while len(rows) < dim:
        rows.append(np.cos(2 * np.pi * freq * j / families))
        if len(rows) < dim:
            rows.append(np.sin(2 * np.pi * freq * j / families))
        freq += 1
    e = np.array(rows).T
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def _tiles(
    e: np.ndarray,
    gamma: np.ndarray,
    subsets: list[tuple[int, ...]],
    inv: list[np.ndarray],
    size: float,
) -> np.ndarray:
    """The K vectors of the lowest vertices of all tiles whose intersection lies in [0, size]^d."""
    dim = e.shape[1]
    lo_proj = size * np.minimum(e, 0.0).sum(axis=1) + gamma
    hi_proj = size * np.maximum(e, 0.0).sum(axis=1) + gamma
    found = []
    for s, m in zip(subsets, inv):
        ranges = [np.arange(math.ceil(lo_proj[j]), math.floor(hi_proj[j]) + 1) for j in s]
        if any(r.size == 0 for r in ranges):
            continue
        k = np.stack(np.meshgrid(*ranges, indexing="ij"), axis=-1).reshape(-1, dim)
        x = (k - gamma[list(s)]) @ m.T
        inside = np.all((x >= 0.0) & (x <= size), axis=1)
        if not inside.any():
            continue
        x, k = x[inside], k[inside]
        big_k = np.ceil(x @ e.T + gamma)
        big_k[:, list(s)] = k  # the meeting hyperplanes: their own index (the lowest corner)
        found.append(big_k)
    if not found:
        return np.zeros((0, e.shape[0]))
    return np.unique(np.vstack(found), axis=0)


def hypertiling(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """n vertices of a d-dimensional multigrid (Penrose-like) tiling, in [0, 1]^d."""
    if n <= 0:
        return np.zeros((0, dim))
    if dim > MAX_DIM:
        blocks = np.array_split(np.arange(dim), math.ceil(dim / MAX_DIM))
        parts = [hypertiling(n, len(b), rng) for b in blocks]
        return np.hstack([parts[0], *(p[rng.permutation(n)] for p in parts[1:])])
    families = dim + 3
    e = directions(dim, families)
    gamma = rng.random(families)
    subsets, inv, density = [], [], 0.0
    for s in itertools.combinations(range(families), dim):
        m = e[list(s)]
        det = abs(float(np.linalg.det(m)))
        if det < 1e-9:
            continue  # parallel families: they meet in no point
        subsets.append(s)
        inv.append(np.linalg.inv(m))
        density += det  # intersections of this subset per unit volume
    size = (2.0 * n / density) ** (1.0 / dim)
    for _ in range(60):
        ks = _tiles(e, gamma, subsets, inv, size)
        if ks.shape[0] >= 2 * n:
            break
        size *= 1.15
    v = ks @ e
    lo, hi = v.min(axis=0), v.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    # Half a mean spacing of margin, so no point sits on the cube's boundary.
    pad = 0.5 * span / max(ks.shape[0] ** (1.0 / dim), 1.0)
    points = (v - lo + pad) / (span + 2 * pad)
    keep = [int(rng.integers(points.shape[0]))]
    d2 = ((points - points[keep[0]]) ** 2).sum(axis=1)
    while len(keep) < min(n, points.shape[0]):
        keep.append(int(np.argmax(d2)))
        d2 = np.minimum(d2, ((points - points[keep[-1]]) ** 2).sum(axis=1))
    out = np.clip(points[keep], 0.0, 1.0)
    if out.shape[0] < n:  # only for a degenerate tiling; top up so the contract holds
        out = np.vstack([out, rng.random((n - out.shape[0], dim))])
    return out
