"""Intensification: a would-be incumbent races the incumbent on common seeds before it is one.

The engine keeps a ``Tracker`` of configurations and their complete evaluations (first draws
and re-evaluations alike), and asks ``search.estimate`` which one is the incumbent: the best
pessimistic estimate (its mean plus one standard error at the measured noise). With
``race_length`` R ≥ 2 (``EngineConfig.intensify``), a configuration whose first draw beats
the incumbent's mean is a *challenger*: it is evaluated again on the *race seeds* 0, 1, ...
(``race_seed``: the same seeds for every configuration), and the incumbent is evaluated on
any race seed the challenger reaches that it lacks, so a comparison between them is paired:
the seeds' effect cancels. After each of its race results the challenger

- drops out when its estimated mean is no longer below the incumbent's (no more budget for
  a configuration that only looked good once);
- stops racing once it has R evaluations: ``estimate.incumbent`` then decides;
- else is queued for its next race seed (with the incumbent, if it lacks that seed).

All but one evaluation of each side of a race are on the same seeds, so most of the seeds'
effect cancels from the difference of the means. The decisions use the same estimates as
``best`` (never a second rule), so a challenger that dropped out is never the incumbent.
While the very first race runs, before any repeat exists, the challenger's one draw counts
as the best (nothing has shown yet that the objective is noisy).

What this costs follows the noise: a challenger whose lead is decisive at the measured noise
(``estimate.decisive``: beyond 3 standard errors) is accepted without a race, one that was
only lucky drops out after one repeat, and once the repeats measured no noise at all (a deterministic objective: the pooled
within-configuration std is exactly 0) no race starts, so after the first probe (one race
at a time while the noise is unmeasured: two evaluations) the share of the budget spent on
races is zero. With intensification off (R ≤ 1) nothing here issues a
task, and the tracker keeps only what the plain minimum needs (one configuration), so a
deterministic run issues exactly the tasks it always did.

Once a finite space is exhausted below its budget (every configuration evaluated, at most
``LEFTOVER_LIMIT`` of them: the tracker then keeps them all, with or without races),
``leftover_pick`` spends the rest on re-evaluations on race seeds: a probe of the incumbent
while the noise is unmeasured, nothing on a deterministic objective, else the configuration
with the lowest optimistic bound. On the tuning table (``mlp_digits``, 960 configurations) at
1,000 evaluations it named a better configuration than the luckiest draw on 17 of 40
seeds, a worse one on 9 (docs/noise.md).

Every race task is queued when a result is told and issued through ``Engine._issue``, and all
of this state is in the engine's snapshots: a replay re-creates the same tasks.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evo_engine.search.estimate import (
    Estimate,
    decisive,
    incumbent,
    luckiest,
    make_estimate,
    noise_from,
    rank_key,
)

RACE = "race"
"""The operator name of a race task (a re-evaluation on a common seed)."""
LEFTOVER_LIMIT = 10_000
"""Largest finite space whose every configuration the tracker keeps, so that once the space
is exhausted the budget left can re-evaluate its leaders (``Tracker.leftover_pick``)."""
_MASK64 = (1 << 64) - 1


def race_seed(run_seed: int, j: int) -> int:
    """The objective's seed for race seed ``j``: the same for every configuration of a run.

    SplitMix64's finaliser with a stream constant apart from ``task_seed``'s, so a race seed
    is not any first evaluation's seed by construction of the stream.
    """
    z = (run_seed * 0xD1B54A32D192ED03 + (j + 1) * 0xBF58476D1CE4E5B9 + 0x2545F4914F6CDD1D) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) >> 32


@dataclass
class Record:
    """One configuration's evaluations as the engine was told them."""

    uid: int
    island: int
    genome: list[float]
    values: list[float] = field(default_factory=list)
    by_seed: dict[int, float] = field(default_factory=dict)
    """Race seed → fitness, for paired comparisons."""
    requested: set[int] = field(default_factory=set)
    """Race seeds issued or queued for it (complete, failed or still out)."""
    settled: set[int] = field(default_factory=set)
    """Race seeds whose evaluation came back (complete or not)."""

    @property
    def outstanding(self) -> set[int]:
        return self.requested - self.settled

    def to_state(self) -> list[Any]:
        # Copies, never the live lists: the writer thread serialises a snapshot after the
        # engine has gone on, and a value appended meanwhile would be replayed a second time.
        return [self.uid, self.island, list(self.genome), list(self.values),
                sorted([j, v] for j, v in self.by_seed.items()),
                sorted(self.requested), sorted(self.settled)]

    @classmethod
    def from_state(cls, s: list[Any]) -> Record:
        return cls(int(s[0]), int(s[1]), [float(g) for g in s[2]], [float(v) for v in s[3]],
                   {int(j): float(v) for j, v in s[4]}, {int(j) for j in s[5]},
                   {int(j) for j in s[6]})


@dataclass(frozen=True)
class RacePick:
    """A race task to issue: configuration ``key`` on race seed ``j``."""

    key: str
    record: Record
    j: int


class Tracker:
    """Configurations, their estimates and the races (see the module docstring)."""

    def __init__(self, race_length: int = 0, keep_all: bool = False) -> None:
        self.race_length = race_length
        self.keep_all = keep_all or race_length > 1
        """Keep every configuration (repeats or races on); else only the best one, which is
        all the plain minimum needs (a run of 100,000 evaluations keeps one record)."""
        self.records: dict[str, Record] = {}
        self.races: dict[str, str] = {}
        """Challenger racing now → its opponent, in the order the races started."""
        self.queue: deque[tuple[str, int]] = deque()
        self._estimates: dict[str, Estimate] = {}
        self._best: Estimate | None = None
        self._dirty = False
        self._sum_sq: dict[str, float] = {}
        """Sum of squared deviations of each configuration evaluated more than once."""
        self._dof = 0
        """Their degrees of freedom together: with ``_sum_sq``, the pooled noise in O(repeated)."""

    @property
    def intensify(self) -> bool:
        return self.race_length > 1

    # -- estimates ------------------------------------------------------------------------

    def estimates(self) -> dict[str, Estimate]:
        return self._estimates

    def best(self) -> Estimate | None:
        if self._dirty:
            self._best = incumbent(self._estimates.values())
            self._dirty = False
        return self._best

    def luckiest(self) -> Estimate | None:
        return luckiest(self._estimates.values())

    def noise(self) -> tuple[float, int] | None:
        """``pooled_noise`` of the estimates (the same float: its sum is exact)."""
        return noise_from(self._sum_sq.values(), self._dof)

    def wants_key(self, fitness: float) -> bool:
        """Whether a first draw of ``fitness`` needs its configuration key (cheap check)."""
        if self.keep_all:
            return True
        best = self.best()
        return best is None or fitness < best.mean

    def _update(self, key: str, rec: Record) -> None:
        old = self._estimates.get(key)
        est = self._estimates[key] = make_estimate(key, rec.uid, rec.values)
        self._dof += (est.n - 1) - (0 if old is None else old.n - 1)
        if est.n > 1:
            self._sum_sq[key] = est.sum_sq
        if old is None and est.n == 1 and not self._dirty and self._best is not None:
            # A new configuration's first value leaves the noise, and so every other
            # configuration's rank, as it was: compare it with the incumbent alone (O(1) a
            # first draw, where ranking them all again cost O(n log n) with every one kept).
            noise = self.noise()
            sigma = 0.0 if noise is None else noise[0]
            if rank_key(est, sigma) < rank_key(self._best, sigma):
                self._best = est
        else:
            self._dirty = True

    def _forget(self) -> None:
        self.records.clear()
        self._estimates.clear()
        self._sum_sq.clear()
        self._dof = 0
        self._best = None
        self._dirty = True

    # -- telling --------------------------------------------------------------------------

    def first_draw(self, key: str, uid: int, island: int, genome: np.ndarray,
                   fitness: float) -> None:
        """A new configuration's first complete evaluation; may start a race."""
        before = self.best()
        if not self.keep_all:
            if before is not None and not fitness < before.mean:
                return
            self._forget()
        rec = self.records.get(key)
        if rec is None:
            rec = self.records[key] = Record(uid, island, [float(g) for g in genome])
        elif uid < rec.uid:
            # Issued twice as new (a warm start, a registry lost with a snapshot), told out of
            # order: the configuration is named by its first uid, as the analysis names it.
            rec.uid, rec.island = uid, island
        rec.values.append(float(fitness))
        self._update(key, rec)
        # While no repeat has measured the noise, one race at a time is the probe: a
        # deterministic objective then pays two evaluations, whatever the worker count.
        probing = self.noise() is None and bool(self.races)
        if (self.intensify and before is not None and fitness < before.mean and not probing
                and not self._quiet() and not self._decisive(fitness, before.mean)):
            self.races[key] = before.key
            self._advance(key)

    def repeat(self, key: str, uid: int, island: int, genome: np.ndarray,
               fitness: float | None, race: int | None) -> None:
        """A re-evaluation came back (``race`` = its race seed; None: a plain repeat)."""
        rec = self.records.get(key)
        if rec is None:
            if not self.keep_all:
                return
            rec = self.records[key] = Record(uid, island, [float(g) for g in genome])
        if race is not None:
            rec.settled.add(race)
            if fitness is not None:
                rec.by_seed[race] = float(fitness)
        if fitness is not None:
            rec.values.append(float(fitness))
            self._update(key, rec)
        for c in list(self.races):
            self._advance(c)

    def _decisive(self, fitness: float, incumbent_mean: float) -> bool:
        """A lead so large at the measured noise that no race could overturn it."""
        noise = self.noise()
        return noise is not None and decisive(fitness, 1, incumbent_mean, noise[0])

    def _quiet(self) -> bool:
        """The repeats measured no noise at all: races would buy nothing."""
        noise = self.noise()
        return noise is not None and noise[0] == 0.0

    def _advance(self, key: str) -> None:
        """A challenger's next step, decided once none of its race seeds is out."""
        rec = self.records[key]
        if rec.outstanding:
            return
        if (len(rec.values) >= self.race_length or len(rec.requested) >= self.race_length - 1
                or self._quiet()):
            self._end(key)
            return
        inc = self.best()
        # Its opponent: the incumbent, or while the challenger leads, the one it would oust.
        if inc is not None and inc.key != key:
            self.races[key] = inc.key
        opponent = self.races[key]
        orec = self.records[opponent]
        if orec.outstanding & rec.settled:
            return  # the comparison's other half is still running
        if inc is not None and inc.key != key and rec.settled:
            mine = self._estimates[key].mean
            if not mine < inc.mean:
                self._end(key)  # behind on its mean: no more budget for it
                return
        j = next(i for i in range(self.race_length) if i not in rec.requested)
        if opponent != key and j not in orec.requested:
            orec.requested.add(j)
            self.queue.append((opponent, j))
        rec.requested.add(j)
        self.queue.append((key, j))

    def _end(self, key: str) -> None:
        self.races.pop(key, None)

    # -- after a finite space is exhausted ------------------------------------------------

    def leftover_open(self) -> bool:
        """Whether re-evaluations may follow an exhausted space: every configuration kept (at
        least one), and the noise unmeasured (the probe is still to come) or above 0."""
        if not self.keep_all or not self.records:
            return False
        noise = self.noise()
        return noise is None or noise[0] > 0.0

    def leftover_pick(self) -> RacePick | None:
        """A re-evaluation for budget left once every configuration was evaluated, or None.

        Only with every configuration kept (``keep_all``). While nothing measured the noise,
        the probe: the incumbent on its next race seed, one at a time (None while it is out).
        Repeats that measured no noise at all (a deterministic objective): None, the run
        ends. Else the configuration with the lowest optimistic bound, its mean minus one
        standard error at the measured noise over the evaluations it has or has out (a
        lucky single draw first, then whichever could still be the best), on its next race
        seed: so configurations compared later share seeds, and workers spread over
        contenders instead of all re-evaluating one.
        """
        if not self.leftover_open():
            return None
        noise = self.noise()
        if noise is None:
            if any(r.outstanding for r in self.records.values()):
                return None  # the probe is out
            best = self.best()
            if best is None:
                return None
            key = best.key
        else:
            sigma = noise[0]

            def bound(item: tuple[str, Record]) -> tuple[float, float, int]:
                k, r = item
                est = self._estimates[k]
                tried = est.n + len(r.requested - r.by_seed.keys())
                return est.mean - sigma / math.sqrt(tried), est.mean, r.uid

            key = min(self.records.items(), key=bound)[0]
        rec = self.records[key]
        j = 0
        while j in rec.requested:
            j += 1
        rec.requested.add(j)
        return RacePick(key, rec, j)

    def next_pick(self) -> RacePick | None:
        """The next race task (queued on purpose: each is issued, none dropped)."""
        if not self.queue:
            return None
        key, j = self.queue.popleft()
        return RacePick(key, self.records[key], j)

    # -- state ----------------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        return {
            "records": [[k, r.to_state()] for k, r in self.records.items()],
            "races": [[k, o] for k, o in self.races.items()],
            "queue": [[k, j] for k, j in self.queue],
        }

    def set_state(self, state: Mapping[str, Any] | None, islands: int) -> None:
        state = state or {}
        self._forget()
        for k, s in state.get("records", []):
            rec = Record.from_state(s)
            rec.island %= islands  # islands removed by --force map to k mod n
            self.records[k] = rec
            if rec.values:
                self._update(k, rec)
        self._dirty = True
        self.races = {str(k): str(o) for k, o in state.get("races", [])}
        self.queue = deque((str(k), int(j)) for k, j in state.get("queue", []))


__all__ = ["LEFTOVER_LIMIT", "RACE", "RacePick", "Record", "Tracker", "race_seed"]
