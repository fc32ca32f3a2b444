"""The worker side shared by every transport: run one task, always return a Result.

A worker must survive anything the objective does: an exception, NaN or inf, an
out-of-memory error. Each becomes a FAILED result whose error text names the worker's
rank and host and carries the remote traceback; the worker then takes the next task.
"""

from __future__ import annotations

import gc
import math
import os
import socket
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from evo_engine.context import Context, StopEvaluation
from evo_engine.records import EvalState, Result, Task

Objective = Callable[[dict[str, Any], Context], Any]
FINALIZE = "finalize"
"""Task.operator of a task that runs the scenario's ``finalize`` instead of the objective."""


def gpu_driver_present() -> bool:
    """A cheap look for a GPU driver, so CPU-only machines never pay for importing torch here."""
    return any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd"))


def cuda_available() -> bool:
    if not gpu_driver_present():
        return False
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return bool(torch.cuda.is_available() and torch.cuda.device_count() > 0)


def select_device(local_rank: int) -> str:
    """``cuda:<local_rank % gpus>`` when this node has GPUs, else ``cpu``."""
    if not gpu_driver_present():
        return "cpu"
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency, but keep workers alive
        return "cpu"
    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        return f"cuda:{local_rank % torch.cuda.device_count()}"
    return "cpu"


def _split_output(value: Any) -> tuple[float | None, dict[str, float]]:
    if isinstance(value, Mapping):
        if "fitness" not in value:
            raise ValueError(f"objective returned a dict without 'fitness' (keys: {sorted(value)})")
        metrics = {str(k): float(v) for k, v in value.items() if k != "fitness"}
        return float(value["fitness"]), metrics
    return float(value), {}


class WorkerRuntime:
    """One persistent worker: its device, its cache, and the loop body ``run(task)``."""

    def __init__(
        self,
        objective: Objective,
        worker: int,
        device: str,
        scratch_root: Path | None,
        rank: int = 0,
        preset: str = "cpu",
        reporter_factory: Callable[[Task], Callable[[int, float], bool] | None] | None = None,
        clock: Callable[[], float] = time.time,
        finalize: Objective | None = None,
    ) -> None:
        self.objective = objective
        self.finalize = finalize
        self.worker = worker
        self.device = device
        self.scratch_root = scratch_root
        self.rank = rank
        self.host = socket.gethostname()
        self.preset = preset
        self.cache: dict[str, Any] = {}
        self.reporter_factory = reporter_factory
        self.clock = clock

    def run(self, task: Task) -> Result:
        ctx = Context(
            device=self.device, seed=task.seed, uid=task.uid, island=task.island,
            worker=self.worker, cache=self.cache, scratch_root=self.scratch_root,
            rank=self.rank, host=self.host, preset=self.preset,
            # finalize runs for an evaluation that is over: nothing may prune it.
            _reporter=self.reporter_factory(task)
            if self.reporter_factory and task.operator != FINALIZE else None,
        )
        t0 = self.clock()
        fn = self.objective
        if task.operator == FINALIZE:
            if self.finalize is None:
                return self._result(task, ctx, t0, None, {}, "the scenario has no finalize", EvalState.FAILED)
            fn = self.finalize
        try:
            value = fn(dict(task.params), ctx)
            if task.operator == FINALIZE and isinstance(value, Mapping) and "fitness" not in value:
                value = {"fitness": float("nan"), **value}
            fitness, metrics = _split_output(value)
        except StopEvaluation:
            return self._result(task, ctx, t0, None, {}, "pruned by the coordinator", EvalState.PRUNED)
        except BaseException as exc:  # noqa: BLE001 - a worker must outlive its objective
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            err = (
                f"{type(exc).__name__}: {exc} (worker {self.worker}, rank {self.rank} on {self.host})\n"
                + traceback.format_exc()
            )
            if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
                _release_memory()
            return self._result(task, ctx, t0, None, {}, err, EvalState.FAILED)
        if ctx.should_stop():
            return self._result(task, ctx, t0, fitness, metrics, "pruned by the coordinator", EvalState.PRUNED)
        if not math.isfinite(fitness) and task.operator != FINALIZE:
            return self._result(
                task, ctx, t0, None, metrics, f"objective returned non-finite fitness {fitness!r}",
                EvalState.FAILED,
            )
        return self._result(task, ctx, t0, fitness, metrics, None, EvalState.COMPLETE)

    def _result(
        self, task: Task, ctx: Context, t0: float, fitness: float | None,
        metrics: dict[str, float], error: str | None, state: EvalState,
    ) -> Result:
        return Result(
            uid=task.uid, worker=self.worker, fitness=fitness, metrics=metrics, error=error,
            t_start=t0, t_end=self.clock(), state=state, curve=tuple(ctx.curve),
        )


def _release_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001, S110 - best effort only
        pass
