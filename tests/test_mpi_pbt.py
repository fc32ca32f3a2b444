"""Population-based training under a real ``mpiexec``: checkpoints written by one worker rank
and loaded by another, migrants bringing their weights across islands, exact decisions, and
a walltime signal followed by ``--resume`` (tests/scenarios/pbt_toy.py, a one-number model).
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest
import zarr
from test_mpi import SCENARIOS, finish, needs_mpiexec, start_mpirun, store_attrs
from test_mpi_resume import wait_for_rows
from test_pbt import MIGRATING, check_pbt_store

from evo_engine.scenario import load_scenario, override

pytestmark = [pytest.mark.mpi, needs_mpiexec]

TOY = SCENARIOS / "pbt_toy.py"
EVALS = 24


def toy_args(run_dir: Path, *extra: str) -> list[str]:
    sets = [f"max_evals={EVALS}"] + [f"{k}={json.dumps(v)}" for k, v in MIGRATING.items()]
    return [str(TOY), "--run-dir", str(run_dir), "--quiet",
            *(a for s in sets for a in ("--set", s)), *extra]


def toy_scenario():
    return override(load_scenario(TOY), max_evals=EVALS, **MIGRATING)


def task_list(run_dir: Path) -> list[tuple]:
    """(uid, island, seed, operator, pbt_parent, step, genome) of every task, by uid."""
    t = zarr.open_group(str(run_dir / "run.zarr"), mode="r")["tasks"]
    n = int(t.attrs["committed"])
    cols = [np.asarray(t[c][:n]) for c in ("uid", "island", "seed", "operator", "pbt_parent",
                                          "step", "genome")]
    rows = {int(r[0]): (int(r[0]), int(r[1]), int(r[2]), str(r[3]), int(r[4]), int(r[5]),
                        tuple(np.asarray(r[6]).tolist())) for r in zip(*cols)}
    return [rows[u] for u in sorted(rows)]


def test_pbt_over_mpi_ranks_loads_each_parents_checkpoint_and_migrates_weights(
        tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    done = finish(start_mpirun(3, *toy_args(run_dir), cwd=tmp_path, PBT_SLEEP="0.02"))
    assert done.returncode == 0, done.stderr
    ev = check_pbt_store(run_dir, toy_scenario())
    assert set(ev["metrics/loaded"].tolist()) > {-1.0}
    # Both worker ranks trained, so checkpoints crossed ranks (through the shared run dir).
    rank = zarr.open_group(str(run_dir / "run.zarr"), mode="r")["evaluations/metrics/rank"]
    assert set(np.asarray(rank).tolist()) == {1.0, 2.0}
    left = sorted(p.name for p in (run_dir / "scratch" / "checkpoints").iterdir())
    assert 4 <= len(left) <= 5, left  # one per member and the best one


@pytest.mark.slow
def test_a_signalled_pbt_run_resumed_under_mpiexec_issues_the_uninterrupted_runs_tasks(
        tmp_path: Path) -> None:
    """One worker rank, so results arrive in one order and the uninterrupted run's task list
    is fixed; the stopped and resumed run must issue exactly that list."""
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    done = finish(start_mpirun(2, *toy_args(whole), cwd=tmp_path))
    assert done.returncode == 0, done.stderr
    proc = start_mpirun(2, *toy_args(cut), cwd=tmp_path, PBT_SLEEP="0.2")
    wait_for_rows(cut, 7, proc)
    proc.send_signal(signal.SIGUSR1)  # Slurm's --signal=USR1@... through mpiexec
    stopped = finish(proc)
    assert stopped.returncode == 3, stopped.stderr
    attrs = store_attrs(cut)
    assert attrs["status"] == "stopped" and attrs["stop_reason"] == "signal:SIGUSR1"
    z = zarr.open_group(str(cut / "run.zarr"), mode="r")
    assert 7 <= int(z["evaluations"].attrs["committed"]) < EVALS
    resumed = finish(start_mpirun(2, *toy_args(cut, "--resume"), cwd=tmp_path))
    assert resumed.returncode == 0, resumed.stderr
    assert "replay re-created" not in resumed.stderr
    check_pbt_store(cut, toy_scenario())
    assert task_list(cut) == task_list(whole)
