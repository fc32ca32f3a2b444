"""The dispatch journal: a task that kills the job before its row is logged is still poisoned.

A job is simulated by hand: tasks are journaled as they go out, and only some of their rows
and results reach the store before the "crash" (the recorder flushes every ~0.5 s). The
resume's poison rule must count crashes from the journal, put a uid that never reached the
task log into ``Engine.poisoned`` at two crashes, and the coordinator must record that task
FAILED when the replayed engine issues it again, with the same uid and parameters.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from test_mpi import SCENARIOS, finish, needs_mpiexec, start_mpirun, store_attrs

from evo_engine.job.coordinator import Coordinator, StopRequest
from evo_engine.job.run import RunOptions, plan_run
from evo_engine.search.engine import Engine, EngineConfig
from evo_engine.search.keys import genome_digest
from evo_engine.search.messages import EvalState, Result, Task
from evo_engine.space import Float, Space
from evo_engine.store.journal import Journal, journal_path, unfinished
from evo_engine.store.replay import POISON_ERROR, rebuild_engine
from evo_engine.store.runstore import RunStore
from evo_engine.store.writer import Recorder
from evo_engine.transports.base import Transport, WorkerSpec
from evo_engine.transports.inline import InlineTransport

SPACE = Space(x=Float(-1.0, 1.0), y=Float(-1.0, 1.0))
CFG = EngineConfig(max_evals=12, population_size=4, seed=5)
KILLER = 4


def fitness(genome: np.ndarray) -> float:
    return float(np.sum((np.asarray(genome) - 0.25) ** 2))


def done(task: Task) -> Result:
    return Result(uid=task.uid, worker=0, fitness=fitness(task.genome))


def new_job(store: RunStore, run_dir: Path) -> Journal:
    """What open_for_resume does after rebuild_engine: the next job number; then a journal."""
    store.set_attrs(jobs=int(store.attrs.get("jobs", 1)) + 1)
    return Journal(run_dir, int(store.attrs["jobs"]))


def test_journal_reads_only_its_job_and_ignores_a_torn_line(tmp_path: Path) -> None:
    assert unfinished(tmp_path, 1) is None  # no journal: a run from before it
    j = Journal(tmp_path, 3)
    for uid in (0, 1, 2, 10):
        j.dispatched(uid, np.array([0.5, float(uid)]))
    j.finished(1)
    j.finished(10)
    j.close()
    with open(journal_path(tmp_path), "ab") as fh:
        fh.write(b"2 d 7 ab\n3 d 11 cd\n3 d 1")  # another job's line, then a kill mid-write
    digest = genome_digest(np.array([0.5, 2.0]))
    assert unfinished(tmp_path, 3) == {0: genome_digest(np.array([0.5, 0.0])), 2: digest,
                                       11: "cd"}
    assert digest != genome_digest(np.array([0.5, 2.0 + 1e-15]))  # bit-exact
    assert unfinished(tmp_path, 2) == {7: "ab"}
    assert unfinished(tmp_path, 4) is None
    assert Journal(tmp_path, 4).path.read_bytes() == b""  # a new job starts it afresh


def test_a_task_that_crashes_before_its_row_is_logged_is_failed_at_two_crashes(
        tmp_path: Path) -> None:
    store = RunStore.create(tmp_path, attrs={"max_evals": CFG.max_evals}, dim=SPACE.dim,
                            param_kinds={n: p.kind for n, p in SPACE.items()})
    # Job 1: uids 0-2 go out, 0 and 1 come back, then 3 and 4 go out. The recorder flushed
    # what came before (rows 0-2, results 0, 1; it writes a prefix of what it was handed);
    # uid 3's result came back unflushed and uid 4 (the killer) is in the journal only.
    eng = Engine(SPACE, CFG)
    rec = Recorder(store, SPACE, background=False)
    journal = Journal(tmp_path, 1)

    def issue() -> Task:
        t = eng.ask()
        journal.dispatched(t.uid, t.genome)
        return t

    tasks = [issue() for _ in range(3)]
    for t in tasks:
        rec.record_task(t)
    for t in tasks[:2]:
        _, ev = eng.tell(done(t))
        journal.finished(t.uid)
        rec.record(ev)
    rec.close()
    tasks += [issue(), issue()]
    original_killer = tasks[KILLER]
    journal.finished(3)
    journal.close()
    assert store.attrs["status"] == "running"

    # Resume 1: uid 2 (logged, in flight) and uid 4 (journal only) count a crash; uid 3
    # returned its result, so it does not.
    warnings: list[str] = []
    eng, _ = rebuild_engine(RunStore.open(tmp_path), SPACE, CFG, warnings.append)
    store = RunStore.open(tmp_path)
    assert store.attrs["crash_counts"] == {"2": 1, "4": 1}
    assert eng.poisoned == {} and [t.uid for t in eng.pending] == [2]
    assert eng.next_uid == 3  # uids 3 and 4 are re-created by the engine, not replayed

    # Job 2 re-issues 2, 3, 4 exactly as job 1 did; 2 and 3 come back, 4 kills the job
    # again before anything is flushed.
    journal = new_job(store, tmp_path)
    again = [eng.ask() for _ in range(3)]
    assert [t.uid for t in again] == [2, 3, 4]
    assert np.array_equal(again[2].genome, original_killer.genome)
    for t in again:
        journal.dispatched(t.uid, t.genome)
    journal.finished(2)
    journal.finished(3)
    journal.close()

    # Resume 2: uid 4 was handed out at two crashes and never logged: poisoned by uid.
    warnings.clear()
    eng, _ = rebuild_engine(RunStore.open(tmp_path), SPACE, CFG, warnings.append)
    store = RunStore.open(tmp_path)
    assert store.attrs["crash_counts"] == {"2": 1, "4": 2}
    assert eng.poisoned == {KILLER: (genome_digest(original_killer.genome),
                                     POISON_ERROR.format(n=2))}
    assert store.attrs["crash_digests"] == {"4": genome_digest(original_killer.genome)}
    assert any("uid 4" in w and "FAILED when the run issues them again" in w for w in warnings)

    # Job 3 is killed before it hands anything out: the count is kept, nothing is added.
    new_job(store, tmp_path).close()
    eng, _ = rebuild_engine(RunStore.open(tmp_path), SPACE, CFG, lambda m: None)
    store = RunStore.open(tmp_path)
    assert store.attrs["crash_counts"] == {"2": 1, "4": 2}
    assert list(eng.poisoned) == [KILLER]

    # Job 4 runs to the end with the real coordinator and three workers (so uid 4 is made
    # before results of 2 and 3 are in, as in job 1): uid 4 is never sent to a worker.
    journal = new_job(store, tmp_path)
    rec = Recorder(store, SPACE, background=False)
    sent: list[int] = []

    def objective(params: dict, ctx: object) -> float:
        sent.append(ctx.uid)  # type: ignore[attr-defined]
        return fitness([params["x"], params["y"]])

    transport = InlineTransport(WorkerSpec(objective=objective,
                                           scratch_root=str(tmp_path / "scratch")), 3)
    transport.start()

    def on_task(t: Task) -> None:
        journal.dispatched(t.uid, t.genome)
        rec.record_task(t)

    def on_evaluation(ev: object) -> None:
        journal.finished(ev.task.uid)  # type: ignore[attr-defined]
        rec.record(ev)  # type: ignore[arg-type]

    coord = Coordinator(eng, transport, on_task=on_task, on_evaluation=on_evaluation)
    assert coord.run() == "finished"
    rec.snapshot(eng.get_state())
    rec.close()
    journal.close()
    store.close("finished", "finished")
    assert sorted(sent) == [u for u in range(2, CFG.max_evals) if u != KILLER]
    assert coord.progress.failed == 1 and coord.progress.finished == CFG.max_evals - 2  # this job
    log = RunStore.open(tmp_path).evaluations
    uids = log.read("uid").tolist()
    assert sorted(uids) == list(range(CFG.max_evals))  # every uid once, none twice
    failed = [(u, str(e)) for u, s, e in zip(uids, log.read("state").tolist(),
                                             log.read("error").tolist(), strict=True)
              if s == EvalState.FAILED]
    assert failed == [(KILLER, "worker died while evaluating (in flight at 2 crashes)")]
    tasks_log = RunStore.open(tmp_path).tasks
    rows = [i for i, u in enumerate(tasks_log.read("uid").tolist()) if u == KILLER]
    assert len(rows) == 1  # logged once, as issued (the poisoned row replays like any)
    assert np.allclose(tasks_log.read("genome")[rows[0]], original_killer.genome)
    assert eng.poisoned == {} and eng.counts[EvalState.FAILED] == 1

    # A later resume (e.g. --max-evals raised) replays the FAILED task exactly, silently.
    warnings.clear()
    more = EngineConfig(max_evals=16, population_size=4, seed=5)
    again_eng, _ = rebuild_engine(RunStore.open(tmp_path), SPACE, more, warnings.append)
    assert warnings == [] and again_eng.poisoned == {}
    assert again_eng.n_finished == CFG.max_evals and again_eng.counts[EvalState.FAILED] == 1
    assert RunStore.open(tmp_path).attrs["crash_counts"] == {}
    assert RunStore.open(tmp_path).attrs["crash_digests"] == {}


def test_a_job_killed_before_any_flush_is_resumed_not_started_anew(tmp_path: Path) -> None:
    RunStore.create(tmp_path, attrs={"max_evals": 4}, dim=SPACE.dim,
                    param_kinds={n: p.kind for n, p in SPACE.items()})
    opts = RunOptions(scenario=tmp_path / "s.py", run_dir=tmp_path, resume=True)
    assert not plan_run(tmp_path, opts, made_dir=False).resume  # nothing handed out: anew
    journal = Journal(tmp_path, 1)
    journal.dispatched(0, np.zeros(2))
    journal.close()
    assert plan_run(tmp_path, opts, made_dir=False).resume  # its crash must be counted


@pytest.mark.mpi
@needs_mpiexec
def test_a_task_that_kills_its_mpi_job_is_failed_on_the_resume_after_its_second_crash(
        tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = (str(SCENARIOS / "mpi_poison.py"), "--run-dir", str(run_dir), "--quiet")
    codes = [finish(start_mpirun(3, *args, cwd=tmp_path)).returncode]
    while codes[-1] != 0 and len(codes) <= 3:  # resumed up to 3 times
        done = finish(start_mpirun(3, *args, "--resume", cwd=tmp_path))
        codes.append(done.returncode)
    # Two crashes (MPICH ends the job with the dead rank's status), then the resume after
    # the second one records uid 3 FAILED instead of issuing it, and the run finishes.
    assert codes[0] != 0 and codes[1] != 0 and codes[2:] == [0], (codes, done.stderr)
    assert "at 2 crashes" in done.stderr and "uid 3" in done.stderr  # the resume's warning
    attrs = store_attrs(run_dir)
    assert attrs["status"] == "finished" and attrs["jobs"] == 3
    log = RunStore.open(run_dir).evaluations
    uids = log.read("uid").tolist()
    assert sorted(uids) == list(range(6))  # each uid once
    failed = [(u, str(e)) for u, s, e in zip(uids, log.read("state").tolist(),
                                             log.read("error").tolist(), strict=True)
              if s == EvalState.FAILED]
    assert failed == [(3, "worker died while evaluating (in flight at 2 crashes)")]


@pytest.mark.mpi
@needs_mpiexec
def test_a_long_healthy_task_beside_the_killer_is_not_failed_with_it(tmp_path: Path) -> None:
    """uid 2 sleeps 3 s and is healthy; uid 3 kills the job 0.5 s after it starts, so both are
    in flight at the first crash. The resume sends them one at a time: uid 2 finishes, then
    uid 3 crashes the job alone, and only uid 3 is failed (before, both were)."""
    run_dir = tmp_path / "run"
    env = {"LONG_UID": "2", "LONG_S": "3", "POISON_DELAY": "0.5"}
    args = (str(SCENARIOS / "mpi_poison.py"), "--run-dir", str(run_dir), "--quiet")
    codes = [finish(start_mpirun(3, *args, cwd=tmp_path, **env)).returncode]
    while codes[-1] != 0 and len(codes) <= 3:
        done = finish(start_mpirun(3, *args, "--resume", cwd=tmp_path, **env))
        codes.append(done.returncode)
    assert codes[0] != 0 and codes[1] != 0 and codes[2:] == [0], (codes, done.stderr)
    log = RunStore.open(run_dir).evaluations
    uids = log.read("uid").tolist()
    assert sorted(uids) == list(range(6))
    states = dict(zip(uids, log.read("state").tolist(), strict=True))
    assert states[2] == EvalState.COMPLETE
    assert [u for u, s in states.items() if s == EvalState.FAILED] == [3]


class _LifoTransport(Transport):
    """Answers the newest task first, so the oldest (a long suspect) finishes last; records
    how many suspects were out at each send."""

    def __init__(self, n_workers: int, suspects: set[int]) -> None:
        self.n_workers = n_workers
        self.suspects = suspects
        self.out: list[Task] = []
        self.suspects_out: list[int] = []

    def start(self) -> list:
        return []

    def submit(self, worker: int, task: Task) -> None:
        self.submit_batch(worker, [task])

    def submit_batch(self, worker: int, tasks: list[Task]) -> None:
        self.out += [replace(t, info={**t.info, "worker": worker}) for t in tasks]
        self.suspects_out.append(sum(t.uid in self.suspects for t in self.out))

    def poll(self, timeout: float) -> list[Result]:
        if not self.out:
            return []
        t = self.out.pop()
        return [Result(uid=t.uid, worker=t.info["worker"], fitness=fitness(t.genome))]

    def close(self) -> None:
        pass


@pytest.mark.parametrize("batch", [1, 2])
def test_suspects_go_out_one_at_a_time_and_the_resumed_log_replays_exactly(
        tmp_path: Path, batch: int) -> None:
    store = RunStore.create(tmp_path, attrs={"max_evals": CFG.max_evals}, dim=SPACE.dim,
                            param_kinds={n: p.kind for n, p in SPACE.items()})
    # Job 1 hands out uids 0-2 and crashes before any result.
    eng = Engine(SPACE, CFG)
    rec = Recorder(store, SPACE, background=False)
    journal = Journal(tmp_path, 1)
    for _ in range(3):
        t = eng.ask()
        journal.dispatched(t.uid, t.genome)
        rec.record_task(t)
    rec.close()
    journal.close()
    eng, _ = rebuild_engine(RunStore.open(tmp_path), SPACE, CFG, lambda m: None)
    store = RunStore.open(tmp_path)
    suspects = {int(u) for u in store.attrs["crash_counts"]}
    assert suspects == {0, 1, 2}
    # Job 2: three workers; the held suspects are journaled only when they go out.
    journal = new_job(store, tmp_path)
    rec = Recorder(store, SPACE, background=False)
    sent: list[int] = []

    def on_send(tasks: list[Task]) -> None:
        for t in tasks:
            sent.append(t.uid)
            journal.dispatched(t.uid, t.genome)

    def on_evaluation(ev: object) -> None:
        journal.finished(ev.task.uid)  # type: ignore[attr-defined]
        rec.record(ev)  # type: ignore[arg-type]

    transport = _LifoTransport(3, suspects)
    coord = Coordinator(eng, transport, on_task=rec.record_task, on_send=on_send,
                        on_evaluation=on_evaluation, suspects=suspects, batch=batch)
    assert coord.run() == "finished"
    rec.close()
    journal.close()
    store.close("finished", "finished")
    assert max(transport.suspects_out) == 1  # never two suspects out together
    assert sorted(sent) == list(range(CFG.max_evals))  # each sent (and journaled) once
    assert sent.index(2) > sent.index(3)  # new tasks ran while suspects waited
    # Replay from the log alone (no snapshot) re-creates every task exactly as issued.
    warnings: list[str] = []
    more = EngineConfig(max_evals=16, population_size=4, seed=5)
    again, _ = rebuild_engine(RunStore.open(tmp_path), SPACE, more, warnings.append)
    assert warnings == [] and again.n_finished == CFG.max_evals


def test_a_drain_does_not_start_held_back_suspects(tmp_path: Path) -> None:
    """A time limit that drains (no new work) leaves suspects not yet sent pending for the
    next job instead of starting them one by one after the limit."""
    eng = Engine(SPACE, CFG)
    for _ in range(3):
        eng.ask()
    eng.begin_replay()
    eng.end_replay()  # as after a resume: 0, 1, 2 queued to be issued again
    transport = _LifoTransport(3, {0, 1, 2})
    calls = [0]

    def drain_after_first_result() -> StopRequest | None:
        calls[0] += 1
        return StopRequest("max_time") if eng.n_finished >= 1 else None

    coord = Coordinator(eng, transport, suspects={0, 1, 2}, stop_check=drain_after_first_result)
    assert coord.run() == "max_time"
    assert sorted(t.uid for t in transport.out) == []  # everything sent has answered
    assert transport.suspects_out and max(transport.suspects_out) == 1
    assert eng.n_finished >= 1 and {1, 2} <= set(eng.in_flight)  # held back, still pending


def test_a_resume_killed_before_its_job_began_does_not_count_the_crash_twice(
        tmp_path: Path) -> None:
    """A kill between the resume's crash count and the next job's number (open_for_resume
    raises ``jobs`` after rebuild_engine wrote the counts) is not a second crash of the
    tasks the crashed job had in flight: they were never sent again."""
    store = RunStore.create(tmp_path, attrs={"max_evals": CFG.max_evals}, dim=SPACE.dim,
                            param_kinds={n: p.kind for n, p in SPACE.items()})
    eng = Engine(SPACE, CFG)
    rec = Recorder(store, SPACE, background=False)
    journal = Journal(tmp_path, 1)
    tasks = [eng.ask() for _ in range(3)]
    for t in tasks:
        journal.dispatched(t.uid, t.genome)
        rec.record_task(t)
    _, ev = eng.tell(done(tasks[0]))
    journal.finished(0)
    rec.record(ev)
    rec.close()
    journal.close()  # job 1 is killed with uids 1 and 2 in flight

    rebuild_engine(RunStore.open(tmp_path), SPACE, CFG, lambda m: None)
    assert RunStore.open(tmp_path).attrs["crash_counts"] == {"1": 1, "2": 1}
    # Killed here: before open_for_resume raised `jobs` and before a journal was opened.
    eng, _ = rebuild_engine(RunStore.open(tmp_path), SPACE, CFG, lambda m: None)
    assert RunStore.open(tmp_path).attrs["crash_counts"] == {"1": 1, "2": 1}
    assert sorted(t.uid for t in eng.pending) == [1, 2]
    assert RunStore.open(tmp_path).evaluations.committed == 1  # nothing recorded FAILED
