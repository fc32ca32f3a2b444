"""Exact replay: kill at any point, resume from the real store, and get the uninterrupted run.

A hypothesis state machine drives the engine and the real store writing path (RunStore +
Recorder, as ``run.py`` wires them) with several workers whose results finish in any order.
It kills the run between flushes, in the middle of a flush (after any number of table
writes: between the task and result tables, between rows and snapshot, mid-snapshot), stops
it cleanly, and resumes through ``rebuild_engine``. A shadow engine that is never
interrupted follows the same completion schedule; after every kill it is rolled back to
what the store holds (the results and tasks whose writes committed). Every task the resumed
run issues must equal the shadow's (uid, genome, seed, parents, island, operator), and the
rebuilt engine's state must equal the shadow's. The poison rule is modelled too: a task in
flight at two crashes must be recorded FAILED, not issued again.
"""

from __future__ import annotations

import copy
import functools
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)

from evo_engine.search.engine import Engine, EngineConfig
from evo_engine.search.messages import EvalState, Result, Task
from evo_engine.search.pbt import PBTConfig
from evo_engine.search.pruning import ASHAConfig
from evo_engine.space import Categorical, Float, Int, Space
from evo_engine.store.replay import POISON_ERROR, rebuild_engine
from evo_engine.store.runstore import RunStore, Table
from evo_engine.store.writer import Recorder

SPACE = Space(x=Float(1e-3, 1.0, log=True), y=Float(-1.0, 1.0), n=Int(1, 6),
              c=Categorical(["a", "b", "c"]))
BUDGET = 48
CHECKPOINT_EVERY = 5
STEPS = (1, 2, 4, 8)

# (engine config, workers): GA and ES, random/LHS/Sobol designs, islands > workers, sync, ASHA.
CONFIGS: dict[str, tuple[EngineConfig, int]] = {
    "ga": (EngineConfig(max_evals=BUDGET, population_size=4, seed=3), 3),
    "es_lhs_islands": (EngineConfig(max_evals=BUDGET, islands=3, population_size=4, operator="es",
                                    initial_design="lhs", migration_interval=3, seed=4), 2),
    "ga_sobol_islands": (EngineConfig(max_evals=BUDGET, islands=2, population_size=4,
                                      initial_design="sobol", migration_interval=2, seed=5), 3),
    "ga_sync": (EngineConfig(max_evals=BUDGET, islands=2, population_size=3, sync=True,
                             migration_interval=2, seed=6), 3),
    "ga_asha": (EngineConfig(max_evals=BUDGET, islands=2, population_size=4, seed=7,
                             pruning=ASHAConfig(eta=2, min_steps=1, max_steps=16)), 4),
    # The model hands the island over to the ES mid-run (after 6 results without a new best).
    "surrogate_handover": (EngineConfig(max_evals=BUDGET, population_size=4, seed=8,
                                        operator="surrogate",
                                        operator_settings={"handover": 6}), 3),
    # Races (intensify.py) queued by results that arrive out of order, on several workers.
    "ga_intensify": (EngineConfig(max_evals=BUDGET, population_size=4, seed=9, intensify=3), 3),
    "es_intensify_islands_repeats": (EngineConfig(max_evals=BUDGET, islands=2, population_size=4,
                                                  operator="es", migration_interval=3, seed=10,
                                                  intensify=3, repeats=1), 4),
    # PBT intervals finishing out of order: exploits (quantile 0.5), resampling, and every
    # second decision ranking the other island's members too (migration of weights).
    "pbt_islands": (EngineConfig(max_evals=BUDGET, islands=2, population_size=3, seed=11,
                                 migration_interval=2,
                                 pbt=PBTConfig(interval=2, quantile=0.5, explore="resample")), 4),
}


class Killed(BaseException):
    """The coordinator process dies here (kill -9)."""


def fitness_of(task: Task) -> float:
    # Seed noise as a training has: a re-evaluation (repeats, races) gets another value.
    noise = 0.02 * ((task.seed % 997) / 997 - 0.5)
    return float(np.sum((task.genome - 0.3) ** 2)) + noise


def same_task(a: Task, b: Task) -> bool:
    return (a.uid == b.uid and a.island == b.island and a.seed == b.seed
            and a.operator == b.operator and tuple(a.parents) == tuple(b.parents)
            and np.array_equal(a.genome, b.genome)
            and a.pbt_parent == b.pbt_parent and a.step == b.step)


def comparable_state(engine: Engine) -> dict[str, Any]:
    state = engine.get_state()
    if state["pruner"]:
        # Snapshots hold the values of evaluations in flight; compare every value too.
        assert engine.pruner is not None
        state["pruner"]["in_flight"] = [sorted(map(tuple, r))
                                        for r in state["pruner"]["in_flight"]]
        state["pruner"]["values"] = [list(r.sorted) for r in engine.pruner.rungs]
    return state


def step(method):
    """Mark the machine busy while a step runs, so teardown skips a run left half-done."""
    @functools.wraps(method)
    def wrapped(self, *args, **kw):
        self.busy = True
        method(self, *args, **kw)
        self.busy = False
    return wrapped


class ReplayMachine(RuleBasedStateMachine):
    # -- setup ---------------------------------------------------------------------------

    @initialize(name=st.sampled_from(sorted(CONFIGS)))
    def start_any(self, name: str) -> None:
        self.start(name)

    def start(self, name: str) -> None:
        self.config, self.workers = CONFIGS[name]
        self.dir = Path(tempfile.mkdtemp(prefix="evo-replay-"))
        self.store = RunStore.create(self.dir, attrs={"max_evals": BUDGET},
                                     param_kinds={n: p.kind for n, p in SPACE.items()},
                                     dim=SPACE.dim)
        self.rec = Recorder(self.store, SPACE, background=False)
        self.engine = Engine(SPACE, self.config)
        self.shadow = Engine(SPACE, self.config)
        self.history: list[tuple[tuple[int, int], Engine, int]] = []
        self.ref_migrations: list[tuple[int, int, int, bool]] = []
        """Every migration of the reference run, in order."""
        self._keep()
        self.issued: dict[int, Task] = {}
        """Every task the shadow issued (the reference), by uid."""
        self.outcomes: dict[int, EvalState] = {}
        self.since_snapshot = 0
        self.job_rows_start = 0
        self.job_handed: list[int] = []
        self.crash_counts: dict[int, int] = {}
        self.crashes = 0
        self.busy = True
        self.fill()
        self.busy = False

    def teardown(self) -> None:
        if not hasattr(self, "dir"):
            return
        try:
            if not self.busy:  # after a failed step the run is not worth finishing
                self.run_to_end()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- the run as the coordinator drives it --------------------------------------------

    ending = False
    """Set by ``run_to_end``: no kill or stop follows, so no point of the reference run is
    resumed from again and the shadow is no longer copied (the copies were a quarter of this
    test's time, most of them in the run to the end of the budget)."""

    def _keep(self) -> None:
        key = (self.shadow.n_finished, self.shadow.next_uid)
        self.ref_migrations += [(m.uid, m.origin, m.destination, m.accepted)
                                for m in self.shadow.drain_migrations()]
        if not self.ending:
            self.history.append((key, copy.deepcopy(self.shadow), len(self.ref_migrations)))

    def fill(self) -> None:
        """Give every idle worker a task (re-issues first), checking each against the shadow."""
        while len(self.engine.in_flight) < self.workers:
            task = self.engine.ask()
            if task is None:
                assert self.shadow.ask() is None, "the shadow would have issued a task here"
                return
            self.rec.record_task(task)
            self.job_handed.append(task.uid)
            if task.uid < self.shadow.next_uid:  # re-issued after a resume: in flight there
                assert task.uid in self.shadow.in_flight
                assert same_task(task, self.shadow.in_flight[task.uid])
                continue
            ref = self.shadow.ask()
            assert ref is not None, f"the resumed run issued uid {task.uid}, the reference nothing"
            assert same_task(task, ref), f"uid {task.uid}: resumed {task} != reference {ref}"
            assert task.told_before == ref.told_before
            self.issued[ref.uid] = ref
            self._keep()

    def _result(self, engine: Engine, uid: int, fail: bool) -> Result:
        task = engine.in_flight[uid]
        f = fitness_of(task)
        if fail:
            return Result(uid=uid, worker=0, fitness=None, state=EvalState.FAILED, error="boom")
        if engine.pruner is None:
            return Result(uid=uid, worker=0, fitness=f)
        curve = []
        for step in STEPS:
            value = f * (1 + 1 / step)
            curve.append((step, value))
            if engine.report(uid, step, value):
                return Result(uid=uid, worker=0, fitness=value, state=EvalState.PRUNED,
                              curve=tuple(curve))
        return Result(uid=uid, worker=0, fitness=f, curve=tuple(curve))

    @precondition(lambda self: bool(self.engine.in_flight))
    @rule(pick=st.integers(0, 7), fail=st.booleans())
    @step
    def finish(self, pick: int, fail: bool) -> None:
        """The in-flight task ranked ``pick`` (mod their number, by uid) finishes."""
        uids = sorted(self.engine.in_flight)
        uid = uids[pick % len(uids)]
        fail = fail and pick % 3 == 0
        result = self._result(self.engine, uid, fail)
        ref = self._result(self.shadow, uid, fail)
        assert result.state is ref.state and result.curve == ref.curve
        _, ev = self.engine.tell(result)
        _, ref_ev = self.shadow.tell(ref)
        assert ev is not None and ref_ev is not None
        assert ev.state is ref_ev.state and ev.accepted == ref_ev.accepted
        self.outcomes[uid] = ev.state
        n = len(self.ref_migrations)
        self._keep()
        self.rec.record(ev)
        migrations = self.engine.drain_migrations()
        assert [(m.uid, m.origin, m.destination, m.accepted) for m in migrations] == (
            self.ref_migrations[n:])
        self.rec.record_migrations(migrations)
        self.since_snapshot += 1
        if self.since_snapshot >= CHECKPOINT_EVERY:
            self.snapshot()
        self.fill()

    @rule()
    @step
    def flush(self) -> None:
        self.rec.flush()

    @rule()
    @step
    def snapshot(self) -> None:
        self.since_snapshot = 0
        self.rec.snapshot(self.engine.get_state())

    # -- stops and kills -------------------------------------------------------------------

    @rule(writes=st.none() | st.integers(0, 6))
    @step
    def kill(self, writes: int | None) -> None:
        """kill -9: nothing more is written (``writes`` table/snapshot writes of a flush still are)."""
        if writes is not None:
            self._flush_killed_after(writes)
        self.crashes += 1
        self._resume(crashed=True)

    @rule()
    @step
    def stop(self) -> None:
        """A clean stop (a signal): the stop snapshot, then the store says 'stopped'."""
        self.rec.snapshot(self.engine.get_state())
        self.rec.close()
        self.store.close("stopped", "signal:SIGTERM")
        self._resume(crashed=False)

    def _flush_killed_after(self, writes: int) -> None:
        left = [writes]
        table_append, write_snapshot = Table.append, RunStore.write_snapshot

        def counted(original):
            def call(*args, **kw):
                if left[0] <= 0:
                    raise Killed
                left[0] -= 1
                return original(*args, **kw)
            return call

        Table.append = counted(table_append)  # type: ignore[method-assign]
        RunStore.write_snapshot = counted(write_snapshot)  # type: ignore[method-assign]
        try:
            self.rec.flush()
        except Killed:
            pass
        finally:
            Table.append = table_append  # type: ignore[method-assign]
            RunStore.write_snapshot = write_snapshot  # type: ignore[method-assign]

    def _resume(self, crashed: bool) -> None:
        # What the store holds fixes the point of the reference run the resume continues from:
        # the results whose rows committed, and the tasks issued before any result was lost.
        store = RunStore.open(self.dir)
        results = store.evaluations.committed
        rows = store.tasks.committed - self.job_rows_start
        kept = [u for u in self.job_handed[:rows]
                if u not in self.issued or self.issued[u].told_before <= results]
        next_uid = max([u + 1 for u in kept] + [self._next_uid_before_job])
        key = (results, next_uid)
        index = max(i for i, (k, _, _) in enumerate(self.history) if k == key)
        self.history = self.history[: index + 1]
        self.shadow = copy.deepcopy(self.history[-1][1])
        self.ref_migrations = self.ref_migrations[: self.history[-1][2]]
        for uid in [u for u in self.issued if u >= next_uid]:
            del self.issued[uid]
        # The poison model: a task counts a crash when the crashed job had handed it out.
        in_flight = set(self.shadow.in_flight)
        self.crash_counts = {u: c for u, c in self.crash_counts.items() if u in in_flight}
        if crashed:
            for u in set(kept) & in_flight:
                self.crash_counts[u] = self.crash_counts.get(u, 0) + 1
        poisoned = sorted(u for u, c in self.crash_counts.items() if c >= 2)

        self.store = store
        self.engine, migrations = rebuild_engine(store, SPACE, self.config,
                                                 lambda m: None if "FAILED" in m else _fail(m))
        for uid in poisoned:
            _, ev = self.shadow.tell(Result(uid=uid, worker=-1, fitness=None,
                                            state=EvalState.FAILED, error="x"))
            assert ev is not None
            self.outcomes[uid] = EvalState.FAILED
            del self.crash_counts[uid]
            self._keep()
        # The migration log: rows up to the snapshot, then those the replay re-created.
        table = store.migrations
        kept_rows = list(zip(*(table.read(c).tolist()
                               for c in ("uid", "origin", "destination", "accepted"))))
        assert kept_rows + [(m.uid, m.origin, m.destination, m.accepted) for m in migrations] == (
            self.ref_migrations)
        assert comparable_state(self.engine) == comparable_state(self.shadow)
        log = self.store.evaluations
        tail = log.read("uid")[log.committed - len(poisoned):].tolist() if poisoned else []
        assert tail == poisoned
        for err in log.read("error")[log.committed - len(poisoned):]:
            assert err == POISON_ERROR.format(n=2)
        self.rec = Recorder(self.store, SPACE, background=False)
        self.rec.record_migrations(migrations)
        # As open_for_resume: the run is running again, as the next job.
        self.store.set_attrs(status="running", jobs=int(self.store.attrs.get("jobs", 1)) + 1)
        self.job_rows_start = self.store.tasks.committed
        self.job_handed = []
        self._next_uid_before_job = self.shadow.next_uid
        self.since_snapshot = 0
        self.fill()

    _next_uid_before_job = 0

    # -- the end ---------------------------------------------------------------------------

    def run_to_end(self) -> None:
        self.ending = True
        while self.engine.in_flight:
            self.finish(0, False)
        self.rec.snapshot(self.engine.get_state())
        self.rec.close()
        assert self.engine.done and self.engine.n_finished == BUDGET
        log = self.store.evaluations
        uids = log.read("uid").tolist()
        assert len(uids) == len(set(uids)) == BUDGET, "a uid twice, or one lost"
        assert set(uids) == set(range(BUDGET)) == set(self.issued)
        genomes = log.read("genome")
        by_uid = {u: genomes[i] for i, u in enumerate(uids)}
        for uid, task in self.issued.items():
            assert np.array_equal(by_uid[uid], task.genome), f"uid {uid} evaluated another genome"
        states = log.read("state").tolist()
        assert {u: EvalState(s) for u, s in zip(uids, states)} == self.outcomes
        # No genome twice, except where the uninterrupted run repeats one itself.
        ref = {g.tobytes() for g in (t.genome for t in self.issued.values())}
        assert len({g.tobytes() for g in genomes}) == len(ref)
        assert math.isclose(self.engine.best.fitness, self.shadow.best.fitness) if (
            self.engine.best and self.shadow.best) else self.engine.best is self.shadow.best


def _fail(message: str) -> None:
    raise AssertionError(f"unexpected resume warning: {message}")


def _settings(examples: int) -> settings:
    return settings(max_examples=int(os.environ.get("REPLAY_EXAMPLES", examples)),
                    stateful_step_count=30, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


ReplayMachine.TestCase.settings = _settings(12)
TestExactReplay = ReplayMachine.TestCase


def _machine_for(name: str) -> type[RuleBasedStateMachine]:
    """The machine on one configuration only, for the longer runs below."""
    class One(ReplayMachine):
        pass

    One.start_any = initialize()(lambda self: self.start(name))  # type: ignore[assignment]
    return One


@pytest.mark.slow
@pytest.mark.parametrize("part", [1, 2])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_exact_replay_per_configuration(name: str, part: int) -> None:
    # 20 examples per configuration in two independently drawn runs of 10 (hypothesis draws
    # each run at random): about the power of one run of 20 (two runs may draw one example
    # twice), in halves that pytest-xdist spreads over its workers (a run of 20 passed the
    # 280 s faulthandler timeout on the shared 2-core machine at a load average of 18).
    run_state_machine_as_test(_machine_for(name), settings=_settings(10))


def test_kill_between_the_task_and_result_writes_forgets_tasks_issued_after_lost_results() -> None:
    """The flush writes the task rows, then dies before the result rows: the tasks issued
    after those results are dropped (their workers died too) and re-created identically."""
    machine = ReplayMachine()
    machine.start("ga_sobol_islands")
    try:
        for pick in range(6):  # a snapshot after the 5th, none in the tail below
            machine.finish(pick, False)
        machine.flush()
        for pick in range(3):
            machine.finish(pick, False)
        before = machine.store.tasks.committed
        machine.kill(1)  # one table write: the task rows only
        assert machine.store.tasks.committed == before, "the 3 task rows must be dropped"
        assert machine.store.evaluations.committed == 6
        for pick in range(5):
            machine.finish(pick, False)
        machine.run_to_end()
    finally:
        shutil.rmtree(machine.dir, ignore_errors=True)


def test_replay_tells_results_in_log_order_not_by_their_clocks(tmp_path: Path) -> None:
    """MPI results carry each rank's own clock: two worker clocks 5 s apart, finishing low and
    high uids alternately, put ``t_end`` out of log order. Replay must follow the log."""
    config = EngineConfig(max_evals=20, population_size=4, seed=11)
    store = RunStore.create(tmp_path, attrs={"max_evals": 20},
                            param_kinds={n: p.kind for n, p in SPACE.items()}, dim=SPACE.dim)
    rec = Recorder(store, SPACE, background=False)
    engine = Engine(SPACE, config)
    clock = 0.0
    for turn in range(14):
        while len(engine.in_flight) < 4 and (task := engine.ask()) is not None:
            rec.record_task(task)
        uids = sorted(engine.in_flight)
        uid = uids[0] if turn % 2 == 0 else uids[-1]
        worker = turn % 2
        clock += 1.0
        t_end = clock + 5.0 * (1 - worker)  # worker 0's clock runs 5 s ahead of worker 1's
        task = engine.in_flight[uid]
        _, ev = engine.tell(Result(uid=uid, worker=worker, fitness=fitness_of(task),
                                   t_start=t_end - 0.5, t_end=t_end))
        assert ev is not None
        rec.record(ev)
    rec.close()
    store.close("stopped", "signal:SIGTERM")
    ends = store.evaluations.read("t_end").tolist()
    assert ends != sorted(ends), "the clocks must put t_end out of log order"
    warnings: list[str] = []
    rebuilt, _ = rebuild_engine(RunStore.open(tmp_path), SPACE, config, warnings.append)
    assert warnings == []
    assert comparable_state(rebuilt) == comparable_state(engine)
