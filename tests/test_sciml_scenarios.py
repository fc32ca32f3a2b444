"""The SciML scenario files load for both presets and wire their objectives correctly."""

from __future__ import annotations

import functools
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
    assert full.recipe == AdvectionRecipe()  # PDEBench's 10,000 × 201 × 1024, β = 4
    assert (full.nx, full.nt, full.epochs) == (256, 41, 500)
    assert full.defaults["lr"] == cpu.defaults["lr"] == 1e-3
    assert cpu.recipe.samples <= 500 and cpu.epochs < 10
    assert cpu.samples == cpu.recipe.samples and full.samples is None  # thins a PDEBench file
    assert pinn_task("full").iterations == 15_000 and digits_task("cpu").epochs < 30
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
