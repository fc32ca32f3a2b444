"""The operator contract: how an island turns its population into the next offspring.

Who calls what, and when:

* The engine builds one operator per island, giving it the space, the island's own
  ``numpy.random.Generator`` (derived from the scenario seed) and the validated settings.
* ``propose(population)`` is called whenever a worker of the island is idle. ``population``
  holds only complete individuals (never pending, failed or pruned ones), best first. The
  operator must not mutate it. The returned genome must lie in [0, 1]^d.
* ``observe(individual, accepted)`` is called once for every complete offspring of this
  island, in whatever order results arrive, after the island's replacement step decided
  whether the offspring entered the population. Operators adapt step sizes here.
* ``observe_pruned(individual, step)`` is called instead for an offspring that a pruner
  stopped early (``individual.fitness`` is its last reported value, after ``step`` steps).
  The default ignores it: a partial fitness is not comparable with complete ones, so step
  sizes adapt on complete offspring only, unless an operator overrides this on purpose.
* ``get_state()``/``set_state()`` round-trip everything the operator needs to continue
  exactly as before, including its RNG state, as JSON-serialisable values.
* ``see_in_flight(genomes)`` is called just before ``propose`` with the genomes of this
  island's evaluations in flight (design points included), only for an operator whose
  ``wants_in_flight`` is True (a model-based one that must not send a worker next to a point
  already being evaluated). The list is the engine's in-flight table at that moment, so a
  replay that re-asks from the same engine state passes the same list. ``wants_in_flight``
  may be a property of the operator's state (the surrogate's is False once it has handed
  its island to the ES); it must then be a function of that state, so replay asks it alike.
* ``replacement()`` tells the island how to make room for an offspring once the population
  is full: replace the worst member, or the worst of a random subset (never the best one).

Lower fitness is better everywhere. With several objectives the population passed to
``propose`` is in Pareto order (search/pareto.py), best first, and each individual carries its
minimised objective ``values`` and constraint ``violation``: select by position, not by
``fitness`` (there the first objective).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from evo_engine.search.messages import Individual, jsonable
from evo_engine.space import Space


class OperatorSettings(BaseModel):
    """Base for an operator's validated settings; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, eq=False)
class Proposal:
    """An offspring genome, the uids of its parents and per-offspring operator data."""

    genome: np.ndarray
    parents: tuple[int, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)
    operator: str = ""


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    return jsonable(rng.bit_generator.state)


def restore_rng(state: dict[str, Any]) -> np.random.Generator:
    bitgen = getattr(np.random, state["bit_generator"])()
    bitgen.state = state
    return np.random.Generator(bitgen)


def reflect_scalar(x: float) -> float:
    """``reflect`` for one number, without numpy's per-call overhead (a hot path)."""
    y = x % 2.0
    return 2.0 - y if y > 1.0 else y


def reflect(x: np.ndarray) -> np.ndarray:
    """Fold values back into [0, 1] by mirror reflection at the bounds (not clipping)."""
    y = np.mod(np.asarray(x, dtype=np.float64), 2.0)
    return np.where(y > 1.0, 2.0 - y, y)


class Operator(ABC):
    """Proposes offspring for one island. See the module docstring for the contract."""

    name: ClassVar[str]
    wants_in_flight: ClassVar[bool] = False
    Settings: ClassVar[type[OperatorSettings]] = OperatorSettings

    def __init__(
        self,
        space: Space,
        rng: np.random.Generator,
        population_size: int,
        settings: OperatorSettings,
    ) -> None:
        self.space = space
        self.rng = rng
        self.population_size = population_size
        self.settings = settings

    @abstractmethod
    def propose(self, population: Sequence[Individual]) -> Proposal:
        """An offspring made from ``population`` (complete individuals, best first)."""

    def see_in_flight(self, genomes: Sequence[np.ndarray]) -> None:  # noqa: B027
        """The genomes of this island's evaluations in flight, just before ``propose``."""

    def observe(self, individual: Individual, accepted: bool) -> None:  # noqa: B027
        """A complete offspring of this island came back; default: nothing to adapt."""

    def observe_pruned(self, individual: Individual, step: int) -> None:  # noqa: B027
        """An offspring of this island was stopped early; default: ignore its partial fitness."""

    def observe_failed(self, individual: Individual) -> None:  # noqa: B027
        """An offspring of this island FAILED (it raised, diverged, returned a non-finite
        fitness, timed out or was in flight at crashes; ``fitness`` is inf); default: ignore."""

    def replacement(self) -> tuple[str, int]:
        """``("worst", 0)``, or ``("subset", k)``: replace the worst of k random members."""
        return ("worst", 0)

    def get_state(self) -> dict[str, Any]:
        return {"rng": rng_state(self.rng)}

    def set_state(self, state: dict[str, Any]) -> None:
        self.rng = restore_rng(state["rng"])
