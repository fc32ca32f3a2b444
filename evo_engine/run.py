"""One optimisation run from the command line: scenario → run directory → transport → store.

This is where the pieces meet: it loads and overrides the scenario, guards the run
directory, picks the transport (MPI under mpiexec with more than one rank, else local
worker processes, or inline with ``--workers 0``), drives the coordinator, records every
evaluation and prints the best individual at the end.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from evo_engine import __version__
from evo_engine.actors.base import Transport, WorkerSpec, WorkerStartError
from evo_engine.actors.inline import InlineTransport
from evo_engine.actors.local import LocalTransport
from evo_engine.actors.runtime import FINALIZE
from evo_engine.coordinator import Coordinator
from evo_engine.engine import Engine
from evo_engine.errors import InputError
from evo_engine.log import configure
from evo_engine.progress import ProgressReporter
from evo_engine.recorder import Recorder
from evo_engine.records import EvalState, Task
from evo_engine.scenario import Scenario, ScenarioError, load_scenario, override
from evo_engine.store import RunStore

EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT, EXIT_STOPPED = 0, 1, 2, 3
RUN_ARTIFACTS = ("run.zarr", "log.jsonl", "scratch")


class UsageError(InputError):
    """Bad input from the command line or the run directory: exit code 2."""


@dataclass
class RunOptions:
    scenario: Path
    run_dir: Path | None = None
    max_evals: int | None = None
    max_time: float | None = None
    seed: int | None = None
    workers: int | None = None
    preset: str = "auto"
    sync: bool = False
    force: bool = False
    resume: bool = False
    quiet: bool = False


def resolve_preset(preset: str) -> str:
    if preset != "auto":
        return preset
    try:
        import torch

        return "full" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover
        return "cpu"


def load_with_overrides(opts: RunOptions, preset: str) -> Scenario:
    scenario = load_scenario(opts.scenario, preset)
    return override(
        scenario, max_evals=opts.max_evals, max_time=opts.max_time, seed=opts.seed,
        sync=True if opts.sync else None,
    )


def prepare_run_dir(run_dir: Path, force: bool) -> None:
    """Refuse to touch a directory holding anything unless --force; --force clears only our files."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"run directory {run_dir} exists and is not a directory")
    if run_dir.exists() and any(run_dir.iterdir()):
        ours = [n for n in RUN_ARTIFACTS if (run_dir / n).exists()]
        if not force:
            what = "an evo_engine run" if ours else "other files"
            raise UsageError(
                f"run directory {run_dir} is not empty (it holds {what}); use --resume to "
                f"continue a stopped run, --force to start over, or choose another --run-dir"
            )
        for name in ours:
            p = run_dir / name
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)


class StopFlag:
    """Turns SIGTERM, SIGINT and SIGUSR1 into a stop request the coordinator polls."""

    SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1")

    def __init__(self) -> None:
        self.reason: str | None = None
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.reason is None:
            self.reason = f"signal:{signal.Signals(signum).name}"

    def install(self) -> StopFlag:
        for name in self.SIGNALS:
            sig = getattr(signal, name, None)
            if sig is not None:
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def default_workers(scenario: Scenario, requested: int | None) -> int:
    if requested is not None:
        return requested
    if scenario.workers is not None:
        return scenario.workers
    return max(os.cpu_count() or 1, 1)


def make_transport(spec: WorkerSpec, workers: int) -> Transport:
    if workers == 0:
        return InlineTransport(spec, 1)
    return LocalTransport(spec, workers)


def run_finalize(transport: Transport, engine: Engine, top: int = 1) -> list[dict[str, Any]]:
    """Run the scenario's ``finalize`` (e.g. test metrics) for the best individuals."""
    best = sorted((m for isl in engine.islands for m in isl.population), key=lambda m: m.fitness)
    seen: set[int] = set()
    out = []
    for ind in best:
        if ind.uid in seen or len(out) >= top:
            continue
        seen.add(ind.uid)
        task = Task(uid=ind.uid, island=ind.island, genome=ind.genome,
                    params=engine.space.decode(ind.genome), seed=ind.uid, operator=FINALIZE)
        transport.submit(0, task)
        results: list[Any] = []
        while not results:
            results = transport.poll(0.05)
        r = results[0]
        out.append({"uid": ind.uid, "fitness": ind.fitness, "params": task.params,
                    "metrics": r.metrics, "error": r.error})
    return out


def execute(opts: RunOptions, print_fn: Callable[[str], None] = print) -> int:
    """Run a scenario end to end; returns the exit code. Raises UsageError/ScenarioError."""
    preset = resolve_preset(opts.preset)
    if opts.resume:
        raise UsageError("--resume is not available yet in this version")
    scenario = load_with_overrides(opts, preset)
    run_dir = opts.run_dir or Path("runs") / scenario.name
    prepare_run_dir(run_dir, opts.force)
    log = configure(run_dir / "log.jsonl", rank=0, role="coordinator")
    if scenario.prepare is not None:
        log.info("prepare_started")
        scenario.prepare()
    space = scenario.space
    store = RunStore.create(run_dir, attrs={
        "scenario": scenario.name, "scenario_path": str(opts.scenario), "preset": preset,
        "fingerprint": scenario.fingerprint(),
        "fingerprint_description": scenario.fingerprint_description(),
        "evo_engine_version": __version__, "max_evals": scenario.max_evals,
        "islands": scenario.islands, "space": space.describe(), "sync": scenario.sync,
        "created": time.time(),
    }, param_kinds={n: p.kind for n, p in space.items()}, dim=space.dim)
    engine = Engine(space, scenario.engine_config())
    recorder = Recorder(store, space)
    workers = default_workers(scenario, opts.workers)
    spec = WorkerSpec(scenario_path=str(opts.scenario), preset=preset,
                      scratch_root=str(run_dir / "scratch"))
    stop = StopFlag().install()
    t_limit = time.time() + scenario.max_time if scenario.max_time else None

    def stop_check() -> str | None:
        if stop.reason:
            return stop.reason
        if t_limit is not None and time.time() >= t_limit:
            return "max_time"
        return None

    def on_evaluation(ev: Any) -> None:
        recorder.record(ev)
        recorder.record_migrations(engine.drain_migrations())

    transport = make_transport(spec, workers)
    try:
        infos = transport.start()
    except WorkerStartError as exc:
        store.close("failed", f"worker_start: {exc}")
        raise UsageError(str(exc)) from None
    for info in infos:
        log.info("worker_started", worker=info.worker, rank=info.rank, host=info.host,
                 device=info.device, pid=info.pid)
    n_workers = transport.n_workers
    log.info("run_started", scenario=scenario.name, max_evals=scenario.max_evals,
             workers=n_workers, islands=scenario.islands, operator=scenario.operator,
             sync=scenario.sync, preset=preset)
    reporter = ProgressReporter(n_workers, quiet=opts.quiet)
    coord = Coordinator(engine, transport, on_evaluation=on_evaluation, on_tick=reporter,
                        stop_check=stop_check, log=log)
    final: list[dict[str, Any]] = []
    try:
        reason = coord.run()
        reporter.finish(coord.progress)
        if reason == "finished" and engine.best is not None and scenario.finalize is not None:
            log.info("finalize_started")
            final = run_finalize(transport, engine)
    finally:
        transport.close()
        recorder.close()
        stop.restore()
    finished = reason == "finished"
    store.close("finished" if finished else "stopped", reason, trim=finished)
    if final:
        store.set_attrs(final=final)
    log.info("run_finished", reason=reason, finished=coord.progress.finished,
             best=engine.best.fitness if engine.best else None)
    _print_summary(print_fn, scenario, engine, coord, reason, run_dir, final)
    return EXIT_OK if finished else EXIT_STOPPED


def _print_summary(print_fn: Callable[[str], None], scenario: Scenario, engine: Engine,
                   coord: Coordinator, reason: str, run_dir: Path,
                   final: list[dict[str, Any]]) -> None:
    p = coord.progress
    now = time.time()
    failed = engine.counts[EvalState.FAILED]
    head = "finished" if reason == "finished" else f"stopped ({reason}); continue with --resume"
    print_fn(
        f"{head}: {engine.n_finished}/{engine.max_evals} evaluations "
        f"({engine.counts[EvalState.COMPLETE]} complete, {failed} failed) in "
        f"{now - p.started:.1f} s, worker utilization {100 * p.utilization(coord.transport.n_workers, now):.0f}%"
    )
    best = engine.best
    if best is None:
        print_fn("no evaluation completed: nothing to report as best")
    else:
        print_fn(f"best fitness {best.fitness:.6g} (uid {best.uid}, island {best.island})")
        for name, value in engine.space.decode(best.genome).items():
            print_fn(f"  {name} = {value!r}" if isinstance(value, str) else f"  {name} = {value:.6g}")
    for f in final:
        if f["error"]:
            print_fn(f"finalize of uid {f['uid']} failed: {f['error'].splitlines()[0]}")
        else:
            shown = ", ".join(f"{k}={v:.4g}" for k, v in sorted(f["metrics"].items()))
            print_fn(f"final metrics of uid {f['uid']}: {shown}")
    print_fn(f"run store: {RunStore.location(run_dir)}")


__all__ = ["EXIT_BAD_INPUT", "EXIT_INTERNAL", "EXIT_OK", "EXIT_STOPPED", "RunOptions",
           "ScenarioError", "UsageError", "execute"]
