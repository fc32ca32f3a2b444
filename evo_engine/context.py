"""What an objective gets besides its parameters: device, seed, scratch space, a worker cache."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class StopEvaluation(Exception):  # noqa: N818 - it is a signal, not an error
    """Raised by ``ctx.check()`` when the coordinator asks the evaluation to end early."""


class CheckpointMissing(FileNotFoundError):
    """A PBT interval's starting checkpoint is not there: that interval is FAILED (its member
    then exploits another one), the run goes on."""


CHECKPOINTS = "checkpoints"
"""The folder, under a run's scratch directory, that holds PBT checkpoints (one file per
interval, named by ``checkpoint_file``)."""


def checkpoint_file(scratch_root: Path | None, uid: int) -> Path:
    """Where the interval ``uid`` of a population-based training saves its checkpoint."""
    root = scratch_root if scratch_root is not None else Path.cwd() / "scratch"
    return root / CHECKPOINTS / f"uid-{uid}.pt"


@dataclass
class Context:
    """Handed to ``objective(params, ctx)`` for one evaluation.

    ``cache`` belongs to the worker process and survives across evaluations: load a data set
    into it once (and keep it on ``device``). ``scratch_dir`` is this evaluation's own
    directory, created on first access.

    Population-based training (``Scenario.pbt``, docs/pbt.md): an evaluation is one interval
    of a member's training, from ``start_step`` to ``stop_step`` (e.g. epochs). It starts from
    the weights, optimizer, scheduler and RNG state in ``checkpoint_load`` (None: fresh ones;
    raise ``CheckpointMissing`` when the file is not there) and saves its own to
    ``checkpoint_save`` before it returns, atomically (``evo_engine.sciml.checkpoint`` does
    both for torch). Outside PBT all three are None and ``start_step`` is 0.
    """

    device: str
    seed: int
    uid: int
    island: int
    worker: int
    cache: dict[str, Any]
    scratch_root: Path | None = None
    rank: int = 0
    host: str = ""
    preset: str = "cpu"
    start_step: int = 0
    stop_step: int | None = None
    checkpoint_load: Path | None = None
    checkpoint_save: Path | None = None
    _reporter: Callable[[int, float], bool] | None = field(default=None, repr=False)
    curve: list[tuple[int, float]] = field(default_factory=list)
    _stop: bool = False

    @classmethod
    def standalone(cls, seed: int, cache: dict[str, Any] | None = None,
                   device: str = "cpu") -> Context:
        """A context for calling an objective outside a run (benchmarks, notebooks, tests)."""
        return cls(device=device, seed=seed, uid=0, island=0, worker=0,
                   cache={} if cache is None else cache)

    @property
    def scratch_dir(self) -> Path:
        root = self.scratch_root if self.scratch_root is not None else Path.cwd() / "scratch"
        path = root / f"uid-{self.uid}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def report(self, step: int, value: float) -> None:
        """Record an intermediate value (e.g. one epoch's validation fitness)."""
        self.curve.append((int(step), float(value)))
        if self._reporter is not None and self._reporter(int(step), float(value)):
            self._stop = True

    def should_stop(self) -> bool:
        """True once the coordinator has decided this evaluation should end early."""
        return self._stop

    def check(self) -> None:
        if self._stop:
            raise StopEvaluation()
