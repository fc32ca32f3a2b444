"""The SciML objectives run directly with a fake context: tiny sizes, a few epochs each."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from fakes import FakeContext, tiny_advection_task
from hypothesis import given
from hypothesis import strategies as st

from evo_engine.sciml.advection import AdvectionRecipe, ensure_dataset
from evo_engine.sciml.data import DataFileError
from evo_engine.sciml.digits import DigitsTask, digits_test_metrics, train_digits
from evo_engine.sciml.metrics import METRIC_NAMES
from evo_engine.sciml.pinn import PinnTask, pinn_test_metrics, train_pinn
from evo_engine.sciml.training import (
    AdvectionTask,
    TrainingDiverged,
    advection_test_metrics,
    reduce_curve,
    train_advection,
)

pytestmark = pytest.mark.usefixtures("sciml_isolated")


def tiny_task(**changes) -> AdvectionTask:
    return tiny_advection_task(**{"epochs": 2, **changes})


@pytest.mark.parametrize("model", ["unet", "fno"])
def test_advection_objective(model: str) -> None:
    ctx = FakeContext(seed=3)
    out = train_advection({"model": model, "lr": 3e-3}, ctx, tiny_task())
    assert math.isfinite(out["fitness"])
    assert out["fitness"] == pytest.approx(
        (out["val_rmse"] + out["val_nrmse"] + out["val_brmse"] + out["val_crmse"]) / 4
    )
    assert {f"val_{m}" for m in METRIC_NAMES} <= set(out)
    assert all(isinstance(v, float) for v in out.values())
    assert [step for step, _ in ctx.reports] == [1, 2]  # once per epoch, epochs completed
    assert out["fitness"] == pytest.approx(min(v for _, v in ctx.reports))  # best epoch kept


def test_last_epochs_fitness_scores_the_final_weights() -> None:
    ctx = FakeContext(seed=3)
    out = train_advection({"model": "fno", "lr": 3e-3}, ctx, tiny_task(epochs=4, fitness_last=2))
    curve = [v for _, v in ctx.reports]
    assert len(curve) == 4 and min(curve) < sum(curve[-2:]) / 2  # min and last-2 mean differ
    assert out["fitness"] == out["val_fitness"] == pytest.approx(sum(curve[-2:]) / 2)
    assert out["val_fitness_final"] == curve[-1]
    assert out["best_epoch"] == curve.index(min(curve)) + 1  # 1-based, recorded, not selected
    # the validation metrics (and so the test metrics at the end) are the final weights'
    final = (out["val_rmse"] + out["val_nrmse"] + out["val_brmse"] + out["val_crmse"]) / 4
    assert final == pytest.approx(curve[-1])


def test_last_epochs_fitness_of_a_diverged_training_fails() -> None:
    # no final weights worth scoring: the evaluation fails rather than keeping an early epoch
    task = tiny_task(epochs=3, fitness_last=2)
    ctx = FakeContext(seed=5)
    with pytest.raises(TrainingDiverged, match="training diverged in epoch 2"):
        train_advection({"model": "fno", "lr": 1e-3, "scheduler_step": 1,
                         "scheduler_gamma": 1e7}, ctx, task)
    assert len(ctx.reports) == 1  # epoch 1 was fine and reported
    best = train_advection({"model": "fno", "lr": 1e-3, "scheduler_step": 1,
                            "scheduler_gamma": 1e7}, FakeContext(seed=5), tiny_task(epochs=3))
    assert math.isfinite(best["fitness"]) and best["best_epoch"] == 1  # epoch 1 is kept


def test_fitness_last_must_be_positive() -> None:
    with pytest.raises(ValueError, match="fitness_last"):
        tiny_task(epochs=2, fitness_last=0)
    tiny_task(epochs=1, fitness_last=3)  # a shortened preset: the mean of every epoch


def test_reduce_curve_values() -> None:
    curve = [0.5, 0.2, 0.4, 0.3]
    assert reduce_curve(curve, None) == 0.2
    assert reduce_curve(curve, 1) == 0.3
    assert reduce_curve(curve, 2) == pytest.approx(0.35)
    assert reduce_curve(curve[:1], 3) == 0.5  # a training stopped early: what it has
    assert math.isnan(reduce_curve([0.2, math.nan], 2)) and reduce_curve([0.2, math.nan], None) == 0.2
    assert math.isnan(reduce_curve([], None)) and math.isnan(reduce_curve([], 2))


@given(st.lists(st.floats(0, 10), min_size=1, max_size=30), st.integers(1, 40))
def test_reduce_curve_lies_between_the_tail_bounds(curve: list[float], last: int) -> None:
    tail = curve[-last:]
    value = reduce_curve(curve, last)
    assert min(tail) - 1e-12 <= value <= max(tail) + 1e-12
    assert reduce_curve(curve, None) == min(curve) <= value + 1e-12
    assert reduce_curve(curve, 1) == curve[-1]


def test_advection_is_reproducible_and_caches_the_data() -> None:
    ctx = FakeContext(seed=1)
    task = tiny_task(t_train=12)
    a = train_advection({"lr": 1e-3}, ctx, task)
    assert len(ctx.cache) == 2  # train and val splits, on the context's device
    b = train_advection({"lr": 1e-3}, ctx, task)
    assert a["fitness"] == b["fitness"]
    c = train_advection({"lr": 1e-3}, FakeContext(seed=2), task)
    assert c["fitness"] != a["fitness"]


def test_advection_stops_early_when_asked() -> None:
    ctx = FakeContext(stop_after=1)
    out = train_advection({}, ctx, tiny_task(epochs=5))
    assert out["epochs_run"] == 1.0 and math.isfinite(out["fitness"])


def test_advection_test_metrics_score_the_test_split() -> None:
    ctx = FakeContext(seed=3)
    task = tiny_task(epochs=1)
    out = advection_test_metrics({"model": "fno"}, ctx, task)
    val = train_advection({"model": "fno"}, FakeContext(seed=3), task)
    assert out["fitness"] == val["fitness"]  # trained exactly as the objective trains
    assert {f"test_{m}" for m in METRIC_NAMES} <= set(out) and "test_fitness" in out
    assert out["test_rmse"] != out["val_rmse"]


def test_advection_reads_a_given_file_at_another_resolution(tmp_path, monkeypatch) -> None:
    # A "PDEBench-like" file at twice the resolution, named by the environment variable.
    path = ensure_dataset(AdvectionRecipe(samples=30, nx=64, nt=27), tmp_path / "given")
    monkeypatch.setenv("EVO_ENGINE_ADVECTION_FILE", str(path))
    task = tiny_task(nt=14, epochs=1)
    out = train_advection({}, FakeContext(), task)
    assert math.isfinite(out["fitness"])
    assert not (tmp_path / "data").exists()  # nothing was generated


def test_advection_refuses_a_bad_file(tmp_path) -> None:
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(DataFileError, match="bad.h5"):
        train_advection({}, FakeContext(), tiny_task(data_file=str(bad)))


def test_pinn_objective_and_test_metrics() -> None:
    task = PinnTask(
        beta=1.0, nx=16, nt=5, iterations=20, report_every=10, num_domain=64, num_boundary=16
    )
    ctx = FakeContext()
    params = {"width": 8, "depth": 2, "activation": "silu", "lr": 1e-2}
    out = train_pinn(params, ctx, task)
    assert out["fitness"] == out["val_rel_l2"] > 0
    assert [step for step, _ in ctx.reports] == [10, 20]
    # Training did something: the same model (same seed) after one iteration is worse, in
    # the training loss and in the validation error the fitness is.
    once = train_pinn(params, FakeContext(), replace(task, iterations=1))
    assert out["val_train_loss"] < once["val_train_loss"]
    assert out["val_rel_l2"] < once["val_rel_l2"]
    assert ctx.reports[-1][1] == pytest.approx(out["val_rel_l2"])  # the last report is the score
    test = pinn_test_metrics({"width": 8, "depth": 2}, FakeContext(), task)
    assert {"test_rel_l2", "test_rmse", "test_max_error", "val_rel_l2"} <= set(test)


def test_a_stopped_pinn_evaluation_trains_no_further_trajectory() -> None:
    # One PINN per trajectory: once the coordinator stops the evaluation (a pruner's answer to
    # the first report), the trajectories still to come must not train. They used to, each
    # up to its own first report (or its whole seconds budget), after the stop.
    task = PinnTask(beta=1.0, nx=16, nt=5, iterations=40, report_every=10, num_domain=64,
                    num_boundary=16, trajectories=3)
    ctx = FakeContext(stop_after=1)
    out = train_pinn({"width": 8, "depth": 2}, ctx, task)
    assert [step for step, _ in ctx.reports] == [10]
    assert out["val_iterations"] == 10 and math.isfinite(out["fitness"])
    assert out["fitness"] == pytest.approx(ctx.reports[0][1])  # the one trajectory trained


def test_digits_objective_and_test_metrics() -> None:
    task = DigitsTask(epochs=2)
    ctx = FakeContext()
    params = {"layers": 2, "channels": 4, "activation": "gelu", "dropout": 0.1, "lr": 1e-2}
    out = train_digits(params, ctx, task)
    assert 0 <= out["fitness"] < 0.9 and out["fitness"] == out["val_error"]
    assert out["val_accuracy"] == pytest.approx(1 - out["val_error"])
    assert len(ctx.reports) == 2
    test = digits_test_metrics(params, FakeContext(), task)
    assert test["fitness"] == out["fitness"] and 0 <= test["test_error"] <= 1


def test_pinn_pdebench_protocol_points_targets_and_score() -> None:
    import numpy as np
    import torch

    from evo_engine.sciml.pinn import _trajectories, hammersley, scored_frames, training_points

    task = PinnTask(
        beta=1.0, nx=32, nt=11, iterations=2, report_every=1, num_domain=40, num_boundary=10,
        num_initial=50, points="pdebench", solver="fv", score_frames=4,
    )
    pts = training_points(task, torch.Generator().manual_seed(0))
    xt = pts["collocation"].numpy()
    assert xt.shape == (100, 2)  # the residual is on every point: domain + boundary + initial
    assert np.all(np.isin(xt[40:50, 0], (0.0, 1.0)))  # boundary points sit on x = 0 or 1
    assert np.all(xt[50:, 1] == 0.0) and len(np.unique(xt[50:, 0])) == 50  # initial points
    np.testing.assert_allclose(pts["boundary_times"][:, 0].numpy(), xt[40:50, 1])
    # Hammersley: first coordinate van der Corput base 2, second a regular grid.
    np.testing.assert_allclose(hammersley(3), [[0.5, 0.25], [0.25, 0.5], [0.75, 0.75]])
    assert scored_frames(task) == slice(7, None)
    fv = _trajectories(task, "val")
    exact = _trajectories(replace(task, solver="exact"), "val")
    np.testing.assert_allclose(fv["u"][:, 0], exact["u"][:, 0])  # same initial condition
    assert np.abs(fv["u"][:, -1] - exact["u"][:, -1]).max() > 1e-3  # FV diffuses, exact does not
    out = train_pinn({"width": 8, "depth": 2}, FakeContext(), task)
    assert {"val_nrmse", "val_nrmse_pdebench", "val_rel_l2"} <= set(out)
    # Every scored frame is predicted by a PINN: both conventions average the same 4 frames.
    assert out["val_rmse_pdebench"] == pytest.approx(out["val_rmse"])


def test_pinn_task_refuses_unknown_layouts() -> None:
    with pytest.raises(ValueError, match="points must be one of"):
        PinnTask(points="sobol")
    with pytest.raises(ValueError, match="score_frames"):
        PinnTask(nt=5, score_frames=5)


def test_pinn_reports_count_on_across_trajectories_and_end_at_the_fitness() -> None:
    # One PINN per trajectory: each trajectory's reports started again at step 10, so a
    # pruner saw steps 10, 20, 10, 20, ... (a rung reached three times) and the last report
    # was the third trajectory's error, not the fitness (the mean over the three).
    task = PinnTask(beta=1.0, nx=16, nt=5, iterations=20, report_every=10, num_domain=64,
                    num_boundary=16, trajectories=3)
    ctx = FakeContext()
    out = train_pinn({"width": 8, "depth": 2, "lr": 1e-2}, ctx, task)
    assert [step for step, _ in ctx.reports] == [10, 20, 30, 40, 50, 60]
    values = [v for _, v in ctx.reports]
    assert values[-1] == pytest.approx(out["fitness"])
    # Within a trajectory the value is the mean of the finished ones and the current one:
    # the three trajectories' own errors, recovered from the reports at their ends, differ.
    own = [values[1], 2 * values[3] - values[1], 3 * values[5] - 2 * values[3]]
    assert min(own) > 0 and max(own) - min(own) > 1e-6


def test_a_non_finite_epoch_among_the_last_ones_fails_the_evaluation(monkeypatch) -> None:
    # The fitness is the mean of the last fitness_last epochs; one of them non-finite (a
    # validation rollout that overflowed) made that mean NaN, and the evaluation was then
    # scored by its final epoch alone, a finite number no documented rule gives.
    from evo_engine.sciml import training

    real, calls = training.evaluate, []

    def evaluate(*args, **kwargs):
        metrics = real(*args, **kwargs)
        calls.append(1)
        return {k: math.nan for k in metrics} if len(calls) == 2 else metrics

    monkeypatch.setattr(training, "evaluate", evaluate)
    ctx = FakeContext(seed=3)
    out = train_advection({"model": "fno", "lr": 3e-3}, ctx, tiny_task(epochs=4, fitness_last=3))
    curve = [v for _, v in ctx.reports]
    assert math.isnan(curve[1]) and all(math.isfinite(v) for v in curve[2:])
    assert math.isnan(out["fitness"]), out["fitness"]
    calls.clear()  # the same with the NaN epoch before the last three: the mean of those
    ctx = FakeContext(seed=3)
    out = train_advection({"model": "fno", "lr": 3e-3}, ctx, tiny_task(epochs=4, fitness_last=2))
    curve = [v for _, v in ctx.reports]
    assert out["fitness"] == pytest.approx(sum(curve[-2:]) / 2)
