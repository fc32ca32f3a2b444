"""The SciML scenario files load for both presets and wire their objectives correctly."""

from __future__ import annotations

import functools
import os
import pickle
from pathlib import Path

import pytest

from evo_engine.scenario import load_scenario
from evo_engine.sciml.advection import AdvectionRecipe, ensure_dataset
from evo_engine.sciml.data import DataFileError
from evo_engine.sciml.presets import advection_task, digits_task, pinn_task
from evo_engine.sciml.training import prepare_advection

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
NAMES = ["advection_lr", "advection_multi", "advection_pinn", "digits_cnn"]


@pytest.mark.parametrize("preset", ["cpu", "full"])
@pytest.mark.parametrize("name", NAMES)
def test_scenario_loads(name: str, preset: str) -> None:
    scenario = load_scenario(SCENARIOS / f"{name}.py", preset)
    assert scenario.name == name
    assert isinstance(scenario.objective, functools.partial)
    assert scenario.finalize is not None
    # Workers receive the objective by pickling (spawned processes, MPI ranks).
    pickle.dumps((scenario.objective, scenario.finalize, scenario.prepare))
    if preset == "cpu":
        assert scenario.max_evals <= 64 and scenario.workers == 2


def test_presets() -> None:
    cpu, full = advection_task("cpu"), advection_task("full")
    # PDEBench's 10,000 × 201 × 1024, β = 4, from its finite-volume scheme (not the exact shift).
    assert full.recipe == AdvectionRecipe(solver="fv")
    assert (full.nx, full.nt, full.epochs) == (256, 41, 500)
    assert full.defaults["lr"] == cpu.defaults["lr"] == 1e-3
    assert full.defaults["model"] == "unet" and cpu.defaults["model"] == "fno"
    assert (cpu.defaults["modes"], cpu.defaults["width"]) == (12, 20)  # PDEBench's own FNO
    assert cpu.recipe.solver == "fv" and cpu.recipe.nx == 1024 and cpu.recipe.samples <= 500
    assert cpu.samples == cpu.recipe.samples and full.samples is None  # thins a PDEBench file
    # cpu: the final weights, scored by the mean of the last epochs (not a minimum over epochs);
    # full: PDEBench's best checkpoint. StepLR scaled from PDEBench's 100 of 500 epochs.
    assert cpu.fitness_last == 3 and full.fitness_last is None
    assert cpu.defaults["scheduler_step"] * 5 == cpu.epochs
    assert load_scenario(SCENARIOS / "advection_lr.py", "cpu").batch == 4
    assert load_scenario(SCENARIOS / "advection_lr.py", "full").batch == 1
    pinn = pinn_task("full")
    assert pinn.iterations == 15_000 and digits_task("cpu").epochs < 30
    assert (pinn.points, pinn.solver, pinn.score_frames) == ("pdebench", "fv", 20)
    assert (pinn.num_domain, pinn.num_boundary, pinn.num_initial, pinn.nx) == (1000, 1000, 5000, 1024)
    with pytest.raises(ValueError, match="preset"):
        advection_task("gpu")


def test_prepare_generates_or_checks_the_data(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("EVO_ENGINE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("EVO_ENGINE_ADVECTION_FILE", raising=False)
    task = advection_task("cpu")
    small = type(task)(recipe=AdvectionRecipe(samples=12, nx=128, nt=41), nx=128, nt=41)
    path = prepare_advection(small)
    assert path.parent == tmp_path and path.exists()
    # A user's file that cannot be strided to the task's grid is refused before any training.
    other = ensure_dataset(AdvectionRecipe(samples=12, nx=96, nt=41), tmp_path / "other")
    monkeypatch.setenv("EVO_ENGINE_ADVECTION_FILE", str(other))
    with pytest.raises(DataFileError, match="cannot be strided"):
        prepare_advection(small)


@pytest.mark.parametrize("name", ["advection_lr", "advection_multi", "advection_multi_asha"])
def test_advection_scenarios_define_a_batch_objective(name: str, tmp_path, monkeypatch) -> None:
    import sys

    from evo_engine.context import Context
    from evo_engine.scenario import _module_name
    from evo_engine.sciml.training import PDEBENCH_DEFAULTS, AdvectionTask, train_advection

    path = SCENARIOS / f"{name}.py"
    load_scenario(path, "cpu")
    module = sys.modules[_module_name(path)]
    # the engine side pickles them by reference, like the objective
    pickle.dumps((module.objective_batch, module.batch_key))
    assert module.batch_key({"lr": 0.1}) == module.batch_key({"lr": 0.2})
    assert module.batch_key({"batch_size": 8}) != module.batch_key({"batch_size": 9})
    # objective_batch trains with the task of the context's preset
    monkeypatch.setenv("EVO_ENGINE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("EVO_ENGINE_ADVECTION_FILE", raising=False)
    tiny = AdvectionTask(
        recipe=AdvectionRecipe(samples=20, nx=32, nt=14), nx=32, nt=14, epochs=1, unroll_step=2,
        defaults={**PDEBENCH_DEFAULTS, "init_features": 4, "unet_depth": 2, "batch_size": 8},
    )
    presets: list[str] = []
    monkeypatch.setattr(module, "advection_task", lambda p: presets.append(p) or tiny)
    ctxs = [Context.standalone(seed=s) for s in (1, 2)]
    ctxs[0].preset = ctxs[1].preset = "full"
    out = module.objective_batch([{"lr": 1e-3}, {"lr": 2e-3}], ctxs)
    assert presets == ["full"]
    single = train_advection({"lr": 2e-3}, Context.standalone(seed=2), tiny)
    assert out[1]["fitness"] == pytest.approx(single["fitness"], rel=1e-4)
TINY_ADVECTION = '''
import functools
from evo_engine import Float, Space
from evo_engine.scenario import Scenario
from evo_engine.sciml.advection import AdvectionRecipe
from evo_engine.sciml.training import (
    PDEBENCH_DEFAULTS, AdvectionTask, advection_test_metrics, train_advection,
)

TASK = AdvectionTask(
    recipe=AdvectionRecipe(samples=30, nx=32, nt=13), nx=32, nt=13, epochs=1,
    defaults={**PDEBENCH_DEFAULTS, "model": "fno", "width": 4, "modes": 4, "batch_size": 8},
)


def make_scenario(preset):
    return Scenario(
        name="tiny_advection", space=Space(lr=Float(1e-4, 1e-2, log=True)),
        objective=functools.partial(train_advection, task=TASK),
        finalize=functools.partial(advection_test_metrics, task=TASK),
        islands=1, population_size=2, operator="ga", max_evals=2, seed=0,
    )
'''


def test_summary_and_csv_show_both_metric_conventions(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "tiny.py").write_text(TINY_ADVECTION)
    env = {**os.environ, "EVO_ENGINE_DATA_DIR": str(tmp_path / "data")}
    env.pop("EVO_ENGINE_ADVECTION_FILE", None)

    def evo(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "evo_engine", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)

    run = evo("run", "tiny.py", "--run-dir", "r", "--quiet", "--workers", "0")
    assert run.returncode == 0, run.stderr
    env["COLUMNS"] = "400"  # wide enough for every metric column of the top table
    shown = evo("analyze", "r", "--csv", "all.csv")
    assert shown.returncode == 0, shown.stderr
    for name in ("val_nrmse", "val_nrmse_pdebench"):
        assert name in shown.stdout  # the top table
    env["COLUMNS"] = "80"
    narrow = evo("analyze", "r").stdout
    assert max(map(len, narrow.splitlines())) <= 80 and "metric columns left out" in narrow
    assert "test_nrmse_pdebench" in shown.stdout  # the final test metrics
    header = (tmp_path / "all.csv").read_text().splitlines()[0].split(",")
    assert {"val_nrmse", "val_rmse_pdebench", "val_max_error_pdebench"} <= set(header)
