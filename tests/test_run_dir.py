"""The run directory's rules: refusals leave no trace, unwritable directories, a worker that
cannot be replaced, and the inputs a resumed run must share (preset, scenario file, data)."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import zarr

REPO = Path(__file__).resolve().parent.parent
QUICK = REPO / "tests" / "scenarios" / "quick.py"
DIES = REPO / "tests" / "scenarios" / "dies_then_breaks.py"


def evo(*args: object, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evo_engine", *map(str, args)],
                          env={**os.environ, "QUICK_EVALS": "12", **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def tree_hash(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def committed(run_dir: Path) -> int:
    return zarr.open(str(run_dir / "run.zarr"), mode="r")["evaluations"].attrs["committed"]


def test_refusals_leave_no_lock_and_no_log(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    r = evo(QUICK, "--workers", 0, "--run-dir", other)
    assert r.returncode == 2 and "holds other files" in r.stderr
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]
    r = evo(QUICK, "--workers", 0, "--run-dir", tmp_path / "typo" / "run", "--resume")
    assert r.returncode == 2 and "no run to resume" in r.stderr
    assert not (tmp_path / "typo").exists(), "a refused --resume created directories"
    r = evo(QUICK, "--workers", 0, "--run-dir", other, "--resume")
    assert r.returncode == 2 and "no run to resume" in r.stderr
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]


def _read_only_wrapper(d: Path) -> list[str] | None:
    """A command prefix that runs its command with ``d`` mounted read-only (as a read-only
    file system is on a cluster), or None where this process may not make mounts."""
    prefix = ["unshare", "-m", "sh", "-c",
              'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"', str(d)]
    if shutil.which("unshare") is None:
        return None
    probe = subprocess.run([*prefix, "sh", "-c", f'! touch "{d}/probe" 2>/dev/null'],
                           capture_output=True, timeout=30)
    return prefix if probe.returncode == 0 and not (d / "probe").exists() else None


def test_read_only_run_directory_is_exit_2_not_internal_error(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    run = ro / "run"
    assert evo(QUICK, "--workers", 0, "--run-dir", run, "--quiet").returncode == 0
    wrap = _read_only_wrapper(ro)
    if wrap is None:
        if os.geteuid() == 0:
            pytest.skip("cannot mount read-only here, and permissions do not bind root")
        for p in [ro, *ro.rglob("*")]:
            p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        wrap = []
    before = tree_hash(run)
    try:
        cmd = [sys.executable, "-m", "evo_engine"]
        r = subprocess.run([*wrap, *cmd, QUICK, "--workers", "0", "--run-dir", run, "--resume",
                            "--max-evals", "20"], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "QUICK_EVALS": "12"})
        assert r.returncode == 2, r.stderr
        assert f"run directory {run} is not writable" in r.stderr
        assert "internal error" not in r.stderr and "Traceback" not in r.stderr
        r = subprocess.run([*wrap, *cmd, QUICK, "--workers", "0", "--run-dir", ro / "new"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and f"run directory {ro / 'new'} cannot be created" in r.stderr
        assert "internal error" not in r.stderr and not (ro / "new").exists()
        # analyze only reads: it works on the read-only copy.
        r = subprocess.run([*wrap, *cmd, "analyze", run], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0 and "evaluations: 12/12 recorded" in r.stdout, r.stderr
    finally:
        for p in [ro, *ro.rglob("*")]:
            p.chmod(p.stat().st_mode | stat.S_IWUSR)
    assert tree_hash(run) == before


def test_worker_that_cannot_be_restarted_stops_the_run_clearly(tmp_path: Path) -> None:
    marker = tmp_path / "died"
    run = tmp_path / "run"
    r = evo(DIES, "--workers", 1, "--run-dir", run, "--quiet",
            env={"DIES_MARKER": str(marker), "DIES_BREAK": "1"})
    assert r.returncode == 2, r.stderr
    assert "could not be started again" in r.stderr and "--resume" in r.stderr
    assert "simulated" in r.stderr and "internal error" not in r.stderr
    z = zarr.open(str(run / "run.zarr"), mode="r")
    assert z.attrs["status"] == "stopped" and z.attrs["stop_reason"] == "worker_start_failed"
    r = evo(DIES, "--workers", 1, "--run-dir", run, "--quiet", "--resume",
            env={"DIES_MARKER": str(marker)})
    assert r.returncode == 0, r.stderr
    assert committed(run) == 12


def _resume(run: Path, scenario: Path = QUICK, *extra: object,
            env: dict | None = None) -> subprocess.CompletedProcess:
    return evo(scenario, "--workers", 0, "--run-dir", run, "--resume", "--max-evals", 16,
               "--quiet", *extra, env=env)


def test_resume_refuses_another_preset(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert evo(QUICK, "--workers", 0, "--run-dir", run, "--preset", "cpu").returncode == 0
    before = tree_hash(run)
    r = _resume(run, QUICK, "--preset", "full")
    assert r.returncode == 2 and "preset: the run used 'cpu', this job 'full'" in r.stderr
    assert tree_hash(run) == before
    assert _resume(run, QUICK, "--preset", "cpu").returncode == 0


def test_resume_refuses_an_edited_scenario_file_unless_forced(tmp_path: Path) -> None:
    scen = tmp_path / "quick.py"
    shutil.copy(QUICK, scen)
    run = tmp_path / "run"
    assert evo(scen, "--workers", 0, "--run-dir", run).returncode == 0
    scen.write_text(scen.read_text() + "\n# the objective changed\n")
    before = tree_hash(run)
    r = _resume(run, scen)
    assert r.returncode == 2 and f"scenario file: {scen}" in r.stderr
    assert "differs from the file the run started with" in r.stderr
    assert tree_hash(run) == before
    r = _resume(run, scen, "--force")
    assert r.returncode == 0, r.stderr
    assert committed(run) == 16
    # The inputs now recorded are the edited file's: the next resume needs no --force.
    r = evo(scen, "--workers", 0, "--run-dir", run, "--resume", "--max-evals", 18)
    assert r.returncode == 0, r.stderr


def test_resume_refuses_another_data_file(tmp_path: Path) -> None:
    data = tmp_path / "adv.hdf5"
    data.write_bytes(b"x" * 100)
    run = tmp_path / "run"
    assert evo(QUICK, "--workers", 0, "--run-dir", run, "--data-file", data).returncode == 0
    data.write_bytes(b"x" * 150)
    r = _resume(run, QUICK, "--data-file", data)
    assert r.returncode == 2 and "data file: the run used" in r.stderr and "100 bytes" in r.stderr
    assert "150 bytes" in r.stderr
    r = _resume(run, QUICK)
    assert r.returncode == 2 and "this job generated data (no --data-file)" in r.stderr


def test_runs_made_before_inputs_were_recorded_still_resume(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert evo(QUICK, "--workers", 0, "--run-dir", run).returncode == 0
    root = zarr.open_group(str(run / "run.zarr"), mode="r+")
    del root.attrs["inputs"]
    r = _resume(run)
    assert r.returncode == 0, r.stderr
    assert "did not record its inputs" in r.stderr
    assert committed(run) == 16
    assert zarr.open_group(str(run / "run.zarr"), mode="r").attrs["inputs"]["preset"] == "cpu"


def test_resume_in_an_empty_directory_says_it_starts_a_new_run(tmp_path: Path) -> None:
    """An empty directory (made ahead for a chain of jobs) was never a stopped run."""
    empty = tmp_path / "empty"
    empty.mkdir()
    r = evo(QUICK, "--workers", 0, "--run-dir", empty, "--resume", "--max-evals", 4)
    assert r.returncode == 0, r.stderr
    assert "is empty: there is no run to resume, so a new run starts there" in r.stderr
    assert "recorded nothing yet" not in r.stderr and "stopped or killed" not in r.stderr
    assert committed(empty) == 4
    leftovers = tmp_path / "leftovers"
    (leftovers / "scratch").mkdir(parents=True)
    (leftovers / "log.jsonl").write_text("")
    r = evo(QUICK, "--workers", 0, "--run-dir", leftovers, "--resume", "--max-evals", 4)
    assert r.returncode == 0, r.stderr
    assert "holds no run store, only what a start stopped or killed" in r.stderr
    assert "(log.jsonl, scratch)" in r.stderr and committed(leftovers) == 4


def test_a_bad_walltime_margin_is_refused_before_the_run_is_touched(tmp_path: Path) -> None:
    """EVO_ENGINE_WALLTIME_MARGIN is input too: a typo must not crash a resumed run (exit 1
    after the store was reopened) nor be taken silently (NaN or a negative margin would let
    SLURM kill the job at its end instead of a clean exit 3)."""
    import time

    run = tmp_path / "run"
    assert evo(QUICK, "--workers", 0, "--run-dir", run, "--quiet").returncode == 0
    before = tree_hash(run)
    for margin in ("two minutes", "nan", "-5", "inf"):
        r = evo(QUICK, "--workers", 0, "--run-dir", run, "--resume", "--max-evals", 20,
                "--quiet", env={"SLURM_JOB_END_TIME": str(time.time() + 3600),
                                "EVO_ENGINE_WALLTIME_MARGIN": margin})
        assert r.returncode == 2, (margin, r.stderr)
        assert f"EVO_ENGINE_WALLTIME_MARGIN={margin!r}" in r.stderr and "Traceback" not in r.stderr
        assert tree_hash(run) == before, margin


def test_more_workers_than_can_start_is_exit_2_and_leaves_the_run_alone(tmp_path: Path) -> None:
    """A worker count the process can never start (a typo, an extra digit) is refused before
    the run directory is touched; it was an internal error after the store was reopened."""
    run = tmp_path / "run"
    assert evo(QUICK, "--workers", 0, "--run-dir", run, "--quiet").returncode == 0
    before = tree_hash(run)
    for workers in ("99999999999999999999", "10000000"):
        r = evo(QUICK, "--workers", workers, "--run-dir", run, "--resume", "--max-evals", 20)
        assert r.returncode == 2 and f"--workers {workers}: " in r.stderr, r.stderr
        assert "ulimit -n" in r.stderr and "Traceback" not in r.stderr
        assert tree_hash(run) == before
    r = evo(QUICK, "--workers", "10000000", "--run-dir", tmp_path / "new")
    assert r.returncode == 2 and not (tmp_path / "new").exists()


def test_workers_the_system_refuses_while_starting_are_exit_2(tmp_path: Path) -> None:
    """Below the up-front bound the operating system may still refuse (the coordinator's own
    open files, a process limit): that is the same bad input, said as such."""
    import resource

    def few_files() -> None:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (48 if hard == resource.RLIM_INFINITY else min(48, hard), hard))

    r = subprocess.run([sys.executable, "-m", "evo_engine", str(QUICK), "--workers", "20",
                        "--run-dir", str(tmp_path / "r"), "--quiet"], preexec_fn=few_files,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "could not start 20 local worker processes: Too many open files" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_run_directory_inside_a_run_store_is_refused_even_with_force(tmp_path: Path) -> None:
    """`--run-dir RUN/run.zarr` (the store where the run directory was meant) with --force
    wrote a new run into the old run's store, which then read as damaged."""
    run = tmp_path / "run"
    assert evo(QUICK, "--workers", 0, "--run-dir", run, "--quiet").returncode == 0
    before = tree_hash(run)
    for inside in (run / "run.zarr", run / "run.zarr" / "evaluations", run / "run.zarr" / "new"):
        r = evo(QUICK, "--workers", 0, "--run-dir", inside, "--force", "--quiet")
        assert r.returncode == 2, r.stderr
        assert f"the run store {run / 'run.zarr'}: a run directory holds" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
        assert tree_hash(run) == before, inside
