"""The zarr run store: committed rows, atomic snapshots with fallback, plain-zarr readability."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from evo_engine.store import CHUNK, RunStore, SnapshotCorrupt, StoreError


def make(tmp_path: Path) -> RunStore:
    return RunStore.create(tmp_path, attrs={"scenario": "t", "max_evals": 10},
                           param_kinds={"x": "float", "n": "int", "c": "categorical"}, dim=3)


def rows(start: int, n: int) -> dict:
    return {"uid": np.arange(start, start + n), "fitness": np.linspace(0, 1, n),
            "params/c": ["a"] * n, "genome": np.zeros((n, 3))}


def test_rows_past_committed_are_invisible_and_overwritten(tmp_path: Path) -> None:
    st = make(tmp_path)
    st.evaluations.append(rows(0, 5), 5)
    # Simulate a crash between writing chunks and advancing `committed`.
    st.evaluations._arrays["uid"][5:8] = [99, 98, 97]
    reopened = RunStore.open(tmp_path)
    assert reopened.evaluations.committed == 5
    assert reopened.evaluations.read("uid").tolist() == [0, 1, 2, 3, 4]
    reopened.evaluations.append(rows(5, 2), 2)
    assert RunStore.open(tmp_path).evaluations.read("uid").tolist() == list(range(7))


def test_growth_beyond_first_chunk_and_trim(tmp_path: Path) -> None:
    st = make(tmp_path)
    n = CHUNK + 10
    st.evaluations.append(rows(0, n), n)
    assert st.evaluations.read("uid")[-1] == n - 1
    st.close("finished", "finished", trim=True)
    z = zarr.open(str(tmp_path / "run.zarr"), mode="r")
    assert z["evaluations/uid"].shape == (n,) and z["evaluations/genome"].shape == (n, 3)
    assert z.attrs["status"] == "finished"


def test_metric_columns_added_later_read_nan_for_earlier_rows(tmp_path: Path) -> None:
    st = make(tmp_path)
    st.evaluations.append(rows(0, 3), 3)
    st.ensure_metrics(["rmse"])
    st.evaluations.append({**rows(3, 2), "metrics/rmse": [0.5, 0.25]}, 2)
    got = RunStore.open(tmp_path).evaluations.read("metrics/rmse")
    assert np.isnan(got[:3]).all() and got[3:].tolist() == [0.5, 0.25]
    assert RunStore.open(tmp_path).attrs["metric_names"] == ["rmse"]


def test_snapshots_keep_two_and_fall_back_when_latest_is_corrupt(tmp_path: Path) -> None:
    st = make(tmp_path)
    for i in range(4):
        st.write_snapshot({"i": i})
    names = sorted(st.snapshots.array_keys())
    assert len(names) == 2, "only the newest two snapshots are kept"
    assert st.latest_snapshot() == {"i": 3}
    latest = st.snapshots.attrs["latest"]
    arr = st.snapshots[latest]
    arr[: min(8, arr.shape[0])] = 0  # a torn write
    warnings: list[str] = []
    assert RunStore.open(tmp_path).latest_snapshot(warnings.append) == {"i": 2}
    assert warnings and "checksum" in warnings[0]
    with pytest.raises(SnapshotCorrupt):
        RunStore.open(tmp_path).read_snapshot(latest)


def test_pointer_is_written_last(tmp_path: Path) -> None:
    st = make(tmp_path)
    st.write_snapshot({"i": 1})
    # A snapshot array written without its pointer (killed in between) is simply not used.
    st.snapshots.create_array("s99999999", shape=(3,), dtype="u1")
    assert RunStore.open(tmp_path).latest_snapshot() == {"i": 1}


def test_open_refuses_what_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not an evo_engine run directory"):
        RunStore.open(tmp_path)
    zarr.open_group(str(tmp_path / "run.zarr"), mode="w")
    with pytest.raises(StoreError, match="format_version"):
        RunStore.open(tmp_path)
    make(tmp_path)
    zarr.open_group(str(tmp_path / "run.zarr"), mode="r+").attrs["format_version"] = 99
    with pytest.raises(StoreError, match="newer than this evo_engine reads"):
        RunStore.open(tmp_path)
