"""Frozen message and record types shared by the engine, the transports and the store.

Nothing here imports MPI, files or clocks: these are plain values that cross process
boundaries (pickled by multiprocessing or mpi4py) and land in the run store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import numpy as np


class EvalState(IntEnum):
    """The life of one evaluation: PENDING → RUNNING → COMPLETE | FAILED | PRUNED."""

    PENDING = 0
    RUNNING = 1
    COMPLETE = 2
    FAILED = 3
    PRUNED = 4

    @property
    def finished(self) -> bool:
        return self in (EvalState.COMPLETE, EvalState.FAILED, EvalState.PRUNED)


class InvalidTransition(ValueError):
    """An evaluation was asked to move between states its life does not allow."""


# RUNNING → PENDING is the resume path: a task in flight when the coordinator stopped is
# issued again with the same parameters and seed.
_ALLOWED: dict[EvalState, frozenset[EvalState]] = {
    EvalState.PENDING: frozenset({EvalState.RUNNING, EvalState.FAILED}),
    EvalState.RUNNING: frozenset(
        {EvalState.COMPLETE, EvalState.FAILED, EvalState.PRUNED, EvalState.PENDING}
    ),
    EvalState.COMPLETE: frozenset(),
    EvalState.FAILED: frozenset(),
    EvalState.PRUNED: frozenset(),
}


def check_transition(old: EvalState, new: EvalState) -> None:
    """Raise InvalidTransition unless an evaluation may move from ``old`` to ``new``."""
    if new not in _ALLOWED[old]:
        raise InvalidTransition(f"evaluation cannot move from {old.name} to {new.name}")


def frozen_genome(genome: Any) -> np.ndarray:
    """A read-only float64 copy of a unit-cube genome."""
    arr = np.array(genome, dtype=np.float64, copy=True).reshape(-1)
    arr.flags.writeable = False
    return arr


@dataclass(frozen=True, eq=False)
class Task:
    """One evaluation handed to a worker: decoded params plus what the store needs to know."""

    uid: int
    island: int
    genome: np.ndarray
    params: dict[str, Any]
    seed: int
    operator: str = "random"
    parents: tuple[int, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)
    """Operator data carried with the offspring (e.g. an ES individual's σ vector)."""
    reevaluation_of: int = -1
    """uid of the individual this task re-evaluates with a fresh seed, or -1."""
    told_before: int = -1
    """Results the engine had recorded (``Engine.n_finished``) when it issued this task, or -1
    when unknown (a task logged by an older version). Replay on ``--resume`` tells exactly
    that many results before asking again, so the re-created task equals this one."""
    pbt_parent: int = -1
    """Population-based training (``search/pbt.py``): uid of the interval whose checkpoint
    this interval starts from, or -1 (fresh weights)."""
    step: int = -1
    """Population-based training: the training step (e.g. epochs done) this interval starts
    at; -1 for a task that is not a PBT interval."""


@dataclass(frozen=True, eq=False)
class Result:
    """What a worker sends back for a Task. ``fitness`` is None when the evaluation failed."""

    uid: int
    worker: int
    fitness: float | None
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    t_start: float = 0.0
    t_end: float = 0.0
    state: EvalState = EvalState.COMPLETE
    curve: tuple[tuple[int, float], ...] = ()
    """Intermediate (step, value) reports, kept for pruned and complete evaluations alike."""
    batch: int = -1
    """uid of the first member of the batch this evaluation ran in, or -1 (not batched)."""
    gpu: tuple[float, float] | None = None
    """(mean GPU busy %, peak GPU memory used in MiB) over the evaluation, sampled from NVML
    by the worker when ``nvidia-ml-py`` is installed and the worker has a GPU; else None."""
    values: tuple[float, ...] = ()
    """A multi-objective scenario's objective values in its order, as returned (not negated
    for "max"); the engine fills them from the named values. Empty for one fitness."""


@dataclass(frozen=True, eq=False)
class Individual:
    """A member of an island's population: a genome with its (complete) fitness."""

    uid: int
    genome: np.ndarray
    fitness: float
    island: int
    info: dict[str, Any] = field(default_factory=dict)
    origin_island: int = -1
    """Island the individual was evaluated on; differs from ``island`` for migrants."""
    values: tuple[float, ...] = ()
    """Objective values, all minimised (see search/pareto.py); empty for one fitness."""
    violation: float = 0.0
    """Total constraint violation; 0 = feasible."""

    def to_state(self) -> dict[str, Any]:
        # The objective values only where there are several, so old snapshots stay as they were.
        extra = {"values": list(self.values), "violation": self.violation} if self.values else {}
        return {
            **extra,
            "uid": self.uid,
            "genome": self.genome.tolist(),
            "fitness": self.fitness,
            "island": self.island,
            "info": _jsonable(self.info),
            "origin_island": self.origin_island,
        }

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> Individual:
        info = {k: np.asarray(v) if isinstance(v, list) else v for k, v in s["info"].items()}
        return cls(
            uid=int(s["uid"]),
            genome=frozen_genome(s["genome"]),
            fitness=float(s["fitness"]),
            island=int(s["island"]),
            info=info,
            origin_island=int(s["origin_island"]),
            values=tuple(float(v) for v in s.get("values", ())),
            violation=float(s.get("violation", 0.0)),
        )


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


jsonable = _jsonable
