"""End to end through ``python -m evo_engine``: local workers, the store, exit codes, bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

REPO = Path(__file__).resolve().parent.parent
SPHERE = REPO / "scenarios" / "sphere.py"
FLAKY = REPO / "tests" / "scenarios" / "flaky.py"


def evo(*args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evo_engine", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def test_local_run_records_exactly_the_budget(tmp_path: Path) -> None:
    r = evo(SPHERE, "--max-evals", 60, "--workers", 2, "--run-dir", "runs/r1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "best fitness" in r.stdout and "finished: 60/60" in r.stdout
    z = zarr.open(str(tmp_path / "runs/r1/run.zarr"), mode="r")
    assert z.attrs["status"] == "finished"
    n = z["evaluations"].attrs["committed"]
    uids = z["evaluations/uid"][:n]
    assert n == 60 and len(set(uids.tolist())) == 60
    assert set(z["evaluations/worker"][:n].tolist()) == {0, 1}, "both workers did work"
    assert np.all(z["evaluations/state"][:n] == 2)
    assert z["evaluations/params/activation"][:n].dtype.kind in "TUO"
    assert '"event": "run_finished"' in (tmp_path / "runs/r1/log.jsonl").read_text()


def test_run_subcommand_is_the_same_command(tmp_path: Path) -> None:
    r = evo("run", SPHERE, "--max-evals", 10, "--workers", 0, "--run-dir", "r", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert zarr.open(str(tmp_path / "r/run.zarr"), mode="r")["evaluations"].attrs["committed"] == 10


def test_failures_are_recorded_and_the_run_goes_on(tmp_path: Path) -> None:
    r = evo(FLAKY, "--run-dir", "f", "--seed", 1, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    z = zarr.open(str(tmp_path / "f/run.zarr"), mode="r")
    n = z["evaluations"].attrs["committed"]
    states = z["evaluations/state"][:n]
    errors = z["evaluations/error"][:n]
    modes = z["evaluations/params/mode"][:n]
    assert n == 40
    assert set(states[np.isin(modes, ["raise", "nan", "oom"])].tolist()) == {3}
    assert all("objective exploded" in e and "Traceback" in e for e in errors[modes == "raise"])
    assert all("non-finite" in e for e in errors[modes == "nan"])
    assert np.all(np.isnan(z["evaluations/fitness"][:n][states == 3]))
    # The per-worker cache survived across evaluations (a worker counted more than one call).
    assert np.nanmax(z["evaluations/metrics/worker_calls"][:n]) > 1


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["nope.py"], "does not exist"),
        ([SPHERE, "--max-evals", "0"], "must be >= 1"),
        ([SPHERE, "--max-evals", "ten"], "expected a whole number"),
        ([SPHERE, "--workers", "-1"], "must be >= 0"),
        ([SPHERE, "--preset", "huge"], "invalid choice"),
        ([SPHERE, "--max-time", "nan"], "positive number of seconds"),
        ([SPHERE, "--bogus"], "unrecognized arguments"),
        ([SPHERE, "--data-file", "missing.h5"], "--data-file missing.h5 does not exist"),
    ],
)
def test_bad_input_exits_2_without_traceback(tmp_path: Path, args: list, needle: str) -> None:
    r = evo(*args, cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert needle in r.stderr and "Traceback" not in r.stderr


def test_typo_in_scenario_names_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(SPHERE.read_text().replace("population_size=8", "populaton_size=8"))
    r = evo(bad, "--run-dir", "x", cwd=tmp_path)
    assert r.returncode == 2 and "'populaton_size': is not a scenario field" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "x").exists()


def test_non_empty_run_dir_is_refused_and_left_untouched(tmp_path: Path) -> None:
    assert evo(SPHERE, "--max-evals", 8, "--workers", 0, "--run-dir", "r", cwd=tmp_path).returncode == 0
    before = sorted(p.name for p in (tmp_path / "r").iterdir())
    committed = zarr.open(str(tmp_path / "r/run.zarr"), mode="r")["evaluations"].attrs["committed"]
    r = evo(SPHERE, "--max-evals", 8, "--workers", 0, "--run-dir", "r", cwd=tmp_path)
    assert r.returncode == 2 and "is not empty" in r.stderr and "--force" in r.stderr
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == before
    assert zarr.open(str(tmp_path / "r/run.zarr"), mode="r")["evaluations"].attrs["committed"] == committed
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    r = evo(SPHERE, "--max-evals", 8, "--workers", 0, "--run-dir", "other", "--force", cwd=tmp_path)
    assert r.returncode == 0
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine", "--force deletes only our files"


def test_force_starts_over(tmp_path: Path) -> None:
    assert evo(SPHERE, "--max-evals", 8, "--workers", 0, "--run-dir", "r", cwd=tmp_path).returncode == 0
    r = evo(SPHERE, "--max-evals", 5, "--workers", 0, "--run-dir", "r", "--force", cwd=tmp_path)
    assert r.returncode == 0
    assert zarr.open(str(tmp_path / "r/run.zarr"), mode="r")["evaluations"].attrs["committed"] == 5


def test_bad_data_file_exits_2_and_leaves_no_run_behind(tmp_path: Path) -> None:
    bad = tmp_path / "bad.h5"
    bad.write_text("not an HDF5 file")
    r = evo(REPO / "scenarios" / "advection_lr.py", "--data-file", bad, "--run-dir", "r",
            "--max-evals", 2, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "not a usable 1D advection file" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "r" / "run.zarr").exists()
