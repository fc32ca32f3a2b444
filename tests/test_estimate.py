"""The incumbent as an estimate (search.estimate): properties, and the engine's use of it."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from evo_engine.search.engine import Engine, EngineConfig
from evo_engine.search.estimate import (
    PESSIMISM,
    incumbent,
    luckiest,
    pooled_noise,
    rank_estimates,
    resolution_note,
    summarize_groups,
)
from evo_engine.search.messages import Result
from evo_engine.space import Float, Space

values = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)
groups = st.dictionaries(st.sampled_from("abcdefgh"), st.lists(values, min_size=1, max_size=5),
                         min_size=1)


def rows_of(g: dict[str, list[float]]) -> list[tuple[str, int, float]]:
    rows, uid = [], 0
    for k, vs in g.items():
        for v in vs:
            rows.append((k, uid, v))
            uid += 1
    return rows


@settings(max_examples=200, deadline=None)
@given(g=groups)
def test_estimates_are_means_and_the_noise_is_pooled(g) -> None:
    est = summarize_groups(rows_of(g))
    for k, vs in g.items():
        assert est[k].n == len(vs)
        assert math.isclose(est[k].mean, float(np.mean(vs)), rel_tol=1e-9, abs_tol=1e-9)
        assert est[k].best_draw == min(vs)
    reps = [vs for vs in g.values() if len(vs) > 1]
    noise = pooled_noise(est.values())
    if not reps:
        assert noise is None
    else:
        ss = sum(float(np.sum((np.asarray(v) - np.mean(v)) ** 2)) for v in reps)
        dof = sum(len(v) - 1 for v in reps)
        assert noise is not None and noise[1] == dof
        assert math.isclose(noise[0], math.sqrt(ss / dof), rel_tol=1e-6, abs_tol=1e-6)


@settings(max_examples=200, deadline=None)
@given(g=st.dictionaries(st.sampled_from("abcdefgh"), values, min_size=1))
def test_one_draw_each_is_the_plain_minimum(g) -> None:
    # A deterministic objective (nothing repeated): best is the minimum, as it always was.
    est = summarize_groups(rows_of({k: [v] for k, v in g.items()}))
    best = incumbent(est.values())
    assert best is not None and best.mean == min(g.values())


@settings(max_examples=200, deadline=None)
@given(g=groups)
def test_the_incumbent_has_the_best_mean_plus_one_standard_error(g) -> None:
    est = list(summarize_groups(rows_of(g)).values())
    best = incumbent(est)
    noise = pooled_noise(est)
    sigma = noise[0] if noise else 0.0
    # Recomputed from the raw draws: mean + PESSIMISM * sigma / sqrt(n), the plain mean
    # when nothing was repeated.
    score = {k: float(np.mean(v)) + PESSIMISM * sigma / math.sqrt(len(v)) for k, v in g.items()}
    assert best is not None
    assert all(score[best.key] <= s + 1e-9 * (1 + abs(s)) for s in score.values())
    ranked = rank_estimates(est)
    assert ranked[0] == best and sorted(ranked, key=lambda e: e.key) == sorted(est,
                                                                                key=lambda e: e.key)
    # The luckiest draw is the minimum of all draws, whoever holds it.
    assert luckiest(est).best_draw == min(min(v) for v in g.values())


def test_one_lucky_draw_pays_for_its_uncertainty() -> None:
    # noise 0.1 (A's three draws): A ranks at 1.0 + 0.1/sqrt(3) = 1.0577. B's one draw of
    # 0.95 ranks at 1.05 (ahead); C's 0.96 at 1.06 (behind A): a lead of 0.04 is less than
    # the 0.042 between a one-draw and a three-draw standard error. A count gate ranked A
    # first (B and C "not evaluated enough"); ranking by the mean alone, or with sigma/n in
    # place of sigma/sqrt(n) (C: 1.06 vs A: 1.033), orders them otherwise.
    est = summarize_groups([("A", 0, 1.0), ("A", 3, 1.1), ("A", 4, 0.9), ("B", 1, 0.95),
                            ("C", 2, 0.96)])
    assert [e.key for e in rank_estimates(est.values())] == ["B", "A", "C"]
    assert incumbent(est.values()).key == "B"


def test_a_race_cut_short_still_competes() -> None:
    # Issue 24's advection searches: a configuration with two draws (mean 0.0471) lost to
    # one with three (mean 0.0501) because "it needs 3"; ranked by mean + sigma/sqrt(n) it
    # leads (0.0471 + 0.0032 < 0.0500 + 0.0026 at the pooled noise of these draws, 0.0045).
    est = summarize_groups([("inc", 3, 0.0553), ("inc", 9, 0.045), ("inc", 17, 0.0498),
                            ("cut", 12, 0.0453), ("cut", 20, 0.0489)])
    assert incumbent(est.values()).key == "cut"


def test_zero_noise_repeats_rank_by_mean_over_everything() -> None:
    est = summarize_groups([("a", 0, 1.0), ("a", 2, 1.0), ("b", 1, 0.5)])
    assert incumbent(est.values()).key == "b"  # a deterministic repeat proves no noise


def test_the_resolution_note_names_the_noise_and_the_spread() -> None:
    est = summarize_groups([("a", 0, 1.0), ("a", 3, 1.02), ("b", 1, 1.01), ("b", 4, 0.99),
                            ("c", 2, 1.5), ("c", 5, 1.52)])
    note = resolution_note(est.values(), top=2)
    assert note is not None and "seed noise" in note and "top 2 differ by" in note
    assert "not resolved" in note
    assert len(note) < 200


def test_without_repeats_the_note_says_the_noise_is_unmeasured() -> None:
    # Three configurations seen once: the best is one draw, and the note must say so rather
    # than nothing (a user read the luckiest draw as the best estimate).
    est = summarize_groups([("a", 0, 1.0), ("b", 1, 0.9), ("c", 2, 1.2)])
    note = resolution_note(est.values())
    assert note is not None and "not measured" in note and "one draw" in note
    assert resolution_note(summarize_groups([("a", 0, 1.0)]).values()) is None
    assert "not measured" not in resolution_note(
        summarize_groups([("a", 0, 1.0), ("a", 1, 1.1), ("b", 2, 0.9)]).values())


def test_with_repeats_best_is_the_mean_not_the_luckiest_draw() -> None:
    """``repeats`` re-evaluates promising configurations; a lucky first draw whose repeats
    come out poor must not stay best (it did: best was the minimum single draw)."""
    space = Space(x=Float(0.0, 1.0))
    engine = Engine(space, EngineConfig(max_evals=10, population_size=2, repeats=2))
    a = engine.ask(0)
    engine.tell(Result(uid=a.uid, worker=0, fitness=1.0))
    for value in (1.2, 1.4):
        t = engine.ask(0)
        assert t.reevaluation_of == a.uid
        engine.tell(Result(uid=t.uid, worker=0, fitness=value))
    b = engine.ask(0)
    engine.tell(Result(uid=b.uid, worker=0, fitness=0.9))  # lucky
    for value in (1.6, 1.7):
        t = engine.ask(0)
        assert t.reevaluation_of == b.uid
        engine.tell(Result(uid=t.uid, worker=0, fitness=value))
    assert engine.best is not None
    assert engine.best.uid == a.uid, "best is the luckiest draw (uid b's 0.9)"
    assert math.isclose(engine.best.fitness, 1.2)
