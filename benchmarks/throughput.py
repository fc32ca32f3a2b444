"""Coordinator throughput under real mpiexec: evaluations per second with a trivial objective.

    python benchmarks/throughput.py --ranks 5

runs ``benchmarks/scenarios/trivial.py`` (an objective that returns at once, the GA operator
unless ``--operator`` says otherwise) through the normal CLI with recording on (evaluation
log, task log, a snapshot every 5000 results), and measures in the same
invocation a plain mpi4py ping-pong between rank 0 and the same number of worker ranks
(blocking ``send``/``recv`` of a task-sized tuple, rank 0 answering whichever worker spoke).

* evals_per_s = evaluations / (the store closed − first task's start): a run is done when its
  results are on disk (``closed_at``, written when the store is closed);
* store_closed_after_last_result_s = the store closed − the last result's end;
* raw_roundtrips_per_s = ping-pong round trips per second;
* ratio = evals_per_s / raw_roundtrips_per_s (how much of the bare MPI rate survives the
  engine, the recording and the idle back-off); ``--roundtrips 0`` skips the ping-pong;
* rank0_cpu_us_per_eval = rank 0's CPU (user + system, all its threads) in the coordinator
  loop per evaluation, and rank0_wall_us_per_eval its wall time there (rank 0 runs under
  ``benchmarks/_rank0_cpu.py``): on a shared machine the CPU figure moves far less with the
  load than evals_per_s;
* load = /proc/loadavg's 1-minute figure before the run and after it.

Prints one JSON line at the end. A benchmark, not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SCENARIOS, mpi_env, mpiexec, read_evaluations  # noqa: E402

SCENARIO = SCENARIOS / "trivial.py"
RANK0 = Path(__file__).resolve().parent / "_rank0_cpu.py"
PINGPONG_FLAG = "--pingpong"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ranks", type=int, default=5, help="MPI ranks (workers + 1 coordinator)")
    p.add_argument("--evals", type=int, default=20000, help="evaluations in the engine run")
    p.add_argument("--roundtrips", type=int, default=50000,
                   help="ping-pong round trips (0: no ping-pong)")
    p.add_argument("--operator", default="ga",
                   help="the search operator (ga, the default; random isolates the plumbing)")
    p.add_argument("--keep", type=Path, help="keep the run directory here")
    p.add_argument(PINGPONG_FLAG, type=int, default=0, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def pingpong(roundtrips: int) -> None:
    """One rank of the plain mpi4py ping-pong (run under mpiexec by ``raw_roundtrips``)."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    message = (123, 0, {"x": 0.1, "y": 0.2}, 4242424242, "ga")
    if comm.Get_rank() > 0:
        while (got := comm.recv(source=0)) is not None:
            comm.send(got, dest=0)
        return
    status = MPI.Status()
    t0 = time.perf_counter()
    for r in range(1, comm.Get_size()):
        comm.send(message, dest=r)
    for _ in range(roundtrips):
        comm.recv(source=MPI.ANY_SOURCE, status=status)
        comm.send(message, dest=status.Get_source())
    elapsed = time.perf_counter() - t0
    for r in range(1, comm.Get_size()):
        comm.recv(source=r)
        comm.send(None, dest=r)
    print(json.dumps({"roundtrips_per_s": roundtrips / elapsed}), flush=True)


def raw_roundtrips(ranks: int, roundtrips: int) -> float:
    cmd = [mpiexec(), "-n", str(ranks), sys.executable, __file__, PINGPONG_FLAG, str(roundtrips)]
    proc = subprocess.run(cmd, env=mpi_env(), capture_output=True, text=True, timeout=600,
                          check=True)
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["roundtrips_per_s"])


def evals_per_second(ranks: int, evals: int, run_dir: Path, operator: str = "ga"
                     ) -> tuple[float, float, dict[str, float]]:
    """(evaluations per second until the store was closed, seconds from the last result to
    the store being closed, rank 0's loop timing): a run is done when its results are on
    disk, not before."""
    import zarr

    timing_file = run_dir.parent / "rank0.json"
    env = mpi_env(EVO_BENCH_OPERATOR=operator, EVO_BENCH_RANK0_OUT=str(timing_file))
    args = [str(SCENARIO), "--max-evals", str(evals), "--run-dir", str(run_dir), "--force",
            "--quiet"]
    cmd = [mpiexec(), "-n", "1", sys.executable, str(RANK0), *args,
           ":", "-n", str(ranks - 1), sys.executable, "-m", "evo_engine", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600,
                          check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        sys.exit(f"benchmark: {' '.join(cmd)} exited with code {proc.returncode}")
    ev = read_evaluations(run_dir, ["t_start", "t_end"])
    if ev["uid"].size != evals:
        sys.exit(f"benchmark: the store holds {ev['uid'].size} evaluations, not {evals}")
    closed = float(zarr.open_group(str(run_dir / "run.zarr"), mode="r").attrs["closed_at"])
    rank0 = json.loads(timing_file.read_text())
    return (float(evals / (closed - ev["t_start"].min())), closed - float(ev["t_end"].max()),
            rank0)


def load_1min() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except OSError:  # not Linux
        return None


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.pingpong:
        pingpong(args.pingpong)
        return
    load_before = load_1min()
    with tempfile.TemporaryDirectory(prefix="evo-throughput-") as tmp:
        run_dir = (args.keep or Path(tmp)) / "run"
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        evals, close_lag, rank0 = evals_per_second(args.ranks, args.evals, run_dir,
                                                   args.operator)
    load_after = load_1min()
    raw = raw_roundtrips(args.ranks, args.roundtrips) if args.roundtrips > 0 else None
    per_eval = 1e6 / max(rank0["evaluations"], 1)
    print(json.dumps({
        "benchmark": "throughput", "ranks": args.ranks, "workers": args.ranks - 1,
        "evaluations": args.evals, "operator": args.operator, "evals_per_s": round(evals, 1),
        "raw_roundtrips_per_s": None if raw is None else round(raw, 1),
        "ratio": None if raw is None else round(evals / raw, 4),
        "store_closed_after_last_result_s": round(close_lag, 3),
        "rank0_cpu_us_per_eval": round(rank0["cpu_s"] * per_eval, 1),
        "rank0_wall_us_per_eval": round(rank0["wall_s"] * per_eval, 1),
        "load": [load_before, load_after],
    }), flush=True)


if __name__ == "__main__":
    main()
