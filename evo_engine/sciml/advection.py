"""Generate PDEBench-compatible 1D advection data sets and cache them on disk.

u_t + β u_x = 0 on x ∈ (0, 1), t ∈ [0, 2], periodic, with PDEBench's random initial conditions
(:mod:`evo_engine.sciml.initial_conditions`). Files use PDEBench's HDF5 layout:

- ``tensor``: float32 ``[samples, nt, nx]`` (PDEBench: 10,000 × 201 × 1024), frame k at
  t = k·T/(nt − 1);
- ``x-coordinate``: float32 ``[nx]``, the cell centres (i + ½)/nx;
- ``t-coordinate``: float32 ``[nt + 1]``, k·dt_save for k = 0..nt (0 .. 2.01: one entry more than
  the tensor has frames, exactly as PDEBench's files);
- attribute ``beta``, plus ``solver``, ``version``, ``seed`` and ``generator`` for provenance.

Three versions of the dynamics (``AdvectionRecipe.version``; ``docs/pdebench.md``):

- ``"fixed"`` (the default): the equation as written, frames exactly at k·dt_save;
- ``"legacy"``: PDEBench's 2022 files, which its NeurIPS 2022 numbers were computed on: its
  generator before commit ac1ed78 (2023-08-24), whose upwind flux lacks its factor ½ (so
  "β = 4" advects at 8, with an effective CFL of 0.8), run with its float32 clock;
- ``"current"``: PDEBench's generator since that fix (its files since 7d8115f, 2023-10-10): the
  flux of ``"fixed"``, the float32 clock of ``"legacy"`` (frames up to 3.4e-4 late in time).

Both PDEBench versions use :func:`~evo_engine.sciml.solvers.pdebench_finite_volume_solution`
and need ``solver="fv"``.

Cached files live in ``$EVO_ENGINE_DATA_DIR`` if set, else ``./data`` relative to the current
directory. Their names encode the whole recipe, so a different preset never reuses a wrong file,
and they are written to a temporary file and renamed, so racing processes never see half a file.

Command line (exit status 2 on bad flags)::

    python -m evo_engine.sciml.advection --beta 4.0 --samples 1000 --out data/adv_beta4.h5
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from evo_engine.sciml.initial_conditions import (
    InitialConditions,
    cell_centres,
    sample_initial_conditions,
)
from evo_engine.sciml.solvers import (
    exact_solution,
    finite_volume_solution,
    pdebench_finite_volume_solution,
)

SOLVERS = ("exact", "fv")
VERSIONS = ("fixed", "legacy", "current")
FLUX_FACTOR = {"legacy": 1.0, "current": 0.5}
"""The upwind flux's factor of PDEBench's generator, per version (1 is its pre-fix typo)."""
DATA_DIR_ENV = "EVO_ENGINE_DATA_DIR"


@dataclass(frozen=True)
class AdvectionRecipe:
    """Everything that determines a generated advection data set (PDEBench's β = 4 by default)."""

    beta: float = 4.0
    samples: int = 10_000
    nx: int = 1024
    nt: int = 201
    final_time: float = 2.0
    seed: int = 2022
    solver: str = "exact"
    cfl: float = 0.4
    version: str = "fixed"

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
        if self.version not in VERSIONS:
            raise ValueError(f"version must be one of {VERSIONS}, got {self.version!r}")
        if self.version != "fixed" and self.solver != "fv":
            raise ValueError(
                f"version {self.version!r} is PDEBench's finite-volume generator: "
                "it needs solver 'fv'"
            )
        if self.samples < 1 or self.nx < 2 or self.nt < 2:
            raise ValueError(
                f"need samples >= 1, nx >= 2, nt >= 2; got {self.samples}, {self.nx}, {self.nt}"
            )
        if not (self.final_time > 0 and 0 < self.cfl <= 1 and np.isfinite(self.beta)):
            raise ValueError("need final_time > 0, 0 < cfl <= 1 and a finite beta")

    @property
    def dt_save(self) -> float:
        """Time between stored frames (0.01 for PDEBench's 201 frames on [0, 2])."""
        return self.final_time / (self.nt - 1)

    def filename(self) -> str:
        """A file name that encodes the recipe, e.g. ``advection_beta4_n1000_nx1024_nt201_...h5``."""
        cfl = f"_cfl{self.cfl:g}" if self.solver == "fv" else ""
        version = "" if self.version == "fixed" else f"_{self.version}"  # fixed names as before
        return (
            f"advection_beta{self.beta:g}_n{self.samples}_nx{self.nx}_nt{self.nt}"
            f"_T{self.final_time:g}_seed{self.seed}_{self.solver}{cfl}{version}.h5"
        )


def data_dir() -> Path:
    """Where generated data are cached: ``$EVO_ENGINE_DATA_DIR`` if set, else ``./data``."""
    return Path(os.environ.get(DATA_DIR_ENV) or "data")


def _solve_block(
    recipe: AdvectionRecipe, start: int, stop: int, initial: InitialConditions, device: str
) -> np.ndarray:
    x = cell_centres(recipe.nx)
    t = np.arange(recipe.nt) * recipe.dt_save
    block = initial[start:stop]
    if recipe.solver == "exact":
        return exact_solution(block, x, t, recipe.beta).astype(np.float32)
    u0 = torch.as_tensor(block(x), dtype=torch.float32, device=device)

    def solve() -> torch.Tensor:
        if recipe.version in FLUX_FACTOR:
            return pdebench_finite_volume_solution(
                u0,
                recipe.beta,
                final_time=recipe.final_time,
                frames=recipe.nt,
                flux_factor=FLUX_FACTOR[recipe.version],
                cfl=recipe.cfl,
            )
        return finite_volume_solution(u0, recipe.beta, t, cfl=recipe.cfl)

    if torch.device(device).type != "cpu":
        return solve().cpu().numpy()
    # Some 40,000 small element-wise ops per sample block: torch's intra-op threads only add
    # synchronisation (on a loaded machine, many times the work), so the CPU solve is serial.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return solve().numpy()
    finally:
        torch.set_num_threads(threads)


def _ignore_stop_signals() -> None:
    # sciml imports neither util nor transports (tests/test_layout.py): the local workers' and
    # the writer's versions of this loop cannot be shared from here.
    for name in ("SIGINT", "SIGTERM", "SIGUSR1"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)


def _solve_in_processes(recipe: AdvectionRecipe, blocks: list[tuple[int, int]],
                        initial: InitialConditions, device: str, procs: int, out: Any) -> None:
    """Solve ``blocks`` in ``procs`` spawned processes, writing each into ``out`` in order.

    Spawn, not fork: the caller may hold threads (torch, a writer, MPI). The helpers ignore
    stop signals (a Ctrl-C or a scheduler's signal reaches every process of the job), so a
    stop is the caller's alone: whatever the caller raises (a stop, a failed block), the
    helpers are killed at once instead of finishing their blocks.
    """
    before = set(multiprocessing.active_children())
    pool = ProcessPoolExecutor(max_workers=procs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_ignore_stop_signals)
    helpers: set = set()
    try:
        futures = [pool.submit(_solve_block, recipe, a, b, initial, device) for a, b in blocks]
        helpers = set(multiprocessing.active_children()) - before
        for (a, b), future in zip(blocks, futures, strict=True):
            out[a:b] = future.result()
    except BaseException:
        helpers = helpers or set(multiprocessing.active_children()) - before
        for child in helpers:
            child.kill()
        for child in helpers:
            child.join(5)  # reaped: no zombie, and gone when this raises
        # quick with the helpers gone; frees the pool's semaphores
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()


def _release_solver_memory(device: str) -> None:
    """Give the GPU the memory torch cached for the solve: the process that generates (a run's
    coordinator) trains nothing, and workers bound to that GPU need it for the whole run."""
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def default_device() -> str:
    """Where the FV solver runs by default: the first GPU when torch sees one, else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def device_problem(device: str) -> str | None:
    """Why torch cannot put a tensor on ``device`` here (no such device type, no such GPU), or
    None when it can."""
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as exc:  # torch without CUDA asserts
        return f"--device {device!r} cannot be used here: {exc}"
    return None


def cpu_count() -> int:
    """The CPUs this process may run on (its affinity mask, e.g. a SLURM allocation)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


PARALLEL_CELL_STEPS = 5e8
"""Above this many cell updates (about 17 s of serial solving on the project's CPU) the default
spreads the FV solve over processes; below, starting them would cost more than they save."""


def _cell_steps(recipe: AdvectionRecipe) -> float:
    """Cell updates of the FV solve: samples x nx x steps, steps = T |beta| nx / CFL."""
    return recipe.samples * recipe.nx * recipe.final_time * abs(recipe.beta) * recipe.nx / recipe.cfl


def _blocks(samples: int, block: int) -> list[tuple[int, int]]:
    return [(a, min(a + block, samples)) for a in range(0, samples, block)]


def write_advection(
    recipe: AdvectionRecipe,
    out: str | os.PathLike,
    *,
    device: str | None = None,
    block: int = 0,
    processes: int | None = None,
) -> Path:
    """Generate the data set of ``recipe`` and write it atomically to ``out`` in PDEBench's layout.

    Samples are solved ``block`` at a time (default: about 64 MB of output per block on the CPU,
    1 GB on a GPU, where a step's cost is mostly kernel launches, so wide blocks pay) so a
    10,000-sample file never has to fit in memory. ``device`` (default: :func:`default_device`)
    is used by the FV solver. On the CPU the blocks are solved by ``processes`` worker processes
    (default: the CPUs this process may use, :func:`cpu_count`; 1 solves in this process), the
    blocks then narrowed so that every process gets one: each sample's solution depends on its
    own initial condition only, so the file is bit for bit the one a single process writes.
    """
    device = device or default_device()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    initial = sample_initial_conditions(recipe.samples, recipe.nx, seed=recipe.seed)
    if torch.device(device).type != "cpu" or recipe.solver == "exact":
        procs = 1
    elif processes is None:  # worth a process only where the solve outlasts its start (~3 s)
        procs = cpu_count() if _cell_steps(recipe) > PARALLEL_CELL_STEPS else 1
    else:
        procs = max(1, processes)
    if block <= 0:
        budget = (1 << 30) if device.startswith("cuda") else (64 << 20)
        block = max(1, budget // (4 * recipe.nt * recipe.nx))
        if procs > 1:
            block = min(block, -(-recipe.samples // procs))
    blocks = _blocks(recipe.samples, block)
    procs = min(procs, len(blocks))
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        with h5py.File(tmp_name, "w") as f:
            tensor = f.create_dataset(
                "tensor", shape=(recipe.samples, recipe.nt, recipe.nx), dtype="float32"
            )
            if procs > 1:
                _solve_in_processes(recipe, blocks, initial, device, procs, tensor)
            else:
                for a, b in blocks:
                    tensor[a:b] = _solve_block(recipe, a, b, initial, device)
                _release_solver_memory(device)
            f.create_dataset("x-coordinate", data=cell_centres(recipe.nx).astype(np.float32))
            t_coordinate = np.arange(recipe.nt + 1) * recipe.dt_save
            f.create_dataset("t-coordinate", data=t_coordinate.astype(np.float32))
            f.attrs["beta"] = float(recipe.beta)
            f.attrs["solver"] = recipe.solver
            f.attrs["version"] = recipe.version
            f.attrs["seed"] = recipe.seed
            f.attrs["generator"] = "evo_engine.sciml.advection"
        # mkstemp makes the file private; give it the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_name, 0o666 & ~umask)
        os.replace(tmp_name, out)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return out


def ensure_dataset(
    recipe: AdvectionRecipe,
    directory: str | os.PathLike | None = None,
    *,
    device: str | None = None,
) -> Path:
    """Return the cached file of ``recipe``, generating it first if it does not exist yet.

    Meant as a scenario's ``prepare`` step (run once before the workers start); objectives call
    it too, so they also work when nobody prepared the data.
    """
    path = Path(directory if directory is not None else data_dir()) / recipe.filename()
    if not path.exists():
        write_advection(recipe, path, device=device)
    return path


def _parser() -> argparse.ArgumentParser:
    d = AdvectionRecipe()
    p = argparse.ArgumentParser(
        prog="python -m evo_engine.sciml.advection",
        description="Generate a PDEBench-compatible 1D advection data set (HDF5).",
    )
    p.add_argument("--beta", type=float, default=d.beta, help="advection speed (default 4.0)")
    p.add_argument("--samples", type=int, default=d.samples, help="number of trajectories")
    p.add_argument("--nx", type=int, default=d.nx, help="grid cells (default 1024)")
    p.add_argument("--nt", type=int, default=d.nt, help="stored frames incl. t=0 (default 201)")
    p.add_argument("--final-time", type=float, default=d.final_time, help="default 2.0")
    p.add_argument("--seed", type=int, default=d.seed, help="initial-condition seed (2022)")
    p.add_argument("--solver", choices=SOLVERS, default=d.solver, help="exact shift or FV")
    p.add_argument("--cfl", type=float, default=d.cfl, help="CFL number of the FV solver")
    p.add_argument(
        "--data",
        choices=VERSIONS,
        default=d.version,
        help="fixed (the equation, exact save times; default), legacy (PDEBench's 2022 files: "
        "flux without its factor 1/2, float32 clock) or current (PDEBench's files since "
        "2023-10: float32 clock); the last two need --solver fv",
    )
    p.add_argument(
        "--device", default=None, help="torch device for the FV solver (default: cuda if any)"
    )
    p.add_argument("--out", type=Path, help="output file (default: the cache directory)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        recipe = AdvectionRecipe(
            beta=args.beta,
            samples=args.samples,
            nx=args.nx,
            nt=args.nt,
            final_time=args.final_time,
            seed=args.seed,
            solver=args.solver,
            cfl=args.cfl,
            version=args.data,
        )
    except ValueError as exc:
        parser.error(str(exc))  # exits with status 2
    out = args.out if args.out is not None else data_dir() / recipe.filename()
    if out.is_dir():
        parser.error(f"--out {out} is a directory; name the file to write, e.g. "
                     f"{out / recipe.filename()}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        parser.error(f"cannot write --out {out}: {exc}")
    device = args.device or default_device()
    problem = device_problem(device)
    if problem is not None:
        parser.error(problem)
    wall, cpu = time.perf_counter(), time.process_time()
    path = write_advection(recipe, out, device=device)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(
        f"wrote {recipe.samples} samples of {recipe.nt} x {recipe.nx} ({recipe.solver}, "
        f"{recipe.version} dynamics) to {path} "
        f"in {wall:.1f} s wall, {cpu:.1f} s CPU on {device}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
