"""Column-wise decoding and config keys equal the row-by-row ones exactly (resume relies on it)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evo_engine.search.dedupe import config_keys
from evo_engine.search.keys import config_key
from evo_engine.space import Categorical, Float, Int, Space

PARAMS = [
    Float(0.0, 1.0), Float(0, 3), Float(-2.5, 7.25), Float(1e-5, 1e-1, log=True), Float(1, 1000, log=True),
    Int(0, 5), Int(-3, 3), Int(1, 4096, log=True), Int(2, 3),
    Categorical(("a", "b", "c")), Categorical((1, True, "1", -0.0, np.float64(0.5), 2.5)),  # 1.0 beside 1: refused
    Categorical(("only", "two")),
]
EDGES = [0.0, -0.0, 1.0, -1e-300, 1 + 1e-15, -3.0, 4.0, 0.5, 1e-320, 1 - 1e-16, np.nextafter(1, 0),
         np.nan]


@pytest.mark.parametrize("param", PARAMS, ids=repr)
def test_decode_column_is_decode_of_each_element(param) -> None:
    rng = np.random.default_rng(0)
    u = np.concatenate([rng.random(20_000), np.array(EDGES), rng.uniform(-0.2, 1.2, 500)])
    if param.kind != "float":  # NaN: no integer or choice; both ways refuse it alike
        with pytest.raises(ValueError):
            param.decode(float("nan"))
        with pytest.raises(ValueError):
            param.decode_column(np.array([0.5, np.nan]))
        u = u[~np.isnan(u)]
    got = param.decode_column(u)
    want = [param.decode(float(x)) for x in u]
    for g, w, x in zip(got, want, u):
        if isinstance(w, float) and np.isnan(w):
            assert np.isnan(g)
            continue
        assert type(g) is type(w) and repr(g) == repr(w), f"u={x!r}: {g!r} != {w!r}"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.floats(-0.5, 1.5), min_size=4, max_size=4), min_size=1, max_size=40))
def test_config_keys_equal_config_key_of_each_decoded_row(rows) -> None:
    space = Space(lr=Float(1e-4, 1e-1, log=True), width=Int(8, 512, log=True),
                  act=Categorical(("relu", "gelu", 2)), x=Float(-1, 1))
    genomes = np.array(rows, dtype=np.float64)
    assert config_keys(space, genomes) == [config_key(space.decode(g)) for g in genomes]


def test_config_keys_of_a_conditional_space_and_of_no_rows() -> None:
    space = Space(model=Categorical(("fno", "unet")), modes=Int(4, 16, when=("model", "fno")))
    genomes = np.array([[0.1, 0.5], [0.9, 0.5]])
    assert config_keys(space, genomes) == [config_key(space.decode(g)) for g in genomes]
    assert "modes" not in config_keys(space, genomes)[1]
    assert config_keys(space, np.zeros((0, 2))) == []


def test_config_keys_of_one_parameter_and_of_odd_choices() -> None:
    for space in (Space(x=Float(0.0, 2.0)), Space(b=Int(0, 9), a=Float(-1, 1),
                                                  c=Categorical(("%s", "%d)", None, "'")))):
        genomes = np.random.default_rng(1).random((50, space.dim))
        assert config_keys(space, genomes) == [config_key(space.decode(g)) for g in genomes]
