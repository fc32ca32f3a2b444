"""Rebuilding a stopped or crashed run's engine from its store: snapshot + exact replay.

The latest complete snapshot holds the engine as it was after its first ``log_position``
results. Replay then follows uid order: before re-creating task ``u`` the engine is told
every logged result with log index below ``u``'s ``told_before`` (results in log order), and
is *asked again*, so generators, design queues, island choice, the sync barrier and
migrations advance exactly as in the uninterrupted run. A re-asked task that differs from
the logged one (a scenario changed under --force) is a warning, and the logged task wins.
Tasks still in flight at the end are queued to be issued again with the same parameters
and seed. Task rows that claim more results than the log holds (a kill between writing the
task and the result tables) were issued after results the crash lost: they are dropped, as
if never issued, and replay re-creates them when the engine reaches that state again.

Poison tasks: a task in flight when a job crashed (status still "running") counts one
crash; at ``POISON_CRASHES`` it is recorded FAILED instead of being issued again, so a task
that kills its worker (and with it an MPI job) cannot stop a run forever. "In flight" is
what the crashed job's task log and its dispatch journal (``evo_engine.store.journal``) say: a
task that killed the job before its row was flushed is known from the journal only. Such a
task is re-created by the replayed engine later, with the same uid; at ``POISON_CRASHES``
its uid goes into ``Engine.poisoned`` and it is recorded FAILED as it is issued.
Every uid with a count is a *suspect*: the next job sends suspects one at a time
(``job/coordinator.py``), so a healthy task that ran beside a killer is not in flight at the
killer's next crash and is never failed with it. Any ``kill -9`` of a whole job (an OOM kill,
``scancel -s KILL``, a lost node) counts as a crash; sending one suspect at a time bounds
what two such kills can fail to that one suspect (and the new tasks beside it count one).

The replayed results carry their intermediate reports from the ``curves`` table, so a pruner's
rung values recorded after the snapshot are restored too. Evaluations in flight at the stop
start again from step 0 (unless the objective itself resumes from a checkpoint it kept in its
scratch directory), and report their rungs again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from evo_engine.search.dedupe import register_logged_tasks
from evo_engine.search.engine import Engine, EngineConfig, Evaluation, Migration, TellOutcome
from evo_engine.search.keys import genome_digest
from evo_engine.search.messages import EvalState, Result, Task, frozen_genome
from evo_engine.space import Space
from evo_engine.store.journal import unfinished
from evo_engine.store.runstore import RunStore
from evo_engine.store.writer import Recorder


def fingerprint_diff(stored: Mapping[str, Any], current: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Human-readable differences between two fingerprint descriptions."""
    out: list[str] = []
    for key in sorted(set(stored) | set(current)):
        a, b = stored.get(key, "<absent>"), current.get(key, "<absent>")
        name = f"{prefix}{key}"
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out.extend(fingerprint_diff(a, b, prefix=f"{name}."))
        elif a != b:
            out.append(f"{name}: run has {a!r}, scenario has {b!r}")
    return out


POISON_CRASHES = 2
POISON_ERROR = "worker died while evaluating (in flight at {n} crashes)"


def _task_from_row(space: Space, uid: int, island: int, seed: int, operator: str,
                   parents: np.ndarray, genome: np.ndarray, info: str, reeval: int,
                   told_before: int, pbt_parent: int = -1, step: int = -1) -> Task:
    g = frozen_genome(genome)
    info_d = {k: np.asarray(v) if isinstance(v, list) else v
              for k, v in (json.loads(info) if info else {}).items()}
    return Task(uid=uid, island=island, genome=g, params=space.decode(g), seed=seed,
                operator=operator, parents=tuple(int(p) for p in parents if p >= 0),
                info=info_d, reevaluation_of=reeval, told_before=told_before,
                pbt_parent=pbt_parent, step=step)


_TASK_COLUMNS = ("uid", "island", "seed", "operator", "parents", "genome", "info",
                 "reevaluation_of", "told_before")


def _task_rows_since(store: RunStore, space: Space, start: int) -> list[Task]:
    """The task log from row ``start`` on, in row order (a re-issued task appears again)."""
    t = store.tasks
    n = t.committed
    if n <= start:
        return []
    cols = {c: t.column(c, start, n) for c in _TASK_COLUMNS}
    # PBT intervals (search/pbt.py): columns made with the first one; absent = not PBT.
    pbt = {c: t.column(c, start, n) if c in t.columns else np.full(n - start, -1)
           for c in ("pbt_parent", "step")}
    return [
        _task_from_row(
            space, int(cols["uid"][i]), int(cols["island"][i]), int(cols["seed"][i]),
            str(cols["operator"][i]), cols["parents"][i], cols["genome"][i], str(cols["info"][i]),
            int(cols["reevaluation_of"][i]), int(cols["told_before"][i]),
            int(pbt["pbt_parent"][i]), int(pbt["step"][i]),
        )
        for i in range(n - start)
    ]


def _cut_orphan_curves(store: RunStore) -> None:
    """Drop curve rows written just before a crash for evaluations that were not committed."""
    curves = store.curves
    if curves is None or curves.committed == 0:
        return
    done = set(store.evaluations.read("uid").tolist())
    uids = curves.read("uid")
    keep = len(uids)
    while keep > 0 and int(uids[keep - 1]) not in done:
        keep -= 1
    curves.truncate(keep)


def _curves_of(store: RunStore, uids: set[int]) -> dict[int, tuple[tuple[int, float], ...]]:
    curves = store.curves
    if curves is None or not uids:
        return {}
    uid, step, value = curves.read("uid"), curves.read("step"), curves.read("value")
    out: dict[int, list[tuple[int, float]]] = {}
    for i in np.flatnonzero(np.isin(uid, list(uids))):
        out.setdefault(int(uid[i]), []).append((int(step[i]), float(value[i])))
    return {u: tuple(points) for u, points in out.items()}


def _curves_before(store: RunStore, position: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The curves rows of the evaluations in the first ``position`` rows of the log."""
    curves = store.curves
    if curves is None or curves.committed == 0 or position == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    uid = curves.read("uid")
    keep = np.isin(uid, store.evaluations.read("uid", position))
    return uid[keep], curves.read("step")[keep], curves.read("value")[keep]


def _results_since(store: RunStore, start: int) -> list[Result]:
    ev = store.evaluations
    n = ev.committed
    if n <= start:
        return []
    metric_names = list(store.root.attrs.get("metric_names", []))
    cols = {c: ev.column(c, start, n) for c in
            ("uid", "worker", "fitness", "state", "error", "t_start", "t_end")}
    metrics = {m: ev.column(f"metrics/{m}", start, n) for m in metric_names}
    curves = _curves_of(store, {int(u) for u in cols["uid"]})
    out = []
    for i in range(n - start):
        state = EvalState(int(cols["state"][i]))
        fitness = float(cols["fitness"][i])
        out.append(Result(
            uid=int(cols["uid"][i]), worker=int(cols["worker"][i]),
            fitness=fitness if state is EvalState.COMPLETE else None,
            metrics={m: float(v[i]) for m, v in metrics.items() if np.isfinite(v[i])},
            error=str(cols["error"][i]) or None, t_start=float(cols["t_start"][i]),
            t_end=float(cols["t_end"][i]), state=state, curve=curves.get(int(cols["uid"][i]), ()),
        ))
    return out


def rebuild_engine(
    store: RunStore, space: Space, config: EngineConfig, warn: Callable[[str], None],
    poison_after: int = POISON_CRASHES,
) -> tuple[Engine, list[Migration]]:
    """The engine as the store says it was, plus the migrations its replay re-created.

    ``poison_after`` crashes in flight make a task FAILED (0 = never); those FAILED rows are
    written to the store here, before the caller's recorder starts.
    """
    crashed = store.attrs.get("status") == "running"
    snap = store.latest_snapshot(warn)
    if snap is None:
        engine, log_pos, mig_pos, task_pos = Engine(space, config), 0, 0, 0
    else:
        engine = Engine.from_state(space, config, snap["engine"])
        log_pos, mig_pos, task_pos = (snap["log_position"], snap["migrations_position"],
                                      snap["tasks_position"])
        old = len(snap["engine"]["islands"])
        if old > config.islands:
            warn(f"the run had {old} islands and continues with {config.islands}: the members "
                 f"and tasks of island k >= {config.islands} move to island k mod {config.islands}")
    if engine.pruner is not None and engine.pruner.needs_rebuild:
        # Rung values of evaluations finished before the snapshot (not in snapshots).
        engine.pruner.rebuild(*_curves_before(store, log_pos))
    # Configurations issued before the snapshot are never issued again (not in snapshots).
    register_logged_tasks(engine.dedupe, store.tasks, below_uid=engine.next_uid)
    # Migrations after the snapshot are re-created by replaying the results that caused them.
    store.migrations.truncate(mig_pos)
    _cut_orphan_curves(store)
    results = _results_since(store, log_pos)
    logged = log_pos + len(results)
    rows = _task_rows_since(store, space, task_pos)
    lost = next((i for i, t in enumerate(rows) if t.told_before > logged), None)
    if lost is not None:
        # Issued after results the crash lost: never recorded as far as the run can know.
        store.tasks.truncate(task_pos + lost)
        rows = rows[:lost]
    first_row: dict[int, Task] = {}
    for t in rows:
        first_row.setdefault(t.uid, t)  # a task re-issued by a later job is logged again
    engine.begin_replay()
    new = sorted(u for u in first_row if u >= engine.next_uid)
    legacy = any(first_row[u].told_before < 0 for u in new)
    if legacy:
        warn("the task log predates exact replay (no told_before): tasks issued since the last "
             "snapshot are re-created in uid order before its results are told")
    told = 0

    def tell_until(position: int) -> None:
        nonlocal told
        while told < len(results) and log_pos + told < position:
            result = results[told]
            told += 1
            outcome, _ = engine.tell(result)
            if outcome is not TellOutcome.RECORDED:
                warn(f"log row for uid {result.uid} has no matching task; skipped")

    mismatches: list[str] = []
    for uid in new:
        task = engine.rehome(first_row[uid])
        tell_until(task.told_before)
        _, problem = engine.replay_task(task)
        if problem is not None:
            mismatches.append(problem)
    tell_until(logged)
    if mismatches and not legacy:
        shown = "; ".join(mismatches[:3]) + (f"; and {len(mismatches) - 3} more"
                                             if len(mismatches) > 3 else "")
        warn(f"replay re-created {len(mismatches)} of {len(new)} tasks differently ({shown})")
    job = int(store.attrs.get("jobs", 1))
    poisoned, counts, digests = _poison(store, engine, crashed, poison_after, job)
    engine.end_replay()
    if poisoned:
        rec = Recorder(store, space, background=False)
        for ev in poisoned:
            rec.record(ev)
        rec.close()
    # Counts after the FAILED rows: a kill before them leaves the old counts and job start,
    # so the next resume counts this crash again and fails the same tasks. In the same write,
    # which job's crash they count: a kill after it and before open_for_resume raises `jobs`
    # leaves the same job's journal behind, which must not count a second time (its tasks
    # were never sent again). Rows from here on were issued by the job about to start (the
    # next resume's crash count).
    store.set_attrs(crash_counts={str(u): c for u, c in sorted(counts.items())},
                    crash_digests={str(u): d for u, d in sorted(digests.items())},
                    crash_counted_job=job, job_tasks_start=store.tasks.committed)
    if poisoned:
        warn(f"{len(poisoned)} task(s) were in flight at {poison_after} crashes and are recorded "
             f"FAILED instead of issued again: uid " + ", ".join(str(e.task.uid) for e in poisoned))
    if engine.poisoned:
        warn(f"{len(engine.poisoned)} task(s) not in the task log had been dispatched at "
             f"{poison_after} crashes: they are recorded FAILED when the run issues them again: "
             "uid " + ", ".join(str(u) for u in sorted(engine.poisoned)))
    return engine, engine.drain_migrations()


def _poison(store: RunStore, engine: Engine, crashed: bool, poison_after: int,
            job: int) -> tuple[list[Evaluation], dict[int, int], dict[int, str]]:
    """Count a crash for every task the crashed job had issued and not finished; fail the worst.

    Only tasks the crashed job dispatched count (journaled just before the send; a task still
    queued for re-issue was never running): those in its dispatch journal without a result, or for a run from
    before the journal, those in its part of the task log. A journaled uid at or beyond
    ``engine.next_uid`` never reached the log (or its row was lost with results); replay
    re-creates it with the same uid, so at ``poison_after`` crashes it goes into
    ``engine.poisoned`` (FAILED when issued, if its genome digest is the journaled one) and
    keeps its count and digest (``crash_digests``) until its row is logged. Counts are kept
    in the ``crash_counts`` attribute, uid → crashes, for such tasks and tasks still in
    flight only; the caller stores the counts (and digests) returned. ``job`` is the crashed
    job's number (the ``jobs`` attribute, raised only after this count), whose journal lines
    are read.
    """
    def unlogged(uid: int) -> bool:
        return uid >= engine.next_uid

    counts = {int(k): int(v) for k, v in store.attrs.get("crash_counts", {}).items()}
    digests = {int(k): str(v) for k, v in store.attrs.get("crash_digests", {}).items()}
    counts = {u: c for u, c in counts.items()
              if u in engine.in_flight or (unlogged(u) and u in digests)}
    if crashed and store.attrs.get("crash_counted_job") != job:
        # (Not when this job's crash was counted already: a resume killed before its job began.)
        # The journal knows more than the task log (tasks not flushed yet, results that
        # came back but were not flushed); the log is for runs from before the journal.
        journaled = unfinished(store.path.parent, job)
        if journaled is None:
            start = int(store.attrs.get("job_tasks_start", 0))
            stop = store.tasks.committed
            logged = store.tasks.column("uid", start, stop).tolist() if stop > start else []
            journaled = {u: "" for u in logged}
        for uid, digest in journaled.items():
            if uid in engine.in_flight:
                # A count made while the uid was unlogged holds for that configuration only.
                same = uid not in digests or digests[uid] == genome_digest(
                    engine.in_flight[uid].genome)
                counts[uid] = counts.get(uid, 0) + 1 if same else 1
            elif unlogged(uid) and digest:
                # Counted against the configuration: one the engine re-creates differently
                # under this uid (replay not exact there) starts its count again.
                same = digests.get(uid) == digest
                counts[uid] = counts.get(uid, 0) + 1 if same else 1
                digests[uid] = digest
    poisoned = []
    if poison_after > 0:
        for uid in sorted(u for u, c in counts.items() if c >= poison_after):
            if unlogged(uid):
                engine.poisoned[uid] = (digests[uid], POISON_ERROR.format(n=counts[uid]))
            else:
                poisoned.append(engine.fail_in_flight(uid, POISON_ERROR.format(n=counts.pop(uid))))
    digests = {u: d for u, d in digests.items() if u in counts and unlogged(u)}
    return poisoned, counts, digests
