"""The surrogate operator: typed features, honest handling of evaluations in flight, no repeats."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evo_engine.optimizer import Optimizer
from evo_engine.search.engine import Engine, EngineConfig
from evo_engine.search.messages import EvalState, Individual, Result, frozen_genome
from evo_engine.search.operators.surrogate import (
    Surrogate,
    SurrogateSettings,
    _Features,
    _rows_among,
    expected_improvement,
    normal_scores,
)
from evo_engine.space import Categorical, Float, Int, Space


def make(space: Space, seed: int = 0, **kw: object) -> Surrogate:
    return Surrogate(space, np.random.default_rng(seed), 8, SurrogateSettings(**kw))


def feed(op: Surrogate, genomes: np.ndarray, losses: np.ndarray) -> None:
    for i, (g, y) in enumerate(zip(genomes, losses)):
        op.observe(Individual(i, frozen_genome(g), float(y), 0), accepted=True)


def test_features_put_ints_on_their_grid_and_categoricals_one_hot() -> None:
    space = Space(n=Int(1, 3), c=Categorical(["a", "b", "c"]), x=Float(0.0, 1.0))
    f = _Features(space)
    # Two genomes that decode to the same int and choice have the same features.
    a = f(np.array([0.05, 0.1, 0.5]))[0]
    b = f(np.array([0.30, 0.3, 0.5]))[0]
    np.testing.assert_allclose(a, b)
    c = f(np.array([0.05, 0.5, 0.5]))[0]  # another choice: 1 apart, whatever the two are
    d = f(np.array([0.05, 0.9, 0.5]))[0]
    assert np.linalg.norm(a - c) == pytest.approx(1.0)
    assert np.linalg.norm(a - d) == pytest.approx(1.0)
    assert f.width == 1 + 1 + 3


def test_normal_scores_keep_order_and_tie() -> None:
    z = normal_scores(np.array([3.0, 1.0, 2.0, 2.0, 100.0]))
    assert z[1] < z[2] == z[3] < z[0] < z[4]
    # An outlier of 100 scores no further out than the best one: it cannot drag the scale.
    assert z[4] == pytest.approx(-z[1])


def test_expected_improvement_prefers_low_mean_and_high_uncertainty() -> None:
    ei = expected_improvement(np.array([0.0, -1.0, 0.0]), np.array([0.1, 0.1, 1.0]), 0.0)
    assert ei[1] > ei[0] and ei[2] > ei[0]


def test_model_sends_the_worker_next_to_the_best_region() -> None:
    space = Space(x=Float(0.0, 1.0), y=Float(0.0, 1.0))
    rng = np.random.default_rng(0)
    g = rng.random((30, 2))
    op = make(space)
    feed(op, g, ((g - [0.3, 0.7]) ** 2).sum(axis=1))
    props = [op.propose([]).genome for _ in range(5)]
    dist = np.linalg.norm(np.array(props) - [0.3, 0.7], axis=1)
    # A uniform point is 0.4 away on average; the model's proposals are close to the optimum.
    assert np.median(dist) < 0.12


def test_kriging_believer_spreads_workers_away_from_points_in_flight() -> None:
    space = Space(x=Float(0.0, 1.0))
    g = np.linspace(0.0, 1.0, 9)[:, None]
    op = make(space, explore=0.0)
    feed(op, g, (g[:, 0] - 0.52) ** 2)
    X, y = np.array(op.X), np.array(op.y)
    grid = np.linspace(0.0, 1.0, 201)[:, None]

    def ei(pending: np.ndarray) -> np.ndarray:
        gp, best = op._model(X, y, pending)
        return expected_improvement(*gp.predict(op.features(grid)), best)

    free = ei(np.zeros((0, 1)))
    best = grid[int(np.argmax(free))]
    assert abs(best[0] - 0.52) < 0.08
    busy = ei(best[None, :])
    # With that point in flight, its expected improvement drops (to the part the learned
    # observation noise leaves), and the most promising point for the next worker moves.
    assert busy[int(np.argmax(free))] < 0.6 * free.max()
    assert int(np.argmax(busy)) != int(np.argmax(free))


def test_never_proposes_a_configuration_evaluated_or_in_flight() -> None:
    space = Space(a=Int(0, 3), b=Categorical(["p", "q", "r"]))  # 12 configurations
    op = make(space, min_points=2)
    rng = np.random.default_rng(1)
    g = rng.random((6, 2))
    feed(op, g, rng.random(6))
    op.see_in_flight([rng.random(2) for _ in range(3)])
    taken = {tuple(space.decode(x).values()) for x in (*g, *op.in_flight)}
    for _ in range(5):
        prop = op.propose([])
        assert tuple(space.decode(prop.genome).values()) not in taken


def test_before_enough_results_proposals_fill_space() -> None:
    space = Space(x=Float(0.0, 1.0), y=Float(0.0, 1.0))
    op = make(space)
    op.see_in_flight([np.array([0.5, 0.5])])
    p = op.propose([]).genome
    # Maximin over 64 uniform candidates: far from the one point taken.
    assert np.linalg.norm(p - 0.5) > 0.35


def test_engine_gives_the_operator_its_island_s_evaluations_in_flight() -> None:
    space = Space(x=Float(0.0, 1.0), y=Float(0.0, 1.0))
    eng = Engine(space, EngineConfig(max_evals=50, population_size=4, operator="surrogate"))
    tasks = [eng.ask(0) for _ in range(6)]
    op = eng.islands[0].operator
    assert isinstance(op, Surrogate)
    # At the 6th ask the first 5 were in flight.
    assert sorted(map(tuple, op.in_flight)) == sorted(tuple(t.genome) for t in tasks[:5])
    eng.tell(Result(uid=tasks[0].uid, worker=0, fitness=1.0, state=EvalState.COMPLETE))
    eng.ask(0)
    assert len(op.in_flight) == 5 and tuple(tasks[0].genome) not in map(tuple, op.in_flight)


def test_state_is_json_and_a_restored_operator_continues_identically() -> None:
    space = Space(lr=Float(1e-5, 1e-1, log=True), n=Int(1, 64, log=True), c=Categorical("abc"))
    op = make(space, seed=4)
    rng = np.random.default_rng(2)
    feed(op, rng.random((12, 3)), rng.random(12))
    op.see_in_flight([rng.random(3)])
    op.propose([])
    clone = make(space, seed=99)
    clone.set_state(json.loads(json.dumps(op.get_state())))
    for _ in range(3):
        np.testing.assert_array_equal(op.propose([]).genome, clone.propose([]).genome)


def test_archive_is_capped_and_keeps_the_best_half() -> None:
    space = Space(x=Float(0.0, 1.0))
    op = make(space, archive=8)
    feed(op, np.linspace(0, 1, 20)[:, None], np.arange(20.0)[::-1])
    assert len(op.y) == len(op.X) == len(op.uids) == 8
    assert sorted(op.y)[:4] == list(np.arange(4.0))


def test_beats_random_search_on_a_small_budget() -> None:
    space = Space(lr=Float(1e-6, 1.0, log=True), wd=Float(1e-8, 1e-1, log=True), d=Float(0, 1))

    def loss(p: dict) -> float:
        return (
            (np.log10(p["lr"]) + 3) ** 2 + 0.3 * (np.log10(p["wd"]) + 5) ** 2 + (p["d"] - 0.2) ** 2
        )

    def best_after(operator: str, seed: int) -> float:
        opt = Optimizer(space, operator=operator, seed=seed, population_size=8)
        for _ in range(30):
            c = opt.ask()
            opt.tell(c, loss(c.params))
        assert opt.best is not None
        return opt.best.fitness

    ours = np.median([best_after("surrogate", s) for s in range(3)])
    rnd = np.median([best_after("random", s) for s in range(3)])
    assert ours < 0.5 * rnd


def _sphere(t: object) -> float:
    g = np.asarray(t.genome)  # type: ignore[attr-defined]
    return float(((g - 0.3) ** 2).sum())


def _tell_oldest(eng: Engine, flight: list) -> None:
    """Steady state: tell the oldest task in flight, ask one more in its place."""
    t = flight.pop(0)
    eng.tell(Result(uid=t.uid, worker=0, fitness=_sphere(t), state=EvalState.COMPLETE))
    flight.append(eng.ask(0))


def _a_restored_engine_continues_identically(space: Space, cfg: EngineConfig, eng: Engine,
                                             flight: list, steps: int) -> None:
    """Restore ``eng`` from its JSON state: it re-issues the tasks in flight first, then must
    propose what ``eng`` proposes, ``steps`` results on."""
    clone = Engine.from_state(space, cfg, json.loads(json.dumps(eng.get_state())))
    reissued = [clone.ask(0) for _ in flight]
    assert [t.uid for t in reissued] == [t.uid for t in flight]
    for _ in range(steps):
        _tell_oldest(eng, flight)
        _tell_oldest(clone, reissued)
        np.testing.assert_array_equal(flight[-1].genome, reissued[-1].genome)
        assert flight[-1].operator == reissued[-1].operator


def test_engine_snapshot_with_the_surrogate_continues_identically() -> None:
    space = Space(lr=Float(1e-5, 1e-1, log=True), n=Int(1, 8), c=Categorical("xyz"))
    cfg = EngineConfig(max_evals=60, population_size=6, operator="surrogate", seed=3)
    eng = Engine(space, cfg)
    flight = [eng.ask(0) for _ in range(4)]
    for _ in range(16):
        _tell_oldest(eng, flight)
    _a_restored_engine_continues_identically(space, cfg, eng, flight, 6)


# -- the hand-over to the ES -------------------------------------------------------------------


def population_of(op: Surrogate) -> list[Individual]:
    """The operator's archive as a population (best first), as the island would hold it."""
    inds = [Individual(u, frozen_genome(np.array(g)), y, 0) for u, g, y in zip(op.uids, op.X, op.y)]
    return sorted(inds, key=lambda m: m.fitness)


def test_hands_over_to_the_es_after_patience_results_without_a_new_best() -> None:
    space = Space(x=Float(0.0, 1.0), y=Float(0.0, 1.0), z=Float(0.0, 1.0))
    rng = np.random.default_rng(5)
    g = rng.random((40, 3))
    losses = ((g - 0.4) ** 2).sum(axis=1)
    losses[10] = -1.0  # the best is the 11th result: 29 results without improvement follow
    op, never = make(space, handover=29), make(space, handover=0)
    feed(op, g[:39], losses[:39])
    feed(never, g[:39], losses[:39])
    pop = population_of(op)
    # 28 results since the best: not yet.
    assert op.propose(pop).operator == "surrogate" and op.es is None
    last = Individual(39, frozen_genome(g[39]), float(losses[39]), 0)
    op.observe(last, accepted=False)
    never.observe(last, accepted=False)
    prop = op.propose(pop)
    assert prop.operator == "es" and op.es is not None and op.handed_over_at == 40
    assert "step" in prop.info  # the ES's own offspring, whose steps it will learn from
    # For good: a new best afterwards does not give the island back to the model.
    op.observe(Individual(99, frozen_genome(np.full(3, 0.4)), -5.0, 0), accepted=True)
    assert op.propose(pop).operator == "es"
    assert 99 not in op.uids  # results go to the ES only: the model is not fitted again
    assert never.propose(pop).operator == "surrogate" and never.es is None


def test_after_the_hand_over_the_engine_stops_listing_evaluations_in_flight(monkeypatch) -> None:
    # Listing them is a pass over every evaluation in flight per ask: at 4,096 workers most
    # of an ask's cost once the ES proposes, and the ES never looks at them (issue 30.4).
    space = Space(x=Float(0.0, 1.0), y=Float(0.0, 1.0))
    eng = Engine(space, EngineConfig(max_evals=400, population_size=4, operator="surrogate",
                                     seed=1, operator_settings={"handover": 6}))
    op = eng.islands[0].operator
    assert isinstance(op, Surrogate)
    listed: list[int] = []
    see = Surrogate.see_in_flight

    def spy(self, genomes):
        listed.append(len(genomes))
        see(self, genomes)

    monkeypatch.setattr(Surrogate, "see_in_flight", spy)
    flying = [eng.ask(0) for _ in range(3)]
    asks = 3
    while op.es is None:
        task = flying.pop(0)
        eng.tell(Result(uid=task.uid, worker=0, fitness=float(task.uid), state=EvalState.COMPLETE))
        flying.append(eng.ask(0))
        asks += 1
        assert asks < 300, "never handed over"
    assert len(listed) == asks  # every ask up to the one that handed over listed them
    assert op.in_flight == [] and op.get_state()["in_flight"] == []
    for _ in range(5):
        task = flying.pop(0)
        eng.tell(Result(uid=task.uid, worker=0, fitness=float(task.uid), state=EvalState.COMPLETE))
        flying.append(eng.ask(0))
    assert len(listed) == asks and op.wants_in_flight is False


def test_the_es_starts_from_the_population_s_spread_not_its_default_step() -> None:
    space = Space(x=Float(0.0, 1.0), y=Float(0.0, 1.0))
    rng = np.random.default_rng(0)
    # A population converged near (0.3, 0.6): wide in x (0.05), narrow in y (0.005).
    g = np.column_stack([0.3 + 0.05 * rng.normal(size=40), 0.6 + 0.005 * rng.normal(size=40)])
    op = make(space, handover=1)
    feed(op, g, np.arange(40.0))  # the first is best: 39 results without improvement
    op.propose(population_of(op))
    assert op.es is not None
    half = g[:20]
    assert op.es.sigma == pytest.approx(float(np.sqrt(half.var(axis=0).mean())))
    assert op.es.sigma < 0.2 * op.es.sigma0
    # The shape follows the spread: x's variance ~100x y's (trace kept at 2).
    assert op.es.cov[0, 0] > 20 * op.es.cov[1, 1]
    assert np.trace(op.es.cov) == pytest.approx(2.0)
    # Its offspring stay near the population instead of jumping a third of the range.
    props = np.array([op.propose(population_of(op)).genome for _ in range(50)])
    assert np.median(np.abs(props[:, 1] - 0.6)) < 0.05


def test_state_round_trip_after_the_hand_over_continues_identically() -> None:
    space = Space(lr=Float(1e-5, 1e-1, log=True), n=Int(1, 64, log=True), c=Categorical("abc"))
    op = make(space, seed=4, handover=5)
    rng = np.random.default_rng(2)
    feed(op, rng.random((12, 3)), np.arange(12.0))
    pop = population_of(op)
    assert op.propose(pop).operator == "es"
    op.observe(Individual(50, frozen_genome(rng.random(3)), 0.5, 0), accepted=True)
    clone = make(space, seed=99, handover=5)
    clone.set_state(json.loads(json.dumps(op.get_state())))
    assert clone.es is not None and clone.handed_over_at == op.handed_over_at
    for _ in range(3):
        a, b = op.propose(pop), clone.propose(pop)
        assert a.operator == b.operator == "es"
        np.testing.assert_array_equal(a.genome, b.genome)


def test_archive_keeps_the_best_half_and_far_poor_results() -> None:
    space = Space(x=Float(0.0, 1.0), y=Float(0.0, 1.0))
    rng = np.random.default_rng(3)
    # 4 poor results in the corners, then 30 near the optimum (0.5, 0.5), 20 of them poor-ish.
    corners = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    near = 0.5 + 0.02 * rng.normal(size=(30, 2))
    op = make(space, archive=16)
    feed(op, np.vstack([corners, near]), np.concatenate([np.full(4, 10.0), np.arange(30.0)]))
    assert len(op.y) == 16
    # The best 8 are all kept ...
    assert sorted(op.y)[:8] == list(np.arange(8.0))
    # ... and the corners too, although they are the worst results: dropping them was what
    # let the model believe that unexplored corners were as good as the archive's median.
    kept = {tuple(x) for x in op.X}
    assert all(tuple(c) in kept for c in corners)


def test_pruned_results_do_not_count_toward_the_hand_over() -> None:
    space = Space(x=Float(0.0, 1.0), y=Float(0.0, 1.0))
    rng = np.random.default_rng(6)
    op = make(space, handover=5)
    feed(op, rng.random((4, 2)), np.array([0.0, 1.0, 2.0, 3.0]))  # 3 complete after the best
    for uid in range(10, 30):  # 20 trainings stopped early: partial losses only
        op.observe_pruned(Individual(uid, frozen_genome(rng.random(2)), 5.0, 0), step=1)
    assert op.since_best == 3 and op.propose(population_of(op)).operator == "surrogate"
    op.observe(Individual(40, frozen_genome(rng.random(2)), 4.0, 0), accepted=False)
    op.observe(Individual(41, frozen_genome(rng.random(2)), 4.0, 0), accepted=False)
    assert op.propose(population_of(op)).operator == "es"


def test_the_believer_takes_a_bounded_number_of_the_evaluations_in_flight(monkeypatch) -> None:
    # Believing all of them made an ask O((archive + in flight)^3): the cost grew with the
    # worker count (issue 30.4). The newest BELIEVED_IN_FLIGHT are believed; none is repeated.
    from evo_engine.search.operators import gp as module

    space = Space(x=Float(0.0, 1.0), y=Float(0.0, 1.0))
    rng = np.random.default_rng(0)
    g = rng.random((30, 2))
    op = make(space)
    feed(op, g, ((g - [0.3, 0.7]) ** 2).sum(axis=1))
    flying = [rng.random(2) for _ in range(300)]
    op.see_in_flight(flying)
    believed: list[np.ndarray] = []
    believing = module.GP.believing

    def spy(self, Fp):
        believed.append(Fp)
        return believing(self, Fp)

    monkeypatch.setattr(module.GP, "believing", spy)
    prop = op.propose([])
    assert [b.shape[0] for b in believed] == [Surrogate.BELIEVED_IN_FLIGHT]
    np.testing.assert_allclose(believed[0], op.features(np.array(flying[-64:])))
    assert not any(np.array_equal(prop.genome, f) for f in flying)


def _batch_setup(in_flight: int) -> tuple[Surrogate, list[Individual]]:
    space = Space(x=Float(0.0, 1.0), y=Float(0.0, 1.0), n=Int(1, 9))
    rng = np.random.default_rng(3)
    g = rng.random((40, 3))
    op = make(space)
    feed(op, g, ((g - [0.3, 0.7, 0.5]) ** 2).sum(axis=1))
    op.see_in_flight([rng.random(3) for _ in range(in_flight)])
    return op, population_of(op)


def test_with_hundreds_in_flight_one_model_picks_a_batch_for_the_next_asks(monkeypatch) -> None:
    # 4,096 workers on 8 islands: 512 in flight each, and a model per ask was the
    # coordinator's p99 (issue 30.4). One model picks one proposal per BELIEVED_IN_FLIGHT in
    # flight (3 for 200), handed out by the next asks, each distinct; a new best empties it.
    from evo_engine.search.operators import surrogate as module

    models: list[int] = []
    real = module.best_candidates

    def spy(gp, C, best, eligible, score, q):
        models.append(q)
        return real(gp, C, best, eligible, score, q)

    monkeypatch.setattr(module, "best_candidates", spy)
    op, pop = _batch_setup(200)
    first = [op.propose(pop) for _ in range(3)]
    assert models == [3]
    assert [p.info.get("queued", False) for p in first] == [False, True, True]
    assert len({p.genome.tobytes() for p in first}) == 3
    assert all(p.operator == "surrogate" for p in first)
    op.propose(pop)
    assert models == [3, 3]  # the batch used up: a new model
    # A restored operator hands out the rest of the batch as the original does.
    clone = make(op.space, seed=99)
    clone.set_state(json.loads(json.dumps(op.get_state())))
    for a, b in zip([op.propose(pop) for _ in range(3)], [clone.propose(pop) for _ in range(3)]):
        np.testing.assert_array_equal(a.genome, b.genome)
        assert a.parents == b.parents and a.info == b.info
    # A new best: the rest of the batch was picked without it, so it goes.
    op.propose(pop)
    assert op.queued
    op.observe(Individual(500, frozen_genome(np.array([0.3, 0.7, 0.5])), -1.0, 0), accepted=True)
    assert not op.queued
    # Fewer than 2 * BELIEVED_IN_FLIGHT in flight: a model per ask, as before batches.
    few, pop = _batch_setup(2 * Surrogate.BELIEVED_IN_FLIGHT - 1)
    models.clear()
    for _ in range(3):
        few.propose(pop)
    assert models == [1, 1, 1] and not few.queued


def test_an_engine_snapshot_in_the_middle_of_a_batch_continues_identically() -> None:
    space = Space(x=Float(0.0, 1.0), y=Float(0.0, 1.0), n=Int(1, 8))
    cfg = EngineConfig(max_evals=2000, population_size=8, operator="surrogate", seed=5,
                       operator_settings={"handover": 0})
    eng = Engine(space, cfg)
    flight = [eng.ask(0) for _ in range(300)]
    op = eng.islands[0].operator
    told = 0
    while told < 40 or len(op.queued) != 2:  # the snapshot falls inside a batch (of 4)
        _tell_oldest(eng, flight)
        told += 1
        assert told < 80
    _a_restored_engine_continues_identically(space, cfg, eng, flight, 12)


# -- failed evaluations ------------------------------------------------------------------------


def _cliff_search(seed: int, evals: int = 24) -> tuple[int, float]:
    """A learning-rate search as advection_lr's: the loss falls toward a cliff (lr > 0.02
    diverges, the training FAILS) — its failures after the design, and its best loss."""
    space = Space(lr=Float(1e-5, 1e-1, log=True))
    opt = Optimizer(space, operator="surrogate", seed=seed, population_size=8,
                    initial_design="hypertiling")
    failures, best = 0, np.inf
    for i in range(evals):
        c = opt.ask()
        lr = c.params["lr"]
        loss = np.nan if lr > 0.02 else 0.05 + 0.2 * (np.log10(0.02) - np.log10(lr)) ** 2
        failures += int(i >= 8 and np.isnan(loss))
        best = min(best, loss) if np.isfinite(loss) else best
        opt.tell(c, float(loss))
    return failures, best


def test_failed_evaluations_teach_the_model_where_configurations_fail() -> None:
    # Ignoring failures, the model saw only the falling side and sent most of the 16 proposals
    # after the design past the cliff, where every one failed (the advection benchmark: 14 of
    # 24 at lr ≈ 0.1). Told the failures, it learns the cliff and works along its good side.
    runs = [_cliff_search(seed) for seed in range(3)]
    assert max(f for f, _ in runs) <= 4, runs
    assert np.median([b for _, b in runs]) < 0.0505, runs  # lr within ~7 % of the cliff


def test_a_failure_is_archived_as_worse_than_every_result_and_survives_the_state() -> None:
    space = Space(x=Float(0.0, 1.0))
    op = make(space)
    feed(op, np.array([[0.1], [0.5]]), np.array([3.0, 1.0]))
    op.observe_failed(Individual(7, frozen_genome(np.array([0.9])), np.inf, 0))
    X, y = op._training_set([])  # noqa: SLF001
    assert y.tolist() == [3.0, 1.0, np.inf] and X[2, 0] == 0.9
    assert normal_scores(y).argmax() == 2  # ranked last by the model's transform
    state = json.loads(json.dumps(op.get_state(), allow_nan=False))
    assert state["y"] == [3.0, 1.0, None]
    clone = make(space, seed=5)
    clone.set_state(state)
    assert clone.y == op.y and clone.uids == [0, 1, 7]
    # A pruned result's floor is the median of the results, not of a failure's inf.
    op.observe_pruned(Individual(8, frozen_genome(np.array([0.3])), 0.5, 0), step=1)
    assert op.y[-1] == 2.0


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_rows_among_agrees_with_comparing_row_by_row(data) -> None:
    # Values from a small set, so that rows repeat; the candidates may be a strided view.
    width = data.draw(st.integers(1, 4))
    row = st.lists(st.sampled_from([0.0, 0.25, 1.0, 1e-9]), min_size=width, max_size=width)
    a = np.array(data.draw(st.lists(row, min_size=1, max_size=12)))
    b = np.array(data.draw(st.lists(row, min_size=1, max_size=12)))
    if data.draw(st.booleans()):
        a = np.asfortranarray(a)
    taken = {tuple(r) for r in b.tolist()}
    expected = [tuple(r) in taken for r in a.tolist()]
    assert _rows_among(a, b).tolist() == expected


def test_the_training_set_follows_the_archive_through_evictions_and_a_restore() -> None:
    # The archive's array is cached between asks: it must change whenever the archive does.
    space = Space(x=Float(0.0, 1.0), y=Float(0.0, 1.0))
    op = make(space, archive=8)
    rng = np.random.default_rng(3)
    for i in range(20):
        op.observe(Individual(i, frozen_genome(rng.random(2)), float(rng.random()), 0), True)
        X, y = op._training_set([])
        np.testing.assert_array_equal(X, np.array(op.X))
        np.testing.assert_array_equal(y, np.array(op.y))
    other = make(space, archive=8)
    feed(other, rng.random((5, 2)), rng.random(5))
    op.set_state(json.loads(json.dumps(other.get_state())))
    np.testing.assert_array_equal(op._training_set([])[0], np.array(other.X))
