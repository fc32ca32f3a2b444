"""Asynchronous evolution strategy with step sizes that adapt themselves, in the unit cube.

Working in the encoding means a log-scaled learning rate mutates in log space and every gene's
step is a fraction of its range, so one default serves a learning rate in (1e-5, 1e-3) and a
decay in (1e-2, 0.5) at once. Two adaptation schemes, both steady state and indifferent to the
order in which results arrive:

``covariance`` (the default; see ``benchmarks/quality.py`` for why)
    A steady-state, CMA-style search distribution per island: offspring are drawn from
    N(m, σ² C) around the weighted mean m of the better half of the population. The global σ
    follows a success rule (an offspring that enters the population is a success; σ grows
    when successes are more frequent than ``success_target``), and the shape C learns from the
    steps of successful offspring (a rank-one update, trace kept at d so σ alone sets the
    scale). Each offspring carries its own step, so a result that arrives late still updates
    C correctly; σ and C live in the operator state.

``self``
    Classic self-adaptation (Schwefel): each individual carries its own σ vector, an offspring
    takes the geometric mean of its parents' σ, perturbs it log-normally and then mutates with
    it, so good step sizes survive with the individuals that used them. No island state.

Categorical genes take part through the same σ: a categorical changes with the probability
that a Gaussian step of its σ would leave its bin (but at least 1/(2d)), and moves by tree
distance (see ``mutation.py``).

For analysis, every offspring's ``info["sigma"]`` is its per-gene step vector (length d, unit-
cube units); under ``covariance`` ``info["step"]`` is also there: the step taken from the mean
over the float and int genes, in units of σ.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field

from evo_engine.search.messages import Individual
from evo_engine.search.operators.base import Operator, OperatorSettings, Proposal, reflect
from evo_engine.search.operators.mutation import TypedMutation, bin_exit_probability
from evo_engine.space import Space


class ESSettings(OperatorSettings):
    """What a scenario may set for the ES. Nothing needs setting: defaults follow the space."""

    adaptation: Literal["covariance", "self"] = "covariance"
    sigma0: float | None = Field(None, gt=0.0, le=1.0)
    """Initial step in unit-cube coordinates; default ``default_sigma0(d)``."""
    sigma_min: float = Field(1e-5, gt=0.0, lt=1.0)
    """Below this σ the covariance scheme restarts its step (σ0, C = I) around the elite."""
    success_target: float = Field(0.25, gt=0.0, lt=1.0)
    """Covariance scheme: the fraction of offspring entering the population σ aims for."""
    parents: int = Field(2, ge=1)
    """Self-adaptation: parents recombined per offspring (intermediate for continuous genes)."""
    tree_base: float = Field(2.0, gt=1.0)
    """b of the categorical tree-distance mutation, as in the GA."""


def default_sigma0(dim: int) -> float:
    """A first step of about a third of the range in low dimension, shrinking as 1/√d.

    The whole step's length then stays near 0.3–0.6 of the cube's side however many genes
    there are, which is the scale on which the initial design has spread the population.
    """
    return min(0.3, 0.6 / math.sqrt(dim))


class ES(Operator):
    """Steady-state ES with adaptive per-parameter σ (see the module docstring)."""

    name = "es"
    Settings = ESSettings
    settings: ESSettings
    # Constants of the covariance scheme, relative to the (1+1)-CMA-ES's textbook values and
    # chosen on benchmarks/quality.py (see the closing note of issue 4):
    DAMPING = 2.0
    """σ's damping, × (1 + d/2): 32 results told per round from the same σ would otherwise
    push it around in steps too large to keep the success rate near its target."""
    C1 = 3.0
    """C's rank-one rate, × 2/((d+1.3)² + μ/2): only successes update C, about a quarter of
    the offspring, so the per-success rate is higher than CMA's per-sample one."""
    CAT_FLOOR = 0.5
    """A categorical gene changes with probability at least CAT_FLOOR / d, so a converged σ
    does not freeze a choice made early (the best activation may only show late)."""

    def __init__(
        self, space: Space, rng: np.random.Generator, population_size: int, settings: ESSettings
    ) -> None:
        super().__init__(space, rng, population_size, settings)
        self.mutation = TypedMutation(space, settings.tree_base)
        self.dim = space.dim
        self.sigma0 = settings.sigma0 if settings.sigma0 is not None else default_sigma0(self.dim)
        self.cont = np.flatnonzero(self.mutation.continuous)
        self.cat = np.flatnonzero(~self.mutation.continuous)
        self.levels = np.array(
            [len(p.choices) if p.kind == "categorical" else 0 for _, p in space.items()]
        )
        n = self.cont.size
        # Covariance scheme state (unused, but harmless, under self-adaptation).
        self.sigma = self.sigma0
        self.cov = np.eye(n)
        self.restarts = 0
        self.successes = 0
        self.observed = 0
        self._eig: tuple[np.ndarray, np.ndarray] | None = None
        # Learning rates after the (1+1)-CMA-ES's: σ's damping grows with d, C's rank-one
        # rate falls like 1/d² (and with the population's size).
        self.damping = self.DAMPING * (1.0 + self.dim / 2.0)
        self.c1 = self.C1 * 2.0 / ((n + 1.3) ** 2 + population_size / 2)

    # -- proposing ----------------------------------------------------------------------

    def propose(self, population: Sequence[Individual]) -> Proposal:
        if self.settings.adaptation == "self":
            return self._propose_self(population)
        return self._propose_covariance(population)

    def _mutate_categoricals(self, genome: np.ndarray, sigma: np.ndarray) -> None:
        if self.cat.size == 0:
            return
        p = np.maximum(
            bin_exit_probability(sigma[self.cat], self.levels[self.cat]), self.CAT_FLOOR / self.dim
        )
        move = self.rng.random(self.cat.size) < p
        for i, m in zip(self.cat, move):
            if m:
                genome[i] = self.mutation.categorical(int(i), float(genome[i]), self.rng)

    def _propose_self(self, population: Sequence[Individual]) -> Proposal:
        rho = min(self.settings.parents, len(population))
        picks = self.rng.choice(len(population), size=rho, replace=False)
        parents = [population[int(i)] for i in picks]
        genomes = np.array([np.asarray(p.genome) for p in parents])
        log_sigmas = np.array([np.log(self._sigma_of(p)) for p in parents])
        child = genomes.mean(axis=0)
        if self.cat.size:
            # Discrete recombination for categoricals: averaging two choices means nothing.
            donor = self.rng.integers(rho, size=self.cat.size)
            child[self.cat] = genomes[donor, self.cat]
        d = self.dim
        tau_global, tau_gene = 1.0 / math.sqrt(2.0 * d), 1.0 / math.sqrt(2.0 * math.sqrt(d))
        sigma = np.exp(
            log_sigmas.mean(axis=0)
            + tau_global * self.rng.normal()
            + tau_gene * self.rng.normal(size=d)
        )
        sigma = np.clip(sigma, self.settings.sigma_min, 1.0)
        child[self.cont] = reflect(
            child[self.cont] + sigma[self.cont] * self.rng.normal(size=self.cont.size)
        )
        self._mutate_categoricals(child, sigma)
        return Proposal(
            reflect(child),
            parents=tuple(p.uid for p in parents),
            info={"sigma": sigma},
            operator=self.name,
        )

    def _sigma_of(self, ind: Individual) -> np.ndarray:
        s = ind.info.get("sigma")
        if s is None or np.shape(s) != (self.dim,):
            # Design points and migrants from other operators start with the default step.
            return np.full(self.dim, self.sigma0)
        return np.clip(np.asarray(s, dtype=np.float64), self.settings.sigma_min, 1.0)

    def _weights(self, n: int) -> np.ndarray:
        mu = max(1, n // 2)
        w = math.log(mu + 0.5) - np.log(np.arange(1, mu + 1))
        return w / w.sum()

    def _eigen(self) -> tuple[np.ndarray, np.ndarray]:
        if self._eig is None:
            vals, vecs = np.linalg.eigh(self.cov)
            self._eig = (np.sqrt(np.maximum(vals, 1e-20)), vecs)
        return self._eig

    def _propose_covariance(self, population: Sequence[Individual]) -> Proposal:
        w = self._weights(len(population))
        elite = np.array([np.asarray(population[i].genome) for i in range(w.size)])
        # Categoricals come from one elite member, drawn with the recombination weights.
        donor = int(self.rng.choice(w.size, p=w))
        child = elite[donor].copy()
        step = np.zeros(self.cont.size)
        if self.cont.size:
            mean = w @ elite[:, self.cont]
            scale, basis = self._eigen()
            y = basis @ (scale * self.rng.normal(size=self.cont.size))
            child[self.cont] = reflect(mean + self.sigma * y)
            # The step actually taken (after reflection) is what C should learn from.
            step = (child[self.cont] - mean) / self.sigma
        sigma = np.full(self.dim, self.sigma)
        sigma[self.cont] = self.sigma * np.sqrt(np.diag(self.cov))
        self._mutate_categoricals(child, sigma)
        parents = tuple(population[i].uid for i in range(w.size))
        return Proposal(
            reflect(child), parents=parents, info={"sigma": sigma, "step": step}, operator=self.name
        )

    # -- adapting -----------------------------------------------------------------------

    def observe(self, individual: Individual, accepted: bool) -> None:
        if self.settings.adaptation != "covariance":
            return
        step = individual.info.get("step")
        if step is None or np.shape(step) != (self.cont.size,):
            return  # a design point or another operator's offspring: no step to learn from
        self.observed += 1
        self.successes += int(accepted)
        p = self.settings.success_target
        self.sigma *= math.exp((float(accepted) - p) / (self.damping * (1.0 - p)))
        self.sigma = min(self.sigma, 1.0)
        n = self.cont.size
        if accepted and n:
            y = np.asarray(step, dtype=np.float64)
            cov = (1.0 - self.c1) * self.cov + self.c1 * np.outer(y, y)
            trace = float(np.trace(cov))
            if math.isfinite(trace) and trace > 0:
                self.cov = cov * (n / trace)
                self._eig = None
        if self.sigma < self.settings.sigma_min:
            # Converged (or stuck): search again around the elite at the initial scale.
            self.sigma = self.sigma0
            self.cov = np.eye(n)
            self._eig = None
            self.restarts += 1

    def observe_pruned(self, individual: Individual, step: int) -> None:
        # A pruned offspring was behind most others at its rung: it would not have entered
        # the population. Counted as a failure (its partial fitness unused), so the success
        # rate is not measured on survivors only, which would grow σ without bound.
        self.observe(individual, accepted=False)

    def observe_failed(self, individual: Individual) -> None:
        # The same holds for an offspring that failed (diverged, non-finite, crashed): it did
        # not enter the population. Ignored, σ adapted on the offspring that did not fail, so
        # next to a failing region (a learning rate that diverges) it stayed large and kept
        # sending workers there.
        self.observe(individual, accepted=False)

    # -- state --------------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        return {
            **super().get_state(),
            "sigma": self.sigma,
            "cov": self.cov.tolist(),
            "restarts": self.restarts,
            "successes": self.successes,
            "observed": self.observed,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self.sigma = float(state["sigma"])
        self.cov = np.asarray(state["cov"], dtype=np.float64).reshape(
            self.cont.size, self.cont.size
        )
        self.restarts = int(state["restarts"])
        self.successes = int(state["successes"])
        self.observed = int(state["observed"])
        self._eig = None
