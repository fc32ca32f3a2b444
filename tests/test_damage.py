"""A damaged run store is detected on opening, refused with exit 2, and never written to.

Every case damages a copy of one finished run the way a failing disk, an interrupted copy or
a stray edit would, then asks ``--resume`` to extend it (which would write) and a plain start
to use the directory: both exit 2 naming the damage, and every file of the run directory is
byte-identical afterwards. ``analyze`` shows the intact rows and exits 2 naming the damage.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import zarr

from evo_engine.store.runstore import RunStore, StoreDamaged

REPO = Path(__file__).resolve().parent.parent
QUICK = REPO / "tests" / "scenarios" / "quick.py"
ENV = {**os.environ, "QUICK_EVALS": "40", "QUICK_CHECKPOINT": "7"}


def evo(*args: object, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evo_engine", *map(str, args)], env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def tree_hash(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("base") / "run"
    r = evo(QUICK, "--workers", 0, "--run-dir", run_dir, "--quiet")
    assert r.returncode == 0, r.stderr
    return run_dir


def _drop_committed(run: Path) -> None:
    meta = run / "run.zarr/evaluations/zarr.json"
    j = json.loads(meta.read_text())
    del j["attributes"]["committed"]
    meta.write_text(json.dumps(j))


def _truncate(path: str) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        chunk = run / "run.zarr" / path
        chunk.write_bytes(chunk.read_bytes()[: max(chunk.stat().st_size // 3, 1)])
    return damage


def _delete(path: str) -> Callable[[Path], None]:
    return lambda run: (run / "run.zarr" / path).unlink()


def _shorten(run: Path) -> None:
    zarr.open_group(str(run / "run.zarr"), mode="r+")["evaluations/fitness"].resize((30,))


def _point_nowhere(run: Path) -> None:
    zarr.open_group(str(run / "run.zarr/snapshots"), mode="r+").attrs["latest"] = "s99999999"


def _garble_pointer(run: Path) -> None:
    (run / "run.zarr/snapshots/zarr.json").write_text('{"attributes": {"latest": ')


def _garble(path: str) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        meta = run / "run.zarr" / path
        meta.write_text(meta.read_text()[: meta.stat().st_size // 2])
    return damage


def _edit_meta(path: str, **changes: object) -> Callable[[Path], None]:
    """Rewrite an array's zarr.json as valid metadata that says something else."""
    def damage(run: Path) -> None:
        meta = run / "run.zarr" / path / "zarr.json"
        j = json.loads(meta.read_text())
        for key, value in changes.items():
            if key == "chunks":
                j["chunk_grid"]["configuration"]["chunk_shape"] = value
            else:
                j[key] = value
        meta.write_text(json.dumps(j))
    return damage


MISSING = "zarr.json is missing"
UNREADABLE = "zarr.json cannot be read"

CASES = {
    "committed_missing": (_drop_committed, "has no valid 'committed' marker", 40),
    "truncated_task_chunk": (_truncate("tasks/genome/c/0/0"), "tasks/genome: rows 0-39 cannot be read", 40),
    "truncated_error_chunk": (_truncate("evaluations/error/c/0"), "evaluations/error: rows 0-39 cannot be read", 0),
    "deleted_fitness_chunk": (_delete("evaluations/fitness/c/0"), "chunk file evaluations/fitness/c/0 holding rows 0-39 is missing", 0),
    "deleted_param_chunk": (_delete("evaluations/params/x/c/0"), "evaluations/params/x/c/0", 0),
    "short_column": (_shorten, "evaluations/fitness holds 30 rows but 40 are committed", 30),
    "pointer_to_nothing": (_point_nowhere, "names 's99999999', which is not a snapshot", 40),
    "pointer_unparseable": (_garble_pointer, "snapshots/zarr.json cannot be read", 40),
    # One array's metadata: missing or unparseable, in either table; none of its rows is usable.
    "fitness_meta_missing": (_delete("evaluations/fitness/zarr.json"), f"evaluations/fitness/{MISSING}", 0),
    "fitness_meta_garbled": (_garble("evaluations/fitness/zarr.json"), f"evaluations/fitness/{UNREADABLE}", 0),
    "uid_meta_missing": (_delete("evaluations/uid/zarr.json"), f"evaluations/uid/{MISSING}", 0),
    "uid_meta_garbled": (_garble("evaluations/uid/zarr.json"), f"evaluations/uid/{UNREADABLE}", 0),
    "param_meta_missing": (_delete("evaluations/params/x/zarr.json"), f"evaluations/params/x/{MISSING}", 0),
    "param_meta_garbled": (_garble("evaluations/params/x/zarr.json"), f"evaluations/params/x/{UNREADABLE}", 0),
    "metric_meta_missing": (_delete("evaluations/metrics/noise/zarr.json"), f"evaluations/metrics/noise/{MISSING}", 0),
    "task_uid_meta_missing": (_delete("tasks/uid/zarr.json"), f"tasks/uid/{MISSING}", 40),
    "task_uid_meta_garbled": (_garble("tasks/uid/zarr.json"), f"tasks/uid/{UNREADABLE}", 40),
    "params_group_meta_missing": (_delete("evaluations/params/zarr.json"), f"evaluations/params/{MISSING}", 0),
    # Valid metadata that is not what the store wrote: another dtype, row shape or chunking.
    "fitness_dtype": (_edit_meta("evaluations/fitness", data_type="float32"), "evaluations/fitness holds float32, not float64", 0),
    "genome_width": (_edit_meta("evaluations/genome", shape=[40, 2], chunks=[4096, 2]), "evaluations/genome has shape (40, 2), not (rows, 3)", 0),
    "uid_chunking": (_edit_meta("evaluations/uid", chunks=[16]), "evaluations/uid is chunked (16,), not (4096,)", 0),
    "task_info_dtype": (_edit_meta("tasks/info", data_type="int64", fill_value=-1), "tasks/info holds int64, not text", 40),
}


@pytest.mark.parametrize("case", list(CASES))
def test_damage_is_refused_and_nothing_is_written(finished_run: Path, tmp_path: Path,
                                                  case: str) -> None:
    damage, needle, intact_rows = CASES[case]
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    damage(run)
    before = tree_hash(run)
    r = evo(QUICK, "--workers", 0, "--run-dir", run, "--resume", "--max-evals", 60)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "is damaged" in r.stderr and needle in r.stderr, r.stderr
    assert "Nothing in it was changed" in r.stderr and "Traceback" not in r.stderr
    assert tree_hash(run) == before, "--resume wrote to a damaged run"
    r = evo(QUICK, "--workers", 0, "--run-dir", run)
    assert r.returncode == 2 and needle in r.stderr and "--force" in r.stderr, r.stderr
    assert tree_hash(run) == before, "a plain start wrote to a damaged run"
    # analyze: the damage first, then the intact rows, then the refusal (exit 2).
    a = evo("analyze", run)
    assert a.returncode == 2, a.stderr
    assert f"covers only the {intact_rows} evaluations before the damage" in a.stderr
    assert needle in a.stderr and "Traceback" not in a.stderr
    flat = "".join(a.stdout.split())  # wrapped to the terminal: a long path is cut anywhere
    assert flat.startswith(f"therunstorein{run}isdamaged:"), a.stdout
    assert "".join(needle.split()) in flat[:flat.index(f"run{run}(scenario")], a.stdout
    assert f"evaluations:{intact_rows}/40recorded" in flat
    assert "maystillbestarting" not in flat, a.stdout
    assert tree_hash(run) == before


def test_analyze_of_a_store_whose_state_chunk_is_gone_says_so_first(
        finished_run: Path, tmp_path: Path) -> None:
    """The damage is the first thing said, and a store that lost its first rows is not taken
    for a run that is still starting (before: "0/40 recorded ... no evaluations recorded yet:
    nothing to rank (the run may still be starting)", the damage only in the last line)."""
    import argparse

    from evo_engine.cli.analyze import AnalyzeError, analyze_main

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    (run / "run.zarr/evaluations/state/c/0").unlink()
    before = tree_hash(run)
    lines: list[str] = []
    args = argparse.Namespace(run_dir=run, plots=None, fmt="png", csv=None, top=None,
                              front=None, baseline=None)
    with pytest.raises(AnalyzeError, match="covers only the 0 evaluations before the damage"):
        analyze_main(args, print_fn=lines.append)
    text = " ".join(" ".join(lines).split())
    assert text.startswith(f"the run store in {run} is damaged: "), text
    assert "evaluations/state: the chunk file evaluations/state/c/0 holding rows 0-39 is " \
           "missing" in text.split(f"run {run} (scenario")[0], text
    assert "may still be starting" not in text and "no evaluations recorded yet" not in text
    assert "nothing before the damage can be read: nothing to rank" in text, text
    assert tree_hash(run) == before


def test_force_starts_over_in_place_of_a_damaged_run(finished_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    _drop_committed(run)
    r = evo(QUICK, "--workers", 0, "--run-dir", run, "--force", "--max-evals", 10, "--quiet")
    assert r.returncode == 0, r.stderr
    assert RunStore.open(run).evaluations.committed == 10


def test_a_sound_store_opens_and_reads_the_same_as_plain_zarr(finished_run: Path) -> None:
    store = RunStore.open(finished_run, mode="r")
    assert store.damage == []
    z = zarr.open(str(finished_run / "run.zarr"), mode="r")
    for col in ("uid", "fitness", "state", "error"):
        np.testing.assert_array_equal(store.evaluations.read(col), z[f"evaluations/{col}"][:40])


def test_every_chunk_of_a_dense_table_is_stored_even_when_empty(tmp_path: Path) -> None:
    """All-fill chunks (no errors, no metric) are written, so a missing file is damage."""
    st = RunStore.create(tmp_path, attrs={}, param_kinds={"x": "float"}, dim=1)
    st.evaluations.append({"uid": np.arange(3), "genome": np.zeros((3, 1))}, 3)
    assert (tmp_path / "run.zarr/evaluations/error/c/0").is_file()
    assert (tmp_path / "run.zarr/evaluations/fitness/c/0").is_file()
    st.ensure_metrics(["late"])  # a column added after 3 rows: those read NaN, no damage
    st.evaluations.append({"uid": [3], "genome": np.zeros((1, 1)), "metrics/late": [1.0]}, 1)
    reopened = RunStore.open(tmp_path)
    assert reopened.damage == []
    assert np.isnan(reopened.evaluations.read("metrics/late")[:3]).all()
    (tmp_path / "run.zarr/evaluations/metrics/late/c/0").unlink()
    with pytest.raises(StoreDamaged, match="metrics/late"):
        RunStore.open(tmp_path)


def test_complete_rows_without_fitness_are_damage_in_older_stores(tmp_path: Path) -> None:
    """Stores written before dense tables: a deleted fitness chunk reads NaN, which a
    COMPLETE row never has."""
    st = RunStore.create(tmp_path, attrs={}, param_kinds={"x": "float"}, dim=1)
    st.evaluations.append({"uid": np.arange(4), "state": [2, 2, 3, 2], "fitness": [1.0, 2.0, np.nan, 3.0],
                           "genome": np.zeros((4, 1))}, 4)
    del st.evaluations.group.attrs["dense"]
    assert RunStore.open(tmp_path).damage == []
    (tmp_path / "run.zarr/evaluations/fitness/c/0").unlink()
    with pytest.raises(StoreDamaged, match="3 complete evaluations have no fitness"):
        RunStore.open(tmp_path)
