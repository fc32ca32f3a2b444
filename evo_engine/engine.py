"""The coordinator's logic: islands, steady-state replacement, migration, budget, in-flight table.

Pure logic. No MPI, no files, no clocks: transports call ``ask(worker)`` when a worker is
idle and ``tell(result)`` when a result arrives, in any order; the engine answers at once.
Every evaluation has one life (PENDING → RUNNING → COMPLETE | FAILED | PRUNED); a duplicate
or late result is a no-op reported as such, never a double count. With a pruner (ASHA,
``evo_engine.pruning``), ``report(uid, step, value)`` says whether an evaluation in flight
should stop early; a pruned one counts toward the budget but never joins a population.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Literal

import numpy as np

from evo_engine.island import Island
from evo_engine.operators import DESIGNS, OPERATORS
from evo_engine.operators.base import OperatorSettings
from evo_engine.pruning import ASHA, ASHAConfig
from evo_engine.records import (
    EvalState,
    Individual,
    Result,
    Task,
    check_transition,
    frozen_genome,
    jsonable,
)
from evo_engine.space import Space

STATE_FORMAT = 1


@dataclass(frozen=True)
class EngineConfig:
    """Everything that shapes the search (and therefore the run's fingerprint)."""

    max_evals: int
    islands: int = 1
    population_size: int = 8
    operator: str = "ga"
    operator_settings: dict[str, Any] = field(default_factory=dict)
    initial_design: str = "random"
    seed: int = 0
    migration_interval: int = 10
    migrants: int = 1
    topology: Literal["ring"] | tuple[tuple[int, ...], ...] = "ring"
    sync: bool = False
    pruning: ASHAConfig | None = None
    """Early stopping of evaluations that report intermediate values; None = none."""

    def __post_init__(self) -> None:
        if self.max_evals < 1:
            raise ValueError(f"max_evals must be >= 1, got {self.max_evals}")
        if self.islands < 1:
            raise ValueError(f"islands must be >= 1, got {self.islands}")
        if self.population_size < 2:
            raise ValueError(f"population_size must be >= 2, got {self.population_size}")
        if self.operator not in OPERATORS:
            raise ValueError(f"unknown operator {self.operator!r}; choose from {sorted(OPERATORS)}")
        if self.initial_design not in DESIGNS:
            raise ValueError(
                f"unknown initial_design {self.initial_design!r}; choose from {sorted(DESIGNS)}"
            )
        if self.migrants < 0 or self.migration_interval < 0:
            raise ValueError("migrants and migration_interval must be >= 0")
        if self.topology != "ring":
            m = self.topology
            if len(m) != self.islands or any(len(row) != self.islands for row in m):
                raise ValueError(f"topology must be an {self.islands}x{self.islands} matrix")
            if any(m[i][i] for i in range(self.islands)):
                raise ValueError("topology must not connect an island to itself")

    def settings(self) -> OperatorSettings:
        return OPERATORS[self.operator].Settings(**self.operator_settings)

    def describe(self) -> dict[str, Any]:
        """The search-shaping settings, JSON-serialisable, for fingerprints and snapshots."""
        return {
            "islands": self.islands,
            "population_size": self.population_size,
            "operator": self.operator,
            "operator_settings": self.settings().model_dump(mode="json"),
            "initial_design": self.initial_design,
            "seed": self.seed,
            "migration_interval": self.migration_interval,
            "migrants": self.migrants,
            "topology": self.topology if self.topology == "ring" else [list(r) for r in self.topology],
            "sync": self.sync,
            # Only present when on, so runs without a pruner keep their fingerprint.
            **({"pruner": self.pruning.describe()} if self.pruning else {}),
        }


class TellOutcome(Enum):
    RECORDED = "recorded"
    DUPLICATE = "duplicate"
    UNKNOWN = "unknown"


@dataclass(frozen=True, eq=False)
class Evaluation:
    """A finished evaluation as the store records it: the task and its final result."""

    task: Task
    result: Result
    state: EvalState
    error: str | None
    accepted: bool


@dataclass(frozen=True)
class Migration:
    uid: int
    origin: int
    destination: int
    accepted: bool
    at_eval: int


_MASK64 = (1 << 64) - 1


def task_seed(run_seed: int, uid: int) -> int:
    """The objective's seed for evaluation ``uid``: a pure function, so resumes reproduce it.

    SplitMix64's finaliser over (run seed, uid): well mixed, and ten times cheaper than a
    numpy SeedSequence, which matters at thousands of evaluations per second.
    """
    z = (run_seed * 0x9E3779B97F4A7C15 + uid * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) >> 32


class Engine:
    """Asynchronous island-model evolution over a Space (see the module docstring)."""

    def __init__(self, space: Space, config: EngineConfig) -> None:
        self.space = space
        self.config = config
        settings = config.settings()
        self.islands: list[Island] = []
        for i in range(config.islands):
            seeds = np.random.SeedSequence([config.seed, 1 + i]).spawn(3)
            op = OPERATORS[config.operator](
                space, np.random.default_rng(seeds[0]), config.population_size, settings
            )
            design = DESIGNS[config.initial_design](
                config.population_size, space.dim, np.random.default_rng(seeds[1])
            )
            self.islands.append(
                Island(i, op, config.population_size, design, np.random.default_rng(seeds[2]),
                       design_name=config.initial_design)
            )
        self.max_evals = config.max_evals
        self.next_uid = 0
        self.n_finished = 0
        self.counts = {s: 0 for s in (EvalState.COMPLETE, EvalState.FAILED, EvalState.PRUNED)}
        self.in_flight: dict[int, Task] = {}
        self.pending: deque[Task] = deque()
        """Tasks to issue again before new ones (in flight when a previous job stopped)."""
        self.stopping = False
        self.migrations: list[Migration] = []
        self._sync_issued = [0] * config.islands
        self._sync_buffer: list[list[Individual]] = [[] for _ in range(config.islands)]
        self._neighbours = self._make_neighbours()
        self.best: Individual | None = None
        self.pruner = ASHA(config.pruning) if config.pruning else None

    # -- asking -----------------------------------------------------------------------

    def _make_neighbours(self) -> list[list[int]]:
        n = self.config.islands
        if n < 2:
            return [[] for _ in range(n)]
        if self.config.topology == "ring":
            return [[(i + 1) % n] for i in range(n)]
        return [[j for j in range(n) if self.config.topology[i][j]] for i in range(n)]

    @property
    def budget_left(self) -> int:
        """Evaluations that may still be started (not counting re-issues of pending ones)."""
        return self.max_evals - self.n_finished - len(self.in_flight) - len(self.pending)

    @property
    def done(self) -> bool:
        """Nothing is in flight and nothing more will be issued."""
        if self.in_flight:
            return False
        return self.stopping or self.n_finished >= self.max_evals

    def stop_issuing(self) -> None:
        """Issue nothing more (a signal, the walltime); results in flight are still told."""
        self.stopping = True

    def extend_budget(self, max_evals: int) -> None:
        if max_evals < self.n_finished:
            raise ValueError(
                f"max_evals {max_evals} is below the {self.n_finished} evaluations already finished"
            )
        self.max_evals = max_evals

    def home_island(self, worker: int) -> int:
        return worker % self.config.islands

    def ask(self, worker: int) -> Task | None:
        """The next task for an idle ``worker``, or None when none may start now."""
        if self.stopping:
            return None
        if self.pending:
            task = self.pending.popleft()
            self.in_flight[task.uid] = task
            return task
        if self.budget_left <= 0:
            return None
        island = self._island_for(worker)
        if island is None:
            return None
        if island.operator.wants_in_flight:  # a model-based operator (see operators/base.py)
            busy = [t.genome for t in self.in_flight.values() if t.island == island.index]
            island.operator.see_in_flight(busy)
        proposal = island.propose()
        genome = frozen_genome(proposal.genome)
        uid = self.next_uid
        self.next_uid += 1
        task = Task(
            uid=uid,
            island=island.index,
            genome=genome,
            params=self.space.decode(genome),
            seed=task_seed(self.config.seed, uid),
            operator=proposal.operator or island.operator.name,
            parents=proposal.parents,
            info=proposal.info,
        )
        self.in_flight[uid] = task
        if self.config.sync:
            self._sync_issued[island.index] += 1
        return task

    def _island_for(self, worker: int) -> Island | None:
        if not self.config.sync:
            return self.islands[self.home_island(worker)]
        # Synchronous baseline: any idle worker takes any island's remaining generation slot;
        # an island whose generation is fully issued waits for all of it (the barrier).
        n = self.config.islands
        start = self.home_island(worker)
        for k in range(n):
            i = (start + k) % n
            if self._sync_issued[i] < self.config.population_size:
                return self.islands[i]
        return None

    # -- telling ----------------------------------------------------------------------

    def report(self, uid: int, step: int, value: float) -> bool:
        """An evaluation in flight reported ``value`` after ``step`` steps: True = stop it.

        A report for an evaluation that is not in flight (finished, unknown, issued by an
        earlier job) answers True: whatever runs it is wasting its worker.
        """
        if uid not in self.in_flight:
            return True
        return self.pruner is not None and self.pruner.decide(uid, step, value)

    def tell(self, result: Result) -> tuple[TellOutcome, Evaluation | None]:
        """Record ``result``; a duplicate or unknown uid changes nothing."""
        task = self.in_flight.get(result.uid)
        if task is None:
            known = result.uid < self.next_uid
            return (TellOutcome.DUPLICATE if known else TellOutcome.UNKNOWN), None
        state, error = self._final_state(result)
        check_transition(EvalState.RUNNING, state)
        del self.in_flight[result.uid]
        self.n_finished += 1
        self.counts[state] += 1
        island = self.islands[task.island]
        accepted = False
        if self.pruner is not None:
            self.pruner.finish(task.uid, result.curve)
        if state is EvalState.PRUNED and result.curve:
            # A pruned evaluation never joins a population (its partial fitness is not
            # comparable with complete ones); an operator may still learn from it.
            step, value = result.curve[-1]
            island.operator.observe_pruned(
                Individual(uid=task.uid, genome=task.genome, fitness=float(value),
                           island=task.island, info=task.info, origin_island=task.island),
                int(step),
            )
        if state is EvalState.COMPLETE:
            assert result.fitness is not None
            ind = Individual(
                uid=task.uid, genome=task.genome, fitness=float(result.fitness),
                island=task.island, info=task.info, origin_island=task.island,
            )
            if self.best is None or ind.fitness < self.best.fitness:
                self.best = ind
            island.completed += 1
            if self.config.sync:
                self._sync_buffer[task.island].append(ind)
            else:
                accepted = island.offer(ind)
                island.operator.observe(ind, accepted)
                self._maybe_migrate(island)
        if self.config.sync:
            self._maybe_close_generation(island)
        return TellOutcome.RECORDED, Evaluation(task, result, state, error, accepted)

    @staticmethod
    def _final_state(result: Result) -> tuple[EvalState, str | None]:
        if result.state is EvalState.COMPLETE:
            if result.fitness is None or not math.isfinite(result.fitness):
                return EvalState.FAILED, result.error or f"non-finite fitness {result.fitness!r}"
            return EvalState.COMPLETE, None
        if result.state in (EvalState.FAILED, EvalState.PRUNED):
            return result.state, result.error
        raise ValueError(f"a result must be finished, got state {result.state.name}")

    def _maybe_close_generation(self, island: Island) -> None:
        i = island.index
        if self._sync_issued[i] < self.config.population_size:
            return
        if any(t.island == i for t in self.in_flight.values()):
            return
        offspring = self._sync_buffer[i]
        for ind, kept in zip(offspring, island.replace_generation(offspring)):
            island.operator.observe(ind, kept)
        self._sync_buffer[i] = []
        self._sync_issued[i] = 0
        self._maybe_migrate(island)

    def _maybe_migrate(self, island: Island) -> None:
        cfg = self.config
        if cfg.islands < 2 or cfg.migrants == 0 or cfg.migration_interval == 0:
            return
        if island.completed - island.completed_at_last_migration < cfg.migration_interval:
            return
        island.completed_at_last_migration = island.completed
        for dst in self._neighbours[island.index]:
            for ind in island.population[: cfg.migrants]:
                accepted = self.islands[dst].offer(replace(ind, island=dst))
                self.migrations.append(
                    Migration(ind.uid, island.index, dst, accepted, self.n_finished)
                )

    def adopt(self, task: Task) -> None:
        """Take back a task issued by an earlier job (resume only): it is in flight again."""
        self.pending = deque(t for t in self.pending if t.uid != task.uid)
        if task.uid >= self.next_uid:
            if self.config.sync:
                self._sync_issued[task.island] += 1
            island = self.islands[task.island]
            # Designs are deterministic from the seed: the point this task took is the next one.
            if task.operator == f"design:{island.design_name}" and island.design_queue:
                island.design_queue.popleft()
            self.next_uid = task.uid + 1
        self.in_flight[task.uid] = task
        if self.pruner is not None:
            self.pruner.restart(task.uid)

    def reissue(self, task: Task) -> None:
        """Queue a task an earlier job issued but never finished, to be issued first."""
        self.adopt(task)
        del self.in_flight[task.uid]
        self.pending.append(task)

    def drain_migrations(self) -> list[Migration]:
        out, self.migrations = self.migrations, []
        return out

    # -- state --------------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """Everything needed to continue exactly: JSON-serialisable."""
        return {
            "format": STATE_FORMAT,
            "config": self.config.describe(),
            "max_evals": self.max_evals,
            "next_uid": self.next_uid,
            "n_finished": self.n_finished,
            "counts": {s.name: n for s, n in self.counts.items()},
            "islands": [isl.get_state() for isl in self.islands],
            # Tasks in flight are issued again after a restore, so they are stored as pending.
            "pending": [_task_state(t) for t in (*self.pending, *self.in_flight.values())],
            "sync_issued": list(self._sync_issued),
            "sync_buffer": [[m.to_state() for m in buf] for buf in self._sync_buffer],
            "best": self.best.to_state() if self.best else None,
            "pruner": self.pruner.get_state() if self.pruner else None,
        }

    @classmethod
    def from_state(cls, space: Space, config: EngineConfig, state: dict[str, Any]) -> Engine:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"engine state format {state.get('format')!r} is not {STATE_FORMAT}")
        eng = cls(space, config)
        eng.max_evals = int(state["max_evals"])
        eng.next_uid = int(state["next_uid"])
        eng.n_finished = int(state["n_finished"])
        eng.counts = {EvalState[k]: int(v) for k, v in state["counts"].items()}
        for isl, s in zip(eng.islands, state["islands"]):
            isl.set_state(s)
        eng.pending = deque(_task_from_state(space, t) for t in state["pending"])
        eng._sync_issued = [int(x) for x in state["sync_issued"]]
        eng._sync_buffer = [[Individual.from_state(m) for m in buf] for buf in state["sync_buffer"]]
        eng.best = Individual.from_state(state["best"]) if state["best"] else None
        saved = state.get("pruner")
        # A run continued with --force under other rung settings starts its rungs afresh.
        if eng.pruner is not None and saved and saved["config"] == eng.pruner.config.describe():
            eng.pruner.set_state(saved)
        return eng


def _task_state(t: Task) -> dict[str, Any]:
    return {
        "uid": t.uid, "island": t.island, "genome": t.genome.tolist(), "seed": t.seed,
        "operator": t.operator, "parents": list(t.parents), "info": jsonable(t.info),
        "reevaluation_of": t.reevaluation_of,
    }


def _task_from_state(space: Space, s: dict[str, Any]) -> Task:
    genome = frozen_genome(s["genome"])
    info = {k: np.asarray(v) if isinstance(v, list) else v for k, v in s["info"].items()}
    return Task(
        uid=int(s["uid"]), island=int(s["island"]), genome=genome, params=space.decode(genome),
        seed=int(s["seed"]), operator=s["operator"], parents=tuple(s["parents"]), info=info,
        reevaluation_of=int(s["reevaluation_of"]),
    )
