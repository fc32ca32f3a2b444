"""Conditional parameters: active only when another parameter has some value."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from evo_engine.analysis.export import write_csv
from evo_engine.space import Categorical, Float, Int, Space, SpaceError
from evo_engine.store.reader import load_run

REPO = Path(__file__).resolve().parent.parent
CONDITIONAL = REPO / "tests" / "scenarios" / "conditional.py"


def space() -> Space:
    return Space(
        model=Categorical(["unet", "fno"]),
        lr=Float(1e-4, 1e-1, log=True),
        features=Int(4, 16, when=("model", "unet")),
        width=Int(8, 48, when=("model", "fno")),
        modes=Int(4, 8, when=("width", (8, 9))),  # nested: needs fno and a narrow width
    )


def test_decode_returns_only_active_parameters() -> None:
    s = space()
    unet = s.decode([0.1, 0.5, 0.5, 0.0, 0.5])
    assert set(unet) == {"model", "lr", "features"} and unet["model"] == "unet"
    fno_narrow = s.decode([0.9, 0.5, 0.5, 0.0, 0.5])
    assert set(fno_narrow) == {"model", "lr", "width", "modes"} and fno_narrow["width"] == 8
    fno_wide = s.decode([0.9, 0.5, 0.5, 1.0, 0.5])
    assert set(fno_wide) == {"model", "lr", "width"}, "modes' parent is active but 48 is not 8/9"


def test_encode_accepts_missing_inactive_and_round_trips() -> None:
    s = space()
    params = {"model": "fno", "lr": 1e-3, "width": 9, "modes": 6}
    g = s.encode(params)
    assert g.shape == (5,) and g[2] == 0.5, "an inactive gene is the midpoint"
    assert s.decode(g) == pytest.approx(params)
    with pytest.raises(SpaceError, match="missing \\['width'\\]"):
        s.encode({"model": "fno", "lr": 1e-3})


def test_unconditional_description_is_unchanged_and_conditions_round_trip() -> None:
    plain = Space(a=Int(1, 3))
    assert plain.describe() == {"a": {"type": "int", "lo": 1, "hi": 3, "log": False}}
    s = space()
    assert s.describe()["width"]["when"] == ["model", ["fno"]]
    again = Space.from_description(s.describe())
    assert again == s and again.decode([0.9, 0.5, 0.5, 0.0, 0.5]) == s.decode([0.9, 0.5, 0.5, 0.0, 0.5])
    assert s.column_kinds() == {"model": "categorical", "lr": "float", "features": "float",
                                "width": "float", "modes": "float"}


@pytest.mark.parametrize("params, match", [
    ({"a": Int(1, 3, when=("b", 1)), "b": Int(1, 3)}, "must come before"),
    ({"a": Int(1, 3, when=("zz", 1))}, "not in the space"),
    ({"a": Float(0, 1), "b": Int(1, 3, when=("a", 0.5))}, "not the Float"),
    ({"a": Categorical(["x", "y"]), "b": Int(1, 3, when=("a", "z"))}, "can never hold"),
])
def test_bad_conditions_are_refused(params: dict, match: str) -> None:
    with pytest.raises(SpaceError, match=match):
        Space(params)


def test_bad_when_shape_is_refused() -> None:
    with pytest.raises(SpaceError, match="when= must be"):
        Int(1, 3, when="model")


def test_a_run_masks_inactive_parameters_in_store_csv_and_summary(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "evo_engine", str(CONDITIONAL), "--workers", "0",
                        "--run-dir", "c"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    run = load_run(tmp_path / "c")
    ev = run.evaluations
    assert run.complete.all(), "the objective raises if an inactive parameter leaks"
    fno = ev["params/model"] == "fno"
    assert fno.any() and (~fno).any()
    assert np.isnan(ev["params/width"][~fno].astype(float)).all()
    assert np.isnan(ev["params/depth"][fno].astype(float)).all()
    width = ev["params/width"][fno].astype(float)
    assert np.all(width == np.round(width)), "active values stay whole numbers"
    # The printed best shows only its model's parameters.
    best_block = r.stdout.split("best fitness", 1)[1].split("run store", 1)[0]
    if "model = 'fno'" in best_block:
        assert "width" in best_block and "depth" not in best_block
    else:
        assert "depth" in best_block and "width" not in best_block
    from evo_engine.analysis.summary import format_summary, summarize

    top = summarize(run, top=30).top
    assert any(t["params"]["depth"] is None for t in top) or all(
        t["params"]["model"] == "unet" for t in top)
    assert all(isinstance(t["params"]["width"], int) for t in top if t["params"]["width"])
    assert " - " in format_summary(summarize(run, top=30)), "inactive shown as '-'"
    write_csv(run, tmp_path / "e.csv")
    with open(tmp_path / "e.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        if row["model"] == "fno":
            assert row["depth"] == "" and not math.isnan(float(row["width"]))
            assert row["width"].isdigit(), "a conditional Int is written as a whole number"
        else:
            assert row["width"] == "" and row["modes"] == "" and row["depth"] != ""


@pytest.mark.parametrize("preset", ["cpu", "full"])
def test_advection_multi_uses_conditional_architecture_parameters(preset: str) -> None:
    from evo_engine.scenario import load_scenario

    space = load_scenario(REPO / "scenarios" / "advection_multi.py", preset).space
    g = np.full(space.dim, 0.5)
    g[space.names.index("model")] = 0.1
    unet = space.decode(g)
    assert unet["model"] == "unet" and "init_features" in unet
    assert "width" not in unet and "modes" not in unet
    g[space.names.index("model")] = 0.9
    fno = space.decode(g)
    assert {"width", "modes"} <= set(fno) and "init_features" not in fno
