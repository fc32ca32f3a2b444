"""Drive an engine as workers would, checking ``Engine.best`` against the estimate after each
result (the one source of truth: ``search.estimate`` over every value told).

Results come back in an order drawn from ``order``, every ``fail_every``-th one FAILED, and
every ``restore_every`` results the engine is rebuilt from its snapshot, with its registry
from the tasks issued so far, as a resume does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np

from evo_engine.search.engine import Engine, EngineConfig
from evo_engine.search.estimate import incumbent, summarize_groups
from evo_engine.search.keys import config_key
from evo_engine.search.messages import EvalState, Result, Task
from evo_engine.space import Space


def restore(engine: Engine, space: Space, cfg: EngineConfig, issued: Iterable[Task]) -> Engine:
    """The engine from its snapshot, its registry from the task log (as a resume does)."""
    back = Engine.from_state(space, cfg, engine.get_state())
    for t in issued:
        back.dedupe.registry.add(t.params)
    return back


def drive_checked(space: Space, cfg: EngineConfig, workers: int,
                  observe: Callable[[Task], float], order: np.random.Generator, *,
                  fail_every: int = 0, restore_every: int = 0) -> tuple[Engine, list[Task]]:
    """Run ``cfg`` on ``space`` to its end; the engine and every task issued, in uid order."""
    engine = Engine(space, cfg)
    flight: list[Task] = []
    issued: dict[int, Task] = {}
    rows: list[tuple[str, int, float]] = []
    told = 0
    while not engine.done:
        while len(flight) < workers and (t := engine.ask(0)) is not None:
            flight.append(t)
            issued.setdefault(t.uid, t)
        if not flight:
            break
        task = flight.pop(int(order.integers(len(flight))))
        told += 1
        if fail_every and told % fail_every == 0:
            engine.tell(Result(uid=task.uid, worker=0, fitness=None, state=EvalState.FAILED))
        else:
            f = observe(task)
            engine.tell(Result(uid=task.uid, worker=0, fitness=f))
            rows.append((config_key(task.params), task.uid, f))
        engine.drain_migrations()
        want = incumbent(summarize_groups(rows).values())
        if want is None:
            assert engine.best is None
        else:
            # named by its first uid, as the analysis names it
            assert engine.best is not None and engine.best.uid == want.uid
            assert math.isclose(engine.best.fitness, want.mean, rel_tol=1e-12, abs_tol=1e-15)
            assert engine.best.info["evaluations"] == want.n
        if restore_every and told % restore_every == 0:
            engine = restore(engine, space, cfg, issued.values())
            flight = []  # in flight again as pending: the engine re-issues them first
    return engine, sorted(issued.values(), key=lambda t: t.uid)
