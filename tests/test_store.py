"""The zarr run store: committed rows, atomic snapshots with fallback, plain-zarr readability."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from evo_engine.store.runstore import CHUNK, RunStore, SnapshotCorrupt, StoreError


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


def test_a_kill_between_two_column_resizes_is_repaired_by_the_next_append(tmp_path: Path) -> None:
    st = make(tmp_path)
    st.evaluations.append(rows(0, CHUNK), CHUNK)
    # The kill: the first column grew to two chunks, the others did not.
    z = zarr.open_group(str(tmp_path / "run.zarr"), mode="r+")
    z["evaluations/uid"].resize((2 * CHUNK,))
    reopened = RunStore.open(tmp_path)
    assert reopened.evaluations.committed == CHUNK
    reopened.evaluations.append(rows(CHUNK, 5), 5)
    again = RunStore.open(tmp_path)
    assert again.damage == []
    assert again.evaluations.read("uid").tolist() == list(range(CHUNK + 5))
    assert again.evaluations.read("fitness")[-5:].tolist() == np.linspace(0, 1, 5).tolist()
    assert again.evaluations.read("genome").shape == (CHUNK + 5, 3)


def test_column_reads_committed_rows_only(tmp_path: Path) -> None:
    st = make(tmp_path)
    st.evaluations.append(rows(0, 6), 6)
    ev = RunStore.open(tmp_path).evaluations
    assert ev.column("uid", 2, 4).tolist() == [2, 3]
    assert ev.column("uid", 4, 100).tolist() == [4, 5]
    assert ev.column("no_such_column", 0, 3).tolist() == [-1, -1, -1]
    assert ev.has_column("params/c") and not ev.has_column("no_such_column")


@pytest.mark.real_fsync
def test_sync_fsyncs_the_chunks_and_marker_an_append_wrote(tmp_path: Path, monkeypatch) -> None:
    import os

    synced: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    st = make(tmp_path)
    st.evaluations.append(rows(0, 3), 3)
    monkeypatch.setattr(os, "fsync", spy)
    paths = st.evaluations.sync()
    root = tmp_path / "run.zarr" / "evaluations"
    assert root / "zarr.json" in paths and root / "uid" / "c" / "0" in paths
    assert root / "genome" / "c" / "0" / "0" in paths
    assert str(root / "uid" / "c" / "0") in synced and str(root / "uid" / "c") in synced
    assert st.evaluations.sync() == []  # nothing appended since


def test_an_unlockable_run_directory_is_said_loudly(tmp_path: Path, monkeypatch) -> None:
    import errno
    import fcntl

    from evo_engine.store.rundir import RunLock

    def no_flock(fh: object, op: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    lock = RunLock(tmp_path / "run")
    lock.acquire()
    assert lock.unguarded is not None and "cannot be locked" in lock.unguarded
    assert "No locks available" in lock.unguarded and "second job" in lock.unguarded
    lock.release()


def test_store_uses_zarr_public_api_only() -> None:
    src = (Path(__file__).resolve().parent.parent / "evo_engine").rglob("*.py")
    for path in src:
        text = path.read_text()
        assert "zarr.core" not in text and "_async_array" not in text, path
        if path.name != "runstore.py":
            assert "._arrays" not in text, path


def test_an_unlockable_run_directory_warns_on_stderr_and_in_the_log(tmp_path: Path, monkeypatch,
                                                                    capsys) -> None:
    import errno
    import fcntl
    import json

    from evo_engine.cli.main import main

    def no_flock(fh: object, op: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    monkeypatch.setenv("QUICK_EVALS", "4")
    quick = Path(__file__).resolve().parent / "scenarios" / "quick.py"
    from evo_engine.job.log import configure

    try:
        assert main([str(quick), "--workers", "0", "--run-dir", str(tmp_path / "run"),
                     "--quiet"]) == 0
    finally:
        configure(None)
    assert "cannot be locked" in capsys.readouterr().err
    events = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert any("cannot be locked" in str(e.get("message", "")) for e in events)


@settings(max_examples=200, deadline=None)
@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=600) | st.dictionaries(st.text(max_size=4), inner, max_size=5)
    | st.dictionaries(st.integers(), inner, max_size=3),
    max_leaves=2000))
def test_json_in_pieces_is_json_dumps(value) -> None:
    import json

    from evo_engine.store.runstore import json_in_pieces

    assert json_in_pieces(value) == json.dumps(value, separators=(",", ":"))
    assert json_in_pieces({"rows": [value] * 300}) == json.dumps({"rows": [value] * 300},
                                                                 separators=(",", ":"))


def test_the_check_reads_in_blocks_and_names_the_bad_chunk_in_a_later_block(
        tmp_path: Path, monkeypatch) -> None:
    import evo_engine.store.runstore as store_module

    monkeypatch.setattr(store_module, "CHECK_CHUNKS", 2)
    st = make(tmp_path)
    n = 3 * CHUNK + 5
    st.evaluations.append(rows(0, n), n)
    assert RunStore.open(tmp_path).evaluations.read("uid").tolist() == list(range(n))
    chunk = tmp_path / "run.zarr/evaluations/fitness/c/2"
    chunk.write_bytes(chunk.read_bytes()[:100])
    (tmp_path / "run.zarr/evaluations/t_end/c/1").unlink()
    damaged = RunStore.open(tmp_path, mode="r")
    assert any(f"evaluations/fitness: rows {2 * CHUNK}-{3 * CHUNK - 1} cannot be read" in p
               for p in damaged.damage), damaged.damage
    assert any(f"evaluations/t_end/c/1 holding rows {CHUNK}-{2 * CHUNK - 1} is missing" in p
               for p in damaged.damage), damaged.damage
    assert damaged.evaluations.readable == CHUNK
    assert damaged.evaluations.read("uid").tolist() == list(range(CHUNK))


def _stats(root: Path) -> dict[Path, tuple[int, int, int]]:
    return {p: (s.st_ino, s.st_mtime_ns, s.st_size)
            for p in [root, *root.rglob("*")] for s in [p.stat()]}


def test_a_snapshot_syncs_every_file_and_directory_entry_its_rows_changed(
        tmp_path: Path, monkeypatch) -> None:
    """Under --fsync snapshots, what a snapshot covers is on stable storage when it is named:
    every file written since the previous snapshot (chunks, each table's marker, the arrays'
    zarr.json a resize rewrote, a new metric column and the root's metric_names) and the
    directory holding each new or replaced file or directory."""
    import os

    from evo_engine.search.engine import Engine, EngineConfig
    from evo_engine.search.messages import Result
    from evo_engine.space import Float, Space
    from evo_engine.store.writer import Recorder

    space = Space(x=Float(0.0, 1.0), y=Float(0.0, 1.0))
    store = RunStore.create(tmp_path, attrs={"max_evals": CHUNK + 8}, dim=space.dim,
                            param_kinds={n: p.kind for n, p in space.items()})
    eng = Engine(space, EngineConfig(max_evals=CHUNK + 8, population_size=4, seed=1))
    rec = Recorder(store, space, background=False, fsync="snapshots")

    def evaluate(n: int, metrics: dict[str, float]) -> None:
        for _ in range(n):
            t = eng.ask()
            rec.record_task(t)
            _, ev = eng.tell(Result(uid=t.uid, worker=0, fitness=float(t.genome[0]),
                                    metrics=metrics))
            rec.record(ev)

    evaluate(CHUNK - 2, {"a": 1.0})
    rec.snapshot(eng.get_state())
    rec.flush()
    root = tmp_path / "run.zarr"
    before = _stats(root)
    synced: set[Path] = set()
    real = os.fsync

    def spy(fd: int) -> None:
        synced.add(Path(os.readlink(f"/proc/self/fd/{fd}")))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    evaluate(6, {"a": 1.0, "b": 2.0})  # past the first chunk (a resize) and a new column
    rec.snapshot(eng.get_state())
    rec.flush()
    rec.close()
    after = _stats(root)
    changed = [p for p, s in after.items() if p.is_file() and before.get(p) != s]
    assert root / "evaluations" / "uid" / "zarr.json" in changed  # the resize rewrote it
    assert root / "evaluations" / "metrics" / "b" / "zarr.json" in changed
    unsynced = [str(p.relative_to(root)) for p in changed if p not in synced]
    assert unsynced == []
    new = [p for p in after if p not in before or (p.is_file() and before[p][0] != after[p][0])]
    orphans = [str(p.relative_to(root)) for p in new if p.parent not in synced]
    assert orphans == []
class Killed(BaseException):
    """The process dies here (kill -9): nothing after this point is written."""


def test_a_kill_inside_an_append_leaves_committed_and_the_old_rows(tmp_path: Path,
                                                                   monkeypatch) -> None:
    import evo_engine.store.runstore as store_module

    st = make(tmp_path)
    st.evaluations.append(rows(0, 5), 5)
    real = store_module._run_together

    def killed_midway(writes) -> None:
        """Half of the columns reach the disk, then the process dies."""
        writes = list(writes)
        half = len(writes) // 2
        for pending in writes[half:]:
            pending.close()  # never awaited: the kill came first
        real(writes[:half])
        raise Killed

    monkeypatch.setattr(store_module, "_run_together", killed_midway)
    with pytest.raises(Killed):
        st.evaluations.append({**rows(5, 3), "fitness": [7.0, 8.0, 9.0]}, 3)
    monkeypatch.undo()
    reopened = RunStore.open(tmp_path)
    assert reopened.damage == []
    assert reopened.evaluations.committed == 5, "committed moved before the rows were written"
    assert reopened.evaluations.read("uid").tolist() == list(range(5))
    assert reopened.evaluations.read("fitness").tolist() == np.linspace(0, 1, 5).tolist()
    reopened.evaluations.append(rows(5, 3), 3)  # the torn rows are garbage, overwritten
    assert RunStore.open(tmp_path).evaluations.read("uid").tolist() == list(range(8))


def test_a_kill_while_the_snapshot_data_are_written_leaves_the_pointer_on_the_last_one(
        tmp_path: Path, monkeypatch) -> None:
    st = make(tmp_path)
    first = st.write_snapshot({"i": 1})

    def killed(self, selection, value) -> None:
        raise Killed

    monkeypatch.setattr(zarr.Array, "__setitem__", killed)
    with pytest.raises(Killed):
        st.write_snapshot({"i": 2})
    monkeypatch.undo()
    reopened = RunStore.open(tmp_path)
    assert reopened.damage == []
    assert reopened.snapshots.attrs["latest"] == first
    warnings: list[str] = []
    assert reopened.latest_snapshot(warnings.append) == {"i": 1}
    assert warnings == [], "the pointer named a snapshot whose data were never written"


def test_truncate_moves_the_marker_on_disk(tmp_path: Path) -> None:
    """A resume truncates the task, migration and curve tables (rows the replay re-creates);
    a job killed before its next append, and ``analyze`` meanwhile, must see the truncation."""
    st = make(tmp_path)
    st.evaluations.append(rows(0, 6), 6)
    st.evaluations.truncate(4)
    st.evaluations.truncate(5)  # never grows: rows past the marker are garbage
    reopened = RunStore.open(tmp_path)
    assert reopened.evaluations.committed == 4
    assert reopened.evaluations.read("uid").tolist() == [0, 1, 2, 3]
