"""Reading advection files: our own, PDEBench-layout ones, strides, splits and bad layouts."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from evo_engine.errors import InputError
from evo_engine.sciml.advection import AdvectionRecipe, write_advection
from evo_engine.sciml.data import (
    DataFileError,
    beta_from_filename,
    inspect_advection_file,
    read_advection,
    split_bounds,
    strides_for,
)


def pdebench_file(path, samples: int = 20, nt: int = 21, nx: int = 64, *, beta_attr=None):
    """A file written the way PDEBench's Data_Merge writes one: t-coordinate has nt + 1 entries."""
    u = np.arange(samples * nt * nx, dtype=np.float32).reshape(samples, nt, nx)
    with h5py.File(path, "w") as f:
        f["tensor"] = u
        f["x-coordinate"] = ((np.arange(nx) + 0.5) / nx).astype(np.float32)
        f["t-coordinate"] = (np.arange(nt + 1) * 0.01).astype(np.float32)
        if beta_attr is not None:
            f.attrs["beta"] = beta_attr
    return u


def test_round_trip_of_a_generated_file(tmp_path) -> None:
    recipe = AdvectionRecipe(beta=0.4, samples=10, nx=32, nt=11)
    path = write_advection(recipe, tmp_path / "ours.h5")
    data = read_advection(path, reduced_resolution=1, reduced_resolution_t=1)
    with h5py.File(path) as f:
        np.testing.assert_array_equal(data.u, f["tensor"][...])
    assert data.beta == 0.4 and data.t.shape == (11,) and data.x.shape == (32,)
    assert data.t[-1] == pytest.approx(2.0)


def test_pdebench_layout_with_strides_and_beta_from_name(tmp_path) -> None:
    path = tmp_path / "1D_Advection_Sols_beta4.0.hdf5"
    u = pdebench_file(path)
    info = inspect_advection_file(path)
    assert (info.samples, info.nt, info.nx, info.beta) == (20, 21, 64, 4.0)
    data = read_advection(path, reduced_resolution=4, reduced_resolution_t=5)
    np.testing.assert_array_equal(data.u, u[:, ::5, ::4])
    assert data.u.shape == (20, 5, 16)
    np.testing.assert_allclose(data.t, [0.0, 0.05, 0.1, 0.15, 0.2], atol=1e-6)
    np.testing.assert_allclose(data.x, ((np.arange(64) + 0.5) / 64)[::4], rtol=1e-6)


def test_beta_attribute_wins_over_the_name(tmp_path) -> None:
    path = tmp_path / "adv_beta4.h5"
    pdebench_file(path, beta_attr=0.1)
    assert inspect_advection_file(path).beta == pytest.approx(0.1)
    pdebench_file(tmp_path / "plain.h5")
    assert inspect_advection_file(tmp_path / "plain.h5").beta is None


@pytest.mark.parametrize(
    ("name", "beta"),
    [
        ("1D_Advection_Sols_beta4.0.hdf5", 4.0),
        ("adv_beta4.h5", 4.0),
        ("x_beta1e-1.h5", 0.1),
        ("advection_beta0.4_n3_nx16.h5", 0.4),
        ("burgers.h5", None),
    ],
)
def test_beta_from_filename(name: str, beta) -> None:
    assert beta_from_filename(name) == beta


@pytest.mark.parametrize("beta", [4.0, 0.4, -1.0, -0.25, 1e-5])
def test_beta_from_filename_reads_the_generators_own_names(beta: float) -> None:
    """A file of ours that lost its ``beta`` attribute is still read with its β's sign: the
    parser took the ``-`` of ``advection_beta-1_...`` for a separator and read β = +1."""
    assert beta_from_filename(AdvectionRecipe(beta=beta).filename()) == beta


def test_splits_are_test_first_then_val_then_train(tmp_path) -> None:
    path = tmp_path / "adv.h5"
    u = pdebench_file(path, samples=30)
    parts = {
        s: read_advection(path, s, reduced_resolution=1, reduced_resolution_t=1).u
        for s in ("test", "val", "train")
    }
    np.testing.assert_array_equal(parts["test"], u[0:3])
    np.testing.assert_array_equal(parts["val"], u[3:6])
    np.testing.assert_array_equal(parts["train"], u[6:30])
    assert split_bounds(10_000) == {
        "test": (0, 1000),
        "val": (1000, 2000),
        "train": (2000, 10_000),
        "all": (0, 10_000),
    }


def test_reduced_batch_and_block_reads(tmp_path) -> None:
    path = tmp_path / "adv.h5"
    u = pdebench_file(path, samples=41)
    data = read_advection(
        path, "train", reduced_batch=2, reduced_resolution=1, reduced_resolution_t=1, block=3
    )
    # 21 samples after thinning: test 2, val 2, train 17 (samples 8, 10, ..., 40).
    np.testing.assert_array_equal(data.u, u[::2][4:])


def test_strides_for_targets(tmp_path) -> None:
    path = tmp_path / "big.h5"
    pdebench_file(path, samples=20, nt=21, nx=64)
    info = inspect_advection_file(path)
    assert strides_for(info, nx=16, nt=5) == {
        "reduced_resolution": 4,
        "reduced_resolution_t": 5,
        "reduced_batch": 1,
    }
    assert strides_for(info, nx=64, nt=21, samples=10)["reduced_batch"] == 2
    with pytest.raises(DataFileError, match="cannot be strided"):
        strides_for(info, nx=48, nt=5)



def test_a_file_too_small_for_the_task_is_refused_before_any_training(tmp_path) -> None:
    # Both passed the check that stops a run before its workers start, then failed every
    # evaluation (ValueError in read_advection) while the run exited 0.
    from evo_engine.sciml.training import AdvectionTask, prepare_advection

    one_frame = tmp_path / "one_frame.h5"
    pdebench_file(one_frame, samples=20, nt=1, nx=64)  # nt 1: "0 frames apart" is a multiple
    with pytest.raises(DataFileError, match="cannot be strided"):
        strides_for(inspect_advection_file(one_frame), nx=16, nt=5)
    two = tmp_path / "two.h5"
    pdebench_file(two, samples=2, nt=21, nx=64)  # no test, validation and training split
    with pytest.raises(DataFileError, match="2 samples"):
        strides_for(inspect_advection_file(two), nx=16, nt=5)
    with pytest.raises(DataFileError, match="2 samples"):
        prepare_advection(AdvectionTask(data_file=str(two), nx=16, nt=21, epochs=1))

def write(path, **datasets) -> None:
    with h5py.File(path, "w") as f:
        for key, value in datasets.items():
            f[key] = value


@pytest.mark.parametrize(
    ("datasets", "problem"),
    [
        ({"x-coordinate": np.zeros(8), "t-coordinate": np.zeros(5)}, "'tensor' is missing"),
        (
            {
                "tensor": np.zeros((2, 5, 8, 1)),
                "x-coordinate": np.zeros(8),
                "t-coordinate": np.zeros(5),
            },
            "not \\[samples, nt, nx\\]",
        ),
        (
            {
                "tensor": np.zeros((2, 5, 8)),
                "x-coordinate": np.zeros(7),
                "t-coordinate": np.zeros(5),
            },
            "'x-coordinate' has shape",
        ),
        (
            {
                "tensor": np.zeros((2, 5, 8)),
                "x-coordinate": np.zeros(8),
                "t-coordinate": np.zeros(7),
            },
            "'t-coordinate' has shape",
        ),
        (
            {
                "tensor": np.zeros((2, 5, 8), dtype=np.int32),
                "x-coordinate": np.zeros(8),
                "t-coordinate": np.zeros(5),
            },
            "not a float type",
        ),
    ],
)
def test_bad_layouts_are_refused(tmp_path, datasets, problem: str) -> None:
    path = tmp_path / "bad.h5"
    write(path, **datasets)
    with pytest.raises(DataFileError, match=problem) as exc:
        read_advection(path)
    assert str(path) in str(exc.value) and "PDEBench's HDF5 layout" in str(exc.value)
    assert isinstance(exc.value, ValueError) and isinstance(exc.value, InputError)


def test_missing_and_non_hdf5_files_are_refused(tmp_path) -> None:
    with pytest.raises(DataFileError, match="does not exist"):
        read_advection(tmp_path / "nope.h5")
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    with pytest.raises(DataFileError, match="cannot be opened as HDF5"):
        read_advection(junk)


def test_bad_read_arguments(tmp_path) -> None:
    path = tmp_path / "adv.h5"
    pdebench_file(path)
    with pytest.raises(ValueError, match="split must be"):
        read_advection(path, "validation")
    with pytest.raises(ValueError, match="reduced_resolution must be"):
        read_advection(path, reduced_resolution=0)
