"""A finite space exhausted below its budget: the rest re-evaluates the leaders, if noisy.

Driven through the engine's real issuing path (``Engine.ask``/``tell``), with results told in
random order by several workers, failures, and restores from snapshots.
"""

from __future__ import annotations

import numpy as np
import pytest
from checked_drive import drive_checked, restore
from hypothesis import given, settings
from hypothesis import strategies as st

from evo_engine.optimizer import Optimizer
from evo_engine.search.dedupe import SpaceExhausted
from evo_engine.search.engine import Engine, EngineConfig
from evo_engine.search.intensify import LEFTOVER_LIMIT, RACE, race_seed
from evo_engine.search.keys import config_key
from evo_engine.search.messages import Result, Task
from evo_engine.space import Categorical, Float, Int, Space

FINITE = Space(a=Int(0, 4), act=Categorical(["relu", "tanh", "gelu"]))
"""15 configurations."""


def true_value(p: dict) -> float:
    return 0.02 * abs(p["a"] - 2) + {"relu": 0.0, "tanh": 0.01, "gelu": 0.03}[p["act"]]


def observe(task: Task, noise: float) -> float:
    """A function of the task's seed, as a training is."""
    return true_value(task.params) + noise * float(np.random.default_rng(task.seed).normal())


def drive(seed: int, workers: int, noise: float, order: np.random.Generator, *,
          intensify: int = 0, fail_every: int = 0, restore_every: int = 0,
          budget: int = 40) -> tuple[Engine, list[Task]]:
    cfg = EngineConfig(max_evals=budget, population_size=4, seed=seed, intensify=intensify)
    return drive_checked(FINITE, cfg, workers, lambda t: observe(t, noise), order,
                         fail_every=fail_every, restore_every=restore_every)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), workers=st.integers(1, 5),
       noise=st.sampled_from([0.0, 0.01, 0.05]), intensify=st.sampled_from([0, 3]),
       fail_every=st.sampled_from([0, 7]), restore_every=st.sampled_from([0, 4, 9]),
       order=st.integers(0, 2**16))
def test_the_budget_left_re_evaluates_leaders_on_common_seeds_and_only_if_noisy(
        seed, workers, noise, intensify, fail_every, restore_every, order) -> None:
    engine, issued = drive(seed, workers, noise, np.random.default_rng(order),
                           intensify=intensify, fail_every=fail_every,
                           restore_every=restore_every)
    fresh = [t for t in issued if t.reevaluation_of < 0]
    assert len({config_key(t.params) for t in fresh}) == len(fresh) == 15
    per_config: dict[str, set[int]] = {}
    for t in issued:
        if t.reevaluation_of >= 0:
            assert t.operator == RACE and t.seed == race_seed(seed, int(t.info["race"]))
            first = next(u for u in fresh if u.uid == t.reevaluation_of)
            assert config_key(first.params) == config_key(t.params)
            seen = per_config.setdefault(config_key(t.params), set())
            assert int(t.info["race"]) not in seen, "one configuration twice on one seed"
            seen.add(int(t.info["race"]))
    if noise == 0.0 and not fail_every:
        # One probe (the incumbent again, or a race's two) finds no noise: nothing more.
        assert engine.n_finished <= 15 + 2 and engine.tracker.noise()[0] == 0.0
    elif noise > 0.0:
        assert engine.n_finished == 40, "a noisy objective spends the whole budget"


def test_re_evaluations_name_the_best_configuration_where_one_draw_names_a_lucky_one() -> None:
    # Noise (0.02) as large as the gaps (0.01-0.02): the luckiest of 15 single draws is the
    # optimum (a=2, relu) in 8 of 20 searches. The budget left (45 of 60) goes to the leaders, and the
    # estimate names the optimum in most searches; the luckiest draw stays what it was.
    named, lucky = [], []
    for seed in range(20):
        engine, issued = drive(seed, 4, 0.02, np.random.default_rng(seed), budget=60)
        assert engine.n_finished == 60
        best = engine.best
        named.append(true_value(FINITE.decode(best.genome)))
        # What the plain minimum named when the space ran out: the luckiest first draw.
        first = min((t for t in issued if t.reevaluation_of < 0), key=lambda t: observe(t, 0.02))
        lucky.append(true_value(first.params))
        assert best.info["evaluations"] >= 3
    assert sum(v == 0.0 for v in named) >= 17, named  # 19 measured
    assert sum(v == 0.0 for v in lucky) <= 10, lucky  # 8 measured
    assert np.mean(named) < 0.25 * np.mean(lucky)  # 0.0005 against 0.011 measured


def test_a_restored_engine_issues_what_the_original_would_in_the_leftover_phase() -> None:
    # Snapshots at every result (the probe out, the noise measured, mid-phase): the engine
    # built from one issues exactly the tasks the original issues, given the same results.
    def run(restore_at: int | None) -> list[tuple]:
        cfg = EngineConfig(max_evals=45, population_size=4, seed=11)
        eng = Engine(FINITE, cfg)
        order = np.random.default_rng(5)
        flight: list[Task] = []
        out: list[tuple] = []
        tasks: list[Task] = []
        told = 0
        while not eng.done:
            while len(flight) < 3 and (t := eng.ask(0)) is not None:
                flight.append(t)
                tasks.append(t)
                out.append((t.uid, config_key(t.params), t.seed, t.operator, t.reevaluation_of))
            if not flight:
                break
            task = flight.pop(int(order.integers(len(flight))))
            eng.tell(Result(uid=task.uid, worker=0, fitness=observe(task, 0.02)))
            told += 1
            if told == restore_at:
                eng = restore(eng, FINITE, cfg, tasks)
                # what was in flight is re-issued first, in its order, with its uids
                again = [eng.ask(0) for _ in flight]
                assert [t.uid for t in again] == [t.uid for t in flight]
                flight = again
                tasks = [t for t in tasks if t.uid not in {a.uid for a in again}] + again
        return out

    plain = run(None)
    assert sum(r[3] == RACE for r in plain) == 45 - 15
    for at in (14, 15, 16, 17, 20, 30, 40):
        assert run(at) == plain, f"restored after {at} results"


def test_the_optimizer_asks_for_re_evaluations_then_says_exhausted() -> None:
    # Noisy: as many re-evaluations as the user asks for (the Optimizer has no budget).
    opt = Optimizer(FINITE, operator="ga", population_size=4, seed=2)
    asked = []
    for _ in range(40):
        c = opt.ask()
        asked.append(c)
        opt.tell(c, true_value(c.params) + 0.02 * np.random.default_rng(c.seed).normal())
    assert sum(c.operator == RACE for c in asked) == 25
    assert opt.best.params == {"a": 2, "act": "relu"} and opt.best.evaluations > 1
    # Deterministic: one probe, then the space is exhausted.
    opt = Optimizer(FINITE, operator="ga", population_size=4, seed=2)
    asked = []
    with pytest.raises(SpaceExhausted, match="all 15 distinct configurations"):
        while True:
            c = opt.ask()
            asked.append(c)
            opt.tell(c, true_value(c.params))
    assert len(asked) == 16 and asked[-1].operator == RACE


def test_only_spaces_small_enough_keep_every_configuration() -> None:
    big = Space(a=Int(0, 99), b=Int(0, LEFTOVER_LIMIT // 100))  # 100 × 101 > the limit
    assert not Engine(big, EngineConfig(max_evals=10)).tracker.keep_all
    assert not Engine(Space(x=Float(0, 1)), EngineConfig(max_evals=10)).tracker.keep_all
    assert Engine(FINITE, EngineConfig(max_evals=10)).tracker.keep_all
    # several objectives, PBT or the synchronous baseline: no single noisy fitness to race
    assert not Engine(FINITE, EngineConfig(max_evals=10, sync=True)).tracker.keep_all


@pytest.mark.parametrize("workers", [1, 4])
def test_a_deterministic_objective_ends_after_one_probe(workers) -> None:
    engine, issued = drive(3, workers, 0.0, np.random.default_rng(1))
    again = [t for t in issued if t.reevaluation_of >= 0]
    assert len(again) == 1 and engine.n_finished == 16 and engine.done


def test_re_evaluations_out_count_so_workers_spread_over_contenders() -> None:
    from evo_engine.search.intensify import Tracker

    tr = Tracker(keep_all=True)
    g = np.zeros(2)
    tr.first_draw("A", 0, 0, g, 0.0)
    tr.first_draw("B", 1, 0, g, 0.001)
    tr.first_draw("C", 2, 0, g, 0.002)
    tr.repeat("A", 0, 0, g, 0.02, None)  # A: mean 0.01 over 2; noise 0.01414 (1 dof)
    # optimistic bounds: A 0.01 - 0.01414/sqrt(2) = 0, B -0.0131, C -0.0121; a pick out
    # counts as an evaluation: B (to -0.0090), then C, then B again on its next seed
    picks = [tr.leftover_pick() for _ in range(3)]
    assert [(p.key, p.j) for p in picks] == [("B", 0), ("C", 0), ("B", 1)]
    assert tr.leftover_pick().key == "C"  # -0.0080, ahead of B's -0.0072 (3 tried)


def test_a_noisy_grid_run_spends_its_budget_and_says_so(tmp_path) -> None:
    import json
    import subprocess
    import sys

    from evo_engine.analysis import load_history

    scenario = tmp_path / "grid.py"
    scenario.write_text(
        "import random\n"
        "from evo_engine import Categorical, Int, Space\n"
        "from evo_engine.scenario import Scenario\n"
        "def f(params, ctx):\n"
        "    return params['n'] * 0.1 + random.Random(ctx.seed).gauss(0, 0.05)\n"
        "scenario = Scenario(name='grid', space=Space(n=Int(1, 3), act=Categorical(['a', 'b'])),\n"
        "                    objective=f, population_size=2, max_evals=20)\n")
    r = subprocess.run([sys.executable, "-m", "evo_engine", str(scenario), "--workers", "2",
                        "--run-dir", str(tmp_path / "run"), "--progress", "none"],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    assert "finished: 20/20 evaluations" in r.stdout
    assert ("note: search space exhausted: all 6 distinct configurations have been evaluated "
            "or are in flight; the budget left went to re-evaluating the leaders") in r.stderr
    assert "warning" not in r.stderr
    h = load_history(tmp_path / "run")
    assert len(h["uid"]) == 20 and sum(op == RACE for op in h["operator"]) == 14
    events = [json.loads(x) for x in (tmp_path / "run/log.jsonl").read_text().splitlines()]
    assert [e["finished"] for e in events if e["event"] == "space_exhausted"] == [20]
