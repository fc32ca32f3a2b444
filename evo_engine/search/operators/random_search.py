"""Random search: every offspring is a uniform point of the cube (the baseline)."""

from __future__ import annotations

from collections.abc import Sequence

from evo_engine.search.messages import Individual
from evo_engine.search.operators.base import Operator, Proposal


class RandomSearch(Operator):
    """Ignores the population and samples the unit cube uniformly."""

    name = "random"

    def propose(self, population: Sequence[Individual]) -> Proposal:
        return Proposal(self.rng.random(self.space.dim), operator=self.name)
