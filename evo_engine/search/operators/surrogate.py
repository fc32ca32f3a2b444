"""Model-based operator: a Gaussian-process surrogate screens many offspring, the best is sent.

For the budgets a SciML study can afford (100–300 evaluations on 32 workers) an evolutionary
operator spends too many evaluations learning where the good region is. This operator keeps
the results of its island (up to ``archive``: the best half, and the rest thinned where they
are densest, see ``_evictee``), fits a GP to them, and for each
idle worker scores a few hundred candidate offspring by expected improvement (EI), sending
the most promising one. The candidates are ES/GA-style offspring of the elite at many step
sizes (local refinement) plus uniform points (global exploration), so the model only decides
*which* of these candidates to evaluate; it does not optimise EI over the space itself.

Asynchronous workers are handled honestly with the *kriging believer*: the genomes still in
flight (the engine passes them in with ``see_in_flight``) join the model with its own
predicted value as a fake observation, so their neighbourhood loses its uncertainty and the
next idle worker is sent somewhere else instead of next to a point already being evaluated.

Types: floats and log floats are modelled in the unit cube (so log parameters in log space),
ints on their integer grid, categoricals one-hot (any two different choices equally far
apart). The loss is modelled after a rank-based (copula) transform to normal scores, which
makes a loss that saturates at 1.0 far from the good region, or has outliers, as easy to
model as a smooth one. Observation noise is a learned white-noise term. A FAILED evaluation
(a training that diverged, an objective that raised or timed out) is kept in the archive as
worse than every result, so the model learns where configurations fail.

Hand-over: a model of normal scores stops paying once the search has converged: near the
optimum the ranks of the archive are mostly noise, the fit explains them as noise, and EI
goes flat (measured on the tuning landscapes: no new best from about 250-300 results on). So
after ``handover`` complete results in a row without a new best (64 by default; pruned ones
do not count) the island is handed to the ES for good, its σ and shape fitted to the spread
of the population's better half;
from then on ``propose`` is the ES's (offspring say ``operator="es"``), cheap, and the model
is no longer fitted. The decision depends only on the results observed, so replay keeps it.

Cost per ``propose`` (the model is ``gp.py``'s): a fixed-kernel GP fit on the archive, one
Cholesky, O(archive³) with the archive capped (256 by default); its extension by the
evaluations in flight (kriging believer) as a block of that Cholesky, the believed ones
capped at ``BELIEVED_IN_FLIGHT`` (64: the island's most recently issued ones); the
candidates' means, and exact standard deviations only for the few candidates whose bound on
expected improvement can still beat the best (``gp.best_candidate``, the same pick as
scoring all). The kernel's hyperparameters are re-fitted (L-BFGS on at most ``FIT_POINTS``
results, warm-started) only after ``REFIT_GROWTH`` (20 %) more results, at least
``REFIT_MIN``. So the cost per ask grows neither with the archive nor with the worker count.
``benchmarks/operator_ask.py`` times tell + ask at 4,096 workers (docs/benchmarks.md: median
~11.5 ms and p99 ~41 ms before ``gp.py``, ~4.8 and ~11 ms with it on one VM; on another,
~3.0 and ~7 ms, then ~2.5 and ~7 ms once the archive was kept as an array; the p99 is the
refits). With hundreds in flight on an island one model picks a batch, one proposal per
``BELIEVED_IN_FLIGHT`` in flight (at most ``BATCH_MAX``), each believing the ones before it,
and the next asks hand it out (``_batch``); below ``2 · BELIEVED_IN_FLIGHT`` in flight every
ask has its own model, as before.
Believing every evaluation in flight
made an ask O((archive + in flight)³): with 4,096 workers on 8 islands, 512 believed points
per island tripled the matrix. The older ones in flight are still never proposed again
(exact repeats are refused against all of them), they only stop pushing the model's
uncertainty away; and with hundreds in flight on one island the 64 newest already cover
where the model last sent workers.

State (JSON): the archive of genomes and losses (≤ ``archive`` entries), the kernel's
hyperparameters, the rest of a batch not yet handed out, the RNG and, once handed over, the
ES's state (σ, C: O(d²)), so a snapshot is O(archive) and a replay that re-asks with the
same state gets the same offspring: the fit is deterministic (no random restarts).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import Field

from evo_engine.search.messages import Individual
from evo_engine.search.operators.base import Operator, OperatorSettings, Proposal, reflect
from evo_engine.search.operators.es import ES, ESSettings
from evo_engine.search.operators.gp import GP, best_candidates, fit_theta
from evo_engine.search.pareto import nondominated_ranks, parego_scalars
from evo_engine.space import Space


class SurrogateSettings(OperatorSettings):
    """What a scenario may set; nothing needs setting."""

    candidates: int = Field(384, ge=8, le=100_000)
    """Offspring scored per ask; the best by expected improvement is sent."""
    explore: float = Field(0.25, ge=0.0, le=1.0)
    """Fraction of the candidates that are uniform points of the cube (the rest are offspring
    of the elite)."""
    archive: int = Field(256, ge=8, le=10_000)
    """Results the model is fitted on at most (the best ones); bounds the cost of an ask."""
    handover: int = Field(64, ge=0)
    """Complete results in a row without a new best after which the model hands the island
    over to the ES for good (0: never; pruned results do not count). See ``Surrogate``."""
    min_points: int | None = Field(None, ge=2)
    """Results needed before the model is used; default d + 2. Before that, and whenever the
    model cannot be fitted, offspring are space-filling random points."""


class _Features:
    """Maps unit-cube genomes to model inputs: ints on their grid, categoricals one-hot."""

    def __init__(self, space: Space) -> None:
        self.cont: list[int] = []
        self.ints: list[tuple[int, float, float, bool, int, int]] = []
        self.cats: list[tuple[int, int]] = []
        for i, (_, p) in enumerate(space.items()):
            if p.kind == "categorical":
                self.cats.append((i, len(p.choices)))
            elif p.kind == "int":
                a, b = p._edges()  # noqa: SLF001 (the Int's own bin edges, read-only)
                self.ints.append((i, a, b, p.log, int(p.lo), int(p.hi)))
            else:
                self.cont.append(i)
        self.width = len(self.cont) + len(self.ints) + sum(k for _, k in self.cats)

    def __call__(self, u: np.ndarray) -> np.ndarray:
        u = np.clip(np.atleast_2d(u), 0.0, 1.0)
        cols = [u[:, self.cont]]
        for i, a, b, log, lo, hi in self.ints:
            x = a + u[:, i] * (b - a)
            v = np.clip(np.floor((np.exp(x) if log else x) + 0.5), lo, hi)
            cols.append((((np.log(v) if log else v) - a) / (b - a))[:, None])
        for i, k in self.cats:
            idx = np.minimum((u[:, i] * k).astype(np.int64), k - 1)
            # 1/√2 makes two different choices 1 apart, like the cube's full range.
            cols.append(np.eye(k)[idx] / math.sqrt(2.0))
        return np.hstack(cols)


def normal_scores(y: np.ndarray) -> np.ndarray:
    """Ranks mapped to standard normal quantiles (ties share their mean rank)."""
    from scipy.special import ndtri  # here, not at the top: 0.3 s for every engine import

    order = np.argsort(y, kind="stable")
    ranks = np.empty(y.size)
    ranks[order] = np.arange(y.size, dtype=np.float64)
    # Equal losses get equal scores: average the ranks within each group of ties.
    _, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    if counts.max() > 1:
        sums = np.bincount(inverse, weights=ranks)
        ranks = sums[inverse] / counts[inverse]
    return ndtri((ranks + 0.5) / y.size)


def expected_improvement(mu: np.ndarray, sd: np.ndarray, best: float) -> np.ndarray:
    """EI below ``best`` for a Gaussian prediction (minimisation)."""
    from scipy.special import ndtr

    sd = np.maximum(sd, 1e-9)
    z = (best - mu) / sd
    return sd * (z * ndtr(z) + np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi))


def _theta_bounds(features: int) -> np.ndarray:
    """log-space bounds of (c, ℓ_1..ℓ_F, noise): c in [1e-2, 1e2], ℓ in [1e-2, 20] (the
    features span [0, 1]), noise in [1e-6, 0.5] (of the normalised targets' variance)."""
    lo = np.r_[1e-2, np.full(features, 1e-2), 1e-6]
    hi = np.r_[1e2, np.full(features, 2e1), 5e-1]
    return np.log(np.column_stack([lo, hi]))


def _rows_among(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Whether each row of ``a`` equals, byte for byte, some row of ``b`` (same width)."""
    if a.dtype != b.dtype or a.shape[1] != b.shape[1] or a.shape[1] == 0:
        raise ValueError(f"rows of {a.dtype} × {a.shape[1]} against {b.dtype} × {b.shape[1]}")
    row = np.dtype((np.void, a.dtype.itemsize * a.shape[1]))
    taken = set(np.ascontiguousarray(b).view(row).ravel().tolist())
    return np.fromiter((k in taken for k in np.ascontiguousarray(a).view(row).ravel().tolist()),
                       dtype=bool, count=a.shape[0])


def _read_only(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def _fit_subset(z: np.ndarray, n: int) -> np.ndarray:
    """Indices of at most n results: the best n/2 and an even spread over the others."""
    if z.size <= n:
        return np.arange(z.size)
    order = np.argsort(z, kind="stable")
    rest = order[n // 2 :]
    return np.concatenate(
        [order[: n // 2], rest[np.linspace(0, rest.size - 1, n - n // 2).astype(int)]]
    )


@functools.cache
def _blas() -> Any:
    """One threadpool controller per process (finding the BLAS libraries costs ~50 ms).

    scipy.linalg is imported first: scipy's wheels bring a BLAS of their own, which a
    controller made before it is loaded would not limit (and a BLAS running on a varying
    number of threads rounds differently, which breaks exact replay).
    """
    import scipy.linalg  # noqa: F401
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


class Surrogate(Operator):
    """GP-screened offspring with a kriging believer for evaluations in flight."""

    name = "surrogate"
    Settings = SurrogateSettings
    settings: SurrogateSettings
    REFIT_MIN = 4
    REFIT_GROWTH = 0.2
    FIT_POINTS = 100
    BELIEVED_IN_FLIGHT = 64
    """Evaluations in flight the kriging believer adds to the model at most (the newest)."""
    BATCH_MAX = 8
    """Proposals one model picks at most (``_batch``: one per ``BELIEVED_IN_FLIGHT`` in
    flight on the island)."""

    def __init__(
        self,
        space: Space,
        rng: np.random.Generator,
        population_size: int,
        settings: SurrogateSettings,
    ) -> None:
        super().__init__(space, rng, population_size, settings)
        self.features = _Features(space)
        self.dim = space.dim
        self.min_points = settings.min_points or self.dim + 2
        self.cat_mask = np.array([p.kind == "categorical" for _, p in space.items()])
        self.levels = np.array(
            [len(p.choices) if p.kind == "categorical" else 0 for _, p in space.items()]
        )
        self.X: list[list[float]] = []
        self.y: list[float] = []
        self.uids: list[int] = []
        self.V: list[list[float] | None] = []
        """Several objectives: each archive entry's minimised values plus its violation (None
        for a pruned one), beside ``X``; ``y`` then holds the first objective (ParEGO)."""
        self._X_array: np.ndarray | None = None
        """``X`` as a read-only array, kept in step with ``X`` (``_archive_X``; not state)."""
        self.theta: list[float] | None = None
        self.n_observed = 0
        self.fitted_at = 0
        self.in_flight: list[np.ndarray] = []
        self.best_seen = math.inf
        self.since_best = 0
        """Complete results told since the best one (pruned ones do not count)."""
        self.es: ES | None = None
        """The ES the island was handed over to, once the model stopped paying."""
        self.handed_over_at: int | None = None
        self.queued: list[tuple[list[float], tuple[int, ...], float]] = []
        """The rest of the last model's batch (genome, parents, EI), proposed first, in
        order (``_batch``); emptied by a new best and by the hand-over."""

    # -- what the model learns from ----------------------------------------------------------

    @property  # type: ignore[misc]
    def wants_in_flight(self) -> bool:  # type: ignore[override]
        """Until the hand-over only: the ES that proposes after it has no use for them, and
        listing them costs the engine a pass over every evaluation in flight per ask (at
        4,096 workers most of an ask's cost once the model no longer runs)."""
        return self.es is None

    def see_in_flight(self, genomes: Sequence[np.ndarray]) -> None:
        # Kept as given (the engine's genomes are float64 arrays): a conversion each was
        # 0.28 ms an ask with 512 in flight per island; ``propose`` stacks them once.
        self.in_flight = list(genomes)

    def observe(self, individual: Individual, accepted: bool) -> None:
        if self.es is not None:  # handed over: the model is not fitted again
            self.es.observe(individual, accepted)
            return
        if individual.values:
            # Several objectives: no incumbent to stall on, so the model never hands over.
            self._add(individual.uid, individual.genome, individual.values[0],
                      [*individual.values, individual.violation])
            return
        told = self.n_observed
        self._add(individual.uid, individual.genome, individual.fitness)
        if self.n_observed > told:
            if individual.fitness < self.best_seen:
                self.best_seen, self.since_best = float(individual.fitness), 0
                self.queued = []  # picked by a model that did not know this result
            else:
                self.since_best += 1

    def observe_pruned(self, individual: Individual, step: int) -> None:
        # Stopped early because it was behind most others at its rung: a partial loss is an
        # optimistic bound on a loss curve that falls, so it is kept at least at the median.
        if self.es is not None:
            self.es.observe_pruned(individual, step)
            return
        done = [v for v in self.y if math.isfinite(v)]
        floor = float(np.median(done)) if done else individual.fitness
        self._add(individual.uid, individual.genome, max(individual.fitness, floor))

    def observe_failed(self, individual: Individual) -> None:
        # A failed evaluation joins the archive as worse than every result (loss inf: the
        # model's rank transform puts it last, ParEGO scores it worst), so expected
        # improvement stops sending workers where trainings diverge. Ignoring failures sent
        # 14 of 24 evaluations of a learning-rate search to lr ≈ 0.1, where every one diverged.
        if self.es is not None:
            self.es.observe_failed(individual)
            return
        self._add(individual.uid, individual.genome, math.inf, failed=True)

    def _add(self, uid: int, genome: np.ndarray, fitness: float,
             vec: list[float] | None = None, failed: bool = False) -> None:
        if not (failed or math.isfinite(fitness)) or uid in self.uids:
            return
        self.n_observed += 1
        row = [float(v) for v in np.asarray(genome, dtype=np.float64)]
        self.X.append(row)
        if self._X_array is not None:
            self._X_array = _read_only(np.vstack([self._X_array, [row]]))
        self.y.append(float(fitness))
        self.uids.append(int(uid))
        self.V.append(None if vec is None else [float(v) for v in vec])
        if len(self.y) > self.settings.archive:
            drop = self._evictee()
            for seq in (self.X, self.y, self.uids, self.V):
                del seq[drop]
            self._X_array = _read_only(np.delete(self._archive_X(), drop, axis=0))

    @property
    def _multi(self) -> bool:
        return any(v is not None for v in self.V)

    def _pareto_ranks(self) -> np.ndarray:
        """Several objectives: each archive entry's front (pruned entries last)."""
        m = next(len(v) for v in self.V if v is not None)
        A = np.array([v if v is not None else [np.inf] * m for v in self.V])
        cv = np.where(np.isfinite(A[:, -1]), A[:, -1], np.inf)
        F = np.where(np.isfinite(A[:, :-1]), A[:, :-1], 0.0)
        return nondominated_ranks(F, cv).astype(np.float64)

    def _evictee(self) -> int:
        """The archive entry to forget: from the worse half, the one nearest another entry.

        Keeping only the best results (as this operator first did) stalled the search: far
        from them the model knew nothing, predicted the archive's median with full
        uncertainty, so expected improvement sent every worker to unexplored corners; their
        poor results were the worst of the archive and dropped at once, so the model never
        learnt that those corners are bad. Thinning the worse half where it is densest keeps
        those results as fences around the good region, and the best half exactly.
        """
        y = self._pareto_ranks() if self._multi else np.asarray(self.y)
        order = np.argsort(y, kind="stable")
        worse = order[y.size // 2 :]
        from scipy.spatial.distance import cdist  # differences, not a Gram matrix: a repeat is 0

        f = self.features(self._archive_X())
        d2 = cdist(f[worse], f, "sqeuclidean")
        d2[np.arange(worse.size), worse] = np.inf
        nearest = d2.min(axis=1)
        # The most crowded; among equally crowded (exact repeats), the worse result.
        pick = np.lexsort((-y[worse], nearest))[0]
        return int(worse[pick])

    # -- proposing ---------------------------------------------------------------------------

    def propose(self, population: Sequence[Individual]) -> Proposal:
        if self.es is None and self._stalled():
            self._hand_over(population)
        if self.es is not None:
            return self.es.propose(population)
        if self.queued:
            genome, parents, ei = self.queued.pop(0)
            return Proposal(np.array(genome), parents=parents, info={"ei": ei, "queued": True},
                            operator=self.name)
        X, y = self._training_set(population)
        pending = np.array(self.in_flight, dtype=np.float64).reshape(-1, self.dim)
        if np.isfinite(y).sum() < self.min_points:
            # Too few results to model (failures, loss inf, do not count): keep away from
            # everything tried, failures included.
            return self._space_filling(X, pending)
        cands, parents = self._candidates(X, y, population)
        # The best-scoring candidate that is not a configuration already evaluated or in
        # flight (ints and categoricals make exact repeats likely near the incumbent).
        fresh = ~_rows_among(self.features(cands).round(9),
                             self.features(np.vstack([X, pending])).round(9))
        try:
            found = self._score(X, y, pending, cands, fresh, self._batch(pending))
        except (np.linalg.LinAlgError, ValueError):
            return self._space_filling(X, pending)
        if not found:
            return self._space_filling(X, pending)
        self.queued = [(cands[i].tolist(), parents[i], ei) for i, ei in found[1:]]
        i, ei = found[0]
        return Proposal(cands[i], parents=parents[i], info={"ei": ei}, operator=self.name)

    def _batch(self, pending: np.ndarray) -> int:
        """How many proposals one model picks: one per ``BELIEVED_IN_FLIGHT`` evaluations in
        flight on the island (at most ``BATCH_MAX``; one below ``2 · BELIEVED_IN_FLIGHT``).

        With hundreds in flight on an island (4,096 workers on 8 islands: 512 each) a model
        per ask was most of the coordinator's time per result and all of its p99
        (``benchmarks/operator_ask.py``). A batch is picked as that many asks in a row would
        be, each believing the ones before it (``gp.best_candidates``); what it misses are
        the results that arrive while it is being handed out: a few among hundreds in flight,
        and a new best empties it. One objective only: ParEGO draws a weight vector per
        model, and a batch under one vector would cover less of the front."""
        if self._multi:
            return 1
        return max(1, min(self.BATCH_MAX, pending.shape[0] // self.BELIEVED_IN_FLIGHT))

    def _stalled(self) -> bool:
        patience = self.settings.handover
        # Complete results only: under ASHA most results are pruned, and counting them handed
        # an island over after 146 results with a best of 0.95 (early_stopping.py, seed 0).
        return patience > 0 and self.since_best >= patience

    def _hand_over(self, population: Sequence[Individual]) -> None:
        """Give the island to the ES, its search distribution fitted to the population.

        The ES's step and shape start from the spread of the population's better half (per
        float/int gene), not from its default first step, which is the scale of a fresh
        design and would waste evaluations shrinking back to where the model had got.
        """
        es = ES(
            self.space,
            np.random.default_rng(int(self.rng.integers(2**63))),
            self.population_size,
            ESSettings(),
        )
        cont = es.cont
        half = [
            np.asarray(m.genome, dtype=np.float64)
            for m in population[: max(2, len(population) // 2)]
        ]
        if cont.size and len(half) >= 2:
            var = np.var(np.array(half)[:, cont], axis=0)
            mean_var = float(var.mean())
            if mean_var > 0:
                es.sigma = float(
                    np.clip(math.sqrt(mean_var), 10 * es.settings.sigma_min, es.sigma0)
                )
                shape = np.clip(var / mean_var, 1e-2, 1e2)
                es.cov = np.diag(shape * (cont.size / shape.sum()))
        self.es, self.handed_over_at = es, self.n_observed
        self.in_flight = []  # no longer looked at (nor kept in the state)
        self.queued = []

    def _archive_X(self) -> np.ndarray:
        """``X`` as an array: made once, then kept in step by ``_add`` (a conversion of the
        list was a tenth of a model ask at 4,096 workers)."""
        if self._X_array is None:
            self._X_array = _read_only(np.array(self.X, dtype=np.float64).reshape(-1, self.dim))
        return self._X_array

    def _newcomers(self, population: Sequence[Individual]) -> list[Individual]:
        """Members not in the archive (migrants, a restored population): they join the
        training set after the archive, in this order."""
        known = set(self.uids)
        return [m for m in population if m.uid not in known]

    def _training_set(self, population: Sequence[Individual]) -> tuple[np.ndarray, np.ndarray]:
        extra = self._newcomers(population)
        X = self._archive_X()
        if extra:
            X = np.vstack([X, [np.asarray(m.genome, dtype=np.float64) for m in extra]])
        y = np.array(self.y + [m.fitness for m in extra])
        if self._multi:
            y = self._parego(extra)
        return X.reshape(-1, self.dim), y

    def _parego(self, extra: Sequence[Individual]) -> np.ndarray:
        """ParEGO's training values: the archive's objective vectors scalarised by augmented
        Tchebycheff under one weight vector per ask, drawn uniformly from the simplex by this
        island's generator (so a replay draws the same one). Pruned entries score worst."""
        rows = self.V + [[*m.values, m.violation] if m.values else None for m in extra]
        m = next(len(v) for v in rows if v is not None) - 1
        weights = self.rng.dirichlet(np.ones(m))
        done = [i for i, v in enumerate(rows) if v is not None]
        A = np.array([rows[i] for i in done])
        s = parego_scalars(A[:, :-1], A[:, -1], weights)
        y = np.full(len(rows), float(s.max()) + 1.0)
        y[done] = s
        return y

    def _space_filling(self, X: np.ndarray, pending: np.ndarray) -> Proposal:
        """The uniform candidate farthest from everything evaluated or in flight (maximin)."""
        cands = self.rng.random((64, self.dim))
        taken = np.vstack([X, pending])
        if taken.shape[0] == 0:
            return Proposal(cands[0], operator=self.name)
        f = self.features(cands)
        t = self.features(taken)
        d2 = ((f[:, None, :] - t[None, :, :]) ** 2).sum(-1).min(axis=1)
        return Proposal(cands[int(np.argmax(d2))], operator=self.name)

    def _candidates(
        self, X: np.ndarray, y: np.ndarray, population: Sequence[Individual]
    ) -> tuple[np.ndarray, list[tuple[int, ...]]]:
        n = self.settings.candidates
        n_global = int(round(self.settings.explore * n))
        n_local = n - n_global
        order = np.argsort(y, kind="stable")
        k = int(min(max(3, y.size // 10), 16, np.isfinite(y).sum()))  # failures are no elite
        elite = order[:k]
        w = np.log(k + 0.5) - np.log(np.arange(1, k + 1))
        w /= w.sum()
        pick = elite[self.rng.choice(k, size=n_local, p=w)]
        base = X[pick]
        # Steps from 0.1 % to 30 % of the range, log-uniform: fine refinement next to the
        # incumbent and larger jumps both get scored.
        scale = np.exp(self.rng.uniform(math.log(1e-3), math.log(0.3), size=(n_local, 1)))
        # Half the offspring move every gene, half a random subset (about two genes), as a
        # GA's mutation does: in 10+ dimensions full moves rarely improve.
        subset = self.rng.random((n_local, self.dim)) < min(1.0, 2.0 / self.dim)
        full = self.rng.random((n_local, 1)) < 0.5
        move = full | subset
        step = self.rng.normal(size=(n_local, self.dim)) * scale * move
        local = reflect(base + step)
        if self.cat_mask.any():
            # A categorical keeps its parent's choice, or jumps to a uniform one with a
            # probability that grows with the step size.
            c = self.cat_mask
            p_jump = np.maximum(scale, 1.0 / self.dim)
            jump = (self.rng.random((n_local, int(c.sum()))) < p_jump) & move[:, c]
            local[:, c] = np.where(jump, self.rng.random((n_local, int(c.sum()))), base[:, c])
        cands = np.vstack([local, self.rng.random((n_global, self.dim))])
        uid_of = self.uids + [m.uid for m in self._newcomers(population)]
        parents = [(uid_of[int(i)],) for i in pick] + [()] * n_global
        return cands, parents

    def _score(
        self, X: np.ndarray, y: np.ndarray, pending: np.ndarray, cands: np.ndarray,
        fresh: np.ndarray, q: int,
    ) -> list[tuple[int, float]]:
        # Matrices of a few hundred rows: BLAS threads cost more than they save (10x on a
        # loaded node), and the coordinator must leave the cores to the workers.
        with _blas().limit(limits=1):
            gp, best = self._model(X, y, pending)
            # sd includes the learned white noise: a point next to the incumbent keeps some
            # EI (re-measuring it is worth something under noise); exact repeats are not
            # eligible.
            return best_candidates(gp, self.features(cands), best, fresh, expected_improvement,
                                   q)

    def _model(self, X: np.ndarray, y: np.ndarray, pending: np.ndarray) -> tuple[GP, float]:
        """The GP of the normal scores (the believer's observations included) and the best
        normal score."""
        F = self.features(X)
        z = normal_scores(y)
        width = F.shape[1] + 2
        warm = self.theta is not None and len(self.theta) == width
        theta = (np.asarray(self.theta) if warm else
                 np.log(np.r_[1.0, np.full(F.shape[1], 0.5), 1e-2]))
        # Hyperparameters are re-fitted after every REFIT_GROWTH more results (at least
        # REFIT_MIN); in between only the fixed-kernel GP is refitted (one Cholesky).
        due = self.fitted_at + max(self.REFIT_MIN, int(self.REFIT_GROWTH * self.fitted_at))
        if not warm or self.n_observed >= due:
            # Hyperparameters from at most FIT_POINTS results (the best half of them and an
            # even spread of the rest): the gradient costs O(n² · features).
            sub = _fit_subset(z, self.FIT_POINTS)
            with warnings.catch_warnings():
                # A line search through a kernel that is not positive definite (the
                # likelihood's inf) may warn; the fit is still usable, and under -W error a
                # warning must not end the run.
                warnings.simplefilter("ignore")
                theta = fit_theta(theta, _theta_bounds(F.shape[1]), F[sub], z[sub])
            self.fitted_at = self.n_observed
        self.theta = [float(t) for t in theta]
        gp = GP(np.exp(theta), F, z)
        if pending.shape[0]:
            # Kriging believer: in-flight points are observed at the model's own prediction;
            # the newest BELIEVED_IN_FLIGHT only, so the matrix does not grow with the workers.
            gp = gp.believing(self.features(pending[-self.BELIEVED_IN_FLIGHT :]))
        return gp, float(z.min())

    # -- state -------------------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        return {
            **super().get_state(),
            "X": [list(r) for r in self.X],
            "y": [v if math.isfinite(v) else None for v in self.y],  # None: a failure
            "uids": list(self.uids),
            **({"V": list(self.V)} if self._multi else {}),
            "theta": self.theta,
            "n_observed": self.n_observed,
            "fitted_at": self.fitted_at,
            "in_flight": [np.asarray(g, dtype=np.float64).tolist() for g in self.in_flight],
            "best_seen": self.best_seen if math.isfinite(self.best_seen) else None,
            "since_best": self.since_best,
            "handed_over_at": self.handed_over_at,
            "queued": [[g, list(p), ei] for g, p, ei in self.queued],
            "es": None if self.es is None else self.es.get_state(),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self.X = [[float(v) for v in r] for r in state["X"]]
        self._X_array = None
        self.y = [math.inf if v is None else float(v) for v in state["y"]]
        self.uids = [int(u) for u in state["uids"]]
        saved = state.get("V")
        self.V = ([None if v is None else [float(x) for x in v] for v in saved] if saved
                  else [None] * len(self.uids))
        self.theta = None if state["theta"] is None else [float(t) for t in state["theta"]]
        self.n_observed = int(state["n_observed"])
        self.fitted_at = int(state["fitted_at"])
        self.in_flight = [np.asarray(g, dtype=np.float64) for g in state["in_flight"]]
        best = state.get("best_seen")
        self.best_seen = math.inf if best is None else float(best)
        self.since_best = int(state.get("since_best", 0))
        at = state.get("handed_over_at")
        self.handed_over_at = None if at is None else int(at)
        self.queued = [([float(v) for v in g], tuple(int(u) for u in p), float(ei))
                       for g, p, ei in state.get("queued", [])]
        self.es = None
        if state.get("es") is not None:
            self.es = ES(self.space, self.rng, self.population_size, ESSettings())
            self.es.set_state(state["es"])
