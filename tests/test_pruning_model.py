"""ASHA's rungs against a plain model: sorted lists rebuilt from scratch at every step.

The rungs count their values (``SortedDict``, a cut pointer) and skip a re-record of an unchanged value
(``finish`` re-records every live curve); a wrong removal, a skipped replacement or a lost
duplicate would show here as a different decision or a different multiset of values.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from evo_engine.search.pruning import ASHA, ASHAConfig

CONFIG = ASHAConfig(eta=3, min_steps=1, max_steps=27)  # rungs at 1, 3, 9


class Model:
    """Per rung: values of finished evaluations, and the latest value of each one in flight."""

    def __init__(self) -> None:
        self.steps = CONFIG.rungs
        self.settled: list[list[float]] = [[] for _ in self.steps]
        self.live: list[dict[int, float]] = [{} for _ in self.steps]
        self.next: dict[int, int] = {}

    def values(self, k: int) -> list[float]:
        return sorted(self.settled[k] + list(self.live[k].values()))

    def record(self, uid: int, step: int, value: float, start: int) -> tuple[bool, int]:
        value = value if math.isfinite(value) else math.inf
        stop, k = False, start
        while k < len(self.steps) and self.steps[k] <= step:
            self.live[k][uid] = value
            values = self.values(k)
            top = max(len(values) // CONFIG.eta, 1)
            stop = stop or not (math.isfinite(value) and value <= values[top - 1])
            k += 1
        return stop, k

    def decide(self, uid: int, step: int, value: float) -> bool:
        stop, self.next[uid] = self.record(uid, step, value, self.next.get(uid, 0))
        return stop or not math.isfinite(value)

    def finish(self, uid: int, curve: list[tuple[int, float]]) -> None:
        k = 0
        for step, value in curve:
            _, k = self.record(uid, step, value, k)
        self.next.pop(uid, None)
        for k, live in enumerate(self.live):
            if uid in live:
                self.settled[k].append(live.pop(uid))


# An action: (uid 0-11, kind, value index); values come from a small set so ties are common.
VALUES = [0.1, 0.2, 0.2, 0.5, 0.7, math.inf, float("nan")]
actions = st.lists(st.tuples(st.integers(0, 11), st.sampled_from(["report", "finish", "restart"]),
                             st.integers(0, len(VALUES) - 1)), max_size=120)


@settings(max_examples=150, deadline=None)
@given(actions)
def test_rungs_match_a_model_rebuilt_from_scratch(script: list[tuple[int, str, int]]) -> None:
    asha, model = ASHA(CONFIG), Model()
    curves: dict[int, list[tuple[int, float]]] = {}
    steps: dict[int, int] = {}
    done: set[int] = set()
    for uid, kind, v in script:
        if uid in done:
            continue
        if kind == "report":
            steps[uid] = step = steps.get(uid, 0) + 2  # 2, 4, 6, ...: crosses rungs 1, 3, 9
            value = VALUES[v]
            curves.setdefault(uid, []).append((step, value))
            assert asha.decide(uid, step, value) == model.decide(uid, step, value)
        elif kind == "finish":
            asha.finish(uid, curves.get(uid, []))
            model.finish(uid, curves.get(uid, []))
            done.add(uid)
        else:  # issued again after a resume: reports start over and replace its values
            asha.restart(uid)
            model.next.pop(uid, None)
            steps.pop(uid, None)
            curves.pop(uid, None)
        for k, rung in enumerate(asha.rungs):
            assert list(rung.sorted) == model.values(k)
            assert rung.by_uid == model.live[k]


def test_a_long_run_keeps_every_value_and_answers_like_a_sorted_list() -> None:
    rng = np.random.default_rng(0)
    asha = ASHA(CONFIG)
    for uid in range(3000):
        value = float(rng.random())
        asha.decide(uid, 1, value)
        asha.finish(uid, [(1, value)])
    values = sorted(asha.rungs[0].sorted)
    assert len(values) == 3000 and not asha.rungs[0].by_uid
    # The next evaluation goes on exactly when it is in the best third, itself included.
    threshold = sorted([*values, 0.3])[3001 // 3 - 1]
    assert asha.decide(3000, 1, 0.3) is (threshold < 0.3)


def test_a_restarted_evaluation_replaces_its_values_and_a_finish_keeps_them() -> None:
    asha = ASHA(CONFIG)
    asha.decide(0, 3, 0.5)  # rungs 1 and 3
    asha.decide(1, 1, 0.4)
    asha.restart(0)  # issued again after a resume: reports from step 0
    asha.decide(0, 1, 0.9)
    assert list(asha.rungs[0].sorted) == [0.4, 0.9] and list(asha.rungs[1].sorted) == [0.5]
    asha.finish(0, [(1, 0.9)])
    asha.finish(1, [(1, 0.4)])
    assert list(asha.rungs[0].sorted) == [0.4, 0.9] and not asha.rungs[0].by_uid


def test_rungs_past_the_exact_bound_count_values_in_bins_and_stay_bounded(monkeypatch) -> None:
    # The first rung kept a value of every evaluation of the run (issue 30.5). Past
    # EXACT_VALUES a rung counts values in 0.1 % bins: its size stops growing, a decision
    # differs from the exact rule only for a value in the cut's own bin (then it goes on),
    # and the rung is the same whatever order its values came in (a resume rebuilds it).
    from sortedcontainers import SortedList

    from evo_engine.search import pruning

    monkeypatch.setattr(pruning, "EXACT_VALUES", 300)
    rng = np.random.default_rng(1)
    values = (1.0 + rng.random(20_000)).tolist()  # one binary order of magnitude: ≤ 1,024 bins
    asha, seen, differed = ASHA(CONFIG), SortedList(), 0
    for uid, value in enumerate(values):
        seen.add(value)
        cut = seen[max(len(seen) // CONFIG.eta, 1) - 1]
        stop = asha.decide(uid, 1, value)
        if len(seen) <= 300 or pruning.value_bin(value) != pruning.value_bin(cut):
            assert stop is not (value <= cut), uid
        else:
            assert stop is False
            differed += value > cut
        asha.finish(uid, [(1, value)])
    rung = asha.rungs[0]
    assert rung.binned and rung.n == 20_000 and len(rung.counts) <= 1024
    assert 0 < differed < 200, "only values within a bin of the cut"
    again = ASHA(CONFIG)
    again.set_state({"config": CONFIG.describe(), "in_flight": [[], [], []]})
    n = len(values)
    again.rebuild(np.arange(n)[::-1], np.ones(n, dtype=int), np.array(values)[::-1])
    assert again.rungs[0].counts == rung.counts and again.rungs[0].cut == rung.cut
