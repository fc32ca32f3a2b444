"""Intensification and the estimated incumbent, driven through the engine's real issuing path.

Property tests: whatever the seed, the worker count, the order results arrive in, failures and
restores from snapshots, ``Engine.best`` is what ``search.estimate`` says about every value told
(one source of truth), races run on common seeds, and a deterministic objective pays for one
probe at most.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from checked_drive import drive_checked
from hypothesis import given, settings
from hypothesis import strategies as st

from evo_engine.optimizer import Optimizer
from evo_engine.search.engine import Engine, EngineConfig
from evo_engine.search.estimate import incumbent, summarize_groups
from evo_engine.search.intensify import RACE, race_seed
from evo_engine.search.keys import config_key
from evo_engine.search.messages import Result, Task
from evo_engine.space import Categorical, Float, Space

SPACE = Space(x=Float(0.0, 1.0), y=Float(0.0, 1.0), act=Categorical(["relu", "tanh"]))
RACE_LENGTH = 3


def true_value(params: dict) -> float:
    return (params["x"] - 0.3) ** 2 + (params["y"] - 0.6) ** 2 + (params["act"] == "tanh") * 0.05


def noisy(task: Task, noise: float) -> float:
    """The objective's value with seed noise: a function of the task's seed, as a training is."""
    return true_value(task.params) + noise * float(np.random.default_rng(task.seed).normal())


def drive(seed: int, workers: int, noise: float, fail_every: int, order: np.random.Generator,
          restore_every: int = 0, budget: int = 60) -> tuple[Engine, list[Task]]:
    cfg = EngineConfig(max_evals=budget, population_size=4, intensify=RACE_LENGTH, seed=seed,
                       islands=2, migration_interval=4)
    return drive_checked(SPACE, cfg, workers, lambda t: noisy(t, noise), order,
                         fail_every=fail_every, restore_every=restore_every)


def check_races(issued: list[Task], run_seed: int) -> None:
    raced: dict[str, set[int]] = {}
    for t in issued:
        if t.operator != RACE:
            continue
        j = int(t.info["race"])
        # Common seeds: race seed j is one seed, whichever configuration runs it.
        assert t.seed == race_seed(run_seed, j)
        first = next(u for u in issued if u.uid == t.reevaluation_of)
        assert config_key(first.params) == config_key(t.params)
        seen = raced.setdefault(config_key(t.params), set())
        assert j not in seen, "one configuration raced twice on one seed"
        seen.add(j)
        assert len(seen) <= RACE_LENGTH - 1


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), workers=st.integers(1, 5),
       noise=st.sampled_from([0.002, 0.02, 0.2]), fail_every=st.sampled_from([0, 7]),
       restore_every=st.sampled_from([0, 5, 11]), order=st.integers(0, 2**16))
def test_best_is_the_estimate_and_races_share_seeds(seed, workers, noise, fail_every,
                                                    restore_every, order) -> None:
    engine, issued = drive(seed, workers, noise, fail_every, np.random.default_rng(order),
                           restore_every)
    check_races(issued, seed)
    assert engine.n_finished == 60


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), workers=st.integers(1, 5), order=st.integers(0, 2**16))
def test_a_deterministic_objective_pays_one_probe_at_most(seed, workers, order) -> None:
    engine, issued = drive(seed, workers, 0.0, 0, np.random.default_rng(order))
    races = [t for t in issued if t.operator == RACE]
    # One probe race (challenger and incumbent on race seed 0) measures the noise; zero
    # noise switches racing off for good, whatever the number of workers.
    assert len(races) <= 2
    noise = engine.tracker.noise()
    assert noise is None or noise[0] == 0.0


def test_the_race_budget_follows_the_noise() -> None:
    spent = {}
    for noise in (0.0, 0.05):
        spent[noise] = np.mean([
            sum(t.operator == RACE for t in drive(s, 2, noise, 0, np.random.default_rng(s),
                                                  budget=120)[1])
            for s in range(4)])
    assert spent[0.0] <= 2 < spent[0.05], spent


def test_intensify_off_issues_what_it_always_did() -> None:
    # The tracker is consulted on every result; with intensify off it must never issue.
    a = Engine(SPACE, EngineConfig(max_evals=80, population_size=4, seed=5))
    seen = []
    while (t := a.ask(0)) is not None:
        seen.append(t.operator)
        a.tell(Result(uid=t.uid, worker=0, fitness=noisy(t, 0.1)))
    assert RACE not in seen and "reevaluate" not in seen
    assert a.best is not None and a.best.info["evaluations"] == 1


def test_best_is_not_the_luckiest_draw() -> None:
    """A challenger's lucky first draw makes it race; its mean falls behind, and the
    incumbent stays best while the lucky draw is shown as the luckiest, not as best."""
    engine = Engine(SPACE, EngineConfig(max_evals=20, population_size=4, intensify=3, seed=1))
    a = engine.ask(0)
    b = engine.ask(0)
    assert a is not None and b is not None
    engine.tell(Result(uid=a.uid, worker=0, fitness=1.0))
    engine.tell(Result(uid=b.uid, worker=0, fitness=0.5))  # beats 1.0: a challenger
    races = [engine.ask(0), engine.ask(0)]
    assert all(t is not None and t.operator == RACE for t in races)
    by_config = {t.reevaluation_of: t for t in races if t is not None}
    assert set(by_config) == {a.uid, b.uid}
    assert by_config[a.uid].seed == by_config[b.uid].seed  # common seeds
    engine.tell(Result(uid=by_config[b.uid].uid, worker=0, fitness=1.7))
    engine.tell(Result(uid=by_config[a.uid].uid, worker=0, fitness=1.1))
    best, lucky = engine.best, engine.luckiest_draw
    assert best is not None and lucky is not None
    assert best.uid == a.uid and math.isclose(best.fitness, 1.05)
    assert best.info["evaluations"] == 2
    assert lucky.uid == b.uid and lucky.fitness == 0.5
    assert engine.ask(0).operator != RACE  # b fell behind: its race is over


def test_optimizer_reports_the_estimate_and_the_noise() -> None:
    opt = Optimizer(SPACE, operator="ga", seed=1, intensify=3, population_size=4)
    for _ in range(80):
        cand = opt.ask()
        f = true_value(cand.params) + 0.05 * float(np.random.default_rng(cand.seed).normal())
        opt.tell(cand, f)
    best, lucky = opt.best, opt.luckiest
    assert best is not None and lucky is not None
    assert best.evaluations >= 2 and best.std > 0
    assert lucky.fitness <= best.fitness
    assert opt.noise is not None and opt.noise > 0


@pytest.mark.parametrize(("c", "want"), [(0.9, "A"), (0.4, "C")])
def test_one_draw_ousts_a_raced_mean_only_by_more_than_its_extra_uncertainty(c, want) -> None:
    # A = three draws around 1.0; B = one lucky draw of 0.5, then 1.5 and 1.6 (never best:
    # its mean is 1.2); C = one draw. Pooled noise 0.436: A ranks at 1.0 + 0.436/sqrt(3) =
    # 1.252, C at c + 0.436. C = 0.9 leads A's mean by 0.1, less than the 0.184 between a
    # one-draw and a three-draw standard error: A stays. C = 0.4 leads by 0.6: C. (A count
    # gate keeps A in both cases; ranking by the mean alone picks C in both.)
    rows = [("A", 0, 1.0), ("A", 3, 1.1), ("A", 4, 0.9), ("B", 1, 0.5), ("B", 5, 1.5),
            ("B", 6, 1.6), ("C", 2, c)]
    best = incumbent(summarize_groups(rows).values())
    assert best is not None and best.key == want


@pytest.mark.parametrize("intensify", [0, 3])
def test_optimizer_state_keeps_the_switches(intensify: int) -> None:
    opt = Optimizer(SPACE, seed=3, intensify=intensify, repeats=1)
    for _ in range(12):
        c = opt.ask()
        opt.tell(c, noisy(Task(c.uid, c.island, c.genome, c.params, c.seed), 0.1))
    again = Optimizer.from_state(opt.get_state(), space=SPACE)
    assert again.config.describe() == opt.config.describe()
    assert again.best is not None and opt.best is not None
    assert (again.best.uid, again.best.fitness, again.best.evaluations) == (
        opt.best.uid, opt.best.fitness, opt.best.evaluations)
    assert [again.ask().uid for _ in range(3)] == [opt.ask().uid for _ in range(3)]
