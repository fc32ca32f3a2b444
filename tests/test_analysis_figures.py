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


def _resumed(run_dir: Path, job_starts: bool = True) -> None:
    """Two jobs: 10 evaluations from t=1010 s, a pause, 10 more from t=2000 s (job 2 at 1990)."""
    build(run_dir, n=20)
    store = RunStore.open(run_dir)
    attrs = {"jobs": 2, "fitness_name": "validation nRMSE"}
    if job_starts:
        attrs["job_starts"] = [1000.0, 1990.0]
    store.set_attrs(**attrs)


def test_time_is_aligned_on_the_first_evaluation_and_the_resume_pause_cut_out(
        tmp_path: Path) -> None:
    from evo_engine.analysis.plots import plot_best_so_far
    from evo_engine.analysis.timeline import evaluating_time

    build(tmp_path / "one", n=10)
    run = load_run(tmp_path / "one")
    t_start, _ = evaluating_time(run, run.evaluations["t_start"])
    assert t_start[0] == 0.0, "x = 0 is the first evaluation's start, not the run's creation"
    for with_starts in (True, False):  # recorded job starts, or inferred from the jobs count
        d = tmp_path / f"r{with_starts}"
        _resumed(d, with_starts)
        run = load_run(d)
        ev = run.evaluations
        ev["t_start"][10:] += 990.0  # rows 10.. start at 2005 s and later
        ev["t_end"][10:] += 990.0
        x, breaks = evaluating_time(run)
        assert x[0] == pytest.approx(0.9), "the first evaluation ends after its duration"
        pause = ev["t_start"][10] - ev["t_end"][9]
        assert len(breaks) == 1 and breaks[0].job == 2 and breaks[0].after_evaluations == 10
        assert breaks[0].seconds == pytest.approx(pause)
        assert x[10] == pytest.approx(ev["t_end"][10] - ev["t_start"][0] - pause)
    fig = plot_best_so_far(run)
    ax_n, ax_t = fig.axes[:2]
    overall = next(ln for ln in ax_t.get_lines() if ln.get_color() == "black")
    assert overall.get_xdata()[0] == pytest.approx(0.9)
    assert "validation nRMSE" in ax_n.get_ylabel().replace("\n", " ")
    marked = [ln for ln in ax_t.get_lines() if ln.get_gid() == "job-boundary"]
    assert [ln.get_xdata()[0] for ln in marked] == [pytest.approx(breaks[0].at)]
    assert any("job 2 after" in t.get_text() for t in ax_t.texts)


def test_pruned_runs_are_drawn_at_their_last_reported_value(tmp_path: Path) -> None:
    from evo_engine.analysis.plots import plot_best_so_far, plot_fitness_over_time

    build(tmp_path / "c", n=30, curves=True)
    run = load_run(tmp_path / "c")
    pruned = run.evaluations["state"] == int(EvalState.PRUNED)
    # build() reports fitness + 1/step; a pruned evaluation stopped at step 1.
    lr = run.evaluations["params/lr"][pruned]
    act = run.evaluations["params/act"][pruned]
    last = (np.log10(lr) + 3.0) ** 2 + np.array([{"relu": 0.3, "gelu": 0.0, "tanh": 0.6}[a]
                                                 for a in act]) + 1.0
    ax = plot_fitness_over_time(run).axes[0]
    marks = next(c for c in ax.collections if "pruned" in str(c.get_label()))
    assert np.allclose(np.sort(marks.get_offsets()[:, 1]), np.sort(last))
    pc = plot_parallel_coordinates(run).axes[0]
    dashed = [ln for ln in pc.get_lines() if str(ln.get_gid()).startswith("pruned uid")]
    assert len(dashed) == int(pruned.sum()), "no pruned run dropped"
    f_all = np.r_[run.fitness[run.complete], last]
    lo, hi = np.log10(f_all.min()), np.log10(f_all.max())
    ends = np.sort([10 ** (ln.get_ydata()[-1] * (hi - lo) + lo) for ln in dashed])
    assert np.allclose(ends, np.sort(last))
    # Pruning on: best_so_far's first panel counts steps trained (9 complete, 1 pruned).
    ax_n = plot_best_so_far(run).axes[0]
    overall = next(ln for ln in ax_n.get_lines() if ln.get_color() == "black")
    steps = np.where(pruned, 1, 9)
    assert np.allclose(overall.get_xdata(), np.cumsum(steps))
    assert ax_n.get_xlabel().startswith("compute: steps trained")


def test_every_skipped_plot_is_said_with_its_reason(tmp_path: Path, capsys) -> None:
    from evo_engine.cli.main import main

    build(tmp_path / "s", n=6)
    assert main(["analyze", str(tmp_path / "s"), "--plots", str(tmp_path / "pl")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"not drawn: importance.png: 6 complete evaluations, fewer than the " \
           f"{MIN_EVALUATIONS}" in out
    for name in ("influence", "sigma", "migrations", "learning_curves"):
        assert f"not drawn: {name}.png:" in out


def test_parameters_has_no_empty_panel_and_its_legend_inside(tmp_path: Path) -> None:
    build(tmp_path / "p", n=20)
    run = load_run(tmp_path / "p")
    for names in (["lr", "width", "act", "modes"], ["lr", "width", "act"]):
        run.attrs["param_names"] = names
        fig = plot_parameters(run)
        fig.canvas.draw()
        panels = [ax for ax in fig.axes if ax.axison]
        assert len(panels) == len(names), "one panel per parameter"
        spare = [ax for ax in fig.axes if not ax.axison]
        legends = [*fig.legends, *(ax.get_legend() for ax in spare)]
        assert len(legends) == 1 and len(spare) == len(names) % 2, "an odd count's spare cell"
        box = legends[0].get_window_extent()
        assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= fig.bbox.x1 and box.y1 <= fig.bbox.y1
