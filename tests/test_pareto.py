"""Several objectives and constraints: ranking, hypervolume, the engine, scenarios, replay."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evo_engine import Optimizer
from evo_engine.search.engine import Engine, EngineConfig
from evo_engine.search.messages import EvalState, Result, Task
from evo_engine.search.pareto import (
    VIOLATION,
    Objectives,
    hypervolume,
    knee,
    nondominated_ranks,
    parego_scalars,
    pareto_order,
)
from evo_engine.space import Categorical, Float, Int, Space
from evo_engine.store.replay import rebuild_engine
from evo_engine.store.runstore import RunStore
from evo_engine.store.writer import Recorder

SPACE = Space(x=Float(0.0, 1.0), y=Float(0.0, 1.0), n=Int(1, 6), c=Categorical(["a", "b", "c"]))
SPEC = Objectives(("f1", "f2"), ("min", "max"), (("mem", "<=", 0.8),))


def named(task: Task) -> dict[str, float]:
    g = np.asarray(task.genome)
    return {"f1": float(g[0]), "f2": float(-(1 - np.sqrt(g[0])) - g[1]), "mem": float(g[2])}


# -- ranking and hypervolume ------------------------------------------------------------------


def _brute_ranks(F: np.ndarray) -> list[int]:
    ranks = [-1] * len(F)
    left, r = set(range(len(F))), 0
    while left:
        front = {i for i in left if not any(np.all(F[j] <= F[i]) and np.any(F[j] < F[i])
                                            for j in left if j != i)}
        for i in front:
            ranks[i] = r
        left -= front
        r += 1
    return ranks


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4), st.integers(0, 4)),
                min_size=1, max_size=12))
def test_fronts_match_a_brute_force_peel(points: list[tuple[int, int, int]]) -> None:
    F = np.array(points, dtype=float)
    assert nondominated_ranks(F).tolist() == _brute_ranks(F)


def test_infeasible_points_rank_behind_every_feasible_one_by_violation() -> None:
    F = np.array([[0.0, 0.0], [5.0, 5.0], [1.0, 1.0], [9.0, 9.0]])
    cv = np.array([0.3, 0.0, 0.1, 0.0])
    # (0, 0) dominates everything but violates more than (1, 1): both come after (5, 5), (9, 9).
    assert nondominated_ranks(F, cv).tolist() == [3, 0, 2, 1]
    assert pareto_order(F, cv).tolist() == [1, 3, 2, 0]


def test_pareto_order_keeps_extremes_and_drops_the_smallest_hypervolume_share() -> None:
    F = np.array([[0.0, 1.0], [0.5, 0.5], [0.52, 0.48], [1.0, 0.0], [0.9, 0.9]])
    order = pareto_order(F).tolist()
    assert order[-1] == 4  # dominated
    assert set(order[:2]) == {0, 3}  # extremes first (infinite share)
    assert order[2] == 1 and order[3] == 2  # (0.52, 0.48) adds less than (0.5, 0.5)


def test_hypervolume_two_and_three_objectives() -> None:
    assert hypervolume(np.array([[1.0, 2.0], [2.0, 1.0]]), [3.0, 3.0]) == pytest.approx(3.0)
    assert hypervolume(np.array([[4.0, 0.0]]), [3.0, 3.0]) == 0.0
    a, b = np.array([0.2, 0.5, 0.6]), np.array([0.6, 0.3, 0.1])
    ref = np.ones(3)
    inter = np.prod(ref - np.maximum(a, b))
    want = np.prod(ref - a) + np.prod(ref - b) - inter
    assert hypervolume(np.array([a, b]), ref) == pytest.approx(want)
    # A dominated point adds nothing.
    assert hypervolume(np.array([a, b, [0.7, 0.7, 0.7]]), ref) == pytest.approx(want)


def test_parego_and_knee() -> None:
    F = np.array([[0.0, 1.0], [0.4, 0.4], [1.0, 0.0], [0.0, 0.0]])
    s = parego_scalars(F, np.array([0.0, 0.0, 0.0, 2.0]), np.array([0.5, 0.5]))
    assert s[1] < s[0] and s[0] == pytest.approx(s[2]) and s[2] < s[3]  # infeasible: worst
    assert knee(F[:3]) == 1


# -- the engine -------------------------------------------------------------------------------


def test_an_infeasible_evaluation_is_complete_flagged_and_never_the_incumbent() -> None:
    eng = Engine(SPACE, EngineConfig(max_evals=4, population_size=2, objectives=SPEC))
    a, b, c = eng.ask(), eng.ask(), eng.ask()
    assert a is not None and b is not None and c is not None
    _, ev = eng.tell(Result(uid=a.uid, worker=0, fitness=0.0,
                            metrics={"f1": 0.1, "f2": 2.0, "mem": 0.9}))
    assert ev is not None and ev.state is EvalState.COMPLETE
    assert ev.result.metrics[VIOLATION] == pytest.approx(0.1)
    assert ev.result.values == (0.1, 2.0) and ev.result.fitness == pytest.approx(0.1)
    assert eng.best is None  # infeasible: no incumbent
    _, ev = eng.tell(Result(uid=b.uid, worker=0, fitness=0.0,
                            metrics={"f1": 0.5, "f2": 1.0, "mem": 0.2}))
    assert ev is not None and ev.result.metrics[VIOLATION] == 0.0
    assert eng.best is not None and eng.best.uid == b.uid
    pop = eng.islands[0].population
    assert [m.uid for m in pop] == [b.uid, a.uid]  # feasible first, though a dominates it
    assert pop[0].values == (0.5, -1.0)  # "max" is negated
    _, ev = eng.tell(Result(uid=c.uid, worker=0, fitness=0.0, metrics={"f1": 0.1}))
    assert ev is not None and ev.state is EvalState.FAILED and "'f2'" in (ev.error or "")


def test_single_objective_snapshots_carry_no_objective_fields() -> None:
    eng = Engine(SPACE, EngineConfig(max_evals=3, population_size=2))
    t = eng.ask()
    assert t is not None
    eng.tell(Result(uid=t.uid, worker=0, fitness=1.0))
    member = eng.get_state()["islands"][0]["population"][0]
    assert "values" not in member and "objectives" not in eng.get_state()["config"]


@pytest.mark.parametrize("operator", ["ga", "es", "surrogate", "random"])
def test_every_operator_improves_on_its_design_under_pareto_ranking(operator: str) -> None:
    space = Space(**{f"x{i}": Float(0.0, 1.0) for i in range(4)})
    opt = Optimizer(space, operator=operator, seed=2, population_size=8,
                    objectives=["f1", "f2"], operator_settings={"candidates": 64}
                    if operator == "surrogate" else None)
    F = []
    for _ in range(60):
        cand = opt.ask()
        x = np.array([cand.params[f"x{i}"] for i in range(4)])
        g = 1 + 9 * x[1:].mean()
        f = (float(x[0]), float(g * (1 - np.sqrt(x[0] / g))))
        opt.tell(cand, {"f1": f[0], "f2": f[1]})
        F.append(f)
    ref = [1.1, 11.0]
    design = hypervolume(np.array(F[:8]), ref)
    assert hypervolume(np.array(F), ref) > design * 1.02
    front = opt.front
    assert front and all(b.fitness >= 0 for b in front)
    # The front holds no member another member dominates.
    vals = [(b.params["x0"], b.fitness) for b in front]
    assert len(vals) == len(set(vals))


def test_optimizer_state_round_trips_objectives(tmp_path: Path) -> None:
    opt = Optimizer(SPACE, operator="surrogate", seed=1, population_size=4,
                    objectives=[("f1", "min"), ("f2", "max")], constraints={"mem": ("<=", 0.8)},
                    operator_settings={"candidates": 32, "min_points": 3})
    for _ in range(10):
        c = opt.ask()
        opt.tell(c, {"f1": c.genome[0], "f2": c.genome[1], "mem": c.genome[2]})
    opt.save(tmp_path / "o.json")
    again = Optimizer.load(tmp_path / "o.json", space=SPACE)
    for _ in range(3):
        a, b = opt.ask(), again.ask()
        assert np.array_equal(a.genome, b.genome)
        opt.tell(a, {"f1": 0.5, "f2": 0.5, "mem": 0.1})
        again.tell(b, {"f1": 0.5, "f2": 0.5, "mem": 0.1})


# -- replay -----------------------------------------------------------------------------------


@pytest.mark.parametrize("operator", ["surrogate", "ga"])
def test_multi_objective_replay_with_results_out_of_order_is_exact(tmp_path: Path,
                                                                   operator: str) -> None:
    config = EngineConfig(max_evals=40, islands=2, population_size=4, seed=12, operator=operator,
                          migration_interval=3, objectives=SPEC,
                          operator_settings={"candidates": 32, "min_points": 4}
                          if operator == "surrogate" else {})
    store = RunStore.create(tmp_path, attrs={"max_evals": 40},
                            param_kinds={n: p.kind for n, p in SPACE.items()}, dim=SPACE.dim)
    rec = Recorder(store, SPACE, background=False)
    engine = Engine(SPACE, config)
    order = itertools.cycle([0, -1, 1, -1, 0])
    for turn in range(30):
        while len(engine.in_flight) < 4 and (task := engine.ask()) is not None:
            rec.record_task(task)
        uids = sorted(engine.in_flight)
        uid = uids[next(order) % len(uids)]
        task = engine.in_flight[uid]
        _, ev = engine.tell(Result(uid=uid, worker=turn % 3, fitness=0.0, metrics=named(task)))
        assert ev is not None
        rec.record(ev)
        if turn == 13:
            rec.snapshot(engine.get_state())
    rec.close()
    store.close("stopped", "signal:SIGTERM")
    warnings: list[str] = []
    rebuilt, _ = rebuild_engine(RunStore.open(tmp_path), SPACE, config, warnings.append)
    assert warnings == []
    assert rebuilt.get_state() == engine.get_state()
    pops = [[m.values for m in isl.population] for isl in engine.islands]
    assert any(len(p) == 4 for p in pops) and all(v for p in pops for v in p)
    reissued = [rebuilt.ask() for _ in range(len(rebuilt.pending))]
    assert [t.uid for t in reissued if t is not None] == sorted(engine.in_flight)
    for _ in range(4):  # and it goes on issuing what the uninterrupted run issues
        for eng in (engine, rebuilt):
            uid = min(eng.in_flight) if eng.in_flight else None
            if uid is not None:
                eng.tell(Result(uid=uid, worker=0, fitness=0.0,
                                metrics=named(eng.in_flight[uid])))
        a, b = engine.ask(), rebuilt.ask()
        assert a is not None and b is not None
        assert np.array_equal(a.genome, b.genome) and a.seed == b.seed


# -- scenarios, the CLI and analysis ----------------------------------------------------------

SCENARIO = '''
from evo_engine import Float, Space
from evo_engine.scenario import Scenario

def f(params, ctx):
    return {{"a": params["x"], "b": 1 - params["x"] ** 0.5, "mem": params["x"] * 50}}

def make_scenario(preset):
    return Scenario(name="m", space=Space(x=Float(0, 1)), objective=f, {extra})
'''


@pytest.mark.parametrize(("extra", "needle"), [
    ('objectives=[("a", "minimise")]', "is not a name or a (name, 'min'|'max') pair"),
    ('objectives=["a", "a"]', "objective names repeat"),
    ('constraints={"mem": ("<", 40)}', "constraints need objectives"),
    ('objectives=["a"], constraints={"mem": ("<", 40)}', "is not ('<=' or '>=', a finite"),
    ('objectives=["a"], constraints={"mem": ("<=", float("nan"))}', "a finite number"),
    ('objectives=["a", "b"], repeats=2', "repeats and intensify estimate one noisy fitness"),
    # One objective and its sense, not wrapped in a list: not the objectives "a" and "min".
    ('objectives=("a", "min")', "objectives: 'min' is a sense, not an objective name"),
    ('objectives="a"', "objectives: 'a' is one string"),
])
def test_bad_objectives_are_scenario_errors(tmp_path: Path, extra: str, needle: str) -> None:
    from evo_engine.scenario import ScenarioError, load_scenario

    p = tmp_path / "s.py"
    p.write_text(SCENARIO.format(extra=extra))
    with pytest.raises(ScenarioError) as err:
        load_scenario(p)
    assert needle in str(err.value)


@pytest.mark.parametrize(("objectives", "needle"), [
    ("val", "objectives: 'val' is one string"),  # not the objectives 'v', 'a', 'l'
    ("loss", "objectives: 'loss' is one string"),  # not "objective names repeat"
    ("", "objectives: '' is one string"),
    (("lr_term", "min"), "objectives: 'min' is a sense, not an objective name"),
    (["f1", ("max", "max")], "objectives: 'max' is a sense, not an objective name"),
    (7, "objectives: 7 is not a list"),
])
def test_the_optimizer_refuses_objectives_that_are_not_a_list(objectives: object,
                                                               needle: str) -> None:
    with pytest.raises(ValueError) as err:
        Optimizer(SPACE, objectives=objectives)  # type: ignore[arg-type]
    assert needle in str(err.value)
    assert "[('" in str(err.value)  # and it shows the shape that is meant


def test_the_cli_exits_2_on_objectives_that_are_one_pair(tmp_path: Path) -> None:
    import subprocess
    import sys

    p = tmp_path / "s.py"
    p.write_text(SCENARIO.format(extra='objectives=("a", "min"), max_evals=4'))
    run = subprocess.run([sys.executable, "-m", "evo_engine", str(p), "--workers", "0",
                          "--run-dir", str(tmp_path / "r")], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 2, (run.returncode, run.stdout, run.stderr)
    assert "objectives: 'min' is a sense, not an objective name" in run.stderr
    assert not (tmp_path / "r" / "run.zarr").exists()


def test_a_scenario_objective_gets_the_first_objective_as_fitness(tmp_path: Path) -> None:
    from evo_engine.scenario import load_scenario

    p = tmp_path / "s.py"
    p.write_text(SCENARIO.format(extra='objectives=[("b", "max"), "a"]'))
    s = load_scenario(p)
    out = s.objective({"x": 0.25}, None)
    assert out["fitness"] == pytest.approx(-0.5) and out["a"] == 0.25
    with pytest.raises(ValueError, match="'b' missing"):
        s.objective.__class__(lambda p, c: {"a": 1.0}, s.objective.spec)({"x": 0.1}, None)


@pytest.mark.slow
def test_a_constrained_run_records_infeasible_rows_and_analyze_writes_the_front(
        tmp_path: Path) -> None:
    import csv
    import subprocess
    import sys

    p = tmp_path / "s.py"
    p.write_text(SCENARIO.format(extra='objectives=["a", "b"], constraints={"mem": ("<=", 30)}, '
                                       'population_size=6, max_evals=40'))
    run = subprocess.run([sys.executable, "-m", "evo_engine", str(p), "--workers", "0",
                          "--run-dir", str(tmp_path / "r")], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "Pareto front:" in run.stdout and "knee" in run.stdout
    out = subprocess.run([sys.executable, "-m", "evo_engine", "analyze", str(tmp_path / "r"),
                          "--front", str(tmp_path / "front.csv")], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "Pareto front (a min, b min; subject to mem <= 30)" in out.stdout
    # Races cannot run with several objectives: no advice to set intensify, run or analyze.
    assert "intensify" not in run.stdout and "intensify" not in out.stdout
    with (tmp_path / "front.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    x = np.array([float(r["x"]) for r in rows])
    # Feasible means x <= 0.6; on this problem every feasible point is on the front.
    assert rows and np.all(x <= 0.6) and sum(int(r["knee"]) for r in rows) == 1
    import zarr

    z = zarr.open_group(str(tmp_path / "r" / "run.zarr"), mode="r")
    n = z["evaluations"].attrs["committed"]
    cv = z["evaluations/metrics/constraint_violation"][:n]
    xs = z["evaluations/params/x"][:n]
    assert np.all(z["evaluations/state"][:n] == int(EvalState.COMPLETE))
    assert np.allclose(cv, np.maximum(0, xs * 50 - 30))
    assert (cv > 0).any()
    from evo_engine.analysis.front import hypervolume_curve
    from evo_engine.store.reader import load_run

    curve = hypervolume_curve(load_run(tmp_path / "r"))
    assert curve is not None
    a = z["evaluations/metrics/a"][:n][cv == 0]
    b = z["evaluations/metrics/b"][:n][cv == 0]
    F = np.column_stack([a, b])
    ref = F.max(axis=0) + 0.1 * (F.max(axis=0) - F.min(axis=0))
    assert curve[2][-1] == pytest.approx(hypervolume(F, ref))
    assert np.all(np.diff(curve[2]) >= 0)


@pytest.mark.parametrize("preset", ["cpu", "full"])
def test_the_advection_two_objective_scenario_loads_and_pickles(preset: str) -> None:
    import pickle

    from evo_engine.scenario import NamedValues, load_scenario

    s = load_scenario(Path(__file__).resolve().parent.parent / "scenarios"
                      / "advection_multi_moo.py", preset)
    spec = s.engine_config().objectives
    assert spec is not None and spec.names == ("val_nrmse", "n_params")
    assert spec.constraints == (("n_params", "<=", 2e6),) and s.intensify == 0
    assert isinstance(s.objective, NamedValues) and isinstance(s.objective_batch, NamedValues)
    again = pickle.loads(pickle.dumps((s.objective, s.objective_batch, s.finalize)))
    assert again[0].spec == spec


def test_asha_judges_rungs_by_the_reported_first_objective_and_pruned_never_join() -> None:
    from evo_engine.search.pruning import ASHAConfig

    eng = Engine(SPACE, EngineConfig(max_evals=6, population_size=2, objectives=SPEC,
                                     operator="surrogate",
                                     operator_settings={"min_points": 2, "candidates": 16},
                                     pruning=ASHAConfig(eta=2, min_steps=1, max_steps=4)))
    a, b = eng.ask(), eng.ask()
    assert a is not None and b is not None
    assert eng.report(a.uid, 1, 0.1) is False  # the best at its rung so far goes on
    assert eng.report(b.uid, 1, 0.9) is True   # behind on the first objective: stop
    _, ev = eng.tell(Result(uid=b.uid, worker=0, fitness=None, state=EvalState.PRUNED,
                            curve=((1, 0.9),)))
    assert ev is not None and ev.state is EvalState.PRUNED
    eng.tell(Result(uid=a.uid, worker=0, fitness=0.0, metrics={"f1": 0.1, "f2": 1.0, "mem": 0}))
    assert [m.uid for m in eng.islands[0].population] == [a.uid]
    op = eng.islands[0].operator
    assert op.V[0] is None and op.V[1] == [0.1, -1.0, 0.0]  # pruned: no objective vector
    y = op._parego([])
    assert y[0] > y[1]  # the pruned entry scores worst
    assert eng.ask() is not None


def test_front_csv_of_a_single_objective_run_is_an_input_error(tmp_path: Path) -> None:
    from evo_engine.analysis.front import format_front, write_front_csv
    from evo_engine.errors import InputError
    from evo_engine.store.reader import Run

    run = Run(path=tmp_path, attrs={"fingerprint_description": {"operator": "ga"}},
              evaluations={})
    assert format_front(run) == ""
    with pytest.raises(InputError, match="one objective"):
        write_front_csv(run, tmp_path / "f.csv")
    assert not (tmp_path / "f.csv").exists()


def test_one_objective_with_a_constraint_has_a_front_but_no_pareto_plot(tmp_path: Path) -> None:
    """objectives=["err"] is how a constraint comes with one objective: the front is the best
    feasible point, and ``analyze --plots`` leaves pareto.png out (there is no plane to draw)
    instead of failing with a ZeroDivisionError (exit 1)."""
    from evo_engine.analysis.front import front_table, plot_hypervolume, plot_pareto
    from evo_engine.store.reader import Run

    err, mem = np.array([0.3, 0.1, 0.2, 0.4]), np.array([1.0, 9.0, 2.0, 0.5])
    run = Run(path=tmp_path, attrs={"fingerprint_description": {
        "objectives": [["err", "min"]], "constraints": [["mem", "<=", 4.0]]}},
        evaluations={"uid": np.arange(4), "state": np.full(4, int(EvalState.COMPLETE)),
                     "fitness": err, "metrics/err": err, "metrics/mem": mem,
                     f"metrics/{VIOLATION}": np.maximum(mem - 4.0, 0.0),
                     "t_start": np.zeros(4), "t_end": np.ones(4)})
    assert front_table(run)["uid"] == [2]  # uid 1 is better but infeasible
    assert plot_pareto(run) is None
    assert plot_hypervolume(run) is not None


def test_the_sync_baseline_keeps_the_pareto_best_of_each_generation() -> None:
    eng = Engine(SPACE, EngineConfig(max_evals=12, population_size=4, sync=True,
                                     objectives=Objectives(("f1", "f2"), ("min", "min"))))
    told = []
    while not eng.done:
        tasks = []
        while (t := eng.ask()) is not None:
            tasks.append(t)
        for t in reversed(tasks):  # out of order within the generation
            g = np.asarray(t.genome)
            eng.tell(Result(uid=t.uid, worker=0, fitness=0.0,
                            metrics={"f1": float(g[0]), "f2": float(1 - g[0] + g[1])}))
            told.append((t.uid, g[0], 1 - g[0] + g[1]))
    F = np.array([(a, b) for _, a, b in told])
    uids = [u for u, _, _ in told]
    order = pareto_order(F)
    want = [uids[i] for i in order[:4]]
    # On this seed the survivors of three (mu + lambda) truncations are the best 4 of all 12 in
    # one-shot Pareto order (a regression check: in general crowding can make them differ);
    # truncating by fitness (the first objective) keeps others.
    assert sorted(m.uid for m in eng.islands[0].population) == sorted(want)
    assert sorted(want) != sorted(uids[i] for i in np.argsort(F[:, 0])[:4])


def _front_run(tmp_path: Path, points: list[tuple[int, float, float]], final_uid=None):
    from evo_engine.store.reader import Run

    uid = np.array([u for u, _, _ in points])
    return Run(path=tmp_path, attrs={
        "fingerprint_description": {"objectives": [["a", "min"], ["b", "min"]]},
        **({"final": [{"uid": final_uid}]} if final_uid is not None else {})},
        evaluations={"uid": uid, "state": np.full(len(uid), int(EvalState.COMPLETE)),
                     "fitness": np.array([a for _, a, _ in points]),
                     "metrics/a": np.array([a for _, a, _ in points]),
                     "metrics/b": np.array([b for _, _, b in points])})


def test_the_front_names_the_uid_finalize_ran_not_another_with_the_same_point(tmp_path):
    from evo_engine.analysis.front import format_front, front_table

    # uids 28 and 34 share the knee's point (0.5, 0.5); finalize ran 34 (the populations'
    # knee). Merging identical points kept the first row, so the table starred 28 as
    # "finalize's pick" while the run had named 34.
    pts = [(0, 0.0, 1.0), (28, 0.5, 0.5), (30, 1.0, 0.0), (34, 0.5, 0.5), (40, 0.9, 0.9)]
    table = front_table(_front_run(tmp_path, pts, final_uid=34))
    assert table["uid"] == [0, 34, 30] and table["knee"] == [0, 1, 0]
    assert "*34" in format_front(_front_run(tmp_path, pts, final_uid=34))
    # Without a recorded pick, the first row of the point stays (as before).
    assert front_table(_front_run(tmp_path, pts))["uid"] == [0, 28, 30]
    # A pick that is not the knee of the history's front (it left the populations' front
    # to a point that left the populations): the star is the knee, and the line says so.
    text = format_front(_front_run(tmp_path, pts, final_uid=30))
    assert "*28" in text and "finalize ran uid 30 first" in text
    assert "finalize's pick" not in text
