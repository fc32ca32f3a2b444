"""Batched evaluation: the coordinator's batches, per-member lives, and every transport.

The end-to-end runs use ``tests/scenarios/batched.py`` (numpy only), configured through its
environment knobs; the coordinator's grouping is checked exactly against a scripted engine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import procs
import pytest
import zarr

from evo_engine.cli.main import main
from evo_engine.context import Context, StopEvaluation
from evo_engine.job.coordinator import Coordinator
from evo_engine.scenario import load_scenario
from evo_engine.search.engine import Engine, task_seed
from evo_engine.search.messages import EvalState, Result, Task, frozen_genome
from evo_engine.transports.base import Transport, WorkerInfo, WorkerSpec
from evo_engine.transports.inline import InlineTransport

REPO = Path(__file__).resolve().parent.parent
BATCHED = REPO / "tests" / "scenarios" / "batched.py"
MPIEXEC = Path(sys.executable).parent / "mpiexec"
TIMEOUT = 120
SEED = 3  # batched.py's scenario seed


def table(run_dir: Path, name: str = "evaluations") -> dict[str, np.ndarray]:
    g = zarr.open_group(str(run_dir / "run.zarr"), mode="r")
    if name not in g:
        return {}
    t = g[name]
    n = int(t.attrs["committed"])
    out: dict[str, np.ndarray] = {}
    for key, member in t.members(max_depth=None):
        if isinstance(member, zarr.Array):
            out[key] = np.asarray(member[:n])
    return out


def attrs(run_dir: Path) -> dict[str, Any]:
    return zarr.open_group(str(run_dir / "run.zarr"), mode="r").attrs.asdict()


def env_for(**knobs: object) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PATH"] = f"{MPIEXEC.parent}{os.pathsep}{env.get('PATH', '')}"
    env.update({k: str(v) for k, v in knobs.items()})
    return env


def evo(*args: object, ranks: int | None = None, **knobs: object) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "evo_engine", str(BATCHED), *map(str, args), "--quiet"]
    if ranks is not None:
        cmd = [str(MPIEXEC), "-n", str(ranks), *cmd]
    proc = subprocess.Popen(cmd, env=env_for(**knobs), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    return procs.finish(proc, TIMEOUT)


def run_inline(run_dir: Path, monkeypatch: pytest.MonkeyPatch, *args: str, **knobs: object) -> int:
    for k, v in knobs.items():
        monkeypatch.setenv(k, str(v))
    return main([str(BATCHED), "--workers", "0", "--run-dir", str(run_dir), "--quiet", *args])


def check_members(ev: dict[str, np.ndarray], budget: int, batch: int) -> None:
    """Every uid once, its own seed and noise, and batch ids that name a real batch."""
    assert sorted(ev["uid"].tolist()) == list(range(budget))
    assert np.array_equal(ev["seed"], [task_seed(SEED, int(u)) for u in ev["uid"]])
    complete = ev["state"] == EvalState.COMPLETE
    noise = [np.random.default_rng(int(s)).random() for s in ev["seed"][complete]]
    assert np.allclose(ev["metrics/noise"][complete], noise)
    groups: dict[int, list[int]] = {}
    for uid, b in zip(ev["uid"].tolist(), ev["batch"].tolist(), strict=True):
        groups.setdefault(b, []).append(uid)
    assert -1 not in groups
    for b, uids in groups.items():
        assert min(uids) == b and 1 <= len(uids) <= batch  # the batch id is its first member
    sizes = {int(u): len(groups[int(b)]) for u, b in zip(ev["uid"], ev["batch"], strict=True)}
    for uid, size in zip(ev["uid"][complete], ev["metrics/batch_size"][complete], strict=True):
        assert size == sizes[int(uid)]
    assert max(len(u) for u in groups.values()) == batch


# -- the coordinator's batches, exactly ---------------------------------------------------------


class ScriptedEngine:
    """Hands out tasks whose ``arch`` follows a script; records what it is told."""

    best = None  # the coordinator reads the incumbent after every result; there is none here
    best_estimate = None

    def __init__(self, archs: list[str]) -> None:
        self.archs = archs
        self.next_uid = 0
        self.in_flight: dict[int, Task] = {}
        self.told: list[int] = []
        self.max_evals = len(archs)
        self.n_finished = 0
        self.stopping = False
        self.poisoned_issued: list[Any] = []  # the coordinator looks (resume's poison rule)

    def ask(self, worker: int) -> Task | None:
        if self.stopping or self.next_uid >= len(self.archs):
            return None
        uid = self.next_uid
        self.next_uid += 1
        task = Task(uid=uid, island=0, genome=frozen_genome([0.5]),
                    params={"arch": self.archs[uid]}, seed=uid)
        self.in_flight[uid] = task
        return task

    def tell(self, r: Result) -> tuple[Any, Any]:
        self.in_flight.pop(r.uid)
        self.told.append(r.uid)
        self.n_finished += 1
        return None, None

    def report(self, uid: int, step: int, value: float) -> bool:
        return False

    def stop_issuing(self) -> None:
        self.stopping = True

    @property
    def done(self) -> bool:
        return not self.in_flight and self.next_uid >= len(self.archs)


class RecordingTransport(Transport):
    """Keeps each batch; ``poll`` answers every batch held, members in reverse order."""

    def __init__(self, n_workers: int) -> None:
        self.n_workers = n_workers
        self.batches: list[tuple[int, list[int]]] = []
        self.waiting: list[tuple[int, list[Task]]] = []

    def start(self) -> list[WorkerInfo]:
        return []

    def submit(self, worker: int, task: Task) -> None:
        self.submit_batch(worker, [task])

    def submit_batch(self, worker: int, tasks: list[Task]) -> None:
        self.batches.append((worker, [t.uid for t in tasks]))
        self.waiting.append((worker, tasks))

    def poll(self, timeout: float) -> list[Result]:
        out = [Result(uid=t.uid, worker=w, fitness=0.0, batch=ts[0].uid)
               for w, ts in reversed(self.waiting) for t in reversed(ts)]
        self.waiting.clear()
        return out

    def close(self) -> None:
        pass


def test_batch_key_holds_tasks_for_the_next_worker_in_fifo_order() -> None:
    archs = ["a", "b", "a", "b", "b", "a", "c", "a"]
    engine = ScriptedEngine(archs)
    transport = RecordingTransport(n_workers=2)
    asked: list[int] = []
    Coordinator(engine, transport, batch=2, on_task=lambda t: asked.append(t.uid),  # type: ignore[arg-type]
                batch_key=lambda p: p["arch"]).run()
    # Worker 0 asks a0, b1 (held), a2 → [0, 2]; worker 1 takes the held b1 first, then asks
    # b3 → [1, 3]; after the results: b4 → asks a5 (held), c6 (held: a batch's worth) →
    # [4]; the held a5 goes first to the next worker with the next a → [5, 7]; c6 alone.
    assert transport.batches == [(0, [0, 2]), (1, [1, 3]), (0, [4]), (1, [5, 7]), (0, [6])]
    for _, uids in transport.batches:
        assert len({archs[u] for u in uids}) == 1
    assert asked == list(range(len(archs)))  # every task logged once, when it was created
    assert sorted(engine.told) == list(range(len(archs)))


def test_results_out_of_order_free_a_worker_only_when_its_whole_batch_is_in() -> None:
    engine = ScriptedEngine(["a"] * 9)
    transport = RecordingTransport(n_workers=2)
    ticks: list[int] = []
    coord = Coordinator(engine, transport, batch=3,  # type: ignore[arg-type]
                        on_tick=lambda p: ticks.append(p.running))
    assert coord.run() == "finished"
    assert ticks[0] == 6  # the live progress counts members, not workers
    assert transport.batches == [(0, [0, 1, 2]), (1, [3, 4, 5]), (0, [6, 7, 8])]
    assert coord.busy == {} and coord.running == 0
    assert engine.told == [5, 4, 3, 2, 1, 0, 8, 7, 6]


class OneAtATime(InlineTransport):
    """Inline workers whose batches finish one member per poll, interleaved across workers."""

    def poll(self, timeout: float) -> list[Result]:
        if not hasattr(self, "_ready"):
            self._ready: list[Result] = []
        while self._queue:
            self._ready.extend(super().poll(timeout))
        if not self._ready:
            return []
        return [self._ready.pop(len(self._ready) // 2)]  # from the middle: out of order


def test_real_engine_with_members_finishing_one_by_one_out_of_order(tmp_path: Path) -> None:
    scenario = load_scenario(BATCHED)
    engine = Engine(scenario.space, scenario.engine_config())
    transport = OneAtATime(WorkerSpec(objective=scenario.objective,
                                      objective_batch=scenario.objective_batch,
                                      scratch_root=str(tmp_path)), n_workers=3)
    transport.start()
    seen: list[Any] = []
    coord = Coordinator(engine, transport, batch=2, on_evaluation=seen.append)
    assert coord.run() == "finished"
    uids = [ev.task.uid for ev in seen]
    assert sorted(uids) == list(range(scenario.max_evals)) and uids != sorted(uids)
    assert all(ev.state is EvalState.COMPLETE for ev in seen)
    assert {ev.result.worker for ev in seen} == {0, 1, 2}
    assert all(ev.result.batch in (ev.task.uid, ev.task.uid - 1) for ev in seen)


# -- the worker runtime: one life per member --------------------------------------------------


def test_runtime_gives_each_member_its_own_result() -> None:
    from evo_engine.transports.worker import WorkerRuntime

    def objective_batch(params_list: list[dict], ctxs: list[Context]) -> list[Any]:
        out: list[Any] = []
        for p, ctx in zip(params_list, ctxs, strict=True):
            ctx.report(1, p["x"])
            out.append({"raise": ValueError("bad member"), "nan": float("nan"),
                        "stop": StopEvaluation(), "nofit": {"loss": 1.0}}.get(
                p["mode"], {"fitness": p["x"], "seed": float(ctx.seed)}))
        return out

    rt = WorkerRuntime(lambda p, c: 0.0, 1, "cpu", None, objective_batch=objective_batch, gpu=False)
    modes = ["ok", "raise", "nan", "stop", "nofit", "ok"]
    tasks = [Task(uid=10 + i, island=0, genome=frozen_genome([0.1]),
                  params={"x": 0.1 * i, "mode": m}, seed=100 + i) for i, m in enumerate(modes)]
    rs = rt.run_batch(tasks)
    assert [r.uid for r in rs] == [10, 11, 12, 13, 14, 15]
    assert all(r.batch == 10 for r in rs)
    assert [r.state for r in rs] == [EvalState.COMPLETE, EvalState.FAILED, EvalState.FAILED,
                                     EvalState.PRUNED, EvalState.FAILED, EvalState.COMPLETE]
    assert rs[0].metrics == {"seed": 100.0} and rs[5].metrics == {"seed": 105.0}
    assert rs[5].fitness == pytest.approx(0.5)
    assert "ValueError: bad member" in rs[1].error and "batch member 2 of 6" in rs[1].error
    assert "non-finite" in rs[2].error and "without 'fitness'" in rs[4].error
    assert [r.curve for r in rs] == [((1, 0.1 * i),) for i in range(6)]

    def broken(params_list: list[dict], ctxs: list[Context]) -> list[Any]:
        raise RuntimeError("the whole batch fell over")

    rt.objective_batch = broken
    rs = rt.run_batch(tasks[:2])
    assert all(r.state is EvalState.FAILED and "whole batch fell over" in r.error for r in rs)
    rt.objective_batch = lambda ps, cs: [1.0]  # one item for two members
    assert all("returned 1 items for 2 members" in r.error for r in rt.run_batch(tasks[:2]))


@pytest.mark.parametrize("exc", [SystemExit(7), KeyboardInterrupt()])
def test_system_exit_or_keyboard_interrupt_in_the_objective_is_a_failed_evaluation(
        exc: BaseException) -> None:
    from evo_engine.transports.worker import WorkerRuntime

    def objective(params: dict, ctx: Context) -> float:
        raise exc

    rt = WorkerRuntime(objective, 0, "cpu", None, gpu=False)
    r = rt.run(Task(uid=1, island=0, genome=frozen_genome([0.1]), params={}, seed=1))
    assert r.state is EvalState.FAILED and type(exc).__name__ in r.error


# -- whole runs ------------------------------------------------------------------------------


def test_inline_batch_members_each_get_uid_seed_and_result(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    assert run_inline(tmp_path / "r", monkeypatch, "--batch", "3", BATCHED_EVALS=18) == 0
    ev = table(tmp_path / "r")
    check_members(ev, 18, 3)
    assert np.all(ev["state"] == EvalState.COMPLETE)


def test_one_member_raising_or_nan_fails_alone(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    assert run_inline(tmp_path / "r", monkeypatch, BATCHED_EVALS=30, BATCHED_RAISE_BELOW=0.25,
                      BATCHED_NAN_ABOVE=0.8) == 0
    ev = table(tmp_path / "r")
    x = ev["params/x"]
    raised, nan = x < 0.25, x > 0.8
    assert raised.any() and nan.any()
    assert np.all(ev["state"][raised | nan] == EvalState.FAILED)
    assert np.all(ev["state"][~raised & ~nan] == EvalState.COMPLETE)
    assert all("exploded" in e and "batch member" in e for e in ev["error"][raised])
    assert all("non-finite" in e for e in ev["error"][nan])
    # Some batch held a failed and a complete member: the failure stayed with its member.
    state_of = dict(zip(ev["uid"].tolist(), ev["state"].tolist(), strict=True))
    mixed = [b for b in set(ev["batch"].tolist())
             if len({state_of[u] for u, bb in zip(ev["uid"].tolist(), ev["batch"].tolist(),
                                                   strict=True) if bb == b}) == 2]
    assert mixed


def test_analysis_counts_a_batch_once_in_worker_busy_time(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from evo_engine.analysis.plots import worker_usage
    from evo_engine.analysis.summary import summarize
    from evo_engine.store.reader import load_run

    assert run_inline(tmp_path / "r", monkeypatch, "--batch", "4", BATCHED_EVALS=16,
                      BATCHED_SLEEP=0.02) == 0
    run = load_run(tmp_path / "r")
    ev = run.evaluations
    first = ev["batch"] == ev["uid"]
    assert first.sum() < ev["uid"].size  # several members per batch
    one_stretch = float((ev["t_end"][first] - ev["t_start"][first]).sum())
    assert summarize(run).busy_seconds == pytest.approx(one_stretch)
    assert worker_usage(run)[0][0] == pytest.approx(one_stretch)


def test_the_runs_own_summary_counts_a_batch_once_as_analyze_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The closing summary said "busy 10 min 32 s" where analyze said 5 min 16 s (issue 25):
    # its live meter counted every member's copy of the batch's time.
    import re

    from evo_engine.analysis.summary import summarize
    from evo_engine.store.reader import load_run
    from evo_engine.util.timing import describe

    printed: list[str] = []
    monkeypatch.setenv("BATCHED_EVALS", "16")
    monkeypatch.setenv("BATCHED_SLEEP", "0.2")
    monkeypatch.setattr("builtins.print", lambda *a, **k: printed.append(" ".join(map(str, a)))
                        if not k.get("file") else None)
    assert main([str(BATCHED), "--workers", "0", "--run-dir", str(tmp_path / "r"),
                 "--batch", "4", "--progress", "none"]) == 0
    text = " ".join(" ".join(printed).split())
    offline = describe(summarize(load_run(tmp_path / "r")).timing)
    busy = re.search(r"busy (\d+\.\d s)", text)
    assert busy is not None and busy.group(1) in offline, (text, offline)


def test_a_pruned_member_stops_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run_inline(tmp_path / "r", monkeypatch, BATCHED_EVALS=30, BATCHED_ASHA=1) == 0
    ev, curves = table(tmp_path / "r"), table(tmp_path / "r", "curves")
    steps = {int(u): int(curves["step"][curves["uid"] == u].max()) for u in ev["uid"]}
    pruned = ev["uid"][ev["state"] == EvalState.PRUNED].tolist()
    assert pruned
    partner_went_on = False
    for uid in pruned:
        assert steps[uid] < 4  # it stopped at a rung
        b = ev["batch"][ev["uid"] == uid][0]
        for other in ev["uid"][(ev["batch"] == b) & (ev["uid"] != uid)].tolist():
            state = ev["state"][ev["uid"] == other][0]
            if state == EvalState.COMPLETE:
                assert steps[other] == 4
                partner_went_on = True
    assert partner_went_on


def test_batch_key_groups_members_in_a_real_run(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    assert run_inline(tmp_path / "r", monkeypatch, BATCHED_EVALS=24, BATCHED_KEY=1) == 0
    ev = table(tmp_path / "r")
    check_members(ev, 24, 2)
    assert np.all(ev["metrics/archs"] == 1.0)
    for b in set(ev["batch"].tolist()):
        assert len(set(ev["params/arch"][ev["batch"] == b].tolist())) == 1


def test_batch_without_objective_batch_is_bad_input(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    code = main([str(REPO / "tests" / "scenarios" / "quick.py"), "--workers", "0", "--batch", "2",
                 "--run-dir", str(tmp_path / "r")])
    assert code == 2
    assert "needs an objective_batch" in capsys.readouterr().err


def test_local_workers_run_batches(tmp_path: Path) -> None:
    done = evo("--workers", 2, "--run-dir", tmp_path / "r", BATCHED_EVALS=20)
    assert done.returncode == 0, done.stderr
    ev = table(tmp_path / "r")
    check_members(ev, 20, 2)
    assert set(ev["worker"].tolist()) == {0, 1}


@pytest.mark.mpi
@pytest.mark.skipif(not MPIEXEC.exists(), reason=f"no mpiexec at {MPIEXEC}")
def test_mpiexec_runs_batches(tmp_path: Path) -> None:
    done = evo("--run-dir", tmp_path / "r", ranks=3, BATCHED_EVALS=20, BATCHED_ASHA=1)
    assert done.returncode == 0, done.stderr
    ev = table(tmp_path / "r")
    assert sorted(ev["uid"].tolist()) == list(range(20))
    assert set(ev["worker"].tolist()) == {0, 1}
    assert max(np.bincount(ev["batch"])) == 2
    assert np.array_equal(ev["seed"], [task_seed(SEED, int(u)) for u in ev["uid"]])


def wait_for(predicate: Any, proc: subprocess.Popen[str], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and proc.poll() is None:
        if predicate():
            return
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    out, err = proc.communicate()
    pytest.fail(f"never saw {what}\n{out}\n{err}")


def start(*args: object, **knobs: object) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "evo_engine", str(BATCHED), *map(str, args), "--quiet"]
    return subprocess.Popen(cmd, env=env_for(**knobs), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def test_kill_with_a_batch_in_flight_then_resume_reissues_its_members(tmp_path: Path) -> None:
    run_dir, calls = tmp_path / "r", tmp_path / "calls.txt"
    knobs = {"BATCHED_EVALS": 16, "BATCHED_SLEEP": 0.1, "BATCHED_LOG": calls}
    proc = start("--workers", 2, "--batch", 3, "--run-dir", run_dir, **knobs)
    # Kill -9 once results are durable and new batches have started (their tasks logged
    # without results: on a loaded machine a flush can also land between batches).
    def ready() -> bool:
        if not (run_dir / "run.zarr").exists() or not calls.exists():
            return False
        done = table(run_dir).get("uid", [])
        logged = table(run_dir, "tasks").get("uid", [])
        return (len(done) >= 4 and len(calls.read_text().splitlines()) >= 4
                and bool(set(np.asarray(logged).tolist()) - set(np.asarray(done).tolist())))

    wait_for(ready, proc, "4 results and a batch in flight")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    before = table(run_dir)
    logged = table(run_dir, "tasks")
    in_flight = sorted(set(logged["uid"].tolist()) - set(before["uid"].tolist()))
    assert in_flight, "the kill found no batch in flight"
    done = evo("--workers", 2, "--batch", 3, "--run-dir", run_dir, "--resume", **knobs)
    assert done.returncode == 0, done.stderr
    ev = table(run_dir)
    assert sorted(ev["uid"].tolist()) == list(range(16))  # nothing lost, nothing twice
    seeds = dict(zip(logged["uid"].tolist(), logged["seed"].tolist(), strict=True))
    for uid in in_flight:  # re-issued as single tasks with the seeds they were logged with
        row = ev["uid"] == uid
        assert ev["seed"][row][0] == seeds[uid]
        assert ev["state"][row][0] == EvalState.COMPLETE
        noise = np.random.default_rng(seeds[uid]).random()
        assert ev["metrics/noise"][row][0] == pytest.approx(noise)


@pytest.mark.parametrize("batch", [1, 2])
def test_a_worker_that_dies_mid_evaluation_fails_its_tasks_and_the_run_goes_on(
        tmp_path: Path, batch: int) -> None:
    done = evo("--workers", 2, "--batch", batch, "--run-dir", tmp_path / "r",
               BATCHED_EVALS=12, BATCHED_DIE_UID=5)
    assert done.returncode == 0, done.stderr
    ev = table(tmp_path / "r")
    assert sorted(ev["uid"].tolist()) == list(range(12))
    failed = ev["state"] == EvalState.FAILED
    died = sorted(ev["uid"][failed].tolist())
    assert 5 in died and len(died) == batch  # the dying worker's whole batch, nothing else
    assert all(e.startswith("worker died while evaluating") for e in ev["error"][failed])
    assert (ev["state"] == EvalState.COMPLETE).sum() == 12 - batch


@pytest.mark.parametrize("workers", [0, 2])
def test_eval_timeout_fails_a_hanging_evaluation(tmp_path: Path, workers: int) -> None:
    done = evo("--workers", workers, "--batch", 1, "--run-dir", tmp_path / "r",
               BATCHED_EVALS=10, BATCHED_HANG_UID=3, BATCHED_TIMEOUT=1.5)
    assert done.returncode == 0, done.stderr
    ev = table(tmp_path / "r")
    assert sorted(ev["uid"].tolist()) == list(range(10))
    failed = ev["state"] == EvalState.FAILED
    assert ev["uid"][failed].tolist() == [3]
    assert ev["error"][failed][0].startswith("timed out after 1.5 s")


@pytest.mark.mpi
@pytest.mark.skipif(not MPIEXEC.exists(), reason=f"no mpiexec at {MPIEXEC}")
def test_mpi_eval_timeout_ends_the_job_resumably_with_the_task_marked(tmp_path: Path) -> None:
    run_dir = tmp_path / "r"
    done = evo("--run-dir", run_dir, ranks=3, BATCHED_EVALS=12, BATCHED_HANG_UID=3,
               BATCHED_TIMEOUT=1.5)
    assert done.returncode == 3, done.stderr
    assert attrs(run_dir)["status"] == "stopped"
    ev = table(run_dir)
    failed = ev["state"] == EvalState.FAILED
    batch = ev["batch"][ev["uid"] == 3][0]
    marked = sorted(ev["uid"][failed].tolist())
    assert 3 in marked and marked == sorted(ev["uid"][ev["batch"] == batch].tolist())
    assert all(e.startswith("timed out after 1.5 s") for e in ev["error"][failed])
    done = evo("--run-dir", run_dir, "--resume", ranks=3, BATCHED_EVALS=12, BATCHED_TIMEOUT=1.5)
    assert done.returncode == 0, done.stderr
    ev = table(run_dir)
    assert sorted(ev["uid"].tolist()) == list(range(12))  # the marked ones not issued again
    assert sorted(ev["uid"][ev["state"] == EvalState.FAILED].tolist()) == marked


@pytest.mark.parametrize("workers", [0, 2])
def test_system_exit_in_the_objective_fails_that_evaluation_only(tmp_path: Path,
                                                                 workers: int) -> None:
    done = evo("--workers", workers, "--run-dir", tmp_path / "r", BATCHED_EVALS=10,
               BATCHED_EXIT_UID=4)
    assert done.returncode == 0, done.stderr
    ev = table(tmp_path / "r")
    assert sorted(ev["uid"].tolist()) == list(range(10))
    failed = ev["state"] == EvalState.FAILED
    assert 4 in ev["uid"][failed].tolist()
    assert all("SystemExit: 7" in e for e in ev["error"][failed])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_an_inline_evaluation_stops_with_3_then_resume_finishes(
        tmp_path: Path, sig: int) -> None:
    run_dir, calls = tmp_path / "r", tmp_path / "calls.txt"
    knobs = {"BATCHED_EVALS": 8, "BATCHED_SLEEP": 30, "BATCHED_LOG": calls}
    proc = start("--workers", 0, "--run-dir", run_dir, **knobs)
    wait_for(lambda: calls.exists() and calls.read_text().strip(), proc, "an evaluation")
    proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=20)  # far less than the 120 s evaluation
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the signal did not interrupt the inline evaluation")
    assert proc.returncode == 3, err
    assert "Traceback" not in err
    assert attrs(run_dir)["status"] == "stopped"
    assert table(run_dir).get("uid", np.array([])).size == 0  # the interrupted batch: not recorded
    done = evo("--workers", 0, "--run-dir", run_dir, "--resume", BATCHED_EVALS=8)
    assert done.returncode == 0, done.stderr
    assert sorted(table(run_dir)["uid"].tolist()) == list(range(8))


# -- GPU utilization from NVML (a fake pynvml) ---------------------------------------------------


class FakeNvml:
    def __init__(self) -> None:
        self.busy = iter([10, 30, 50, 70, 90] + [90] * 1000)
        self.inits = 0
        self.index: int | None = None

    def nvmlInit(self) -> None:  # noqa: N802 - NVML's names
        self.inits += 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:  # noqa: N802
        self.index = index
        return f"gpu{index}"

    def nvmlDeviceGetUtilizationRates(self, handle: str) -> Any:  # noqa: N802
        return type("U", (), {"gpu": next(self.busy)})()

    def nvmlDeviceGetMemoryInfo(self, handle: str) -> Any:  # noqa: N802
        return type("M", (), {"used": 512 * 1024 * 1024})()


def test_gpu_utilization_is_sampled_per_evaluation_when_pynvml_is_there(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from evo_engine.transports import gpu
    from evo_engine.transports.worker import WorkerRuntime

    fake = FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert gpu.gpu_sampler("cpu") is None
    sampler = gpu.gpu_sampler("cuda:1", interval=3600)  # no background samples in the test
    assert sampler is not None and fake.index == 5  # cuda:1 is the second visible GPU
    rt = WorkerRuntime(lambda p, c: 1.0, 0, "cuda:1", None, gpu=sampler)
    r = rt.run(Task(uid=1, island=0, genome=frozen_genome([0.1]), params={}, seed=1))
    assert r.gpu == (20.0, 512.0)  # mean of the samples at its start (10) and end (30)
    r = rt.run(Task(uid=2, island=0, genome=frozen_genome([0.1]), params={}, seed=2))
    assert r.gpu == (60.0, 512.0)
    sampler.close()
    monkeypatch.setitem(sys.modules, "pynvml", None)  # not installed: no sampler, no error
    assert gpu.gpu_sampler("cuda:0") is None


def test_the_gpu_sampled_is_the_one_torch_trains_on_whatever_the_device_order(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # CUDA numbers GPUs fastest first unless CUDA_DEVICE_ORDER=PCI_BUS_ID, NVML in PCI
    # order: on a node with two kinds of GPU, NVML's index 1 was another GPU than cuda:1.
    from evo_engine.transports import gpu

    class ByUuid(FakeNvml):
        def nvmlDeviceGetHandleByUUID(self, uuid: str) -> str:  # noqa: N802
            self.uuid = uuid
            return uuid

    class Props:
        def __init__(self, n: int) -> None:
            self.uuid = ["aaaa-0", "bbbb-1"][n]  # torch prints it without NVML's "GPU-"

    started = [False]
    fake_torch = type(sys)("torch")
    fake_torch.cuda = type(sys)("torch.cuda")
    fake_torch.cuda.get_device_properties = Props
    fake_torch.cuda.is_initialized = lambda: started[0]
    fake = ByUuid()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    # Before the objective started CUDA: by index (asking torch would start CUDA here) ...
    sampler = gpu.gpu_sampler("cuda:1", interval=3600)
    assert sampler is not None and sampler.handle == "gpu5"
    sampler.begin()
    assert sampler.handle == "gpu5"
    started[0] = True  # ... the first evaluation started it: by UUID from the next one on
    sampler.begin()
    assert sampler.handle == "GPU-bbbb-1"
    sampler.close()
    sampler = gpu.gpu_sampler("cuda:1", interval=3600)  # CUDA already started: UUID at once
    assert sampler is not None and sampler.handle == "GPU-bbbb-1"
    sampler.close()
    fake_torch.cuda.get_device_properties = lambda n: object()  # no uuid: the index, as before
    sampler = gpu.gpu_sampler("cuda:1", interval=3600)
    assert sampler is not None and sampler.handle == "gpu5"
    sampler.begin()
    assert sampler.handle == "gpu5"
    sampler.close()


def test_the_coordinator_logs_gpu_utilization_once_per_batch() -> None:
    class GpuTransport(RecordingTransport):
        def poll(self, timeout: float) -> list[Result]:
            return [Result(uid=r.uid, worker=r.worker, fitness=0.0, batch=r.batch,
                           gpu=(55.0, 1024.0)) for r in super().poll(timeout)]

    events: list[dict[str, Any]] = []

    class Log:
        def info(self, event: str, **kw: Any) -> None:
            events.append({"event": event, **kw})

        debug = warning = info

    class Told(ScriptedEngine):
        def tell(self, r: Result) -> tuple[Any, Any]:
            super().tell(r)
            task = Task(uid=r.uid, island=0, genome=frozen_genome([0.5]), params={}, seed=0)
            from evo_engine.search.engine import Evaluation

            return None, Evaluation(task=task, result=r, state=EvalState.COMPLETE, error=None,
                                    accepted=True)

    engine = Told(["a"] * 4)
    Coordinator(engine, GpuTransport(1), batch=2, log=Log()).run()  # type: ignore[arg-type]
    gpu_events = [e for e in events if e["event"] == "worker_gpu"]
    assert [(e["uid"], e["batch"], e["gpu_busy_percent"]) for e in gpu_events] == [
        (0, 0, 55.0), (2, 2, 55.0)]
    assert json.dumps(gpu_events)  # plain values only


@pytest.mark.mpi
@pytest.mark.skipif(not MPIEXEC.exists(), reason=f"no mpiexec at {MPIEXEC}")
def test_a_dead_worker_rank_ends_the_job_and_resume_continues(tmp_path: Path) -> None:
    run_dir = tmp_path / "r"
    done = evo("--run-dir", run_dir, ranks=3, BATCHED_EVALS=16, BATCHED_SLEEP=0.1,
               BATCHED_DIE_UID=9, BATCHED_DIE_AFTER_ROWS=1)
    # The launcher tears the job down with the dead rank's own status (os._exit(9) here).
    assert done.returncode == 9, done.stderr
    assert attrs(run_dir)["status"] == "running"  # a crash, as --resume will count it
    before = table(run_dir)
    assert 0 < before["uid"].size < 16
    done = evo("--run-dir", run_dir, "--resume", ranks=3, BATCHED_EVALS=16, BATCHED_SLEEP=0.1)
    assert done.returncode == 0, done.stderr
    ev = table(run_dir)
    assert sorted(ev["uid"].tolist()) == list(range(16))
    assert np.array_equal(ev["uid"][: before["uid"].size], before["uid"])  # nothing rewritten


def _self_signal(params: dict, ctx: Context) -> float:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(30)  # interrupted long before
    return 1.0


def test_inline_ctrl_c_without_a_run_around_it_still_reaches_the_caller() -> None:
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        transport = InlineTransport(WorkerSpec(objective=_self_signal))
        transport.start()
        transport.submit(0, Task(uid=0, island=0, genome=frozen_genome([0.1]), params={}, seed=0))
        with pytest.raises(KeyboardInterrupt):
            transport.poll(0.0)
        seen: list[int] = []
        signal.signal(signal.SIGINT, lambda s, f: seen.append(s))  # a run's stop flag
        transport.submit(0, Task(uid=1, island=0, genome=frozen_genome([0.1]), params={}, seed=1))
        assert transport.poll(0.0) == []  # abandoned, not recorded
        assert seen == [signal.SIGINT]
        assert signal.getsignal(signal.SIGINT) is not None  # the handler is back
    finally:
        signal.signal(signal.SIGINT, old)


def test_batch_and_gpu_survive_the_mpi_wire_format() -> None:
    import pickle

    from evo_engine.transports.mpi import result_from_message, result_message

    r = Result(uid=5, worker=1, fitness=0.5, batch=4, gpu=(37.5, 2048.0))
    back = result_from_message(pickle.loads(pickle.dumps(result_message(r))))
    assert (back.uid, back.batch, back.gpu, back.fitness) == (5, 4, (37.5, 2048.0), 0.5)
    plain = Result(uid=6, worker=1, fitness=0.25)
    assert len(result_message(plain)) == 9  # unbatched results pay nothing for the new fields
    back = result_from_message(result_message(plain))
    assert (back.batch, back.gpu) == (-1, None)


MODULE_LEVEL = '''
from evo_engine import Float, Space
from evo_engine.scenario import Scenario

def objective(params, ctx):
    return params["x"]

def objective_batch(params_list, ctxs):
    return [{"fitness": p["x"], "k": float(len(params_list))} for p in params_list]

def batch_key(params):
    return params["x"] < 0.5

def make_scenario(preset):
    return Scenario(name="modlevel", space=Space(x=Float(0, 1)), objective=objective,
                    max_evals=12, population_size=4)
'''


def test_module_level_objective_batch_and_batch_key_are_picked_up(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "modlevel.py"
    path.write_text(MODULE_LEVEL)
    scenario = load_scenario(path)
    assert scenario.batch == 1 and scenario.objective_batch is not None
    assert scenario.batch_key is not None and scenario.batch_key({"x": 0.2}) is True
    assert main([str(path), "--workers", "0", "--batch", "3", "--run-dir",
                 str(tmp_path / "r"), "--quiet"]) == 0
    ev = table(tmp_path / "r")
    assert sorted(ev["uid"].tolist()) == list(range(12))
    assert ev["metrics/k"].max() == 3.0
    for b in set(ev["batch"].tolist()):  # the module's batch_key held: one side of 0.5 each
        assert len(set((ev["params/x"][ev["batch"] == b] < 0.5).tolist())) == 1
    path.write_text(MODULE_LEVEL.replace("def batch_key(params):\n    return params[\"x\"] < 0.5",
                                         "batch_key = 3"))
    assert main([str(path), "--workers", "0", "--run-dir", str(tmp_path / "r2")]) == 2
    assert "batch_key must be a function" in capsys.readouterr().err


def test_a_signal_during_an_inline_finalize_answers_instead_of_hanging() -> None:
    from evo_engine.transports.worker import FINALIZE

    seen: list[int] = []
    old = signal.signal(signal.SIGINT, lambda s, f: seen.append(s))
    try:
        transport = InlineTransport(WorkerSpec(objective=_self_signal, finalize=_self_signal))
        transport.start()
        transport.submit(0, Task(uid=3, island=0, genome=frozen_genome([0.1]), params={}, seed=3,
                                 operator=FINALIZE))
        (r,) = transport.poll(0.0)
        assert r.state is EvalState.FAILED and r.error == "interrupted by SIGINT"
        assert seen == [signal.SIGINT]
    finally:
        signal.signal(signal.SIGINT, old)
