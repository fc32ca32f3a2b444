"""Advection data generation: the IC recipe's statistics, the exact solver, the FV solver, the CLI."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
import torch

from evo_engine.sciml.advection import AdvectionRecipe, ensure_dataset, main, write_advection
from evo_engine.sciml.initial_conditions import cell_centres, sample_initial_conditions
from evo_engine.sciml.solvers import exact_solution, finite_volume_solution


def test_initial_condition_statistics() -> None:
    ic = sample_initial_conditions(4000, 256, seed=1)
    u0 = ic(cell_centres(256))
    assert u0.shape == (4000, 256)
    assert np.abs(u0).max() <= 4.0
    assert ic.absolute.mean() == pytest.approx(0.1, abs=0.02)
    assert ic.windowed.mean() == pytest.approx(0.1, abs=0.02)
    assert (ic.sign > 0).mean() == pytest.approx(0.5, abs=0.03)
    # Two picks of four modes: 2 or 1 modes active; a double pick (p = 1/4) doubles k.
    active = (ic.wavenumber > 0).sum(1)
    assert set(np.unique(active)) == {1, 2}
    assert (active == 1).mean() == pytest.approx(0.25, abs=0.03)
    period = (255 / 256) / (2 * np.pi)  # PDEBench's L' = distance of the outer cell centres
    integer_k = ic.wavenumber * period
    assert np.allclose(integer_k, np.round(integer_k)) and integer_k.max() == pytest.approx(8)
    # Unpicked modes add a constant: the mean over x is generally not zero.
    assert np.abs(u0.mean(1)).mean() > 0.2
    # PDEBench's JAX key reuse: windows start in [0.1, 0.135) and are 0.45 wide.
    w = ic.windowed
    assert np.all((ic.window_left[w] >= 0.1) & (ic.window_left[w] < 0.135))
    assert np.allclose(ic.window_right[w] - ic.window_left[w], 0.45)
    # |u0| where abs was drawn (before the sign flip and outside windows).
    plain = ic.absolute & ~ic.windowed
    assert np.all(u0[plain] * ic.sign[plain, None] >= 0)


def test_independent_windows_option() -> None:
    ic = sample_initial_conditions(2000, 64, seed=3, jax_window=False)
    left = ic.window_left[ic.windowed]
    assert left.max() > 0.2 and ic.window_right[ic.windowed].min() < 0.7


def test_same_seed_same_samples() -> None:
    a = sample_initial_conditions(5, 128, seed=7)(cell_centres(128))
    b = sample_initial_conditions(5, 128, seed=7)(cell_centres(128))
    c = sample_initial_conditions(5, 128, seed=8)(cell_centres(128))
    assert np.array_equal(a, b) and not np.allclose(a, c)


def test_exact_solution_is_a_periodic_shift() -> None:
    nx, beta = 100, 1.0
    ic = sample_initial_conditions(6, nx, seed=0)
    x = cell_centres(nx)
    t = np.array([0.0, 0.01, 0.37, 1.0])  # shifts of 0, 1, 37 and 100 cells
    u = exact_solution(ic, x, t, beta)
    u0 = ic(x)
    for k, cells in enumerate((0, 1, 37, 100)):
        np.testing.assert_allclose(u[:, k], np.roll(u0, cells, axis=1), atol=1e-9)


def test_stored_frames_are_shifted_initial_conditions(tmp_path) -> None:
    # β = 2.56, 11 frames on [0, 0.5]: every frame moves 0.128 = 16 cells of 1/125.
    recipe = AdvectionRecipe(beta=2.56, samples=4, nx=125, nt=11, final_time=0.5, seed=5)
    path = write_advection(recipe, tmp_path / "adv.h5")
    with h5py.File(path) as f:
        u = f["tensor"][...]
        assert u.dtype == np.float32 and u.shape == (4, 11, 125)
        assert f.attrs["beta"] == 2.56
    for k in range(11):
        np.testing.assert_allclose(u[:, k], np.roll(u[:, 0], 16 * k, axis=1), atol=1e-5)


def test_finite_volume_is_second_order_on_smooth_data() -> None:
    errors = []
    for nx in (32, 64, 128):
        x = cell_centres(nx)
        u0 = torch.tensor(np.sin(2 * np.pi * x)[None], dtype=torch.float64)
        t = np.array([0.0, 0.25, 0.5])
        u = finite_volume_solution(u0, 1.0, t).numpy()
        exact = np.sin(2 * np.pi * (x[None, :] - t[:, None]))
        errors.append(np.sqrt(np.mean((u[0] - exact) ** 2)))
    orders = [math.log2(a / b) for a, b in zip(errors, errors[1:], strict=False)]
    assert errors[-1] < 1e-2 and min(orders) > 1.4


def test_finite_volume_converges_on_recipe_data() -> None:
    errors = []
    for nx in (64, 128, 256):
        ic = sample_initial_conditions(8, nx, seed=1)
        x, t = cell_centres(nx), np.linspace(0.0, 0.25, 3)
        fv = finite_volume_solution(torch.tensor(ic(x)), 4.0, t).numpy()
        errors.append(np.sqrt(np.mean((fv - exact_solution(ic, x, t, 4.0)) ** 2)))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.5 * errors[0]


def test_finite_volume_keeps_a_constant_and_rejects_bad_times() -> None:
    u = finite_volume_solution(torch.full((2, 16), 3.0), -4.0, np.array([0.0, 0.1]))
    assert torch.allclose(u, torch.full_like(u, 3.0))
    with pytest.raises(ValueError, match="start at 0"):
        finite_volume_solution(torch.zeros(1, 8), 1.0, np.array([0.1, 0.2]))


def test_write_layout_matches_pdebench(tmp_path) -> None:
    recipe = AdvectionRecipe(samples=3, nx=64, nt=21, final_time=0.2, solver="fv")
    path = write_advection(recipe, tmp_path / "fv.h5")
    with h5py.File(path) as f:
        assert f["tensor"].shape == (3, 21, 64) and f["tensor"].dtype == np.float32
        np.testing.assert_allclose(f["x-coordinate"][...], (np.arange(64) + 0.5) / 64, rtol=1e-6)
        t = f["t-coordinate"][...]
        assert t.shape == (22,) and t.dtype == np.float32
        assert t[0] == 0 and t[-1] == pytest.approx(0.21)  # nt + 1 entries, like PDEBench
        assert f.attrs["solver"] == "fv"
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("version", ["", "legacy"])
def test_processes_write_the_file_a_single_process_writes_bit_for_bit(tmp_path, version) -> None:
    # 7 samples in blocks of 3 over 2 processes: uneven blocks, written out of a pool; a block
    # written at the wrong rows, or a solve that depended on its block's other samples,
    # changes bytes. Both solvers: the current FV and PDEBench's pre-fix (legacy) one.
    recipe = AdvectionRecipe(samples=7, nx=64, nt=11, final_time=0.5, solver="fv",
                             **({"version": version} if version else {}))
    one = write_advection(recipe, tmp_path / "one.h5", device="cpu", block=3, processes=1)
    two = write_advection(recipe, tmp_path / "two.h5", device="cpu", block=3, processes=2)
    with h5py.File(one) as a, h5py.File(two) as b:
        assert a["tensor"].shape == (7, 11, 64)
        assert np.array_equal(a["tensor"][...], b["tensor"][...])
        assert len({a["tensor"][i, -1].tobytes() for i in range(7)}) == 7  # 7 distinct samples
    assert not list(tmp_path.glob("*.tmp"))


def test_a_stop_while_processes_solve_kills_them_and_leaves_no_file(tmp_path) -> None:
    import multiprocessing
    import signal
    import time

    class Stop(Exception):
        pass

    def stop(signum, frame):
        raise Stop

    # ~20 s of solving per helper here (idle): the stop must not wait for their blocks
    recipe = AdvectionRecipe(samples=100, nx=1024, nt=11, final_time=2.0, solver="fv")
    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, 4.0)
    start = time.monotonic()
    try:
        with pytest.raises(Stop):
            write_advection(recipe, tmp_path / "big.h5", device="cpu", processes=2)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert time.monotonic() - start < 10  # not the helpers' whole blocks
    assert not multiprocessing.active_children()  # killed, not left solving
    assert not list(tmp_path.iterdir())  # neither the file nor its temporary


def test_the_default_spreads_only_a_solve_worth_the_processes() -> None:
    from evo_engine.sciml.advection import PARALLEL_CELL_STEPS, _cell_steps
    from evo_engine.sciml.presets import advection_task

    # the cpu preset's data (about 2.5 minutes serially) is spread; a test's 3 x 64 is not
    assert _cell_steps(advection_task("cpu").recipe) > 5 * PARALLEL_CELL_STEPS
    assert _cell_steps(AdvectionRecipe(samples=3, nx=64, nt=21, final_time=0.2)) < 1e-3 * PARALLEL_CELL_STEPS


def test_ensure_dataset_caches_in_the_data_dir(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("EVO_ENGINE_DATA_DIR", str(tmp_path))
    recipe = AdvectionRecipe(samples=3, nx=16, nt=5)
    path = ensure_dataset(recipe)
    assert path.parent == tmp_path and path.name == recipe.filename()
    stamp = path.stat().st_mtime_ns
    assert ensure_dataset(recipe).stat().st_mtime_ns == stamp  # not generated twice
    other = AdvectionRecipe(samples=3, nx=16, nt=5, beta=1.0)
    assert other.filename() != recipe.filename()


def test_cli_writes_a_file(tmp_path, capsys) -> None:
    out = tmp_path / "adv_beta4.h5"
    assert (
        main(["--beta", "4.0", "--samples", "2", "--nx", "32", "--nt", "6", "--out", str(out)]) == 0
    )
    assert "wrote 2 samples" in capsys.readouterr().out
    with h5py.File(out) as f:
        assert f["tensor"].shape == (2, 6, 32) and f.attrs["beta"] == 4.0


@pytest.mark.parametrize(
    "argv", [["--samples", "0"], ["--solver", "magic"], ["--nt", "x"], ["--bogus"]]
)
def test_cli_bad_flags_exit_2(argv, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize("device", ["gpu0", "cuda:99"])
def test_cli_a_device_torch_cannot_use_exits_2(device, tmp_path, capsys) -> None:
    # "gpu0" is no torch device; "cuda:99" is no GPU of this machine (none at all without
    # CUDA): both tracebacked out of the solver with exit 1 before.
    out = tmp_path / "adv.h5"
    with pytest.raises(SystemExit) as exc:
        main(["--samples", "2", "--nx", "16", "--nt", "3", "--solver", "fv",
              "--device", device, "--out", str(out)])
    assert exc.value.code == 2
    assert f"--device {device!r}" in capsys.readouterr().err
    assert not out.exists()


def test_cli_an_output_it_cannot_write_exits_2(tmp_path, capsys) -> None:
    # a folder as --out (its temporary file could not be renamed over it), and a path under
    # a plain file (no folder can be made there): tracebacks with exit 1 before
    plain = tmp_path / "notes.txt"
    plain.write_text("")
    for out, says in ((tmp_path, "is a directory"), (plain / "adv.h5", "cannot write")):
        with pytest.raises(SystemExit) as exc:
            main(["--samples", "2", "--nx", "16", "--nt", "3", "--out", str(out)])
        assert exc.value.code == 2
        assert says in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
