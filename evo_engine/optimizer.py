"""The ask/tell API: the engine's search without MPI, files or the CLI.

For users who bring their own loop (a notebook, a SLURM array, a benchmark)::

    opt = evo_engine.Optimizer(space, operator="es", seed=0)
    cand = opt.ask()                 # cand.params is a dict of decoded hyperparameters
    opt.tell(cand, loss)             # any order; NaN/None marks a failure; twice is a no-op
    opt.best.params, opt.best.fitness   # the best estimated mean (opt.best.evaluations)
    opt.save("opt.json"); opt = Optimizer.load("opt.json")

It is a thin shell over :class:`evo_engine.search.engine.Engine` with an unbounded budget: each
``ask`` is the engine's ``ask`` for a virtual worker (round robin over the islands), each
``tell`` its ``tell``. Lower fitness is better.

Noisy objectives: ``repeats`` and ``intensify`` are the scenario switches of the same names
(docs/noise.md). With them a candidate may be a configuration asked before (``operator``
"reevaluate" or "race"): evaluate it with ``candidate.seed``, which races share between
configurations, so that a comparison on common seeds cancels the seeds' effect.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evo_engine.search.dedupe import SpaceExhausted
from evo_engine.search.engine import Engine, EngineConfig, TellOutcome
from evo_engine.search.messages import EvalState, Result, Task
from evo_engine.search.pareto import parse_objectives
from evo_engine.space import Space, SpaceError

STATE_FORMAT = 1
UNBOUNDED = sys.maxsize // 4
"""The engine's budget under ask/tell: the user's loop decides when to stop."""


@dataclass(frozen=True, eq=False)
class Candidate:
    """A configuration to evaluate: ``params`` for the objective, ``uid`` to tell it back."""

    uid: int
    params: dict[str, Any]
    genome: np.ndarray
    island: int
    operator: str
    info: dict[str, Any]
    """Operator data, e.g. ``info["sigma"]``: the ES's per-parameter step for this offspring."""
    seed: int = 0
    """The seed to evaluate it with (what a run hands its objective as ``ctx.seed``)."""


@dataclass(frozen=True)
class Best:
    """The incumbent: the configuration with the best estimated mean told so far.

    ``fitness`` is its mean over ``evaluations`` complete evaluations (one on a deterministic
    objective), ``std`` their sample std (NaN with one); ``Optimizer.luckiest`` holds the best
    single draw instead.
    """

    uid: int
    params: dict[str, Any]
    fitness: float
    genome: np.ndarray
    evaluations: int = 1
    std: float = float("nan")


def default_population_size(space: Space) -> int:
    """Population per island when none is given: grows like CMA-ES's λ = 4 + 3 ln d, doubled.

    Doubling keeps the population (the elite set the operators breed from) comfortably above
    the number of parameters in low dimension, where the ES's mean needs a few members.
    """
    return max(8, 2 * (4 + int(3 * math.log(space.dim))))


class Optimizer:
    """Ask/tell optimisation over a :class:`Space` (see the module docstring)."""

    def __init__(
        self,
        space: Space,
        operator: str = "es",
        seed: int = 0,
        population_size: int | None = None,
        islands: int = 1,
        initial_design: str = "random",
        operator_settings: dict[str, Any] | None = None,
        migration_interval: int = 10,
        migrants: int = 1,
        repeats: int = 0,
        intensify: int = 0,
        objectives: list[Any] | None = None,
        constraints: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(space, Space):
            raise TypeError(f"the optimizer's space must be an evo_engine.Space, got a "
                            f"{type(space).__name__}: wrap the parameters as Space(...)")
        self.space = space
        self.config = EngineConfig(
            max_evals=UNBOUNDED,
            islands=islands,
            population_size=(default_population_size(space) if population_size is None
                             else population_size),
            operator=operator,
            operator_settings=dict(operator_settings or {}),
            initial_design=initial_design,
            seed=seed,
            migration_interval=migration_interval,
            migrants=migrants,
            repeats=repeats,
            intensify=intensify,
            objectives=parse_objectives([] if objectives is None else objectives,
                                        {} if constraints is None else constraints),
        )
        if intensify == 1:
            raise ValueError("intensify is a race length: 0 (off) or at least 2 evaluations")
        # Validates the settings now, so a typo fails here rather than at the first ask.
        self.config.settings()
        self.engine = Engine(space, self.config)
        self._asked = 0
        self.n_migrations = 0
        """Migrations between islands so far (in this process)."""

    # -- the loop -----------------------------------------------------------------------

    def ask(self) -> Candidate:
        """The next configuration to evaluate (a re-issue first, after a restore).

        A new candidate is never a configuration asked before (see ``evo_engine.search.dedupe``).
        When a small discrete space has none left, the leaders are re-evaluated (operator
        "race", on a fresh shared seed); ``SpaceExhausted`` is raised once a probe re-evaluation
        shows the objective deterministic, and while that probe is out (docs/running.md).
        """
        task = self.engine.ask(self._asked % self.config.islands)
        if task is None and self.engine.dedupe.exhausted:
            raise SpaceExhausted(self.engine.exhausted_message)
        if task is None:  # only if the engine was told to stop: a usage error here
            raise RuntimeError("the optimizer's engine issues no more tasks")
        self._asked += 1
        return _candidate(task)

    def tell(self, candidate: Candidate | int, fitness: float | Mapping[str, float] | None) -> bool:
        """Report ``fitness`` for ``candidate`` (or its uid); True if it was recorded.

        ``None``, NaN or an infinity record a failed evaluation. A candidate told before, or
        unknown, changes nothing and returns False. With ``objectives``, tell a dict of named
        values (the objectives and constrained values among them); without, a dict is a
        ``TypeError``.
        """
        uid = _uid(candidate)
        if isinstance(fitness, Mapping) and self.config.objectives is None:
            # The engine would score it 0.0, the best possible: a silent wrong incumbent.
            raise TypeError(f"tell got named values {dict(fitness)!r}, but this optimizer has "
                            f"one fitness: tell a number, or create it with objectives=[...]")
        for name, value in (fitness.items() if isinstance(fitness, Mapping)
                            else [("fitness", fitness)]):
            _check_told_value(str(name), value)
        self._claim_pending(uid)
        if isinstance(fitness, Mapping):
            named = {str(k): float(v) for k, v in fitness.items()}
            outcome, _ = self.engine.tell(Result(uid=uid, worker=-1, fitness=0.0, metrics=named))
            self.n_migrations += len(self.engine.drain_migrations())
            return outcome is TellOutcome.RECORDED
        ok = fitness is not None and math.isfinite(float(fitness))
        result = Result(
            uid=uid,
            worker=-1,
            fitness=float(fitness) if ok else None,
            error=None if ok else f"no finite fitness: {fitness!r}",
            state=EvalState.COMPLETE if ok else EvalState.FAILED,
        )
        outcome, _ = self.engine.tell(result)
        # No log to write them to: count migrations and let them go, or a long ask/tell loop
        # would keep every one it ever made.
        self.n_migrations += len(self.engine.drain_migrations())
        return outcome is TellOutcome.RECORDED

    def _claim_pending(self, uid: int) -> None:
        # After a restore, candidates that were out with the user are queued for re-issue;
        # a user who still has one may tell it directly, which takes it off the queue.
        self.engine.claim_pending(uid)

    @property
    def best(self) -> Best | None:
        return _best(self.space, self.engine.best)

    @property
    def front(self) -> list[Best]:
        """With several objectives: the feasible non-dominated members of the populations
        (``fitness`` = the first objective, minimised), the knee first; else []."""
        return [b for m in self.engine.front for b in [_best(self.space, m)] if b is not None]

    @property
    def luckiest(self) -> Best | None:
        """The configuration holding the best single draw, ``fitness`` = that draw."""
        return _best(self.space, self.engine.luckiest_draw)

    @property
    def noise(self) -> float | None:
        """The objective's noise: pooled within-configuration std of the repeats, or None."""
        noise = self.engine.tracker.noise()
        return None if noise is None else noise[0]

    @property
    def n_told(self) -> int:
        """Evaluations told so far (complete and failed)."""
        return self.engine.n_finished

    @property
    def in_flight(self) -> list[int]:
        """Uids asked but not yet told (including ones queued for re-issue after a restore)."""
        return sorted([*self.engine.in_flight, *(t.uid for t in self.engine.pending)])

    # -- state --------------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """Everything needed to continue exactly, as JSON-serialisable values."""
        return {
            "format": STATE_FORMAT,
            "space": self.space.describe(),
            "config": self.config.describe(),
            "asked": self._asked,
            "engine": self.engine.get_state(),
            # No log to rebuild it from: the configurations asked so far, so none is asked again.
            "asked_configurations": self.engine.dedupe.registry.export(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], space: Space | None = None) -> Optimizer:
        """An optimizer that continues where ``state`` left off.

        Pass the original ``space`` when its choices are not plain JSON values (the state
        holds their ``repr`` only); otherwise it is rebuilt from the state.
        """
        if not isinstance(state, dict):
            raise ValueError(f"an optimizer state is a JSON object (what Optimizer.save "
                             f"writes), got a {type(state).__name__}")
        if state.get("format") != STATE_FORMAT:
            raise ValueError(
                f"optimizer state format {state.get('format')!r} is not {STATE_FORMAT}"
            )
        lacking = [k for k in ("space", "config", "engine", "asked") if k not in state]
        if lacking or not isinstance(state["config"], dict):
            raise ValueError(f"the optimizer state lacks {', '.join(map(repr, lacking))}"
                             if lacking else "the optimizer state's config is not an object")
        lacking = [k for k in _CONFIG_KEYS if k not in state["config"]]
        if lacking:
            raise ValueError(f"the optimizer state's config lacks {', '.join(map(repr, lacking))}")
        if not isinstance(state["engine"], dict):
            raise ValueError(f"the optimizer state's engine is not an object, got a "
                             f"{type(state['engine']).__name__}")
        if isinstance(state["asked"], bool) or not isinstance(state["asked"], int):
            raise ValueError(f"the optimizer state's asked is not a whole number: "
                             f"{state['asked']!r}")
        if space is None:
            try:
                space = Space.from_description(state["space"])
            except SpaceError as exc:
                raise ValueError(f"{exc}: pass the original space, e.g. "
                                 f"Optimizer.load(path, space=space)") from None
        if space.describe() != state["space"]:
            raise ValueError("the space given does not match the one in the optimizer state")
        c = state["config"]
        opt = cls(
            space,
            operator=c["operator"],
            seed=c["seed"],
            population_size=c["population_size"],
            islands=c["islands"],
            initial_design=c["initial_design"],
            operator_settings=c["operator_settings"],
            migration_interval=c["migration_interval"],
            migrants=c["migrants"],
            repeats=c.get("repeats", 0),
            intensify=c.get("intensify", 0),
            objectives=[tuple(o) for o in c.get("objectives", [])],
            constraints={n: (op, b) for n, op, b in c.get("constraints", [])},
        )
        opt.engine = Engine.from_state(space, opt.config, state["engine"])
        opt._asked = int(state["asked"])
        opt.engine.dedupe.registry.restore(state.get("asked_configurations", []))
        return opt

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the state as JSON, atomically (a crash leaves the old file or the new one)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.get_state()))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], space: Space | None = None) -> Optimizer:
        """``from_state`` of the JSON that ``save`` wrote; a ValueError naming ``path`` if it
        holds no optimizer state."""
        try:
            state = json.loads(Path(path).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path} holds no optimizer state: not JSON ({exc})") from exc
        try:
            return cls.from_state(state, space=space)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc


_CONFIG_KEYS = ("operator", "seed", "population_size", "islands", "initial_design",
                "operator_settings", "migration_interval", "migrants")
"""The config keys ``from_state`` reads without a default (``EngineConfig.describe`` writes
them all)."""


def _uid(candidate: Any) -> int:
    """The uid a tell is about: a candidate's, or a whole number (an int or a numpy integer,
    as a loop that keeps its uids in an array or a CSV has them; not a bool)."""
    uid = getattr(candidate, "uid", candidate)
    if isinstance(uid, bool) or not isinstance(uid, numbers.Integral):
        raise TypeError(f"tell needs a Candidate or its uid (a whole number), got {candidate!r}")
    return int(uid)


def _check_told_value(name: str, value: Any) -> None:
    """A told value must be a number (a numpy scalar or a 0-d tensor will do; None is a
    failure): a bool would be scored as 0 or 1, and a string failed deep inside without
    naming the value."""
    if value is None and name == "fitness":
        return
    try:
        if isinstance(value, (bool, str, bytes)):
            raise TypeError
        float(value)
    except (TypeError, ValueError):
        raise TypeError(f"tell: {name} must be a number, got {value!r}") from None


def _candidate(task: Task) -> Candidate:
    return Candidate(task.uid, task.params, task.genome, task.island, task.operator, task.info,
                     task.seed)


def _best(space: Space, ind: Any) -> Best | None:
    if ind is None:
        return None
    return Best(ind.uid, space.decode(ind.genome), ind.fitness, ind.genome,
                int(ind.info.get("evaluations", 1)), float(ind.info.get("std", float("nan"))))
