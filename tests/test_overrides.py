"""``--set field=value``: typed and validated by the Scenario model, exit 2 on a bad one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from evo_engine.job.overrides import OverrideError, apply_sets
from evo_engine.scenario import load_scenario

REPO = Path(__file__).resolve().parent.parent
SPHERE = REPO / "scenarios" / "sphere.py"


@pytest.fixture(scope="module")
def sphere():
    return load_scenario(SPHERE)


def test_values_are_typed_by_the_field(sphere) -> None:
    s = apply_sets(sphere, ["islands=3", "max_time=12.5", "sync=true", "name=other",
                            "operator=es", "operator_settings.sigma0=0.2",
                            "topology=[[0,1,0],[0,0,1],[1,0,0]]"])
    assert s.islands == 3 and isinstance(s.islands, int)
    assert s.max_time == 12.5 and s.sync is True and s.name == "other"
    assert s.operator == "es" and s.operator_settings == {"sigma0": 0.2}
    assert s.topology == [[0, 1, 0], [0, 0, 1], [1, 0, 0]]
    assert apply_sets(s, ["max_time=null"]).max_time is None, "null clears an optional field"
    assert apply_sets(sphere, ["name=123"]).name == "123", "text stays text for a str field"


@pytest.mark.parametrize("item, match", [
    ("islandz=3", "not a scenario field \\(did you mean 'islands'\\?\\)"),
    ("islands=zero", "--set islands=zero: Input should be a valid integer"),
    ("islands=0", "islands.*greater than or equal to 1"),
    ("migrants=100", "migrants \\(100\\) cannot exceed population_size"),
    ("objective=x", "defined by the scenario file's code"),
    ("islands", "expected FIELD=VALUE"),
    ("seed.x=1", "not a dict field"),
    ("operator_settings.nope=1", "operator_settings"),
    # sphere.py runs the GA: the README's sigma0 example names the ES's setting
    ("operator_settings.sigma0=0.2",
     "operator 'ga' has no setting 'sigma0'; its settings: .*mutation_rate.*"
     "'sigma0' is a setting of 'es'.*--set operator=es"),
    ("objective_batch=x", "defined by the scenario file's code"),
    ("batch_key=x", "defined by the scenario file's code"),
    # A JSON value is judged as JSON: the message names what is wrong inside it (it said
    # "Input should be a valid dictionary" of a dict, "should be 'ring'" of a matrix).
    ('pbt={"intervl": 2}', "--set pbt=.*: intervl: Extra inputs are not permitted"),
    ('pbt={"interval": 0}', "--set pbt=.*: interval: Input should be greater than or equal to 1"),
    ('topology=[[0, "a"], [1, 0]]', "--set topology=.*0.1: Input should be a valid integer"),
    # pydantic's lax mode read true as 1: seed=true ran seed 1, max_evals=true one evaluation
    ("seed=true", "--set seed=true: .*must be a number, not True"),
    ("max_evals=true", "must be a number, not True"),
    ("max_time=false", "must be a number, not False"),
    ('pbt={"interval": true}', "interval: .*must be a number, not True"),
])
def test_bad_values_name_the_field(sphere, item: str, match: str) -> None:
    with pytest.raises(OverrideError, match=match):
        apply_sets(sphere, [item])


def test_cli_set_applies_and_bad_set_exits_2(tmp_path: Path) -> None:
    def evo(*args):
        return subprocess.run([sys.executable, "-m", "evo_engine", *map(str, args)],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)

    ok = evo(SPHERE, "--workers", 0, "--run-dir", "r", "--set", "max_evals=12",
             "--set", "islands=3")
    assert ok.returncode == 0, ok.stderr
    assert "finished: 12/12" in ok.stdout
    import zarr

    assert zarr.open(str(tmp_path / "r/run.zarr"), mode="r").attrs["islands"] == 3
    bad = evo(SPHERE, "--workers", 0, "--run-dir", "r2", "--set", "population_size=1")
    assert bad.returncode == 2 and "population_size" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "r2").exists(), "bad input touches no run directory"
    version = evo("--version")
    assert version.returncode == 0
    from evo_engine import __version__

    assert version.stdout.strip() == f"evo_engine {__version__}"


def test_only_settable_fields_are_offered(sphere) -> None:
    with pytest.raises(OverrideError) as err:
        apply_sets(sphere, ["no_such_field=1"])
    offered = str(err.value).split("settable fields: ")[1]
    for name in ("objective_batch", "batch_key", "objective", "space", "prepare", "finalize"):
        assert name not in offered.split(", ")
    assert "islands" in offered.split(", ")


def test_help_examples_work_on_the_scenario_they_name(sphere) -> None:
    # The --help text's --set examples: generic fields on sphere (GA), a GA setting on it,
    # and the ES setting together with the ES operator.
    from evo_engine.cli.main import build_parser

    text = " ".join(build_parser()._subparsers._group_actions[0].choices["run"].format_help()
                    .split())
    assert "--set operator_settings.sigma0=0.2 on an ES scenario" in text
    s = apply_sets(sphere, ["islands=4", "population_size=16",
                            "operator_settings.mutation_rate=0.3"])
    assert s.islands == 4 and s.operator_settings == {"mutation_rate": 0.3}
    es = apply_sets(sphere, ["operator_settings.sigma0=0.2", "operator=es"])
    assert es.operator_settings == {"sigma0": 0.2}
