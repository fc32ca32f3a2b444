"""Early stopping: ASHA's promotion rule, honest selection, reports over every transport, resume."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import procs
import pytest
import zarr
from inline_run import drive_inline

from evo_engine.scenario import ScenarioError, load_scenario, override
from evo_engine.search.engine import Engine, EngineConfig
from evo_engine.search.messages import EvalState, Result, Task, frozen_genome
from evo_engine.search.pruning import ASHA, ASHAConfig
from evo_engine.space import Float, Space
from evo_engine.store.replay import rebuild_engine
from evo_engine.store.runstore import RunStore
from evo_engine.transports.worker import FINALIZE, WorkerRuntime

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
ASHA_CURVES = SCENARIOS / "asha_curves.py"
MPIEXEC = Path(sys.executable).parent / "mpiexec"
TIMEOUT = 90
STEPS = 9  # tests/scenarios/asha_curves.py


# -- the promotion rule ------------------------------------------------------------------------


def test_rungs_are_min_steps_times_powers_of_eta_below_max_steps() -> None:
    assert ASHAConfig(eta=3, min_steps=1, max_steps=9).rungs == [1, 3]
    assert ASHAConfig(eta=3, min_steps=2, max_steps=54).rungs == [2, 6, 18]
    assert ASHAConfig(eta=2, min_steps=10, max_steps=500).rungs == [10, 20, 40, 80, 160, 320]
    for bad in [dict(eta=1), dict(min_steps=0), dict(min_steps=5, max_steps=5)]:
        with pytest.raises(ValueError):
            ASHAConfig(**{"eta": 3, "min_steps": 1, "max_steps": 9, **bad})


def test_promotion_rule_against_a_hand_worked_example() -> None:
    # eta = 3, rungs at steps 1 and 3. An evaluation goes on if its value is among the best
    # max(n // 3, 1) of the n values recorded at the rung so far, its own included.
    asha = ASHA(ASHAConfig(eta=3, min_steps=1, max_steps=9))
    stop = asha.decide
    # rung 1 (step 1)                       values at the rung, sorted   top  threshold
    assert stop(0, 1, 0.50) is False      # [.50]                         1    .50
    assert stop(1, 1, 0.70) is True       # [.50 .70]                     1    .50
    assert stop(2, 1, 0.40) is False      # [.40 .50 .70]                 1    .40
    assert stop(3, 1, 0.60) is True       # [.40 .50 .60 .70]             1    .40
    assert stop(4, 1, 0.45) is True       # [.40 .45 .50 .60 .70]         1    .40
    assert stop(5, 1, 0.45) is False      # [.40 .45 .45 .50 .60 .70]     2    .45 (a tie goes on)
    assert stop(6, 1, 0.90) is True       # 7 values                      2    .45
    # Between rungs nothing is decided, and nothing is recorded.
    assert stop(0, 2, 0.35) is False
    # rung 2 (step 3)
    assert stop(0, 3, 0.30) is False      # [.30]                         1    .30
    assert stop(2, 3, 0.35) is True       # [.30 .35]                     1    .30
    assert stop(5, 4, 0.20) is False      # first report past step 3 counts there: [.20 .30 .35]
    # Past the last rung, no decision is left to make.
    assert stop(0, 9, 5.0) is False
    # A first report that jumps over both rungs is recorded at each of them.
    assert stop(7, 5, 0.10) is False      # rung 1: 8 values, top 2 → .40; rung 2: top 1 → .10
    assert stop(8, 3, 0.95) is True       # rung 1: 9 values, top 3 → .45; rung 2: fails as well
    # A non-finite value always stops (it counts as the worst value at its rung).
    assert stop(9, 1, float("nan")) is True
    assert asha.counts() == [(1, 10), (3, 5)]


def test_recording_an_evaluation_again_replaces_its_value() -> None:
    asha = ASHA(ASHAConfig(eta=2, min_steps=1, max_steps=4))
    asha.decide(0, 1, 0.5)
    asha.finish(0, [(1, 0.5), (2, 0.4)])  # the same curve told at the end: no new values
    asha.decide(1, 1, 0.6)
    asha.restart(1)  # issued again after a resume: reports from step 0 once more
    assert asha.decide(1, 1, 0.3) is False
    assert asha.counts() == [(1, 2), (2, 1)]
    assert asha.rungs[0].sorted == [0.3, 0.5]


def test_pruner_state_round_trips_through_json() -> None:
    import json

    cfg = ASHAConfig(eta=3, min_steps=1, max_steps=27)
    a = ASHA(cfg)
    rng = np.random.default_rng(0)
    for uid in range(40):
        for step in (1, 3, 9):
            if a.decide(uid, step, float(rng.random())):
                break
    a.decide(99, 1, float("inf"))
    b = ASHA(cfg)
    b.set_state(json.loads(json.dumps(a.get_state())))
    assert b.get_state() == a.get_state()
    for uid, value in [(100, 0.05), (101, 0.5), (102, 0.99)]:
        assert a.decide(uid, 9, value) == b.decide(uid, 9, value)
    with pytest.raises(ValueError):
        ASHA(ASHAConfig(eta=2, min_steps=1, max_steps=27)).set_state(a.get_state())


# -- noise: grace period and smoothed rung values (issue 25 item 6) ---------------------------

# A finished competitor that plateaus at ~0.34, then the noisy advection curve of issue 25
# (0.19 → 0.33 → 0.61 → 0.24), which goes on to end best. eta 2, rungs at steps 1, 2 and 4.
STEADY = [(1, 0.30), (2, 0.29), (3, 0.34), (4, 0.35), (5, 0.35), (6, 0.34)]
NOISY = [(1, 0.19), (2, 0.33), (3, 0.61), (4, 0.24), (5, 0.22), (6, 0.21)]


def _replay(cfg: ASHAConfig) -> tuple[ASHA, list[tuple[int, bool]]]:
    asha = ASHA(cfg)
    for step, v in STEADY:
        assert asha.decide(0, step, v) is False
    asha.finish(0, STEADY)
    said = []
    for step, v in NOISY:
        said.append((step, asha.decide(1, step, v)))
        if said[-1][1]:
            break
    return asha, said


def test_a_noisy_curve_stopped_by_one_epoch_goes_on_with_grace_and_median() -> None:
    # The raw rule stops it at the second rung (step 2: 0.33 against the competitor's 0.29).
    old, said = _replay(ASHAConfig(eta=2, min_steps=1, max_steps=8))
    assert said == [(1, False), (2, True)]
    # Grace 4: no rung before step 4; there the median of the last 3 reports (0.33, 0.61,
    # 0.24 → 0.33) beats the competitor's (0.29, 0.34, 0.35 → 0.34): it trains on to the end.
    cfg = ASHAConfig(eta=2, min_steps=1, max_steps=8, grace_steps=4, smooth=3)
    new, said = _replay(cfg)
    assert cfg.rungs == [4]
    assert said == [(s, False) for s, _ in NOISY]
    assert list(new.rungs[0].sorted) == [0.33, 0.34]
    # The best of the window (advection_multi_asha's rule): 0.24 against 0.29, kept.
    low, said = _replay(ASHAConfig(eta=2, min_steps=1, max_steps=8, grace_steps=2, smooth=3,
                                   smooth_by="min"))
    assert said == [(s, False) for s, _ in NOISY]
    assert [list(r.sorted) for r in low.rungs] == [[0.19, 0.29], [0.24, 0.29]]  # steps 2, 4
    # The mean of the window takes a third of the spike (0.3933 > 0.34): that rule stops it.
    mean, said = _replay(ASHAConfig(eta=2, min_steps=1, max_steps=8, grace_steps=4, smooth=3,
                                    smooth_by="mean"))
    assert said == [(1, False), (2, False), (3, False), (4, True)]
    assert list(mean.rungs[0].sorted) == pytest.approx([(0.29 + 0.34 + 0.35) / 3,
                                                         (0.33 + 0.61 + 0.24) / 3])
    # A non-finite report stops at once, grace or not.
    assert new.decide(2, 1, float("nan")) is True


def test_smoothed_windows_restart_with_the_evaluation_and_match_rebuild_bit_for_bit() -> None:
    cfg = ASHAConfig(eta=2, min_steps=1, max_steps=16, grace_steps=2, smooth=3)
    assert cfg.rungs == [2, 4, 8]
    assert cfg.describe() == {"name": "asha", "eta": 2, "min_steps": 1, "max_steps": 16,
                              "grace_steps": 2, "smooth": 3, "smooth_by": "median"}
    # Off, the description (hence a run's fingerprint) is what it was before these settings.
    assert ASHAConfig(eta=2, max_steps=16).describe() == {
        "name": "asha", "eta": 2, "min_steps": 1, "max_steps": 16}
    for by in ("median", "mean", "min"):
        cfg = ASHAConfig(eta=2, min_steps=1, max_steps=16, grace_steps=2, smooth=3, smooth_by=by)
        live = ASHA(cfg)
        rng = np.random.default_rng(3)
        log = []
        for uid in range(60):
            curve = []
            for step in range(1, 12):
                v = float(rng.random() + 1 / step) if uid % 17 else float("inf")
                curve.append((step, v))
                if live.decide(uid, step, v):
                    break
            live.finish(uid, curve)
            log += [(uid, s, v) for s, v in curve]
        # An evaluation in flight restarted after a resume: its old window is gone.
        live.decide(99, 1, 0.9)
        live.decide(99, 2, 0.9)
        live.restart(99)
        assert live.decide(99, 1, 5.0) is False and list(live._window[99]) == [5.0]
        back = ASHA(cfg)
        back.set_state(json.loads(json.dumps(live.get_state())))
        back.rebuild(*(np.array(c) for c in zip(*log)))
        assert [list(r.sorted) for r in back.rungs] == [list(r.sorted) for r in live.rungs]
    for bad, match in [(dict(smooth=0), "smooth"), (dict(smooth_by="ema"), "smooth_by"),
                       (dict(grace_steps=9), "no rung")]:
        with pytest.raises(ValueError, match=match):
            ASHAConfig(**{"eta": 2, "min_steps": 1, "max_steps": 8, **bad})


# -- the engine: honest selection --------------------------------------------------------------

SPACE = Space(x=Float(0.0, 1.0), y=Float(0.0, 1.0))
PRUNING = ASHAConfig(eta=3, min_steps=1, max_steps=9)


def _engine(**kw) -> Engine:
    return Engine(SPACE, EngineConfig(**{"max_evals": 50, "population_size": 2,
                                         "operator": "es", "pruning": PRUNING, **kw}))


def test_pruned_individuals_never_enter_a_population_or_adapt_sigma() -> None:
    eng = _engine()
    island = eng.islands[0]
    observed, observed_pruned = [], []
    island.operator.observe = lambda ind, accepted: observed.append(ind.uid)
    island.operator.observe_pruned = lambda ind, step: observed_pruned.append((ind.uid, step))
    t0, t1, t2 = eng.ask(0), eng.ask(0), eng.ask(0)
    eng.tell(Result(uid=t0.uid, worker=0, fitness=1.0, curve=((1, 1.2), (9, 1.0))))
    eng.tell(Result(uid=t1.uid, worker=0, fitness=2.0, curve=((1, 2.2), (9, 2.0))))
    # Pruned after one step with a partial value far below every complete one, and with a
    # (best-epoch) fitness the objective still returned: it must not displace anybody.
    _, ev = eng.tell(Result(uid=t2.uid, worker=0, fitness=0.01, state=EvalState.PRUNED,
                            error="pruned by the coordinator", curve=((1, 0.01),)))
    assert ev is not None and ev.state is EvalState.PRUNED and not ev.accepted
    assert [m.uid for m in island.population] == [t0.uid, t1.uid]
    assert eng.best is not None and eng.best.uid == t0.uid
    assert observed == [t0.uid, t1.uid] and observed_pruned == [(t2.uid, 1)]
    # A pruned evaluation spends budget like any finished one.
    assert eng.n_finished == 3 and eng.counts[EvalState.PRUNED] == 1
    # Offspring are bred from complete individuals only.
    child = eng.ask(0)
    assert child is not None and set(child.parents) <= {t0.uid, t1.uid}


def test_es_counts_a_pruned_offspring_as_a_failed_step_without_using_its_fitness() -> None:
    eng = _engine()
    es = eng.islands[0].operator
    for t in (eng.ask(0), eng.ask(0)):
        eng.tell(Result(uid=t.uid, worker=0, fitness=1.0, curve=((9, 1.0),)))
    child = eng.ask(0)
    assert child is not None and child.operator == "es"
    sigma, observed, successes = es.sigma, es.observed, es.successes
    eng.tell(Result(uid=child.uid, worker=0, fitness=None, state=EvalState.PRUNED,
                    curve=((1, -1e9),)))  # a partial value better than anything: not used
    assert es.sigma < sigma and es.observed == observed + 1 and es.successes == successes


def test_reports_for_evaluations_not_in_flight_answer_stop() -> None:
    eng = _engine()
    task = eng.ask(0)
    assert eng.report(task.uid, 1, 0.5) is False
    assert eng.report(12345, 1, 0.5) is True  # never issued
    eng.tell(Result(uid=task.uid, worker=0, fitness=0.5, curve=((1, 0.5),)))
    assert eng.report(task.uid, 3, 0.4) is True  # finished: a late report changes nothing
    assert eng.pruner is not None and eng.pruner.counts() == [(1, 1), (3, 0)]
    plain = Engine(SPACE, EngineConfig(max_evals=5))
    t = plain.ask(0)
    assert plain.report(t.uid, 1, 99.0) is False and plain.pruner is None


def test_engine_state_round_trip_keeps_the_rungs_and_restarts_evaluations_in_flight() -> None:
    eng = _engine()
    tasks = [eng.ask(0) for _ in range(6)]
    for i, t in enumerate(tasks[:4]):
        eng.report(t.uid, 1, 0.1 * (i + 1))
        eng.tell(Result(uid=t.uid, worker=0, fitness=0.1 * (i + 1), curve=((1, 0.1 * (i + 1)),)))
    eng.report(tasks[4].uid, 1, 0.05)  # in flight at the snapshot
    state = eng.get_state()
    assert state["pruner"]["config"] == PRUNING.describe()
    # Only the evaluation in flight is in the snapshot: finished ones come from the log.
    assert state["pruner"]["in_flight"] == [[[tasks[4].uid, 0.05]], []]
    back = Engine.from_state(SPACE, eng.config, state)
    assert back.get_state()["pruner"] == state["pruner"]
    assert back.pruner is not None and back.pruner.needs_rebuild
    back.pruner.rebuild(np.array([t.uid for t in tasks[:4]]), np.ones(4, int),
                        0.1 * np.arange(1, 5))
    assert back.pruner.rungs[0].sorted == eng.pruner.rungs[0].sorted
    # In-flight evaluations come back pending; issued again, they report from step 0 and
    # replace their earlier rung value instead of counting twice.
    again = back.ask(0)
    assert again is not None and again.uid == tasks[4].uid
    assert back.report(again.uid, 1, 0.05) is False
    assert back.pruner is not None and back.pruner.counts()[0] == (1, 5)
    assert eng.report(tasks[5].uid, 1, 0.3) == back.report(tasks[5].uid, 1, 0.3)
    # Continued (--force) under other rung settings: the rungs start afresh.
    other = EngineConfig(**{**eng.config.__dict__, "pruning": ASHAConfig(2, 1, 9)})
    fresh = Engine.from_state(SPACE, other, state)
    assert fresh.pruner is not None and fresh.pruner.counts() == [(1, 0), (2, 0), (4, 0), (8, 0)]


def test_runtime_never_sends_reports_of_a_finalize_task() -> None:
    asked = []

    def objective(params, ctx):
        ctx.report(1, 0.5)
        return {"fitness": 0.5, "stopped": float(ctx.should_stop())}

    def factory(task):
        return lambda step, value: asked.append(task.uid) or True

    rt = WorkerRuntime(objective, 0, "cpu", None, reporter_factory=factory, finalize=objective)
    genome = frozen_genome([0.5])
    r = rt.run(Task(uid=1, island=0, genome=genome, params={}, seed=0))
    assert r.state is EvalState.PRUNED and r.curve == ((1, 0.5),) and asked == [1]
    f = rt.run(Task(uid=1, island=0, genome=genome, params={}, seed=0, operator=FINALIZE))
    assert f.state is EvalState.COMPLETE and f.metrics["stopped"] == 0.0 and asked == [1]


# -- scenario settings --------------------------------------------------------------------------


def test_scenario_pruner_settings_are_validated_and_fingerprinted() -> None:
    base = load_scenario(SCENARIOS / "quick.py")
    assert "pruner" not in base.fingerprint_description()
    assert base.engine_config().pruning is None
    with pytest.raises(ScenarioError, match="max_steps"):
        override(base, pruner="asha")
    with pytest.raises(ScenarioError, match="must exceed min_steps"):
        override(base, pruner="asha", min_steps=4, max_steps=4)
    with pytest.raises(ScenarioError, match="eta"):
        override(base, pruner="asha", eta=1, max_steps=9)
    with pytest.raises(ScenarioError, match="pruner"):
        override(base, pruner="hyperband", max_steps=9)
    on = override(base, pruner="asha", eta=2, max_steps=8)
    assert on.fingerprint_description()["pruner"] == {
        "name": "asha", "eta": 2, "min_steps": 1, "max_steps": 8}
    assert on.fingerprint() != base.fingerprint()
    assert on.engine_config().pruning == ASHAConfig(eta=2, min_steps=1, max_steps=8)
    noisy = override(base, pruner="asha", eta=2, max_steps=8, grace_steps=3, smooth=3)
    assert noisy.engine_config().pruning == ASHAConfig(2, 1, 8, grace_steps=3, smooth=3)
    assert noisy.fingerprint() != on.fingerprint()
    with pytest.raises(ScenarioError, match=r"grace_steps \(5\) is past the last rung \(4 of 1, 2, 4\)"):
        override(base, pruner="asha", eta=2, max_steps=8, grace_steps=5)
    with pytest.raises(ScenarioError, match="smooth_by"):
        override(base, pruner="asha", eta=2, max_steps=8, smooth_by="ema")


@pytest.mark.parametrize("preset", ["cpu", "full"])
def test_advection_multi_asha_is_advection_multi_with_asha(preset: str) -> None:
    import pickle

    root = Path(__file__).resolve().parent.parent / "scenarios"
    base = load_scenario(root / "advection_multi.py", preset)
    asha = load_scenario(root / "advection_multi_asha.py", preset)
    assert asha.name == "advection_multi_asha" and asha.pruner == "asha"
    assert asha.space.describe() == base.space.describe()
    assert asha.operator == base.operator == "surrogate"  # both presets (issue 15)
    assert asha.max_evals > base.max_evals
    pruning = asha.engine_config().pruning
    assert pruning is not None and pruning.max_steps == asha.max_steps
    assert pruning.rungs == ([20, 60, 180] if preset == "full" else [2, 4, 8, 16])
    assert (pruning.smooth, pruning.smooth_by) == (3, "min")
    pickle.dumps((asha.objective, asha.finalize, asha.prepare))


# -- in process: coordinator, recorder, store, resume -------------------------------------------


def read_run(run_dir: Path) -> dict[str, np.ndarray]:
    z = zarr.open_group(str(run_dir / "run.zarr"), mode="r")
    n = int(z["evaluations"].attrs["committed"])
    out = {k: np.asarray(z[f"evaluations/{k}"][:n])
           for k in ("uid", "state", "fitness", "worker", "metrics/steps", "metrics/rank")}
    if "curves" in z:
        m = int(z["curves"].attrs["committed"])
        out.update({f"curve_{k}": np.asarray(z[f"curves/{k}"][:m]) for k in ("uid", "step", "value")})
    return out


def check_curves(run: dict[str, np.ndarray]) -> None:
    """Every finished evaluation has its whole curve once: steps 1, 2, ... up to where it ended."""
    assert set(run["curve_uid"].tolist()) == set(run["uid"].tolist())
    for uid, steps, state in zip(run["uid"], run["metrics/steps"], run["state"]):
        mine = run["curve_step"][run["curve_uid"] == uid]
        assert mine.tolist() == list(range(1, int(steps) + 1)), uid
        assert (state == EvalState.PRUNED) == (steps < STEPS)


def test_pruned_evaluations_keep_their_curves_in_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASHA_SLEEP", "0")
    scenario = load_scenario(ASHA_CURVES)
    engine = Engine(scenario.space, scenario.engine_config())
    assert drive_inline(scenario, tmp_path / "run", engine, None) == "finished"
    run = read_run(tmp_path / "run")
    pruned = run["state"] == EvalState.PRUNED
    assert 0 < pruned.sum() < len(pruned)
    assert np.isnan(run["fitness"][pruned]).all()  # a partial result is no fitness
    assert np.isfinite(run["fitness"][~pruned]).all()
    check_curves(run)
    assert engine.best is not None
    assert engine.best.fitness == np.nanmin(run["fitness"])
    # analyze's check of the rungs: these curves rank as their final values do at every rung.
    import argparse

    from evo_engine.cli.analyze import analyze_main

    # (the inline driver leaves out the attribute a real job writes with the settings)
    RunStore.open(tmp_path / "run").set_attrs(
        fingerprint_description=scenario.fingerprint_description())
    out: list[str] = []
    analyze_main(argparse.Namespace(run_dir=tmp_path / "run", plots=None, fmt="png", csv=None,
                                    top=None, baseline=None, front=None), out.append)
    text = "\n".join(out)
    assert "ASHA rungs against final fitness" in text
    n_complete = int((~pruned).sum())
    for step in scenario.engine_config().pruning.rungs:  # type: ignore[union-attr]
        assert f"step {step}: rho +1.00 (p 0), n {n_complete}" in text


def rung_values(engine: Engine) -> list[tuple[list[float], dict[int, float]]]:
    """Every rung's values (sorted) and those of evaluations in flight (by uid)."""
    assert engine.pruner is not None
    return [(r.sorted, r.by_uid) for r in engine.pruner.rungs]


def test_stopped_and_resumed_run_makes_the_same_decisions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASHA_SLEEP", "0")
    # Inline runs are deterministic, so a run stopped by a signal (which writes a snapshot)
    # and resumed repeats the whole history only if the rung values came back exactly.
    scenario = override(load_scenario(ASHA_CURVES), checkpoint_every=7)
    cfg = scenario.engine_config()
    drive_inline(scenario, tmp_path / "whole", Engine(scenario.space, cfg), None)
    part = tmp_path / "part"
    assert drive_inline(scenario, part, Engine(scenario.space, cfg), stop_after=17) == "signal:SIGTERM"
    resumed, _ = rebuild_engine(RunStore.open(part), scenario.space, cfg, print)
    assert drive_inline(scenario, part, resumed, None) == "finished"
    a, b = read_run(tmp_path / "whole"), read_run(part)
    for key in ("uid", "state", "fitness", "curve_uid", "curve_step", "curve_value"):
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_rung_values_after_the_last_snapshot_are_replayed_from_the_curves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASHA_SLEEP", "0")
    scenario = override(load_scenario(ASHA_CURVES), checkpoint_every=7)
    cfg = scenario.engine_config()
    live = Engine(scenario.space, cfg)
    # No stop snapshot, as after a kill -9: the results after the snapshot at 14 are replayed.
    assert drive_inline(scenario, tmp_path, live, stop_after=17, last_snapshot=False) != "finished"
    store = RunStore.open(tmp_path)
    # A crash after writing curve rows but before committing their evaluations leaves orphan
    # rows at the end of the curves table: resume cuts them off.
    store.require_curves().append({"uid": [999, 999], "step": [1, 2], "value": [0.5, 0.4]}, 2)
    resumed, _ = rebuild_engine(store, scenario.space, cfg, print)
    assert store.curves is not None and 999 not in store.curves.read("uid")
    assert rung_values(resumed) == rung_values(live)
    assert drive_inline(scenario, tmp_path, resumed, None) == "finished"
    check_curves(read_run(tmp_path))


# -- real processes: local workers, signals and --resume, mpiexec -------------------------------


def evo(*args: object) -> list[str]:
    return [sys.executable, "-m", "evo_engine", str(ASHA_CURVES), *map(str, args)]


def committed(run_dir: Path) -> int:
    try:
        z = zarr.open_group(str(run_dir / "run.zarr"), mode="r")
        return int(z["evaluations"].attrs["committed"])
    except (FileNotFoundError, KeyError):
        return 0  # not created yet


def test_local_workers_report_then_stop_on_a_signal_and_resume(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    env = {**os.environ, "ASHA_SLEEP": "0.05", "ASHA_EVALS": "30", "ASHA_CHECKPOINT": "4"}
    proc = subprocess.Popen(evo("--workers", 2, "--run-dir", run_dir, "--quiet"), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None and committed(run_dir) < 8:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 3, err
    before = read_run(run_dir)
    assert 8 <= before["uid"].size < 30
    r = subprocess.run(evo("--workers", 2, "--run-dir", run_dir, "--resume"), env=env,
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert "pruned" in r.stdout
    run = read_run(run_dir)
    assert sorted(run["uid"].tolist()) == list(range(30))  # each uid once
    assert (run["state"] == EvalState.PRUNED).any() and (run["state"] == EvalState.COMPLETE).any()
    check_curves(run)  # nothing lost, nothing twice, in-flight ones rerun from step 1
    snap = RunStore.open(run_dir, mode="r").latest_snapshot()
    assert snap is not None
    saved = snap["engine"]["pruner"]
    assert saved["in_flight"] == [[] for _ in saved["in_flight"]]  # the run finished
    c = saved["config"]
    asha = ASHA(ASHAConfig(c["eta"], c["min_steps"], c["max_steps"]))
    asha.set_state(saved)
    asha.rebuild(run["curve_uid"], run["curve_step"], run["curve_value"])
    counts = [n for _, n in asha.counts()]
    assert counts[0] == 30 and counts[0] > counts[1] > 0


@pytest.mark.mpi
@pytest.mark.skipif(not MPIEXEC.exists(), reason=f"no mpiexec at {MPIEXEC}")
def test_reports_travel_under_mpiexec(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    env = dict(os.environ, PATH=f"{MPIEXEC.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    cmd = [str(MPIEXEC), "-n", "3", *evo("--run-dir", run_dir, "--quiet")]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    done = procs.finish(proc, TIMEOUT)
    err = done.stderr
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    run = read_run(run_dir)
    assert sorted(run["uid"].tolist()) == list(range(40))
    assert set(run["worker"].tolist()) == {0, 1}
    assert np.array_equal(run["metrics/rank"], run["worker"] + 1.0)  # worker w is rank w + 1
    pruned = run["state"] == EvalState.PRUNED
    assert 0 < pruned.sum() < len(pruned)
    check_curves(run)
    assert not math.isnan(np.nanmin(run["fitness"]))


def test_snapshot_state_stays_flat_while_rebuild_restores_every_value() -> None:
    cfg = ASHAConfig(eta=3, min_steps=1, max_steps=27)
    live = ASHA(cfg)
    rng = np.random.default_rng(1)
    log: list[tuple[int, int, float]] = []
    sizes = []
    for uid in range(3000):
        curve = []
        for step in (1, 2, 3, 9, 10):
            value = float(rng.random()) if uid % 97 else float("nan")
            curve.append((step, value))
            if live.decide(uid, step, value):
                break
        live.finish(uid, curve)
        log += [(uid, s, v) for s, v in curve]
        if uid in (299, 2999):
            sizes.append(len(json.dumps(live.get_state())))
    assert sizes[0] == sizes[1]  # nothing in flight: the state does not grow with the run
    live.decide(5000, 3, 0.25)  # one in flight
    back = ASHA(cfg)
    back.set_state(json.loads(json.dumps(live.get_state())))
    uid, step, value = (np.array(c) for c in zip(*log))
    back.rebuild(uid, step, value)
    assert [r.sorted for r in back.rungs] == [r.sorted for r in live.rungs]
    assert back.counts() == live.counts() and back.counts()[0] == (1, 3001)
    for u, v in [(6000, 0.01), (6001, 0.5), (6002, 0.99)]:
        assert live.decide(u, 9, v) == back.decide(u, 9, v)
