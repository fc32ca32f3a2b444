"""Worker utilization: asynchronous evolution against a generation barrier, and against the ideal.

Under real mpiexec (the default)::

    python benchmarks/utilization.py --ranks 33 --evals-per-worker 10 --mean-seconds 1.0

runs ``benchmarks/scenarios/lognormal_sleep.py`` twice with the same seed, asynchronously and
with ``--sync`` (generation = population = number of workers, one island, what
learning-to-learn does). Each evaluation sleeps a lognormal time (σ = 0.5 in log space) drawn
from its task seed, so both runs draw the same durations in the same order.

* utilization = summed evaluation time / (workers × wall time), the wall time running from the
  first task's start to the last result (worker clocks, as recorded in the store; the
  coordinator's send and receive add microseconds on either side);
* ideal_utilization: greedy list scheduling of the very durations the run drew, in uid
  order, with zero overhead: with a fixed number of evaluations no scheduler avoids the
  idle tail while the last ones drain;
* efficiency = async_utilization / ideal_utilization;
* median_idle_gap_s: per worker, start of the next task − end of the previous one.

With ``--simulate --workers 1024`` (or 4096) there is no mpiexec: a discrete-event simulation
drives the real Coordinator and Engine (and the real recorder, in a process of its own as in
a run, writing a real store) with a simulated clock. Workers take exactly their drawn durations (60 s mean by default); every real
second the coordinator spends between two transport calls, including pickling each task and
result, is charged to the simulated clock, so its cost is measured, not assumed. A message
takes ``--latency`` seconds each way. ``coordinator_seconds_per_result`` is the time charged
from each poll that returned results to the next poll (decoding, telling the engine,
recording, snapshots, asking and sending the next tasks), divided by the number of results;
``coordinator_cpu_seconds_per_result`` is the part of it the coordinator's thread spent on a
CPU (``time.thread_time``; the rest it waited for the GIL or, on a loaded machine, a core);
``coordinator_busy_fraction`` is everything charged, idle wake-ups included, over the wall
time. The search uses one island of 32 per 32 workers (``EVO_BENCH_ISLANDS``/``POPULATION``).

Prints one JSON line at the end. A benchmark, not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import os
import pickle
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    SCENARIOS,
    ideal_utilization,
    median_idle_gap,
    mpi_env,
    read_evaluations,
    run_evo,
    utilization,
)

SCENARIO = SCENARIOS / "lognormal_sleep.py"
ISLAND_SIZE = 32


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ranks", type=int, default=33, help="MPI ranks (workers + 1 coordinator)")
    p.add_argument("--evals-per-worker", type=int, default=10)
    p.add_argument("--mean-seconds", type=float, default=None,
                   help="mean evaluation time (default 1.0, or 60 with --simulate)")
    p.add_argument("--sigma", type=float, default=0.5, help="σ of the durations in log space")
    p.add_argument("--simulate", action="store_true", help="discrete-event simulation, no MPI")
    p.add_argument("--workers", type=int, default=1024, help="simulated workers (--simulate)")
    p.add_argument("--latency", type=float, default=100e-6,
                   help="one-way message latency in the simulation, seconds")
    p.add_argument("--keep", type=Path, help="keep the run directories here")
    return p.parse_args(argv)


def search_shape(workers: int) -> dict[str, str]:
    """One island of 32 per 32 workers (one island of all workers below 32)."""
    islands = max(workers // ISLAND_SIZE, 1)
    population = ISLAND_SIZE if workers >= ISLAND_SIZE else max(workers, 2)
    return {"EVO_BENCH_ISLANDS": str(islands), "EVO_BENCH_POPULATION": str(population)}


def measured(run_dir: Path, workers: int, mean: float, sigma: float) -> dict[str, Any]:
    """Utilization and idle gaps of one finished run, from its store alone."""
    sys.path.insert(0, str(SCENARIOS))
    from lognormal_sleep import drawn_duration

    ev = read_evaluations(run_dir, ["seed", "worker", "t_start", "t_end"])
    busy = ev["t_end"] - ev["t_start"]
    wall = float(ev["t_end"].max() - ev["t_start"].min())
    drawn = np.array([drawn_duration(int(s), mean, sigma) for s in ev["seed"]])
    return {
        "evaluations": int(ev["uid"].size),
        "utilization": utilization(busy, workers, wall),
        "ideal": ideal_utilization(drawn, workers),
        "idle_gap": median_idle_gap(ev["worker"], ev["t_start"], ev["t_end"]),
        "wall": wall,
    }


def run_mpi(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    workers = args.ranks - 1
    mean = args.mean_seconds or 1.0
    budget = workers * args.evals_per_worker
    env = mpi_env(EVO_BENCH_MEAN_SECONDS=str(mean), EVO_BENCH_SIGMA=str(args.sigma),
                  **search_shape(workers))
    out: dict[str, dict[str, Any]] = {}
    for mode, extra in (("async", ()), ("sync", ("--sync",))):
        run_evo(args.ranks, SCENARIO, root / mode, budget, *extra, env=env)
        out[mode] = measured(root / mode, workers, mean, args.sigma)
    a, s = out["async"], out["sync"]
    return {
        "benchmark": "utilization", "mode": "mpiexec", "ranks": args.ranks,
        "workers": workers, "evaluations": a["evaluations"], "mean_seconds": mean,
        "sigma": args.sigma,
        "async_utilization": round(a["utilization"], 4),
        "sync_utilization": round(s["utilization"], 4),
        "ideal_utilization": round(a["ideal"], 4),
        "efficiency": round(a["utilization"] / a["ideal"], 4),
        "median_idle_gap_s": a["idle_gap"],
        "async_wall_s": round(a["wall"], 3), "sync_wall_s": round(s["wall"], 3),
    }


# -- the simulation ---------------------------------------------------------------------------


class SimulatedClock:
    """The coordinator's clock in the simulation: seconds since the run started."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def simulated_workers(n: int, clock: SimulatedClock, latency: float, duration_of: Any,
                      fitness_of: Any) -> Any:
    """A Transport whose workers take exactly their drawn durations, on the simulated clock."""
    from evo_engine.search.messages import Result
    from evo_engine.transports.base import Transport, WorkerInfo
    from evo_engine.transports.mpi import (
        result_from_message,
        result_message,
        task_from_message,
        task_message,
    )

    class SimulatedWorkers(Transport):
        def __init__(self) -> None:
            self.n_workers = n
            self.events: list[tuple[float, int, bytes]] = []
            self.charged = 0.0
            self.charged_for_results = 0.0
            self.cpu_charged_for_results = 0.0
            """The coordinator thread's CPU time (``time.thread_time``) within
            ``charged_for_results``: the rest is time it waited (for the GIL, held by the
            writer's or zarr's threads, or for a core on a loaded machine)."""
            self.handling = False
            self.first_sent: float | None = None
            self.last_received = 0.0
            self._mark = time.perf_counter()
            self._cpu_mark = time.thread_time()

        def _charge(self) -> None:
            # Real time spent by the coordinator since the last transport call: its cost.
            now = time.perf_counter()
            clock.now += now - self._mark
            self.charged += now - self._mark
            if self.handling:
                self.charged_for_results += now - self._mark
                self.cpu_charged_for_results += time.thread_time() - self._cpu_mark
            self._mark = now

        @contextlib.contextmanager
        def uncharged(self) -> Iterator[None]:
            """The benchmark's own work inside a charged stretch (measuring): not charged."""
            wall, cpu = time.perf_counter(), time.thread_time()
            yield
            self._mark += time.perf_counter() - wall
            self._cpu_mark += time.thread_time() - cpu

        def restart_marks(self) -> None:
            self._mark = time.perf_counter()
            self._cpu_mark = time.thread_time()

        def start(self) -> list[WorkerInfo]:
            return [WorkerInfo(w, w + 1, "simulated", "cpu", 0) for w in range(n)]

        def submit(self, worker: int, task: Any) -> None:
            wire = pickle.dumps(task_message(task), pickle.HIGHEST_PROTOCOL)
            self._charge()
            if self.first_sent is None:
                self.first_sent = clock.now
            # The worker's side, not charged: it runs elsewhere.
            got = task_from_message(pickle.loads(wire))
            t0 = clock.now + latency
            t1 = t0 + duration_of(got.seed)
            r = Result(uid=got.uid, worker=worker, fitness=fitness_of(got.params),
                       t_start=t0, t_end=t1)
            heapq.heappush(self.events, (t1 + latency, got.uid,
                                         pickle.dumps(result_message(r), pickle.HIGHEST_PROTOCOL)))
            self.restart_marks()

        def poll(self, timeout: float) -> list[Any]:
            self._charge()
            self.handling = False
            if not self.events or self.events[0][0] > clock.now + timeout:
                clock.now += timeout
                self.restart_marks()
                return []
            clock.now = max(clock.now, self.events[0][0])
            arrived = []
            while self.events and self.events[0][0] <= clock.now:
                arrived.append(heapq.heappop(self.events)[2])
            self.last_received = clock.now
            self.handling = True  # until the next poll: telling, recording, dispatching
            self.restart_marks()
            return [result_from_message(pickle.loads(b)) for b in arrived]  # charged: handling

        def close(self) -> None:
            self.events.clear()

    return SimulatedWorkers()


def simulate_once(workers: int, budget: int, sync: bool, latency: float, mean: float,
                  sigma: float, store_dir: Path) -> dict[str, Any]:
    """One simulated run: the real Coordinator, Engine and recorder (a process of its own, as
    in a run) on a simulated clock."""
    from evo_engine.job.coordinator import Coordinator
    from evo_engine.scenario import load_scenario
    from evo_engine.search.engine import Engine
    from evo_engine.store.runstore import RunStore
    from evo_engine.store.writer import SnapshotPolicy
    from evo_engine.store.writer_process import RecorderProcess

    os.environ.update(search_shape(workers))
    scenario = load_scenario(SCENARIO)
    module = sys.modules[scenario.objective.__module__]
    config = replace(scenario.engine_config(), max_evals=budget, sync=sync)
    engine = Engine(scenario.space, config)
    store = RunStore.create(store_dir, attrs={"scenario": "simulated"},
                            param_kinds={k: p.kind for k, p in scenario.space.items()},
                            dim=scenario.space.dim)
    recorder = RecorderProcess(store, scenario.space)
    clock = SimulatedClock()
    sim = simulated_workers(workers, clock, latency,
                            lambda seed: module.drawn_duration(seed, mean, sigma),
                            module.fitness)
    snapshots = SnapshotPolicy(scenario.checkpoint_every, clock=clock)

    # What run.py does for each finished evaluation, so its cost is charged too.
    def on_evaluation(ev: Any) -> None:
        recorder.record(ev)
        recorder.record_migrations(engine.drain_migrations())
        if snapshots.result():
            recorder.snapshot(engine.get_state())

    evaluations: list[Any] = []
    coord = Coordinator(engine, sim, clock=clock, on_task=recorder.record_task,
                        on_evaluation=lambda ev: (evaluations.append(ev), on_evaluation(ev)))
    sim.start()
    coord.run()
    recorder.finish("finished", "finished", trim=True)
    busy = np.array([e.result.t_end - e.result.t_start for e in evaluations])
    drawn = np.array([module.drawn_duration(e.task.seed, mean, sigma)
                      for e in sorted(evaluations, key=lambda e: e.task.uid)])
    wall = sim.last_received - (sim.first_sent or 0.0)
    return {
        "evaluations": len(evaluations),
        "utilization": utilization(busy, workers, wall),
        "ideal": ideal_utilization(drawn, workers),
        "idle_gap": median_idle_gap(np.array([e.result.worker for e in evaluations]),
                                    np.array([e.result.t_start for e in evaluations]),
                                    np.array([e.result.t_end for e in evaluations])),
        "per_result": sim.charged_for_results / max(len(evaluations), 1),
        "per_result_cpu": sim.cpu_charged_for_results / max(len(evaluations), 1),
        "busy_fraction": sim.charged / wall,
        "wall": wall,
    }


def run_simulation(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    mean = args.mean_seconds or 60.0
    budget = args.workers * args.evals_per_worker
    a = simulate_once(args.workers, budget, False, args.latency, mean, args.sigma, root / "async")
    s = simulate_once(args.workers, budget, True, args.latency, mean, args.sigma, root / "sync")
    return {
        "benchmark": "utilization", "mode": "simulated", "workers": args.workers,
        "evaluations": a["evaluations"], "mean_seconds": mean, "sigma": args.sigma,
        "async_utilization": round(a["utilization"], 4),
        "sync_utilization": round(s["utilization"], 4),
        "ideal_utilization": round(a["ideal"], 4),
        "efficiency": round(a["utilization"] / a["ideal"], 4),
        "median_idle_gap_s": a["idle_gap"],
        "coordinator_seconds_per_result": a["per_result"],
        "coordinator_cpu_seconds_per_result": a["per_result_cpu"],
        "coordinator_busy_fraction": round(a["busy_fraction"], 4),
        "latency_s": args.latency,
        "async_wall_s": round(a["wall"], 3), "sync_wall_s": round(s["wall"], 3),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="evo-util-") as tmp:
        root = args.keep or Path(tmp)
        result = run_simulation(args, root) if args.simulate else run_mpi(args, root)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
