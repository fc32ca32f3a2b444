"""Scenario files: loading, validation messages that name the field, overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from evo_engine.scenario import ScenarioError, load_scenario, override

GOOD = '''
from evo_engine import Float, Int, Space
from evo_engine.scenario import Scenario

def f(params, ctx):
    return params["x"] ** 2

def make_scenario(preset):
    return Scenario(name="t", space=Space(x=Float(-1, 1), n=Int(1, 3)), objective=f,
                    {extra})
'''


def write(tmp_path: Path, extra: str = "", text: str | None = None) -> Path:
    p = tmp_path / "scen.py"
    p.write_text(text if text is not None else GOOD.replace("{extra}", extra))
    return p


def test_good_scenario_loads_with_defaults(tmp_path: Path) -> None:
    s = load_scenario(write(tmp_path), "cpu")
    assert s.name == "t" and s.max_evals == 100 and s.operator == "ga"
    assert s.engine_config().population_size == 8


def test_preset_reaches_make_scenario(tmp_path: Path) -> None:
    p = write(tmp_path, extra='max_evals=5 if preset == "cpu" else 500')
    assert load_scenario(p, "cpu").max_evals == 5
    assert load_scenario(p, "full").max_evals == 500


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ("max_evalz=10", "'max_evalz': is not a scenario field"),
        ("max_evals=0", "'max_evals': Input should be greater than or equal to 1 (got 0)"),
        ("population_size='many'", "'population_size'"),
        ("operator='cmaes'", "unknown operator 'cmaes'"),
        ("initial_design='halton'", "unknown initial design 'halton'"),
        ("operator_settings={'tournament_sise': 3}", "tournament_sise"),
        ("migrants=20, population_size=4", "migrants (20) cannot exceed population_size (4)"),
        ("islands=2, topology=[[0, 1]]", "2x2 matrix"),
        ("max_time=-5", "'max_time'"),
        # inf ("no limit") was an internal error in the inline transport's timer after the run
        # started; None is no limit.
        ("eval_timeout_s=float('inf')", "'eval_timeout_s': must be at most 1e+09 seconds"),
        ("eval_timeout_s=1e12", "'eval_timeout_s': must be at most 1e+09 seconds"),
    ],
)
def test_bad_fields_are_named(tmp_path: Path, extra: str, needle: str) -> None:
    with pytest.raises(ScenarioError) as err:
        load_scenario(write(tmp_path, extra=extra), "cpu")
    assert needle in str(err.value)
    assert "Traceback" not in str(err.value)


def test_file_problems(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="does not exist"):
        load_scenario(tmp_path / "nope.py")
    txt = tmp_path / "s.txt"
    txt.write_text("")
    with pytest.raises(ScenarioError, match="must be a .py file"):
        load_scenario(txt)
    with pytest.raises(ScenarioError, match="neither make_scenario"):
        load_scenario(write(tmp_path, text="x = 1\n"))
    with pytest.raises(ScenarioError, match=r"failed to load \(line 2\): NameError"):
        load_scenario(write(tmp_path, text="import math\nundefined_name\n"))
    with pytest.raises(ScenarioError, match="SyntaxError"):
        load_scenario(write(tmp_path, text="def (:\n"))
    with pytest.raises(ScenarioError, match="must produce an evo_engine.scenario.Scenario"):
        load_scenario(write(tmp_path, text="def make_scenario(preset):\n    return 3\n"))
    with pytest.raises(ScenarioError, match="lo < hi"):
        load_scenario(write(tmp_path, text=GOOD.replace("Float(-1, 1)", "Float(1, 1)").replace("{extra}", "")))


@pytest.mark.parametrize("code", ["sys.exit(0)", "sys.exit(5)", "sys.exit('usage: train.py')",
                                  "argparse.ArgumentParser().parse_args(['--epochs'])"])
def test_a_file_that_exits_while_loading_is_a_scenario_error(tmp_path: Path, code: str) -> None:
    """A training script turned scenario may still parse its arguments or call sys.exit at
    import: that is a bad scenario file (exit 2 with its line), not the end of the command
    (exit 0 with no run, or the script's own exit code)."""
    text = f"import argparse\nimport sys\n\n\ndef make_scenario(preset):\n    {code}\n"
    with pytest.raises(ScenarioError, match=r"exited while loading \(line 6: SystemExit"):
        load_scenario(write(tmp_path, text=text))


def test_overrides_are_validated(tmp_path: Path) -> None:
    s = load_scenario(write(tmp_path), "cpu")
    assert override(s, max_evals=7, seed=None).max_evals == 7
    with pytest.raises(ScenarioError, match="max_evals"):
        override(s, max_evals=-1)


def test_fingerprint_tracks_space_and_search_settings(tmp_path: Path) -> None:
    s = load_scenario(write(tmp_path), "cpu")
    assert s.fingerprint() == override(s, max_evals=1000).fingerprint(), "budget may change on resume"
    assert s.fingerprint() != override(s, population_size=4).fingerprint()
    assert s.fingerprint() != override(s, seed=9).fingerprint()


@pytest.mark.parametrize("name", ["../elsewhere", "a/b", "/abs", "..", ".", "a\\b"])
def test_a_name_that_is_not_one_path_part_is_refused(tmp_path: Path, name: str) -> None:
    # The default run directory is runs/<name>: "../x" put it outside runs/, "/abs" at the
    # root of the file system (Path("runs") / "/abs" is "/abs").
    text = GOOD.replace("{extra}", "").replace('name="t"', f"name={name!r}")
    with pytest.raises(ScenarioError) as err:
        load_scenario(write(tmp_path, text=text), "cpu")
    assert "'name'" in str(err.value) and "cannot name a run directory" in str(err.value)
    ok = GOOD.replace("{extra}", "").replace('name="t"', 'name="adv.lr-2 (β=0.1)"')
    assert load_scenario(write(tmp_path, text=ok), "cpu").name == "adv.lr-2 (β=0.1)"


@pytest.mark.parametrize("extra", ["seed=True", "max_evals=True", "eval_timeout_s=False",
                                   "pbt={'interval': True}"])
def test_a_flag_given_for_a_number_is_refused(tmp_path: Path, extra: str) -> None:
    # pydantic's lax mode took True for 1: seed=True ran seed 1, max_evals=True one evaluation.
    with pytest.raises(ScenarioError, match="must be a number, not (True|False)"):
        load_scenario(write(tmp_path, extra=extra), "cpu")
    assert load_scenario(write(tmp_path, extra="seed=3, max_time=2, sync=True"), "cpu").seed == 3
