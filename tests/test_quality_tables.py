"""The recorded tabular problems of ``benchmarks/quality.py`` and runs on finite spaces.

``benchmarks/tabular.py`` records every configuration of a grid with 3 seeds; ``_landscapes``
turns a table into a landscape whose observation is one recorded seed and whose loss (what
regret is measured on) is the mean of the three. The checks read the committed CSV on their
own, so a wrong level for an index, a wrong row or a seed's value instead of the mean gives
another number.
"""

from __future__ import annotations

import csv
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import _landscapes  # noqa: E402
import quality  # noqa: E402
import tabular  # noqa: E402

from evo_engine.space import Categorical, Int, Space  # noqa: E402


def _recorded(name: str, **levels: str) -> list[float]:
    """The three seeds' losses of one configuration, read straight from the CSV (which holds
    ten: the 3-seed landscapes use the first three)."""
    with tabular.table_path(name).open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if all(r[k] == v for k, v in levels.items())]
    assert sorted(int(r["seed"]) for r in rows) == list(range(10))
    return [float(r["loss"]) for r in rows if int(r["seed"]) < 3]


def test_a_table_landscape_reads_the_configuration_its_indices_name():
    land = _landscapes.TABLE_LANDSCAPES["mlp_digits"]
    # Indices into the grids: units 64, layers 2, alpha 0.1, lr 1e-4, batch 128.
    p = {"units": 2, "layers": 1, "activation": "tanh", "alpha": 3, "lr": 0, "batch": 1}
    seeds = _recorded("mlp_digits", units="64", layers="2", activation="tanh", alpha="0.1",
                      lr="0.0001", batch="128")
    assert land.loss(p) == pytest.approx(np.mean(seeds), rel=1e-12)
    assert len(set(seeds)) == 3  # the seeds differ, so a seed's value is not the mean
    rng = np.random.default_rng(5)
    draws = {land.observe(p, rng) for _ in range(60)}
    assert draws == set(seeds)  # one recorded seed per observation, each of them in turn
    # Within one run a configuration's first three observations are its three trainings, in
    # an order of its own: drawn with replacement, the second repeated the first a third of
    # the time, which the engine's probe takes for a deterministic objective.
    orders = set()
    for k in range(12):
        observe = land.observer(np.random.default_rng(k))
        first = [observe(p) for _ in range(3)]
        assert sorted(first) == sorted(seeds), k
        assert observe(p) == first[0]  # only a fourth repeats one, in the same order
        orders.add(tuple(first))
    assert len(orders) > 1  # the order is drawn, not fixed
    quiet = replace(land, noise=0.0)  # quality.py --noise-free
    assert quiet.observe(p, rng) == land.loss(p)
    # The same table with every parameter a Categorical of its levels (how a user may write
    # an ordinal grid): the same configuration, by value.
    cat = _landscapes.TABLE_LANDSCAPES["mlp_digits_categorical"]
    assert all(q.kind == "categorical" for _, q in cat.space.items())
    by_value = {"units": 64, "layers": 2, "activation": "tanh", "alpha": 0.1, "lr": 1e-4,
                "batch": 128}
    assert cat.loss(by_value) == land.loss(p) and cat.floor == land.floor


def test_a_table_landscapes_floor_is_its_best_mean_and_its_space_the_grid():
    land = _landscapes.TABLE_LANDSCAPES["hgb_diabetes"]
    configs, values = tabular.load("hgb_diabetes")
    assert values.shape == (len(configs), 3) == (1152, 3)
    assert land.floor == pytest.approx(values.mean(axis=1).min(), rel=1e-12)
    grid = tabular.TABLES["hgb_diabetes"].grid
    assert {k: (p.lo, p.hi) for k, p in land.space.items()} == {
        k: (0, len(v) - 1) for k, v in grid.items()
    }
    best = configs[int(np.argmin(values.mean(axis=1)))]
    p = {k: grid[k].index(v) for k, v in best.items()}
    assert land.loss(p) == land.floor
    assert "hgb_diabetes" in _landscapes.REPORTING and "mlp_digits" in _landscapes.TUNING


@pytest.mark.parametrize("method", ["surrogate", "random"])
def test_a_run_that_exhausts_a_finite_space_keeps_its_pick_for_later_checkpoints(method):
    # 8 configurations, a budget of 100: the engine refuses to evaluate one twice by
    # accident (SpaceExhausted); the run ends and reports its best at 32 and 100.
    values = {(a, b): 0.3 + 0.1 * a + (0.05 if b == "y" else 0.0) for a in range(4)
              for b in "xy"}
    values[(2, "y")] = 0.1  # the optimum, not at a corner
    land = _landscapes.Landscape(
        "tiny", Space(a=Int(0, 3), b=Categorical(["x", "y"])),
        lambda p: values[(p["a"], p["b"])], floor=0.1,
    )
    res = quality.simulate(land, method, seed=0, evals=100, workers=4)
    assert res.loss_at == {32: 0.1, 100: 0.1}


def test_the_verdict_counts_seed_by_seed_against_the_best_baseline():
    # Medians say the surrogate is best (0.255 vs 0.30); seed by seed it is better on two,
    # worse on one (a long tail), equal on one: the count must say so, pairing seed i with i.
    def runs(values):
        return [quality.RunResult({100: v}, {100: 0.0}, 0.0) for v in values]

    results = {"two_basins": {
        "surrogate": runs([0.20, 0.25, 0.90, 0.26]),
        "random": runs([0.30, 0.30, 0.30, 0.26]),
        "es": runs([0.95, 0.95, 0.95, 0.95]),
    }}
    row = quality.summarise(results, 100, "surrogate")["verdict"]["at"]["100"]["landscapes"]
    assert row["two_basins"]["best_baseline"] == "random" and row["two_basins"]["best"]
    assert row["two_basins"]["paired"] == {"wins": 2, "losses": 1, "ties": 1}


def test_a_ten_seed_tables_races_read_common_seeds_and_first_draws_the_others():
    # What a live run does with seeds: race seed j is the same seed for every configuration
    # (on hgb_diabetes the seed draws the validation split, 96 % of the seed variance among
    # the best 50), a first draw is a seed of its own. The 3-seed landscapes draw every
    # observation at random, so a race there compares configurations on different splits.
    land = _landscapes.TABLE_LANDSCAPES["hgb_diabetes_s10"]
    configs, values = tabular.load("hgb_diabetes", tabular.RECORDED_SEEDS)
    assert values.shape == (1152, 10)
    assert np.allclose(values[:, :3], tabular.load("hgb_diabetes")[1])  # seeds 0-2 as before
    index = {"learning_rate": 0, "max_iter": 0, "max_leaf_nodes": 0, "min_samples_leaf": 0,
             "l2_regularization": 0, "max_features": 0}
    p, q = dict(index), {**index, "max_iter": 1}
    rows = [next(i for i, c in enumerate(configs)
                 if all(c[k] == tabular.TABLES["hgb_diabetes"].grid[k][v[k]] for k in c))
            for v in (p, q)]
    observe = land.observer(np.random.default_rng(3))
    firsts = [observe(p) for _ in range(6)]
    assert sorted(firsts) == sorted(values[rows[0], 4:])  # the non-race seeds, each once
    assert [observe(p, race=j) for j in range(4)] == list(values[rows[0], :4])
    assert [observe(q, race=j) for j in (1, 0)] == [values[rows[1], 1], values[rows[1], 0]]
    assert observe(p, race=0) in set(values[rows[0], 4:])  # race seed 0 again: an unread one
    assert land.loss(p) == pytest.approx(values[rows[0]].mean())  # truth: all ten seeds
