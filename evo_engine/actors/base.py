"""The transport contract shared by the inline, local-process and MPI transports.

A transport moves Tasks to workers and Results back; it knows nothing of evolution. The
coordinator loop (``evo_engine.coordinator``) is the same for every transport.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evo_engine.records import Result, Task


class WorkerStartError(RuntimeError):
    """A worker could not start (its scenario failed to load, say)."""


@dataclass(frozen=True)
class WorkerSpec:
    """How a worker finds its objective: a scenario file it loads itself, or a callable."""

    scenario_path: str | None = None
    preset: str = "cpu"
    scratch_root: str | None = None
    objective: Callable[..., Any] | None = None

    finalize: Callable[..., Any] | None = None

    def load(self) -> tuple[Callable[..., Any], Callable[..., Any] | None]:
        """The objective and the scenario's optional ``finalize`` (test metrics of the best)."""
        if self.objective is not None:
            return self.objective, self.finalize
        if self.scenario_path is None:
            raise WorkerStartError("a WorkerSpec needs a scenario path or an objective")
        from evo_engine.scenario import load_scenario

        scenario = load_scenario(Path(self.scenario_path), self.preset)
        return scenario.objective, scenario.finalize

    @property
    def scratch(self) -> Path | None:
        return Path(self.scratch_root) if self.scratch_root else None


@dataclass(frozen=True)
class WorkerInfo:
    """What a worker tells the coordinator when it starts."""

    worker: int
    rank: int
    host: str
    device: str
    pid: int


class Transport(ABC):
    """Moves tasks to ``n_workers`` persistent workers (ids 0..n-1) and results back."""

    n_workers: int

    @abstractmethod
    def start(self) -> list[WorkerInfo]:
        """Start the workers; return what each reported about itself."""

    @abstractmethod
    def submit(self, worker: int, task: Task) -> None:
        """Hand ``task`` to the idle ``worker``."""

    @abstractmethod
    def poll(self, timeout: float) -> list[Result]:
        """Results that arrived, waiting up to ``timeout`` seconds for the first one."""

    @abstractmethod
    def close(self) -> None:
        """Tell every worker to stop and wait for them (workers finish their current task)."""

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
