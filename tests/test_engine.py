"""The engine: budget, states, replacement, migration, sync barrier, state round trips."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

from evo_engine.search.engine import Engine, EngineConfig, TellOutcome, task_seed
from evo_engine.search.messages import EvalState, InvalidTransition, Result, check_transition
from evo_engine.space import Categorical, Float, Int, Space

SPACE = Space(lr=Float(1e-5, 1e-1, log=True), n=Int(1, 8), act=Categorical(["relu", "tanh", "gelu"]))


def sphere(params: dict) -> float:
    return (math.log10(params["lr"]) + 3) ** 2 + (params["n"] - 4) ** 2 / 10


def ok(task, worker: int = 0, fitness: float | None = None) -> Result:
    f = sphere(task.params) if fitness is None else fitness
    return Result(uid=task.uid, worker=worker, fitness=f, t_start=0.0, t_end=1.0)


def test_transitions_are_checked() -> None:
    check_transition(EvalState.PENDING, EvalState.RUNNING)
    check_transition(EvalState.RUNNING, EvalState.COMPLETE)
    for bad in [(EvalState.COMPLETE, EvalState.RUNNING), (EvalState.FAILED, EvalState.COMPLETE),
                (EvalState.PENDING, EvalState.COMPLETE)]:
        with pytest.raises(InvalidTransition):
            check_transition(*bad)


def test_budget_is_exact_and_ask_returns_none_after() -> None:
    eng = Engine(SPACE, EngineConfig(max_evals=10, islands=2, population_size=3))
    tasks = [eng.ask(w) for w in range(12)]
    assert sum(t is not None for t in tasks) == 10
    assert eng.ask(0) is None
    for t in tasks:
        if t is not None:
            eng.tell(ok(t))
    assert eng.done and eng.n_finished == 10 and eng.counts[EvalState.COMPLETE] == 10


def test_failures_count_and_keep_error_text_and_never_enter_population() -> None:
    eng = Engine(SPACE, EngineConfig(max_evals=6, population_size=2))
    t1, t2, t3 = eng.ask(0), eng.ask(0), eng.ask(0)
    _, e1 = eng.tell(Result(uid=t1.uid, worker=0, fitness=float("nan")))
    _, e2 = eng.tell(Result(uid=t2.uid, worker=0, fitness=None, state=EvalState.FAILED, error="boom"))
    _, e3 = eng.tell(Result(uid=t3.uid, worker=0, fitness=float("inf")))
    assert [e.state for e in (e1, e2, e3)] == [EvalState.FAILED] * 3
    assert "non-finite" in e1.error and e2.error == "boom"
    assert eng.counts[EvalState.FAILED] == 3 and not eng.islands[0].population
    # The run goes on: the next tasks come from the design/random fallback.
    assert eng.ask(0) is not None


def test_duplicate_and_unknown_results_are_no_ops() -> None:
    eng = Engine(SPACE, EngineConfig(max_evals=5))
    t = eng.ask(0)
    assert eng.tell(ok(t))[0] is TellOutcome.RECORDED
    before = (eng.n_finished, dict(eng.counts))
    assert eng.tell(ok(t)) == (TellOutcome.DUPLICATE, None)
    assert eng.tell(Result(uid=999, worker=0, fitness=1.0)) == (TellOutcome.UNKNOWN, None)
    assert (eng.n_finished, dict(eng.counts)) == before


def test_steady_state_replacement_keeps_best_and_size() -> None:
    eng = Engine(SPACE, EngineConfig(max_evals=200, population_size=4))
    fits = []
    for i in range(200):
        t = eng.ask(0)
        f = float((i * 37) % 101)
        fits.append(f)
        eng.tell(ok(t, fitness=f))
    pop = eng.islands[0].population
    assert len(pop) == 4
    assert [m.fitness for m in pop] == sorted(fits)[:4]
    assert eng.best.fitness == min(fits)


def test_task_seeds_are_a_pure_function_of_run_seed_and_uid() -> None:
    a = Engine(SPACE, EngineConfig(max_evals=5, seed=3))
    b = Engine(SPACE, EngineConfig(max_evals=5, seed=3))
    ta, tb = a.ask(0), b.ask(0)
    assert ta.seed == tb.seed == task_seed(3, 0)
    assert np.array_equal(ta.genome, tb.genome) and ta.params == tb.params
    assert task_seed(3, 0) != task_seed(4, 0)


def test_migration_copies_best_to_ring_neighbour() -> None:
    eng = Engine(SPACE, EngineConfig(max_evals=60, islands=3, population_size=4,
                                     migration_interval=5, migrants=1))
    evaluated_on = {}
    for _ in range(60):
        for w in range(3):
            t = eng.ask(w)
            if t is not None:
                evaluated_on[t.uid] = t.island
                eng.tell(ok(t))
    migs = eng.drain_migrations()
    assert migs, "no migration happened"
    assert {(m.origin, m.destination) for m in migs} <= {(0, 1), (1, 2), (2, 0)}
    # A migrant that entered its destination sits there, remembering where it was evaluated.
    for m in migs:
        if m.accepted:
            dest = eng.islands[m.destination].population
            found = [ind for ind in dest if ind.uid == m.uid]
            if found:
                assert found[0].island == m.destination
                assert found[0].origin_island == evaluated_on[m.uid]


def test_topology_matrix_is_respected() -> None:
    topo = ((0, 0, 1), (0, 0, 1), (0, 0, 0))
    eng = Engine(SPACE, EngineConfig(max_evals=60, islands=3, population_size=3,
                                     migration_interval=3, topology=topo))
    for _ in range(40):
        for w in range(3):
            t = eng.ask(w)
            if t is not None:
                eng.tell(ok(t))
    pairs = {(m.origin, m.destination) for m in eng.drain_migrations()}
    assert pairs and pairs <= {(0, 2), (1, 2)}


def test_sync_mode_has_a_generation_barrier() -> None:
    eng = Engine(SPACE, EngineConfig(max_evals=40, population_size=4, sync=True))
    gen = [eng.ask(w) for w in range(4)]
    assert all(t is not None for t in gen)
    assert eng.ask(4) is None, "a fifth task must wait for the generation"
    for t in gen[:3]:
        eng.tell(ok(t))
    assert eng.ask(0) is None, "still waiting for the slowest individual"
    eng.tell(ok(gen[3]))
    assert eng.ask(0) is not None
    assert len(eng.islands[0].population) == 4


def test_async_mode_never_waits() -> None:
    eng = Engine(SPACE, EngineConfig(max_evals=40, population_size=4))
    tasks = [eng.ask(w) for w in range(4)]
    eng.tell(ok(tasks[0]))
    assert eng.ask(0) is not None


def test_state_round_trip_continues_identically() -> None:
    cfg = EngineConfig(max_evals=60, islands=2, population_size=4)

    def drive(eng: Engine, n: int) -> list[tuple]:
        out = []
        for i in range(n):
            t = eng.ask(i % 2)
            out.append((t.uid, tuple(t.genome), t.seed))
            eng.tell(ok(t, worker=i % 2))
        return out

    a = Engine(SPACE, cfg)
    drive(a, 20)
    b = Engine.from_state(SPACE, cfg, a.get_state())
    # The configurations issued are rebuilt from the task log on resume, not snapshotted.
    b.dedupe.registry.keys |= a.dedupe.registry.keys
    assert drive(a, 30) == drive(b, 30)


def test_restore_reissues_in_flight_with_same_params_and_seed() -> None:
    cfg = EngineConfig(max_evals=10, population_size=2)
    a = Engine(SPACE, cfg)
    t1, t2 = a.ask(0), a.ask(0)
    a.tell(ok(t1))
    b = Engine.from_state(SPACE, cfg, a.get_state())
    assert not b.in_flight and len(b.pending) == 1
    again = b.ask(5)
    assert again.uid == t2.uid and again.seed == t2.seed and again.params == t2.params
    assert b.tell(ok(again))[0] is TellOutcome.RECORDED
    assert b.n_finished == 2


class EngineMachine(RuleBasedStateMachine):
    """Random asks, completions, failures, duplicates, out-of-order results and restores."""

    issued = Bundle("issued")

    def __init__(self) -> None:
        super().__init__()
        self.cfg = EngineConfig(max_evals=25, islands=2, population_size=3, migration_interval=3)
        self.eng = Engine(SPACE, self.cfg)
        self.running: dict[int, tuple] = {}
        self.finished: dict[int, EvalState] = {}
        self.fitness: dict[int, float] = {}
        self.to_reissue: dict[int, tuple] = {}

    @rule(target=issued, worker=st.integers(0, 5))
    def ask(self, worker: int):
        t = self.eng.ask(worker)
        if t is None:
            assert (self.eng.budget_left <= 0 and not self.eng.pending) or self.eng.stopping
            return -1
        key = (tuple(t.genome), t.seed)
        if t.uid in self.to_reissue:
            assert self.to_reissue.pop(t.uid) == key, "a re-issued task changed"
        else:
            assert t.uid not in self.finished and t.uid not in self.running, "uid issued twice"
        self.running[t.uid] = key
        return t.uid

    @rule(uid=consumes(issued), outcome=st.sampled_from(["ok", "nan", "error", "pruned"]),
          value=st.floats(0, 100))
    def tell(self, uid: int, outcome: str, value: float) -> None:
        if uid not in self.running:
            return
        if outcome == "ok":
            r = Result(uid=uid, worker=0, fitness=value)
        elif outcome == "nan":
            r = Result(uid=uid, worker=0, fitness=float("nan"))
        elif outcome == "error":
            r = Result(uid=uid, worker=0, fitness=None, state=EvalState.FAILED, error="x")
        else:
            r = Result(uid=uid, worker=0, fitness=None, state=EvalState.PRUNED)
        result, ev = self.eng.tell(r)
        assert result is TellOutcome.RECORDED
        del self.running[uid]
        self.finished[uid] = ev.state
        if ev.state is EvalState.COMPLETE:
            self.fitness[uid] = value

    @precondition(lambda self: bool(self.finished))
    @rule(data=st.data())
    def duplicate(self, data) -> None:
        uid = data.draw(st.sampled_from(sorted(self.finished)))
        n = self.eng.n_finished
        assert self.eng.tell(Result(uid=uid, worker=1, fitness=0.0))[0] is TellOutcome.DUPLICATE
        assert self.eng.n_finished == n

    @rule()
    def restore(self) -> None:
        self.eng = Engine.from_state(SPACE, self.cfg, self.eng.get_state())
        self.to_reissue.update(self.running)
        self.running.clear()

    @invariant()
    def nothing_lost_nothing_double(self) -> None:
        e = self.eng
        assert e.n_finished == len(self.finished)
        assert sum(e.counts.values()) == len(self.finished)
        assert set(e.in_flight) == set(self.running)
        assert {t.uid for t in e.pending} == set(self.to_reissue)
        assert e.n_finished + len(e.in_flight) + len(e.pending) <= self.cfg.max_evals
        for isl in e.islands:
            fits = [m.fitness for m in isl.population]
            assert fits == sorted(fits) and len(fits) <= self.cfg.population_size
            for m in isl.population:
                assert self.finished.get(m.uid) is EvalState.COMPLETE
                assert m.fitness == self.fitness[m.uid]
        if self.fitness:
            assert e.best is not None and e.best.fitness == min(self.fitness.values())


TestEngineStateful = EngineMachine.TestCase
TestEngineStateful.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
