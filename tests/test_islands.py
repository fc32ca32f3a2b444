"""Islands shared by all workers, fewer islands on --resume --force, and poison tasks."""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path

import numpy as np
import zarr

from evo_engine.search.engine import Engine, EngineConfig
from evo_engine.search.messages import EvalState, Result
from evo_engine.space import Float, Int, Space
from evo_engine.store.replay import POISON_ERROR, rebuild_engine
from evo_engine.store.runstore import RunStore
from evo_engine.store.writer import Recorder

SPACE = Space(x=Float(-1.0, 1.0), y=Float(-1.0, 1.0), n=Int(1, 6))


def done(task, worker: int = 0) -> Result:
    return Result(uid=task.uid, worker=worker, fitness=float(np.sum((task.genome - 0.4) ** 2)))


def run_out_of_order(eng: Engine, workers: int, seed: int = 0) -> dict[int, int]:
    """Keep ``workers`` busy, finish a random one each time; returns worker → evaluations."""
    rng = np.random.default_rng(seed)
    busy: dict[int, object] = {}
    per_worker: Counter[int] = Counter()
    while True:
        for w in range(workers):
            if w not in busy:
                t = eng.ask(w)
                if t is not None:
                    busy[w] = t
        if not busy:
            return dict(per_worker)
        w = list(busy)[int(rng.integers(len(busy)))]
        eng.tell(done(busy.pop(w), w))
        per_worker[w] += 1


def test_more_islands_than_workers_all_run_and_exchange_migrants() -> None:
    eng = Engine(SPACE, EngineConfig(max_evals=200, islands=4, population_size=5,
                                     migration_interval=5))
    run_out_of_order(eng, workers=2)
    per_island = [isl.completed for isl in eng.islands]
    assert sum(per_island) == 200
    assert min(per_island) >= 45, per_island  # about 50 each, whatever the completion order
    migrations = eng.drain_migrations()
    assert {m.origin for m in migrations} == {0, 1, 2, 3}
    assert {(m.origin, m.destination) for m in migrations} == {(0, 1), (1, 2), (2, 3), (3, 0)}
    # Every island bred offspring from its own population, not only design points.
    for isl in eng.islands:
        assert isl.issued > eng.config.population_size


def test_more_workers_than_islands_share_the_load_evenly() -> None:
    eng = Engine(SPACE, EngineConfig(max_evals=100, islands=2, population_size=4))
    tasks = [eng.ask(w) for w in range(6)]
    assert Counter(t.island for t in tasks) == {0: 3, 1: 3}
    eng.tell(done(tasks[0]))  # island 0 now has 2 in flight: the next task goes there
    assert eng.ask(0).island == tasks[0].island


def test_island_choice_does_not_depend_on_the_worker() -> None:
    eng = Engine(SPACE, EngineConfig(max_evals=60, islands=3, population_size=3))
    run_out_of_order(Engine(SPACE, eng.config), 2)
    for _ in range(20):
        a, b = copy.deepcopy(eng), copy.deepcopy(eng)
        ta, tb = a.ask(0), b.ask(17)
        assert ta.island == tb.island and np.array_equal(ta.genome, tb.genome)
        eng.tell(done(eng.ask(5)))


def test_sync_mode_with_more_islands_than_workers_closes_every_generation() -> None:
    eng = Engine(SPACE, EngineConfig(max_evals=90, islands=3, population_size=3, sync=True,
                                     migration_interval=3))
    run_out_of_order(eng, workers=2, seed=4)
    assert eng.n_finished == 90
    assert [isl.completed for isl in eng.islands] == [30, 30, 30]
    assert {m.origin for m in eng.drain_migrations()} == {0, 1, 2}


def test_fewer_islands_on_restore_merge_members_and_rehome_tasks() -> None:
    four = EngineConfig(max_evals=120, islands=4, population_size=4)
    eng = Engine(SPACE, four)
    tasks = []
    for _ in range(40):
        tasks.append(eng.ask(0))
        if len(tasks) > 3:
            eng.tell(done(tasks.pop(0)))
    state = eng.get_state()
    in_flight = sorted(eng.in_flight)
    members = {m.uid: m.fitness for isl in eng.islands for m in isl.population}
    two = EngineConfig(max_evals=120, islands=2, population_size=4)
    merged = Engine.from_state(SPACE, two, state)
    assert len(merged.islands) == 2
    assert sorted(t.uid for t in merged.pending) == in_flight
    assert all(t.island < 2 for t in merged.pending)
    # The best members of islands 2 and 3 survive in islands 0 and 1 respectively.
    for k in (2, 3):
        best = eng.islands[k].best
        assert any(m.uid == best.uid for m in merged.islands[k % 2].population)
    assert all(m.uid in members for isl in merged.islands for m in isl.population)
    run_out_of_order(merged, workers=3)
    assert merged.n_finished == 120 and not merged.pending


def _store(tmp_path: Path) -> RunStore:
    return RunStore.create(tmp_path, attrs={"max_evals": 20}, dim=SPACE.dim,
                           param_kinds={n: p.kind for n, p in SPACE.items()})


def _record_a_run(tmp_path: Path, cfg: EngineConfig, in_flight: int, results: int) -> list:
    """Drive an engine through the real recorder: ``results`` told one by one, each answered by
    a new task, ``in_flight`` tasks out at any time; returns the tasks still out."""
    rec = Recorder(_store(tmp_path), SPACE, background=False)
    eng = Engine(SPACE, cfg)
    busy = [eng.ask() for _ in range(in_flight)]
    for t in busy:
        rec.record_task(t)
    for _ in range(results):
        _, ev = eng.tell(done(busy.pop(0)))
        rec.record(ev)
        busy.append(eng.ask())
        rec.record_task(busy[-1])
    rec.close()
    return busy


def test_fewer_islands_through_the_store_with_tasks_after_the_snapshot(tmp_path: Path) -> None:
    cfg = EngineConfig(max_evals=60, islands=3, population_size=3)
    store = _store(tmp_path)
    rec = Recorder(store, SPACE, background=False)
    eng = Engine(SPACE, cfg)
    busy = []
    for i in range(30):
        while len(busy) < 4:
            busy.append(eng.ask())
            rec.record_task(busy[-1])
        _, ev = eng.tell(done(busy.pop(i % len(busy))))
        rec.record(ev)
        if i == 12:
            rec.snapshot(eng.get_state())
    rec.close()  # a kill -9 here: tasks and results since the snapshot are replayed
    warnings: list[str] = []
    one = EngineConfig(max_evals=60, islands=1, population_size=3)
    resumed, _ = rebuild_engine(RunStore.open(tmp_path), SPACE, one, warnings.append)
    assert any("had 3 islands and continues with 1" in w for w in warnings)
    assert resumed.n_finished == 30 and sorted(t.uid for t in resumed.pending) == sorted(
        t.uid for t in busy)
    assert all(t.island == 0 for t in resumed.pending)
    run_out_of_order(resumed, workers=2)
    assert resumed.n_finished == 60


def _crash_with(tmp_path: Path, issue_again: int) -> tuple[RunStore, Engine]:
    """Resume the run in ``tmp_path`` after a crash, re-issue ``issue_again`` tasks, crash."""
    cfg = EngineConfig(max_evals=20, population_size=3)
    store = RunStore.open(tmp_path)
    eng, _ = rebuild_engine(store, SPACE, cfg, lambda m: None)
    # As open_for_resume: the run is running again, as the next job (whose crash counts anew).
    store.set_attrs(status="running", jobs=int(store.attrs.get("jobs", 1)) + 1)
    rec = Recorder(store, SPACE, background=False)
    for _ in range(issue_again):
        rec.record_task(eng.ask())
    rec.close()
    return store, eng


def test_a_task_in_flight_at_two_crashes_is_failed_not_issued_again(tmp_path: Path) -> None:
    cfg = EngineConfig(max_evals=20, population_size=3)
    store = _store(tmp_path)
    rec = Recorder(store, SPACE, background=False)
    eng = Engine(SPACE, cfg)
    t0, t1, t2 = eng.ask(), eng.ask(), eng.ask()
    for t in (t0, t1, t2):
        rec.record_task(t)
    _, ev = eng.tell(done(t1))
    rec.record(ev)
    rec.close()
    # Crash 1 with uids 0 and 2 in flight. The next job re-issues only uid 0 (one worker)
    # and crashes too: uid 0 was in flight at two crashes, uid 2 only at one.
    store, eng = _crash_with(tmp_path, issue_again=1)
    assert [t.uid for t in eng.pending] == [2]
    warnings: list[str] = []
    resumed, _ = rebuild_engine(RunStore.open(tmp_path), SPACE, cfg, warnings.append)
    assert [t.uid for t in resumed.pending] == [2], "uid 0 must not be issued again"
    log = RunStore.open(tmp_path).evaluations
    assert log.read("uid").tolist() == [1, 0]
    assert log.read("state").tolist() == [EvalState.COMPLETE, EvalState.FAILED]
    assert log.read("error").tolist()[1] == POISON_ERROR.format(n=2)
    assert POISON_ERROR.format(n=2) == "worker died while evaluating (in flight at 2 crashes)"
    assert resumed.n_finished == 2 and resumed.counts[EvalState.FAILED] == 1
    assert any("uid 0" in w and "FAILED" in w for w in warnings)


def test_a_clean_stop_does_not_count_as_a_crash(tmp_path: Path) -> None:
    cfg = EngineConfig(max_evals=20, population_size=3)
    store = _store(tmp_path)
    rec = Recorder(store, SPACE, background=False)
    eng = Engine(SPACE, cfg)
    rec.record_task(eng.ask())
    rec.snapshot(eng.get_state())
    rec.close()
    for _ in range(3):  # stopped by a signal three times with uid 0 running each time
        store.close("stopped", "signal:SIGTERM")
        store, eng = _crash_with(tmp_path, issue_again=1)
        store.close("stopped", "signal:SIGTERM")
    resumed, _ = rebuild_engine(RunStore.open(tmp_path), SPACE, cfg, lambda m: None)
    assert [t.uid for t in resumed.pending] == [0]
    assert RunStore.open(tmp_path).evaluations.committed == 0


def test_a_task_log_without_told_before_resumes_approximately(tmp_path: Path) -> None:
    """Stores written before exact replay: re-asked in uid order, with one warning."""
    cfg = EngineConfig(max_evals=30, islands=2, population_size=3)
    busy = _record_a_run(tmp_path, cfg, in_flight=3, results=12)
    told = zarr.open_array(str(tmp_path / "run.zarr" / "tasks" / "told_before"), mode="r+")
    # The store keeps every chunk (a missing one is damage): -1 is the fill value, so write it.
    told.with_config({"write_empty_chunks": True})[:] = -1
    warnings: list[str] = []
    resumed, _ = rebuild_engine(RunStore.open(tmp_path), SPACE, cfg, warnings.append)
    assert len(warnings) == 1 and "predates exact replay" in warnings[0]
    assert resumed.n_finished == 12 and resumed.next_uid == max(t.uid for t in busy) + 1
    assert sorted(t.uid for t in resumed.pending) == sorted(t.uid for t in busy)
    run_out_of_order(resumed, workers=3)
    assert resumed.n_finished == 30


def test_es_tasks_replay_without_a_mismatch_warning(tmp_path: Path) -> None:
    """An ES offspring has many parents; the task log keeps two, and that is no mismatch."""
    cfg = EngineConfig(max_evals=60, islands=1, population_size=8, operator="es")
    busy = _record_a_run(tmp_path, cfg, in_flight=2, results=30)
    assert max(len(t.parents) for t in busy) > 2  # the case: more parents than the log keeps
    warnings: list[str] = []
    resumed, _ = rebuild_engine(RunStore.open(tmp_path), SPACE, cfg, warnings.append)
    assert warnings == []
    assert sorted(t.uid for t in resumed.pending) == sorted(t.uid for t in busy)
    assert [len(t.parents) for t in resumed.pending] == [len(t.parents) for t in busy]
