"""The analyze command and its pieces, on small synthetic run stores built with RunStore."""

from __future__ import annotations

import csv
import math
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from evo_engine.analysis import STATE_NAMES, load_history, load_run, to_dataframe
from evo_engine.analysis.export import csv_columns, write_csv
from evo_engine.analysis.plots import make_plots, plot_influence
from evo_engine.analysis.summary import format_summary, summarize
from evo_engine.cli.main import main
from evo_engine.search.messages import EvalState
from evo_engine.space import Categorical, Float, Int, Space
from evo_engine.store.runstore import FORMAT_VERSION, RunStore

SPACE = Space(lr=Float(1e-5, 1e-1, log=True), width=Int(8, 64),
              act=Categorical(["relu", "gelu", "tanh"]))
N, FAILED_EVERY = 60, 13


def build_run(run_dir: Path, *, n: int = N, status: str = "finished", sigma: bool = True,
              sync: bool = False, seed: int = 0) -> dict[str, np.ndarray]:
    """A 2-island run: island 0 GA, island 1 ES with σ; every 13th evaluation failed.

    Fitness depends strongly on lr (optimum inside the range) and not at all on width.
    Returns the rows written, for comparison with what analysis reads back.
    """
    rng = np.random.default_rng(seed)
    store = RunStore.create(run_dir, attrs={
        "scenario": "synthetic", "fingerprint": "f", "max_evals": 100, "islands": 2,
        "space": SPACE.describe(), "sync": sync, "created": 1000.0,
    }, param_kinds={name: p.kind for name, p in SPACE.items()}, dim=SPACE.dim)
    store.ensure_metrics(["val_loss", "train_loss"])
    if sigma:
        store.evaluations.add_column("sigma", "f8", (SPACE.dim,))
    genome = rng.random((n, SPACE.dim))
    params = [SPACE.decode(g) for g in genome]
    lr = np.array([p["lr"] for p in params])
    fitness = (np.log10(lr) + 3.0) ** 2 + 0.01 * rng.random(n)
    state = np.full(n, int(EvalState.COMPLETE), dtype=np.int8)
    state[FAILED_EVERY - 1 :: FAILED_EVERY] = int(EvalState.FAILED)
    fitness[state != int(EvalState.COMPLETE)] = np.nan
    island = np.arange(n) % 2
    worker = np.arange(n) % 3
    t_start = 1001.0 + np.arange(n) * 0.5 + 0.1 * (np.arange(n) % 3)
    duration = 0.3 + rng.random(n)
    rows: dict[str, object] = {
        "uid": np.arange(n), "island": island, "state": state, "fitness": fitness,
        "worker": worker, "t_start": t_start, "t_end": t_start + duration,
        "seed": np.arange(n) + 7, "operator": np.where(island == 0, "ga", "es").tolist(),
        "error": ["" if s == 2 else "Traceback ...\nRuntimeError: diverged" for s in state],
        "accepted": rng.random(n) < 0.5, "parents": np.full((n, 2), -1),
        "genome": genome,
        "params/lr": lr, "params/width": [p["width"] for p in params],
        "params/act": [p["act"] for p in params],
        "metrics/val_loss": np.where(np.isnan(fitness), np.nan, fitness * 1.1),
        "metrics/train_loss": np.where(np.isnan(fitness), np.nan, fitness * 0.9),
    }
    if sigma:
        s = np.full((n, SPACE.dim), np.nan)
        es = island == 1
        s[es] = 0.3 * np.exp(-np.arange(n)[es, None] / 40.0) * np.array([1.0, 0.5, 2.0])
        rows["sigma"] = s
    store.evaluations.append(rows, n)
    store.migrations.append({"uid": [3, 8], "origin": [0, 1], "destination": [1, 0],
                             "accepted": [True, False], "at_eval": [20, 40]}, 2)
    store.close(status, "finished" if status == "finished" else "signal:SIGTERM",
                trim=status == "finished")
    return {k: np.asarray(v) for k, v in rows.items()}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    run_dir = tmp_path_factory.mktemp("runs") / "r1"
    return run_dir, build_run(run_dir)


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (after checking the signature)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


# ---------------------------------------------------------------- history


def test_load_history_returns_every_committed_column(synthetic) -> None:
    run_dir, rows = synthetic
    h = load_history(run_dir)
    for key in ("uid", "island", "state", "fitness", "params/lr", "params/act",
                "metrics/val_loss", "sigma", "genome", "parents"):
        assert len(h[key]) == N, key
    np.testing.assert_array_equal(h["uid"], rows["uid"])
    np.testing.assert_allclose(h["fitness"], rows["fitness"])
    np.testing.assert_allclose(h["sigma"], rows["sigma"])
    assert h["params/act"].tolist() == rows["params/act"].tolist()
    assert h["operator"].dtype == object and STATE_NAMES[2] == "COMPLETE"


def test_a_run_in_progress_is_read_up_to_committed(tmp_path: Path) -> None:
    build_run(tmp_path, status="running")
    store = RunStore.open(tmp_path)
    store.evaluations.group.attrs["committed"] = 25  # rows past it are a writer's garbage
    run = load_run(tmp_path)
    assert run.n == 25 and all(len(v) == 25 for v in run.evaluations.values())


def test_to_dataframe_needs_pandas_and_says_so(synthetic, monkeypatch) -> None:
    run_dir, _ = synthetic
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match="pip install pandas"):
        to_dataframe(run_dir)


def test_to_dataframe_has_the_csv_columns(synthetic, tmp_path: Path) -> None:
    pytest.importorskip("pandas")
    run_dir, rows = synthetic
    run = load_run(run_dir)
    df = to_dataframe(run_dir)
    assert list(df) == csv_columns(run), "one set of names for the CSV and the DataFrame"
    assert len(df) == N and {"sigma_lr", "parent1", "width", "val_loss", "duration_s"} <= set(df)
    assert set(df["state"]) == {"COMPLETE", "FAILED"}
    assert df["width"].tolist() == list(rows["params/width"])
    # From load_history's dict (no run attributes): the same columns, metrics sorted.
    assert set(to_dataframe(load_history(run_dir))) == set(df)
    write_csv(run, tmp_path / "e.csv")
    import pandas as pd

    back = pd.read_csv(tmp_path / "e.csv", keep_default_na=False, na_values=[""])
    assert list(back) == list(df)
    assert np.allclose(back["fitness"], df["fitness"], equal_nan=True)


# ---------------------------------------------------------------- summary


def test_summary_agrees_with_the_store(synthetic) -> None:
    run_dir, rows = synthetic
    s = summarize(load_run(run_dir), top=5)
    n_failed = N // FAILED_EVERY
    assert s.counts["COMPLETE"] == N - n_failed and s.counts["FAILED"] == n_failed
    ok = ~np.isnan(rows["fitness"])
    best = int(np.nanargmin(rows["fitness"]))
    assert s.best is not None and s.best.uid == best
    assert s.best.fitness == rows["fitness"][best]
    for b in s.best_per_island:
        m = ok & (rows["island"] == b.island)
        assert b.fitness == rows["fitness"][m].min()
    expected = np.argsort(np.where(ok, rows["fitness"], np.inf))[:5]
    assert [t["uid"] for t in s.top] == expected.tolist()
    assert s.top[0]["params"]["act"] == rows["params/act"][best]
    assert s.workers == 3 and 0 < s.utilization <= 1
    busy = (rows["t_end"] - rows["t_start"]).sum()
    assert math.isclose(s.busy_seconds, busy)
    text = format_summary(s, str(run_dir))
    assert "status: finished" in text and f"{N - n_failed} complete, {n_failed} failed" in text
    assert "top 5" in text and "val_loss" in text and "island 1: best" in text


def test_summary_of_a_stopped_run_says_it_is_resumable(tmp_path: Path) -> None:
    build_run(tmp_path, status="stopped")
    text = format_summary(summarize(load_run(tmp_path)))
    assert "stopped (signal:SIGTERM); resumable with --resume" in text


# ---------------------------------------------------------------- CSV


def test_csv_agrees_with_the_store(synthetic, tmp_path: Path) -> None:
    run_dir, rows = synthetic
    run = load_run(run_dir)
    path = tmp_path / "sub" / "all.csv"
    assert write_csv(run, path) == N
    with open(path, newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == csv_columns(run)
    assert {"lr", "width", "act", "val_loss", "train_loss", "sigma_lr"} <= set(table[0])
    for i, r in enumerate(table):
        assert int(r["uid"]) == rows["uid"][i]
        assert r["act"] == rows["params/act"][i] and int(r["width"]) == rows["params/width"][i]
        assert float(r["lr"]) == rows["params/lr"][i]
        if rows["state"][i] == 2:
            assert float(r["fitness"]) == rows["fitness"][i] and r["error"] == ""
        else:
            assert r["fitness"] == "" and r["state"] == "FAILED"
            assert r["error"] == "RuntimeError: diverged"


def test_csv_top_n_is_the_best_first(synthetic, tmp_path: Path) -> None:
    run_dir, rows = synthetic
    path = tmp_path / "best.csv"
    assert write_csv(load_run(run_dir), path, top=4) == 4
    with open(path, newline="") as f:
        fit = [float(r["fitness"]) for r in csv.DictReader(f)]
    assert fit == sorted(rows["fitness"][~np.isnan(rows["fitness"])])[:4]


# ---------------------------------------------------------------- plots


def test_every_plot_is_a_png_of_sane_size(synthetic, tmp_path: Path) -> None:
    run_dir, _ = synthetic
    baseline = tmp_path / "sync"
    build_run(baseline, sync=True, sigma=False, seed=1)
    paths = make_plots(load_run(run_dir), tmp_path / "plots", baseline=load_run(baseline))
    names = {p.stem for p in paths}
    assert names == {"best_so_far", "fitness_over_time", "parameters", "influence", "sigma",
                     "workers", "migrations", "parallel_coordinates", "importance"}
    for p in paths:
        w, h = png_size(p)
        assert 400 <= w <= 3000 and 150 <= h <= 3000, (p.name, w, h)
        assert p.stat().st_size > 5000, f"{p.name} looks empty"


def test_influence_shows_the_parameters_importance_ranks_first(synthetic) -> None:
    """One importance measure: influence.png's panels are importance.png's top two."""
    from evo_engine.analysis.importance import importance

    run = load_run(synthetic[0])
    imp = importance(run, n_trees=50, n_repeats=3)
    top = [imp.names[i] for i in np.argsort(-imp.mean, kind="stable")[:2]]
    assert top[0] == "lr"
    fig = plot_influence(run, imp)
    assert [ax.get_title().split(":")[0] for ax in fig.axes[:2]] == top


# ---------------------------------------------------------------- command line


def test_analyze_command_writes_summary_plots_and_csv(synthetic, tmp_path: Path, capsys) -> None:
    run_dir, _ = synthetic
    code = main(["analyze", str(run_dir), "--csv", str(tmp_path / "b.csv"), "--top", "3"])
    out = capsys.readouterr().out
    assert code == 0 and "top 3" in out and "wrote 3 evaluations" in out
    assert (tmp_path / "b.csv").read_text().count("\n") == 4


def test_analyze_compares_with_a_baseline(synthetic, tmp_path: Path, capsys) -> None:
    run_dir, rows = synthetic
    build_run(tmp_path / "sync", sync=True, seed=1)
    assert main(["analyze", str(run_dir), "--baseline", str(tmp_path / "sync")]) == 0
    out = capsys.readouterr().out
    # Wrapped to the terminal's width (issue 25): the last paragraph, joined without its
    # whitespace (a path longer than the line is cut across lines, so joining with spaces
    # would split it where the cut fell).
    flat = "".join(out[out.rindex("\nbaseline"):].split())
    assert flat.startswith(f"baseline{tmp_path / 'sync'}(synchronous):best")
    assert "thisrunreachedit" in flat or "thisrunneverreachedit" in flat


def test_analyze_help_shows_examples(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["analyze", "--help"])
    assert exc.value.code == 0
    assert "python -m evo_engine analyze runs/adv --plots" in capsys.readouterr().out


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("evo_engine: error: ") and "Traceback" not in err
    return err


def test_analyze_a_directory_that_is_not_a_run(tmp_path: Path, capsys) -> None:
    assert main(["analyze", str(tmp_path)]) == 2
    assert "is not an evo_engine run directory" in _error(capsys)
    assert main(["analyze", str(tmp_path / "missing")]) == 2
    assert "not an evo_engine run directory" in _error(capsys)


def test_analyze_a_store_from_a_newer_version(tmp_path: Path, capsys) -> None:
    build_run(tmp_path, n=5)
    RunStore.open(tmp_path).set_attrs(format_version=FORMAT_VERSION + 1)
    assert main(["analyze", str(tmp_path)]) == 2
    assert "newer than this evo_engine reads" in _error(capsys)


def test_analyze_an_empty_run(tmp_path: Path, capsys) -> None:
    build_run(tmp_path, n=0, status="running")
    assert main(["analyze", str(tmp_path)]) == 0
    assert "no evaluations recorded yet" in capsys.readouterr().out
    assert main(["analyze", str(tmp_path), "--plots", str(tmp_path / "p")]) == 2
    assert "no recorded evaluations yet" in _error(capsys)
    assert not (tmp_path / "p").exists()


def test_analyze_a_run_in_progress(tmp_path: Path, capsys) -> None:
    build_run(tmp_path, n=20, status="running")
    assert main(["analyze", str(tmp_path), "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert "status: running" in out and "20/100 recorded" in out and "top 2" in out


def test_odd_runs_still_plot_what_they_can(tmp_path: Path) -> None:
    """All failed, some without times (a worker died), one island, no σ: no crash, no warning."""
    run_dir = tmp_path / "odd"
    build_run(run_dir, n=8, sigma=False)
    store = RunStore.open(run_dir)
    n = store.evaluations.committed
    store.evaluations.append({
        "uid": [100, 101], "island": [0, 0], "state": [3, 3], "fitness": [np.nan, np.nan],
        "worker": [1, 2], "t_start": [0.0, 0.0], "t_end": [0.0, 0.0], "operator": ["ga", "ga"],
        "error": ["worker 1 died", "worker 2 died"], "parents": np.full((2, 2), -1),
        "genome": np.full((2, SPACE.dim), 0.5), "params/lr": [1e-3, 1e-3],
        "params/width": [8, 8], "params/act": ["relu", "relu"],
    }, 2)
    store.evaluations.group.attrs["committed"] = n + 2
    run = load_run(run_dir)
    run.evaluations["state"][:] = int(EvalState.FAILED)  # as if nothing ever completed
    run.evaluations["fitness"][:] = np.nan
    paths = make_plots(run, tmp_path / "plots")
    assert {p.stem for p in paths} == {"fitness_over_time", "parameters", "workers",
                                       "migrations"}
    text = format_summary(summarize(run))
    assert "best: none" in text and "10 failed" in text


def test_utilization_leaves_out_the_pause_between_jobs_of_a_resumed_run() -> None:
    from evo_engine.analysis.summary import active_span

    # Two workers busy 0-10 s, a 100 s pause (the job hit its walltime), busy again 110-120 s.
    t_start = np.array([0.0, 0.0, 5.0, 110.0, 110.0])
    t_end = np.array([5.0, 10.0, 10.0, 120.0, 120.0])
    assert active_span(t_start, t_end, jobs=2) == (120.0, 100.0)
    assert active_span(t_start, t_end, jobs=1) == (120.0, 0.0)


def _tree_digest(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize("where", [
    ("--csv", "log.jsonl"), ("--csv", "run.zarr/zarr.json"), ("--front", "log.jsonl"),
    ("--csv", "scratch/x.csv"), ("--plots", "run.zarr"), ("--plots", "run.zarr/evaluations"),
    ("--csv", "baseline:log.jsonl"),
])
def test_analyze_never_writes_over_a_runs_own_files(tmp_path: Path, capsys, where) -> None:
    """``--csv RUN/log.jsonl`` replaced the run's log with a CSV; ``--plots RUN/run.zarr``
    wrote PNGs into the store. Both are refused (exit 2) before anything is written, for the
    run analyzed and for a --baseline run alike."""
    run_dir, base_dir = tmp_path / "run", tmp_path / "base"
    build_run(run_dir, n=20)
    build_run(base_dir, n=20, seed=1)
    for d in (run_dir, base_dir):
        (d / "log.jsonl").write_text('{"event": "start"}\n')
        (d / "scratch").mkdir()
    flag, rel = where
    target = base_dir / rel.split(":", 1)[1] if rel.startswith("baseline:") else run_dir / rel
    before = {d: _tree_digest(d) for d in (run_dir, base_dir)}
    assert main(["analyze", str(run_dir), "--baseline", str(base_dir), flag, str(target)]) == 2
    err = _error(capsys)
    assert str(target) in "".join(err.split()) or str(target) in err
    assert "belongs to the run" in err
    assert {d: _tree_digest(d) for d in (run_dir, base_dir)} == before
    if where != ("--csv", "log.jsonl"):
        return
    # The run directory itself is a fine place for an export beside the run's own files.
    assert main(["analyze", str(run_dir), "--csv", str(run_dir / "all.csv"),
                 "--plots", str(run_dir / "plots")]) == 0
    assert (run_dir / "all.csv").exists() and (run_dir / "log.jsonl").read_text() == \
        '{"event": "start"}\n'
