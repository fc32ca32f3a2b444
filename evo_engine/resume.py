"""Rebuilding a stopped or crashed run's engine from its store: snapshot + log tail.

The latest complete snapshot holds the engine as it was after its first ``log_position``
results. Every result recorded after it is told to the restored engine again (so it counts
once, and only once), and every task issued after it that has no result yet is queued to be
issued again with the same parameters and seed.

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

from evo_engine.dedupe import register_logged_tasks
from evo_engine.engine import Engine, EngineConfig, Migration
from evo_engine.records import EvalState, Result, Task, frozen_genome
from evo_engine.space import Space
from evo_engine.store import RunStore


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


def _task_from_row(space: Space, uid: int, island: int, seed: int, operator: str,
                   parents: np.ndarray, genome: np.ndarray, info: str, reeval: int) -> Task:
    g = frozen_genome(genome)
    info_d = {k: np.asarray(v) if isinstance(v, list) else v
              for k, v in (json.loads(info) if info else {}).items()}
    return Task(uid=uid, island=island, genome=g, params=space.decode(g), seed=seed,
                operator=operator, parents=tuple(int(p) for p in parents if p >= 0),
                info=info_d, reevaluation_of=reeval)


def _tasks_since(store: RunStore, space: Space, start: int) -> dict[int, Task]:
    t = store.tasks
    n = t.committed
    if n <= start:
        return {}
    cols = {c: t._arrays[c][start:n] for c in
            ("uid", "island", "seed", "operator", "parents", "genome", "info", "reevaluation_of")}
    return {
        int(cols["uid"][i]): _task_from_row(
            space, int(cols["uid"][i]), int(cols["island"][i]), int(cols["seed"][i]),
            str(cols["operator"][i]), cols["parents"][i], cols["genome"][i], str(cols["info"][i]),
            int(cols["reevaluation_of"][i]),
        )
        for i in range(n - start)
    }


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


def _results_since(store: RunStore, start: int) -> list[Result]:
    ev = store.evaluations
    n = ev.committed
    if n <= start:
        return []
    metric_names = list(store.root.attrs.get("metric_names", []))
    cols = {c: ev._arrays[c][start:n] for c in
            ("uid", "worker", "fitness", "state", "error", "t_start", "t_end")}
    metrics = {m: ev._arrays[f"metrics/{m}"][start:n] for m in metric_names}
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
    store: RunStore, space: Space, config: EngineConfig, warn: Callable[[str], None]
) -> tuple[Engine, list[Migration]]:
    """The engine as the store says it was, plus the migrations its replay re-created."""
    snap = store.latest_snapshot(warn)
    if snap is None:
        engine, log_pos, mig_pos, task_pos = Engine(space, config), 0, 0, 0
    else:
        engine = Engine.from_state(space, config, snap["engine"])
        log_pos, mig_pos, task_pos = (snap["log_position"], snap["migrations_position"],
                                      snap["tasks_position"])
    # Configurations issued before the snapshot are never issued again (not in snapshots).
    register_logged_tasks(engine.dedupe, store.tasks, below_uid=engine.next_uid)
    # Migrations after the snapshot are re-created by replaying the results that caused them.
    store.migrations.truncate(mig_pos)
    _cut_orphan_curves(store)
    later_tasks = _tasks_since(store, space, task_pos)
    pending = {t.uid: t for t in engine.pending}
    finished: set[int] = set()
    for result in _results_since(store, log_pos):
        task = pending.get(result.uid) or later_tasks.get(result.uid)
        if task is None or result.uid in finished:
            warn(f"log row for uid {result.uid} has no matching task; skipped")
            continue
        engine.adopt(task)
        engine.tell(result)
        finished.add(result.uid)
    for uid in sorted(later_tasks):
        if uid not in finished and uid not in engine.in_flight:
            engine.reissue(later_tasks[uid])
    return engine, engine.drain_migrations()
