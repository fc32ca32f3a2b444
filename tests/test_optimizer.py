"""The ask/tell API: any order, failures, duplicates, state save/restore, settings checks."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from evo_engine.optimizer import Candidate, Optimizer
from evo_engine.space import Categorical, Float, Int, Space

SPACE = Space(
    lr=Float(1e-5, 1e-1, log=True),
    decay=Float(1e-2, 0.5, log=True),
    layers=Int(1, 6),
    act=Categorical(tree={"rect": ["relu", "elu"], "smooth": ["gelu", "silu"]}),
)


def loss(p: dict) -> float:
    return (
        (math.log10(p["lr"]) + 3) ** 2
        + (math.log10(p["decay"]) + 1) ** 2
        + 0.1 * (p["layers"] - 3) ** 2
        + (0.0 if p["act"] == "gelu" else 0.5)
    )


@pytest.mark.parametrize("operator", ["es", "ga", "random"])
def test_finds_a_good_configuration(operator: str) -> None:
    opt = Optimizer(SPACE, operator=operator, seed=0)
    for _ in range(300):
        cand = opt.ask()
        assert isinstance(cand, Candidate) and set(cand.params) == set(SPACE.names)
        opt.tell(cand, loss(cand.params))
    assert opt.best is not None and opt.n_told == 300
    assert opt.best.fitness == pytest.approx(loss(opt.best.params))
    if operator != "random":
        assert opt.best.fitness < 0.2


@settings(max_examples=20, deadline=None)
@given(
    operator=st.sampled_from(["es", "ga", "random"]),
    order=st.permutations(range(24)),
    failures=st.sets(st.integers(0, 23), max_size=6),
    islands=st.integers(1, 3),
)
def test_tell_in_any_order_never_fails(
    operator: str, order: list[int], failures: set[int], islands: int
) -> None:
    opt = Optimizer(SPACE, operator=operator, seed=1, islands=islands, population_size=4)
    for _round in range(2):
        cands = [opt.ask() for _ in range(24)]
        for i in order:
            value = math.nan if i in failures else loss(cands[i].params)
            assert opt.tell(cands[i], value) is True
            assert opt.tell(cands[i], 0.0) is False  # the second tell is a no-op
    assert opt.n_told == 48 and opt.in_flight == []
    assert opt.engine.counts  # failures counted, not raised


def test_failures_and_unknown_uids() -> None:
    opt = Optimizer(SPACE, seed=2)
    a, b, c = opt.ask(), opt.ask(), opt.ask()
    assert opt.tell(a, None) and opt.tell(b, float("inf")) and opt.tell(c.uid, 1.0)
    assert opt.best is not None and opt.best.uid == c.uid
    assert opt.tell(10_000, 0.0) is False


def _drive(opt: Optimizer, steps: int, lag: int = 5) -> list[np.ndarray]:
    """Keep ``lag`` candidates in flight, telling the oldest; tell the rest at the end."""
    genomes = []
    queue = [opt.ask() for _ in range(lag)]
    for _ in range(steps):
        cand = queue.pop(0)
        opt.tell(cand, loss(cand.params))
        nxt = opt.ask()
        genomes.append(nxt.genome)
        queue.append(nxt)
    for cand in queue:
        opt.tell(cand, loss(cand.params))
    return genomes


@pytest.mark.parametrize("operator", ["es", "ga", "random"])
def test_same_seed_same_sequence(operator: str) -> None:
    a = _drive(Optimizer(SPACE, operator=operator, seed=5, islands=2), 60)
    b = _drive(Optimizer(SPACE, operator=operator, seed=5, islands=2), 60)
    np.testing.assert_array_equal(np.array(a), np.array(b))


@pytest.mark.parametrize(
    ("operator", "settings_"),
    [("es", {}), ("es", {"adaptation": "self"}), ("ga", {"replacement": "subset"})],
)
def test_state_round_trip_continues_identically(
    operator: str, settings_: dict, tmp_path: Path
) -> None:
    opt = Optimizer(SPACE, operator=operator, seed=7, islands=2, operator_settings=settings_)
    _drive(opt, 80, lag=3)
    opt.save(tmp_path / "opt.json")
    clone = Optimizer.load(tmp_path / "opt.json")
    np.testing.assert_array_equal(_drive(opt, 60, lag=3), _drive(clone, 60, lag=3))
    assert clone.best is not None and opt.best is not None
    assert clone.best.uid == opt.best.uid


def test_candidates_in_flight_survive_a_restore() -> None:
    opt = Optimizer(SPACE, seed=3)
    _drive(opt, 30, lag=3)
    out = [opt.ask() for _ in range(3)]
    state = json.loads(json.dumps(opt.get_state()))
    clone = Optimizer.from_state(state, space=SPACE)
    assert clone.in_flight == sorted(c.uid for c in out)
    # The user still holds the first: telling it works. The others are asked again.
    assert clone.tell(out[0], 1.0)
    again = [clone.ask(), clone.ask()]
    assert [c.uid for c in again] == [out[1].uid, out[2].uid]
    np.testing.assert_array_equal(again[0].genome, out[1].genome)
    assert clone.ask().uid == out[2].uid + 1


def test_a_candidate_told_after_a_restore_leaves_the_island_loads_true() -> None:
    # Telling a candidate the restored optimizer had queued takes it off the queue: its
    # island's load (what picks the island of the next ask) must count it while it is out,
    # not go one below the truth when it is told (which steered asks to that island).
    opt = Optimizer(SPACE, seed=3, islands=3)
    _drive(opt, 30, lag=3)
    out = [opt.ask() for _ in range(4)]
    clone = Optimizer.from_state(json.loads(json.dumps(opt.get_state())), space=SPACE)
    assert clone.tell(out[0], 1.0)
    eng = clone.engine
    asked = [clone.ask() for _ in range(3)]
    flying = [sum(t.island == i for t in eng.in_flight.values()) for i in range(3)]
    assert eng._island_load == flying
    assert sorted(c.uid for c in asked) == [c.uid for c in out[1:]]


def test_sigma_is_visible_on_es_candidates() -> None:
    opt = Optimizer(SPACE, operator="es", seed=0, population_size=4)
    _drive(opt, 20, lag=3)
    cand = opt.ask()
    assert np.shape(cand.info["sigma"]) == (SPACE.dim,)


def test_bad_settings_are_refused_up_front() -> None:
    with pytest.raises(ValidationError):
        Optimizer(SPACE, operator="es", operator_settings={"sigma": 0.1})
    with pytest.raises(ValidationError):
        Optimizer(SPACE, operator="ga", operator_settings={"tournament_size": 0})
    with pytest.raises(ValueError, match="unknown operator"):
        Optimizer(SPACE, operator="cmaes")
    with pytest.raises(ValueError, match="initial_design"):
        Optimizer(SPACE, initial_design="halton")
    # 0 is a value, not "the default": it is refused like 1 (it was replaced by the default).
    with pytest.raises(ValueError, match="population_size must be >= 2, got 0"):
        Optimizer(SPACE, population_size=0)


@pytest.mark.parametrize(("kwargs", "needle"), [
    # Each message names the parameter and the value (not "'<' not supported ...").
    ({"islands": "2"}, "islands must be a whole number, got '2'"),
    ({"population_size": 2.5}, "population_size must be a whole number, got 2.5"),
    ({"seed": -1}, "seed must be >= 0, got -1"),
    ({"seed": True}, "seed must be a whole number, got True"),
    ({"seed": 1.0}, "seed must be a whole number, got 1.0"),
    ({"migration_interval": 2.5}, "migration_interval must be a whole number, got 2.5"),
    ({"migration_interval": -1}, "migration_interval must be >= 0, got -1"),
    ({"migrants": "1"}, "migrants must be a whole number, got '1'"),
    ({"migrants": -1}, "migrants must be >= 0, got -1"),
    ({"repeats": 1.5}, "repeats must be a whole number, got 1.5"),
    ({"intensify": None}, "intensify must be a whole number, got None"),
    # The Scenario's rule, now the engine's: the Optimizer took 9 migrants from 4 members.
    ({"migrants": 9, "population_size": 4, "islands": 2},
     "migrants (9) cannot exceed population_size (4)"),
])
def test_wrong_counts_are_refused_by_name(kwargs: dict, needle: str) -> None:
    with pytest.raises(ValueError) as err:
        Optimizer(SPACE, **kwargs)
    assert needle in str(err.value)


def test_numpy_integers_are_counts() -> None:
    opt = Optimizer(SPACE, seed=np.int64(3), population_size=np.int32(6), islands=np.int64(2))
    assert opt.config.seed == 3 and type(opt.config.seed) is int
    json.dumps(opt.config.describe())
    assert opt.ask().genome.shape == (SPACE.dim,)


def test_restore_refuses_a_different_space() -> None:
    state = Optimizer(SPACE, seed=0).get_state()
    with pytest.raises(ValueError, match="space"):
        Optimizer.from_state(state, space=Space(x=Float(0, 1)))


def test_migrations_are_counted_not_kept() -> None:
    opt = Optimizer(SPACE, operator="ga", seed=0, population_size=4, islands=2,
                    migration_interval=2)
    for _ in range(60):
        cand = opt.ask()
        opt.tell(cand, loss(cand.params))
    assert opt.n_migrations > 0
    assert opt.engine.migrations == []


def test_named_values_without_objectives_are_refused_not_scored_zero() -> None:
    # A dict is for an optimizer made with objectives=: without them, {"loss": 7.0} was
    # recorded with fitness 0.0 and became the best, ahead of the real 5.0.
    opt = Optimizer(SPACE, seed=0)
    a, b = opt.ask(), opt.ask()
    assert opt.tell(a, 5.0)
    with pytest.raises(TypeError, match="objectives"):
        opt.tell(b, {"loss": 7.0})
    assert opt.best is not None and opt.best.fitness == 5.0 and opt.best.uid == a.uid
    assert opt.in_flight == [b.uid] and opt.n_told == 1
    assert opt.tell(b, 7.0)  # the candidate is still out and can be told a number


def test_a_uid_may_be_a_numpy_integer_and_anything_else_is_a_clear_type_error() -> None:
    # A SLURM-array loop reads its uids back from numpy arrays or a CSV.
    opt = Optimizer(SPACE, seed=0)
    a, b = opt.ask(), opt.ask()
    assert opt.tell(np.int64(a.uid), 3.0) is True
    assert opt.tell(np.int32(a.uid), 1.0) is False  # told before: a no-op
    assert opt.best is not None and opt.best.uid == a.uid and opt.best.fitness == 3.0
    for bad in ("1", 1.0, None, True):
        with pytest.raises(TypeError, match="Candidate or its uid"):
            opt.tell(bad, 1.0)  # type: ignore[arg-type]
    assert opt.in_flight == [b.uid]


def test_a_state_whose_choices_are_not_json_values_asks_for_the_space(tmp_path: Path) -> None:
    # Tuple choices are stored as lists: rebuilt from the file alone, the optimizer handed out
    # [64, 64] for (64, 64) and asked a configuration asked before (its key differs).
    space = Space(a=Int(0, 1), kernel=Categorical([(32, 32), (64, 64)]))
    opt = Optimizer(space, seed=0, population_size=4)
    for cand in [opt.ask() for _ in range(3)]:
        opt.tell(cand, 1.0)
    opt.save(tmp_path / "o.json")
    with pytest.raises(ValueError, match=r"\[32, 32\].*space="):
        Optimizer.load(tmp_path / "o.json")
    again = Optimizer.load(tmp_path / "o.json", space=space)
    nxt = again.ask()
    assert nxt.params == opt.ask().params and nxt.params["kernel"] in space["kernel"].choices


@pytest.mark.parametrize(("text", "message"), [
    ("[1, 2]", "a JSON object .* got a list"),        # was AttributeError: 'list' ... 'get'
    ("not json", "holds no optimizer state: not JSON"),
    ('{"format": 1}', "lacks 'space', 'config', 'engine', 'asked'"),  # was KeyError: 'space'
    ('{"format": 1, "space": {}, "config": [], "engine": {}, "asked": 0}', "config is not"),
    (b"\x80\x81binary", "not JSON"),
    ('{"format": 7}', "format 7 is not 1"),
    # every key there, but not what save wrote under them (was KeyError: 'operator' and
    # AttributeError / TypeError deep inside the rebuild)
    ('{"format": 1, "space": {"a": {"kind": "int", "low": 0, "high": 3, "log": false}}, '
     '"config": {"seed": 0}, "engine": {}, "asked": 0}', "config lacks 'operator', 'population"),
    ('@VALID@engine=[]', "engine is not an object, got a list"),
    ('@VALID@asked="3"', "asked is not a whole number: '3'"),
])
def test_a_file_that_holds_no_state_is_a_value_error_naming_it(tmp_path: Path, text: str | bytes,
                                                              message: str) -> None:
    path = tmp_path / "o.json"
    if isinstance(text, str) and text.startswith("@VALID@"):  # a saved state, one key spoilt
        key, value = text.removeprefix("@VALID@").split("=", 1)
        opt = Optimizer(Space(a=Int(0, 3)), seed=0, population_size=4)
        opt.tell(opt.ask(), 1.0)
        state = opt.get_state()
        state[key] = json.loads(value)
        text = json.dumps(state)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}.*{message}"):
        Optimizer.load(path, space=Space(a=Int(0, 3)))


def test_a_fault_inside_a_valid_state_is_not_reported_as_a_bad_file(tmp_path: Path,
                                                                    monkeypatch) -> None:
    # Catching KeyError around the whole rebuild named an engine bug "the state lacks ..."
    from evo_engine.search.engine import Engine

    opt = Optimizer(Space(a=Int(0, 3)), seed=0, population_size=4)
    opt.tell(opt.ask(), 1.0)
    opt.save(tmp_path / "o.json")

    def broken(*args, **kwargs):
        raise KeyError("a bug in the engine")

    monkeypatch.setattr(Engine, "from_state", broken)
    with pytest.raises(KeyError, match="a bug in the engine"):
        Optimizer.load(tmp_path / "o.json")


def test_a_space_that_is_not_a_space_is_a_clear_type_error() -> None:
    # A dict of parameters failed deep inside: AttributeError: 'dict' object has no 'dim'.
    with pytest.raises(TypeError, match=r"evo_engine\.Space.*dict"):
        Optimizer({"lr": Float(1e-5, 1e-1, log=True)})  # type: ignore[arg-type]


def test_a_told_value_that_is_no_number_is_a_type_error_naming_it() -> None:
    # tell(c, True) was recorded as fitness 1.0 (and False as 0.0, the best possible); a
    # string among named values failed with "could not convert string to float" naming
    # nothing. Both are now a TypeError, and the candidate stays out to be told properly.
    opt = Optimizer(SPACE, seed=0)
    a, b = opt.ask(), opt.ask()
    assert opt.tell(a, 5.0)
    for bad in (False, True, "0.1", b"1"):
        with pytest.raises(TypeError, match=r"tell: fitness must be a number, got "):
            opt.tell(b, bad)  # type: ignore[arg-type]
    assert opt.best is not None and opt.best.fitness == 5.0 and opt.in_flight == [b.uid]
    assert opt.tell(b, np.float32(4.0)) and opt.best.fitness == 4.0  # numpy scalars are numbers
    moo = Optimizer(SPACE, seed=0, objectives=["loss", "size"])
    c = moo.ask()
    with pytest.raises(TypeError, match=r"tell: size must be a number, got 'big'"):
        moo.tell(c, {"loss": 1.0, "size": "big"})
    assert moo.tell(c, {"loss": 1.0, "size": 3.0})
