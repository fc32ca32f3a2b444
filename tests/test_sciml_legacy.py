"""PDEBench's advection generators (2022 pre-fix flux; float32 clock) against pinned references.

``tests/fixtures/pdebench_advection_nx64_nt6.npz`` holds 3 initial conditions (``u0``: 2 plain,
1 windowed; float32, nx 64) and the 6 frames (t = 0, 0.4, …, 2) PDEBench's generator made from
them: ``frames`` by the pre-fix one (``advection_multi_solution_Hydra.py`` as of
JR-1991/PDEBench@0e39f28a, the flux without its factor ½), ``frames_current`` by the same code
with the ½ (the fix of ac1ed78); with ``bc``/``limiting``/``VLlimiter``/``Courant`` of its
``utils.py``, β = 4, CFL 0.4, dt_save 0.4, run in JAX 0.10.2 on the CPU (float32). How it was
made: ``docs/pdebench.md``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from evo_engine.sciml.advection import AdvectionRecipe, main, write_advection
from evo_engine.sciml.solvers import (
    finite_volume_solution,
    pdebench_finite_volume_solution,
    pdebench_schedule,
)

REFERENCE = Path(__file__).parent / "fixtures" / "pdebench_advection_nx64_nt6.npz"
# Our port matched PDEBench's output bit for bit on this machine; the tolerance leaves room for
# another CPU's rounding and is 30x below the smallest change that matters (an unfused update).
TOLERANCE = 1e-5


def _reference() -> tuple[torch.Tensor, np.ndarray]:
    data = np.load(REFERENCE)
    return torch.from_numpy(data["u0"]), data["frames"]


def _legacy(u0: torch.Tensor, **kwargs) -> np.ndarray:
    kwargs.setdefault("flux_factor", 1.0)
    return pdebench_finite_volume_solution(u0, 4.0, final_time=2.0, frames=6, **kwargs).numpy()


def test_reference_file_is_what_the_docstring_says() -> None:
    u0, frames = _reference()
    assert u0.dtype == torch.float32 and u0.shape == (3, 64)
    assert frames.dtype == np.float32 and frames.shape == (3, 6, 64)
    assert np.array_equal(frames[:, 0], u0.numpy())
    current = np.load(REFERENCE)["frames_current"]
    assert current.shape == frames.shape and np.array_equal(current[:, 0], frames[:, 0])


def test_legacy_solver_matches_pdebench_prefix_generator() -> None:
    u0, frames = _reference()
    np.testing.assert_allclose(_legacy(u0), frames, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize(
    ("what", "kwargs"),
    [
        ("a float64 clock instead of PDEBench's float32 one", {"clock": np.float64}),
        ("CFL 0.41 instead of 0.4", {"cfl": 0.41}),
        ("float64 arithmetic", {"dtype": torch.float64}),
    ],
)
def test_reference_detects_a_changed_time_stepping(what: str, kwargs: dict) -> None:
    """Each plausible deviation moves the frames by far more than the tolerance."""
    u0, frames = _reference()
    dtype = kwargs.pop("dtype", None)
    if dtype is not None:
        u0 = u0.to(dtype)
    assert np.abs(_legacy(u0, **kwargs) - frames).max() > 20 * TOLERANCE, what


def test_reference_detects_the_fixed_flux() -> None:
    u0, frames = _reference()
    fixed = finite_volume_solution(u0, 4.0, np.arange(6) * 0.4).numpy()
    assert np.abs(fixed - frames).max() > 0.5  # the fixed flux advects at β, not 2β
    assert np.abs(_legacy(u0, flux_factor=0.5) - frames).max() > 0.5


def test_current_version_matches_pdebench_fixed_generator() -> None:
    u0, _ = _reference()
    reference = np.load(REFERENCE)["frames_current"]
    np.testing.assert_allclose(_legacy(u0, flux_factor=0.5), reference, rtol=0, atol=TOLERANCE)
    assert np.abs(_legacy(u0, flux_factor=0.5, clock=np.float64) - reference).max() > 1e-4


def test_current_version_is_the_fixed_flux_on_pdebench_clock() -> None:
    """PDEBench's fixed generator: our fixed solver's frames, a float32 clock later."""
    u0, _ = _reference()
    current = _legacy(u0, flux_factor=0.5)
    exact_clock = _legacy(u0, flux_factor=0.5, clock=np.float64)
    fixed = finite_volume_solution(u0, 4.0, np.arange(6) * 0.4).numpy()
    assert np.abs(exact_clock - fixed).max() < 1e-5  # same scheme, same times
    assert np.abs(current - fixed).max() > 1e-4  # the float32 clock moves the frames
    with pytest.raises(ValueError, match="flux_factor"):
        _legacy(u0, flux_factor=0.25)


def test_legacy_flux_advects_at_twice_beta() -> None:
    """Pre-fix "β" data equal fixed data at 2β up to the scheme's error (same dt, so CFL 0.8)."""
    x = (np.arange(128) + 0.5) / 128
    u0 = torch.tensor(np.sin(2 * np.pi * x)[None], dtype=torch.float32)
    legacy = pdebench_finite_volume_solution(u0, 1.0, final_time=0.25, frames=2, flux_factor=1.0)
    legacy = legacy[0, -1].numpy()
    assert np.abs(legacy - np.sin(2 * np.pi * (x - 2.0 * 0.25))).max() < 2e-2
    assert np.abs(legacy - np.sin(2 * np.pi * (x - 1.0 * 0.25))).max() > 0.5


def test_float32_clock_drifts_like_pdebench() -> None:
    """PDEBench's 1024 x 201 β = 4 run: 20,601 updates, integrated time +3.4e-4 at t = 2."""
    steps, saved_after = pdebench_schedule(4.0, 1 / 1024, 0.01, 2.0, 201)
    assert len(steps) == 20_601 and saved_after[0] == 0 and saved_after[-1] == len(steps)
    assert steps.sum() - 2.0 == pytest.approx(3.43e-4, abs=5e-6)
    exact, _ = pdebench_schedule(4.0, 1 / 1024, 0.01, 2.0, 201, clock=np.float64)
    assert abs(exact.sum() - 2.0) < 1e-9


def test_legacy_recipe_writes_its_version(tmp_path) -> None:
    recipe = AdvectionRecipe(samples=2, nx=32, nt=6, solver="fv", version="legacy")
    assert recipe.filename().endswith("_legacy.h5")
    assert AdvectionRecipe(solver="fv", version="current").filename().endswith("_current.h5")
    assert AdvectionRecipe(solver="fv").filename() == (
        "advection_beta4_n10000_nx1024_nt201_T2_seed2022_fv_cfl0.4.h5"  # unchanged
    )
    path = write_advection(recipe, tmp_path / "legacy.h5", device="cpu")
    with h5py.File(path) as f:
        assert f.attrs["version"] == "legacy"
        legacy = f["tensor"][...]
    fixed_path = write_advection(
        AdvectionRecipe(samples=2, nx=32, nt=6, solver="fv"), tmp_path / "fixed.h5", device="cpu"
    )
    with h5py.File(fixed_path) as f:
        assert f.attrs["version"] == "fixed"
        assert np.array_equal(legacy[:, 0], f["tensor"][:, 0])  # same initial conditions
        assert np.abs(legacy[:, -1] - f["tensor"][:, -1]).max() > 0.1


def test_pdebench_versions_need_the_fv_solver() -> None:
    for version in ("legacy", "current"):
        with pytest.raises(ValueError, match="needs solver 'fv'"):
            AdvectionRecipe(version=version)
    with pytest.raises(ValueError, match="version must be one of"):
        AdvectionRecipe(solver="fv", version="2021")


@pytest.mark.parametrize("argv", [["--data", "legacy"], ["--data", "old"]])
def test_cli_bad_version_exits_2(argv, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_cli_writes_legacy_data(tmp_path, capsys) -> None:
    out = tmp_path / "legacy.h5"
    argv = ["--samples", "2", "--nx", "32", "--nt", "6", "--solver", "fv", "--data", "legacy"]
    assert main([*argv, "--device", "cpu", "--out", str(out)]) == 0
    assert "legacy dynamics" in capsys.readouterr().out
    with h5py.File(out) as f:
        assert f.attrs["version"] == "legacy"


def test_flush_denormal_is_switched_back_off() -> None:
    u0, _ = _reference()
    _legacy(u0)
    tiny = torch.tensor([1e-39], dtype=torch.float32)  # a float32 denormal
    assert (tiny * 1.0).item() != 0.0


def _reproduce(*argv: str) -> subprocess.CompletedProcess:
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    script = root / "benchmarks" / "reproduce_pdebench.py"
    return subprocess.run(
        [sys.executable, str(script), *argv], capture_output=True, text=True, env=env, timeout=120
    )


def test_reproduce_refuses_a_file_of_the_other_version(tmp_path) -> None:
    """A comparison says which data it uses: a legacy file cannot be passed off as fixed data."""
    recipe = AdvectionRecipe(samples=2, nx=32, nt=6, solver="fv", version="legacy")
    path = write_advection(recipe, tmp_path / "legacy.h5", device="cpu")
    done = _reproduce("--data", "fixed", "--data-file", str(path))
    assert done.returncode == 2
    assert "holds legacy data" in done.stderr and "Traceback" not in done.stderr
    missing = _reproduce("--data", "legacy", "--data-file", str(tmp_path / "none.h5"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_published_numbers_are_the_quoted_source_lines() -> None:
    """Every published number ``reproduce_pdebench.py`` compares with is the one its source line
    says (``via``: file and entry of the transcription quoted verbatim in docs/benchmarks/), and a
    source holds no number beside it (the third-party U-Net plot markers crept in that way)."""
    import importlib.util
    import re

    from evo_engine.sciml.advection import VERSIONS

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location(
        "reproduce_pdebench", root / "benchmarks" / "reproduce_pdebench.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    excerpt = (
        root / "docs" / "benchmarks" / "pdebench-published-fno-audit-transcription.txt"
    ).read_text(encoding="utf-8")
    catalog, supplement = excerpt.split("NEURIPS_SUPPLEMENT = {", 1)
    quoted = {
        "TEST_CATALOG['9']": re.search(r'"9": \("Advection", "β=4\.0", ([0-9.e-]+),', catalog),
        "NEURIPS_SUPPLEMENT['9']": re.search(r'"9": ([0-9.e-]+),', supplement),
    }
    for name, source in module.PUBLISHED.items():
        assert source["data"].rstrip("?") in VERSIONS, name
        entry = source["via"].rsplit(" ", 1)[-1]
        numbers = [
            value for model in ("unet", "fno", "pinn") for value in source.get(model, {}).values()
        ]
        assert numbers == [float(quoted[entry].group(1))], name
