"""PDEBench metrics against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from evo_engine.sciml.metrics import (
    METRIC_NAMES,
    MetricAccumulator,
    advection_fitness,
    advection_metrics,
)


def example() -> tuple[torch.Tensor, torch.Tensor]:
    """Two samples, three frames, four cells; the error is a constant per sample and frame.

    Targets: sample 0 is [1, -1, 1, -1] (RMS 1), sample 1 is [2, 2, 2, 2] (RMS 2) in every
    frame. Errors: frame 0 none, frame 1: +0.5 and −1, frame 2: +1 and +2.
    """
    target = torch.tensor([[1.0, -1.0, 1.0, -1.0], [2.0, 2.0, 2.0, 2.0]])[:, None, :].repeat(
        1, 3, 1
    )
    shift = torch.tensor([[0.0, 0.5, 1.0], [0.0, -1.0, 2.0]])
    return target + shift[..., None], target


def test_clean_metrics_by_hand() -> None:
    pred, target = example()
    m = advection_metrics(pred, target, initial_step=1)
    # Frame 1: e = (0.5, 1); frame 2: e = (1, 2). Averages over the two predicted frames.
    assert m["rmse"] == pytest.approx((0.75 + 1.5) / 2)
    assert m["nrmse"] == pytest.approx((0.5 + 1.0) / 2)  # e / RMS(y): (0.5, 0.5), (1, 1)
    # Error of the spatial sum: (2, −4) then (4, 8); sqrt(mean of squares) / nx.
    assert m["crmse"] == pytest.approx((math.sqrt(10) / 4 + math.sqrt(40) / 4) / 2)
    assert m["max_error"] == pytest.approx((1 + 2) / 2)
    assert m["brmse"] == pytest.approx((0.75 + 1.5) / 2)
    # A constant error lives in mode 0 only: E_0 = sqrt(mean_b (nx c)^2) / nx, low band k = 0..2.
    assert m["frmse_low"] == pytest.approx((math.sqrt(10) / 4 + math.sqrt(40) / 4) / 2 / 3)
    assert math.isnan(m["frmse_mid"]) and math.isnan(m["frmse_high"])  # empty bands for nx = 4
    assert advection_fitness(m) == pytest.approx(
        (m["rmse"] + m["nrmse"] + m["brmse"] + m["crmse"]) / 4
    )


def test_legacy_includes_initial_frames_and_the_off_by_one() -> None:
    pred, target = example()
    one = advection_metrics(pred, target, initial_step=1, legacy=True)
    # All three frames, the first with zero error; a single batch is divided by 1.
    assert one["rmse"] == pytest.approx((0 + 0.75 + 1.5) / 3)
    assert one["max_error"] == pytest.approx((0 + 1 + 2) / 3)
    acc = MetricAccumulator(1, legacy=True)
    acc.update(pred[:1], target[:1])
    acc.update(pred[1:], target[1:])
    two = acc.compute()
    # Per-batch RMSE 0.5 and 1.0, summed and divided by n_batches − 1 = 1, as PDEBench does.
    assert two["rmse"] == pytest.approx(1.5)


def test_clean_metrics_do_not_depend_on_batching() -> None:
    torch.manual_seed(0)
    target = torch.randn(7, 12, 32)
    pred = target + 0.1 * torch.randn(7, 12, 32)
    whole = advection_metrics(pred, target, initial_step=10)
    acc = MetricAccumulator(10)
    for idx in (slice(0, 3), slice(3, 4), slice(4, 7)):
        acc.update(pred[idx], target[idx])
    batched = acc.compute()
    assert set(batched) == set(METRIC_NAMES)
    for name in METRIC_NAMES:
        assert batched[name] == pytest.approx(whole[name], rel=1e-9)


def test_fourier_bands_by_hand() -> None:
    nx, a = 32, 0.3
    j = torch.arange(nx, dtype=torch.float64)
    target = torch.ones(1, 1, nx, dtype=torch.float64)
    for k0, band in ((2, "frmse_low"), (5, "frmse_mid"), (14, "frmse_high")):
        pred = target + a * torch.cos(2 * math.pi * k0 * j / nx)
        m = advection_metrics(pred, target, initial_step=0)
        # |P_k0 − Y_k0| = a·nx/2, so E_k0 = a/2; the band mean divides by its number of modes.
        width = {"frmse_low": 4, "frmse_mid": 8, "frmse_high": nx // 2 + 1 - 12}[band]
        assert m[band] == pytest.approx(a / 2 / width)
        assert sum(m[b] for b in ("frmse_low", "frmse_mid", "frmse_high")) == pytest.approx(m[band])


def test_bad_shapes_raise() -> None:
    with pytest.raises(ValueError, match="samples, nt, nx"):
        advection_metrics(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="more than initial_step"):
        advection_metrics(torch.zeros(1, 10, 4), torch.ones(1, 10, 4), initial_step=10)
    with pytest.raises(ValueError, match="no batches"):
        MetricAccumulator().compute()


def three_samples() -> tuple[torch.Tensor, torch.Tensor]:
    """Three samples, three frames, two cells, targets 1; frame 0 exact (the given frame).

    Errors (constant over x) per sample for frames 1, 2: (0.1, 0.3), (0.2, 0.2), (0.4, 0.0).
    """
    target = torch.ones(3, 3, 2, dtype=torch.float64)
    shift = torch.tensor([[0.0, 0.1, 0.3], [0.0, 0.2, 0.2], [0.0, 0.4, 0.0]], dtype=torch.float64)
    return target + shift[..., None], target


def _batched(convention: str) -> dict[str, float]:
    pred, target = three_samples()
    acc = MetricAccumulator(1, convention=convention)
    acc.update(pred[:2], target[:2])  # PDEBench's loader batches: {0, 1} and {2}
    acc.update(pred[2:], target[2:])
    return acc.compute()


def test_the_three_conventions_differ_by_hand() -> None:
    clean, published, head = (_batched(c) for c in ("clean", "pdebench", "pdebench_head"))
    # Clean: per frame the mean over all 3 samples, (0.7/3, 0.5/3), then the mean over frames 1-2.
    assert clean["rmse"] == pytest.approx(0.2)
    assert clean["nrmse"] == pytest.approx(0.2)  # |y| = 1
    assert clean["max_error"] == pytest.approx((0.4 + 0.3) / 2)
    # cRMSE: Σ_x error = 2e, so per frame sqrt(mean_b e²).
    assert clean["crmse"] == pytest.approx((math.sqrt(0.21 / 3) + math.sqrt(0.13 / 3)) / 2)
    # Published (0.1.0): batch {0,1} frames 0,1,2 = (0, .15, .25) -> 0.4/3, batch {2} = (0, .4, 0)
    # -> 0.4/3; summed and divided by n_batches - 1 = 1.
    assert published["rmse"] == pytest.approx(0.8 / 3)
    assert published["nrmse"] == pytest.approx(0.8 / 3)
    # Per-batch maxima (0, .2, .3) -> 0.5/3 and (0, .4, 0) -> 0.4/3.
    assert published["max_error"] == pytest.approx(0.9 / 3)
    # Per-batch cRMSE: sqrt(mean_b e²) per frame within each batch.
    crmse_a = (0 + math.sqrt(0.05 / 2) + math.sqrt(0.13 / 2)) / 3
    crmse_b = (0 + 0.4 + 0) / 3
    assert published["crmse"] == pytest.approx(crmse_a + crmse_b)
    # HEAD: frames 1-2 only, still per batch and / (n - 1): (0.2 + 0.2) / 1.
    assert head["rmse"] == pytest.approx(0.4)
    assert head["max_error"] == pytest.approx((0.25 + 0.2) / 1)  # maxima (.2, .3) and (.4, 0)


def test_recorded_metrics_hold_both_conventions() -> None:
    from evo_engine.sciml.metrics import PDEBENCH_SUFFIX, RecordedMetrics

    pred, target = three_samples()
    acc = RecordedMetrics(1)
    acc.update(pred[:2], target[:2])
    acc.update(pred[2:], target[2:])
    m = acc.compute()
    assert set(m) == set(METRIC_NAMES) | {n + PDEBENCH_SUFFIX for n in METRIC_NAMES}
    assert m["rmse"] == pytest.approx(0.2)
    assert m["rmse_pdebench"] == pytest.approx(0.8 / 3)
    assert advection_fitness(m) == pytest.approx(advection_fitness(_batched("clean")))


def test_unknown_convention_is_refused() -> None:
    with pytest.raises(ValueError, match="convention"):
        MetricAccumulator(1, convention="pdebench_2022")


def test_nrmse_divides_by_the_rms_of_the_target_not_its_mean_magnitude() -> None:
    # Every target above has constant |y| along x, where RMS(y) and mean |y| agree. Here they do
    # not: RMS(y) = sqrt(16 / 4) = 2, mean |y| = 1. An error of 1 everywhere gives RMSE 1, so
    # nRMSE = 1 / 2 (PDEBench's e / sqrt(mean_x y²)); the mean-|y| formula would give 1.
    target = torch.tensor([[[0.0, 0.0, 0.0, 4.0]]])
    m = advection_metrics(target + 1, target, initial_step=0)
    assert m["rmse"] == pytest.approx(1.0)
    assert m["nrmse"] == pytest.approx(0.5)


def test_brmse_weighs_the_first_and_the_last_cell_alike() -> None:
    # Every example above has the same error at both boundaries; here only the last cell is
    # wrong (by 2), so bRMSE = sqrt((0² + 2²) / 2) whichever boundary a bug would take twice.
    target = torch.zeros(1, 1, 4)
    pred = torch.tensor([[[0.0, 0.0, 0.0, 2.0]]])
    assert advection_metrics(pred, target, initial_step=0)["brmse"] == pytest.approx(math.sqrt(2))
    assert advection_metrics(pred.flip(-1), target, initial_step=0)["brmse"] == pytest.approx(
        math.sqrt(2))
