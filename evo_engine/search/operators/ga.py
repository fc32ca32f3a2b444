"""Genetic algorithm: tournament selection, crossover and typed mutation in the unit cube."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import Field

from evo_engine.search.messages import Individual
from evo_engine.search.operators.base import Operator, OperatorSettings, Proposal, reflect
from evo_engine.search.operators.mutation import TypedMutation
from evo_engine.space import Space


class GASettings(OperatorSettings):
    """What a scenario may set for the GA; every field has a default that works untuned."""

    tournament_size: int = Field(3, ge=1)
    crossover: Literal["uniform", "two_point", "none"] = "uniform"
    crossover_rate: float = Field(0.9, ge=0.0, le=1.0)
    mutation_rate: float | None = Field(None, ge=0.0, le=1.0)
    """Per-gene mutation probability; default 1/d (one gene per offspring on average)."""
    mutation_sigma: float = Field(0.1, gt=0.0, le=1.0)
    """Gaussian step for float and int genes, in unit-cube coordinates (a tenth of the range)."""
    tree_base: float = Field(2.0, gt=1.0)
    """b in P(move to l) ∝ 2^(−log_b hops): larger b explores more distant categorical choices."""
    replacement: Literal["worst", "subset"] = "worst"
    """Who an offspring may replace: the worst member, or the worst of a random subset."""
    replacement_size: int = Field(3, ge=1)
    """k, the size of the random subset when ``replacement="subset"``."""


class GA(Operator):
    """A steady-state GA: two tournament winners, crossover, then typed per-gene mutation.

    Elitism comes from the island's steady-state replacement, which never removes the best
    member. At least one gene is mutated per offspring, so a child never merely copies its
    parents (a wasted evaluation when each one costs a GPU-hour).
    """

    name = "ga"
    Settings = GASettings
    settings: GASettings

    def __init__(
        self, space: Space, rng: np.random.Generator, population_size: int, settings: GASettings
    ) -> None:
        super().__init__(space, rng, population_size, settings)
        self.mutation = TypedMutation(space, settings.tree_base)
        self._sigma = np.full(space.dim, settings.mutation_sigma)

    def replacement(self) -> tuple[str, int]:
        s = self.settings
        return ("subset", s.replacement_size) if s.replacement == "subset" else ("worst", 0)

    def _tournament(self, population: Sequence[Individual]) -> Individual:
        n = len(population)
        k = min(self.settings.tournament_size, n)
        # k distinct contestants; redrawing the rare collision is far cheaper than
        # rng.choice(replace=False), which permutes the whole population on every call, and
        # scaled uniforms cost a fifth of rng.integers (this runs twice per offspring).
        picks = {int(u * n) for u in self.rng.random(k).tolist()}
        while len(picks) < k:
            picks.add(int(self.rng.random() * n))
        # The population is sorted best first, so the smallest index wins.
        return population[min(picks)]

    def _crossover(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        s = self.settings
        d = a.shape[0]
        if s.crossover == "none" or d < 2 or self.rng.random() >= s.crossover_rate:
            return a.copy()
        if s.crossover == "uniform":
            return np.where(self.rng.random(d) < 0.5, a, b)
        # Two distinct cut points in 0..d, without rng.choice's permutation.
        i, j = (int(u) for u in self.rng.random(2) * np.array([d + 1, d]))
        i, j = sorted((i, j + (j >= i)))
        child = a.copy()
        child[i:j] = b[i:j]
        return child

    def _mutate(self, g: np.ndarray) -> np.ndarray:
        s = self.settings
        d = g.shape[0]
        rate = s.mutation_rate if s.mutation_rate is not None else 1.0 / d
        mask = self.rng.random(d) < rate
        if not mask.any() and rate > 0:
            mask[min(int(self.rng.random() * d), d - 1)] = True
        return self.mutation.gaussian(g, self._sigma, mask, self.rng)

    def propose(self, population: Sequence[Individual]) -> Proposal:
        a = self._tournament(population)
        b = self._tournament(population)
        child = self._mutate(self._crossover(np.asarray(a.genome), np.asarray(b.genome)))
        parents = (a.uid,) if a.uid == b.uid else (a.uid, b.uid)
        return Proposal(reflect(child), parents=parents, operator=self.name)
