"""Probes of crashes, stops, damage and scale against the current code (issue 30's probe table).

Each probe runs the command line the way a user or a scheduler would (``kill -9`` of the
whole job's process group, of the coordinator alone, SIGTERM/SIGINT/SIGUSR1 at chosen
instants, a hanging objective, a damaged store, two jobs on one directory, ``analyze``
while a run writes) on cheap scenarios, and checks the outcome automatically:

* every resumed run ends with exactly its budget of evaluations, no uid twice, nothing that
  was recorded lost, and the summary never says more finished than the budget;
* its task list (uid, genome, seed, island, operator) is the one an uninterrupted engine of
  the same seed issues: compared row for row with an uninterrupted run where the order of
  results is deterministic (inline), and otherwise with a fresh engine driven by the run's
  own completion schedule (local workers, MPI: two uninterrupted runs differ there too);
* a refused command exits 2 with a one-paragraph message, no traceback, and leaves every
  byte of the run directory as it was (hashed before and after).

A benchmark, not a test: it prints one row per probe on stderr as it goes and a final JSON
line on stdout; ``--markdown FILE`` also writes the table. Run it niced on a shared machine:

    nice -n 10 python benchmarks/probes.py --markdown /tmp/probes.md
    nice -n 10 python benchmarks/probes.py --only kill,damage      # a subset
    nice -n 10 python benchmarks/probes.py --only scale --scale 1000000
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import code_version  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
MPIEXEC = Path(PY).parent / "mpiexec"
QUICK = REPO / "tests" / "scenarios" / "quick.py"
BATCHED = REPO / "tests" / "scenarios" / "batched.py"
SLOW_FINALIZE = REPO / "tests" / "scenarios" / "slow_finalize.py"
SPHERE = REPO / "scenarios" / "sphere.py"
TRIVIAL = REPO / "benchmarks" / "scenarios" / "trivial.py"

ROWS: list[dict] = []
WORK = Path()


# ---------------------------------------------------------------------------------------- jobs

def env_for(**knobs: object) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}".rstrip(os.pathsep)
    env["PATH"] = f"{MPIEXEC.parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update({k: str(v) for k, v in knobs.items()})
    return env


def argv(scenario: Path, *args: object, ranks: int | None = None) -> list[str]:
    cmd = [PY, "-m", "evo_engine", str(scenario), *map(str, args), "--progress", "none"]
    return [str(MPIEXEC), "-n", str(ranks), *cmd] if ranks else cmd


def shown(cmd: list[str], knobs: dict) -> str:
    """The command as a reader would type it (paths relative, the interpreter as python)."""
    words = []
    for w in cmd:
        w = w.replace(str(WORK) + "/", "").replace(str(REPO) + "/", "")
        words.append("python" if w == PY else ("mpiexec" if w == str(MPIEXEC) else w))
    env = " ".join(f"{k}={v}" for k, v in knobs.items())
    return (env + " " if env else "") + " ".join(words)


class Job:
    """One command in its own session (so a kill reaches mpiexec and every rank), output to
    files (a coordinator killed alone leaves workers holding pipes open)."""

    n = 0

    def __init__(self, cmd: list[str], knobs: dict) -> None:
        Job.n += 1
        self.out = WORK / "logs" / f"job{Job.n:03d}.out"
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.cmd, self.t0 = cmd, time.time()
        with open(self.out, "w") as fh:
            self.proc = subprocess.Popen(cmd, env=env_for(**knobs), stdout=fh,
                                         stderr=subprocess.STDOUT, text=True,
                                         start_new_session=True)
        self.t_end: float | None = None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill_group(self, sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)

    def wait(self, timeout: float = 300) -> int:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_group()
            rc = self.proc.wait()
            self.text_note = f"did not end within {timeout:g} s (killed)"
            rc = 999
        self.t_end = time.time()
        # Whatever of the job's session survives its leader (an orphaned worker or writer)
        # is given a moment, then killed: a probe never leaves processes behind.
        for _ in range(50):
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            self.kill_group()
        return rc

    @property
    def text(self) -> str:
        return self.out.read_text(errors="replace")


def run(cmd: list[str], knobs: dict, timeout: float = 300) -> tuple[int, str, float]:
    job = Job(cmd, knobs)
    rc = job.wait(timeout)
    return rc, job.text, time.time() - job.t0


# ------------------------------------------------------------------------------ store checks

def committed(run_dir: Path) -> np.ndarray | None:
    try:
        z = zarr.open_group(str(run_dir / "run.zarr"), mode="r")
        n = int(z["evaluations"].attrs["committed"])
        return np.asarray(z["evaluations/uid"][:n])
    except Exception:  # noqa: BLE001 - not there yet, or being created
        return None


def wait_rows(run_dir: Path, at_least: int, job: Job, timeout: float = 90) -> bool:
    end = time.time() + timeout
    while time.time() < end and job.alive():
        uids = committed(run_dir)
        if uids is not None and len(uids) >= at_least:
            return True
        time.sleep(0.05)
    return False


def task_list(run_dir: Path) -> dict[int, tuple]:
    """uid -> (genome bytes, seed, island, operator) of the first logged row of each task."""
    z = zarr.open_group(str(run_dir / "run.zarr"), mode="r")
    tk = z["tasks"]
    m = int(tk.attrs["committed"])
    cols = {k: np.asarray(tk[k][:m]) for k in ("uid", "genome", "seed", "island", "operator")}
    out: dict[int, tuple] = {}
    for i, u in enumerate(cols["uid"].tolist()):
        out.setdefault(int(u), (cols["genome"][i].tobytes(), int(cols["seed"][i]),
                                int(cols["island"][i]), str(cols["operator"][i])))
    return out


def errors_of(run_dir: Path) -> dict[int, str]:
    z = zarr.open_group(str(run_dir / "run.zarr"), mode="r")
    n = int(z["evaluations"].attrs["committed"])
    return {int(u): str(e) for u, e in zip(z["evaluations/uid"][:n].tolist(),
                                           z["evaluations/error"][:n].tolist())}


@contextlib.contextmanager
def environment(knobs: dict):
    old = {k: os.environ.get(k) for k in knobs}
    os.environ.update({k: str(v) for k, v in knobs.items()})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def schedule_check(run_dir: Path, scenario: Path, knobs: dict, seed: int | None = None) -> str:
    """'' when a fresh engine of the same seed, told the run's results at the points the
    store says, issues every logged task (genome, seed, operator, island, parents); else why
    not. The way to compare runs whose results arrive in a nondeterministic order."""
    from evo_engine.scenario import load_scenario
    from evo_engine.search.engine import Engine
    from evo_engine.search.messages import EvalState, Result

    with environment(knobs):
        sc = load_scenario(scenario)
    if seed is not None:
        sc = sc.model_copy(update={"seed": seed})
    z = zarr.open_group(str(run_dir / "run.zarr"), mode="r")
    ev, tk = z["evaluations"], z["tasks"]
    n, m = int(ev.attrs["committed"]), int(tk.attrs["committed"])
    log = {k: np.asarray(ev[k][:n]) for k in ("uid", "state", "fitness", "error")}
    first: dict[int, int] = {}
    for r, uid in enumerate(np.asarray(tk["uid"][:m]).tolist()):
        first.setdefault(int(uid), r)
    cols = {k: np.asarray(tk[k][:m])
            for k in ("genome", "parents", "seed", "operator", "island", "told_before")}
    eng = Engine(sc.space, sc.engine_config())
    eng.extend_budget(len(first))
    told = 0
    for uid in sorted(first):
        r = first[uid]
        while told < int(cols["told_before"][r]):
            state = EvalState(int(log["state"][told]))
            eng.tell(Result(uid=int(log["uid"][told]), worker=0, state=state,
                            fitness=float(log["fitness"][told])
                            if state is EvalState.COMPLETE else None,
                            error=str(log["error"][told]) or None))
            told += 1
        t = eng.ask()
        if t is None or t.uid != uid:
            return f"uid {uid}: the engine issued {None if t is None else t.uid}"
        if not np.array_equal(t.genome, cols["genome"][r]):
            return f"uid {uid}: another genome"
        if (list(t.parents), t.seed, t.operator, t.island) != (
                [p for p in cols["parents"][r].tolist() if p >= 0], int(cols["seed"][r]),
                str(cols["operator"][r]), int(cols["island"][r])):
            return f"uid {uid}: other parents/seed/operator/island"
    return ""


def finished_claims(text: str) -> list[tuple[int, int]]:
    return [(int(a), int(b)) for a, b in re.findall(r"finished: (\d+)/(\d+)", text)]


def final_problems(run_dir: Path, budget: int, text: str) -> list[str]:
    """What is wrong with a run that should now be finished with ``budget`` evaluations."""
    bad = []
    uids = committed(run_dir)
    if uids is None:
        return ["no readable store"]
    z = zarr.open_group(str(run_dir / "run.zarr"), mode="r")
    if z.attrs.get("status") != "finished":
        bad.append(f"status {z.attrs.get('status')!r}")
    if len(set(uids.tolist())) != len(uids):
        bad.append("a uid recorded twice")
    if len(uids) != budget:
        bad.append(f"{len(uids)} evaluations for a budget of {budget}")
    for a, b in finished_claims(text):
        if a > b:
            bad.append(f"summary says finished: {a}/{b}")
    if "Traceback" in text:
        bad.append("a traceback")
    return bad


def tree_hash(path: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        h.update(str(p.relative_to(path)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def one_paragraph(text: str) -> bool:
    """A refusal's message: some text, no traceback, one paragraph (no blank line inside)."""
    body = text.strip()
    return bool(body) and "Traceback" not in body and "\n\n" not in body


def row(probe: str, command: str, observed: str, ok: bool | None) -> None:
    verdict = "pass" if ok else ("FAIL" if ok is False else "measured")
    ROWS.append({"probe": probe, "command": command, "observed": observed, "verdict": verdict})
    print(f"[{verdict}] {probe}: {observed}\n    $ {command}", file=sys.stderr, flush=True)


def checked_row(probe: str, command: str, notes: list[str], problems: list[str],
                passed: str | None = None) -> None:
    """A row whose observation is its notes, then its problems (FAIL) or ``passed`` (pass)."""
    tail = ["PROBLEMS: " + "; ".join(problems)] if problems else ([passed] if passed else [])
    row(probe, command, "; ".join(notes + tail), not problems)


def first_line(text: str, limit: int = 160) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:limit]
    return ""


# ------------------------------------------------------------------------------------ probes

def kill_series(name: str, scenario: Path, knobs: dict, args: list, budget: int, kills: int,
                seed: int, ranks: int | None = None, reference: bool = False,
                check_seed: int | None = None) -> None:
    """``kills`` kill -9s of the whole job at random instants, each followed by --resume;
    about a third are double kills (the resumed job killed again during its start or
    replay, before it records anything new)."""
    run_dir = WORK / name
    rng = random.Random(seed)
    base = [*args, "--run-dir", run_dir]
    done, landed, double, problems, jobs, early = 0, 0, 0, [], 0, False
    t_start, text = time.time(), ""
    while jobs < kills * 3 + 6:
        resume = ["--resume"] if (run_dir / "run.zarr").exists() else []
        job = Job(argv(scenario, *base, *resume, ranks=ranks), knobs)
        jobs += 1
        if landed < kills:
            if early:
                time.sleep(rng.uniform(0.05, 2.0))
            else:
                wait_rows(run_dir, done + 1, job)
                time.sleep(rng.uniform(0.0, 1.0))
            if job.alive():
                job.kill_group()
                landed += 1
                double += early
                early = not early and rng.random() < 0.45
        rc = job.wait()
        text = job.text
        uids = committed(run_dir)
        now = 0 if uids is None else len(uids)
        if uids is not None and len(set(uids.tolist())) != now:
            problems.append(f"job {jobs}: a uid recorded twice")
        if now < done:
            problems.append(f"job {jobs}: {done - now} recorded evaluations lost")
        if now > budget:
            problems.append(f"job {jobs}: {now} recorded for a budget of {budget}")
        done = max(done, now)
        if rc == 0:
            break
        if rc != -signal.SIGKILL and not (ranks and rc in (137, 9)):
            problems.append(f"job {jobs}: exit {rc}: {first_line(text)}")
            break
    problems += final_problems(run_dir, budget, text)
    errors = errors_of(run_dir) if committed(run_dir) is not None else {}
    poisoned = sorted(u for u, e in errors.items() if "in flight at" in e)
    if not problems:
        why = schedule_check(run_dir, scenario, knobs, check_seed)
        if why:
            problems.append(f"task list differs from an uninterrupted engine's: {why}")
    compared = "schedule-replayed engine"
    if reference and not problems:
        ref = WORK / f"{name}-reference"
        rc, rtext, _ = run(argv(scenario, *args, "--run-dir", ref, ranks=ranks), knobs)
        ours, theirs = task_list(run_dir), task_list(ref)
        cut = min(poisoned) if poisoned else None
        if cut is not None:  # from a poisoned task on the runs rightly differ
            ours = {u: t for u, t in ours.items() if u <= cut}
            theirs = {u: t for u, t in theirs.items() if u <= cut}
        diff = [u for u in sorted(set(ours) | set(theirs)) if ours.get(u) != theirs.get(u)]
        compared = f"uninterrupted run ({len(theirs)} tasks compared)"
        if rc != 0 or diff:
            problems.append(f"differs from the uninterrupted run at uids {diff[:5]}")
    observed = (f"{landed} kill -9 ({double} double) over {jobs} jobs in "
                f"{time.time() - t_start:.0f} s; final exit {rc if landed else '?'}; "
                f"{done}/{budget} recorded, no uid twice; poisoned (in flight at 2 crashes): "
                f"{poisoned or 'none'}; task list = {compared}")
    if problems:
        observed += "; PROBLEMS: " + "; ".join(problems)
    cmd = shown(argv(scenario, *base, "[--resume]", ranks=ranks), knobs)
    row(f"kill -9 of the job x{landed}: {name}", f"{cmd}; os.killpg(SIGKILL) at random", observed,
        not problems and landed >= kills)


def probe_kills(quick: bool) -> None:
    # Long enough that every planned kill lands before the run finishes (60 evaluations ended
    # before the third kill on an idle machine: 2 of 5 landed, a FAIL of the probe, not of the
    # code); quick.py's space holds 120 configurations.
    evals = 100
    q = {"QUICK_EVALS": evals, "QUICK_SLEEP": 0.05, "QUICK_CHECKPOINT": 7}
    n = 2 if quick else 1
    kill_series("kill-ga-inline", QUICK, q, ["--workers", 0], evals, 5 // n, 11,
                reference=True)
    kill_series("kill-es-inline", QUICK, {**q, "QUICK_OPERATOR": "es"}, ["--workers", 0], evals,
                4 // n, 12, reference=True)
    kill_series("kill-ga-local2", QUICK, {**q, "QUICK_SLEEP": 0.05}, ["--workers", 2], evals,
                4 // n, 13)
    kill_series("kill-sphere-local2", SPHERE, {},
                ["--workers", 2, "--max-evals", evals, "--seed", 4], evals, 3 // n, 14,
                check_seed=4)
    if MPIEXEC.exists():
        kill_series("kill-ga-mpi4", QUICK, {**q, "QUICK_SLEEP": 0.1}, [], evals, 5 // n, 15,
                    ranks=4)


def probe_coordinator_kill() -> None:
    """kill -9 of the coordinator alone (its workers and store writer live on), then at once
    --resume: the new job waits for the old writer's lock or refuses cleanly, never both write."""
    knobs = {"QUICK_EVALS": 60, "QUICK_SLEEP": 0.05, "QUICK_CHECKPOINT": 7}
    run_dir = WORK / "coordinator-kill"
    base = ["--workers", 2, "--run-dir", run_dir]
    job = Job(argv(QUICK, *base), knobs)
    wait_rows(run_dir, 10, job)
    time.sleep(0.3)
    os.kill(job.proc.pid, signal.SIGKILL)
    before = len(committed(run_dir))
    h0 = tree_hash(run_dir)
    rc, text, wall = run(argv(QUICK, *base, "--resume"), knobs)
    notes = [f"killed at {before} recorded; --resume at once: exit {rc} after {wall:.1f} s"]
    problems = []
    if rc == 2:
        notes.append(f"refused: {first_line(text)}")
        if not one_paragraph(text):
            problems.append("refusal not one clear paragraph")
        job.wait(60)  # the orphans end, then resume again
        rc, text, _ = run(argv(QUICK, *base, "--resume"), knobs)
        notes.append(f"second --resume: exit {rc}")
    else:
        job.wait(60)
    del h0
    problems += final_problems(run_dir, 60, text)
    if not problems:
        why = schedule_check(run_dir, QUICK, knobs)
        if why:
            problems.append(f"task list: {why}")
    checked_row("kill -9 of the coordinator alone, then --resume at once",
                shown(argv(QUICK, *base), knobs) + "; kill -9 PID; same + --resume", notes,
                problems, "60/60, no uid twice, task list = schedule-replayed engine")


def stop_probe(label: str, sig: int, at: float | None, ranks: int | None, group: bool,
               workers: int = 2) -> None:
    """``sig`` ``at`` seconds after the start (to the process, or its group as a terminal's
    Ctrl-C does; to mpiexec under MPI): exit 3 and status stopped (or, for a signal before
    Python reached evo_engine, killed with nothing written), then --resume finishes."""
    knobs = {"QUICK_EVALS": 40, "QUICK_SLEEP": 0.05, "QUICK_CHECKPOINT": 7}
    run_dir = WORK / label
    base = ([] if ranks else ["--workers", workers]) + ["--run-dir", run_dir]
    job = Job(argv(QUICK, *base, ranks=ranks), knobs)
    time.sleep(max(0.0, at - (time.time() - job.t0)))
    t_sig = time.time()
    (job.kill_group if group else job.signal)(sig)
    rc = job.wait(120)
    took = job.t_end - t_sig
    text = job.text
    rows = committed(run_dir)
    problems, notes = [], [f"exit {rc} {took:.1f} s after the signal"]
    status = None
    if rows is not None:
        status = zarr.open_group(str(run_dir / "run.zarr"), mode="r").attrs.get("status")
        notes.append(f"status {status}, {len(rows)} recorded")
    if rc == 3:
        if status not in ("stopped", None):
            problems.append(f"status {status!r} after exit 3")
        if "Traceback" in text:
            problems.append("a traceback")
    elif rc == -sig and not run_dir.exists():
        notes.append("killed before evo_engine started; nothing written")
    elif ranks and rc in (128 + sig,) and not run_dir.exists():
        notes.append("mpiexec ended before evo_engine started; nothing written")
    else:
        problems.append(f"exit {rc}: {first_line(text)}")
    if took > 15:
        problems.append(f"took {took:.0f} s to stop")
    resume = ["--resume"] if (run_dir / "run.zarr").exists() else []
    rc2, text2, _ = run(argv(QUICK, *base, *resume, ranks=ranks), knobs)
    notes.append(f"then {'--resume' if resume else 'a plain start'}: exit {rc2}")
    problems += ([f"resume exit {rc2}: {first_line(text2)}"] if rc2 != 0
                 else final_problems(run_dir, 40, text2))
    if not problems:
        why = schedule_check(run_dir, QUICK, knobs)
        if why:
            problems.append(f"task list: {why}")
        else:
            notes.append("40/40, task list = schedule-replayed engine")
    where = "mpiexec" if ranks else ("the process group" if group else "the coordinator")
    checked_row(f"{signal.Signals(sig).name} at {at:.2f} s to {where}" + (" (MPI -n 4)" if ranks else
                                                                  f" (--workers {workers})"),
        shown(argv(QUICK, *base, ranks=ranks), knobs) + f"; kill -{signal.Signals(sig).name[3:]}"
        f" after {at:.2f} s; then --resume",
        notes, problems)


def probe_signals(quick: bool) -> None:
    rng = random.Random(30)
    cases = [(signal.SIGTERM, 0.05, None, False), (signal.SIGUSR1, rng.uniform(0.3, 2), None, False),
             (signal.SIGINT, rng.uniform(0.3, 2), None, True), (signal.SIGTERM, 2.0, None, False)]
    if not quick:
        cases += [(signal.SIGINT, 0.05, None, True), (signal.SIGUSR1, 1.0, None, False)]
    if MPIEXEC.exists():
        cases += [(signal.SIGTERM, rng.uniform(0.5, 2), 4, False),
                  (signal.SIGUSR1, 2.0, 4, False), (signal.SIGINT, 0.05, 4, False)]
    for i, (sig, at, ranks, group) in enumerate(cases):
        stop_probe(f"signal-{i}", sig, at, ranks, group)
    for label, sig, ranks, workers in (("finalize-local", signal.SIGTERM, None, 2),
                                       ("finalize-inline", signal.SIGINT, None, 0),
                                       ("finalize-mpi", signal.SIGUSR1, 3, 0)):
        if ranks and not MPIEXEC.exists():
            continue
        finalize_probe(label, sig, ranks, workers)


def finalize_probe(label: str, sig: int, ranks: int | None, workers: int) -> None:
    run_dir = WORK / label
    mark = WORK / f"{label}.mark"
    knobs = {"FINALIZE_MARK": mark, "FINALIZE_SLEEP": 120}
    base = ([] if ranks else ["--workers", workers]) + ["--run-dir", run_dir]
    job = Job(argv(SLOW_FINALIZE, *base, ranks=ranks), knobs)
    end = time.time() + 120
    while time.time() < end and job.alive() and not mark.exists():
        time.sleep(0.05)
    time.sleep(0.5)
    t_sig = time.time()
    job.signal(sig)
    rc = job.wait(150)
    took = job.t_end - t_sig
    status = zarr.open_group(str(run_dir / "run.zarr"), mode="r").attrs.get("status")
    notes = [f"signal {took:.1f} s into... exit {rc} {took:.1f} s after it, status {status}"]
    problems = []
    if rc != 3 or status != "stopped":
        problems.append(f"exit {rc}, status {status!r}: {first_line(job.text)}")
    if took > 15:
        problems.append(f"took {took:.0f} s to stop")
    rc2, text2, wall2 = run(argv(SLOW_FINALIZE, *base, "--resume", ranks=ranks),
                            {**knobs, "FINALIZE_SLEEP": 0})
    z = zarr.open_group(str(run_dir / "run.zarr"), mode="r")
    starts = mark.read_text().count("started") if mark.exists() else 0
    notes.append(f"--resume: exit {rc2} in {wall2:.1f} s, status {z.attrs.get('status')}, "
                 f"finalize started {starts}x")
    if rc2 != 0 or z.attrs.get("status") != "finished":
        problems.append(f"resume: {first_line(text2)}")
    problems += [p for p in final_problems(run_dir, 8, text2) if "status" not in p]
    notes[0] = f"{signal.Signals(sig).name} during finalize: exit {rc} {took:.1f} s later, status {status}"
    checked_row(f"{signal.Signals(sig).name} during finalize" + (f" (MPI -n {ranks})" if ranks else
                                                        f" (--workers {workers})"),
        shown(argv(SLOW_FINALIZE, *base, ranks=ranks), knobs) + "; signal once finalize started;"
        " then --resume with FINALIZE_SLEEP=0",
        notes, problems)


def probe_hang() -> None:
    knobs = {"BATCHED_EVALS": 10, "BATCHED_HANG_UID": 3, "BATCHED_TIMEOUT": 1.5}
    for label, ranks, workers in (("hang-inline", None, 0), ("hang-local", None, 2),
                                  ("hang-mpi", 3, None)):
        if ranks and not MPIEXEC.exists():
            continue
        run_dir = WORK / label
        base = (["--workers", workers] if workers is not None else []) + [
            "--batch", 1, "--run-dir", run_dir]
        rc, text, wall = run(argv(BATCHED, *base, ranks=ranks), knobs, timeout=180)
        notes, problems = [f"exit {rc} in {wall:.1f} s"], []
        if ranks and rc == 3:  # a hung rank cannot be interrupted: the job ends, resumable
            rc, text, wall2 = run(argv(BATCHED, *base, "--resume", ranks=ranks), knobs, 180)
            notes.append(f"--resume: exit {rc} in {wall2:.1f} s")
        if rc != 0:
            problems.append(f"exit {rc}: {first_line(text)}")
        else:
            problems += final_problems(run_dir, 10, text)
            errs = errors_of(run_dir)
            timed = sorted(u for u, e in errs.items() if e.startswith("timed out"))
            notes.append(f"timed out: uids {timed}; {len(errs)}/10 recorded")
            if 3 not in timed:
                problems.append("uid 3 not marked timed out")
        checked_row(f"hanging objective, eval_timeout_s=1.5 ({label.split('-')[1]})",
            shown(argv(BATCHED, *base, ranks=ranks), knobs),
            notes, problems)


def _chunk(store: Path, table: str, column: str) -> Path:
    return next(p for p in sorted((store / table / column / "c").rglob("*")) if p.is_file())


def damages() -> dict[str, callable]:
    def truncate(d: Path) -> str:
        p = _chunk(d / "run.zarr", "evaluations", "fitness")
        data = p.read_bytes()
        p.write_bytes(data[: len(data) // 2])
        return "evaluations/fitness chunk cut to half"

    def delete_chunk(d: Path) -> str:
        _chunk(d / "run.zarr", "evaluations", "state").unlink()
        return "evaluations/state chunk deleted"

    def delete_task_chunk(d: Path) -> str:
        _chunk(d / "run.zarr", "tasks", "genome").unlink()
        return "tasks/genome chunk deleted"

    def delete_committed(d: Path) -> str:
        meta = d / "run.zarr" / "evaluations" / "zarr.json"
        doc = json.loads(meta.read_text())
        doc["attributes"].pop("committed")
        meta.write_text(json.dumps(doc, indent=2))
        return "evaluations' committed attribute removed"

    def garbage_snapshot(d: Path) -> str:
        snaps = d / "run.zarr" / "snapshots"
        latest = json.loads((snaps / "zarr.json").read_text())["attributes"]["latest"]
        for p in (snaps / latest / "c").rglob("*"):
            if p.is_file():
                p.write_bytes(os.urandom(p.stat().st_size))
        return f"snapshot {latest} overwritten with random bytes"

    def garbage_snapshots(d: Path) -> str:
        for p in (d / "run.zarr" / "snapshots").glob("s*/c/**/*"):
            if p.is_file():
                p.write_bytes(os.urandom(p.stat().st_size))
        return "every snapshot overwritten with random bytes"

    def delete_array_meta(d: Path) -> str:
        (d / "run.zarr" / "evaluations" / "fitness" / "zarr.json").unlink()
        return "evaluations/fitness/zarr.json deleted"

    def delete_root_meta(d: Path) -> str:
        (d / "run.zarr" / "zarr.json").unlink()
        return "run.zarr/zarr.json deleted"

    return {"truncated chunk": truncate, "deleted chunk": delete_chunk,
            "deleted task chunk": delete_task_chunk, "deleted committed": delete_committed,
            "garbage latest snapshot": garbage_snapshot, "garbage snapshots": garbage_snapshots,
            "deleted array zarr.json": delete_array_meta, "deleted root zarr.json": delete_root_meta}


def probe_damage() -> None:
    """A finished run of 30, damaged, then: --resume, a plain start, analyze.
    A refusal must exit 2 with a clear paragraph and change no byte; an accepted --resume must
    end with a whole, consistent run."""
    knobs = {"QUICK_EVALS": 40, "QUICK_SLEEP": 0.002, "QUICK_CHECKPOINT": 7}
    base_dir = WORK / "damage-base"
    rc, text, _ = run(argv(QUICK, "--workers", 0, "--run-dir", base_dir, "--max-evals", 30),
                      knobs)
    if rc != 0:
        row("damage: base run", "", f"exit {rc}: {first_line(text)}", False)
        return
    for label, damage in damages().items():
        d = WORK / ("damage-" + label.replace(" ", "-"))
        shutil.copytree(base_dir, d)
        what = damage(d)
        notes, problems = [what], []
        for name, extra in (("--resume --max-evals 40", ["--resume", "--max-evals", 40]),
                            ("plain start", []), ("analyze", None)):
            h0 = tree_hash(d)
            if extra is None:
                cmd = [PY, "-m", "evo_engine", "analyze", str(d)]
            else:
                cmd = argv(QUICK, "--workers", 0, "--run-dir", d, *extra)
            rc, text, _ = run(cmd, knobs)
            same = tree_hash(d) == h0
            msg = first_line(text, 110)
            if rc == 2:
                notes.append(f"{name}: exit 2, {'unchanged' if same else 'CHANGED'}: {msg}")
                if not same:
                    problems.append(f"{name} refused but changed the directory")
                # analyze shows what is intact, then says what is damaged (its last line).
                clear = (one_paragraph(text) if name != "analyze" else
                         "Traceback" not in text and "damaged" in text.strip().splitlines()[-1])
                if not clear:
                    problems.append(f"{name}: refusal not one clear paragraph")
            elif rc == 0 and name == "analyze":
                warned = "damaged" in text
                notes.append(f"analyze: exit 0, {'unchanged' if same else 'CHANGED'}"
                             f"{', says damaged' if warned else ''}")
                if not same:
                    problems.append("analyze changed the directory")
            elif rc == 0 and name.startswith("--resume"):
                bad = final_problems(d, 40, text)
                if not bad:
                    why = schedule_check(d, QUICK, knobs)
                    bad = [f"task list: {why}"] if why else []
                notes.append(f"{name}: exit 0, continued ({bad or '40/40 consistent'})")
                problems += bad
            else:
                notes.append(f"{name}: exit {rc}: {msg}")
                problems.append(f"{name}: exit {rc}")
        checked_row(f"damage: {label}", "cp base; damage; python -m evo_engine quick.py --run-dir D "
            "--resume --max-evals 40 | (plain start) | analyze D; sha256 of D before/after",
            notes, problems)


def probe_two_runs() -> None:
    # Slow evaluations, so the first job is still running when each second one has ended
    # (a start-up takes 20 s on a loaded machine); checked, not assumed.
    knobs = {"QUICK_EVALS": 40, "QUICK_SLEEP": 2.5}
    run_dir = WORK / "two-runs"
    base = ["--workers", 2, "--run-dir", run_dir]
    job = Job(argv(QUICK, *base), knobs)
    wait_rows(run_dir, 1, job)
    notes, problems = [], []
    for extra in ([], ["--resume"], ["--force"]):
        rc, text, _ = run(argv(QUICK, *base, *extra), knobs)
        alive = job.alive()
        notes.append(f"second job {' '.join(extra) or 'plain'}: exit {rc}: {first_line(text, 90)}"
                     + ("" if alive else " (the first job had ended: not a probe)"))
        if alive and (rc != 2 or not one_paragraph(text)):
            problems.append(f"second job {' '.join(extra) or 'plain'}: exit {rc}")
    rc = job.wait(400)
    text = job.text
    notes.append(f"first job: exit {rc}")
    problems += [f"first job exit {rc}"] if rc != 0 else final_problems(run_dir, 40, text)
    checked_row("two runs on one directory", shown(argv(QUICK, *base), knobs) +
        "; while it runs: the same, then + --resume, then + --force",
        notes, problems)


def probe_analyze_while_writing() -> None:
    knobs = {"QUICK_EVALS": 80, "QUICK_SLEEP": 0.05}
    run_dir = WORK / "analyze-live"
    base = ["--workers", 2, "--run-dir", run_dir]
    job = Job(argv(QUICK, *base), knobs)
    wait_rows(run_dir, 1, job)
    codes, problems = [], []
    while job.alive() and len(codes) < 6:
        rc, text, _ = run([PY, "-m", "evo_engine", "analyze", str(run_dir), "--csv",
                           str(WORK / "live.csv")], {})
        codes.append(rc)
        if rc not in (0, 2) or "Traceback" in text:
            problems.append(f"analyze exit {rc}: {first_line(text)}")
    rc = job.wait(300)
    problems += [f"run exit {rc}"] if rc != 0 else final_problems(run_dir, 80, job.text)
    row("analyze while a run writes", shown(argv(QUICK, *base), knobs) +
        "; python -m evo_engine analyze DIR --csv F repeatedly",
        f"analyze exits {codes}; run exit {rc}" +
        ("; PROBLEMS: " + "; ".join(problems) if problems else ""), not problems and codes)


def probe_budget() -> None:
    """Stops with tasks in flight, then a resume with the budget lowered to just above what is
    recorded, or kept: the count never passes the budget and the summary never says n/m > m."""
    knobs = {"QUICK_EVALS": 40, "QUICK_SLEEP": 0.2}
    for label, workers, sig in (("budget-local", 2, signal.SIGTERM),
                                ("budget-kill", 2, signal.SIGKILL),
                                ("budget-inline", 0, signal.SIGTERM)):
        run_dir = WORK / label
        base = ["--workers", workers, "--run-dir", run_dir]
        job = Job(argv(QUICK, *base), knobs)
        wait_rows(run_dir, 6, job)
        (job.kill_group if sig == signal.SIGKILL else job.signal)(sig)
        job.wait(120)
        held = len(committed(run_dir))
        lower = held + 1
        rc, text, _ = run(argv(QUICK, *base, "--resume", "--max-evals", lower), knobs)
        problems = [f"exit {rc}: {first_line(text)}"] if rc != 0 else \
            final_problems(run_dir, lower, text)
        claims = finished_claims(text)
        row(f"budget after a resume ({signal.Signals(sig).name}, --workers {workers})",
            shown(argv(QUICK, *base), knobs) + f"; {signal.Signals(sig).name} after 6 rows; "
            f"--resume --max-evals {lower}",
            f"{held} recorded at the stop; resume exit {rc}, "
            f"{len(committed(run_dir))} recorded, summary {claims}" +
            ("; PROBLEMS: " + "; ".join(problems) if problems else ""), not problems)


def peak_rss_mb(cmd: list[str], knobs: dict) -> tuple[int, float, float, str]:
    t0 = time.time()
    out = WORK / "logs" / f"scale{Job.n}.out"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w") as fh:
        proc = subprocess.Popen(cmd, env=env_for(**knobs), stdout=fh, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.time() - t0, usage.ru_maxrss / 1024, out.read_text()


def probe_scale(n: int) -> None:
    run_dir = WORK / f"scale-{n}"
    knobs = {"EVO_BENCH_CHECKPOINT_EVERY": 5000}
    cmd = argv(TRIVIAL, "--workers", 0, "--max-evals", n, "--run-dir", run_dir)
    rc, wall, rss, text = peak_rss_mb(cmd, knobs)
    files = sum(1 for p in run_dir.rglob("*") if p.is_file())
    size = sum(p.stat().st_size for p in run_dir.rglob("*") if p.is_file()) / 2**20
    problems = [] if rc == 0 else [f"exit {rc}: {first_line(text)}"]
    problems += final_problems(run_dir, n, text) if rc == 0 else []
    rc_a, text_a, wall_a = run([PY, "-m", "evo_engine", "analyze", str(run_dir)], {})
    rc_r, wall_r, rss_r, text_r = peak_rss_mb(
        argv(TRIVIAL, "--workers", 0, "--max-evals", n + 100, "--run-dir", run_dir, "--resume"),
        knobs)
    if rc_a != 0:
        problems.append(f"analyze exit {rc_a}: {first_line(text_a)}")
    if rc_r != 0:
        problems.append(f"resume exit {rc_r}: {first_line(text_r)}")
    row(f"{n:,} no-sleep evaluations inline", shown(cmd, knobs) +
        f"; analyze; --resume --max-evals {n + 100}",
        f"wall {wall:.1f} s ({n / wall:,.0f}/s incl. start-up), peak RSS {rss:.0f} MB; store "
        f"{size:.1f} MiB in {files} files; analyze {wall_a:.1f} s; resume (+100) {wall_r:.1f} s, "
        f"peak RSS {rss_r:.0f} MB" + ("; PROBLEMS: " + "; ".join(problems) if problems else ""),
        None if not problems else False)


PROBES = {
    "kill": lambda a: probe_kills(a.quick),
    "coordinator": lambda a: probe_coordinator_kill(),
    "signals": lambda a: probe_signals(a.quick),
    "hang": lambda a: probe_hang(),
    "damage": lambda a: probe_damage(),
    "two": lambda a: probe_two_runs(),
    "analyze": lambda a: probe_analyze_while_writing(),
    "budget": lambda a: probe_budget(),
    "scale": lambda a: probe_scale(a.scale),
}


def markdown(rows: list[dict]) -> str:
    def cell(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")
    lines = ["| probe | command | observed | verdict |", "|---|---|---|---|"]
    lines += [f"| {cell(r['probe'])} | `{cell(r['command'])}` | {cell(r['observed'])} | "
              f"{r['verdict']} |" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    global WORK
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default=",".join(PROBES), help=f"comma list of {sorted(PROBES)}")
    p.add_argument("--scale", type=int, default=100_000, help="evaluations of the scale probe")
    p.add_argument("--quick", action="store_true", help="about half the kills and signals")
    p.add_argument("--work", type=Path, help="where runs go (default: a temporary directory)")
    p.add_argument("--keep", action="store_true", help="keep the run directories")
    p.add_argument("--markdown", type=Path, help="also write the table here")
    a = p.parse_args()
    code = code_version(REPO)  # before the probes: commits may land meanwhile
    WORK = (a.work or Path(tempfile.mkdtemp(prefix="evo-probes-"))).resolve()
    WORK.mkdir(parents=True, exist_ok=True)
    t0, cpu0 = time.time(), os.times()
    try:
        for name in a.only.split(","):
            PROBES[name.strip()](a)
    finally:
        cpu = os.times()
        cpu_s = sum(getattr(cpu, f) - getattr(cpu0, f)
                    for f in ("user", "system", "children_user", "children_system"))
        summary = {"benchmark": "probes", **code, "machine": platform.node(),
                   "cpus": os.cpu_count(), "load_avg": os.getloadavg()[0],
                   "wall_s": round(time.time() - t0, 1), "cpu_s": round(cpu_s, 1),
                   "passed": sum(r["verdict"] == "pass" for r in ROWS),
                   "failed": sum(r["verdict"] == "FAIL" for r in ROWS), "rows": ROWS}
        if a.markdown:
            a.markdown.write_text(markdown(ROWS))
        if not a.keep and a.work is None:
            shutil.rmtree(WORK, ignore_errors=True)
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
