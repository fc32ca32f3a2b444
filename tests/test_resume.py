"""Checkpoint and resume: determinism, kill -9 at random instants, signals, resume rules."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from inline_run import drive_inline

from evo_engine.scenario import load_scenario
from evo_engine.search.engine import Engine
from evo_engine.search.messages import EvalState, Result
from evo_engine.store.replay import rebuild_engine
from evo_engine.store.runstore import RunStore

REPO = Path(__file__).resolve().parent.parent
QUICK = REPO / "tests" / "scenarios" / "quick.py"


def evo_cmd(*args: object) -> list[str]:
    return [sys.executable, "-m", "evo_engine", *map(str, args)]


def log_of(run_dir: Path) -> dict[str, np.ndarray]:
    z = zarr.open(str(run_dir / "run.zarr"), mode="r")
    n = z["evaluations"].attrs["committed"]
    return {k: z[f"evaluations/{k}"][:n]
            for k in ("uid", "fitness", "state", "genome", "seed", "parents", "operator")}


def tasks_by_uid(log: dict[str, np.ndarray]) -> dict[int, tuple]:
    """uid → (genome bytes, parents, seed, operator): what the search decided for each task."""
    return {int(u): (log["genome"][i].tobytes(), tuple(log["parents"][i].tolist()),
                     int(log["seed"][i]), str(log["operator"][i]))
            for i, u in enumerate(log["uid"].tolist())}


def assert_an_uninterrupted_engine_issues_the_same_tasks(run_dir: Path, scenario) -> None:
    """Drive a fresh engine by the run's own completion schedule and compare every task.

    The schedule is what the store says happened: results in log order, and each task issued
    after ``told_before`` of them. An engine never interrupted, told the same results at the
    same points, must issue the same tasks (genome, parents, seed, operator, island); a
    resume that restarted a generator or a design re-proposes points and fails here. The
    GA's own repeats (a child equal to an earlier one) are made by this engine too.
    """
    z = zarr.open(str(run_dir / "run.zarr"), mode="r")
    ev, tk = z["evaluations"], z["tasks"]
    n, m = ev.attrs["committed"], tk.attrs["committed"]
    log = {k: ev[k][:n] for k in ("uid", "state", "fitness", "error")}
    first: dict[int, int] = {}
    for row, uid in enumerate(tk["uid"][:m].tolist()):
        first.setdefault(uid, row)
    cols = {k: tk[k][:m] for k in ("genome", "parents", "seed", "operator", "island", "told_before")}
    eng = Engine(scenario.space, scenario.engine_config())
    eng.extend_budget(len(first))
    told = 0
    for uid in sorted(first):
        row = first[uid]
        while told < int(cols["told_before"][row]):
            state = EvalState(int(log["state"][told]))
            eng.tell(Result(uid=int(log["uid"][told]), worker=0, state=state,
                            fitness=float(log["fitness"][told]) if state is EvalState.COMPLETE
                            else None, error=str(log["error"][told]) or None))
            told += 1
        t = eng.ask()
        assert t is not None and t.uid == uid
        assert np.array_equal(t.genome, cols["genome"][row]), f"uid {uid}: another genome"
        assert (list(t.parents), t.seed, t.operator, t.island) == (
            [p for p in cols["parents"][row].tolist() if p >= 0], int(cols["seed"][row]),
            str(cols["operator"][row]), int(cols["island"][row])), f"uid {uid}"


def test_stopped_and_resumed_inline_run_has_the_same_history(tmp_path: Path) -> None:
    scenario = load_scenario(QUICK)
    drive_inline(scenario, tmp_path / "whole", Engine(scenario.space, scenario.engine_config()), None)
    part = tmp_path / "part"
    eng = Engine(scenario.space, scenario.engine_config())
    assert drive_inline(scenario, part, eng, stop_after=37) == "signal:SIGTERM"
    assert len(log_of(part)["uid"]) == 37
    store = RunStore.open(part)
    resumed, _ = rebuild_engine(store, scenario.space, scenario.engine_config(), print)
    assert drive_inline(scenario, part, resumed, None) == "finished"
    a, b = log_of(tmp_path / "whole"), log_of(part)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _wait_for_rows(run_dir: Path, at_least: int, timeout: float,
                   snapshot: bool = False) -> None:
    """Until ``at_least`` rows are committed (and, with ``snapshot``, a snapshot is written:
    the snapshot thread may still be writing one when later rows are on disk)."""
    end = time.time() + timeout
    while time.time() < end:
        try:
            z = zarr.open(str(run_dir / "run.zarr"), mode="r")
            if z["evaluations"].attrs["committed"] >= at_least and (
                    not snapshot or z["snapshots"].attrs.get("latest")):
                return
        except Exception:  # noqa: BLE001 - the store may not exist yet
            pass
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_kill_minus_9_at_random_instants_loses_and_duplicates_nothing(tmp_path: Path,
                                                                     workers: int) -> None:
    """The torture test: kill the coordinator at random moments, resume, check invariants.

    Inline (``--workers 0``) results finish in issue order, so the resumed run must be the
    uninterrupted run exactly: same genome, parents, seed and operator for every uid. With
    local workers the order varies, and an uninterrupted engine driven by the run's own
    completion schedule must issue every logged task: nothing re-proposed after a crash.
    """
    run_dir = tmp_path / "run"
    # Two workers halve the run's length: slower evaluations keep room for at least 3 kills.
    # A killed job's store writer keeps every result handed over (evo_engine.store.writer_process),
    # so each job gets further: 0.03 s inline evaluations keep room for at least 3 kills.
    sleep = "0.03" if workers == 0 else "0.04"
    env = {**os.environ, "QUICK_EVALS": "150", "QUICK_SLEEP": sleep, "QUICK_CHECKPOINT": "7"}
    rng = random.Random(1234 + workers)
    budget, kills, seen_done = 150, 0, 0
    first = True
    deadline = time.time() + 150  # bounded for CI
    while time.time() < deadline:
        # Markers of evaluations a killed job finished but never recorded (within the last
        # second) go: any marker present at the next kill was written by that job.
        if (run_dir / "run.zarr").exists():
            recorded = set(log_of(run_dir)["uid"].tolist())
            for marker in (run_dir / "scratch").glob("uid-*/done"):
                if int(marker.parent.name.removeprefix("uid-")) not in recorded:
                    marker.unlink()
        args = [QUICK, "--workers", workers, "--run-dir", run_dir, "--quiet"]
        proc = subprocess.Popen(evo_cmd(*args, *([] if first else ["--resume"])), env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = False
        if kills < 8:
            _wait_for_rows(run_dir, seen_done + 1, timeout=30)
            time.sleep(rng.uniform(0.0, 0.6))
            if proc.poll() is None:
                t_kill = time.time()
                proc.send_signal(signal.SIGKILL)
                kills += 1
        out, err = proc.communicate(timeout=120)
        log = log_of(run_dir)
        uids = log["uid"].tolist()
        assert len(uids) == len(set(uids)), "a uid was recorded twice"
        assert len(uids) >= seen_done, "recorded evaluations were lost"
        assert len(uids) <= budget
        if proc.returncode == -signal.SIGKILL:
            # Durability: every evaluation that finished over a second before the kill is recorded.
            recorded = set(uids)
            for marker in (run_dir / "scratch").glob("uid-*/done"):
                done_at = float(marker.read_text())
                uid = int(marker.parent.name.removeprefix("uid-"))
                if done_at < t_kill - 1.5:
                    assert uid in recorded, f"uid {uid} finished {t_kill - done_at:.1f}s before the kill but is not in the store"
        seen_done = len(uids)
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL, (proc.returncode, err)
    assert proc.returncode == 0, "the run did not finish within the time bound"
    assert kills >= 3
    log = log_of(run_dir)
    assert len(log["uid"]) == budget and sorted(log["uid"].tolist()) == sorted(set(log["uid"].tolist()))
    z = zarr.open(str(run_dir / "run.zarr"), mode="r")
    assert z.attrs["status"] == "finished" and z.attrs["jobs"] >= 2
    assert_an_uninterrupted_engine_issues_the_same_tasks(run_dir, load_scenario(QUICK))
    if workers == 0:
        reference = tmp_path / "reference"
        r = subprocess.run(evo_cmd(QUICK, "--workers", 0, "--run-dir", reference, "--quiet"),
                           env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        ours, theirs = tasks_by_uid(log), tasks_by_uid(log_of(reference))
        # A task in flight at two of the kills is failed by the poison rule (it cannot tell an
        # innocent task from one that kills its worker), and from there the runs differ: the
        # tasks issued before it must still be the uninterrupted run's.
        errors = zarr.open(str(run_dir / "run.zarr"), mode="r")["evaluations/error"][:]
        poisoned = [int(u) for u, e in zip(log["uid"].tolist(), errors) if "in flight at" in str(e)]
        if poisoned:
            ours = {u: t for u, t in ours.items() if u < min(poisoned)}
            theirs = {u: t for u, t in theirs.items() if u < min(poisoned)}
        assert ours == theirs


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT])
def test_signal_stops_with_code_3_then_resume_completes(tmp_path: Path, sig: int) -> None:
    env = {**os.environ, "QUICK_EVALS": "40", "QUICK_SLEEP": "0.2"}
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(evo_cmd(QUICK, "--workers", 2, "--run-dir", run_dir), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_rows(run_dir, 3, timeout=60)
    t0 = time.time()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    assert time.time() - t0 < 20, "stopping took too long"
    assert "continue with --resume" in out
    z = zarr.open(str(run_dir / "run.zarr"), mode="r")
    assert z.attrs["status"] == "stopped" and z.attrs["stop_reason"].startswith("signal:")
    done_before = z["evaluations"].attrs["committed"]
    assert 0 < done_before < 40
    r = subprocess.run(evo_cmd(QUICK, "--workers", 1, "--run-dir", run_dir, "--resume"), env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    uids = log_of(run_dir)["uid"].tolist()
    assert len(uids) == 40 and len(set(uids)) == 40


def test_resume_when_nothing_had_finished(tmp_path: Path) -> None:
    env = {**os.environ, "QUICK_EVALS": "6", "QUICK_SLEEP": "2.0"}
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(evo_cmd(QUICK, "--workers", 2, "--run-dir", run_dir), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    end = time.time() + 60
    while time.time() < end and not (run_dir / "log.jsonl").exists():
        time.sleep(0.05)
    while time.time() < end and "run_started" not in (run_dir / "log.jsonl").read_text():
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 3
    assert log_of(run_dir)["uid"].size == 0
    env["QUICK_SLEEP"] = "0.01"
    r = subprocess.run(evo_cmd(QUICK, "--workers", 2, "--run-dir", run_dir, "--resume"), env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert sorted(log_of(run_dir)["uid"].tolist()) == list(range(6))


def test_resume_rules(tmp_path: Path) -> None:
    env = {**os.environ, "QUICK_EVALS": "20"}
    run_dir = tmp_path / "run"
    base = [QUICK, "--workers", 0, "--run-dir", run_dir, "--quiet"]
    assert subprocess.run(evo_cmd(*base), env=env, timeout=120).returncode == 0
    # A finished run resumes only to extend it; otherwise (a chained job) there is nothing to do.
    r = subprocess.run(evo_cmd(*base[:-1], "--resume"), env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "already finished all 20" in r.stdout
    # A changed search setting is refused with what differs, unless --force.
    bad = tmp_path / "changed.py"
    bad.write_text(QUICK.read_text().replace("population_size=4", "population_size=5"))
    r = subprocess.run(evo_cmd(bad, "--workers", 0, "--run-dir", run_dir, "--resume",
                               "--max-evals", 30), env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "population_size: run has 4, scenario has 5" in r.stderr
    assert "Traceback" not in r.stderr
    r = subprocess.run(evo_cmd(*base, "--resume", "--max-evals", 10), env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "below the 20 evaluations" in r.stderr
    # A larger budget extends the run, with a different number of workers.
    r = subprocess.run(evo_cmd(QUICK, "--workers", 2, "--run-dir", run_dir, "--resume",
                               "--max-evals", 32, "--quiet"), env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    uids = log_of(run_dir)["uid"].tolist()
    assert len(uids) == 32 and len(set(uids)) == 32
    r = subprocess.run(evo_cmd(*base, "--resume", "--run-dir", tmp_path / "nothing"), env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no run to resume" in r.stderr


def test_corrupt_latest_snapshot_falls_back_with_a_warning(tmp_path: Path) -> None:
    env = {**os.environ, "QUICK_EVALS": "30", "QUICK_SLEEP": "0.2", "QUICK_CHECKPOINT": "4"}
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(evo_cmd(QUICK, "--workers", 2, "--run-dir", run_dir), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_rows(run_dir, 10, timeout=60)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 3
    snaps = zarr.open_group(str(run_dir / "run.zarr/snapshots"), mode="r+")
    latest = snaps.attrs["latest"]
    snaps[latest][:4] = 0
    env["QUICK_SLEEP"] = "0.01"
    r = subprocess.run(evo_cmd(QUICK, "--workers", 2, "--run-dir", run_dir, "--resume"), env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "checksum" in r.stderr and "falling back" in r.stderr
    uids = log_of(run_dir)["uid"].tolist()
    assert len(uids) == 30 and len(set(uids)) == 30


def test_resume_force_with_fewer_islands_continues(tmp_path: Path) -> None:
    env = {**os.environ, "QUICK_EVALS": "24", "QUICK_SLEEP": "0.05", "QUICK_CHECKPOINT": "4"}
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(evo_cmd(QUICK, "--workers", 2, "--run-dir", run_dir, "--quiet"),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_rows(run_dir, 10, timeout=60, snapshot=True)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    one = tmp_path / "one_island.py"
    one.write_text(QUICK.read_text().replace("islands=2", "islands=1"))
    r = subprocess.run(evo_cmd(one, "--workers", 2, "--run-dir", run_dir, "--resume", "--force",
                               "--max-evals", 30, "--quiet"),
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "had 2 islands and continues with 1" in r.stderr
    log = log_of(run_dir)
    assert sorted(log["uid"].tolist()) == list(range(30))
    z = zarr.open(str(run_dir / "run.zarr"), mode="r")
    n = z["evaluations"].attrs["committed"]
    assert set(z["evaluations/island"][:n][-6:].tolist()) == {0}


def _stopped_with_tasks_in_flight(run_dir: Path, env: dict, workers: int, kill: bool) -> int:
    """A run of 40 stopped (SIGTERM) or killed (SIGKILL) with tasks in flight; its committed rows."""
    proc = subprocess.Popen(evo_cmd(QUICK, "--workers", workers, "--run-dir", run_dir, "--quiet"),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_rows(run_dir, 12, timeout=60, snapshot=True)
    proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == (-signal.SIGKILL if kill else 3)
    z = zarr.open(str(run_dir / "run.zarr"), mode="r")
    done = int(z["evaluations"].attrs["committed"])
    issued = set(z["tasks/uid"][: z["tasks"].attrs["committed"]].tolist())
    assert issued - set(z["evaluations/uid"][:done].tolist()), "no task was in flight at the stop"
    return done


@pytest.mark.slow
@pytest.mark.parametrize(("workers", "kill"), [(2, False), (0, False), (2, True)])
def test_a_resume_never_records_more_than_its_budget(tmp_path: Path, workers: int,
                                                     kill: bool) -> None:
    """Tasks in flight at the stop are re-issued only within the new budget: at N = committed
    none, at committed + 1 one. Those beyond it stay queued (never run, never recorded), so
    extending the run later issues them first and it ends as the uninterrupted run would."""
    import shutil

    env = {**os.environ, "QUICK_EVALS": "40", "QUICK_SLEEP": "0.1", "QUICK_CHECKPOINT": "4"}
    first = tmp_path / "first"
    done = _stopped_with_tasks_in_flight(first, env, workers, kill)
    env["QUICK_SLEEP"] = "0.01"
    for extra in (0, 1):
        run_dir = tmp_path / f"plus{extra}"
        shutil.copytree(first, run_dir)
        budget = done + extra
        r = subprocess.run(evo_cmd(QUICK, "--workers", workers, "--run-dir", run_dir, "--resume",
                                   "--max-evals", budget), env=env, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert f"finished: {budget}/{budget} evaluations" in r.stdout, r.stdout
        z = zarr.open(str(run_dir / "run.zarr"), mode="r")
        assert z["evaluations"].attrs["committed"] == budget
        assert z["evaluations/uid"].shape[0] == budget
        assert z.attrs["status"] == "finished" and z.attrs["max_evals"] == budget
        # Extended to the first run's budget: nothing was dropped, no uid is missing.
        r = subprocess.run(evo_cmd(QUICK, "--workers", workers, "--run-dir", run_dir, "--resume",
                                   "--max-evals", 40, "--quiet"), env=env, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert sorted(log_of(run_dir)["uid"].tolist()) == list(range(40))
        assert_an_uninterrupted_engine_issues_the_same_tasks(run_dir, load_scenario(QUICK))


def test_a_corrupt_only_snapshot_replays_the_whole_log_and_says_so(tmp_path: Path) -> None:
    env = {**os.environ, "QUICK_EVALS": "30", "QUICK_SLEEP": "0.1", "QUICK_CHECKPOINT": "1000"}
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(evo_cmd(QUICK, "--workers", 2, "--run-dir", run_dir), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_rows(run_dir, 8, timeout=60)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 3
    snaps = zarr.open_group(str(run_dir / "run.zarr/snapshots"), mode="r+")
    assert snaps.attrs["serial"] == 1 and not snaps.attrs.get("previous"), "not the only one"
    snaps[snaps.attrs["latest"]][:4] = 0
    env["QUICK_SLEEP"] = "0.01"
    r = subprocess.run(evo_cmd(QUICK, "--workers", 2, "--run-dir", run_dir, "--resume"), env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "checksum" in r.stderr and "falling back to the previous" not in r.stderr
    assert "no earlier snapshot to fall back to, so the run is rebuilt by replaying its " \
           "whole log" in r.stderr
    assert sorted(log_of(run_dir)["uid"].tolist()) == list(range(30))


def test_resuming_another_scenarios_run_names_that_scenario(tmp_path: Path) -> None:
    env = {**os.environ, "QUICK_EVALS": "8"}
    run_dir = tmp_path / "run"
    r = subprocess.run(evo_cmd(QUICK, "--workers", 0, "--run-dir", run_dir, "--quiet"), env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    sphere = REPO / "scenarios" / "sphere.py"
    before = (run_dir / "run.zarr/zarr.json").read_bytes()
    r = subprocess.run(evo_cmd(sphere, "--workers", 0, "--run-dir", run_dir, "--resume",
                               "--max-evals", 20), env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2, r.stderr
    assert f"holds a run of scenario 'quick' (made with {QUICK})" in r.stderr, r.stderr
    assert "not of 'sphere'" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr) < 600, f"{len(r.stderr)} characters: {r.stderr}"
    assert (run_dir / "run.zarr/zarr.json").read_bytes() == before
