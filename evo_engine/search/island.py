"""An island: one population, its operator, and steady-state replacement."""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from evo_engine.search.messages import Individual
from evo_engine.search.operators.base import Operator, Proposal, restore_rng, rng_state
from evo_engine.search.pareto import pareto_order


def pareto_survivors(pool: list[Individual], size: int) -> list[Individual]:
    """The best ``size`` members of ``pool`` in Pareto order, best first (search/pareto.py).

    Dropping one member at a time from the back re-ranks the rest, as SMS-EMOA does: the
    shares (hypervolume, crowding) of the survivors change when a neighbour leaves.
    """
    pool = list(pool)
    while True:
        order = pareto_order(np.array([m.values for m in pool]),
                             np.array([m.violation for m in pool]))
        pool = [pool[int(i)] for i in order]
        if len(pool) <= size:
            return pool
        pool.pop()


class Island:
    """Holds a population of complete individuals (best first) and proposes offspring.

    The first ``population_size`` proposals come from the initial design; after that the
    operator proposes from the population. Replacement is steady state: an individual
    enters while there is room, else it replaces the worst member if it is better, so the
    best individual is never lost (elitism). With several objectives (members carry
    ``values``) the population is kept in Pareto order instead and the pool's last member in
    that order leaves (``pareto_survivors``), so operators that select by position select by
    Pareto rank.
    """

    def __init__(
        self,
        index: int,
        operator: Operator,
        population_size: int,
        design_points: np.ndarray,
        rng: np.random.Generator,
        design_name: str = "random",
    ) -> None:
        self.index = index
        self.operator = operator
        self.population_size = population_size
        self.population: list[Individual] = []
        self.design_queue: deque[np.ndarray] = deque(np.asarray(p) for p in design_points)
        self.design_name = design_name
        self.rng = rng
        self.completed = 0
        self.completed_at_last_migration = 0
        self.issued = 0
        """New tasks this island proposed (re-issues not counted): spreads work between islands."""
        self._member_states: dict[int, tuple[Individual, dict[str, Any]]] = {}
        """uid → (member, its snapshot form) as of the last ``get_state``: a member is
        converted once, not at every snapshot (members are frozen)."""

    @property
    def best(self) -> Individual | None:
        return self.population[0] if self.population else None

    def propose(self) -> Proposal:
        if self.design_queue:
            return Proposal(self.design_queue.popleft(), operator=f"design:{self.design_name}")
        if len(self.population) < 2:
            # The design's individuals are still in flight (or failed): keep workers busy
            # with fresh random points rather than breeding from fewer than two parents.
            return Proposal(self.rng.random(self.operator.space.dim), operator="fill:random")
        return self.operator.propose(self.population)

    def offer(self, ind: Individual) -> bool:
        """Steady-state replacement; True when ``ind`` entered the population.

        The operator's ``replacement()`` picks the member at risk: the worst one, or the
        worst of a random subset of k members (weaker selection pressure, more diversity).
        The best member is never at risk, and the offspring only enters if it is better.
        """
        if any(m.uid == ind.uid for m in self.population):
            return False
        if ind.values:  # several objectives: Pareto replacement (search/pareto.py)
            self.population = pareto_survivors(self.population + [ind], self.population_size)
            return any(m.uid == ind.uid for m in self.population)
        if len(self.population) < self.population_size:
            self.population.append(ind)
        else:
            victim = self._victim()
            if not ind.fitness < self.population[victim].fitness:
                return False
            self.population[victim] = ind
        # Stable sort: among equal fitness the earlier member stays ahead.
        self.population.sort(key=lambda m: m.fitness)
        return True

    def _victim(self) -> int:
        policy, k = self.operator.replacement()
        n = len(self.population)
        if policy == "worst" or n < 3 or k >= n - 1:
            return n - 1
        # Index 0 (the best) is left out of the draw: that is the elitism guarantee.
        picks = self.rng.choice(np.arange(1, n), size=max(k, 1), replace=False)
        return int(picks.max())  # the population is sorted, so the largest index is the worst

    def replace_generation(self, offspring: list[Individual]) -> list[bool]:
        """(μ + λ) selection at a generation barrier (the synchronous baseline)."""
        pool = self.population + [
            o for o in offspring if all(o.uid != m.uid for m in self.population)
        ]
        if pool and pool[0].values:
            self.population = pareto_survivors(pool, self.population_size)
        else:
            pool.sort(key=lambda m: m.fitness)
            self.population = pool[: self.population_size]
        kept = {m.uid for m in self.population}
        return [o.uid in kept for o in offspring]

    def get_state(self) -> dict[str, Any]:
        """JSON-serialisable; shares member entries with later states (do not mutate it)."""
        old, cache = self._member_states, {}
        for m in self.population:
            entry = old.get(m.uid)
            cache[m.uid] = entry if entry is not None and entry[0] is m else (m, m.to_state())
        self._member_states = cache
        return {
            "index": self.index,
            "population": [cache[m.uid][1] for m in self.population],
            "design_queue": [p.tolist() for p in self.design_queue],
            "design_name": self.design_name,
            "rng": rng_state(self.rng),
            "operator": self.operator.get_state(),
            "completed": self.completed,
            "completed_at_last_migration": self.completed_at_last_migration,
            "issued": self.issued,
        }

    def set_state(self, s: dict[str, Any]) -> None:
        self.population = [Individual.from_state(m) for m in s["population"]]
        self.design_queue = deque(np.asarray(p, dtype=np.float64) for p in s["design_queue"])
        self.design_name = s["design_name"]
        self.rng = restore_rng(s["rng"])
        self.operator.set_state(s["operator"])
        self.completed = int(s["completed"])
        self.completed_at_last_migration = int(s["completed_at_last_migration"])
        # Snapshots written before islands were shared lack the count; completed is close.
        self.issued = int(s.get("issued", s["completed"]))
