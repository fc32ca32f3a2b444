"""Never spend an evaluation on a configuration already evaluated, unless the scenario asks.

A *configuration* is what the objective sees: the decoded parameters, with inactive
(conditional) parameters absent, so two genomes that decode alike are one configuration
(``config_key``). The engine keeps a ``Registry`` of every configuration it has issued —
complete, failed, pruned or still in flight — and issues none of them again by accident:

1. a proposal that repeats one is replaced by the island's next proposal, up to
   ``OPERATOR_TRIES`` times (the operator's generator moves on, so each try is a new offspring;
   while the initial design lasts, the next design point);
2. then by up to ``RANDOM_TRIES`` uniform points of the cube (operator ``dedupe:random``);
3. then, in a space of ints and categoricals only with at most ``ENUMERATION_LIMIT``
   configurations, by a uniform pick among those never issued (operator ``dedupe:remaining``),
   from an index of them (``UnseenIndex``) that the registry builds the first time it is
   needed and keeps up to date with every configuration registered after (listing the whole
   space again on each ask cost 4 s an ask at 100,000 configurations left);
4. when nothing is left the space is *exhausted*: no new configuration is issued (deliberate
   re-evaluations still are: in a space small enough, ``Tracker.leftover_pick`` spends the
   budget left on the leaders of a noisy objective, after one probe found it noisy), the
   evaluations in flight finish, and the run ends as finished with fewer evaluations than
   its budget; ``Dedupe.exhausted`` holds the message the run logs as a warning.

Every draw comes from the island's own generators, so ``Engine.ask`` stays a deterministic
function of the engine's state and a replay re-creates the same tasks. The registry is not in
the engine's snapshots (it grows with the run): on resume it is rebuilt from the task log
(``register_logged_tasks``).

Re-evaluation (scenario field ``repeats`` = r > 0) is the deliberate exception, for noisy
objectives: a configuration that enters its island's population among the better half is
evaluated r more times, each with a fresh seed (its own uid), before new offspring. Those
tasks have operator ``reevaluate`` and ``reevaluation_of`` = the first evaluation's uid; their
results never join a population as individuals of their own, they turn the individual's
fitness into the mean over its complete evaluations (``info["evaluations"]`` counts them), so
selection and the final ranking see the mean rather than one lucky seed. A queued
re-evaluation whose individual has left every population is dropped (budget is not spent on a
configuration that lost anyway). Re-evaluations count toward the budget; ``analyze`` shows the
mean and spread of every configuration evaluated more than once.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from evo_engine.search.digests import WIDTH, DigestSet
from evo_engine.search.keys import config_key, plain_value
from evo_engine.search.messages import Individual, Task, frozen_genome
from evo_engine.space import Space

if TYPE_CHECKING:
    from evo_engine.search.island import Island

OPERATOR_TRIES = 20
"""Proposals from the island (operator or design) before falling back to random points."""
RANDOM_TRIES = 20
"""Uniform points of the cube tried after the island's proposals were all repeats."""
ENUMERATION_LIMIT = 100_000
"""Largest all-discrete space whose unseen configurations are listed to pick one."""
REEVALUATE = "reevaluate"
"""The operator name of a deliberate re-evaluation task."""


class SpaceExhausted(RuntimeError):
    """Every configuration of the search space has been issued: nothing new is left."""


DIGEST_BYTES = WIDTH


def key_digest(key: str) -> bytes:
    """The 16 bytes the registry keeps of a ``config_key`` (BLAKE2b): the key itself is
    exact (repr round-trips floats), and two distinct keys share a digest with probability
    about n²/2¹²⁹ — never, for any run (1e-20 at a billion configurations)."""
    return hashlib.blake2b(key.encode(), digest_size=DIGEST_BYTES).digest()


class UnseenIndex:
    """The configurations of a small all-discrete space never issued, in a fixed order.

    Built once by listing the space (each configuration's first genome in
    ``itertools.product`` order, as ``unseen_configurations`` lists them), then kept up to
    date with ``discard`` for each configuration issued: O(log n) per ask and per task
    instead of the whole space, and O(space) ≤ ``ENUMERATION_LIMIT`` memory. Its content is
    a function of the registry alone (a resume builds the same one from the task log), and
    ``pick`` draws what a pick from ``unseen_configurations`` would, so replay is exact.
    """

    def __init__(self, space: Space, issued: DigestSet) -> None:
        from sortedcontainers import SortedList

        levels = []
        for _, p in space.items():
            values = p.choices if p.kind == "categorical" else range(p.lo, p.hi + 1)  # type: ignore[union-attr]
            levels.append([p.encode(v) for v in values])
        genomes = np.array(list(itertools.product(*levels)), dtype=np.float64)
        genomes = genomes.reshape(-1, len(levels))
        digests = [key_digest(k) for k in config_keys(space, genomes)]
        self.position: dict[bytes, int] = {}
        """Digest -> its row in ``genomes`` (the first genome of that configuration)."""
        for i, d in enumerate(digests):
            self.position.setdefault(d, i)
        self.genomes = genomes
        self.left = SortedList(i for d, i in self.position.items() if d not in issued)

    def __len__(self) -> int:
        return len(self.left)

    def discard(self, digest: bytes) -> None:
        i = self.position.get(digest)
        if i is not None:
            self.left.discard(i)

    def pick(self, r: float) -> np.ndarray:
        """The unseen configuration at fraction ``r`` ∈ [0, 1) of the list."""
        n = len(self.left)
        return self.genomes[self.left[int(r * n) % n]]


class Registry:
    """Every configuration issued so far (evaluated or in flight), as digests of its key.

    The keys are ``repr`` strings of the decoded parameters: 475 bytes for 12 parameters,
    ~450 MB at a million evaluations. ``keys`` holds a 16-byte digest of each instead, in a
    ``DigestSet`` (16 bytes an entry; a Python set of them took 91). Every change goes
    through the methods below, which keep the ``UnseenIndex`` (once built) in step."""

    def __init__(self, keys: Iterable[str] = ()) -> None:
        self.keys = DigestSet(map(key_digest, keys))
        self._last: tuple[str, bytes] = ("", b"")
        """The last key digested and its digest: ``Dedupe._fresh`` asks ``has_key`` and the
        engine then ``add``s the same key (one BLAKE2b per new task, not two)."""
        self._unseen: UnseenIndex | None = None
        self._unseen_checked = False
        """Whether the space was found too large or continuous to index (then None)."""

    def unseen(self, space: Space) -> UnseenIndex | None:
        """The index of configurations never issued; None when the space is continuous or
        larger than ``ENUMERATION_LIMIT``. Built at the first call."""
        if not self._unseen_checked:
            self._unseen_checked = True
            size = space_size(space)
            if size is not None and size <= ENUMERATION_LIMIT:
                self._unseen = UnseenIndex(space, self.keys)
        return self._unseen

    def _added(self, digest: bytes) -> None:
        self.keys.add(digest)
        if self._unseen is not None:
            self._unseen.discard(digest)

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, params: Mapping[str, Any]) -> bool:
        return key_digest(config_key(params)) in self.keys

    def _digest(self, key: str) -> bytes:
        last_key, digest = self._last
        if key != last_key:  # (the same string object: compared by identity first)
            digest = key_digest(key)
            self._last = (key, digest)
        return digest

    def has_key(self, key: str) -> bool:
        """Whether the configuration whose ``config_key`` is ``key`` was issued."""
        return self._digest(key) in self.keys

    def add(self, params: Mapping[str, Any], key: str | None = None) -> str:
        """Register ``params`` (``key``: its ``config_key`` when the caller has it already)."""
        key = config_key(params) if key is None else key
        self._added(self._digest(key))
        return key

    def add_keys(self, keys: Iterable[str]) -> None:
        """Register the configurations whose ``config_key`` are ``keys``."""
        if self._unseen is None:
            self.keys.update(map(key_digest, keys))
            return
        for key in keys:
            self._added(key_digest(key))

    def export(self) -> list[str]:
        """The digests as sorted hex strings (JSON: ``Optimizer.get_state``)."""
        return sorted(d.hex() for d in self.keys)

    def restore(self, items: Iterable[str]) -> None:
        """Register what ``export`` wrote; a state from before the digests holds the keys
        themselves (``repr`` of a tuple, starting with "("), which are digested."""
        for item in items:
            self._added(key_digest(item) if item.startswith("(") else bytes.fromhex(item))


def exhausted_head(n: int) -> str:
    """How every message about an exhausted space of ``n`` configurations begins."""
    return f"search space exhausted: all {n} distinct configurations have been evaluated or are in flight"


def space_size(space: Space) -> int | None:
    """Configurations of an all-discrete space (an upper bound with conditional parameters);
    None when a float parameter makes it infinite."""
    size = 1
    for _, p in space.items():
        if p.kind == "float":
            return None
        size *= len(p.choices) if p.kind == "categorical" else p.levels  # type: ignore[union-attr]
    return size


def unseen_configurations(space: Space, registry: Registry) -> list[np.ndarray] | None:
    """A genome for each configuration never issued, in a fixed order; None when the space is
    continuous or too large to list (over ``ENUMERATION_LIMIT``). Lists the whole space: the
    engine uses ``Registry.unseen`` instead; this is its definition, for tests."""
    size = space_size(space)
    if size is None or size > ENUMERATION_LIMIT:
        return None
    levels = []
    for _, p in space.items():
        values = p.choices if p.kind == "categorical" else range(p.lo, p.hi + 1)  # type: ignore[union-attr]
        levels.append([p.encode(v) for v in values])
    out: list[np.ndarray] = []
    seen = set(registry.keys)
    for genes in itertools.product(*levels):
        key = key_digest(config_key(space.decode(genes)))
        if key not in seen:
            seen.add(key)  # conditional parameters: many genomes, one configuration
            out.append(np.array(genes))
    return out


@dataclass(frozen=True, eq=False)
class Pick:
    """What the engine issues next: a new configuration or a deliberate re-evaluation."""

    island: int
    genome: np.ndarray
    params: dict[str, Any]
    operator: str
    parents: tuple[int, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)
    reevaluation_of: int = -1
    key: str | None = None
    """``config_key(params)``, computed once."""
    seed: int | None = None
    """The objective's seed when it is not the uid's own (a race seed, intensify.py)."""


class Dedupe:
    """The engine's registry of issued configurations and its re-evaluation queue.

    Hooks (all called by ``Engine``): ``next_pick`` in ``ask``, ``register`` for every task
    that enters the in-flight table (``ask``, and ``replay_task`` for a logged task it keeps), ``after_offer`` when an offspring was
    offered to its island, ``reevaluated`` when a re-evaluation's result comes back.
    """

    def __init__(self, space: Space, repeats: int = 0, population_size: int = 8) -> None:
        self.space = space
        self.repeats = repeats
        self.promising_rank = max(1, population_size // 2)
        self.registry = Registry()
        self.exhausted: str | None = None
        """Why no new configuration is issued any more, or None."""
        self.queue: deque[tuple[int, int, np.ndarray]] = deque()
        """(uid, island, genome) of individuals still to re-evaluate, one entry per repeat."""
        self.rejected = 0
        """Proposals turned down as repeats by this engine (a diagnostic; not in snapshots)."""

    @property
    def nothing_to_issue(self) -> bool:
        """The space is exhausted and no re-evaluation is waiting."""
        return self.exhausted is not None and not self.queue

    def register(self, task: Task, key: str | None = None) -> None:
        self.registry.add(task.params, key)

    # -- choosing -----------------------------------------------------------------------

    def next_pick(self, island: Island, islands: Sequence[Island]) -> Pick | None:
        """A queued re-evaluation, else a configuration never issued; None when none is left."""
        again = self._next_reevaluation(islands)
        if again is not None:
            return again
        if self.exhausted is not None:
            return None
        return self._fresh(island)

    def _fresh(self, island: Island) -> Pick | None:
        space, registry = self.space, self.registry
        for _ in range(OPERATOR_TRIES):
            proposal = island.propose()
            genome = frozen_genome(proposal.genome)
            params = space.decode(genome)
            key = config_key(params)
            if not registry.has_key(key):
                return Pick(island.index, genome, params,
                            proposal.operator or island.operator.name, proposal.parents,
                            proposal.info, key=key)
            self.rejected += 1
        for _ in range(RANDOM_TRIES):
            genome = frozen_genome(island.rng.random(space.dim))
            params = space.decode(genome)
            key = config_key(params)
            if not registry.has_key(key):
                return Pick(island.index, genome, params, "dedupe:random", key=key)
            self.rejected += 1
        left = registry.unseen(space)
        if left:
            genome = frozen_genome(left.pick(island.rng.random()))
            return Pick(island.index, genome, space.decode(genome), "dedupe:remaining")
        n = len(registry)
        if left is None:
            self.exhausted = (
                f"no new configuration found in {OPERATOR_TRIES + RANDOM_TRIES} proposals after "
                f"{n} distinct ones: the search space looks exhausted, so no new evaluation "
                "starts (a configuration is never evaluated twice by accident)"
            )
        else:
            self.exhausted = (
                f"{exhausted_head(n)}, so no new evaluation starts and the run ends below its "
                "budget (a configuration is never evaluated twice by accident; set repeats to "
                "re-evaluate promising ones with fresh seeds)"
            )
        return None

    # -- re-evaluation --------------------------------------------------------------------

    def after_offer(self, island: Island, ind: Individual, accepted: bool) -> None:
        """Queue ``repeats`` re-evaluations of ``ind`` if it entered among the better half."""
        if self.repeats <= 0 or not accepted:
            return
        rank = next((i for i, m in enumerate(island.population) if m.uid == ind.uid), None)
        if rank is None or rank >= self.promising_rank:
            return
        for _ in range(self.repeats):
            self.queue.append((ind.uid, island.index, np.asarray(ind.genome)))

    def _next_reevaluation(self, islands: Sequence[Island]) -> Pick | None:
        while self.queue:
            uid, island, genome = self.queue.popleft()
            if not any(m.uid == uid for isl in islands for m in isl.population):
                continue  # it lost its place: a re-evaluation would not change any choice
            g = frozen_genome(genome)
            return Pick(island, g, self.space.decode(g), REEVALUATE, (uid,),
                        reevaluation_of=uid)
        return None

    def reevaluated(self, task: Task, fitness: float | None, islands: Sequence[Island]) -> None:
        """Fold a re-evaluation's fitness into every copy of its individual (migrants too)."""
        if fitness is None or not math.isfinite(fitness):
            return  # a failed or pruned repeat says nothing about the mean
        for isl in islands:
            changed = False
            for i, m in enumerate(isl.population):
                if m.uid == task.reevaluation_of:
                    n = int(m.info.get("evaluations", 1))
                    mean = (m.fitness * n + fitness) / (n + 1)
                    isl.population[i] = replace(m, fitness=mean,
                                                info={**m.info, "evaluations": n + 1})
                    changed = True
            if changed:
                isl.population.sort(key=lambda m: m.fitness)

    # -- state ----------------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """The re-evaluation queue (O(population)); the registry is rebuilt from the log."""
        return {"queue": [[u, i, g.tolist()] for u, i, g in self.queue]}

    def set_state(self, state: Mapping[str, Any] | None) -> None:
        self.queue = deque(
            (int(u), int(i), np.asarray(g, dtype=np.float64))
            for u, i, g in (state or {}).get("queue", [])
        )


def register_logged_tasks(dedupe: Dedupe, tasks: Any, below_uid: int) -> int:
    """Register the configuration of every task in a store's task log with uid < ``below_uid``.

    ``tasks`` is the store's task ``Table`` (or None for a store without one). Called on
    resume right after the engine is restored from its snapshot and before any replay, so the
    registry holds exactly what the engine had issued when the snapshot was taken. Returns how
    many logged tasks were registered.
    """
    if tasks is None or tasks.committed == 0:
        return 0
    uids = np.asarray(tasks.read("uid"))
    genomes = np.asarray(tasks.read("genome"))[uids < below_uid]
    dedupe.registry.add_keys(config_keys(dedupe.space, genomes))
    return len(genomes)


def config_keys(space: Space, genomes: np.ndarray) -> list[str]:
    """``config_key(space.decode(g))`` for every row of ``genomes``, the same strings,
    decoded a column at a time (a resume registers every logged task: 100,000 took 1.9 s
    row by row, see ``register_logged_tasks``)."""
    if space.conditional or len(genomes) == 0:
        return [config_key(space.decode(g)) for g in genomes]
    columns: dict[str, list[Any]] = {}
    for j, (name, p) in enumerate(space.items()):
        values = p.decode_column(genomes[:, j])
        if p.kind == "float":
            columns[name] = [v + 0.0 for v in values]  # config_key's -0.0 == 0.0
        elif p.kind == "int":
            columns[name] = values
        else:
            columns[name] = [plain_value(v) for v in values]
    order = sorted(columns)
    # repr(tuple(sorted(params.items()))), built from each column's reprs (the reprs of
    # a million floats dominate; one C-level map per column is 3x faster than per row).
    pairs = ", ".join(f"({name!r}".replace("%", "%%") + ", %s)" for name in order)
    template = "(" + pairs + ("," if len(order) == 1 else "") + ")"
    texts = [list(map(repr, columns[n])) for n in order]
    return [template % row for row in zip(*texts)]


__all__ = [
    "ENUMERATION_LIMIT",
    "OPERATOR_TRIES",
    "RANDOM_TRIES",
    "REEVALUATE",
    "Dedupe",
    "Pick",
    "exhausted_head",
    "Registry",
    "SpaceExhausted",
    "UnseenIndex",
    "config_keys",
    "key_digest",
    "register_logged_tasks",
    "space_size",
    "unseen_configurations",
]
