"""Population-based training (Jaderberg et al. 2017), asynchronous, behind ``Engine._issue``.

Each island holds ``population_size`` *members*. A member trains in intervals of
``interval`` steps (e.g. epochs); every interval is one task with its own uid and seed, the
uid of the interval whose checkpoint it starts from (``Task.pbt_parent``) and the step it
starts at (``Task.step``). There is no barrier: when a member's interval comes back it joins
a FIFO of ready members, and the next ``Engine._issue`` decides that member's next interval
from the engine's state alone (so a replay on ``--resume`` decides the same):

* the member's score is ranked among the scores its island's members reached at the *same*
  training step, plus the latest scores of members one interval behind (which can only rank
  it better: no member is sent to exploit because others trained longer); with at least
  ``ceil(1/quantile)`` scores there, a member in the worst ``quantile`` *exploits* one of the
  best ``quantile`` members drawn at random (among those holding a checkpoint: one that
  started again from fresh weights has none to give): it takes that member's current
  checkpoint (its weights, optimizer and scheduler state), step and hyperparameters, and
  *explores* them;
* otherwise it *continues* from its own checkpoint with its own hyperparameters;
* a failed interval (a diverged training, a missing checkpoint file) exploits the island's
  best member, or, with none, starts the member again from fresh weights and a new point.

Explore is the typed, log-aware mutation the GA and ES use (``operators/mutation.py``):
"perturb" moves every explorable gene by a Gaussian step of ``sigma`` in the unit cube (so a
log-scaled learning rate moves by a factor, an int lands on another int, a categorical jumps
with the probability a step of ``sigma`` leaves its bin); "resample" draws each explorable gene
afresh with probability ``resample_probability`` and perturbs the others. Parameters named in
``fixed`` (architecture: weights cannot change shape) are never explored; an exploit copies
them with the weights.

With islands and migration, every ``migration_interval``-th decision on an island also ranks
its neighbours' members at that step: an exploit of one of them brings its weights across
(recorded as a migration when that interval's result is told).

Checkpoints: a member *holds* the checkpoint its weights live in (the parent of its interval
in flight, or its last complete interval). A checkpoint no member holds can never be loaded
again; ``drain_released`` hands such uids to the job, which deletes the files once the results
that released them are durable. The best interval's checkpoint is held as well (the run's
result). So at most one checkpoint per member plus the best one is live, plus one being
written per interval in flight: at most 2 x islands x population_size + 1 files.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from evo_engine.search.island import Island
from evo_engine.search.messages import frozen_genome
from evo_engine.search.operators.base import restore_rng, rng_state
from evo_engine.search.operators.mutation import TypedMutation, bin_exit_probability
from evo_engine.space import Categorical, Space

START, CONTINUE, EXPLOIT, RESTART = "pbt:start", "pbt:continue", "pbt:exploit", "pbt:restart"


@dataclass(frozen=True)
class PBTConfig:
    """The PBT settings (``Scenario.pbt``); see the module docstring."""

    interval: int = 1
    quantile: float = 0.25
    explore: Literal["perturb", "resample"] = "perturb"
    sigma: float = 0.1
    resample_probability: float = 0.25
    fixed: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.interval < 1:
            raise ValueError(f"pbt interval must be >= 1, got {self.interval}")
        if not 0.0 < self.quantile <= 0.5:
            raise ValueError(f"pbt quantile must be in (0, 0.5], got {self.quantile}")
        if self.explore not in ("perturb", "resample"):
            raise ValueError(f"pbt explore must be 'perturb' or 'resample', got {self.explore!r}")

    def describe(self) -> dict[str, Any]:
        return {"interval": self.interval, "quantile": self.quantile, "explore": self.explore,
                "sigma": self.sigma, "resample_probability": self.resample_probability,
                "fixed": list(self.fixed)}

    @property
    def need(self) -> int:
        """Scores at one step before anyone is ranked: enough for one in the worst quantile."""
        return max(2, math.ceil(1.0 / self.quantile - 1e-9))


def interval_stop(step: int, info: dict[str, Any]) -> int:
    """The step an interval starting at ``step`` trains to: by its own length, as its worker
    trains it (``info["interval"]``), which a resume under --force may have changed since."""
    return step + int(info["interval"])


@dataclass
class Member:
    """One PBT member: where its weights are and with which hyperparameters they were trained."""

    index: int
    island: int
    ckpt: int = -1
    """uid of the checkpoint this member holds (-1: fresh weights)."""
    genome: list[float] = field(default_factory=list)
    """The genome the next interval continues with (the held checkpoint's, explored or not)."""
    end_step: int = 0
    """Training steps behind the held checkpoint."""
    fitness: float | None = None
    """The held checkpoint's score (None: none yet)."""
    ckpt_island: int = -1
    """The island whose interval wrote the held checkpoint (-1: fresh weights). Not always
    this member's: after an exploit across islands it holds the donor island's checkpoint
    until its own interval finishes, and a member that exploits it then takes weights from
    that island, not from this member's."""

    def to_state(self) -> list[Any]:
        return [self.index, self.island, self.ckpt, list(self.genome), self.end_step, self.fitness,
                self.ckpt_island]

    @classmethod
    def from_state(cls, s: list[Any]) -> Member:
        ckpt = int(s[2])
        # A state from before ckpt_island: the member's own island, as it was then assumed.
        where = int(s[6]) if len(s) > 6 else (int(s[1]) if ckpt >= 0 else -1)
        return cls(int(s[0]), int(s[1]), ckpt, [float(g) for g in s[3]], int(s[4]),
                   None if s[5] is None else float(s[5]), where)


@dataclass(frozen=True)
class PBTPick:
    """The next interval, before the engine numbers it."""

    island: int
    genome: np.ndarray
    operator: str
    parents: tuple[int, ...]
    info: dict[str, Any]
    pbt_parent: int
    step: int


class PBT:
    """The members, their ready queue, their scores by step and the held checkpoints."""

    def __init__(self, space: Space, config: PBTConfig, islands: int, population_size: int,
                 seed: int, neighbours: list[list[int]], migration_interval: int) -> None:
        names = space.names
        unknown = [n for n in config.fixed if n not in names]
        if unknown:
            raise ValueError(f"pbt fixed names unknown parameters {unknown}; the space has {names}")
        self.space = space
        self.config = config
        self.population_size = population_size
        self.neighbours = neighbours
        self.migration_interval = migration_interval
        self.mutation = TypedMutation(space)
        self.explorable = np.array([n not in config.fixed for n in names], dtype=bool)
        self.members: list[Member] = []
        """Members in the order they started (index = position)."""
        self.started = [0] * islands
        self.decisions = [0] * islands
        self.ready: deque[tuple[int, bool]] = deque()
        """(member index, its interval failed) in the order the results were told."""
        self.scores: list[dict[int, dict[int, float]]] = [{} for _ in range(islands)]
        """Per island: step → {member index: score its checkpoint at that step got}."""
        self.rngs = [np.random.default_rng(np.random.SeedSequence([seed, 0x9B7, i]))
                     for i in range(islands)]
        self.best: tuple[float, int] | None = None
        """(score, uid) of the best interval so far: its checkpoint is held too (the run's
        result, e.g. for ``finalize`` to score on the test split)."""
        self.held: Counter[int] = Counter()
        self._told = 0
        self.released: list[tuple[int, int]] = []
        """(checkpoint uid, results told when released) not handed out yet; not in snapshots."""

    # -- deciding -------------------------------------------------------------------------

    def next_pick(self, islands: list[Island], order: list[int], told: int,
                  warm: deque[np.ndarray] | None = None) -> PBTPick | None:
        """A new member for the first island in ``order`` that lacks some, else the decision
        for the member whose result came back first; None while every member is in flight.
        ``told``: results the engine has been told (a checkpoint this decision lets go may be
        deleted once that many are durable: a replay then makes the same decision).
        ``warm``: known genomes (``--warm-start``) the next new members start from, taken."""
        self._told = told
        for i in order:
            if self.started[i] < self.population_size:
                return self._start(islands[i], warm.popleft() if warm else None)
        if not self.ready:
            return None
        index, failed = self.ready.popleft()
        m = self.members[index]
        self.decisions[m.island] += 1
        if failed:
            donor = self._best_other(m)
            if donor is None:
                return self._restart(m, islands[m.island])
            return self._exploit(m, donor)
        peers = self._peers(m)
        k = int(math.floor(len(peers) * self.config.quantile + 1e-9))
        if len(peers) >= self.config.need and k >= 1:
            ranked = sorted(peers, key=lambda p: (peers[p], p))
            # A score stays at its step after its member let those weights go; one that
            # started again from fresh weights has no checkpoint left to give.
            top = [p for p in ranked[:k] if p != index and self.members[p].ckpt >= 0]
            if index in ranked[-k:] and top:
                donor = self.members[top[int(self.rngs[m.island].integers(len(top)))]]
                return self._exploit(m, donor)
        return self._pick(m, CONTINUE, m.ckpt, m.end_step, np.asarray(m.genome), (m.ckpt,))

    def _peers(self, m: Member) -> dict[int, float]:
        """Scores at ``m``'s step on its island (and its neighbours' at a migration turn), and
        the latest scores of members one interval behind (they can only rank ``m`` better)."""
        isl = [m.island]
        mi = self.migration_interval
        if mi and self.neighbours[m.island] and self.decisions[m.island] % mi == 0:
            isl += self.neighbours[m.island]
        out: dict[int, float] = {}
        for j in isl:
            out.update(self.scores[j].get(m.end_step, {}))
        behind = m.end_step - self.config.interval
        for o in self.members:
            if (o.island in isl and o.index not in out and o.fitness is not None
                    and o.end_step == behind):
                out[o.index] = o.fitness
        return out

    def _best_other(self, m: Member) -> Member | None:
        scored = [o for o in self.members
                  if o.island == m.island and o.index != m.index and o.fitness is not None]
        return min(scored, key=lambda o: (o.fitness, o.index)) if scored else None

    def _start(self, island: Island, genome: np.ndarray | None = None) -> PBTPick:
        """A new member on ``island``, from ``genome`` or else the island's next proposal."""
        i = island.index
        m = Member(len(self.members), i)
        self.members.append(m)
        self.started[i] += 1
        if genome is None:
            genome = island.propose().genome
        m.genome = [float(g) for g in genome]
        return self._pick(m, START, -1, 0, np.asarray(m.genome), ())

    def _restart(self, m: Member, island: Island) -> PBTPick:
        self._hold(m, -1, -1, self._told)
        m.end_step, m.fitness = 0, None
        m.genome = [float(g) for g in island.rng.random(self.space.dim)]
        return self._pick(m, RESTART, -1, 0, np.asarray(m.genome), ())

    def _exploit(self, m: Member, donor: Member) -> PBTPick:
        self._hold(m, donor.ckpt, donor.ckpt_island, self._told)
        m.end_step, m.fitness = donor.end_step, donor.fitness
        m.genome = [float(g) for g in self.explore(np.asarray(donor.genome),
                                                   self.rngs[m.island])]
        return self._pick(m, EXPLOIT, donor.ckpt, donor.end_step, np.asarray(m.genome),
                          (donor.ckpt,), donor=donor)

    def _pick(self, m: Member, operator: str, parent: int, step: int, genome: np.ndarray,
              parents: tuple[int, ...], donor: Member | None = None) -> PBTPick:
        info: dict[str, Any] = {"member": m.index, "interval": self.config.interval}
        if donor is not None:
            info["donor"] = donor.index
            if donor.ckpt_island != m.island:  # the weights come from another island
                info["migrant_from"] = donor.ckpt_island
        return PBTPick(m.island, frozen_genome(genome), operator,
                       tuple(p for p in parents if p >= 0), info, parent, step)

    def explore(self, genome: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``genome`` explored by the configured rule (random draws in a fixed order)."""
        cfg, mut = self.config, self.mutation
        dim = genome.shape[0]
        sigma = np.full(dim, cfg.sigma)
        mask = self.explorable.copy()
        coins = rng.random(dim)
        for i, p in enumerate(mut.params):
            if isinstance(p, Categorical):  # move as often as a step of sigma leaves its bin
                mask[i] &= bool(coins[i] < bin_exit_probability(cfg.sigma, len(p.choices)))
        out = mut.gaussian(genome, sigma, mask, rng)
        if cfg.explore == "resample":
            fresh = rng.random(dim)
            redraw = self.explorable & (rng.random(dim) < cfg.resample_probability)
            out[redraw] = fresh[redraw]
        return out

    # -- telling --------------------------------------------------------------------------

    def told(self, member: int, uid: int, genome: np.ndarray, stop: int,
             fitness: float | None, told: int) -> None:
        """Interval ``uid`` of ``member`` ended at step ``stop`` (``interval_stop``;
        ``fitness`` None: it failed)."""
        m = self.members[member]
        if fitness is None:
            self.released.append((uid, told))  # whatever it may have written is never loaded
            self.ready.append((member, True))
            return
        self._hold(m, uid, m.island, told)
        if self.best is None or fitness < self.best[0]:
            old = self.best
            self.best = (float(fitness), uid)
            self.held[uid] += 1
            if old is not None:
                self._release(old[1], told)
        m.genome = [float(g) for g in genome]
        m.end_step = stop
        m.fitness = float(fitness)
        self.scores[m.island].setdefault(m.end_step, {})[member] = float(fitness)
        self._forget_old_scores(m.island)
        self.ready.append((member, False))

    def _forget_old_scores(self, island: int) -> None:
        """Drop steps below every member's step: no ranking asks for them any more."""
        steps = [o.end_step for o in self.members if o.island == island]
        if len(steps) < self.population_size:
            return
        low = min(steps)
        for s in [s for s in self.scores[island] if s < low]:
            del self.scores[island][s]

    def _hold(self, m: Member, uid: int, island: int, told: int) -> None:
        """``m`` now holds checkpoint ``uid``, written on ``island``; its old one is let go."""
        old = m.ckpt
        m.ckpt, m.ckpt_island = uid, island
        if uid >= 0:
            self.held[uid] += 1
        if old >= 0:
            self._release(old, told)

    def _release(self, uid: int, told: int) -> None:
        self.held[uid] -= 1
        if self.held[uid] <= 0:
            del self.held[uid]
            self.released.append((uid, told))

    def drain_released(self) -> list[tuple[int, int]]:
        """(checkpoint uid, results told when it was released) no future interval can load;
        the file may go once that many results are durable (a crash before would re-run an
        interval that loads it)."""
        out, self.released = self.released, []
        return out

    def live(self) -> set[int]:
        """Checkpoint uids some member holds."""
        return set(self.held)

    # -- state ----------------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        return {
            "members": [m.to_state() for m in self.members],
            "started": list(self.started),
            "decisions": list(self.decisions),
            "ready": [[i, f] for i, f in self.ready],
            "scores": [{str(s): {str(k): v for k, v in by.items()} for s, by in isl.items()}
                       for isl in self.scores],
            "rngs": [rng_state(r) for r in self.rngs],
            "best": list(self.best) if self.best is not None else None,
        }

    def set_state(self, s: dict[str, Any]) -> None:
        self.members = [Member.from_state(m) for m in s["members"]]
        self.started = [int(x) for x in s["started"]]
        self.decisions = [int(x) for x in s["decisions"]]
        self.ready = deque((int(i), bool(f)) for i, f in s["ready"])
        self.scores = [{int(st): {int(k): float(v) for k, v in by.items()} for st, by in isl.items()}
                       for isl in s["scores"]]
        self.rngs = [restore_rng(r) for r in s["rngs"]]
        best = s.get("best")
        self.best = (float(best[0]), int(best[1])) if best is not None else None
        self.held = Counter(m.ckpt for m in self.members if m.ckpt >= 0)
        if self.best is not None:
            self.held[self.best[1]] += 1
