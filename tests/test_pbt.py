"""Population-based training: decisions, checkpoints, the trainers, transports and resume.

Replay of PBT decisions with results finishing in any order, kills and resumes is covered by
the ``pbt_islands`` configuration of tests/test_replay.py.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from test_resume import _wait_for_rows, evo_cmd

from evo_engine.context import CheckpointMissing, Context, checkpoint_file
from evo_engine.scenario import ScenarioError, load_scenario, override
from evo_engine.search.engine import Engine, EngineConfig
from evo_engine.search.messages import EvalState, Result, Task
from evo_engine.search.pbt import CONTINUE, EXPLOIT, PBT, RESTART, PBTConfig
from evo_engine.space import Categorical, Float, Int, Space
from evo_engine.transports.worker import WorkerRuntime

REPO = Path(__file__).resolve().parent.parent
TOY = REPO / "tests" / "scenarios" / "pbt_toy.py"
SPACE = Space(lr=Float(1e-4, 1e-1, log=True), layers=Int(1, 4), act=Categorical(["a", "b", "c"]))


MIGRATING = {"population_size": 2, "migration_interval": 1,
             "pbt": {"interval": 2, "quantile": 0.5, "fixed": ["k"]}}
"""pbt_toy.py changed so that exploits across its two islands are frequent: two members per
island, the worse half exploits, and every decision also ranks the other island's members."""


def toy_w(w: float, params: dict, steps: int = 2) -> float:
    """pbt_toy.py's "weights" after ``steps`` steps from ``w`` with these parameters."""
    rate = min(params["lr"] * 10 * params["k"], 1.9)
    for _ in range(steps):
        w += rate * (1.0 - w)
    return w


def check_pbt_store(run_dir: Path, scenario, migrations: bool = True) -> dict[str, np.ndarray]:
    """What every finished pbt_toy run must show, whichever transport ran it:

    * the budget exact: uids 0..max_evals-1 once each, all COMPLETE;
    * each interval loaded its ``pbt_parent``'s checkpoint (the toy's metric ``loaded`` is
      the uid in the file it read) at its parent's end step, and its "weights" are the
      parent's trained on by its own parameters (so the file held the parent's state);
    * a migrant (an exploit of another island's member) loaded a checkpoint written on that
      island, and the migrations table says so (``migrations``: the job recorded it);
    * every task is the decision a fresh engine makes when told the logged results in log
      order up to that task's ``told_before`` (exact replay, exploits included).
    Returns the evaluation columns, by uid."""
    z = zarr.open_group(str(run_dir / "run.zarr"), mode="r")
    ev_t, tk_t = z["evaluations"], z["tasks"]
    n, nt = int(ev_t.attrs["committed"]), int(tk_t.attrs["committed"])
    state, error = np.asarray(ev_t["state"][:n]), np.asarray(ev_t["error"][:n])
    assert np.all(state == EvalState.COMPLETE), sorted(set(error[state != EvalState.COMPLETE]))
    names = ("uid", "island", "fitness", "step", "pbt_parent", "metrics/w", "metrics/loaded",
             "params/lr", "params/k")
    log = {c: np.asarray(ev_t[c][:n]) for c in names}  # log order
    assert sorted(log["uid"].tolist()) == list(range(scenario.max_evals))
    ev = {c: a[np.argsort(log["uid"])] for c, a in log.items()}  # by uid
    interval = scenario.pbt.interval
    for u in range(scenario.max_evals):
        parent, params = int(ev["pbt_parent"][u]), {"lr": ev["params/lr"][u], "k": ev["params/k"][u]}
        assert ev["metrics/loaded"][u] == parent, f"uid {u} loaded {ev['metrics/loaded'][u]}"
        w0 = 0.0 if parent < 0 else ev["metrics/w"][parent]
        assert ev["step"][u] == (0 if parent < 0 else ev["step"][parent] + interval)
        assert ev["metrics/w"][u] == pytest.approx(toy_w(w0, params, interval), rel=1e-12)
    tasks: dict[int, Task] = {}
    cols = {c: np.asarray(tk_t[c][:nt]) for c in ("uid", "island", "seed", "operator", "genome",
                                                 "info", "told_before", "pbt_parent", "step")}
    for i in range(nt):  # a task re-issued after a stop appears again: the first row counts
        tasks.setdefault(int(cols["uid"][i]), Task(
            uid=int(cols["uid"][i]), island=int(cols["island"][i]), genome=cols["genome"][i],
            params={}, seed=int(cols["seed"][i]), operator=str(cols["operator"][i]),
            info=json.loads(str(cols["info"][i])), told_before=int(cols["told_before"][i]),
            pbt_parent=int(cols["pbt_parent"][i]), step=int(cols["step"][i])))
    migrants = [t for t in tasks.values() if "migrant_from" in t.info]
    for t in migrants:
        assert ev["island"][t.pbt_parent] == t.info["migrant_from"] != t.island
    if migrations:
        m = z["migrations"]
        k = int(m.attrs["committed"])
        recorded = sorted(zip(m["uid"][:k].tolist(), m["origin"][:k].tolist(),
                              m["destination"][:k].tolist()))
        assert recorded == sorted((t.pbt_parent, t.info["migrant_from"], t.island)
                                  for t in migrants)
    engine = Engine(scenario.space, scenario.engine_config())
    told = 0
    for u in range(scenario.max_evals):
        logged = tasks[u]
        while told < logged.told_before:
            r = int(log["uid"][told])
            engine.tell(Result(uid=r, worker=0, fitness=float(log["fitness"][told])))
            told += 1
        again = engine.ask()
        assert again is not None, f"the engine issues nothing where uid {u} was issued"
        got = (again.uid, again.island, again.seed, again.operator, again.pbt_parent, again.step,
               again.info)
        assert got == (u, logged.island, logged.seed, logged.operator, logged.pbt_parent,
                       logged.step, logged.info), u
        assert np.array_equal(again.genome, logged.genome), u
    return ev


def pbt_engine(population: int = 4, quantile: float = 0.25, **pbt) -> Engine:
    cfg = PBTConfig(interval=2, quantile=quantile, fixed=("layers",), **pbt)
    return Engine(SPACE, EngineConfig(max_evals=500, population_size=population, seed=1, pbt=cfg))


def ok(task: Task, fitness: float) -> Result:
    return Result(uid=task.uid, worker=0, fitness=fitness)


def test_the_worst_member_at_a_step_takes_a_top_members_checkpoint_and_explores() -> None:
    eng = pbt_engine()
    starts = [eng.ask() for _ in range(4)]
    assert eng.ask() is None  # every member is in flight: nothing to issue, no barrier either
    assert all(t.step == 0 and t.pbt_parent == -1 for t in starts)
    for t, f in zip(starts, [0.1, 0.2, 0.3, 0.9]):
        eng.tell(ok(t, f))
    nxt = {int(t.info["member"]): t for t in (eng.ask() for _ in range(4))}
    for m in (0, 1, 2):  # the better three continue from their own checkpoint
        assert nxt[m].operator == CONTINUE and nxt[m].pbt_parent == starts[m].uid
        assert nxt[m].step == 2 and np.array_equal(nxt[m].genome, starts[m].genome)
    worst = nxt[3]
    assert worst.operator == EXPLOIT and worst.pbt_parent == starts[0].uid and worst.step == 2
    assert worst.info["donor"] == 0 and worst.parents == (starts[0].uid,)
    # Explored from the donor's hyperparameters, log-aware; the fixed architecture copied.
    assert worst.params["layers"] == starts[0].params["layers"]
    ratio = worst.params["lr"] / starts[0].params["lr"]
    assert ratio != 1.0 and abs(math.log10(ratio)) < 3 * 0.1 * 3  # sigma 0.1 of 3 decades
    # Member 3 let its own checkpoint go; member 0's is held twice (its own and member 3's).
    assert eng.pbt is not None
    assert [u for u, _ in eng.pbt.drain_released()] == [starts[3].uid]
    assert eng.pbt.live() == {starts[0].uid, starts[1].uid, starts[2].uid}


def test_a_failed_interval_exploits_the_best_member_or_starts_again() -> None:
    eng = pbt_engine()
    starts = [eng.ask() for _ in range(4)]
    eng.tell(Result(uid=starts[0].uid, worker=0, fitness=None, state=EvalState.FAILED,
                    error="CheckpointMissing"))
    again = eng.ask()  # nobody has a checkpoint yet: fresh weights and a fresh point
    assert again.operator == RESTART and again.pbt_parent == -1 and again.step == 0
    eng.tell(ok(starts[1], 0.5))
    eng.tell(ok(starts[2], 0.2))
    eng.tell(Result(uid=starts[3].uid, worker=0, fitness=None, state=EvalState.FAILED))
    asked = [eng.ask() for _ in range(3)]
    failed = next(t for t in asked if t.info["member"] == 3)
    assert failed.operator == EXPLOIT and failed.pbt_parent == starts[2].uid and failed.step == 2


def test_a_member_that_started_again_from_fresh_weights_is_no_donor() -> None:
    """Member 1 scored at step 2, then failed with nobody else scored: it started again from
    fresh weights. Its old score still ranks member 0 worst at step 2, but it holds no
    checkpoint to copy: member 0 continues on its own weights instead of throwing them away
    for fresh ones (recorded, before, as a migration from island -1)."""
    cfg = PBTConfig(interval=2, quantile=0.5)
    eng = Engine(SPACE, EngineConfig(max_evals=50, population_size=2, seed=1, pbt=cfg))
    a, d = eng.ask(), eng.ask()
    eng.tell(ok(d, 0.1))
    d2 = eng.ask()
    eng.tell(Result(uid=d2.uid, worker=0, fitness=None, state=EvalState.FAILED))
    assert eng.ask().operator == RESTART
    eng.tell(ok(a, 0.5))
    a2 = eng.ask()
    assert (a2.operator, a2.pbt_parent, a2.step) == (CONTINUE, a.uid, 2)
    assert "migrant_from" not in a2.info
    eng.tell(ok(a2, 0.4))
    assert eng.drain_migrations() == []


def test_no_checkpoint_a_later_interval_loads_is_released_and_live_ones_stay_bounded() -> None:
    eng = pbt_engine(population=6, quantile=0.5, explore="resample")
    assert eng.pbt is not None
    rng = np.random.default_rng(4)
    in_flight: list[Task] = []
    released: set[int] = set()
    ops: set[str] = set()
    while not eng.done:
        while len(in_flight) < 4 and (t := eng.ask()) is not None:
            assert t.pbt_parent not in released, f"uid {t.uid} loads released {t.pbt_parent}"
            in_flight.append(t)
            ops.add(t.operator)
        t = in_flight.pop(int(rng.integers(len(in_flight))))
        fail = rng.random() < 0.1
        eng.tell(Result(uid=t.uid, worker=0, fitness=None if fail else
                        float(np.sum(t.genome)) / (1 + t.step),
                        state=EvalState.FAILED if fail else EvalState.COMPLETE))
        released |= {u for u, _ in eng.pbt.drain_released()}
        assert len(eng.pbt.live()) <= 6 + 1  # a checkpoint per member and the best one
        assert not eng.pbt.live() & released
    assert {CONTINUE, EXPLOIT} <= ops
    assert eng.n_finished == 500


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["perturb", "resample"]))
def test_explore_stays_in_the_cube_and_never_touches_fixed_genes(seed: int, rule: str) -> None:
    pbt = PBT(SPACE, PBTConfig(explore=rule, fixed=("layers",)), 1, 4, 0, [[]], 0)
    genome = np.random.default_rng(seed).random(SPACE.dim)
    out = pbt.explore(genome, np.random.default_rng(seed))
    assert np.all((out >= 0) & (out <= 1))
    assert out[1] == genome[1]  # "layers" is fixed
    assert SPACE.decode(out)["act"] in ("a", "b", "c")


def test_members_start_from_the_warm_start_configurations_first() -> None:
    """--warm-start on a PBT run: the first members train the known configurations (they were
    queued and never issued: every member started from the initial design)."""
    eng = pbt_engine()
    known = [SPACE.encode({"lr": 1e-3, "layers": 2, "act": "b"}),
             SPACE.encode({"lr": 3e-2, "layers": 4, "act": "c"})]
    eng.add_warm_start(known)
    starts = [eng.ask() for _ in range(4)]
    assert [t.params for t in starts[:2]] == [{"lr": pytest.approx(1e-3), "layers": 2, "act": "b"},
                                              {"lr": pytest.approx(3e-2), "layers": 4, "act": "c"}]
    assert all(t.operator == "pbt:start" for t in starts) and not eng.warm_start
    assert not any(np.array_equal(t.genome, g) for t in starts[2:] for g in known)
    eng.tell(ok(starts[0], 0.1))
    assert np.array_equal(eng.ask().genome, starts[0].genome)  # it continues as a member


def test_pbt_state_survives_a_snapshot() -> None:
    eng = pbt_engine()
    tasks = [eng.ask() for _ in range(4)]
    for t, f in zip(tasks, [0.4, 0.1, 0.3, 0.2]):
        eng.tell(ok(t, f))
    copy = Engine.from_state(SPACE, eng.config, json.loads(json.dumps(eng.get_state())))
    for _ in range(4):
        a, b = eng.ask(), copy.ask()
        assert (a.uid, a.operator, a.pbt_parent, a.step) == (b.uid, b.operator, b.pbt_parent,
                                                              b.step)
        assert np.array_equal(a.genome, b.genome)


def test_an_interval_ends_at_its_own_length_after_a_forced_change_of_interval() -> None:
    """--resume --force may change pbt.interval: an interval issued before (in flight at the
    stop, re-issued as it was) trains its own 2 steps, so its member's next interval starts
    at step 2, not at 3 (the new length)."""
    eng = pbt_engine(population=2, quantile=0.5)
    first = [eng.ask() for _ in range(2)]
    assert all(t.info["interval"] == 2 for t in first)
    cfg = replace(eng.config, pbt=replace(eng.config.pbt, interval=3))
    resumed = Engine.from_state(SPACE, cfg, json.loads(json.dumps(eng.get_state())))
    again = [resumed.ask() for _ in range(2)]
    assert [t.info["interval"] for t in again] == [2, 2]  # re-issued as logged
    resumed.tell(ok(again[0], 0.1))
    nxt = resumed.ask()
    assert (nxt.pbt_parent, nxt.step, nxt.info["interval"]) == (again[0].uid, 2, 3)


@pytest.mark.parametrize(("changes", "needle"), [
    ({"pruner": "asha", "max_steps": 8}, "pbt cannot be combined with pruner 'asha'"),
    ({"batch": 2}, "batch 2 (a batch of intervals"),
    ({"intensify": 3}, "intensify"),
])
def test_pbt_refuses_what_it_cannot_combine_with(changes: dict, needle: str) -> None:
    scenario = load_scenario(TOY)
    with pytest.raises(ScenarioError, match="pbt cannot be combined with") as err:
        override(scenario, **changes)
    assert needle in str(err.value)


def test_a_population_too_small_for_its_quantile_is_refused() -> None:
    """quantile 0.25 ranks a member among 4 scores at its step: with 3 members on one island
    nobody would ever exploit (the run was independent trainings, silently)."""
    scenario = load_scenario(TOY)
    with pytest.raises(ScenarioError, match="no member would ever exploit") as err:
        override(scenario, islands=1, population_size=3)
    assert "population_size to 4" in str(err.value) and "quantile to 0.334" in str(err.value)
    override(scenario, islands=1, population_size=4)  # enough
    override(scenario, population_size=3)  # two islands that migrate: neighbours rank too
    with pytest.raises(ValueError, match="no member would ever exploit"):
        EngineConfig(max_evals=9, population_size=3, islands=2, migration_interval=0,
                     pbt=PBTConfig(quantile=0.25))


@pytest.mark.slow
def test_asha_with_pbt_exits_2_from_the_command_line(tmp_path: Path) -> None:
    r = subprocess.run(evo_cmd(TOY, "--run-dir", tmp_path / "run", "--set", "pruner=asha",
                               "--set", "max_steps=8"),
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "pbt cannot be combined with pruner 'asha'" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "run" / "run.zarr").exists()


def _interval(uid: int, parent: int, step: int) -> Task:
    genome = SPACE.encode({"lr": 1e-2, "layers": 2, "act": "a"})
    return Task(uid=uid, island=0, genome=genome, params={"lr": 0.05, "k": 1}, seed=uid,
                info={"member": 0, "interval": 2}, pbt_parent=parent, step=step)


def test_a_missing_or_unsaved_checkpoint_fails_the_interval_with_a_clear_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    objective = load_scenario(TOY).objective
    worker = WorkerRuntime(objective, 0, "cpu", tmp_path, gpu=False)
    first = worker.run(_interval(0, -1, 0))
    assert first.state is EvalState.COMPLETE and checkpoint_file(tmp_path, 0).exists()
    second = worker.run(_interval(1, 0, 2))  # loads uid 0's checkpoint at step 2
    assert second.state is EvalState.COMPLETE and second.metrics["w"] > first.metrics["w"]
    missing = worker.run(_interval(2, 7, 2))
    assert missing.state is EvalState.FAILED
    assert "CheckpointMissing" in missing.error and "uid-7.pt does not exist" in missing.error
    monkeypatch.setenv("PBT_NO_SAVE", "1")
    unsaved = worker.run(_interval(3, 0, 2))
    assert unsaved.state is EvalState.FAILED and "without saving its checkpoint" in unsaved.error


@pytest.mark.slow
def test_the_unet_trainer_continues_from_its_checkpoint(tmp_path: Path,
                                                        sciml_isolated: None) -> None:
    from fakes import tiny_advection_task

    from evo_engine.sciml.checkpoint import load_checkpoint
    from evo_engine.sciml.training import train_advection

    task = tiny_advection_task(epochs=2)
    params = {"model": "unet", "lr": 1e-2, "scheduler_step": 1, "scheduler_gamma": 0.5}
    cache: dict = {}

    def ctx(uid: int, parent: int | None, start: int) -> Context:
        c = Context.standalone(seed=uid, cache=cache)
        c.start_step, c.stop_step = start, start + 1
        c.checkpoint_load = None if parent is None else checkpoint_file(tmp_path, parent)
        c.checkpoint_save = checkpoint_file(tmp_path, uid)
        return c

    first = ctx(0, None, 0)
    train_advection(params, first, task)
    saved = load_checkpoint(first.checkpoint_save)
    assert saved["step"] == 1 and not list(first.checkpoint_save.parent.glob("*.tmp"))
    # The next interval: explored learning rate, the StepLR schedule at step 1 applied to it.
    second = ctx(1, 0, 1)
    record = train_advection({**params, "lr": 4e-3}, second, task)
    assert [s for s, _ in second.curve] == [2] and record["epochs_run"] == 2.0
    state = load_checkpoint(second.checkpoint_save)
    assert state["step"] == 2
    # lr 4e-3 · 0.5^1 during epoch 2, then one more StepLR step for the next interval.
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(4e-3 * 0.25)
    with pytest.raises(CheckpointMissing, match="does not exist"):
        train_advection(params, ctx(2, 9, 1), task)


@pytest.mark.slow
def test_a_local_pbt_run_stopped_and_resumed_finishes_with_one_checkpoint_per_member(
        tmp_path: Path) -> None:
    """Local worker processes, a walltime signal mid-run, --resume: every interval starts
    from its parent's checkpoint at its step, none is lost, every task is the engine's
    decision, and only the members' checkpoints are left. (Exact replay with kills at any
    instant: tests/test_replay.py; the same under mpiexec: tests/test_mpi_pbt.py.)"""
    env = {**os.environ, "PBT_EVALS": "24", "PBT_SLEEP": "0.1"}
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(evo_cmd(TOY, "--workers", 2, "--run-dir", run_dir, "--quiet"),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_rows(run_dir, 10, timeout=60)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    r = subprocess.run(evo_cmd(TOY, "--workers", 2, "--run-dir", run_dir, "--resume", "--quiet"),
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "replay re-created" not in r.stderr
    z = zarr.open(str(run_dir / "run.zarr"), mode="r")
    n = z["evaluations"].attrs["committed"]
    ev = {k: z[f"evaluations/{k}"][:n] for k in ("uid", "state", "pbt_parent", "step")}
    assert sorted(ev["uid"].tolist()) == list(range(24))
    assert np.all(ev["state"] == EvalState.COMPLETE)
    step_of = dict(zip(ev["uid"].tolist(), ev["step"].tolist()))
    for parent, step in zip(ev["pbt_parent"].tolist(), ev["step"].tolist()):
        assert (parent, step) == (-1, 0) or step == step_of[parent] + 2
    check_pbt_store(run_dir, override(load_scenario(TOY), max_evals=24))
    left = sorted(p.name for p in (run_dir / "scratch" / "checkpoints").iterdir())
    # One per member and the best one: the rest went once no exploit could need them.
    assert 8 <= len(left) <= 9, left


def test_a_migrant_trains_on_the_weights_of_the_island_it_came_from(tmp_path: Path) -> None:
    """An exploit across islands loads the donor island's checkpoint, not its own island's:
    the interval's weights continue the donor's (values checked by check_pbt_store)."""
    from inline_run import drive_inline

    scenario = override(load_scenario(TOY), max_evals=24, **MIGRATING)
    engine = Engine(scenario.space, scenario.engine_config())
    assert drive_inline(scenario, tmp_path / "run", engine, None) == "finished"
    ev = check_pbt_store(tmp_path / "run", scenario, migrations=False)
    moved = engine.drain_migrations()  # drive_inline records no migrations table
    assert len(moved) >= 2 and all(m.origin != m.destination for m in moved)
    for m in moved:  # the donor's checkpoint was written on the island the weights came from
        assert ev["island"][m.uid] == m.origin


@pytest.mark.parametrize("seed", range(6))
def test_a_migrant_is_named_after_the_island_its_weights_were_written_on(seed: int) -> None:
    """Results out of order, as from busy workers: a member that has just taken another
    island's checkpoint holds it until its own interval ends, and whoever exploits it
    meanwhile takes weights written on that other island (under MPI on a loaded machine a
    task said ``migrant_from`` its donor member's island while its parent was written on its
    own: the fresh-clone suite's test_mpi_pbt failed so, 2026-12-07)."""
    cfg = PBTConfig(interval=2, quantile=0.5, fixed=("layers",))
    eng = Engine(SPACE, EngineConfig(max_evals=200, population_size=2, islands=2,
                                     migration_interval=1, seed=seed, pbt=cfg))
    rng = np.random.default_rng(seed)
    tasks: dict[int, Task] = {}
    flying: list[Task] = []
    while True:
        while (t := eng.ask()) is not None:
            tasks[t.uid] = t
            flying.append(t)
        if not flying:
            break
        done = flying.pop(int(rng.integers(len(flying))))
        eng.tell(ok(done, float(rng.random())))
    moved = [t for t in tasks.values() if t.pbt_parent >= 0
             and tasks[t.pbt_parent].island != t.island]
    assert moved, "no interval trained on another island's weights: the test proves nothing"
    for t in tasks.values():
        if t.pbt_parent < 0:
            continue
        written_on = tasks[t.pbt_parent].island
        if written_on == t.island:
            assert "migrant_from" not in t.info, (t.uid, t.info)
        else:
            assert t.info.get("migrant_from") == written_on, (t.uid, t.info, written_on)


def test_analysis_follows_the_best_members_lineage(tmp_path: Path) -> None:
    from inline_run import drive_inline

    from evo_engine.analysis.pbt import best_lineage, format_pbt, plot_pbt_schedule
    from evo_engine.store.reader import load_run

    scenario = override(load_scenario(TOY), max_evals=64)
    engine = Engine(scenario.space, scenario.engine_config())
    assert drive_inline(scenario, tmp_path / "run", engine, None) == "finished"
    run = load_run(tmp_path / "run")
    run.attrs["fingerprint_description"] = scenario.fingerprint_description()
    chain = best_lineage(run)
    best = int(run.evaluations["uid"][np.nanargmin(run.fitness)])
    assert chain[-1].uid == best or chain[-1].fitness == np.nanmin(run.fitness)
    assert chain[0].step == 0 and chain[0].operator == "pbt:start"
    for before, after in zip(chain, chain[1:]):  # each interval starts where its parent ended
        assert after.step == before.stop == before.step + 2
    text = format_pbt(run)
    assert f"best member: uid {chain[-1].uid} after {chain[-1].stop} steps" in text
    fig = plot_pbt_schedule(run)
    # A panel per explored parameter ("k" is fixed: named in the title) and the fitness.
    assert fig is not None and len(fig.axes) == 2 and "fixed: k=" in fig._suptitle.get_text()



def test_analysis_ends_each_interval_where_the_next_began_after_a_forced_interval_change(
        tmp_path: Path) -> None:
    # The run's intervals were 2 steps; a --resume --force that set pbt.interval to 5 made
    # analyze end every earlier interval 5 steps after its start (the table's "0-5", "2-7",
    # the plot's points), though the next interval of the lineage began at 2, 4, ...
    from inline_run import drive_inline

    from evo_engine.analysis.pbt import best_lineage, format_pbt, interval_stops
    from evo_engine.store.reader import load_run

    scenario = override(load_scenario(TOY), max_evals=48)
    engine = Engine(scenario.space, scenario.engine_config())
    assert drive_inline(scenario, tmp_path / "run", engine, None) == "finished"
    run = load_run(tmp_path / "run")
    described = scenario.fingerprint_description()
    described["pbt"] = {**described["pbt"], "interval": 5}  # as the forced resume records it
    run.attrs["fingerprint_description"] = described
    chain = best_lineage(run)
    assert len(chain) >= 3
    for before, after in zip(chain, chain[1:]):
        assert before.stop == after.step == before.step + 2
    ev = run.evaluations
    # every interval by the length it was issued with (the task log's), a leaf too: 13 of
    # the 48 intervals (members a later exploit dropped) have no successor to end them
    assert run.intervals is not None and set(run.intervals.tolist()) == {2}
    assert (interval_stops(run) == ev["step"] + 2).all()
    first = chain[0]
    assert f"{first.step}-{first.step + 2}" in format_pbt(run)
    # a task log that cannot say: an interval ends where its successor began, else at the
    # configured length
    run.intervals = None
    parents = {int(p) for p in ev["pbt_parent"] if p >= 0}
    stops = interval_stops(run)
    assert len(parents) < len(stops)
    for i, uid in enumerate(ev["uid"]):
        assert stops[i] == ev["step"][i] + (2 if int(uid) in parents else 5)


def test_analyze_ranks_each_interval_on_its_own_not_a_members_intervals_as_repeats(
        tmp_path: Path) -> None:
    """A member that continues with unchanged hyperparameters is not re-evaluating one
    configuration: each interval trains on from other weights. The general tables rank
    intervals (as the engine does), so the best is the best interval, not a member's mean."""
    from inline_run import drive_inline

    from evo_engine.analysis.pbt import best_lineage
    from evo_engine.analysis.repeats import format_repeats
    from evo_engine.analysis.summary import format_summary, summarize
    from evo_engine.store.reader import load_run

    scenario = override(load_scenario(TOY), max_evals=40)
    engine = Engine(scenario.space, scenario.engine_config())
    assert drive_inline(scenario, tmp_path / "run", engine, None) == "finished"
    run = load_run(tmp_path / "run")
    best = int(run.evaluations["uid"][np.nanargmin(run.fitness)])
    assert best_lineage(run)[-1].uid == best
    s = summarize(run, top=5)
    assert s.best is not None and s.best.uid == best and s.best.fitness == np.nanmin(run.fitness)
    assert s.best_estimate is not None and s.best_estimate.n == 1
    order = np.argsort(run.fitness)[:5]
    assert [t["uid"] for t in s.top] == run.evaluations["uid"][order].tolist()
    assert s.noise is None and s.luckiest is None and format_repeats(run) is None
    text = format_summary(s, "run", width=100)
    assert "intervals: 40/40 recorded" in text and "top 5 (intervals" in text
    assert "20 intervals)" in text and "evaluations" not in text, text
    # A warm start from it takes the best intervals' hyperparameters, each set once.
    from evo_engine.job.warmstart import load_configs

    configs = load_configs(f"{tmp_path / 'run'}:4", scenario.space, 4)
    assert len(configs) == 4 and all(configs.count(c) == 1 for c in configs)
    assert configs[0]["lr"] == s.top[0]["params"]["lr"]


def test_released_checkpoints_go_only_once_a_snapshot_covers_their_release(tmp_path: Path) -> None:
    from evo_engine.job.pbt_files import CheckpointSweeper

    eng = pbt_engine()
    starts = [eng.ask() for _ in range(4)]
    for t in starts:
        checkpoint_file(tmp_path, t.uid).parent.mkdir(parents=True, exist_ok=True)
        checkpoint_file(tmp_path, t.uid).write_bytes(b"w")
    for t, f in zip(starts, [0.1, 0.2, 0.3, 0.9]):
        eng.tell(ok(t, f))
    sweeper = CheckpointSweeper(eng, tmp_path)
    [eng.ask() for _ in range(4)]  # member 3 exploits member 0: its own checkpoint is released
    sweeper.collect()
    sweeper.durable(3)  # a snapshot of 3 results: the release (after 4) is not durable yet
    assert checkpoint_file(tmp_path, starts[3].uid).exists()
    sweeper.durable(4)
    assert not checkpoint_file(tmp_path, starts[3].uid).exists()
    assert all(checkpoint_file(tmp_path, t.uid).exists() for t in starts[:3])
    # A resumed job first deletes what no member holds: leftovers and interrupted saves.
    (tmp_path / "checkpoints" / "uid-99.pt").write_bytes(b"w")
    (tmp_path / "checkpoints" / ".uid-5.pt.123.tmp").write_bytes(b"w")
    assert sweeper.sweep() == 2
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == sorted(
        f"uid-{t.uid}.pt" for t in starts[:3])


@pytest.mark.slow
def test_resuming_a_pbt_run_with_another_population_is_refused_even_with_force(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A member is a place in the population: 3 islands or 5 members an island (or no PBT)
    cannot take over the snapshot's members and checkpoints. Before, --force went on: another
    island count crashed in the decisions (exit 1), another population size went on silently."""
    from evo_engine.cli.main import main

    run_dir = tmp_path / "run"
    base = [str(TOY), "--workers", "0", "--run-dir", str(run_dir), "--quiet"]
    assert main([*base, "--max-evals", "12"]) == 0
    capsys.readouterr()

    def files() -> dict[str, bytes]:
        return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*"))
                if p.is_file() and p.name != ".lock"}

    before = files()
    for change, said in [("islands=3", "islands: run has 2, scenario has 3"),
                         ("population_size=5", "population_size: run has 4, scenario has 5"),
                         ("pbt=null", "the run uses pbt, the scenario does not")]:
        for force in ([], ["--force"]):
            assert main([*base, "--resume", *force, "--max-evals", "16", "--set", change]) == 2
            err = capsys.readouterr().err
            assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
            assert f"({said})" in err and "refused even with --force" in err, err
    assert files() == before
    # Its own population resumes (another interval length is allowed, as other settings are).
    assert main([*base, "--resume", "--force", "--max-evals", "16",
                 "--set", 'pbt={"interval": 3, "fixed": ["k"]}']) == 0


def test_interval_lengths_are_read_from_the_task_log_in_either_json_spacing() -> None:
    # The task log's info is json.dumps of a dict; its spacing is the writer's choice, and a
    # reader tied to one spacing read every interval as unknown (-1) under the other.
    import json

    import numpy as np

    from evo_engine.store.reader import _interval_lengths

    infos = [json.dumps({"interval": 3, "from_interval": 9}),
             json.dumps({"pbt_parent": 1, "interval": 12}, separators=(",", ":")),
             "", json.dumps({"operator": "es"})]
    got = _interval_lengths(np.array([5, 6, 7, 8]), np.array(infos, dtype=object),
                            np.array([8, 6, 5, 7, 9]))
    assert got.tolist() == [-1, 12, 3, -1, -1]
