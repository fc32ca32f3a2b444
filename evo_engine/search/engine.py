"""The coordinator's logic: islands, steady-state replacement, migration, budget, in-flight table.

Pure logic. No MPI, no files, no clocks: transports call ``ask(worker)`` when a worker is
idle and ``tell(result)`` when a result arrives, in any order; the engine answers at once.
Every evaluation has one life (PENDING → RUNNING → COMPLETE | FAILED | PRUNED); a duplicate
or late result is a no-op reported as such, never a double count.

Islands are logical and shared by all workers: each new task goes to the island that most
needs an evaluation (fewest in flight, then fewest issued, then the lowest index), so any
island count works with any worker count, and what ``ask`` returns is a deterministic
function of the engine's state alone. That is what makes replay exact: on ``--resume`` the
engine is told the logged results and asked again in uid order (``replay_task``), so its
generators, design queues and counters advance exactly as in the uninterrupted run. With a pruner (ASHA,
``evo_engine.search.pruning``), ``report(uid, step, value)`` says whether an evaluation in flight
should stop early; a pruned one counts toward the budget but never joins a population.
"""

from __future__ import annotations

import math
import numbers
from collections import deque
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Literal

import numpy as np

from evo_engine.search.dedupe import Dedupe, Pick, exhausted_head, space_size
from evo_engine.search.estimate import Estimate
from evo_engine.search.intensify import LEFTOVER_LIMIT, RACE, RacePick, Tracker, race_seed
from evo_engine.search.island import Island
from evo_engine.search.keys import config_key, genome_digest, interval_key
from evo_engine.search.messages import (
    EvalState,
    Individual,
    Result,
    Task,
    check_transition,
    frozen_genome,
    jsonable,
)
from evo_engine.search.operators import DESIGNS, OPERATORS
from evo_engine.search.operators.base import OperatorSettings
from evo_engine.search.pareto import VIOLATION, Objectives, front_members
from evo_engine.search.pbt import PBT, PBTConfig, interval_stop
from evo_engine.search.pruning import ASHA, ASHAConfig
from evo_engine.space import Space

STATE_FORMAT = 1


COUNTS = {"max_evals": 1, "islands": 1, "population_size": 2, "seed": 0,
          "migration_interval": 0, "migrants": 0, "repeats": 0, "intensify": 0}
"""EngineConfig's whole-number fields and the least value each takes."""


def pbt_clashes(*, pruning: bool, sync: bool, repeats: int, intensify: int,
                objectives: bool) -> list[str]:
    """The engine settings PBT cannot run with, each with why and what to set instead: the
    one copy of this rule (``EngineConfig`` and ``Scenario`` both ask it)."""
    clashes = [
        (pruning, "pruner 'asha' (PBT already stops the worse members: they exploit better "
         "ones at every interval; set pruner='none')"),
        (sync, "sync (PBT has no generation barrier; set sync=False)"),
        (repeats > 0, "repeats (an interval continues a training, it cannot be evaluated "
         "again from scratch; set repeats=0)"),
        (intensify > 0, "intensify (races re-run a configuration from scratch; set "
         "intensify=0)"),
        (objectives, "objectives (an exploit copies a better member, and with several "
         "objectives there is no one better: search the front without pbt)"),
    ]
    return [why for clash, why in clashes if clash]


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
    repeats: int = 0
    """Re-evaluations of each promising configuration with fresh seeds (see dedupe.py)."""
    intensify: int = 0
    """Race length: evaluations a would-be incumbent gets, on seeds common with the incumbent,
    before it is accepted (see intensify.py); 0 or 1 = off."""
    objectives: Objectives | None = None
    """Several named objectives (and constraints): Pareto ranking (search/pareto.py); None =
    the one scalar fitness."""
    pbt: PBTConfig | None = None
    """Population-based training (see pbt.py): each task is one interval of a member's
    training; None = off."""

    def __post_init__(self) -> None:
        # Counts are whole numbers (an int or a numpy integer, stored as an int; not a bool,
        # not 2.5, not "2") at or above a least value; each message names the field and value.
        for name, least in COUNTS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ValueError(f"{name} must be a whole number, got {value!r}")
            if value < least:
                raise ValueError(f"{name} must be >= {least}, got {value!r}")
            object.__setattr__(self, name, int(value))
        if self.migrants > self.population_size:
            # The one copy of this rule: the Scenario validates by building its EngineConfig.
            raise ValueError(f"migrants ({self.migrants}) cannot exceed population_size "
                             f"({self.population_size})")
        if self.operator not in OPERATORS:
            raise ValueError(f"unknown operator {self.operator!r}; choose from {sorted(OPERATORS)}")
        if self.initial_design not in DESIGNS:
            raise ValueError(
                f"unknown initial_design {self.initial_design!r}; choose from {sorted(DESIGNS)}"
            )
        # The one copy of these rules: a Scenario checks them by building its EngineConfig.
        if self.repeats and self.sync:
            raise ValueError("repeats needs the asynchronous engine: set sync=False or repeats=0")
        if self.intensify > 1 and self.sync:
            raise ValueError("intensify needs the asynchronous engine: set sync=False or "
                             "intensify=0")
        if self.objectives is not None and (self.repeats or self.intensify > 1):
            raise ValueError("repeats and intensify estimate one noisy fitness; with several "
                             "objectives set them to 0")
        if self.pbt is not None:
            bad = pbt_clashes(pruning=self.pruning is not None, sync=self.sync,
                              repeats=self.repeats,
                              intensify=self.intensify if self.intensify > 1 else 0,  # 1: off
                              objectives=self.objectives is not None)
            if bad:
                raise ValueError("pbt cannot be combined with " + "; nor with ".join(bad))
        if (self.pbt is not None and self.population_size < self.pbt.need
                and (self.islands == 1 or self.migration_interval == 0)):
            # The one copy of this rule, as for migrants: the Scenario builds its EngineConfig.
            raise ValueError(
                f"pbt quantile {self.pbt.quantile:g} ranks a member among at least "
                f"{self.pbt.need} scores at its step, but an island has {self.population_size} "
                "members and no migration brings its neighbours': no member would ever exploit "
                f"another; raise population_size to {self.pbt.need} or quantile to "
                f"{math.ceil(1000 / self.population_size) / 1000:g} or more")
        if self.topology != "ring":
            m = self.topology
            if len(m) != self.islands or any(len(row) != self.islands for row in m):
                raise ValueError(f"topology must be a {self.islands}x{self.islands} matrix (one "
                                 "row per island)")
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
            **({"repeats": self.repeats} if self.repeats else {}),
            **({"intensify": self.intensify} if self.intensify > 1 else {}),
            **(self.objectives.describe() if self.objectives else {}),
            **({"pbt": self.pbt.describe()} if self.pbt else {}),
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
        self._task_states: dict[int, tuple[Task, dict[str, Any]]] = {}
        """uid → (task, its snapshot form) for tasks in flight: each task is converted once,
        as it starts, so ``get_state`` costs no per-task conversion (it ran on the
        coordinator's loop, 40–190 ms with 4,096 in flight). Entries leave with ``tell``."""
        self.stopping = False
        self.migrations: list[Migration] = []
        self._sync_issued = [0] * config.islands
        self._sync_buffer: list[list[Individual]] = [[] for _ in range(config.islands)]
        self._flying: list[dict[int, np.ndarray]] = [{} for _ in range(config.islands)]
        """uid → genome of each island's tasks in flight, in ``in_flight``'s order (derived;
        not stored): its sizes are the islands' loads, and a model's ask lists its island's
        without a pass over every island's (0.47 ms an ask at 4,096 workers)."""
        self._neighbours = self._make_neighbours()
        self._leftover = (not config.sync and config.pbt is None and config.objectives is None
                          and (space_size(space) or LEFTOVER_LIMIT + 1) <= LEFTOVER_LIMIT)
        """A finite space small enough to keep every configuration: once it is exhausted,
        the budget left re-evaluates the leaders if the objective is noisy (intensify.py)."""
        self.tracker = Tracker(config.intensify, keep_all=config.repeats > 0 or self._leftover)
        """Configurations and their estimates; the incumbent and the races (intensify.py)."""
        self.pruner = ASHA(config.pruning) if config.pruning else None
        self.dedupe = Dedupe(space, config.repeats, config.population_size)
        """Configurations issued so far (never issued again by accident) and re-evaluations."""
        self.warm_start: deque[np.ndarray] = deque()
        """Known configurations to issue before anything else (``add_warm_start``)."""
        self.poisoned: dict[int, tuple[str, str]] = {}
        """uid → (genome digest, error): a task to record FAILED as it is issued instead of
        handing it out, if it is that configuration again (it crashed jobs before its row
        reached the task log). Set by the resume from store attributes, never in snapshots."""
        self.poisoned_issued: list[Evaluation] = []
        """Evaluations ``ask`` failed that way; the coordinator records them (``drain_poisoned``)."""
        self.pbt = (PBT(space, config.pbt, config.islands, config.population_size, config.seed,
                        self._neighbours, config.migration_interval)
                    if config.pbt is not None else None)
        """Population-based training's members and decisions (pbt.py), or None."""

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
        exhausted = (self.dedupe.nothing_to_issue and not self.pending and not self.tracker.queue
                     and not self._leftover_wanted())
        return self.stopping or self.n_finished >= self.max_evals or exhausted

    def stop_issuing(self) -> None:
        """Issue nothing more (a signal, the walltime); results in flight are still told."""
        self.stopping = True

    def extend_budget(self, max_evals: int) -> None:
        if max_evals < self.n_finished:
            raise ValueError(
                f"max_evals {max_evals} is below the {self.n_finished} evaluations already finished"
            )
        self.max_evals = max_evals

    def ask(self, worker: int = 0) -> Task | None:
        """The next task for an idle worker, or None when none may start now.

        ``worker`` is informational only: the island is the one that most needs an
        evaluation, whoever asks, so a replay can ask again without knowing the workers.
        """
        if self.stopping:
            return None
        if self.pending:
            if self.n_finished + len(self.in_flight) >= self.max_evals:
                # A resume with a smaller budget than the stopped job's: tasks that were in
                # flight beyond it stay queued (never run, never recorded; in snapshots as
                # pending), so a later, larger --max-evals issues them first, as replay expects.
                return None
            task = self.pending.popleft()
            self._start(task)
            return task
        if self.budget_left <= 0:
            return None
        task = self._issue()
        while task is not None and task.uid in self.poisoned:
            digest, error = self.poisoned.pop(task.uid)
            if genome_digest(task.genome) != digest:
                break  # not the configuration that crashed: replay was not exact here
            self._start(task)
            self.poisoned_issued.append(self.fail_in_flight(task.uid, error))
            task = self._issue() if self.budget_left > 0 else None
        if task is not None:
            self._start(task)
        return task

    def drain_poisoned(self) -> list[Evaluation]:
        """The tasks ``ask`` recorded FAILED since the last call (see ``poisoned``), in order."""
        out, self.poisoned_issued = self.poisoned_issued, []
        return out

    def _issue(self) -> Task | None:
        """A new task, or None under the sync barrier: the one path every new task takes.

        ``ask`` and the replay on ``--resume`` (``replay_task``) both come here, so whatever
        decides a new task (island choice, designs, operators, queues) must live behind this
        method and depend only on engine state: then a replay re-creates it exactly.
        """
        if self.pbt is not None:
            return self._pbt_task()
        island = self._island_for()
        if island is None:
            return None
        return self._new_task(island)

    def _pbt_task(self) -> Task | None:
        """The next PBT interval (pbt.py), on the islands in ``_island_for``'s order."""
        assert self.pbt is not None
        load, islands = self._island_load, self.islands
        order = sorted(range(len(islands)), key=lambda i: (load[i], islands[i].issued, i))
        pick = self.pbt.next_pick(islands, order, self.n_finished, self.warm_start)
        if pick is None:
            return None
        uid = self.next_uid
        self.next_uid += 1
        self.islands[pick.island].issued += 1
        return Task(uid=uid, island=pick.island, genome=pick.genome,
                    params=self.space.decode(pick.genome), seed=task_seed(self.config.seed, uid),
                    operator=pick.operator, parents=pick.parents, info=pick.info,
                    told_before=self.n_finished, pbt_parent=pick.pbt_parent, step=pick.step)

    @property
    def _island_load(self) -> list[int]:
        """Tasks in flight per island."""
        return [len(flying) for flying in self._flying]

    def claim_pending(self, uid: int) -> bool:
        """Put the queued task ``uid`` (``pending``: in flight when the state was saved) back
        in flight as it is, for a result that arrives without its re-issue (an ask/tell user
        who still holds it). False if no such task is queued."""
        for task in self.pending:
            if task.uid == uid:
                self.pending.remove(task)
                self._start(task)
                return True
        return False

    def _start(self, task: Task) -> None:
        self.in_flight[task.uid] = task
        self._flying[task.island][task.uid] = task.genome
        cached = self._task_states.get(task.uid)
        if cached is None or cached[0] is not task:
            self._task_states[task.uid] = (task, _task_state(task))

    def _new_task(self, island: Island) -> Task | None:
        """Propose, number and count a new task on ``island`` (the one issuing path).

        None when the search space is exhausted (``dedupe``): nothing new may be issued.
        """
        if island.operator.wants_in_flight:  # a model-based operator (see operators/base.py)
            island.operator.see_in_flight(list(self._flying[island.index].values()))
        pick = (self._warm_pick(island) or self._race_pick()
                or self.dedupe.next_pick(island, self.islands) or self._leftover_pick())
        if pick is None:
            return None
        uid = self.next_uid
        self.next_uid += 1
        # Counted on the task's own island (a re-evaluation may belong to another one).
        self.islands[pick.island].issued += 1
        if self.config.sync:
            self._sync_issued[pick.island] += 1
        task = Task(
            uid=uid,
            island=pick.island,
            genome=pick.genome,
            params=pick.params,
            seed=task_seed(self.config.seed, uid) if pick.seed is None else pick.seed,
            operator=pick.operator,
            parents=pick.parents,
            info=pick.info,
            reevaluation_of=pick.reevaluation_of,
            told_before=self.n_finished,
        )
        self.dedupe.register(task, pick.key)
        return task

    def _island_for(self) -> Island | None:
        """The island that most needs an evaluation: fewest in flight, then fewest issued.

        Equal shares: with more islands than workers every island still gets its turn (the
        issued count breaks ties), with more workers than islands the load stays even.
        Under ``sync`` only islands with generation slots left qualify (the barrier).
        """
        load, islands = self._island_load, self.islands
        if self.config.sync:
            size = self.config.population_size
            open_ = [i for i in range(len(islands)) if self._sync_issued[i] < size]
            if not open_:
                return None
            least = min(load[i] for i in open_)
            candidates = [i for i in open_ if load[i] == least]
        else:
            least = min(load)
            candidates = [i for i, n in enumerate(load) if n == least]
        if len(candidates) == 1:  # the usual case with more workers than islands
            return islands[candidates[0]]
        # min keeps the first of equals: the lowest index among the least issued.
        return islands[min(candidates, key=lambda i: islands[i].issued)]

    def add_warm_start(self, genomes: list[np.ndarray]) -> None:
        """Queue known configurations (genomes) to issue before anything else.

        Each becomes an ordinary task of the island whose turn it is, with operator
        ``warm_start``; its result joins that island's population like any other. The queue
        is part of the engine's state, so a run stopped before all were issued issues the
        rest after ``--resume``. A configuration already issued (a repeat in the list) is
        skipped, like any repeat.
        """
        for g in genomes:
            g = np.asarray(g, dtype=np.float64).reshape(-1)
            if g.shape[0] != self.space.dim:
                raise ValueError(f"a warm-start genome has {g.shape[0]} genes, the space {self.space.dim}")
            self.warm_start.append(g)

    def _race_pick(self) -> Pick | None:
        """A queued race task: a configuration on a race seed common to the race (intensify.py)."""
        race = self.tracker.next_pick()
        return None if race is None else self._as_race_pick(race)

    def _as_race_pick(self, race: RacePick) -> Pick:
        rec = race.record
        genome = frozen_genome(rec.genome)
        return Pick(rec.island % self.config.islands, genome, self.space.decode(genome), RACE,
                    (rec.uid,), {"race": race.j}, reevaluation_of=rec.uid, key=race.key,
                    seed=race_seed(self.config.seed, race.j))

    def _leftover_pick(self) -> Pick | None:
        """Once the space is exhausted, a re-evaluation of a leader on a race seed
        (``Tracker.leftover_pick``: none on a deterministic objective)."""
        if not self._leftover or not self.dedupe.exhausted:
            return None
        race = self.tracker.leftover_pick()
        return None if race is None else self._as_race_pick(race)

    @property
    def exhausted_message(self) -> str | None:
        """Why no new configuration starts, and what the budget left does, or None."""
        why = self.dedupe.exhausted
        if why is None or not self._leftover:
            return why
        head = exhausted_head(len(self.dedupe.registry))
        noise = self.tracker.noise()
        if noise is None and self.budget_left <= 0:
            return head + ", and the budget is spent"
        if noise is None:
            return head + ("; the re-evaluation of the best now out will tell whether the "
                           "objective is noisy (tell it, then ask again): if so, the budget "
                           "left re-evaluates the leaders")
        if noise[0] == 0.0:
            return head + ("; a re-evaluation of the best came out the same (a deterministic "
                           "objective), so the run ends below its budget")
        does = "went to re-evaluating" if self.budget_left <= 0 else "re-evaluates"
        return head + (f"; the budget left {does} the leaders on shared seeds (seed noise ~ "
                       f"{noise[0]:.3g}; docs/noise.md)")

    def _leftover_wanted(self) -> bool:
        """Whether an exhausted space still has re-evaluations to issue (nothing in flight):
        the probe while the noise is unmeasured, else any while it is above 0."""
        return self._leftover and self.budget_left > 0 and self.tracker.leftover_open()

    @property
    def best(self) -> Individual | None:
        """The incumbent: the best estimated mean (``search.estimate``), as an individual whose
        fitness is that mean and whose info holds its count and spread."""
        est = self.tracker.best()
        return None if est is None else self._as_individual(est)

    @property
    def front(self) -> list[Individual]:
        """Several objectives: the feasible non-dominated members of the populations, the
        knee first (``search.pareto.knee``); [] for one fitness."""
        return front_members([m for isl in self.islands for m in isl.population])

    @property
    def best_estimate(self) -> Estimate | None:
        return self.tracker.best()

    @property
    def luckiest_draw(self) -> Individual | None:
        """The configuration holding the best single draw (fitness = that draw)."""
        est = self.tracker.luckiest()
        if est is None:
            return None
        return replace(self._as_individual(est), fitness=est.best_draw)

    def _as_individual(self, est: Estimate) -> Individual:
        rec = self.tracker.records[est.key]
        return Individual(uid=est.uid, genome=frozen_genome(rec.genome), fitness=est.mean,
                          island=rec.island % self.config.islands,
                          info={"evaluations": est.n, "std": est.std})

    def _warm_pick(self, island: Island) -> Pick | None:
        while self.warm_start:
            genome = frozen_genome(self.warm_start.popleft())
            params = self.space.decode(genome)
            if params not in self.dedupe.registry:
                return Pick(island.index, genome, params, "warm_start")
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
        values: tuple[float, ...] = ()
        violation = 0.0
        if self.config.objectives is not None and state is EvalState.COMPLETE:
            state, error, values, violation, result = self._judge_objectives(result)
        check_transition(EvalState.RUNNING, state)
        del self.in_flight[result.uid]
        self._task_states.pop(result.uid, None)
        del self._flying[task.island][result.uid]
        self.n_finished += 1
        self.counts[state] += 1
        island = self.islands[task.island]
        accepted = False
        if self.pruner is not None:
            self.pruner.finish(task.uid, result.curve)
        if self.pbt is not None and task.step >= 0:
            # A PBT interval: its member decides its next interval at the next _issue.
            value = result.fitness if state is EvalState.COMPLETE else None
            self.pbt.told(int(task.info["member"]), task.uid, task.genome,
                          interval_stop(task.step, task.info), value, self.n_finished)
            origin = task.info.get("migrant_from")
            if origin is not None:  # it trained on weights from another island: a migration
                self.migrations.append(Migration(task.pbt_parent, int(origin), task.island,
                                                 value is not None, self.n_finished))
            if value is not None:
                island.completed += 1
                # Each interval is its own candidate (a configuration with its weights).
                if self.tracker.wants_key(value):
                    self.tracker.first_draw(interval_key(config_key(task.params), task.uid), task.uid,
                                            task.island, task.genome, value)
            return TellOutcome.RECORDED, Evaluation(task, result, state, error, value is not None)
        if task.reevaluation_of >= 0:
            # A deliberate repeat: its fitness goes into the individual's mean, not a population.
            value = result.fitness if state is EvalState.COMPLETE else None
            self.dedupe.reevaluated(task, value, self.islands)
            race = task.info.get("race") if task.operator == RACE else None
            self.tracker.repeat(config_key(task.params), task.reevaluation_of, task.island,
                                task.genome, value, None if race is None else int(race))
            return TellOutcome.RECORDED, Evaluation(task, result, state, error, False)
        if state is EvalState.PRUNED and result.curve:
            # A pruned evaluation never joins a population (its partial fitness is not
            # comparable with complete ones); an operator may still learn from it.
            step, value = result.curve[-1]
            island.operator.observe_pruned(_offspring(task, float(value)), int(step))
        if state is EvalState.FAILED:
            # A configuration that fails (a learning rate that diverges, a model too large) is
            # information: a model-based operator that never heard of it proposed the same
            # failing region again and again (benchmarks/advection.py: 14 of 24).
            island.operator.observe_failed(_offspring(task, math.inf))
        if state is EvalState.COMPLETE:
            assert result.fitness is not None
            ind = _offspring(task, float(result.fitness), values, violation)
            # With several objectives the incumbent is the best feasible first objective (the
            # progress line's "best"); the front itself is the analysis' business.
            if violation <= 0 and self.tracker.wants_key(ind.fitness):
                self.tracker.first_draw(config_key(task.params), task.uid, task.island,
                                        task.genome, ind.fitness)
            island.completed += 1
            if self.config.sync:
                self._sync_buffer[task.island].append(ind)
            else:
                accepted = island.offer(ind)
                island.operator.observe(ind, accepted)
                self.dedupe.after_offer(island, ind, accepted)
                self._maybe_migrate(island)
        if self.config.sync:
            self._maybe_close_generation(island)
        return TellOutcome.RECORDED, Evaluation(task, result, state, error, accepted)

    def _judge_objectives(
        self, result: Result
    ) -> tuple[EvalState, str | None, tuple[float, ...], float, Result]:
        """A complete result's objective vector (minimised) and violation, or why it FAILED.

        The recorded result gets ``values`` (as returned) and, under constraints, the metric
        ``constraint_violation`` (0 = feasible): an infeasible evaluation is COMPLETE, never
        FAILED, and ranks behind every feasible one. Its fitness is the first objective.
        """
        spec = self.config.objectives
        assert spec is not None
        named = {**result.metrics, "fitness": float(result.fitness or 0.0)}
        if result.values and len(result.values) == spec.m:
            named.update(zip(spec.names, result.values))
        try:
            raw = spec.raw(named)
            violation = spec.violation(named)
        except ValueError as exc:
            return EvalState.FAILED, str(exc), (), 0.0, replace(result, fitness=None)
        values = spec.minimised(raw)
        metrics = {**result.metrics, VIOLATION: violation} if spec.constraints else result.metrics
        result = replace(result, values=raw, metrics=metrics, fitness=values[0])
        return EvalState.COMPLETE, None, values, violation, result

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
        # Tasks queued for re-issue after a resume belong to the generation as well.
        if self._flying[i] or any(t.island == i for t in self.pending):
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

    # -- replay (resume only) ----------------------------------------------------------

    def begin_replay(self) -> None:
        """Put the tasks a restored snapshot queued back in flight, as they were when taken."""
        while self.pending:
            self._start(self.pending.popleft())

    def replay_task(self, logged: Task) -> tuple[Task, str | None]:
        """Issue ``logged`` again by asking the engine as the original run did.

        The caller has told exactly ``logged.told_before`` results. The engine's own issuing
        code runs, so generators, design queues and counters advance as they did; the task it
        makes should equal the logged one. If it does not (a changed scenario under --force,
        a log from an older version), the logged task wins and the reason is returned.
        """
        problem: str | None = None
        if logged.uid != self.next_uid:
            problem = f"uid {logged.uid} was logged where uid {self.next_uid} was expected"
            self.next_uid = max(self.next_uid, logged.uid)
        task = self._issue()
        if task is None:
            # The sync barrier (or an exhausted space) refuses: count the logged task against
            # its island's generation.
            self.next_uid = logged.uid + 1
            if self.config.sync:
                self._sync_issued[logged.island] += 1
            self.islands[logged.island].issued += 1
            self.dedupe.register(logged)
            self._start(logged)
            why = "search space exhausted" if self.dedupe.exhausted else "barrier"
            return logged, problem or f"uid {logged.uid} could not be asked again ({why})"
        diff = _task_difference(task, logged)
        if diff is None:
            self._start(task)
            return task, problem
        if task.island != logged.island:
            self.islands[task.island].issued -= 1
            self.islands[logged.island].issued += 1
            if self.config.sync:
                self._sync_issued[task.island] -= 1
                self._sync_issued[logged.island] += 1
        self.dedupe.register(logged)
        self._start(logged)
        return logged, problem or f"uid {logged.uid}: {diff}; the logged task is kept"

    def end_replay(self) -> None:
        """Queue every task still in flight (in uid order) to be issued again first."""
        for uid in sorted(self.in_flight):
            task = self.in_flight.pop(uid)
            del self._flying[task.island][uid]
            self.pending.append(task)
            if self.pruner is not None:
                self.pruner.restart(uid)

    def fail_in_flight(self, uid: int, error: str) -> Evaluation:
        """Record the task ``uid`` in flight as FAILED with ``error`` (e.g. a poison task)."""
        outcome, ev = self.tell(Result(uid=uid, worker=-1, fitness=None,
                                       state=EvalState.FAILED, error=error))
        if ev is None:
            raise ValueError(f"uid {uid} is not in flight ({outcome.value})")
        return ev

    def drain_migrations(self) -> list[Migration]:
        out, self.migrations = self.migrations, []
        return out

    # -- state --------------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """Everything needed to continue exactly: JSON-serialisable.

        Cheap enough for the coordinator's loop (O(population + in flight + rungs), no
        per-task conversion: see ``_task_states``); encoding it is the recorder's job, on its
        own thread. The dict shares its never-changing parts (each task's and population
        member's entry) with later snapshots, so whoever receives it must not mutate it.
        """
        cached = self._task_states
        pending = []
        for t in sorted((*self.pending, *self.in_flight.values()), key=_uid):
            entry = cached.get(t.uid)
            pending.append(entry[1] if entry is not None and entry[0] is t else _task_state(t))
        return {
            "format": STATE_FORMAT,
            "config": self.config.describe(),
            "max_evals": self.max_evals,
            "next_uid": self.next_uid,
            "n_finished": self.n_finished,
            "counts": {s.name: n for s, n in self.counts.items()},
            "islands": [isl.get_state() for isl in self.islands],
            # Tasks in flight are issued again after a restore, so they are stored as pending
            # (uid order, so a replay sees them as the original run had issued them).
            "pending": pending,
            "sync_issued": list(self._sync_issued),
            "sync_buffer": [[m.to_state() for m in buf] for buf in self._sync_buffer],
            "tracker": self.tracker.get_state(),
            "pruner": self.pruner.get_state() if self.pruner else None,
            "dedupe": self.dedupe.get_state(),
            "warm_start": [g.tolist() for g in self.warm_start],
            **({"pbt": self.pbt.get_state()} if self.pbt is not None else {}),
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
        n = config.islands
        for isl, s in zip(eng.islands, state["islands"]):
            isl.set_state(s)
        sync_issued = [int(x) for x in state["sync_issued"]]
        buffers = [[Individual.from_state(m) for m in buf] for buf in state["sync_buffer"]]
        eng._sync_issued = [sync_issued[i] if i < len(sync_issued) else 0 for i in range(n)]
        eng._sync_buffer = [buffers[i] if i < len(buffers) else [] for i in range(n)]
        # Fewer islands (--resume --force): island k's members, generation and tasks move to
        # island k mod n, so nothing evaluated is dropped and nothing in flight is orphaned.
        for k in range(n, len(state["islands"])):
            dst = eng.islands[k % n]
            for m in state["islands"][k]["population"]:
                dst.offer(replace(Individual.from_state(m), island=dst.index))
            dst.completed += int(state["islands"][k]["completed"])
            eng._sync_issued[dst.index] += sync_issued[k] if k < len(sync_issued) else 0
            eng._sync_buffer[dst.index] += [replace(m, island=dst.index)
                                            for m in (buffers[k] if k < len(buffers) else [])]
        eng.pending = deque(eng.rehome(_task_from_state(space, t)) for t in state["pending"])
        if "tracker" in state:
            eng.tracker.set_state(state["tracker"], n)
        elif state.get("best"):  # a snapshot from before estimates: its best single draw
            b = Individual.from_state(state["best"])
            eng.tracker.first_draw(config_key(space.decode(b.genome)), b.uid, b.island % n,
                                   b.genome, b.fitness)
        eng.dedupe.set_state(state.get("dedupe"))
        eng.warm_start = deque(np.asarray(g, dtype=np.float64) for g in state.get("warm_start", []))
        if eng.pbt is not None and state.get("pbt") is not None:
            eng.pbt.set_state(state["pbt"])
        saved = state.get("pruner")
        # A run continued with --force under other rung settings starts its rungs afresh.
        if eng.pruner is not None and saved and saved["config"] == eng.pruner.config.describe():
            eng.pruner.set_state(saved)
        return eng

    def rehome(self, task: Task) -> Task:
        """``task`` on an island this engine has (islands removed by --force map to k mod n)."""
        n = self.config.islands
        return task if task.island < n else replace(task, island=task.island % n)


def _task_difference(made: Task, logged: Task) -> str | None:
    """What differs between a re-asked task and the logged one, or None."""
    if made.uid != logged.uid:
        return f"uid {made.uid} instead of {logged.uid}"
    if made.island != logged.island:
        return f"island {made.island} instead of {logged.island}"
    if made.seed != logged.seed:
        return "a different seed"
    # The task log keeps the first two parents only (an ES offspring has the better half).
    if made.operator != logged.operator or tuple(made.parents)[:2] != tuple(logged.parents)[:2]:
        return (f"{made.operator} from {list(made.parents)} instead of "
                f"{logged.operator} from {list(logged.parents)}")
    if not np.array_equal(made.genome, logged.genome):
        return "a different genome"
    if made.pbt_parent != logged.pbt_parent or made.step != logged.step:
        return (f"PBT interval from uid {made.pbt_parent} at step {made.step} instead of "
                f"from uid {logged.pbt_parent} at step {logged.step}")
    return None


def _offspring(task: Task, fitness: float, values: tuple[float, ...] = (),
               violation: float = 0.0) -> Individual:
    """The individual a told task becomes (a population member, or what an operator learns
    from a pruned or failed one)."""
    return Individual(uid=task.uid, genome=task.genome, fitness=fitness, island=task.island,
                      info=task.info, origin_island=task.island, values=values,
                      violation=violation)


def _uid(t: Task) -> int:
    return t.uid


def _task_state(t: Task) -> dict[str, Any]:
    return {
        "uid": t.uid, "island": t.island, "genome": t.genome.tolist(), "seed": t.seed,
        "operator": t.operator, "parents": list(t.parents), "info": jsonable(t.info),
        "reevaluation_of": t.reevaluation_of, "told_before": t.told_before,
        **({"pbt_parent": t.pbt_parent, "step": t.step} if t.step >= 0 else {}),
    }


def _task_from_state(space: Space, s: dict[str, Any]) -> Task:
    genome = frozen_genome(s["genome"])
    info = {k: np.asarray(v) if isinstance(v, list) else v for k, v in s["info"].items()}
    return Task(
        uid=int(s["uid"]), island=int(s["island"]), genome=genome, params=space.decode(genome),
        seed=int(s["seed"]), operator=s["operator"], parents=tuple(s["parents"]), info=info,
        reevaluation_of=int(s["reevaluation_of"]), told_before=int(s.get("told_before", -1)),
        pbt_parent=int(s.get("pbt_parent", -1)), step=int(s.get("step", -1)),
    )
