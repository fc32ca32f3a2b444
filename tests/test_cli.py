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
    # No races, no repeats: the best is one draw, and the end of the run says so.
    assert "seed noise not measured" in r.stdout and "set intensify=3" in r.stdout
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


PHASES = REPO / "tests" / "scenarios" / "phases.py"


def test_a_batch_log_shows_every_phase_as_it_happens(tmp_path: Path) -> None:
    import json

    # stderr is a pipe here, as in a SLURM .out: the default is JSON lines.
    r = evo(PHASES, "--run-dir", "r", "--workers", 1, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    _lines_fit(r.stdout, 80)
    events = [json.loads(line) for line in r.stderr.splitlines() if line.startswith("{")]
    seen = [(e["phase"], e["state"]) if e["event"] == "phase" else ("progress", "")
            for e in events]
    want = [("prepare", "started"), ("prepare", "finished"), ("workers", "started"),
            ("workers", "finished"), ("evaluating", "started"), ("progress", ""),
            ("evaluating", "finished"), ("finalize", "started"), ("finalize", "finished")]
    # Each phase's start is printed before its end, in the order the run goes through them
    # (progress lines between the evaluations' start and end: the first result's, the last).
    once = [s for i, s in enumerate(seen) if i == 0 or s != seen[i - 1]]
    assert once == want, seen
    finalize = next(e for e in events if e.get("phase") == "finalize" and e["state"] == "finished")
    assert finalize["seconds"] >= 0.3
    log = [json.loads(line)["event"] for line in (tmp_path / "r/log.jsonl").read_text().splitlines()]
    for name in ("data_prepared", "workers_starting", "workers_ready", "worker_started",
                 "run_started", "finalize_started", "finalize_finished", "run_finished"):
        assert name in log, (name, log)
    assert log.index("finalize_started") < log.index("finalize_finished") < log.index("run_finished")
    # The summary says how long finalize took; its dozen metrics are a few lines + the CSV.
    assert "finalize (final retraining) took" in r.stdout
    assert "and 6 more in r/final_metrics.csv" in " ".join(r.stdout.split())
    header = (tmp_path / "r/final_metrics.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["uid", "fitness", "error"] and len(header) == 3 + 12
    # --quiet: no summary, no progress; --progress json brings the progress back.
    q = evo(PHASES, "--run-dir", "q", "--workers", 0, "--quiet", cwd=tmp_path)
    assert q.returncode == 0 and q.stdout == "" and "{" not in q.stderr
    j = evo(PHASES, "--run-dir", "j", "--workers", 0, "--quiet", "--progress", "json",
            cwd=tmp_path)
    assert j.returncode == 0 and j.stdout == "" and '"phase": "finalize"' in j.stderr


def _lines_fit(text: str, cols: int) -> None:
    for line in text.splitlines():
        assert len(line) <= cols, (cols, line)
        assert not line.rstrip().endswith("utilization"), line  # never split from its figure


@pytest.mark.parametrize("cols", [60, 80, 120])
def test_every_line_of_run_and_analyze_fits_the_terminal(tmp_path: Path, cols: int) -> None:
    import os

    env = {**os.environ, "COLUMNS": str(cols)}

    def run(*args: object) -> subprocess.CompletedProcess:
        r = subprocess.run([sys.executable, "-m", "evo_engine", *map(str, args)], cwd=tmp_path,
                           capture_output=True, text=True, timeout=180, env=env)
        assert r.returncode == 0, r.stderr
        return r

    long_dir = "runs/a-run-directory-with-a-rather-long-name-for-a-narrow-terminal"
    out = run(SPHERE, "--max-evals", 12, "--workers", 0, "--run-dir", long_dir).stdout
    _lines_fit(out, cols)
    flaky = run(FLAKY, "--run-dir", "f", "--seed", 1).stdout
    _lines_fit(flaky, cols)
    plots = ("--plots", "plots") if cols == 60 else ()
    text = run("analyze", "f", "--baseline", long_dir, "--csv", "all.csv", *plots).stdout
    _lines_fit(text, cols)
    # The first failure's own text, not a pointer to a column.
    flat = " ".join(text.split())
    first = flat.split("failed evaluation(s); the first (uid ")[1]
    assert any(why in first.split(" (every error")[0]
               for why in ("objective exploded", "non-finite", "out of memory")), first
    assert "baseline" in flat and "wrote 40 evaluations to all.csv" in flat
    if plots:
        assert "plots to plots:" in flat
    sphere = run("analyze", long_dir).stdout
    _lines_fit(sphere, cols)
    assert "lr" in sphere and "activation" in sphere, "the parameters are shown at every width"


def test_resume_with_a_lower_budget_warns(tmp_path: Path) -> None:
    assert evo(SPHERE, "--max-evals", 20, "--workers", 0, "--run-dir", "r",
               cwd=tmp_path).returncode == 0
    # As if the run had a budget of 100 and was stopped after 20.
    z = zarr.open(str(tmp_path / "r/run.zarr"), mode="r+")
    z.attrs.update({"max_evals": 100, "status": "stopped", "stop_reason": "signal:SIGTERM"})
    r = evo(SPHERE, "--max-evals", 30, "--workers", 0, "--run-dir", "r", "--resume",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    flat = " ".join(r.stderr.split())
    assert "--max-evals 30 lowers the run's budget from 100 to 30 evaluations" in flat
    assert "finished: 30/30" in r.stdout
    low = evo(SPHERE, "--max-evals", 10, "--workers", 0, "--run-dir", "r", "--resume",
              cwd=tmp_path)
    assert low.returncode == 2 and "below the 30 evaluations" in low.stderr
