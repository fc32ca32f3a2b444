"""Initial designs: in the cube, reproducible from the seed, and space-filling as promised."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evo_engine.operators.designs import (
    DESIGNS,
    default_min_distance,
    latin_hypercube,
    random_sequential_addition,
)


def test_registry_names() -> None:
    assert set(DESIGNS) == {"random", "lhs", "sobol", "rsa"}


@pytest.mark.parametrize("name", sorted(DESIGNS))
@settings(max_examples=15, deadline=None)
@given(n=st.integers(0, 40), dim=st.integers(1, 12), seed=st.integers(0, 2**31))
def test_points_in_cube_and_reproducible(name: str, n: int, dim: int, seed: int) -> None:
    a = DESIGNS[name](n, dim, np.random.default_rng(seed))
    b = DESIGNS[name](n, dim, np.random.default_rng(seed))
    assert a.shape == (n, dim) and a.dtype == np.float64
    assert np.all((a >= 0.0) & (a <= 1.0))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", sorted(DESIGNS))
def test_different_seeds_give_different_points(name: str) -> None:
    a = DESIGNS[name](8, 3, np.random.default_rng(1))
    b = DESIGNS[name](8, 3, np.random.default_rng(2))
    assert not np.allclose(a, b)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 30), dim=st.integers(1, 6), seed=st.integers(0, 2**31))
def test_latin_hypercube_has_one_point_per_stratum(n: int, dim: int, seed: int) -> None:
    pts = latin_hypercube(n, dim, np.random.default_rng(seed))
    for j in range(dim):
        strata = np.floor(pts[:, j] * n).astype(int)
        assert sorted(strata) == list(range(n))


def test_sobol_is_more_even_than_random() -> None:
    # Discrepancy proxy: the largest empty gap between sorted 1-D projections.
    def worst_gap(pts: np.ndarray) -> float:
        gaps = [np.diff(np.sort(np.r_[0.0, pts[:, j], 1.0])).max() for j in range(pts.shape[1])]
        return float(max(gaps))

    sob = np.mean([worst_gap(DESIGNS["sobol"](32, 4, np.random.default_rng(s))) for s in range(10)])
    rnd = np.mean(
        [worst_gap(DESIGNS["random"](32, 4, np.random.default_rng(s))) for s in range(10)]
    )
    assert sob < rnd


@settings(max_examples=20, deadline=None)
@given(n=st.integers(2, 30), dim=st.integers(1, 6), seed=st.integers(0, 2**31))
def test_rsa_keeps_its_default_distance(n: int, dim: int, seed: int) -> None:
    pts = random_sequential_addition(n, dim, np.random.default_rng(seed))
    d = np.linalg.norm(pts[:, None, :] - pts[None, :, :], axis=-1)
    np.fill_diagonal(d, np.inf)
    # The default spacing is easy to reach, so it should never have needed shrinking.
    assert d.min() >= default_min_distance(n, dim) - 1e-12


def test_rsa_shrinks_an_impossible_distance_instead_of_hanging() -> None:
    pts = random_sequential_addition(50, 2, np.random.default_rng(0), min_distance=0.9)
    assert pts.shape == (50, 2)
