"""What crash safety costs: snapshot overhead, resume time and store size.

    python benchmarks/checkpoint.py [--workers 32] [--evals 960] [--repeats 3]

* overhead_fraction: wall time (first task start → last result, from the store) of a
  32-worker local run of a sleep objective with snapshots every 50 results, versus the same
  run with no snapshot until the end; median over repeats, runs interleaved.
* resume_seconds: opening a store of 100,000 evaluations of a 10-parameter space, checking
  it and rebuilding the engine from its latest snapshot plus a 40-result log tail.
* store_bytes_per_eval: that store's size on disk divided by its evaluations.

    python benchmarks/checkpoint.py --scale [--scale-evals 100000] [--scale-workers 4096]
                                    [--scale-operator surrogate] [--scale-timeout 600]
                                    [--scale-plain]

runs 100,000 evaluations on 4,096 simulated workers (``utilization.py``'s discrete-event
transport: real Coordinator, Engine, Recorder and store; 60 s lognormal evaluations), ES on
8 islands of 32, ASHA (rungs 1, 3, 9 of 27 steps; every result reports its curve and each
report is decided by the coordinator), snapshots by run.py's ``SnapshotPolicy`` on the
real clock (the simulated clock runs many times faster than real time here, and the writer's
work is real). It prints the coordinator's seconds per result (each poll's handling shared by its
results: decoding, reports, telling, recording, snapshots, dispatch; median and p99), the
snapshot's cost (``get_state`` on the coordinator, JSON + zlib on the writer) and size at
10k / 50k / 100k results, the write lag at any instant (real seconds since the oldest result
handed to the writer and not yet committed: what a kill -9 then would lose), the time from
the last result to the store being closed, and the resume time (open + check + rebuild from
the latest snapshot and the log, no stop snapshot: as after a kill -9). What a real run adds
on the coordinator rides along unless ``--scale-plain``: ``eval_timeout_s``
(``--scale-timeout``: each worker's deadline in the transports' ``Deadlines`` heap, checked
every poll), the live progress line (``ProgressReporter`` in line mode drawing into a null
stream at its 5 redraws a second, fed every evaluation), callbacks (``CallbackSet`` with one
logger that counts, fed ``record_of`` as run.py does) and the operator (``--scale-operator``:
the surrogate by default, which hands its islands to the ES once its model stops paying).
It prints the coordinator's resident memory every 100,000 results and its peak at the end
of the run (VmHWM before the resume, which reads the whole store into this process), and how
much of it is the benchmark's own per-result bookkeeping. Then real runs of
the trivial objective are killed with SIGKILL after ``--kill-after`` seconds (inline under
each ``--fsync`` policy, and with 2 local workers): how old the newest saved result is, and
how many rows were saved (the cost of fsync).

Prints a table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
SCENARIO = HERE / "_sleep_scenario.py"


def run_wall(run_dir: Path, workers: int, evals: int, checkpoint_every: int, mean: float) -> float:
    env = {**os.environ, "BENCH_EVALS": str(evals), "BENCH_CHECKPOINT": str(checkpoint_every),
           "BENCH_MEAN": str(mean), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "evo_engine", str(SCENARIO), "--workers", str(workers),
                    "--run-dir", str(run_dir), "--force", "--quiet"], env=env, check=True)
    import zarr

    z = zarr.open(str(run_dir / "run.zarr"), mode="r")
    n = z["evaluations"].attrs["committed"]
    assert n == evals
    return float(z["evaluations/t_end"][:n].max() - z["evaluations/t_start"][:n].min())


def build_big_store(run_dir: Path, n: int, dim: int) -> None:
    """A store of n evaluations written by the real engine and recorder (no workers)."""
    from evo_engine.scenario import load_scenario
    from evo_engine.search.engine import Engine
    from evo_engine.search.messages import Result
    from evo_engine.store.runstore import RunStore
    from evo_engine.store.writer import Recorder

    os.environ["BENCH_DIM"] = str(dim)
    os.environ["BENCH_EVALS"] = str(n + 8)  # 8 more are in flight at the end
    scenario = load_scenario(SCENARIO)
    store = RunStore.create(run_dir, attrs={
        "max_evals": n, "fingerprint_description": scenario.fingerprint_description()},
        param_kinds={k: p.kind for k, p in scenario.space.items()}, dim=dim)
    engine = Engine(scenario.space, scenario.engine_config())
    rec = Recorder(store, scenario.space, background=False)
    rng = np.random.default_rng(0)
    t = 0.0
    tail = 40
    for i in range(n):  # noqa: B007 - i paces snapshots
        task = engine.ask(i % 64)
        rec.record_task(task)
        t += 1.0
        _, ev = engine.tell(Result(uid=task.uid, worker=i % 64, fitness=float(rng.random()),
                                   metrics={"m": 1.0}, t_start=t, t_end=t + 1))
        rec.record(ev)
        if (i + 1) % 5000 == 0 or i + 1 == n - tail:
            rec.snapshot(engine.get_state())
            rec.flush()
    # A few tasks in flight at the "crash", to be issued again.
    for w in range(8):
        rec.record_task(engine.ask(w))
    rec.close()


def measure_resume(run_dir: Path) -> float:
    from evo_engine.scenario import load_scenario
    from evo_engine.store.replay import fingerprint_diff, rebuild_engine
    from evo_engine.store.runstore import RunStore

    scenario = load_scenario(SCENARIO)
    t0 = time.perf_counter()
    store = RunStore.open(run_dir)
    assert not fingerprint_diff(store.attrs["fingerprint_description"],
                                scenario.fingerprint_description())
    engine, _ = rebuild_engine(store, scenario.space, scenario.engine_config(), print)
    elapsed = time.perf_counter() - t0
    assert engine.n_finished == store.evaluations.committed
    assert len(engine.pending) == 8
    return elapsed


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# -- --scale: the coordinator and the store at cluster scale (simulated workers) ------------

SCHEDSTAT = Path("/proc/thread-self/schedstat")


def run_queue_wait() -> float:
    """Seconds this thread has waited for a core while runnable (Linux), or 0.0."""
    try:
        return int(SCHEDSTAT.read_text().split()[1]) * 1e-9
    except (OSError, IndexError, ValueError):
        return 0.0


class _NullStream:
    """A terminal nobody reads: the progress line is drawn, its text dropped."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return True


class _CountingLogger:
    """A callback that only counts its records (its thread's cost, not a logger's I/O)."""

    def __init__(self) -> None:
        self.n = 0

    def log(self, record: Any) -> None:
        self.n += 1

    def close(self) -> None:
        pass


def _rss_mb(field: str = "VmRSS") -> float:
    """This process's resident memory now (VmRSS) or at its peak so far (VmHWM), MB."""
    return _peak_rss_mb(os.getpid(), field)


def scale_run(root: Path, evals: int, workers: int, mean: float, fsync: str,
              writer: str = "process", operator: str = "es", timeout: float | None = None,
              extras: bool = False) -> dict[str, Any]:
    """100k evaluations on 4,096 simulated workers, ES on 8 islands, ASHA on: the real
    Coordinator, Engine, recorder (``writer``: the run's process, or a thread of this
    process as before) and store, each result's coordinator time measured."""
    import zlib
    from array import array

    from utilization import SimulatedClock, simulated_workers

    from evo_engine.job.callbacks import CallbackSet, record_of
    from evo_engine.job.coordinator import Coordinator
    from evo_engine.job.progress import ProgressReporter
    from evo_engine.search.engine import Engine, EngineConfig
    from evo_engine.search.messages import EvalState
    from evo_engine.search.pruning import ASHAConfig
    from evo_engine.space import Float, Space
    from evo_engine.store.runstore import RunStore, json_in_pieces
    from evo_engine.store.writer import Recorder, SnapshotPolicy
    from evo_engine.store.writer_process import RecorderProcess
    from evo_engine.transports.base import Deadlines

    space = Space(**{f"x{i}": Float(0.0, 1.0) for i in range(10)})
    config = EngineConfig(max_evals=evals, islands=8, population_size=32, operator=operator,
                          seed=0, pruning=ASHAConfig(eta=3, min_steps=1, max_steps=27))
    engine = Engine(space, config)
    store = RunStore.create(root, attrs={"scenario": "scale"}, param_kinds=space.column_kinds(),
                            dim=space.dim)
    flushes: list[tuple[float, int]] = []  # (seconds, evaluation rows) of each writer flush
    make = RecorderProcess if writer == "process" else Recorder
    recorder = make(store, space, fsync=fsync,
                    on_flush=lambda seconds, rows, _: flushes.append((seconds, rows)))
    clock = SimulatedClock()
    rng = np.random.default_rng(0)

    def duration(seed: int) -> float:
        return float(np.random.default_rng(seed).lognormal(np.log(mean) - 0.125, 0.5))

    def loss(params: dict) -> float:
        return float(sum((v - 0.3) ** 2 for v in params.values()))

    sim = simulated_workers(workers, clock, 100e-6, duration, loss)
    # Reports: each result arrives with its curve at steps 1, 3, 9, 26; the coordinator's
    # ASHA decides each report (charged as handling), and a stopped one comes back PRUNED.
    base_poll = sim.poll

    def poll(timeout: float) -> list[Any]:
        out = []
        for r in base_poll(timeout):
            curve = []
            for step in (1, 3, 9, 26):
                value = (r.fitness or 0.0) * (1 + 3 / step) + 0.01 * float(rng.random())
                curve.append((step, value))
                if sim.on_report(r.uid, step, value):
                    r = replace(r, state=EvalState.PRUNED, fitness=None)
                    break
            out.append(replace(r, curve=tuple(curve)))
        return out

    sim.poll = poll
    if timeout is not None:
        # eval_timeout_s as the local and MPI transports keep it: a deadline per busy worker
        # set on submit, cleared by its result, the due ones popped on every poll.
        deadlines = Deadlines()
        expired = [0]
        base_submit, timed_poll_inner = sim.submit, sim.poll

        def submit_with_deadline(worker: int, task: Any) -> None:
            deadlines.set(worker, time.monotonic() + timeout)
            base_submit(worker, task)

        def poll_with_deadlines(wait: float) -> list[Any]:
            got = timed_poll_inner(wait)
            for r in got:
                deadlines.clear(r.worker)
            expired[0] += len(deadlines.expired(time.monotonic()))
            return got

        sim.submit, sim.poll = submit_with_deadline, poll_with_deadlines
    reporter = ProgressReporter(workers, stream=_NullStream(), mode="line",  # type: ignore[arg-type]
                                job_start=time.time()) if extras else None
    logger = _CountingLogger()
    callbacks = CallbackSet({"count": logger}, print) if extras else None
    # The benchmark's own per-result records, compact (they are in the RSS it prints).
    polls = array("d")  # wall, cpu, run-queue wait, results: one poll's handling
    handed = array("d")
    lags = array("f")
    rss_at: dict[int, float] = {}
    marks: dict[int, dict[str, float]] = {}
    states: dict[int, dict[str, Any]] = {}
    """Encoded after the run: encoding one here would stall the coordinator and the writer."""
    # run.py's policy on the real clock: the simulated one runs ~20x faster than real time
    # here (the coordinator flat out), and snapshots cost the writer real seconds.
    policy = SnapshotPolicy(50)
    # The same number in flight at every mark (the budget's end drains them): 10 %, half
    # way, and the last result before the workers start running out of work.
    marks_at = (evals // 10, evals // 2, evals - workers)
    queued = [0]  # the most items ever waiting for the writer
    last_charge = [0.0, 0.0]

    by_operator: Counter[str] = Counter()
    model_until = [0]  # results until the last one whose task the surrogate proposed

    def on_evaluation(ev: Any) -> None:
        by_operator[ev.task.operator] += 1
        if ev.task.operator == "surrogate":
            model_until[0] = engine.n_finished
        if reporter is not None:
            reporter.observe(ev)
        if callbacks is not None:
            callbacks(record_of(ev, engine.n_finished,
                                engine.best.fitness if engine.best else None))
        recorder.record(ev)
        queued[0] = max(queued[0], recorder.queued)
        recorder.record_migrations(engine.drain_migrations())
        now = time.perf_counter()
        handed.append(now)
        # Write lag at a kill -9 now: the oldest result handed over and not yet committed.
        committed = recorder.committed
        lags.append(now - handed[committed] if committed < len(handed) else 0.0)
        if policy.result():
            recorder.snapshot(engine.get_state())
        n = engine.n_finished
        if n % 100_000 == 0:
            with sim.uncharged():
                rss_at[n] = round(_rss_mb(), 1)
        if n in marks_at:
            t0 = time.perf_counter()
            states[n] = engine.get_state()
            marks[n] = {"get_state_s": time.perf_counter() - t0,
                        "in_flight": len(engine.in_flight)}

    coord = Coordinator(engine, sim, clock=clock, on_task=recorder.record_task,
                        on_evaluation=on_evaluation, on_tick=reporter)
    # Per-result coordinator time: each poll's handling (charged when the next poll starts),
    # shared by the results it brought.
    real_poll = sim.poll
    brought = [0]

    rq = [0.0]

    def timed_poll(timeout: float) -> list[Any]:
        if brought[0]:  # the end of a stretch of handling results
            with sim.uncharged():
                queued = run_queue_wait() - rq[0]
        got = real_poll(timeout)
        if brought[0]:
            wall = sim.charged_for_results - last_charge[0]
            cpu = sim.cpu_charged_for_results - last_charge[1]
            polls.extend((wall, cpu, queued, brought[0]))
        last_charge[:] = [sim.charged_for_results, sim.cpu_charged_for_results]
        brought[0] = len(got)
        if got:  # the start of one
            with sim.uncharged():
                rq[0] = run_queue_wait()
        return got

    sim.poll = timed_poll
    sim.start()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    children_cpu0 = children.ru_utime + children.ru_stime
    t_run = time.perf_counter()
    coord.run()
    t_last = time.perf_counter()
    peak_rss = _rss_mb("VmHWM")  # before the resume below reads the store into this process
    bookkeeping = (polls.itemsize * len(polls) + handed.itemsize * len(handed)
                   + lags.itemsize * len(lags)) / 2**20
    if callbacks is not None:
        callbacks.close()
    recorder.close()  # no stop snapshot and no "finished" mark: as after a kill -9
    closed = time.perf_counter() - t_last
    real = t_last - t_run
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    writer_cpu = children.ru_utime + children.ru_stime - children_cpu0
    snaps = RunStore.open(root, check=False).snapshots.attrs.asdict().get("serial", 0)
    for n, state in states.items():
        t0 = time.perf_counter()  # what the snapshot thread does with it (json_in_pieces)
        payload = zlib.compress(json_in_pieces({"engine": state}).encode(), 3)
        marks[n].update(encode_s=time.perf_counter() - t0, bytes=len(payload),
                        parts={k: len(json.dumps(v, separators=(",", ":")))
                               for k, v in state.items()})

    from evo_engine.store.replay import rebuild_engine

    t0, cpu0 = time.perf_counter(), time.process_time()
    reopened = RunStore.open(root)
    opened = time.perf_counter() - t0
    resumed, _ = rebuild_engine(reopened, space, config, print)
    resume, resume_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    latest = reopened.latest_snapshot()
    replayed = evals - (latest["log_position"] if latest else 0)
    assert resumed.n_finished == evals, resumed.n_finished
    pruned = engine.counts[EvalState.PRUNED]
    a = np.frombuffer(polls, dtype=np.float64).reshape(-1, 4)
    n_of = a[:, 3].astype(int)
    per_result = np.repeat(a[:, 0] / a[:, 3], n_of)
    per_result_cpu = np.repeat(a[:, 1] / a[:, 3], n_of)
    # The surrogate's phase: until its islands handed over to the ES (the tail is the ES's).
    modelled = per_result[: model_until[0]]
    rungs = engine.pruner.rungs if engine.pruner else []
    return {
        "evals": evals, "workers": workers, "mean_seconds": mean, "fsync": fsync,
        "writer": writer, "writer_process_cpu_s": round(writer_cpu, 2),
        "pruned": int(pruned), "real_seconds": round(real, 2),
        "per_result_median_s": float(np.median(per_result)),
        "per_result_p99_s": float(np.quantile(per_result, 0.99)),
        "per_result_cpu_median_s": float(np.median(per_result_cpu)),
        "per_result_cpu_p99_s": float(np.quantile(per_result_cpu, 0.99)),
        "p99_made_of": p99_made_of(a),
        "operator": operator, "by_operator": dict(by_operator),
        "last_surrogate_result": model_until[0],
        "per_result_median_s_surrogate_phase": float(np.median(modelled)) if modelled.size else None,
        "per_result_p99_s_surrogate_phase": float(np.quantile(modelled, 0.99)) if modelled.size else None,
        # The rest of the run, the ES's alone: what the p99 would be without the model.
        "per_result_p99_s_after_surrogate_phase": (
            float(np.quantile(per_result[model_until[0]:], 0.99))
            if modelled.size and per_result.size > model_until[0] else None),
        "eval_timeout_s": timeout, "progress_and_callbacks": extras,
        "callback_records": logger.n, "callbacks_dropped": callbacks.dropped if callbacks else 0,
        "timed_out": expired[0] if timeout is not None else 0,
        "coordinator_peak_rss_mb": round(peak_rss, 1),
        "coordinator_rss_mb_at": rss_at, "bookkeeping_mb": round(bookkeeping, 1),
        "asha_rung_entries": [len(r.counts) for r in rungs],
        "dedupe_registry": len(engine.dedupe.registry),
        "thread_cpu_s": thread_cpu_seconds(),
        "snapshots": snaps, "marks": marks,
        "write_lag_max_s": round(float(max(lags)), 3), "write_lag_p99_s": round(float(np.quantile(lags, 0.99)), 3),
        "close_after_last_result_s": round(closed, 3), "writer_blocked_s": round(recorder.blocked_seconds, 3),
        "resume_s": round(resume, 3), "resume_cpu_s": round(resume_cpu, 3),
        "resume_open_s": round(opened, 3), "resume_replayed": replayed,
        "flushes": len(flushes),
        "flush_median_s": round(float(np.median([f for f, _ in flushes])), 4),
        "flush_max_s": round(max(f for f, _ in flushes), 4),
        "flush_rows_median": int(np.median([r for _, r in flushes])),
        "snapshots_superseded": recorder.snapshots_superseded, "max_queued": queued[0],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def p99_made_of(polls: Any) -> dict[str, float]:
    """What the results at or above the p99 of seconds per result spent their time on (mean
    seconds per result): the coordinator thread's CPU, waiting for a core while runnable
    (the machine's load), and the rest: off the CPU though not runnable, i.e. waiting for
    the GIL (the writer's and zarr's threads) or a lock."""
    a = np.array(polls, dtype=np.float64).reshape(-1, 4)
    n = a[:, 3]
    wall, cpu, queued = (np.repeat(a[:, i] / n, n.astype(int)) for i in range(3))
    top = wall >= np.quantile(wall, 0.99)
    return {"results": int(top.sum()), "wall_s": float(wall[top].mean()),
            "cpu_s": float(cpu[top].mean()), "run_queue_s": float(queued[top].mean()),
            "other_s": float((wall - cpu - queued)[top].mean())}


def thread_cpu_seconds() -> dict[str, float]:
    """CPU seconds of each live thread of this process, by name (Linux; else empty)."""
    import threading

    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, float] = {}
    for task in Path("/proc/self/task").glob("*"):
        try:
            cpu = int((task / "schedstat").read_text().split()[0]) * 1e-9
        except (OSError, IndexError, ValueError):
            continue
        name = names.get(int(task.name)) or (task / "comm").read_text().strip()
        out[name] = round(out.get(name, 0.0) + cpu, 2)
    return out


def fsync_cost(root: Path, rows: int, flushes: int) -> dict[str, float]:
    """Time per flush of ``rows`` evaluations (and their tasks) under ``--fsync never`` and
    ``always`` (median over ``flushes`` each, interleaved so machine load hits both alike),
    on the filesystem of the benchmark's run directories; and the sync a snapshot does
    under ``snapshots`` (every file written since the previous snapshot: here ten flushes)."""
    import evo_engine.store.runstore as store_module
    from evo_engine.search.engine import Engine, EngineConfig
    from evo_engine.search.messages import Result
    from evo_engine.space import Float, Space
    from evo_engine.store.runstore import RunStore
    from evo_engine.store.writer import Recorder

    space = Space(**{f"x{i}": Float(0.0, 1.0) for i in range(10)})
    policies = ("never", "always")
    times: dict[str, list[float]] = {p: [] for p in policies}
    synced: list[int] = []
    real_fsync_files = store_module.fsync_files

    def counting(paths: Any) -> None:
        synced.append(len(paths))
        real_fsync_files(paths)

    store_module.fsync_files = counting
    snap_sync: list[float] = []
    snap_files: list[int] = []
    runs = {}
    for policy in policies:
        store = RunStore.create(root / policy, attrs={"scenario": "fsync"},
                                param_kinds=space.column_kinds(), dim=space.dim)
        runs[policy] = (Recorder(store, space, background=False, fsync=policy),
                        Engine(space, EngineConfig(max_evals=10**9, population_size=32, seed=0)),
                        store)
    try:
        for i in range(flushes):
            for policy in policies:
                rec, engine, store = runs[policy]
                for _ in range(rows):
                    task = engine.ask(0)
                    rec.record_task(task)
                    _, ev = engine.tell(Result(uid=task.uid, worker=0, fitness=1.0,
                                               t_start=0.0, t_end=1.0))
                    rec.record(ev)
                t0 = time.perf_counter()
                rec.flush()
                times[policy].append(time.perf_counter() - t0)
                if policy == "never" and i % 10 == 9:
                    # What a snapshot syncs under "snapshots": the files of ten flushes.
                    paths = [p for t in (store.tasks, store.evaluations) for p in t.take_dirty()]
                    t0 = time.perf_counter()
                    real_fsync_files(paths)
                    snap_sync.append(time.perf_counter() - t0)
                    snap_files.append(len(paths))
        for rec, _, _ in runs.values():
            rec.close()
    finally:
        store_module.fsync_files = real_fsync_files
    never, always = statistics.median(times["never"]), statistics.median(times["always"])
    return {"fsync_rows": rows, "flush_never_s": never, "flush_always_s": always,
            "fsync_per_flush_s": always - never,
            "fsync_files_per_flush": sum(synced) / max(flushes, 1),
            "fsync_per_snapshot_s": statistics.median(snap_sync) if snap_sync else float("nan"),
            "fsync_files_per_snapshot": statistics.median(snap_files) if snap_files else 0}


def kill_lag(root: Path, workers: int, after: float,
             fsync: str = "snapshots", whole_job: bool = True) -> tuple[float, int, float]:
    """A real run of the trivial objective killed with SIGKILL after ``after`` seconds: how
    long before the kill the newest saved evaluation ended. ``whole_job``: every process of
    the run at once (its process group: coordinator, store writer, workers), as a scheduler
    kills a job; else the coordinator alone, whose store writer then writes what it was
    handed and exits (waited for through the run's lock before the store is read)."""
    import signal

    import zarr

    from evo_engine.store.rundir import RunLock

    scenario = HERE / "scenarios" / "trivial.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EVO_BENCH_CHECKPOINT_EVERY": "50"}
    proc = subprocess.Popen([sys.executable, "-m", "evo_engine", str(scenario), "--workers",
                             str(workers), "--run-dir", str(root), "--max-evals", "10000000",
                             "--quiet", "--fsync", fsync], env=env,
                            start_new_session=whole_job)
    # Counted from the first committed row: start-up time varies with the machine's load.
    while True:
        try:
            if zarr.open(str(root / "run.zarr"), mode="r")["evaluations"].attrs["committed"]:
                break
        except Exception:  # noqa: BLE001 - not there yet, or being written
            pass
        time.sleep(0.05)
    time.sleep(after)
    peak = _peak_rss_mb(proc.pid)  # the coordinator's, just before the kill
    if whole_job:
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        proc.send_signal(signal.SIGKILL)
    killed = time.time()
    proc.wait()
    lock = RunLock(root)
    lock.acquire(writer_grace=60.0)  # whole job: free at once; else when the writer is done
    lock.release()
    ev = zarr.open(str(root / "run.zarr"), mode="r")["evaluations"]
    n = ev.attrs["committed"]
    return killed - float(ev["t_end"][:n].max()), int(n), peak


def _peak_rss_mb(pid: int, field: str = "VmHWM") -> float:
    """A process's peak resident memory so far (VmHWM; NaN where /proc has none)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def scale_main(args: argparse.Namespace, tmp: Path) -> None:
    plain = args.scale_plain
    out = scale_run(tmp / "scale", args.scale_evals, args.scale_workers, 60.0, args.fsync,
                    args.writer, operator="es" if plain else args.scale_operator,
                    timeout=None if plain else args.scale_timeout, extras=not plain)
    m = out["marks"]
    print(f"{'evaluations':>30} {out['evals']} on {out['workers']} simulated workers, "
          f"{out['operator']} on 8 islands, ASHA ({out['pruned']} pruned), fsync={out['fsync']}, "
          f"writer={out['writer']}")
    print(f"{'with':>30} operator {out['operator']}, eval_timeout_s {out['eval_timeout_s']}, "
          f"progress line and callbacks {out['progress_and_callbacks']} "
          f"({out['callback_records']} records, {out['callbacks_dropped']} dropped)")
    print(f"{'coordinator memory':>30} peak {out['coordinator_peak_rss_mb']} MB (of which the "
          f"benchmark's own records {out['bookkeeping_mb']} MB); RSS by results "
          f"{out['coordinator_rss_mb_at']}; ASHA rung entries {out['asha_rung_entries']}")
    print(f"{'coordinator s/result':>30} median {out['per_result_median_s'] * 1e3:.3f} ms, "
          f"p99 {out['per_result_p99_s'] * 1e3:.3f} ms (wall)")
    if out["per_result_p99_s_surrogate_phase"] is not None:
        print(f"{'surrogate phase':>30} the first {out['last_surrogate_result']} results (until "
              f"the last the surrogate proposed): median "
              f"{out['per_result_median_s_surrogate_phase'] * 1e3:.3f} ms, p99 "
              f"{out['per_result_p99_s_surrogate_phase'] * 1e3:.3f} ms (wall); results by "
              f"operator {out['by_operator']}")
        if out["per_result_p99_s_after_surrogate_phase"] is not None:
            print(f"{'after the surrogate phase':>30} p99 "
                  f"{out['per_result_p99_s_after_surrogate_phase'] * 1e3:.3f} ms (wall; the "
                  f"ES's results alone)")
    print(f"{'coordinator CPU s/result':>30} median {out['per_result_cpu_median_s'] * 1e3:.3f} ms, "
          f"p99 {out['per_result_cpu_p99_s'] * 1e3:.3f} ms (its thread's time.thread_time)")
    b = out["p99_made_of"]
    print(f"{'p99 made of':>30} {b['results']} results at or above it, per result: "
          f"{b['wall_s'] * 1e3:.3f} ms wall = CPU {b['cpu_s'] * 1e3:.3f} + waiting for a core "
          f"{b['run_queue_s'] * 1e3:.3f} + GIL/locks {b['other_s'] * 1e3:.3f} ms")
    print(f"{'thread CPU seconds':>30} " + ", ".join(f"{k} {v}" for k, v in out["thread_cpu_s"].items())
          + (f"; writer process {out['writer_process_cpu_s']}" if out["writer"] == "process" else ""))
    for n, v in sorted(m.items()):
        print(f"{'snapshot at ' + str(n):>30} get_state {v['get_state_s'] * 1e3:.1f} ms "
              f"(coordinator), json+zlib {v['encode_s'] * 1e3:.1f} ms (snapshot thread), "
              f"{v['bytes']} bytes, {v['in_flight']} in flight")
    print(f"{'snapshots written':>30} {out['snapshots']}")
    print(f"{'write lag (any instant)':>30} max {out['write_lag_max_s']} s, "
          f"p99 {out['write_lag_p99_s']} s; writer blocked the coordinator "
          f"{out['writer_blocked_s']} s")
    print(f"{'writer flushes':>30} {out['flushes']}: median {out['flush_median_s'] * 1e3:.1f} ms "
          f"for {out['flush_rows_median']} evaluations, max {out['flush_max_s'] * 1e3:.1f} ms; "
          f"{out['snapshots_superseded']} snapshots superseded before written; at most "
          f"{out['max_queued']} items queued; benchmark process peak RSS {out['peak_rss_mb']:.0f} MB")
    print(f"{'store closed after last':>30} {out['close_after_last_result_s']} s")
    print(f"{'resume of the run':>30} {out['resume_s']} s ({out['resume_cpu_s']} s CPU; opening "
          f"and checking the store {out['resume_open_s']} s; {out['resume_replayed']} results "
          f"replayed after the latest snapshot)")
    cost = fsync_cost(tmp / "fsync", args.fsync_rows, args.fsync_flushes)
    out.update(cost)
    print(f"{'fsync cost':>30} per flush of {args.fsync_rows} evaluations: "
          f"never {cost['flush_never_s'] * 1e3:.1f} ms, always "
          f"{cost['flush_always_s'] * 1e3:.1f} ms (+{cost['fsync_per_flush_s'] * 1e3:.1f} ms, "
          f"{cost['fsync_files_per_flush']:.0f} files); a snapshot's sync of the rows it "
          f"covers {cost['fsync_per_snapshot_s'] * 1e3:.1f} ms ({cost['fsync_files_per_snapshot']:.0f} files)")
    kills = {}
    # The whole job killed at once (what a scheduler does), then the coordinator alone.
    runs = [(0, "never", True), (0, "snapshots", True), (0, "always", True),
            (2, args.fsync, True), (0, args.fsync, False), (2, args.fsync, False)]
    if args.no_kills:
        runs = []
    for workers, fsync, whole in runs:
        what = "job" if whole else "coordinator"
        lag, n, rss = kill_lag(tmp / f"kill{workers}{fsync}{what}", workers, args.kill_after,
                               fsync, whole)
        key = f"workers{workers}_{fsync}" + ("" if whole else "_coordinator_only")
        kills[f"kill_lag_{key}_s"] = round(lag, 3)
        kills[f"kill_rows_{key}"] = n
        kills[f"kill_peak_rss_mb_{key}"] = round(rss, 1)
        print(f"{'kill -9 ' + what + ' at ' + str(args.kill_after) + ' s, workers=' + str(workers):>30} "
              f"fsync={fsync}: newest saved result {lag:.3f} s old, {n} rows saved, "
              f"coordinator peak RSS {rss:.0f} MB")
    out.update(kills)
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=32)
    ap.add_argument("--evals", type=int, default=960)
    ap.add_argument("--mean-seconds", type=float, default=0.5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--store-evals", type=int, default=100_000)
    ap.add_argument("--scale", action="store_true",
                    help="the cluster-scale run (simulated workers, ASHA, ES on 8 islands), "
                         "then kill -9 lags of real runs")
    ap.add_argument("--scale-evals", type=int, default=100_000)
    ap.add_argument("--scale-workers", type=int, default=4096)
    ap.add_argument("--scale-operator", default="surrogate",
                    help="--scale: the engine's operator (default surrogate)")
    ap.add_argument("--scale-timeout", type=float, default=600.0,
                    help="--scale: eval_timeout_s (simulated evaluations take ~60 s)")
    ap.add_argument("--scale-plain", action="store_true",
                    help="--scale as before: ES, no time limit, no progress line, no callbacks")
    ap.add_argument("--fsync", choices=("never", "snapshots", "always"), default="snapshots")
    ap.add_argument("--writer", choices=("process", "thread"), default="process",
                    help="--scale: the store's writer as runs have it (a process of its own) "
                         "or a thread of the coordinator's process (as before)")
    ap.add_argument("--kill-after", type=float, default=10.0, help="seconds before the kill -9")
    ap.add_argument("--no-kills", action="store_true", help="--scale without the kill -9 runs")
    ap.add_argument("--fsync-rows", type=int, default=250,
                    help="evaluations per flush in the fsync cost measurement")
    ap.add_argument("--fsync-flushes", type=int, default=40,
                    help="flushes per policy in the fsync cost measurement")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="evo_ckpt_"))
    try:
        if args.scale:
            scale_main(args, tmp)
            return
        with_snap, without = [], []
        for r in range(args.repeats):
            without.append(run_wall(tmp / "a", args.workers, args.evals, 10**9, args.mean_seconds))
            with_snap.append(run_wall(tmp / "b", args.workers, args.evals, 50, args.mean_seconds))
            print(f"repeat {r}: no snapshots {without[-1]:.3f} s, every 50 {with_snap[-1]:.3f} s")
        base, snap = statistics.median(without), statistics.median(with_snap)
        overhead = (snap - base) / base
        big = tmp / "big"
        t0 = time.perf_counter()
        build_big_store(big, args.store_evals, 10)
        print(f"built a {args.store_evals}-evaluation store in {time.perf_counter() - t0:.1f} s")
        resume = statistics.median(measure_resume(big) for _ in range(3))
        per_eval = du(big / "run.zarr") / args.store_evals
        print(f"{'overhead_fraction':>22} {overhead:.4f}  (median wall {snap:.3f} s vs {base:.3f} s)")
        print(f"{'resume_seconds':>22} {resume:.3f}")
        print(f"{'store_bytes_per_eval':>22} {per_eval:.1f}")
        print(json.dumps({
            "workers": args.workers, "evals": args.evals, "mean_seconds": args.mean_seconds,
            "overhead_fraction": round(overhead, 4), "wall_with_snapshots_s": round(snap, 3),
            "wall_without_snapshots_s": round(base, 3), "resume_seconds": round(resume, 3),
            "store_evals": args.store_evals, "store_bytes_per_eval": round(per_eval, 1),
        }))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
