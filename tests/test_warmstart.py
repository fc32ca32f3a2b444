"""Warm starts: known configurations issued first, recorded as such, kept across snapshots."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from evo_engine.analysis.history import load_history
from evo_engine.job.warmstart import WarmStartError, warm_start_genomes
from evo_engine.scenario import load_scenario
from evo_engine.search.engine import Engine, EngineConfig
from evo_engine.search.messages import EvalState, Result
from evo_engine.space import Categorical, Float, Int, Space

REPO = Path(__file__).resolve().parent.parent
SPHERE = REPO / "scenarios" / "sphere.py"
CONDITIONAL = REPO / "tests" / "scenarios" / "conditional.py"


def space() -> Space:
    return Space(lr=Float(1e-4, 1e-1, log=True), n=Int(1, 5),
                 act=Categorical(["relu", "gelu"]))


def test_engine_issues_warm_configs_first_and_snapshots_the_queue() -> None:
    s = space()
    eng = Engine(s, EngineConfig(max_evals=20, islands=2, population_size=4))
    configs = [{"lr": 1e-3, "n": 2, "act": "gelu"}, {"lr": 1e-2, "n": 5, "act": "relu"},
               {"lr": 1e-4, "n": 1, "act": "relu"}]
    eng.add_warm_start([s.encode(c) for c in configs])
    first = eng.ask(0)
    assert first.operator == "warm_start" and first.params == pytest.approx(configs[0])
    # A snapshot taken with two still queued (and one in flight, re-issued first) issues
    # exactly those two next, then the initial design.
    restored = Engine.from_state(s, eng.config, json.loads(json.dumps(eng.get_state())))
    issued = [restored.ask(w) for w in range(4)]
    assert issued[0].uid == first.uid
    assert [t.operator for t in issued[1:3]] == ["warm_start", "warm_start"]
    assert [t.params for t in issued[1:3]] == [pytest.approx(configs[1]), pytest.approx(configs[2])]
    assert issued[3].operator.startswith("design:")
    # The result of a warm-start task joins its island's population like any other.
    t = issued[0]
    restored.tell(Result(uid=t.uid, state=EvalState.COMPLETE, fitness=0.5, worker=0))
    assert restored.best is not None and restored.best.uid == t.uid


def test_file_and_run_dir_sources(tmp_path: Path) -> None:
    s = space()
    good = tmp_path / "w.yaml"
    good.write_text("- {lr: 0.001, n: 2, act: gelu}\n- {lr: 0.01, n: 3, act: relu}\n")
    g = warm_start_genomes(good, s, 4)
    assert len(g) == 2 and s.decode(g[1]) == pytest.approx({"lr": 0.01, "n": 3, "act": "relu"})
    cases = {
        "bad.json": ('[{"lr": 5, "n": 2, "act": "gelu"}]', "configuration 1 .*'lr'.*outside"),
        "miss.json": ('[{"lr": 0.01, "act": "gelu"}]', "missing \\['n'\\]"),
        "extra.json": ('[{"lr": 0.01, "n": 2, "act": "gelu", "zz": 1}]', "unknown \\['zz'\\]"),
        "notlist.json": ('{"lr": 0.01}', "expected a list of parameter dicts"),
        "broken.json": ("[{", "not valid JSON"),
    }
    for name, (text, match) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(WarmStartError, match=match):
            warm_start_genomes(tmp_path / name, s, 4)
    with pytest.raises(WarmStartError, match="no such file"):
        warm_start_genomes(tmp_path / "nope.json", s, 4)


@pytest.mark.parametrize(("data", "match"), [
    (b"\xff\xfe[\x00]\x00", "not a UTF-8 text file"),
    (b'[{"lr": 0.01, "n": 1e400, "act": "gelu"}]', "configuration 1 .*parameter 'n': value inf is not an integer"),
    (b'[{"lr": 0.01, "n": NaN, "act": "gelu"}]', "configuration 1 .*parameter 'n': value nan is not an integer"),
    (b'[{"lr": 0.01, "n": null, "act": "gelu"}]', "configuration 1 .*parameter 'n': value None is not an integer"),
    (b'[{"lr": "fast", "n": 2, "act": "gelu"}]', "configuration 1 .*parameter 'lr': value 'fast' is not a number"),
])
def test_a_file_that_is_not_text_or_a_value_of_the_wrong_kind_names_the_problem(
        tmp_path: Path, data: bytes, match: str) -> None:
    """A UTF-16 export and an infinite integer (JSON's 1e400) were internal errors; a value
    of the wrong kind did not say which parameter it was given for."""
    f = tmp_path / "w.json"
    f.write_bytes(data)
    with pytest.raises(WarmStartError, match=match):
        warm_start_genomes(f, space(), 4)


def evo(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evo_engine", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_cli_warm_start_from_an_earlier_run(tmp_path: Path) -> None:
    first = evo(CONDITIONAL, "--workers", 0, "--run-dir", "a", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    h = load_history(tmp_path / "a")
    ok = h["state"] == int(EvalState.COMPLETE)
    best3 = np.sort(h["fitness"][ok])[:3]
    second = evo(CONDITIONAL, "--workers", 0, "--run-dir", "b", "--warm-start", "a:3",
                 "--set", "max_evals=10", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    h2 = load_history(tmp_path / "b")
    warm = h2["operator"] == "warm_start"
    assert warm.sum() == 3 and set(h2["uid"][warm].tolist()) == {0, 1, 2}
    # The objective is deterministic: the same configurations score the same.
    assert np.sort(h2["fitness"][warm]) == pytest.approx(best3)
    bad = evo(CONDITIONAL, "--workers", 0, "--run-dir", "c", "--warm-start", "nowhere",
              cwd=tmp_path)
    assert bad.returncode == 2 and "--warm-start nowhere" in bad.stderr
    assert not (tmp_path / "c").exists()


def test_the_shipped_pdebench_defaults_fit_advection_multi_full() -> None:
    from evo_engine.scenario import load_scenario
    from evo_engine.sciml.training import PDEBENCH_DEFAULTS

    space = load_scenario(REPO / "scenarios" / "advection_multi.py", "full").space
    genomes = warm_start_genomes(REPO / "scenarios/warm/pdebench_advection_full.json", space, 4)
    unet, fno = (space.decode(g) for g in genomes)
    assert unet["model"] == "unet" and "width" not in unet and "init_features" in unet
    assert fno["model"] == "fno" and "init_features" not in fno and "modes" in fno
    for params in (unet, fno):
        for k, v in params.items():
            if k != "model":
                assert v == pytest.approx(PDEBENCH_DEFAULTS[k]), k


def test_a_resumed_run_issues_the_rest_of_its_warm_start_queue(tmp_path: Path) -> None:
    configs = [{"lr": 1e-3, "layers": 2, "activation": "gelu"},
               {"lr": 1e-2, "layers": 5, "activation": "relu"},
               {"lr": 1e-4, "layers": 4, "activation": "silu"}]
    (tmp_path / "w.json").write_text(json.dumps(configs))
    first = evo(SPHERE, "--workers", 0, "--run-dir", "r", "--max-evals", 2,
                "--warm-start", "w.json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    again = evo(SPHERE, "--workers", 0, "--run-dir", "r", "--max-evals", 5, "--resume",
                "--warm-start", "w.json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "--warm-start is ignored with --resume" in again.stderr
    h = load_history(tmp_path / "r")
    order = np.argsort(h["uid"])
    ops = h["operator"][order].tolist()
    assert ops[:3] == ["warm_start"] * 3 and ops[3].startswith("design:")
    assert h["params/activation"][order][2] == "silu", "the third came from the snapshot's queue"


def test_run_dir_count_must_be_an_integer_and_the_run_sound(tmp_path: Path) -> None:
    """``RUN:abc`` says what N must be (not "no such file"); a damaged run is refused."""
    first = evo(CONDITIONAL, "--workers", 0, "--run-dir", "a", "--set", "max_evals=8",
                cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    s = load_scenario(CONDITIONAL).space
    for bad in ("abc", "2.5", ""):
        with pytest.raises(WarmStartError, match=f"N must be an integer .*not '{bad}'"):
            warm_start_genomes(f"{tmp_path / 'a'}:{bad}", s, 4)
    with pytest.raises(WarmStartError, match="must be >= 1"):
        warm_start_genomes(f"{tmp_path / 'a'}:0", s, 4)
    r = evo(CONDITIONAL, "--workers", 0, "--run-dir", "b", "--warm-start", "a:abc", cwd=tmp_path)
    assert r.returncode == 2 and "N must be an integer" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "b").exists()
    (tmp_path / "a/run.zarr/evaluations/fitness/zarr.json").unlink()
    with pytest.raises(WarmStartError, match="store is damaged .*evaluations/fitness/zarr.json"):
        warm_start_genomes(f"{tmp_path / 'a'}:2", s, 4)
