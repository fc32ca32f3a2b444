"""Typed mutation in the unit cube, shared by the GA and the ES.

Floats move by a Gaussian step in the encoding (so log-scaled parameters move in log space),
ints move the same way but land on a different integer, and categoricals jump to another
choice with a probability that falls with the tree distance between the two choices.
"""

from __future__ import annotations

import math

import numpy as np

from evo_engine.search.operators.base import reflect, reflect_scalar
from evo_engine.space import Categorical, Int, Space


def tree_move_probabilities(param: Categorical, base: float) -> np.ndarray:
    """Row ``c`` holds P(move from choice c to choice l), proportional to 2^(−log_b hops(c, l)).

    ``base`` (b > 1) controls exploration: b = 2 makes P ∝ 1/hops, a large b flattens it
    towards uniform. Without a tree every pair of choices is 2 hops apart, so the moves are
    uniform. The diagonal is zero (a move always changes the choice) unless there is only one
    choice, which then stays put.
    """
    if base <= 1.0:
        raise ValueError(f"the tree-distance base b must be > 1, got {base}")
    k = len(param.choices)
    if k == 1:
        return np.ones((1, 1))
    probs = np.zeros((k, k))
    exponent = math.log(2.0) / math.log(base)  # 2^(−log_b h) == h^(−log 2 / log b)
    for c in range(k):
        for l_ in range(k):
            if l_ != c:
                probs[c, l_] = float(param.hops_between(c, l_)) ** (-exponent)
        probs[c] /= probs[c].sum()
    return probs


def bin_exit_probability(sigma: float | np.ndarray, k: int) -> float | np.ndarray:
    """P(a Gaussian step of size ``sigma`` from the centre of a 1/k-wide bin leaves the bin).

    The ES uses it as a categorical gene's mutation probability, so one σ vector describes
    how far every kind of gene moves, and self-adaptation tunes categoricals like the rest.
    """
    s = np.maximum(np.asarray(sigma, dtype=np.float64), 1e-300)
    # 2·Φ(−h/σ) with h = 1/(2k) half a bin, written with erfc to stay accurate for tiny σ.
    x = (0.5 / k) / (s * math.sqrt(2.0))
    out = np.vectorize(math.erfc, otypes=[np.float64])(x)
    return out if out.ndim else float(out)


class TypedMutation:
    """Mutates genes of a unit-cube genome according to each parameter's type.

    Built once per operator: it precomputes the categorical move tables, so a mutation costs
    a few random draws per gene.
    """

    def __init__(self, space: Space, tree_base: float = 2.0) -> None:
        self.space = space
        self.params = [p for _, p in space.items()]
        self.kinds = space.kinds()
        self.moves: dict[int, np.ndarray] = {
            i: tree_move_probabilities(p, tree_base)
            for i, p in enumerate(self.params)
            if isinstance(p, Categorical)
        }
        # Cumulative rows, so a move is one uniform draw and a binary search.
        self._cumulative = {i: np.cumsum(m, axis=1) for i, m in self.moves.items()}
        self.continuous = np.array([k != "categorical" for k in self.kinds], dtype=bool)

    def categorical(self, i: int, u: float, rng: np.random.Generator) -> float:
        """Gene ``i`` (a categorical) moved to another choice, as that choice's bin centre."""
        p = self.params[i]
        assert isinstance(p, Categorical)
        k = len(p.choices)
        current = p.decode_index(u)
        row = self._cumulative[i][current]
        target = min(int(np.searchsorted(row, rng.random() * row[-1], side="right")), k - 1)
        return (target + 0.5) / k

    def integer(self, i: int, u: float, step: float) -> float:
        """Gene ``i`` (an int) moved by ``step`` in the cube, but always to a different integer.

        A small step that would decode to the same integer moves one level in the step's
        direction instead (reflected at the bounds), so an int mutation is never a no-op.
        """
        p = self.params[i]
        assert isinstance(p, Int)
        before = p.decode(u)
        moved = float(reflect(u + step))
        if p.decode(moved) != before:
            return moved
        direction = 1 if step >= 0 else -1
        target = before + direction
        if not p.lo <= target <= p.hi:
            target = before - direction
        return p.encode(target)

    def gaussian(
        self, genome: np.ndarray, sigma: np.ndarray, mask: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """Genes where ``mask`` is set mutated by type with per-gene step sizes ``sigma``.

        Floats get a Gaussian step, ints an integer-aware step, categoricals a tree move.
        Unmasked genes are returned unchanged. Random draws are made for every gene in a
        fixed order so a given seed always gives the same sequence.
        """
        out = np.array(genome, dtype=np.float64, copy=True)
        steps = rng.normal(0.0, 1.0, size=out.shape[0]) * sigma
        for i in np.flatnonzero(mask):
            kind = self.kinds[i]
            if kind == "float":
                out[i] = reflect_scalar(float(out[i] + steps[i]))
            elif kind == "int":
                out[i] = self.integer(i, out[i], steps[i])
            else:
                out[i] = self.categorical(i, out[i], rng)
        return out
