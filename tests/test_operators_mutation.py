"""Typed mutation: categorical moves follow tree distances, σ maps to categorical change rates."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evo_engine.search.operators.mutation import (
    TypedMutation,
    bin_exit_probability,
    tree_move_probabilities,
)
from evo_engine.space import Categorical, Space

ACTIVATIONS = {
    "rectifiers": ["relu", "leaky_relu", "elu", "selu"],
    "smooth": ["gelu", "silu"],
    "saturating": ["tanh", "sigmoid"],
}


def expected(param: Categorical, current: str, base: float) -> dict[str, float]:
    """P(move to l) ∝ 2^(−log_b hops(current, l)), straight from the issue's formula."""
    w = {c: 2.0 ** (-math.log(param.hops(current, c), base)) for c in param.choices if c != current}
    total = sum(w.values())
    return {c: v / total for c, v in w.items()}


@pytest.mark.parametrize("base", [2.0, 4.0, 16.0])
@pytest.mark.parametrize("current", ["relu", "gelu", "sigmoid"])
def test_categorical_move_frequencies_follow_tree_distances(base: float, current: str) -> None:
    param = Categorical(tree=ACTIVATIONS)
    mutation = TypedMutation(Space(act=param), tree_base=base)
    rng = np.random.default_rng(20240601)
    n = 20_000
    u = param.encode(current)
    counts: dict[str, int] = dict.fromkeys(param.choices, 0)
    for _ in range(n):
        counts[param.decode(mutation.categorical(0, u, rng))] += 1
    assert counts[current] == 0
    for choice, p in expected(param, current, base).items():
        # 4.5 standard errors: a fixed seed, and still robust to a different numpy stream.
        tol = 4.5 * math.sqrt(p * (1 - p) / n)
        assert abs(counts[choice] / n - p) < tol, (choice, counts[choice] / n, p)


def test_siblings_are_twice_as_likely_as_cousins_with_base_two() -> None:
    param = Categorical(tree=ACTIVATIONS)
    probs = tree_move_probabilities(param, 2.0)
    relu = param.index("relu")
    assert probs[relu, param.index("elu")] == pytest.approx(2 * probs[relu, param.index("gelu")])
    assert probs[relu].sum() == pytest.approx(1.0) and probs[relu, relu] == 0.0


def test_without_a_tree_moves_are_uniform() -> None:
    param = Categorical(["a", "b", "c", "d"])
    probs = tree_move_probabilities(param, 2.0)
    off = probs[~np.eye(4, dtype=bool)]
    np.testing.assert_allclose(off, 1 / 3)


def test_a_single_choice_stays_put() -> None:
    param = Categorical(["only"])
    mutation = TypedMutation(Space(c=param))
    assert param.decode(mutation.categorical(0, 0.5, np.random.default_rng(0))) == "only"


def test_base_must_exceed_one() -> None:
    with pytest.raises(ValueError, match="base"):
        tree_move_probabilities(Categorical(["a", "b"]), 1.0)


def test_bin_exit_probability_matches_a_gaussian_step() -> None:
    rng = np.random.default_rng(0)
    for sigma, k in [(0.05, 4), (0.2, 3), (0.01, 10)]:
        steps = rng.normal(0.0, sigma, 200_000)
        empirical = np.mean(np.abs(steps) >= 0.5 / k)
        assert bin_exit_probability(sigma, k) == pytest.approx(empirical, abs=0.005)
    assert bin_exit_probability(1e-9, 3) == 0.0
    assert bin_exit_probability(10.0, 2) > 0.95
