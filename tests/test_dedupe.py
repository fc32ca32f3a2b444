"""No configuration is evaluated twice by accident; re-evaluation only when a scenario asks."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from collections import Counter, deque
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from inline_run import drive_inline

from evo_engine.analysis import load_history, load_run
from evo_engine.analysis.repeats import format_repeats, repeated_configurations
from evo_engine.cli.main import main
from evo_engine.optimizer import Optimizer
from evo_engine.scenario import Scenario, ScenarioError, validate_scenario
from evo_engine.search.dedupe import (
    REEVALUATE,
    Registry,
    SpaceExhausted,
    config_key,
    config_keys,
    key_digest,
    register_logged_tasks,
    space_size,
    unseen_configurations,
)
from evo_engine.search.engine import Engine, EngineConfig
from evo_engine.search.intensify import RACE
from evo_engine.search.messages import EvalState, Result, Task
from evo_engine.space import Categorical, Float, Int, Space
from evo_engine.store.replay import rebuild_engine
from evo_engine.store.runstore import RunStore

MIXED = Space(lr=Float(1e-5, 1e-1, log=True), n=Int(1, 4), act=Categorical(["relu", "tanh", "gelu"]))
"""The issue's kind of space: the GA repeats configurations here constantly without the guard."""
SMALL = Space(n=Int(1, 4), w=Int(1, 16, log=True), act=Categorical(["relu", "tanh", "gelu"]))
"""4 × 16 × 3 = 192 configurations: small enough to be nearly exhausted by a test."""
TINY = Space(n=Int(1, 3), act=Categorical(["a", "b"]))
OPERATORS = ("ga", "es", "random")
DESIGNS = ("random", "lhs", "sobol", "rsa")


def loss(p: dict) -> float:
    return ((math.log10(p.get("lr", 1e-3)) + 3) ** 2 + (p["n"] - 2) ** 2 / 10
            + (p["act"] not in ("gelu", "b")) * 0.3 + (math.log2(p.get("w", 8)) - 3) ** 2 / 10)


def drive(eng: Engine, workers: int = 4, seed: int = 0, fail_every: int = 0,
          objective=None) -> list[Task]:
    """Keep ``workers`` tasks in flight and finish them in random order until the engine is done."""
    rng = random.Random(seed)
    free, busy, issued = deque(range(workers)), {}, []
    objective = objective or (lambda t: loss(t.params))
    while True:
        while free:
            task = eng.ask(free[0])
            if task is None:
                break
            busy[free.popleft()] = task
            issued.append(task)
        if not busy:
            break
        w = rng.choice(sorted(busy))
        t = busy.pop(w)
        free.append(w)
        if fail_every and t.uid % fail_every == 0:
            eng.tell(Result(uid=t.uid, worker=w, fitness=None, state=EvalState.FAILED, error="x"))
        else:
            eng.tell(Result(uid=t.uid, worker=w, fitness=objective(t)))
    assert eng.done
    return issued


def distinct(tasks: list[Task]) -> int:
    return len({config_key(t.params) for t in tasks})


# -- identity -------------------------------------------------------------------------------


def test_config_key_is_the_decoded_configuration() -> None:
    assert config_key({"a": 1, "b": "x"}) == config_key({"b": "x", "a": 1})
    assert config_key({"a": np.int64(3), "f": np.float64(0.5)}) == config_key({"a": 3, "f": 0.5})
    assert config_key({"f": -0.0}) == config_key({"f": 0.0})
    # Different choices stay different, even when Python calls them equal.
    keys = {config_key({"c": v}) for v in (1, 1.0, True, "1", None)}
    assert len(keys) == 5
    assert config_key({"f": 0.1}) != config_key({"f": float(np.nextafter(0.1, 1.0))})
    # An inactive (absent) conditional parameter is not a value of the configuration.
    assert config_key({"a": 1}) != config_key({"a": 1, "b": 2})


def test_genomes_that_decode_alike_count_as_one() -> None:
    eng = Engine(SMALL, EngineConfig(max_evals=50, population_size=3))
    # Two design points in the same bins of every gene: the same configuration.
    g1, g2 = np.array([0.01, 0.02, 0.03]), np.array([0.02, 0.03, 0.01])
    assert SMALL.decode(g1) == SMALL.decode(g2)
    g3 = np.array([0.99, 0.99, 0.99])
    eng.islands[0].design_queue = deque([g1, g2, g3])
    a, b = eng.ask(0), eng.ask(0)
    assert a.params == SMALL.decode(g1)
    assert b.params == SMALL.decode(g3), "the repeat was skipped, the next point issued"
    assert eng.dedupe.rejected == 1


# -- every operator, design and island count --------------------------------------------------


@pytest.mark.parametrize("islands", [1, 3])
@pytest.mark.parametrize("design", DESIGNS)
@pytest.mark.parametrize("operator", OPERATORS)
def test_no_repeats_on_a_mixed_space(operator: str, design: str, islands: int) -> None:
    eng = Engine(MIXED, EngineConfig(max_evals=300, islands=islands, population_size=6,
                                     operator=operator, initial_design=design,
                                     migration_interval=3))
    tasks = drive(eng, workers=2 * islands + 1, fail_every=11)
    assert len(tasks) == eng.n_finished == 300
    assert distinct(tasks) == 300
    if islands > 1:
        assert any(m.accepted for m in eng.migrations), "migrants must have entered populations"
    if operator == "ga":
        # Without the guard the GA repeats itself here (the issue: 40% on sphere.py).
        assert eng.dedupe.rejected > 30


@pytest.mark.parametrize("islands", [1, 3])
@pytest.mark.parametrize("design", DESIGNS)
@pytest.mark.parametrize("operator", OPERATORS)
def test_no_repeats_until_a_small_space_is_nearly_exhausted(operator: str, design: str,
                                                           islands: int) -> None:
    budget = int(0.95 * space_size(SMALL))
    eng = Engine(SMALL, EngineConfig(max_evals=budget, islands=islands, population_size=6,
                                     operator=operator, initial_design=design,
                                     migration_interval=3))
    tasks = drive(eng, workers=5, fail_every=7)
    assert len(tasks) == budget and distinct(tasks) == budget
    assert eng.dedupe.exhausted is None
    assert eng.dedupe.rejected > 0


def test_ask_is_deterministic_so_a_replay_re_creates_the_same_tasks() -> None:
    cfg = EngineConfig(max_evals=150, islands=2, population_size=5, operator="ga")
    a = drive(Engine(SMALL, cfg), workers=3, seed=4)
    b = drive(Engine(SMALL, cfg), workers=3, seed=4)
    assert [(t.uid, t.genome.tolist(), t.seed, t.operator, t.parents) for t in a] == [
        (t.uid, t.genome.tolist(), t.seed, t.operator, t.parents) for t in b]
    assert {t.operator for t in a} >= {"ga", "dedupe:random"}


# -- an exhausted space -----------------------------------------------------------------------


def test_unseen_configurations_lists_what_is_left() -> None:
    reg = Registry()
    assert space_size(TINY) == 6 and space_size(MIXED) is None
    assert unseen_configurations(MIXED, reg) is None
    reg.add({"n": 2, "act": "b"})
    left = unseen_configurations(TINY, reg)
    assert len(left) == 5
    assert {key_digest(config_key(TINY.decode(g))) for g in left} | set(reg.keys) == {
        key_digest(config_key({"n": n, "act": c})) for n in (1, 2, 3) for c in "ab"}


@pytest.mark.parametrize("operator", OPERATORS)
def test_an_exhausted_space_stops_issuing_and_the_run_finishes(operator: str) -> None:
    eng = Engine(TINY, EngineConfig(max_evals=20, islands=2, population_size=3, operator=operator))
    tasks = drive(eng, workers=2)
    fresh = [t for t in tasks if t.reevaluation_of < 0]
    assert len(fresh) == 6 == distinct(tasks), "every configuration once"
    # then one re-evaluation of the incumbent measures the noise: 0, so nothing more
    (probe,) = [t for t in tasks if t.reevaluation_of >= 0]
    # (the incumbent when the sixth was issued: told before it, with a draw equal to its first)
    assert probe.operator == RACE and probe.told_before == 5
    assert probe.reevaluation_of in {t.uid for t in fresh[:5]}
    assert eng.tracker.noise() == (0.0, 1)
    assert eng.n_finished == 7 and eng.budget_left == 13
    assert eng.done and eng.ask(0) is None
    assert "search space exhausted: all 6 distinct configurations" in eng.dedupe.exhausted


def test_exhaustion_waits_for_the_evaluations_in_flight() -> None:
    eng = Engine(TINY, EngineConfig(max_evals=20, population_size=2))
    tasks = [eng.ask(0) for _ in range(6)]
    assert all(tasks) and eng.ask(0) is None and eng.dedupe.exhausted
    assert not eng.done, "six evaluations are still running"
    for t in tasks:
        eng.tell(Result(uid=t.uid, worker=0, fitness=1.0))
    assert not eng.done, "the probe of the noise is still to run"
    probe = eng.ask(0)
    assert probe.reevaluation_of == 0 and eng.ask(0) is None
    eng.tell(Result(uid=probe.uid, worker=0, fitness=1.0))
    assert eng.done and eng.ask(0) is None


def test_exhausted_run_ends_finished_with_a_logged_warning(tmp_path: Path) -> None:
    scenario = tmp_path / "tiny.py"
    scenario.write_text(
        "from evo_engine import Categorical, Int, Space\n"
        "from evo_engine.scenario import Scenario\n"
        "def f(params, ctx):\n"
        "    return params['n'] + (params['act'] == 'a')\n"
        "scenario = Scenario(name='tiny', space=Space(n=Int(1, 3), act=Categorical(['a', 'b'])),\n"
        "                    objective=f, population_size=2, max_evals=20)\n")
    r = subprocess.run([sys.executable, "-m", "evo_engine", "run", str(scenario), "--workers", "0",
                        "--run-dir", str(tmp_path / "run")], capture_output=True, text=True,
                       timeout=180)
    assert r.returncode == 0, r.stderr
    assert "warning: search space exhausted: all 6 distinct configurations" in r.stderr
    assert "finished: 7/20 evaluations" in r.stdout  # 6 and the probe that found no noise
    events = [json.loads(line) for line in (tmp_path / "run/log.jsonl").read_text().splitlines()]
    assert [e["finished"] for e in events if e["event"] == "space_exhausted"] == [7]
    h = load_history(tmp_path / "run")
    assert len(h["uid"]) == 7 and load_run(tmp_path / "run").attrs["status"] == "finished"


# -- resume and the ask/tell API -----------------------------------------------------------------


def _small_scenario(**kw) -> Scenario:
    def objective(params, ctx):
        return loss(params)

    fields = dict(name="small", space=SMALL, objective=objective, islands=2, population_size=4,
                  operator="ga", max_evals=150, checkpoint_every=10, migration_interval=4, seed=3)
    fields.update(kw)
    return validate_scenario(fields)


@pytest.mark.parametrize("snapshot_at_stop", [True, False])
def test_resume_keeps_the_rule(tmp_path: Path, snapshot_at_stop: bool) -> None:
    scenario = _small_scenario()
    run_dir = tmp_path / "run"
    eng = Engine(scenario.space, scenario.engine_config())
    # Without a snapshot at the stop (a crash), the results after the last one are replayed.
    drive_inline(scenario, run_dir, eng, stop_after=75, last_snapshot=snapshot_at_stop)
    store = RunStore.open(run_dir)
    issued = {key_digest(config_key(SMALL.decode(g))) for g in store.tasks.read("genome")}
    resumed, _ = rebuild_engine(store, scenario.space, scenario.engine_config(), print)
    assert resumed.dedupe.registry.keys == issued, "the registry is rebuilt from the task log"
    assert drive_inline(scenario, run_dir, resumed, None) == "finished"
    h = load_history(run_dir)
    assert len(h["uid"]) == 150
    assert len({config_key(SMALL.decode(g)) for g in h["genome"]}) == 150


def test_registry_rebuild_takes_only_tasks_before_the_snapshot(tmp_path: Path) -> None:
    scenario = _small_scenario(max_evals=30)
    drive_inline(scenario, tmp_path, Engine(scenario.space, scenario.engine_config()), None)
    store = RunStore.open(tmp_path)
    eng = Engine(scenario.space, scenario.engine_config())
    assert register_logged_tasks(eng.dedupe, store.tasks, below_uid=12) == 12
    genomes = store.tasks.read("genome")
    assert eng.dedupe.registry.keys == {key_digest(config_key(SMALL.decode(g)))
                                        for g in genomes[:12]}


def test_optimizer_never_asks_twice_across_save_and_load(tmp_path: Path) -> None:
    opt = Optimizer(SMALL, operator="ga", seed=1, population_size=4)
    asked = []
    for _ in range(60):
        c = opt.ask()
        asked.append(c)
        opt.tell(c, loss(c.params))
    opt.save(tmp_path / "opt.json")
    back = Optimizer.load(tmp_path / "opt.json")
    for _ in range(80):
        c = back.ask()
        asked.append(c)
        back.tell(c, loss(c.params))
    assert len({config_key(c.params) for c in asked}) == 140


def test_optimizer_says_when_the_space_is_exhausted() -> None:
    opt = Optimizer(TINY, operator="es", population_size=2)
    for _ in range(6):
        c = opt.ask()
        opt.tell(c, 1.0)
    probe = opt.ask()  # the incumbent again: is the objective noisy?
    assert probe.operator == RACE and probe.params == opt.best.params
    opt.tell(probe, 1.0)  # no: nothing more
    with pytest.raises(SpaceExhausted, match="all 6 distinct configurations"):
        opt.ask()


# -- the re-evaluation switch -----------------------------------------------------------------


def noisy(task: Task) -> float:
    return loss(task.params) + random.Random(task.seed).gauss(0.0, 0.3)


def test_repeats_reevaluate_promising_configurations_with_fresh_seeds() -> None:
    eng = Engine(MIXED, EngineConfig(max_evals=200, islands=2, population_size=6, repeats=2))
    tasks = drive(eng, workers=3, objective=noisy)
    by_uid = {t.uid: t for t in tasks}
    again = [t for t in tasks if t.reevaluation_of >= 0]
    assert again and all(t.operator == REEVALUATE for t in again)
    for t in again:
        first = by_uid[t.reevaluation_of]
        assert first.reevaluation_of == -1 and t.uid > first.uid
        assert t.params == first.params and np.array_equal(t.genome, first.genome)
        assert t.parents == (first.uid,)
    per_original = Counter(t.reevaluation_of for t in again)
    assert set(per_original.values()) <= {1, 2}
    assert max(per_original.values()) == 2
    seeds = [t.seed for t in tasks]
    assert len(set(seeds)) == len(seeds), "every evaluation has a fresh seed"
    # New offspring are still never repeats: distinct configurations = first evaluations.
    assert distinct(tasks) == len(tasks) - len(again) == 200 - len(again)
    # A re-evaluated individual's fitness is the mean of its evaluations.
    members = {m.uid: m for isl in eng.islands for m in isl.population}
    checked = 0
    for uid, n in per_original.items():
        m = members.get(uid)
        if m is None:
            continue
        values = [noisy(by_uid[uid])] + [noisy(t) for t in again if t.reevaluation_of == uid]
        assert m.info["evaluations"] == n + 1
        assert m.fitness == pytest.approx(np.mean(values), rel=1e-12)
        checked += 1
    assert checked > 0


def test_repeats_state_round_trip_keeps_the_queue() -> None:
    cfg = EngineConfig(max_evals=80, population_size=4, repeats=3)
    a = Engine(MIXED, cfg)
    first = [a.ask(0) for _ in range(2)]
    a.tell(Result(uid=first[0].uid, worker=0, fitness=0.5))
    assert len(a.dedupe.queue) == 3
    b = Engine.from_state(MIXED, cfg, a.get_state())
    assert [u for u, _, _ in b.dedupe.queue] == [first[0].uid] * 3
    t = b.ask(0)
    assert t is not None and t.uid == first[1].uid, "the re-issue of the task in flight first"
    t = b.ask(0)
    assert t.reevaluation_of == first[0].uid and t.params == first[0].params


def test_repeats_is_a_scenario_field_with_a_clear_error() -> None:
    base = _small_scenario()
    assert "repeats" not in base.fingerprint_description(), "old runs keep their fingerprint"
    with_repeats = _small_scenario(repeats=2)
    assert with_repeats.engine_config().repeats == 2
    assert with_repeats.fingerprint() != base.fingerprint()
    with pytest.raises(ScenarioError, match="repeats needs the asynchronous engine"):
        _small_scenario(repeats=1, sync=True)
    with pytest.raises(ScenarioError, match="repeats"):
        _small_scenario(repeats=-1)


def test_analyze_shows_mean_and_spread_of_repeated_configurations(tmp_path: Path,
                                                                  capsys) -> None:
    def objective(params, ctx):
        return loss(params) + random.Random(ctx.seed).gauss(0.0, 0.3)

    scenario = _small_scenario(space=MIXED, objective=objective, repeats=2, max_evals=80)
    drive_inline(scenario, tmp_path, Engine(scenario.space, scenario.engine_config()), None)
    store = RunStore.open(tmp_path)
    reeval = store.tasks.read("reevaluation_of")
    assert (reeval >= 0).any(), "re-evaluations are recorded as such in the task log"
    run = load_run(tmp_path)
    stats = repeated_configurations(run)
    h = run.evaluations
    by_uid = {int(u): i for i, u in enumerate(h["uid"])}
    task_uids = store.tasks.read("uid")
    for s in stats:
        rows = [by_uid[s.uid]] + [by_uid[int(u)] for u, r in zip(task_uids, reeval)
                                  if r == s.uid and int(u) in by_uid]
        f = h["fitness"][rows]
        assert s.evaluations == len(rows)
        assert s.mean == pytest.approx(f.mean()) and s.std == pytest.approx(f.std(ddof=1))
    assert [s.mean for s in stats] == sorted(s.mean for s in stats)
    assert main(["analyze", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"repeated configurations: {len(stats)} of" in out
    assert f"{stats[0].mean:.6g}" in out


def test_analyze_says_nothing_about_repeats_when_there_are_none(tmp_path: Path) -> None:
    scenario = _small_scenario(max_evals=20)
    drive_inline(scenario, tmp_path, Engine(scenario.space, scenario.engine_config()), None)
    assert format_repeats(load_run(tmp_path)) is None


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.floats(0.0, 1.0), min_size=3, max_size=3), min_size=1, max_size=40))
def test_the_registry_keeps_16_byte_digests_that_agree_with_config_key(rows: list) -> None:
    """A resume registers logged tasks a column at a time (config_keys); the engine asks
    with config_key per configuration: both must land on the same digest, 16 bytes each."""
    genomes = np.array(rows)
    bulk, one_by_one = Registry(), Registry()
    bulk.add_keys(config_keys(MIXED, genomes))
    for g in genomes:
        one_by_one.add(MIXED.decode(g))
    assert bulk.keys == one_by_one.keys
    assert all(isinstance(k, bytes) and len(k) == 16 for k in bulk.keys)
    assert all(MIXED.decode(g) in bulk for g in genomes)
    restored = Registry()
    restored.restore(bulk.export())  # the optimizer's JSON state
    assert restored.keys == bulk.keys


def test_the_registry_digest_memo_never_hands_one_key_another_keys_digest() -> None:
    """has_key then add of the same key digests once (a memo of the last key); a different
    key, or an equal key built anew, must still get its own digest."""
    a, b = {"x": 0.25, "n": 1, "act": "a"}, {"x": 0.5, "n": 2, "act": "b"}
    ka, kb = config_key(a), config_key(b)
    reg = Registry()
    assert not reg.has_key(ka)
    reg.add(b, kb)  # the memo holds ka: kb must not be registered under ka's digest
    assert reg.keys == {key_digest(kb)}
    assert not reg.has_key(ka) and reg.has_key(kb)
    assert reg.has_key("".join(list(kb)))  # equal text, another object
    reg.add(a)  # no key given: computed, and digested as ka
    assert reg.keys == {key_digest(ka), key_digest(kb)}
    assert a in reg and b in reg and {"x": 0.75, "n": 1, "act": "a"} not in reg


def test_an_optimizer_state_from_before_the_digests_still_never_asks_twice() -> None:
    opt = Optimizer(SMALL, operator="ga", seed=1, population_size=4)
    asked = [opt.ask() for _ in range(5)]
    state = opt.get_state()
    assert all(len(k) == 32 for k in state["asked_configurations"])  # hex digests in JSON
    state["asked_configurations"] = [config_key(t.params) for t in asked]  # the old form
    again = Optimizer.from_state(state, SMALL)
    assert all(t.params in again.engine.dedupe.registry for t in asked)


def test_the_unseen_index_picks_what_listing_the_space_would_and_lists_it_once(monkeypatch) -> None:
    # Near the end of a discrete space every ask listed the whole space (4 s an ask at
    # 100,000 configurations left, issue 30.4). The index is built once and kept in step;
    # its picks are those of the listing (the same order), so replay and dedupe hold.
    import itertools

    import evo_engine.search.dedupe as dedupe_module

    products = []
    real_product = itertools.product

    def counting(*args):
        products.append(1)
        return real_product(*args)

    monkeypatch.setattr(dedupe_module.itertools, "product", counting)
    rng = np.random.default_rng(3)
    reg = Registry()
    for g in rng.random((40, 3)):
        reg.add(SMALL.decode(g))
    index = reg.unseen(SMALL)
    for _ in range(60):
        reference = unseen_configurations(SMALL, reg)
        r = float(rng.random())
        assert len(index) == len(reference)
        picked = index.pick(r)
        np.testing.assert_array_equal(picked, reference[int(r * len(reference)) % len(reference)])
        reg.add(SMALL.decode(picked if rng.random() < 0.7 else rng.random(3)))
    products.clear()
    eng = Engine(SMALL, EngineConfig(max_evals=400, islands=2, population_size=4, operator="ga"))
    tasks = drive(eng, workers=3)
    fresh = [t for t in tasks if t.reevaluation_of < 0]  # (and the probe of the noise)
    assert len(fresh) == 192 == distinct(tasks) and "dedupe:remaining" in {t.operator for t in tasks}
    assert len(products) == 1, "the space is listed once per run, not once per ask"
    assert Registry().unseen(MIXED) is None, "continuous: nothing to list"
