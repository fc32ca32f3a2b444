"""What crash safety costs: snapshot overhead, resume time and store size.

    python benchmarks/checkpoint.py [--workers 32] [--evals 960] [--repeats 3]

* overhead_fraction: wall time (first task start → last result, from the store) of a
  32-worker local run of a sleep objective with snapshots every 50 results, versus the same
  run with no snapshot until the end; median over repeats, runs interleaved.
* resume_seconds: opening a store of 100,000 evaluations of a 10-parameter space, checking
  it and rebuilding the engine from its latest snapshot plus a 40-result log tail.
* store_bytes_per_eval: that store's size on disk divided by its evaluations.

Prints a table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
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
    from evo_engine.engine import Engine
    from evo_engine.recorder import Recorder
    from evo_engine.records import Result
    from evo_engine.scenario import load_scenario
    from evo_engine.store import RunStore

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
    from evo_engine.resume import fingerprint_diff, rebuild_engine
    from evo_engine.scenario import load_scenario
    from evo_engine.store import RunStore

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=32)
    ap.add_argument("--evals", type=int, default=960)
    ap.add_argument("--mean-seconds", type=float, default=0.5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--store-evals", type=int, default=100_000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="evo_ckpt_"))
    try:
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
