"""Engine snapshots: cheap to take repeatedly, exact, never changed after they are handed over.

``get_state`` converts each task in flight and each population member once and reuses that
form in later snapshots (it runs on the coordinator's loop); these tests take snapshots
between results and hold every one against a conversion made from scratch.
"""

from __future__ import annotations

import gc
import json
import sys

import numpy as np
import pytest

from evo_engine.job.coordinator import SWITCH_INTERVAL, Coordinator
from evo_engine.search.engine import Engine, EngineConfig, _task_state
from evo_engine.search.messages import EvalState, Result, Task
from evo_engine.search.pruning import ASHAConfig
from evo_engine.space import Categorical, Float, Space
from evo_engine.transports.base import WorkerSpec
from evo_engine.transports.inline import InlineTransport

SPACE = Space(x=Float(0.0, 1.0), y=Float(1e-4, 1.0, log=True), act=Categorical(["relu", "tanh"]))
CONFIG = EngineConfig(max_evals=400, islands=2, population_size=6, operator="es",
                      migration_interval=3, repeats=1,
                      pruning=ASHAConfig(eta=2, min_steps=1, max_steps=8))


def fitness(task: Task) -> float:
    return (task.params["x"] - 0.3) ** 2 + float(np.log10(task.params["y"])) ** 2 / 16


def result(engine: Engine, task: Task) -> Result:
    """The task's result, its curve decided live by the engine's pruner."""
    f = fitness(task)
    curve = []
    for step in (1, 2, 4, 7):
        value = f * (1 + 2 / step)
        curve.append((step, value))
        if engine.report(task.uid, step, value):
            return Result(uid=task.uid, worker=0, fitness=None, state=EvalState.PRUNED,
                          curve=tuple(curve))
    return Result(uid=task.uid, worker=0, fitness=f, curve=tuple(curve))


def from_scratch(engine: Engine) -> tuple[list, list]:
    """The snapshot's tasks and populations converted now, without any reuse."""
    tasks = sorted((*engine.pending, *engine.in_flight.values()), key=lambda t: t.uid)
    return ([_task_state(t) for t in tasks],
            [[m.to_state() for m in isl.population] for isl in engine.islands])


def drive(engine: Engine, n: int, workers: int, seed: int, check: bool = False) -> list[tuple]:
    """``n`` results out of order with ``workers`` busy; the tasks issued, in order."""
    rng = np.random.default_rng(seed)
    flight = list(engine.in_flight.values())
    issued = []
    for _ in range(n):
        while len(flight) < workers and (t := engine.ask(0)) is not None:
            flight.append(t)
            issued.append((t.uid, t.island, t.genome.tobytes(), t.seed, t.operator))
        task = flight.pop(int(rng.integers(len(flight))))
        engine.tell(result(engine, task))
        engine.drain_migrations()
        if check:
            state = engine.get_state()
            tasks, populations = from_scratch(engine)
            assert state["pending"] == tasks
            assert [isl["population"] for isl in state["islands"]] == populations
    return issued


def test_repeated_snapshots_equal_a_conversion_from_scratch() -> None:
    # Re-evaluations replace members by a copy with a new mean, migrants by a copy on another
    # island: a snapshot that reused the old member's form would keep the stale values.
    engine = Engine(SPACE, CONFIG)
    drive(engine, 150, workers=7, seed=1, check=True)
    assert sum(isl.completed for isl in engine.islands) > 30
    assert any(m.info.get("evaluations", 1) > 1 for isl in engine.islands for m in isl.population)
    # Reuse is bounded by what is in flight and in the populations, not by the run's length.
    assert set(engine._task_states) == set(engine.in_flight)
    assert all(len(isl._member_states) == len(isl.population) for isl in engine.islands)


@pytest.mark.parametrize("config", [
    CONFIG,
    # Races: a challenger's and the incumbent's values grow after the snapshot that holds them
    # (the writer thread serialises a snapshot after the engine has gone on: a list shared with
    # the live record wrote values that the replay then told a second time).
    EngineConfig(max_evals=400, population_size=4, intensify=3, seed=9),
    EngineConfig(max_evals=400, islands=2, population_size=4, operator="es", intensify=3,
                 repeats=1, seed=10),
    EngineConfig(max_evals=400, population_size=4, operator="surrogate", seed=8,
                 operator_settings={"handover": 6}),
], ids=["es_asha_repeats", "ga_intensify", "es_intensify_repeats", "surrogate"])
def test_a_snapshot_never_changes_after_it_was_taken(config: EngineConfig) -> None:
    engine = Engine(SPACE, config)
    taken = []
    for seed in range(40):  # one snapshot after every few results, each held to the end
        drive(engine, 3, workers=5, seed=seed)
        state = engine.get_state()
        taken.append((state, json.dumps(state, sort_keys=True)))
    drive(engine, 80, workers=5, seed=99)
    engine.get_state()
    assert [json.dumps(s, sort_keys=True) for s, _ in taken] == [f for _, f in taken]


def test_restored_from_a_late_snapshot_issues_the_same_tasks() -> None:
    a = Engine(SPACE, CONFIG)
    for seed in range(5):  # several snapshots before the one restored: reuse is warm
        drive(a, 30, workers=7, seed=seed)
        a.get_state()
    b = Engine.from_state(SPACE, CONFIG, json.loads(json.dumps(a.get_state())))
    # Rebuilt from the logs on resume, not snapshotted: the configurations issued and the
    # rung values of finished evaluations.
    b.dedupe.registry.keys |= a.dedupe.registry.keys
    for rung_a, rung_b in zip(a.pruner.rungs, b.pruner.rungs):
        rung_b.counts.clear()  # a's values, those in flight included (b keeps its by_uid)
        rung_b.n, rung_b.cut, rung_b.below = 0, None, 0
        for value in rung_a.sorted:
            rung_b.add(value)
    # b re-issues what a had in flight; a is told those results in the same order.
    order = sorted(a.in_flight)
    for uid in order:
        again = b.ask(0)
        assert again.uid == uid and again.seed == a.in_flight[uid].seed
    for uid in order:
        a.tell(result(a, a.in_flight[uid]))
        b.tell(result(b, b.in_flight[uid]))
    assert drive(a, 60, workers=5, seed=9) == drive(b, 60, workers=5, seed=9)
    assert b.get_state() == a.get_state()


def test_coordinator_changes_the_interpreter_only_while_running() -> None:
    # A shorter GIL switch interval and the objects alive at the start frozen out of the
    # cyclic GC: both undone when the run ends (frozen objects would never be collected).
    before = sys.getswitchinterval()
    frozen_before = gc.get_freeze_count()
    seen = []
    frozen = []

    def objective(params: dict, ctx: object) -> float:
        seen.append(sys.getswitchinterval())
        frozen.append(gc.get_freeze_count())
        return float(params["x"])

    engine = Engine(SPACE, EngineConfig(max_evals=5, population_size=2))
    transport = InlineTransport(WorkerSpec(objective=objective), n_workers=1)
    transport.start()
    Coordinator(engine, transport).run()
    transport.close()
    assert seen and all(abs(s - min(before, SWITCH_INTERVAL)) < 1e-9 for s in seen)
    assert sys.getswitchinterval() == before
    assert min(frozen) > 1000 and gc.get_freeze_count() == frozen_before
