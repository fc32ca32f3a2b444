"""The worker side shared by every transport: run one task, always return a Result.

A worker must survive anything the objective does: an exception, NaN or inf, an
out-of-memory error, a ``sys.exit()`` or a ``KeyboardInterrupt`` of its own. Each becomes a
FAILED result whose error text names the worker's rank and host and carries the remote
traceback; the worker then takes the next task.

A batch (``run_batch``) is several tasks evaluated by one call of the scenario's
``objective_batch(params_list, ctxs)``: every member keeps its own context (seed, uid,
reports, pruning decision) and gets its own Result, so one member that raises, returns NaN
or is pruned fails or stops alone; only an exception out of the call itself fails them all.
"""

from __future__ import annotations

import gc
import math
import os
import socket
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from evo_engine.context import Context, StopEvaluation, checkpoint_file
from evo_engine.search.messages import EvalState, Result, Task
from evo_engine.transports.gpu import GpuSampler, gpu_sampler

Objective = Callable[[dict[str, Any], Context], Any]
BatchObjective = Callable[[list[dict[str, Any]], list[Context]], Any]


class EvaluationInterrupted(BaseException):  # noqa: N818 - a signal, not an error
    """The run is stopping (a signal in inline mode): abandon the evaluation, record nothing.

    The task stays in the engine's in-flight table, so the stop snapshot lists it as pending
    and ``--resume`` issues it again with the same seed."""


class EvaluationTimedOut(BaseException):  # noqa: N818 - a signal, not an error
    """The evaluation ran past ``eval_timeout_s`` (raised into it in inline mode)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.seconds = seconds


def timed_out_text(seconds: float) -> str:
    """The error text of an evaluation that ran past its time limit (every transport)."""
    return f"timed out after {seconds:g} s"


WORKER_DIED = "worker died while evaluating"
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
        objective_batch: BatchObjective | None = None,
        gpu: GpuSampler | None | bool = True,
        split_on_oom: bool = True,
    ) -> None:
        self.objective = objective
        self.objective_batch = objective_batch
        self.split_on_oom = split_on_oom
        """Train members that ran out of memory together again in smaller stacks; off with a
        time limit (``eval_timeout_s``), which the retries could run past, taking the
        members that had finished with them."""
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
        self.gpu = gpu_sampler(device) if gpu is True else (gpu or None)

    def _context(self, task: Task) -> Context:
        pbt: dict[str, Any] = {}
        if task.step >= 0:  # a PBT interval (search/pbt.py)
            pbt = {"start_step": task.step,
                   "stop_step": task.step + int(task.info.get("interval", 1)),
                   "checkpoint_load": checkpoint_file(self.scratch_root, task.pbt_parent)
                   if task.pbt_parent >= 0 else None,
                   "checkpoint_save": checkpoint_file(self.scratch_root, task.uid)}
        return Context(
            **pbt,
            device=self.device, seed=task.seed, uid=task.uid, island=task.island,
            worker=self.worker, cache=self.cache, scratch_root=self.scratch_root,
            rank=self.rank, host=self.host, preset=self.preset,
            # finalize runs for an evaluation that is over: nothing may prune it.
            _reporter=self.reporter_factory(task)
            if self.reporter_factory and task.operator != FINALIZE else None,
        )

    def _where(self) -> str:
        return f"worker {self.worker}, rank {self.rank} on {self.host}"

    def run(self, task: Task) -> Result:
        ctx = self._context(task)
        mark = self.gpu.begin() if self.gpu is not None else None
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
        except EvaluationInterrupted:
            raise
        except EvaluationTimedOut as exc:
            return self._result(task, ctx, t0, None, {}, timed_out_text(exc.seconds), EvalState.FAILED)
        except BaseException as exc:  # noqa: BLE001 - a worker must outlive its objective
            # SystemExit and KeyboardInterrupt included: the workers ignore SIGINT (the
            # coordinator owns the run's lifetime), so either one is the objective's own doing.
            return self._result(task, ctx, t0, None, {}, self._failure_text(exc), EvalState.FAILED)
        gpu = self.gpu.end(mark) if self.gpu is not None and mark is not None else None
        return self._judge(task, ctx, t0, fitness, metrics, gpu=gpu)

    def _failure_text(self, exc: BaseException, member: str = "") -> str:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        if _out_of_memory(exc):
            _release_memory(exc)
        return f"{type(exc).__name__}: {exc} ({self._where()}{member})\n{tb}"

    def _judge(self, task: Task, ctx: Context, t0: float, fitness: float, metrics: dict[str, float],
               batch: int = -1, t_end: float | None = None,
               gpu: tuple[float, float] | None = None) -> Result:
        """The Result of an evaluation that returned ``fitness``: COMPLETE, PRUNED or FAILED."""
        if ctx.should_stop():
            return self._result(task, ctx, t0, fitness, metrics, "pruned by the coordinator",
                                EvalState.PRUNED, batch, t_end, gpu)
        if not math.isfinite(fitness) and task.operator != FINALIZE:
            return self._result(
                task, ctx, t0, None, metrics, f"objective returned non-finite fitness {fitness!r}",
                EvalState.FAILED, batch, t_end, gpu,
            )
        if ctx.checkpoint_save is not None and not ctx.checkpoint_save.exists():
            return self._result(
                task, ctx, t0, None, metrics,
                f"PBT interval uid {task.uid} returned without saving its checkpoint to "
                f"{ctx.checkpoint_save} (a PBT objective must write ctx.checkpoint_save; "
                "docs/pbt.md)", EvalState.FAILED, batch, t_end, gpu,
            )
        return self._result(task, ctx, t0, fitness, metrics, None, EvalState.COMPLETE, batch,
                            t_end, gpu)

    def run_batch(self, tasks: list[Task]) -> list[Result]:
        """Evaluate ``tasks`` in one ``objective_batch`` call; one Result per member, in order.

        Item i of what the call returns is what ``objective`` would return for member i, or
        an exception instance (that member FAILED; ``StopEvaluation()`` = it was pruned). A
        member whose ``ctxs[i].should_stop()`` is true at the end is PRUNED whatever it
        returned. An exception out of the call fails every member with that error, but for
        running out of memory: those members are trained again in smaller stacks.
        """
        if self.objective_batch is None:
            return [self.run(t) for t in tasks]
        return self._run_stack(tasks)

    def _run_stack(self, tasks: list[Task], since: float | None = None) -> list[Result]:
        """``run_batch`` of one stack (started at ``since``, when it retries an earlier one).

        Members that ran out of memory *together* are trained again as two halves, each
        down to one member, so that one member too many on the device does not fail them
        all: every member of a stack whose call raised it, or the members of one group that
        the call returned one shared error for (``train_advection_batch`` returns a group's
        error for each member still training; groups train one after another). Members told
        to stop are recorded PRUNED (whatever the call raised or returned for them), not
        trained again. A result keeps the batch of the
        stack that gave it (the first uid among the members it gave results for); the first
        retried stack starts at the failed attempt's start when no member kept a result, so
        the worker's busy time is all counted. Off with ``split_on_oom=False``."""
        ctxs = [self._context(t) for t in tasks]
        k = len(tasks)
        mark = self.gpu.begin() if self.gpu is not None else None
        t0 = self.clock() if since is None else since
        values: list[Any] = []
        again: list[int] = []
        try:
            values = list(self.objective_batch([dict(t.params) for t in tasks], ctxs))
            if len(values) != k:
                raise ValueError(f"objective_batch returned {len(values)} items for {k} members")
        except EvaluationInterrupted:
            raise
        except BaseException as exc:  # noqa: BLE001 - a worker must outlive its objective
            if not (self.split_on_oom and k > 1 and _out_of_memory(exc)):
                return self._failed_stack(tasks, ctxs, t0, exc)
            _release_memory(exc)  # its frames held the stack's tensors
            values = [StopEvaluation() if c.should_stop() else None for c in ctxs]
            again = [i for i, v in enumerate(values) if v is None]
        else:
            if self.split_on_oom:
                together: dict[int, list[int]] = {}
                for i, v in enumerate(values):
                    if (isinstance(v, BaseException) and _out_of_memory(v)
                            and not ctxs[i].should_stop()):
                        together.setdefault(id(v), []).append(i)
                for group in (g for g in together.values() if len(g) > 1):
                    shared = values[group[0]]  # one error object for the whole group
                    for i in group:
                        values[i] = None
                    again.extend(group)
                    _release_memory(shared)  # once a group, not once a member (gc.collect)
                again.sort()
        kept = [i for i in range(k) if i not in again]
        batch = tasks[kept[0]].uid if kept else tasks[0].uid
        t1 = self.clock()
        gpu = self.gpu.end(mark) if self.gpu is not None and mark is not None else None
        out: list[Result | None] = [None] * k
        for i in kept:
            task, ctx, value = tasks[i], ctxs[i], values[i]
            member = f", batch member {i + 1} of {k}"
            if isinstance(value, StopEvaluation) or (isinstance(value, BaseException)
                                                     and ctx.should_stop()):
                out[i] = self._result(task, ctx, t0, None, {}, "pruned by the coordinator",
                                      EvalState.PRUNED, batch, t1, gpu)
                continue
            if isinstance(value, BaseException):
                out[i] = self._result(task, ctx, t0, None, {}, self._failure_text(value, member),
                                      EvalState.FAILED, batch, t1, gpu)
                continue
            try:
                fitness, metrics = _split_output(value)
            except (TypeError, ValueError) as exc:
                out[i] = self._result(task, ctx, t0, None, {}, self._failure_text(exc, member),
                                      EvalState.FAILED, batch, t1, gpu)
                continue
            out[i] = self._judge(task, ctx, t0, fitness, metrics, batch, t1, gpu)
        if again:
            half = (len(again) + 1) // 2
            parts = [again[:half], again[half:]] if len(again) > 1 else [again]
            print(f"evo_engine: {len(again)} members of a stack of {k} ran out of memory "
                  f"together ({self._where()}): training them as "
                  f"{' + '.join(str(len(p)) for p in parts)} (a smaller --batch avoids the "
                  f"retry)", file=sys.stderr, flush=True)
            for n, part in enumerate(parts):
                redone = self._run_stack([tasks[i] for i in part],
                                         since=t0 if n == 0 and not kept else None)
                for i, r in zip(part, redone, strict=True):
                    out[i] = r
        return [r for r in out if r is not None]

    def _failed_stack(self, tasks: list[Task], ctxs: list[Context], t0: float,
                      exc: BaseException) -> list[Result]:
        """Every member of a stack whose ``objective_batch`` call raised ``exc``: PRUNED where
        it was told to stop and stopped, else FAILED with that error."""
        if isinstance(exc, EvaluationTimedOut):
            err = timed_out_text(exc.seconds)
        else:
            err = self._failure_text(exc, f", batch of {len(tasks)}")
        t1 = self.clock()
        batch = tasks[0].uid
        return [
            self._result(t, c, t0, None, {}, "pruned by the coordinator", EvalState.PRUNED, batch, t1)
            if isinstance(exc, StopEvaluation) and c.should_stop() else
            self._result(t, c, t0, None, {}, err, EvalState.FAILED, batch, t1)
            for t, c in zip(tasks, ctxs, strict=True)
        ]

    def _result(
        self, task: Task, ctx: Context, t0: float, fitness: float | None,
        metrics: dict[str, float], error: str | None, state: EvalState, batch: int = -1,
        t_end: float | None = None, gpu: tuple[float, float] | None = None,
    ) -> Result:
        return Result(
            uid=task.uid, worker=self.worker, fitness=fitness, metrics=metrics, error=error,
            t_start=t0, t_end=self.clock() if t_end is None else t_end, state=state,
            curve=tuple(ctx.curve), batch=batch, gpu=gpu,
        )


def _out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says memory ran out (MemoryError, torch's OutOfMemoryError, a CUDA
    or MPS "out of memory" RuntimeError)."""
    return isinstance(exc, MemoryError) or "out of memory" in str(exc).lower()


def _release_memory(exc: BaseException) -> None:
    """Free what the failed evaluation held and give the GPU's cached memory back.

    Its tensors live on in the locals of the frames ``exc``'s traceback keeps (the text is
    already taken): those frames are cleared first, else the cache could only be emptied of
    what was free anyway, and ranks packed on the GPU could not use what the failure held.
    """
    traceback.clear_frames(exc.__traceback__)
    gc.collect()
    # Only a torch the objective already imported can hold GPU memory: importing it here
    # would cost a CPU-only objective about a second per out-of-memory failure.
    torch = sys.modules.get("torch")
    if torch is None:
        return
    try:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001, S110 - best effort only
        pass
