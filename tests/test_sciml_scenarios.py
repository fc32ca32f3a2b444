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
    # PDEBench's 10,000 × 201 × 1024, β = 4, from its finite-volume scheme (not the exact shift).
    assert full.recipe == AdvectionRecipe(solver="fv")
    assert (full.nx, full.nt, full.epochs) == (256, 41, 500)
    assert full.defaults["lr"] == cpu.defaults["lr"] == 1e-3
    assert full.defaults["model"] == "unet" and cpu.defaults["model"] == "fno"
    assert (cpu.defaults["modes"], cpu.defaults["width"]) == (12, 20)  # PDEBench's own FNO
    assert cpu.recipe.solver == "fv" and cpu.recipe.nx == 1024 and cpu.recipe.samples <= 500
    assert cpu.samples == cpu.recipe.samples and full.samples is None  # thins a PDEBench file
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
