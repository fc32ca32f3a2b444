"""Shared pieces of the MPI benchmarks: finding mpiexec, running evo_engine under it, reading a store."""

from __future__ import annotations

import heapq
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import zarr

REPO = Path(__file__).resolve().parent.parent
SCENARIOS = Path(__file__).resolve().parent / "scenarios"


def code_version(root: Path = REPO) -> dict[str, object]:
    """The code a benchmark runs: ``{"commit": full hash or "", "dirty": uncommitted changes}``.
    Read it when the job starts: commits may land while a long one runs."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(root), *args], capture_output=True,
                                  text=True, check=False).stdout.strip()
        except OSError:  # no git on this machine
            return ""

    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}


def mpiexec() -> str:
    """The mpiexec next to this Python (the venv's MPICH) or the first one on PATH."""
    local = Path(sys.executable).parent / "mpiexec"
    if local.exists():
        return str(local)
    found = shutil.which("mpiexec")
    if found is None:
        sys.exit("benchmark: no mpiexec found (install the 'mpich' extra or load an MPI module)")
    return found


def mpi_env(**settings: str) -> dict[str, str]:
    """The environment for an mpiexec child: the venv's tools first, one thread per rank."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(settings)
    return env


def run_evo(ranks: int, scenario: Path, run_dir: Path, max_evals: int, *extra: str,
            env: dict[str, str] | None = None, timeout: float = 3600) -> float:
    """Run ``mpiexec -n ranks python -m evo_engine ...``; return its wall time in seconds."""
    cmd = [mpiexec(), "-n", str(ranks), sys.executable, "-m", "evo_engine", str(scenario),
           "--max-evals", str(max_evals), "--run-dir", str(run_dir), "--force", "--quiet",
           *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env or mpi_env(), capture_output=True, text=True,
                          timeout=timeout, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        sys.exit(f"benchmark: {' '.join(cmd)} exited with code {proc.returncode}")
    return time.perf_counter() - t0


def read_evaluations(run_dir: Path, columns: Sequence[str]) -> dict[str, np.ndarray]:
    """The committed rows of the evaluation log, sorted by uid, read with plain zarr."""
    table = zarr.open_group(str(run_dir / "run.zarr"), mode="r")["evaluations"]
    n = int(table.attrs["committed"])
    cols = {c: np.asarray(table[c][:n]) for c in {"uid", *columns}}
    order = np.argsort(cols["uid"], kind="stable")
    return {c: v[order] for c, v in cols.items()}


def utilization(durations: np.ndarray, workers: int, wall: float) -> float:
    """Summed evaluation time over the time ``workers`` were available."""
    return float(np.sum(durations) / (workers * wall))


def greedy_makespan(durations: Sequence[float], workers: int) -> float:
    """List scheduling with zero overhead: each duration, in order, to the first free worker."""
    free = [0.0] * workers
    for d in durations:
        heapq.heapreplace(free, free[0] + float(d))
    return max(free)


def ideal_utilization(durations: np.ndarray, workers: int) -> float:
    return utilization(durations, workers, greedy_makespan(durations, workers))


def median_idle_gap(worker: np.ndarray, t_start: np.ndarray, t_end: np.ndarray) -> float:
    """Median over all workers of (start of the next task − end of the previous one)."""
    gaps: list[np.ndarray] = []
    for w in np.unique(worker):
        mine = np.flatnonzero(worker == w)
        mine = mine[np.argsort(t_start[mine])]
        gaps.append(t_start[mine][1:] - t_end[mine][:-1])
    every = np.concatenate(gaps) if gaps else np.array([])
    return float(np.median(every)) if every.size else float("nan")
