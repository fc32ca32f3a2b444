"""Plots for a paper: importance with uncertainty, learning curves, parallel coordinates,
integer ticks, masked conditional parameters, Gantt start-up, --format."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.ticker import MaxNLocator

from evo_engine.analysis.figures import (
    plot_importance,
    plot_learning_curves,
    plot_parallel_coordinates,
)
from evo_engine.analysis.importance import (
    MIN_EVALUATIONS,
    MIN_R2,
    Importance,
    NoImportance,
    importance,
)
from evo_engine.analysis.plots import PlotError, make_plots, plot_parameters, plot_workers
from evo_engine.search.messages import EvalState
from evo_engine.space import Categorical, Float, Int, Space
from evo_engine.store.reader import load_run
from evo_engine.store.runstore import RunStore

REPO = Path(__file__).resolve().parent.parent
SPACE = Space(lr=Float(1e-5, 1e-1, log=True), width=Int(8, 64),
              act=Categorical(["relu", "gelu", "tanh"]),
              modes=Int(2, 12, when=("act", "gelu")))


def build(run_dir: Path, n: int = 120, seed: int = 0, curves: bool = False) -> None:
    """Fitness = lr's distance from 1e-3 (strong) + act (weak); width and modes do nothing."""
    rng = np.random.default_rng(seed)
    store = RunStore.create(run_dir, attrs={
        "scenario": "synth", "max_evals": n, "islands": 1, "space": SPACE.describe(),
        "created": 1000.0, "workers": 2,
        "fingerprint_description": {"pruner": {"eta": 3, "min_steps": 1, "max_steps": 9}},
    }, param_kinds=SPACE.column_kinds(), dim=SPACE.dim)
    genome = rng.random((n, SPACE.dim))
    params = [SPACE.decode(g) for g in genome]
    lr = np.array([p["lr"] for p in params])
    act_cost = {"relu": 0.3, "gelu": 0.0, "tanh": 0.6}
    fitness = (np.log10(lr) + 3.0) ** 2 + np.array([act_cost[p["act"]] for p in params])
    state = np.full(n, int(EvalState.COMPLETE), dtype=np.int8)
    if curves:
        state[::3] = int(EvalState.PRUNED)
    t0 = 1010.0 + np.arange(n) * 0.5
    store.evaluations.append({
        "uid": np.arange(n), "island": np.zeros(n, int), "state": state,
        "fitness": np.where(state == 2, fitness, np.nan), "worker": np.arange(n) % 2,
        "t_start": t0, "t_end": t0 + 0.9, "seed": np.arange(n), "operator": ["ga"] * n,
        "error": [""] * n, "accepted": np.ones(n, bool), "parents": np.full((n, 2), -1),
        "genome": genome, "params/lr": lr, "params/width": [p["width"] for p in params],
        "params/act": [p["act"] for p in params],
        "params/modes": [p.get("modes", np.nan) for p in params],
    }, n)
    if curves:
        uid, step, value = [], [], []
        for i in range(n):
            last = 1 if state[i] == int(EvalState.PRUNED) else 9
            for s in range(1, last + 1):
                uid.append(i)
                step.append(s)
                value.append(fitness[i] + 1.0 / s)
        store.require_curves().append({"uid": uid, "step": step, "value": value}, len(uid))
    store.close("finished", "finished", trim=True)


def test_importance_finds_what_matters_and_shares_add_up(tmp_path: Path) -> None:
    build(tmp_path / "r")
    imp = importance(load_run(tmp_path / "r"), n_trees=50, n_repeats=3)
    assert isinstance(imp, Importance) and imp.cv_r2 > 0.5
    got = dict(zip(imp.names, imp.mean))
    assert set(got) == {"lr", "width", "act", "modes"}, "every parameter gets a score"
    assert max(got, key=got.get) == "lr" and got["lr"] > 0.5
    assert got["width"] < 0.15 and got["modes"] < 0.15
    assert abs(sum(got.values()) - 1.0) < 1e-9, "bars are shares of the summed drops"


def test_importance_is_not_drawn_when_the_forest_explains_nothing(tmp_path: Path) -> None:
    build(tmp_path / "noise", n=60)
    run = load_run(tmp_path / "noise")
    run.evaluations["fitness"][:] = np.random.default_rng(5).random(run.n)  # a random objective
    imp = importance(run, n_trees=50, n_repeats=3)
    assert isinstance(imp, NoImportance) and imp.cv_r2 < MIN_R2
    assert "cross-validated R²" in imp.reason and plot_importance(run, imp) is None
    skipped: dict[str, str] = {}
    paths = make_plots(run, tmp_path / "out", on_skip=skipped.__setitem__)
    assert {"importance", "influence"} <= set(skipped)
    assert "explains none of the fitness ranks" in skipped["importance"]
    assert "importance" not in {p.stem for p in paths}


def test_importance_is_skipped_below_the_minimum_count(tmp_path: Path) -> None:
    build(tmp_path / "small", n=MIN_EVALUATIONS - 1)
    imp = importance(load_run(tmp_path / "small"))
    assert isinstance(imp, NoImportance)
    assert imp.reason.startswith(f"{MIN_EVALUATIONS - 1} complete evaluations, fewer than")


def test_learning_curves_mark_pruned_and_rungs(tmp_path: Path) -> None:
    build(tmp_path / "c", n=30, curves=True)
    run = load_run(tmp_path / "c")
    assert run.curves["uid"].size == 10 * 1 + 20 * 9
    fig = plot_learning_curves(run)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "pruned (10), × = stopped" in labels and "complete (20)" in labels
    rung_lines = [ln for ln in ax.get_lines() if ln.get_linestyle() == ":"]
    assert sorted(ln.get_xdata()[0] for ln in rung_lines) == [1, 3]
    assert plot_learning_curves(load_run(tmp_path / "c").__class__(
        path=run.path, attrs=run.attrs, evaluations=run.evaluations)) is None


def test_parallel_coordinates_mark_inactive_parameters(tmp_path: Path) -> None:
    from evo_engine.analysis.figures import INACTIVE_Y

    build(tmp_path / "p", n=40)
    run = load_run(tmp_path / "p")
    fig = plot_parallel_coordinates(run)
    ax = fig.axes[0]
    lines = [ln for ln in ax.get_lines() if len(ln.get_xdata()) == 5]
    assert len(lines) == 40
    act = run.evaluations["params/act"]
    n_gelu = int((act == "gelu").sum())
    assert sum(ln.get_ydata()[3] >= 0 for ln in lines) == n_gelu
    assert sum(ln.get_ydata()[3] == INACTIVE_Y for ln in lines) == 40 - n_gelu
    assert all(np.isfinite(ln.get_ydata()).all() for ln in lines), "every line reaches fitness"
    assert "inactive" in [t.get_text() for t in ax.texts]
    # A parameter inactive in every complete evaluation gets no axis at all.
    run.evaluations["params/modes"][:] = np.nan
    ax2 = plot_parallel_coordinates(run).axes[0]
    assert [t.get_text() for t in ax2.get_xticklabels()][:3] == ["lr", "width", "act"]
    assert len(ax2.get_xticklabels()) == 4


def test_integer_parameters_get_integer_ticks_and_masked_values_are_left_out(tmp_path: Path) -> None:
    build(tmp_path / "i", n=40)
    run = load_run(tmp_path / "i")
    fig = plot_parameters(run)
    width_ax = next(ax for ax in fig.axes if ax.get_ylabel() == "width")
    loc = width_ax.yaxis.get_major_locator()
    assert isinstance(loc, MaxNLocator) and loc._integer
    ticks = [t for t in width_ax.get_yticks() if 8 <= t <= 64]
    assert ticks and all(float(t).is_integer() for t in ticks)
    modes_ax = next(ax for ax in fig.axes if ax.get_ylabel() == "modes")
    shown = sum(int(np.isfinite(c.get_offsets()[:, 1]).sum()) for c in modes_ax.collections)
    assert shown <= int((run.evaluations["params/act"] == "gelu").sum()) + 1  # + the best star


def test_gantt_draws_startup_and_edges(tmp_path: Path) -> None:
    build(tmp_path / "g", n=10)
    fig = plot_workers(load_run(tmp_path / "g"))
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(lab.startswith("start-up (10 s") for lab in labels)
    assert ax.get_xlim()[0] == 0.0
    bars = [c for c in ax.collections if c.get_linewidths().size and c.get_linewidths()[0] > 0]
    assert bars, "evaluation bars have edges"


@pytest.mark.parametrize("fmt, magic", [("svg", b"<?xml"), ("pdf", b"%PDF")])
def test_formats(tmp_path: Path, fmt: str, magic: bytes) -> None:
    build(tmp_path / "f", n=30)
    paths = make_plots(load_run(tmp_path / "f"), tmp_path / "out", fmt=fmt)
    assert paths and all(p.suffix == f".{fmt}" and p.read_bytes().startswith(magic) for p in paths)
    with pytest.raises(PlotError, match="unknown plot format"):
        make_plots(load_run(tmp_path / "f"), tmp_path / "out", fmt="gif")


def test_analyze_format_flag_and_bad_value(tmp_path: Path) -> None:
    build(tmp_path / "a", n=30)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-m", "evo_engine", "analyze", "a", "--plots", "pl",
                        "--format", "pdf"], cwd=tmp_path, capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "pl/importance.pdf").exists()
    bad = subprocess.run([sys.executable, "-m", "evo_engine", "analyze", "a", "--plots", "pl",
                          "--format", "gif"], cwd=tmp_path, capture_output=True, text=True,
                         env=env, timeout=60)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
