"""One optimisation run from the command line: scenario → run directory → transport → store.

This is where the pieces meet: it loads and overrides the scenario, guards the run
directory, picks the transport (MPI under mpiexec with more than one rank, else local
worker processes, or inline with ``--workers 0``), drives the coordinator, records every
evaluation and prints the best individual at the end.
"""

from __future__ import annotations

import contextlib
import errno
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from evo_engine import __version__
from evo_engine.errors import InputError
from evo_engine.job import log as run_log
from evo_engine.job import startup
from evo_engine.job.callbacks import CallbackSet, check_callbacks, record_of
from evo_engine.job.coordinator import Coordinator, StopRequest
from evo_engine.job.overrides import apply_sets
from evo_engine.job.pbt_files import CheckpointSweeper
from evo_engine.job.progress import ProgressReporter
from evo_engine.job.walltime import Deadline, walltime_margin
from evo_engine.job.warmstart import warm_start_genomes
from evo_engine.scenario import Scenario, ScenarioError, load_scenario, override
from evo_engine.search.engine import Engine, task_seed
from evo_engine.search.estimate import (
    UNMEASURED,
    describe_best,
    describe_luckiest,
    resolution_note,
    unmeasured_note,
)
from evo_engine.search.messages import EvalState, Task
from evo_engine.store import rundir
from evo_engine.store.journal import NAME as JOURNAL_NAME
from evo_engine.store.journal import Journal, has_entries
from evo_engine.store.replay import fingerprint_diff, rebuild_engine
from evo_engine.store.run_inputs import inputs_diff, run_inputs
from evo_engine.store.rundir import RunLock
from evo_engine.store.runstore import RunStore
from evo_engine.store.writer import Recorder, SnapshotPolicy
from evo_engine.store.writer_process import RecorderProcess, start_recorder
from evo_engine.transports.base import Transport, WorkerSpec, WorkerStartError
from evo_engine.transports.inline import InlineTransport
from evo_engine.transports.launch import (
    launched_with_several_ranks,
    srun_tasks_without_pmi,
    usable_cores,
)
from evo_engine.transports.local import LocalTransport
from evo_engine.transports.worker import FINALIZE, cuda_available
from evo_engine.util import terminal
from evo_engine.util.signals import SIGNALS
from evo_engine.util.timing import describe as describe_timing
from evo_engine.util.timing import fmt_seconds

EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT, EXIT_STOPPED = 0, 1, 2, 3
FINAL_CSV = "final_metrics.csv"
"""Every final metric of the best individuals (the summary shows a few: ``FINAL_SHOWN``)."""
FINAL_SHOWN = 6
RUN_ARTIFACTS = ("run.zarr", "log.jsonl", "scratch", "tensorboard", "mlruns", "mlflow.db",
                 "wandb", FINAL_CSV, JOURNAL_NAME)


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
    progress: str | None = None
    """``--progress auto|line|json|none`` (evo_engine.job.progress); None: none with --quiet,
    else auto."""
    batch: int | None = None
    sets: tuple[str, ...] = ()
    """``--set field=value`` items (evo_engine.job.overrides), applied before the flags above."""
    warm_start: str | None = None
    """``--warm-start FILE|RUN_DIR[:N]`` (evo_engine.job.warmstart); a new run only."""
    callbacks: tuple[str, ...] = ()
    """``--callback NAME`` items, added to the scenario's ``callbacks`` (evo_engine.job.callbacks)."""
    fsync: str = "snapshots"
    """``--fsync never|snapshots|always``: when the store is forced to disk (evo_engine.store.writer)."""


def resolve_preset(preset: str) -> str:
    if preset != "auto":
        return preset
    return "full" if cuda_available() else "cpu"


def load_with_overrides(opts: RunOptions, preset: str) -> Scenario:
    scenario = apply_sets(load_scenario(opts.scenario, preset), opts.sets)
    return override(
        scenario, max_evals=opts.max_evals, max_time=opts.max_time, seed=opts.seed,
        sync=True if opts.sync else None, batch=opts.batch,
    )


@dataclass
class Plan:
    """What to do with the run directory: continue its run, or start one (clearing ``clear``)."""

    resume: bool
    clear: tuple[str, ...] = ()
    note: str = ""


def plan_run(run_dir: Path, opts: RunOptions, made_dir: bool) -> Plan:
    """Decide, without writing, how to start in ``run_dir``; refuse (exit 2) what cannot be.

    A directory holding nothing recorded (empty, or leftovers of a start stopped or killed
    before its first results were flushed) is taken as new by a plain start and by
    ``--resume``, which says which it found.
    """
    d = rundir.inspect(run_dir)
    leftovers = [n for n in rundir.OURS if (run_dir / n).exists() and n != ".lock"]
    if opts.resume:
        if made_dir or (d.kind == "fresh" and d.foreign and not leftovers):
            what = "does not exist" if made_dir else "holds no evo_engine run"
            raise UsageError(f"--resume: {run_dir} {what}: there is no run to resume (no "
                             "run.zarr inside); start it without --resume")
        if d.kind == "damaged":
            raise UsageError(f"--resume: {d.problem}")
        if d.kind == "started" or (d.kind == "unstarted" and has_entries(run_dir)):
            # Tasks were handed out (evo_engine.store.journal) and the job died before anything was
            # flushed: resuming counts that crash against them (the poison rule).
            return Plan(resume=True)
        return Plan(resume=False, clear=("run.zarr",), note=_nothing_to_resume(run_dir, d.kind))
    if d.kind in ("started", "damaged") or d.foreign:
        if not opts.force:
            if d.kind == "damaged":
                raise UsageError(f"{d.problem}. (Without --resume: the run directory is not "
                                 "empty; --force would delete the damaged run)")
            what = "an evo_engine run" if d.kind == "started" else "other files"
            raise UsageError(
                f"run directory {run_dir} is not empty (it holds {what}); use --resume to "
                f"continue a stopped run, --force to start over, or choose another --run-dir"
            )
        return Plan(resume=False, clear=RUN_ARTIFACTS)
    if d.kind == "unstarted":
        return Plan(resume=False, clear=("run.zarr", "scratch"), note=(
            f"{run_dir} holds a run that had recorded nothing yet (it was stopped or killed "
            "while starting): starting it anew"))
    return Plan(resume=False, clear=("scratch",))


def _nothing_to_resume(run_dir: Path, kind: str) -> str:
    """What ``--resume`` does in a run directory with nothing recorded, truthfully: an empty
    one (made ahead for a chain of jobs) is not a run that was stopped."""
    leftovers = sorted(p.name for p in run_dir.iterdir() if p.name != ".lock")
    if kind == "unstarted":
        return (f"{run_dir} holds a run that had recorded nothing yet (it was stopped or killed "
                "while starting): starting it from the beginning")
    if leftovers:
        return (f"{run_dir} holds no run store, only what a start stopped or killed before "
                f"making one left behind ({', '.join(leftovers)}): nothing to resume, so a "
                "new run starts there")
    return f"--resume: {run_dir} is empty: there is no run to resume, so a new run starts there"


class StopFlag:
    """Turns SIGTERM, SIGINT and SIGUSR1 into a stop request the coordinator polls."""

    SIGNALS = SIGNALS

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
        self._old.clear()


def default_workers(scenario: Scenario, requested: int | None) -> int:
    if requested is not None:
        return requested
    if scenario.workers is not None:
        return scenario.workers
    return usable_cores()  # a Slurm allocation's cores, not the whole node's


def check_not_in_a_store(run_dir: Path) -> None:
    """Refuse a run directory in a zarr store, e.g. ``--run-dir RUN/run.zarr`` for ``RUN``:
    with --force the new run would be written into the old run's store, damaging it."""
    path = run_dir.resolve()
    for d in [*reversed(path.parents), path]:  # from the root: the outermost store
        if (d / "zarr.json").is_file():
            what = "run store" if d.name == "run.zarr" else "zarr store"
            raise UsageError(
                f"run directory {run_dir} is {'' if d == path else 'inside '}the {what} {d}: "
                "a run directory holds a run.zarr, it is not one nor inside one (the run of "
                f"that store is in {d.parent}); choose another --run-dir")


def check_workers(workers: int, flag: bool) -> None:
    """Refuse a local worker count this process can never start, before anything is written.

    Each local worker process holds two open files here (its pipe and its process handle),
    so more than half the open-file limit cannot start (a huge count was an internal error
    after the store was written). Under mpiexec the ranks are the workers: nothing to check.
    """
    if workers <= 1 or launched_with_several_ranks():
        return
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):  # no such limit on this platform
        return
    if limit != resource.RLIM_INFINITY and workers > limit // 2:
        asked = f"--workers {workers}" if flag else f"the scenario's workers={workers}"
        raise UsageError(
            f"{asked}: this process may open {limit} files (ulimit -n) and each local worker "
            f"holds 2, so fewer than {limit // 2} workers can start here; use fewer workers, "
            "raise the limit (ulimit -n), or run under mpiexec")


def _cannot_start(exc: OSError, workers: int) -> UsageError:
    """A worker count the operating system refused while starting (open files, processes)."""
    return UsageError(
        f"could not start {workers} local worker processes: {exc.strerror or exc}; use fewer "
        "--workers, or raise the limit (ulimit -n for open files, ulimit -u for processes)")


def make_transport(spec: WorkerSpec, workers: int) -> Transport:
    if launched_with_several_ranks():
        from evo_engine.transports.mpi import MPITransport

        return MPITransport(spec)  # worker w is rank w + 1; --workers does not apply
    if workers == 0:
        return InlineTransport(spec, 1)
    return LocalTransport(spec, workers)


def run_finalize(transport: Transport, engine: Engine, top: int = 1,
                 stopped: Callable[[], str | None] = lambda: None,
                 ) -> tuple[list[dict[str, Any]], str | None]:
    """Run the scenario's ``finalize`` (e.g. test metrics) for the best individuals.

    Each runs with its evaluation's own seed, so the metrics describe the model that was
    scored. The incumbent (the best estimated mean, ``Engine.best``) comes first; then the
    populations. With several objectives the knee of the front comes first, then the front. ``stopped()`` (polled while a worker runs it) names a stop request (a signal,
    the hard ``--max-time``/walltime limit): finalize is then abandoned and ``([], reason)``
    returned, so the run ends as stopped and ``--resume`` runs finalize again from its start
    (a retraining starts over; ``--max-time`` bounds each attempt). Inline, the signal
    interrupts the objective itself, which answers with a FAILED result.
    """
    best = sorted((m for isl in engine.islands for m in isl.population), key=lambda m: m.fitness)
    if engine.front:
        # Several objectives: the front's knee first, then the rest of the front (pareto.py).
        best = engine.front + best
    elif engine.best is not None:
        best.insert(0, engine.best)
    seen: set[int] = set()
    out = []
    for ind in best:
        if ind.uid in seen or len(out) >= top:
            continue
        seen.add(ind.uid)
        task = Task(uid=ind.uid, island=ind.island, genome=ind.genome,
                    params=engine.space.decode(ind.genome),
                    seed=task_seed(engine.config.seed, ind.uid), operator=FINALIZE)
        transport.submit(0, task)
        results: list[Any] = []
        while not results:
            reason = stopped()
            if reason is not None:
                return [], reason
            results = transport.poll(0.05)
        r = results[0]
        reason = stopped()
        if reason is not None and r.state is EvalState.FAILED:  # interrupted (inline)
            return [], reason
        out.append({"uid": ind.uid, "fitness": ind.fitness, "params": task.params,
                    "metrics": r.metrics, "error": r.error})
    return out, None


class AlreadyFinished(Exception):  # noqa: N818 - not an error: a chained job with nothing left
    """--resume on a finished run: exit 0 so a chain of dependent SLURM jobs ends quietly."""


def _store_attrs(scenario: Scenario, opts: RunOptions, preset: str) -> dict[str, Any]:
    now = time.time()
    return {
        "scenario": scenario.name, "scenario_path": str(opts.scenario), "preset": preset,
        "fingerprint": scenario.fingerprint(),
        "fingerprint_description": scenario.fingerprint_description(),
        "evo_engine_version": __version__, "max_evals": scenario.max_evals,
        "islands": scenario.islands, "space": scenario.space.describe(), "sync": scenario.sync,
        "created": now, "jobs": 1, "inputs": run_inputs(opts.scenario, preset),
        # For analysis: the axes' name of fitness, and when each job started (plots mark
        # the resumes and cut out the pauses between jobs).
        "fitness_name": scenario.fitness_name, "job_starts": [now],
    }


def check_resume(run_dir: Path, scenario: Scenario, opts: RunOptions, preset: str,
                 warn: Callable[[str], None]) -> RunStore:
    """Open a stopped or crashed run and refuse what cannot continue, writing nothing.

    The store was checked for damage by ``plan_run`` (``rundir.inspect``) just before."""
    store = RunStore.open(run_dir, mode="r+", check=False)
    if store.tasks is None or store.snapshots is None:
        raise UsageError(f"--resume: the store in {run_dir} has no task log or snapshots to resume from")
    attrs = store.attrs
    diff = fingerprint_diff(attrs.get("fingerprint_description", {}),
                            scenario.fingerprint_description())
    pbt_change = _pbt_population_change(attrs.get("fingerprint_description", {}),
                                        scenario.fingerprint_description())
    if pbt_change:
        raise UsageError(
            f"--resume: the run in {run_dir} cannot continue with this scenario "
            f"({pbt_change}): a population-based training's members, their checkpoints and "
            "the decisions still to come belong to the population it started with, so another "
            "population is refused even with --force. Resume it with its own islands, "
            "population_size and pbt setting, or start the new one in another --run-dir"
        )
    stored_inputs = attrs.get("inputs")
    if isinstance(stored_inputs, dict):
        diff += inputs_diff(stored_inputs, run_inputs(opts.scenario, preset))
    else:
        warn(f"the run in {run_dir} was made by an evo_engine that did not record its inputs: "
             "the preset, scenario file and data file are not compared this time (they are "
             "recorded from now on)")
    if diff and not opts.force:
        stored_name = attrs.get("scenario")
        if isinstance(stored_name, str) and stored_name != scenario.name:
            # Another scenario's run: its name says it all (the settings' diff runs to pages).
            made_with = attrs.get("scenario_path")
            raise UsageError(
                f"--resume: {run_dir} holds a run of scenario {stored_name!r}"
                + (f" (made with {made_with})" if made_with else "")
                + f", not of {scenario.name!r} ({opts.scenario}): resume it with its own "
                f"scenario file, or choose another --run-dir ({len(diff)} settings differ; "
                "--force would continue it with this scenario's)"
            )
        raise UsageError(
            f"--resume: the scenario no longer matches the run in {run_dir}: "
            + _first(diff) + ". Restore the scenario's settings, or pass --force to continue "
            "the run with the new ones"
        )
    budget = opts.max_evals if opts.max_evals is not None else int(attrs["max_evals"])
    finished = store.evaluations.committed
    if budget < finished:
        raise UsageError(
            f"--max-evals {budget} is below the {finished} evaluations the run already holds"
        )
    before = int(attrs["max_evals"])
    if budget < before and attrs.get("status") != "finished":
        # Allowed (the way to end a run early), never silent: the run's own budget shrinks.
        warn(f"--max-evals {budget} lowers the run's budget from {before} to {budget} "
             f"evaluations (it holds {finished}): this job stops at {budget}, and so does a "
             "later --resume without --max-evals")
    if attrs.get("status") == "finished" and budget <= finished:
        raise AlreadyFinished(
            f"the run in {run_dir} already finished all {finished} evaluations: nothing to "
            f"resume (pass a larger --max-evals to extend it)"
        )
    return store


def _pbt_population_change(stored: Any, current: dict[str, Any]) -> str | None:
    """What makes a PBT run's population another one (islands, members per island, PBT on or
    off), said for the error; None when the run and the scenario agree or neither uses PBT.
    Other settings may change under --force (search/pbt.py keeps one state per member)."""
    if not isinstance(stored, dict) or (not stored.get("pbt") and not current.get("pbt")):
        return None
    if bool(stored.get("pbt")) != bool(current.get("pbt")):
        return ("the run uses pbt, the scenario does not" if stored.get("pbt")
                else "the scenario uses pbt, the run did not")
    changed = [f"{k}: run has {stored.get(k)!r}, scenario has {current.get(k)!r}"
               for k in ("islands", "population_size") if stored.get(k) != current.get(k)]
    return "; ".join(changed) or None


def _first(diff: list[str], shown: int = 6) -> str:
    """The first ``shown`` differences, and how many more."""
    more = f"; and {len(diff) - shown} more" if len(diff) > shown else ""
    return "; ".join(diff[:shown]) + more


def open_for_resume(store: RunStore, scenario: Scenario, opts: RunOptions, preset: str,
                    warn: Callable[[str], None]) -> tuple[RunStore, Engine, list[Any]]:
    """Rebuild the engine of a run ``check_resume`` accepted, and mark the run as running."""
    attrs = store.attrs
    budget = opts.max_evals if opts.max_evals is not None else int(attrs["max_evals"])
    engine, migrations = rebuild_engine(store, scenario.space,
                                        scenario.engine_config(), warn)
    engine.extend_budget(budget)
    starts = attrs.get("job_starts")
    store.set_attrs(status="running", stop_reason="", max_evals=budget,
                    jobs=int(attrs.get("jobs", 1)) + 1, inputs=run_inputs(opts.scenario, preset),
                    fitness_name=scenario.fitness_name,
                    job_starts=[*(starts if isinstance(starts, list) else []), time.time()])
    return store, engine, migrations


def execute(opts: RunOptions, print_fn: Callable[[str], None] = print) -> int:
    """Run (or resume) a scenario end to end; returns the exit code. Raises InputError."""
    tasks = srun_tasks_without_pmi()
    if tasks:
        raise UsageError(
            f"this is one of {tasks} tasks of an srun step, but no MPI process manager "
            "interface told them they are ranks of one job, so each would be a separate run: "
            "start them with `srun --mpi=pmix` (or --mpi=pmi2, whichever `srun --mpi=list` "
            "shows your MPI was built for), or run one task (`srun -n 1`) with --workers N")
    if launched_with_several_ranks():
        from evo_engine.transports import mpi

        if not mpi.coordinating():
            # Every rank of an MPI job starts here: ranks >= 1 become worker actors until
            # rank 0 stops them, and rank 0 comes back into execute as the coordinator.
            return mpi.run_rank(lambda: execute(opts, print_fn))
    # Rank 0 of an MPI job kept a stop signal that came before its MPI started: raised now,
    # it stops the worker ranks (run_rank) and the job exits 3.
    startup.mpi_started()
    preset = resolve_preset(opts.preset)
    scenario = load_with_overrides(opts, preset)
    run_dir = opts.run_dir or Path("runs") / scenario.name
    # Read before the run directory is touched: a bad file leaves an existing run alone.
    warm = (warm_start_genomes(opts.warm_start, scenario.space, scenario.population_size)
            if opts.warm_start and not opts.resume else [])
    check_callbacks([*scenario.callbacks, *opts.callbacks])
    check_workers(default_workers(scenario, opts.workers), flag=opts.workers is not None)
    walltime_margin()  # read only inside SLURM, and only once the run is going
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"run directory {run_dir} exists and is not a directory")
    check_not_in_a_store(run_dir)
    # Lock first: --force must never clear a run that another job is still writing.
    lock = RunLock(run_dir)
    lock.acquire()
    writing: list[bool] = []  # non-empty once anything is written: a refusal leaves no trace
    try:
        return _execute_locked(opts, scenario, preset, run_dir, print_fn, lock, writing, warm)
    except AlreadyFinished as done:
        print_fn(str(done))
        return EXIT_OK
    finally:
        # However the run ended (finished, stopped, refused, failed), its last events are
        # written: a process running many keeps no handle on this run's log.
        run_log.close()
        lock.release(tidy=not writing)


def _execute_locked(opts: RunOptions, scenario: Scenario, preset: str, run_dir: Path,
                    print_fn: Callable[[str], None], lock: RunLock, writing: list[bool],
                    warm: list[Any] | None = None) -> int:
    # One job clock for the live line, the summary and the store (evo_engine.util.timing).
    job_start = time.time()
    notes: list[str] = []

    def early_warn(message: str) -> None:
        notes.append(message)
        print(f"evo_engine: warning: {message}", file=sys.stderr)

    if lock.unguarded:  # stderr now, and the log once it exists
        early_warn(lock.unguarded)
    # Everything that can refuse the run does so before anything is written.
    plan = plan_run(run_dir, opts, made_dir=lock.made_dir)
    checked = check_resume(run_dir, scenario, opts, preset, early_warn) if plan.resume else None
    rundir.check_writable(run_dir)
    reporter = ProgressReporter(0, mode=progress_mode(opts), job_start=job_start)
    if scenario.prepare is not None:
        # Before anything is written: a bad data file leaves the run directory untouched.
        with reporter.stage("prepare", "preparing data"):
            scenario.prepare()
    writing.append(True)
    lock.claim()
    if plan.note:
        print(f"evo_engine: note: {plan.note}", file=sys.stderr)
    rundir.clear(run_dir, plan.clear)
    log = run_log.configure(run_dir / "log.jsonl", rank=0, role="coordinator")
    if "prepare" in reporter.stages:  # the log did not exist yet when it started
        log.info("data_prepared", seconds=round(reporter.stages["prepare"], 3))
    for message in [plan.note, *notes]:
        if message:
            log.warning("resume_warning", message=message)

    def warn(message: str) -> None:
        log.warning("resume_warning", message=message)
        print(f"evo_engine: warning: {message}", file=sys.stderr)

    replayed: list[Any] = []
    suspects: tuple[int, ...] = ()
    if checked is not None:
        store, engine, replayed = open_for_resume(checked, scenario, opts, preset, warn)
        # In flight at an earlier crash: sent one at a time (the poison rule's suspects).
        suspects = tuple(sorted(int(u) for u in store.attrs.get("crash_counts", {})))
        log.info("run_resumed", finished=engine.n_finished, pending=len(engine.pending),
                 max_evals=engine.max_evals)
    else:
        store = RunStore.create(run_dir, attrs={**_store_attrs(scenario, opts, preset),
                                                "created": job_start},
                                param_kinds=scenario.space.column_kinds(),
                                dim=scenario.space.dim)
        engine = Engine(scenario.space, scenario.engine_config())
        if warm:
            engine.add_warm_start(warm)
            log.info("warm_start", configurations=len(warm), source=str(opts.warm_start))
    # PBT checkpoints no member holds: deleted as snapshots make their release durable.
    sweeper = CheckpointSweeper(engine, run_dir / "scratch")
    if engine.pbt is not None and sweeper.sweep():
        log.info("pbt_checkpoints_swept", deleted=sweeper.deleted)
    # Written before each task goes out, so a crash is blamed even on unflushed tasks.
    journal = Journal(run_dir, int(store.attrs.get("jobs", 1)))
    if opts.warm_start and checked is not None:
        warn("--warm-start is ignored with --resume: the run keeps the warm-start queue it "
             "was started with")
    workers = default_workers(scenario, opts.workers)
    spec = WorkerSpec(scenario_path=str(opts.scenario), preset=preset,
                      scratch_root=str(run_dir / "scratch"), reports=scenario.pruner != "none",
                      eval_timeout_s=scenario.eval_timeout_s)
    transport = make_transport(spec, workers)
    callbacks = CallbackSet.create(
        [*scenario.callbacks, *opts.callbacks], run_dir, scenario.name,
        lambda m: print(f"evo_engine: warning: {m}", file=sys.stderr), log)
    stop = StopFlag()
    recorder: Recorder | RecorderProcess | None = None
    try:
        # From here on the store is written by the recorder's process only. Where the run
        # directory cannot be locked, a writer outliving a killed coordinator could write
        # beside a resumed job: a thread then, which dies with the coordinator.
        # A stop signal waits until the writer is bound to `recorder`, except while the child
        # starts (its wait lets a stop through and kills the child): held for milliseconds.
        with startup.held():
            recorder = start_recorder(
                store, scenario.space, warn, process=lock.unguarded is None, fsync=opts.fsync,
                keep_fds=lock.fds(),
                on_snapshot=lambda name, n: (log.info("snapshot_written", name=name, results=n),
                                             sweeper.durable(n)))
        recorder.record_migrations(replayed)
        log.info("workers_starting", workers=workers)
        try:
            with reporter.stage("workers", f"starting {workers or 'inline'} "
                                           f"worker{'s' if workers != 1 else ''}"):
                infos = transport.start()
        except WorkerStartError as exc:
            raise UsageError(str(exc)) from None
        except OSError as exc:
            if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.EAGAIN, errno.ENOMEM):
                raise
            raise _cannot_start(exc, workers) from None
        log.info("workers_ready", workers=transport.n_workers,
                 seconds=round(reporter.stages.get("workers", 0.0), 3))
        # Up to here a stop signal raised StopBeforeStart; from now on the loop polls for it.
        stop.install()
        startup.started()
        recorder.set_attrs(workers=transport.n_workers)
        for info in infos:
            log.info("worker_started", worker=info.worker, worker_rank=info.rank, host=info.host,
                     device=info.device, pid=info.pid)
        reason, coord, final = _drive(scenario, engine, transport, recorder, stop, opts, log,
                                      callbacks, reporter, journal, suspects, sweeper)
    except BaseException as exc:
        callbacks.close(timeout=5.0)
        why = (f"signal:{exc.signame}" if isinstance(exc, startup.StopBeforeStart)
               else "worker_start_failed" if isinstance(exc, WorkerStartError) else "error")
        journal.close()
        if recorder is None:  # stopped while the writer started: no child writes the store
            with contextlib.suppress(Exception):
                transport.close()
            with contextlib.suppress(Exception):
                store.close("stopped", why)
        else:
            # Keep what can be kept: the results so far and a snapshot to resume from.
            with contextlib.suppress(Exception):
                recorder.snapshot(engine.get_state())
            with contextlib.suppress(Exception):
                _shutdown(transport, recorder, "stopped", why)
        stop.restore()
        if isinstance(exc, WorkerStartError):
            raise UsageError(
                f"{exc}: a worker died and could not be started again, so the run stopped. "
                f"Everything recorded so far is kept in {run_dir}; fix the cause and continue "
                "with --resume"
            ) from None
        raise
    callbacks.close()
    journal.close()
    finished = reason == "finished"
    extra: dict[str, Any] = {"final": final} if final else {}
    if "finalize" in reporter.stages:
        extra["finalize_s"] = round(reporter.stages["finalize"], 3)
    _shutdown(transport, recorder, "finished" if finished else "stopped", reason,
              trim=finished, **extra)
    if final:
        try:
            write_final_csv(run_dir / FINAL_CSV, final)
        except OSError as exc:  # the store holds them all the same (its `final` attribute)
            warn(f"could not write {run_dir / FINAL_CSV} ({exc.strerror}); the final metrics "
                 "are in the run store (`analyze` shows them)")
    stop.restore()
    log.info("run_finished", reason=reason, finished=engine.n_finished,
             best=engine.best.fitness if engine.best else None)
    _print_summary(print_fn, scenario, engine, coord, reason, run_dir, final, reporter)
    return EXIT_OK if finished else EXIT_STOPPED


def progress_mode(opts: RunOptions) -> str:
    """What ``--progress`` and ``--quiet`` ask for (``--quiet`` alone: no progress either)."""
    if opts.progress is not None:
        return opts.progress
    return "none" if opts.quiet else "auto"


def write_final_csv(path: Path, final: list[dict[str, Any]]) -> None:
    """One row per finalized individual: uid, fitness, error, then every final metric."""
    import csv

    names = sorted({k for f in final for k in (f.get("metrics") or {})})
    with open(path, "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["uid", "fitness", "error", *names])
        for f in final:
            m = f.get("metrics") or {}
            error = (f.get("error") or "").strip().splitlines()
            out.writerow([f["uid"], f["fitness"], error[0] if error else "",
                          *(m.get(k, "") for k in names)])


def _shutdown(transport: Transport, recorder: Recorder | RecorderProcess, status: str,
              reason: str, trim: bool = False, **attrs: Any) -> None:
    """Stop workers, write what is buffered, then mark the store (in that order)."""
    try:
        transport.close()
    finally:
        recorder.finish(status, reason, trim=trim, **attrs)


def _drive(scenario: Scenario, engine: Engine, transport: Transport,
           recorder: Recorder | RecorderProcess,
           stop: StopFlag, opts: RunOptions, log: Any,
           callbacks: CallbackSet | None = None, reporter: ProgressReporter | None = None,
           journal: Journal | None = None,
           suspects: tuple[int, ...] = (),
           sweeper: CheckpointSweeper | None = None) -> tuple[str, Coordinator, list[Any]]:
    """The coordinator loop with checkpoints, time limits and signals wired in."""
    # --max-time counts from the job's start (data and worker start-up included), as --help says.
    job_start = reporter.meter.job_start if reporter is not None else None
    deadline = Deadline.for_run(job_start or time.time(), scenario.max_time)
    snapshots = SnapshotPolicy(scenario.checkpoint_every)

    def stop_check() -> StopRequest | None:
        if stop.reason:
            return StopRequest(stop.reason, abort=True)
        return deadline.check(time.time())

    def on_task(task: Task) -> None:
        recorder.record_task(task)

    def on_send(tasks: list[Task]) -> None:
        if journal is not None:  # before the transport sends them: a crash may be theirs
            for task in tasks:
                journal.dispatched(task.uid, task.genome)

    def on_evaluation(ev: Any) -> None:
        if journal is not None:
            journal.finished(ev.task.uid)
        recorder.record(ev)
        if engine.migrations:
            recorder.record_migrations(engine.drain_migrations())
        reporter.observe(ev)
        if callbacks is not None and callbacks.loggers:  # (a record and the incumbent cost
            best = engine.best_estimate                  # ~10 us a result: only for a logger)
            callbacks(record_of(ev, engine.n_finished, best.mean if best is not None else None))
        if ev.state is not EvalState.PRUNED and ev.result.worker >= 0:
            # Any evaluation started may run to the end: a pruned one's time says nothing of
            # that, nor does a poison task failed without running (worker -1).
            deadline.observe(max(ev.result.t_end - ev.result.t_start, 0.0))
        if sweeper is not None:
            sweeper.collect()
        if snapshots.result():
            recorder.snapshot(engine.get_state())

    n_workers = transport.n_workers
    log.info("run_started", scenario=scenario.name, max_evals=engine.max_evals,
             workers=n_workers, islands=scenario.islands, operator=scenario.operator,
             sync=scenario.sync, resumed=opts.resume, finished_before=engine.n_finished)
    if reporter is None:
        reporter = ProgressReporter(n_workers, mode=progress_mode(opts))
    reporter.set_workers(n_workers, done_before=engine.n_finished)
    coord = Coordinator(engine, transport, on_evaluation=on_evaluation,
                        on_task=on_task, on_send=on_send, on_tick=reporter, stop_check=stop_check,
                        log=log, batch=scenario.batch, batch_key=scenario.batch_key,
                        suspects=suspects)
    coord.progress.finished = engine.n_finished
    coord.progress.complete = engine.counts[EvalState.COMPLETE]
    coord.progress.pruned = engine.counts[EvalState.PRUNED]
    coord.progress.failed = engine.n_finished - coord.progress.complete - coord.progress.pruned
    coord.progress.best = engine.best.fitness if engine.best else None
    coord.progress.budget = engine.max_evals
    job = journal.job if journal is not None else 1
    with reporter.stage("evaluating", "waiting for the first results", heartbeat=False,
                        job=job, budget=engine.max_evals, finished_before=engine.n_finished):
        reason = coord.run()
        reporter.finish(coord.progress)
    exhausted = engine.exhausted_message
    if exhausted:
        log.warning("space_exhausted", message=exhausted, finished=engine.n_finished)
        # A warning where it cut the run short; a note where the budget was spent anyway.
        kind = "warning" if engine.n_finished < engine.max_evals else "note"
        print(f"evo_engine: {kind}: {exhausted}", file=sys.stderr)
    # The stop snapshot: tasks in flight are recorded as pending, to be issued again.
    if sweeper is not None:
        sweeper.collect()
    recorder.snapshot(engine.get_state())
    final: list[Any] = []
    if reason == "finished" and engine.best is not None and scenario.finalize is not None:
        log.info("finalize_started", uid=engine.best.uid)

        def finalize_stopped() -> str | None:
            request = stop_check()
            return request.reason if request is not None and request.abort else None

        # Its own phase: a final retraining can take as long as the run's longest evaluation.
        with reporter.stage("finalize", f"finalize (retraining uid {engine.best.uid})",
                            uid=engine.best.uid):
            final, halted = run_finalize(transport, engine, stopped=finalize_stopped)
        log.info("finalize_finished", seconds=round(reporter.stages["finalize"], 3),
                 failed=sum(1 for f in final if f["error"]), stopped=halted)
        if halted is not None:
            # Status "stopped": --resume runs finalize again (its budget is spent already).
            log.warning("finalize_stopped", reason=halted)
            reason = halted
    return reason, coord, final


def _print_summary(print_fn: Callable[[str], None], scenario: Scenario, engine: Engine,
                   coord: Coordinator, reason: str, run_dir: Path,
                   final: list[dict[str, Any]], reporter: ProgressReporter) -> None:
    """The closing lines: every one fits the terminal (``evo_engine.util.terminal``)."""
    cols = terminal.width()

    def say(text: str) -> None:
        for line in terminal.wrap(text, cols):
            print_fn(line)

    failed = engine.counts[EvalState.FAILED]
    pruned = engine.counts[EvalState.PRUNED]
    pruned_text = f", {pruned} pruned" if pruned else ""
    head = "finished" if reason == "finished" else f"stopped ({reason}); continue with --resume"
    say(f"{head}: {engine.n_finished}/{engine.max_evals} evaluations "
        f"({engine.counts[EvalState.COMPLETE]} complete, {failed} failed{pruned_text})")
    # The same definition `analyze` uses (evo_engine.util.timing); this job's evaluations only.
    say(describe_timing(reporter.meter.result()))
    if "finalize" in reporter.stages:
        took = reporter.stages["finalize"]
        total = time.time() - reporter.meter.job_start if reporter.meter.job_start else None
        say(f"finalize (final retraining) took {fmt_seconds(took)} after the evaluations"
            + (f"; the job took {fmt_seconds(total)} in all" if total else ""))
    best = engine.best
    if best is None:
        print_fn("no evaluation completed: nothing to report as best")
    else:
        est = engine.best_estimate
        assert est is not None
        say(describe_best(est, best.island))
        for name, value in engine.space.decode(best.genome).items():
            say(f"  {name} = {value!r}" if isinstance(value, str) else f"  {name} = {value:.6g}")
        lucky = engine.tracker.luckiest()
        note = resolution_note(engine.tracker.estimates().values(), 10)
        if note in (None, UNMEASURED) and engine.counts[EvalState.COMPLETE] >= 2:
            # Without races or repeats the tracker keeps only the incumbent (intensify.py),
            # so it cannot count configurations; either way nothing was repeated.
            note = unmeasured_note(engine.config.describe())
        for text in (describe_luckiest(est, lucky) if lucky else None, note):
            if text:
                say(text)
    if engine.front:
        knee = engine.front[0]
        say(f"Pareto front: {len(engine.front)} feasible non-dominated members in the "
            f"populations; its knee (finalize's pick) is uid {knee.uid} with "
            + ", ".join(f"{n} {v:.6g}" for n, v in zip(
                engine.config.objectives.names if engine.config.objectives else (),
                engine.config.objectives.minimised(knee.values)
                if engine.config.objectives else ()))
            + " (`analyze --front FILE` writes the whole front)")
    for f in final:
        if f["error"]:
            say(f"finalize of uid {f['uid']} failed: {f['error'].splitlines()[0]}")
            continue
        metrics = f["metrics"]
        shown = [f"{k}={metrics[k]:.4g}" for k in headline_metrics(metrics)]
        for line in terminal.wrap_items(f"final metrics of uid {f['uid']}:", shown, cols):
            print_fn(line)
        if len(metrics) > len(shown):  # a path may be long: prose, wrapped (and cut) to fit
            say(f"    and {len(metrics) - len(shown)} more in {run_dir / FINAL_CSV}")
    say(f"run store: {RunStore.location(run_dir)}")


def headline_metrics(metrics: dict[str, Any], n: int = FINAL_SHOWN) -> list[str]:
    """The few final metrics the summary shows: test fitness and errors before the rest."""
    def rank(name: str) -> tuple[int, str]:
        order = ("test_fitness", "fitness", "test_", "val_fitness")
        for i, prefix in enumerate(order):
            if name == prefix or (prefix.endswith("_") and name.startswith(prefix)):
                return i, name
        return len(order), name

    return sorted(metrics, key=rank)[:n]


__all__ = ["EXIT_BAD_INPUT", "EXIT_INTERNAL", "EXIT_OK", "EXIT_STOPPED", "RunOptions",
           "ScenarioError", "UsageError", "execute"]
